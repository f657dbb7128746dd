//! What every request shares ([`Shared`]): the pool, the store, the caches of
//! the signature check, the counters behind `/metrics` and the recent events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::config::CoordinatorConfig;
use super::handed_out::HandedOut;
use super::per_address::AddressSlots;
use super::pool::Pool;
use super::quota::{NewHostQuota, Quotas};
use super::store::{Store, StoreError, WriteOp, WriteResult};
use crate::network::auth::{AuthError, KeyCache, NonceCache};
use crate::network::clock::unix_now;
use crate::network::identity::Identity;
use crate::network::identity::IdentityId;
use crate::trust::standing::HostRecord;

/// Which handler a request went to (the `endpoint` label of the request counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Status,
    Metrics,
    Health,
    CoordinatorKey,
    Heartbeat,
    Hosts,
    Link,
    Unlink,
    Whoami,
    Report,
    Detail,
    AdminBlacklist,
    AdminBlacklistAdd,
    AdminLift,
    AdminLiftNetwork,
    AdminVouch,
    AdminUnvouch,
    Evidence,
    CacheClaims,
    CacheLookup,
    CacheDispute,
    CacheWithdrawn,
    Other,
}

impl Endpoint {
    pub(super) const ALL: [Endpoint; 23] = [
        Endpoint::Status,
        Endpoint::Metrics,
        Endpoint::Health,
        Endpoint::CoordinatorKey,
        Endpoint::Heartbeat,
        Endpoint::Hosts,
        Endpoint::Link,
        Endpoint::Unlink,
        Endpoint::Whoami,
        Endpoint::Report,
        Endpoint::Detail,
        Endpoint::AdminBlacklist,
        Endpoint::AdminBlacklistAdd,
        Endpoint::AdminLift,
        Endpoint::AdminLiftNetwork,
        Endpoint::AdminVouch,
        Endpoint::AdminUnvouch,
        Endpoint::Evidence,
        Endpoint::CacheClaims,
        Endpoint::CacheLookup,
        Endpoint::CacheDispute,
        Endpoint::CacheWithdrawn,
        Endpoint::Other,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Endpoint::Status => "status",
            Endpoint::Metrics => "metrics",
            Endpoint::Health => "healthz",
            Endpoint::CoordinatorKey => "coordinator_key",
            Endpoint::Heartbeat => "heartbeat",
            Endpoint::Hosts => "hosts",
            Endpoint::Link => "link",
            Endpoint::Unlink => "unlink",
            Endpoint::Whoami => "whoami",
            Endpoint::Report => "report",
            Endpoint::Detail => "status_detail",
            Endpoint::AdminBlacklist => "admin_blacklist",
            Endpoint::AdminBlacklistAdd => "admin_blacklist_add",
            Endpoint::AdminLift => "admin_lift",
            Endpoint::AdminLiftNetwork => "admin_lift_network",
            Endpoint::AdminVouch => "admin_vouch",
            Endpoint::AdminUnvouch => "admin_unvouch",
            Endpoint::Evidence => "evidence",
            Endpoint::CacheClaims => "cache_claims",
            Endpoint::CacheLookup => "cache_lookup",
            Endpoint::CacheDispute => "cache_dispute",
            Endpoint::CacheWithdrawn => "cache_withdrawn",
            Endpoint::Other => "other",
        }
    }

    fn index(self) -> usize {
        Endpoint::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

/// Status codes counted per endpoint; 0 stands for any other.
pub(super) const CODES: [u16; 14] = [
    200, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 500, 503, 0,
];

fn code_index(status: u16) -> usize {
    CODES
        .iter()
        .position(|c| *c == status)
        .unwrap_or(CODES.len() - 1)
}

/// Upper bounds (seconds) of the request latency histogram's buckets.
pub(super) const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// Why a signature check failed: the `reason` label, in [`AuthError::label`]'s words.
pub(super) const AUTH_LABELS: [&str; 9] = [
    "missing",
    "malformed",
    "stale",
    "bad_signature",
    "wrong_coordinator",
    "replay",
    "overloaded",
    "key_busy",
    "network_busy",
];

/// The limits that refuse work, the `limit` label of
/// `dportage_limit_refusals_total`; each is a command-line flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    ConnectionsPerAddress = 0,
    RequestsPerKey = 1,
    HeartbeatsPerKey = 2,
    ReportsPerKey = 3,
    NoncesPerKey = 4,
    ReportBytes = 5,
    TrackedKeys = 6,
    NoncesPerNetwork = 7,
    NewHostsPerNetwork = 8,
    NewHostsPerWideNetwork = 9,
    LookupsPerKey = 10,
}

pub(super) const LIMIT_LABELS: [&str; 11] = [
    "connections_per_address",
    "requests_per_key",
    "heartbeats_per_key",
    "reports_per_key",
    "nonces_per_key",
    "report_bytes",
    "tracked_keys",
    "nonces_per_network",
    "new_hosts_per_network",
    "new_hosts_per_wide_network",
    "lookups_per_key",
];

/// The counters behind `/metrics`. Lock-free: every request touches them.
pub(super) struct Counters {
    /// Per endpoint, then per [`CODES`] entry.
    requests: Vec<AtomicU64>,
    /// Per [`LATENCY_BUCKETS`] bucket (not cumulative), then one for slower requests.
    pub(super) latency: Vec<AtomicU64>,
    pub(super) latency_sum_us: AtomicU64,
    /// Per [`AUTH_LABELS`] entry.
    pub(super) auth_failures: Vec<AtomicU64>,
    pub(super) connections_refused: AtomicU64,
    pub(super) connections_open: AtomicU64,
    /// Per [`LIMIT_LABELS`] entry.
    pub(super) limit_refusals: Vec<AtomicU64>,
    pub(super) blacklistings: AtomicU64,
    pub(super) reports: AtomicU64,
    pub(super) expired: AtomicU64,
    /// Challenge jobs passed and failed.
    pub(super) challenges_passed: AtomicU64,
    pub(super) challenges_failed: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        let n = |k: usize| (0..k).map(|_| AtomicU64::new(0)).collect();
        Self {
            requests: n(Endpoint::ALL.len() * CODES.len()),
            latency: n(LATENCY_BUCKETS.len() + 1),
            latency_sum_us: AtomicU64::new(0),
            auth_failures: n(AUTH_LABELS.len()),
            connections_refused: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            limit_refusals: n(LIMIT_LABELS.len()),
            blacklistings: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            challenges_passed: AtomicU64::new(0),
            challenges_failed: AtomicU64::new(0),
        }
    }

    /// A request answered.
    pub(super) fn record(&self, ep: Endpoint, status: u16, elapsed: Duration) {
        self.requests[ep.index() * CODES.len() + code_index(status)]
            .fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let b = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests to `ep` answered with `CODES[code_idx]`.
    pub(super) fn request_count(&self, ep: Endpoint, code_idx: usize) -> u64 {
        self.requests[ep.index() * CODES.len() + code_idx].load(Ordering::Relaxed)
    }

    /// Requests answered since start, whatever the endpoint and status.
    pub(super) fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// A challenge job's outcome was recorded.
    pub(super) fn challenge_done(&self, passed: bool) {
        let c = if passed {
            &self.challenges_passed
        } else {
            &self.challenges_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn refused_by(&self, limit: Limit) {
        self.limit_refusals[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn auth_failed(&self, e: &AuthError) {
        if let Some(i) = AUTH_LABELS.iter().position(|l| *l == e.label()) {
            self.auth_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A line of "recent activity" on the status page.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) unix: u64,
    pub(super) text: String,
}

/// Events kept for the status page; older ones are only in the log.
const MAX_EVENTS: usize = 100;

pub(super) struct Shared {
    pub(super) cfg: CoordinatorConfig,
    /// Signs host lists; members pin its public key.
    pub(super) key: Identity,
    pool: RwLock<Pool>,
    pub(super) nonces: Mutex<NonceCache>,
    pub(super) keys: Mutex<KeyCache>,
    pub(super) quotas: Quotas,
    /// Connections held per client address.
    pub(super) address_slots: std::sync::Arc<AddressSlots>,
    pub(super) store: Store,
    pub(super) counters: Counters,
    events: Mutex<VecDeque<Event>>,
    started: Instant,
    /// New host identities per network and wide network.
    pub(super) new_hosts: NewHostQuota,
    /// The hosts each member was given lately (reports name only those).
    pub(super) handed_out: HandedOut,
    /// Set on shutdown; the background tasks end on their next tick.
    pub(super) stopping: AtomicBool,
    /// Evidence asked for and disputes waiting for referees (in memory).
    adjudications: super::disputes::AdjudicationState,
    pub(super) adjudication_counters: super::disputes::AdjudicationCounters,
    /// The result cache's index (issue 16): entries and pending claims.
    cache: Mutex<super::cache_index::CacheIndex>,
    pub(super) cache_counters: super::cache_index::CacheCounters,
}

impl Shared {
    /// A `TCKT` body for the coordinator's own jobs (challenges,
    /// adjudication) to `host`: a ticket it issues itself, proved with the
    /// same key, so a daemon that serves only `--allow` and ticket holders
    /// serves the coordinator too.
    pub(super) fn own_ticket_pass(&self, host: IdentityId) -> Vec<u8> {
        use crate::network::ticket::{present, Ticket, PROOF_WINDOW_SECS};
        let now = unix_now();
        // Only this connection uses it: a few minutes is plenty.
        let ticket = Ticket::issue(&self.key, self.key.id(), host, now, PROOF_WINDOW_SECS);
        present(&ticket, &self.key, now, rand::random()).to_vec()
    }

    pub(super) fn new(
        mut cfg: CoordinatorConfig,
        key: Identity,
        pool: Pool,
        store: Store,
        cache: super::cache_index::CacheIndex,
    ) -> Self {
        // Daemons are told to heartbeat within half the expiry; a short
        // --expiry must not make that rate-limited. Allow four times it.
        let every = (cfg.expiry.as_secs() / 2).max(1);
        let floor = (4 * 60u64).div_ceil(every) as u32;
        for rate in [&mut cfg.heartbeats_per_key, &mut cfg.requests_per_key] {
            if rate.n != 0 && rate.per.as_secs() == 60 && rate.n < floor {
                rate.n = floor;
            }
        }
        Self {
            nonces: Mutex::new(NonceCache::with_caps(
                cfg.nonce_cache_cap,
                cfg.max_nonces_per_key,
                cfg.max_nonces_per_network,
            )),
            quotas: Quotas::new(
                cfg.requests_per_key,
                cfg.heartbeats_per_key,
                cfg.reports_per_key,
                cfg.lookups_per_key,
            ),
            address_slots: AddressSlots::new(cfg.max_connections_per_address),
            key,
            pool: RwLock::new(pool),
            keys: Mutex::new(KeyCache::default()),
            store,
            counters: Counters::new(),
            events: Mutex::new(VecDeque::new()),
            started: Instant::now(),
            new_hosts: NewHostQuota::new(cfg.new_hosts_per_network, cfg.new_hosts_per_wide_network),
            handed_out: HandedOut::new(cfg.report_window.as_secs()),
            stopping: AtomicBool::new(false),
            adjudications: Default::default(),
            adjudication_counters: Default::default(),
            cache: Mutex::new(cache),
            cache_counters: Default::default(),
            cfg,
        }
    }

    /// Milliseconds since start: the pool's clock (monotonic, unlike wall time).
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn expiry_ms(&self) -> u64 {
        self.cfg.expiry.as_millis() as u64
    }

    /// Seconds since start: the clock of the hand-out memory.
    pub(super) fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Apply a change to a host's standing record durably, then mirror it in
    /// the pool (its listed standing follows). `None`: not a registered host.
    pub(super) async fn change_record(
        &self,
        op: WriteOp,
    ) -> Result<Option<(IdentityId, HostRecord)>, StoreError> {
        let id = match &op {
            WriteOp::Vouch { id, .. }
            | WriteOp::Challenge { id, .. }
            | WriteOp::Agreement { id } => *id,
            _ => return Ok(None),
        };
        let WriteResult::Record(rec) = self.store.write(op).await? else {
            return Ok(None);
        };
        Ok(rec.map(|rec| {
            self.pool_write().set_record(id, rec, unix_now());
            (id, rec)
        }))
    }

    /// Log `text` and keep it for the status page.
    pub(super) fn event(&self, text: String) {
        tracing::info!("{text}");
        let mut ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if ev.len() >= MAX_EVENTS {
            ev.pop_front();
        }
        ev.push_back(Event {
            unix: unix_now(),
            text,
        });
    }

    pub(super) fn recent_events_newest_first(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    pub(super) fn adjudications(
        &self,
    ) -> std::sync::MutexGuard<'_, super::disputes::Adjudications> {
        self.adjudications.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn cache(&self) -> std::sync::MutexGuard<'_, super::cache_index::CacheIndex> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    // Poisoning is ignored: one panicking request must not take every later
    // request down with it.
    pub(super) fn pool_read(&self) -> RwLockReadGuard<'_, Pool> {
        self.pool.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn pool_write(&self) -> RwLockWriteGuard<'_, Pool> {
        self.pool.write().unwrap_or_else(|p| p.into_inner())
    }
}
