//! Slot locks between processes: this test binary re-runs itself as a child
//! that takes a slot and holds it until its stdin closes.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::wait_until;

use dportage::client::slots::LockDir;
use dportage::hosts::parse_host_list;

const CHILD_DIR: &str = "DPORTAGE_TEST_SLOT_CHILD_DIR";
const CHILD_HOSTS: &str = "DPORTAGE_TEST_SLOT_CHILD_HOSTS";

/// Not a test of its own: the body of the child process.
#[test]
fn lock_holder_child() {
    let (Some(dir), Some(hosts)) = (std::env::var_os(CHILD_DIR), std::env::var(CHILD_HOSTS).ok())
    else {
        return;
    };
    let dir = Path::new(&dir);
    let lock = LockDir::open(dir, Duration::from_secs(60)).unwrap();
    let hosts = parse_host_list(&hosts).unwrap();
    let (host, guard) = lock.try_acquire(&hosts, &[]).expect("child gets a slot");
    std::fs::write(dir.join("ready"), &host.verbatim).unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(guard);
}

/// [`lock_holder_child`] as the test harness names it (its path in this
/// binary, without the crate name).
fn child_test_name() -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::lock_holder_child")
}

struct Holder {
    child: Child,
}

impl Holder {
    /// Start a child holding the first free slot of `hosts`; wait until it does.
    fn start(state: &Path, hosts: &str) -> (Holder, String) {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &child_test_name(),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, state)
            .env(CHILD_HOSTS, hosts)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut holder = Holder { child };
        let ready = state.join("ready");
        let host = wait_until(
            Duration::from_secs(30),
            "the lock holder to get ready",
            || {
                if let Some(status) = holder.child.try_wait().unwrap() {
                    panic!("lock holder exited early: {status}");
                }
                std::fs::read_to_string(&ready)
                    .ok()
                    .filter(|host| !host.is_empty())
            },
        );
        std::fs::remove_file(&ready).unwrap();
        (holder, host)
    }

    /// Let the child release its slot and exit.
    fn release(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "lock holder failed: {status}");
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_slot_held_by_another_process_is_busy() {
    let state = tempfile::tempdir().unwrap();
    let hosts_text = "h/1 g/1";
    let hosts = parse_host_list(hosts_text).unwrap();
    let lock = LockDir::open(state.path(), Duration::from_secs(60)).unwrap();

    let (holder, held) = Holder::start(state.path(), hosts_text);
    assert_eq!(held, "h/1");
    let (host, guard) = lock.try_acquire(&hosts, &[]).expect("g is free");
    assert_eq!(host.verbatim, "g/1");
    assert!(
        lock.try_acquire(&hosts, &[]).is_none(),
        "h is held by the child"
    );

    holder.release();
    let (host, _h) = lock.try_acquire(&hosts, &[]).expect("h is free again");
    assert_eq!(host.verbatim, "h/1");
    drop(guard);
}

#[test]
fn a_killed_holder_releases_its_slot() {
    let state = tempfile::tempdir().unwrap();
    let hosts = parse_host_list("localhost/1").unwrap();
    let lock = LockDir::open(state.path(), Duration::from_secs(60)).unwrap();
    let (holder, _) = Holder::start(state.path(), "localhost/1");
    assert!(lock.try_acquire(&hosts, &[]).is_none());
    holder.kill();
    assert!(lock.try_acquire(&hosts, &[]).is_some());
}

#[test]
fn the_parent_holds_and_the_child_takes_the_next_slot() {
    let state = tempfile::tempdir().unwrap();
    let hosts = parse_host_list("h/2").unwrap();
    let lock = LockDir::open(state.path(), Duration::from_secs(60)).unwrap();
    let (_, mine) = lock.try_acquire(&hosts, &[]).unwrap();
    assert!(lock.slot_path("tcp_h_3632", 0).exists());
    let (holder, _) = Holder::start(state.path(), "h/2");
    // Both slots are taken now: slot 0 by us, slot 1 by the child.
    assert!(lock.try_acquire(&hosts, &[]).is_none());
    assert!(lock.slot_path("tcp_h_3632", 1).exists());
    drop(mine);
    let (_, slot0) = lock.try_acquire(&hosts, &[]).expect("slot 0 is free");
    assert!(lock.try_acquire(&hosts, &[]).is_none());
    holder.release();
    assert!(lock.try_acquire(&hosts, &[]).is_some());
    drop(slot0);
}
