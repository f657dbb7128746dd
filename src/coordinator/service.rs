//! The running coordinator: [`Coordinator::bind`] opens the store, rebuilds the
//! pool, binds and serves (hyper 1.x HTTP/1.1 with keep-alive, timeouts and a
//! connection limit); two background tasks expire hosts and pick up blacklist
//! changes made by the admin CLI. [`CoordinatorError`] is the role's error.
//! Connections are capped in all and per client address (`per_address`); signed
//! requests per identity (`quota`, checked in `http`).
//!
//! Hot paths (heartbeat of a known host, host list) touch only memory: one
//! signature verification, one nonce-cache insert and a short critical section
//! on the pool. Writes that must be durable (a new identity, a link, a report, a
//! lift) go through the store's group-commit writer and are acknowledged only
//! after their commit.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::config::CoordinatorConfig;
use super::pool::{NetKey, Pool, PoolError};
use super::routes;
use super::state::{Limit, Shared};
use super::store::{self, Store, StoreError, WriteOp};
use crate::exitcode;
use crate::network::api::{Heartbeat, MAX_BODY};
use crate::network::clock::unix_now;
use crate::network::identity::{Identity, IdentityId};
use crate::network::NetworkError;
use crate::trust::standing::HostRecord;

/// What can stop `dportage coordinator` or one of its admin commands.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("cannot listen on {addr}: {source}; is another coordinator running there? choose another address with --listen (port 0 picks a free one)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the {name} thread: {source}; the system is out of threads or memory")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("cannot watch for SIGTERM: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("heartbeat of {id} is invalid: {why}")]
    InvalidHeartbeat {
        id: IdentityId,
        why: crate::network::api::ApiValidationError,
    },
    #[error("{option}: {why} (see --help)")]
    Usage { option: &'static str, why: String },
    #[error("{0} does not exist; is --data the coordinator's directory?")]
    NoDatabase(PathBuf),
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(#[from] crate::network::tls::TlsError),
    #[error("the coordinator's signing key in {}: {reason}", dir.display())]
    Key { dir: PathBuf, reason: String },
    #[error("{0} is not blacklisted; `dportage coordinator blacklist list` shows who is")]
    NotBlacklisted(IdentityId),
    #[error(
        "network {0} is not blacklisted; `dportage coordinator blacklist list` shows which are"
    )]
    NetworkNotBlacklisted(String),
    #[error("{0} is not a host registered with this coordinator (has it heartbeated here? a member's or person's key cannot be vouched for)")]
    NotAHost(IdentityId),
    #[error(transparent)]
    Remote(#[from] NetworkError),
}

impl CoordinatorError {
    /// The exit code `dportage coordinator …` ends with.
    pub fn exit_code(&self) -> i32 {
        match self {
            CoordinatorError::Bind { .. } => exitcode::BIND_FAILED,
            CoordinatorError::Usage { .. } => exitcode::BAD_ARGUMENTS,
            CoordinatorError::NoDatabase(_)
            | CoordinatorError::NotBlacklisted(_)
            | CoordinatorError::NetworkNotBlacklisted(_)
            | CoordinatorError::NotAHost(_) => exitcode::NO_SUCH_FILE,
            CoordinatorError::Store(_)
            | CoordinatorError::Key { .. }
            | CoordinatorError::Tls(_) => exitcode::IO_ERROR,
            CoordinatorError::Remote(NetworkError::Api { code, .. }) if code == "not_admin" => {
                exitcode::ACCESS_DENIED
            }
            CoordinatorError::Remote(NetworkError::Unreachable { .. }) => exitcode::CONNECT_FAILED,
            CoordinatorError::Thread { .. }
            | CoordinatorError::Runtime(_)
            | CoordinatorError::Signals(_)
            | CoordinatorError::Pool(_)
            | CoordinatorError::InvalidHeartbeat { .. }
            | CoordinatorError::Remote(_) => exitcode::DISTCC_FAILED,
        }
    }
}

/// Under `--data`: the coordinator's own key pair (`identity.key`), which
/// signs host lists. Back it up with the database: members pin its public key,
/// and a new key makes every member refuse the coordinator until they re-pin.
pub const KEY_DIR: &str = "coordinator-key";

/// A running coordinator (in this process).
pub struct Coordinator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    /// Open the store, bind, and serve on the current tokio runtime.
    pub async fn bind(cfg: CoordinatorConfig) -> Result<Coordinator, CoordinatorError> {
        // Read before anything else: a wrong file is a start-up error.
        let tls = match &cfg.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(
                crate::network::tls::server_config(&files.cert, &files.key)?,
            )),
            None => None,
        };
        let (store, mut snapshot) = Store::open(&cfg.data_dir)?;
        let key = Identity::load_or_create(&cfg.data_dir.join(KEY_DIR)).map_err(|e| {
            CoordinatorError::Key {
                dir: cfg.data_dir.join(KEY_DIR),
                reason: e.to_string(),
            }
        })?;
        let now_unix = unix_now();
        let mut pool = Pool::new();
        pool.set_standing_rules(cfg.standing_rules);
        pool.set_require_service(cfg.challenges);
        for (id, daemon) in &snapshot.identities {
            pool.add_known(*id, *daemon);
        }
        for (p, d) in &snapshot.links {
            pool.add_link(*p, *d);
        }
        for (id, rec) in &snapshot.records {
            pool.set_record(*id, *rec, now_unix);
        }
        let n_blacklisted = snapshot.blacklist.entries.len();
        let n_networks = snapshot.blacklist.networks.len();
        pool.replace_blacklist(snapshot.blacklist);

        let bind_error = |source| CoordinatorError::Bind {
            addr: cfg.listen,
            source,
        };
        let listener = TcpListener::bind(cfg.listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let mut cache = super::cache_index::CacheIndex::default();
        let n_cache = snapshot.cache_entries.len();
        for row in std::mem::take(&mut snapshot.cache_entries) {
            cache.load(row);
        }
        let shared = Arc::new(Shared::new(cfg, key, pool, store, cache));
        // Hosts registered within the new-host quotas' periods still count.
        let recent = store::recent_host_registrations(
            &store::open_connection(&shared.cfg.data_dir)?,
            shared.store.path(),
            now_unix.saturating_sub(shared.new_hosts.memory().as_secs()),
        )?;
        for (network, first_seen) in &recent {
            let ip = network
                .split('/')
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let Some(ip) = ip {
                let age = Duration::from_secs(now_unix.saturating_sub(*first_seen));
                shared.new_hosts.spend_before_start(ip, age);
            }
        }
        shared.event(format!(
            "coordinator started on {addr}: {} identities ({} hosts), {} links, {n_blacklisted} blacklisted, {n_networks} network(s) blacklisted, {n_cache} cache entries",
            snapshot.identities.len(),
            snapshot.records.len(),
            snapshot.links.len()
        ));
        spawn_sweeper(Arc::downgrade(&shared));
        super::challenger::spawn(Arc::downgrade(&shared));
        super::adjudicator::spawn_adjudicator(Arc::downgrade(&shared));
        spawn_store_watcher(Arc::downgrade(&shared))?;
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), tls));
        Ok(Coordinator {
            addr,
            shared,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR:PORT`, or `https://` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.shared.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The coordinator's public key: what signed requests must name, and
    /// what signs host lists.
    pub fn key(&self) -> IdentityId {
        self.shared.key.id()
    }

    /// Stop accepting; background tasks end on their next tick.
    pub fn shutdown(self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.accept.abort();
    }

    /// Register hosts without HTTP (durable identity rows, then heartbeats in
    /// memory): for benchmarks and tests that need a large pool quickly.
    #[doc(hidden)]
    pub async fn register_directly(
        &self,
        hosts: Vec<(IdentityId, Heartbeat, IpAddr)>,
    ) -> Result<(), CoordinatorError> {
        let rows = hosts
            .iter()
            .map(|(id, _, ip)| (*id, true, NetKey::of(*ip).display()))
            .collect();
        let now_unix = unix_now();
        self.shared
            .store
            .write(WriteOp::RegisterMany(rows, now_unix))
            .await?;
        let now = self.shared.now_ms();
        let mut pool = self.shared.pool_write();
        for (id, hb, ip) in hosts {
            hb.validate()
                .map_err(|why| CoordinatorError::InvalidHeartbeat { id, why })?;
            if pool.record(&id).is_none() {
                pool.set_record(id, HostRecord::new(now_unix), now_unix);
            }
            pool.heartbeat(id, &hb, ip, now)?;
            pool.refresh_standing(&id, now_unix);
        }
        Ok(())
    }

    /// A challenge job sent to host `id` came back right (`passed`), or
    /// wrong or not at all: stored durably, then its standing (and
    /// `serves`) follow. `None` if `id` is not a registered host.
    pub async fn record_challenge(
        &self,
        id: IdentityId,
        passed: bool,
    ) -> Result<Option<HostRecord>, CoordinatorError> {
        let op = WriteOp::Challenge {
            id,
            passed,
            now: unix_now(),
        };
        Ok(self.shared.change_record(op).await?.map(|(_, r)| r))
    }

    /// Host `id` agreed with an established host on a verified job (stored
    /// durably; its standing follows). `None` if it is not a registered host.
    pub async fn record_agreement(
        &self,
        id: IdentityId,
    ) -> Result<Option<HostRecord>, CoordinatorError> {
        let op = WriteOp::Agreement { id };
        Ok(self.shared.change_record(op).await?.map(|(_, r)| r))
    }

    /// Live hosts right now.
    pub fn live_hosts(&self) -> usize {
        let s = &self.shared;
        s.pool_read().live_count(s.now_ms(), s.expiry_ms())
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.accept.abort();
    }
}

/// Expire silent hosts and forget refilled quotas and old hand-outs. Holds
/// only a weak reference, so dropping the [`Coordinator`] ends it.
fn spawn_sweeper(weak: Weak<Shared>) {
    tokio::spawn(async move {
        let period = match weak.upgrade() {
            Some(s) => {
                (s.cfg.expiry / 4).clamp(Duration::from_millis(200), Duration::from_secs(30))
            }
            None => return,
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = weak.upgrade() else { return };
            if s.stopping.load(Ordering::SeqCst) {
                return;
            }
            let (now, exp) = (s.now_ms(), s.expiry_ms());
            let n = s.pool_write().sweep(now, exp);
            if n > 0 {
                s.counters.expired.fetch_add(n as u64, Ordering::Relaxed);
                s.event(format!(
                    "{n} host(s) expired (no heartbeat for {} s)",
                    s.cfg.expiry.as_secs_f64()
                ));
            }
            s.quotas.prune(now);
            s.new_hosts.prune(now);
            s.handed_out.prune(s.now_secs());
        }
    });
}

/// Watch the database for commits by other processes (the admin CLI) and
/// reload the blacklist (identities, addresses, networks) and the vouched
/// hosts when it changed. A thread, not a task: SQLite blocks.
fn spawn_store_watcher(weak: Weak<Shared>) -> Result<(), CoordinatorError> {
    let dir = match weak.upgrade() {
        Some(s) => s.cfg.data_dir.clone(),
        None => return Ok(()),
    };
    let conn = store::open_connection(&dir)?;
    let path = dir.join(store::DB_FILE);
    let name = "dportage-store-watch";
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut last = store::data_version(&conn);
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let Some(s) = weak.upgrade() else { return };
                if s.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let now = store::data_version(&conn);
                if now == last {
                    continue;
                }
                last = now;
                match store::read_blacklist_state(&conn, &path) {
                    Ok(entries) => {
                        let (added, removed) = s.pool_write().replace_blacklist(entries);
                        if added + removed > 0 {
                            s.event(format!(
                                "blacklist changed in the database: {added} added, {removed} lifted"
                            ));
                        }
                    }
                    Err(e) => tracing::warn!("reloading the blacklist: {e}"),
                }
                match store::read_vouched(&conn, &path) {
                    Ok(vouched) => {
                        let n = s.pool_write().replace_vouched(&vouched, unix_now());
                        if n > 0 {
                            s.event(format!("vouching changed in the database for {n} host(s)"));
                        }
                    }
                    Err(e) => tracing::warn!("reloading the vouched hosts: {e}"),
                }
            }
        })
        .map_err(|source| CoordinatorError::Thread { name, source })?;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let limit = Arc::new(Semaphore::new(shared.cfg.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        // One address may not take every slot: honest clients elsewhere keep
        // theirs. A trusted proxy's connections carry everyone's requests.
        let address_slot = if shared.cfg.trusted_proxies.contains(&peer.ip()) {
            None
        } else {
            match shared.address_slots.try_acquire(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    shared.counters.refused_by(Limit::ConnectionsPerAddress);
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            shared
                .counters
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            match tls {
                // The handshake is bounded like a request's headers: a peer
                // that opens connections and says nothing holds no slot long.
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(shared.cfg.header_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => serve_http(&shared, peer, stream).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer}: timed out"),
                    }
                }
                None => serve_http(&shared, peer, stream).await,
            }
            shared
                .counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(address_slot);
            drop(permit);
        });
    }
}

/// HTTP/1.1 on one accepted connection, plain or TLS.
async fn serve_http<S>(shared: &Arc<Shared>, peer: SocketAddr, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| routes::handle(svc_shared.clone(), peer, req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.cfg.header_timeout)
        .max_buf_size(MAX_BODY + 16 * 1024)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
        tracing::debug!("connection from {peer}: {e}");
    }
}
