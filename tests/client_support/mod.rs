//! Shared by the client's integration tests and benchmark: a real distccd 3.4 on
//! a free loopback port, our binary installed under the names a user would use,
//! and an isolated client environment per test.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const DISTCC: &str = "/usr/bin/distcc";
pub const DISTCCD: &str = "/usr/bin/distccd";

/// Our binary, as cargo built it for this test.
pub fn dportage_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dportage"))
}

/// True when the real distcc 3.4 pair is installed. Under CI its absence is a
/// failure, not a reason to skip.
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

/// A real distccd on 127.0.0.1, killed when dropped.
pub struct Distccd {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Distccd {
    pub fn start() -> Distccd {
        Self::start_with_env(&[])
    }

    /// Start with extra environment variables (e.g. `DISTCC_CMDLIST`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Distccd {
        let dir = tempfile::Builder::new()
            .prefix("distccd-")
            .tempdir()
            .unwrap();
        // distccd drops root privileges to the `distccd` user, which must be able
        // to work in its TMPDIR.
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
        let log = dir.path().join("distccd.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log_file = File::create(&log).unwrap();
            let mut command = Command::new(DISTCCD);
            command
                .args([
                    "--daemon",
                    "--no-detach",
                    "--allow",
                    "127.0.0.1",
                    "--jobs",
                    "4",
                ])
                .args(["--port", &port.to_string(), "--log-stderr"])
                .env("TMPDIR", &tmp)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file);
            for (k, v) in env {
                command.env(k, v);
            }
            let mut child = command.spawn().expect("start distccd");
            match wait_for_port(&mut child, port) {
                Ok(()) => {
                    return Distccd {
                        child,
                        port,
                        log,
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
        panic!("distccd did not start: {last_error}");
    }

    /// `HOST:PORT` for `DISTCC_HOSTS`.
    pub fn hostspec(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until distccd's log satisfies `done` (it logs after replying, so
    /// the client can finish first). Panics after 30 s.
    pub fn wait_for_log(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log_text();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "distccd never logged {what}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Jobs distccd compiled successfully so far.
    pub fn compile_ok_count(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" COMPILE_OK "))
            .count()
    }

    /// Wait until distccd has logged `n` successful jobs (it logs after replying,
    /// so the client can finish first). Panics after 30 s.
    pub fn wait_for_compile_ok(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let count = self.compile_ok_count();
            if count >= n {
                assert_eq!(
                    count,
                    n,
                    "more jobs reached distccd than expected:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "distccd logged {count} COMPILE_OK lines, expected {n}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        // distccd's parent terminates its workers when it gets SIGTERM.
        // SAFETY: kill on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A loopback port that refuses connections for as long as this value lives:
/// bound (so nobody else can take it) but never listening.
pub struct DeadPort {
    pub port: u16,
    _socket: std::os::fd::OwnedFd,
}

impl DeadPort {
    pub fn new() -> DeadPort {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor we own; the address struct is
        // fully initialised and its size is passed along.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
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
            DeadPort {
                port: u16::from_be(bound.sin_port),
                _socket: socket,
            }
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn wait_for_port(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("distccd exited with {status}"));
        }
        if is_listening(port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("port {port} not listening after 15 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether some socket listens on TCP `port` (IPv4), read from /proc/net/tcp so
/// that checking does not open a connection distccd would log as a failed job.
fn is_listening(port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return TcpStream::connect(("127.0.0.1", port)).is_ok();
    };
    let suffix = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && fields[1].ends_with(&suffix) && fields[3] == "0A"
    })
}

/// An isolated client world: our binary linked as `distcc` and as compilers, a
/// private `DISTCC_DIR`, `TMPDIR` and `HOME`.
pub struct ClientEnv {
    pub root: TempDir,
    pub hosts: String,
    pub extra_env: Vec<(String, String)>,
}

impl ClientEnv {
    pub fn new(hosts: &str) -> ClientEnv {
        let root = tempfile::Builder::new()
            .prefix("dportage-client-")
            .tempdir()
            .unwrap();
        for d in ["bin", "masq", "distcc-dir", "tmp", "home", "work"] {
            fs::create_dir(root.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink(dportage_bin(), root.path().join("bin/distcc")).unwrap();
        for name in ["gcc", "g++", "cc", "c++"] {
            std::os::unix::fs::symlink(dportage_bin(), root.path().join("masq").join(name))
                .unwrap();
        }
        ClientEnv {
            root,
            hosts: hosts.to_owned(),
            extra_env: Vec::new(),
        }
    }

    /// Our binary under the name `distcc`.
    pub fn distcc(&self) -> PathBuf {
        self.root.path().join("bin/distcc")
    }

    /// A masquerade directory: `gcc`, `g++`, `cc`, `c++` → our binary.
    pub fn masquerade_dir(&self) -> PathBuf {
        self.root.path().join("masq")
    }

    pub fn distcc_dir(&self) -> PathBuf {
        self.root.path().join("distcc-dir")
    }

    pub fn tmpdir(&self) -> PathBuf {
        self.root.path().join("tmp")
    }

    /// Where tests put sources and run compiles.
    pub fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.extra_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `program args…` in `cwd` with only this world's environment.
    pub fn command(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        cwd: &Path,
    ) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path().join("home"))
            .env("LC_ALL", "C")
            .env("DISTCC_HOSTS", &self.hosts)
            .env("DISTCC_DIR", self.distcc_dir())
            .env("TMPDIR", self.tmpdir());
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        command
    }

    /// PATH with the masquerade directory first.
    pub fn masquerade_path(&self) -> std::ffi::OsString {
        let mut paths = vec![self.masquerade_dir()];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(paths).unwrap()
    }

    /// Run `distcc args…` (our binary) in the work directory.
    pub fn distcc_run(&self, args: &[&str]) -> Output {
        self.command(self.distcc(), args, &self.work())
            .output()
            .unwrap()
    }

    /// Temporary files left behind in TMPDIR.
    pub fn leftover_temp_files(&self) -> Vec<String> {
        fs::read_dir(self.tmpdir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    pub fn backoff_file(&self, port: u16) -> PathBuf {
        self.distcc_dir()
            .join(format!("lock/backoff_tcp_127.0.0.1_{port}_0"))
    }
}

/// Write `contents` to `dir/name`, creating parent directories.
pub fn write_file(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, contents).unwrap();
}

/// Run a local reference command (no distcc) and insist it succeeds.
pub fn run_ok(program: &str, args: &[&str], cwd: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Assert two files have identical bytes, with a short message when not.
pub fn assert_same_file(ours: &Path, reference: &Path) {
    let a = fs::read(ours).unwrap_or_else(|e| panic!("{}: {e}", ours.display()));
    let b = fs::read(reference).unwrap_or_else(|e| panic!("{}: {e}", reference.display()));
    assert!(
        a == b,
        "{} ({} bytes) differs from {} ({} bytes)",
        ours.display(),
        a.len(),
        reference.display(),
        b.len()
    );
}

/// Assert a client run succeeded, showing its output when not.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Read a whole stream from a fake server's accepted socket until `predicate`
/// says the request is complete (or EOF / timeout).
pub fn read_request(stream: &mut TcpStream, complete: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    while !complete(&data) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    data
}
