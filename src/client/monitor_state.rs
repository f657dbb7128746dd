//! What this client shows the monitors: distcc's state files
//! (`$DISTCC_DIR/state/binstate_<pid>`, read by `distccmon-text`,
//! `distccmon-gnome` and `dportage monitor`) and, under verified dispatch,
//! one line per job in `$DPORTAGE_DIR/monitor.log` (verdicts).
//!
//! Both are in the path of every compile, so they are cheap (no fsync; one
//! 296-byte write in place per phase, the file kept open) and can never fail a build: the
//! first error is logged at debug level and the files are given up for the
//! rest of the process.
//!
//! A job sent to several hosts at once keeps one file per host in flight
//! (`binstate_<pid>_<n>`; distcc's monitors read every `binstate_*` file and
//! show one line each), and `binstate_<pid>` for what happens here
//! (starting, preprocessing, compiling locally).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::jobstate::binstate::{self, Phase, TaskState};
use crate::jobstate::outcome::Outcome;

use super::cleanup::{self, CleanupGuard};

/// The monitor log is renamed to `monitor.log.1` past this size, so the
/// two files together stay under 2 MiB.
pub const LOG_ROTATE_AT: u64 = 1024 * 1024;
/// The monitor log's name in `$DPORTAGE_DIR`.
pub const LOG_FILE: &str = "monitor.log";

/// Which of a process's state files: the job itself, or a host in flight.
pub type Key = Option<u32>;
/// The job's own file (`binstate_<pid>`).
pub const MAIN: Key = None;

/// This process's state files while it compiles.
struct Files {
    dir: PathBuf,
    pid: u32,
    file: String,
    written: Vec<Written>,
}

/// A state file written, kept open so later phases are one write each.
struct Written {
    key: Key,
    path: PathBuf,
    file: File,
    _protect: CleanupGuard,
}

static FILES: Mutex<Option<Files>> = Mutex::new(None);

/// Keeps this process's state files; removes every one of them when
/// dropped (signals are covered by [`cleanup`]).
#[must_use]
pub struct Session(());

/// Start showing a job on `input` (its base name is shown), in the state
/// directory of `distcc_dir`, in phase `Startup`.
pub fn start(distcc_dir: &Path, input: &str) -> Session {
    let dir = distcc_dir.join("state");
    // distcc creates the state directory the same way, mode 0777 minus umask.
    if let Err(e) = std::fs::create_dir(&dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            tracing::debug!(
                "cannot create {}: {e}; jobs are not shown to monitors",
                dir.display()
            );
            return Session(());
        }
    }
    let file = Path::new(input)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| input.to_owned());
    if let Ok(mut files) = FILES.lock() {
        *files = Some(Files {
            dir,
            pid: std::process::id(),
            file,
            written: Vec::new(),
        });
    }
    note(MAIN, "", 0, Phase::Startup);
    Session(())
}

impl Drop for Session {
    fn drop(&mut self) {
        let Ok(mut files) = FILES.lock() else { return };
        if let Some(files) = files.take() {
            for written in files.written {
                let _ = std::fs::remove_file(&written.path);
            }
        }
    }
}

/// Show `key`'s job in `phase` on `host` (slot `slot`). Nothing happens
/// outside a [`Session`].
pub fn note(key: Key, host: &str, slot: u32, phase: Phase) {
    let Ok(mut guard) = FILES.lock() else { return };
    let Some(files) = guard.as_mut() else { return };
    let name = binstate::file_name(files.pid, key);
    let path = files.dir.join(&name);
    let state = TaskState {
        pid: files.pid.into(),
        file: files.file.clone(),
        host: host.to_owned(),
        slot: slot.min(i32::MAX as u32) as i32,
        phase,
    };
    let bytes = binstate::encode(&state);
    let written = match files.written.iter().find(|w| w.key == key) {
        // The file has a fixed size and is overwritten in place with one
        // write: a reader never sees it short. Replacing it by a rename (or
        // truncating it, as distcc does) makes ext4 start writing the data
        // out (auto_da_alloc): about 2 ms a phase on a loaded machine,
        // against 2 µs for this write.
        Some(open) => open.file.write_all_at(&bytes, 0),
        None => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|file| {
                file.write_all_at(&bytes, 0)?;
                Ok(file)
            })
            .map(|file| {
                let protect = cleanup::register(&path);
                files.written.push(Written {
                    key,
                    path: path.clone(),
                    file,
                    _protect: protect,
                });
            }),
    };
    if let Err(e) = written {
        tracing::debug!(
            "cannot write the state file {}: {e}; jobs are not shown to monitors",
            path.display()
        );
        // Give up rather than pay for a failing write at every phase.
        let files = guard.take();
        drop(guard);
        if let Some(files) = files {
            for written in files.written {
                let _ = std::fs::remove_file(written.path);
            }
        }
    }
}

/// Stop showing `key` (a host whose part of the job is over).
pub fn forget(key: Key) {
    let Ok(mut guard) = FILES.lock() else { return };
    let Some(files) = guard.as_mut() else { return };
    if let Some(at) = files.written.iter().position(|w| w.key == key) {
        let written = files.written.swap_remove(at);
        let _ = std::fs::remove_file(&written.path);
    }
}

/// A host in flight, as a connection reports its phases.
#[derive(Debug, Clone)]
pub struct Flight {
    pub key: Key,
    /// The host's name or address, as distcc shows it.
    pub host: String,
    pub slot: u32,
}

impl Flight {
    pub fn note(&self, phase: Phase) {
        note(self.key, &self.host, self.slot, phase);
    }
}

/// Append `outcome` to `$DPORTAGE_DIR/monitor.log`, renaming a log past
/// [`LOG_ROTATE_AT`] to `monitor.log.1` first. Failures are logged at debug
/// level only: the log is for watching, not for the build.
pub fn record_outcome(dportage_dir: &Path, outcome: &Outcome) {
    if let Err(e) = append_outcome(dportage_dir, outcome) {
        tracing::debug!(
            "cannot append to {}: {e}",
            dportage_dir.join(LOG_FILE).display()
        );
    }
}

fn append_outcome(dportage_dir: &Path, outcome: &Outcome) -> std::io::Result<()> {
    let path = dportage_dir.join(LOG_FILE);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= LOG_ROTATE_AT) {
        // Two clients may rotate at once; the later rename then drops a few
        // fresh lines, which a monitor can afford.
        std::fs::rename(&path, dportage_dir.join(format!("{LOG_FILE}.1")))?;
    }
    // One write of a short line with O_APPEND: lines of concurrent clients
    // never interleave.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?
        .write_all(outcome.to_line().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobstate::outcome::Verdict;

    fn read_state(dir: &Path, key: Key) -> Option<TaskState> {
        let path = dir
            .join("state")
            .join(binstate::file_name(std::process::id(), key));
        std::fs::read(path)
            .ok()
            .map(|b| binstate::decode(&b).unwrap())
    }

    // One test for the session: the files are process-wide.
    #[test]
    fn a_session_writes_replaces_and_removes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let session = start(dir.path(), "src/deep/hello.c");
        let startup = read_state(dir.path(), MAIN).unwrap();
        assert_eq!(startup.phase, Phase::Startup);
        assert_eq!(startup.file, "hello.c");
        assert_eq!(startup.pid, u64::from(std::process::id()));

        note(MAIN, "localhost", 1, Phase::Preprocess);
        let flight = Flight {
            key: Some(3),
            host: "127.0.0.2".into(),
            slot: 0,
        };
        flight.note(Phase::Compile);
        let main = read_state(dir.path(), MAIN).unwrap();
        assert_eq!(
            (main.phase, main.host.as_str(), main.slot),
            (Phase::Preprocess, "localhost", 1)
        );
        let f = read_state(dir.path(), Some(3)).unwrap();
        assert_eq!((f.phase, f.host.as_str()), (Phase::Compile, "127.0.0.2"));

        forget(Some(3));
        assert!(read_state(dir.path(), Some(3)).is_none());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![binstate::file_name(std::process::id(), None)]);

        drop(session);
        assert_eq!(
            std::fs::read_dir(dir.path().join("state")).unwrap().count(),
            0
        );
        // Outside a session nothing is written.
        note(MAIN, "h", 0, Phase::Send);
        assert_eq!(
            std::fs::read_dir(dir.path().join("state")).unwrap().count(),
            0
        );
    }

    #[test]
    fn the_log_rotates_and_never_fails() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = Outcome {
            time: 1,
            input: "a.c".into(),
            hosts: vec!["h1".into(), "h2".into()],
            verdict: Verdict::Agreed,
            losers: Vec::new(),
            ms: 5,
        };
        record_outcome(dir.path(), &outcome);
        record_outcome(dir.path(), &outcome);
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text
            .lines()
            .all(|l| Outcome::parse(l) == Some(outcome.clone())));

        // Past the limit the log moves aside and a fresh one starts.
        let big = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        big.set_len(LOG_ROTATE_AT).unwrap();
        record_outcome(dir.path(), &outcome);
        let fresh = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(fresh.lines().count(), 1);
        let old = std::fs::metadata(dir.path().join(format!("{LOG_FILE}.1"))).unwrap();
        assert_eq!(old.len(), LOG_ROTATE_AT);

        // An unusable directory is only logged.
        record_outcome(&dir.path().join("missing/dir"), &outcome);
    }
}
