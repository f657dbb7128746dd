//! The hosts that may vote on a job, and a slot on the next one to ask.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crate::hosts::{HostKind, HostList, HostSpec};
use crate::network::api::HostsResponse;
use crate::network::identity::{Identity, IdentityId};
use crate::network::selection::NetKey;
use crate::network::ticket::Ticket;
use crate::protocol::ProtocolVersion;
use crate::trust::pairing::{draw, may_join, Listed, MAX_SPEED_WEIGHT};
use crate::trust::speed::{preference_order, HostKey, Rank, SpeedBook};
use crate::trust::standing::Standing;

use crate::client::evidence::{StateDir, EXCLUDED_FILE};
use crate::client::remote::{RemoteHost, TicketHolder};
use crate::client::settings::Settings;
use crate::client::slots::{LockDir, SlotGuard};

/// Plain dispatch (redundancy 1) never sends to a host that lost a vote
/// either: the exclusion is for all of this user's builds. Costs one failed
/// `stat` when nothing was ever excluded; an unreadable list keeps distcc's
/// behaviour (nothing is excluded) with a warning.
pub fn drop_excluded_hosts(hosts: &mut HostList, settings: &Settings) {
    let Some(dir) = &settings.dportage_dir else {
        return;
    };
    if !dir.join(EXCLUDED_FILE).exists() {
        return;
    }
    let excluded: Vec<SocketAddr> = match StateDir::open(dir).and_then(|s| s.excluded()) {
        Ok(list) => list.into_iter().map(|e| e.address).collect(),
        Err(e) => {
            tracing::warn!("{e}; hosts excluded after losing a vote may be used");
            return;
        }
    };
    if excluded.is_empty() {
        return;
    }
    hosts.hosts.retain(|spec| {
        let HostKind::Tcp { host, port } = &spec.kind else {
            return true;
        };
        let keep = resolve(host, *port).is_none_or(|addr| !excluded.contains(&addr));
        if !keep {
            tracing::debug!(
                "not using {}: excluded after losing a vote (see {} in {})",
                spec.verbatim,
                EXCLUDED_FILE,
                dir.display()
            );
        }
        keep
    });
}

/// A host that may vote on this job.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) spec: HostSpec,
    pub(super) remote: RemoteHost,
    pub(super) addr: SocketAddr,
    /// Its identity (hex), when the signed host list names it.
    pub(super) id: Option<String>,
}

/// The hosts of the list that may vote, and why the others may not. A
/// candidate's index is its [`crate::verify::scheduler::HostId`].
pub(super) struct Voters {
    /// Only the candidates, for the slot machinery.
    list: HostList,
    pub(super) candidates: Vec<Candidate>,
    left_out: Vec<String>,
    /// With a signed host list: what it says of each candidate, index for
    /// index; hosts are then drawn at random under the pairing rules instead
    /// of in list order.
    pairing: Option<Vec<Listed<Owner, Network>>>,
    /// What earlier jobs showed of each candidate's speed, index for index.
    ranks: Vec<Rank>,
}

/// Who answers for a candidate, for the pairing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The owner group the signed list names.
    Listed(IdentityId),
    /// A host the user added to `DISTCC_HOSTS` by hand: its own owner.
    Own(usize),
}

/// A candidate's network, for the pairing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    Key(NetKey),
    /// Every host on its own: the list offers no pair across networks at all
    /// (a pool on one LAN), which says nothing an attacker could arrange.
    Alone(usize),
}

/// The answer to "a slot on a host this job has not used".
pub(super) enum Take {
    Got(usize, SlotGuard),
    /// Eligible hosts exist, but every slot is taken.
    Busy,
    /// No eligible host is left for this job.
    NoneLeft,
}

/// The tickets of `list` this member can present at `now`. Expired ones are
/// left out (a host would refuse them) with a word on what to do.
fn usable_tickets(list: &HostsResponse, me: &IdentityId, now: u64) -> Vec<Ticket> {
    let mine: Vec<Ticket> = list
        .tickets
        .iter()
        .filter_map(|hex| Ticket::from_hex(hex).ok())
        .filter(|t| t.member == *me)
        .collect();
    let valid: Vec<Ticket> = mine.iter().filter(|t| now < t.expires).cloned().collect();
    if valid.len() < mine.len() {
        tracing::warn!(
            "{} of the coordinator's tickets have expired, so network hosts outside your own \
             --allow will refuse jobs (they then compile here): run `dportage` again for fresh ones",
            mine.len() - valid.len()
        );
    }
    valid
}

impl Voters {
    pub(super) fn new(hosts: &HostList, excluded: &[SocketAddr]) -> Voters {
        let mut candidates = Vec::new();
        let mut left_out = Vec::new();
        for spec in &hosts.hosts {
            if spec.down {
                continue;
            }
            let (name, port) = match &spec.kind {
                HostKind::Local => {
                    left_out.push(format!(
                        "{}: this machine is the arbiter, not a remote vote",
                        spec.verbatim
                    ));
                    continue;
                }
                HostKind::Ssh { .. } => {
                    left_out.push(format!(
                        "{}: SSH hosts are not supported by dportage",
                        spec.verbatim
                    ));
                    continue;
                }
                HostKind::Tcp { host, port } => (host, *port),
            };
            if spec.auth.is_some() {
                left_out.push(format!(
                    "{}: GSS-API authentication is not supported by dportage",
                    spec.verbatim
                ));
                continue;
            }
            let Some(addr) = resolve(name, port) else {
                left_out.push(format!("{}: cannot resolve {name}", spec.verbatim));
                continue;
            };
            if excluded.contains(&addr) {
                left_out.push(format!(
                    "{}: excluded after losing a vote (see excluded-hosts in DPORTAGE_DIR)",
                    spec.verbatim
                ));
                continue;
            }
            let version = match spec.protocol() {
                // Pump mode is served by preprocessing here and speaking protocol 2.
                ProtocolVersion::V3 => ProtocolVersion::V2,
                other => other,
            };
            candidates.push(Candidate {
                spec: spec.clone(),
                remote: RemoteHost {
                    label: spec.verbatim.clone(),
                    // The resolved address, so every connection of the job goes
                    // to the address whose distinctness was checked.
                    host: addr.ip().to_string(),
                    port,
                    version,
                    ticket: None,
                },
                addr,
                id: None,
            });
        }
        for note in &left_out {
            tracing::debug!("not a voting host: {note}");
        }
        let list = HostList {
            hosts: candidates.iter().map(|c| c.spec.clone()).collect(),
            ..hosts.clone()
        };
        Voters {
            ranks: vec![Rank::unknown(); candidates.len()],
            list,
            candidates,
            left_out,
            pairing: None,
        }
    }

    /// Draw hosts from now on as the pairing rules say, with what the signed
    /// `list` tells of each candidate (owner, network, standing). Hosts of
    /// `DISTCC_HOSTS` that the list does not name are the user's own: trusted
    /// like established hosts, each its own owner.
    ///
    /// Hosts whose entry says they take tickets get this member's ticket for
    /// them (one that is `member`'s and still valid at `now`).
    pub(super) fn pair_by(&mut self, list: &HostsResponse, member: &Arc<Identity>, now: u64) {
        let tickets = usable_tickets(list, &member.id(), now);
        let mut listed: Vec<Listed<Owner, Network>> = self
            .candidates
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                let entry = list.hosts.iter().find(|h| {
                    h.port == c.addr.port()
                        && h.host
                            .parse::<IpAddr>()
                            .ok()
                            .or_else(|| resolve(&h.host, h.port).map(|a| a.ip()))
                            == Some(c.addr.ip())
                });
                c.id = entry.map(|h| h.id.to_string());
                c.remote.ticket = entry
                    .filter(|h| h.tickets)
                    .and_then(|h| tickets.iter().find(|t| t.host == h.id))
                    .map(|t| {
                        Arc::new(TicketHolder {
                            ticket: t.clone(),
                            member: Arc::clone(member),
                        })
                    });
                Listed {
                    owner: entry.map_or(Owner::Own(i), |h| Owner::Listed(h.owner)),
                    network: Network::Key(NetKey::of(c.addr.ip())),
                    standing: entry.map_or(Standing::Established, |h| h.standing),
                    weight: MAX_SPEED_WEIGHT.div_ceil(2),
                }
            })
            .collect();
        let any_pair_across_networks = (0..listed.len())
            .any(|a| (0..listed.len()).any(|b| a != b && may_join(&[&listed[a]], &listed[b])));
        if !any_pair_across_networks {
            for (i, l) in listed.iter_mut().enumerate() {
                l.network = Network::Alone(i);
            }
        }
        for (l, rank) in listed.iter_mut().zip(&self.ranks) {
            l.weight = rank.weight;
        }
        self.pairing = Some(listed);
    }

    /// Weigh the draw by what `book` says of each candidate's speed at `now`
    /// ([`crate::trust::speed`]): in a signed list's random draw faster hosts
    /// weigh more, and in a plain list the fastest are tried first; demoted
    /// hosts are asked only when no other host has a free slot. Before or
    /// after [`Voters::pair_by`].
    pub(super) fn rank_by_speed(&mut self, book: &SpeedBook, now: u64) {
        let addresses: Vec<String> = self.candidates.iter().map(|c| c.addr.to_string()).collect();
        let keys: Vec<HostKey<'_>> = self
            .candidates
            .iter()
            .zip(&addresses)
            .map(|(c, address)| HostKey {
                address: address.as_str(),
                id: c.id.as_deref(),
            })
            .collect();
        self.ranks = book.rank(&keys, now);
        for (c, rank) in self.candidates.iter().zip(&self.ranks) {
            if rank.demoted {
                tracing::debug!(
                    "{} lagged on earlier jobs: asked only when no other host has a free slot",
                    c.spec.verbatim
                );
            }
        }
        if let Some(listed) = &mut self.pairing {
            for (l, rank) in listed.iter_mut().zip(&self.ranks) {
                l.weight = rank.weight;
            }
        }
        // The slot machinery tries `list` in order.
        self.list.hosts = preference_order(&self.ranks)
            .into_iter()
            .map(|i| self.candidates[i].spec.clone())
            .collect();
    }

    /// Distinct addresses among candidates that are not backed off.
    pub(super) fn distinct_usable(&self, lock: &LockDir) -> usize {
        let mut ips: Vec<IpAddr> = Vec::new();
        for c in &self.candidates {
            if !lock.is_backed_off(&c.spec) && !ips.contains(&c.addr.ip()) {
                ips.push(c.addr.ip());
            }
        }
        ips.len()
    }

    pub(super) fn why_not(&self) -> String {
        if self.left_out.is_empty() {
            String::new()
        } else {
            format!(" (not voting: {})", self.left_out.join("; "))
        }
    }

    pub(super) fn label(&self, idx: usize) -> &str {
        &self.candidates[idx].spec.verbatim
    }

    /// A slot on a host this job has not used, at an address it has not used,
    /// preferring networks it has not used. Demoted hosts only when no other
    /// host has a free slot.
    pub(super) fn take_host(&self, lock: &LockDir, used: &[usize]) -> Take {
        if let Some(listed) = &self.pairing {
            return self.draw_host(listed, lock, used);
        }
        // distcc's order takes slot 0 of every host before slot 1 of any, so
        // list order alone would still give a demoted host every other job.
        let demoted: Vec<String> = self
            .candidates
            .iter()
            .zip(&self.ranks)
            .filter(|(_, r)| r.demoted)
            .map(|(c, _)| c.spec.verbatim.clone())
            .collect();
        if !demoted.is_empty() {
            if let Take::Got(idx, slot) = self.take_in_order(lock, used, &demoted) {
                return Take::Got(idx, slot);
            }
        }
        self.take_in_order(lock, used, &[])
    }

    /// [`Voters::take_host`] in the list's order, never taking `avoid`.
    fn take_in_order(&self, lock: &LockDir, used: &[usize], avoid: &[String]) -> Take {
        let candidates = &self.candidates;
        let used_ips: Vec<IpAddr> = used.iter().map(|&i| candidates[i].addr.ip()).collect();
        let used_nets: Vec<Vec<u8>> = used_ips.iter().map(|ip| network(*ip)).collect();
        let mut same_address = avoid.to_vec();
        let mut same_network = avoid.to_vec();
        for (i, c) in candidates.iter().enumerate() {
            if used.contains(&i) || used_ips.contains(&c.addr.ip()) {
                same_address.push(c.spec.verbatim.clone());
                same_network.push(c.spec.verbatim.clone());
            } else if used_nets.contains(&network(c.addr.ip())) {
                same_network.push(c.spec.verbatim.clone());
            }
        }
        let any_eligible = |exclude: &[String]| {
            candidates
                .iter()
                .any(|c| !exclude.contains(&c.spec.verbatim) && !lock.is_backed_off(&c.spec))
        };
        let found = |spec: &HostSpec| {
            candidates
                .iter()
                .enumerate()
                .position(|(i, c)| c.spec.verbatim == spec.verbatim && !used.contains(&i))
        };
        if any_eligible(&same_network) {
            if let Some((spec, slot)) = lock.try_acquire(&self.list, &same_network) {
                if let Some(idx) = found(&spec) {
                    return Take::Got(idx, slot);
                }
            }
        }
        if !any_eligible(&same_address) {
            return Take::NoneLeft;
        }
        match lock.try_acquire(&self.list, &same_address) {
            Some((spec, slot)) => match found(&spec) {
                Some(idx) => Take::Got(idx, slot),
                None => Take::NoneLeft,
            },
            None => Take::Busy,
        }
    }
}

impl Voters {
    /// A slot on a host drawn at random among those that may join the hosts
    /// this job `used` ([`crate::trust::pairing`]): nobody, not the list's
    /// order nor a host, chooses who votes beside whom.
    ///
    /// Demoted hosts are drawn only when no other host that may join has a
    /// free slot.
    fn draw_host(&self, listed: &[Listed<Owner, Network>], lock: &LockDir, used: &[usize]) -> Take {
        let mut rng = rand::thread_rng();
        let mut busy: Vec<usize> = Vec::new();
        let mut demoted_too = false;
        loop {
            let open = |i: usize| {
                !busy.contains(&i)
                    && (demoted_too || !self.ranks.get(i).is_some_and(|r| r.demoted))
                    && !lock.is_backed_off(&self.candidates[i].spec)
            };
            let Some(i) = draw(listed, used, open, &mut rng) else {
                if !demoted_too {
                    demoted_too = true;
                    continue;
                }
                return if busy.is_empty() {
                    Take::NoneLeft
                } else {
                    Take::Busy
                };
            };
            let one = HostList {
                hosts: vec![self.candidates[i].spec.clone()],
                ..self.list.clone()
            };
            match lock.try_acquire(&one, &[]) {
                Some((_, slot)) => return Take::Got(i, slot),
                None => busy.push(i),
            }
        }
    }
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    (host, port).to_socket_addrs().ok()?.next()
}

/// The network an address belongs to, for preferring hosts of different
/// networks: IPv4 /24, IPv6 /48.
fn network(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets()[..3].to_vec(),
            None => v6.octets()[..6].to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_group_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(network(ip("10.1.2.3")), network(ip("10.1.2.200")));
        assert_ne!(network(ip("10.1.2.3")), network(ip("10.1.3.3")));
        assert_eq!(
            network(ip("2001:db8:1::1")),
            network(ip("2001:db8:1:ff::2"))
        );
        assert_ne!(network(ip("2001:db8:1::1")), network(ip("2001:db8:2::1")));
        assert_eq!(network(ip("::ffff:10.1.2.3")), network(ip("10.1.2.9")));
    }

    fn entry(addr: &str, owner: u8, standing: Standing) -> crate::network::api::HostEntry {
        let (host, port) = addr.split_once(':').unwrap();
        crate::network::api::HostEntry {
            id: IdentityId([owner.wrapping_add(100); 32]),
            host: host.into(),
            port: port.parse().unwrap(),
            capacity: 4,
            lzo: false,
            tickets: false,
            tz_offset_secs: 0,
            owner: IdentityId([owner; 32]),
            network: String::new(),
            arch: "x86_64".into(),
            standing,
            confined: true,
        }
    }

    /// Draw the voters of `jobs` jobs of `n` hosts each; every pair drawn.
    fn draw_jobs(voters: &Voters, lock: &LockDir, n: usize, jobs: usize) -> Vec<Vec<usize>> {
        (0..jobs)
            .map(|_| {
                let mut used = Vec::new();
                let mut slots = Vec::new();
                while used.len() < n {
                    match voters.take_host(lock, &used) {
                        Take::Got(i, slot) => {
                            used.push(i);
                            slots.push(slot);
                        }
                        _ => break,
                    }
                }
                used
            })
            .collect()
    }

    #[test]
    fn signed_list_pairs_at_random_never_one_owner_network_or_two_newcomers() {
        let dir = tempfile::tempdir().unwrap();
        let lock = LockDir::open(dir.path(), std::time::Duration::from_secs(60)).unwrap();
        let hosts = crate::hosts::parse_host_list(
            "10.1.0.1:1/4 10.1.0.2:1/4 10.2.0.1:1/4 10.3.0.1:1/4 10.4.0.1:1/4 10.5.0.1:1/4",
        )
        .unwrap();
        let me = IdentityId([0; 32]);
        let list = HostsResponse {
            hosts: vec![
                entry("10.1.0.1:1", 1, Standing::Established),
                entry("10.1.0.2:1", 2, Standing::Established), // network of host 0
                entry("10.2.0.1:1", 1, Standing::Established), // owner of host 0
                entry("10.3.0.1:1", 3, Standing::Probationary),
                entry("10.4.0.1:1", 4, Standing::Probationary),
                // 10.5.0.1 is not in the list: the user's own host.
            ],
            redundancy: 2,
            member_via: me,
            issued_to: me,
            issued_at: 0,
            tickets: Vec::new(),
        };
        let mut voters = Voters::new(&hosts, &[]);
        voters.pair_by(&list, &Arc::new(Identity::from_seed([0; 32])), 0);
        let mut firsts = std::collections::HashSet::new();
        for pair in draw_jobs(&voters, &lock, 2, 400) {
            assert_eq!(pair.len(), 2, "a pair can always be drawn");
            firsts.insert(pair[0]);
            let (a, b) = (pair[0].min(pair[1]), pair[0].max(pair[1]));
            assert_ne!((a, b), (0, 1), "one network");
            assert_ne!((a, b), (0, 2), "one owner");
            assert_ne!((a, b), (3, 4), "two newcomers");
        }
        assert_eq!(firsts.len(), 6, "any host may be drawn first: {firsts:?}");
    }

    #[test]
    fn one_lan_still_pairs_but_never_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let lock = LockDir::open(dir.path(), std::time::Duration::from_secs(60)).unwrap();
        let hosts =
            crate::hosts::parse_host_list("127.0.0.2:1/2 127.0.0.3:1/2 127.0.0.4:1/2").unwrap();
        let me = IdentityId([0; 32]);
        let list = HostsResponse {
            hosts: vec![
                entry("127.0.0.2:1", 1, Standing::Established),
                entry("127.0.0.3:1", 1, Standing::Established),
                entry("127.0.0.4:1", 2, Standing::Established),
            ],
            redundancy: 2,
            member_via: me,
            issued_to: me,
            issued_at: 0,
            tickets: Vec::new(),
        };
        let mut voters = Voters::new(&hosts, &[]);
        voters.pair_by(&list, &Arc::new(Identity::from_seed([0; 32])), 0);
        for pair in draw_jobs(&voters, &lock, 2, 100) {
            assert_eq!(pair.len(), 2);
            assert!(pair.contains(&2), "hosts 0 and 1 share an owner: {pair:?}");
        }
    }

    /// A demoted host is never drawn while another host that may join has a
    /// free slot, and is drawn when none has.
    #[test]
    fn demoted_hosts_are_drawn_only_when_the_others_are_busy() {
        use crate::trust::speed::{HostKey, Outcome, SpeedBook};
        let dir = tempfile::tempdir().unwrap();
        let lock = LockDir::open(dir.path(), std::time::Duration::from_secs(60)).unwrap();
        let hosts =
            crate::hosts::parse_host_list("10.1.0.1:1/1 10.2.0.1:1/1 10.3.0.1:1/1").unwrap();
        let me = IdentityId([0; 32]);
        let entries = vec![
            entry("10.1.0.1:1", 1, Standing::Established),
            entry("10.2.0.1:1", 2, Standing::Established),
            entry("10.3.0.1:1", 3, Standing::Established),
        ];
        let list = HostsResponse {
            hosts: entries.clone(),
            redundancy: 2,
            member_via: me,
            issued_to: me,
            issued_at: 0,
            tickets: Vec::new(),
        };
        let mut book = SpeedBook::default();
        let slow_id = entries[2].id.to_string();
        let slow = HostKey {
            address: "10.3.0.1:1",
            id: Some(&slow_id),
        };
        book.record(slow, Outcome::Hedged { secs: 3.0 }, 100);
        book.record(slow, Outcome::Hedged { secs: 3.0 }, 101);
        let mut voters = Voters::new(&hosts, &[]);
        voters.pair_by(&list, &Arc::new(Identity::from_seed([0; 32])), 0);
        voters.rank_by_speed(&book, 102);
        for pair in draw_jobs(&voters, &lock, 2, 200) {
            assert_eq!(pair.len(), 2);
            assert!(!pair.contains(&2), "the demoted host was drawn: {pair:?}");
        }
        // The first host's only slot is taken: the demoted one stands in.
        let Take::Got(0, _held) = voters.take_host(&lock, &[1]) else {
            panic!("host 0 has a free slot");
        };
        for pair in draw_jobs(&voters, &lock, 2, 20) {
            let mut sorted = pair.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [1, 2]);
        }
    }

    /// A plain list tries its hosts fastest first, one that lagged last.
    #[test]
    fn plain_lists_try_slow_hosts_last() {
        use crate::trust::speed::{HostKey, Outcome, SpeedBook};
        let dir = tempfile::tempdir().unwrap();
        let lock = LockDir::open(dir.path(), std::time::Duration::from_secs(60)).unwrap();
        let hosts =
            crate::hosts::parse_host_list("127.0.0.2:1/1 127.0.0.3:1/1 127.0.0.4:1/1").unwrap();
        let mut book = SpeedBook::default();
        let key = |address| HostKey { address, id: None };
        book.record(key("127.0.0.2:1"), Outcome::Hedged { secs: 1.2 }, 100);
        book.record(key("127.0.0.3:1"), Outcome::Answered { secs: 0.2 }, 100);
        book.record(key("127.0.0.4:1"), Outcome::Answered { secs: 0.1 }, 100);
        let mut voters = Voters::new(&hosts, &[]);
        voters.rank_by_speed(&book, 101);
        let mut used = Vec::new();
        let mut held = Vec::new();
        while let Take::Got(i, slot) = voters.take_host(&lock, &used) {
            used.push(i);
            held.push(slot);
        }
        assert_eq!(used, [2, 1, 0]);
        drop(held);

        // Demoted, with slots to spare: asked only once every slot of the
        // others is taken, although distcc's order is slot by slot.
        let hosts =
            crate::hosts::parse_host_list("127.0.0.2:1/3 127.0.0.3:1/2 127.0.0.4:1/2").unwrap();
        book.record(key("127.0.0.2:1"), Outcome::Hedged { secs: 1.2 }, 100);
        let mut voters = Voters::new(&hosts, &[]);
        voters.rank_by_speed(&book, 101);
        let pairs = draw_jobs(&voters, &lock, 2, 1);
        let mut held = Vec::new();
        let mut jobs = Vec::new();
        for _ in 0..3 {
            let mut used = Vec::new();
            while used.len() < 2 {
                let Take::Got(i, slot) = voters.take_host(&lock, &used) else {
                    break;
                };
                used.push(i);
                held.push(slot);
            }
            jobs.push(used);
        }
        assert_eq!(pairs, [[2, 1]]);
        assert!(!jobs[0].contains(&0) && !jobs[1].contains(&0), "{jobs:?}");
        assert!(jobs[2].contains(&0), "{jobs:?}");
    }

    /// A host whose entry takes tickets gets this member's valid ticket for
    /// it; other hosts, other members' and expired tickets give none.
    #[test]
    fn tickets_go_to_the_hosts_that_take_them() {
        use crate::network::ticket::Ticket;
        let hosts =
            crate::hosts::parse_host_list("127.0.0.2:1/2 127.0.0.3:1/2 127.0.0.4:1/2 127.0.0.5:1")
                .unwrap();
        let coordinator = Identity::from_seed([9; 32]);
        let me = Arc::new(Identity::from_seed([8; 32]));
        let other = Identity::from_seed([7; 32]).id();
        let entries: Vec<_> = (2..=5u8)
            .map(|i| crate::network::api::HostEntry {
                tickets: i != 5,
                ..entry(&format!("127.0.0.{i}:1"), i, Standing::Established)
            })
            .collect();
        let now = 1_000_000;
        let ticket = |host: IdentityId, member: IdentityId, lifetime: u64| {
            Ticket::issue(&coordinator, member, host, now, lifetime)
        };
        let list = HostsResponse {
            tickets: vec![
                ticket(entries[0].id, me.id(), 3600).to_hex(),
                ticket(entries[1].id, other, 3600).to_hex(),
                ticket(entries[2].id, me.id(), 10).to_hex(),
                ticket(entries[3].id, me.id(), 3600).to_hex(),
                "not a ticket".into(),
            ],
            hosts: entries.clone(),
            redundancy: 2,
            member_via: me.id(),
            issued_to: me.id(),
            issued_at: now,
        };
        let mut voters = Voters::new(&hosts, &[]);
        voters.pair_by(&list, &me, now + 60);
        let got: Vec<Option<IdentityId>> = voters
            .candidates
            .iter()
            .map(|c| c.remote.ticket.as_ref().map(|t| t.ticket.host))
            .collect();
        assert_eq!(got, [Some(entries[0].id), None, None, None]);
    }

    #[test]
    fn pool_leaves_out_local_and_excluded_hosts() {
        let hosts = crate::hosts::parse_host_list(
            "localhost 127.0.0.2:4000 127.0.0.3:4000,lzo 127.0.0.9:1,down",
        )
        .unwrap();
        let excluded = vec!["127.0.0.3:4000".parse().unwrap()];
        let voters = Voters::new(&hosts, &excluded);
        let names: Vec<&str> = voters
            .candidates
            .iter()
            .map(|c| c.spec.verbatim.as_str())
            .collect();
        assert_eq!(names, ["127.0.0.2:4000"]);
        assert_eq!(voters.list.hosts.len(), 1);
        let why = voters.why_not();
        assert!(
            why.contains("localhost: this machine is the arbiter"),
            "{why}"
        );
        assert!(why.contains("127.0.0.3:4000,lzo: excluded"), "{why}");
    }
}
