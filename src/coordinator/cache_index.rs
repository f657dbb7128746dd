//! The verified result cache's index (issue 16), pure: entries by key and
//! the claims still waiting for a second word. Times are passed in (unix
//! seconds); the routes hold it behind a mutex and persist what changes.
//!
//! A claim is one host's statement "key → result". It waits among the key's
//! pending claims until claims of the same (toolchain, result) satisfy
//! [`may_enter`]: two established hosts of distinct owners and networks.
//! The facts that decide it (owner group, network, standing) are the
//! coordinator's own, taken from the pool when the claim arrives; a host's
//! later claim for the same key replaces its earlier one, so repeating a
//! claim never adds a voice. An entry, once made, never changes its result:
//! a claim that disagrees is only counted; an adjudication may withdraw it.
//!
//! Bounded: at most [`MAX_PENDING_PER_KEY`] claims per key and
//! [`CacheIndex::with_caps`]' total (oldest dropped first), each forgotten
//! after [`PENDING_TTL_SECS`]; at most [`MAX_ENTRY_HOSTS`] hosts per entry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;

use crate::network::identity::IdentityId;
use crate::network::selection::NetKey;
use crate::trust::cache_entry::{may_enter, CacheKey, Decision, Witness};
use crate::trust::standing::Standing;

/// Pending claims kept per key: enough for every host of a few dispatches.
pub const MAX_PENDING_PER_KEY: usize = 8;
/// Pending claims kept in all, by default.
pub const MAX_PENDING: usize = 1_000_000;
/// How long a claim waits for a second word.
pub const PENDING_TTL_SECS: u64 = 24 * 3600;
/// Hosts remembered per entry (witnesses first, then later holders).
pub const MAX_ENTRY_HOSTS: usize = 8;

/// 32 raw bytes of a hex hash (key, result, toolchain id); `None` if it is not one.
pub fn hash_bytes(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

/// What the coordinator knows of the claiming host when its claim arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    pub id: IdentityId,
    /// Its owner group's representative (`Pool::owner_of`).
    pub owner: IdentityId,
    /// The network of its heartbeat's address.
    pub network: NetKey,
    pub standing: Standing,
}

/// One claim, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub key: CacheKey,
    pub toolchain: [u8; 32],
    pub result: [u8; 32],
}

impl Claim {
    /// `None` if a field is not a hash (the route validates first).
    pub fn from_api(c: &crate::network::cache_api::CacheClaim) -> Option<Claim> {
        Some(Claim {
            key: CacheKey(hash_bytes(&c.key)?),
            toolchain: hash_bytes(&c.toolchain)?,
            result: hash_bytes(&c.result)?,
        })
    }
}

/// An entry of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub result: [u8; 32],
    /// Index into the index's toolchain table (few toolchains, many entries).
    toolchain: u32,
    /// The witnesses (the first `witnesses` ids), then later holders.
    hosts: Vec<IdentityId>,
    witnesses: u8,
    pub made_at: u64,
    pub hits: u64,
    /// When and why it was withdrawn.
    pub withdrawn: Option<Box<(u64, String)>>,
}

impl Entry {
    /// The hosts whose claims made the entry.
    pub fn witnesses(&self) -> &[IdentityId] {
        &self.hosts[..usize::from(self.witnesses)]
    }

    /// Every host that claimed the entry's result (witnesses included).
    pub fn holders(&self) -> &[IdentityId] {
        &self.hosts
    }

    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn.is_some()
    }
}

/// An entry as stored and loaded (the store's row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub key: CacheKey,
    pub toolchain: [u8; 32],
    pub result: [u8; 32],
    pub witnesses: Vec<IdentityId>,
    /// Holders other than the witnesses.
    pub holders: Vec<IdentityId>,
    pub made_at: u64,
    pub hits: u64,
    pub withdrawn: Option<(u64, String)>,
}

/// What one claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Waiting for agreeing claims.
    Pending,
    /// It completed an entry (to be stored).
    Made(EntryRow),
    /// It agrees with an entry and its host became a holder.
    HolderAdded,
    /// It agrees with an entry its host already holds, or one with no room.
    Agrees,
    /// It disagrees with the entry (result or toolchain): counted, ignored.
    Conflict { entry_result: [u8; 32] },
    /// The key's entry was withdrawn: claims for it are ignored.
    Withdrawn,
}

#[derive(Debug, Clone, Copy)]
struct PendingClaim {
    seq: u64,
    host: HostFacts,
    toolchain: [u8; 32],
    result: [u8; 32],
}

/// Counters the index keeps about itself (the routes count lookups, hits
/// and disputes in [`CacheCounters`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    pub entries: usize,
    pub withdrawn: usize,
    pub pending: usize,
}

/// Monotonic counts for `/metrics` and the status page.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub claims: AtomicU64,
    pub conflicts: AtomicU64,
    pub entries_made: AtomicU64,
    pub lookups: AtomicU64,
    pub hits: AtomicU64,
    pub disputes: AtomicU64,
    pub disputes_upheld: AtomicU64,
    pub disputes_rejected: AtomicU64,
    pub disputes_inconclusive: AtomicU64,
    pub withdrawals: AtomicU64,
}

pub struct CacheIndex {
    entries: HashMap<CacheKey, Entry>,
    toolchains: Vec<[u8; 32]>,
    toolchain_ids: HashMap<[u8; 32], u32>,
    pending: HashMap<CacheKey, Vec<PendingClaim>>,
    /// Every pending claim in arrival order, (seq, at, key): the oldest is
    /// dropped first. Entries whose claim went otherwise are skipped.
    order: VecDeque<(u64, u64, CacheKey)>,
    pending_total: usize,
    max_pending: usize,
    next_seq: u64,
    withdrawn: usize,
    /// Keys whose hit count changed since the last [`CacheIndex::take_dirty_hits`].
    dirty_hits: HashSet<CacheKey>,
}

impl Default for CacheIndex {
    fn default() -> Self {
        Self::with_caps(MAX_PENDING)
    }
}

impl CacheIndex {
    pub fn with_caps(max_pending: usize) -> Self {
        CacheIndex {
            entries: HashMap::new(),
            toolchains: Vec::new(),
            toolchain_ids: HashMap::new(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            pending_total: 0,
            max_pending: max_pending.max(1),
            next_seq: 0,
            withdrawn: 0,
            dirty_hits: HashSet::new(),
        }
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            entries: self.entries.len() - self.withdrawn,
            withdrawn: self.withdrawn,
            pending: self.pending_total,
        }
    }

    pub fn get(&self, key: &CacheKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn toolchain_of(&self, e: &Entry) -> [u8; 32] {
        self.toolchains[e.toolchain as usize]
    }

    fn intern(&mut self, toolchain: [u8; 32]) -> u32 {
        if let Some(&i) = self.toolchain_ids.get(&toolchain) {
            return i;
        }
        let i = self.toolchains.len() as u32;
        self.toolchains.push(toolchain);
        self.toolchain_ids.insert(toolchain, i);
        i
    }

    /// Put a stored entry back (at start).
    pub fn load(&mut self, row: EntryRow) {
        let toolchain = self.intern(row.toolchain);
        let witnesses = row.witnesses.len().min(MAX_ENTRY_HOSTS);
        let mut hosts: Vec<IdentityId> = row.witnesses.into_iter().take(witnesses).collect();
        for h in row.holders {
            if hosts.len() < MAX_ENTRY_HOSTS && !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        hosts.shrink_to_fit();
        let entry = Entry {
            result: row.result,
            toolchain,
            hosts,
            witnesses: witnesses as u8,
            made_at: row.made_at,
            hits: row.hits,
            withdrawn: row.withdrawn.map(Box::new),
        };
        if entry.is_withdrawn() {
            self.withdrawn += 1;
        }
        if let Some(old) = self.entries.insert(row.key, entry) {
            if old.is_withdrawn() {
                self.withdrawn -= 1;
            }
        }
    }

    /// Take `claim` from `host` at `now`.
    pub fn claim(&mut self, host: HostFacts, claim: Claim, now: u64) -> ClaimOutcome {
        self.expire(now);
        if let Some(e) = self.entries.get_mut(&claim.key) {
            if e.is_withdrawn() {
                return ClaimOutcome::Withdrawn;
            }
            let same_toolchain = self.toolchains[e.toolchain as usize] == claim.toolchain;
            if e.result != claim.result || !same_toolchain {
                return ClaimOutcome::Conflict {
                    entry_result: e.result,
                };
            }
            if e.hosts.contains(&host.id) || e.hosts.len() >= MAX_ENTRY_HOSTS {
                return ClaimOutcome::Agrees;
            }
            e.hosts.push(host.id);
            return ClaimOutcome::HolderAdded;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let list = self.pending.entry(claim.key).or_default();
        // A host's later claim replaces its earlier one: one host, one voice.
        let before = list.len();
        list.retain(|p| p.host.id != host.id);
        let mut removed = before - list.len();
        if list.len() >= MAX_PENDING_PER_KEY {
            list.remove(0);
            removed += 1;
        }
        list.push(PendingClaim {
            seq,
            host,
            toolchain: claim.toolchain,
            result: claim.result,
        });
        self.pending_total = self.pending_total + 1 - removed;
        self.order.push_back((seq, now, claim.key));

        let agreeing: Vec<&PendingClaim> = list
            .iter()
            .filter(|p| p.toolchain == claim.toolchain && p.result == claim.result)
            .collect();
        let decision = Decision::Agreed(
            agreeing
                .iter()
                .map(|p| Witness {
                    owner: p.host.owner,
                    network: p.host.network,
                    standing: p.host.standing,
                    own: false,
                })
                .collect(),
        );
        let outcome = if may_enter(&decision).is_ok() {
            // Established witnesses first: they are the ones who vouch.
            let mut ws: Vec<&PendingClaim> = agreeing.clone();
            ws.sort_by_key(|p| p.host.standing != Standing::Established);
            let witnesses: Vec<IdentityId> = ws
                .iter()
                .filter(|p| p.host.standing == Standing::Established)
                .map(|p| p.host.id)
                .collect();
            let holders: Vec<IdentityId> = ws
                .iter()
                .filter(|p| p.host.standing != Standing::Established)
                .map(|p| p.host.id)
                .collect();
            let row = EntryRow {
                key: claim.key,
                toolchain: claim.toolchain,
                result: claim.result,
                witnesses,
                holders,
                made_at: now,
                hits: 0,
                withdrawn: None,
            };
            Some(row)
        } else {
            None
        };
        match outcome {
            Some(row) => {
                if let Some(list) = self.pending.remove(&claim.key) {
                    self.pending_total -= list.len();
                }
                self.load(row.clone());
                self.trim();
                ClaimOutcome::Made(row)
            }
            None => {
                self.trim();
                ClaimOutcome::Pending
            }
        }
    }

    /// Forget claims older than [`PENDING_TTL_SECS`].
    pub fn expire(&mut self, now: u64) {
        while let Some(&(seq, at, key)) = self.order.front() {
            if at.saturating_add(PENDING_TTL_SECS) > now {
                break;
            }
            self.order.pop_front();
            self.drop_pending(seq, key);
        }
    }

    /// Drop the oldest claims beyond the total cap.
    fn trim(&mut self) {
        while self.pending_total > self.max_pending {
            let Some((seq, _, key)) = self.order.pop_front() else {
                break;
            };
            self.drop_pending(seq, key);
        }
        // The order queue holds stale rows for claims replaced or consumed;
        // rebuild it when they outnumber the live ones.
        if self.order.len() > 2 * self.pending_total + 1024 {
            let live: HashSet<u64> = self.pending.values().flatten().map(|p| p.seq).collect();
            self.order.retain(|(seq, _, _)| live.contains(seq));
        }
    }

    fn drop_pending(&mut self, seq: u64, key: CacheKey) {
        if let Some(list) = self.pending.get_mut(&key) {
            let before = list.len();
            list.retain(|p| p.seq != seq);
            self.pending_total -= before - list.len();
            if list.is_empty() {
                self.pending.remove(&key);
            }
        }
    }

    /// A lookup answered with `key`'s entry: count the hit.
    pub fn record_hit(&mut self, key: &CacheKey) {
        if let Some(e) = self.entries.get_mut(key) {
            e.hits += 1;
            self.dirty_hits.insert(*key);
        }
    }

    /// Hit counts changed since the last call, to be stored.
    pub fn take_dirty_hits(&mut self) -> Vec<(CacheKey, u64)> {
        let keys: Vec<CacheKey> = self.dirty_hits.drain().collect();
        keys.into_iter()
            .filter_map(|k| self.entries.get(&k).map(|e| (k, e.hits)))
            .collect()
    }

    /// Withdraw `key`'s entry; false if there is none or it is withdrawn already.
    pub fn withdraw(&mut self, key: &CacheKey, at: u64, reason: &str) -> bool {
        match self.entries.get_mut(key) {
            Some(e) if !e.is_withdrawn() => {
                e.withdrawn = Some(Box::new((at, reason.to_string())));
                self.withdrawn += 1;
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::identity::Identity;
    use std::net::{IpAddr, Ipv4Addr};

    const E: Standing = Standing::Established;
    const P: Standing = Standing::Probationary;

    fn net(n: u8) -> NetKey {
        NetKey::of(IpAddr::V4(Ipv4Addr::new(10, 0, n, 1)))
    }

    fn hosts(n: usize) -> Vec<IdentityId> {
        (0..n).map(|_| Identity::generate().id()).collect()
    }

    fn claim(k: u8, r: u8) -> Claim {
        Claim {
            key: CacheKey([k; 32]),
            toolchain: [7; 32],
            result: [r; 32],
        }
    }

    fn kind(o: &ClaimOutcome) -> &'static str {
        match o {
            ClaimOutcome::Pending => "pending",
            ClaimOutcome::Made(_) => "made",
            ClaimOutcome::HolderAdded => "holder",
            ClaimOutcome::Agrees => "agrees",
            ClaimOutcome::Conflict { .. } => "conflict",
            ClaimOutcome::Withdrawn => "withdrawn",
        }
    }

    #[test]
    fn entry_rule_table() {
        // Each row: claims as (host, owner, network, standing, result), and
        // the outcome of each claim in turn.
        type Row = (
            &'static str,
            Vec<(usize, usize, u8, Standing, u8)>,
            Vec<&'static str>,
        );
        let table: Vec<Row> = vec![
            ("one host", vec![(0, 0, 1, E, 1)], vec!["pending"]),
            (
                "one host, repeated",
                vec![(0, 0, 1, E, 1), (0, 0, 1, E, 1), (0, 0, 1, E, 1)],
                vec!["pending", "pending", "pending"],
            ),
            (
                "two unrelated established",
                vec![(0, 0, 1, E, 1), (1, 1, 2, E, 1)],
                vec!["pending", "made"],
            ),
            (
                "one owner",
                vec![(0, 0, 1, E, 1), (1, 0, 2, E, 1)],
                vec!["pending", "pending"],
            ),
            (
                "one network",
                vec![(0, 0, 1, E, 1), (1, 1, 1, E, 1)],
                vec!["pending", "pending"],
            ),
            (
                "a probationary host",
                vec![(0, 0, 1, E, 1), (1, 1, 2, P, 1)],
                vec!["pending", "pending"],
            ),
            (
                "disagreeing results",
                vec![(0, 0, 1, E, 1), (1, 1, 2, E, 2)],
                vec!["pending", "pending"],
            ),
            (
                "then agree, conflict, hold",
                vec![
                    (0, 0, 1, E, 1),
                    (1, 1, 2, E, 1),
                    (2, 2, 3, E, 2),
                    (2, 2, 3, E, 1),
                    (2, 2, 3, E, 1),
                    (0, 0, 1, E, 1),
                ],
                vec!["pending", "made", "conflict", "holder", "agrees", "agrees"],
            ),
            (
                "a third party makes it",
                vec![(0, 0, 1, E, 1), (1, 0, 1, E, 1), (2, 2, 2, E, 1)],
                vec!["pending", "pending", "made"],
            ),
        ];
        for (name, claims, want) in table {
            let ids = hosts(4);
            let owners = hosts(4);
            let mut ix = CacheIndex::default();
            let got: Vec<&str> = claims
                .iter()
                .enumerate()
                .map(|(t, &(h, o, n, s, r))| {
                    let facts = HostFacts {
                        id: ids[h],
                        owner: owners[o],
                        network: net(n),
                        standing: s,
                    };
                    kind(&ix.claim(facts, claim(1, r), 1000 + t as u64))
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    fn facts(id: IdentityId, n: u8) -> HostFacts {
        HostFacts {
            id,
            owner: id,
            network: net(n),
            standing: E,
        }
    }

    #[test]
    fn made_entries_name_their_witnesses_and_withdraw() {
        let ids = hosts(3);
        let mut ix = CacheIndex::default();
        ix.claim(
            HostFacts {
                standing: P,
                ..facts(ids[2], 3)
            },
            claim(1, 1),
            10,
        );
        ix.claim(facts(ids[0], 1), claim(1, 1), 11);
        let ClaimOutcome::Made(row) = ix.claim(facts(ids[1], 2), claim(1, 1), 12) else {
            panic!("no entry")
        };
        assert_eq!(row.witnesses, vec![ids[0], ids[1]]);
        assert_eq!(row.holders, vec![ids[2]]);
        assert_eq!(row.made_at, 12);
        let e = ix.get(&CacheKey([1; 32])).unwrap();
        assert_eq!(e.witnesses(), &[ids[0], ids[1]]);
        assert_eq!(e.holders().len(), 3);
        assert_eq!(ix.toolchain_of(e), [7; 32]);
        assert_eq!(ix.stats().pending, 0);
        assert_eq!(ix.stats().entries, 1);
        ix.record_hit(&CacheKey([1; 32]));
        ix.record_hit(&CacheKey([1; 32]));
        assert_eq!(ix.take_dirty_hits(), vec![(CacheKey([1; 32]), 2)]);
        assert!(ix.take_dirty_hits().is_empty());
        assert!(ix.withdraw(&CacheKey([1; 32]), 20, "wrong"));
        assert!(!ix.withdraw(&CacheKey([1; 32]), 21, "again"));
        assert_eq!(ix.stats().withdrawn, 1);
        assert_eq!(ix.stats().entries, 0);
        assert_eq!(
            ix.claim(facts(ids[0], 1), claim(1, 1), 30),
            ClaimOutcome::Withdrawn
        );
        // A toolchain other than the entry's is a conflict too.
        ix.claim(facts(ids[0], 1), claim(2, 1), 40);
        ix.claim(facts(ids[1], 2), claim(2, 1), 40);
        let other = Claim {
            toolchain: [8; 32],
            ..claim(2, 1)
        };
        assert!(matches!(
            ix.claim(facts(ids[2], 3), other, 41),
            ClaimOutcome::Conflict { .. }
        ));
    }

    #[test]
    fn pending_claims_are_bounded_and_expire() {
        let ids = hosts(12);
        let mut ix = CacheIndex::with_caps(5);
        for (i, id) in ids.iter().take(5).enumerate() {
            ix.claim(facts(*id, 1), claim(i as u8, 1), 100 + i as u64);
        }
        assert_eq!(ix.stats().pending, 5);
        // The oldest (key 0) goes: a second word for it makes nothing.
        ix.claim(facts(ids[5], 1), claim(5, 1), 105);
        assert_eq!(ix.stats().pending, 5);
        // Key 1's claim is still there.
        assert_eq!(kind(&ix.claim(facts(ids[7], 2), claim(1, 1), 106)), "made");
        assert_eq!(
            kind(&ix.claim(facts(ids[6], 2), claim(0, 1), 107)),
            "pending"
        );

        // Per key: the ninth host's claim pushes out the first.
        let mut ix = CacheIndex::default();
        for (i, id) in ids.iter().take(9).enumerate() {
            ix.claim(facts(*id, 1), claim(9, i as u8), 200);
        }
        assert_eq!(ix.stats().pending, MAX_PENDING_PER_KEY);
        assert_eq!(
            kind(&ix.claim(facts(ids[9], 2), claim(9, 0), 201)),
            "pending"
        );
        // Its own earlier claim is replaced, not pushed out by its next one.
        assert_eq!(kind(&ix.claim(facts(ids[9], 2), claim(9, 2), 201)), "made");

        // A day later, claims are forgotten.
        let mut ix = CacheIndex::default();
        ix.claim(facts(ids[0], 1), claim(3, 1), 1000);
        ix.expire(1000 + PENDING_TTL_SECS - 1);
        assert_eq!(ix.stats().pending, 1);
        assert_eq!(
            kind(&ix.claim(facts(ids[1], 2), claim(3, 1), 1000 + PENDING_TTL_SECS)),
            "pending"
        );
        assert_eq!(ix.stats().pending, 1);
    }

    #[test]
    fn entries_hold_at_most_eight_hosts_and_load_back() {
        let ids = hosts(12);
        let mut ix = CacheIndex::default();
        for (i, id) in ids.iter().enumerate() {
            ix.claim(facts(*id, i as u8), claim(1, 1), 5);
        }
        let e = ix.get(&CacheKey([1; 32])).unwrap().clone();
        assert_eq!(e.holders().len(), MAX_ENTRY_HOSTS);
        let mut back = CacheIndex::default();
        back.load(EntryRow {
            key: CacheKey([1; 32]),
            toolchain: [7; 32],
            result: [1; 32],
            witnesses: e.witnesses().to_vec(),
            holders: e.holders()[e.witnesses().len()..].to_vec(),
            made_at: e.made_at,
            hits: 3,
            withdrawn: Some((9, "why".into())),
        });
        let b = back.get(&CacheKey([1; 32])).unwrap();
        assert_eq!(b.holders(), e.holders());
        assert_eq!(b.hits, 3);
        assert_eq!(back.stats().withdrawn, 1);
    }
}
