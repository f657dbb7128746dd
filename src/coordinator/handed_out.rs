//! Which hosts the coordinator handed to which member, lately: a member may
//! report only a host it was given (in a host list within `--report-window`),
//! so a report is evidence about a job the coordinator made possible, not an
//! accusation against any identity a key can name.
//!
//! Memory only, and bounded: per member at most [`MAX_HOSTS_PER_MEMBER`]
//! hosts (the oldest hand-out is forgotten first), at most [`MAX_MEMBERS`]
//! members (the one idle longest is forgotten first), and entries older than
//! the window are pruned. Not persisted: writing every host list to disk
//! would put the hot path on the disk, so after a restart a member's earlier
//! lists are forgotten, and reports about them are refused (`not_handed_out`)
//! until it asks again. Pure apart from the mutex: times are passed in
//! (seconds on the pool's monotonic clock).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::network::identity::IdentityId;

/// Hosts remembered per member: four full lists of distinct hosts (64 each);
/// a member asking again and again mostly gets the same nearby hosts.
pub const MAX_HOSTS_PER_MEMBER: usize = 256;
/// Members remembered (about 4 KiB each when full).
pub const MAX_MEMBERS: usize = 250_000;

/// The first 8 bytes of a host id: enough to tell the hosts one member was
/// given apart (another host with the same 64 bits takes a 2^64 search to make).
fn tag(id: &IdentityId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b)
}

#[derive(Default)]
struct Given {
    /// Host tag → when it was last handed out (seconds).
    hosts: HashMap<u64, u32>,
    last: u32,
}

pub(super) struct HandedOut {
    window_secs: u32,
    members: Mutex<HashMap<IdentityId, Given>>,
}

impl HandedOut {
    pub(super) fn new(window_secs: u64) -> HandedOut {
        HandedOut {
            window_secs: window_secs.min(u64::from(u32::MAX)) as u32,
            members: Mutex::new(HashMap::new()),
        }
    }

    /// `member` was given `hosts` at `now_secs`.
    pub(super) fn record(&self, member: &IdentityId, hosts: &[IdentityId], now_secs: u64) {
        if hosts.is_empty() {
            return;
        }
        let now = now_secs.min(u64::from(u32::MAX)) as u32;
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if !members.contains_key(member) && members.len() >= MAX_MEMBERS {
            Self::prune_locked(&mut members, self.window_secs, now);
            if members.len() >= MAX_MEMBERS {
                if let Some(idle) = members.iter().min_by_key(|(_, g)| g.last).map(|(k, _)| *k) {
                    members.remove(&idle);
                }
            }
        }
        let given = members.entry(*member).or_default();
        given.last = now;
        for h in hosts {
            let t = tag(h);
            if given.hosts.len() >= MAX_HOSTS_PER_MEMBER && !given.hosts.contains_key(&t) {
                let window = self.window_secs;
                given
                    .hosts
                    .retain(|_, at| now.saturating_sub(*at) <= window);
                if given.hosts.len() >= MAX_HOSTS_PER_MEMBER {
                    if let Some(oldest) = given
                        .hosts
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(k, _)| *k)
                    {
                        given.hosts.remove(&oldest);
                    }
                }
            }
            given.hosts.insert(t, now);
        }
    }

    /// Was `host` handed to `member` within the window before `now_secs`?
    pub(super) fn was_given(&self, member: &IdentityId, host: &IdentityId, now_secs: u64) -> bool {
        let now = now_secs.min(u64::from(u32::MAX)) as u32;
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members
            .get(member)
            .and_then(|g| g.hosts.get(&tag(host)))
            .is_some_and(|at| now.saturating_sub(*at) <= self.window_secs)
    }

    /// Forget hand-outs older than the window, and members left with none.
    pub(super) fn prune(&self, now_secs: u64) {
        let now = now_secs.min(u64::from(u32::MAX)) as u32;
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        Self::prune_locked(&mut members, self.window_secs, now);
    }

    fn prune_locked(members: &mut HashMap<IdentityId, Given>, window: u32, now: u32) {
        members.retain(|_, g| {
            g.hosts.retain(|_, at| now.saturating_sub(*at) <= window);
            !g.hosts.is_empty()
        });
    }

    /// Members remembered now.
    pub(super) fn members(&self) -> usize {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> IdentityId {
        let mut b = [0u8; 32];
        b[..2].copy_from_slice(&n.to_le_bytes());
        IdentityId(b)
    }

    #[test]
    fn only_hosts_given_within_the_window() {
        let h = HandedOut::new(100);
        let (m, other) = (id(1), id(2));
        h.record(&m, &[id(10), id(11)], 5);
        assert!(h.was_given(&m, &id(10), 5));
        assert!(h.was_given(&m, &id(11), 105));
        assert!(!h.was_given(&m, &id(11), 106), "past the window");
        assert!(!h.was_given(&m, &id(12), 5), "never given");
        assert!(!h.was_given(&other, &id(10), 5), "given to someone else");
        // Given again: the window starts over.
        h.record(&m, &[id(10)], 90);
        assert!(h.was_given(&m, &id(10), 180));
        h.prune(150);
        assert!(!h.was_given(&m, &id(11), 150));
        assert_eq!(h.members(), 1);
        h.prune(1000);
        assert_eq!(h.members(), 0);
    }

    #[test]
    fn a_member_holds_at_most_the_cap_newest_first() {
        let h = HandedOut::new(10_000);
        let m = id(1);
        for i in 0..(MAX_HOSTS_PER_MEMBER as u16 + 10) {
            h.record(&m, &[id(100 + i)], u64::from(i));
        }
        assert!(!h.was_given(&m, &id(100), 1000), "the oldest left");
        assert!(h.was_given(&m, &id(100 + MAX_HOSTS_PER_MEMBER as u16 + 9), 1000));
        let members = h.members.lock().unwrap();
        assert_eq!(members[&m].hosts.len(), MAX_HOSTS_PER_MEMBER);
    }
}
