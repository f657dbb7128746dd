//! Disputes decided by re-running the evidence, over real sockets: a real
//! `dportage coordinator` process asks the reporter for the disputed input,
//! takes it with `PUT /v1/evidence/<input_hash>`, and sends the job to real
//! referees (distccd 3.4 and `dportage serve`), and to the parties' hosts.
//! A host is struck only for a wrong result the coordinator saw itself; a
//! reporter the referees contradict is struck for its report. Reports alone
//! blacklist nobody.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::dual::{CompileHost, Liar};
use crate::support::network::{
    client, disputed_job, local_hosts_request, local_toolchains, CoordinatorProcess, Job,
    Listening, ESTABLISHED_AT_ONCE, NO_CHALLENGES,
};
use crate::support::{wait_until_async, Distccd, DportageServer};
use dportage::network::api::{HostResultHash, MismatchReport, MAX_EVIDENCE_BYTES};
use dportage::network::{Identity, NetworkError};

fn api_code(e: &NetworkError) -> String {
    match e {
        NetworkError::Api { code, status, .. } => format!("{status} {code}"),
        other => format!("not an API error: {other}"),
    }
}

/// The network: a coordinator needing `referees` unanimous referees, two real
/// referees, an accused host, a reporter with its daemon and an accomplice
/// host of another owner (all established at once). The accused and the
/// accomplice are `dportage __liar` proxies in front of a real server, lying
/// as the test says (`honest`: passing replies through).
struct Net {
    coord: CoordinatorProcess,
    _tmp: tempfile::TempDir,
    _referees: (Distccd, DportageServer),
    referee_ids: Vec<Arc<Identity>>,
    accused: Arc<Identity>,
    accused_at: Liar,
    reporter: Arc<Identity>,
    accomplice: Arc<Identity>,
    accomplice_at: Liar,
    _reporter_daemon: Listening,
}

fn network(test: &str, base: u8, accused_lie: &str, accomplice_lie: &str) -> Option<Net> {
    if !Distccd::require(test) || !DportageServer::require(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The reporter's daemon is a fake that only accepts TCP: no challenge
    // jobs (they are tested on their own).
    let mut flags = ESTABLISHED_AT_ONCE.to_vec();
    flags.extend_from_slice(NO_CHALLENGES);
    flags.extend([
        "--referees",
        "2",
        "--referees-any-network",
        "--new-hosts-per-network",
        "0",
        "--new-hosts-per-wide-network",
        "0",
        // The tests poll the blacklist while the referees work.
        "--requests-per-key",
        "6000",
    ]);
    let coord = CoordinatorProcess::start(&tmp.path().join("c"), &flags);
    let referees = (
        <Distccd as CompileHost>::start(Ipv4Addr::new(127, 0, 0, base)),
        <DportageServer as CompileHost>::start(Ipv4Addr::new(127, 0, 0, base + 1)),
    );
    let upstream = referees.1.addr();
    let net = Net {
        referee_ids: vec![
            Arc::new(Identity::generate()),
            Arc::new(Identity::generate()),
        ],
        accused: Arc::new(Identity::generate()),
        accused_at: Liar::start(Ipv4Addr::new(127, 0, 0, base + 2), upstream, accused_lie),
        reporter: Arc::new(Identity::generate()),
        accomplice: Arc::new(Identity::generate()),
        accomplice_at: Liar::start(Ipv4Addr::new(127, 0, 0, base + 3), upstream, accomplice_lie),
        _reporter_daemon: Listening::on(Ipv4Addr::new(127, 0, 0, base + 4)),
        coord,
        _tmp: tmp,
        _referees: referees,
    };
    Some(net)
}

impl Net {
    async fn start(&self) {
        let url = &self.coord.url;
        let hb = |addr: std::net::SocketAddr| {
            crate::support::network::heartbeat(&addr.ip().to_string(), addr.port())
        };
        for (id, addr) in [
            (&self.referee_ids[0], self._referees.0.addr()),
            (&self.referee_ids[1], self._referees.1.addr()),
            (&self.accused, self.accused_at.addr),
            (&self.accomplice, self.accomplice_at.addr),
            (&self.reporter, self._reporter_daemon.addr),
        ] {
            client(url, id).heartbeat(&hb(addr)).await.unwrap();
        }
        let list = client(url, &self.reporter)
            .hosts(&local_hosts_request())
            .await
            .unwrap();
        let listed: Vec<String> = list
            .hosts
            .iter()
            .map(|h| format!("{}:{}", h.host, h.port))
            .collect();
        for want in [self.accused_at.addr, self.accomplice_at.addr] {
            assert!(listed.contains(&want.to_string()), "{listed:?}");
        }
    }

    fn report(&self, job: &Job, accused_hash: &str, other_hash: &str) -> MismatchReport {
        MismatchReport {
            host_id: Some(self.accused.id()),
            host_addr: self.accused_at.addr.to_string(),
            input_hash: blake3::hash(job.source.as_bytes()).to_hex().to_string(),
            args: job.argv.clone(),
            results: vec![
                HostResultHash {
                    host: self.accused_at.addr.to_string(),
                    id: Some(self.accused.id()),
                    hash: accused_hash.to_string(),
                },
                HostResultHash {
                    host: self.accomplice_at.addr.to_string(),
                    id: Some(self.accomplice.id()),
                    hash: other_hash.to_string(),
                },
            ],
            time: 1,
            evidence_id: None,
            toolchain: Some(local_toolchains()[0].id.clone()),
        }
    }

    async fn blacklisted(&self) -> Vec<String> {
        let asker = client(&self.coord.url, &self.referee_ids[0]);
        crate::support::network::blacklisted_ids(&asker)
            .await
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    async fn metric(&self, line_start: &str) -> String {
        crate::support::network::coordinator_metric_line(&self.coord.url, line_start).await
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn wait_blacklisted(net: &Net, id: &Arc<Identity>) -> Vec<String> {
    let want = id.id().to_string();
    wait_until_async(
        Duration::from_secs(60),
        format!("{want} to be blacklisted by adjudication"),
        async || net.blacklisted().await.contains(&want),
    )
    .await;
    net.blacklisted().await
}

#[test]
fn a_lying_host_is_blacklisted_by_adjudication() {
    let Some(net) = network(
        "a_lying_host_is_blacklisted_by_adjudication",
        111,
        "flip",
        "honest",
    ) else {
        return;
    };
    let job = disputed_job(7);
    rt().block_on(async {
        net.start().await;
        let lie = "ab".repeat(32);
        let rep = net.report(&job, &lie, &job.honest);
        let ack = client(&net.coord.url, &net.reporter)
            .report(&rep)
            .await
            .unwrap();
        assert!(ack.counted && ack.evidence_wanted, "{ack:?}");
        assert!(!ack.blacklisted, "a report alone blacklists nobody");
        assert!(net.blacklisted().await.is_empty());
        // The same dispute is not asked for twice by another path: a repeat
        // report from the same reporter is asked again (still pending).
        let compressed = zstd::bulk::compress(job.source.as_bytes(), 3).unwrap();
        let stored = client(&net.coord.url, &net.reporter)
            .upload_evidence(&rep.input_hash, compressed)
            .await
            .unwrap();
        assert!(stored.stored);
        let b = wait_blacklisted(&net, &net.accused).await;
        assert_eq!(b, vec![net.accused.id().to_string()], "only the liar");
        let line = net
            .metric("dportage_adjudications_total{ruling=\"accused_wrong\"}")
            .await;
        assert!(line.ends_with(" 1"), "{line:?}");
        // Decided: a new report over the same dispute does not ask again.
        let again = client(&net.coord.url, &net.reporter)
            .report(&MismatchReport {
                evidence_id: Some("x".into()),
                ..rep.clone()
            })
            .await;
        if let Ok(ack) = again {
            assert!(!ack.evidence_wanted, "{ack:?}");
        }
    });
}

#[test]
fn a_false_report_blacklists_the_reporter_and_its_lying_accomplice() {
    let Some(net) = network(
        "a_false_report_blacklists_the_reporter_and_its_lying_accomplice",
        121,
        "honest",
        "flip",
    ) else {
        return;
    };
    let job = disputed_job(8);
    rt().block_on(async {
        net.start().await;
        // The accused returned the honest result; the reporter and its
        // accomplice claim another one.
        let flipped = "cd".repeat(32);
        let rep = net.report(&job, &job.honest, &flipped);
        let ack = client(&net.coord.url, &net.reporter)
            .report(&rep)
            .await
            .unwrap();
        assert!(ack.evidence_wanted, "{ack:?}");
        let compressed = zstd::bulk::compress(job.source.as_bytes(), 3).unwrap();
        client(&net.coord.url, &net.reporter)
            .upload_evidence(&rep.input_hash, compressed)
            .await
            .unwrap();
        wait_blacklisted(&net, &net.reporter).await;
        // The accomplice returned a wrong object to the coordinator too.
        let b = wait_blacklisted(&net, &net.accomplice).await;
        assert!(
            !b.contains(&net.accused.id().to_string()),
            "the honest host stays: {b:?}"
        );
        for r in &net.referee_ids {
            assert!(!b.contains(&r.id().to_string()));
        }
    });
}

/// Framing on the reporter's word: "the honest host returned garbage, my
/// (honest) accomplice returned the right object". The referees agree with
/// the right object, but the accused returns it to the coordinator as well:
/// nobody is struck, and naming an honest host as an accomplice does not
/// strike it either when the report is false.
#[test]
fn nobody_is_struck_on_a_reporters_word() {
    let Some(net) = network(
        "nobody_is_struck_on_a_reporters_word",
        141,
        "honest",
        "honest",
    ) else {
        return;
    };
    let (job, other) = (disputed_job(10), disputed_job(11));
    rt().block_on(async {
        net.start().await;
        let compressed = |j: &Job| zstd::bulk::compress(j.source.as_bytes(), 3).unwrap();
        // 1. The accused "returned garbage".
        let rep = net.report(&job, &"ab".repeat(32), &job.honest);
        let ack = client(&net.coord.url, &net.reporter)
            .report(&rep)
            .await
            .unwrap();
        assert!(ack.evidence_wanted, "{ack:?}");
        client(&net.coord.url, &net.reporter)
            .upload_evidence(&rep.input_hash, compressed(&job))
            .await
            .unwrap();
        wait_until_async(
            Duration::from_secs(60),
            "the adjudication to end unconfirmed",
            async || {
                net.metric("dportage_adjudications_total{ruling=\"unconfirmed\"}")
                    .await
                    .ends_with(" 1")
            },
        )
        .await;
        assert!(net.blacklisted().await.is_empty(), "nobody struck");
        // 2. A false report naming the honest accomplice: only the reporter.
        let rep = net.report(&other, &other.honest, &"cd".repeat(32));
        client(&net.coord.url, &net.reporter)
            .report(&rep)
            .await
            .unwrap();
        client(&net.coord.url, &net.reporter)
            .upload_evidence(&rep.input_hash, compressed(&other))
            .await
            .unwrap();
        let b = wait_blacklisted(&net, &net.reporter).await;
        for honest in [&net.accused, &net.accomplice] {
            assert!(!b.contains(&honest.id().to_string()), "{b:?}");
        }
    });
}

#[test]
fn bad_evidence_uploads_are_refused() {
    let Some(net) = network("bad_evidence_uploads_are_refused", 131, "honest", "honest") else {
        return;
    };
    let job = disputed_job(9);
    rt().block_on(async {
        net.start().await;
        let url = &net.coord.url;
        let input_hash = blake3::hash(job.source.as_bytes()).to_hex().to_string();
        let compressed = zstd::bulk::compress(job.source.as_bytes(), 3).unwrap();
        // Not asked for.
        let e = client(url, &net.reporter)
            .upload_evidence(&input_hash, compressed.clone())
            .await
            .unwrap_err();
        assert_eq!(api_code(&e), "409 not_wanted");
        let rep = net.report(&job, &"ab".repeat(32), &job.honest);
        let ack = client(url, &net.reporter).report(&rep).await.unwrap();
        assert!(ack.evidence_wanted);
        // Asked of the reporter, not of anyone else.
        let e = client(url, &net.accomplice)
            .upload_evidence(&input_hash, compressed.clone())
            .await
            .unwrap_err();
        assert_eq!(api_code(&e), "409 not_wanted");
        // Another input than the hash names.
        let other = zstd::bulk::compress(b"int other;", 3).unwrap();
        let e = client(url, &net.reporter)
            .upload_evidence(&input_hash, other)
            .await
            .unwrap_err();
        assert_eq!(api_code(&e), "400 wrong_hash");
        // Over the body limit (sent raw: the client refuses it itself). The
        // coordinator answers 413 from the declared length and closes, so the
        // sender may see the answer or a reset while still writing: the
        // coordinator's own count says which answer it gave.
        let path = dportage::network::api::evidence_path(&input_hash);
        let e = client(url, &net.reporter)
            .call::<serde_json::Value>("PUT", &path, vec![0; MAX_EVIDENCE_BYTES + 1])
            .await
            .unwrap_err();
        let code = api_code(&e);
        assert!(
            code == "413 too_large" || code.contains("cannot reach"),
            "{code}"
        );
        let line = net
            .metric("dportage_http_requests_total{endpoint=\"evidence\",code=\"413\"}")
            .await;
        assert!(line.ends_with(" 1"), "{line:?}");
        // Not zstd.
        let e = client(url, &net.reporter)
            .call::<serde_json::Value>("PUT", &path, b"plain text".to_vec())
            .await
            .unwrap_err();
        assert_eq!(api_code(&e), "400 bad_request");
        // Nothing was decided from any of it.
        assert!(net.blacklisted().await.is_empty());
    });
}
