//! Helpers shared by every integration test: where our binary is, which
//! peers (distcc 3.4, chromium, …) a test needs, free ports, process guards,
//! and the one way to wait for something ([`wait_until`]).
#![allow(dead_code)]

pub mod cache_net;
pub mod client;
pub mod distccd;
pub mod dual;
pub mod job;
pub mod monitor;
pub mod network;
pub mod serve;
pub mod server;

use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

/// Our binary, as cargo built it for this test run.
pub fn dportage_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dportage"))
}

/// Something installed on this machine that a test talks to: the files
/// that must all exist, and the Debian package that brings them.
pub struct Peer {
    pub paths: &'static [&'static str],
    pub package: &'static str,
}

/// The peers the tests use.
pub mod peer {
    use super::Peer;

    const fn debian(paths: &'static [&'static str], package: &'static str) -> Peer {
        Peer { paths, package }
    }

    /// The real distcc 3.4 client and daemon.
    pub const DISTCC_PAIR: Peer = debian(&["/usr/bin/distcc", "/usr/bin/distccd"], "distcc");
    /// The real distcc 3.4 client alone.
    pub const DISTCC_CLIENT: Peer = debian(&["/usr/bin/distcc"], "distcc");
    /// The real distcc 3.4 client and its masquerade directory.
    pub const DISTCC_WITH_MASQUERADE: Peer =
        debian(&["/usr/bin/distcc", "/usr/lib/distcc"], "distcc");
    /// The real distccd 3.4 alone.
    pub const DISTCCD: Peer = debian(&["/usr/bin/distccd"], "distcc");
    /// distcc's masquerade directory: the compiler whitelist of `dportage
    /// serve` (without it our server runs no compiler).
    pub const MASQUERADE_DIR: Peer = debian(&["/usr/lib/distcc/gcc"], "distcc");
    pub const CCACHE: Peer = debian(&["/usr/bin/ccache"], "ccache");
    pub const CHROMIUM: Peer = debian(&["/usr/bin/chromium"], "chromium");
}

/// True when `peer` is installed. Under CI (`CI` set) its absence FAILS the
/// test; elsewhere the test is skipped with a note.
pub fn require_peer(test: &str, peer: &Peer) -> bool {
    if peer.paths.iter().all(|p| Path::new(p).exists()) {
        return true;
    }
    let (paths, package) = (peer.paths.join(", "), peer.package);
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {paths} ({package}) required under CI: apt-get install {package}");
    }
    eprintln!("note: skipping {test}: {paths} missing (apt-get install {package})");
    false
}

/// [`require_peer`] for the real distcc 3.4 pair.
pub fn require_distcc(test: &str) -> bool {
    require_peer(test, &peer::DISTCC_PAIR)
}

/// [`require_peer`] for distcc's masquerade directory.
pub fn require_masquerade_dir(test: &str) -> bool {
    require_peer(test, &peer::MASQUERADE_DIR)
}

/// The real distcc 3.4 client, when installed (see [`require_peer`]).
pub fn real_distcc(test: &str) -> Option<PathBuf> {
    require_peer(test, &peer::DISTCC_CLIENT).then(|| PathBuf::from(DISTCC))
}

/// How long a process gets to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What a probe of [`wait_until`] says: `true`/`Some(value)` when done;
/// `false`/`None` when not yet; `Err(state)` when not yet, with the state
/// seen (shown if the wait times out).
pub trait Probe {
    type Value;
    fn ready(self) -> Result<Self::Value, Option<String>>;
}

impl Probe for bool {
    type Value = ();
    fn ready(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T> Probe for Result<T, String> {
    type Value = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.map_err(Some)
    }
}

/// The back-off between probes: 5 ms, doubling up to 50 ms.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(5))
    }
    fn next(&mut self, deadline: Instant) -> Option<Duration> {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let pause = self.0.min(deadline - now);
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
        Some(pause)
    }
}

fn timed_out(limit: Duration, what: &dyn Display, state: Option<String>) -> ! {
    match state {
        Some(state) => panic!("gave up after {limit:?} waiting for {what}; last seen:\n{state}"),
        None => panic!("gave up after {limit:?} waiting for {what}"),
    }
}

/// Probe until it says done, with a short back-off; `None` once `limit`
/// passed (the probe runs at least once, and once more at the deadline).
pub fn poll_until<P: Probe>(limit: Duration, mut probe: impl FnMut() -> P) -> Option<P::Value> {
    poll_core(limit, &mut probe).ok()
}

fn poll_core<P: Probe>(
    limit: Duration,
    probe: &mut impl FnMut() -> P,
) -> Result<P::Value, Option<String>> {
    let deadline = Instant::now() + limit;
    let mut backoff = Backoff::new();
    loop {
        let state = match probe().ready() {
            Ok(value) => return Ok(value),
            Err(state) => state,
        };
        match backoff.next(deadline) {
            Some(pause) => std::thread::sleep(pause),
            None => return Err(state),
        }
    }
}

/// Wait until `probe` says done (see [`Probe`]), polling with a short
/// back-off; panic naming `what` (and the last state seen) after `limit`.
pub fn wait_until<P: Probe>(
    limit: Duration,
    what: impl Display,
    mut probe: impl FnMut() -> P,
) -> P::Value {
    poll_core(limit, &mut probe).unwrap_or_else(|state| timed_out(limit, &what, state))
}

/// [`wait_until`] inside an async test, for a probe that awaits: the
/// pauses yield to the runtime, so the futures the probe waits for keep
/// running on a single-threaded one.
pub async fn wait_until_async<P: Probe>(
    limit: Duration,
    what: impl Display,
    mut probe: impl AsyncFnMut() -> P,
) -> P::Value {
    let deadline = Instant::now() + limit;
    let mut backoff = Backoff::new();
    loop {
        let state = match probe().await.ready() {
            Ok(value) => return value,
            Err(state) => state,
        };
        match backoff.next(deadline) {
            Some(pause) => tokio::time::sleep(pause).await,
            None => timed_out(limit, &what, state),
        }
    }
}

/// A loopback port nobody listens on right now (a server may still lose a
/// race for it: the process guards retry).
pub fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// A port on `ip` (any 127.0.0.x) nobody listens on right now.
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Whether a socket listens on `addr` (IPv4), read from /proc/net/tcp so
/// that checking opens no connection a daemon would log as a failed job.
pub fn is_listening(addr: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = addr else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
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

/// A loopback address and port that refuse connections while this lives:
/// bound (so nobody else can take it), never listening.
pub struct DeadPort {
    pub addr: SocketAddr,
    pub port: u16,
    _socket: std::os::fd::OwnedFd,
}

impl DeadPort {
    /// On 127.0.0.1.
    pub fn new() -> DeadPort {
        DeadPort::on(Ipv4Addr::LOCALHOST)
    }

    pub fn on(at: Ipv4Addr) -> DeadPort {
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
            let port = u16::from_be(bound.sin_port);
            DeadPort {
                addr: SocketAddr::from((at, port)),
                port,
                _socket: socket,
            }
        }
    }

    pub fn hostspec(&self) -> String {
        self.addr.to_string()
    }
}

/// A directory everyone may write into: when the tests run as root a daemon
/// drops to the `distccd` user and must still work in it.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("dportage-test-")
        .tempdir()
        .expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod temp dir");
    dir
}

/// A directory (mode 755) for a daemon's files with a world-writable `tmp`
/// inside (its TMPDIR): `(dir, dir/tmp)`.
pub fn daemon_dir(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    (dir, tmp)
}

/// Processes whose cwd or command line lies inside `dir`.
pub fn processes_inside(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let needle = dir.to_string_lossy().into_owned();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
                .map(|p| p.starts_with(dir))
                .unwrap_or(false);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false);
            cwd || cmdline
        })
        .collect()
}

/// Whether `pid` is running or sleeping: not gone, not a zombie (a zombie
/// still has a /proc entry; a reaped or never-existing pid does not).
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .unwrap_or("Z");
    state != "Z" && state != "X"
}

/// A child process killed (SIGKILL, by PID) and reaped when dropped, unless
/// it already exited.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child not taken")
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child not taken").id()
    }

    /// The exit status if it exited already.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child().try_wait().expect("wait")
    }

    /// Wait (bounded) for it to exit; panic naming `what` after `limit`.
    pub fn wait_exit(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        wait_until(limit, what, || self.exited())
    }

    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("child not taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait (bounded) for `child` to exit; on timeout kill it and fail.
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    if let Some(status) = poll_until(limit, || child.try_wait().expect("wait")) {
        return status;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process {} did not exit within {limit:?}", child.id());
}

pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert a run succeeded, showing its output when not.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lines of `log` containing `needle` (e.g. distccd's ` COMPILE_OK `).
pub fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

pub use distccd::{Behaviour, Distccd, DistccdOptions};
pub use dual::CompileHost;
pub use serve::DportageServer;

/// The real distcc 3.4 client.
pub const DISTCC: &str = "/usr/bin/distcc";

/// The next connection on the non-blocking listener `l`, accepted while
/// `child` runs: panics if it exits first, or after `limit`.
pub fn accept_while_running(
    l: &TcpListener,
    child: &mut Child,
    limit: Duration,
    what: &str,
) -> std::net::TcpStream {
    wait_until(limit, what, || {
        match l.accept() {
            Ok((s, _)) => return Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what}: the process exited ({status}) without connecting");
        }
        None
    })
}

/// Run `cmd` and insist it succeeds (the message names `what` and shows its
/// stderr); returns its output.
pub fn run_checked(cmd: &mut std::process::Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
