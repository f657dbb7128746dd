//! The coordinator over real HTTP: membership, expiry, the two-reporter rule,
//! admin lift, hostile requests, the status page and metrics, and durability
//! across `kill -9` of a real `dportage coordinator` process. These
//! coordinators establish hosts at once (as the demo's does), so that fresh
//! daemons' reports count; `standing.rs` tests the real network's rules.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::network::*;
use crate::support::*;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::api::{HostResultHash, HostsRequest, MismatchReport};
use dportage::network::auth;
use dportage::network::caller::{send, CoordinatorUrl};
use dportage::network::{Identity, NetworkError};
use dportage::trust::standing::StandingRules;

async fn coordinator(dir: &Path, expiry: Duration, admin: Option<&Identity>) -> Coordinator {
    let mut cfg = CoordinatorConfig::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        dir.to_path_buf(),
    );
    cfg.standing_rules = StandingRules::AT_ONCE;
    cfg.expiry = expiry;
    // Its hosts are `Listening` fakes: the coordinator cannot challenge them.
    cfg.challenges = false;
    cfg.admin_keys = admin.map(|a| vec![a.id()]).unwrap_or_default();
    Coordinator::bind(cfg).await.expect("start the coordinator")
}

fn hosts_request() -> HostsRequest {
    local_hosts_request()
}

fn api_code(e: &NetworkError) -> String {
    match e {
        NetworkError::Api { code, status, .. } => format!("{status} {code}"),
        other => format!("not an API error: {other}"),
    }
}

fn report_against(host: &str, port: u16, input: &str) -> MismatchReport {
    MismatchReport {
        host_id: None,
        host_addr: format!("{host}:{port}"),
        input_hash: blake3::hash(input.as_bytes()).to_hex().to_string(),
        args: vec!["gcc".into(), "-c".into(), "x.c".into()],
        results: vec![HostResultHash {
            host: format!("{host}:{port}"),
            id: None,
            hash: "ab".repeat(32),
        }],
        time: 1,
        evidence_id: Some(format!("{:016x}", rand::random::<u64>())),
        toolchain: None,
    }
}

/// Ask for a host list as `who`: a member may report only hosts it was given.
async fn ask_hosts(url: &str, who: &Arc<Identity>) {
    client(url, who).hosts(&hosts_request()).await.unwrap();
}

fn ids(hosts: &[dportage::network::api::HostEntry]) -> Vec<String> {
    hosts
        .iter()
        .map(|h| format!("{}:{}", h.host, h.port))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_gets_hosts_non_member_gets_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), Duration::from_secs(600), None).await;
    let url = coord.url();
    let daemon = Arc::new(Identity::generate());
    let other = Arc::new(Identity::generate());
    let stranger = Arc::new(Identity::generate());

    // Nobody is a member before a daemon heartbeats.
    let e = client(&url, &daemon)
        .hosts(&hosts_request())
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 not_member");

    let l1 = Listening::on(Ipv4Addr::new(127, 0, 0, 11));
    let l2 = Listening::on(Ipv4Addr::new(127, 0, 0, 12));
    let ack = client(&url, &daemon)
        .heartbeat(&l1.heartbeat())
        .await
        .unwrap();
    assert_eq!(ack.advertised, l1.addr.to_string());
    client(&url, &other)
        .heartbeat(&l2.heartbeat())
        .await
        .unwrap();

    // A daemon's identity is a member: both hosts (its own too, one per owner).
    let got = client(&url, &daemon).hosts(&hosts_request()).await.unwrap();
    let mut listed = ids(&got.hosts);
    listed.sort();
    assert_eq!(listed, vec![l1.addr.to_string(), l2.addr.to_string()]);
    assert_eq!(got.redundancy, 2);
    assert_eq!(got.member_via, daemon.id());

    // A signed stranger with no daemon gets nothing.
    let e = client(&url, &stranger)
        .hosts(&hosts_request())
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 not_member");
    // Nor can it report.
    let e = client(&url, &stranger)
        .report(&report_against(&l1.host(), l1.addr.port(), "x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 not_member");

    // A toolchain nobody serves: a member gets an empty list, not others' hosts.
    let mut foreign = hosts_request();
    foreign.fingerprints = vec!["0".repeat(64)];
    let got = client(&url, &daemon).hosts(&foreign).await.unwrap();
    assert!(got.hosts.is_empty());

    // The `dportage` binary as a non-member: nothing on stdout, why on stderr,
    // non-zero exit.
    let person = tmp.path().join("person");
    let out = tokio::task::spawn_blocking({
        let person = person.clone();
        let url = url.clone();
        move || run_dportage(&person, &["--coordinator", &url], &[])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a member"), "{err}");
    // `dportage CMD` as a non-member does not run CMD.
    let marker = tmp.path().join("ran");
    let out = tokio::task::spawn_blocking({
        let person = person.clone();
        let url = url.clone();
        let marker = marker.clone();
        move || {
            run_dportage(
                &person,
                &["--coordinator", &url, "touch", marker.to_str().unwrap()],
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(!marker.exists(), "CMD ran for a non-member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_shared_through_the_daemons_token() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), Duration::from_secs(600), None).await;
    let url = coord.url();
    let daemon_dir = tmp.path().join("daemon");
    let l1 = Listening::on(Ipv4Addr::new(127, 0, 0, 13));
    let l2 = Listening::on(Ipv4Addr::new(127, 0, 0, 14));
    // The daemon's side as `dportage serve --coordinator` runs it.
    let mut cfg =
        dportage::server::heartbeat_agent::HeartbeatConfig::new(url.clone(), l1.addr.port(), 2);
    cfg.advertise = l1.addr.to_string();
    cfg.compilers = vec!["cc".into(), "c++".into()];
    cfg.identity_dir = daemon_dir.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(dportage::server::heartbeat_agent::run(cfg, async move {
        let _ = stopped.await;
    }));
    let other = Arc::new(Identity::generate());
    client(&url, &other)
        .heartbeat(&l2.heartbeat())
        .await
        .unwrap();
    let token = daemon_dir.join("membership.json");
    wait_until_async(
        Duration::from_secs(60),
        "the daemon to register",
        async || coord.live_hosts() >= 2,
    )
    .await;
    assert!(token.exists(), "the daemon publishes its membership token");

    // A person with their own identity presents the token and becomes a member.
    let person = tmp.path().join("person");
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        let token = token.clone();
        let person = person.clone();
        move || {
            run_dportage(
                &person,
                &["--coordinator", &url],
                &[("DPORTAGE_MEMBERSHIP", token.to_str().unwrap())],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars = eval_in_sh(&String::from_utf8_lossy(&out.stdout), &["DISTCC_HOSTS"]);
    assert!(vars[0].1.contains(&l2.addr.to_string()), "{vars:?}");
    // Linked durably: the token is no longer needed.
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run_dportage(&person, &["--coordinator", &url], &[])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A forged token (the person signs it as if it were the daemon) is refused.
    let daemon_id: dportage::network::IdentityId =
        std::fs::read_to_string(daemon_dir.join("identity.pub"))
            .unwrap()
            .parse()
            .unwrap();
    let mut forged = Identity::generate().membership_token(dportage::network::unix_now());
    forged.daemon = daemon_id;
    let e = client(&url, &Arc::new(Identity::generate()))
        .link(&forged)
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 bad_token");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_hosts_expire_and_take_membership_with_them() {
    let tmp = tempfile::tempdir().unwrap();
    let expiry = Duration::from_millis(1500);
    let coord = coordinator(&tmp.path().join("c"), expiry, None).await;
    let url = coord.url();
    let (a, b) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let la = Listening::on(Ipv4Addr::new(127, 0, 0, 15));
    let lb = Listening::on(Ipv4Addr::new(127, 0, 0, 16));
    // Taken before the heartbeat is sent: the coordinator's clock for it
    // starts later, so expiry can never seem early.
    let registered = Instant::now();
    client(&url, &a).heartbeat(&la.heartbeat()).await.unwrap();
    client(&url, &b).heartbeat(&lb.heartbeat()).await.unwrap();
    // b keeps heartbeating, a falls silent.
    wait_until_async(Duration::from_secs(20), "a to expire", async || {
        client(&url, &b).heartbeat(&lb.heartbeat()).await.unwrap();
        let got = client(&url, &b).hosts(&hosts_request()).await.unwrap();
        !ids(&got.hosts).contains(&la.addr.to_string())
    })
    .await;
    assert!(
        registered.elapsed() >= expiry,
        "expired after {:?}, before the expiry {expiry:?}",
        registered.elapsed()
    );
    let e = client(&url, &a).hosts(&hosts_request()).await.unwrap_err();
    assert_eq!(api_code(&e), "403 not_member", "an expired daemon's owner");
    // A heartbeat brings it back.
    client(&url, &a).heartbeat(&la.heartbeat()).await.unwrap();
    let got = client(&url, &a).hosts(&hosts_request()).await.unwrap();
    assert!(ids(&got.hosts).contains(&la.addr.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_never_blacklist_the_admin_does_and_lifts() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = Identity::generate();
    let coord = coordinator(
        &tmp.path().join("c"),
        Duration::from_secs(600),
        Some(&admin),
    )
    .await;
    let url = coord.url();
    let admin = Arc::new(admin);
    let liar = Arc::new(Identity::generate());
    let (m1, m2) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let ll = Listening::on(Ipv4Addr::new(127, 0, 0, 17));
    let l1 = Listening::on(Ipv4Addr::new(127, 0, 0, 18));
    let l2 = Listening::on(Ipv4Addr::new(127, 0, 0, 19));
    for (id, l) in [(&liar, &ll), (&m1, &l1), (&m2, &l2)] {
        client(&url, id).heartbeat(&l.heartbeat()).await.unwrap();
    }
    ask_hosts(&url, &m1).await;
    // One member, however many reports (and from several source addresses),
    // counts once.
    for i in 0..5u8 {
        let c = client(&url, &m1).with_source_ip(IpAddr::V4(Ipv4Addr::new(127, 0, 1 + i, 1)));
        let ack = c
            .report(&report_against(
                &ll.host(),
                ll.addr.port(),
                &format!("job {i}"),
            ))
            .await
            .unwrap();
        assert_eq!(ack.host, liar.id());
        assert_eq!(ack.distinct_reporters, 1);
        assert!(!ack.blacklisted, "a report never blacklists");
    }
    // A person linked to m1 (same owner) does not make a second reporter.
    let person = Arc::new(Identity::generate());
    let token = m1.membership_token(dportage::network::unix_now());
    assert!(client(&url, &person).link(&token).await.unwrap().member);
    ask_hosts(&url, &person).await;
    let ack = client(&url, &person)
        .report(&report_against(&ll.host(), ll.addr.port(), "job p"))
        .await
        .unwrap();
    assert_eq!(ack.distinct_reporters, 1, "same owner group counts once");
    assert!(!ack.blacklisted);
    let got = client(&url, &m2).hosts(&hosts_request()).await.unwrap();
    assert!(ids(&got.hosts).contains(&ll.addr.to_string()));
    // Nobody can report their own host.
    let e = client(&url, &liar)
        .report(&report_against(&ll.host(), ll.addr.port(), "self"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "400 bad_request");

    // A second, distinct member: counted, and still nothing more (keys are
    // free; only an adjudication or the operator decides).
    let ack = client(&url, &m2)
        .report(&report_against(&ll.host(), ll.addr.port(), "job x"))
        .await
        .unwrap();
    assert_eq!(ack.distinct_reporters, 2);
    assert!(!ack.blacklisted, "two reporters are two keys, not proof");
    let got = client(&url, &m1).hosts(&hosts_request()).await.unwrap();
    assert!(ids(&got.hosts).contains(&ll.addr.to_string()));

    // The operator decides: only admins, and only for hosts.
    let e = client(&url, &m1)
        .admin_blacklist_add(liar.id(), "no")
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 not_admin");
    let e = client(&url, &admin)
        .admin_blacklist_add(person.id(), "a person")
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "404 not_a_host");
    let added = client(&url, &admin)
        .admin_blacklist_add(liar.id(), "wrong objects\x1b[2J seen by hand")
        .await
        .unwrap();
    assert!(added.added);
    assert_eq!(added.addresses, vec![ll.host()]);
    let got = client(&url, &m1).hosts(&hosts_request()).await.unwrap();
    assert!(
        !ids(&got.hosts).contains(&ll.addr.to_string()),
        "never listed"
    );
    let e = client(&url, &liar)
        .heartbeat(&ll.heartbeat())
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 blacklisted", "heartbeats refused");
    let e = client(&url, &liar)
        .hosts(&hosts_request())
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&e),
        "403 blacklisted",
        "a blacklisted identity gets nothing"
    );

    // Admin: non-admins are refused; the admin lists and lifts.
    let e = client(&url, &m1).admin_blacklist().await.unwrap_err();
    assert_eq!(api_code(&e), "403 not_admin");
    let list = client(&url, &admin).admin_blacklist().await.unwrap();
    assert_eq!(
        list.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![liar.id()]
    );
    assert!(
        list.entries[0].reason.contains("seen by hand") && !list.entries[0].reason.contains('\x1b'),
        "the reason is kept, without control characters: {:?}",
        list.entries[0].reason
    );
    assert!(
        client(&url, &admin)
            .admin_lift(liar.id())
            .await
            .unwrap()
            .lifted
    );
    assert!(client(&url, &admin)
        .admin_blacklist()
        .await
        .unwrap()
        .entries
        .is_empty());
    client(&url, &liar)
        .heartbeat(&ll.heartbeat())
        .await
        .expect("lifted: heartbeats accepted again");
    // Old reports no longer count: one new reporter is one.
    let ack = client(&url, &m1)
        .report(&report_against(&ll.host(), ll.addr.port(), "again"))
        .await
        .unwrap();
    assert_eq!(ack.distinct_reporters, 1);
    assert!(!ack.blacklisted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_stale_malformed_and_oversized_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), Duration::from_secs(600), None).await;
    let url = coord.url();
    let curl = CoordinatorUrl::parse(&url).unwrap();
    let ckey = coord.key();
    let honest = Arc::new(Identity::generate());
    let mallory = Identity::generate();
    let lh = Listening::on(Ipv4Addr::new(127, 0, 0, 20));
    client(&url, &honest)
        .heartbeat(&lh.heartbeat())
        .await
        .unwrap();
    let now = dportage::network::unix_now();
    let body = serde_json::to_vec(&hosts_request()).unwrap();
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let curl = curl.clone();
        async move {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(&curl, None, "POST", "/v1/hosts", &pairs, body)
                .await
                .unwrap()
        }
    };
    let headers_of = |s: auth::SignedHeaders| {
        s.pairs()
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect::<Vec<_>>()
    };
    let error_code = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Unsigned.
    let (st, b) = post(vec![], body.clone()).await;
    assert_eq!((st, error_code(&b)), (401, "unauthenticated".into()));
    // Mallory signs but claims the honest member's key.
    let mut forged = auth::sign_request(&mallory, &ckey, "POST", "/v1/hosts", &body, now);
    forged.key = honest.id().to_string();
    let (st, b) = post(headers_of(forged), body.clone()).await;
    assert_eq!((st, error_code(&b)), (401, "unauthenticated".into()));
    assert!(String::from_utf8_lossy(&b).contains("signature"));
    // A genuine signature over another body.
    let signed = auth::sign_request(&honest, &ckey, "POST", "/v1/hosts", b"{}", now);
    let (st, _) = post(headers_of(signed), body.clone()).await;
    assert_eq!(st, 401);
    // A genuine signature for another path.
    let signed = auth::sign_request(&honest, &ckey, "POST", "/v1/whoami", &body, now);
    let (st, _) = post(headers_of(signed), body.clone()).await;
    assert_eq!(st, 401);
    // Stale.
    let signed = auth::sign_request(&honest, &ckey, "POST", "/v1/hosts", &body, now - 3600);
    let (st, b) = post(headers_of(signed), body.clone()).await;
    assert_eq!(st, 401);
    assert!(String::from_utf8_lossy(&b).contains("clock"));
    // Garbage headers.
    let (st, _) = post(
        vec![
            (auth::HDR_KEY, "zz".into()),
            (auth::HDR_TIME, "-1".into()),
            (auth::HDR_NONCE, "x".into()),
            (auth::HDR_SIG, "y".into()),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(st, 401);
    // Replay: the first copy is served, the second refused.
    let signed = headers_of(auth::sign_request(
        &honest,
        &ckey,
        "POST",
        "/v1/hosts",
        &body,
        now,
    ));
    let (st, _) = post(signed.clone(), body.clone()).await;
    assert_eq!(st, 200);
    let (st, b) = post(signed, body.clone()).await;
    assert_eq!(st, 401);
    assert!(String::from_utf8_lossy(&b).contains("replay"));
    // Malformed JSON, correctly signed.
    for bad in [
        &b"{\"fingerprints\": ["[..],
        b"null",
        b"[]",
        b"{\"fingerprints\":1}",
        b"\xff\xfe",
    ] {
        let signed = headers_of(auth::sign_request(
            &honest,
            &ckey,
            "POST",
            "/v1/hosts",
            bad,
            now,
        ));
        let (st, b) = post(signed, bad.to_vec()).await;
        assert_eq!((st, error_code(&b)), (400, "bad_request".into()), "{bad:?}");
    }
    // A heartbeat with absurd values.
    let mut hb = heartbeat(&lh.host(), lh.addr.port());
    hb.capacity = 1_000_000;
    let e = client(&url, &honest).heartbeat(&hb).await.unwrap_err();
    assert_eq!(api_code(&e), "400 bad_request");
    let mut hb = heartbeat("evil host;rm -rf /", 1);
    hb.toolchains[0].version = "x\u{1b}[2J".into();
    let e = client(&url, &honest).heartbeat(&hb).await.unwrap_err();
    assert_eq!(api_code(&e), "400 bad_request");
    // Oversized, declared and chunked (no Content-Length).
    let big = vec![b' '; 64 * 1024 + 1];
    let signed = headers_of(auth::sign_request(
        &honest,
        &ckey,
        "POST",
        "/v1/hosts",
        &big,
        now,
    ));
    let (st, _) = post(signed, big.clone()).await;
    assert_eq!(st, 413);
    let (st, b) = raw_chunked(lh_coord_addr(&url), 200 * 1024).await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&b));

    // Still healthy, and nothing was registered by the refused requests.
    let got = client(&url, &honest).hosts(&hosts_request()).await.unwrap();
    assert_eq!(ids(&got.hosts), vec![lh.addr.to_string()]);
    let metrics = reqwest_get(&url, "/metrics").await;
    let failures: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("dportage_auth_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        failures >= 7,
        "auth failures counted: {failures}\n{metrics}"
    );
}

fn lh_coord_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// POST a chunked body of `n` bytes with no Content-Length; status and body.
async fn raw_chunked(addr: SocketAddr, n: usize) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "POST /v1/heartbeat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 8192];
    let mut sent = 0;
    while sent < n {
        let frame = format!("{:x}\r\n", chunk.len());
        if s.write_all(frame.as_bytes()).await.is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break; // the server stopped reading: fine
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, buf)
}

/// An unsigned GET over a real socket (status page, metrics).
async fn reqwest_get(url: &str, path: &str) -> String {
    let curl = CoordinatorUrl::parse(url).unwrap();
    let (st, b) = send(&curl, None, "GET", path, &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(st, 200, "GET {path}");
    String::from_utf8_lossy(&b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_and_metrics_show_the_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = Arc::new(Identity::generate());
    let coord = coordinator(
        &tmp.path().join("c"),
        Duration::from_secs(600),
        Some(&admin),
    )
    .await;
    let url = coord.url();
    let ids_: Vec<_> = (0..3).map(|_| Arc::new(Identity::generate())).collect();
    let ls: Vec<_> = (0..3)
        .map(|i| Listening::on(Ipv4Addr::new(127, 0, 0, 40 + i)))
        .collect();
    for (id, l) in ids_.iter().zip(&ls) {
        client(&url, id).heartbeat(&l.heartbeat()).await.unwrap();
    }
    for m in &ids_[1..] {
        ask_hosts(&url, m).await;
        client(&url, m)
            .report(&report_against(&ls[0].host(), ls[0].addr.port(), "s"))
            .await
            .unwrap();
    }
    client(&url, &admin)
        .admin_blacklist_add(ids_[0].id(), "test")
        .await
        .unwrap();
    let page = reqwest_get(&url, "/").await;
    assert!(page.contains("<html"), "{page}");
    let version = &local_toolchains()[0].version;
    assert!(
        page.contains(&version.replace('&', "&amp;").replace('<', "&lt;")),
        "toolchain shown"
    );
    assert!(
        !page.contains(&ids_[0].id().short()),
        "the public page names no identity: {page}"
    );
    assert!(page.contains("blacklisted"), "{page}");
    // The details are for members: the blacklisted identity, by full id.
    let detail: serde_json::Value = client(&url, &ids_[1])
        .call("GET", "/v1/status", Vec::new())
        .await
        .unwrap();
    assert_eq!(
        detail["blacklist"][0]["id"],
        serde_json::json!(ids_[0].id().to_string()),
        "{detail}"
    );
    assert_eq!(detail["live_hosts"], serde_json::json!(2), "{detail}");
    let metrics = reqwest_get(&url, "/metrics").await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(
        value("dportage_pool_live_hosts"),
        2.0,
        "the liar left the pool"
    );
    assert_eq!(value("dportage_blacklisted"), 1.0);
    assert_eq!(value("dportage_reports_total"), 2.0);
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, v) = line.rsplit_once(' ').expect("NAME VALUE");
        assert!(v.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
}

#[test]
fn blacklist_and_identities_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("coord");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let liar = Arc::new(Identity::generate());
    let (m1, m2) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let ll = Listening::on(Ipv4Addr::new(127, 0, 0, 50));
    let l1 = Listening::on(Ipv4Addr::new(127, 0, 0, 51));
    let l2 = Listening::on(Ipv4Addr::new(127, 0, 0, 52));
    let admin = Arc::new(Identity::generate());
    let admin_hex = admin.id().to_string();
    let mut args = [ESTABLISHED_AT_ONCE, NO_CHALLENGES].concat();
    args.extend(["--admin-key", admin_hex.as_str()]);
    let first = CoordinatorProcess::start(&data, &args);
    let url = first.url.clone();
    rt.block_on(async {
        for (id, l) in [(&liar, &ll), (&m1, &l1), (&m2, &l2)] {
            client(&url, id).heartbeat(&l.heartbeat()).await.unwrap();
        }
        for m in [&m1, &m2] {
            ask_hosts(&url, m).await;
        }
        client(&url, &m1)
            .report(&report_against(&ll.host(), ll.addr.port(), "a"))
            .await
            .unwrap();
        let added = client(&url, &admin)
            .admin_blacklist_add(liar.id(), "test")
            .await
            .unwrap();
        assert!(added.added);
    });
    // The acknowledgement came after the write was durable: kill -9 right now.
    first.kill9();

    let listed = run_dportage(
        tmp.path(),
        &[
            "coordinator",
            "blacklist",
            "list",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&liar.id().to_string()));

    let second = CoordinatorProcess::start(&data, &[ESTABLISHED_AT_ONCE, NO_CHALLENGES].concat());
    let url = second.url.clone();
    rt.block_on(async {
        let e = client(&url, &liar)
            .heartbeat(&ll.heartbeat())
            .await
            .unwrap_err();
        assert_eq!(
            api_code(&e),
            "403 blacklisted",
            "blacklist survived kill -9"
        );
        // Soft state rebuilds from heartbeats: members come back by heartbeating.
        let e = client(&url, &m1).hosts(&hosts_request()).await.unwrap_err();
        assert_eq!(api_code(&e), "403 not_member", "liveness is not persisted");
        for (id, l) in [(&m1, &l1), (&m2, &l2)] {
            client(&url, id).heartbeat(&l.heartbeat()).await.unwrap();
        }
        let got = client(&url, &m1).hosts(&hosts_request()).await.unwrap();
        let mut got = ids(&got.hosts);
        got.sort();
        assert_eq!(got, vec![l1.addr.to_string(), l2.addr.to_string()]);
    });
    // Lift with the CLI while the coordinator runs; it picks the change up.
    let lifted = run_dportage(
        tmp.path(),
        &[
            "coordinator",
            "blacklist",
            "lift",
            &liar.id().to_string(),
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        lifted.status.success(),
        "{}",
        String::from_utf8_lossy(&lifted.stderr)
    );
    rt.block_on(async {
        // Polled with whoami, not heartbeats: heartbeats have a tight
        // per-key quota (--heartbeats-per-key), signed requests a wide one.
        wait_until_async(
            Duration::from_secs(20),
            "the lift to take effect",
            async || !client(&url, &liar).whoami().await.unwrap().blacklisted,
        )
        .await;
        client(&url, &liar)
            .heartbeat(&ll.heartbeat())
            .await
            .expect("a lifted daemon heartbeats again");
    });
    drop(second);
}

/// Read until the coordinator closes the connection; `None` if it did not
/// within `limit` (the test then fails instead of hanging).
async fn read_until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(buf), // EOF or a reset: closed either way
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_excess_connections_are_cut_and_honest_requests_still_served() {
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = CoordinatorConfig::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tmp.path().join("c"),
    );
    // Short enough for a test, long enough that the excess connection below
    // reaches the accept loop while all three slots are still held.
    cfg.header_timeout = Duration::from_secs(3);
    cfg.body_timeout = Duration::from_secs(3);
    cfg.max_connections = 3;
    let coord = Coordinator::bind(cfg).await.expect("start the coordinator");
    let addr = coord.local_addr();
    // Far above the 3 s limits: only a coordinator that never cuts fails.
    let limit = Duration::from_secs(20);

    // Slowloris: headers that never end, on every connection slot but one.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // A body that never arrives, on the last slot.
    let mut stalled_body = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled_body
        .write_all(b"POST /v1/heartbeat HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"a\":")
        .await
        .unwrap();
    // Over the limit (accepted after the three above, in connection order):
    // closed at accept, without a byte.
    let mut excess = tokio::net::TcpStream::connect(addr).await.unwrap();
    let got = read_until_closed(&mut excess, limit)
        .await
        .expect("a connection over the limit must be closed at once");
    assert!(
        got.is_empty(),
        "over the limit: {}",
        String::from_utf8_lossy(&got)
    );

    // The stalled body gets a 408 and the connection ends.
    let got = read_until_closed(&mut stalled_body, limit)
        .await
        .expect("a stalled body must be cut off");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "stalled body: {text}");
    assert!(text.contains("\"timeout\""), "stalled body: {text}");

    // Unfinished headers: the connection is closed (with at most a 408).
    for s in &mut slow {
        let got = read_until_closed(s, limit)
            .await
            .expect("unfinished headers must be cut off");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "unfinished headers: {text}"
        );
    }

    // The slots are free again: an honest request is served.
    let metrics = wait_until_async(limit, "an honest request to be served", async || {
        coord_metrics(addr).await
    })
    .await;
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("dportage_connections_refused_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "refusals counted: {metrics}");
    coord.shutdown();
}

/// GET /metrics with `Connection: close`; `None` if the coordinator closed
/// the connection without an answer (no free slot).
async fn coord_metrics(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.starts_with("HTTP/1.1 200").then_some(text)
}

/// `dportage status`: the detailed status for a member, signed with its
/// `$DPORTAGE_DIR` key; a stranger is told why not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dportage_status_shows_details_to_a_member_only() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), Duration::from_secs(600), None).await;
    let url = coord.url();
    let member_dir = tmp.path().join("member");
    let member = Arc::new(Identity::load_or_create(&member_dir).unwrap());
    let l = Listening::on(Ipv4Addr::new(127, 0, 0, 45));
    client(&url, &member)
        .heartbeat(&l.heartbeat())
        .await
        .unwrap();
    let stranger_dir = tmp.path().join("stranger");
    let (member_out, stranger_out) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            (
                run_dportage(&member_dir, &["status", "--coordinator", &url], &[]),
                run_dportage(&stranger_dir, &["status", "--coordinator", &url], &[]),
            )
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&member_out.stdout);
    assert!(member_out.status.success(), "{}", stderr_text(&member_out));
    assert!(text.contains("live hosts 1 "), "{text}");
    assert!(text.contains(&local_toolchains()[0].id), "{text}");
    assert!(
        text.contains(&format!(
            "host {} joined at {}",
            member.id().short(),
            l.addr
        )),
        "{text}"
    );
    assert_eq!(stranger_out.status.code(), Some(113), "access denied");
    assert!(stranger_out.stdout.is_empty());
    assert!(stderr_text(&stranger_out).contains("not a member"));
}

/// A host that runs jobs unconfined (no Landlock; its operator accepted
/// `--sandbox best-effort`) is listed only to a member who asks for such
/// hosts, and its entry says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_hosts_are_listed_only_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), Duration::from_secs(600), None).await;
    let url = coord.url();
    let (confined, unconfined) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let lc = Listening::on(Ipv4Addr::new(127, 0, 0, 61));
    let lu = Listening::on(Ipv4Addr::new(127, 0, 0, 62));
    client(&url, &confined)
        .heartbeat(&lc.heartbeat())
        .await
        .unwrap();
    let hb = dportage::network::api::Heartbeat {
        confined: false,
        ..lu.heartbeat()
    };
    client(&url, &unconfined).heartbeat(&hb).await.unwrap();
    let got = client(&url, &confined)
        .hosts(&hosts_request())
        .await
        .unwrap();
    assert_eq!(ids(&got.hosts), vec![lc.addr.to_string()], "by default");
    let asked = HostsRequest {
        include_unconfined: true,
        ..hosts_request()
    };
    let got = client(&url, &confined).hosts(&asked).await.unwrap();
    let entry = got
        .hosts
        .iter()
        .find(|h| h.id == unconfined.id())
        .expect("listed on request");
    assert!(!entry.confined);
    assert!(got
        .hosts
        .iter()
        .any(|h| h.id == confined.id() && h.confined));
}

/// Membership tokens bound to a person link that key only; an unbound one
/// (the machine-local `membership.json`) links a few identities at most, so
/// a leaked copy cannot fill the owner's group; the daemon can end a link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_tokens_link_their_person_only_and_links_can_be_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), Duration::from_secs(600), None).await;
    let url = coord.url();
    let daemon_dir = tmp.path().join("daemon");
    let daemon = Arc::new(Identity::load_or_create(&daemon_dir).unwrap());
    let ld = Listening::on(Ipv4Addr::new(127, 0, 0, 63));
    client(&url, &daemon)
        .heartbeat(&ld.heartbeat())
        .await
        .unwrap();
    let now = dportage::network::unix_now();

    // A token bound to the person, minted by the command line as the
    // daemon's user: it links that person, and nobody else.
    let person = Arc::new(Identity::generate());
    let out = run_dportage(
        &daemon_dir,
        &["membership-token", "--for", &person.id().to_string()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bound: dportage::network::identity::MembershipToken =
        serde_json::from_slice(&out.stdout).unwrap();
    let stranger = Arc::new(Identity::generate());
    let e = client(&url, &stranger).link(&bound).await.unwrap_err();
    assert_eq!(api_code(&e), "403 token_for_another");
    assert!(client(&url, &person).link(&bound).await.unwrap().member);

    // A leaked unbound token fills a few places, then links no more; a bound
    // token still links the owner's people.
    let unbound = daemon.membership_token(now);
    for _ in 1..8 {
        let key = Arc::new(Identity::generate());
        assert!(client(&url, &key).link(&unbound).await.unwrap().member);
    }
    let e = client(&url, &stranger).link(&unbound).await.unwrap_err();
    assert_eq!(api_code(&e), "403 unbound_links_full");
    let friend = Arc::new(Identity::generate());
    let for_friend = daemon.membership_token_for(friend.id(), now);
    assert!(
        client(&url, &friend)
            .link(&for_friend)
            .await
            .unwrap()
            .member
    );

    // Ending a link: only the daemon or the person; then no more hosts.
    let e = client(&url, &stranger)
        .unlink(person.id(), daemon.id())
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 not_a_party");
    client(&url, &person).hosts(&hosts_request()).await.unwrap();
    let out = run_dportage(
        &daemon_dir,
        &["unlink", &person.id().to_string(), "--coordinator", &url],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = client(&url, &person)
        .hosts(&hosts_request())
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 not_member", "unlinked");
    assert!(
        !client(&url, &daemon)
            .unlink(person.id(), daemon.id())
            .await
            .unwrap()
            .unlinked
    );
    // The others keep their membership.
    client(&url, &friend).hosts(&hosts_request()).await.unwrap();
}
