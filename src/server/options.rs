//! distccd's command line (same spellings and defaults as distccd 3.4, which
//! parses with popt: `--opt VALUE` and `--opt=VALUE`, `-p3632` and `-p 3632`),
//! plus dportage's own options. Parsing turns it into a [`ServerConfig`].

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::access::{private_networks, AccessList, Network};
use super::admission::AdmissionLimits;
use super::job::JobConfig;
use super::limits::{JobLimits, SandboxMode};
use crate::exitcode;
use crate::protocol::Limits;

const AFTER_HELP: &str = "\
Compatible with distccd 3.4 (protocols 1 and 2; a protocol-3 (pump) request is
closed, and the client compiles that job locally). Environment: DISTCCD_PATH
(PATH for finding compilers), TMPDIR (job directories and the daemon's cwd),
DPORTAGE_DIR (with --coordinator: the daemon's identity, pinned coordinator key
and membership token; default ~/.dportage), DPORTAGE_CA_FILE (extra CAs, PEM,
for an https coordinator).
Not supported: --zeroconf, --auth, --whitelist, --blacklist, --show-principal.";

/// `--max-per-client`: enough for a build machine's `-j32` against one host.
pub const DEFAULT_MAX_PER_CLIENT: u32 = 32;
/// `--max-connections` when the open-file limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept for everything but waiting connections (running
/// jobs' pipes and files, logs, the zygote).
const RESERVED_FDS: u64 = 128;

/// distccd's options, spelled as distccd spells them.
#[derive(Debug, Parser)]
#[command(
    name = "distccd",
    about = "dportage serve: distccd-compatible compile server",
    disable_version_flag = true,
    after_help = AFTER_HELP
)]
pub struct ServeArgs {
    /// Show version and exit.
    #[arg(long)]
    pub version: bool,

    /// Save the daemon's process id to FILE.
    #[arg(short = 'P', long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Lower the daemon's priority by LEVEL (compilers inherit it).
    #[arg(
        short = 'N',
        long,
        value_name = "LEVEL",
        default_value_t = 5,
        allow_negative_numbers = true
    )]
    pub nice: i32,

    /// If started as root, switch to this user (default: distccd, else nobody).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Maximum number of compiles at once, 1..200 (default: number of CPUs + 2).
    #[arg(short = 'j', long, value_name = "LIMIT", allow_negative_numbers = true)]
    pub jobs: Option<i64>,

    /// Kill a compile that runs longer than SECONDS.
    #[arg(long, value_name = "SECONDS")]
    pub job_lifetime: Option<u64>,

    /// Exit (gracefully) after SECONDS.
    #[arg(long, value_name = "SECONDS")]
    pub lifetime: Option<u64>,

    /// TCP port to listen on.
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = 3632)]
    pub port: u16,

    /// IP address to listen on (default: all).
    #[arg(long, value_name = "ADDRESS")]
    pub listen: Option<String>,

    /// Allow clients from this address or network; repeatable.
    #[arg(short = 'a', long, value_name = "IP[/BITS]")]
    pub allow: Vec<String>,

    /// Allow clients from private networks (10/8, 172.16/12, 192.168/16, 127/8, fe80::/10, fc00::/7, ::1).
    #[arg(long)]
    pub allow_private: bool,

    /// Serve statistics over HTTP on --stats-port (GET /metrics: Prometheus text).
    #[arg(long)]
    pub stats: bool,

    /// TCP port for --stats.
    #[arg(long, value_name = "PORT", default_value_t = 3633)]
    pub stats_port: u16,

    /// Log level: critical, error, warning, notice, info, debug.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Same as --log-level=debug.
    #[arg(long)]
    pub verbose: bool,

    /// Stay in the foreground.
    #[arg(long)]
    pub no_detach: bool,

    /// Accepted for compatibility (dportage serves every job in one process).
    #[arg(long)]
    pub no_fork: bool,

    /// Append log messages to FILE instead of syslog.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Send log messages to stderr.
    #[arg(long)]
    pub log_stderr: bool,

    /// Same as --daemon --no-detach --no-fork --log-stderr --verbose.
    #[arg(long)]
    pub wizard: bool,

    /// Serve the one client connected to stdin/stdout, then exit.
    #[arg(long)]
    pub inetd: bool,

    /// Bind and listen on a socket (the default unless stdin is a socket).
    #[arg(long)]
    pub daemon: bool,

    /// Run any compiler the client names (no whitelist; flag checks and sandbox still apply).
    #[arg(long, alias = "make-me-a-botnet")]
    pub enable_tcp_insecure: bool,

    #[arg(long, hide = true)]
    pub zeroconf: bool,
    #[arg(long, hide = true)]
    pub auth: bool,
    #[arg(long, hide = true, value_name = "FILE")]
    pub whitelist: Option<String>,
    #[arg(long, hide = true, value_name = "FILE")]
    pub blacklist: Option<String>,
    #[arg(long, hide = true)]
    pub show_principal: bool,

    /// [dportage] Also allow this compiler name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub allow_compiler: Vec<String>,

    /// [dportage] Directory whose entries whitelist compiler names (repeatable; default /usr/lib/distcc).
    #[arg(long, value_name = "DIR")]
    pub masquerade_dir: Vec<PathBuf>,

    /// [dportage] Compiler sandbox: required, best-effort or off [default: best-effort]. With --coordinator on a kernel without Landlock, best-effort must be given explicitly (jobs would run unconfined; the host is then listed as unconfined).
    #[arg(long, value_enum, value_name = "MODE")]
    pub sandbox: Option<SandboxArg>,

    /// [dportage] Largest object a compile may produce (bytes; K, M, G suffixes).
    #[arg(long, value_name = "SIZE")]
    pub max_object_size: Option<String>,

    /// [dportage] Largest preprocessed source accepted, compressed or not (bytes; K, M, G suffixes).
    #[arg(long, value_name = "SIZE")]
    pub max_source_size: Option<String>,

    /// [dportage] Drop a client whose reads or writes stall this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub io_timeout: u64,

    /// [dportage] Drop a client that has not sent its whole request after this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub request_timeout: u64,

    /// [dportage] Complete requests that may wait for a job slot (FIFO); past it a request is closed and its client compiles locally (default: --max-connections).
    #[arg(long, value_name = "N")]
    pub queue: Option<u32>,

    /// [dportage] Bytes of requests held in memory, being read or waiting for a job slot (K, M, G suffixes; default: 256M, or --max-source-size if larger).
    #[arg(long, value_name = "SIZE")]
    pub queue_bytes: Option<String>,

    /// [dportage] Job connections open at once, from all clients (default: 1024, less if the open-file limit is lower).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,

    /// [dportage] Connections from one client address (an IPv6 client is its /64) read at once while their request is still arriving; later ones wait their turn, and a whole request no longer counts.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PER_CLIENT)]
    pub max_per_client: u32,

    /// [dportage] Drop a client that has not sent its request header (DIST, ARGC, ARGV) after this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub header_timeout: u64,

    /// [dportage] Drop a client sending its source (DOTI) slower than this many bytes per second, averaged over --io-timeout.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub min_body_rate: u64,

    /// [dportage] Join the network: register and heartbeat with this coordinator (https://HOST[:PORT], or http:// on loopback or a trusted network). Its members are served from anywhere with the tickets it signs; other clients only from --allow (default: private networks).
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,

    /// [dportage] The HOST:PORT clients should dial (default: this port, at the address the coordinator sees).
    #[arg(long, value_name = "HOST:PORT", requires = "coordinator")]
    pub advertise: Option<String>,

    /// [dportage] Seconds between heartbeats to the coordinator.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 600,
        requires = "coordinator"
    )]
    pub heartbeat_interval: u64,

    /// [dportage] Also write the daemon's membership token here, group-readable, for the people who build with this daemon's membership (default: /var/lib/dportage/membership.json when the daemon uses the machine-wide directory).
    #[arg(long, value_name = "FILE", requires = "coordinator")]
    pub membership_file: Option<PathBuf>,

    /// [dportage] Send the pending mismatch reports of this member state directory after each heartbeat (default: /var/lib/dportage when the daemon uses the machine-wide directory).
    #[arg(long, value_name = "DIR", requires = "coordinator")]
    pub send_reports_from: Option<PathBuf>,

    /// [dportage] The coordinator's public key (64 hex digits), instead of trusting the key it presents at first contact; a coordinator with another key is refused, and members' tickets are checked against it.
    #[arg(long, value_name = "HEX", requires = "coordinator")]
    pub coordinator_key: Option<crate::network::identity::IdentityId>,

    /// [dportage] Keep the replies of network jobs (those with a member's ticket) for the result cache, up to this many bytes (K, M, G suffixes; 0: off) [default: 2G], in result-store/ next to the daemon's identity; they are served back to members by digest and claimed to the coordinator.
    #[arg(long, value_name = "BYTES", requires = "coordinator")]
    pub cache_size: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxArg {
    Required,
    BestEffort,
    Off,
}

/// Where log messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Syslog,
    Stderr,
    File(PathBuf),
}

/// How the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Listen on a socket; `detach` = fork into the background.
    Daemon { detach: bool },
    /// Serve the one connection on stdin/stdout.
    Inetd,
}

/// Everything the server needs, checked.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub mode: Mode,
    /// Addresses to listen on (one, or all addresses of a `--listen` name).
    pub listen: Option<IpAddr>,
    pub port: u16,
    /// `None` = no address check (inetd without `--allow`).
    pub access: Option<AccessList>,
    /// Whether the daemon fell back to private networks (warn at startup).
    pub defaulted_to_private: bool,
    pub jobs: usize,
    /// Connection caps, the queue for job slots and the memory budget.
    pub admission: AdmissionLimits,
    /// Deadline for the request header (`DIST` … `ARGV`).
    pub header_timeout: Duration,
    /// Bytes per second a request body must arrive at, over `io_timeout`.
    pub min_body_rate: u64,
    pub nice: i32,
    pub pid_file: Option<PathBuf>,
    pub stats_port: Option<u16>,
    pub lifetime: Option<Duration>,
    pub user: Option<String>,
    pub log_target: LogTarget,
    /// A `tracing` filter directive ("info", "debug", …).
    pub log_level: &'static str,
    pub io_timeout: Duration,
    pub request_timeout: Duration,
    pub limits: Limits,
    pub job: JobConfig,
    /// `--coordinator`: heartbeat to the network's coordinator.
    pub heartbeat: Option<super::heartbeat_agent::HeartbeatConfig>,
    /// The result store (`--cache-size`; only with `--coordinator`).
    pub cache: Option<CacheConfig>,
}

/// Where and how large the result store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// What parsing the command line decided.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<ServerConfig>),
    /// Print this to stdout and exit 0 (`--help`, `--version`).
    Print(String),
}

/// Why the command line was refused; `Display` is the message, `code()` the exit code.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("{0}")]
    Clap(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
}

impl OptionError {
    pub fn code(&self) -> i32 {
        exitcode::BAD_ARGUMENTS
    }
}

pub fn version_text() -> String {
    crate::logging::distcc_version_text("distccd")
}

/// `--queue-bytes` unless `--max-source-size` is larger.
const DEFAULT_QUEUE_BYTES: u64 = 256 << 20;

fn soft_nofile() -> u64 {
    // SAFETY: getrlimit only writes the struct it is given.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// Parse distccd's arguments (without the program name).
pub fn parse(args: Vec<OsString>) -> Result<Parsed, OptionError> {
    parse_as("distccd", args)
}

/// [`parse`], for the program as invoked (`distccd`, `dportage serve`):
/// usage lines and errors name it.
pub fn parse_as(program: &str, args: Vec<OsString>) -> Result<Parsed, OptionError> {
    let argv = std::iter::once(OsString::from(program)).chain(args);
    let parsed = match ServeArgs::try_parse_from(argv) {
        Ok(p) => p,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    Ok(Parsed::Print(e.render().to_string()))
                }
                _ => Err(OptionError::Clap(e.render().to_string())),
            };
        }
    };
    if parsed.version {
        return Ok(Parsed::Print(version_text()));
    }
    let stdin_is_socket = fd_is_socket(0);
    parsed
        .into_config(stdin_is_socket, &Environment::from_process())
        .map(|c| Parsed::Run(Box::new(c)))
}

/// The parts of the process environment the configuration depends on.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub tmpdir: Option<OsString>,
    pub distccd_path: Option<OsString>,
    pub path: Option<OsString>,
    pub ncpus: usize,
    pub self_exe: PathBuf,
    /// The soft open-file limit (RLIMIT_NOFILE).
    pub nofile: u64,
    /// The Landlock ABI the kernel offers (0: none).
    pub landlock_abi: i32,
}

impl Environment {
    pub fn from_process() -> Self {
        Self {
            tmpdir: std::env::var_os("TMPDIR").filter(|v| !v.is_empty()),
            distccd_path: std::env::var_os("DISTCCD_PATH"),
            path: std::env::var_os("PATH"),
            ncpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            self_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            nofile: soft_nofile(),
            landlock_abi: super::sandbox::landlock_abi(),
        }
    }
}

/// May a daemon joining a network (`--coordinator`) run with `sandbox` on a
/// kernel offering Landlock ABI `landlock_abi`, and are its jobs confined?
/// Strangers' jobs unconfined can read the host's files (`.incbin
/// "/etc/passwd"`, its identity key): the default (best-effort) refuses to
/// join without Landlock, and an operator who accepts that says so
/// explicitly; the coordinator then lists the host as unconfined, and
/// members do not get it unless they ask.
pub fn network_confinement(
    sandbox: Option<SandboxArg>,
    landlock_abi: i32,
) -> Result<bool, OptionError> {
    match sandbox {
        // Required fails every job without Landlock: never unconfined.
        Some(SandboxArg::Required) => Ok(true),
        None if landlock_abi > 0 => Ok(true),
        None => Err(OptionError::Invalid(
            "--coordinator: this kernel offers no Landlock, so strangers' compilers would run unconfined \
             and could read this machine's files (its identity key too). Use a kernel with Landlock \
             (Linux 5.13 or later, CONFIG_SECURITY_LANDLOCK, `lsm=landlock,…`), or accept it \
             explicitly with --sandbox best-effort: the coordinator then lists this host as \
             unconfined, and members do not get it unless they ask (DPORTAGE_INCLUDE_UNCONFINED=1)"
                .into(),
        )),
        Some(SandboxArg::BestEffort) => Ok(landlock_abi > 0),
        Some(SandboxArg::Off) => Ok(false),
    }
}

impl ServeArgs {
    pub fn into_config(
        self,
        stdin_is_socket: bool,
        env: &Environment,
    ) -> Result<ServerConfig, OptionError> {
        if self.zeroconf {
            return Err(OptionError::Unsupported(
                "--zeroconf is not supported by dportage (no mDNS advertising): list this server \
                 in the clients' DISTCC_HOSTS instead"
                    .into(),
            ));
        }
        for (given, name) in [
            (self.auth, "--auth"),
            (self.whitelist.is_some(), "--whitelist"),
            (self.blacklist.is_some(), "--blacklist"),
            (self.show_principal, "--show-principal"),
        ] {
            if given {
                return Err(OptionError::Unsupported(format!(
                    "{name}: GSS-API authentication is not supported by dportage; restrict clients \
                     with --allow, or reach the server over ssh (DISTCC_HOSTS=@host)"
                )));
            }
        }

        let mode = if self.inetd && (self.daemon || self.wizard) {
            return Err(OptionError::Invalid(
                "--inetd cannot be combined with --daemon or --wizard: choose one mode".into(),
            ));
        } else if self.inetd || (!self.daemon && !self.wizard && stdin_is_socket) {
            Mode::Inetd
        } else {
            Mode::Daemon {
                detach: !(self.no_detach || self.wizard),
            }
        };

        let jobs = match self.jobs {
            None => (env.ncpus + 2).min(200),
            Some(j) if (1..=200).contains(&j) => j as usize,
            Some(j) => {
                return Err(OptionError::Invalid(format!(
                    "--jobs {j}: the number of jobs must be between 1 and 200"
                )))
            }
        };
        let max_connections = match self.max_connections {
            Some(0) => {
                return Err(OptionError::Invalid(
                    "--max-connections 0: allow at least 1 connection".into(),
                ))
            }
            Some(n) => n as usize,
            // Each waiting connection is one descriptor; keep room for the rest.
            None => usize::try_from(env.nofile.saturating_sub(RESERVED_FDS))
                .unwrap_or(usize::MAX)
                .clamp(jobs + 16, DEFAULT_MAX_CONNECTIONS),
        };
        if self.max_per_client == 0 {
            return Err(OptionError::Invalid(
                "--max-per-client 0: allow at least 1 connection per client".into(),
            ));
        }
        if self.header_timeout == 0 {
            return Err(OptionError::Invalid(
                "--header-timeout 0: the timeout must be at least 1 second".into(),
            ));
        }
        if self.min_body_rate == 0 {
            return Err(OptionError::Invalid(
                "--min-body-rate 0: give at least 1 byte per second (a stalled body is what it stops)"
                    .into(),
            ));
        }
        let queue = self.queue.map(|q| q as usize).unwrap_or(max_connections);

        let mut networks = Vec::new();
        for value in &self.allow {
            networks.push(Network::parse(value).map_err(|e| OptionError::Invalid(e.to_string()))?);
        }
        let mut defaulted_to_private = false;
        if self.allow_private {
            networks.extend(private_networks());
        }
        let access = if !networks.is_empty() {
            Some(AccessList::new(networks))
        } else if mode == Mode::Inetd {
            None
        } else {
            defaulted_to_private = true;
            Some(AccessList::new(private_networks()))
        };

        let listen = match &self.listen {
            None => None,
            Some(text) => Some(resolve_listen(text, self.port)?),
        };

        let log_level = if self.verbose || self.wizard {
            "debug"
        } else {
            match self.log_level.as_deref() {
                None => "info",
                Some(l) => log_level_filter(l).ok_or_else(|| {
                    OptionError::Invalid(format!(
                        "--log-level {l:?}: expected one of critical, error, warning, notice, info, debug"
                    ))
                })?,
            }
        };
        let log_target = if let Some(f) = &self.log_file {
            LogTarget::File(f.clone())
        } else if self.log_stderr || self.wizard {
            LogTarget::Stderr
        } else {
            LogTarget::Syslog
        };

        if self.io_timeout == 0 {
            return Err(OptionError::Invalid(
                "--io-timeout 0: the timeout must be at least 1 second".into(),
            ));
        }
        if self.request_timeout == 0 {
            return Err(OptionError::Invalid(
                "--request-timeout 0: the timeout must be at least 1 second".into(),
            ));
        }
        if self.lifetime == Some(0) {
            return Err(OptionError::Invalid(
                "--lifetime 0: give the number of seconds to run (at least 1)".into(),
            ));
        }

        let heartbeat = match &self.coordinator {
            None => None,
            Some(url) => {
                if self.heartbeat_interval == 0 {
                    return Err(OptionError::Invalid(
                        "--heartbeat-interval 0: give the number of seconds between heartbeats (at least 1)".into(),
                    ));
                }
                let capacity = u32::try_from(jobs).unwrap_or(u32::MAX);
                let mut hb =
                    super::heartbeat_agent::HeartbeatConfig::new(url.clone(), self.port, capacity);
                if let Some(advertise) = &self.advertise {
                    hb.advertise = advertise.clone();
                }
                hb.interval = Duration::from_secs(self.heartbeat_interval);
                hb.coordinator_key = self.coordinator_key;
                if let Some(file) = &self.membership_file {
                    hb.membership_file = Some(file.clone());
                }
                if let Some(dir) = &self.send_reports_from {
                    hb.reports_dir = Some(dir.clone());
                }
                hb.confined = network_confinement(self.sandbox, env.landlock_abi)?;
                // Heartbeat from the address we serve on, so the coordinator sees
                // the network this host really is on.
                hb.source_ip = listen.filter(|ip| !ip.is_unspecified());
                Some(hb)
            }
        };

        let cache = match (&heartbeat, self.cache_size.as_deref()) {
            (None, _) => None,
            (Some(_), Some(text)) if text.trim() == "0" => None,
            (Some(hb), text) => Some(CacheConfig {
                dir: hb.identity_dir.join(super::result_cache::STORE_SUBDIR),
                max_bytes: match text {
                    Some(text) => parse_size("--cache-size", text)?,
                    None => super::result_cache::DEFAULT_CACHE_BYTES,
                },
            }),
        };

        let mut limits = Limits::default();
        if let Some(text) = &self.max_source_size {
            let size = parse_size("--max-source-size", text)?;
            let clamped = size.min(u64::from(u32::MAX));
            limits.max_body = clamped as u32;
            limits.max_decompressed = usize::try_from(size).unwrap_or(usize::MAX);
        }
        let queue_bytes = match &self.queue_bytes {
            Some(text) => parse_size("--queue-bytes", text)?,
            None => DEFAULT_QUEUE_BYTES.max(limits.max_decompressed as u64),
        };
        let mut job_limits = JobLimits::default();
        if let Some(text) = &self.max_object_size {
            job_limits.max_output = parse_size("--max-object-size", text)?;
        }
        match self.job_lifetime {
            None | Some(0) => {}
            Some(secs) => {
                job_limits.wall = Duration::from_secs(secs);
                job_limits.cpu_secs = job_limits.cpu_secs.min(secs.saturating_add(1));
            }
        }

        let work_root = env
            .tmpdir
            .clone()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let compiler_path = env
            .distccd_path
            .clone()
            .or_else(|| env.path.clone())
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        let masquerade_dirs = if self.masquerade_dir.is_empty() {
            vec![PathBuf::from("/usr/lib/distcc")]
        } else {
            self.masquerade_dir.clone()
        };

        let job = JobConfig {
            masquerade_dirs,
            extra_compilers: self.allow_compiler.clone(),
            insecure_compilers: self.enable_tcp_insecure,
            compiler_path,
            work_root,
            limits: job_limits,
            sandbox: match self.sandbox.unwrap_or(SandboxArg::BestEffort) {
                SandboxArg::Required => SandboxMode::Required,
                SandboxArg::BestEffort => SandboxMode::BestEffort,
                SandboxArg::Off => SandboxMode::Off,
            },
            self_exe: env.self_exe.clone(),
        };

        Ok(ServerConfig {
            mode,
            listen,
            port: self.port,
            access,
            defaulted_to_private,
            jobs,
            admission: AdmissionLimits {
                max_connections,
                max_per_client: self.max_per_client as usize,
                max_queued: queue,
                max_bytes: queue_bytes,
            },
            header_timeout: Duration::from_secs(self.header_timeout),
            min_body_rate: self.min_body_rate,
            nice: self.nice,
            pid_file: self.pid_file,
            stats_port: self.stats.then_some(self.stats_port),
            lifetime: self.lifetime.map(Duration::from_secs),
            user: self.user,
            log_target,
            log_level,
            io_timeout: Duration::from_secs(self.io_timeout),
            request_timeout: Duration::from_secs(self.request_timeout),
            limits,
            job,
            heartbeat,
            cache,
        })
    }
}

/// distccd's log level names (rsync's trace levels) as `tracing` filters.
fn log_level_filter(name: &str) -> Option<&'static str> {
    Some(match name {
        "emerg" | "alert" | "critical" | "crit" | "error" | "err" => "error",
        "warning" | "warn" => "warn",
        "notice" | "info" => "info",
        "debug" => "debug",
        _ => return None,
    })
}

fn resolve_listen(text: &str, port: u16) -> Result<IpAddr, OptionError> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs: Vec<SocketAddr> = (text, port)
        .to_socket_addrs()
        .map_err(|e| {
            OptionError::Invalid(format!(
                "--listen {text:?}: not an IP address, and the name does not resolve ({e})"
            ))
        })?
        .collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs.first().map(|a| a.ip()).ok_or_else(|| {
        OptionError::Invalid(format!("--listen {text:?}: the name has no addresses"))
    })
}

/// `123`, `64K`, `8M`, `1G` (binary multiples).
pub fn parse_size(option: &str, text: &str) -> Result<u64, OptionError> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => 0,
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| mult != 0)
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            OptionError::Invalid(format!(
                "{option} {text:?}: expected a size in bytes, optionally with K, M or G (e.g. 64M)"
            ))
        })
}

/// Is `fd` a socket (distccd's inetd-mode detection)?
pub fn fd_is_socket(fd: i32) -> bool {
    // SAFETY: fstat on a caller-supplied fd only writes into `st`.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment {
            tmpdir: Some("/var/tmp".into()),
            distccd_path: None,
            path: Some("/usr/bin:/bin".into()),
            ncpus: 2,
            self_exe: PathBuf::from("/usr/bin/dportage"),
            nofile: 1024,
            landlock_abi: 3,
        }
    }

    #[test]
    fn network_daemons_refuse_to_run_unconfined_unless_told() {
        use SandboxArg::*;
        // (--sandbox, Landlock ABI, confined or refused)
        let cases = [
            (None, 3, Some(true)),
            (None, 0, None),
            (Some(BestEffort), 3, Some(true)),
            (Some(BestEffort), 0, Some(false)),
            (Some(Required), 0, Some(true)),
            (Some(Required), 3, Some(true)),
            (Some(Off), 3, Some(false)),
            (Some(Off), 0, Some(false)),
        ];
        for (sandbox, abi, want) in cases {
            let got = network_confinement(sandbox, abi).ok();
            assert_eq!(got, want, "{sandbox:?} on ABI {abi}");
        }
        let why = network_confinement(None, 0).unwrap_err().to_string();
        assert!(why.contains("--sandbox best-effort"), "{why}");
        // Through the options: refused at start, before anything listens.
        let mut e = env();
        e.landlock_abi = 0;
        let with = |args: &[&str]| {
            let argv = std::iter::once("distccd").chain(args.iter().copied());
            ServeArgs::try_parse_from(argv)
                .unwrap()
                .into_config(false, &e)
        };
        assert!(with(&["--coordinator", "http://127.0.0.1:1"]).is_err());
        let cfg = with(&[
            "--coordinator",
            "http://127.0.0.1:1",
            "--sandbox",
            "best-effort",
        ])
        .unwrap();
        assert!(!cfg.heartbeat.unwrap().confined);
        let cfg = cfg_ok(&["--coordinator", "http://127.0.0.1:1"]);
        assert!(cfg.heartbeat.unwrap().confined, "Landlock here: confined");
    }

    fn cfg_ok(args: &[&str]) -> ServerConfig {
        cfg(args).unwrap()
    }

    fn cfg(args: &[&str]) -> Result<ServerConfig, OptionError> {
        let argv = std::iter::once("distccd").chain(args.iter().copied());
        let parsed =
            ServeArgs::try_parse_from(argv).map_err(|e| OptionError::Clap(e.to_string()))?;
        parsed.into_config(false, &env())
    }

    #[test]
    fn coordinator_key_is_pinned_from_the_command_line() {
        let key = "ab".repeat(32);
        let c = cfg(&["--coordinator", "http://c:1", "--coordinator-key", &key]).unwrap();
        assert_eq!(
            c.heartbeat.unwrap().coordinator_key.map(|k| k.to_string()),
            Some(key.clone())
        );
        assert!(
            cfg(&["--coordinator-key", &key]).is_err(),
            "needs --coordinator"
        );
        assert!(cfg(&["--coordinator", "http://c:1", "--coordinator-key", "ab"]).is_err());
    }

    #[test]
    fn cache_size_defaults_with_a_coordinator_and_turns_off_at_zero() {
        let net = ["--coordinator", "http://c:1"];
        let c = cfg(&net).unwrap().cache.unwrap();
        assert_eq!(c.max_bytes, 2 << 30);
        assert!(c.dir.ends_with("result-store"), "{}", c.dir.display());
        let with = |size: &str| cfg(&[net[0], net[1], "--cache-size", size]);
        assert_eq!(with("64M").unwrap().cache.unwrap().max_bytes, 64 << 20);
        assert_eq!(with("1000").unwrap().cache.unwrap().max_bytes, 1000);
        assert_eq!(with("0").unwrap().cache, None);
        assert!(with("lots").is_err());
        assert_eq!(cfg(&[]).unwrap().cache, None, "no network, no claims");
        assert!(cfg(&["--cache-size", "1M"]).is_err(), "needs --coordinator");
    }

    #[test]
    fn defaults_match_distccd() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 3632);
        assert_eq!(c.jobs, 4);
        assert_eq!(c.nice, 5);
        assert_eq!(c.mode, Mode::Daemon { detach: true });
        assert!(c.defaulted_to_private);
        assert!(c
            .access
            .as_ref()
            .unwrap()
            .allows("192.168.3.4".parse().unwrap()));
        assert_eq!(c.stats_port, None);
        assert_eq!(c.log_target, LogTarget::Syslog);
        assert_eq!(
            c.job.masquerade_dirs,
            vec![PathBuf::from("/usr/lib/distcc")]
        );
        assert_eq!(c.job.work_root, PathBuf::from("/var/tmp"));
        assert_eq!(c.job.sandbox, SandboxMode::BestEffort);
        assert_eq!(c.io_timeout, Duration::from_secs(60));
    }

    #[test]
    fn debian_init_script_arguments_parse() {
        let c = cfg(&[
            "--pid-file=/var/run/distccd.pid",
            "--log-file=/var/log/distccd.log",
            "--daemon",
            "--allow",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--nice",
            "10",
            "--jobs",
            "8",
        ])
        .unwrap();
        assert_eq!(c.pid_file, Some(PathBuf::from("/var/run/distccd.pid")));
        assert_eq!(c.log_target, LogTarget::File("/var/log/distccd.log".into()));
        assert_eq!(c.nice, 10);
        assert_eq!(c.jobs, 8);
        assert_eq!(c.listen, Some("127.0.0.1".parse().unwrap()));
        assert!(!c.defaulted_to_private);
    }

    #[test]
    fn short_options_and_attached_values() {
        let c = cfg(&[
            "-p3700",
            "-a",
            "10.0.0.0/8",
            "-a10.1.0.0/16",
            "-j",
            "3",
            "-N",
            "0",
            "-P",
            "/x.pid",
        ])
        .unwrap();
        assert_eq!(c.port, 3700);
        assert_eq!(c.access.unwrap().networks().len(), 2);
        assert_eq!(c.jobs, 3);
        assert_eq!(c.nice, 0);
        assert_eq!(c.pid_file, Some(PathBuf::from("/x.pid")));
    }

    #[test]
    fn jobs_range_is_enforced() {
        assert!(cfg(&["--jobs", "200"]).is_ok());
        assert!(
            matches!(cfg(&["--jobs", "201"]), Err(OptionError::Invalid(m)) if m.contains("between 1 and 200"))
        );
        assert!(cfg(&["--jobs", "0"]).is_err());
        assert!(cfg(&["--jobs", "-1"]).is_err());
    }

    #[test]
    fn wizard_and_inetd_modes() {
        let c = cfg(&["--wizard"]).unwrap();
        assert_eq!(c.mode, Mode::Daemon { detach: false });
        assert_eq!(c.log_target, LogTarget::Stderr);
        assert_eq!(c.log_level, "debug");
        let c = cfg(&["--inetd"]).unwrap();
        assert_eq!(c.mode, Mode::Inetd);
        assert!(c.access.is_none(), "inetd without --allow checks nobody");
        let c = ServeArgs::try_parse_from(["distccd"])
            .unwrap()
            .into_config(true, &env())
            .unwrap();
        assert_eq!(c.mode, Mode::Inetd, "stdin being a socket implies --inetd");
        assert!(cfg(&["--inetd", "--daemon"]).is_err());
    }

    #[test]
    fn unsupported_and_unknown_options_are_refused() {
        for opt in [
            &["--zeroconf"][..],
            &["--auth"],
            &["--whitelist=/f"],
            &["--blacklist", "/f"],
            &["--show-principal"],
        ] {
            assert!(
                matches!(cfg(opt), Err(OptionError::Unsupported(_))),
                "{opt:?}"
            );
        }
        assert!(matches!(cfg(&["--frobnicate"]), Err(OptionError::Clap(_))));
        assert!(matches!(
            cfg(&["--allow", "nonsense"]),
            Err(OptionError::Invalid(_))
        ));
        assert!(matches!(
            cfg(&["--log-level", "loud"]),
            Err(OptionError::Invalid(_))
        ));
    }

    #[test]
    fn botnet_alias_and_dportage_extras() {
        let c = cfg(&[
            "--make-me-a-botnet",
            "--allow-compiler",
            "cc1-wrapper",
            "--masquerade-dir",
            "/opt/masq",
            "--sandbox",
            "required",
            "--max-object-size",
            "64M",
            "--max-source-size",
            "1M",
            "--job-lifetime",
            "30",
            "--io-timeout",
            "2",
            "--queue",
            "3",
            "--stats",
            "--lifetime",
            "9",
        ])
        .unwrap();
        assert!(c.job.insecure_compilers);
        assert_eq!(c.job.extra_compilers, vec!["cc1-wrapper".to_string()]);
        assert_eq!(c.job.masquerade_dirs, vec![PathBuf::from("/opt/masq")]);
        assert_eq!(c.job.sandbox, SandboxMode::Required);
        assert_eq!(c.job.limits.max_output, 64 << 20);
        assert_eq!(c.limits.max_body, 1 << 20);
        assert_eq!(c.limits.max_decompressed, 1 << 20);
        assert_eq!(c.job.limits.wall, Duration::from_secs(30));
        assert_eq!(c.io_timeout, Duration::from_secs(2));
        assert_eq!(c.admission.max_queued, 3);
        assert_eq!(c.stats_port, Some(3633));
        assert_eq!(c.lifetime, Some(Duration::from_secs(9)));
    }

    #[test]
    fn admission_defaults_and_checks() {
        let c = cfg(&["--jobs", "2"]).unwrap();
        // The open-file limit of 1024 leaves room for the rest of the daemon.
        assert_eq!(
            c.admission,
            AdmissionLimits {
                max_connections: 1024 - 128,
                max_per_client: 32,
                max_queued: 1024 - 128,
                max_bytes: 256 << 20,
            }
        );
        assert_eq!(c.header_timeout, Duration::from_secs(20));
        assert_eq!(c.min_body_rate, 4096);
        let c = cfg(&[
            "--max-connections=5000",
            "--max-per-client",
            "8",
            "--queue",
            "100",
            "--queue-bytes",
            "64M",
            "--header-timeout",
            "5",
            "--min-body-rate",
            "100",
        ])
        .unwrap();
        assert_eq!(c.admission.max_connections, 5000);
        assert_eq!(c.admission.max_per_client, 8);
        assert_eq!(c.admission.max_queued, 100);
        assert_eq!(c.admission.max_bytes, 64 << 20);
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(c.min_body_rate, 100);
        // A larger --max-source-size raises the default budget to hold one.
        let c = cfg(&["--max-source-size", "1G"]).unwrap();
        assert_eq!(c.admission.max_bytes, 1 << 30);
        for bad in [
            &["--max-connections", "0"][..],
            &["--max-per-client", "0"],
            &["--header-timeout", "0"],
            &["--min-body-rate", "0"],
            &["--queue-bytes", "0"],
        ] {
            assert!(cfg(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("x", "10").unwrap(), 10);
        assert_eq!(parse_size("x", "2k").unwrap(), 2048);
        assert_eq!(parse_size("x", "3G").unwrap(), 3 << 30);
        assert!(parse_size("x", "0").is_err());
        assert!(parse_size("x", "12Q").is_err());
        assert!(parse_size("x", "").is_err());
        assert!(parse_size("x", "99999999999999999999G").is_err());
    }

    #[test]
    fn log_levels() {
        assert_eq!(cfg(&["--log-level=warning"]).unwrap().log_level, "warn");
        assert_eq!(cfg(&["--log-level", "notice"]).unwrap().log_level, "info");
        assert_eq!(cfg(&["--verbose"]).unwrap().log_level, "debug");
        assert_eq!(
            cfg(&["--log-stderr"]).unwrap().log_target,
            LogTarget::Stderr
        );
    }
}
