//! Sharing one `DISTCC_DIR` with the real `distcc` 3.4 client: its slot locks
//! and backoff files must mean the same to us, and ours to it.
//!
//! Hosts are listeners of this test on 127.0.0.1. distcc holds a host's slot
//! from before it connects until the job ends, so "a connection arrived" tells
//! us it holds the slot, and dropping the connection ends its job (it then backs
//! the host off and, with `DISTCC_FALLBACK=0`, exits without compiling).

use crate::support::*;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dportage::client::slots::LockDir;
use dportage::hosts::parse_host_list;

const DEADLINE: Duration = Duration::from_secs(30);

/// The real client, a work directory, and the `DISTCC_DIR` it shares with
/// our lock directory.
struct Shared {
    distcc: PathBuf,
    work: tempfile::TempDir,
    state: tempfile::TempDir,
    lock: LockDir,
}

impl Shared {
    fn new() -> Option<Shared> {
        let distcc = real_distcc(module_path!())?;
        let state = tempfile::tempdir().unwrap();
        let lock = LockDir::open(state.path(), Duration::from_secs(60)).unwrap();
        Some(Shared {
            distcc,
            work: tempfile::tempdir().unwrap(),
            state,
            lock,
        })
    }

    /// distcc on `hosts`.
    fn run(&self, hosts: &str) -> Distcc {
        Distcc::start(
            &self.distcc,
            self.work.path(),
            self.state.path(),
            hosts,
            &[],
        )
    }

    /// distcc on `hosts`, logging verbosely to the file returned.
    fn run_logged(&self, hosts: &str) -> (Distcc, PathBuf) {
        let log = self.state.path().join("distcc.log");
        let log_text = log.to_str().unwrap().to_string();
        let run = Distcc::start(
            &self.distcc,
            self.work.path(),
            self.state.path(),
            hosts,
            &[("DISTCC_VERBOSE", "1"), ("DISTCC_LOG", &log_text)],
        );
        (run, log)
    }
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A real `distcc gcc -c x.c` run, killed if the test gives up on it.
struct Distcc {
    child: Child,
}

impl Distcc {
    fn start(
        distcc: &Path,
        work: &Path,
        state: &Path,
        hosts: &str,
        extra: &[(&str, &str)],
    ) -> Distcc {
        std::fs::write(work.join("x.c"), "int f(void) { return 1; }\n").unwrap();
        let mut cmd = Command::new(distcc);
        cmd.args(["gcc", "-c", "x.c", "-o", "x.o"])
            .current_dir(work)
            .env("DISTCC_HOSTS", hosts)
            .env("DISTCC_DIR", state)
            .env("DISTCC_FALLBACK", "0")
            .env("DISTCC_PAUSE_TIME_MSEC", "50")
            .env("TMPDIR", work)
            .env_remove("DISTCC_VERBOSE")
            .env_remove("DISTCC_LOG")
            .env_remove("DISTCC_BACKOFF_PERIOD")
            .env_remove("_DISTCC_SAFEGUARD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Distcc {
            child: cmd.spawn().expect("spawn distcc"),
        }
    }

    /// The next connection on `l`; fails if distcc exits first.
    fn connection(&mut self, l: &TcpListener) -> TcpStream {
        accept_while_running(l, &mut self.child, DEADLINE, "distcc to connect")
    }

    /// The next connection on `l` is refused: distcc backs the host off
    /// and, without fallback, gives up ("no hosts", 116).
    fn refused_at(mut self, l: &TcpListener) {
        drop(self.connection(l));
        assert_eq!(self.exit_code(), 116);
    }

    fn exit_code(mut self) -> i32 {
        wait_until(DEADLINE, "distcc to exit", || {
            self.child.try_wait().unwrap()
        })
        .code()
        .unwrap_or(-1)
    }
}

impl Drop for Distcc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn no_connection(l: &TcpListener) -> bool {
    matches!(l.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn wait_for_file_containing(path: &Path, needle: &str) {
    wait_until(
        DEADLINE,
        format_args!("{} to contain {needle:?}", path.display()),
        || std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle)),
    )
}

#[test]
fn a_slot_held_by_distcc_is_busy_for_us_and_its_backoff_counts() {
    let Some(w) = Shared::new() else {
        return;
    };
    let (l, port) = listener();
    let hosts_text = format!("127.0.0.1:{port}/1");
    let hosts = parse_host_list(&hosts_text).unwrap();
    let lock = &w.lock;

    let mut real = w.run(&hosts_text);
    let conn = real.connection(&l);
    // distcc named the file as we do, and holds it.
    assert!(lock.slot_path(&format!("tcp_127.0.0.1_{port}"), 0).exists());
    assert!(
        lock.try_acquire(&hosts, &[]).is_none(),
        "distcc holds the only slot"
    );

    // Refuse the job: distcc backs the host off and gives up.
    drop(conn);
    assert_eq!(real.exit_code(), 116);
    let host = &hosts.hosts[0];
    assert!(lock.backoff_path(&host.lock_stem()).exists());
    assert!(
        lock.is_backed_off(host),
        "distcc's backoff file counts for us"
    );
    assert!(lock.try_acquire(&hosts, &[]).is_none());
    lock.clear(host);
    assert!(
        lock.try_acquire(&hosts, &[]).is_some(),
        "free once the backoff is cleared"
    );
}

#[test]
fn distcc_takes_another_host_while_we_hold_one() {
    let Some(w) = Shared::new() else {
        return;
    };
    let (l1, p1) = listener();
    let (l2, p2) = listener();
    let hosts_text = format!("127.0.0.1:{p1}/1 127.0.0.1:{p2}/1");
    let hosts = parse_host_list(&hosts_text).unwrap();
    let lock = &w.lock;
    let (mine, guard) = lock.try_acquire(&hosts, &[]).unwrap();
    assert_eq!(mine.verbatim, format!("127.0.0.1:{p1}/1"));

    let mut real = w.run(&hosts_text);
    let conn = real.connection(&l2);
    assert!(no_connection(&l1), "distcc must not use the slot we hold");
    drop(conn);
    // distcc backed the second host off and now waits for ours.
    drop(guard);
    real.refused_at(&l1);
}

#[test]
fn distcc_waits_while_we_hold_the_only_slot() {
    let Some(w) = Shared::new() else {
        return;
    };
    let (l, port) = listener();
    let hosts_text = format!("127.0.0.1:{port}/1");
    let hosts = parse_host_list(&hosts_text).unwrap();
    let lock = &w.lock;
    let (_, guard) = lock.try_acquire(&hosts, &[]).unwrap();

    let (real, log) = w.run_logged(&hosts_text);
    wait_for_file_containing(&log, "nothing available, sleeping");
    assert!(
        no_connection(&l),
        "distcc connected although we hold the slot"
    );
    drop(guard);
    real.refused_at(&l);
}

#[test]
fn our_backoff_keeps_distcc_away() {
    let Some(w) = Shared::new() else {
        return;
    };
    let (l, port) = listener();
    let hosts_text = format!("127.0.0.1:{port}");
    let hosts = parse_host_list(&hosts_text).unwrap();
    let lock = &w.lock;
    lock.mark_failed(&hosts.hosts[0]);

    let real = w.run(&hosts_text);
    // Every host backed off and no fallback: "no hosts" at once.
    assert_eq!(real.exit_code(), 116);
    assert!(no_connection(&l));
}

#[test]
fn distcc_waits_for_a_local_slot_we_hold() {
    let Some(w) = Shared::new() else {
        return;
    };
    let (l, port) = listener();
    // One preprocessor slot; distcc needs it before it connects.
    let hosts_text = format!("--localslots_cpp=1 127.0.0.1:{port}");
    let lock = &w.lock;
    let local = lock.acquire_local(1, Duration::from_millis(10));
    assert!(local.is_locked());

    let (real, log) = w.run_logged(&hosts_text);
    wait_for_file_containing(&log, "cpu_localhost_0 is busy");
    assert!(no_connection(&l), "distcc preprocesses before it connects");
    drop(local);
    real.refused_at(&l);
}
