//! `distccd` / `dportage serve`: the job server.
//!
//! Start-up follows distccd 3.4: parse options, listen, detach, write the pid
//! file, `nice`, drop root (and set no-new-privs), `chdir($TMPDIR)`. Everything
//! up to here runs single-threaded; then the tokio runtime serves connections
//! (see [`listener`] and [`connection`]).

pub mod access;
pub mod admission;
pub mod connection;
pub mod daemon;
pub mod daemon_log;
pub mod heartbeat_agent;
pub mod job;
pub mod limits;
pub mod listener;
pub mod options;
pub mod refusal_log;
pub mod result_cache;
pub mod sandbox;
pub mod spool;
pub mod stats;
pub mod tickets;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use self::admission::Admission;
use self::daemon::DaemonError;
use self::options::{Mode, Parsed, ServerConfig};
use self::stats::Stats;
use crate::exitcode;

/// State shared by every connection task.
#[derive(Debug)]
pub struct Shared {
    pub cfg: ServerConfig,
    pub stats: Stats,
    /// One permit per compile that may run at once (`--jobs`); tokio's
    /// semaphore is fair, so queued requests get slots in arrival order.
    pub job_slots: Semaphore,
    /// Connection caps, the job-slot queue and the memory budget.
    pub admission: Arc<Admission>,
    /// Set when registered with a coordinator: clients outside `--allow`
    /// are served when they present a valid ticket.
    pub tickets: Option<Arc<tickets::TicketGate>>,
    /// Keeps a flood of refusals from flooding the log.
    pub refusal_log: std::sync::Mutex<refusal_log::RefusalLog>,
    /// The result cache (issue 16): replies of network jobs, served by
    /// `CGET` and claimed to the coordinator by the heartbeat agent.
    pub cache: Arc<result_cache::ServerCache>,
}

impl Shared {
    pub fn new(cfg: ServerConfig) -> Self {
        let stats = Stats::new(cfg.jobs);
        let job_slots = Semaphore::new(cfg.jobs);
        let admission = Arc::new(Admission::new(cfg.admission));
        let cache = Arc::new(match &cfg.cache {
            Some(c) => result_cache::ServerCache::open(&c.dir, c.max_bytes),
            None => result_cache::ServerCache::disabled(),
        });
        Self {
            cfg,
            stats,
            job_slots,
            admission,
            tickets: None,
            refusal_log: std::sync::Mutex::new(refusal_log::RefusalLog::default()),
            cache,
        }
    }

    /// These connections also take tickets checked by `gate`.
    pub fn with_tickets(mut self, gate: Option<Arc<tickets::TicketGate>>) -> Self {
        self.tickets = gate;
        self
    }
}

/// Entry point for `distccd ARGS…` and `dportage serve ARGS…`. `args` excludes
/// the program name. Returns the process exit code.
pub fn serve_main(args: Vec<OsString>) -> i32 {
    serve_main_as("distccd", args)
}

/// [`serve_main`] for the program as invoked (`distccd`, `dportage-serve`,
/// `dportage serve`): its usage lines name it.
pub fn serve_main_as(program: &str, args: Vec<OsString>) -> i32 {
    let cfg = match options::parse_as(program, args) {
        Ok(Parsed::Run(cfg)) => *cfg,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return 0;
        }
        Err(e) => {
            let text = e.to_string();
            if text.starts_with("error:") {
                eprint!("{text}");
            } else {
                eprintln!("distccd: {text}");
            }
            return e.code();
        }
    };
    match cfg.mode {
        Mode::Inetd => serve_inetd(cfg),
        Mode::Daemon { detach } => serve_daemon(cfg, detach),
    }
}

/// Refuse to start when no compiler could ever be allowed.
fn check_whitelist(cfg: &ServerConfig) -> Result<(), DaemonError> {
    let job = &cfg.job;
    if job.insecure_compilers
        || !job.extra_compilers.is_empty()
        || job.masquerade_dirs.iter().any(|d| d.is_dir())
    {
        return Ok(());
    }
    Err(DaemonError::NoCompilerAllowed(job.masquerade_dirs.clone()))
}

fn serve_daemon(cfg: ServerConfig, detach: bool) -> i32 {
    if let Err(e) = check_whitelist(&cfg) {
        eprintln!("distccd: {e}");
        return e.code();
    }
    let jobs_listener = match daemon::listen(cfg.listen, cfg.port) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("distccd: {e}");
            return e.code();
        }
    };
    let stats_listener = match cfg.stats_port {
        Some(port) => match daemon::listen(cfg.listen, port) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("distccd: --stats: {e}");
                return e.code();
            }
        },
        None => None,
    };
    // Settle who we will run as while errors can still reach the terminal.
    let persona = if daemon::is_root() {
        match daemon::choose_persona(cfg.user.as_deref()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("distccd: {e}");
                return e.code();
            }
        }
    } else {
        None
    };
    let log_warning = daemon_log::init(&cfg.log_target, cfg.log_level);
    if let Some(w) = log_warning {
        tracing::warn!("{w}");
    }
    if let Err(e) = daemon::renice(cfg.nice) {
        tracing::warn!("cannot change priority by {}: {e}", cfg.nice);
    }
    if detach {
        let keep_stderr = cfg.log_target == options::LogTarget::Stderr;
        if let Err(e) = daemon::detach(keep_stderr) {
            tracing::error!("{e}");
            return e.code();
        }
    }
    if let Some(path) = &cfg.pid_file {
        if let Err(e) = daemon::write_pid_file(path) {
            tracing::error!("{e}");
            return e.code();
        }
        if let Some(p) = &persona {
            daemon::chown_pid_file(path, p);
        }
    }
    // The identity key is readable only by its owner: load it before root is gone.
    // Advertise only the compilers this daemon runs: the coordinator's
    // challenge jobs try each advertised toolchain, and a refusal fails them.
    let heartbeat_cfg = cfg.heartbeat.clone().map(|mut hb| {
        hb.compilers
            .retain(|name| job::compiler_allowed(name, &cfg.job));
        hb
    });
    let heartbeat = match heartbeat_cfg.map(heartbeat_agent::prepare_heartbeat) {
        None => None,
        Some(Ok(prepared)) => Some(prepared),
        Some(Err(e)) => {
            tracing::error!(
                "cannot join the network: {e}; check --coordinator and --advertise, and that \
                 DPORTAGE_DIR (default ~/.dportage) is readable by the user starting the daemon"
            );
            return exitcode::DISTCC_FAILED;
        }
    };
    // The result store must be the persona's: the identity directory is
    // root's when the daemon starts as root.
    if let (Some(p), Some(cache)) = (&persona, &cfg.cache) {
        prepare_store_dir(&cache.dir, p);
    }
    let code = match drop_privileges(&cfg, persona.as_ref()) {
        Err(code) => code,
        Ok(()) => {
            if cfg.defaulted_to_private {
                tracing::warn!("No --allow option specified.  Defaulting to --allow-private.");
            }
            // Still single-threaded, privileges and niceness final: the
            // moment to fork the zygote that starts and supervises every job's compiler.
            if let Err(e) = sandbox::zygote::start() {
                tracing::warn!(
                    "cannot start the sandbox zygote ({e}); every job will re-execute \
                     this binary as its sandbox trampoline instead (slower, same sandbox)"
                );
            }
            let gate = heartbeat
                .as_ref()
                .map(heartbeat_agent::PreparedHeartbeat::ticket_gate);
            run_runtime(cfg.clone(), gate, |shared| async move {
                // The handle stops the heartbeat when dropped, so it lives as
                // long as the accept loop.
                let for_cache = Arc::clone(&shared);
                let _heartbeat = heartbeat
                    .map(|h| heartbeat_agent::spawn_prepared_heartbeat(h.with_cache(for_cache)));
                listener::run(shared, jobs_listener, stats_listener).await
            })
        }
    };
    if let Some(path) = &cfg.pid_file {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// Create the result store's directory and give it to `persona`. Its
/// parent (the identity directory, root's and 0700) gets search permission
/// for others, or the persona could not reach the store: the key inside
/// stays root's and 0600, and nobody can list the directory.
fn prepare_store_dir(dir: &std::path::Path, persona: &daemon::Persona) {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        tracing::warn!("cannot create the result store {}: {e}", dir.display());
        return;
    }
    daemon::chown_to(dir, persona);
    if let Some(parent) = dir.parent() {
        if let Ok(meta) = std::fs::metadata(parent) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let searchable = std::fs::Permissions::from_mode((mode | 0o111) & 0o7777);
                if let Err(e) = std::fs::set_permissions(parent, searchable) {
                    tracing::warn!(
                        "cannot let the daemon's user reach the result store through {}: {e}",
                        parent.display()
                    );
                }
            }
        }
    }
}

/// Become the unprivileged persona (when root), forbid privilege gains, and
/// move into the work directory.
fn drop_privileges(cfg: &ServerConfig, persona: Option<&daemon::Persona>) -> Result<(), i32> {
    if let Some(p) = persona {
        if let Err(e) = daemon::become_persona(p) {
            tracing::error!("{e}");
            return Err(e.code());
        }
        tracing::debug!("running as {} (uid {}, gid {})", p.name, p.uid, p.gid);
    } else if cfg.user.is_some() {
        tracing::debug!("--user ignored: not started as root");
    }
    if let Err(e) = daemon::set_no_new_privs() {
        tracing::warn!("cannot set no-new-privs: {e}");
    }
    if let Err(e) = daemon::enter_work_dir(&cfg.job.work_root) {
        tracing::error!("{e}");
        return Err(e.code());
    }
    Ok(())
}

fn run_runtime<F, Fut>(cfg: ServerConfig, tickets: Option<Arc<tickets::TicketGate>>, body: F) -> i32
where
    F: FnOnce(Arc<Shared>) -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let runtime = match crate::runtime::multi_thread(Some("distccd")) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("{e}");
            return exitcode::DISTCC_FAILED;
        }
    };
    let shared = Arc::new(Shared::new(cfg).with_tickets(tickets));
    let code = runtime.block_on(body(shared));
    // Blocking reads (stdin in inetd mode) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

/// `--inetd`: serve the one job on stdin/stdout.
fn serve_inetd(cfg: ServerConfig) -> i32 {
    if let Err(e) = check_whitelist(&cfg) {
        eprintln!("distccd: {e}");
        return e.code();
    }
    // stdout carries the reply, so the log never goes there.
    let log_warning = daemon_log::init(&cfg.log_target, cfg.log_level);
    if let Some(w) = log_warning {
        tracing::warn!("{w}");
    }
    if let Err(e) = daemon::renice(cfg.nice) {
        tracing::warn!("cannot change priority by {}: {e}", cfg.nice);
    }
    let persona = if daemon::is_root() {
        match daemon::choose_persona(cfg.user.as_deref()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!("{e}");
                return e.code();
            }
        }
    } else {
        None
    };
    if let Err(code) = drop_privileges(&cfg, persona.as_ref()) {
        return code;
    }
    let peer = stdin_peer();
    run_runtime(cfg, None, |shared| async move {
        shared.stats.accepted();
        let label = match peer {
            Some(addr) => listener::peer_label(addr),
            None => "stdin".to_string(),
        };
        if let (Some(access), Some(addr)) = (&shared.cfg.access, peer) {
            if !access.allows(addr.ip()) {
                tracing::warn!("connection from client '{label}' denied by access list");
                return exitcode::ACCESS_DENIED;
            }
        }
        let _open = shared.stats.open_connection();
        connection::serve(
            tokio::io::stdin(),
            tokio::io::stdout(),
            &label,
            &shared,
            connection::Admit::ByAddress,
            None,
        )
        .await;
        0
    })
}

/// The peer address when stdin is a connected socket.
fn stdin_peer() -> Option<std::net::SocketAddr> {
    use std::os::fd::BorrowedFd;
    if !options::fd_is_socket(0) {
        return None;
    }
    // SAFETY: fd 0 is open for the life of the process; we only borrow it.
    let fd = unsafe { BorrowedFd::borrow_raw(0) };
    let dup = fd.try_clone_to_owned().ok()?;
    let stream = std::net::TcpStream::from(dup);
    stream.peer_addr().ok()
}
