//! The daemon around the jobs: command line, start-up failures, privileges,
//! nice, the stats page and metrics, access control, graceful shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::server::*;
use crate::support::*;

fn run_serve(args: &[&str]) -> std::process::Output {
    let tmp = shared_tempdir();
    let mut child = Command::new(dportage_bin())
        .arg("serve")
        .args(args)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_with_limit(&mut child, Duration::from_secs(30));
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

#[test]
fn help_and_version_work_under_both_names() {
    let out = run_serve(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--allow",
        "--jobs",
        "--stats-port",
        "--job-lifetime",
        "--masquerade-dir",
        "--io-timeout",
        "--queue",
        "--queue-bytes",
        "--max-connections",
        "--max-per-client",
        "--header-timeout",
        "--min-body-rate",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}:\n{text}");
    }
    let out = run_serve(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("distccd 3.4"));
    // Installed as `distccd` (a link), the same binary is the server.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("distccd");
    std::os::unix::fs::symlink(dportage_bin(), &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--allow-private"));
}

#[test]
fn bad_and_unsupported_options_exit_101_with_a_message() {
    for args in [
        &["--frobnicate"][..],
        &["--zeroconf"],
        &["--auth"],
        &["--whitelist=/etc/x"],
        &["--blacklist", "/etc/x"],
        &["--jobs", "201"],
        &["--jobs", "0"],
        &["--allow", "not-an-address"],
        &["--allow", "10.0.0.0/40"],
        &["--log-level", "shouty"],
        &["--port", "99999"],
        &["--max-object-size", "lots"],
        &["--io-timeout", "0"],
    ] {
        let out = run_serve(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn start_up_failures_have_distccd_exit_codes() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run_serve(&[
        "--no-detach",
        "--listen",
        "127.0.0.1",
        "--port",
        &port,
        "--allow",
        "127.0.0.1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(102),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));

    let out = run_serve(&[
        "--no-detach",
        "--port",
        "1",
        "--masquerade-dir",
        "/nonexistent/dportage",
    ]);
    assert_eq!(
        out.status.code(),
        Some(110),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
}

fn nice_of(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    // Fields after the name start at 3 (state); nice is field 19.
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[test]
fn nice_privileges_and_no_new_privs() {
    let own_nice = nice_of(std::process::id());
    let s = DportageServer::start(&["-N", "7"]);
    let pid = s.pid().unwrap();
    assert_eq!(nice_of(pid), (own_nice + 7).min(19));
    assert_eq!(proc_field(pid, "status", "NoNewPrivs:"), "1");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let uids = proc_field(pid, "status", "Uid:");
        assert!(
            uids.split_whitespace().all(|u| u != "0"),
            "still root: {uids}"
        );
        let gids = proc_field(pid, "status", "Gid:");
        assert!(
            gids.split_whitespace().all(|g| g != "0"),
            "still in group root: {gids}"
        );
    }
    assert_honest_job_succeeds(&s);
}

#[test]
fn access_list_denies_silently() {
    let s = DportageServer::start_with(&["--allow", "10.0.0.0/8", "--allow", "::1"], false, &[]);
    let ex = exchange(s.addr(), &honest_request(), false, Duration::from_secs(10));
    assert!(ex.reply.is_empty());
    let log = s.wait_for_log("denied by access list", Duration::from_secs(10));
    assert!(log.contains("127.0.0.1"), "{log}");
}

#[test]
fn ipv4_mapped_peers_match_ipv4_allow_entries() {
    let s = DportageServer::start(&["--listen", "::ffff:127.0.0.1", "--allow", "127.0.0.0/8"]);
    assert_honest_job_succeeds(&s);
    // The log line follows the reply.
    s.wait_for_log("client: 127.0.0.1:", Duration::from_secs(10));
}

#[test]
fn pid_file_and_lifetime() {
    let tmp = shared_tempdir();
    let pid_file = tmp.path().join("distccd.pid");
    let mut s =
        DportageServer::start(&["--lifetime", "3", "--pid-file", pid_file.to_str().unwrap()]);
    let written = std::fs::read_to_string(&pid_file).expect("pid file written");
    assert_eq!(written.trim(), s.pid().unwrap().to_string());
    let status = s.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    assert!(!pid_file.exists(), "pid file left behind");
}

/// The shape of each line: HTTP and tag lines verbatim, `dcc_*` lines as the
/// key plus the kind of value.
fn layout(page: &str) -> Vec<String> {
    page.split('\n')
        .map(|line| match line.split_once(' ') {
            Some((key, value)) if key.starts_with("dcc_") => {
                let kind = if value.parse::<i64>().is_ok() {
                    "int"
                } else if value.ends_with(" MB") && value[..value.len() - 3].parse::<i64>().is_ok()
                {
                    "int MB"
                } else if value.split_once('.').is_some_and(|(a, b)| {
                    a.parse::<u64>().is_ok() && b.len() == 2 && b.parse::<u64>().is_ok()
                }) {
                    "decimal.2"
                } else if !value.is_empty() && !value.contains(' ') {
                    "word"
                } else {
                    "?"
                };
                format!("{key} <{kind}>")
            }
            _ => line.to_string(),
        })
        .collect()
}

#[test]
fn stats_page_has_distccd_layout() {
    let s = DportageServer::start(&[]);
    assert_honest_job_succeeds(&s);
    s.wait_counter("dcc_compile_ok", 1);
    let page = s.try_fetch_stats(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let capture = std::fs::read("/work/shared/captures/stats-page-http.s2c.bin")
        .ok()
        .or_else(|| {
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/protocol-fixtures/stats-page-http.s2c.bin"
            ))
            .ok()
        });
    let capture = match capture {
        Some(c) => String::from_utf8(c).unwrap(),
        None => {
            eprintln!("note: stats-page capture not found; comparing structure only");
            page.split_once("<dportagestats>\n")
                .map_or(page.clone(), |(distccd_part, _)| distccd_part.to_string())
        }
    };
    assert!(!page.contains('\r'), "the page uses bare LF line ends");
    // distccd's part, up to `</distccstats>`, is laid out as distccd's;
    // dportage's admission figures follow in a block of their own.
    let (distccd_part, ours) = page
        .split_once("<dportagestats>\n")
        .expect("a <dportagestats> block");
    assert!(ours.ends_with("</dportagestats>\n"), "{ours}");
    assert_eq!(layout(distccd_part), layout(&capture), "page:\n{page}");
    let stats = crate::support::serve::parse_stats(&page);
    assert_eq!(stats["dcc_compile_ok"], "1");
    assert_eq!(stats["dcc_longest_job"], "x.c");
    assert_eq!(stats["dcc_longest_job_compiler"], "x86_64-linux-gnu-gcc");
    assert_eq!(stats["dcc_num_compiles1"], "1");
    assert!(stats["dcc_max_RSS_name"].starts_with('('));
    // Any request, even none at all, gets the page.
    let mut c = TcpStream::connect(("127.0.0.1", s.stats_port.unwrap())).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut empty_request_page = String::new();
    c.read_to_string(&mut empty_request_page).unwrap();
    assert_eq!(layout(&empty_request_page), layout(&page));
}

/// Kills a process group we started, when dropped.
struct GroupGuard(u32);
impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: signalling the process group of a child we started.
        unsafe {
            libc::kill(-(self.0 as i32), libc::SIGKILL);
            libc::kill(self.0 as i32, libc::SIGKILL);
        }
    }
}

#[test]
fn stats_page_layout_equals_live_real_distccd() {
    if !have_distcc() {
        return;
    }
    let tmp = shared_tempdir();
    let (port, stats_port) = (free_port(), free_port());
    let mut child = Command::new("/usr/bin/distccd")
        .args([
            "--no-detach",
            "--daemon",
            "--listen",
            "127.0.0.1",
            "--allow",
            "127.0.0.1",
            "--log-stderr",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--stats",
            "--stats-port",
            &stats_port.to_string(),
        ])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start real distccd");
    let _guard = GroupGuard(child.id());
    let theirs = wait_until(
        Duration::from_secs(20),
        "the real distccd's stats to answer",
        || {
            let page = TcpStream::connect(("127.0.0.1", stats_port))
                .ok()
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                    c.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
                    let mut out = String::new();
                    c.read_to_string(&mut out).ok()?;
                    (!out.is_empty()).then_some(out)
                });
            assert!(
                page.is_some() || child.try_wait().unwrap().is_none(),
                "real distccd exited"
            );
            page
        },
    );
    let s = DportageServer::start(&[]);
    let page = s.try_fetch_stats(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    // distccd's block is byte for byte in its layout; dportage's own figures
    // follow it in a block of their own.
    let (ours, extra) = page
        .split_once("<dportagestats>\n")
        .expect("a <dportagestats> block");
    assert!(extra.ends_with("</dportagestats>\n"), "{extra}");
    assert!(extra.contains("dportage_queue_depth 0\n"), "{extra}");
    assert_eq!(
        layout(ours),
        layout(&theirs),
        "ours:\n{ours}\ntheirs:\n{theirs}"
    );
}

#[test]
fn metrics_in_prometheus_text_format() {
    let s = DportageServer::start(&[]);
    assert_honest_job_succeeds(&s);
    assert_eq!(
        exchange(s.addr(), b"DIST00000009", false, Duration::from_secs(10))
            .reply
            .len(),
        0
    );
    s.wait_counter("dcc_rej_bad_req", 1);
    let raw = s.metrics();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"));
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
    for needle in [
        "dportage_jobs_total{result=\"compile_ok\"} 1\n",
        "dportage_jobs_total{result=\"rej_bad_req\"} 1\n",
        "dportage_jobs_running 0\n",
        "dportage_queue_depth 0\n",
        "dportage_job_duration_seconds_count 1\n",
        "dportage_job_duration_seconds_bucket{le=\"+Inf\"} 1\n",
        "# TYPE dportage_job_duration_seconds histogram\n",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
    }
    let bytes_in: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("dportage_request_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes_in >= honest_request().len() as u64);
    // Every sample line is `name{labels} value` with a numeric value.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
}

#[test]
fn sigterm_lets_the_running_job_finish() {
    let mut s = DportageServer::start(&["--jobs", "2"]);
    let doti = slow_source(4000); // a few seconds of compiling
    let req = slow_request(&doti);
    let addr = s.addr();
    let client = std::thread::spawn(move || exchange(addr, &req, false, Duration::from_secs(120)));
    s.wait_for_job_processes();
    let pid = s.pid().unwrap();
    // SAFETY: signalling the server we started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    // New connections are refused once the listener is closed…
    wait_until(
        Duration::from_secs(10),
        "the listener to close after SIGTERM",
        || TcpStream::connect(addr).is_err(),
    );
    // …while the running job completes normally.
    let ex = client.join().unwrap();
    let reply =
        parse_reply_v1(&ex.reply).unwrap_or_else(|| panic!("no full reply; log:\n{}", s.log()));
    assert_eq!(
        reply.status,
        0,
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    assert!(reply.object.starts_with(b"\x7fELF"));
    let status = s.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));
}

/// Without `--no-detach` the server goes into the background as distccd
/// does: the command returns 0 at once, the pid file names the daemon, it
/// serves jobs, and SIGTERM to that pid ends it and removes the pid file.
#[test]
fn detaches_into_the_background_by_default() {
    let tmp = shared_tempdir();
    let pid_file = tmp.path().join("distccd.pid");
    let log_file = tmp.path().join("distccd.log");
    let port = free_port();
    let mut starter = Command::new(dportage_bin())
        .arg("serve")
        .args(["--port", &port.to_string()])
        .args(["--listen", "127.0.0.1", "--allow", "127.0.0.1"])
        .arg(format!("--pid-file={}", pid_file.display()))
        .arg(format!("--log-file={}", log_file.display()))
        .args(["--log-level", "info"])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dportage serve");
    let status = wait_with_limit(&mut starter, Duration::from_secs(30));
    assert!(status.success(), "the starting process failed: {status}");
    let daemon: i32 = wait_until(Duration::from_secs(30), "the pid file", || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    // Whatever happens below, the daemon goes.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: signalling the daemon this test started (pid from its pid file).
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let guard = KillOnDrop(daemon);
    assert_ne!(
        daemon as u32,
        starter.id(),
        "the pid file names the starter"
    );
    wait_until(Duration::from_secs(30), "the daemon to listen", || {
        std::fs::read_to_string(&log_file)
            .unwrap_or_default()
            .contains("listening on")
    });
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let ex = exchange(addr, &honest_request(), false, Duration::from_secs(60));
    let reply = parse_reply_v1(&ex.reply).expect("a reply from the detached daemon");
    assert_eq!(
        reply.status,
        0,
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    wait_until(
        Duration::from_secs(30),
        "the daemon to obey SIGTERM",
        || {
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(daemon, 0) != 0 }
        },
    );
    assert!(!pid_file.exists(), "pid file left behind");
    std::mem::forget(guard);
}

/// A link named `distccd` is the daemon, options and all: it serves a job
/// and its stats page.
#[test]
fn a_link_named_distccd_serves_jobs() {
    let dir = shared_tempdir();
    let link = dir.path().join("distccd");
    std::os::unix::fs::symlink(dportage_bin(), &link).unwrap();
    let s = DportageServer::start_program(&link, &[], &["--jobs", "1"], true, &[]);
    assert_honest_job_succeeds(&s);
    s.wait_counter("dcc_compile_ok", 1);
}
