//! Host speed, remembered between jobs and builds in `$DPORTAGE_DIR/speed.json`
//! (the rules are [`crate::trust::speed`]'s): read at the start of a job to
//! weigh the draw, updated at the end with how each host it asked did.
//!
//! Every compile of a `make -j` is its own process and they all update the one
//! file: the update re-reads it under an exclusive `flock` on `speed.lock`,
//! applies this job's few outcomes and renames a fresh file into place, so
//! the lock is held for one small read and write and readers never see half
//! a file (they read without the lock). The file is advisory: a missing,
//! unreadable or corrupt one is a fresh start, never a failed build.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use crate::trust::speed::{HostKey, Outcome, SpeedBook};
use crate::verify::scheduler::HostId;

use crate::client::evidence::{lock_exclusive, now_secs, StateError};

/// Name of the speed record inside `$DPORTAGE_DIR`.
pub const SPEED_FILE: &str = "speed.json";
const LOCK_FILE: &str = "speed.lock";
/// A book of [`crate::trust::speed::MAX_HOSTS`] hosts is far smaller; a
/// larger file is not ours to trust.
const MAX_FILE: u64 = 1 << 20;

/// The book as saved, or an empty one when there is none (or it is not a
/// book: said once, then overwritten by the next update).
pub(super) fn load(dir: &Path) -> SpeedBook {
    match read(dir) {
        Ok(book) => book,
        Err(why) => {
            tracing::debug!("{why}; host speeds are learned afresh");
            SpeedBook::default()
        }
    }
}

fn read(dir: &Path) -> Result<SpeedBook, String> {
    let path = dir.join(SPEED_FILE);
    let mut bytes = Vec::new();
    match std::fs::File::open(&path) {
        Ok(file) => file
            .take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SpeedBook::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("{} is over {MAX_FILE} bytes", path.display()));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a speed record: {e}", path.display()))
}

/// Add one job's `outcomes` to the book in `dir`.
pub(super) fn record(
    dir: &Path,
    outcomes: &[(String, Option<String>, Outcome)],
) -> Result<(), StateError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let _lock = lock_exclusive(&dir.join(LOCK_FILE))?;
    let mut book = load(dir);
    let now = now_secs();
    for (address, id, outcome) in outcomes {
        let key = HostKey {
            address,
            id: id.as_deref(),
        };
        book.record(key, *outcome, now);
    }
    book.prune(now);
    let path = dir.join(SPEED_FILE);
    let file_error = |path: &Path, source: std::io::Error| StateError::File {
        path: path.display().to_string(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".speed.")
        .tempfile_in(dir)
        .map_err(|e| file_error(dir, e))?;
    // No fsync: losing the latest update in a crash costs a hedge, while a
    // sync per compile would cost every job of a build.
    tmp.write_all(&serde_json::to_vec(&book)?)
        .map_err(|e| file_error(tmp.path(), e))?;
    tmp.persist(&path).map_err(|e| file_error(&path, e.error))?;
    // In the machine-wide directory every build of the group updates it.
    crate::shared_dir::share_with_group(&path, crate::shared_dir::GroupAccess::ReadWrite);
    Ok(())
}

/// Each host's time on one job, as the vote goes.
#[derive(Default)]
pub(super) struct Stopwatch {
    running: HashMap<HostId, Running>,
    done: Vec<(HostId, Outcome)>,
}

struct Running {
    /// When it could start: its launch, or the source being ready.
    since: Instant,
    hedged: bool,
}

impl Stopwatch {
    pub(super) fn launched(&mut self, host: HostId, now: Instant) {
        self.running.insert(
            host,
            Running {
                since: now,
                hedged: false,
            },
        );
    }

    /// No host can compile before the source exists.
    pub(super) fn source_ready(&mut self, now: Instant) {
        for r in self.running.values_mut() {
            r.since = now;
        }
    }

    pub(super) fn hedged(&mut self, host: HostId) {
        if let Some(r) = self.running.get_mut(&host) {
            r.hedged = true;
        }
    }

    pub(super) fn answered(&mut self, host: HostId, now: Instant) {
        if let Some(r) = self.running.remove(&host) {
            let secs = now.saturating_duration_since(r.since).as_secs_f64();
            self.done.push((
                host,
                if r.hedged {
                    Outcome::Hedged { secs }
                } else {
                    Outcome::Answered { secs }
                },
            ));
        }
    }

    pub(super) fn failed(&mut self, host: HostId) {
        if self.running.remove(&host).is_some() {
            self.done.push((host, Outcome::Failed));
        }
    }

    /// The host ended without it being its fault (busy, or the driver lost
    /// the flight): nothing learned.
    pub(super) fn forget(&mut self, host: HostId) {
        self.running.remove(&host);
    }

    /// The job no longer needs `host`: a hedged one worked at least this
    /// long; of one that was not hedged nothing is learned (it was not late).
    pub(super) fn stopped(&mut self, host: HostId, now: Instant) {
        if self.running.get(&host).is_some_and(|r| r.hedged) {
            self.answered(host, now);
        } else {
            self.running.remove(&host);
        }
    }

    /// Every outcome of the job, hosts still working when the vote ended
    /// counted as stopped then.
    pub(super) fn finish(mut self, now: Instant) -> Vec<(HostId, Outcome)> {
        let left: Vec<HostId> = self.running.keys().copied().collect();
        for host in left {
            self.stopped(host, now);
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stopwatch_times_from_the_source_and_flags_hedges() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Stopwatch::default();
        let (a, b, c, d) = (HostId(0), HostId(1), HostId(2), HostId(3));
        w.launched(a, at(0));
        w.launched(b, at(0));
        w.source_ready(at(100));
        w.answered(a, at(300));
        w.hedged(b);
        w.launched(c, at(1400));
        w.launched(d, at(1400));
        w.answered(c, at(1600));
        w.failed(d);
        let got = w.finish(at(1700));
        assert_eq!(got.len(), 4, "{got:?}");
        let secs = |o: &Outcome| match o {
            Outcome::Answered { secs } | Outcome::Hedged { secs } => *secs,
            Outcome::Failed => -1.0,
        };
        assert!(matches!(got[0], (h, Outcome::Answered { .. }) if h == a));
        assert!((secs(&got[0].1) - 0.2).abs() < 1e-6);
        assert!(matches!(got[1], (h, Outcome::Answered { .. }) if h == c));
        assert_eq!(got[2], (d, Outcome::Failed));
        // Still working when the vote ended: a lower bound, as a hedge.
        assert!(matches!(got[3], (h, Outcome::Hedged { .. }) if h == b));
        assert!((secs(&got[3].1) - 1.6).abs() < 1e-6);
    }

    #[test]
    fn the_file_survives_processes_and_tolerates_corruption() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        assert_eq!(load(dir), SpeedBook::default());
        let slow = (
            "127.0.0.9:1".to_owned(),
            None,
            Outcome::Hedged { secs: 3.0 },
        );
        record(
            dir,
            &[
                slow.clone(),
                ("127.0.0.2:1".into(), None, Outcome::Answered { secs: 0.1 }),
            ],
        )
        .unwrap();
        record(dir, std::slice::from_ref(&slow)).unwrap();
        let book = load(dir);
        assert_eq!(book.hosts.len(), 2);
        assert_eq!(book.hosts["127.0.0.9:1"].hedges, 2);
        assert!(book.hosts["127.0.0.9:1"].is_demoted(now_secs()));

        std::fs::write(dir.join(SPEED_FILE), b"{\"hosts\": [garbage").unwrap();
        assert_eq!(load(dir), SpeedBook::default());
        record(dir, std::slice::from_ref(&slow)).unwrap();
        assert_eq!(load(dir).hosts["127.0.0.9:1"].jobs, 1, "started afresh");
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".speed."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// Many processes of one build update the file at once: no update is lost.
    #[test]
    fn concurrent_updates_are_all_kept() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        record(
                            &dir,
                            &[("127.0.0.2:1".into(), None, Outcome::Answered { secs: 0.1 })],
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(load(&dir).hosts["127.0.0.2:1"].jobs, 80);
    }
}
