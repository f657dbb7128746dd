//! The macro-benchmark's process plumbing (benches/macro/procs.rs), tested on
//! real processes: the server-CPU figure must count the daemon and not the
//! compilers it runs, and every process the benchmark starts must be gone
//! after it.

#[allow(dead_code)]
#[path = "../../../benches/macro/procs.rs"]
mod procs;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::{Duration, Instant};

use procs::{CpuTracker, Daemon};

use crate::support::{poll_until, wait_until};

fn alive(pid: i32) -> bool {
    procs::read_stat(pid).is_some_and(|s| !s.comm.is_empty()) && crate::support::alive(pid)
}

fn wait_for_file(path: &std::path::Path) -> String {
    wait_until(
        Duration::from_secs(20),
        format_args!("{} to appear", path.display()),
        || {
            std::fs::read_to_string(path)
                .ok()
                .filter(|t| t.ends_with('\n'))
        },
    )
}

/// A shell that burns CPU itself, in a subshell (same command name, exits
/// before the end) and in `yes` (another command name: "the compiler").
#[test]
fn server_cpu_counts_the_daemon_and_its_own_workers_but_not_other_programs() {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let script = format!(
        "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; \
         ( j=0; while [ $j -lt 30000 ]; do j=$((j+1)); done ); \
         timeout 0.6 yes > /dev/null; \
         echo done > {}; exec sleep 30",
        done.display()
    );
    let mut child = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    let pid = child.id() as i32;
    let tracker = CpuTracker::start();
    let index = tracker.register(vec![pid]);
    let started = Instant::now();
    wait_for_file(&done);
    let elapsed = started.elapsed();
    let own_ns = tracker.cpu_ns(index);
    let _ = child.kill();
    let _ = child.wait();

    // Two 30 000-step shell loops are tens of milliseconds of CPU at least;
    // `yes` ran 600 ms on a core and must not be in the figure.
    assert!(
        own_ns >= 10_000_000,
        "the shell's own loops were not counted: {own_ns} ns"
    );
    assert!(
        (own_ns as u128) < elapsed.as_nanos().saturating_sub(500_000_000),
        "`yes` (another program) was counted: {own_ns} ns in {elapsed:?}"
    );
}

#[test]
fn run_measured_reports_exit_code_and_cpu_and_kills_the_group_on_timeout() {
    let mut ok = Command::new("sh");
    ok.args([
        "-c",
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3",
    ]);
    let m = procs::run_measured(&mut ok, Duration::from_secs(30)).unwrap();
    assert_eq!(m.exit_code, Some(3));
    assert!(!m.timed_out);
    assert!(m.cpu > Duration::ZERO, "no CPU measured: {m:?}");

    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    let mut slow = Command::new("sh");
    slow.arg("-c")
        .arg(format!("sleep 60 & echo $! > {}; wait", pidfile.display()));
    let started = Instant::now();
    let m = procs::run_measured(&mut slow, Duration::from_millis(500)).unwrap();
    assert!(m.timed_out, "{m:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let grandchild: i32 = wait_for_file(&pidfile).trim().parse().unwrap();
    poll_until(Duration::from_secs(5), || !alive(grandchild));
    assert!(!alive(grandchild), "the timed-out command's child survived");
}

/// A daemon that listens and has a child in a process group of its own (as
/// distccd's compilers are): dropping the handle leaves neither alive.
#[test]
fn dropping_a_daemon_kills_it_and_its_descendants() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 2);
    let port = procs::free_port_on(&[ip]).unwrap();
    let addr = SocketAddrV4::new(ip, port);
    let pidfile = dir.path().join("child");
    let script = format!(
        "import os, socket, subprocess, time\n\
         p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n\
         open('{pidfile}', 'w').write(str(p.pid) + '\\n')\n\
         s = socket.socket(); s.bind(('{ip}', {port})); s.listen()\n\
         time.sleep(60)\n",
        pidfile = pidfile.display()
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &script]);
    let daemon = Daemon::start(
        "fake daemon",
        cmd,
        addr,
        dir.path(),
        Duration::from_secs(20),
    )
    .expect("the fake daemon listens");
    let pid = daemon.pid();
    let child: i32 = wait_for_file(&pidfile).trim().parse().unwrap();
    assert!(alive(pid) && alive(child));
    drop(daemon);
    poll_until(Duration::from_secs(5), || !alive(pid) && !alive(child));
    assert!(!alive(pid), "the daemon survived");
    assert!(
        !alive(child),
        "the daemon's child in its own session survived"
    );
    assert!(!procs::is_listening(addr));
}

#[test]
fn a_daemon_that_dies_before_listening_is_reported_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 2);
    let port = procs::free_port_on(&[ip]).unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo 'serve: not implemented yet' >&2; exit 100"]);
    let err = match Daemon::start(
        "fake serve",
        cmd,
        SocketAddrV4::new(ip, port),
        dir.path(),
        Duration::from_secs(20),
    ) {
        Ok(_) => panic!("a daemon that exits was reported as listening"),
        Err(e) => e,
    };
    assert!(err.contains("not implemented yet"), "{err}");
    assert!(err.contains("exit status: 100"), "{err}");
}
