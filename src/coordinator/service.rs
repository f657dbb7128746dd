//! The coordinator's HTTP server: hyper 1.x HTTP/1.1 with keep-alive, bounded
//! bodies and timeouts, signed requests, and the handlers. See
//! `docs/coordinator-api.md` for the wire contract.
//!
//! Hot paths (heartbeat of a known host, host list) touch only memory: one
//! signature verification, one nonce-cache insert and a short critical section
//! on the pool. Writes that must be durable (a new identity, a link, a report, a
//! lift) go through the store's group-commit writer and are acknowledged only
//! after their commit.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::pool::{HeartbeatOutcome, NetKey, Pool, PoolError};
use super::status;
use super::store::{self, BlacklistRule, Store, StoreError, WriteOp, WriteResult};
use crate::network::api::*;
use crate::network::auth::{self, AuthError, Claimed, KeyCache, NonceCache};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;

/// Everything `dportage coordinator` can be told.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A host not heard from for this long leaves the pool.
    pub expiry: Duration,
    /// Keys allowed to use `/v1/admin/*`.
    pub admin_keys: Vec<IdentityId>,
    /// Hosts per job, told to clients.
    pub redundancy: u32,
    /// Limit for receiving a request's headers, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Limit for receiving a request's body.
    pub body_timeout: Duration,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// New identities accepted per network (/24, /48) per hour.
    pub registrations_per_network_per_hour: u32,
    pub blacklist_rule: BlacklistRule,
    /// Most nonces remembered (bounds memory under a flood of valid requests).
    pub nonce_cache_cap: usize,
}

impl CoordinatorConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            expiry: Duration::from_secs(600),
            admin_keys: Vec::new(),
            redundancy: 2,
            header_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(10),
            max_connections: 8192,
            registrations_per_network_per_hour: 256,
            blacklist_rule: BlacklistRule::default(),
            nonce_cache_cap: 20_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A running coordinator (in this process).
pub struct Coordinator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

/// An answer that is not 2xx.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        let code = if matches!(e, AuthError::Overloaded) {
            "overloaded"
        } else {
            "unauthenticated"
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Which handler a request went to (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Status,
    Metrics,
    Health,
    Heartbeat,
    Hosts,
    Link,
    Whoami,
    Report,
    AdminBlacklist,
    AdminLift,
    Other,
}

impl Endpoint {
    pub(crate) const ALL: [Endpoint; 11] = [
        Endpoint::Status,
        Endpoint::Metrics,
        Endpoint::Health,
        Endpoint::Heartbeat,
        Endpoint::Hosts,
        Endpoint::Link,
        Endpoint::Whoami,
        Endpoint::Report,
        Endpoint::AdminBlacklist,
        Endpoint::AdminLift,
        Endpoint::Other,
    ];

    fn route(path: &str) -> (Endpoint, Method) {
        match path {
            "/" => (Endpoint::Status, Method::GET),
            "/metrics" => (Endpoint::Metrics, Method::GET),
            "/healthz" => (Endpoint::Health, Method::GET),
            "/v1/heartbeat" => (Endpoint::Heartbeat, Method::POST),
            "/v1/hosts" => (Endpoint::Hosts, Method::POST),
            "/v1/link" => (Endpoint::Link, Method::POST),
            "/v1/whoami" => (Endpoint::Whoami, Method::POST),
            "/v1/report" => (Endpoint::Report, Method::POST),
            "/v1/admin/blacklist" => (Endpoint::AdminBlacklist, Method::GET),
            "/v1/admin/blacklist/lift" => (Endpoint::AdminLift, Method::POST),
            _ => (Endpoint::Other, Method::GET),
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Endpoint::Status => "status",
            Endpoint::Metrics => "metrics",
            Endpoint::Health => "healthz",
            Endpoint::Heartbeat => "heartbeat",
            Endpoint::Hosts => "hosts",
            Endpoint::Link => "link",
            Endpoint::Whoami => "whoami",
            Endpoint::Report => "report",
            Endpoint::AdminBlacklist => "admin_blacklist",
            Endpoint::AdminLift => "admin_lift",
            Endpoint::Other => "other",
        }
    }

    fn index(self) -> usize {
        Endpoint::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

/// Status codes counted per endpoint.
pub(crate) const CODES: [u16; 12] = [200, 400, 401, 403, 404, 405, 408, 413, 429, 500, 503, 0];

fn code_index(status: u16) -> usize {
    CODES
        .iter()
        .position(|c| *c == status)
        .unwrap_or(CODES.len() - 1)
}

/// Latency buckets (seconds) for the request histogram.
pub(crate) const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// Counters, lock-free.
pub(crate) struct Metrics {
    pub requests: Vec<AtomicU64>,
    pub latency: Vec<AtomicU64>,
    pub latency_sum_us: AtomicU64,
    pub auth_failures: Vec<AtomicU64>,
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicU64,
    pub blacklistings: AtomicU64,
    pub reports: AtomicU64,
    pub expired: AtomicU64,
}

pub(crate) const AUTH_LABELS: [&str; 6] = [
    "missing",
    "malformed",
    "stale",
    "bad_signature",
    "replay",
    "overloaded",
];

impl Metrics {
    fn new() -> Self {
        let n = |k: usize| (0..k).map(|_| AtomicU64::new(0)).collect();
        Self {
            requests: n(Endpoint::ALL.len() * CODES.len()),
            latency: n(LATENCY_BUCKETS.len() + 1),
            latency_sum_us: AtomicU64::new(0),
            auth_failures: n(AUTH_LABELS.len()),
            connections_refused: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            blacklistings: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    fn record(&self, ep: Endpoint, status: u16, elapsed: Duration) {
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

    pub(crate) fn request_count(&self, ep: Endpoint, code_idx: usize) -> u64 {
        self.requests[ep.index() * CODES.len() + code_idx].load(Ordering::Relaxed)
    }
}

/// A line of "recent activity" on the status page.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub unix: u64,
    pub text: String,
}

const MAX_EVENTS: usize = 100;

pub(crate) struct Shared {
    pub cfg: CoordinatorConfig,
    pub pool: RwLock<Pool>,
    nonces: Mutex<NonceCache>,
    keys: Mutex<KeyCache>,
    store: Store,
    pub metrics: Metrics,
    pub events: Mutex<VecDeque<Event>>,
    started: Instant,
    registrations: Mutex<HashMap<NetKey, (u64, u32)>>,
    stopping: AtomicBool,
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn expiry_ms(&self) -> u64 {
        self.cfg.expiry.as_millis() as u64
    }

    fn event(&self, text: String) {
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

    fn pool_read(&self) -> std::sync::RwLockReadGuard<'_, Pool> {
        self.pool.read().unwrap_or_else(|p| p.into_inner())
    }

    fn pool_write(&self) -> std::sync::RwLockWriteGuard<'_, Pool> {
        self.pool.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Coordinator {
    /// Open the store, bind, and serve on the current tokio runtime.
    pub async fn bind(cfg: CoordinatorConfig) -> Result<Coordinator, CoordinatorError> {
        let (store, snapshot) = Store::open(&cfg.data_dir)?;
        let mut pool = Pool::new();
        for (id, daemon) in &snapshot.identities {
            pool.add_known(*id, *daemon);
        }
        for (p, d) in &snapshot.links {
            pool.add_link(*p, *d);
        }
        let n_blacklisted = snapshot.blacklist.len();
        pool.replace_blacklist(snapshot.blacklist);
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| CoordinatorError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| CoordinatorError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let shared = Arc::new(Shared {
            nonces: Mutex::new(NonceCache::new(cfg.nonce_cache_cap)),
            cfg,
            pool: RwLock::new(pool),
            keys: Mutex::new(KeyCache::default()),
            store,
            metrics: Metrics::new(),
            events: Mutex::new(VecDeque::new()),
            started: Instant::now(),
            registrations: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        });
        shared.event(format!(
            "coordinator started on {addr}: {} identities, {} links, {n_blacklisted} blacklisted",
            snapshot.identities.len(),
            snapshot.links.len()
        ));
        spawn_sweeper(Arc::downgrade(&shared));
        spawn_store_watcher(Arc::downgrade(&shared))?;
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Coordinator {
            addr,
            shared,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
    ) -> Result<(), String> {
        let rows = hosts
            .iter()
            .map(|(id, _, ip)| (*id, true, NetKey::of(*ip).display()))
            .collect();
        self.shared
            .store
            .write(WriteOp::RegisterMany(rows, unix_now()))
            .await?;
        let now = self.shared.now_ms();
        let mut pool = self.shared.pool_write();
        for (id, hb, ip) in hosts {
            hb.validate()?;
            pool.heartbeat(id, &hb, ip, now)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
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
                s.metrics.expired.fetch_add(n as u64, Ordering::Relaxed);
                s.event(format!(
                    "{n} host(s) expired (no heartbeat for {} s)",
                    s.cfg.expiry.as_secs_f64()
                ));
            }
            // Forget registration counters of past hours.
            let hour = unix_now() / 3600;
            s.registrations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, (h, _)| *h == hour);
        }
    });
}

/// Watch the database for commits by other processes (the admin CLI) and
/// reload the blacklist when it changed.
fn spawn_store_watcher(weak: Weak<Shared>) -> Result<(), CoordinatorError> {
    let dir = match weak.upgrade() {
        Some(s) => s.cfg.data_dir.clone(),
        None => return Ok(()),
    };
    let conn = store::open_connection(&dir)?;
    let path = dir.join(store::DB_FILE);
    std::thread::Builder::new()
        .name("dportage-store-watch".into())
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
                match store::read_blacklist(&conn, &path) {
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
            }
        })
        .map_err(|source| CoordinatorError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
    Ok(())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            shared
                .metrics
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            let svc_shared = shared.clone();
            let svc = hyper::service::service_fn(move |req| handle(svc_shared.clone(), peer, req));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(shared.cfg.header_timeout)
                .max_buf_size(MAX_BODY + 16 * 1024)
                .keep_alive(true);
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!("connection from {peer}: {e}");
            }
            shared
                .metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    json_response(
        e.status,
        &ErrorBody {
            error: e.message.clone(),
            code: e.code.to_string(),
        },
    )
}

fn text_response(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let start = Instant::now();
    let (ep, method) = Endpoint::route(req.uri().path());
    let resp = if ep == Endpoint::Other {
        error_response(&ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no such endpoint {:?}; see docs/coordinator-api.md",
                req.uri().path()
            ),
        ))
    } else if req.method() != method {
        let mut r = error_response(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} takes {method}, not {}", req.uri().path(), req.method()),
        ));
        if let Ok(v) = HeaderValue::from_str(method.as_str()) {
            r.headers_mut().insert(ALLOW, v);
        }
        r
    } else {
        match ep {
            Endpoint::Status => {
                text_response("text/html; charset=utf-8", status::render_page(&shared))
            }
            Endpoint::Metrics => text_response(
                "text/plain; version=0.0.4; charset=utf-8",
                status::render_metrics(&shared),
            ),
            Endpoint::Health => text_response("text/plain; charset=utf-8", "ok\n".into()),
            _ => match api(&shared, ep, peer, req).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("{} from {peer}: {} {}", ep.label(), e.status, e.message);
                    error_response(&e)
                }
            },
        }
    };
    shared
        .metrics
        .record(ep, resp.status().as_u16(), start.elapsed());
    Ok(resp)
}

/// Read the body (bounded in size and time) and authenticate the request.
async fn read_signed(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<(Claimed, Bytes), ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body larger than {MAX_BODY} bytes"),
        )
    };
    if let Some(len) = req.headers().get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?;
        if len > MAX_BODY as u64 {
            return Err(too_large());
        }
    }
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (parts, body) = req.into_parts();
    let claim = auth::parse_claim(|name| parts.headers.get(name).and_then(|v| v.to_str().ok()));
    let collected = tokio::time::timeout(
        shared.cfg.body_timeout,
        Limited::new(body, MAX_BODY).collect(),
    )
    .await;
    let body = match collected {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "request body not received within {} s",
                    shared.cfg.body_timeout.as_secs()
                ),
            ))
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            return Err(ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let claim = claim.inspect_err(|e| count_auth_failure(shared, e))?;
    let result = (|| {
        auth::check_time(&claim, unix_now())?;
        let key = shared
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&claim.key)?;
        auth::verify_claim(&key, &claim, &method, &path, &body)?;
        shared
            .nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_and_insert(&claim, unix_now())
    })();
    result.inspect_err(|e| count_auth_failure(shared, e))?;
    Ok((claim, body))
}

fn count_auth_failure(shared: &Shared, e: &AuthError) {
    if let Some(i) = AUTH_LABELS.iter().position(|l| *l == e.label()) {
        shared.metrics.auth_failures[i].fetch_add(1, Ordering::Relaxed);
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON request: {e}")))
}

fn not_member(id: &IdentityId) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "not_member",
        format!(
            "identity {id} is not a member: no live daemon of its owner is heartbeating here. \
             Run `dportage serve --coordinator URL` with this identity, or present your daemon's \
             membership token (`dportage` does this automatically when it can read it)"
        ),
    )
}

fn blacklisted(id: &IdentityId) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "blacklisted",
        PoolError::Blacklisted(*id).to_string(),
    )
}

async fn api(
    shared: &Arc<Shared>,
    ep: Endpoint,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (claim, body) = read_signed(shared, req).await?;
    let id = claim.key;
    match ep {
        Endpoint::Heartbeat => heartbeat(shared, id, peer.ip(), &body).await,
        Endpoint::Hosts => hosts(shared, id, &body),
        Endpoint::Link => link(shared, id, &body).await,
        Endpoint::Whoami => Ok(whoami(shared, id)),
        Endpoint::Report => report(shared, id, peer.ip(), &body).await,
        Endpoint::AdminBlacklist | Endpoint::AdminLift => admin(shared, ep, id, &body).await,
        _ => Err(ApiError::internal("unrouted endpoint")),
    }
}

fn check_registration_limit(shared: &Shared, net: NetKey) -> Result<(), ApiError> {
    let hour = unix_now() / 3600;
    let mut regs = shared
        .registrations
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let e = regs.entry(net).or_insert((hour, 0));
    if e.0 != hour {
        *e = (hour, 0);
    }
    if e.1 >= shared.cfg.registrations_per_network_per_hour {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_registrations",
            format!(
                "{} new identities from {} this hour already (limit {}); retry next hour",
                e.1,
                net.display(),
                shared.cfg.registrations_per_network_per_hour
            ),
        ));
    }
    e.1 += 1;
    Ok(())
}

async fn heartbeat(
    shared: &Arc<Shared>,
    id: IdentityId,
    peer: IpAddr,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let hb: Heartbeat = parse_json(body)?;
    hb.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid heartbeat: {e}")))?;
    let known_daemon = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&id) {
            return Err(blacklisted(&id));
        }
        pool.host(&id).is_some() || pool.is_known_daemon(&id)
    };
    if !known_daemon {
        let net = NetKey::of(peer);
        check_registration_limit(shared, net)?;
        shared
            .store
            .write(WriteOp::Register {
                id,
                daemon: true,
                now: unix_now(),
                network: net.display(),
            })
            .await
            .map_err(ApiError::internal)?;
        shared.pool_write().add_known(id, true);
        shared.event(format!(
            "new daemon {} registered from {}",
            id.short(),
            net.display()
        ));
    }
    let (outcome, advertised) = shared
        .pool_write()
        .heartbeat(id, &hb, peer, shared.now_ms())
        .map_err(|e| match e {
            PoolError::Blacklisted(id) => blacklisted(&id),
            PoolError::Refused(m) => ApiError::internal(m),
        })?;
    if outcome == HeartbeatOutcome::Joined {
        let tc = hb
            .toolchains
            .first()
            .map(|t| t.version.as_str())
            .unwrap_or("");
        shared.event(format!(
            "host {} joined at {advertised} ({tc}, {} jobs)",
            id.short(),
            hb.capacity
        ));
    }
    let expiry = shared.cfg.expiry.as_secs().max(1);
    let ack = HeartbeatAck {
        id,
        expiry_secs: expiry,
        heartbeat_within_secs: (expiry / 2).max(1),
        pool_size: shared.pool_read().held_count(),
        advertised,
    };
    Ok(json_response(StatusCode::OK, &ack))
}

fn hosts(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let req: HostsRequest = parse_json(body)?;
    req.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid host request: {e}")))?;
    let max = req
        .max
        .unwrap_or(32)
        .clamp(1, MAX_HOSTS_PER_RESPONSE as u32) as usize;
    let (now, exp) = (shared.now_ms(), shared.expiry_ms());
    let body = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&id) {
            return Err(blacklisted(&id));
        }
        let via = pool
            .member_via(&id, now, exp)
            .ok_or_else(|| not_member(&id))?;
        let hosts = pool.select_json(
            &req.fingerprints,
            req.tz_offset_secs,
            max,
            now,
            exp,
            &mut rand::thread_rng(),
        );
        hosts_response_json(hosts.into_iter(), shared.cfg.redundancy, &via)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// A [`HostsResponse`] serialised from hosts' cached entry JSON: the same
/// bytes `serde_json` makes of the struct, without rebuilding and
/// re-serialising every entry per request.
pub(crate) fn hosts_response_json<'a>(
    entries: impl ExactSizeIterator<Item = &'a [u8]>,
    redundancy: u32,
    member_via: &IdentityId,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + entries.len() * 320);
    out.extend_from_slice(b"{\"hosts\":[");
    for (i, e) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"],\"redundancy\":");
    out.extend_from_slice(redundancy.to_string().as_bytes());
    out.extend_from_slice(b",\"member_via\":\"");
    let mut hex = [0u8; 64];
    // Infallible: the buffer is exactly twice the key's length.
    let _ = hex::encode_to_slice(member_via.0, &mut hex);
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\"}");
    out
}

async fn link(
    shared: &Arc<Shared>,
    person: IdentityId,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let req: LinkRequest = parse_json(body)?;
    let daemon = req.token.verify(unix_now()).map_err(|e| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_token",
            format!("membership token refused: {e}"),
        )
    })?;
    let (already, merge_owners) = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&daemon) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "blacklisted",
                format!("daemon {daemon} is blacklisted; its membership cannot be shared"),
            ));
        }
        if pool.is_blacklisted(&person) {
            return Err(blacklisted(&person));
        }
        if !pool.is_known(&daemon) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "unknown_daemon",
                format!("daemon {daemon} has never heartbeated to this coordinator; start it with --coordinator pointing here"),
            ));
        }
        if person != daemon
            && !pool.is_linked(&person, &daemon)
            && pool.link_would_overflow(&person, &daemon)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "group_full",
                format!(
                    "linking would make an owner group larger than {}",
                    super::pool::MAX_GROUP
                ),
            ));
        }
        let already = person == daemon || pool.is_linked(&person, &daemon);
        // The pool keeps the smaller representative when groups merge.
        let (a, b) = (pool.owner_of(&person), pool.owner_of(&daemon));
        let merge_owners = (a != b).then(|| if a < b { (b, a) } else { (a, b) });
        (already, merge_owners)
    };
    if !already {
        shared
            .store
            .write(WriteOp::Link {
                person,
                daemon,
                now: unix_now(),
                merge_owners,
            })
            .await
            .map_err(ApiError::internal)?;
        let mut pool = shared.pool_write();
        pool.add_known(person, false);
        pool.add_link(person, daemon);
        drop(pool);
        shared.event(format!(
            "{} linked to daemon {}",
            person.short(),
            daemon.short()
        ));
    }
    let pool = shared.pool_read();
    let resp = LinkResponse {
        daemon,
        owner: pool.owner_of(&person),
        member: pool
            .member_via(&person, shared.now_ms(), shared.expiry_ms())
            .is_some(),
    };
    Ok(json_response(StatusCode::OK, &resp))
}

fn whoami(shared: &Arc<Shared>, id: IdentityId) -> Response<Full<Bytes>> {
    let (now, exp) = (shared.now_ms(), shared.expiry_ms());
    let pool = shared.pool_read();
    let resp = WhoamiResponse {
        id,
        owner: pool.owner_of(&id),
        member: pool.member_via(&id, now, exp).is_some(),
        blacklisted: pool.is_blacklisted(&id),
        daemons: pool.daemons_of(&id, now, exp),
    };
    json_response(StatusCode::OK, &resp)
}

async fn report(
    shared: &Arc<Shared>,
    reporter: IdentityId,
    peer: IpAddr,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let rep: MismatchReport = parse_json(body)?;
    rep.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid report: {e}")))?;
    let (now, exp) = (shared.now_ms(), shared.expiry_ms());
    let (reported, reporter_owner) = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&reporter) {
            return Err(blacklisted(&reporter));
        }
        pool.member_via(&reporter, now, exp)
            .ok_or_else(|| not_member(&reporter))?;
        let reported = match rep.host_id {
            Some(h) => h,
            None => pool.resolve_addr(&rep.host_addr).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_host",
                    format!(
                        "no live host is advertised at {:?}; send host_id",
                        rep.host_addr
                    ),
                )
            })?,
        };
        if !pool.is_known(&reported) && pool.host(&reported).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_host",
                format!("identity {reported} never registered here"),
            ));
        }
        let owner = pool.owner_of(&reporter);
        if pool.owner_of(&reported) == owner {
            return Err(ApiError::bad_request(format!(
                "host {reported} belongs to your own owner group; reports count only against other owners' hosts"
            )));
        }
        (reported, owner)
    };
    let net = NetKey::of(peer).display();
    let row = store::ReportRow {
        reported,
        reporter,
        reporter_owner,
        reporter_network: net.clone(),
        received: unix_now(),
        report_time: rep.time,
        input_hash: rep.input_hash.clone(),
        body: serde_json::to_string(&rep).unwrap_or_default(),
        rule: shared.cfg.blacklist_rule,
    };
    let result = shared
        .store
        .write(WriteOp::Report(row))
        .await
        .map_err(ApiError::internal)?;
    let WriteResult::Report {
        report_id,
        reporters,
        networks,
        newly_blacklisted,
        blacklisted,
    } = result
    else {
        return Err(ApiError::internal(
            "store answered a report with something else",
        ));
    };
    shared.metrics.reports.fetch_add(1, Ordering::Relaxed);
    shared.event(format!(
        "report #{report_id} against {} by {} from {net} ({reporters} distinct reporter(s))",
        reported.short(),
        reporter.short()
    ));
    if let Some(entry) = newly_blacklisted {
        shared.pool_write().set_blacklisted(entry);
        shared.metrics.blacklistings.fetch_add(1, Ordering::Relaxed);
        shared.event(format!(
            "host {} blacklisted: {reporters} members on {networks} network(s) reported it",
            reported.short()
        ));
    }
    let ack = ReportAck {
        report_id,
        host: reported,
        distinct_reporters: reporters,
        distinct_networks: networks,
        blacklisted,
    };
    Ok(json_response(StatusCode::OK, &ack))
}

async fn admin(
    shared: &Arc<Shared>,
    ep: Endpoint,
    id: IdentityId,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !shared.cfg.admin_keys.contains(&id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_admin",
            format!("identity {id} is not an admin key of this coordinator (--admin-key)"),
        ));
    }
    if ep == Endpoint::AdminBlacklist {
        let entries = shared.pool_read().blacklist_entries();
        return Ok(json_response(
            StatusCode::OK,
            &BlacklistResponse { entries },
        ));
    }
    let req: LiftRequest = parse_json(body)?;
    let result = shared
        .store
        .write(WriteOp::Lift { id: req.id })
        .await
        .map_err(ApiError::internal)?;
    let lifted = matches!(result, WriteResult::Lifted(true));
    shared.pool_write().lift(&req.id);
    if lifted {
        shared.event(format!(
            "blacklist entry {} lifted by admin {}",
            req.id.short(),
            id.short()
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &LiftResponse { id: req.id, lifted },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::identity::Identity;

    #[test]
    fn cached_host_list_json_is_what_serde_makes_of_the_response() {
        let entries: Vec<HostEntry> = (0..3u8)
            .map(|i| HostEntry {
                id: Identity::generate().id(),
                host: format!("10.0.{i}.1"),
                port: 3632 + u16::from(i),
                capacity: u32::from(i) + 1,
                lzo: i % 2 == 0,
                tz_offset_secs: -3600 * i32::from(i),
                owner: Identity::generate().id(),
                network: format!("10.0.{i}.0/24"),
                arch: "x86_64 \"<odd>\"".into(),
            })
            .collect();
        let via = Identity::generate().id();
        for n in [0, 1, 3] {
            let cached: Vec<Vec<u8>> = entries[..n]
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap())
                .collect();
            let fast = hosts_response_json(cached.iter().map(Vec::as_slice), 2, &via);
            let want = serde_json::to_vec(&HostsResponse {
                hosts: entries[..n].to_vec(),
                redundancy: 2,
                member_via: via,
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }
}
