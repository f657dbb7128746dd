//! Shared by the network integration tests: real coordinators (in process and
//! as a `dportage coordinator` process), real compilers' fingerprints, real
//! distccd 3.4 hosts on 127.0.0.x, and the `dportage` binary.
#![allow(dead_code)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dportage::fingerprint::Toolchain;
use dportage::network::api::Heartbeat;
use dportage::network::{CoordinatorClient, Identity};
use dportage::probe;
use tempfile::TempDir;

pub const DISTCC: &str = "/usr/bin/distcc";
pub const DISTCCD: &str = "/usr/bin/distccd";

pub fn dportage_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dportage"))
}

/// True when the real distcc 3.4 pair is installed; under CI its absence fails.
pub fn require_distcc(test: &str) -> bool {
    if Path::new(DISTCC).exists() && Path::new(DISTCCD).exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: distcc 3.4 ({DISTCC}, {DISTCCD}) is required under CI: apt-get install distcc"
        );
    }
    eprintln!("{test}: SKIPPED, distcc 3.4 is not installed (apt-get install distcc)");
    false
}

/// The toolchains of this machine's `cc` and `c++`, as `dportage` (no
/// arguments) fingerprints them: hosts advertising these are compatible.
pub fn local_toolchains() -> Vec<Toolchain> {
    static CACHE: OnceLock<Vec<Toolchain>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            ["cc", "c++"]
                .iter()
                .map(|name| {
                    let path = probe::resolve_compiler(name, None, &[])
                        .unwrap_or_else(|| panic!("{name} not found in PATH"));
                    probe::probe(name, &path).expect("probe the local compiler")
                })
                .collect()
        })
        .clone()
}

/// A heartbeat advertising `host:port` with this machine's compilers.
pub fn heartbeat(host: &str, port: u16) -> Heartbeat {
    Heartbeat {
        host: Some(host.to_string()),
        port,
        toolchains: local_toolchains(),
        libc: probe::libc_version(),
        arch: std::env::consts::ARCH.to_string(),
        tz_offset_secs: 0,
        capacity: 2,
        lzo: true,
        software: "test".into(),
    }
}

pub fn client(url: &str, identity: &Arc<Identity>) -> CoordinatorClient {
    CoordinatorClient::new(url, identity.clone())
        .unwrap()
        .with_timeout(Duration::from_secs(20))
}

/// A port on `ip` that really accepts TCP connections while the value lives
/// (`dportage` drops candidates it cannot connect to).
pub struct Listening {
    pub addr: SocketAddr,
    _listener: TcpListener,
}

impl Listening {
    pub fn on(ip: Ipv4Addr) -> Listening {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        Listening {
            addr: listener.local_addr().unwrap(),
            _listener: listener,
        }
    }
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }
}

/// Wait for `cond`, polling; panic with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A `dportage coordinator` process, killed (SIGKILL) when dropped.
pub struct CoordinatorProcess {
    child: Child,
    pub url: String,
    pub data: PathBuf,
}

impl CoordinatorProcess {
    pub fn start(data: &Path, extra: &[&str]) -> CoordinatorProcess {
        let addr_file = data.with_extension("addr");
        let _ = fs::remove_file(&addr_file);
        let child = Command::new(dportage_bin())
            .args(["coordinator", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--address-file")
            .arg(&addr_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dportage coordinator");
        let mut me = CoordinatorProcess {
            child,
            url: String::new(),
            data: data.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = fs::read_to_string(&addr_file) {
                if text.ends_with('\n') {
                    me.url = format!("http://{}", text.trim());
                    return me;
                }
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("dportage coordinator exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "coordinator did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        // SAFETY: kill on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the `dportage` binary with `DPORTAGE_DIR=dir` and `args`.
pub fn run_dportage(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(dportage_bin());
    c.args(args)
        .env("DPORTAGE_DIR", dir)
        .env_remove("DPORTAGE_COORDINATOR")
        .env_remove("DPORTAGE_MEMBERSHIP")
        .env_remove("CC")
        .env_remove("CXX")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run dportage")
}

/// A real distccd 3.4 listening on `ip` (any 127.0.0.x), stopped when dropped.
pub struct Distccd {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Distccd {
    pub fn start(ip: Ipv4Addr) -> Distccd {
        let dir = tempfile::Builder::new()
            .prefix("net-distccd-")
            .tempdir()
            .unwrap();
        // distccd drops root to the `distccd` user, which must use its TMPDIR.
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
        let log = dir.path().join("distccd.log");
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(DISTCCD)
                .args(["--daemon", "--no-detach", "--allow", "127.0.0.0/8"])
                .args(["--listen", &ip.to_string(), "--port", &port.to_string()])
                .args(["--jobs", "2", "--log-stderr", "--log-level", "info"])
                .env("TMPDIR", &tmp)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .expect("start distccd");
            let addr = SocketAddr::new(IpAddr::V4(ip), port);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    last = format!(
                        "exited {st}: {}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                if is_listening(port) {
                    return Distccd {
                        child,
                        addr,
                        log,
                        _dir: dir,
                    };
                }
                if Instant::now() > deadline {
                    last = "not listening after 15 s".into();
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("distccd on {ip} did not start: {last}");
    }

    pub fn compile_ok_count(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("COMPILE_OK")
            .count()
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        // SAFETY: kill on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Whether a socket listens on TCP `port`, read from /proc/net/tcp so the check
/// does not open a connection.
fn is_listening(port: u16) -> bool {
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let suffix = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&suffix) && f[3] == "0A"
    })
}

/// Parse `NAME='value'; export NAME;` lines by evaluating them in a real sh.
pub fn eval_in_sh(lines: &str, names: &[&str]) -> Vec<(String, String)> {
    let mut script = String::from(lines);
    for n in names {
        script.push_str(&format!("printf '%s=%s\\n' {n} \"${n}\"\n"));
    }
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "sh could not eval:\n{lines}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
