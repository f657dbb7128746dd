//! Peak memory of a client receiving a decompression bomb: a lying server
//! answers with a small `DOTO` body that decompresses past 1 GiB (LZO for
//! protocol 2, zstd for `,zstd` hosts). Rows: our client and the real distcc
//! 3.4 client on the same bytes, in the same run; peak RSS from `wait4` (the
//! client and what it waited for, i.e. the local gcc of the fallback).
//!
//! Run: `cargo bench --bench bomb_memory`.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use dportage::protocol::{lzo, zstd};
use support::client::*;
use support::*;

/// Past the client's 1 GiB object limit.
const BOMB: usize = (1 << 30) + (1 << 20);

fn main() {
    let lzo_body = lzo::compress(&vec![0u8; BOMB]);
    let zstd_body = zstd::compress(&vec![0u8; BOMB]);
    println!(
        "bomb_memory: {} MiB of zeros as {} KiB of LZO and {} KiB of zstd",
        BOMB >> 20,
        lzo_body.len() >> 10,
        zstd_body.len() >> 10
    );
    let lzo_reply = reply(2, &lzo_body);
    let zstd_reply = reply(0x4450_5a31, &zstd_body);
    // `None`: our binary as `distcc` (a link named so, in the client's world).
    row("LZO bomb", "dportage", None, ",lzo", &lzo_reply);
    if Path::new(DISTCC).exists() {
        row(
            "LZO bomb",
            "distcc 3.4",
            Some(Path::new(DISTCC)),
            ",lzo",
            &lzo_reply,
        );
    } else {
        println!("  (distcc 3.4 not installed: no comparison row)");
    }
    row("zstd bomb", "dportage", None, ",zstd", &zstd_reply);
    println!("  zstd bomb  distcc 3.4  n/a (distcc does not speak zstd)");
}

fn reply(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DONE{version:08x}STAT00000000SERR00000000SOUT00000000DOTO{:08x}",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn row(case: &str, name: &str, client: Option<&Path>, suffix: &str, bytes: &[u8]) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reply = bytes.to_vec();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = read_request(&mut stream, request_complete);
        let _ = stream.write_all(&reply);
    });
    let env = ClientEnv::new(&format!("127.0.0.1:{port}{suffix}"));
    write_file(&env.work(), "x.c", "int answer(void) { return 42; }\n");
    let client = client.map_or_else(|| env.distcc_link(), Path::to_path_buf);
    let started = Instant::now();
    let child = env
        .command(&client, &["gcc", "-c", "x.c", "-o", "x.o"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (code, peak_kib) = wait_with_peak(child.id() as libc::pid_t);
    drop(child);
    let took = started.elapsed();
    // A client that never connected must not leave the server waiting.
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    let _ = server.join();
    let object = std::fs::metadata(env.work().join("x.o")).map_or(0, |m| m.len());
    println!(
        "  {case:<10} {name:<10} peak RSS {:6} MiB   exit {code}   {:6.2} s   x.o {} bytes{}",
        peak_kib / 1024,
        took.as_secs_f64(),
        object,
        if object > 1 << 20 { " (the bomb!)" } else { "" }
    );
}

/// Reap `pid`; its exit code and peak RSS (KiB, it and its waited children).
fn wait_with_peak(pid: libc::pid_t) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: plain FFI with a zeroed out-parameter; `pid` is our child, which
    // std does not reap (its `Child` is dropped without waiting).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss as u64)
}

/// Whether `data` holds a whole request (head + DOTI).
fn request_complete(data: &[u8]) -> bool {
    let header = |at: usize| -> Option<usize> {
        let h = data.get(at..at + 12)?;
        usize::from_str_radix(std::str::from_utf8(&h[4..]).ok()?, 16).ok()
    };
    let Some(argc) = header(12) else {
        return false;
    };
    let mut at = 24;
    for _ in 0..argc {
        let Some(len) = header(at) else {
            return false;
        };
        at += 12 + len;
    }
    matches!(header(at), Some(doti) if data.len() >= at + 12 + doti)
}
