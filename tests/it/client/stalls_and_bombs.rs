//! Our client against servers that drip or bomb (the issue "Holding up under
//! crowds, stalls and bombs"): a reply sent at one byte a second is abandoned
//! within 30 s, and a small body that decompresses to 1 GiB (LZO or zstd) is
//! refused with the client's peak RSS under 64 MiB; either way the job is
//! compiled locally and the object is right.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dportage::protocol::{lzo, zstd};

use crate::support::client::*;

/// A server for one connection: reads the request, then sends `reply`,
/// `per_write` bytes at a time with `pause` between writes, until done or the
/// client goes away. Returns the bytes it managed to send.
fn serve_once(reply: Vec<u8>, per_write: usize, pause: Duration) -> (u16, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = read_request(&mut stream, request_complete);
        let mut sent = 0;
        for piece in reply.chunks(per_write) {
            if stream.write_all(piece).is_err() {
                break;
            }
            sent += piece.len();
            // The drip is the behaviour under test, not a wait for something.
            std::thread::sleep(pause);
        }
        sent
    });
    (port, thread)
}

/// Whether `data` holds a whole protocol 1/2/zstd request (head + DOTI).
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

fn reply(version: u32, doto_body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DONE{version:08x}STAT00000000SERR00000000SOUT00000000DOTO{:08x}",
        doto_body.len()
    )
    .into_bytes();
    out.extend_from_slice(doto_body);
    out
}

fn setup(hosts: &str) -> ClientEnv {
    let mut env = ClientEnv::new(hosts);
    // Only this run's hosts; a back-off file must not change the next test.
    env.set("DISTCC_BACKOFF_PERIOD", "0");
    env.write("x.c", "int answer(void) { return 42; }\n");
    env.reference(&["gcc", "-c", "x.c", "-o", "reference.o"]);
    env
}

/// Run `distcc gcc -c x.c -o x.o`, returning its exit status, stderr, the
/// client's own peak RSS (KiB) and how long it took.
///
/// The peak is the client's `VmHWM`: the high-water mark of its own address
/// space since its exec, which only grows, sampled until it exits. (wait4's
/// `ru_maxrss` would not do: a child started with vfork/posix_spawn inherits
/// the test process's peak, and in one test binary that is hundreds of MiB.)
/// A bomb is read long before the client exits (it then compiles locally), so
/// a sample after the peak is always taken.
fn run_client(env: &ClientEnv) -> (i32, String, u64, Duration) {
    let stderr_path = env.root.path().join("client.stderr");
    let start = Instant::now();
    let mut child = env
        .command(env.distcc_link(), &["gcc", "-c", "x.c", "-o", "x.o"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(kib) = fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // Sampling a running process, not waiting for an event.
        std::thread::sleep(Duration::from_millis(2));
    };
    let code = status.code().unwrap_or(-1);
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    (code, stderr, peak_kib, start.elapsed())
}

fn assert_right_object(env: &ClientEnv, stderr: &str) {
    assert_same_file(&env.work().join("x.o"), &env.work().join("reference.o"));
    let leftovers: Vec<String> = fs::read_dir(env.work())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("dportage-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}\n{stderr}");
}

#[test]
fn a_dripping_server_is_abandoned_and_the_job_compiled_locally() {
    // A well-formed reply with a wrong object: waiting it out would write it.
    let (port, server) = serve_once(reply(1, b"WRONG OBJECT"), 1, Duration::from_secs(1));
    let env = setup(&format!("127.0.0.1:{port}"));
    let (code, stderr, _, took) = run_client(&env);
    assert_eq!(code, 0, "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}\n{stderr}");
    assert!(stderr.contains("too slowly"), "{stderr}");
    assert_right_object(&env, &stderr);
    let sent = server.join().unwrap();
    assert!(sent < 40, "the server sent its whole reply ({sent} bytes)");
}

/// Peak RSS the client may reach on a bomb (KiB).
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// What the bombs decompress to: past the client's 1 GiB object limit.
const BOMB: usize = (1 << 30) + (1 << 20);

fn bomb_test(hostspec_suffix: &str, version: u32, body: Vec<u8>) {
    let (port, server) = serve_once(reply(version, &body), 1 << 20, Duration::ZERO);
    let env = setup(&format!("127.0.0.1:{port}{hostspec_suffix}"));
    let (code, stderr, peak_kib, took) = run_client(&env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("DOTO"), "refused as a bad body:\n{stderr}");
    assert_right_object(&env, &stderr);
    eprintln!(
        "{hostspec_suffix} bomb ({} bytes on the wire): client peak RSS {} MiB, {took:?}",
        body.len(),
        peak_kib / 1024
    );
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "peak RSS {peak_kib} KiB\n{stderr}"
    );
    let _ = server.join();
}

#[test]
fn an_lzo_bomb_leaves_the_client_small() {
    let body = lzo::compress(&vec![0u8; BOMB]);
    assert!(body.len() < 8 << 20, "a small body: {}", body.len());
    bomb_test(",lzo", 2, body);
}

#[test]
fn a_zstd_bomb_leaves_the_client_small() {
    let body = zstd::compress(&vec![0u8; BOMB]);
    assert!(body.len() < 1 << 20, "a small body: {}", body.len());
    bomb_test(",zstd", 0x4450_5a31, body);
}

/// Under verified dispatch a dripping host is replaced like any failed host:
/// the vote goes to two honest distccd 3.4 hosts, and the object is right.
#[test]
fn a_dripping_host_is_replaced_under_redundancy() {
    use crate::support::dual::CompileHost;
    use crate::support::Distccd;
    use crate::support::{ip, require_distcc};
    if !require_distcc("a_dripping_host_is_replaced_under_redundancy") {
        return;
    }
    let (port, server) = serve_once(reply(1, b"WRONG OBJECT"), 1, Duration::from_secs(1));
    let a = Distccd::at(ip("127.0.0.2"));
    let b = Distccd::at(ip("127.0.0.3"));
    let mut env = ClientEnv::dual(&[format!("127.0.0.1:{port}"), a.hostspec(), b.hostspec()]);
    // No hedging: only the drip's failure may bring in the second honest host.
    env.set("DPORTAGE_HEDGE_MS", "600000");
    env.write("x.c", "int answer(void) { return 42; }\n");
    env.reference(&["gcc", "-c", "x.c", "-o", "reference.o"]);
    let (code, stderr, _, took) = run_client(&env);
    assert_eq!(code, 0, "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}\n{stderr}");
    assert!(stderr.contains("too slowly"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert_right_object(&env, &stderr);
    b.wait_for_compile_ok(1);
    assert!(server.join().unwrap() < 40);
}

/// A real 600 MiB object from an honest server still comes through: the
/// client's limits stop bombs, not large objects. Opt-in (it moves 600 MiB
/// through the job directory, the socket and the client's temporary file):
/// `cargo test --test client -- --ignored six_hundred_mib`.
#[test]
#[ignore = "moves 600 MiB; run it with --ignored"]
fn six_hundred_mib_honest_object_comes_through() {
    let server = crate::support::serve::DportageServer::start(&["--max-object-size", "700M"]);
    let mut env = ClientEnv::new(&format!("{},lzo", server.addr));
    env.set("DISTCC_FALLBACK", "0");
    env.write("big.c", "asm(\".data\\n.skip 629145600\\n\");\nint x;\n");
    env.reference(&["gcc", "-c", "big.c", "-o", "reference.o"]);
    let out = env.distcc(&["gcc", "-c", "big.c", "-o", "big.o"]);
    assert!(
        out.status.success(),
        "distcc gcc -c big.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = env.work().join("big.o");
    assert!(fs::metadata(&ours).unwrap().len() > 600 << 20);
    assert_same_file(&ours, &env.work().join("reference.o"));
    server.wait_for_log("COMPILE_OK", Duration::from_secs(60));
}

/// `DPORTAGE_REPLY_PACE_WINDOW` and `DPORTAGE_REPLY_MIN_RATE` set the pace:
/// a reply at 20 bytes a second would be whole (and its wrong object
/// written) in about 3.5 s under the default 160 KiB per 10 s, but 100 bytes a
/// second over 2 s abandons it at the first window. A bad value stops the job
/// with exit 101 and a message naming the variable.
#[test]
fn reply_pace_settings_are_honoured_and_checked() {
    let (port, server) = serve_once(reply(1, b"WRONG OBJECT"), 4, Duration::from_millis(200));
    let mut env = setup(&format!("127.0.0.1:{port}"));
    env.set("DPORTAGE_REPLY_PACE_WINDOW", "2");
    env.set("DPORTAGE_REPLY_MIN_RATE", "100");
    let (code, stderr, _, took) = run_client(&env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("too slowly"), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}\n{stderr}");
    assert_right_object(&env, &stderr);
    let sent = server.join().unwrap();
    assert!(
        sent < reply(1, b"WRONG OBJECT").len(),
        "the whole reply went through ({sent} bytes)"
    );

    let mut env = setup("127.0.0.1:1");
    env.set("DPORTAGE_REPLY_MIN_RATE", "fast");
    let (code, stderr, _, _) = run_client(&env);
    assert_eq!(code, 101, "{stderr}");
    assert!(
        stderr.contains("bad DPORTAGE_REPLY_MIN_RATE value \"fast\""),
        "{stderr}"
    );
}
