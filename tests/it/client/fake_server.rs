//! Our client against scripted servers: exact request bytes, the edge cases of
//! the reply (empty object, SERR/SOUT, signals, truncation, wrong version,
//! oversized bodies, silence) and the fallback rules that follow (spec §8.8–§8.10).

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::client::*;
use crate::support::*;

/// What the fake server does with one connection, after reading the request.
enum Behaviour {
    /// Check the client keeps its sending side open, then send these bytes and close.
    Reply(Vec<u8>),
    /// Never answer; hold the connection until the client gives up.
    Silence,
}

struct FakeServer {
    port: u16,
    /// Complete requests read so far.
    received: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl FakeServer {
    /// Serve one connection per behaviour, in order.
    fn start(behaviours: Vec<Behaviour>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let thread = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for behaviour in behaviours {
                let Some(mut stream) = accept_within(&listener, Duration::from_secs(30)) else {
                    break;
                };
                stream.set_nonblocking(false).unwrap();
                let request = read_request(&mut stream, |d| request_len(d).is_some());
                if request_len(&request).is_none() {
                    // The client abandoned the job (e.g. its preprocessor failed).
                    requests.push(request);
                    continue;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    Behaviour::Reply(bytes) => {
                        assert_no_half_close(&mut stream);
                        let _ = stream.write_all(&bytes);
                    }
                    Behaviour::Silence => {
                        stream
                            .set_read_timeout(Some(Duration::from_secs(30)))
                            .unwrap();
                        let mut sink = [0u8; 1024];
                        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    }
                }
                requests.push(request);
            }
            requests
        });
        FakeServer {
            port,
            received,
            thread: Some(thread),
        }
    }

    fn hostspec(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The requests received (joins the server thread).
    fn requests(mut self) -> Vec<Vec<u8>> {
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("fake server thread")
    }
}

fn accept_within(listener: &TcpListener, limit: Duration) -> Option<TcpStream> {
    poll_until(limit, || match listener.accept() {
        Ok((stream, _)) => Some(Some(stream)),
        Err(e) if e.kind() == ErrorKind::WouldBlock => None,
        Err(_) => Some(None),
    })
    .flatten()
}

/// distcc 3.4 servers kill the job when the client half-closes; ours must not.
fn assert_no_half_close(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => panic!("client half-closed (or closed) its side before the reply"),
        Ok(_) => panic!("client sent bytes after DOTI"),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        ),
    }
}

/// Length of a complete protocol 1/2 request at the start of `data`.
fn request_len(data: &[u8]) -> Option<usize> {
    let header = |at: usize| -> Option<(&[u8], usize)> {
        let h = data.get(at..at + 12)?;
        let value = usize::from_str_radix(std::str::from_utf8(&h[4..]).ok()?, 16).ok()?;
        Some((&h[..4], value))
    };
    let (_, _) = header(0)?;
    let (_, argc) = header(12)?;
    let mut at = 24;
    for _ in 0..argc {
        let (_, len) = header(at)?;
        at += 12 + len;
    }
    let (_, doti) = header(at)?;
    let end = at + 12 + doti;
    (data.len() >= end).then_some(end)
}

fn packet(token: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{token}{:08x}", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// A protocol 1 reply.
fn reply(status: u32, stderr: &[u8], stdout: &[u8], object: &[u8]) -> Vec<u8> {
    let mut out = format!("DONE00000001STAT{status:08x}").into_bytes();
    out.extend(packet("SERR", stderr));
    out.extend(packet("SOUT", stdout));
    out.extend(packet("DOTO", object));
    out
}

fn setup(hosts: &str) -> ClientEnv {
    let env = ClientEnv::new(hosts);
    write_file(&env.work(), "x.c", "int answer(void) { return 42; }\n");
    env
}

fn local_reference(env: &ClientEnv) -> Vec<u8> {
    run_ok("gcc", &["-c", "x.c", "-o", "reference.o"], &env.work());
    fs::read(env.work().join("reference.o")).unwrap()
}

#[test]
fn request_bytes_match_real_distcc() {
    // The capture proto1-compile-ok (real distcc 3.4, `distcc gcc -c x.c -o x.o`).
    let on_debian_x86_64 = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("x86_64-linux-gnu-gcc").exists());
    let server = FakeServer::start(vec![Behaviour::Reply(reply(0, b"", b"", b"OBJ"))]);
    let env = setup(&server.hostspec());
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "distcc gcc -c x.c -o x.o");
    assert_eq!(fs::read(env.work().join("x.o")).unwrap(), b"OBJ");
    let requests = server.requests();
    let request = &requests[0];
    let compiler: &[u8] = if on_debian_x86_64 {
        b"x86_64-linux-gnu-gcc"
    } else {
        b"gcc"
    };
    let mut head = b"DIST00000001ARGC00000005".to_vec();
    for arg in [compiler, b"-c", b"x.c", b"-o", b"x.o"] {
        head.extend(packet("ARGV", arg));
    }
    assert!(
        request.starts_with(&head),
        "request head differs from real distcc's:\n{}",
        String::from_utf8_lossy(request)
    );
    let cpp = std::process::Command::new(String::from_utf8_lossy(compiler).as_ref())
        .args(["-E", "x.c"])
        .current_dir(env.work())
        .output()
        .unwrap();
    assert_eq!(&request[head.len()..], &packet("DOTI", &cpp.stdout)[..]);
}

#[test]
fn empty_object_creates_empty_file_and_output_streams_are_shown() {
    let serr = b"server warning \x1b[31mred\x1b[0m \x1b]0;title\x07text\r\n\xe2\x80\x98quoted\xe2\x80\x99\n";
    let server = FakeServer::start(vec![
        Behaviour::Reply(reply(0, b"", b"", b"")),
        Behaviour::Reply(reply(0, serr, b"hello from server stdout\n", b"OBJECT")),
    ]);
    let env = setup(&server.hostspec());
    fs::write(env.work().join("x.o"), b"stale contents").unwrap();
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "empty object");
    assert_eq!(fs::read(env.work().join("x.o")).unwrap(), b"");

    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "deep/er/x.o"]);
    assert_success(&out, "SERR/SOUT");
    assert_eq!(fs::read(env.work().join("deep/er/x.o")).unwrap(), b"OBJECT");
    assert_eq!(out.stdout, b"hello from server stdout\n");
    assert_eq!(
        stderr_text(&out),
        "server warning red text\n\u{2018}quoted\u{2019}\n"
    );
    assert_eq!(server.requests().len(), 2);
    assert!(env.leftover_temp_files().is_empty());
}

/// A reply the client must treat as a failure to distribute.
fn check_falls_back(name: &str, bytes: Vec<u8>) {
    let server = FakeServer::start(vec![Behaviour::Reply(bytes)]);
    let env = setup(&server.hostspec());
    let reference = local_reference(&env);
    let started = Instant::now();
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, name);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{name}: too slow"
    );
    assert!(
        stderr_text(&out).contains("failed to distribute"),
        "{name}: {}",
        stderr_text(&out)
    );
    assert_eq!(
        fs::read(env.work().join("x.o")).unwrap(),
        reference,
        "{name}"
    );
    assert!(
        env.backoff_file(server.port).exists(),
        "{name}: host not backed off"
    );
    assert_eq!(server.requests().len(), 1, "{name}");
    assert!(env.leftover_temp_files().is_empty(), "{name}");
}

#[test]
fn broken_replies_fall_back_to_local() {
    check_falls_back(
        "signal status",
        reply(0x8b, b"Segmentation fault\n", b"", b""),
    );
    check_falls_back("exit code 200", reply(200 << 8, b"", b"", b""));
    check_falls_back("truncated after STAT", b"DONE00000001STAT00000000".to_vec());
    check_falls_back("truncated inside DOTO", {
        let mut r = reply(0, b"", b"", b"0123456789");
        r.truncate(r.len() - 3);
        r
    });
    check_falls_back("wrong DONE version", {
        let mut r = reply(0, b"", b"", b"OBJ");
        r[11] = b'2';
        r
    });
    check_falls_back(
        "wrong token",
        b"DONE00000001STAT00000000SOUT00000000".to_vec(),
    );
    check_falls_back("not hex", b"DONE0000000xSTAT00000000".to_vec());
    check_falls_back("body on failure", reply(0x100, b"", b"", b"junk"));
    check_falls_back(
        "absurd SERR length",
        b"DONE00000001STAT00000000SERR7fffffff".to_vec(),
    );
    check_falls_back(
        "SERR over 16 MiB",
        reply(0, &vec![b'e'; 17 * 1024 * 1024], b"", b"OBJ"),
    );
    check_falls_back("nothing at all", Vec::new());
}

#[test]
fn silent_server_times_out_after_distcc_io_timeout() {
    let server = FakeServer::start(vec![Behaviour::Silence]);
    let mut env = setup(&server.hostspec());
    env.set("DISTCC_IO_TIMEOUT", "1");
    let reference = local_reference(&env);
    let started = Instant::now();
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    let elapsed = started.elapsed();
    assert_success(&out, "silent server");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );
    assert!(
        stderr_text(&out).contains("DISTCC_IO_TIMEOUT"),
        "{}",
        stderr_text(&out)
    );
    assert_eq!(fs::read(env.work().join("x.o")).unwrap(), reference);
    assert!(env.backoff_file(server.port).exists());
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn remote_compile_error_rules() {
    let serr = b"x.c:1:1: error: \x1b[01;31mbroken\x1b[m\n";
    // Default: retried locally; the local compile succeeds, so the host stays backed off.
    let server = FakeServer::start(vec![Behaviour::Reply(reply(0x100, serr, b"", b""))]);
    let env = setup(&server.hostspec());
    let reference = local_reference(&env);
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "remote error, local success");
    assert!(
        !stderr_text(&out).contains("broken"),
        "server stderr must not be shown: {}",
        stderr_text(&out)
    );
    assert_eq!(fs::read(env.work().join("x.o")).unwrap(), reference);
    assert!(env.backoff_file(server.port).exists());
    server.requests();

    // DISTCC_SKIP_LOCAL_RETRY: the server's verdict stands, its stderr is shown (cleaned).
    let server = FakeServer::start(vec![Behaviour::Reply(reply(0x100, serr, b"", b""))]);
    let mut env = setup(&server.hostspec());
    env.set("DISTCC_SKIP_LOCAL_RETRY", "1");
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_eq!(out.status.code(), Some(1));
    // distcc 3.4's verdict line, then the server's diagnostics.
    let stderr = stderr_text(&out);
    let (verdict, diagnostics) = stderr.split_once('\n').unwrap();
    assert!(
        verdict.starts_with("distcc[")
            && verdict.ends_with(&format!(
                "] ERROR: compile x.c on {} failed",
                server.hostspec()
            )),
        "{stderr}"
    );
    assert_eq!(diagnostics, "x.c:1:1: error: broken\n");
    assert!(!env.work().join("x.o").exists());
    assert!(!env.backoff_file(server.port).exists());
    server.requests();

    // DISTCC_FALLBACK=0 and a crashed compiler: exit 128 + signal, stderr shown.
    let server = FakeServer::start(vec![Behaviour::Reply(reply(
        0x8b,
        b"Segmentation fault\n",
        b"",
        b"",
    ))]);
    let mut env = setup(&server.hostspec());
    env.set("DISTCC_FALLBACK", "0");
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_eq!(out.status.code(), Some(139), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains("Segmentation fault"));
    assert!(!env.work().join("x.o").exists());
    server.requests();
}

#[test]
fn preprocessor_failure_compiles_locally_without_contacting_twice() {
    let server = FakeServer::start(vec![Behaviour::Reply(reply(0, b"", b"", b"never used"))]);
    let env = setup(&server.hostspec());
    write_file(
        &env.work(),
        "missing.c",
        "#include \"does-not-exist.h\"\nint x;\n",
    );
    let out = env.distcc(&["gcc", "-c", "missing.c", "-o", "missing.o"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_text(&out);
    assert_eq!(
        stderr.matches("does-not-exist.h").count(),
        2,
        "one diagnostic (file + caret line): {stderr}"
    );
    assert!(!env.work().join("missing.o").exists());
    assert!(
        !env.backoff_file(server.port).exists(),
        "the server did nothing wrong"
    );
    // The head went out while the preprocessor ran; DOTI never did.
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].starts_with(b"DIST00000001"));
    assert!(request_len(&requests[0]).is_none(), "DOTI must not be sent");
    assert!(env.leftover_temp_files().is_empty());
}

#[test]
fn preprocessed_input_is_sent_as_is() {
    let server = FakeServer::start(vec![Behaviour::Reply(reply(0, b"", b"", b"OBJ"))]);
    let env = setup(&server.hostspec());
    let source = "# 1 \"pre.c\"\nint pre(void) { return 1; }\n";
    write_file(&env.work(), "pre.i", source);
    let out = env.distcc(&["gcc", "-c", "pre.i"]);
    assert_success(&out, "distcc gcc -c pre.i");
    assert_eq!(fs::read(env.work().join("pre.o")).unwrap(), b"OBJ");
    let requests = server.requests();
    assert!(requests[0].ends_with(&packet("DOTI", source.as_bytes())));
    assert!(Path::new(&env.tmpdir())
        .read_dir()
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn interrupted_client_leaves_no_temp_files() {
    let server = FakeServer::start(vec![Behaviour::Silence]);
    let env = setup(&server.hostspec());
    let mut child = env
        .command_in(
            env.distcc_link(),
            &["gcc", "-c", "x.c", "-o", "x.o"],
            &env.work(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The preprocessed source exists while the client waits for the (silent) server.
    wait_until(
        Duration::from_secs(20),
        "the client to wait for the reply",
        || server.received.load(Ordering::SeqCst) > 0 && !env.leftover_temp_files().is_empty(),
    );
    // SAFETY: kill on the pid of a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "the client must die by the signal: {status}"
    );
    assert!(
        env.leftover_temp_files().is_empty(),
        "{:?}",
        env.leftover_temp_files()
    );
    assert!(!env.work().join("x.o").exists());
    server.requests();
}

#[test]
fn messages_go_to_distcc_log_or_uncached_err_fd() {
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let mut env = setup(&format!("127.0.0.1:{dead}"));
    let log = env.root.path().join("client.log");
    env.set("DISTCC_LOG", log.to_str().unwrap());
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "dead host with DISTCC_LOG");
    assert!(out.stderr.is_empty(), "{}", stderr_text(&out));
    assert!(fs::read_to_string(&log)
        .unwrap()
        .contains("failed to distribute"));

    // ccache's UNCACHED_ERR_FD: our messages bypass the (cached) stderr.
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let env = setup(&format!("127.0.0.1:{dead}"));
    let side = env.root.path().join("uncached.txt");
    let side_file = fs::File::create(&side).unwrap();
    let side_fd = side_file.as_raw_fd();
    let mut command = env.command_in(
        env.distcc_link(),
        &["gcc", "-c", "x.c", "-o", "x.o"],
        &env.work(),
    );
    command.env("UNCACHED_ERR_FD", "7");
    // SAFETY: dup2 is async-signal-safe; runs in the child between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // dup2(7, 7) is a no-op that keeps O_CLOEXEC, so when the file
            // already sits on fd 7 the flag has to be cleared by hand.
            if side_fd == 7 {
                if libc::fcntl(7, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(side_fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert_success(&out, "dead host with UNCACHED_ERR_FD");
    assert!(out.stderr.is_empty(), "{}", stderr_text(&out));
    assert!(fs::read_to_string(&side)
        .unwrap()
        .contains("failed to distribute"));
}

#[test]
fn requests_match_real_distcc_byte_for_byte() {
    if !require_distcc("requests_match_real_distcc_byte_for_byte") {
        return;
    }
    let commands: [&[&str]; 6] = [
        &["gcc", "-c", "x.c", "-o", "x.o"],
        &[
            "gcc",
            "-DFOO=1",
            "-I/usr/include",
            "-include",
            "stdio.h",
            "-c",
            "x.c",
        ],
        &["cc", "-O2", "-MD", "-c", "x.c", "-o", "sub/x.o"],
        &["clang", "-c", "x.c", "-o", "x.o"],
        &["gcc", "-S", "x.c"],
        &["g++", "-x", "c++", "-c", "x.c", "-o", "xx.o"],
    ];
    for suffix in ["", ",lzo"] {
        for command in commands {
            if command[0] == "clang" && !Path::new("/usr/bin/clang").exists() {
                continue;
            }
            let version = if suffix.is_empty() { b'1' } else { b'2' };
            let reply_bytes = |version: u8| {
                let object = if version == b'2' {
                    dportage::protocol::lzo::compress(b"OBJ")
                } else {
                    b"OBJ".to_vec()
                };
                let mut r = reply(0, b"", b"", &object);
                r[11] = version;
                r
            };
            let server = FakeServer::start(vec![
                Behaviour::Reply(reply_bytes(version)),
                Behaviour::Reply(reply_bytes(version)),
            ]);
            let env = setup(&format!("{}{suffix}", server.hostspec()));
            fs::create_dir_all(env.work().join("sub")).unwrap();
            let real = env
                .command_in(DISTCC, command, &env.work())
                .output()
                .unwrap();
            assert_success(&real, &format!("real distcc {command:?}"));
            let ours = env.distcc(command);
            assert_success(&ours, &format!("our distcc {command:?}"));
            let requests = server.requests();
            assert_eq!(requests.len(), 2, "{command:?}{suffix}");
            assert!(
                requests[0] == requests[1],
                "{command:?} with {suffix:?}: our request differs from distcc 3.4's\nreal: {}\nours: {}",
                String::from_utf8_lossy(&requests[0][..requests[0].len().min(300)]),
                String::from_utf8_lossy(&requests[1][..requests[1].len().min(300)])
            );
        }
    }
}

#[test]
fn unusable_distcc_dir_with_fallback_off_fails_like_distcc() {
    let server = FakeServer::start(vec![]);
    let mut env = setup(&server.hostspec());
    // A regular file where the lock directory should be: no slots can be locked.
    let blocker = env.root.path().join("not-a-dir");
    fs::write(&blocker, "").unwrap();
    env.set("DISTCC_DIR", blocker.to_str().unwrap());
    env.set("DISTCC_FALLBACK", "0");
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_eq!(out.status.code(), Some(116), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains("failed to distribute and fallbacks are disabled"));
    assert!(!env.work().join("x.o").exists());

    // With fallback allowed the job still compiles here.
    env.set("DISTCC_FALLBACK", "1");
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "unusable DISTCC_DIR with fallback");
    assert!(env.work().join("x.o").exists());
    server.requests();
}
