//! Reporting a lost vote: each loser is named on stderr, the evidence is
//! recorded (with the fingerprint id of this machine's toolchain when
//! `dportage` probed it) and the preprocessed input kept beside it, the losers
//! are excluded from this user's builds for good, and the evidence goes to the
//! coordinator.

use crate::fingerprint::is_fingerprint_id;
use crate::probe;
use crate::verify::scheduler::{Received, Report, Winners};

use crate::client::evidence::{now_secs, Evidence, Exclusion, HostResult, StateDir};
use crate::client::kept_inputs::KeptInputs;
use crate::client::trace::write_stderr;

use super::verdict::LocalResult;
use super::Verified;

impl Verified<'_> {
    /// Name each loser on stderr, record the evidence, keep the input (the
    /// bytes every host got, `source`, whose blake3 hex is `source_hash`),
    /// exclude the losers.
    pub(super) fn report(
        &self,
        report: &Report,
        received: &[Received],
        local: Option<&LocalResult>,
        source_hash: &str,
        source: Option<&[u8]>,
    ) {
        let input = self.input();
        let mut results: Vec<HostResult> = received
            .iter()
            .map(|r| {
                HostResult::of_digest(
                    self.voters.label(r.host.0).to_owned(),
                    self.voters.candidates[r.host.0].addr.to_string(),
                    &r.answer.digest,
                )
            })
            .collect();
        let local = local.filter(|_| report.with_local);
        if let Some(local) = local {
            results.push(HostResult::of_digest(
                "local".to_owned(),
                String::new(),
                &local.digest,
            ));
        }
        let losers: Vec<String> = report
            .losers
            .iter()
            .map(|h| self.voters.label(h.0).to_owned())
            .collect();
        let winners = self.winners(&report.winners);
        let accepted = &report.accepted;
        // The argv the hosts got (`wire_bytes` is made from it), not the
        // user's: what a referee must run on the kept input.
        let mut evidence = Evidence::new(
            source_hash.to_owned(),
            input.to_owned(),
            self.wire.clone(),
            results,
            report.judgement.name(),
            accepted.object_hex(),
            losers.clone(),
        );
        evidence.toolchain = self.state.as_ref().and_then(|s| self.toolchain_id(s));
        let recorded = match &self.state {
            Some(state) => match state.record(&evidence) {
                Ok(()) => {
                    keep_input(state, source_hash, source);
                    format!(
                        "evidence {} in {}",
                        evidence.id,
                        state.evidence_path().display()
                    )
                }
                Err(e) => {
                    tracing::warn!("cannot record the evidence: {e}");
                    "evidence not recorded".to_owned()
                }
            },
            None => "evidence not recorded: no DPORTAGE_DIR".to_owned(),
        };
        for (host, loser) in report.losers.iter().zip(&losers) {
            let said = received
                .iter()
                .find(|r| r.host == *host)
                .map(|r| r.answer.digest.to_string())
                .unwrap_or_default();
            let candidate = &self.voters.candidates[host.0];
            let address = candidate.addr.to_string();
            let excluded = match &self.state {
                Some(state) => {
                    let exclusion = Exclusion {
                        address: candidate.addr,
                        since: now_secs(),
                        entry: loser.clone(),
                        evidence: evidence.id.clone(),
                    };
                    match state.exclude(&exclusion) {
                        Ok(()) => "excluded from now on",
                        Err(e) => {
                            tracing::warn!("cannot exclude {loser}: {e}");
                            "NOT excluded (cannot write the exclusion file)"
                        }
                    }
                }
                None => "NOT excluded (no DPORTAGE_DIR)",
            };
            write_stderr(
                format!(
                    "dportage: mismatch: {input}: host {loser} ({address}) returned {said}, but \
                     {winners} returned {accepted}; {loser} is {excluded} ({recorded})\n"
                )
                .as_bytes(),
            );
        }
        if let Some(coordinator) = &self.settings.coordinator {
            // Sends this record and any earlier ones still waiting; what fails
            // stays in the log and goes with the next mismatch.
            match crate::client::upload::send_pending_evidence_blocking(coordinator) {
                Ok(sent) => tracing::info!("reported {sent} mismatch record(s) to {coordinator}"),
                Err(e) => tracing::warn!(
                    "evidence {} waits in the log: cannot report it to {coordinator}: {e}",
                    evidence.id
                ),
            }
        }
    }

    /// The fingerprint id of this machine's compiler of the job, as `dportage`
    /// cached it in `fingerprints.json`; nothing is probed here (a probe runs
    /// the compiler, and this is the compile path).
    pub(super) fn toolchain_id(&self, state: &StateDir) -> Option<String> {
        let name = self.wire.first()?;
        let own: Vec<std::path::PathBuf> = std::env::current_exe()
            .ok()
            .and_then(|p| p.canonicalize().ok())
            .into_iter()
            .collect();
        let compiler = probe::resolve_compiler(name, None, &own)?;
        let cache = state.path().join(probe::FINGERPRINT_CACHE_FILE);
        let id = probe::cached_toolchain(name, &compiler, &cache)?.id;
        is_fingerprint_id(&id).then_some(id)
    }

    /// Who won, for the mismatch message.
    fn winners(&self, winners: &Winners) -> String {
        match winners {
            Winners::Hosts(hosts) => self.labels(hosts),
            Winners::ThisMachine => "this machine's compiler".to_owned(),
            Winners::ThisMachineAnd(hosts) => {
                format!("this machine's compiler and {}", self.labels(hosts))
            }
        }
    }
}

/// Keep the input of a lost vote for the coordinator; a failure is only
/// worth a warning.
fn keep_input(state: &StateDir, hash: &str, source: Option<&[u8]>) {
    let Some(source) = source else {
        tracing::warn!("the preprocessed input of {hash} is gone; it cannot be kept as evidence");
        return;
    };
    match KeptInputs::of(state).keep(hash, source) {
        Ok(kept) => tracing::debug!(
            "kept the input in {} ({} bytes; {} older input(s) removed)",
            kept.path.display(),
            kept.bytes,
            kept.evicted
        ),
        Err(e) => tracing::warn!("cannot keep the preprocessed input as evidence: {e}"),
    }
}
