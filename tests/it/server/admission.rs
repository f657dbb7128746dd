//! Admission under crowds and stalls, over real sockets: stalled connections
//! from one address cannot keep out a client from another (nor, once they
//! time out, one from the same address), clients that send
//! too slowly are dropped and counted, complete requests queue for a job
//! slot instead of being refused, and a crowd of 200 real distcc 3.4 clients
//! from one address against two job slots and default settings all get
//! correct objects from a server whose memory stays bounded.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::client::assert_same_file;
use crate::support::server::*;
use crate::support::*;

/// A TCP connection to `addr` from the local address `from` (any 127.0.0.x).
fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = addr else {
        panic!("IPv4 only")
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own; it is handed to
    // TcpStream (which closes it) only after a successful connect.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let local = sin(from, 0);
        let remote = sin(*to.ip(), to.port());
        let ok = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) == 0
            && libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) == 0;
        if !ok {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect from {from} to {addr}: {e}");
        }
        TcpStream::from_raw_fd(fd)
    }
}

/// Send `bytes` from `from`, read until the server closes.
fn exchange_from(from: Ipv4Addr, addr: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = connect_from(from, addr);
    s.write_all(bytes).expect("send request");
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("no reply within {limit:?}: {e}"));
    reply
}

/// The value of an unlabelled or labelled sample on `/metrics`.
fn metric(server: &DportageServer, sample: &str) -> u64 {
    let text = server.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
}

fn wait_metric(server: &DportageServer, sample: &str, value: u64) {
    wait_until(
        Duration::from_secs(30),
        format_args!("{sample} to reach {value}"),
        || {
            let now = metric(server, sample);
            if now == value {
                Ok(())
            } else {
                Err(format!("{sample} = {now}; log tail:\n{}", log_tail(server)))
            }
        },
    )
}

fn log_tail(server: &DportageServer) -> String {
    let log = server.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A line of the `<dportagestats>` block of the `--stats` page.
fn stats_line(server: &DportageServer, key: &str) -> u64 {
    let page = server
        .try_fetch_stats(b"GET / HTTP/1.0\r\n\r\n")
        .expect("stats page");
    let block = page
        .split_once("<dportagestats>\n")
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no <dportagestats> block in:\n{page}"));
    block
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{page}"))
}

/// (a) 63 connections from 127.0.0.2 that send a few bytes and stop: 32 are
/// read (`--max-per-client`), 31 wait their turn unread, and an honest job
/// from 127.0.0.3 is served within seconds while they are all held. An honest
/// job from 127.0.0.2 itself waits behind them and is served once the header
/// deadline has dropped the stalled ones it waited behind; one more connection
/// from 127.0.0.2 (its 65th unsent, over half of `--max-connections 128`) is
/// refused at accept and counted.
#[test]
fn stalled_connections_from_one_address_do_not_keep_out_another() {
    const STALLS: usize = 63;
    let s = DportageServer::start(&[
        "--allow",
        "127.0.0.0/8",
        "--jobs",
        "2",
        "--max-connections",
        "128",
        "--header-timeout",
        "4",
        "--io-timeout",
        "60",
    ]);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let honest = Ipv4Addr::new(127, 0, 0, 3);
    let mut held = Vec::new();
    for _ in 0..STALLS {
        let mut c = connect_from(attacker, s.addr());
        c.write_all(b"DIST0000")
            .expect("stalled connection is held");
        held.push(c);
    }
    wait_metric(&s, "dportage_connections_open", STALLS as u64);
    wait_metric(&s, "dportage_connections_unsent", STALLS as u64);

    let started = Instant::now();
    let reply = exchange_from(honest, s.addr(), &honest_request(), Duration::from_secs(30));
    let took = started.elapsed();
    let reply = parse_reply_v1(&reply).unwrap_or_else(|| {
        panic!(
            "honest client got no valid reply ({} bytes); log:\n{}",
            reply.len(),
            log_tail(&s)
        )
    });
    assert_eq!(
        reply.status,
        0,
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    assert!(reply.object.starts_with(b"\x7fELF"));
    eprintln!("honest job beside {STALLS} stalled connections from one address: {took:?}");
    assert!(took < Duration::from_secs(10), "honest job took {took:?}");
    // It went through while all of them were still held, not after they were dropped.
    assert_eq!(
        metric(&s, "dportage_stall_kills_total{phase=\"header\"}"),
        0
    );

    // An honest job from the stalled address waits its turn (its 64th
    // connection still fits), and a 65th is refused at accept.
    let addr = s.addr();
    let same_address = std::thread::spawn(move || {
        let started = Instant::now();
        let reply = exchange_from(attacker, addr, &honest_request(), Duration::from_secs(60));
        (started.elapsed(), reply)
    });
    wait_metric(&s, "dportage_connections_unsent", STALLS as u64 + 1);
    let mut extra = connect_from(attacker, s.addr());
    let _ = extra.write_all(&honest_request());
    wait_metric(&s, "dportage_refused_total{reason=\"per_client\"}", 1);
    assert_eq!(stats_line(&s, "dportage_refused_per_client"), 1);
    drop(extra);

    // The real distcc 3.4 client (from 127.0.0.1) is served meanwhile too.
    if require_distcc("stalled_connections_from_one_address_do_not_keep_out_another") {
        let work = shared_tempdir();
        std::fs::write(work.path().join("y.c"), "int y(void) { return 7; }\n").unwrap();
        let run = run_distcc(
            work.path(),
            &format!("127.0.0.1:{}", s.port),
            &["gcc", "-c", "y.c", "-o", "y.o"],
            &[("DISTCC_FALLBACK", "0")],
        );
        assert!(run.status.success(), "distcc: {}", run.stderr);
        s.wait_counter("dcc_compile_ok", 2);
    }

    // The header deadline ends the stalled ones (the first 32 once it
    // passes, the 31 that waited a turn one deadline later), each counted as
    // a stall kill; the honest job from their address is served in between.
    let (waited, reply) = same_address.join().expect("same-address client");
    let reply = parse_reply_v1(&reply).unwrap_or_else(|| {
        panic!(
            "the honest job from the stalled address got no valid reply; log:\n{}",
            log_tail(&s)
        )
    });
    assert_eq!(reply.status, 0);
    eprintln!("honest job from the stalled address: served after {waited:?}");
    wait_metric(
        &s,
        "dportage_stall_kills_total{phase=\"header\"}",
        STALLS as u64,
    );
    wait_metric(&s, "dportage_connections_open", 0);
    assert_eq!(stats_line(&s, "dportage_stall_kills_header"), STALLS as u64);
    drop(held);
    assert_honest_job_succeeds(&s);
}

/// Send `head`, then `body` at `per_second` bytes a second; how long until
/// the server closed, and what it sent.
fn send_slowly(
    server: &DportageServer,
    head: &[u8],
    body: &[u8],
    per_second: usize,
) -> (Duration, Vec<u8>) {
    let mut reader = TcpStream::connect(server.addr()).expect("connect");
    let mut writer = reader.try_clone().expect("clone");
    let (head, body) = (head.to_vec(), body.to_vec());
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        if writer.write_all(&head).is_err() {
            return;
        }
        let piece = (per_second / 10).max(1);
        for chunk in body.chunks(piece) {
            if writer.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    let elapsed = start.elapsed();
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    (elapsed, got)
}

/// A header trickled within every --io-timeout still has to be complete by
/// --header-timeout; a body slower than --min-body-rate is dropped too. Both
/// are counted as stall kills of their phase.
#[test]
fn slow_headers_and_slow_bodies_are_stall_kills() {
    let s = DportageServer::start(&[
        "--jobs",
        "1",
        "--header-timeout",
        "2",
        "--io-timeout",
        "3",
        "--min-body-rate",
        "4096",
    ]);
    // 10 bytes a second: no read waits 3 s, but the header takes far longer than 2 s.
    let (elapsed, got) = send_slowly(&s, b"", &honest_request(), 10);
    assert!(got.is_empty(), "slow header got a reply");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "slow header dropped after {elapsed:?}, expected about 2 s"
    );
    wait_metric(&s, "dportage_stall_kills_total{phase=\"header\"}", 1);

    // A whole header at once, then 1000 bytes a second of a 200 kB body:
    // less than the 12 kB per 3 s that 4096 bytes a second asks for.
    let mut head = request_head(1, &["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "x.o"]);
    head.extend(int_packet("DOTI", 200_000));
    let (elapsed, got) = send_slowly(&s, &head, &vec![b' '; 200_000], 1000);
    assert!(got.is_empty(), "slow body got a reply");
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_secs(12),
        "slow body dropped after {elapsed:?}, expected about 3 s"
    );
    wait_metric(&s, "dportage_stall_kills_total{phase=\"body\"}", 1);
    assert_eq!(
        metric(&s, "dportage_stall_kills_total{phase=\"header\"}"),
        1
    );
    assert_honest_job_succeeds(&s);
}

/// With one job slot busy, a complete request waits in the queue (and is
/// served once the slot frees); past --queue the next gets the busy answer
/// (`BUSY` + reason) and is counted. The real distcc 3.4 client takes that
/// answer as a failure to distribute and compiles locally at once and
/// correctly, with and without DISTCC_SKIP_LOCAL_RETRY; ours goes to its
/// next host without backing the busy one off, or compiles locally.
#[test]
fn complete_requests_queue_and_past_the_queue_get_a_busy_answer() {
    let s = DportageServer::start(&["--jobs", "1", "--queue", "1", "--io-timeout", "30"]);
    let doti = slow_source(100_000); // ~80 s if left alone
    let mut busy = TcpStream::connect(s.addr()).expect("connect");
    busy.write_all(&slow_request(&doti)).expect("send");
    s.wait_for_job_processes();

    let addr = s.addr();
    let queued = std::thread::spawn(move || {
        exchange(addr, &honest_request(), false, Duration::from_secs(60))
    });
    wait_metric(&s, "dportage_queue_depth", 1);
    let held = metric(&s, "dportage_queued_bytes");
    assert!(held > 0, "the queued request holds no bytes");

    let ex = exchange(s.addr(), &honest_request(), false, Duration::from_secs(20));
    let answer = String::from_utf8_lossy(&ex.reply);
    assert!(
        answer.starts_with("BUSY") && answer.contains("over --queue"),
        "a request past --queue got {answer:?}"
    );
    s.wait_counter("dcc_rej_overload", 1);
    wait_metric(&s, "dportage_refused_total{reason=\"queue_full\"}", 1);
    wait_metric(&s, "dportage_busy_answers_total", 1);
    let mut refused = 1;

    if require_distcc("complete_requests_queue_and_past_the_queue_get_a_busy_answer") {
        let work = shared_tempdir();
        std::fs::write(work.path().join("b.c"), "int b(int x) { return x + 3; }\n").unwrap();
        run_checked(
            Command::new("gcc")
                .args(["-c", "b.c", "-o", "local.o"])
                .current_dir(work.path()),
            "local reference compile",
        );
        for extra in [&[][..], &[("DISTCC_SKIP_LOCAL_RETRY", "1")][..]] {
            let _ = std::fs::remove_file(work.path().join("b.o"));
            let started = Instant::now();
            let run = run_distcc(
                work.path(),
                &format!("127.0.0.1:{}", s.port),
                &["gcc", "-c", "b.c", "-o", "b.o"],
                extra,
            );
            let took = started.elapsed();
            assert!(run.status.success(), "distcc {extra:?}: {}", run.stderr);
            assert!(
                run.stderr.contains("busy"),
                "distcc 3.4 shows the reason: {}",
                run.stderr
            );
            assert_same_file(&work.path().join("b.o"), &work.path().join("local.o"));
            assert!(
                took < Duration::from_secs(15),
                "distcc {extra:?} took {took:?}"
            );
            refused += 1;
            wait_metric(&s, "dportage_busy_answers_total", refused);
        }
    }

    // Ours: the busy host is skipped for this job, not backed off; the next
    // host compiles it, or (alone) the job is compiled here.
    let other = DportageServer::start(&["--jobs", "1"]);
    for (hosts, served_elsewhere) in [
        (
            format!("127.0.0.1:{} 127.0.0.1:{}", s.port, other.port),
            true,
        ),
        (format!("127.0.0.1:{}", s.port), false),
    ] {
        let mut env = crate::support::client::ClientEnv::new(&hosts);
        env.set("DISTCC_VERBOSE", "1");
        env.write("c.c", "int c(int x) { return x * 5; }\n");
        env.reference(&["gcc", "-c", "c.c", "-o", "local.o"]);
        let out = env.distcc(&["gcc", "-c", "c.c", "-o", "c.o"]);
        assert_success(&out, "our client beside a busy host");
        assert_eq!(env.read("c.o"), env.read("local.o"), "hosts {hosts}");
        assert!(stderr_text(&out).contains("busy"), "{}", stderr_text(&out));
        assert!(
            !env.backoff_file(s.port).exists(),
            "a busy host must not be backed off"
        );
        refused += 1;
        wait_metric(&s, "dportage_busy_answers_total", refused);
        if served_elsewhere {
            other.wait_counter("dcc_compile_ok", 1);
        }
    }

    // Free the slot: the client goes away, its compiler is killed.
    busy.shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let ex = queued.join().expect("queued client");
    let reply = parse_reply_v1(&ex.reply)
        .unwrap_or_else(|| panic!("queued job got no reply; log:\n{}", log_tail(&s)));
    assert_eq!(
        reply.status,
        0,
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    wait_metric(&s, "dportage_queue_depth", 0);
    wait_metric(&s, "dportage_queued_bytes", 0);
    assert_honest_job_succeeds(&s);
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// (b) 200 real distcc 3.4 clients at once, all from 127.0.0.1, against a
/// server with default admission settings and --jobs 2, with no local
/// fallback (DISTCC_FALLBACK=0), each allowed 200 connections to the host:
/// every one succeeds (the per-address cap counts only connections still
/// sending; the others queue), each object equals a local compile of its
/// source, the server counts 200 COMPILE_OK, and its peak memory stays
/// bounded.
#[test]
fn two_hundred_concurrent_distcc_clients_against_two_slots() {
    const CLIENTS: usize = 200;
    if !require_distcc("two_hundred_concurrent_distcc_clients_against_two_slots") {
        return;
    }
    let s = DportageServer::start(&["--jobs", "2", "--io-timeout", "120"]);
    let pid = s.pid().expect("server pid");
    let rss_before = peak_rss_kib(pid);
    let work = shared_tempdir();
    let src = work.path().join("src");
    let remote = work.path().join("remote");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&remote).unwrap();
    for i in 0..CLIENTS {
        std::fs::write(
            src.join(format!("t{i}.c")),
            format!("int f{i}(int x) {{ return x * {i} + 1; }}\n"),
        )
        .unwrap();
    }
    let hosts = format!("127.0.0.1:{}/{CLIENTS}", s.port);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let state = tempfile::tempdir().expect("DISTCC_DIR");
            let mut cmd = Command::new("/usr/bin/distcc");
            cmd.args(["gcc", "-c", &format!("t{i}.c"), "-o"])
                .arg(remote.join(format!("t{i}.o")))
                .current_dir(&src)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("DISTCC_HOSTS", &hosts)
                .env("DISTCC_DIR", state.path())
                .env("DISTCC_FALLBACK", "0")
                .env("DISTCC_IO_TIMEOUT", "120")
                .env("TMPDIR", state.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            (state, cmd.spawn().expect("spawn distcc"))
        })
        .collect();
    let mut failures = Vec::new();
    for (i, (_state, child)) in clients.into_iter().enumerate() {
        let out = child.wait_with_output().expect("distcc");
        if !out.status.success() {
            failures.push(format!(
                "t{i}: {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed, first: {}\nlog tail:\n{}",
        failures.len(),
        failures[0],
        log_tail(&s)
    );
    s.wait_counter("dcc_compile_ok", CLIENTS as u64);
    assert_eq!(s.counter("dcc_rej_overload"), 0);
    assert_eq!(
        metric(&s, "dportage_refused_total{reason=\"per_client\"}"),
        0
    );

    // One local gcc run compiles every reference object next to its source.
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("t{i}.c")).collect();
    run_checked(
        Command::new("gcc").arg("-c").args(&names).current_dir(&src),
        "local reference compile",
    );
    for i in 0..CLIENTS {
        let ours = std::fs::read(remote.join(format!("t{i}.o"))).expect("remote object");
        let local = std::fs::read(src.join(format!("t{i}.o"))).expect("local object");
        assert!(ours == local, "t{i}.o differs from a local compile");
    }
    let peak = peak_rss_kib(pid);
    eprintln!(
        "{CLIENTS} distcc clients against --jobs 2: all served in {took:?}; \
         server VmHWM {peak} KiB (at start {rss_before} KiB)"
    );
    assert!(
        peak < 64 * 1024,
        "server peak RSS {peak} KiB for {CLIENTS} tiny jobs"
    );
}

/// Many large requests queued behind a busy job slot: their sources (over
/// the 1 MiB spool threshold) wait on disk, so the server's peak memory stays
/// well below their sum (what remains is the few requests in flight at once
/// and what the allocator keeps of them), and once the slot frees every one
/// is compiled from its own source into the right object.
#[test]
fn large_queued_requests_are_spooled_and_memory_stays_bounded() {
    const REQUESTS: usize = 24;
    const PAD: usize = 6 << 20;
    let s = DportageServer::start(&["--jobs", "1", "--io-timeout", "60"]);
    let pid = s.pid().expect("server pid");
    let mut busy = TcpStream::connect(s.addr()).expect("connect");
    busy.write_all(&slow_request(&slow_source(100_000)))
        .expect("send");
    s.wait_for_job_processes();

    let work = shared_tempdir();
    let mut queued = Vec::new();
    for i in 0..REQUESTS {
        // Preprocessed C: a line marker naming the file, a function, and
        // 6 MiB of blank lines (what a huge generated header can look like).
        let mut source =
            format!("# 1 \"big{i}.c\"\nint big{i}(int x) {{ return x * {i}; }}\n").into_bytes();
        source.resize(source.len() + PAD, b'\n');
        std::fs::write(work.path().join(format!("big{i}.i")), &source).unwrap();
        let req = request(
            1,
            &[
                "x86_64-linux-gnu-gcc",
                "-c",
                &format!("big{i}.c"),
                "-o",
                &format!("big{i}.o"),
            ],
            &source,
        );
        let mut c = TcpStream::connect(s.addr()).expect("connect");
        c.write_all(&req).expect("send a large request");
        // One at a time: each is whole and queued before the next is sent.
        wait_metric(&s, "dportage_queue_depth", i as u64 + 1);
        queued.push(c);
    }
    wait_metric(&s, "dportage_spooled_requests_total", REQUESTS as u64);
    let held = metric(&s, "dportage_queued_bytes");
    assert!(
        held < 1 << 20,
        "{REQUESTS} spooled requests still hold {held} bytes in memory"
    );
    let queued_peak = peak_rss_kib(pid);
    assert_eq!(stats_line(&s, "dportage_spooled_requests"), REQUESTS as u64);

    busy.shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    for (i, mut c) in queued.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).expect("reply");
        let reply = parse_reply_v1(&reply)
            .unwrap_or_else(|| panic!("big{i}: no valid reply; log:\n{}", log_tail(&s)));
        assert_eq!(
            reply.status,
            0,
            "big{i}: {}",
            String::from_utf8_lossy(&reply.stderr)
        );
        run_checked(
            Command::new("gcc")
                .args(["-c", &format!("big{i}.i"), "-o", &format!("big{i}.o")])
                .current_dir(work.path()),
            "local reference compile",
        );
        let local = std::fs::read(work.path().join(format!("big{i}.o"))).unwrap();
        assert!(
            reply.object == local,
            "big{i}.o differs from a local compile"
        );
    }
    let peak = peak_rss_kib(pid);
    let sum_kib = (REQUESTS * PAD / 1024) as u64;
    eprintln!(
        "{REQUESTS} queued requests of {} MiB each ({} MiB in all): server VmHWM {} MiB \
         while queued, {} MiB after running them",
        PAD >> 20,
        sum_kib / 1024,
        queued_peak / 1024,
        peak / 1024
    );
    assert!(
        queued_peak < sum_kib / 2,
        "server peak RSS {queued_peak} KiB with {sum_kib} KiB of sources queued"
    );
}
