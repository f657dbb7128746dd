//! Cooperation between concurrent client processes, exactly as distcc 3.4 does it
//! so both clients can share one `DISTCC_DIR` (spec §8.5): slots are `fcntl`
//! write-locks on `$DISTCC_DIR/lock/cpu_<stem>_<n>`, backoff is the mtime of
//! `$DISTCC_DIR/lock/backoff_<stem>_0`.

use std::path::PathBuf;
use std::time::Duration;

use crate::hosts::{HostList, HostSpec};

/// A held slot; released when dropped (the lock lives as long as the descriptor).
#[derive(Debug)]
pub struct SlotGuard {
    _file: std::fs::File,
}

/// The lock directory and the backoff period.
#[derive(Debug, Clone)]
pub struct LockDir {
    pub dir: PathBuf,
    /// `DISTCC_BACKOFF_PERIOD` (default 60 s; zero disables backoff files).
    pub backoff_period: Duration,
}

impl LockDir {
    /// `$DISTCC_DIR/lock`, created if missing.
    pub fn open(distcc_dir: &std::path::Path, backoff_period: Duration) -> std::io::Result<Self> {
        let _ = (distcc_dir, backoff_period);
        todo!()
    }

    /// Try once, in distcc's order (slot 0 of every host before slot 1 of any),
    /// to lock a slot on a host that is not down, not backed off and not in `exclude`
    /// (compared by `verbatim`). `None` when every slot is busy.
    pub fn try_acquire(
        &self,
        hosts: &HostList,
        exclude: &[String],
    ) -> Option<(HostSpec, SlotGuard)> {
        let _ = (hosts, exclude);
        todo!()
    }

    /// Like `try_acquire`, waiting `pause` between attempts while slots are busy.
    /// `None` only when no eligible host exists at all.
    pub fn acquire(
        &self,
        hosts: &HostList,
        exclude: &[String],
        pause: Duration,
    ) -> Option<(HostSpec, SlotGuard)> {
        let _ = (hosts, exclude, pause);
        todo!()
    }

    /// A local compile slot (`cpu_localhost_<n>`, n < `limit`), waiting as above.
    pub fn acquire_local(&self, limit: u32, pause: Duration) -> SlotGuard {
        let _ = (limit, pause);
        todo!()
    }

    /// Is `host` in backoff?
    pub fn is_backed_off(&self, host: &HostSpec) -> bool {
        let _ = host;
        todo!()
    }

    /// Back `host` off (touch its backoff file). No-op when the period is zero.
    pub fn mark_failed(&self, host: &HostSpec) {
        let _ = host;
        todo!()
    }

    /// A job on `host` succeeded: remove its backoff file.
    pub fn clear(&self, host: &HostSpec) {
        let _ = host;
        todo!()
    }
}
