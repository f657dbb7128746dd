//! Our own server, `dportage serve`, as a real subprocess on a free port of a
//! loopback address: one process guard for every test that starts it. It is
//! killed by PID when dropped, with any job process it left, and its temp
//! dirs go.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::distccd::{stuck_compilers, Behaviour};
use super::{
    daemon_dir, dportage_bin, free_port_on, poll_until, processes_inside, wait_until,
    wait_with_limit, START_TIMEOUT,
};

/// How to start a [`DportageServer`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    program: PathBuf,
    leading: Vec<String>,
    at: Ipv4Addr,
    extra: Vec<String>,
    stats: bool,
    env: Vec<(String, String)>,
    log_level: Option<&'static str>,
    behaviour: Behaviour,
    own_group: bool,
}

impl ServeOptions {
    /// `dportage serve --no-detach --port P --log-stderr --listen 127.0.0.1
    /// --allow 127.0.0.1`.
    pub fn new() -> ServeOptions {
        ServeOptions {
            program: dportage_bin(),
            leading: vec!["serve".into()],
            at: Ipv4Addr::LOCALHOST,
            extra: Vec::new(),
            stats: false,
            env: Vec::new(),
            log_level: None,
            behaviour: Behaviour::Honest,
            own_group: false,
        }
    }

    /// Run `program leading…` instead (e.g. a link named `distccd`).
    pub fn program(mut self, program: &Path, leading: &[&str]) -> Self {
        self.program = program.to_path_buf();
        self.leading = leading.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Listen on `at` (a `--listen` in the extra arguments wins).
    pub fn at(mut self, at: Ipv4Addr) -> Self {
        self.at = at;
        self
    }

    /// More arguments; a `--listen` or `--allow…` among them replaces the
    /// default.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// `--stats --stats-port Q` on a free port.
    pub fn stats(mut self, stats: bool) -> Self {
        self.stats = stats;
        self
    }

    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = Some(level);
        self
    }

    pub fn behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// Run it in a process group of its own.
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    pub fn start(self) -> DportageServer {
        DportageServer::start_options(self)
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `dportage serve`.
pub struct DportageServer {
    pub(super) child: Option<Child>,
    pub addr: SocketAddr,
    pub port: u16,
    pub stats_port: Option<u16>,
    /// Its TMPDIR, where its job directories live (world-writable).
    pub(super) tmpdir: PathBuf,
    pub log_path: PathBuf,
    /// Holds the TMPDIR, the log and any stuck compilers.
    _dir: tempfile::TempDir,
}

impl DportageServer {
    /// Start with `--log-level debug --stats --stats-port Q` plus `extra`
    /// (whose `--listen` or `--allow` replace the defaults).
    pub fn start(extra: &[&str]) -> DportageServer {
        Self::start_with(extra, true, &[])
    }

    /// Like [`DportageServer::start`]; `stats` adds `--stats`; `env` is
    /// added to the server's environment.
    pub fn start_with(extra: &[&str], stats: bool, env: &[(&str, &str)]) -> DportageServer {
        ServeOptions::new()
            .args(extra)
            .stats(stats)
            .env(env)
            .log_level("debug")
            .start()
    }

    /// Like [`DportageServer::start_with`], running `program leading…`.
    pub fn start_program(
        program: &Path,
        leading: &[&str],
        extra: &[&str],
        stats: bool,
        env: &[(&str, &str)],
    ) -> DportageServer {
        ServeOptions::new()
            .program(program, leading)
            .args(extra)
            .stats(stats)
            .env(env)
            .log_level("debug")
            .start()
    }

    /// On `at` (any 127.0.0.x), allowing 127.0.0.0/8, two job slots: a host
    /// of the dual-dispatch tests.
    pub fn at(at: Ipv4Addr) -> DportageServer {
        Self::at_as(at, Behaviour::Honest)
    }

    pub fn at_as(at: Ipv4Addr, behaviour: Behaviour) -> DportageServer {
        ServeOptions::new()
            .at(at)
            .args(&["--allow", "127.0.0.0/8", "--jobs", "2"])
            .behaviour(behaviour)
            .own_process_group()
            .start()
    }

    fn start_options(o: ServeOptions) -> DportageServer {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port_on(o.at);
            let stats_port = o.stats.then(|| free_port_on(o.at));
            // Started as root, the server runs jobs as the `distccd` user: it
            // must reach its job root (and the stuck compilers).
            let (dir, tmpdir) = daemon_dir("dportage-daemon-");
            let log_path = dir.path().join("server.log");
            let mut path = std::env::var_os("PATH").unwrap_or_default();
            if o.behaviour == Behaviour::Stuck {
                // The server looks the whitelisted name up on its PATH; the
                // sandbox lets the compiler read its own directory.
                path = stuck_compilers(dir.path(), "#!/bin/sh\nexec sleep 60\n", &path);
            }
            let mut cmd = Command::new(&o.program);
            cmd.args(&o.leading)
                .arg("--no-detach")
                .args(["--port", &port.to_string(), "--log-stderr"])
                .env("TMPDIR", &tmpdir)
                .env("PATH", &path)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log_path).expect("create log"));
            if o.own_group {
                cmd.process_group(0);
            }
            if let Some(level) = o.log_level {
                cmd.args(["--log-level", level]);
            }
            if !o.extra.iter().any(|a| a == "--listen") {
                cmd.args(["--listen", &o.at.to_string()]);
            }
            if !o.extra.iter().any(|a| a.starts_with("--allow")) {
                cmd.args(["--allow", "127.0.0.1"]);
            }
            if let Some(p) = stats_port {
                cmd.args(["--stats", "--stats-port", &p.to_string()]);
            }
            cmd.args(&o.extra);
            cmd.envs(o.env.iter().map(|(k, v)| (k, v)));
            let child = cmd.spawn().expect("spawn dportage serve");
            let mut server = DportageServer {
                child: Some(child),
                addr: SocketAddr::from((o.at, port)),
                port,
                stats_port,
                tmpdir,
                log_path,
                _dir: dir,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("dportage serve did not start; last log:\n{last_log}");
    }

    /// Wait until the server says it listens (it binds before it logs, so the
    /// ports accept from then on). Probing with connections would show up in
    /// the job counters and the access log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let ready = poll_until(START_TIMEOUT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(Err(format!("exited with {status}:\n{}", self.log())));
            }
            let log = self.log();
            (log.contains("listening on")
                && (self.stats_port.is_none() || log.contains("statistics on")))
            .then_some(Ok(()))
        });
        ready.unwrap_or_else(|| {
            Err(format!(
                "not listening after {START_TIMEOUT:?}:\n{}",
                self.log()
            ))
        })
    }

    /// Its TMPDIR, where its job directories live.
    pub fn tmpdir(&self) -> &Path {
        &self.tmpdir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        wait_until(limit, format_args!("the log to show {needle:?}"), || {
            let log = self.log();
            if log.contains(needle) {
                Ok(log)
            } else {
                Err(log)
            }
        })
    }

    /// Processes working in this server's TMPDIR other than the server
    /// itself (which runs there, as distccd does): its jobs.
    pub fn job_processes(&self) -> Vec<u32> {
        let server = self.pid();
        processes_inside(&self.tmpdir)
            .into_iter()
            .filter(|pid| Some(*pid) != server)
            .collect()
    }

    /// Wait until a job process runs (e.g. a compiler started); returns them.
    pub fn wait_for_job_processes(&self) -> Vec<u32> {
        wait_until(Duration::from_secs(30), "the compiler to start", || {
            let procs = self.job_processes();
            if procs.is_empty() {
                Err(self.log())
            } else {
                Ok(procs)
            }
        })
    }

    /// Wait until no job process is left, naming those that stayed.
    pub fn wait_for_no_job_processes(&self, limit: Duration) {
        wait_until(limit, "the job processes to end", || {
            let left = self.job_processes();
            if left.is_empty() {
                return Ok(());
            }
            let cmdlines: Vec<String> = left
                .iter()
                .map(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                        .unwrap_or_default()
                })
                .collect();
            Err(format!(
                "{left:?} still alive: {cmdlines:?}\nlog:\n{}",
                self.log()
            ))
        })
    }

    /// Processes working inside this server's job directories (its
    /// sandboxed compilers and their trampolines).
    pub fn processes_in_job_dirs(&self) -> Vec<i32> {
        let root = self.tmpdir.as_path();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/cwd"))
                    .map(|cwd| cwd.starts_with(root) && cwd != root)
                    .unwrap_or(false)
            })
            .collect()
    }

    /// The stats port's answer to `request`, or None when it could not be read.
    pub fn try_fetch_stats(&self, request: &[u8]) -> Option<String> {
        let port = self.stats_port?;
        let mut s = TcpStream::connect((self.addr.ip(), port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(request).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
    }

    /// distccd's stats page as `dcc_* → value`.
    pub fn stats(&self) -> BTreeMap<String, String> {
        let page = self
            .try_fetch_stats(b"GET / HTTP/1.0\r\n\r\n")
            .unwrap_or_else(|| panic!("stats page unavailable; log:\n{}", self.log()));
        parse_stats(&page)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.stats()
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    pub fn metrics(&self) -> String {
        self.try_fetch_stats(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("metrics available")
    }

    /// Wait until `name` reaches `value` (counters are updated just after the
    /// reply is sent).
    pub fn wait_counter(&self, name: &str, value: u64) {
        wait_until(
            Duration::from_secs(20),
            format_args!("{name} to reach {value}"),
            || {
                let got = self.counter(name);
                if got == value {
                    Ok(())
                } else {
                    Err(format!(
                        "{name} is {got}; stats: {:?}\nlog:\n{}",
                        self.stats(),
                        self.log()
                    ))
                }
            },
        )
    }

    /// Send SIGTERM and wait for the exit status (bounded).
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        // SAFETY: kill on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_with_limit(&mut child, limit)
    }

    /// Wait for the server to exit on its own (bounded).
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        wait_with_limit(&mut child, limit)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }
}

impl Drop for DportageServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to the process we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
        for pid in self.processes_in_job_dirs() {
            if pid > 1 {
                // SAFETY: a process in a job directory of the server we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

pub fn parse_stats(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter(|l| l.starts_with("dcc_"))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
