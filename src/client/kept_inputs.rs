//! The preprocessed inputs of lost votes, kept for the coordinator:
//! `$DPORTAGE_DIR/evidence-inputs/<input hash>.zst`, the exact bytes every host
//! got, compressed with zstd. A coordinator that adjudicates a dispute asks for
//! the input in its answer to the report (`ReportAck::evidence_wanted`) and the
//! upload (`client::upload`) sends the file as is, then deletes it.
//!
//! Bounded: at most [`MAX_KEPT_INPUTS`] files and [`MAX_KEPT_BYTES`] on disk;
//! the oldest go first. An input the coordinator could not take anyway (over
//! `MAX_EVIDENCE_INPUT`, or over `MAX_EVIDENCE_BYTES` compressed) is not kept.
//! Nothing here may fail a compile: callers warn and go on.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::network::api::{is_input_hash, MAX_EVIDENCE_BYTES, MAX_EVIDENCE_INPUT};

use super::evidence::{lock_exclusive, StateDir, StateError};

/// The folder inside `$DPORTAGE_DIR`.
pub const INPUTS_DIR: &str = "evidence-inputs";
/// At most this many inputs are kept.
pub const MAX_KEPT_INPUTS: usize = 64;
/// At most this many (compressed) bytes are kept in all.
pub const MAX_KEPT_BYTES: u64 = 64 << 20;
/// zstd level: a lost vote is rare, a smaller upload is worth a few ms.
const LEVEL: i32 = 9;
const LOCK_FILE: &str = ".lock";
const TEMP_PREFIX: &str = ".tmp-";
/// A temporary file this old was left by a crashed client.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// The kept inputs of one `$DPORTAGE_DIR`.
#[derive(Debug, Clone)]
pub struct KeptInputs {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
}

/// What [`KeptInputs::keep`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub path: PathBuf,
    /// Size of the file (compressed).
    pub bytes: u64,
    /// Older inputs removed to stay within the bounds.
    pub evicted: usize,
}

/// One file of the folder, for the eviction rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeptFile {
    hash: String,
    modified: SystemTime,
    len: u64,
}

impl KeptInputs {
    /// The inputs kept under `state` (the folder is created when needed).
    pub fn of(state: &StateDir) -> Self {
        Self::in_dir(state.path())
    }

    /// The inputs kept under the `$DPORTAGE_DIR` `dportage_dir`.
    pub fn in_dir(dportage_dir: &Path) -> Self {
        KeptInputs {
            dir: dportage_dir.join(INPUTS_DIR),
            max_files: MAX_KEPT_INPUTS,
            max_bytes: MAX_KEPT_BYTES,
        }
    }

    /// The file of `input_hash` (kept or not); `None` when it is not a blake3
    /// hex digest (so never a path outside the folder).
    pub fn path(&self, input_hash: &str) -> Option<PathBuf> {
        is_input_hash(input_hash).then(|| self.dir.join(format!("{input_hash}.zst")))
    }

    /// Keep `input`, whose blake3 hex is `input_hash`, removing the oldest
    /// inputs beyond the bounds. Keeping an input kept already refreshes it.
    pub fn keep(&self, input_hash: &str, input: &[u8]) -> Result<Kept, StateError> {
        let path = self.checked_path(input_hash)?;
        if blake3::hash(input).to_hex().as_str() != input_hash {
            return Err(StateError::InputMismatch {
                hash: input_hash.to_owned(),
            });
        }
        if input.len() > MAX_EVIDENCE_INPUT {
            return Err(StateError::InputTooLarge {
                what: "preprocessed",
                bytes: input.len(),
                max: MAX_EVIDENCE_INPUT,
            });
        }
        self.create_dir()?;
        let existing = std::fs::metadata(&path).ok().filter(|m| m.is_file());
        let bytes = match existing {
            Some(meta) => {
                // The same input lost another vote: it is the newest again.
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(SystemTime::now()))
                    .map_err(|source| file_error(&path, source))?;
                meta.len()
            }
            None => {
                let compressed = zstd::bulk::compress(input, LEVEL)
                    .map_err(|source| file_error(&path, source))?;
                if compressed.len() > MAX_EVIDENCE_BYTES {
                    return Err(StateError::InputTooLarge {
                        what: "compressed",
                        bytes: compressed.len(),
                        max: MAX_EVIDENCE_BYTES,
                    });
                }
                let mut tmp = tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .tempfile_in(&self.dir)
                    .map_err(|source| file_error(&self.dir, source))?;
                tmp.write_all(&compressed)
                    .map_err(|source| file_error(tmp.path(), source))?;
                let _lock = self.lock()?;
                tmp.persist(&path).map_err(|e| file_error(&path, e.error))?;
                compressed.len() as u64
            }
        };
        let evicted = self.evict(input_hash)?;
        Ok(Kept {
            path,
            bytes,
            evicted,
        })
    }

    /// The compressed input kept for `input_hash`, checked: `None` when none
    /// is kept; a file that is not that input (damaged, edited) is removed and
    /// counts as none.
    pub fn read(&self, input_hash: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.checked_path(input_hash)?;
        let mut compressed = Vec::new();
        match File::open(&path) {
            Ok(f) => f
                .take(MAX_EVIDENCE_BYTES as u64 + 1)
                .read_to_end(&mut compressed)
                .map_err(|source| file_error(&path, source))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(file_error(&path, source)),
        };
        if compressed.len() <= MAX_EVIDENCE_BYTES && decompresses_to(&compressed, input_hash) {
            return Ok(Some(compressed));
        }
        tracing::warn!(
            "{} is not the input it is named after; removing it",
            path.display()
        );
        self.remove(input_hash)?;
        Ok(None)
    }

    /// Forget the input of `input_hash`. Returns whether one was kept.
    pub fn remove(&self, input_hash: &str) -> Result<bool, StateError> {
        let path = self.checked_path(input_hash)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(file_error(&path, source)),
        }
    }

    fn checked_path(&self, input_hash: &str) -> Result<PathBuf, StateError> {
        self.path(input_hash)
            .ok_or_else(|| StateError::NotAnInputHash(input_hash.chars().take(80).collect()))
    }

    fn create_dir(&self) -> Result<(), StateError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| StateError::CreateDir {
                path: self.dir.display().to_string(),
                source,
            })?;
        crate::shared_dir::share_with_group(&self.dir, crate::shared_dir::GroupAccess::ReadWrite);
        Ok(())
    }

    /// Remove the oldest inputs (never `newest`) until the bounds hold, and
    /// temporary files left by crashed clients. Returns how many inputs went.
    fn evict(&self, newest: &str) -> Result<usize, StateError> {
        let _lock = self.lock()?;
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| file_error(&self.dir, source))?;
        let now = SystemTime::now();
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(TEMP_PREFIX) {
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMP {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            if let Some(hash) = name.strip_suffix(".zst").filter(|h| is_input_hash(h)) {
                files.push(KeptFile {
                    hash: hash.to_owned(),
                    modified,
                    len: meta.len(),
                });
            }
        }
        let mut evicted = 0;
        for hash in to_evict(files, newest, self.max_files, self.max_bytes) {
            match self.remove(&hash) {
                Ok(_) => evicted += 1,
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(evicted)
    }

    /// An exclusive lock on the folder, held until the file is dropped.
    fn lock(&self) -> Result<File, StateError> {
        lock_exclusive(&self.dir.join(LOCK_FILE))
    }
}

/// Which kept inputs go so that at most `max_files` and `max_bytes` stay: the
/// oldest first (ties by name, so every client picks the same), never `newest`.
fn to_evict(
    mut files: Vec<KeptFile>,
    newest: &str,
    max_files: usize,
    max_bytes: u64,
) -> Vec<String> {
    files.sort_by(|a, b| {
        a.modified
            .cmp(&b.modified)
            .then_with(|| a.hash.cmp(&b.hash))
    });
    let mut count = files.len();
    let mut bytes: u64 = files.iter().map(|f| f.len).sum();
    let mut out = Vec::new();
    for f in files {
        if count <= max_files && bytes <= max_bytes {
            break;
        }
        if f.hash == newest {
            continue;
        }
        count -= 1;
        bytes -= f.len;
        out.push(f.hash);
    }
    out
}

/// Does `compressed` decompress (within the coordinator's bound) to bytes
/// whose blake3 hex is `input_hash`?
fn decompresses_to(compressed: &[u8], input_hash: &str) -> bool {
    let Ok(decoder) = zstd::stream::read::Decoder::new(compressed) else {
        return false;
    };
    let mut hasher = blake3::Hasher::new();
    let mut limited = decoder.take(MAX_EVIDENCE_INPUT as u64 + 1);
    match std::io::copy(&mut limited, &mut hasher) {
        Ok(n) if n <= MAX_EVIDENCE_INPUT as u64 => {
            hasher.finalize().to_hex().as_str() == input_hash
        }
        _ => false,
    }
}

fn file_error(path: &Path, source: std::io::Error) -> StateError {
    StateError::File {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    /// A source that compresses poorly (so sizes are predictable-ish).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn store(dir: &Path, max_files: usize, max_bytes: u64) -> KeptInputs {
        KeptInputs {
            max_files,
            max_bytes,
            ..KeptInputs::in_dir(dir)
        }
    }

    /// Keep `input` and date its file `age_secs` into the past, so the order
    /// does not depend on the file system's time resolution.
    fn keep_aged(store: &KeptInputs, input: &[u8], age_secs: u64) -> Kept {
        let kept = store.keep(&hash(input), input).unwrap();
        let when = SystemTime::now() - Duration::from_secs(age_secs);
        File::options()
            .write(true)
            .open(&kept.path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        kept
    }

    #[test]
    fn inputs_round_trip_compressed() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path()).unwrap();
        let inputs = KeptInputs::of(&state);
        let source = b"# 1 \"x.c\"\nint answer(void) { return 42; }\n".repeat(200);
        let h = hash(&source);
        assert_eq!(inputs.read(&h).unwrap(), None);
        let kept = inputs.keep(&h, &source).unwrap();
        assert_eq!(
            kept.path,
            t.path().join(INPUTS_DIR).join(format!("{h}.zst"))
        );
        assert!(kept.bytes < source.len() as u64 / 4, "{kept:?}");
        let compressed = inputs.read(&h).unwrap().unwrap();
        assert_eq!(
            zstd::bulk::decompress(&compressed, 1 << 20).unwrap(),
            source
        );
        // Again: nothing changes but its age.
        assert_eq!(inputs.keep(&h, &source).unwrap().bytes, kept.bytes);
        assert!(inputs.remove(&h).unwrap());
        assert!(!inputs.remove(&h).unwrap());
        assert_eq!(inputs.read(&h).unwrap(), None);
    }

    #[test]
    fn wrong_hashes_and_damaged_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let inputs = KeptInputs::in_dir(t.path());
        assert!(matches!(
            inputs.keep(&hash(b"a"), b"b"),
            Err(StateError::InputMismatch { .. })
        ));
        assert!(matches!(
            inputs.keep("../../x", b"b"),
            Err(StateError::NotAnInputHash(_))
        ));
        assert_eq!(inputs.path("../x"), None);
        // A file that is not its input is removed on read.
        let h = hash(b"int x;");
        inputs.keep(&h, b"int x;").unwrap();
        let path = inputs.path(&h).unwrap();
        std::fs::write(&path, zstd::bulk::compress(b"int y;", 3).unwrap()).unwrap();
        assert_eq!(inputs.read(&h).unwrap(), None);
        assert!(!path.exists());
        inputs.keep(&h, b"int x;").unwrap();
        std::fs::write(&path, b"not zstd").unwrap();
        assert_eq!(inputs.read(&h).unwrap(), None);
    }

    #[test]
    fn the_oldest_go_beyond_the_file_count() {
        let t = tempfile::tempdir().unwrap();
        let inputs = store(t.path(), 3, u64::MAX);
        let sources: Vec<Vec<u8>> = (0..5).map(|i| noise(i, 1000)).collect();
        for (i, s) in sources.iter().enumerate().take(3) {
            keep_aged(&inputs, s, 100 - i as u64);
        }
        // A stale temporary file of a crashed client goes too; a fresh one
        // (another client writing right now) stays.
        let stale = inputs.dir.join(".tmp-stale");
        std::fs::write(&stale, b"x").unwrap();
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - STALE_TEMP * 2)
            .unwrap();
        let fresh = inputs.dir.join(".tmp-fresh");
        std::fs::write(&fresh, b"x").unwrap();
        // The fourth pushes out the oldest, the fifth the next.
        assert_eq!(
            inputs
                .keep(&hash(&sources[3]), &sources[3])
                .unwrap()
                .evicted,
            1
        );
        assert!(!stale.exists() && fresh.exists());
        assert_eq!(
            inputs
                .keep(&hash(&sources[4]), &sources[4])
                .unwrap()
                .evicted,
            1
        );
        let kept: Vec<bool> = sources
            .iter()
            .map(|s| inputs.path(&hash(s)).unwrap().exists())
            .collect();
        assert_eq!(kept, [false, false, true, true, true]);
    }

    #[test]
    fn the_oldest_go_beyond_the_byte_budget() {
        let t = tempfile::tempdir().unwrap();
        let inputs = store(t.path(), 64, 0);
        let big = noise(1, 50_000);
        let kept = keep_aged(&inputs, &big, 10);
        // Noise does not compress: the file is about as large as the input.
        assert!(kept.bytes > 49_000, "{kept:?}");
        // A budget for about two files: the third pushes out the oldest.
        let inputs = store(t.path(), 64, 2 * kept.bytes + 1000);
        let second = noise(2, 50_000);
        keep_aged(&inputs, &second, 5);
        assert!(inputs.read(&hash(&big)).unwrap().is_some());
        let third = noise(3, 50_000);
        let k = inputs.keep(&hash(&third), &third).unwrap();
        assert_eq!(k.evicted, 1);
        assert!(!inputs.path(&hash(&big)).unwrap().exists());
        assert!(inputs.path(&hash(&second)).unwrap().exists());
        // The newest is never removed, even when it alone is over budget.
        let tiny = store(t.path(), 64, 1);
        let fourth = noise(4, 50_000);
        let k = tiny.keep(&hash(&fourth), &fourth).unwrap();
        assert_eq!(k.evicted, 2);
        assert!(k.path.exists());
    }

    #[test]
    fn eviction_rule() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let f = |hash: &str, s: u64, len: u64| KeptFile {
            hash: hash.into(),
            modified: at(s),
            len,
        };
        let files = vec![f("c", 3, 10), f("a", 1, 10), f("b", 1, 10), f("d", 4, 10)];
        assert_eq!(to_evict(files.clone(), "d", 4, 40), Vec::<String>::new());
        assert_eq!(to_evict(files.clone(), "d", 2, 40), ["a", "b"]);
        assert_eq!(to_evict(files.clone(), "d", 4, 25), ["a", "b"]);
        // The newest stays whatever its age says.
        assert_eq!(to_evict(files.clone(), "a", 3, 40), ["b"]);
        assert_eq!(to_evict(files, "a", 0, 0), ["b", "c", "d"]);
    }
}
