//! Sending this user's pending mismatch records (`evidence.jsonl`) to the
//! coordinator, one signed report per losing host, and the preprocessed input
//! of a record (`super::kept_inputs`) when the coordinator asks for it.

use std::sync::Arc;

use crate::network::api::{
    host_addr_of_entry, HostResultHash, MismatchReport, MAX_REPORT_ARGS, MAX_REPORT_RESULTS,
};
use crate::network::caller::CoordinatorClient;
use crate::network::identity::{dportage_dir, Identity};
use crate::network::NetworkError;

use super::evidence::Evidence;
use super::kept_inputs::KeptInputs;

/// One report per losing host of an evidence record (`evidence.jsonl`).
pub fn reports_of_evidence(e: &Evidence) -> Vec<MismatchReport> {
    let results: Vec<HostResultHash> = e
        .results
        .iter()
        .take(MAX_REPORT_RESULTS)
        .map(|r| HostResultHash {
            host: if r.address.is_empty() {
                r.host.clone()
            } else {
                r.address.clone()
            },
            id: None,
            // Object and exit status, as the vote compared them.
            hash: r.result_hash(),
        })
        .collect();
    let toolchain = e
        .toolchain
        .clone()
        .filter(|t| crate::fingerprint::is_fingerprint_id(t));
    e.losers
        .iter()
        .map(|loser| {
            let address = e
                .results
                .iter()
                .find(|r| &r.host == loser && !r.address.is_empty())
                .map(|r| r.address.clone())
                .unwrap_or_else(|| host_addr_of_entry(loser));
            MismatchReport {
                host_id: None,
                host_addr: address,
                input_hash: e.input.clone(),
                args: e.args.iter().take(MAX_REPORT_ARGS).cloned().collect(),
                results: results.clone(),
                time: e.time,
                evidence_id: Some(e.id.chars().take(64).collect()),
                toolchain: toolchain.clone(),
            }
        })
        .collect()
}

/// Is an error answer final: retrying the same request later cannot help
/// (unknown host or route, malformed, not wanted…)? Not a member right now
/// (403), over the coordinator's quota (429) or timed out (408) may pass, and
/// so may a failure of the coordinator (5xx) or of the network.
fn refused_for_good(e: &NetworkError) -> bool {
    matches!(e, NetworkError::Api { status, .. }
        if *status < 500 && !matches!(status, 403 | 408 | 429))
}

/// Send the pending records of `$DPORTAGE_DIR/evidence.jsonl` to
/// `coordinator` and mark those the coordinator acknowledged (or refused as
/// not reportable, e.g. a host it never knew) as reported. When an answer
/// asks for the evidence (`evidence_wanted`), the record's kept input is
/// uploaded first; a record whose upload could not be done now stays pending,
/// so its reports (which the coordinator deduplicates) and the upload are
/// tried again with the next call. Returns how many records were marked;
/// stops at the first unreachable coordinator (the rest wait for the next
/// call).
pub fn send_pending_evidence_blocking(coordinator: &str) -> Result<usize, NetworkError> {
    let dir = dportage_dir();
    let identity = Arc::new(Identity::load_or_create(&dir)?);
    let client = CoordinatorClient::new(coordinator, identity)?.expecting_pinned_key(&dir)?;
    let runtime = crate::runtime::current_thread()?;
    let inputs = KeptInputs::in_dir(&dir);
    let drained = super::evidence::drain_pending_reports(&dir, |record| {
        runtime.block_on(send_record(&client, &inputs, record))
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

/// `dportage __send-reports --coordinator URL`: send the pending reports of
/// `$DPORTAGE_DIR` (a daemon runs it for the machine-wide directory after
/// each heartbeat). A directory without a member identity has nothing to
/// send. Exit 0 when everything pending was sent.
pub fn send_reports_main(args: Vec<std::ffi::OsString>) -> i32 {
    // Its stderr goes to the daemon's log, on failure only.
    crate::logging::init(false, "warn");
    let coordinator = match args.as_slice() {
        [flag, url] if flag == "--coordinator" => url.to_string_lossy().into_owned(),
        _ => {
            eprintln!("usage: dportage __send-reports --coordinator URL (with DPORTAGE_DIR set)");
            return crate::exitcode::BAD_ARGUMENTS;
        }
    };
    let dir = dportage_dir();
    if !dir.join(crate::network::identity::KEY_FILE).exists() {
        return 0;
    }
    match super::evidence::pending_reports(&dir) {
        Ok(pending) if pending.is_empty() => return 0,
        Ok(_) => {}
        Err(e) => {
            eprintln!("dportage: {e}");
            return crate::exitcode::IO_ERROR;
        }
    }
    match send_pending_evidence_blocking(&coordinator) {
        Ok(n) => {
            tracing::info!("sent {n} pending report(s) from {}", dir.display());
            match super::evidence::pending_reports(&dir) {
                Ok(left) if left.is_empty() => 0,
                _ => crate::exitcode::DISTCC_FAILED,
            }
        }
        Err(e) => {
            eprintln!("dportage: sending the reports of {}: {e}", dir.display());
            crate::exitcode::CONNECT_FAILED
        }
    }
}

/// Report `record` (one report per loser) and, when an answer asks for it,
/// upload its input. `Ok` when the record is done with.
async fn send_record(
    client: &CoordinatorClient,
    inputs: &KeptInputs,
    record: &Evidence,
) -> Result<(), NetworkError> {
    let mut wanted = false;
    for report in reports_of_evidence(record) {
        match client.report(&report).await {
            Ok(ack) => wanted |= ack.evidence_wanted,
            Err(e) if refused_for_good(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if wanted {
        upload_input(client, inputs, &record.input).await?;
    }
    Ok(())
}

/// What happened to a kept input the coordinator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// None is kept (never was, or evicted): nothing to send.
    NothingKept,
    /// The coordinator holds it now; the copy here is deleted.
    Stored,
    /// The coordinator took the request but did not keep the input; the
    /// copy stays (bounded) in case another report asks for it.
    NotStored,
    /// Refused for good (404 from a coordinator without the route, not
    /// wanted, too large…): the copy here is deleted.
    NotWanted,
}

/// Send the input kept for `input_hash` to the coordinator, which asked for
/// it. `Err` when trying again later may work.
pub async fn upload_input(
    client: &CoordinatorClient,
    inputs: &KeptInputs,
    input_hash: &str,
) -> Result<Upload, NetworkError> {
    let body = match inputs.read(input_hash) {
        Ok(Some(body)) => body,
        Ok(None) => return Ok(Upload::NothingKept),
        Err(e) => {
            tracing::warn!("cannot read the input the coordinator asked for: {e}");
            return Ok(Upload::NothingKept);
        }
    };
    let upload = match client.upload_evidence(input_hash, body).await {
        Ok(ack) if ack.stored => Upload::Stored,
        Ok(_) => Upload::NotStored,
        Err(e) if refused_for_good(&e) => {
            tracing::info!("the coordinator does not take the input {input_hash}: {e}");
            Upload::NotWanted
        }
        Err(e) => return Err(e),
    };
    if matches!(upload, Upload::Stored | Upload::NotWanted) {
        if let Err(e) = inputs.remove(input_hash) {
            tracing::warn!("{e}");
        }
    }
    Ok(upload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::evidence::HostResult;
    use crate::network::api::{result_hash_of, EvidenceAck, ReportAck};
    use crate::verify::ResultDigest;

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
        assert_eq!(reports[0].toolchain, None);
        reports[0].validate().unwrap();
    }

    #[test]
    fn reports_carry_the_toolchain_and_the_referees_hashes() {
        let honest = ResultDigest::of(0, b"object", b"");
        let liar = ResultDigest::of(0, b"objecT", b"");
        let mut e = Evidence::new(
            "ab".repeat(32),
            "x.c".into(),
            vec!["gcc".into(), "-O2".into(), "-c".into(), "x.c".into()],
            vec![
                HostResult::of_digest("liar:1".into(), "127.0.0.5:1".into(), &liar),
                HostResult::of_digest("a:1".into(), "127.0.0.2:1".into(), &honest),
                HostResult::of_digest("local".into(), String::new(), &honest),
            ],
            "arbiter",
            honest.object_hex(),
            vec!["liar:1".into()],
        );
        e.toolchain = Some("c".repeat(64));
        let reports = reports_of_evidence(&e);
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        r.validate().unwrap();
        assert_eq!(r.toolchain, e.toolchain);
        assert_eq!(r.args, e.args);
        let hashes: Vec<&str> = r.results.iter().map(|h| h.hash.as_str()).collect();
        assert_eq!(
            hashes,
            [
                result_hash_of(&liar),
                result_hash_of(&honest),
                result_hash_of(&honest)
            ]
        );
        // A malformed id in an edited log is left out rather than refused.
        e.toolchain = Some("not a fingerprint".into());
        assert_eq!(reports_of_evidence(&e)[0].toolchain, None);
    }

    /// A coordinator that acknowledges reports with `evidence_wanted` as
    /// told and answers evidence uploads with `upload` (status, JSON body);
    /// counts the uploads.
    async fn fake_coordinator(
        wanted: bool,
        upload: (u16, String),
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let uploads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&uploads);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let upload = upload.clone();
                let counted = Arc::clone(&counted);
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let upload = upload.clone();
                    let counted = Arc::clone(&counted);
                    async move {
                        let path = req.uri().path().to_owned();
                        let query = req.uri().query().unwrap_or("").to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let (status, answer) = if path == crate::network::api::COORDINATOR_KEY_PATH
                        {
                            // Signed requests name the coordinator's key: give one.
                            let challenge = query.trim_start_matches("challenge=");
                            let proof = crate::network::api::CoordinatorKeyProof::sign(
                                &Identity::generate(),
                                challenge,
                            )
                            .unwrap();
                            (200, serde_json::to_string(&proof).unwrap())
                        } else if path == "/v1/report" {
                            let report: MismatchReport = serde_json::from_slice(&body).unwrap();
                            let ack = ReportAck {
                                report_id: 1,
                                host: crate::network::IdentityId::zero(),
                                distinct_reporters: 1,
                                distinct_networks: 1,
                                blacklisted: false,
                                duplicate: false,
                                counted: true,
                                evidence_wanted: wanted,
                            };
                            assert!(report.validate().is_ok());
                            (200, serde_json::to_string(&ack).unwrap())
                        } else {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let hash = path.trim_start_matches("/v1/evidence/");
                            let input = zstd::bulk::decompress(&body, 1 << 20).unwrap();
                            assert_eq!(blake3::hash(&input).to_hex().as_str(), hash);
                            upload
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(bytes::Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (url, uploads)
    }

    /// A record of a lost vote with its input kept in `dir`.
    fn kept_record(dir: &std::path::Path) -> (Evidence, KeptInputs) {
        let input = b"# 1 \"x.c\"\nint x;\n".to_vec();
        let hash = blake3::hash(&input).to_hex().to_string();
        let honest = ResultDigest::of(0, b"o", b"");
        let e = Evidence::new(
            hash.clone(),
            "x.c".into(),
            vec!["gcc".into(), "-c".into(), "x.c".into()],
            vec![
                HostResult::of_digest("l:1".into(), "127.0.0.5:1".into(), &honest),
                HostResult::of_digest("local".into(), String::new(), &honest),
            ],
            "arbiter",
            honest.object_hex(),
            vec!["l:1".into()],
        );
        let inputs = KeptInputs::in_dir(dir);
        inputs.keep(&hash, &input).unwrap();
        (e, inputs)
    }

    fn client_of(url: &str, dir: &std::path::Path) -> CoordinatorClient {
        let identity = Arc::new(Identity::load_or_create(dir).unwrap());
        CoordinatorClient::new(url, identity).unwrap()
    }

    #[tokio::test]
    async fn wanted_inputs_are_uploaded_once_and_then_deleted() {
        use std::sync::atomic::Ordering;
        let t = tempfile::tempdir().unwrap();
        let (record, inputs) = kept_record(t.path());
        let path = inputs.path(&record.input).unwrap();
        let stored = serde_json::to_string(&EvidenceAck {
            input_hash: record.input.clone(),
            stored: true,
        })
        .unwrap();
        // Not asked for: the input stays.
        let (url, uploads) = fake_coordinator(false, (200, stored.clone())).await;
        let client = client_of(&url, t.path());
        send_record(&client, &inputs, &record).await.unwrap();
        assert_eq!(uploads.load(Ordering::SeqCst), 0);
        assert!(path.exists());
        // Asked for and stored: uploaded, then gone here.
        let (url, uploads) = fake_coordinator(true, (200, stored)).await;
        let client = client_of(&url, t.path());
        send_record(&client, &inputs, &record).await.unwrap();
        assert_eq!(uploads.load(Ordering::SeqCst), 1);
        assert!(!path.exists());
        // Asked again (a resent record): nothing kept, nothing sent.
        send_record(&client, &inputs, &record).await.unwrap();
        assert_eq!(uploads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refusals_of_the_upload_never_break_reporting() {
        let t = tempfile::tempdir().unwrap();
        let (record, inputs) = kept_record(t.path());
        let path = inputs.path(&record.input).unwrap();
        let error = |code: &str| format!(r#"{{"error": "no", "code": "{code}"}}"#);
        // A coordinator without the route: not wanted, the record is done.
        let (url, _) = fake_coordinator(true, (404, error("not_found"))).await;
        let client = client_of(&url, t.path());
        send_record(&client, &inputs, &record).await.unwrap();
        assert!(!path.exists(), "a 404 means the input is not wanted");
        // A failing coordinator: the record stays pending, the input kept.
        let (record, inputs) = kept_record(t.path());
        let (url, _) = fake_coordinator(true, (503, error("overloaded"))).await;
        let client = client_of(&url, t.path());
        let e = send_record(&client, &inputs, &record).await.unwrap_err();
        assert!(matches!(e, NetworkError::Api { status: 503, .. }), "{e}");
        assert!(path.exists());
        // Accepted but not stored: kept for another try.
        let not_stored = serde_json::to_string(&EvidenceAck {
            input_hash: record.input.clone(),
            stored: false,
        })
        .unwrap();
        let (url, _) = fake_coordinator(true, (200, not_stored)).await;
        let client = client_of(&url, t.path());
        assert_eq!(
            upload_input(&client, &inputs, &record.input).await.unwrap(),
            Upload::NotStored
        );
        assert!(path.exists());
    }
}
