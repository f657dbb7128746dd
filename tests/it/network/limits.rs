//! The coordinator's locks, over real sockets with a real SQLite store: a cap
//! of connections per client address, per-identity quotas (requests,
//! heartbeats, reports) answered with 429 and `Retry-After` before anything
//! is stored, a per-key nonce cap, and a bound on a report's size. Each test
//! floods from one address or one key and checks that another is still served.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::network::*;
use crate::support::*;
use dportage::coordinator::quota::Rate;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::api::{HostResultHash, MismatchReport};
use dportage::network::auth;
use dportage::network::{unix_now, Identity, NetworkError};

/// Far above anything these tests wait for on a loaded machine.
const LIMIT: Duration = Duration::from_secs(30);

fn config(dir: &Path) -> CoordinatorConfig {
    let mut cfg = CoordinatorConfig::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        dir.to_path_buf(),
    );
    // Idle connections must outlive a slow test run.
    cfg.header_timeout = Duration::from_secs(120);
    // Its hosts are `Listening` fakes the coordinator cannot challenge.
    cfg.challenges = false;
    cfg
}

fn api_code(e: &NetworkError) -> String {
    match e {
        NetworkError::Api { code, status, .. } => format!("{status} {code}"),
        other => format!("not an API error: {other}"),
    }
}

/// GET `path` with `Connection: close` from `from`; the whole answer as text,
/// or `None` if the connection was closed without one.
async fn raw_get(addr: SocketAddr, from: Ipv4Addr, path: &str) -> Option<String> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::from((from, 0))).ok()?;
    let mut s = sock.connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.starts_with("HTTP/1.1 200").then_some(text)
}

/// The value of one sample line (`name` with its labels) of `/metrics`.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
}

async fn metrics(addr: SocketAddr) -> String {
    wait_until_async(LIMIT, "/metrics to answer", async || {
        raw_get(addr, Ipv4Addr::new(127, 0, 0, 1), "/metrics").await
    })
    .await
}

fn refusals(limit: &str) -> String {
    format!("dportage_limit_refusals_total{{limit=\"{limit}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_connection_cap_does_not_lock_out_another() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("c"));
    const CAP: usize = 16;
    const HELD: usize = 120;
    cfg.max_connections_per_address = CAP;
    let coord = Coordinator::bind(cfg).await.expect("start the coordinator");
    let (addr, url) = (coord.local_addr(), coord.url());
    let greedy = Ipv4Addr::new(127, 0, 0, 2);
    let honest_ip = Ipv4Addr::new(127, 0, 0, 3);

    // One address opens far more idle connections than its cap.
    let mut idle = Vec::new();
    for _ in 0..HELD {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((greedy, 0))).unwrap();
        idle.push(sock.connect(addr).await.unwrap());
    }
    // Every one of them reached the accept loop: all but CAP were refused.
    let excess = (HELD - CAP) as u64;
    wait_until_async(LIMIT, "the excess connections to be refused", async || {
        let m = metrics(addr).await;
        let n = sample(&m, &refusals("connections_per_address"));
        (n == excess)
            .then_some(())
            .ok_or(format!("{n} refused of {excess}"))
    })
    .await;

    // Honest signed requests from another address are all served.
    let daemon = Arc::new(Identity::generate());
    let l = Listening::on(honest_ip);
    let honest = client(&url, &daemon).with_source_ip(IpAddr::V4(honest_ip));
    for _ in 0..5 {
        honest.heartbeat(&l.heartbeat()).await.unwrap();
    }
    honest.whoami().await.unwrap();

    // The greedy address still holds exactly CAP working connections; the
    // rest were closed without a byte.
    let mut served = 0;
    for s in &mut idle {
        if s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .is_err()
        {
            continue;
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut buf)).await;
        if buf.starts_with(b"HTTP/1.1 200") {
            served += 1;
        } else {
            assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
        }
    }
    assert_eq!(served, CAP, "connections kept by the greedy address");
    drop(idle);
    // Its slots come back once it lets go.
    wait_until_async(LIMIT, "the greedy address to be served again", async || {
        raw_get(addr, greedy, "/healthz").await
    })
    .await;
    coord.shutdown();
}

fn report(l: &Listening, input: &str, args: usize) -> MismatchReport {
    let host = l.addr.to_string();
    MismatchReport {
        host_id: None,
        host_addr: host.clone(),
        input_hash: blake3::hash(input.as_bytes()).to_hex().to_string(),
        args: std::iter::once("gcc".to_string())
            .chain((0..args).map(|i| format!("-I/usr/include/some/long/include/path/{i:04}")))
            .collect(),
        results: vec![HostResultHash {
            host,
            id: None,
            hash: "ab".repeat(32),
        }],
        time: 1,
        evidence_id: None,
        toolchain: None,
    }
}

fn stored_reports(dir: &Path) -> i64 {
    let db = rusqlite::Connection::open(dir.join("coordinator.db")).unwrap();
    db.query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_flood_from_one_key_is_cut_before_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("c");
    let mut cfg = config(&data);
    const QUOTA: u32 = 5;
    const SENT: usize = 40;
    cfg.reports_per_key = Rate::per_hour(QUOTA);
    let coord = Coordinator::bind(cfg).await.expect("start the coordinator");
    let (addr, url) = (coord.local_addr(), coord.url());
    let (liar, flooder, other) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let ll = Listening::on(Ipv4Addr::new(127, 0, 0, 71));
    let lf = Listening::on(Ipv4Addr::new(127, 0, 0, 72));
    let lo = Listening::on(Ipv4Addr::new(127, 0, 0, 73));
    for (id, l) in [(&liar, &ll), (&flooder, &lf), (&other, &lo)] {
        client(&url, id).heartbeat(&l.heartbeat()).await.unwrap();
    }
    // Members report only hosts they were given.
    for id in [&flooder, &other] {
        client(&url, id)
            .hosts(&local_hosts_request())
            .await
            .unwrap();
    }

    // A real-sized report (a long command line) passes the size bound.
    let typical = serde_json::to_vec(&report(&ll, "x", 100)).unwrap().len();
    assert!(typical < 8 * 1024, "{typical}");
    let (mut ok, mut limited) = (0, 0);
    for i in 0..SENT {
        match client(&url, &flooder)
            .report(&report(&ll, &format!("job {i}"), 100))
            .await
        {
            Ok(_) => ok += 1,
            Err(e) if api_code(&e) == "429 rate_limited" => limited += 1,
            Err(e) => panic!("report {i}: {e}"),
        }
    }
    assert_eq!((ok, limited), (QUOTA as usize, SENT - QUOTA as usize));
    assert_eq!(stored_reports(&data), QUOTA as i64, "rows in the store");

    // The refusal says when to come back.
    let body = serde_json::to_vec(&report(&ll, "one more", 1)).unwrap();
    let signed = auth::sign_request(
        &flooder,
        &coord.key(),
        "POST",
        "/v1/report",
        &body,
        unix_now(),
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /v1/report HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in signed.pairs() {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    let retry: u64 = answer
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After:\n{answer}"));
    assert!((1..=3600).contains(&retry), "{retry}");

    // Another member still reports (its own quota), and the flooder's
    // heartbeats (another quota) still count.
    client(&url, &other)
        .report(&report(&ll, "other", 3))
        .await
        .unwrap();
    client(&url, &flooder)
        .heartbeat(&lf.heartbeat())
        .await
        .unwrap();

    // A report over the size bound is refused before it is read or stored.
    let huge = report(&ll, "huge", 600);
    assert!(serde_json::to_vec(&huge).unwrap().len() > 16 * 1024);
    let e = client(&url, &other).report(&huge).await.unwrap_err();
    assert_eq!(api_code(&e), "413 too_large", "{e}");
    assert_eq!(stored_reports(&data), QUOTA as i64 + 1);

    let m = metrics(addr).await;
    assert_eq!(
        sample(&m, &refusals("reports_per_key")),
        (SENT - QUOTA as usize + 1) as u64
    );
    assert_eq!(sample(&m, &refusals("report_bytes")), 1);
    coord.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_flood_from_a_fresh_key_does_not_fail_another_keys_request() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("c"));
    // A small cache, so that without the per-key cap the flood below would
    // fill it and every key would get 503; no request quota, so the nonce
    // cap alone is what stops the flood.
    cfg.nonce_cache_cap = 64;
    cfg.max_nonces_per_key = 16;
    cfg.requests_per_key = Rate::per_minute(0);
    let coord = Coordinator::bind(cfg).await.expect("start the coordinator");
    let (addr, url) = (coord.local_addr(), coord.url());
    let honest = Arc::new(Identity::generate());
    let l = Listening::on(Ipv4Addr::new(127, 0, 0, 74));
    client(&url, &honest)
        .heartbeat(&l.heartbeat())
        .await
        .unwrap();

    let fresh = Arc::new(Identity::generate());
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..100 {
        match client(&url, &fresh).whoami().await {
            Ok(_) => ok += 1,
            Err(e) if api_code(&e) == "429 rate_limited" => limited += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, limited), (16, 84));

    // Everyone else is served.
    client(&url, &honest)
        .heartbeat(&l.heartbeat())
        .await
        .unwrap();
    client(&url, &honest).whoami().await.unwrap();
    client(&url, &Arc::new(Identity::generate()))
        .whoami()
        .await
        .unwrap();

    let m = metrics(addr).await;
    assert_eq!(sample(&m, &refusals("nonces_per_key")), 84);
    assert_eq!(
        sample(&m, "dportage_auth_failures_total{reason=\"overloaded\"}"),
        0
    );
    assert_eq!(sample(&m, "dportage_nonces"), 16 + 3 + 1);
    coord.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_key_quota_is_refused_before_its_nonce_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("c"));
    cfg.requests_per_key = Rate::per_minute(5);
    let coord = Coordinator::bind(cfg).await.expect("start the coordinator");
    let (addr, url) = (coord.local_addr(), coord.url());
    let busy = Arc::new(Identity::generate());
    for _ in 0..5 {
        client(&url, &busy).whoami().await.unwrap();
    }
    for _ in 0..20 {
        let e = client(&url, &busy).whoami().await.unwrap_err();
        assert_eq!(api_code(&e), "429 rate_limited", "{e}");
    }
    client(&url, &Arc::new(Identity::generate()))
        .whoami()
        .await
        .expect("another key has its own quota");
    let m = metrics(addr).await;
    assert_eq!(sample(&m, &refusals("requests_per_key")), 20);
    assert_eq!(
        sample(&m, "dportage_nonces"),
        6,
        "refused nonces are not stored"
    );
    coord.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_minted_on_one_network_cannot_fill_the_nonce_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("c"));
    // Without the per-network cap, 30 fresh keys under their per-key cap
    // would fill this cache and every other key would get 503.
    cfg.nonce_cache_cap = 64;
    cfg.max_nonces_per_key = 4;
    cfg.max_nonces_per_network = 20;
    let coord = Coordinator::bind(cfg).await.expect("start the coordinator");
    let (addr, url) = (coord.local_addr(), coord.url());
    let sybil_net = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..30 {
        let key = Arc::new(Identity::generate());
        for _ in 0..3 {
            match client(&url, &key).with_source_ip(sybil_net).whoami().await {
                Ok(_) => ok += 1,
                Err(e) if api_code(&e) == "429 rate_limited" => limited += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!((ok, limited), (20, 70));

    // Keys on other networks are served, a new daemon registers.
    let elsewhere = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1));
    client(&url, &Arc::new(Identity::generate()))
        .with_source_ip(elsewhere)
        .whoami()
        .await
        .unwrap();
    let daemon = Arc::new(Identity::generate());
    let l = Listening::on(Ipv4Addr::new(127, 0, 3, 1));
    client(&url, &daemon)
        .with_source_ip(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1)))
        .heartbeat(&l.heartbeat())
        .await
        .unwrap();

    let m = metrics(addr).await;
    assert_eq!(sample(&m, &refusals("nonces_per_network")), 70);
    assert_eq!(
        sample(&m, "dportage_auth_failures_total{reason=\"overloaded\"}"),
        0
    );
    coord.shutdown();
}
