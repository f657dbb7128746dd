//! The cache's part in verified dispatch (`crate::client::result_cache`):
//! once the job is preprocessed its key is looked up, first in this
//! member's own cache, then in the network's. A hit is written without a
//! vote — unless the job was drawn for a spot check: then the vote runs as
//! if there were no hit, and a hit its hosts do not confirm is never
//! written and is disputed at the coordinator. Every result the vote
//! agrees on is kept in the member's own cache.

use std::path::Path;

use crate::client::output::strip_terminal_controls;
use crate::client::result_cache::{
    self, absolute, log_fetched, lookup_local, lookup_shared, remember, result_of, write_local_hit,
    CacheJob, Fetched, SharedHit,
};
use crate::client::trace::{write_stderr, write_stdout};
use crate::jobstate::outcome::Verdict;
use crate::network::api::result_hash_of;
use crate::network::clock::unix_now;
use crate::verify::ResultDigest;

use super::driver::Source;
use super::{record_outcome, Verified};

/// The job's key, and the cached result a spot check must confirm.
#[derive(Debug, Clone)]
pub(in crate::client) struct CacheCheck {
    job: CacheJob,
    expected: Option<String>,
}

impl Verified<'_> {
    /// The fingerprint id the job's key is made with, when the cache is on
    /// and `dportage` cached this compiler's fingerprint.
    pub(super) fn cache_toolchain(&self) -> Option<String> {
        if !self.settings.cache {
            return None;
        }
        let id = self.toolchain_id(self.state.as_ref()?);
        if id.is_none() {
            tracing::debug!(
                "the fingerprint of {}'s compiler is not known here (run `dportage` once); \
                 the result cache is not used",
                self.input()
            );
        }
        id
    }

    /// Look the preprocessed job up; `Some(exit code)` when a hit was
    /// written and nothing else is to be done.
    pub(super) fn try_cache(
        &self,
        runtime: &tokio::runtime::Runtime,
        toolchain: String,
        source: &Source,
    ) -> Option<i32> {
        let job = CacheJob::new(toolchain, &self.wire, &source.bytes);
        if self.settings.cache_explain {
            println!("{} {} {}", job.key_hex, job.input_hash, job.toolchain);
            return Some(0);
        }
        let spot_check = self.rules.spot_check;
        let output = Path::new(&self.job.output);
        let mut expected = None;
        if let Some(reply) = lookup_local(self.settings, &job) {
            if spot_check {
                expected = Some(result_of(0, &reply.object));
            } else {
                write_stderr(&source.pre.stderr);
                match write_local_hit(&reply, output) {
                    Ok(()) => {
                        tracing::info!("{}: from the local result cache", self.input());
                        self.record_hit("cache".into());
                        return Some(0);
                    }
                    Err(e) => tracing::warn!(
                        "cannot write {} from the local cache: {e}; compiling it",
                        self.job.output
                    ),
                }
            }
        } else if let Some(member) = &self.member {
            let hit = runtime.block_on(lookup_shared(
                self.settings,
                member,
                &job,
                self.timeouts,
                output,
            ));
            if let Some(hit) = hit {
                if spot_check {
                    expected = Some(hit.result.clone());
                } else if let Some(code) = self.write_shared_hit(hit, &job, source) {
                    return Some(code);
                }
            }
        }
        if expected.is_some() {
            tracing::info!(
                "{}: a cached result, spot-checked by the hosts before it is used",
                self.input()
            );
        }
        *self.cache.borrow_mut() = Some(CacheCheck { job, expected });
        None
    }

    fn write_shared_hit(&self, hit: SharedHit, job: &CacheJob, source: &Source) -> Option<i32> {
        let output = Path::new(&self.job.output);
        let SharedHit {
            mut reply,
            result,
            holder,
        } = hit;
        let object = reply.object.take()?;
        if let Err(e) = object.persist(output) {
            tracing::warn!(
                "cannot write {} from the network's cache: {e}; compiling it",
                self.job.output
            );
            return None;
        }
        write_stderr(&source.pre.stderr);
        write_stdout(&reply.stdout);
        write_stderr(&strip_terminal_controls(&reply.stderr));
        if output.is_file() {
            if let Ok(bytes) = std::fs::read(output) {
                remember(self.settings, job, &reply.stderr, &reply.stdout, &bytes);
            }
        }
        log_fetched(
            self.settings,
            &Fetched {
                time: unix_now(),
                key: job.key_hex.clone(),
                result,
                output: absolute(output).display().to_string(),
                holder: holder.clone(),
            },
        );
        tracing::info!("{}: from the network's cache ({holder})", self.input());
        self.record_hit(holder);
        Some(0)
    }

    fn record_hit(&self, from: String) {
        record_outcome(
            self.settings,
            self.input(),
            self.started,
            Verdict::CacheHit,
            vec![from],
            Vec::new(),
        );
    }

    /// The vote wrote an agreed result: keep it, and when the vote was a spot
    /// check of a hit, dispute a hit it does not confirm.
    pub(super) fn after_verified_write(
        &self,
        digest: &ResultDigest,
        stderr: &[u8],
        stdout: &[u8],
        input: &[u8],
    ) {
        let Some(check) = self.cache.borrow_mut().take() else {
            return;
        };
        if digest.status != 0 {
            return;
        }
        let output = Path::new(&self.job.output);
        if output.is_file() {
            if let Ok(object) = std::fs::read(output) {
                remember(self.settings, &check.job, stderr, stdout, &object);
            }
        }
        let verified = result_hash_of(digest);
        let Some(expected) = check.expected else {
            return;
        };
        if expected == verified {
            tracing::info!(
                "{}: the spot check confirms the cached result",
                self.input()
            );
            return;
        }
        tracing::warn!(
            "{}: the cache's result ({}) is not what the spot check's hosts agree on ({}); \
             theirs was written, and the entry is disputed",
            self.input(),
            &expected[..16],
            &verified[..16]
        );
        let Some(member) = &self.member else {
            return;
        };
        let said = crate::runtime::current_thread()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(result_cache::dispute(
                    self.settings,
                    member,
                    &check.job,
                    &self.wire,
                    &verified,
                    input,
                ))
            });
        match said {
            Ok(what) => tracing::warn!("disputed cache entry {}: {what}", check.job.key_hex),
            Err(e) => tracing::warn!(
                "cannot dispute cache entry {} at the coordinator: {e}",
                check.job.key_hex
            ),
        }
    }
}
