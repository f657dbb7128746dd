//! Hostile clients against a real `dportage serve` over real sockets: every
//! bad request is closed without a byte in reply (and counted), slow and idle
//! clients are dropped after --io-timeout, and after each attack an honest
//! job still succeeds (admission under crowds and stalls: `admission.rs`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::server::*;
use crate::support::*;

/// Long enough that a prompt close cannot be the I/O timeout's doing.
const PATIENT_IO_TIMEOUT: &str = "30";
/// A prompt close happens well inside the I/O timeout.
const PROMPT: Duration = Duration::from_secs(10);

fn hostile_server() -> DportageServer {
    DportageServer::start(&[
        "--jobs",
        "2",
        "--io-timeout",
        PATIENT_IO_TIMEOUT,
        "--max-source-size",
        "1M",
    ])
}

/// The server must close the connection promptly and send nothing.
fn assert_dropped_silently(server: &DportageServer, bytes: &[u8], half_close: bool) -> Exchange {
    let ex = exchange(server.addr(), bytes, half_close, Duration::from_secs(40));
    assert!(
        ex.reply.is_empty(),
        "server answered {} bytes: {:?}",
        ex.reply.len(),
        String::from_utf8_lossy(&ex.reply[..ex.reply.len().min(200)])
    );
    assert!(
        ex.closed_after < PROMPT,
        "server took {:?} to close",
        ex.closed_after
    );
    ex
}

fn argv_x() -> [&'static str; 5] {
    ["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "x.o"]
}

#[test]
fn absurd_argc_is_dropped() {
    let s = hostile_server();
    assert_dropped_silently(&s, b"DIST00000001ARGCffffffff", false);
    s.wait_counter("dcc_rej_bad_req", 1);
    assert_honest_job_succeeds(&s);
    s.wait_counter("dcc_compile_ok", 1);
}

#[test]
fn huge_argv_length_is_dropped() {
    let s = hostile_server();
    assert_dropped_silently(&s, b"DIST00000001ARGC00000001ARGVffffffff", false);
    // Also: many arguments that are each fine but together exceed the total bound.
    let mut req = int_packet("DIST", 1);
    req.extend(int_packet("ARGC", 40));
    let big = "a".repeat(128 * 1024);
    for _ in 0..40 {
        req.extend(body_packet("ARGV", big.as_bytes()));
    }
    assert_dropped_silently(&s, &req, false);
    s.wait_counter("dcc_rej_bad_req", 2);
    assert_honest_job_succeeds(&s);
}

#[test]
fn doti_claiming_4_gib_is_dropped() {
    let s = hostile_server();
    let mut req = request_head(1, &argv_x());
    req.extend_from_slice(b"DOTIffffffff");
    req.extend_from_slice(b"int x;\n");
    assert_dropped_silently(&s, &req, false);
    // Just over --max-source-size (1M) is refused before any of it is read.
    let mut req = request_head(1, &argv_x());
    req.extend(int_packet("DOTI", (1 << 20) + 1));
    assert_dropped_silently(&s, &req, false);
    s.wait_counter("dcc_rej_bad_req", 2);
    assert_honest_job_succeeds(&s);
}

#[test]
fn lzo_bomb_is_dropped() {
    let s = hostile_server();
    let (bomb, expands_to) = lzo_bomb(48);
    assert!(bomb.len() < 64 * 1024 && expands_to > 10 << 20);
    let mut req = request_head(2, &argv_x());
    req.extend(body_packet("DOTI", &bomb));
    assert_dropped_silently(&s, &req, false);
    // Garbage that is not LZO at all.
    let mut req = request_head(2, &argv_x());
    req.extend(body_packet("DOTI", &[0x01, 0x02, 0xff, 0xfe, 0x00, 0x11]));
    assert_dropped_silently(&s, &req, false);
    s.wait_counter("dcc_rej_bad_req", 2);
    // A genuine protocol-2 request (one literal run, spec §4.5) still works.
    let doti = preprocess("int answer(void) { return 42; }\n", "x.c");
    let ex = exchange(
        s.addr(),
        &request(2, &argv_x(), &doti),
        false,
        Duration::from_secs(60),
    );
    assert!(
        ex.reply.starts_with(b"DONE00000002STAT00000000"),
        "log:\n{}",
        s.log()
    );
    assert_honest_job_succeeds(&s);
}

#[test]
fn truncated_request_then_eof_is_dropped() {
    let s = hostile_server();
    let honest = honest_request();
    for cut in [1, 11, 12, 30, honest.len() / 2, honest.len() - 1] {
        assert_dropped_silently(&s, &honest[..cut], true);
    }
    s.wait_counter("dcc_other", 6);
    assert_eq!(s.counter("dcc_rej_bad_req"), 0);
    assert_honest_job_succeeds(&s);
}

#[test]
fn bad_tokens_and_versions_are_dropped() {
    let s = hostile_server();
    let doti = preprocess("int answer(void) { return 42; }\n", "x.c");
    let mut cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        b"dist00000001".to_vec(),
        b"DIST0000000g".to_vec(),
        b"\x00\x01\x02\x03\xff\xfe\xfd\xfc\x80\x81\x82\x83".to_vec(),
    ];
    for version in [0, 4, 0xffff_ffff] {
        let mut req = request(1, &argv_x(), &doti);
        req[..12].copy_from_slice(&int_packet("DIST", version));
        cases.push(req);
    }
    // Pump mode: DIST 3 with CDIR etc.; we close right after DIST.
    let mut pump = int_packet("DIST", 3);
    pump.extend(body_packet("CDIR", b"/tmp"));
    pump.extend(int_packet("ARGC", 1));
    pump.extend(body_packet("ARGV", b"gcc"));
    cases.push(pump);
    let n = cases.len() as u64;
    for case in &cases {
        assert_dropped_silently(&s, case, false);
    }
    s.wait_counter("dcc_rej_bad_req", n);
    assert_honest_job_succeeds(&s);
}

#[test]
fn refused_commands_get_a_clear_failing_reply() {
    let s = hostile_server();
    let doti = preprocess("int answer(void) { return 42; }\n", "x.c");
    for (argv, code) in [
        (vec!["sh", "-c", "x.c", "-o", "x.o"], 110u32),
        (vec!["/usr/local/bin/gcc", "-c", "x.c", "-o", "x.o"], 110),
        (
            vec!["gcc", "-fplugin=/tmp/evil.so", "-c", "x.c", "-o", "x.o"],
            101,
        ),
    ] {
        let ex = exchange(s.addr(), &request(1, &argv, &doti), false, PROMPT);
        let reply = parse_reply_v1(&ex.reply)
            .unwrap_or_else(|| panic!("{argv:?}: no full reply ({} bytes)", ex.reply.len()));
        assert_eq!(reply.status, code << 8, "{argv:?}");
        let text = String::from_utf8_lossy(&reply.stderr);
        assert!(
            text.starts_with("dportage: ") && text.ends_with('\n'),
            "{text:?}"
        );
        assert!(reply.stdout.is_empty() && reply.object.is_empty());
    }
    s.wait_counter("dcc_other", 3);
    assert_honest_job_succeeds(&s);
}

#[test]
fn argc_zero_does_not_hurt() {
    let s = hostile_server();
    let mut req = int_packet("DIST", 1);
    req.extend(int_packet("ARGC", 0));
    req.extend(body_packet("DOTI", b"int x;\n"));
    let ex = exchange(s.addr(), &req, false, PROMPT);
    if !ex.reply.is_empty() {
        let reply = parse_reply_v1(&ex.reply).expect("a full reply if any");
        assert_ne!(reply.status, 0);
    }
    assert_honest_job_succeeds(&s);
}

/// Trickle `bytes` at one byte per `gap` on a fresh connection; return how
/// long the server took to close it and what it sent.
fn trickle(server: &DportageServer, bytes: &[u8], gap: Duration) -> (Duration, Vec<u8>) {
    let mut reader = TcpStream::connect(server.addr()).expect("connect");
    let mut writer = reader.try_clone().expect("clone");
    let data = bytes.to_vec();
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        for b in data {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(gap);
        }
    });
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("server kept a slow sender for more than 30 s")
            }
            Err(_) => break,
        }
    }
    let elapsed = start.elapsed();
    let _ = reader.shutdown(Shutdown::Both);
    let _ = sender.join();
    (elapsed, got)
}

#[test]
fn slow_and_idle_senders_are_dropped_after_io_timeout() {
    let s = DportageServer::start(&["--jobs", "2", "--io-timeout", "2"]);
    // One byte per second: never silent for 2 s, but a header takes 12 s.
    let (elapsed, got) = trickle(&s, &honest_request(), Duration::from_secs(1));
    assert!(got.is_empty(), "slow sender got a reply");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "slow sender dropped after {elapsed:?}, expected about 2 s"
    );
    // A client that starts and then says nothing.
    let mut idle = TcpStream::connect(s.addr()).expect("connect");
    idle.write_all(b"DIST0000").expect("write");
    let start = Instant::now();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "idle client got bytes");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "idle client dropped after {elapsed:?}"
    );
    s.wait_counter("dcc_other", 2);
    assert_honest_job_succeeds(&s);
}

fn wait_metric_above(server: &DportageServer, name: &str, floor: f64) {
    wait_until(
        Duration::from_secs(30),
        format_args!("{name} to rise above {floor}"),
        || metric(server, name) > floor,
    )
}

fn metric(server: &DportageServer, name: &str) -> f64 {
    let text = server.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

// Connections that have not sent a whole request no longer take a queue
// place: the caps, the queue and the stall kills are tested in `admission.rs`.

#[test]
fn many_concurrent_bad_clients_do_not_disturb_an_honest_one() {
    let s = DportageServer::start(&["--jobs", "2", "--queue", "64", "--io-timeout", "3"]);
    let addr = s.addr();
    let attackers: Vec<_> = (0..24)
        .map(|i| {
            std::thread::spawn(move || {
                let payload: Vec<u8> = match i % 4 {
                    0 => b"DIST00000001ARGCffffffff".to_vec(),
                    1 => b"DIST00000001ARGC00000001ARGV0000".to_vec(), // stalls mid-header
                    2 => lzo_bomb(8).0,
                    _ => b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
                };
                let _ = exchange(addr, &payload, false, Duration::from_secs(30));
            })
        })
        .collect();
    assert_honest_job_succeeds(&s);
    for a in attackers {
        a.join().expect("attacker thread");
    }
    assert_honest_job_succeeds(&s);
}

#[test]
fn client_eof_during_compile_kills_the_compiler() {
    let s = hostile_server();
    let doti = slow_source(100_000); // ~80 s if left alone
    let req = slow_request(&doti);
    let mut c = TcpStream::connect(s.addr()).expect("connect");
    c.write_all(&req).expect("send request");
    s.wait_for_job_processes();
    let start = Instant::now();
    c.shutdown(Shutdown::Write).expect("half-close");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    if !rest.is_empty() {
        assert!(rest.starts_with(b"DONE00000001STAT"), "unexpected bytes");
        assert!(
            !rest.starts_with(b"DONE00000001STAT00000000"),
            "a cancelled job cannot succeed"
        );
    }
    s.wait_counter("dcc_cli_disconnect", 1);
    s.wait_for_no_job_processes(Duration::from_secs(15));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_honest_job_succeeds(&s);
}

/// The pump request the real distcc 3.4 client sent (captured; `DIST 3`,
/// `CDIR`, the unpreprocessed command, `NFIL 7`, the source and header
/// files). We do not serve protocol 3 and answer as a distccd without pump
/// does: close without a byte, so the client backs the host off and compiles
/// locally.
#[test]
fn real_pump_request_is_closed_without_a_byte() {
    let s = hostile_server();
    let pump = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/pump-request.c2s.bin"
    ))
    .expect("pump capture");
    assert!(pump.starts_with(b"DIST00000003CDIR"));
    assert_dropped_silently(&s, &pump, false);
    s.wait_counter("dcc_rej_bad_req", 1);
    assert_eq!(s.counter("dcc_compile_ok"), 0);
    assert_honest_job_succeeds(&s);
}

/// Each argument that would load or run code, or touch a file outside the
/// job, is refused before anything runs: a failing STAT with the reason in
/// SERR, no object, no file created, and the server serves the next job.
#[test]
fn dangerous_flags_are_refused_before_anything_runs() {
    let s = hostile_server();
    let doti = preprocess("int answer(void) { return 42; }\n", "x.c");
    let marker_dir = shared_tempdir();
    let m = |name: &str| marker_dir.path().join(name).to_str().unwrap().to_string();
    let plugin = m("evil.so");
    let cases: Vec<Vec<String>> = vec![
        vec![format!("-fplugin={plugin}")],
        vec!["-fplugin-arg-evil-x=1".into()],
        vec![format!("-specs={}", m("evil.specs"))],
        vec![
            "-wrapper".into(),
            format!("/bin/sh,-c,touch {}", m("wrapped")),
        ],
        vec![format!("-B{}", marker_dir.path().display())],
        vec![format!("@{}", m("args.rsp"))],
        vec![format!("-iplugindir={}", marker_dir.path().display())],
        vec![format!("-fdump-tree-all={}", m("dump"))],
        vec!["-aux-info".into(), m("aux")],
        vec!["-save-temps".into()],
        vec!["-MD".into(), "-MF".into(), m("deps.d")],
        vec!["-Wl,-rpath,/tmp".into()],
        vec![format!(
            "-fprofile-generate={}",
            marker_dir.path().display()
        )],
    ];
    let n = cases.len() as u64;
    for extra in &cases {
        let mut argv: Vec<&str> = vec!["gcc"];
        argv.extend(extra.iter().map(String::as_str));
        argv.extend(["-c", "x.c", "-o", "x.o"]);
        let ex = exchange(s.addr(), &request(1, &argv, &doti), false, PROMPT);
        let reply = parse_reply_v1(&ex.reply)
            .unwrap_or_else(|| panic!("{argv:?}: no full reply ({} bytes)", ex.reply.len()));
        assert_ne!(reply.status, 0, "{argv:?} was accepted");
        let text = String::from_utf8_lossy(&reply.stderr);
        assert!(text.starts_with("dportage: "), "{argv:?}: {text:?}");
        assert!(reply.object.is_empty(), "{argv:?}");
    }
    s.wait_counter("dcc_other", n);
    assert_eq!(
        s.counter("dcc_compile_ok") + s.counter("dcc_compile_error"),
        0
    );
    let left: Vec<_> = std::fs::read_dir(marker_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "files appeared: {left:?}");
    assert_honest_job_succeeds(&s);
}

fn incbin_request(path: &str) -> Vec<u8> {
    let source = format!("__asm__(\".section .rodata\\n.incbin \\\"{path}\\\"\\n\");\nint x;\n");
    request(
        1,
        &["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "x.o"],
        source.as_bytes(),
    )
}

/// `.incbin` inside the preprocessed source passes every flag check; only
/// the sandbox stops the assembler from reading a file outside the
/// toolchain and shipping it back inside the object.
#[test]
fn incbin_of_a_file_outside_the_toolchain_reads_nothing() {
    let secret_dir = shared_tempdir();
    let secret_path = secret_dir.path().join("secret.txt");
    let secret = b"the server's secret 6f1d2c\n";
    std::fs::write(&secret_path, secret).unwrap();
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret_path = secret_path.to_str().unwrap().to_string();

    // Unconfined, the same request does leak the file: the test can fail.
    let open = DportageServer::start(&["--sandbox", "off"]);
    let ex = exchange(open.addr(), &incbin_request(&secret_path), false, PROMPT);
    let reply = parse_reply_v1(&ex.reply).expect("a reply");
    assert_eq!(
        reply.status,
        0,
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    assert!(reply.object.windows(secret.len()).any(|w| w == secret));
    drop(open);

    let s = DportageServer::start(&["--sandbox", "required", "--jobs", "2"]);
    for path in [secret_path.as_str(), "/etc/passwd"] {
        let ex = exchange(s.addr(), &incbin_request(path), false, PROMPT);
        let reply = parse_reply_v1(&ex.reply)
            .unwrap_or_else(|| panic!("{path}: no full reply; log:\n{}", s.log()));
        assert_ne!(reply.status, 0, "{path} was read");
        assert!(reply.object.is_empty());
        let text = String::from_utf8_lossy(&reply.stderr);
        assert!(
            // gas reports an unreadable file as "file not found".
            text.contains("Permission denied") || text.contains("file not found"),
            "{path}: {text}"
        );
    }
    s.wait_counter("dcc_compile_error", 2);
    assert_honest_job_succeeds(&s);
}

/// A source whose object would be 200 MB: the compiler hits the file-size
/// limit, the client gets a failing STAT and a small reply, nothing is left
/// on disk, and the server goes on.
#[test]
fn object_bomb_of_200_mb_is_stopped() {
    let s = DportageServer::start(&["--jobs", "2", "--max-object-size", "16M"]);
    let source = b"__asm__(\".section .data\\n.fill 209715200,1,0x41\\n\");\nint x;\n";
    let ex = exchange(
        s.addr(),
        &request(
            1,
            &["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "x.o"],
            source,
        ),
        false,
        Duration::from_secs(120),
    );
    let reply = parse_reply_v1(&ex.reply).unwrap_or_else(|| {
        panic!(
            "no full reply ({} bytes); log:\n{}",
            ex.reply.len(),
            s.log()
        )
    });
    assert_ne!(reply.status, 0);
    assert!(reply.object.is_empty());
    assert!(
        ex.reply.len() < 1 << 20,
        "reply of {} bytes",
        ex.reply.len()
    );
    let text = String::from_utf8_lossy(&reply.stderr).into_owned();
    assert!(!text.is_empty(), "no reason given");
    eprintln!("object bomb stderr: {text}");
    assert_eq!(s.counter("dcc_compile_ok"), 0);
    assert_honest_job_succeeds(&s);
    let left: Vec<_> = std::fs::read_dir(s.tmpdir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
}

/// A TCP connection to `addr` whose receive buffer is small (set before the
/// handshake, so the kernel cannot grow the window past it).
fn connect_with_small_receive_buffer(addr: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor we own; it is handed to
    // TcpStream (which closes it) only after a successful connect.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF");
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            libc::close(fd);
            panic!("connect: {}", std::io::Error::last_os_error());
        }
        TcpStream::from_raw_fd(fd)
    }
}

/// A client that sends a whole request and then never reads its (24 MB)
/// reply holds a connection, not the server: the write stalls, the server
/// drops it after --io-timeout, and an honest job runs meanwhile and after.
#[test]
fn client_that_never_reads_its_reply_is_dropped_after_io_timeout() {
    let s = DportageServer::start(&["--jobs", "1", "--io-timeout", "10"]);
    let source = b"__asm__(\".section .data\\n.fill 25165824,1,0x41\\n\");\nint x;\n";
    let mut lazy = connect_with_small_receive_buffer(s.addr());
    lazy.write_all(&request(
        1,
        &["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "x.o"],
        source,
    ))
    .expect("send request");
    // Once the big compile is done and its reply is being written…
    wait_metric_above(&s, "dportage_reply_bytes_total", 0.0);
    // …the single job slot is free for an honest job while the server still
    // waits on the lazy client: a stalled reply does not hold a job slot.
    assert_honest_job_succeeds(&s);
    assert_eq!(
        s.counter("dcc_cli_disconnect"),
        0,
        "the lazy client was dropped before the honest job ran"
    );
    s.wait_counter("dcc_cli_disconnect", 1);
    // What the lazy client can still read is a cut-off reply, never all 24 MB.
    lazy.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = lazy.read_to_end(&mut got);
    assert!(got.starts_with(b"DONE00000001STAT00000000"));
    assert!(
        got.len() < 24 << 20,
        "the whole reply arrived: {} bytes",
        got.len()
    );
    assert_honest_job_succeeds(&s);
}

/// Compilers (`cc1plus`) working in `dir`.
fn compilers_inside(dir: &std::path::Path) -> usize {
    processes_inside(dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "cc1plus")
                .unwrap_or(false)
        })
        .count()
}

/// Five clients at once against `--jobs 2`: all five compile, never more
/// than two compilers run at the same time, and two do run together.
#[test]
fn at_most_jobs_compilers_run_at_once() {
    let s = DportageServer::start(&["--jobs", "2"]);
    let doti = slow_source(1500); // about a second each
    let req = slow_request(&doti);
    let addr = s.addr();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let req = req.clone();
            std::thread::spawn(move || exchange(addr, &req, false, Duration::from_secs(120)))
        })
        .collect();
    let mut most = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        most = most.max(compilers_inside(s.tmpdir()));
        std::thread::sleep(Duration::from_millis(5));
    }
    for c in clients {
        let ex = c.join().expect("client thread");
        let reply = parse_reply_v1(&ex.reply).expect("a full reply");
        assert_eq!(
            reply.status,
            0,
            "{}",
            String::from_utf8_lossy(&reply.stderr)
        );
    }
    s.wait_counter("dcc_compile_ok", 5);
    assert_eq!(most, 2, "at most {most} compilers were seen at once");
}
