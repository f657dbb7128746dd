//! Membership is proven service: a real coordinator with challenges on (and
//! seconds-long intervals) sends challenge jobs to the addresses hosts
//! advertise. An honest `dportage serve` passes and is listed; a daemon
//! advertising a dead address never is, and its owner is told why; a lying
//! host (a `dportage __liar` proxy) disagrees with an established referee and
//! drops out after two failures in a row.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::dual::Liar;
use crate::support::network::*;
use crate::support::serve::DportageServer;
use crate::support::{free_port_on, wait_until_async};
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::api::Heartbeat;
use dportage::network::{CoordinatorClient, Identity, IdentityId, NetworkError};

const LIMIT: Duration = Duration::from_secs(60);

async fn coordinator(dir: &Path, admin: Option<&Identity>) -> Coordinator {
    let mut cfg = CoordinatorConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), dir.into());
    assert!(cfg.challenges, "challenges are on by default");
    cfg.challenge_interval = Duration::from_secs(2);
    cfg.challenge_timeout = Duration::from_secs(20);
    cfg.admin_keys = admin.map(|a| vec![a.id()]).unwrap_or_default();
    // The tests poll whoami while challenges run.
    cfg.requests_per_key = dportage::coordinator::quota::Rate::per_minute(6000);
    Coordinator::bind(cfg).await.expect("start the coordinator")
}

fn from(url: &str, who: &Arc<Identity>, at: Ipv4Addr) -> CoordinatorClient {
    client(url, who).with_source_ip(IpAddr::V4(at))
}

/// Does the coordinator say `who`'s daemon serves (has passed a challenge
/// and not failed the last two)? A refused question (over the per-key
/// quota while a test polls) is no answer: it panics rather than read as no.
async fn serves(url: &str, who: &Arc<Identity>) -> bool {
    client(url, who)
        .whoami()
        .await
        .map(|w| w.daemons.iter().any(|d| d.id == who.id() && d.serves))
        .unwrap_or_else(|e| panic!("whoami of {}: {e}", who.id()))
}

async fn listed(url: &str, asker: &Arc<Identity>, id: IdentityId) -> Result<bool, NetworkError> {
    let r = client(url, asker).hosts(&local_hosts_request()).await?;
    Ok(r.hosts.iter().any(|h| h.id == id))
}

async fn metrics(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn challenges(metrics: &str, result: &str) -> u64 {
    let name = format!("dportage_challenges_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&name)?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
}

fn api_code(e: &NetworkError) -> String {
    match e {
        NetworkError::Api { code, .. } => code.clone(),
        other => format!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_host_passes_its_first_challenge_and_is_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), None).await;
    let url = coord.url();
    let server = DportageServer::at(Ipv4Addr::new(127, 0, 0, 91));
    let owner = Arc::new(Identity::generate());
    from(&url, &owner, Ipv4Addr::new(127, 0, 31, 1))
        .heartbeat(&heartbeat("127.0.0.91", server.port))
        .await
        .unwrap();
    wait_until_async(LIMIT, "the host to pass its first challenge", async || {
        serves(&url, &owner).await
    })
    .await;
    assert!(listed(&url, &owner, owner.id()).await.unwrap());
    let m = metrics(coord.local_addr()).await;
    assert!(challenges(&m, "passed") >= 1, "{m}");
    assert_eq!(challenges(&m, "failed"), 0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_advertising_a_dead_address_never_makes_its_owner_a_member() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), None).await;
    let url = coord.url();
    // The owner's directory holds the daemon's identity (one user's setup).
    let dir = tmp.path().join("owner");
    let owner = Arc::new(Identity::load_or_create(&dir).unwrap());
    let dead = free_port_on(Ipv4Addr::new(127, 0, 0, 92));
    from(&url, &owner, Ipv4Addr::new(127, 0, 32, 1))
        .heartbeat(&heartbeat("127.0.0.92", dead))
        .await
        .unwrap();
    let addr = coord.local_addr();
    wait_until_async(LIMIT, "two failed challenges", async || {
        challenges(&metrics(addr).await, "failed") >= 2
    })
    .await;
    assert!(!serves(&url, &owner).await);
    let who = client(&url, &owner).whoami().await.unwrap();
    assert!(!who.member, "{who:?}");
    assert!(who.daemons.iter().any(|d| d.live && !d.serves), "{who:?}");
    let err = client(&url, &owner)
        .hosts(&local_hosts_request())
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), "not_member");
    assert!(
        err.to_string().contains("has not passed a challenge"),
        "{err}"
    );
    // `dportage --coordinator` says so too.
    let (u, d) = (url.clone(), dir.clone());
    let out = tokio::task::spawn_blocking(move || run_dportage(&d, &["--coordinator", &u], &[]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has not passed a challenge"), "{stderr}");
    assert_eq!(challenges(&metrics(addr).await, "passed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_host_disagrees_with_an_established_referee_and_drops_out() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = Identity::generate();
    let coord = coordinator(&tmp.path().join("c"), Some(&admin)).await;
    let url = coord.url();
    let admin = Arc::new(admin);

    // The liar registers first: with no established host of its toolchain,
    // its first challenge proves service only, and a flipped byte passes.
    let upstream = DportageServer::at(Ipv4Addr::new(127, 0, 0, 93));
    let liar = Liar::start(Ipv4Addr::new(127, 0, 0, 94), upstream.addr, "flip");
    let liar_owner = Arc::new(Identity::generate());
    let liar_hb = Heartbeat {
        lzo: false,
        ..heartbeat("127.0.0.94", liar.addr.port())
    };
    let liar_client = from(&url, &liar_owner, Ipv4Addr::new(127, 0, 33, 1));
    liar_client.heartbeat(&liar_hb).await.unwrap();
    wait_until_async(
        LIMIT,
        "the liar to pass a service-only challenge",
        async || serves(&url, &liar_owner).await,
    )
    .await;

    // An honest host of another owner and network, vouched for: the referee.
    let honest = DportageServer::at(Ipv4Addr::new(127, 0, 0, 95));
    let honest_owner = Arc::new(Identity::generate());
    from(&url, &honest_owner, Ipv4Addr::new(127, 0, 34, 1))
        .heartbeat(&heartbeat("127.0.0.95", honest.port))
        .await
        .unwrap();
    client(&url, &admin)
        .admin_vouch(honest_owner.id(), true)
        .await
        .unwrap();
    wait_until_async(LIMIT, "the referee to serve", async || {
        serves(&url, &honest_owner).await
    })
    .await;

    // Now the liar's answers are compared with the referee's: it fails, and
    // after two failures in a row it is no longer listed.
    wait_until_async(LIMIT, "the liar to drop out", async || {
        // It stays live (expiry 10 min): only failed challenges drop it.
        !serves(&url, &liar_owner).await
    })
    .await;
    let m = metrics(coord.local_addr()).await;
    // Two in a row (the liar's: the honest host passes every one); the
    // first may have come before the wait above began.
    assert!(challenges(&m, "failed") >= 2, "{m}");
    assert!(!listed(&url, &honest_owner, liar_owner.id()).await.unwrap());
    assert!(listed(&url, &honest_owner, honest_owner.id())
        .await
        .unwrap());
    let err = liar_client.hosts(&local_hosts_request()).await.unwrap_err();
    assert_eq!(api_code(&err), "not_member");
}
