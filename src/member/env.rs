//! `dportage` with no command (print shell lines to `eval`, like `ssh-agent`)
//! and `dportage CMD ARGS…` (run CMD in that environment).
//!
//! Steps: load this installation's identity, fingerprint the local compilers,
//! ask the coordinator for compatible hosts (presenting a daemon's membership
//! token if the coordinator says we are not a member yet), measure TCP connect
//! time to each candidate (bounded, concurrent, remembered in
//! `$DPORTAGE_DIR/latency.json`), rank by time-zone distance then speed, and
//! keep up to 10 hosts arranged so neighbours differ in owner and network.
//!
//! Everything the coordinator sends is treated as hostile: host names are
//! re-validated and every value printed for `eval` is quoted.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::exitcode;
use crate::network::api::{
    check_host_name, HostEntry, HostsRequest, HostsResponse, SignedHostList,
};
use crate::network::caller::{CoordinatorClient, KeySource};
use crate::network::clock::unix_now;
use crate::network::host_list;
use crate::network::identity::IdentityId;
use crate::network::identity::{self, Identity};
use crate::network::selection::arrange;

use super::masquerade;
use crate::network::NetworkError;
use crate::probe;

/// The share of jobs this machine compiles too, to check hosts that agreed
/// (`DPORTAGE_SPOTCHECK`). Among strangers two colluding hosts can agree on a
/// wrong object; a spot check is what catches them (and the disagreement is
/// reported and adjudicated), at the price of one local compile in fifty.
pub const NETWORK_SPOT_CHECK: &str = "0.02";

/// Hosts put in `DISTCC_HOSTS` at most.
pub const MAX_LISTED: usize = 10;
/// Longest we wait for one candidate's TCP handshake.
const CONNECT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Csh,
    Fish,
}

impl Shell {
    fn parse(s: &str) -> Result<Self, UsageError> {
        match s {
            "sh" | "bash" | "zsh" | "dash" | "ksh" => Ok(Shell::Sh),
            "csh" | "tcsh" => Ok(Shell::Csh),
            "fish" => Ok(Shell::Fish),
            _ => Err(UsageError::UnknownShell(s.to_owned())),
        }
    }
}

/// A command line `dportage` cannot use (exit code `BAD_ARGUMENTS`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown shell {0:?}: use sh, csh or fish")]
    UnknownShell(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("--max-hosts {0:?}: use 1 to 64")]
    MaxHosts(String),
    #[error("unknown option {0:?}; see `dportage --help`")]
    UnknownOption(String),
    #[error("--coordinator-key {0:?}: give the coordinator's public key, 64 hex digits (its operator has it in coordinator-key/identity.pub)")]
    CoordinatorKey(String),
}

/// Parsed command line of the environment printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOptions {
    pub coordinator: Option<String>,
    /// The key the coordinator must have (instead of trust on first use).
    pub coordinator_key: Option<IdentityId>,
    pub shell: Shell,
    /// Compilers to match; empty = `$CC` (or `cc`) and `$CXX` (or `c++`).
    pub compilers: Vec<String>,
    pub max_hosts: usize,
    /// `CMD ARGS…` to run; empty = print.
    pub command: Vec<OsString>,
    /// `--help`/`-h` before CMD: print the help and nothing else.
    pub help: bool,
    /// `--no-cache`: print `DPORTAGE_CACHE=0` (no result cache for CMD).
    pub no_cache: bool,
}

pub fn parse_args(args: &[OsString]) -> Result<EnvOptions, UsageError> {
    let mut o = EnvOptions {
        coordinator: None,
        coordinator_key: None,
        shell: Shell::Sh,
        compilers: Vec::new(),
        max_hosts: MAX_LISTED,
        command: Vec::new(),
        help: false,
        no_cache: false,
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        let mut value = |name: &'static str| -> Result<String, UsageError> {
            if let Some(v) = a.strip_prefix(&format!("{name}=")) {
                return Ok(v.to_string());
            }
            i += 1;
            args.get(i)
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or(UsageError::MissingValue(name))
        };
        if a == "--" {
            o.command = args[i + 1..].to_vec();
            break;
        } else if a == "--coordinator" || a.starts_with("--coordinator=") {
            o.coordinator = Some(value("--coordinator")?);
        } else if a == "--coordinator-key" || a.starts_with("--coordinator-key=") {
            let v = value("--coordinator-key")?;
            o.coordinator_key = Some(v.parse().map_err(|_| UsageError::CoordinatorKey(v))?);
        } else if a == "--shell" || a.starts_with("--shell=") {
            o.shell = Shell::parse(&value("--shell")?)?;
        } else if a == "--compiler" || a.starts_with("--compiler=") {
            o.compilers.push(value("--compiler")?);
        } else if a == "--max-hosts" || a.starts_with("--max-hosts=") {
            let v = value("--max-hosts")?;
            o.max_hosts = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or(UsageError::MaxHosts(v))?;
        } else if a == "--no-cache" {
            o.no_cache = true;
        } else if a == "-s" {
            o.shell = Shell::Sh;
        } else if a == "-c" {
            o.shell = Shell::Csh;
        } else if a == "--help" || a == "-h" {
            o.help = true;
            return Ok(o);
        } else if a.starts_with('-') {
            return Err(UsageError::UnknownOption(a));
        } else {
            o.command = args[i..].to_vec();
            break;
        }
        i += 1;
    }
    Ok(o)
}

/// The variables to set, in order.
pub fn environment(
    hosts: &[HostEntry],
    redundancy: u32,
    coordinator: &str,
    host_list: &Path,
) -> Vec<(String, String)> {
    let list: Vec<String> = hosts
        .iter()
        .map(|h| {
            // `,verify`: these hosts vote only in verified dispatch;
            // distcc 3.4 rejects the list and compiles locally.
            format!(
                "{}:{}/{}{},verify",
                h.host,
                h.port,
                h.capacity,
                if h.lzo { ",lzo" } else { "" }
            )
        })
        .collect();
    let slots: u64 = hosts.iter().map(|h| u64::from(h.capacity)).sum();
    let jobs = (slots / u64::from(redundancy.max(1))).clamp(1, 512);
    vec![
        ("DISTCC_HOSTS".into(), list.join(" ")),
        ("DPORTAGE_REDUNDANCY".into(), redundancy.to_string()),
        ("DPORTAGE_SPOTCHECK".into(), NETWORK_SPOT_CHECK.into()),
        ("DPORTAGE_COORDINATOR".into(), coordinator.to_string()),
        (
            "DPORTAGE_HOST_LIST".into(),
            host_list.to_string_lossy().into_owned(),
        ),
        // Gentoo's default FEATURES include network-sandbox, which runs the
        // compile phase with loopback only: no job would leave the machine.
        ("FEATURES".into(), "distcc -network-sandbox".into()),
        ("MAKEOPTS".into(), format!("-j{jobs}")),
    ]
}

fn quote_sh(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

fn quote_csh(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''").replace('!', "\\!"))
}

fn quote_fish(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Shell lines that set `vars` when `eval`ed.
pub fn render(shell: Shell, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in vars {
        match shell {
            Shell::Sh => out.push_str(&format!("{k}={}; export {k};\n", quote_sh(v))),
            Shell::Csh => out.push_str(&format!("setenv {k} {};\n", quote_csh(v))),
            Shell::Fish => out.push_str(&format!("set -gx {k} {};\n", quote_fish(v))),
        }
    }
    out
}

/// Connect times remembered per `HOST:PORT`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LatencyMemory {
    hosts: BTreeMap<String, Latency>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Latency {
    /// Smoothed connect time in ms; `None` = the last attempt failed.
    ms: Option<f64>,
    at: u64,
}

impl LatencyMemory {
    fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .filter(|b| b.len() < 4 << 20)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&mut self, path: &Path) {
        // Keep the most recent 2000 entries.
        if self.hosts.len() > 2000 {
            let mut by_age: Vec<(u64, String)> =
                self.hosts.iter().map(|(k, v)| (v.at, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.iter().take(self.hosts.len() - 2000) {
                self.hosts.remove(k);
            }
        }
        if let Ok(bytes) = serde_json::to_vec(self) {
            let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
            if std::fs::write(&tmp, bytes).is_ok() {
                crate::shared_dir::share_with_group(
                    &tmp,
                    crate::shared_dir::GroupAccess::ReadWrite,
                );
                if std::fs::rename(&tmp, path).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
        }
    }

    fn update(&mut self, key: String, measured: Option<f64>) {
        let prev = self.hosts.get(&key).and_then(|l| l.ms);
        let ms = match (prev, measured) {
            (Some(p), Some(m)) => Some(0.6 * p + 0.4 * m),
            (_, m) => m,
        };
        self.hosts.insert(key, Latency { ms, at: unix_now() });
    }
}

/// TCP connect time to every candidate, concurrently, each bounded.
async fn measure(hosts: &[HostEntry]) -> Vec<Option<f64>> {
    let probes = hosts.iter().map(|h| {
        let target = format!("{}:{}", h.host, h.port);
        async move {
            let start = Instant::now();
            let addrs: Vec<SocketAddr> =
                match tokio::time::timeout(CONNECT_PROBE_TIMEOUT, tokio::net::lookup_host(target))
                    .await
                {
                    Ok(Ok(a)) => a.collect(),
                    _ => return None,
                };
            let addr = *addrs.first()?;
            match tokio::time::timeout(CONNECT_PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(_stream)) => Some(start.elapsed().as_secs_f64() * 1000.0),
                _ => None,
            }
        }
    });
    futures_join_all(probes).await
}

/// Minimal join_all (no futures crate): spawn-free, polls in order.
async fn futures_join_all<F: std::future::Future<Output = T>, T>(
    futs: impl Iterator<Item = F>,
) -> Vec<T> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<T>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Rank candidates: time-zone distance, then measured speed; drop the
/// unreachable and anything we could not safely put in `DISTCC_HOSTS`; arrange
/// so neighbours differ in owner and network.
pub fn rank(
    candidates: Vec<HostEntry>,
    latencies: &[Option<f64>],
    my_tz: i32,
    limit: usize,
) -> Vec<HostEntry> {
    let mut scored: Vec<(u32, f64, HostEntry)> = candidates
        .into_iter()
        .zip(latencies.iter().copied().chain(std::iter::repeat(None)))
        .filter_map(|(h, ms)| {
            let ms = ms?;
            // distcc's host grammar cannot carry IPv6 literals unambiguously.
            if h.host.contains(':')
                || check_host_name(&h.host).is_err()
                || h.port == 0
                || h.capacity == 0
            {
                return None;
            }
            // The coordinator may send any i32: no subtraction to overflow.
            Some((h.tz_offset_secs.abs_diff(my_tz), ms, h))
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let ordered: Vec<HostEntry> = scored
        .into_iter()
        .map(|(_, _, mut h)| {
            h.capacity = h.capacity.min(crate::network::api::MAX_CAPACITY);
            h
        })
        .collect();
    arrange(ordered, |h| (h.owner, h.network.clone()), limit)
}

/// Why the environment could not be produced, with the exit code.
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

fn network_failure(e: NetworkError) -> Failure {
    let code = match &e {
        NetworkError::Unreachable { .. } => exitcode::CONNECT_FAILED,
        NetworkError::Api { code, .. } if code == "not_member" || code == "blacklisted" => {
            exitcode::ACCESS_DENIED
        }
        NetworkError::CoordinatorKeyMismatch { .. } => exitcode::ACCESS_DENIED,
        NetworkError::BadUrl { .. } | NetworkError::Usage(_) => exitcode::BAD_ARGUMENTS,
        _ => exitcode::DISTCC_FAILED,
    };
    Failure::new(code, e.to_string())
}

fn local_compilers(opts: &EnvOptions) -> Result<Vec<(String, PathBuf)>, Failure> {
    let skip: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .into_iter()
        .collect();
    let last_word = |v: Option<OsString>| {
        v.and_then(|s| {
            s.to_string_lossy()
                .split_whitespace()
                .last()
                .map(str::to_string)
        })
        .filter(|s| !s.is_empty())
    };
    let mut out = Vec::new();
    if opts.compilers.is_empty() {
        let cc = last_word(std::env::var_os("CC")).unwrap_or_else(|| "cc".into());
        let path = probe::resolve_compiler(&cc, None, &skip).ok_or_else(|| {
            Failure::new(
                exitcode::COMPILER_MISSING,
                format!("local compiler {cc:?} not found in PATH; install it or name one with --compiler"),
            )
        })?;
        out.push((cc, path));
        let cxx = last_word(std::env::var_os("CXX")).unwrap_or_else(|| "c++".into());
        if let Some(path) = probe::resolve_compiler(&cxx, None, &skip) {
            out.push((cxx, path));
        }
    } else {
        for name in &opts.compilers {
            let path = probe::resolve_compiler(name, None, &skip).ok_or_else(|| {
                Failure::new(
                    exitcode::COMPILER_MISSING,
                    format!("compiler {name:?} (--compiler) not found in PATH"),
                )
            })?;
            out.push((name.clone(), path));
        }
    }
    Ok(out)
}

async fn obtain(opts: &EnvOptions, coordinator: &str, dir: &Path) -> Result<Obtained, Failure> {
    let identity = Arc::new(Identity::load_or_create(dir).map_err(network_failure)?);
    let me = identity.id();
    let client = CoordinatorClient::new(coordinator, identity).map_err(network_failure)?;
    // The key the coordinator must have: given, or pinned at first contact.
    let client = match opts.coordinator_key {
        Some(key) => client.expecting_key(key, KeySource::Given),
        None => client.expecting_pinned_key(dir).map_err(network_failure)?,
    };
    let cache = dir.join(probe::FINGERPRINT_CACHE_FILE);
    let mut fingerprints = Vec::new();
    for (name, path) in local_compilers(opts)? {
        let tc = probe::probe_cached(&name, &path, &cache).map_err(|e| {
            Failure::new(
                exitcode::COMPILER_MISSING,
                format!("fingerprinting {name}: {e}"),
            )
        })?;
        tracing::debug!("local {name}: {} ({})", tc.version, tc.id);
        fingerprints.push(tc.id);
    }
    fingerprints.dedup();
    let my_tz = probe::timezone_offset_secs();
    let request = HostsRequest {
        fingerprints,
        tz_offset_secs: my_tz,
        max: Some(32),
        // Hosts that run jobs unconfined are used only on request.
        include_unconfined: std::env::var("DPORTAGE_INCLUDE_UNCONFINED").is_ok_and(|v| v == "1"),
    };
    let signed = match client.hosts_signed(&request).await {
        Err(NetworkError::Api { code, message, .. }) if code == "not_member" => {
            // Present the membership tokens we can read, then ask again.
            let mut why = Vec::new();
            let mut linked = false;
            for (path, token) in identity::read_membership_tokens(dir) {
                if token.daemon == me {
                    why.push(format!(
                        "{}: that is this identity's own daemon token",
                        path.display()
                    ));
                    continue;
                }
                match client.link(&token).await {
                    Ok(r) if r.member => {
                        tracing::info!(
                            "linked to daemon {} via {}",
                            r.daemon.short(),
                            path.display()
                        );
                        linked = true;
                        break;
                    }
                    Ok(r) => {
                        // Live but not yet proven (no challenge passed at its
                        // advertised address), or not live at all?
                        let unproven = client.whoami().await.ok().is_some_and(|w| {
                            w.daemons
                                .iter()
                                .any(|d| d.id == r.daemon && d.live && !d.serves)
                        });
                        let state = if unproven {
                            "it heartbeats but has not passed a challenge job at its advertised \
                             address yet (the coordinator must be able to send it compile jobs there)"
                        } else {
                            "it is not live in the pool"
                        };
                        why.push(format!(
                            "{}: linked to daemon {}, but {state}",
                            path.display(),
                            r.daemon.short()
                        ))
                    }
                    Err(e) => why.push(format!("{}: {e}", path.display())),
                }
            }
            if !linked {
                let tokens = if why.is_empty() {
                    format!(
                        "no daemon membership token was readable (looked in {})",
                        identity::membership_token_paths(dir)
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    why.join("; ")
                };
                return Err(Failure::new(
                    exitcode::ACCESS_DENIED,
                    format!(
                        "not a member of the pool at {}: {message}\n  membership tokens: {tokens}\n  \
                         To join, run a daemon that heartbeats there (`dportage serve --coordinator {}`), \
                         with DPORTAGE_DIR={} or with its membership.json readable by you.",
                        client.url(),
                        client.url(),
                        dir.display()
                    ),
                ));
            }
            client
                .hosts_signed(&request)
                .await
                .map_err(network_failure)?
        }
        other => other.map_err(network_failure)?,
    };
    let url = client.url().to_string();
    // The key our requests were signed for (already checked against the pin
    // or --coordinator-key): the list must be signed by it too.
    let presented = client.coordinator_key().await.map_err(network_failure)?;
    let how = if opts.coordinator_key.is_some() {
        "as given with --coordinator-key"
    } else {
        "first contact"
    };
    let response = open_signed_list(&signed, dir, &url, &me, (presented, how))?;
    let list_path = host_list::save(dir, &signed).map_err(|e| {
        Failure::new(
            exitcode::IO_ERROR,
            format!("saving the signed host list: {e}"),
        )
    })?;
    if response.hosts.is_empty() {
        return Err(Failure::new(
            exitcode::NO_HOSTS,
            format!(
                "the pool at {} has no live hosts with your toolchain; \
                 try again later or compile locally",
                client.url()
            ),
        ));
    }
    let latencies = measure(&response.hosts).await;
    let mem_path = dir.join("latency.json");
    let mut memory = LatencyMemory::load(&mem_path);
    let mut smoothed = Vec::with_capacity(latencies.len());
    for (h, ms) in response.hosts.iter().zip(&latencies) {
        let key = format!("{}:{}", h.host, h.port);
        memory.update(key.clone(), *ms);
        smoothed.push(ms.and(memory.hosts.get(&key).and_then(|l| l.ms)));
    }
    memory.save(&mem_path);
    let n = response.hosts.len();
    let hosts = rank(response.hosts, &smoothed, my_tz, opts.max_hosts);
    if hosts.is_empty() {
        return Err(Failure::new(
            exitcode::NO_HOSTS,
            format!("none of the {n} hosts the coordinator offered accepted a TCP connection within {} ms", CONNECT_PROBE_TIMEOUT.as_millis()),
        ));
    }
    Ok(Obtained {
        hosts,
        redundancy: response.redundancy,
        list_path,
    })
}

/// What the coordinator gave this member, checked.
struct Obtained {
    hosts: Vec<HostEntry>,
    redundancy: u32,
    /// The signed list on disk (`DPORTAGE_HOST_LIST`).
    list_path: PathBuf,
}

/// Check a signed list: the coordinator's key is pinned at first contact and
/// must match from then on; the list must be this member's and fresh.
fn open_signed_list(
    signed: &SignedHostList,
    dir: &Path,
    url: &str,
    me: &IdentityId,
    (presented, how): (IdentityId, &str),
) -> Result<HostsResponse, Failure> {
    let refused = |why: String| {
        Failure::new(
            exitcode::ACCESS_DENIED,
            format!("refusing the host list from {url}: {why}"),
        )
    };
    let pinned = host_list::pinned_key(dir, url).map_err(|e| refused(e.to_string()))?;
    // Without a pin, the key the coordinator presented (given up front, or
    // seen at first contact) stands in for it, and becomes it.
    let response = signed
        .open(Some(&pinned.unwrap_or(presented)))
        .map_err(|e| refused(e.to_string()))?;
    response
        .check_for(me, unix_now())
        .map_err(|e| refused(e.to_string()))?;
    if pinned.is_none() {
        host_list::pin(dir, url, &signed.coordinator).map_err(|e| refused(e.to_string()))?;
        tracing::warn!(
            "pinned coordinator {url}'s key {} ({how}; see {} in {})",
            signed.coordinator,
            host_list::PINS_FILE,
            dir.display()
        );
    }
    Ok(response)
}

/// Entry point behind `dportage [OPTIONS] [CMD ARGS…]`.
pub fn env_main(args: Vec<OsString>) -> i32 {
    crate::logging::init(std::env::var_os("DPORTAGE_VERBOSE").is_some(), "warn");
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("dportage: {e}");
            return exitcode::BAD_ARGUMENTS;
        }
    };
    if opts.help {
        // `member::env_main` printed the help (from `member::cli`).
        return 0;
    }
    let Some(coordinator) = opts
        .coordinator
        .clone()
        .or_else(|| std::env::var("DPORTAGE_COORDINATOR").ok())
        .filter(|s| !s.trim().is_empty())
    else {
        eprintln!(
            "dportage: no coordinator: pass --coordinator http://HOST:PORT or set DPORTAGE_COORDINATOR \
             (run `dportage --help` for the commands)"
        );
        return exitcode::BAD_ARGUMENTS;
    };
    let dir = identity::dportage_dir();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .unwrap_or_else(|| PathBuf::from("dportage"));
    for portage in masquerade::portage_distcc_dirs() {
        let unverifying = masquerade::unverifying_entries(&portage, &exe);
        if !unverifying.is_empty() {
            eprintln!(
                "dportage: {}",
                masquerade::refusal(&portage, &unverifying, &exe)
            );
            return exitcode::ACCESS_DENIED;
        }
    }
    let rt = match crate::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dportage: {e}");
            return exitcode::DISTCC_FAILED;
        }
    };
    let Obtained {
        hosts,
        redundancy,
        list_path,
    } = match rt.block_on(obtain(&opts, &coordinator, &dir)) {
        Ok(x) => x,
        Err(f) => {
            eprintln!("dportage: {}", f.message);
            return f.code;
        }
    };
    drop(rt);
    let mut vars = environment(&hosts, redundancy, coordinator.trim(), &list_path);
    if opts.no_cache {
        vars.push(("DPORTAGE_CACHE".into(), "0".into()));
    }
    vars.extend(compiler_path(&dir, &exe));
    if opts.command.is_empty() {
        print!("{}", render(opts.shell, &vars));
        eprintln!(
            "dportage: {} host(s) from {} (at most one per owner; one of your own hosts may be among them)",
            hosts.len(),
            coordinator.trim()
        );
        return 0;
    }
    run_command(&opts.command, &vars)
}

/// `PATH` with the masquerade directory first, and `CC`/`CXX` through it
/// where they name a compiler, so builds reach this client whatever they
/// call (see [`masquerade`]). Without a usable directory the build compiles
/// locally, so that is said.
fn compiler_path(dir: &Path, exe: &Path) -> Vec<(String, String)> {
    let masq = dir.join(MASQUERADE_DIR);
    let path = std::env::var_os("PATH");
    let linked = match masquerade::prepare(&masq, exe, path.as_deref().unwrap_or_default()) {
        Ok(names) => names,
        Err(e) => {
            eprintln!(
                "dportage: cannot make the masquerade directory {}: {e}; builds that call \
                 `cc` or `gcc` will compile locally (set DPORTAGE_DIR to a writable directory)",
                masq.display()
            );
            return Vec::new();
        }
    };
    tracing::debug!(
        "masquerade links in {}: {}",
        masq.display(),
        linked.join(" ")
    );
    let mut vars = vec![(
        "PATH".to_string(),
        masquerade::path_with_first(&masq, path.as_deref())
            .to_string_lossy()
            .into_owned(),
    )];
    for var in ["CC", "CXX"] {
        if let Some(value) = std::env::var(var)
            .ok()
            .and_then(|v| masquerade::through_masquerade(&v, &masq, &linked))
        {
            vars.push((var.to_string(), value));
        }
    }
    vars
}

/// The masquerade directory's name under `$DPORTAGE_DIR`.
pub const MASQUERADE_DIR: &str = "bin";

fn run_command(command: &[OsString], vars: &[(String, String)]) -> i32 {
    use std::os::unix::process::CommandExt;
    let Some((prog, rest)) = command.split_first() else {
        return exitcode::BAD_ARGUMENTS;
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    // exec: the exit status (and signals) are CMD's own.
    let err = cmd.exec();
    eprintln!("dportage: cannot run {}: {err}", prog.to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::identity::IdentityId;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn entry(n: u8, owner: u8, net: &str, tz: i32) -> HostEntry {
        HostEntry {
            id: IdentityId([n; 32]),
            host: format!("10.0.{n}.1"),
            port: 3632,
            capacity: 4,
            lzo: true,
            tickets: false,
            tz_offset_secs: tz,
            owner: IdentityId([owner; 32]),
            network: net.into(),
            arch: "x86_64".into(),
            standing: crate::trust::standing::Standing::Probationary,
            confined: true,
        }
    }

    #[test]
    fn a_list_must_be_signed_by_the_key_the_coordinator_presented() {
        let dir = tempfile::tempdir().unwrap();
        let (coordinator, other) = (Identity::generate(), Identity::generate());
        let me = Identity::generate().id();
        let list = serde_json::to_string(&HostsResponse {
            hosts: Vec::new(),
            redundancy: 2,
            member_via: me,
            issued_to: me,
            issued_at: unix_now(),
            tickets: Default::default(),
        })
        .unwrap();
        let url = "http://c:1";
        // Signed by another key than the one our requests were signed for.
        let forged = SignedHostList::sign(&other, list.clone());
        let e = open_signed_list(
            &forged,
            dir.path(),
            url,
            &me,
            (coordinator.id(), "first contact"),
        )
        .unwrap_err();
        assert!(e.message.contains("impersonating"), "{}", e.message);
        assert_eq!(
            host_list::pinned_key(dir.path(), url).unwrap(),
            None,
            "nothing pinned"
        );
        // The right one is accepted and pinned.
        let signed = SignedHostList::sign(&coordinator, list);
        assert!(open_signed_list(
            &signed,
            dir.path(),
            url,
            &me,
            (coordinator.id(), "first contact"),
        )
        .is_ok_and(|r| r.issued_to == me));
        assert_eq!(
            host_list::pinned_key(dir.path(), url).unwrap(),
            Some(coordinator.id())
        );
    }

    #[test]
    fn args() {
        let o = parse_args(&os(&[
            "--coordinator",
            "http://c:1",
            "--shell=fish",
            "make",
            "-j4",
        ]))
        .unwrap();
        assert_eq!(o.coordinator.as_deref(), Some("http://c:1"));
        assert_eq!(o.shell, Shell::Fish);
        assert_eq!(o.command, os(&["make", "-j4"]));
        let o = parse_args(&os(&["-c", "--", "--weird"])).unwrap();
        assert_eq!(o.shell, Shell::Csh);
        assert_eq!(o.command, os(&["--weird"]));
        assert_eq!(
            parse_args(&os(&["--shell", "pwsh"])),
            Err(UsageError::UnknownShell("pwsh".into()))
        );
        assert_eq!(
            parse_args(&os(&["--bogus"])),
            Err(UsageError::UnknownOption("--bogus".into()))
        );
        assert_eq!(
            parse_args(&os(&["--coordinator"])),
            Err(UsageError::MissingValue("--coordinator"))
        );
        assert_eq!(
            parse_args(&os(&["--max-hosts=0"])),
            Err(UsageError::MaxHosts("0".into()))
        );
        let key = "ab".repeat(32);
        let o = parse_args(&os(&["--coordinator-key", &key])).unwrap();
        assert_eq!(o.coordinator_key, Some(key.parse().unwrap()));
        assert_eq!(
            parse_args(&os(&["--coordinator-key=zz"])),
            Err(UsageError::CoordinatorKey("zz".into()))
        );
    }

    #[test]
    fn rendering_quotes_for_each_shell() {
        let vars = vec![("A".to_string(), "x y'z!".to_string())];
        assert_eq!(render(Shell::Sh, &vars), "A='x y'\\''z!'; export A;\n");
        assert_eq!(render(Shell::Csh, &vars), "setenv A 'x y'\\''z\\!';\n");
        assert_eq!(render(Shell::Fish, &vars), "set -gx A 'x y\\'z!';\n");
        // The sh form really round-trips through a shell.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{} printf %s \"$A\"", render(Shell::Sh, &vars)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x y'z!");
    }

    #[test]
    fn environment_lines() {
        let hosts = vec![entry(1, 1, "a", 0), entry(2, 2, "b", 0)];
        let vars = environment(&hosts, 2, "http://c:1", Path::new("/d/host-list.json"));
        assert_eq!(
            vars[0],
            (
                "DISTCC_HOSTS".into(),
                "10.0.1.1:3632/4,lzo,verify 10.0.2.1:3632/4,lzo,verify".into()
            )
        );
        assert_eq!(vars[1].1, "2");
        assert_eq!(vars[2], ("DPORTAGE_SPOTCHECK".into(), "0.02".into()));
        assert_eq!(vars[4].1, "/d/host-list.json");
        assert_eq!(
            vars[5],
            ("FEATURES".into(), "distcc -network-sandbox".into())
        );
        assert_eq!(vars[6], ("MAKEOPTS".into(), "-j4".into()));
    }

    #[test]
    fn ranking() {
        let mut hostile = entry(9, 9, "z", 0);
        hostile.host = "x;rm -rf /".into();
        let cands = vec![
            entry(1, 1, "a", 7200), // far zone
            entry(2, 2, "b", 0),    // near, slow
            entry(3, 3, "c", 0),    // near, fast
            entry(4, 4, "d", 0),    // unreachable
            hostile,                // unsafe name
            entry(5, 3, "e", 0),    // same owner as 3
        ];
        let lat = vec![Some(1.0), Some(50.0), Some(2.0), None, Some(0.1), Some(3.0)];
        let got: Vec<u8> = rank(cands, &lat, 0, 10).iter().map(|h| h.id.0[0]).collect();
        assert_eq!(
            &got[..3],
            &[3, 2, 1],
            "near zone first, fastest first, distinct owners first"
        );
        assert!(!got.contains(&4) && !got.contains(&9));
        assert_eq!(got.len(), 3, "the second host of owner 3 is left out");
        assert!(!got.contains(&5));
    }
}
