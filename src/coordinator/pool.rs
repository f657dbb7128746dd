//! The coordinator's memory: who is alive (soft state, rebuilt from heartbeats),
//! who owns what, who is blacklisted (identities, addresses, networks) and each
//! host's standing record (mirrors of the durable store), and host selection. Pure: no I/O; times are passed in (milliseconds on a monotonic
//! clock for liveness).
//!
//! Selection is indexed: fingerprint → time-zone offset → compact candidates
//! (owner, network, address tags, liveness and the entry's ready JSON), so a
//! host-list request touches only a bounded number of random candidates of the
//! requester's toolchain, nearest time zone first, whatever the pool size, and
//! answers by copying bytes instead of reading full host records and
//! serialising them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use rand::Rng;

use super::store::Blacklist;
use crate::fingerprint::Toolchain;
use crate::network::api::{
    BlacklistEntry, DaemonStatus, Heartbeat, HostEntry, NetworkBlacklistEntry,
};
use crate::network::identity::IdentityId;
pub use crate::network::selection::{arrange, NetKey};
use crate::trust::standing::{serves, HostRecord, Standing, StandingRules};

/// How a blacklist keeps an address: an IP literal in its canonical form
/// (IPv4-mapped IPv6 as IPv4), or a host name in lower case.
pub fn address_key(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// `a.b.c.0/24` for a network as written (`a.b.c.0/24`) or any address in it;
/// `None` if it is neither.
pub fn network_key(text: &str) -> Option<String> {
    let addr = text.trim().split('/').next()?;
    let ip: IpAddr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(NetKey::of(ip).display())
}

/// A live (or not yet swept) host.
#[derive(Debug, Clone)]
pub struct HostRec {
    pub id: IdentityId,
    pub owner: IdentityId,
    pub host: Arc<str>,
    pub port: u16,
    pub network: NetKey,
    /// The address its latest heartbeat came from.
    pub peer: IpAddr,
    /// Kept current by [`Pool::refresh_standing`] (every heartbeat, and every
    /// change to the record); shown in its entry.
    pub standing: Standing,
    pub toolchains: Vec<Toolchain>,
    pub fps: Vec<Arc<str>>,
    pub libc: Arc<str>,
    pub arch: Arc<str>,
    pub software: Arc<str>,
    pub tz: i32,
    pub capacity: u32,
    pub lzo: bool,
    /// Runs jobs in the sandbox (its heartbeat's word).
    pub confined: bool,
    /// Takes tickets (its heartbeat says so): members get one for it.
    pub tickets: bool,
    pub last_seen_ms: u64,
    pub first_seen_ms: u64,
    /// Position of this host in each of its buckets: (fingerprint, position).
    slots: Vec<(Arc<str>, usize)>,
    /// `serde_json` of [`HostRec::entry`], kept current by every change to the
    /// fields it shows, so a host list is answered by copying bytes.
    entry_json: Arc<[u8]>,
}

/// A host as its index buckets hold it: everything selection reads for a
/// one-fingerprint request (liveness, blacklist, owner, network and address
/// rules, and the entry's JSON), packed so that weighing a random candidate
/// touches one small record in the bucket instead of the host's full record
/// (a cache miss per candidate with 100 000 hosts). The full record is read
/// only to check further fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    id: IdentityId,
    /// A copy of the host's `last_seen_ms`, refreshed by every heartbeat.
    last_seen_ms: u64,
    entry_json: Arc<[u8]>,
    /// The first 8 bytes of the owner group's id. Equal owners have equal
    /// tags, so "one host per owner" holds exactly; two owners whose ids share
    /// 64 bits (a 2^64 search to arrange) would only shorten a list.
    owner_tag: u64,
    network: NetKey,
    /// Runs jobs in the sandbox; unconfined hosts are listed only on request.
    confined: bool,
    /// 64 bits of blake3 over the advertised address, for "never the same
    /// address twice in one list" (same reasoning as `owner_tag`).
    addr_tag: u64,
    idx: u32,
}

fn owner_tag(owner: &IdentityId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&owner.0[..8]);
    u64::from_le_bytes(b)
}

fn addr_tag(host: &str, port: u16) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(host.as_bytes());
    h.update(&port.to_le_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

impl HostRec {
    fn candidate(&self, idx: u32) -> Candidate {
        Candidate {
            id: self.id,
            last_seen_ms: self.last_seen_ms,
            entry_json: self.entry_json.clone(),
            owner_tag: owner_tag(&self.owner),
            network: self.network,
            confined: self.confined,
            addr_tag: addr_tag(&self.host, self.port),
            idx,
        }
    }

    /// The host's [`HostEntry`] as JSON (what [`HostRec::entry`] serialises to).
    pub fn entry_json(&self) -> &[u8] {
        &self.entry_json
    }

    fn refresh_entry_json(&mut self) {
        self.entry_json = Arc::from(serde_json::to_vec(&self.entry()).unwrap_or_default());
    }

    pub fn entry(&self) -> HostEntry {
        HostEntry {
            id: self.id,
            host: self.host.to_string(),
            port: self.port,
            capacity: self.capacity,
            lzo: self.lzo,
            tickets: self.tickets,
            tz_offset_secs: self.tz,
            owner: self.owner,
            network: self.network.display(),
            arch: self.arch.to_string(),
            standing: self.standing,
            confined: self.confined,
        }
    }

    /// What blacklisting this host also covers: the IP it advertises, or, when
    /// it advertises a name, the name and the IP it heartbeats from.
    pub fn blacklist_addresses(&self) -> Vec<String> {
        let advertised = address_key(&self.host);
        if advertised.parse::<IpAddr>().is_ok() {
            vec![advertised]
        } else {
            vec![advertised, address_key(&self.peer.to_string())]
        }
    }
}

/// What happened to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// First heartbeat since the coordinator started or since the host expired.
    Joined,
    Refreshed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("identity {0} is blacklisted after mismatch reports from two members; it will not be listed. Ask the coordinator's operator to review and lift it (`dportage coordinator blacklist lift ID`)")]
    Blacklisted(IdentityId),
    #[error("address {address} is blacklisted with host {id}, which returned wrong results from it: no new identity registers there and no host moves onto it. If the machine there is yours and fixed, ask the coordinator's operator to review and lift {id} (`dportage coordinator blacklist lift ID`)")]
    AddressBlacklisted { address: String, id: IdentityId },
    #[error("internal error: the pool's index names an empty slot for {0}; please report this bug, restarting the coordinator clears it")]
    DanglingSlot(IdentityId),
}

/// Everything the coordinator keeps in memory.
#[derive(Default)]
pub struct Pool {
    hosts: Vec<Option<HostRec>>,
    free: Vec<u32>,
    by_id: HashMap<IdentityId, u32>,
    by_addr: HashMap<(Arc<str>, u16), u32>,
    /// fingerprint → tz offset → host slots.
    buckets: HashMap<Arc<str>, BTreeMap<i32, Vec<Candidate>>>,
    /// Identities known to the durable store: is it a daemon (has heartbeated)?
    known: HashMap<IdentityId, bool>,
    /// person ↔ daemon links (both directions).
    links: HashMap<IdentityId, Vec<IdentityId>>,
    /// Owner group representative; absent = the identity itself.
    owner: HashMap<IdentityId, IdentityId>,
    /// Members of groups with more than one member, keyed by representative.
    groups: HashMap<IdentityId, Vec<IdentityId>>,
    blacklist: HashMap<IdentityId, BlacklistEntry>,
    /// Address (see [`address_key`]) → the blacklisted identity that covers it.
    blocked_addresses: HashMap<String, IdentityId>,
    /// Blacklisted networks by `a.b.c.0/24`.
    blocked_networks: HashMap<String, NetworkBlacklistEntry>,
    /// Standing records of host identities.
    records: HashMap<IdentityId, HostRecord>,
    rules: StandingRules,
    /// Membership is proven service: list a host (and let it make its owner
    /// a member) only while its record [`serves`]. Off (`--challenges off`):
    /// every live host counts.
    require_service: bool,
}

/// Most identities one owner group may link (bounds what a leaked membership
/// token can do and keeps membership checks cheap).
pub const MAX_GROUP: usize = 64;

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    // ----- durable mirrors -------------------------------------------------

    pub fn is_known(&self, id: &IdentityId) -> bool {
        self.known.contains_key(id)
    }

    pub fn is_known_daemon(&self, id: &IdentityId) -> bool {
        self.known.get(id).copied().unwrap_or(false)
    }

    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    /// An identity row exists in the store.
    pub fn add_known(&mut self, id: IdentityId, daemon: bool) {
        let e = self.known.entry(id).or_insert(false);
        *e |= daemon;
    }

    /// Is `id` a live host whose heartbeat says it takes tickets?
    pub fn takes_tickets(&self, id: &IdentityId) -> bool {
        self.by_id
            .get(id)
            .and_then(|&idx| self.hosts[idx as usize].as_ref())
            .is_some_and(|h| h.tickets)
    }

    pub fn is_blacklisted(&self, id: &IdentityId) -> bool {
        self.blacklist.contains_key(id)
    }

    pub fn blacklist_entries(&self) -> Vec<BlacklistEntry> {
        let mut v: Vec<_> = self.blacklist.values().cloned().collect();
        v.sort_by(|a, b| b.since.cmp(&a.since).then(a.id.cmp(&b.id)));
        v
    }

    /// Add a blacklist entry; the host leaves the pool at once, and the
    /// addresses it covers are blocked.
    pub fn set_blacklisted(&mut self, entry: BlacklistEntry) {
        let id = entry.id;
        for a in &entry.addresses {
            self.blocked_addresses.insert(a.clone(), id);
        }
        self.blacklist.insert(id, entry);
        if let Some(&idx) = self.by_id.get(&id) {
            self.remove_idx(idx);
        }
    }

    /// Replace the whole blacklist (after the store changed under us, e.g. an
    /// admin lifted an entry from the command line). Returns (added, removed),
    /// identities and networks together.
    pub fn replace_blacklist(&mut self, blacklist: Blacklist) -> (usize, usize) {
        let new: HashMap<IdentityId, BlacklistEntry> =
            blacklist.entries.into_iter().map(|e| (e.id, e)).collect();
        let new_nets: HashMap<String, NetworkBlacklistEntry> = blacklist
            .networks
            .into_iter()
            .map(|n| (n.network.clone(), n))
            .collect();
        let removed = self
            .blacklist
            .keys()
            .filter(|k| !new.contains_key(k))
            .count()
            + self
                .blocked_networks
                .keys()
                .filter(|k| !new_nets.contains_key(*k))
                .count();
        let added: Vec<IdentityId> = new
            .keys()
            .filter(|id| !self.blacklist.contains_key(id))
            .copied()
            .collect();
        let n_added = added.len()
            + new_nets
                .keys()
                .filter(|k| !self.blocked_networks.contains_key(*k))
                .count();
        self.blocked_addresses = new
            .values()
            .flat_map(|e| e.addresses.iter().map(|a| (a.clone(), e.id)))
            .collect();
        self.blacklist = new;
        self.blocked_networks = new_nets;
        for id in added {
            if let Some(&idx) = self.by_id.get(&id) {
                self.remove_idx(idx);
            }
        }
        (n_added, removed)
    }

    /// Lift an identity's entry and the addresses it covered.
    pub fn lift(&mut self, id: &IdentityId) -> bool {
        self.blocked_addresses.retain(|_, v| v != id);
        self.blacklist.remove(id).is_some()
    }

    /// The blacklisted identity covering `address` ([`address_key`] form).
    pub fn address_blacklisted_by(&self, address: &str) -> Option<IdentityId> {
        self.blocked_addresses.get(address).copied()
    }

    pub fn set_network_blacklisted(&mut self, entry: NetworkBlacklistEntry) {
        self.blocked_networks.insert(entry.network.clone(), entry);
    }

    /// The entry of a blacklisted network (`a.b.c.0/24`).
    pub fn network_blacklisted(&self, network: &str) -> Option<&NetworkBlacklistEntry> {
        self.blocked_networks.get(network)
    }

    pub fn lift_network(&mut self, network: &str) -> bool {
        self.blocked_networks.remove(network).is_some()
    }

    pub fn blacklisted_networks(&self) -> Vec<NetworkBlacklistEntry> {
        let mut v: Vec<_> = self.blocked_networks.values().cloned().collect();
        v.sort_by(|a, b| b.since.cmp(&a.since).then(a.network.cmp(&b.network)));
        v
    }

    // ----- standing ----------------------------------------------------------

    pub fn set_standing_rules(&mut self, rules: StandingRules) {
        self.rules = rules;
    }

    /// Enforce [`serves`] in host lists and membership (`--challenges on`).
    pub fn set_require_service(&mut self, on: bool) {
        self.require_service = on;
    }

    /// May `id` be listed, as far as challenges go?
    pub fn proven(&self, id: &IdentityId) -> bool {
        !self.require_service || self.records.get(id).is_some_and(serves)
    }

    pub fn standing_rules(&self) -> StandingRules {
        self.rules
    }

    /// `id`'s standing record, if it is a registered host.
    pub fn record(&self, id: &IdentityId) -> Option<&HostRecord> {
        self.records.get(id)
    }

    /// Store (a mirror of) `id`'s record and bring its listed standing up to date.
    pub fn set_record(&mut self, id: IdentityId, record: HostRecord, now_unix: u64) {
        self.records.insert(id, record);
        self.refresh_standing(&id, now_unix);
    }

    /// `id`'s standing at `now_unix`; `None` if it is not a registered host.
    pub fn standing_of(&self, id: &IdentityId, now_unix: u64) -> Option<Standing> {
        self.records
            .get(id)
            .map(|r| self.rules.standing(r, now_unix))
    }

    /// Does `id`'s owner group have an established host? Only then do its
    /// reports count: a probationary host never counts as a reporter.
    pub fn group_is_established(&self, id: &IdentityId, now_unix: u64) -> bool {
        self.group_members(&self.owner_of(id))
            .iter()
            .any(|m| self.standing_of(m, now_unix) == Some(Standing::Established))
    }

    /// Recompute a held host's standing (it changes with age, and with its
    /// record); its listed entry follows. Returns the standing.
    pub fn refresh_standing(&mut self, id: &IdentityId, now_unix: u64) -> Option<Standing> {
        let standing = self
            .standing_of(id, now_unix)
            .unwrap_or(Standing::Probationary);
        let &idx = self.by_id.get(id)?;
        let changed = self.hosts[idx as usize]
            .as_ref()
            .is_some_and(|h| h.standing != standing);
        if changed {
            self.unindex(idx);
            if let Some(h) = self.hosts[idx as usize].as_mut() {
                h.standing = standing;
                h.refresh_entry_json();
            }
            self.index(idx);
        }
        Some(standing)
    }

    /// Mirror the vouched set read from the store (the admin CLI changed it).
    /// Returns how many records changed.
    pub fn replace_vouched(&mut self, vouched: &[IdentityId], now_unix: u64) -> usize {
        let changed: Vec<IdentityId> = self
            .records
            .iter_mut()
            .filter_map(|(id, r)| {
                let v = vouched.contains(id);
                (r.vouched != v).then(|| {
                    r.vouched = v;
                    *id
                })
            })
            .collect();
        for id in &changed {
            self.refresh_standing(id, now_unix);
        }
        changed.len()
    }

    /// Live hosts by standing, and how many of them serve: (established,
    /// probationary, serving).
    pub fn standing_counts(&self, now_ms: u64, expiry_ms: u64) -> (usize, usize, usize) {
        let (mut est, mut prob, mut serving) = (0, 0, 0);
        for h in self
            .hosts()
            .filter(|h| now_ms.saturating_sub(h.last_seen_ms) <= expiry_ms)
        {
            match h.standing {
                Standing::Established => est += 1,
                Standing::Probationary => prob += 1,
            }
            if self.records.get(&h.id).is_some_and(serves) {
                serving += 1;
            }
        }
        (est, prob, serving)
    }

    pub fn owner_of(&self, id: &IdentityId) -> IdentityId {
        *self.owner.get(id).unwrap_or(id)
    }

    fn group_members(&self, rep: &IdentityId) -> Vec<IdentityId> {
        self.groups.get(rep).cloned().unwrap_or_else(|| vec![*rep])
    }

    pub fn is_linked(&self, a: &IdentityId, b: &IdentityId) -> bool {
        self.links.get(a).is_some_and(|v| v.contains(b))
    }

    /// Would linking these two exceed the group bound?
    pub fn link_would_overflow(&self, a: &IdentityId, b: &IdentityId) -> bool {
        let (ra, rb) = (self.owner_of(a), self.owner_of(b));
        if ra == rb {
            return false;
        }
        self.group_members(&ra).len() + self.group_members(&rb).len() > MAX_GROUP
    }

    /// Record a person↔daemon link and merge their owner groups.
    pub fn add_link(&mut self, person: IdentityId, daemon: IdentityId) {
        if person == daemon || self.is_linked(&person, &daemon) {
            return;
        }
        self.links.entry(person).or_default().push(daemon);
        self.links.entry(daemon).or_default().push(person);
        let (ra, rb) = (self.owner_of(&person), self.owner_of(&daemon));
        if ra == rb {
            return;
        }
        // Keep the smaller id as representative so the result does not depend
        // on link order (the store replays links in any order at start).
        let (keep, fold) = if ra < rb { (ra, rb) } else { (rb, ra) };
        let mut members = self.group_members(&keep);
        let folded = self.group_members(&fold);
        self.groups.remove(&fold);
        for m in &folded {
            self.owner.insert(*m, keep);
            if let Some(&idx) = self.by_id.get(m) {
                self.unindex(idx);
                if let Some(h) = self.hosts[idx as usize].as_mut() {
                    h.owner = keep;
                    h.refresh_entry_json();
                }
                self.index(idx);
            }
        }
        members.extend(folded);
        for m in &members {
            if *m == keep {
                self.owner.remove(m);
            } else {
                self.owner.insert(*m, keep);
            }
        }
        self.groups.insert(keep, members);
    }

    /// Number of identities linked to `daemon`.
    pub fn links_of(&self, daemon: &IdentityId) -> usize {
        self.links.get(daemon).map_or(0, Vec::len)
    }

    /// End a person↔daemon link and split their owner group along the links
    /// that remain (each part keeps its smallest id as representative, as
    /// [`Pool::add_link`] does). False when they were not linked.
    pub fn remove_link(&mut self, person: &IdentityId, daemon: &IdentityId) -> bool {
        if !self.is_linked(person, daemon) {
            return false;
        }
        for (a, b) in [(person, daemon), (daemon, person)] {
            if let Some(v) = self.links.get_mut(a) {
                v.retain(|x| x != b);
                if v.is_empty() {
                    self.links.remove(a);
                }
            }
        }
        let rep = self.owner_of(person);
        let members = self.group_members(&rep);
        self.groups.remove(&rep);
        let mut placed: std::collections::HashSet<IdentityId> = Default::default();
        for start in &members {
            if !placed.insert(*start) {
                continue;
            }
            let mut part = vec![*start];
            let mut next = 0;
            while next < part.len() {
                let at = part[next];
                next += 1;
                for n in self.links.get(&at).cloned().unwrap_or_default() {
                    if placed.insert(n) {
                        part.push(n);
                    }
                }
            }
            let keep = *part.iter().min().unwrap_or(start);
            for m in &part {
                if *m == keep {
                    self.owner.remove(m);
                } else {
                    self.owner.insert(*m, keep);
                }
                if let Some(&idx) = self.by_id.get(m) {
                    if self.hosts[idx as usize]
                        .as_ref()
                        .is_some_and(|h| h.owner != keep)
                    {
                        self.unindex(idx);
                        if let Some(h) = self.hosts[idx as usize].as_mut() {
                            h.owner = keep;
                            h.refresh_entry_json();
                        }
                        self.index(idx);
                    }
                }
            }
            if part.len() > 1 {
                self.groups.insert(keep, part);
            }
        }
        true
    }

    /// The live, non-blacklisted daemon in `id`'s owner group that makes `id` a
    /// member (itself first).
    /// With challenges on, only a daemon that serves (passed a challenge at
    /// its advertised address) counts.
    pub fn member_via(&self, id: &IdentityId, now_ms: u64, expiry_ms: u64) -> Option<IdentityId> {
        let counts = |m: &IdentityId| self.is_live(m, now_ms, expiry_ms) && self.proven(m);
        if counts(id) {
            return Some(*id);
        }
        let rep = self.owner_of(id);
        self.group_members(&rep).into_iter().find(|m| counts(m))
    }

    /// Why `id` is not a member although its group has a live daemon: that
    /// daemon has not proven service yet. Its id and advertised address.
    pub fn unproven_daemon(
        &self,
        id: &IdentityId,
        now_ms: u64,
        expiry_ms: u64,
    ) -> Option<(IdentityId, String)> {
        self.group_members(&self.owner_of(id))
            .into_iter()
            .filter(|m| self.is_live(m, now_ms, expiry_ms) && !self.proven(m))
            .find_map(|m| {
                let h = self.host(&m)?;
                Some((m, format!("{}:{}", h.host, h.port)))
            })
    }

    /// `id`'s group's daemons and their state, for `whoami`.
    pub fn daemons_of(
        &self,
        id: &IdentityId,
        now_ms: u64,
        expiry_ms: u64,
        now_unix: u64,
    ) -> Vec<DaemonStatus> {
        let rep = self.owner_of(id);
        self.group_members(&rep)
            .into_iter()
            .filter(|m| self.known.get(m).copied().unwrap_or(false) || self.by_id.contains_key(m))
            .map(|m| DaemonStatus {
                id: m,
                live: self.is_live(&m, now_ms, expiry_ms),
                blacklisted: self.is_blacklisted(&m),
                standing: self
                    .standing_of(&m, now_unix)
                    .unwrap_or(Standing::Probationary),
                serves: self.records.get(&m).is_some_and(serves),
            })
            .collect()
    }

    fn is_live(&self, id: &IdentityId, now_ms: u64, expiry_ms: u64) -> bool {
        if self.blacklist.contains_key(id) {
            return false;
        }
        self.by_id
            .get(id)
            .and_then(|&i| self.hosts[i as usize].as_ref())
            .is_some_and(|h| now_ms.saturating_sub(h.last_seen_ms) <= expiry_ms)
    }

    // ----- soft state ------------------------------------------------------

    /// Live hosts (not expired at `now_ms`).
    pub fn live_count(&self, now_ms: u64, expiry_ms: u64) -> usize {
        self.hosts
            .iter()
            .flatten()
            .filter(|h| now_ms.saturating_sub(h.last_seen_ms) <= expiry_ms)
            .count()
    }

    /// Entries held (live or awaiting the sweeper). O(1).
    pub fn held_count(&self) -> usize {
        self.by_id.len()
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostRec> {
        self.hosts.iter().flatten()
    }

    pub fn host(&self, id: &IdentityId) -> Option<&HostRec> {
        self.by_id
            .get(id)
            .and_then(|&i| self.hosts[i as usize].as_ref())
    }

    /// Apply a validated heartbeat from `peer`. The identity must already be
    /// known to the store (registration is durable before the first listing).
    pub fn heartbeat(
        &mut self,
        id: IdentityId,
        hb: &Heartbeat,
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<(HeartbeatOutcome, String), PoolError> {
        if self.blacklist.contains_key(&id) {
            return Err(PoolError::Blacklisted(id));
        }
        let host: Arc<str> = match hb.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => Arc::from(h),
            None => Arc::from(peer.to_string().as_str()),
        };

        let network = NetKey::of(peer);
        let owner = self.owner_of(&id);
        let mut fps: Vec<Arc<str>> = hb
            .toolchains
            .iter()
            .map(|t| Arc::from(t.id.as_str()))
            .collect();
        fps.sort();
        fps.dedup();
        let advertised = format!("{host}:{}", hb.port);

        if let Some(&idx) = self.by_id.get(&id) {
            let same_index = {
                let Some(h) = self.hosts[idx as usize].as_ref() else {
                    return Err(PoolError::DanglingSlot(id));
                };
                // A blacklisting covers the address too: no host moves onto
                // it. (New identities are refused there before they are
                // registered; a host that already advertised it, a neighbour
                // behind the same NAT, keeps it.)
                if *h.host != *host {
                    if let Some(&by) = self.blocked_addresses.get(&address_key(&host)) {
                        return Err(PoolError::AddressBlacklisted {
                            address: host.to_string(),
                            id: by,
                        });
                    }
                }
                // The candidates copy what the entry shows: any change to it
                // re-indexes (rare; a steady heartbeat only refreshes times).
                h.fps == fps
                    && h.tz == hb.tz_offset_secs
                    && h.owner == owner
                    && h.network == network
                    && h.port == hb.port
                    && *h.host == *host
                    && *h.arch == *hb.arch
                    && h.capacity == hb.capacity
                    && h.lzo == hb.lzo
                    && h.confined == hb.confined
                    && h.tickets == hb.tickets
            };
            if !same_index {
                self.unindex(idx);
            }
            let old_addr = self.hosts[idx as usize]
                .as_ref()
                .map(|h| (h.host.clone(), h.port));
            if let Some(h) = self.hosts[idx as usize].as_mut() {
                if h.toolchains != hb.toolchains {
                    h.toolchains = hb.toolchains.clone();
                }
                if *h.host != *host {
                    h.host = host.clone();
                }
                h.port = hb.port;
                h.network = network;
                h.peer = peer;
                h.owner = owner;
                if *h.libc != *hb.libc {
                    h.libc = Arc::from(hb.libc.as_str());
                }
                if *h.arch != *hb.arch {
                    h.arch = Arc::from(hb.arch.as_str());
                }
                if *h.software != *hb.software {
                    h.software = Arc::from(hb.software.as_str());
                }
                h.fps = fps;
                h.tz = hb.tz_offset_secs;
                h.capacity = hb.capacity;
                h.lzo = hb.lzo;
                h.confined = hb.confined;
                h.tickets = hb.tickets;
                h.last_seen_ms = now_ms;
                if !same_index {
                    h.refresh_entry_json();
                }
            }
            if old_addr
                .as_ref()
                .is_some_and(|(oh, op)| **oh != *host || *op != hb.port)
            {
                if let Some(old) = old_addr {
                    if self.by_addr.get(&old) == Some(&idx) {
                        self.by_addr.remove(&old);
                    }
                }
                self.by_addr.insert((host, hb.port), idx);
            }
            if same_index {
                self.touch_candidates(idx, now_ms);
            } else {
                self.index(idx);
            }
            return Ok((HeartbeatOutcome::Refreshed, advertised));
        }

        let mut rec = HostRec {
            id,
            owner,
            host: host.clone(),
            port: hb.port,
            network,
            peer,
            standing: Standing::Probationary,
            toolchains: hb.toolchains.clone(),
            fps,
            libc: Arc::from(hb.libc.as_str()),
            arch: Arc::from(hb.arch.as_str()),
            software: Arc::from(hb.software.as_str()),
            tz: hb.tz_offset_secs,
            capacity: hb.capacity,
            lzo: hb.lzo,
            confined: hb.confined,
            tickets: hb.tickets,
            last_seen_ms: now_ms,
            first_seen_ms: now_ms,
            slots: Vec::new(),
            entry_json: Arc::from(&[][..]),
        };
        rec.refresh_entry_json();
        let idx = match self.free.pop() {
            Some(i) => {
                self.hosts[i as usize] = Some(rec);
                i
            }
            None => {
                self.hosts.push(Some(rec));
                (self.hosts.len() - 1) as u32
            }
        };
        self.by_id.insert(id, idx);
        self.by_addr.insert((host, hb.port), idx);
        self.add_known(id, true);
        self.index(idx);
        Ok((HeartbeatOutcome::Joined, advertised))
    }

    /// Copy a heartbeat's time into the host's candidates.
    fn touch_candidates(&mut self, idx: u32, now_ms: u64) {
        let Pool { hosts, buckets, .. } = self;
        let Some(h) = hosts.get(idx as usize).and_then(Option::as_ref) else {
            return;
        };
        for (fp, pos) in &h.slots {
            let cand = buckets
                .get_mut(fp)
                .and_then(|by_tz| by_tz.get_mut(&h.tz))
                .and_then(|v| v.get_mut(*pos))
                .filter(|c| c.idx == idx);
            if let Some(c) = cand {
                c.last_seen_ms = now_ms;
            }
        }
    }

    fn index(&mut self, idx: u32) {
        let Some(h) = self.hosts[idx as usize].as_ref() else {
            return;
        };
        let (fps, tz, cand) = (h.fps.clone(), h.tz, h.candidate(idx));
        let mut slots = Vec::with_capacity(fps.len());
        for fp in fps {
            let v = self
                .buckets
                .entry(fp.clone())
                .or_default()
                .entry(tz)
                .or_default();
            v.push(cand.clone());
            slots.push((fp, v.len() - 1));
        }
        if let Some(h) = self.hosts[idx as usize].as_mut() {
            h.slots = slots;
        }
    }

    fn unindex(&mut self, idx: u32) {
        let Some(h) = self.hosts[idx as usize].as_mut() else {
            return;
        };
        let slots = std::mem::take(&mut h.slots);
        let tz = h.tz;
        for (fp, pos) in slots {
            let Some(by_tz) = self.buckets.get_mut(&fp) else {
                continue;
            };
            let Some(v) = by_tz.get_mut(&tz) else {
                continue;
            };
            if v.get(pos).map(|c| c.idx) != Some(idx) {
                continue;
            }
            v.swap_remove(pos);
            if let Some(moved) = v.get(pos).map(|c| c.idx) {
                if let Some(m) = self.hosts[moved as usize].as_mut() {
                    if let Some(s) = m.slots.iter_mut().find(|(f, _)| *f == fp) {
                        s.1 = pos;
                    }
                }
            }
            if v.is_empty() {
                by_tz.remove(&tz);
                if by_tz.is_empty() {
                    self.buckets.remove(&fp);
                }
            }
        }
    }

    fn remove_idx(&mut self, idx: u32) {
        self.unindex(idx);
        if let Some(h) = self.hosts[idx as usize].take() {
            self.by_id.remove(&h.id);
            let key = (h.host.clone(), h.port);
            if self.by_addr.get(&key) == Some(&idx) {
                self.by_addr.remove(&key);
            }
            self.free.push(idx);
        }
    }

    /// Drop hosts not heard from within `expiry_ms`. Returns how many left.
    pub fn sweep(&mut self, now_ms: u64, expiry_ms: u64) -> usize {
        let stale: Vec<u32> = self
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                h.as_ref()
                    .filter(|h| now_ms.saturating_sub(h.last_seen_ms) > expiry_ms)
                    .map(|_| i as u32)
            })
            .collect();
        for &i in &stale {
            self.remove_idx(i);
        }
        stale.len()
    }

    /// The live host advertised at `host:port`, if any.
    pub fn resolve_addr(&self, addr: &str) -> Option<IdentityId> {
        let (host, port) = addr.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok()?;
        let idx = self.by_addr.get(&(Arc::from(host), port))?;
        self.hosts[*idx as usize].as_ref().map(|h| h.id)
    }

    /// Pick up to `max` hosts serving every fingerprint in `fps`, nearest time
    /// zone first, arranged by [`arrange`] (one host per owner). The
    /// requester's own hosts may be listed (at most one of them, like any
    /// owner's): they are trusted by their owner and often the nearest.
    pub fn select(
        &self,
        fps: &[String],
        tz: i32,
        max: usize,
        now_ms: u64,
        expiry_ms: u64,
        rng: &mut impl Rng,
    ) -> Vec<HostEntry> {
        self.choose(fps, tz, max, now_ms, expiry_ms, true, rng)
            .into_iter()
            .filter_map(|c| self.hosts.get(c.idx as usize)?.as_ref())
            .map(HostRec::entry)
            .collect()
    }

    /// [`Pool::select`]'s hosts as their ids and entries' JSON (the wire
    /// form), in list order, without building or serialising entries.
    /// Unconfined hosts only with `include_unconfined`.
    #[allow(clippy::too_many_arguments)]
    pub fn select_json(
        &self,
        fps: &[String],
        tz: i32,
        max: usize,
        now_ms: u64,
        expiry_ms: u64,
        include_unconfined: bool,
        rng: &mut impl Rng,
    ) -> Vec<(IdentityId, &[u8])> {
        self.choose(fps, tz, max, now_ms, expiry_ms, include_unconfined, rng)
            .into_iter()
            .map(|c| (c.id, &*c.entry_json))
            .collect()
    }

    /// The selection behind [`Pool::select`] and [`Pool::select_json`].
    ///
    /// Cost is bounded by the request, not the pool: time-zone groups are
    /// walked outward from `tz` through the ordered index, each group yields at
    /// most `4 * max` random candidates, and the bookkeeping sets hold at most
    /// `2 * max` entries (scanned, not hashed). Only the buckets' compact
    /// candidates are read, plus a candidate's host record when the request
    /// names more than one fingerprint.
    #[allow(clippy::too_many_arguments)]
    fn choose(
        &self,
        fps: &[String],
        tz: i32,
        max: usize,
        now_ms: u64,
        expiry_ms: u64,
        include_unconfined: bool,
        rng: &mut impl Rng,
    ) -> Vec<&Candidate> {
        let Some(first) = fps.first() else {
            return Vec::new();
        };
        let Some(by_tz) = self.buckets.get(first.as_str()) else {
            return Vec::new();
        };
        let want = max.max(1);
        let budget = 4 * want;
        // Hosts that would be listed: fully distinct ones first, then
        // (`spill`) further owners on already used networks.
        let mut distinct: Vec<&Candidate> = Vec::with_capacity(want);
        let mut spill: Vec<&Candidate> = Vec::with_capacity(want);
        // Owner tags and networks of `distinct`, owner tags of `spill`, and the
        // addresses of both: at most `want` each, so a scan beats hashing.
        let mut owners: Vec<u64> = Vec::with_capacity(want);
        let mut nets: Vec<NetKey> = Vec::with_capacity(want);
        let mut spill_owners: Vec<u64> = Vec::with_capacity(want);
        let mut addrs: Vec<u64> = Vec::with_capacity(2 * want);
        // Blacklisting removes a host from the index at once; this check is
        // the belt to those braces, and free while the blacklist is empty.
        let check_blacklist = !self.blacklist.is_empty();
        // Nearest offset first; on a tie the lower offset first.
        let mut below = by_tz.range(..tz).rev().peekable();
        let mut above = by_tz.range(tz..).peekable();
        'groups: loop {
            let group = match (below.peek(), above.peek()) {
                (None, None) => break,
                (Some(_), None) => below.next(),
                (None, Some(_)) => above.next(),
                (Some((b, _)), Some((a, _))) => {
                    if (**b - tz).unsigned_abs() <= (**a - tz).unsigned_abs() {
                        below.next()
                    } else {
                        above.next()
                    }
                }
            };
            let Some((_, cands)) = group else { break };
            let n = cands.len();
            if n == 0 {
                continue;
            }
            let sequential = n <= budget;
            let start = if sequential { rng.gen_range(0..n) } else { 0 };
            for i in 0..n.min(budget) {
                let p = if sequential {
                    (start + i) % n
                } else {
                    rng.gen_range(0..n)
                };
                let Some(c) = cands.get(p) else { continue };
                let owner_taken = owners.contains(&c.owner_tag);
                let goes_distinct = !owner_taken && !nets.contains(&c.network);
                let goes_spill = !goes_distinct
                    && !owner_taken
                    && spill.len() < want
                    && !spill_owners.contains(&c.owner_tag);
                if !(goes_distinct || goes_spill)
                    || (!c.confined && !include_unconfined)
                    || addrs.contains(&c.addr_tag)
                    || now_ms.saturating_sub(c.last_seen_ms) > expiry_ms
                    || (check_blacklist && self.blacklist.contains_key(&c.id))
                {
                    continue;
                }
                // Membership is proven service: a host that has not passed a
                // challenge at its advertised address (or failed the last
                // two) is not listed.
                if self.require_service && !self.records.get(&c.id).is_some_and(serves) {
                    continue;
                }
                if fps.len() > 1 {
                    let serves_all = self
                        .hosts
                        .get(c.idx as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|h| {
                            fps[1..].iter().all(|f| h.fps.iter().any(|hf| **hf == **f))
                        });
                    if !serves_all {
                        continue;
                    }
                }
                addrs.push(c.addr_tag);
                if goes_distinct {
                    owners.push(c.owner_tag);
                    nets.push(c.network);
                    distinct.push(c);
                    if distinct.len() >= want {
                        break 'groups;
                    }
                } else {
                    spill_owners.push(c.owner_tag);
                    spill.push(c);
                }
            }
        }
        distinct.extend(spill);
        arrange(distinct, |c| (c.owner_tag, c.network), want)
    }

    /// Snapshot for the status page: (arch → hosts), (toolchain → hosts).
    pub fn summary(&self, now_ms: u64, expiry_ms: u64) -> PoolSummary {
        let mut s = PoolSummary::default();
        let mut tcs: HashMap<&str, (String, String, usize)> = HashMap::new();
        for h in self
            .hosts()
            .filter(|h| now_ms.saturating_sub(h.last_seen_ms) <= expiry_ms)
        {
            s.live += 1;
            s.capacity += u64::from(h.capacity);
            *s.by_arch.entry(h.arch.to_string()).or_default() += 1;
            for t in &h.toolchains {
                let e = tcs
                    .entry(t.id.as_str())
                    .or_insert_with(|| (t.version.clone(), t.target.clone(), 0));
                e.2 += 1;
            }
        }
        let mut v: Vec<ToolchainCount> = tcs
            .into_iter()
            .map(|(id, (version, target, hosts))| ToolchainCount {
                id: id.to_string(),
                version,
                target,
                hosts,
            })
            .collect();
        v.sort_by(|a, b| b.hosts.cmp(&a.hosts).then(a.id.cmp(&b.id)));
        s.toolchains = v;
        s
    }
}

#[derive(Debug, Default, Clone)]
pub struct PoolSummary {
    pub live: usize,
    pub capacity: u64,
    pub by_arch: BTreeMap<String, usize>,
    pub toolchains: Vec<ToolchainCount>,
}

#[derive(Debug, Clone)]
pub struct ToolchainCount {
    pub id: String,
    pub version: String,
    pub target: String,
    pub hosts: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::identity::Identity;
    use rand::SeedableRng;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn fp(n: u8) -> String {
        format!("{:02x}", n).repeat(32)
    }

    fn hb(fps: &[String], tz: i32) -> Heartbeat {
        Heartbeat {
            host: None,
            port: 3632,
            toolchains: fps
                .iter()
                .map(|f| Toolchain {
                    name: "gcc".into(),
                    version: "gcc 12".into(),
                    target: "x86_64-linux-gnu".into(),
                    probe_hash: f.clone(),
                    id: f.clone(),
                })
                .collect(),
            libc: "glibc 2.36".into(),
            arch: "x86_64".into(),
            tz_offset_secs: tz,
            capacity: 4,
            lzo: true,
            confined: true,
            tickets: false,
            software: String::new(),
        }
    }

    fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn select_lists_own_once_excludes_blacklisted_expired_and_respects_fingerprints() {
        let mut pool = Pool::new();
        let me = Identity::generate().id();
        let mut ids = Vec::new();
        for i in 0..20u8 {
            let id = Identity::generate().id();
            let fps = if i % 2 == 0 {
                vec![fp(1), fp(2)]
            } else {
                vec![fp(1)]
            };
            pool.heartbeat(id, &hb(&fps, 0), ip(10, 0, i, 1), 1000)
                .unwrap();
            ids.push(id);
        }
        // My own daemon, linked to me.
        let mine = Identity::generate().id();
        pool.heartbeat(mine, &hb(&[fp(1), fp(2)], 0), ip(10, 9, 9, 9), 1000)
            .unwrap();
        pool.add_link(me, mine);
        assert_eq!(pool.member_via(&me, 1000, 600_000), Some(mine));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let got = pool.select(&[fp(1)], 0, 32, 1000, 600_000, &mut rng);
        assert_eq!(got.len(), 21);
        assert!(got.iter().any(|h| h.id == mine), "own host listed, once");
        let both = pool.select(&[fp(1), fp(2)], 0, 32, 1000, 600_000, &mut rng);
        assert_eq!(both.len(), 11, "only hosts serving both toolchains");
        pool.set_blacklisted(BlacklistEntry {
            id: ids[0],
            since: 1,
            reason: "t".into(),
            addresses: Vec::new(),
            network: String::new(),
        });
        let got = pool.select(&[fp(1)], 0, 32, 1000, 600_000, &mut rng);
        assert!(got.iter().all(|h| h.id != ids[0]));
        assert_eq!(
            pool.heartbeat(ids[0], &hb(&[fp(1)], 0), ip(10, 0, 0, 1), 1000),
            Err(PoolError::Blacklisted(ids[0]))
        );
        // Expired hosts are not selected even before the sweep.
        pool.heartbeat(ids[1], &hb(&[fp(1)], 0), ip(10, 0, 1, 1), 700_000)
            .unwrap();
        let got = pool.select(&[fp(1)], 0, 32, 700_000, 600_000, &mut rng);
        assert_eq!(got.iter().map(|h| h.id).collect::<Vec<_>>(), vec![ids[1]]);
        assert_eq!(
            pool.member_via(&me, 700_000, 600_000),
            None,
            "my daemon expired"
        );
        assert_eq!(pool.sweep(700_000, 600_000), 19);
        assert_eq!(pool.held_count(), 1);
    }

    #[test]
    fn select_prefers_near_timezones_and_distinct_owners() {
        let mut pool = Pool::new();
        let far: Vec<_> = (0..5u8).map(|_| Identity::generate().id()).collect();
        let near: Vec<_> = (0..5u8).map(|_| Identity::generate().id()).collect();
        for (i, id) in far.iter().enumerate() {
            pool.heartbeat(*id, &hb(&[fp(1)], -8 * 3600), ip(10, 1, i as u8, 1), 0)
                .unwrap();
        }
        for (i, id) in near.iter().enumerate() {
            pool.heartbeat(*id, &hb(&[fp(1)], 3600), ip(10, 2, i as u8, 1), 0)
                .unwrap();
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let got = pool.select(&[fp(1)], 7200, 5, 0, 1000, &mut rng);
        let got_ids: HashSet<_> = got.iter().map(|h| h.id).collect();
        assert_eq!(
            got_ids,
            near.iter().copied().collect(),
            "nearest zone fills the list"
        );
        // Two hosts of one owner (linked through one person) are never both listed.
        let person = Identity::generate().id();
        pool.add_link(person, near[0]);
        pool.add_link(person, near[1]);
        assert_eq!(pool.owner_of(&near[0]), pool.owner_of(&near[1]));
        let got = pool.select(&[fp(1)], 3600, 10, 0, 1000, &mut rng);
        let owners: HashSet<_> = got.iter().map(|h| h.owner).collect();
        assert_eq!(owners.len(), got.len(), "{got:?}");
        assert_eq!(got.len(), 9, "ten hosts, nine owners");
        for w in got.windows(2) {
            assert_ne!(w[0].network, w[1].network);
        }
    }

    #[test]
    fn unlinking_splits_an_owner_group_along_the_remaining_links() {
        let mut pool = Pool::new();
        let hosts: Vec<_> = (0..2u8).map(|_| Identity::generate().id()).collect();
        for (i, id) in hosts.iter().enumerate() {
            pool.heartbeat(*id, &hb(&[fp(1)], 0), ip(10, 4, i as u8, 1), 0)
                .unwrap();
        }
        let (p1, p2) = (Identity::generate().id(), Identity::generate().id());
        // p1 joins both hosts (one group of four); p2 joins the second.
        pool.add_link(p1, hosts[0]);
        pool.add_link(p1, hosts[1]);
        pool.add_link(p2, hosts[1]);
        assert_eq!(pool.owner_of(&hosts[0]), pool.owner_of(&p2));
        assert!(!pool.remove_link(&p2, &hosts[0]), "not linked");
        assert!(pool.remove_link(&p1, &hosts[1]));
        assert_eq!(pool.owner_of(&p1), pool.owner_of(&hosts[0]));
        assert_eq!(pool.owner_of(&p2), pool.owner_of(&hosts[1]));
        assert_ne!(pool.owner_of(&p1), pool.owner_of(&p2));
        // The listed entries and the one-per-owner rule follow.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let got = pool.select(&[fp(1)], 0, 10, 0, 1000, &mut rng);
        assert_eq!(got.len(), 2, "two owners again: {got:?}");
        for h in &got {
            assert_eq!(h.owner, pool.owner_of(&h.id));
        }
        assert!(pool.remove_link(&p1, &hosts[0]));
        assert_eq!(pool.owner_of(&p1), p1, "alone again");
    }

    #[test]
    fn reindex_on_change_keeps_buckets_consistent() {
        let mut pool = Pool::new();
        let ids: Vec<_> = (0..50u8).map(|_| Identity::generate().id()).collect();
        for (i, id) in ids.iter().enumerate() {
            pool.heartbeat(*id, &hb(&[fp(1)], 0), ip(10, 3, i as u8, 1), 0)
                .unwrap();
        }
        // Move every other host to another zone and toolchain, then sweep half.
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            pool.heartbeat(*id, &hb(&[fp(2)], 3600), ip(10, 3, i as u8, 1), 5)
                .unwrap();
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(pool.select(&[fp(1)], 0, 64, 5, 100, &mut rng).len(), 25);
        assert_eq!(pool.select(&[fp(2)], 0, 64, 5, 100, &mut rng).len(), 25);
        assert_eq!(
            pool.sweep(103, 100),
            25,
            "the unmoved ones were last seen at 0"
        );
        assert_eq!(pool.select(&[fp(1)], 0, 64, 103, 100, &mut rng).len(), 0);
        assert_eq!(pool.select(&[fp(2)], 0, 64, 103, 100, &mut rng).len(), 25);
        assert_eq!(pool.resolve_addr("10.3.0.1:3632"), Some(ids[0]));
        assert_eq!(pool.resolve_addr("10.3.1.1:3632"), None, "swept");
        assert_entry_json_current(&pool);
    }

    #[test]
    fn one_address_is_listed_once_whoever_advertises_it() {
        let mut pool = Pool::new();
        let mut shared = hb(&[fp(1)], 0);
        shared.host = Some("build.example.org".into());
        for i in 0..4u8 {
            pool.heartbeat(Identity::generate().id(), &shared, ip(10, 6, i, 1), 0)
                .unwrap();
        }
        pool.heartbeat(
            Identity::generate().id(),
            &hb(&[fp(1)], 0),
            ip(10, 6, 9, 1),
            0,
        )
        .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20 {
            let got = pool.select(&[fp(1)], 0, 8, 0, 1000, &mut rng);
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(
                got.iter().filter(|h| h.host == "build.example.org").count(),
                1
            );
        }
    }

    /// Every held host's cached JSON is its entry, after joins, changed
    /// heartbeats and owner-group merges.
    fn assert_entry_json_current(pool: &Pool) {
        let mut indexed = 0;
        for (fp, by_tz) in &pool.buckets {
            for (tz, cands) in by_tz {
                for (pos, c) in cands.iter().enumerate() {
                    let h = pool.hosts[c.idx as usize].as_ref().expect("live slot");
                    assert_eq!(*c, h.candidate(c.idx), "stale candidate for {}", h.id);
                    assert_eq!(h.tz, *tz);
                    assert!(h.slots.contains(&(fp.clone(), pos)), "slot positions");
                    indexed += 1;
                }
            }
        }
        assert_eq!(
            indexed,
            pool.hosts().map(|h| h.fps.len()).sum::<usize>(),
            "every host in each of its buckets once"
        );
        for h in pool.hosts() {
            assert_eq!(
                h.entry_json(),
                serde_json::to_vec(&h.entry()).unwrap().as_slice(),
                "stale cached entry for {}",
                h.id
            );
        }
    }

    #[test]
    fn cached_entry_json_follows_every_change() {
        let mut pool = Pool::new();
        let ids: Vec<_> = (0..6u8).map(|_| Identity::generate().id()).collect();
        for (i, id) in ids.iter().enumerate() {
            pool.heartbeat(*id, &hb(&[fp(1)], 0), ip(10, 4, i as u8, 1), 0)
                .unwrap();
        }
        assert_entry_json_current(&pool);
        let mut changed = hb(&[fp(1)], 3600);
        changed.capacity = 9;
        changed.lzo = false;
        changed.arch = "aarch64".into();
        changed.port = 4000;
        pool.heartbeat(ids[0], &changed, ip(10, 5, 0, 1), 1)
            .unwrap();
        changed.host = Some("build.example.org".into());
        pool.heartbeat(ids[1], &changed, ip(10, 4, 1, 1), 1)
            .unwrap();
        assert_entry_json_current(&pool);
        let person = Identity::generate().id();
        pool.add_link(person, ids[2]);
        pool.add_link(person, ids[3]);
        pool.add_link(ids[4], ids[3]);
        assert_eq!(pool.owner_of(&ids[4]), pool.owner_of(&ids[2]));
        assert_entry_json_current(&pool);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let entries = pool.select(&[fp(1)], 0, 10, 1, 1000, &mut rng.clone());
        let json = pool.select_json(&[fp(1)], 0, 10, 1, 1000, true, &mut rng);
        assert_eq!(entries.len(), json.len());
        for (e, (id, j)) in entries.iter().zip(json) {
            assert_eq!(serde_json::to_vec(e).unwrap(), j, "same hosts, same order");
            assert_eq!(e.id, id);
        }
    }

    #[test]
    fn with_challenges_on_only_hosts_that_serve_are_listed_and_make_members() {
        let mut pool = Pool::new();
        pool.set_require_service(true);
        let (a, b) = (Identity::generate().id(), Identity::generate().id());
        for (i, id) in [a, b].into_iter().enumerate() {
            pool.set_record(id, HostRecord::new(1_000), 1_000);
            pool.heartbeat(id, &hb(&[fp(1)], 0), ip(10, 8, i as u8, 1), 0)
                .unwrap();
        }
        let listed = |pool: &Pool| -> Vec<IdentityId> {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let mut v: Vec<_> = pool
                .select(&[fp(1)], 0, 10, 0, 1000, &mut rng)
                .iter()
                .map(|e| e.id)
                .collect();
            v.sort();
            v
        };
        assert!(listed(&pool).is_empty(), "no challenge passed yet");
        assert_eq!(pool.member_via(&a, 0, 1000), None);
        assert_eq!(pool.unproven_daemon(&a, 0, 1000).map(|(d, _)| d), Some(a));
        let mut rec = *pool.record(&a).unwrap();
        rec.challenge_passed(1_010);
        pool.set_record(a, rec, 1_010);
        assert_eq!(listed(&pool), vec![a]);
        assert_eq!(pool.member_via(&a, 0, 1000), Some(a));
        assert_eq!(pool.member_via(&b, 0, 1000), None);
        // Two failures in a row: out again.
        rec.challenge_failed();
        pool.set_record(a, rec, 1_020);
        assert_eq!(listed(&pool), vec![a], "one failure is not enough");
        rec.challenge_failed();
        pool.set_record(a, rec, 1_030);
        assert!(listed(&pool).is_empty());
        assert_eq!(pool.member_via(&a, 0, 1000), None);
        // Off: every live host counts.
        pool.set_require_service(false);
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(listed(&pool), both);
        assert_eq!(pool.member_via(&b, 0, 1000), Some(b));
    }

    #[test]
    fn standing_follows_the_record_and_shows_in_entries() {
        let mut pool = Pool::new();
        let rules = StandingRules {
            challenges: 1,
            agreements: 0,
            min_age_secs: 100,
        };
        pool.set_standing_rules(rules);
        let (a, b) = (Identity::generate().id(), Identity::generate().id());
        for (i, id) in [a, b].into_iter().enumerate() {
            pool.set_record(id, HostRecord::new(1_000), 1_000);
            pool.heartbeat(id, &hb(&[fp(1)], 0), ip(10, 7, i as u8, 1), 0)
                .unwrap();
            assert_eq!(
                pool.refresh_standing(&id, 1_000),
                Some(Standing::Probationary)
            );
        }
        // Challenges passed but too young; then old enough.
        let mut rec = *pool.record(&a).unwrap();
        rec.challenge_passed(1_050);
        pool.set_record(a, rec, 1_050);
        assert_eq!(pool.host(&a).unwrap().standing, Standing::Probationary);
        assert_eq!(
            pool.refresh_standing(&a, 1_100),
            Some(Standing::Established)
        );
        assert_eq!(
            pool.host(&a).unwrap().entry().standing,
            Standing::Established
        );
        assert_entry_json_current(&pool);
        // The operator's vouching, as the store watcher mirrors it.
        assert_eq!(pool.replace_vouched(&[b], 1_000), 1);
        assert_eq!(pool.host(&b).unwrap().standing, Standing::Established);
        assert_eq!(pool.replace_vouched(&[b], 1_000), 0, "nothing changed");
        assert_eq!(pool.standing_counts(0, 1000), (2, 0, 1), "a serves");
        assert_eq!(pool.replace_vouched(&[], 1_000), 1);
        assert_eq!(pool.host(&b).unwrap().standing, Standing::Probationary);
        assert_entry_json_current(&pool);
        // A person linked to an established daemon reports as established.
        let person = Identity::generate().id();
        assert!(!pool.group_is_established(&person, 1_100));
        pool.add_link(person, a);
        assert!(pool.group_is_established(&person, 1_100));
        assert!(!pool.group_is_established(&b, 1_100));
        let status = pool.daemons_of(&person, 0, 1000, 1_100);
        assert_eq!(status.len(), 1);
        assert_eq!(
            (status[0].id, status[0].standing, status[0].serves),
            (a, Standing::Established, true)
        );
    }

    #[test]
    fn a_blacklisting_covers_the_address_until_lifted() {
        let mut pool = Pool::new();
        let (liar, other) = (Identity::generate().id(), Identity::generate().id());
        let mut at = hb(&[fp(1)], 0);
        at.host = Some("Build.Example.org".into());
        pool.heartbeat(liar, &at, ip(10, 8, 0, 1), 0).unwrap();
        let rec = pool.host(&liar).unwrap();
        assert_eq!(
            rec.blacklist_addresses(),
            vec!["build.example.org".to_string(), "10.8.0.1".into()],
            "a name, and the address it heartbeats from"
        );
        pool.set_blacklisted(BlacklistEntry {
            id: liar,
            since: 1,
            reason: "t".into(),
            addresses: rec.blacklist_addresses(),
            network: rec.network.display(),
        });
        // A host elsewhere may not move onto the address.
        pool.heartbeat(other, &hb(&[fp(1)], 0), ip(10, 9, 0, 1), 0)
            .unwrap();
        at.host = Some("build.example.ORG".into());
        assert_eq!(
            pool.heartbeat(other, &at, ip(10, 9, 0, 1), 1),
            Err(PoolError::AddressBlacklisted {
                address: "build.example.ORG".into(),
                id: liar
            })
        );
        assert_eq!(*pool.host(&other).unwrap().host, *"10.9.0.1", "unchanged");
        // A neighbour that advertised it before keeps it (the heartbeat
        // route refuses new identities there before they reach the pool).
        let neighbour = Identity::generate().id();
        pool.heartbeat(neighbour, &at, ip(10, 8, 0, 2), 0).unwrap();
        pool.heartbeat(neighbour, &at, ip(10, 8, 0, 2), 1).unwrap();
        assert_eq!(pool.address_blacklisted_by("10.8.0.1"), Some(liar));
        assert_eq!(address_key("::ffff:10.8.0.1"), "10.8.0.1");
        assert_eq!(address_key("[2001:DB8::1]"), "2001:db8::1");
        assert_eq!(network_key("10.8.0.77").as_deref(), Some("10.8.0.0/24"));
        assert_eq!(network_key("10.8.0.0/24").as_deref(), Some("10.8.0.0/24"));
        assert_eq!(network_key("nonsense"), None);
        assert!(pool.lift(&liar));
        assert_eq!(pool.address_blacklisted_by("10.8.0.1"), None);
        pool.heartbeat(other, &at, ip(10, 9, 0, 1), 0).unwrap();
    }
}
