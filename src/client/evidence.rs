//! What verified dispatch remembers between builds, under `$DPORTAGE_DIR`
//! (default `~/.dportage`):
//!
//! * `excluded-hosts`: hosts that lost a vote, one per line, never chosen
//!   again by this user's builds until the line is deleted. Unlike distcc's
//!   backoff this does not expire: a host that returned a wrong object once is
//!   not trusted again on its word.
//! * `evidence.jsonl`: one JSON object per line for every lost vote: what was
//!   compiled (blake3 of the preprocessed input, the arguments), what each host
//!   returned, the verdict, who lost, and whether it was reported to the
//!   coordinator yet, and the fingerprint id of the toolchain when known. Its
//!   preprocessed input is kept beside it (`super::kept_inputs`). The network
//!   layer sends the records with
//!   [`drain_pending_reports`] (or reads [`pending_reports`] and acknowledges
//!   with [`mark_reported`]).
//!
//! Several client processes of one `make -j` share the directory: appends and
//! the rewrite in [`mark_reported`] hold an exclusive `flock` on `state.lock`
//! (a separate file, so the rewrite's rename never swaps the locked inode).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::shared_dir::{share_with_group, GroupAccess};
use crate::verify::ResultDigest;

/// Name of the exclusion file inside `$DPORTAGE_DIR`.
pub const EXCLUDED_FILE: &str = "excluded-hosts";
/// Name of the evidence log inside `$DPORTAGE_DIR`.
pub const EVIDENCE_FILE: &str = "evidence.jsonl";
const LOCK_FILE: &str = "state.lock";
/// The state files are ours, but a runaway one must not eat the client's
/// memory: larger files are read only up to this much.
const MAX_STATE_FILE: u64 = 64 << 20;

/// What one host (or the local compiler) returned for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResult {
    /// The host entry as written, or `local` for this machine's compiler.
    pub host: String,
    /// The address it was reached at (empty for `local`).
    #[serde(default)]
    pub address: String,
    /// Raw wait status.
    pub status: u32,
    /// blake3 of the object, hex.
    pub object: String,
    /// blake3 of the normalised diagnostics, hex (advisory).
    pub diagnostics: String,
}

/// One lost vote, as a line of `evidence.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Random, unique per record; what [`mark_reported`] takes.
    pub id: String,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// blake3 of the preprocessed source every host got, hex.
    pub input: String,
    /// The source file as the user named it.
    #[serde(default)]
    pub source: String,
    /// The arguments sent to every host (argv[0] is the compiler).
    pub args: Vec<String>,
    /// Every vote, and the local compile when there was one.
    pub results: Vec<HostResult>,
    /// How the job was decided: `majority`, `arbiter` or `spot-check`.
    pub verdict: String,
    /// blake3 of the object accepted (written), hex.
    pub accepted: String,
    /// The hosts that lost the vote (entries as written).
    pub losers: Vec<String>,
    /// Sent to the coordinator yet?
    pub reported: bool,
    /// The fingerprint id of this machine's toolchain for the job's compiler,
    /// when `dportage` had probed it (`fingerprints.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
}

impl Evidence {
    /// A fresh record with a random id and the current time.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: String,
        source: String,
        args: Vec<String>,
        results: Vec<HostResult>,
        verdict: &str,
        accepted: String,
        losers: Vec<String>,
    ) -> Self {
        Evidence {
            id: format!("{:016x}", rand::random::<u64>()),
            time: now_secs(),
            input,
            source,
            args,
            results,
            verdict: verdict.to_owned(),
            accepted,
            losers,
            reported: false,
            toolchain: None,
        }
    }
}

impl HostResult {
    /// What `host` (reached at `address`) returned, as its vote's digest says.
    pub fn of_digest(host: String, address: String, digest: &ResultDigest) -> Self {
        HostResult {
            host,
            address,
            status: digest.status,
            object: digest.object_hex(),
            diagnostics: digest
                .diagnostics
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// The hash a report gives this result: the one a coordinator's referee
    /// computes from its own digest (`network::api::result_hash_of`).
    pub fn result_hash(&self) -> String {
        crate::network::api::result_hash(&self.object, self.status)
    }
}

/// One line of `excluded-hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    /// The address the host was reached at: the key (a renamed entry for the
    /// same daemon stays excluded).
    pub address: SocketAddr,
    pub since: u64,
    /// The host entry as written, for the reader.
    pub entry: String,
    /// The evidence record that caused it.
    pub evidence: String,
}

impl Exclusion {
    fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\n",
            self.address,
            self.since,
            one_word(&self.entry),
            one_word(&self.evidence)
        )
    }

    fn parse(line: &str) -> Option<Exclusion> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let address = fields.next()?.parse().ok()?;
        let since = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let entry = fields.next().unwrap_or("").to_owned();
        let evidence = fields.next().unwrap_or("").to_owned();
        Some(Exclusion {
            address,
            since,
            entry,
            evidence,
        })
    }
}

/// Host entries never contain whitespace, but a field must stay one word.
fn one_word(s: &str) -> String {
    let word: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if word.is_empty() {
        "-".to_owned()
    } else {
        word
    }
}

const EXCLUDED_HEADER: &str =
    "# dportage: hosts excluded after losing a vote (see evidence.jsonl).\n\
# Delete a line to trust that host again.\n\
# address\tsince (Unix time)\thost entry\tevidence id\n";

/// Errors of the state directory. None of them stops a build: the caller says
/// what could not be remembered and goes on verifying.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the dportage state directory {path}: {source} (set DPORTAGE_DIR to a writable directory)")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot use {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode an evidence record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{0:?} is not an input hash (64 lowercase hex digits)")]
    NotAnInputHash(String),
    #[error("the input kept for {hash} is not the input of that hash (a bug)")]
    InputMismatch { hash: String },
    #[error("the {what} input is {bytes} bytes, over the {max} a coordinator takes as evidence")]
    InputTooLarge {
        what: &'static str,
        bytes: usize,
        max: usize,
    },
}

/// `$DPORTAGE_DIR`, created (mode 0700) when missing.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StateError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn evidence_path(&self) -> PathBuf {
        self.dir.join(EVIDENCE_FILE)
    }

    pub fn excluded_path(&self) -> PathBuf {
        self.dir.join(EXCLUDED_FILE)
    }

    /// The addresses excluded so far. A missing file is an empty list; lines
    /// that do not parse are ignored (a user may have edited the file).
    pub fn excluded(&self) -> Result<Vec<Exclusion>, StateError> {
        let path = self.excluded_path();
        let text = match read_bounded(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(file_error(&path, source)),
        };
        Ok(text.lines().filter_map(Exclusion::parse).collect())
    }

    /// Exclude `address` from now on.
    pub fn exclude(&self, exclusion: &Exclusion) -> Result<(), StateError> {
        let _lock = self.lock()?;
        let path = self.excluded_path();
        let fresh = !path.exists();
        let mut text = String::new();
        if fresh {
            text.push_str(EXCLUDED_HEADER);
        }
        text.push_str(&exclusion.line());
        append(&path, text.as_bytes())
    }

    /// Add one record to the evidence log.
    pub fn record(&self, evidence: &Evidence) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(evidence)?;
        line.push(b'\n');
        let _lock = self.lock()?;
        append(&self.evidence_path(), &line)
    }

    /// Every record of the evidence log (lines that do not parse are skipped).
    pub fn evidence(&self) -> Result<Vec<Evidence>, StateError> {
        let path = self.evidence_path();
        let text = match read_bounded(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(file_error(&path, source)),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// Records not yet sent to the coordinator, oldest first.
    pub fn pending_reports(&self) -> Result<Vec<Evidence>, StateError> {
        Ok(self
            .evidence()?
            .into_iter()
            .filter(|e| !e.reported)
            .collect())
    }

    /// Mark the records with these ids as reported. Returns how many changed.
    /// Lines that are not records are kept as they are.
    pub fn mark_reported(&self, ids: &[String]) -> Result<usize, StateError> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let _lock = self.lock()?;
        let path = self.evidence_path();
        let text = match read_bounded(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(file_error(&path, source)),
        };
        let mut changed = 0;
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            match serde_json::from_str::<Evidence>(line) {
                Ok(mut record) if !record.reported && wanted.contains(record.id.as_str()) => {
                    record.reported = true;
                    changed += 1;
                    out.push_str(&serde_json::to_string(&record)?);
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        if changed == 0 {
            return Ok(0);
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".evidence.")
            .tempfile_in(&self.dir)
            .map_err(|source| file_error(&self.dir, source))?;
        tmp.write_all(out.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|source| file_error(tmp.path(), source))?;
        tmp.persist(&path).map_err(|e| file_error(&path, e.error))?;
        share_with_group(&path, GroupAccess::ReadWrite);
        Ok(changed)
    }

    /// An exclusive lock on the state, held until the file is dropped.
    fn lock(&self) -> Result<File, StateError> {
        lock_exclusive(&self.dir.join(LOCK_FILE))
    }
}

/// An exclusive `flock` on `path` (created 0600), held until the file is
/// dropped. Blocks while another client process holds it (for one small
/// write or one directory scan).
pub(super) fn lock_exclusive(path: &Path) -> Result<File, StateError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| file_error(path, source))?;
    share_with_group(path, GroupAccess::ReadWrite);
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(file_error(path, std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// Records of `$DPORTAGE_DIR/evidence.jsonl` not yet sent to the coordinator.
pub fn pending_reports(dportage_dir: &Path) -> Result<Vec<Evidence>, StateError> {
    StateDir::open(dportage_dir)?.pending_reports()
}

/// Mark these records as sent (after the coordinator acknowledged them).
pub fn mark_reported(dportage_dir: &Path, ids: &[String]) -> Result<usize, StateError> {
    StateDir::open(dportage_dir)?.mark_reported(ids)
}

/// What [`drain_pending_reports`] did.
#[derive(Debug)]
pub struct Drained<E> {
    /// Records sent and now marked as reported.
    pub sent: usize,
    /// The error that stopped the drain, if one did (the record it was about
    /// and every later one stay pending).
    pub stopped_by: Option<E>,
}

/// Send every pending record through `send`, oldest first, and mark those it
/// accepted as reported; the first error stops the drain (the rest wait for the
/// next one). Delivery is at least once: a crash between `send` and the mark,
/// or two drains at once, sends a record twice, so the receiver deduplicates by
/// [`Evidence::id`].
pub fn drain_pending_reports<E>(
    dportage_dir: &Path,
    mut send: impl FnMut(&Evidence) -> Result<(), E>,
) -> Result<Drained<E>, StateError> {
    let state = StateDir::open(dportage_dir)?;
    let mut sent_ids = Vec::new();
    let mut stopped_by = None;
    for record in state.pending_reports()? {
        match send(&record) {
            Ok(()) => sent_ids.push(record.id),
            Err(e) => {
                stopped_by = Some(e);
                break;
            }
        }
    }
    let sent = if sent_ids.is_empty() {
        0
    } else {
        state.mark_reported(&sent_ids)?
    };
    Ok(Drained { sent, stopped_by })
}

fn append(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| file_error(path, source))?;
    share_with_group(path, GroupAccess::ReadWrite);
    Ok(())
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_STATE_FILE)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn file_error(path: &Path, source: std::io::Error) -> StateError {
    StateError::File {
        path: path.display().to_string(),
        source,
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(host: &str) -> Evidence {
        Evidence::new(
            "ab".repeat(32),
            "x.c".into(),
            vec!["gcc".into(), "-c".into(), "x.c".into()],
            vec![HostResult {
                host: host.into(),
                address: "127.0.0.5:3632".into(),
                status: 0,
                object: "cd".repeat(32),
                diagnostics: "ef".repeat(32),
            }],
            "majority",
            "12".repeat(32),
            vec![host.into()],
        )
    }

    #[test]
    fn evidence_waits_until_reported() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("nested/state");
        let state = StateDir::open(&dir).unwrap();
        let a = record("liar-a");
        let b = record("liar-b");
        assert_ne!(a.id, b.id);
        state.record(&a).unwrap();
        state.record(&b).unwrap();
        // A line a human or a newer version wrote survives a rewrite.
        append(&state.evidence_path(), b"not json\n").unwrap();
        assert_eq!(pending_reports(&dir).unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(mark_reported(&dir, std::slice::from_ref(&a.id)).unwrap(), 1);
        assert_eq!(mark_reported(&dir, std::slice::from_ref(&a.id)).unwrap(), 0);
        assert_eq!(pending_reports(&dir).unwrap(), vec![b.clone()]);
        let text = std::fs::read_to_string(state.evidence_path()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("not json"));
        let all = state.evidence().unwrap();
        assert!(all[0].reported && !all[1].reported);
        assert_eq!(all[1].verdict, "majority");
        assert_eq!(all[1].losers, ["liar-b"]);
    }

    #[test]
    fn drain_sends_oldest_first_and_stops_at_the_first_error() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path()).unwrap();
        let records: Vec<Evidence> = ["a", "b", "c"].iter().map(|h| record(h)).collect();
        for r in &records {
            state.record(r).unwrap();
        }
        let mut seen = Vec::new();
        let drained = drain_pending_reports(t.path(), |e| {
            if e.losers == ["c"] {
                return Err("coordinator unreachable");
            }
            seen.push(e.id.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(drained.sent, 2);
        assert_eq!(drained.stopped_by, Some("coordinator unreachable"));
        assert_eq!(seen, [records[0].id.clone(), records[1].id.clone()]);
        assert_eq!(state.pending_reports().unwrap(), vec![records[2].clone()]);
        let drained = drain_pending_reports(t.path(), |_| Ok::<(), ()>(())).unwrap();
        assert_eq!(drained.sent, 1);
        assert!(drained.stopped_by.is_none());
        assert!(state.pending_reports().unwrap().is_empty());
        assert_eq!(state.evidence().unwrap().len(), 3);
    }

    #[test]
    fn exclusions_round_trip_and_tolerate_edits() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path()).unwrap();
        assert!(state.excluded().unwrap().is_empty());
        let e = Exclusion {
            address: "127.0.0.5:4000".parse().unwrap(),
            since: 1_700_000_000,
            entry: "liar:4000,lzo".into(),
            evidence: "00ff".into(),
        };
        state.exclude(&e).unwrap();
        let v6 = Exclusion {
            address: "[::1]:3632".parse().unwrap(),
            since: 1,
            entry: String::new(),
            evidence: "x y".into(),
        };
        state.exclude(&v6).unwrap();
        append(&state.excluded_path(), b"garbage line\n\n").unwrap();
        let got = state.excluded().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], e);
        assert_eq!(got[1].address, v6.address);
        assert_eq!(got[1].entry, "-");
        assert_eq!(got[1].evidence, "xy");
        let text = std::fs::read_to_string(state.excluded_path()).unwrap();
        assert!(text.starts_with("# dportage"), "{text}");
    }

    #[test]
    fn recorded_results_hash_like_the_referees_digests() {
        for digest in [
            ResultDigest::of(0, b"\x7fELF object", b"x.c:1: warning: unused\n"),
            ResultDigest::of(1 << 8, b"", b"x.c:1: error\n"),
            ResultDigest::of(9, b"", b""),
        ] {
            let r = HostResult::of_digest("h:1".into(), "127.0.0.1:1".into(), &digest);
            assert_eq!(r.object, digest.object_hex());
            assert_eq!(r.status, digest.status);
            assert_eq!(r.diagnostics.len(), 64);
            assert_eq!(
                r.result_hash(),
                crate::network::api::result_hash_of(&digest),
                "{digest}"
            );
            // Through the log and back, as the upload reads it.
            let mut e = record("h:1");
            e.results = vec![r];
            e.toolchain = Some("f".repeat(64));
            let line = serde_json::to_string(&e).unwrap();
            let back: Evidence = serde_json::from_str(&line).unwrap();
            assert_eq!(back, e);
            assert_eq!(
                back.results[0].result_hash(),
                crate::network::api::result_hash_of(&digest)
            );
        }
        // Records written before the field existed still parse.
        let mut old = serde_json::to_value(record("h")).unwrap();
        old.as_object_mut().unwrap().remove("toolchain");
        let old: Evidence = serde_json::from_value(old).unwrap();
        assert_eq!(old.toolchain, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("toolchain"));
    }
}
