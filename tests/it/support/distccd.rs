//! The real distccd 3.4 as a test peer: one process guard for every test
//! that needs it, started on a free port of a loopback address, in its own
//! process group (terminated with its workers when dropped).

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::dual::CompileHost;
use super::{count_lines, daemon_dir, free_port_on, is_listening, poll_until};

pub const DISTCCD_BIN: &str = "/usr/bin/distccd";

/// How a host behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Every compile hangs (the compiler sleeps for a minute and never
    /// compiles): a host that lags, or dies mid-job when killed.
    Stuck,
}

/// How to start a [`Distccd`].
#[derive(Debug, Clone)]
pub struct DistccdOptions {
    at: Ipv4Addr,
    allow: &'static str,
    jobs: Option<u32>,
    log_level: Option<&'static str>,
    env: Vec<(String, String)>,
    behaviour: Behaviour,
}

impl DistccdOptions {
    /// On `at`, allowing `allow`, with distccd's defaults otherwise.
    pub fn new(at: Ipv4Addr, allow: &'static str) -> DistccdOptions {
        DistccdOptions {
            at,
            allow,
            jobs: None,
            log_level: None,
            env: Vec::new(),
            behaviour: Behaviour::Honest,
        }
    }

    pub fn jobs(mut self, n: u32) -> Self {
        self.jobs = Some(n);
        self
    }

    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = Some(level);
        self
    }

    /// Extra environment (e.g. `DISTCC_CMDLIST`, `LC_ALL=C`).
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    pub fn behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    pub fn start(self) -> Distccd {
        Distccd::start_with(self)
    }
}

/// A real distccd 3.4 listening on one loopback address.
pub struct Distccd {
    pub(super) child: Option<Child>,
    pub addr: SocketAddr,
    pub port: u16,
    pub log: PathBuf,
    /// PIDs of compilers a stuck host left sleeping (they run in their own
    /// process group, so killing distccd does not reach them).
    stuck_pids: PathBuf,
    _dir: TempDir,
}

impl Distccd {
    /// On 127.0.0.1, allowing 127.0.0.1, four job slots.
    pub fn start() -> Distccd {
        Self::start_with_env(&[])
    }

    /// [`Distccd::start`] with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Distccd {
        DistccdOptions::new(Ipv4Addr::LOCALHOST, "127.0.0.1")
            .jobs(4)
            .env(env)
            .start()
    }

    /// On `at` (any 127.0.0.x), allowing 127.0.0.0/8, two job slots.
    pub fn at(at: Ipv4Addr) -> Distccd {
        Self::at_as(at, Behaviour::Honest)
    }

    pub fn at_as(at: Ipv4Addr, behaviour: Behaviour) -> Distccd {
        DistccdOptions::new(at, "127.0.0.0/8")
            .jobs(2)
            .behaviour(behaviour)
            .start()
    }

    pub fn start_with(options: DistccdOptions) -> Distccd {
        let (dir, tmp) = daemon_dir("distccd-");
        let stuck_pids = tmp.join("stuck.pids");
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if options.behaviour == Behaviour::Stuck {
            // distccd finds the compiler on its PATH; the client rewrites `gcc`
            // to the cross name, so both are covered.
            let script = format!(
                "#!/bin/sh\necho $$ >> {}\nexec sleep 60\n",
                stuck_pids.display()
            );
            path = stuck_compilers(dir.path(), &script, &path);
        }
        let log = dir.path().join("distccd.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port_on(options.at);
            let mut command = Command::new(DISTCCD_BIN);
            command
                .args(["--daemon", "--no-detach", "--allow", options.allow])
                .args(["--listen", &options.at.to_string()])
                .args(["--port", &port.to_string(), "--log-stderr"])
                .env("TMPDIR", &tmp)
                .env("PATH", &path)
                .envs(options.env.iter().map(|(k, v)| (k, v)))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap());
            if let Some(jobs) = options.jobs {
                command.args(["--jobs", &jobs.to_string()]);
            }
            if let Some(level) = options.log_level {
                command.args(["--log-level", level]);
            }
            let mut child = command.spawn().expect("start distccd");
            let addr = SocketAddr::from((options.at, port));
            let listening = poll_until(Duration::from_secs(15), || {
                match child.try_wait().expect("wait") {
                    Some(status) => Some(Err(format!("distccd exited with {status}"))),
                    None => is_listening(addr).then_some(Ok(())),
                }
            })
            .unwrap_or_else(|| Err(format!("{addr} not listening after 15 s")));
            match listening {
                Ok(()) => {
                    return Distccd {
                        child: Some(child),
                        addr,
                        port,
                        log,
                        stuck_pids,
                        _dir: dir,
                    }
                }
                Err(e) => {
                    last_error =
                        format!("{e}; log: {}", fs::read_to_string(&log).unwrap_or_default());
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("distccd did not start on {}: {last_error}", options.at);
    }

    /// Wait until distccd logged `n` successful jobs, and no more.
    pub fn wait_for_exact_compile_ok(&self, n: usize) {
        let log = self.wait_until_logged(&format!("{n} COMPILE_OK lines"), |log| {
            count_lines(log, " COMPILE_OK ") >= n
        });
        assert_eq!(
            count_lines(&log, " COMPILE_OK "),
            n,
            "more jobs reached distccd than expected:\n{log}"
        );
    }

    /// PIDs of the compilers a stuck host started.
    pub(super) fn stuck(&self) -> Vec<i32> {
        fs::read_to_string(&self.stuck_pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 1)
            .collect()
    }

    pub(super) fn kill_stuck(&self) {
        for pid in self.stuck() {
            // SAFETY: a PID our own stuck compiler wrote; it is a sleep we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // distccd's parent terminates its workers on SIGTERM; the group
            // gets it too, in case the parent is gone.
            // SAFETY: signals to the process group we created for this child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            let _ = child.wait();
        }
        self.kill_stuck();
    }
}

/// Put `gcc`, `g++` and their cross names running `script` in `dir/slow-bin`;
/// returns `path` with that directory first.
pub fn stuck_compilers(
    dir: &std::path::Path,
    script: &str,
    path: &std::ffi::OsStr,
) -> std::ffi::OsString {
    let bin = dir.join("slow-bin");
    fs::create_dir(&bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["gcc", "x86_64-linux-gnu-gcc", "g++", "x86_64-linux-gnu-g++"] {
        let p = bin.join(name);
        fs::write(&p, script).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(path));
    std::env::join_paths(paths).unwrap()
}
