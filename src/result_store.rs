//! A bounded byte store on disk, keyed by a result hash (issue 16): a host
//! keeps the replies it may be asked for by `CGET`, a member the replies it
//! fetched. Both a long-running daemon and many short-lived client processes
//! (one per compile, concurrently) use one directory:
//!
//! * `<dir>/<first 2 hex>/<64 hex>`: one entry, written to a temporary file
//!   and renamed into place, so a reader sees a whole entry or none.
//! * `<dir>/total`: the bytes of all entries, rewritten under an exclusive
//!   `flock` on `<dir>/lock` by every put. A put therefore costs a few small
//!   file operations, not a scan; the directory is scanned only when the
//!   total is missing or unreadable, and when it must evict.
//! * Eviction is least recently used by mtime: a `get` touches its entry.
//!
//! Keys are checked to be 64 lowercase hex digits before they come near a
//! path, so no key names anything outside the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The largest entry stored or read back. The same bound as
/// `network::cache_api::MAX_STORED_REPLY` (what a host serves and a member
/// accepts by `CGET`); this layer sits below the contract, so the server
/// checks that the two agree.
pub const MAX_ENTRY_BYTES: u64 = 256 * 1024 * 1024;

const TOTAL_FILE: &str = "total";
const LOCK_FILE: &str = "lock";
const TMP_PREFIX: &str = ".tmp-";
/// Temporary files of a process that died mid-put are removed at the next
/// eviction once they are this old.
const STALE_TMP: Duration = Duration::from_secs(3600);
/// An eviction frees a tenth of the bound beyond what the put needs.
const EVICT_SLACK_DIVISOR: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ResultStoreError {
    #[error("{0:?} is not a result hash (64 lowercase hex digits)")]
    BadHash(String),
    #[error("an entry of {len} bytes is over the store's bound of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("result store {}: {source}; check that the directory is writable by this user", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ResultStoreError + '_ {
    move |source| ResultStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Is `hash` 64 lowercase hex digits?
pub fn is_result_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A bounded on-disk store of byte strings by result hash.
#[derive(Debug)]
pub struct ResultStore {
    dir: PathBuf,
    max_bytes: u64,
}

/// One entry found by a scan.
struct Found {
    path: PathBuf,
    len: u64,
    used: SystemTime,
}

impl ResultStore {
    /// The store in `dir` (created 0700 if missing), bounded to `max_bytes`
    /// (0: disabled, every put is a no-op). Cheap: nothing is scanned.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<ResultStore, ResultStoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        Ok(ResultStore {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn entry_path(&self, hash: &str) -> Result<PathBuf, ResultStoreError> {
        if !is_result_hash(hash) {
            return Err(ResultStoreError::BadHash(
                hash.chars().take(80).collect::<String>(),
            ));
        }
        Ok(self.dir.join(&hash[..2]).join(hash))
    }

    /// The entry of `hash`, if stored (and no larger than
    /// [`MAX_ENTRY_BYTES`]); marks it recently used.
    pub fn get(&self, hash: &str) -> Option<Vec<u8>> {
        let path = self.entry_path(hash).ok()?;
        let file = File::open(&path).ok()?;
        let len = file.metadata().ok()?.len();
        if len > MAX_ENTRY_BYTES {
            tracing::warn!(
                "result store entry {} is {len} bytes, over the bound of {MAX_ENTRY_BYTES}; ignored",
                path.display()
            );
            return None;
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        if bytes.len() as u64 > MAX_ENTRY_BYTES {
            return None;
        }
        // Only the recency of use changes: a failure costs LRU accuracy.
        if let Ok(f) = OpenOptions::new().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// Store `bytes` under `hash`, then evict the least recently used
    /// entries until the store is within its bound. Safe from several
    /// processes at once. A no-op when the store is disabled (bound 0).
    pub fn put(&self, hash: &str, bytes: &[u8]) -> Result<(), ResultStoreError> {
        let path = self.entry_path(hash)?;
        if self.max_bytes == 0 {
            return Ok(());
        }
        let len = bytes.len() as u64;
        let max = self.max_bytes.min(MAX_ENTRY_BYTES);
        if len > max {
            return Err(ResultStoreError::TooLarge { len, max });
        }
        let sub = path.parent().unwrap_or(&self.dir).to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&sub)
            .map_err(io_err(&sub))?;
        // Written outside the lock: only the rename and the total need it.
        let tmp = sub.join(tmp_name(hash));
        let written = write_new(&tmp, bytes);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        let _lock = self.lock()?;
        let old = fs::metadata(&path).ok().map(|m| m.len());
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
        let total = match self.read_total() {
            Some(t) => t.saturating_sub(old.unwrap_or(0)).saturating_add(len),
            None => self.scan().iter().map(|f| f.len).sum(),
        };
        let total = if total > self.max_bytes {
            self.evict()
        } else {
            total
        };
        self.write_total(total);
        Ok(())
    }

    /// Drop the entry of `hash` (an audit found it withdrawn); whether
    /// there was one.
    pub fn remove(&self, hash: &str) -> Result<bool, ResultStoreError> {
        let path = self.entry_path(hash)?;
        let _lock = self.lock()?;
        let Ok(meta) = fs::metadata(&path) else {
            return Ok(false);
        };
        fs::remove_file(&path).map_err(io_err(&path))?;
        if let Some(total) = self.read_total() {
            self.write_total(total.saturating_sub(meta.len()));
        }
        Ok(true)
    }

    /// Bytes of all entries (from the kept total; a scan when it is missing).
    pub fn total_bytes(&self) -> u64 {
        let Ok(_lock) = self.lock() else {
            return self.scan().iter().map(|f| f.len).sum();
        };
        match self.read_total() {
            Some(t) => t,
            None => {
                let t = self.scan().iter().map(|f| f.len).sum();
                self.write_total(t);
                t
            }
        }
    }

    /// Entries stored (a scan: for status pages and tests).
    pub fn len(&self) -> usize {
        self.scan().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Under the lock: remove entries, least recently used first, until the
    /// rest fit under the low-water mark; the bytes that remain. Evicting
    /// below the bound means a full store scans once per tenth of its size
    /// put, not at every put.
    fn evict(&self) -> u64 {
        let mut found = self.scan();
        let mut total: u64 = found.iter().map(|f| f.len).sum();
        let target = self.max_bytes - self.max_bytes / EVICT_SLACK_DIVISOR;
        // Newest first, so the oldest pop off the end.
        found.sort_by_key(|f| std::cmp::Reverse(f.used));
        while total > target {
            let Some(victim) = found.pop() else { break };
            match fs::remove_file(&victim.path) {
                Ok(()) => total -= victim.len,
                // Gone already (another store's eviction without our lock
                // cannot happen; a hand removal can): not counted anyway.
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= victim.len,
                Err(e) => tracing::warn!("cannot evict {}: {e}", victim.path.display()),
            }
        }
        total
    }

    /// Every entry, with stale temporary files removed on the way.
    fn scan(&self) -> Vec<Found> {
        let mut found = Vec::new();
        let Ok(subs) = fs::read_dir(&self.dir) else {
            return found;
        };
        let now = SystemTime::now();
        for sub in subs.flatten() {
            let name = sub.file_name();
            let name = name.to_string_lossy();
            if name.len() != 2 || !sub.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(entries) = fs::read_dir(sub.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let file_name = e.file_name();
                let file_name = file_name.to_string_lossy();
                if file_name.starts_with(TMP_PREFIX) {
                    if now.duration_since(used).is_ok_and(|age| age > STALE_TMP) {
                        let _ = fs::remove_file(e.path());
                    }
                    continue;
                }
                if !meta.is_file() || !is_result_hash(&file_name) {
                    continue;
                }
                found.push(Found {
                    path: e.path(),
                    len: meta.len(),
                    used,
                });
            }
        }
        found
    }

    fn read_total(&self) -> Option<u64> {
        let text = fs::read_to_string(self.dir.join(TOTAL_FILE)).ok()?;
        text.trim().parse().ok()
    }

    /// Best effort: an unwritten or torn total is rebuilt by the next scan.
    /// Written in place at a fixed width, never truncated: on ext4 a file
    /// truncated and rewritten is flushed at close (`auto_da_alloc`), which
    /// made every put cost milliseconds.
    fn write_total(&self, total: u64) {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(TOTAL_FILE);
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .and_then(|f| f.write_all_at(format!("{total:020}\n").as_bytes(), 0));
        if let Err(e) = written {
            tracing::debug!("cannot write {}: {e}", path.display());
        }
    }

    fn lock(&self) -> Result<Flock, ResultStoreError> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        loop {
            // SAFETY: flock on a descriptor we own for the call's duration.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Flock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err(&path)(e));
            }
        }
    }
}

/// Held while the file is open: closing it releases the lock.
struct Flock {
    _file: File,
}

/// A name no other put of this or another process uses at the same time.
fn tmp_name(hash: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{TMP_PREFIX}{}-{}-{}",
        &hash[..16],
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> String {
        hex::encode([n; 32])
    }

    /// Entries' recency, set explicitly so the order does not depend on the
    /// file system's timestamp granularity.
    fn age(store: &ResultStore, hash: &str, secs_ago: u64) {
        let path = store.entry_path(hash).unwrap();
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
            .unwrap();
    }

    #[test]
    fn put_get_and_total() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = ResultStore::open(&dir, 1000).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(store.get(&h(1)), None);
        store.put(&h(1), b"hello").unwrap();
        store.put(&h(2), b"world!").unwrap();
        assert_eq!(store.get(&h(1)).as_deref(), Some(&b"hello"[..]));
        assert_eq!(store.total_bytes(), 11);
        assert_eq!(store.len(), 2);
        // Replacing an entry counts its new size only.
        store.put(&h(1), b"hi").unwrap();
        assert_eq!(store.total_bytes(), 8);
        // A lost total is rebuilt by a scan.
        fs::remove_file(dir.join(TOTAL_FILE)).unwrap();
        let again = ResultStore::open(&dir, 1000).unwrap();
        assert_eq!(again.total_bytes(), 8);
        fs::write(dir.join(TOTAL_FILE), "garbage").unwrap();
        again.put(&h(3), b"x").unwrap();
        assert_eq!(again.total_bytes(), 9);
        // Removal keeps the total.
        assert!(again.remove(&h(2)).unwrap());
        assert!(!again.remove(&h(2)).unwrap());
        assert_eq!(again.get(&h(2)), None);
        assert_eq!(again.total_bytes(), 3);
        assert!(again.remove("../escape").is_err());
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ResultStore::open(tmp.path(), 300).unwrap();
        for n in 1..=3 {
            store.put(&h(n), &[n; 100]).unwrap();
        }
        age(&store, &h(1), 300);
        age(&store, &h(2), 200);
        age(&store, &h(3), 100);
        // Reading 1 makes it the most recent: 2 is now the oldest.
        assert!(store.get(&h(1)).is_some());
        store.put(&h(4), &[4; 100]).unwrap();
        // 400 bytes: the eviction goes down to 270 (a tenth below the
        // bound), least recently used first.
        assert_eq!(store.get(&h(2)), None, "the least recently used goes");
        assert_eq!(store.get(&h(3)), None, "then the next");
        for n in [1, 4] {
            assert!(store.get(&h(n)).is_some(), "{n} kept");
        }
        assert_eq!(store.total_bytes(), 200);
        store.put(&h(3), &[3; 100]).unwrap();
        assert_eq!(store.total_bytes(), 300, "no eviction at the bound");
        // A large entry pushes out as many as it needs.
        age(&store, &h(1), 50);
        age(&store, &h(3), 40);
        age(&store, &h(4), 30);
        store.put(&h(5), &[5; 250]).unwrap();
        assert_eq!(store.len(), 1);
        assert!(store.get(&h(5)).is_some());
        assert_eq!(store.total_bytes(), 250);
    }

    #[test]
    fn bound_holds_and_oversize_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ResultStore::open(tmp.path(), 1000).unwrap();
        for n in 0..50u8 {
            store.put(&h(n), &vec![n; 37 + n as usize]).unwrap();
            assert!(store.total_bytes() <= 1000);
        }
        let real: u64 = store.scan().iter().map(|f| f.len).sum();
        assert_eq!(real, store.total_bytes());
        assert!(matches!(
            store.put(&h(99), &[0; 1001]),
            Err(ResultStoreError::TooLarge { .. })
        ));
    }

    #[test]
    fn bad_hashes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ResultStore::open(tmp.path(), 1000).unwrap();
        let upper = "A".repeat(64);
        let short = "a".repeat(63);
        let long = "a".repeat(65);
        let dots = format!("../{}", "a".repeat(61));
        let slash = format!("aa/{}", "a".repeat(61));
        let nonhex = "g".repeat(64);
        for bad in ["", &upper, &short, &long, &dots, &slash, &nonhex] {
            assert!(
                matches!(store.put(bad, b"x"), Err(ResultStoreError::BadHash(_))),
                "{bad}"
            );
            assert_eq!(store.get(bad), None, "{bad}");
        }
        assert!(store.is_empty());
    }

    #[test]
    fn disabled_store_keeps_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ResultStore::open(tmp.path(), 0).unwrap();
        store.put(&h(1), b"x").unwrap();
        assert_eq!(store.get(&h(1)), None);
        assert_eq!(store.total_bytes(), 0);
    }

    /// Several stores on one directory (as several processes would have),
    /// putting at once from threads: the bound holds and the kept total is
    /// the real one.
    #[test]
    fn concurrent_puts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let store = ResultStore::open(&dir, 5000).unwrap();
                    for i in 0..25u8 {
                        let n = t.wrapping_mul(31).wrapping_add(i);
                        store.put(&h(n), &vec![i; 100 + i as usize]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let store = ResultStore::open(&dir, 5000).unwrap();
        let real: u64 = store.scan().iter().map(|f| f.len).sum();
        assert!(real <= 5000, "{real}");
        assert_eq!(store.total_bytes(), real);
        for f in store.scan() {
            let bytes = fs::read(&f.path).unwrap();
            // Every entry is whole: one writer's bytes, not a mix.
            assert!(bytes.iter().all(|&b| b == bytes[0]));
            assert_eq!(bytes.len(), 100 + bytes[0] as usize);
        }
    }
}
