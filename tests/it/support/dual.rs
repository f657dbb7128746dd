//! For the dual-dispatch tests and benchmark: hosts of either kind behind one
//! trait ([`CompileHost`]: the real distccd 3.4 or `dportage serve`, each on
//! its own 127.0.0.x address), `dportage __liar` proxies in front of them,
//! and what a verified run printed.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{
    alive, count_lines, dportage_bin, require_distcc, require_masquerade_dir, stderr_text,
    wait_until, Behaviour, Distccd, DportageServer,
};

/// A compile host the client can list: started on a loopback address,
/// counted by the jobs it logged, stuck or killed on demand.
pub trait CompileHost: Sized {
    /// For messages: `distccd 3.4` or `dportage serve`.
    const KIND: &'static str;

    /// Whether this kind can run here (under CI: must).
    fn require(test: &str) -> bool;

    /// Listen on `at` (any 127.0.0.x), allowing 127.0.0.0/8, two job slots.
    fn start_as(at: Ipv4Addr, behaviour: Behaviour) -> Self;

    fn start(at: Ipv4Addr) -> Self {
        Self::start_as(at, Behaviour::Honest)
    }

    fn addr(&self) -> SocketAddr;

    /// `ADDR:PORT` for `DISTCC_HOSTS`.
    fn hostspec(&self) -> String {
        self.addr().to_string()
    }

    fn log_text(&self) -> String;

    /// Wait until the log satisfies `done` (hosts log after replying, so the
    /// client can finish first). Panics after 30 s.
    fn wait_until_logged(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        wait_until(
            Duration::from_secs(30),
            format_args!("{} to log {what}", self.addr()),
            || {
                let text = self.log_text();
                if done(&text) {
                    Ok(text)
                } else {
                    Err(text)
                }
            },
        )
    }

    /// Jobs compiled and answered (both kinds log ` COMPILE_OK ` after
    /// replying).
    fn compile_ok_count(&self) -> usize {
        count_lines(&self.log_text(), " COMPILE_OK ")
    }

    /// Wait until at least `n` jobs were logged as compiled.
    fn wait_for_compile_ok(&self, n: usize) {
        self.wait_until_logged(&format!("{n} COMPILE_OK lines"), |log| {
            count_lines(log, " COMPILE_OK ") >= n
        });
    }

    /// For a [`Behaviour::Stuck`] host: wait until a compile has started.
    fn wait_for_stuck_job(&self);

    /// SIGKILL the host: it dies mid-job.
    fn kill_now(&mut self);

    /// Wait until no compile of this host runs any more (and, for our
    /// server, its job directories are gone).
    fn wait_for_jobs_gone(&self, limit: Duration);
}

impl CompileHost for Distccd {
    const KIND: &'static str = "distccd 3.4";

    fn require(test: &str) -> bool {
        require_distcc(test)
    }

    fn start_as(at: Ipv4Addr, behaviour: Behaviour) -> Self {
        Distccd::at_as(at, behaviour)
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The stuck compiler wrote its PID.
    fn wait_for_stuck_job(&self) {
        self.wait_until_logged("a stuck job (its compiler started)", |_| {
            !self.stuck().is_empty()
        });
    }

    /// The daemon, its workers (its process group) and its stuck compilers.
    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals to the process group we created for this child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        self.kill_stuck();
    }

    fn wait_for_jobs_gone(&self, limit: Duration) {
        wait_until(limit, format_args!("{}'s jobs to end", self.addr), || {
            let left: Vec<i32> = self.stuck().into_iter().filter(|p| alive(*p)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still running: {left:?}"))
            }
        })
    }
}

impl CompileHost for DportageServer {
    const KIND: &'static str = "dportage serve";

    fn require(test: &str) -> bool {
        require_masquerade_dir(test)
    }

    fn start_as(at: Ipv4Addr, behaviour: Behaviour) -> Self {
        DportageServer::at_as(at, behaviour)
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn log_text(&self) -> String {
        self.log()
    }

    /// Its `sleep` runs in a job directory.
    fn wait_for_stuck_job(&self) {
        self.wait_until_logged("a stuck job (its compiler started)", |_| {
            self.processes_in_job_dirs().into_iter().any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim() == "sleep")
                    .unwrap_or(false)
            })
        });
    }

    /// The server process alone (by PID): its job processes are left to
    /// notice on their own.
    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to the process we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// No process works in a job directory any more, and the job
    /// directories are gone.
    fn wait_for_jobs_gone(&self, limit: Duration) {
        wait_until(limit, format_args!("{}'s jobs to end", self.addr), || {
            let procs = self.processes_in_job_dirs();
            let dirs: Vec<_> = std::fs::read_dir(&self.tmpdir)
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            if procs.is_empty() && dirs.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "job processes {procs:?} or directories {dirs:?} remain"
                ))
            }
        })
    }
}

/// Stamp out one `#[test]` per host kind for each generic scenario
/// `fn name<H: CompileHost>()`: `name::distccd` and `name::dportage`.
#[macro_export]
macro_rules! on_both_hosts {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn distccd() {
                super::$scenario::<$crate::support::Distccd>()
            }
            #[test]
            fn dportage() {
                super::$scenario::<$crate::support::DportageServer>()
            }
        }
    )*};
}

/// Stamp out one `#[test]` per pair of host kinds for each generic scenario
/// `fn name<A: CompileHost, B: CompileHost>()`: `name::distccd` (two
/// distccd), `name::dportage` (two of our servers) and `name::mixed` (one of
/// each).
#[macro_export]
macro_rules! on_host_pairs {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use $crate::support::{Distccd, DportageServer};
            #[test]
            fn distccd() {
                super::$scenario::<Distccd, Distccd>()
            }
            #[test]
            fn dportage() {
                super::$scenario::<DportageServer, DportageServer>()
            }
            #[test]
            fn mixed() {
                super::$scenario::<Distccd, DportageServer>()
            }
        }
    )*};
}

/// `dportage __liar` in front of an honest host.
pub struct Liar {
    child: Child,
    pub addr: SocketAddr,
}

impl Liar {
    /// Listen on `at` (a free port) and forward to `upstream`, lying with `lie`
    /// (`flip`, `replace`, `oversize`, `status=N`, `honest`).
    pub fn start(at: Ipv4Addr, upstream: SocketAddr, lie: &str) -> Liar {
        Liar::start_targeted(at, upstream, lie, None)
    }

    /// [`Liar::start`], lying only about jobs whose preprocessed input
    /// contains `target` (honest about every other job, challenges included).
    pub fn start_targeted(
        at: Ipv4Addr,
        upstream: SocketAddr,
        lie: &str,
        target: Option<&str>,
    ) -> Liar {
        let mut command = Command::new(dportage_bin());
        command
            .args(["__liar", "--listen", &format!("{at}:0")])
            .args(["--upstream", &upstream.to_string(), "--lie", lie]);
        if let Some(t) = target {
            command.args(["--only-if-input-contains", t]);
        }
        command.stderr(Stdio::inherit());
        let (child, addr) = spawn_listening(&mut command, "__liar");
        Liar { child, addr }
    }

    pub fn hostspec(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start a `dportage` proxy tool (`what`) that prints the address it
/// listens on once it does; EOF instead means it died.
fn spawn_listening(command: &mut Command, what: &str) -> (Child, SocketAddr) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start dportage {what}: {e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    match line.trim().parse::<SocketAddr>() {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dportage {what} did not print its address: {line:?}");
        }
    }
}

/// `dportage: mismatch:` lines of a run.
pub fn mismatch_lines(out: &Output) -> Vec<String> {
    stderr_text(out)
        .lines()
        .filter(|l| l.starts_with("dportage: mismatch:"))
        .map(String::from)
        .collect()
}

/// `dportage __wanproxy` in front of a host: every job through it takes
/// about four one-way delays longer (a connection's round trip, the request,
/// the reply), as a distant or overloaded host would.
pub struct SlowProxy {
    child: Child,
    pub addr: SocketAddr,
}

impl SlowProxy {
    /// Listen on `at` (a free port) and forward to `upstream`, each way
    /// `one_way` late.
    pub fn start(at: Ipv4Addr, upstream: SocketAddr, one_way: Duration) -> SlowProxy {
        let mut command = Command::new(dportage_bin());
        command
            .args(["__wanproxy", "--listen", &format!("{at}:0")])
            .args(["--upstream", &upstream.to_string()])
            .args(["--delay", &format!("{}ms", one_way.as_millis())])
            .stderr(Stdio::null());
        let (child, addr) = spawn_listening(&mut command, "__wanproxy");
        SlowProxy { child, addr }
    }

    pub fn hostspec(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client's "asking another host too" lines (`DISTCC_VERBOSE=1`): one per
/// hedge.
pub fn hedge_lines(out: &Output) -> Vec<String> {
    stderr_text(out)
        .lines()
        .filter(|l| l.contains(" is slow on ") && l.contains("asking another host too"))
        .map(String::from)
        .collect()
}
