//! Shared by the server_* integration tests: start `dportage serve` as a real
//! subprocess on a free loopback port, talk to it over real sockets, read its
//! counters, and clean up (kill by pid, remove temp dirs) even when a test fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dportage");

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A directory everyone may write into: when the tests run as root the server
/// drops to the `distccd` user (as distccd does) and must still create its
/// job directories here.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("dportage-test-")
        .tempdir()
        .expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod temp dir");
    dir
}

/// A port nobody listens on right now (the server may still lose a race for
/// it; [`Server::start`] retries then).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A running `dportage serve`, killed (by pid) when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub stats_port: Option<u16>,
    pub tmpdir: tempfile::TempDir,
    pub log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Server {
    /// Start with `--no-detach --listen 127.0.0.1 --port P --allow 127.0.0.1
    /// --log-stderr --stats --stats-port Q` plus `extra` (whose `--listen` or
    /// `--allow` replace the defaults).
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with(extra, true, &[])
    }

    /// Like [`Server::start`]; `stats` adds `--stats`; `env` is added to the
    /// server's environment.
    pub fn start_with(extra: &[&str], stats: bool, env: &[(&str, &str)]) -> Server {
        Self::start_program(Path::new(BIN), &["serve"], extra, stats, env)
    }

    /// Like [`Server::start_with`], running `program leading…` (e.g. a link
    /// named `distccd`, with no `serve`).
    pub fn start_program(
        program: &Path,
        leading: &[&str],
        extra: &[&str],
        stats: bool,
        env: &[(&str, &str)],
    ) -> Server {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let stats_port = stats.then(free_port);
            let tmpdir = shared_tempdir();
            let log_dir = tempfile::tempdir().expect("log dir");
            let log_path = log_dir.path().join("server.log");
            let log = std::fs::File::create(&log_path).expect("create log");
            let mut cmd = Command::new(program);
            cmd.args(leading)
                .arg("--no-detach")
                .args(["--port", &port.to_string()])
                .args(["--log-stderr", "--log-level", "debug"])
                .env("TMPDIR", tmpdir.path())
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            if !extra.contains(&"--listen") {
                cmd.args(["--listen", "127.0.0.1"]);
            }
            if !extra.iter().any(|a| a.starts_with("--allow")) {
                cmd.args(["--allow", "127.0.0.1"]);
            }
            if let Some(p) = stats_port {
                cmd.args(["--stats", "--stats-port", &p.to_string()]);
            }
            cmd.args(extra);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawn dportage serve");
            let mut server = Server {
                child: Some(child),
                port,
                stats_port,
                tmpdir,
                log_path,
                _log_dir: log_dir,
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
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            let log = self.log();
            if log.contains("listening on")
                && (self.stats_port.is_none() || log.contains("statistics on"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not listening after {START_TIMEOUT:?}:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Processes working in this server's TMPDIR other than the server
    /// itself (which runs there, as distccd does): its jobs.
    pub fn job_processes(&self) -> Vec<u32> {
        let server = self.pid();
        processes_inside(self.tmpdir.path())
            .into_iter()
            .filter(|pid| Some(*pid) != server)
            .collect()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if Instant::now() > deadline {
                panic!("log never showed {needle:?} within {limit:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stats port's answer to `request`, or None when it could not be read.
    pub fn try_fetch_stats(&self, request: &[u8]) -> Option<String> {
        let port = self.stats_port?;
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
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

    /// Wait until `name` reaches `value` (counters are updated just after the reply is sent).
    pub fn wait_counter(&self, name: &str, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.counter(name);
            if got == value {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} is {got}, expected {value}; stats: {:?}\nlog:\n{}",
                    self.stats(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

pub fn wait_with_limit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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

// ---- hand-made protocol bytes (independent of the crate's codec) ----

pub fn int_packet(token: &str, value: u32) -> Vec<u8> {
    assert_eq!(token.len(), 4);
    format!("{token}{value:08x}").into_bytes()
}

pub fn body_packet(token: &str, body: &[u8]) -> Vec<u8> {
    let mut p = int_packet(token, body.len() as u32);
    p.extend_from_slice(body);
    p
}

/// DIST, ARGC, ARGV×n, without DOTI.
pub fn request_head(version: u32, argv: &[&str]) -> Vec<u8> {
    let mut r = int_packet("DIST", version);
    r.extend(int_packet("ARGC", argv.len() as u32));
    for a in argv {
        r.extend(body_packet("ARGV", a.as_bytes()));
    }
    r
}

/// A whole protocol-1 request (or protocol 2, with the DOTI as one literal run).
pub fn request(version: u32, argv: &[&str], doti: &[u8]) -> Vec<u8> {
    let mut r = request_head(version, argv);
    if version >= 2 && !doti.is_empty() {
        r.extend(body_packet("DOTI", &lzo_literal_stream(doti)));
    } else {
        r.extend(body_packet("DOTI", doti));
    }
    r
}

/// The trivially correct LZO1X encoder of spec §4.5: one literal run.
pub fn lzo_literal_stream(data: &[u8]) -> Vec<u8> {
    let n = data.len();
    let mut out = Vec::with_capacity(n + 16);
    if n <= 238 {
        out.push((17 + n) as u8);
    } else {
        out.push(0);
        let mut rest = n - 18;
        while rest > 255 {
            out.push(0);
            rest -= 255;
        }
        out.push(rest as u8);
    }
    out.extend_from_slice(data);
    out.extend_from_slice(&[0x11, 0, 0]);
    out
}

/// A small LZO1X stream that expands to about `matches × 255 kB`: four literal
/// bytes, then long distance-1 matches (spec §4.3: `001 00000`, 1000 zero
/// length bytes, 0xff, distance bytes 0 0), then the end marker.
pub fn lzo_bomb(matches: usize) -> (Vec<u8>, usize) {
    let mut out = vec![17 + 4, b'i', b'n', b't', b' '];
    let mut produced = 4usize;
    for _ in 0..matches {
        out.push(0x20);
        out.extend(std::iter::repeat_n(0u8, 1000));
        out.push(0xff);
        out.extend_from_slice(&[0, 0]);
        produced += 33 + 255 * 1000 + 0xff;
    }
    out.extend_from_slice(&[0x11, 0, 0]);
    (out, produced)
}

/// A decoded protocol-1 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    pub version: u32,
    pub status: u32,
    pub stderr: Vec<u8>,
    pub stdout: Vec<u8>,
    pub object: Vec<u8>,
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

fn header(buf: &mut &[u8], token: &str) -> Option<u32> {
    let h = take(buf, 12)?;
    if &h[..4] != token.as_bytes() {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(&h[4..]).ok()?, 16).ok()
}

/// Parse a protocol-1 reply; None when it is truncated or malformed.
pub fn parse_reply_v1(bytes: &[u8]) -> Option<RawReply> {
    let mut b = bytes;
    let version = header(&mut b, "DONE")?;
    let status = header(&mut b, "STAT")?;
    let n = header(&mut b, "SERR")? as usize;
    let stderr = take(&mut b, n)?.to_vec();
    let n = header(&mut b, "SOUT")? as usize;
    let stdout = take(&mut b, n)?.to_vec();
    let n = header(&mut b, "DOTO")? as usize;
    let object = take(&mut b, n)?.to_vec();
    b.is_empty().then_some(RawReply {
        version,
        status,
        stderr,
        stdout,
        object,
    })
}

/// What the server did with a connection.
#[derive(Debug)]
pub struct Exchange {
    /// Every byte the server sent.
    pub reply: Vec<u8>,
    /// How long until the server closed (EOF or reset).
    pub closed_after: Duration,
    /// The server reset the connection (instead of a clean EOF).
    pub reset: bool,
}

/// Send `bytes`, optionally half-close, then read until the server closes
/// (bounded by `limit`; exceeding it is a test failure).
pub fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool, limit: Duration) -> Exchange {
    let mut s = TcpStream::connect(addr).expect("connect");
    let start = Instant::now();
    // The server may reset before we are done writing: that is an answer too.
    let mut reset = s.write_all(bytes).is_err();
    if half_close && !reset {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut reply = Vec::new();
    if !reset {
        s.set_read_timeout(Some(limit)).expect("timeout");
        let mut buf = [0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!("server kept the connection open for more than {limit:?}")
                }
                Err(_) => {
                    reset = true;
                    break;
                }
            }
        }
    }
    Exchange {
        reply,
        closed_after: start.elapsed(),
        reset,
    }
}

// ---- compilers and the real distcc client ----

/// Preprocess `source` (C) with the local gcc, as the distcc client would.
pub fn preprocess(source: &str, name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, source).expect("write source");
    let out = Command::new("gcc")
        .arg("-E")
        .arg(&path)
        .output()
        .expect("run gcc -E");
    assert!(
        out.status.success(),
        "gcc -E failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A valid protocol-1 request for `gcc -c x.c -o x.o` on a small source.
pub fn honest_request() -> Vec<u8> {
    let doti = preprocess("int answer(void) { return 42; }\n", "x.c");
    request(
        1,
        &["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "x.o"],
        &doti,
    )
}

/// Send an honest job and check the reply carries an ELF object.
pub fn assert_honest_job_succeeds(server: &Server) {
    let ex = exchange(
        server.addr(),
        &honest_request(),
        false,
        Duration::from_secs(60),
    );
    let reply = parse_reply_v1(&ex.reply).unwrap_or_else(|| {
        panic!(
            "honest job got no valid reply ({} bytes, reset {}); log:\n{}",
            ex.reply.len(),
            ex.reset,
            server.log()
        )
    });
    assert_eq!(reply.version, 1);
    assert_eq!(
        reply.status,
        0,
        "stderr: {}; log:\n{}",
        String::from_utf8_lossy(&reply.stderr),
        server.log()
    );
    assert!(reply.object.starts_with(b"\x7fELF"), "object is not ELF");
}

/// Whether the real distcc 3.4 is here. Under CI its absence fails the test;
/// elsewhere the test is skipped with a note.
pub fn have_distcc() -> bool {
    let present = Path::new("/usr/bin/distcc").exists() && Path::new("/usr/lib/distcc").is_dir();
    if !present {
        if std::env::var_os("CI").is_some() {
            panic!("the real distcc 3.4 client is required under CI (apt-get install distcc)");
        }
        eprintln!("note: /usr/bin/distcc not installed; skipping this interop test");
    }
    present
}

/// Output of one real-distcc run.
#[derive(Debug)]
pub struct ClientRun {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run the real `distcc ARGS…` in `cwd` with `hosts`, a fresh `DISTCC_DIR` and
/// TMPDIR, and no local-host list or inherited distcc settings.
pub fn run_distcc(cwd: &Path, hosts: &str, args: &[&str], extra_env: &[(&str, &str)]) -> ClientRun {
    let state = tempfile::tempdir().expect("DISTCC_DIR");
    let mut cmd = Command::new("/usr/bin/distcc");
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("DISTCC_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("DISTCC_HOSTS", hosts)
        .env("DISTCC_DIR", state.path())
        .env("DISTCC_IO_TIMEOUT", "120");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run distcc");
    ClientRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Compile locally with `compiler ARGS…` in `cwd`; returns stderr.
pub fn run_local(cwd: &Path, compiler: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(compiler)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run local compiler");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Processes whose cwd or command line lies inside `dir`.
pub fn processes_inside(dir: &std::path::Path) -> Vec<u32> {
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

/// Lifts g++'s cap on constant-evaluation steps (33554432 by default, which
/// would end [`slow_source`] with an error within a second); pass it with
/// every compile of a slow source.
pub const NO_CONSTEXPR_LIMIT: &str = "-fconstexpr-ops-limit=1000000000000";

/// A C++ source whose constant evaluation keeps the compiler busy for about
/// `n / 1200` seconds (with [`NO_CONSTEXPR_LIMIT`]).
pub fn slow_source(n: u64) -> Vec<u8> {
    let src = format!(
        "constexpr long burn(long n) {{ long s = 0; for (long i = 0; i < n; ++i) \
         for (long j = 0; j < 1000; ++j) s += i ^ j; return s; }}\n\
         constexpr long value = burn({n});\nlong get() {{ return value; }}\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("slow.cc");
    std::fs::write(&path, src).expect("write");
    let out = std::process::Command::new("g++")
        .arg("-E")
        .arg(&path)
        .output()
        .expect("g++ -E");
    assert!(out.status.success());
    out.stdout
}

/// The real distccd 3.4 on a free loopback port, killed with its worker
/// processes (its own process group) when dropped.
pub struct RealDistccd {
    child: Child,
    pub port: u16,
    log_path: PathBuf,
    _tmpdir: tempfile::TempDir,
}

impl RealDistccd {
    pub fn start() -> RealDistccd {
        RealDistccd::start_with_env(&[])
    }

    /// Started with `env` added to its environment (e.g. `LC_ALL=C`, the
    /// locale our server gives every compiler).
    pub fn start_with_env(env: &[(&str, &str)]) -> RealDistccd {
        let tmpdir = shared_tempdir();
        let port = free_port();
        let log_path = tmpdir.path().join("distccd.log");
        let child = Command::new("/usr/bin/distccd")
            .args([
                "--no-detach",
                "--daemon",
                "--listen",
                "127.0.0.1",
                "--allow",
                "127.0.0.1",
            ])
            .args(["--port", &port.to_string(), "--log-level", "notice"])
            .arg(format!("--log-file={}", log_path.display()))
            .env("TMPDIR", tmpdir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the real distccd");
        let mut d = RealDistccd {
            child,
            port,
            log_path,
            _tmpdir: tmpdir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        // distccd binds before it forks its workers; a connect that is accepted
        // and closed at once costs it nothing but a log line.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                d.child.try_wait().expect("wait").is_none(),
                "the real distccd exited at start"
            );
            assert!(Instant::now() < deadline, "the real distccd never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

impl RealDistccd {
    /// Jobs the real distccd logged as compiled successfully.
    pub fn compiles_ok(&self) -> usize {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .matches(" COMPILE_OK ")
            .count()
    }
}

impl Drop for RealDistccd {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signalling the process group of a child we started.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
