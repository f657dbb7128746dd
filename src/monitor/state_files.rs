//! Reading what clients leave for monitors: the state files of running jobs
//! (`$DISTCC_DIR/state/binstate_*`, ours and distcc's alike) and the tail of
//! the verdict log (`$DPORTAGE_DIR/monitor.log`).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::jobstate::binstate::{self, Phase, TaskState, STRUCT_SIZE};
use crate::jobstate::outcome::Outcome;

/// At most this much of the end of the log is read per refresh: about ten
/// thousand jobs, enough for the counts of a large build.
pub const LOG_TAIL: u64 = 2 * 1024 * 1024;
/// At most this many state files are read per refresh (a state directory
/// filled by a runaway is not read whole every second).
pub const MAX_STATE_FILES: usize = 4096;

/// Where a monitor looks.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `$DISTCC_DIR/state`.
    pub state_dir: PathBuf,
    /// `$DPORTAGE_DIR`, holding `monitor.log`.
    pub dportage_dir: PathBuf,
}

impl Sources {
    /// The directories of this user's environment (`DISTCC_DIR`, `DPORTAGE_DIR`).
    pub fn from_env() -> Sources {
        Sources {
            state_dir: crate::client::hostsource::distcc_dir().join("state"),
            dportage_dir: crate::network::identity::dportage_dir(),
        }
    }

    /// Jobs in flight: the state files of live processes, not done, sorted by
    /// host, slot and pid.
    pub fn jobs(&self) -> Vec<TaskState> {
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return Vec::new();
        };
        let mut jobs: Vec<TaskState> = entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(binstate::PREFIX)
            })
            .take(MAX_STATE_FILES)
            .filter_map(|e| read_state(&e.path()))
            .filter(|s| s.phase != Phase::Done && process_alive(s.pid))
            .collect();
        jobs.sort_by(|a, b| (&a.host, a.slot, a.pid).cmp(&(&b.host, b.slot, b.pid)));
        jobs
    }

    /// The outcomes at the end of the log, oldest first (unparseable lines
    /// skipped).
    pub fn outcomes(&self) -> Vec<Outcome> {
        let path = self
            .dportage_dir
            .join(crate::client::monitor_state::LOG_FILE);
        let Ok(text) = read_tail(&path, LOG_TAIL) else {
            return Vec::new();
        };
        text.lines().filter_map(Outcome::parse).collect()
    }
}

/// A state file, if it is one (a file caught being replaced or of another
/// platform is skipped, as distcc's monitor skips it).
fn read_state(path: &Path) -> Option<TaskState> {
    let mut bytes = Vec::with_capacity(STRUCT_SIZE + 1);
    std::fs::File::open(path)
        .ok()?
        .take(STRUCT_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    binstate::decode(&bytes).ok()
}

/// distcc's test: signal 0 reaches it, or it exists under another user.
fn process_alive(pid: u64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The last `max` bytes of `path`, from the first whole line.
fn read_tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    if start > 0 {
        let first = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobstate::outcome::Verdict;

    fn sources(dir: &Path) -> Sources {
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        Sources {
            state_dir,
            dportage_dir: dir.to_path_buf(),
        }
    }

    fn state(pid: u64, host: &str, phase: Phase) -> TaskState {
        TaskState {
            pid,
            file: format!("f{pid}.c"),
            host: host.into(),
            slot: 0,
            phase,
        }
    }

    #[test]
    fn jobs_of_live_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = sources(dir.path());
        let me = u64::from(std::process::id());
        let write =
            |name: &str, bytes: &[u8]| std::fs::write(s.state_dir.join(name), bytes).unwrap();
        write(
            "binstate_1",
            &binstate::encode(&state(me, "b", Phase::Compile)),
        );
        write(
            "binstate_2",
            &binstate::encode(&state(me, "a", Phase::Send)),
        );
        write(
            "binstate_3",
            &binstate::encode(&state(me, "a", Phase::Done)),
        );
        // A pid that cannot exist (above the kernel's maximum).
        write(
            "binstate_4",
            &binstate::encode(&state(1 << 30, "a", Phase::Send)),
        );
        write("binstate_5", b"short");
        write("other", &binstate::encode(&state(me, "c", Phase::Send)));
        let jobs = s.jobs();
        let hosts: Vec<&str> = jobs.iter().map(|j| j.host.as_str()).collect();
        assert_eq!(hosts, ["a", "b"]);
    }

    #[test]
    fn outcomes_from_the_tail_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = sources(dir.path());
        assert!(s.outcomes().is_empty());
        let o = Outcome {
            time: 1,
            input: "x.c".into(),
            hosts: vec!["h".into()],
            verdict: Verdict::Agreed,
            losers: Vec::new(),
            ms: 1,
        };
        let mut text = String::from("garbage\n");
        for _ in 0..3 {
            text.push_str(&o.to_line());
        }
        std::fs::write(dir.path().join("monitor.log"), &text).unwrap();
        assert_eq!(s.outcomes().len(), 3);
        // A tail that starts mid-line drops the partial line.
        let tail = read_tail(
            &dir.path().join("monitor.log"),
            o.to_line().len() as u64 + 3,
        )
        .unwrap();
        assert_eq!(tail, o.to_line());
    }
}
