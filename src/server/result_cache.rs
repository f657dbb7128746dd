//! The host's side of the verified result cache (issue 16): keep the reply of
//! every network job this daemon compiled successfully, serve it back by
//! `CGET`, and claim "key → result" to the coordinator.
//!
//! Only jobs that came with a valid ticket pass are network jobs: the
//! daemon's own LAN users (admitted by `--allow` without a ticket) never
//! reach the coordinator. The key is computed here, from what this host
//! received and the toolchain it ran ([`crate::trust::cache_entry::CacheKey`]),
//! never taken from a client.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::network::api::result_hash;
use crate::network::cache_api::CacheClaim;
use crate::protocol::{ProtocolVersion, Reply};
use crate::result_store::ResultStore;
use crate::trust::cache_entry::CacheKey;

/// Claims waiting for the next heartbeat, at most; past this the oldest go
/// (a claim is worth less the older it is: the entry may exist already).
pub const MAX_QUEUED_CLAIMS: usize = 4096;

/// Fingerprints one job is claimed under at most (the names probed for one
/// binary: `cc`, `gcc`, a target-prefixed name…).
pub const MAX_FINGERPRINTS_PER_JOB: usize = 4;

/// The binary `name` runs, resolved in `PATH` as the heartbeat probes it.
fn binary_of(name: &str) -> Option<PathBuf> {
    let path = crate::probe::resolve_compiler(name, None, &[])?;
    std::fs::canonicalize(path).ok()
}

/// The subdirectory of the daemon's identity directory holding the store.
pub const STORE_SUBDIR: &str = "result-store";

/// `--cache-size` when the daemon joins a network and says nothing.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

/// The store, the toolchains the heartbeat agent probed and the claims
/// queue; shared by connections and the heartbeat agent.
#[derive(Debug, Default)]
pub struct ServerCache {
    store: Option<ResultStore>,
    /// Compiler name (as probed, e.g. `gcc`) → toolchain fingerprint id and
    /// the binary it runs (canonical path).
    toolchains: RwLock<HashMap<String, (String, Option<PathBuf>)>>,
    claims: Mutex<VecDeque<CacheClaim>>,
}

/// A job that compiled, as the host received and answered it.
#[derive(Debug)]
pub struct CompiledJob<'a> {
    pub argv: &'a [Vec<u8>],
    /// blake3 of the decompressed preprocessed input.
    pub input_hash: [u8; 32],
    pub status: u32,
    pub stderr: &'a [u8],
    pub stdout: &'a [u8],
    pub object: &'a [u8],
}

impl ServerCache {
    /// No store: nothing kept, served or claimed.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// The store in `dir` bounded to `max_bytes`; disabled (with a warning)
    /// when it cannot be opened, or when `max_bytes` is 0.
    pub fn open(dir: &Path, max_bytes: u64) -> Self {
        if max_bytes == 0 {
            return Self::disabled();
        }
        match ResultStore::open(dir, max_bytes) {
            Ok(store) => Self {
                store: Some(store),
                ..Self::default()
            },
            Err(e) => {
                tracing::warn!("the result cache is off: {e}");
                Self::disabled()
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    pub fn store(&self) -> Option<&ResultStore> {
        self.store.as_ref()
    }

    /// What the heartbeat agent probed: compiler name → fingerprint id.
    /// Each name's binary is resolved here, once per heartbeat.
    pub fn set_toolchains(&self, map: HashMap<String, String>) {
        let map = map
            .into_iter()
            .map(|(name, id)| {
                let binary = binary_of(&name);
                (name, (id, binary))
            })
            .collect();
        *self.toolchains.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// The fingerprints a job run as `compiler` is claimed under. A
    /// fingerprint names the compiler as probed (`--version`'s first line
    /// says `cc`, `gcc` or `x86_64-linux-gnu-gcc`), and clients send the
    /// name they were called by, rewritten to the target's (distcc's
    /// cross rewrite), then pair by the fingerprint of whichever name they
    /// probed for that binary. So every probed name running the same binary
    /// for the same language counts: all of them compile the job alike.
    /// The name's own fingerprint first; none when the binary is unknown.
    pub fn fingerprints_of(&self, compiler: &str) -> Vec<String> {
        let toolchains = self.toolchains.read().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = toolchains
            .get(compiler)
            .map(|(id, _)| id.clone())
            .into_iter()
            .collect();
        if let Some(binary) = binary_of(compiler) {
            let cxx = crate::fingerprint::is_cxx_name(compiler);
            let mut same: Vec<(&String, &String)> = toolchains
                .iter()
                .filter(|(name, (_, b))| {
                    b.as_ref() == Some(&binary) && crate::fingerprint::is_cxx_name(name) == cxx
                })
                .map(|(name, (id, _))| (name, id))
                .collect();
            same.sort();
            for (_, id) in same {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
        ids.truncate(MAX_FINGERPRINTS_PER_JOB);
        ids
    }

    /// The stored reply of `result` (raw result hash), for `CGET`. Blocking.
    pub fn fetch(&self, result: &[u8; 32]) -> Option<Vec<u8>> {
        self.store.as_ref()?.get(&hex::encode(result))
    }

    /// Whether a job with this argv may be kept: the cache is on, the argv is
    /// UTF-8 and its compiler one whose toolchain was probed. Cheap; tells
    /// the connection whether the input needs hashing at all.
    pub fn wants(&self, argv: &[Vec<u8>]) -> Option<Vec<String>> {
        self.store.as_ref()?;
        let compiler = std::str::from_utf8(argv.first()?).ok()?;
        if argv.iter().any(|a| std::str::from_utf8(a).is_err()) {
            return None;
        }
        let ids = self.fingerprints_of(compiler);
        (!ids.is_empty()).then_some(ids)
    }

    /// Keep a compiled network job's reply and queue its claim. Blocking (it
    /// compresses and writes). The claim, when the job was kept.
    pub fn keep(&self, fingerprints: &[String], job: &CompiledJob<'_>) -> Option<CacheClaim> {
        let store = self.store.as_ref()?;
        let (claim, reply) = build_claim(fingerprints.first()?, job)?;
        if let Err(e) = store.put(&claim.result, &reply) {
            tracing::warn!(
                "cannot keep the reply of result {}: {e}",
                &claim.result[..16]
            );
            return None;
        }
        for other in &fingerprints[1..] {
            if let Some((also, _)) = build_claim(other, job) {
                self.queue(also);
            }
        }
        self.queue(claim.clone());
        Some(claim)
    }

    fn queue(&self, claim: CacheClaim) {
        let mut q = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if q.iter()
            .any(|c| c.key == claim.key && c.result == claim.result)
        {
            return;
        }
        while q.len() >= MAX_QUEUED_CLAIMS {
            q.pop_front();
        }
        q.push_back(claim);
    }

    /// Up to `max` claims, oldest first, taken off the queue.
    pub fn take_claims(&self, max: usize) -> Vec<CacheClaim> {
        let mut q = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Claims that could not be sent go back to the front of the queue,
    /// within the bound (what does not fit is the oldest, and is dropped).
    pub fn put_back(&self, claims: Vec<CacheClaim>) {
        let mut q = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        for c in claims.into_iter().rev() {
            if q.len() >= MAX_QUEUED_CLAIMS {
                break;
            }
            q.push_front(c);
        }
    }

    pub fn queued_claims(&self) -> usize {
        self.claims.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The claim for a compiled job and the reply bytes a `CGET` of its result
/// sends: the protocol 2 (LZO) encoding, whatever protocol the job came in.
/// `None` when the job is not one to keep (failed, no object, non-UTF-8
/// argv).
pub fn build_claim(fingerprint: &str, job: &CompiledJob<'_>) -> Option<(CacheClaim, Vec<u8>)> {
    if job.status != 0 || job.object.is_empty() {
        return None;
    }
    let argv: Vec<String> = job
        .argv
        .iter()
        .map(|a| String::from_utf8(a.clone()).ok())
        .collect::<Option<_>>()?;
    let key = CacheKey::of(fingerprint, &argv, &job.input_hash);
    let result = result_hash(&blake3::hash(job.object).to_hex(), job.status);
    let reply = Reply {
        version: ProtocolVersion::V2,
        status: job.status,
        stderr: job.stderr.to_vec(),
        stdout: job.stdout.to_vec(),
        object: job.object.to_vec(),
    }
    .encode();
    let claim = CacheClaim {
        key: key.to_hex(),
        toolchain: fingerprint.to_owned(),
        result,
        bytes: reply.len() as u64,
    };
    Some((claim, reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::api::result_hash_of;
    use crate::network::cache_api::{CacheClaims, MAX_STORED_REPLY};
    use crate::protocol::Limits;
    use crate::verify::ResultDigest;

    fn argv() -> Vec<Vec<u8>> {
        ["gcc", "-O2", "-c", "t.c", "-o", "t.o"]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect()
    }

    const SOURCE: &[u8] = b"int f(void) { return 1; }\n";

    fn job<'a>(argv: &'a [Vec<u8>], object: &'a [u8], status: u32) -> CompiledJob<'a> {
        CompiledJob {
            argv,
            input_hash: *blake3::hash(SOURCE).as_bytes(),
            status,
            stderr: b"t.c: warning: x\n",
            stdout: b"",
            object,
        }
    }

    #[test]
    fn the_bounds_agree() {
        assert_eq!(crate::result_store::MAX_ENTRY_BYTES, MAX_STORED_REPLY);
    }

    /// The key is the host's own: its fingerprint, the argv and the input it
    /// received; the result and the stored reply agree with what a member
    /// checks (`result_hash_of` of the decoded reply).
    #[test]
    fn claims_are_built_from_what_the_host_received() {
        let fp = "f".repeat(64);
        let a = argv();
        let object = b"\x7fELF object".repeat(100);
        let (claim, reply) = build_claim(&fp, &job(&a, &object, 0)).unwrap();
        let strings: Vec<String> = a
            .iter()
            .map(|x| String::from_utf8(x.clone()).unwrap())
            .collect();
        assert_eq!(
            claim.key,
            CacheKey::of(&fp, &strings, blake3::hash(SOURCE).as_bytes()).to_hex()
        );
        assert_eq!(claim.toolchain, fp);
        assert_eq!(claim.bytes, reply.len() as u64);
        assert!(CacheClaims {
            claims: vec![claim.clone()]
        }
        .validate()
        .is_ok());
        let decoded = Reply::decode_all(&reply, ProtocolVersion::V2, &Limits::default()).unwrap();
        assert_eq!(decoded.object, object);
        assert_eq!(decoded.stderr, b"t.c: warning: x\n");
        assert_eq!(
            result_hash_of(&ResultDigest::of(
                decoded.status,
                &decoded.object,
                &decoded.stderr
            )),
            claim.result
        );
        // Another argv, another input or another toolchain: another key.
        let mut other = a.clone();
        other.push(b"-g".to_vec());
        assert_ne!(
            build_claim(&fp, &job(&other, &object, 0)).unwrap().0.key,
            claim.key
        );
        let mut j = job(&a, &object, 0);
        j.input_hash = [0; 32];
        assert_ne!(build_claim(&fp, &j).unwrap().0.key, claim.key);
        assert_ne!(
            build_claim(&"e".repeat(64), &job(&a, &object, 0))
                .unwrap()
                .0
                .key,
            claim.key
        );
        // Failed compiles, empty objects and non-UTF-8 argv are not kept.
        assert!(build_claim(&fp, &job(&a, &object, 1 << 8)).is_none());
        assert!(build_claim(&fp, &job(&a, b"", 0)).is_none());
        let mut bad = a.clone();
        bad.push(vec![0xff, 0xfe]);
        assert!(build_claim(&fp, &job(&bad, &object, 0)).is_none());
    }

    #[test]
    fn a_job_is_claimed_under_every_probed_name_of_its_binary_and_language() {
        let cache = ServerCache::disabled();
        cache.set_toolchains(HashMap::from([
            ("cc".to_string(), "c".repeat(64)),
            ("gcc".to_string(), "d".repeat(64)),
            ("g++".to_string(), "e".repeat(64)),
            ("no-such-compiler".to_string(), "f".repeat(64)),
        ]));
        let same = binary_of("cc").is_some() && binary_of("cc") == binary_of("gcc");
        let mut ids = cache.fingerprints_of("gcc");
        assert_eq!(ids.first(), Some(&"d".repeat(64)), "its own name first");
        ids.sort();
        if same {
            assert_eq!(ids, vec!["c".repeat(64), "d".repeat(64)], "not g++ (C++)");
        }
        assert_eq!(
            cache.fingerprints_of("no-such-compiler"),
            vec!["f".repeat(64)]
        );
        assert!(cache.fingerprints_of("not-probed-or-installed").is_empty());
    }

    #[test]
    fn keeps_serves_and_queues_within_bounds() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ServerCache::open(&tmp.path().join(STORE_SUBDIR), 1 << 20);
        let a = argv();
        assert_eq!(cache.wants(&a), None, "no toolchain probed yet");
        cache.set_toolchains(HashMap::from([("gcc".to_string(), "a".repeat(64))]));
        let fp = cache.wants(&a).unwrap();
        let mut bad = a.clone();
        bad[2] = vec![0xff];
        assert_eq!(cache.wants(&bad), None);
        let claim = cache.keep(&fp, &job(&a, b"object", 0)).unwrap();
        let mut raw = [0u8; 32];
        hex::decode_to_slice(&claim.result, &mut raw).unwrap();
        let served = cache.fetch(&raw).unwrap();
        assert_eq!(served.len() as u64, claim.bytes);
        assert_eq!(cache.fetch(&[0; 32]), None);
        // The same claim twice is queued once.
        cache.keep(&fp, &job(&a, b"object", 0)).unwrap();
        assert_eq!(cache.queued_claims(), 1);
        let taken = cache.take_claims(10);
        assert_eq!(taken, vec![claim.clone()]);
        assert_eq!(cache.queued_claims(), 0);
        cache.put_back(taken);
        assert_eq!(cache.take_claims(10), vec![claim]);

        // The queue drops the oldest past its bound; put-backs stay within it.
        let q = ServerCache::disabled();
        for i in 0..MAX_QUEUED_CLAIMS + 10 {
            q.queue(CacheClaim {
                key: format!("{i:064x}"),
                toolchain: "b".repeat(64),
                result: "c".repeat(64),
                bytes: 1,
            });
        }
        assert_eq!(q.queued_claims(), MAX_QUEUED_CLAIMS);
        let first = q.take_claims(5);
        assert_eq!(first[0].key, format!("{:064x}", 10));
        q.queue(CacheClaim {
            key: "d".repeat(64),
            toolchain: "b".repeat(64),
            result: "c".repeat(64),
            bytes: 1,
        });
        q.queue(CacheClaim {
            key: "e".repeat(64),
            toolchain: "b".repeat(64),
            result: "c".repeat(64),
            bytes: 1,
        });
        q.put_back(first);
        assert_eq!(q.queued_claims(), MAX_QUEUED_CLAIMS);

        let off = ServerCache::open(&tmp.path().join("off"), 0);
        assert!(!off.enabled());
        assert_eq!(off.wants(&a), None);
    }
}
