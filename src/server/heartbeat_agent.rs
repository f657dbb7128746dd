//! The daemon's side of the network: register and heartbeat to the
//! coordinator, and publish the membership token for the people who use this
//! daemon's membership.
//!
//! The server calls [`spawn_heartbeat`] once at start (inside its tokio
//! runtime) when it was given `--coordinator URL`, and may read
//! [`HeartbeatHandle::status`] for its stats page.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::fingerprint::{HostFacts, Toolchain};
use crate::network::api::{Heartbeat, HeartbeatAck};
use crate::network::cache_api::{CacheClaims, CacheClaimsAck, CLAIMS_PATH, MAX_CLAIMS};
use crate::network::caller::{CoordinatorClient, KeySource};
use crate::network::clock::unix_now;
use crate::network::host_list;
use crate::network::identity::{self, Identity, IdentityId};
use crate::network::NetworkError;
use crate::probe;

use super::tickets::{Learned, TicketGate};
use super::Shared;

/// Compilers advertised when the server names none: those of these found in `PATH`.
pub const DEFAULT_COMPILERS: &[&str] = &["cc", "c++", "gcc", "g++", "clang", "clang++"];

/// How the daemon heartbeats.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// `http://HOST:PORT` of the coordinator.
    pub coordinator: String,
    /// What clients should dial: `HOST:PORT`, or `:PORT` / `PORT` to let the
    /// coordinator use the address the heartbeat comes from.
    pub advertise: String,
    /// Compiler names (or paths) this daemon serves.
    pub compilers: Vec<String>,
    /// Concurrent jobs (distccd `--jobs`).
    pub capacity: u32,
    /// Speaks protocol 2 (`,lzo`).
    pub lzo: bool,
    /// `--heartbeat-interval` (default 600 s). The daemon heartbeats sooner when
    /// the coordinator's expiry asks for it.
    pub interval: Duration,
    /// Where the daemon's identity lives (`$DPORTAGE_DIR`, default `~/.dportage`).
    pub identity_dir: PathBuf,
    /// Also write the membership token here (e.g. `/var/lib/dportage/membership.json`
    /// when the identity directory is not group-traversable). It is always written
    /// to `identity_dir/membership.json`.
    pub membership_file: Option<PathBuf>,
    /// A member state directory whose pending mismatch reports this daemon
    /// sends after each acknowledged heartbeat (`--send-reports-from`; by
    /// default the machine-wide directory when the daemon uses it), so a
    /// report made in a portage build does not wait for the next mismatch.
    pub reports_dir: Option<PathBuf>,
    /// Send heartbeats from this local address (default: the system's choice).
    /// The coordinator groups hosts by the network a heartbeat comes from.
    pub source_ip: Option<IpAddr>,
    /// The key the coordinator must have (`--coordinator-key`); without it,
    /// the key pinned in `identity_dir` at first contact. Tickets must be
    /// signed with it.
    pub coordinator_key: Option<IdentityId>,
    /// Jobs run confined (Landlock); see [`crate::network::api::Heartbeat::confined`].
    pub confined: bool,
}

impl HeartbeatConfig {
    pub fn new(coordinator: impl Into<String>, port: u16, capacity: u32) -> Self {
        let (identity_dir, shared) = identity::daemon_dir();
        Self {
            coordinator: coordinator.into(),
            advertise: format!(":{port}"),
            compilers: DEFAULT_COMPILERS.iter().map(|s| s.to_string()).collect(),
            capacity,
            lzo: true,
            interval: Duration::from_secs(600),
            identity_dir,
            membership_file: shared.as_ref().map(|d| d.join(identity::MEMBERSHIP_FILE)),
            reports_dir: shared,
            source_ip: None,
            coordinator_key: None,
            confined: true,
        }
    }
}

/// What the last heartbeats achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatStatus {
    pub last_ok_unix: Option<u64>,
    pub last_error: Option<String>,
    pub blacklisted: bool,
    /// The address the coordinator hands out for this daemon.
    pub advertised: Option<String>,
    pub consecutive_failures: u32,
    /// Heartbeats acknowledged since start.
    pub acknowledged: u64,
}

/// A running heartbeat task. Dropping the handle stops it.
pub struct HeartbeatHandle {
    id: IdentityId,
    status: watch::Receiver<HeartbeatStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl HeartbeatHandle {
    pub fn id(&self) -> IdentityId {
        self.id
    }

    pub fn status(&self) -> HeartbeatStatus {
        self.status.borrow().clone()
    }

    /// Wait until the status changes (e.g. the first heartbeat was answered).
    pub async fn changed(&mut self) -> HeartbeatStatus {
        let _ = self.status.changed().await;
        self.status.borrow().clone()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for HeartbeatHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_advertise(s: &str) -> Result<(Option<String>, u16), NetworkError> {
    let bad = |why: &str| {
        NetworkError::Usage(format!(
            "advertised address {s:?}: {why}; use HOST:PORT or :PORT"
        ))
    };
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok((None, port));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| bad("IPv6 needs [ADDR]:PORT"))?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or_else(|| bad("no port"))?
    };
    let port: u16 = port.parse().map_err(|_| bad("port is not a number"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    if host.is_empty() {
        return Ok((None, port));
    }
    crate::network::api::check_host_name(host).map_err(|e| bad(&e.to_string()))?;
    Ok((Some(host.to_string()), port))
}

/// Probe the configured compilers (cached per binary in `identity_dir`) and
/// describe this host. Blocking: runs the compilers on first use.
pub fn build_heartbeat(cfg: &HeartbeatConfig) -> Result<Heartbeat, NetworkError> {
    let (host, port) = parse_advertise(&cfg.advertise)?;
    let skip: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .into_iter()
        .collect();
    let cache = cfg.identity_dir.join(probe::FINGERPRINT_CACHE_FILE);
    let mut toolchains: Vec<Toolchain> = Vec::new();
    let mut problems = Vec::new();
    for name in &cfg.compilers {
        let Some(path) = probe::resolve_compiler(name, None, &skip) else {
            problems.push(format!("{name}: not found in PATH"));
            continue;
        };
        match probe::probe_cached(name, &path, &cache) {
            Ok(t) => toolchains.push(t),
            Err(e) => problems.push(e.to_string()),
        }
        if toolchains.len() >= crate::network::api::MAX_TOOLCHAINS {
            break;
        }
    }
    if toolchains.is_empty() {
        return Err(NetworkError::Usage(format!(
            "no compiler to advertise ({}); install one or name it with --allow-compiler",
            problems.join("; ")
        )));
    }
    for p in problems {
        tracing::debug!("not advertised: {p}");
    }
    let facts = HostFacts::of_this_machine();
    Ok(Heartbeat {
        host,
        port,
        toolchains,
        libc: facts.libc,
        arch: facts.arch,
        tz_offset_secs: facts.tz_offset_secs,
        capacity: cfg.capacity.clamp(1, crate::network::api::MAX_CAPACITY),
        lzo: cfg.lzo,
        tickets: true,
        software: format!("dportage {}", env!("CARGO_PKG_VERSION")),
        confined: cfg.confined,
    })
}

/// Write the membership token where people can read it.
fn publish_token(identity: &Identity, cfg: &HeartbeatConfig) {
    let token = identity.membership_token(unix_now());
    let mut paths = vec![cfg.identity_dir.join(identity::MEMBERSHIP_FILE)];
    paths.extend(cfg.membership_file.clone());
    for p in paths {
        if let Err(e) = identity::write_membership_token(&p, &token) {
            tracing::warn!("cannot write the membership token {}: {e}", p.display());
        }
    }
}

/// Send one heartbeat now.
pub async fn heartbeat_once(
    client: &CoordinatorClient,
    hb: &Heartbeat,
) -> Result<HeartbeatAck, NetworkError> {
    client.heartbeat(hb).await
}

fn start(cfg: &HeartbeatConfig) -> Result<(Arc<Identity>, CoordinatorClient), NetworkError> {
    let identity = Arc::new(Identity::load_or_create(&cfg.identity_dir)?);
    let mut client = CoordinatorClient::new(&cfg.coordinator, identity.clone())?;
    if let Some(ip) = cfg.source_ip {
        client = client.with_source_ip(ip);
    }
    client = match cfg.coordinator_key {
        Some(key) => client.expecting_key(key, KeySource::Given),
        None => client.expecting_pinned_key(&cfg.identity_dir)?,
    };
    parse_advertise(&cfg.advertise)?;
    Ok((identity, client))
}

/// A heartbeat whose identity is already loaded: a daemon started as root
/// prepares it before dropping privileges, since the key is readable only by
/// its owner.
pub struct PreparedHeartbeat {
    cfg: HeartbeatConfig,
    identity: Arc<Identity>,
    client: CoordinatorClient,
    gate: Arc<TicketGate>,
    cache: Option<Arc<Shared>>,
}

impl PreparedHeartbeat {
    /// Share the result cache with the daemon's connections: publish the
    /// probed toolchains into `shared.cache` (which jobs can be keyed) and
    /// send its claims after each acknowledged heartbeat.
    pub fn with_cache(mut self, shared: Arc<Shared>) -> Self {
        self.cache = Some(shared);
        self
    }

    /// What the daemon checks its network clients' tickets with; the
    /// heartbeat loop pins the coordinator's key into it.
    pub fn ticket_gate(&self) -> Arc<TicketGate> {
        Arc::clone(&self.gate)
    }
}

/// The gate for this daemon, with the coordinator key an earlier run pinned.
fn ticket_gate(cfg: &HeartbeatConfig, identity: &Identity, url: &str) -> Arc<TicketGate> {
    if let Some(key) = cfg.coordinator_key {
        return Arc::new(TicketGate::new(identity.id(), Some(key)));
    }
    let pinned = match host_list::pinned_key(&cfg.identity_dir, url) {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!("{e}; the coordinator's key will be learned from its next answer");
            None
        }
    };
    Arc::new(TicketGate::new(identity.id(), pinned))
}

/// Take the coordinator's key from a heartbeat answer: pinned in memory and
/// (so a restart does not trust a new one) in `DPORTAGE_DIR`.
fn learn_coordinator_key(gate: &TicketGate, key: IdentityId, cfg: &HeartbeatConfig, url: &str) {
    match gate.learn(key) {
        Learned::Known => {}
        Learned::New => {
            tracing::info!(
                "serving members of {url} that present its tickets (coordinator key {})",
                key.short()
            );
            if let Err(e) = host_list::pin(&cfg.identity_dir, url, &key) {
                tracing::warn!("cannot remember the coordinator's key: {e}");
            }
        }
        Learned::Conflict => tracing::error!(
            "coordinator {url} now answers with key {key}, not the pinned {}: its tickets are              refused (if its operator really changed keys, delete its line from {} in {})",
            gate.coordinator_key().map(|k| k.to_string()).unwrap_or_default(),
            host_list::PINS_FILE,
            cfg.identity_dir.display()
        ),
    }
}

/// Load (or create) the identity and check the configuration, without
/// starting anything.
pub fn prepare_heartbeat(cfg: HeartbeatConfig) -> Result<PreparedHeartbeat, NetworkError> {
    let (identity, client) = start(&cfg)?;
    let gate = ticket_gate(&cfg, &identity, &client.url().to_string());
    Ok(PreparedHeartbeat {
        cfg,
        identity,
        client,
        gate,
        cache: None,
    })
}

/// Load (or create) the identity, publish the membership token, and start
/// heartbeating on the current tokio runtime.
pub fn spawn_heartbeat(cfg: HeartbeatConfig) -> Result<HeartbeatHandle, NetworkError> {
    Ok(spawn_prepared_heartbeat(prepare_heartbeat(cfg)?))
}

/// Start a prepared heartbeat on the current tokio runtime.
pub fn spawn_prepared_heartbeat(prepared: PreparedHeartbeat) -> HeartbeatHandle {
    let PreparedHeartbeat {
        cfg,
        identity,
        client,
        gate,
        cache,
    } = prepared;
    let id = identity.id();
    let (tx, rx) = watch::channel(HeartbeatStatus::default());
    let task = tokio::spawn(heartbeat_loop(cfg, identity, client, gate, cache, tx));
    HeartbeatHandle {
        id,
        status: rx,
        task,
    }
}

/// The daemon's entry point for `dportage serve --coordinator URL`: heartbeat
/// until `shutdown` completes. Errors only on a configuration that can never
/// work (bad URL, bad `--advertise`, unreadable identity); a coordinator that
/// is down or refuses is retried with backoff and logged.
///
/// ```no_run
/// # async fn daemon(url: String, port: u16, jobs: u32) {
/// let cfg = dportage::server::heartbeat_agent::HeartbeatConfig::new(url, port, jobs);
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// tokio::spawn(dportage::server::heartbeat_agent::run(cfg, async move {
///     let _ = stopped.await;
/// }));
/// # drop(stop);
/// # }
/// ```
pub async fn run(
    cfg: HeartbeatConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NetworkError> {
    let (identity, client) = start(&cfg)?;
    let gate = ticket_gate(&cfg, &identity, &client.url().to_string());
    let (tx, _rx) = watch::channel(HeartbeatStatus::default());
    tokio::select! {
        _ = heartbeat_loop(cfg, identity, client, gate, None, tx) => {}
        _ = shutdown => {}
    }
    Ok(())
}

async fn heartbeat_loop(
    cfg: HeartbeatConfig,
    identity: Arc<Identity>,
    client: CoordinatorClient,
    gate: Arc<TicketGate>,
    cache: Option<Arc<Shared>>,
    tx: watch::Sender<HeartbeatStatus>,
) {
    let mut status = HeartbeatStatus::default();
    let mut token_written = 0u64;
    loop {
        let now = unix_now();
        if now.saturating_sub(token_written) >= 24 * 3600 {
            publish_token(&identity, &cfg);
            token_written = now;
        }
        let cfg2 = cfg.clone();
        let built = tokio::task::spawn_blocking(move || build_heartbeat(&cfg2))
            .await
            .unwrap_or_else(|e| {
                Err(NetworkError::Usage(format!(
                    "probing compilers panicked: {e}"
                )))
            });
        let next = match built {
            Err(e) => {
                tracing::error!("heartbeat not sent: {e}");
                status.last_error = Some(e.to_string());
                status.consecutive_failures += 1;
                cfg.interval.min(Duration::from_secs(60))
            }
            Ok(hb) => match publish_then_send(&client, &hb, cache.as_deref()).await {
                Ok(ack) => {
                    // The key the client verified (its proof over a fresh
                    // challenge, checked against the pin), not the answer's
                    // word: tickets are checked against it.
                    if let Ok(key) = client.coordinator_key().await {
                        if ack.coordinator.is_some_and(|k| k != key) {
                            tracing::warn!(
                                "coordinator {} answered naming key {:?}, but proved key {key}; using the proven one",
                                client.url(),
                                ack.coordinator
                            );
                        }
                        learn_coordinator_key(&gate, key, &cfg, &client.url().to_string());
                    }
                    if status.consecutive_failures > 0 || status.acknowledged == 0 {
                        tracing::info!(
                            "coordinator {} lists this daemon ({}) at {}; {} hosts in the pool",
                            client.url(),
                            ack.id.short(),
                            ack.advertised,
                            ack.pool_size
                        );
                    }
                    status.last_ok_unix = Some(unix_now());
                    status.last_error = None;
                    status.blacklisted = false;
                    status.advertised = Some(ack.advertised);
                    status.consecutive_failures = 0;
                    status.acknowledged += 1;
                    if let Some(dir) = &cfg.reports_dir {
                        send_pending_reports(dir, &client.url().to_string()).await;
                    }
                    if let Some(shared) = &cache {
                        send_claims(&client, shared).await;
                    }
                    cfg.interval
                        .min(Duration::from_secs(ack.heartbeat_within_secs.max(1)))
                }
                Err(e) => {
                    let blacklisted =
                        matches!(&e, NetworkError::Api { code, .. } if code == "blacklisted");
                    if blacklisted {
                        tracing::error!("the coordinator refuses this daemon: {e}");
                    } else {
                        tracing::warn!("heartbeat failed: {e}");
                    }
                    status.blacklisted = blacklisted;
                    status.last_error = Some(e.to_string());
                    status.consecutive_failures += 1;
                    if blacklisted {
                        cfg.interval
                    } else {
                        // 2, 4, 8 … s, capped: a restarted coordinator sees us soon.
                        let backoff =
                            Duration::from_secs(1u64 << status.consecutive_failures.min(6));
                        cfg.interval.min(backoff)
                    }
                }
            },
        };
        let _ = tx.send(status.clone());
        // Heartbeats are minutes apart; claims should not wait that long
        // (a member building the same package soon after should hit).
        let deadline = tokio::time::Instant::now() + next;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(CLAIMS_FLUSH)).await;
            let listed = status.consecutive_failures == 0 && status.acknowledged > 0;
            if let Some(shared) = cache.as_deref().filter(|_| listed) {
                if shared.cache.queued_claims() > 0 {
                    send_claims(&client, shared).await;
                }
            }
        }
    }
}

/// How often queued cache claims go out between heartbeats.
const CLAIMS_FLUSH: Duration = Duration::from_secs(15);

/// Send the pending mismatch reports of the member state directory `dir`
/// (signed by that directory's member identity) through `dportage
/// __send-reports`: the compile client's own code, in a process of its own,
/// bounded in time. Nothing pending costs one short-lived process per
/// heartbeat; a failure waits for the next heartbeat.
async fn send_pending_reports(dir: &std::path::Path, coordinator: &str) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // Named `dportage` whatever the binary is installed as (`distccd`).
    let child = tokio::process::Command::new(exe)
        .arg0("dportage")
        .arg(SEND_REPORTS_COMMAND)
        .arg("--coordinator")
        .arg(coordinator)
        .env("DPORTAGE_DIR", dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(SEND_REPORTS_TIMEOUT, child).await {
        Ok(Ok(out)) if out.status.success() => {}
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr);
            let text: String = text.chars().filter(|c| !c.is_control()).take(400).collect();
            tracing::warn!(
                "sending the pending reports of {} failed ({}): {text}; trying again at the next heartbeat",
                dir.display(),
                out.status
            );
        }
        Ok(Err(e)) => tracing::warn!("cannot run {SEND_REPORTS_COMMAND}: {e}"),
        Err(_) => tracing::warn!(
            "sending the pending reports of {} took over {} s; trying again at the next heartbeat",
            dir.display(),
            SEND_REPORTS_TIMEOUT.as_secs()
        ),
    }
}

/// Tell the connections which toolchains this host runs (the claims'
/// keys need their fingerprints), then heartbeat.
async fn publish_then_send(
    client: &CoordinatorClient,
    hb: &Heartbeat,
    shared: Option<&Shared>,
) -> Result<HeartbeatAck, NetworkError> {
    if let Some(shared) = shared {
        shared.cache.set_toolchains(
            hb.toolchains
                .iter()
                .map(|t| (t.name.clone(), t.id.clone()))
                .collect(),
        );
    }
    client.heartbeat(hb).await
}

/// Send the queued result-cache claims, [`MAX_CLAIMS`] a request, signed
/// like the heartbeat: a whole queue goes out at one heartbeat, so claims
/// wait at most one interval. Stops at the first failure.
async fn send_claims(client: &CoordinatorClient, shared: &Shared) {
    let batches = super::result_cache::MAX_QUEUED_CLAIMS.div_ceil(MAX_CLAIMS);
    for _ in 0..batches {
        if !send_claim_batch(client, shared).await {
            break;
        }
    }
}

/// Send up to [`MAX_CLAIMS`] claims; whether a full batch was taken (more
/// may wait). Claims not acknowledged go back to the queue (within its
/// bound) for the next heartbeat; a coordinator without the route (404, an
/// older one) is not worth more than a debug line.
async fn send_claim_batch(client: &CoordinatorClient, shared: &Shared) -> bool {
    let cache = &shared.cache;
    let claims = cache.take_claims(MAX_CLAIMS);
    if claims.is_empty() {
        return false;
    }
    let n = claims.len();
    let body = CacheClaims { claims };
    let bytes = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("cannot encode {n} cache claims: {e}");
            cache.put_back(body.claims);
            return false;
        }
    };
    match client
        .call::<CacheClaimsAck>("POST", CLAIMS_PATH, bytes)
        .await
    {
        Ok(ack) => {
            shared.stats.cache_claims_sent(n);
            tracing::debug!(
                "coordinator took {} of {n} cache claims ({} new entries)",
                ack.accepted,
                ack.entries_made
            );
            n == MAX_CLAIMS
        }
        Err(e) => {
            let missing = matches!(&e, NetworkError::Api { status: 404, .. });
            if missing {
                tracing::debug!("the coordinator takes no cache claims yet: {e}");
            } else {
                tracing::warn!(
                    "sending {n} cache claims failed: {e}; trying again at the next heartbeat"
                );
            }
            cache.put_back(body.claims);
            false
        }
    }
}

/// The hidden subcommand that sends a state directory's pending reports.
pub const SEND_REPORTS_COMMAND: &str = "__send-reports";
const SEND_REPORTS_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_forms() {
        assert_eq!(parse_advertise("3632").unwrap(), (None, 3632));
        assert_eq!(parse_advertise(":3632").unwrap(), (None, 3632));
        assert_eq!(
            parse_advertise("build1.lan:4000").unwrap(),
            (Some("build1.lan".into()), 4000)
        );
        assert_eq!(
            parse_advertise("[2001:db8::1]:3632").unwrap(),
            (Some("2001:db8::1".into()), 3632)
        );
        assert!(parse_advertise("host").is_err());
        assert!(parse_advertise("host:0").is_err());
        assert!(parse_advertise("ba d:1").is_err());
    }
}
