//! For the server tests: hand-made protocol bytes (independent of the
//! crate's codec), one exchange over a real socket, preprocessed sources, and
//! the real distcc client run against a server.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{run_checked, CompileHost, DportageServer};

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
    run_checked(Command::new("gcc").arg("-E").arg(&path), "gcc -E").stdout
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
pub fn assert_honest_job_succeeds(server: &DportageServer) {
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

/// Lifts g++'s cap on constant-evaluation steps (33554432 by default, which
/// would end [`slow_source`] with an error within a second); pass it with
/// every compile of a slow source.
pub const NO_CONSTEXPR_LIMIT: &str = "-fconstexpr-ops-limit=1000000000000";

/// A protocol-1 request compiling `doti` (a [`slow_source`]) with g++.
pub fn slow_request(doti: &[u8]) -> Vec<u8> {
    request(
        1,
        &[
            "x86_64-linux-gnu-g++",
            NO_CONSTEXPR_LIMIT,
            "-c",
            "slow.cc",
            "-o",
            "slow.o",
        ],
        doti,
    )
}

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

/// Whether the real distcc 3.4 client and its masquerade directory are
/// here ([`super::require_peer`]: under CI their absence fails the test).
pub fn have_distcc() -> bool {
    super::require_peer("this interop test", &super::peer::DISTCC_WITH_MASQUERADE)
}

/// The real distccd 3.4 as these tests compare it: on 127.0.0.1, allowing
/// 127.0.0.1, logging at `notice`, with `env` added to its environment
/// (e.g. `LC_ALL=C`, the locale our server gives every compiler).
pub fn real_distccd(env: &[(&str, &str)]) -> super::Distccd {
    super::DistccdOptions::new(std::net::Ipv4Addr::LOCALHOST, "127.0.0.1")
        .log_level("notice")
        .env(env)
        .start()
}
