//! Shared by the dual-dispatch tests and benchmark: real distccd 3.4 hosts on
//! distinct 127.0.0.x addresses, `dportage __liar` proxies in front of them,
//! and an isolated client world with its own `DPORTAGE_DIR`.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const DISTCC: &str = "/usr/bin/distcc";
pub const DISTCCD: &str = "/usr/bin/distccd";

pub fn dportage_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dportage"))
}

/// True when real distcc 3.4 is installed; under CI its absence fails the test.
pub fn require_distcc(test: &str) -> bool {
    if Path::new(DISTCC).exists() && Path::new(DISTCCD).exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: distcc 3.4 ({DISTCC}, {DISTCCD}) is required under CI: apt-get install distcc"
        );
    }
    eprintln!("note: skipping {test}: distcc 3.4 is not installed (install the distcc package)");
    false
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A real distccd 3.4 listening on one loopback address; its process group is
/// terminated when dropped.
pub struct Distccd {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
    /// PIDs of compilers a stuck host left sleeping (they run in their own
    /// process group, so killing distccd does not reach them).
    stuck_pids: PathBuf,
    dir: TempDir,
}

/// How a host behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Every compile hangs (the compiler sleeps for a minute and never
    /// compiles): a host that lags, or dies mid-job when killed.
    Stuck,
}

impl Distccd {
    pub fn start(at: Ipv4Addr) -> Distccd {
        Self::start_as(at, Behaviour::Honest)
    }

    pub fn start_as(at: Ipv4Addr, behaviour: Behaviour) -> Distccd {
        let dir = tempfile::Builder::new()
            .prefix("dual-distccd-")
            .tempdir()
            .unwrap();
        // distccd runs jobs as the `distccd` user when started as root.
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
        let stuck_pids = dir.path().join("tmp/stuck.pids");
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if behaviour == Behaviour::Stuck {
            // distccd finds the compiler on its PATH; the client rewrites `gcc`
            // to the cross name, so both are covered.
            let bin = dir.path().join("slow-bin");
            fs::create_dir(&bin).unwrap();
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
            let script = format!(
                "#!/bin/sh\necho $$ >> {}\nexec sleep 60\n",
                stuck_pids.display()
            );
            for name in ["gcc", "x86_64-linux-gnu-gcc", "g++", "x86_64-linux-gnu-g++"] {
                let p = bin.join(name);
                fs::write(&p, &script).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
            let mut paths = vec![bin];
            paths.extend(std::env::split_paths(&path));
            path = std::env::join_paths(paths).unwrap();
        }
        let log = dir.path().join("distccd.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port(at);
            let log_file = File::create(&log).unwrap();
            let mut command = Command::new(DISTCCD);
            command
                .args(["--daemon", "--no-detach", "--allow", "127.0.0.0/8"])
                .args(["--jobs", "2", "--listen", &at.to_string()])
                .args(["--port", &port.to_string(), "--log-stderr"])
                .env("TMPDIR", &tmp)
                .env("PATH", &path)
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file);
            let mut child = command.spawn().expect("start distccd");
            let addr = SocketAddr::from((at, port));
            match wait_for_listen(&mut child, addr) {
                Ok(()) => {
                    return Distccd {
                        child: Some(child),
                        addr,
                        log,
                        stuck_pids,
                        dir,
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
        panic!("distccd did not start on {at}: {last_error}");
    }

    /// `ADDR:PORT` for `DISTCC_HOSTS`.
    pub fn hostspec(&self) -> String {
        self.addr.to_string()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn compile_ok_count(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" COMPILE_OK "))
            .count()
    }

    /// Wait until distccd logged `n` successful jobs (it logs after replying).
    pub fn wait_for_compile_ok(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.compile_ok_count() < n {
            assert!(
                Instant::now() < deadline,
                "{} logged fewer than {n} COMPILE_OK lines:\n{}",
                self.addr,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// For a [`Behaviour::Stuck`] host: wait until a compile has started on it.
    pub fn wait_for_stuck_job(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while fs::read_to_string(&self.stuck_pids)
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "no job reached the stuck host {}:\n{}",
                self.addr,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL the daemon, its workers and its stuck compilers: a host dying.
    pub fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals to the process group we created for this child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        self.kill_stuck();
    }

    fn kill_stuck(&self) {
        for pid in fs::read_to_string(&self.stuck_pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 1)
        {
            // SAFETY: a PID our own stuck compiler wrote; it is a sleep we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals to the process group we created for this child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            let _ = child.wait();
        }
        self.kill_stuck();
    }
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
        let mut child = Command::new(dportage_bin())
            .args(["__liar", "--listen", &format!("{at}:0")])
            .args(["--upstream", &upstream.to_string(), "--lie", lie])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dportage __liar");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        // The proxy prints its bound address once it listens; EOF means it died.
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = match line.trim().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dportage __liar did not print its address: {line:?}");
            }
        };
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

/// A loopback address and port that refuse connections while this lives:
/// bound, never listening.
pub struct DeadHost {
    pub addr: SocketAddr,
    _socket: std::os::fd::OwnedFd,
}

impl DeadHost {
    pub fn new(at: Ipv4Addr) -> DeadHost {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor we own; the address struct
        // is fully initialised and its size passed along.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_ne_bytes(at.octets());
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(
                fd,
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                len,
            );
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let mut bound: libc::sockaddr_in = std::mem::zeroed();
            let mut bound_len = len;
            let rc = libc::getsockname(
                fd,
                &mut bound as *mut libc::sockaddr_in as *mut libc::sockaddr,
                &mut bound_len,
            );
            assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
            DeadHost {
                addr: SocketAddr::from((at, u16::from_be(bound.sin_port))),
                _socket: socket,
            }
        }
    }

    pub fn hostspec(&self) -> String {
        self.addr.to_string()
    }
}

pub fn free_port(at: Ipv4Addr) -> u16 {
    TcpListener::bind((at, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_listen(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("distccd exited with {status}"));
        }
        if is_listening(addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{addr} not listening after 15 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Read from /proc/net/tcp, so checking opens no connection distccd would log.
fn is_listening(addr: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = addr else {
        return false;
    };
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return std::net::TcpStream::connect(addr).is_ok();
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && fields[1] == want && fields[3] == "0A"
    })
}

/// An isolated client: our binary as `distcc`, private `DISTCC_DIR`, `TMPDIR`,
/// `HOME` and `DPORTAGE_DIR`, redundancy 2 unless changed.
pub struct ClientEnv {
    pub root: TempDir,
    pub hosts: String,
    pub extra_env: Vec<(String, String)>,
}

impl ClientEnv {
    pub fn new(hosts: &[String]) -> ClientEnv {
        let root = tempfile::Builder::new()
            .prefix("dual-client-")
            .tempdir()
            .unwrap();
        for d in ["bin", "distcc-dir", "tmp", "home", "work", "dportage"] {
            fs::create_dir(root.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink(dportage_bin(), root.path().join("bin/distcc")).unwrap();
        ClientEnv {
            root,
            hosts: hosts.join(" "),
            extra_env: vec![
                ("DPORTAGE_REDUNDANCY".into(), "2".into()),
                // A lying or dead host must not make later runs skip honest ones.
                ("DISTCC_BACKOFF_PERIOD".into(), "0".into()),
            ],
        }
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    pub fn dportage_dir(&self) -> PathBuf {
        self.root.path().join("dportage")
    }

    pub fn tmpdir(&self) -> PathBuf {
        self.root.path().join("tmp")
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(self.work())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path().join("home"))
            .env("LC_ALL", "C")
            .env("DISTCC_HOSTS", &self.hosts)
            .env("DISTCC_DIR", self.root.path().join("distcc-dir"))
            .env("DPORTAGE_DIR", self.dportage_dir())
            .env("TMPDIR", self.tmpdir());
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        command
    }

    /// Our `distcc ARGS…` in the work directory.
    pub fn distcc(&self, args: &[&str]) -> Output {
        self.command(self.root.path().join("bin/distcc"), args)
            .output()
            .unwrap()
    }

    pub fn write(&self, name: &str, contents: &str) {
        fs::write(self.work().join(name), contents).unwrap();
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.work().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A local reference compile in the work directory (no distcc).
    pub fn reference(&self, args: &[&str]) {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.work())
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Temporary files left behind in TMPDIR.
    pub fn leftover_temp_files(&self) -> Vec<String> {
        fs::read_dir(self.tmpdir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dportage: mismatch:` lines of a run.
pub fn mismatch_lines(out: &Output) -> Vec<String> {
    stderr_text(out)
        .lines()
        .filter(|l| l.starts_with("dportage: mismatch:"))
        .map(String::from)
        .collect()
}

/// Where `dportage serve` (like distccd 3.4) finds the names of the
/// compilers it may run.
pub const MASQUERADE_DIR: &str = "/usr/lib/distcc";

/// True when our server can whitelist compilers (distcc's masquerade
/// directory exists); under CI its absence fails the test.
pub fn require_masquerade_dir(test: &str) -> bool {
    if Path::new(MASQUERADE_DIR).join("gcc").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: {MASQUERADE_DIR} (compiler whitelist of `dportage serve`) is required under \
             CI: apt-get install distcc"
        );
    }
    eprintln!(
        "note: skipping {test}: {MASQUERADE_DIR} is missing, so `dportage serve` runs no \
         compiler (install the distcc package)"
    );
    false
}

/// Our own server, `dportage serve`, on one loopback address; killed by PID
/// (with the job processes it left) when dropped.
pub struct DportageServe {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
    /// The server's TMPDIR, where its job directories live.
    jobs_root: PathBuf,
    _dir: TempDir,
}

impl DportageServe {
    pub fn start(at: Ipv4Addr) -> DportageServe {
        Self::start_as(at, Behaviour::Honest)
    }

    pub fn start_as(at: Ipv4Addr, behaviour: Behaviour) -> DportageServe {
        let dir = tempfile::Builder::new()
            .prefix("dual-dportage-serve-")
            .tempdir()
            .unwrap();
        // Started as root, the server runs jobs as the `distccd` user: it must
        // reach its job root and the stuck compilers.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let jobs_root = dir.path().join("tmp");
        fs::create_dir(&jobs_root).unwrap();
        fs::set_permissions(&jobs_root, fs::Permissions::from_mode(0o1777)).unwrap();
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if behaviour == Behaviour::Stuck {
            // The server looks the whitelisted name up on its PATH; the
            // sandbox lets the compiler read its own directory.
            let bin = dir.path().join("slow-bin");
            fs::create_dir(&bin).unwrap();
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
            for name in ["gcc", "x86_64-linux-gnu-gcc", "g++", "x86_64-linux-gnu-g++"] {
                let p = bin.join(name);
                fs::write(&p, "#!/bin/sh\nexec sleep 60\n").unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
            let mut paths = vec![bin];
            paths.extend(std::env::split_paths(&path));
            path = std::env::join_paths(paths).unwrap();
        }
        let log = dir.path().join("serve.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port(at);
            let log_file = File::create(&log).unwrap();
            let mut child = Command::new(dportage_bin())
                .args(["serve", "--no-detach", "--log-stderr"])
                .args(["--listen", &at.to_string(), "--port", &port.to_string()])
                .args(["--allow", "127.0.0.0/8", "--jobs", "2"])
                .env_remove("RUST_LOG")
                .env("PATH", &path)
                .env("TMPDIR", &jobs_root)
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("start dportage serve");
            let addr = SocketAddr::from((at, port));
            match wait_for_serve(&mut child, &log) {
                Ok(()) => {
                    return DportageServe {
                        child: Some(child),
                        addr,
                        log,
                        jobs_root,
                        _dir: dir,
                    }
                }
                Err(e) => {
                    last_error = e;
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("dportage serve did not start on {at}: {last_error}");
    }

    /// `ADDR:PORT` for `DISTCC_HOSTS`.
    pub fn hostspec(&self) -> String {
        self.addr.to_string()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Jobs that compiled and were answered (the server logs after replying,
    /// with distccd's outcome names).
    pub fn compile_ok_count(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" COMPILE_OK "))
            .count()
    }

    pub fn wait_for_compile_ok(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.compile_ok_count() < n {
            assert!(
                Instant::now() < deadline,
                "{} logged fewer than {n} COMPILE_OK lines:\n{}",
                self.addr,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Processes working inside this server's job directories (its
    /// sandboxed compilers and their trampolines).
    pub fn job_processes(&self) -> Vec<i32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/cwd"))
                    .map(|cwd| cwd.starts_with(&self.jobs_root) && cwd != self.jobs_root)
                    .unwrap_or(false)
            })
            .collect()
    }

    /// For a [`Behaviour::Stuck`] server: wait until a compile has started
    /// (its `sleep` runs in a job directory).
    pub fn wait_for_stuck_job(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sleeping = self.job_processes().into_iter().any(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim() == "sleep")
                    .unwrap_or(false)
            });
            if sleeping {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no job reached the stuck server {}:\n{}",
                self.addr,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL the server process alone (by PID): a host dying mid-job. Its
    /// job processes are left to notice on their own.
    pub fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to the process we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Wait until no process works in a job directory any more, and the job
    /// directories are gone.
    pub fn wait_for_jobs_gone(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let procs = self.job_processes();
            let dirs: Vec<_> = fs::read_dir(&self.jobs_root)
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            if procs.is_empty() && dirs.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: job processes {procs:?} or directories {dirs:?} remain after {limit:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DportageServe {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to the process we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
        for pid in self.job_processes() {
            if pid > 1 {
                // SAFETY: a process in a job directory of the server we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Wait until `dportage serve` logs that it listens (it binds first).
fn wait_for_serve(child: &mut Child, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("dportage serve exited with {status}; log: {text}"));
        }
        if text.contains("listening on") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not listening after 30 s; log: {text}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
