//! The daemon's side of tickets (`crate::network::ticket`): a daemon
//! registered with a coordinator serves a client outside `--allow` when the
//! client's first packet is a valid ticket pass for this daemon, signed by
//! that coordinator. The coordinator's key is pinned from the first heartbeat
//! answer (or from an earlier run's pin in `DPORTAGE_DIR`); until then only
//! `--allow` addresses are served.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, RwLock};

use crate::network::identity::IdentityId;
use crate::network::ticket::{check_pass, TicketError, NONCE_LEN, PROOF_WINDOW_SECS};

/// Proofs remembered at most. Past this (65 536 jobs within ten minutes on
/// one host) new proofs are refused rather than old ones forgotten early,
/// which would open a window for replays.
const MAX_REMEMBERED: usize = 65_536;

/// Nonces of proofs seen while they could still be accepted: a proof is good
/// for [`PROOF_WINDOW_SECS`] either side of its time, so it is remembered
/// until then.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    by_expiry: VecDeque<(u64, [u8; NONCE_LEN])>,
    seen: HashSet<[u8; NONCE_LEN]>,
}

impl ReplayGuard {
    /// Record `nonce` of a proof made at `proof_time`; `false` if it was seen
    /// before (or memory is full).
    pub fn admit(&mut self, nonce: [u8; NONCE_LEN], proof_time: u64, now: u64) -> bool {
        while let Some(&(expiry, old)) = self.by_expiry.front() {
            if expiry >= now {
                break;
            }
            self.by_expiry.pop_front();
            self.seen.remove(&old);
        }
        if self.seen.contains(&nonce) || self.seen.len() >= MAX_REMEMBERED {
            return false;
        }
        let expiry = proof_time.saturating_add(PROOF_WINDOW_SECS);
        // Kept in expiry order: proofs arrive roughly in time order, and an
        // early one placed late is only forgotten a little later.
        let at = self
            .by_expiry
            .iter()
            .rposition(|&(e, _)| e <= expiry)
            .map_or(0, |i| i + 1);
        self.by_expiry.insert(at, (expiry, nonce));
        self.seen.insert(nonce);
        true
    }
}

/// What this daemon checks tickets against.
#[derive(Debug)]
pub struct TicketGate {
    /// This daemon's identity: tickets name it.
    host: IdentityId,
    coordinator: RwLock<Option<IdentityId>>,
    replays: Mutex<ReplayGuard>,
}

/// What learning the coordinator's key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Known,
    /// The coordinator now signs with another key than the pinned one; the
    /// pin stays (tickets under the new key are refused).
    Conflict,
}

impl TicketGate {
    pub fn new(host: IdentityId, pinned: Option<IdentityId>) -> Self {
        Self {
            host,
            coordinator: RwLock::new(pinned),
            replays: Mutex::new(ReplayGuard::default()),
        }
    }

    pub fn host(&self) -> IdentityId {
        self.host
    }

    pub fn coordinator_key(&self) -> Option<IdentityId> {
        *self.coordinator.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Pin `key` unless one is pinned already.
    pub fn learn(&self, key: IdentityId) -> Learned {
        let mut pinned = self.coordinator.write().unwrap_or_else(|e| e.into_inner());
        match *pinned {
            None => {
                *pinned = Some(key);
                Learned::New
            }
            Some(p) if p == key => Learned::Known,
            Some(_) => Learned::Conflict,
        }
    }

    /// Check a `TCKT` body at `now`: the member it admits.
    pub fn check(&self, pass: &[u8], now: u64) -> Result<IdentityId, TicketError> {
        let coordinator = self
            .coordinator_key()
            .ok_or(TicketError::NoCoordinatorKey)?;
        let admitted = check_pass(pass, &coordinator, &self.host, now)?;
        let fresh = self
            .replays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(admitted.nonce, admitted.proof_time, now);
        if !fresh {
            return Err(TicketError::Replayed);
        }
        Ok(admitted.member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::identity::Identity;
    use crate::network::ticket::{present, Ticket};

    #[test]
    fn replays_are_refused_while_the_proof_could_be_accepted() {
        let mut g = ReplayGuard::default();
        assert!(g.admit([1; NONCE_LEN], 1000, 1000));
        assert!(!g.admit([1; NONCE_LEN], 1000, 1001));
        assert!(g.admit([2; NONCE_LEN], 990, 1001));
        // Still remembered at the last moment the proof is good …
        assert!(!g.admit([1; NONCE_LEN], 1000, 1000 + PROOF_WINDOW_SECS));
        // … forgotten after, when the proof is refused as stale anyway.
        assert!(g.admit([1; NONCE_LEN], 1000, 1001 + PROOF_WINDOW_SECS));
        assert_eq!(g.seen.len(), g.by_expiry.len());
    }

    #[test]
    fn gate_checks_against_the_learned_key() {
        let coordinator = Identity::from_seed([1; 32]);
        let member = Identity::from_seed([2; 32]);
        let host = Identity::from_seed([3; 32]).id();
        let now = 1_800_000_000;
        let ticket = Ticket::issue(&coordinator, member.id(), host, now, 3600);
        let gate = TicketGate::new(host, None);
        let pass = present(&ticket, &member, now, [5; NONCE_LEN]);
        assert_eq!(gate.check(&pass, now), Err(TicketError::NoCoordinatorKey));
        assert_eq!(gate.learn(coordinator.id()), Learned::New);
        assert_eq!(gate.learn(coordinator.id()), Learned::Known);
        assert_eq!(gate.learn(member.id()), Learned::Conflict);
        assert_eq!(gate.check(&pass, now), Ok(member.id()));
        assert_eq!(gate.check(&pass, now + 1), Err(TicketError::Replayed));
        let again = present(&ticket, &member, now, [6; NONCE_LEN]);
        assert_eq!(gate.check(&again, now + 1), Ok(member.id()));
    }
}
