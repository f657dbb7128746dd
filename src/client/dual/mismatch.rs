//! Reporting a lost vote: each loser is named on stderr, the evidence is
//! recorded, the losers are excluded from this user's builds for good, and the
//! evidence goes to the coordinator.

use crate::verify::scheduler::{Received, Report, Winners};

use crate::client::evidence::{now_secs, Evidence, Exclusion, HostResult};
use crate::client::trace::write_stderr;

use super::verdict::LocalResult;
use super::Verified;

impl Verified<'_> {
    /// Name each loser on stderr, record the evidence, exclude the losers.
    pub(super) fn report(
        &self,
        report: &Report,
        received: &[Received],
        local: Option<&LocalResult>,
        source_hash: &str,
    ) {
        let input = self.input();
        let mut results: Vec<HostResult> = received
            .iter()
            .map(|r| HostResult {
                host: self.voters.label(r.host.0).to_owned(),
                address: self.voters.candidates[r.host.0].addr.to_string(),
                status: r.answer.digest.status,
                object: r.answer.digest.object_hex(),
                diagnostics: hex(&r.answer.digest.diagnostics),
            })
            .collect();
        let local = local.filter(|_| report.with_local);
        if let Some(local) = local {
            results.push(HostResult {
                host: "local".to_owned(),
                address: String::new(),
                status: local.digest.status,
                object: local.digest.object_hex(),
                diagnostics: hex(&local.digest.diagnostics),
            });
        }
        let losers: Vec<String> = report
            .losers
            .iter()
            .map(|h| self.voters.label(h.0).to_owned())
            .collect();
        let winners = self.winners(&report.winners);
        let accepted = &report.accepted;
        let evidence = Evidence::new(
            source_hash.to_owned(),
            input.to_owned(),
            self.wire.clone(),
            results,
            report.judgement.name(),
            accepted.object_hex(),
            losers.clone(),
        );
        let recorded = match &self.state {
            Some(state) => match state.record(&evidence) {
                Ok(()) => format!(
                    "evidence {} in {}",
                    evidence.id,
                    state.evidence_path().display()
                ),
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
