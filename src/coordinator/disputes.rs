//! What the adjudicator works from, shared with the routes: the disputes
//! pending in memory (evidence asked for, disputes waiting for referees),
//! the counters behind `/metrics`, and the evidence files (bounded
//! decompression, storage within `--evidence-quota`). The task itself is in
//! `adjudicator`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::network::api::{MismatchReport, MAX_EVIDENCE_INPUT};
use crate::network::cache_api::CacheDispute;
use crate::network::identity::IdentityId;

/// Inconclusive adjudications retried (with fresh referees) before the
/// dispute is dropped.
pub(super) const MAX_ATTEMPTS: u32 = 3;

/// One report waiting for its adjudication.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) report_id: i64,
    pub(super) reporter: IdentityId,
    pub(super) accused: IdentityId,
    pub(super) report: MismatchReport,
    pub(super) attempts: u32,
    /// Not tried again before this (the coordinator's clock, ms): an
    /// inconclusive adjudication waits for other referees to come up.
    pub(super) not_before_ms: u64,
}

/// A disputed cache entry waiting for its adjudication (issue 16).
#[derive(Debug, Clone)]
pub(super) struct CachePending {
    /// The member whose spot check disagreed (and who uploads the input).
    pub(super) member: IdentityId,
    pub(super) dispute: CacheDispute,
    pub(super) attempts: u32,
    pub(super) not_before_ms: u64,
}

/// What is pending, in memory.
#[derive(Default)]
pub(super) struct Adjudications {
    /// Cache disputes: evidence asked for, (member, input hash) → disputes.
    cache_wanted: HashMap<(IdentityId, String), Vec<CachePending>>,
    cache_queue: Vec<CachePending>,
    /// Keys whose dispute is queued or being decided, and keys decided
    /// (the entry upheld or withdrawn).
    cache_running: HashSet<String>,
    cache_decided: HashSet<String>,
    /// Evidence asked for: (reporter, input hash) → the reports it would decide.
    wanted: HashMap<(IdentityId, String), Vec<Pending>>,
    /// Disputes whose evidence is stored, waiting for the task.
    queue: Vec<Pending>,
    /// (accused, input hash) queued or being decided.
    running: HashSet<(IdentityId, String)>,
    /// (accused, input hash) decided (not inconclusive).
    decided: HashSet<(IdentityId, String)>,
}

/// Counts for `/metrics`.
#[derive(Default)]
pub(super) struct AdjudicationCounters {
    pub(super) evidence_stored: AtomicU64,
    pub(super) accused_wrong: AtomicU64,
    pub(super) report_false: AtomicU64,
    pub(super) unconfirmed: AtomicU64,
    pub(super) inconclusive: AtomicU64,
    pub(super) dropped: AtomicU64,
}

/// Where the evidence for `input_hash` is kept.
pub(super) fn evidence_file(data_dir: &Path, input_hash: &str) -> PathBuf {
    data_dir.join("evidence").join(format!("{input_hash}.zst"))
}

#[derive(Debug, thiserror::Error)]
pub(super) enum EvidenceError {
    #[error("evidence is not valid zstd: {0}")]
    Corrupt(String),
    #[error("evidence decompresses to more than {MAX_EVIDENCE_INPUT} bytes")]
    TooLarge,
}

/// Decompress `compressed`, refusing beyond [`MAX_EVIDENCE_INPUT`] bytes
/// (streaming: a zstd bomb costs at most that much memory).
pub(super) fn decompress_bounded(compressed: &[u8]) -> Result<Vec<u8>, EvidenceError> {
    let decoder = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| EvidenceError::Corrupt(e.to_string()))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_EVIDENCE_INPUT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| EvidenceError::Corrupt(e.to_string()))?;
    if out.len() > MAX_EVIDENCE_INPUT {
        return Err(EvidenceError::TooLarge);
    }
    Ok(out)
}

/// Store `compressed` as the evidence for `input_hash`, removing the oldest
/// files first so that the folder stays within `quota` bytes. False when the
/// file alone exceeds the quota.
pub(super) fn store_evidence(
    data_dir: &Path,
    input_hash: &str,
    compressed: &[u8],
    quota: u64,
) -> std::io::Result<bool> {
    let dir = data_dir.join("evidence");
    std::fs::create_dir_all(&dir)?;
    let size = compressed.len() as u64;
    if size > quota {
        return Ok(false);
    }
    let target = evidence_file(data_dir, input_hash);
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let path = entry.path();
        if path == target || path.extension().is_none_or(|e| e != "zst") {
            continue;
        }
        let meta = entry.metadata()?;
        files.push((
            meta.modified().unwrap_or(std::time::UNIX_EPOCH),
            meta.len(),
            path,
        ));
    }
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (_, len, path) in &files {
        if total + size <= quota {
            break;
        }
        std::fs::remove_file(path)?;
        total -= len;
    }
    let tmp = dir.join(format!("{input_hash}.tmp"));
    std::fs::write(&tmp, compressed)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &target)?;
    Ok(true)
}

impl Adjudications {
    /// Is a dispute over (accused, input) decided or under way?
    pub(super) fn is_settled_or_running(&self, accused: &IdentityId, input: &str) -> bool {
        let k = (*accused, input.to_string());
        self.decided.contains(&k) || self.running.contains(&k)
    }

    /// Ask `p.reporter` for the evidence of `p`.
    pub(super) fn want(&mut self, p: Pending) {
        let list = self
            .wanted
            .entry((p.reporter, p.report.input_hash.clone()))
            .or_default();
        if !list.iter().any(|q| q.accused == p.accused) {
            list.push(p);
        }
    }

    /// Queue `p` (its evidence is stored already).
    pub(super) fn enqueue(&mut self, p: Pending) {
        let k = (p.accused, p.report.input_hash.clone());
        if self.running.insert(k) {
            self.queue.push(p);
        }
    }

    /// Did `reporter` get asked for `input`'s evidence (by a report or a
    /// cache dispute)?
    pub(super) fn is_wanted(&self, reporter: &IdentityId, input: &str) -> bool {
        let k = (*reporter, input.to_string());
        self.wanted.contains_key(&k) || self.cache_wanted.contains_key(&k)
    }

    /// The evidence `reporter` was asked for arrived: queue its disputes.
    pub(super) fn arrived(&mut self, reporter: &IdentityId, input: &str) {
        let k = (*reporter, input.to_string());
        if let Some(list) = self.wanted.remove(&k) {
            for p in list {
                self.enqueue(p);
            }
        }
        if let Some(list) = self.cache_wanted.remove(&k) {
            for p in list {
                self.cache_enqueue(p);
            }
        }
    }

    /// Is a dispute of the entry `key` decided, under way or waiting for
    /// its evidence?
    pub(super) fn cache_is_open_or_settled(&self, key: &str) -> bool {
        self.cache_decided.contains(key)
            || self.cache_running.contains(key)
            || self
                .cache_wanted
                .values()
                .flatten()
                .any(|p| p.dispute.key == key)
    }

    /// Ask `p.member` for the evidence of `p`.
    pub(super) fn cache_want(&mut self, p: CachePending) {
        let list = self
            .cache_wanted
            .entry((p.member, p.dispute.input_hash.clone()))
            .or_default();
        if !list.iter().any(|q| q.dispute.key == p.dispute.key) {
            list.push(p);
        }
    }

    /// Queue `p` (its evidence is stored already).
    pub(super) fn cache_enqueue(&mut self, p: CachePending) {
        if self.cache_running.insert(p.dispute.key.clone()) {
            self.cache_queue.push(p);
        }
    }

    /// The queued cache disputes due at `now_ms`.
    pub(super) fn cache_take_due(&mut self, now_ms: u64) -> Vec<CachePending> {
        let (due, later): (Vec<CachePending>, Vec<CachePending>) =
            std::mem::take(&mut self.cache_queue)
                .into_iter()
                .partition(|p| p.not_before_ms <= now_ms);
        self.cache_queue = later;
        due
    }

    pub(super) fn cache_finish(&mut self, p: &CachePending, decided: bool) {
        self.cache_running.remove(&p.dispute.key);
        if decided {
            self.cache_decided.insert(p.dispute.key.clone());
        }
    }

    /// Try `p` again after `delay_ms`.
    pub(super) fn cache_requeue(&mut self, mut p: CachePending, now_ms: u64, delay_ms: u64) {
        p.not_before_ms = now_ms.saturating_add(delay_ms);
        self.cache_queue.push(p);
    }

    /// The queued disputes due at `now_ms`.
    pub(super) fn take_due(&mut self, now_ms: u64) -> Vec<Pending> {
        let (due, later): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|p| p.not_before_ms <= now_ms);
        self.queue = later;
        due
    }

    pub(super) fn finish(&mut self, p: &Pending, decided: bool) {
        let k = (p.accused, p.report.input_hash.clone());
        self.running.remove(&k);
        if decided {
            self.decided.insert(k);
        }
    }

    /// Try `p` again after `delay_ms`.
    pub(super) fn requeue(&mut self, mut p: Pending, now_ms: u64, delay_ms: u64) {
        p.not_before_ms = now_ms.saturating_add(delay_ms);
        self.queue.push(p);
    }
}

/// Adjudication state, for the routes.
pub(super) type AdjudicationState = Mutex<Adjudications>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_decompression() {
        let input = vec![b'x'; 1000];
        let c = zstd::bulk::compress(&input, 3).unwrap();
        assert_eq!(decompress_bounded(&c).unwrap(), input);
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_EVIDENCE_INPUT + 1], 3).unwrap();
        assert!(matches!(
            decompress_bounded(&bomb),
            Err(EvidenceError::TooLarge)
        ));
        assert!(decompress_bounded(b"not zstd").is_err());
    }

    #[test]
    fn quota_removes_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let h = |c: char| c.to_string().repeat(64);
        // Stored in order; their times say so whatever the clock's resolution.
        let dated = |c: char, secs: u64| {
            assert!(store_evidence(dir.path(), &h(c), &[0; 40], 100).unwrap());
            std::fs::File::options()
                .write(true)
                .open(evidence_file(dir.path(), &h(c)))
                .unwrap()
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        };
        dated('a', 10);
        dated('b', 20);
        assert!(store_evidence(dir.path(), &h('c'), &[0; 40], 100).unwrap());
        assert!(!evidence_file(dir.path(), &h('a')).exists());
        assert!(evidence_file(dir.path(), &h('b')).exists());
        assert!(evidence_file(dir.path(), &h('c')).exists());
        assert!(!store_evidence(dir.path(), &h('d'), &[0; 101], 100).unwrap());
    }
}
