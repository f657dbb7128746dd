//! Sending this user's pending mismatch records (`evidence.jsonl`) to the
//! coordinator, one signed report per losing host.

use crate::network::api::MismatchReport;
use crate::network::caller::send_reports_blocking;
use crate::network::NetworkError;

/// One report per losing host of an evidence record (`evidence.jsonl`).
pub fn reports_of_evidence(e: &super::evidence::Evidence) -> Vec<MismatchReport> {
    let results: Vec<crate::network::api::HostResultHash> = e
        .results
        .iter()
        .take(crate::network::api::MAX_REPORT_RESULTS)
        .map(|r| crate::network::api::HostResultHash {
            host: if r.address.is_empty() {
                r.host.clone()
            } else {
                r.address.clone()
            },
            id: None,
            // Object and exit status, as the vote compared them.
            hash: blake3::hash(format!("{}:{}", r.object, r.status).as_bytes())
                .to_hex()
                .to_string(),
        })
        .collect();
    e.losers
        .iter()
        .map(|loser| {
            let address = e
                .results
                .iter()
                .find(|r| &r.host == loser && !r.address.is_empty())
                .map(|r| r.address.clone())
                .unwrap_or_else(|| crate::network::api::host_addr_of_entry(loser));
            MismatchReport {
                host_id: None,
                host_addr: address,
                input_hash: e.input.clone(),
                args: e
                    .args
                    .iter()
                    .take(crate::network::api::MAX_REPORT_ARGS)
                    .cloned()
                    .collect(),
                results: results.clone(),
                time: e.time,
                evidence_id: Some(e.id.chars().take(64).collect()),
            }
        })
        .collect()
}

/// Send the pending records of `$DPORTAGE_DIR/evidence.jsonl` to
/// `coordinator` and mark those the coordinator acknowledged (or refused as
/// not reportable, e.g. a host it never knew) as reported. Returns how many
/// records were marked; stops at the first unreachable coordinator (the rest
/// wait for the next call).
pub fn send_pending_evidence_blocking(coordinator: &str) -> Result<usize, NetworkError> {
    let dir = crate::network::identity::dportage_dir();
    let drained = super::evidence::drain_pending_reports(&dir, |record| {
        for result in send_reports_blocking(coordinator, &reports_of_evidence(record)) {
            match result {
                Ok(_) => {}
                // Refused for good (unknown host, malformed…): drop it. Not a
                // member right now (403), over the coordinator's quota (429) or
                // timed out (408): retrying later can help, so it stays pending.
                Err(NetworkError::Api { status, .. })
                    if status < 500 && !matches!(status, 403 | 408 | 429) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .map_err(|e| {
        NetworkError::io(
            format!("reading {}", dir.display()),
            std::io::Error::other(e.to_string()),
        )
    })?;
    match drained.stopped_by {
        Some(e) if drained.sent == 0 => Err(e),
        _ => Ok(drained.sent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::evidence::{Evidence, HostResult};

    #[test]
    fn evidence_becomes_one_valid_report_per_loser() {
        let result = |host: &str, object: &str| HostResult {
            host: host.into(),
            address: String::new(),
            status: 0,
            object: object.into(),
            diagnostics: "00".into(),
        };
        let e = Evidence::new(
            "ab".repeat(32),
            "x.c".into(),
            vec!["gcc".into(), "-c".into(), "x.c".into()],
            vec![
                result("127.0.0.11:4000/2,lzo", "11"),
                result("127.0.0.12:4001/2,lzo", "22"),
                result("local", "22"),
            ],
            "arbiter",
            "22".into(),
            vec!["127.0.0.11:4000/2,lzo".into()],
        );
        let reports = reports_of_evidence(&e);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].host_addr, "127.0.0.11:4000");
        assert_eq!(reports[0].results.len(), 3);
        assert_eq!(reports[0].evidence_id.as_deref(), Some(e.id.as_str()));
        reports[0].validate().unwrap();
    }
}
