//! Cooperation between concurrent client processes, exactly as distcc 3.4 does it
//! so both clients can share one `DISTCC_DIR` (spec §8.5): slots are `fcntl`
//! write-locks on `$DISTCC_DIR/lock/cpu_<stem>_<n>`, backoff is the mtime of
//! `$DISTCC_DIR/lock/backoff_<stem>_0`.
//!
//! The locks are POSIX record locks on the whole file. We take them as
//! open-file-description locks (`F_OFD_SETLK`, Linux ≥ 3.15), which conflict
//! with distcc's classic `F_SETLK` locks across processes exactly as classic
//! ones do, and in addition conflict *within* one process: two guards for the
//! same slot in one process exclude each other, and dropping one guard never
//! releases another (classic locks are per process, so closing any descriptor
//! of the file would). Kernels without OFD locks get classic `F_SETLK`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::hosts::{HostList, HostSpec};

/// distcc 3.4 tries slots 0‥49 only, whatever a host's limit says.
pub const MAX_SLOTS_PER_HOST: u32 = 50;

/// Waiting for a slot never polls faster than this, whatever `pause` says.
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// A held slot; released when dropped (the lock lives as long as the descriptor).
#[derive(Debug)]
pub struct SlotGuard {
    /// `None` when the lock file could not be used at all and the job goes on
    /// without a slot (better than waiting forever on a broken directory).
    _file: Option<File>,
    /// Which of the host's slots (0 without a lock): what monitors show.
    slot: u32,
}

impl SlotGuard {
    /// The slot's number on its host.
    pub fn number(&self) -> u32 {
        self.slot
    }

    /// Does this guard really hold a lock?
    pub fn is_locked(&self) -> bool {
        self._file.is_some()
    }
}

/// The lock directory and the backoff period.
#[derive(Debug, Clone)]
pub struct LockDir {
    pub dir: PathBuf,
    /// `DISTCC_BACKOFF_PERIOD` (default 60 s; zero disables backoff files).
    pub backoff_period: Duration,
}

/// Outcome of one non-blocking lock attempt.
enum Try {
    Locked(File),
    Busy,
    /// The file cannot be opened or locked for another reason.
    Broken(std::io::Error),
}

impl LockDir {
    /// `$DISTCC_DIR/lock`, created if missing. `distcc_dir` itself must exist
    /// (distcc runs every job locally when it does not).
    pub fn open(distcc_dir: &std::path::Path, backoff_period: Duration) -> std::io::Result<Self> {
        if !distcc_dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is not a directory: create it or point DISTCC_DIR elsewhere",
                    distcc_dir.display()
                ),
            ));
        }
        let dir = distcc_dir.join("lock");
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", dir.display()),
                ))
            }
        }
        Ok(LockDir {
            dir,
            backoff_period,
        })
    }

    /// The lock file of `slot` on the host with lock stem `stem`.
    pub fn slot_path(&self, stem: &str, slot: u32) -> PathBuf {
        self.dir.join(format!("cpu_{stem}_{slot}"))
    }

    /// The backoff file of the host with lock stem `stem`.
    pub fn backoff_path(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("backoff_{stem}_0"))
    }

    /// Try once, in distcc's order (slot 0 of every host before slot 1 of any),
    /// to lock a slot on a host that is not down, not backed off and not in `exclude`
    /// (compared by `verbatim`). `None` when every slot is busy.
    pub fn try_acquire(
        &self,
        hosts: &HostList,
        exclude: &[String],
    ) -> Option<(HostSpec, SlotGuard)> {
        let eligible = self.eligible(hosts, exclude);
        self.try_eligible(&eligible)
    }

    /// Like `try_acquire`, waiting `pause` between attempts while slots are busy.
    /// `None` only when no eligible host exists at all.
    pub fn acquire(
        &self,
        hosts: &HostList,
        exclude: &[String],
        pause: Duration,
    ) -> Option<(HostSpec, SlotGuard)> {
        loop {
            // Re-read backoff each round: a host may fail while we wait.
            let eligible = self.eligible(hosts, exclude);
            if eligible.is_empty() {
                return None;
            }
            if let Some(found) = self.try_eligible(&eligible) {
                return Some(found);
            }
            tracing::debug!("every host slot is busy; waiting {pause:?}");
            std::thread::sleep(pause.max(MIN_PAUSE));
        }
    }

    /// A local compile slot (`cpu_localhost_<n>`, n < `limit`), waiting as above.
    pub fn acquire_local(&self, limit: u32, pause: Duration) -> SlotGuard {
        let limit = limit.clamp(1, MAX_SLOTS_PER_HOST);
        loop {
            for slot in 0..limit {
                match try_lock(&self.slot_path("localhost", slot)) {
                    Try::Locked(file) => {
                        return SlotGuard {
                            _file: Some(file),
                            slot,
                        }
                    }
                    Try::Busy => {}
                    Try::Broken(e) => {
                        tracing::warn!(
                            "cannot lock a local slot in {}: {e}; running without one",
                            self.dir.display()
                        );
                        return SlotGuard {
                            _file: None,
                            slot: 0,
                        };
                    }
                }
            }
            tracing::debug!("every local slot is busy; waiting {pause:?}");
            std::thread::sleep(pause.max(MIN_PAUSE));
        }
    }

    /// Is `host` in backoff?
    pub fn is_backed_off(&self, host: &HostSpec) -> bool {
        if self.backoff_period.is_zero() {
            return false;
        }
        let Ok(meta) = std::fs::metadata(self.backoff_path(&host.lock_stem())) else {
            return false;
        };
        let Ok(mtime) = meta.modified() else {
            return false;
        };
        match SystemTime::now().duration_since(mtime) {
            Ok(age) => age < self.backoff_period,
            // Marked in the future (clock skew): still in backoff, as for distcc.
            Err(_) => true,
        }
    }

    /// Back `host` off (touch its backoff file). No-op when the period is zero.
    pub fn mark_failed(&self, host: &HostSpec) {
        if self.backoff_period.is_zero() {
            return;
        }
        let path = self.backoff_path(&host.lock_stem());
        // Like distcc: no truncation, one byte at offset 0, so the mtime is now.
        let result = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|mut f| f.write_all(b"x"));
        if let Err(e) = result {
            tracing::warn!(
                "cannot mark {} as failed in {}: {e}",
                host.verbatim,
                path.display()
            );
        }
    }

    /// A job on `host` succeeded: remove its backoff file.
    pub fn clear(&self, host: &HostSpec) {
        if self.backoff_period.is_zero() {
            return;
        }
        let path = self.backoff_path(&host.lock_stem());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
        }
    }

    fn eligible<'a>(&self, hosts: &'a HostList, exclude: &[String]) -> Vec<&'a HostSpec> {
        hosts
            .hosts
            .iter()
            .filter(|h| !h.down)
            .filter(|h| !exclude.contains(&h.verbatim))
            .filter(|h| !self.is_backed_off(h))
            .collect()
    }

    fn try_eligible(&self, hosts: &[&HostSpec]) -> Option<(HostSpec, SlotGuard)> {
        let most = hosts.iter().map(|h| h.limit).max()?.min(MAX_SLOTS_PER_HOST);
        for slot in 0..most {
            for host in hosts.iter().filter(|h| slot < h.limit) {
                match try_lock(&self.slot_path(&host.lock_stem(), slot)) {
                    Try::Locked(file) => {
                        return Some((
                            (*host).clone(),
                            SlotGuard {
                                _file: Some(file),
                                slot,
                            },
                        ))
                    }
                    Try::Busy => {}
                    Try::Broken(e) => {
                        tracing::warn!(
                            "cannot lock slot {slot} of {} in {}: {e}",
                            host.verbatim,
                            self.dir.display()
                        );
                    }
                }
            }
        }
        None
    }
}

/// Open (creating, mode 0666 minus umask, as distcc) and write-lock the whole
/// file without waiting.
fn try_lock(path: &Path) -> Try {
    let file = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(file) => file,
        Err(e) => return Try::Broken(e),
    };
    match lock_whole_file(&file) {
        Ok(()) => Try::Locked(file),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Try::Busy,
        Err(e) => Try::Broken(e),
    }
}

fn lock_whole_file(file: &File) -> std::io::Result<()> {
    // SAFETY: an all-zero `flock` is valid; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0; // the whole file, however long it grows
    lock.l_pid = 0; // required for OFD locks
    #[cfg(target_os = "linux")]
    {
        // SAFETY: fcntl with a valid descriptor and a pointer to a live flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
        // Kernel without OFD locks: fall back to the classic per-process lock.
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::parse_host_list;

    fn lock_dir(period: Duration) -> (tempfile::TempDir, LockDir) {
        let t = tempfile::tempdir().unwrap();
        let l = LockDir::open(t.path(), period).unwrap();
        (t, l)
    }

    #[test]
    fn open_creates_lock_but_not_the_state_directory() {
        let t = tempfile::tempdir().unwrap();
        let l = LockDir::open(t.path(), Duration::from_secs(60)).unwrap();
        assert!(l.dir.is_dir());
        assert_eq!(l.dir, t.path().join("lock"));
        // Again: an existing lock directory is fine.
        LockDir::open(t.path(), Duration::from_secs(60)).unwrap();
        let e = LockDir::open(&t.path().join("missing"), Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("DISTCC_DIR"), "{e}");
    }

    #[test]
    fn slot_zero_of_every_host_comes_first() {
        let (_t, l) = lock_dir(Duration::from_secs(60));
        let hosts = parse_host_list("a/2 b:4000/3 localhost/1").unwrap();
        let mut held = Vec::new();
        let mut order = Vec::new();
        while let Some((host, guard)) = l.try_acquire(&hosts, &[]) {
            order.push(host.verbatim.clone());
            held.push(guard);
        }
        assert_eq!(
            order,
            [
                "a/2",
                "b:4000/3",
                "localhost/1",
                "a/2",
                "b:4000/3",
                "b:4000/3"
            ]
        );
        for name in [
            "cpu_tcp_a_3632_0",
            "cpu_tcp_a_3632_1",
            "cpu_tcp_b_4000_0",
            "cpu_tcp_b_4000_1",
            "cpu_tcp_b_4000_2",
            "cpu_localhost_0",
        ] {
            let meta = std::fs::metadata(l.dir.join(name)).unwrap();
            assert_eq!(meta.len(), 0, "{name}");
        }
        // Releasing one slot makes exactly that slot available again.
        held.remove(3);
        let (host, _g) = l.try_acquire(&hosts, &[]).unwrap();
        assert_eq!(host.verbatim, "a/2");
        assert!(l.try_acquire(&hosts, &[]).is_none());
    }

    #[test]
    fn guards_in_one_process_exclude_each_other() {
        let (_t, l) = lock_dir(Duration::from_secs(60));
        let hosts = parse_host_list("h/1").unwrap();
        let first = l.try_acquire(&hosts, &[]).unwrap();
        assert!(l.try_acquire(&hosts, &[]).is_none());
        // A second descriptor of the same file does not release the first lock.
        let again = OpenOptions::new()
            .write(true)
            .open(l.slot_path("tcp_h_3632", 0))
            .unwrap();
        drop(again);
        assert!(l.try_acquire(&hosts, &[]).is_none());
        drop(first);
        assert!(l.try_acquire(&hosts, &[]).is_some());
    }

    #[test]
    fn down_excluded_and_backed_off_hosts_are_skipped() {
        let (_t, l) = lock_dir(Duration::from_secs(60));
        let hosts = parse_host_list("a/1,down b/1 c/1").unwrap();
        let (h, _g1) = l.try_acquire(&hosts, &["b/1".to_string()]).unwrap();
        assert_eq!(h.verbatim, "c/1");
        assert!(l.try_acquire(&hosts, &["b/1".to_string()]).is_none());
        let b = &hosts.hosts[1];
        l.mark_failed(b);
        assert!(l.is_backed_off(b));
        assert_eq!(std::fs::read(l.backoff_path("tcp_b_3632")).unwrap(), b"x");
        assert!(l.try_acquire(&hosts, &[]).is_none());
        // Marking again keeps one byte (no append).
        l.mark_failed(b);
        assert_eq!(std::fs::read(l.backoff_path("tcp_b_3632")).unwrap(), b"x");
        l.clear(b);
        assert!(!l.is_backed_off(b));
        assert!(!l.backoff_path("tcp_b_3632").exists());
        l.clear(b);
        let (h, _g2) = l.try_acquire(&hosts, &[]).unwrap();
        assert_eq!(h.verbatim, "b/1");
        // No eligible host at all: acquire gives up at once.
        assert!(l
            .acquire(
                &hosts,
                &["b/1".into(), "c/1".into()],
                Duration::from_secs(3600)
            )
            .is_none());
    }

    #[test]
    fn backoff_expires_and_can_be_disabled() {
        let (_t, l) = lock_dir(Duration::from_secs(60));
        let hosts = parse_host_list("h").unwrap();
        let h = &hosts.hosts[0];
        let path = l.backoff_path(&h.lock_stem());
        std::fs::write(&path, "x").unwrap();
        let file = File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(61))
            .unwrap();
        assert!(!l.is_backed_off(h));
        file.set_modified(SystemTime::now() - Duration::from_secs(59))
            .unwrap();
        assert!(l.is_backed_off(h));
        file.set_modified(SystemTime::now() + Duration::from_secs(600))
            .unwrap();
        assert!(l.is_backed_off(h));

        let off = LockDir {
            dir: l.dir.clone(),
            backoff_period: Duration::ZERO,
        };
        assert!(!off.is_backed_off(h));
        off.clear(h);
        assert!(path.exists(), "a zero period leaves backoff files alone");
        std::fs::remove_file(&path).unwrap();
        off.mark_failed(h);
        assert!(!path.exists());
    }

    #[test]
    fn local_slots_share_files_with_the_localhost_entry() {
        let (_t, l) = lock_dir(Duration::from_secs(60));
        let hosts = parse_host_list("localhost/2").unwrap();
        let g0 = l.acquire_local(2, Duration::from_millis(1));
        assert!(g0.is_locked());
        let (h, _g1) = l.try_acquire(&hosts, &[]).unwrap();
        assert!(h.is_local());
        assert!(l.dir.join("cpu_localhost_1").exists());
        assert!(l.try_acquire(&hosts, &[]).is_none());
        drop(g0);
        assert!(l.try_acquire(&hosts, &[]).is_some());
    }

    #[test]
    fn acquire_waits_for_a_release() {
        let (_t, l) = lock_dir(Duration::from_secs(60));
        let hosts = parse_host_list("h/1").unwrap();
        let (_, held) = l.try_acquire(&hosts, &[]).unwrap();
        let waiter = {
            let l = l.clone();
            let hosts = hosts.clone();
            std::thread::spawn(move || l.acquire(&hosts, &[], Duration::from_millis(20)))
        };
        // The waiter cannot finish while the slot is held; release it.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(held);
        let got = waiter.join().unwrap();
        assert!(got.is_some());

        let local = l.acquire_local(1, Duration::from_millis(1));
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || l.acquire_local(1, Duration::from_millis(20)).is_locked())
        };
        drop(local);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn limits_above_fifty_use_fifty_slots() {
        let (_t, l) = lock_dir(Duration::from_secs(60));
        let hosts = parse_host_list("h/60").unwrap();
        let mut held = Vec::new();
        while let Some((_, g)) = l.try_acquire(&hosts, &[]) {
            held.push(g);
        }
        assert_eq!(held.len(), 50);
        assert!(!l.slot_path("tcp_h_3632", 50).exists());
    }

    #[test]
    fn an_unusable_lock_directory_does_not_hang() {
        let (_t, l) = lock_dir(Duration::from_secs(60));
        // A directory where the lock file should be: it cannot be opened for writing.
        std::fs::create_dir(l.slot_path("localhost", 0)).unwrap();
        let g = l.acquire_local(1, Duration::from_millis(1));
        assert!(!g.is_locked());
        let hosts = parse_host_list("localhost/1").unwrap();
        assert!(l.try_acquire(&hosts, &[]).is_none());
    }
}
