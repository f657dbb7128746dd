//! Signed requests name the coordinator they are for: a request recorded on
//! its way to coordinator A and replayed to coordinator B within the time
//! window is refused by B (whose nonce cache has never seen it). Clients
//! learn the key from `GET /v1/coordinator-key` and check it against the
//! key they pinned or were given.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use crate::support::network::*;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::caller::{send, CoordinatorUrl, KeySource};
use dportage::network::{auth, unix_now, Identity, NetworkError};

/// A coordinator on 127.0.0.1 whose hosts are `Listening` fakes.
async fn coordinator(dir: &Path) -> Coordinator {
    let mut cfg = CoordinatorConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), dir.into());
    cfg.challenges = false;
    Coordinator::bind(cfg).await.expect("start the coordinator")
}

fn error_of(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    (
        v["code"].as_str().unwrap_or("").to_string(),
        v["error"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_one_coordinator_is_refused_by_another() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        coordinator(&tmp.path().join("a")).await,
        coordinator(&tmp.path().join("b")).await,
    );
    assert_ne!(a.key(), b.key(), "each coordinator has its own key");
    // One member of both networks.
    let member = Arc::new(Identity::generate());
    let host = Listening::on(Ipv4Addr::new(127, 0, 0, 41));
    for c in [&a, &b] {
        client(&c.url(), &member)
            .heartbeat(&host.heartbeat())
            .await
            .unwrap();
    }
    // What a client learns is the coordinator's key.
    assert_eq!(coordinator_key(&a.url()).await, a.key());

    let body = serde_json::to_vec(&local_hosts_request()).unwrap();
    let to = |url: String, headers: Vec<(&'static str, String)>, body: Vec<u8>| async move {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send(
            &CoordinatorUrl::parse(&url).unwrap(),
            None,
            "POST",
            "/v1/hosts",
            &pairs,
            body,
        )
        .await
        .unwrap()
    };
    let headers_of = |s: &auth::SignedHeaders| {
        s.pairs()
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect::<Vec<_>>()
    };

    // A request for A, recorded on the way (never delivered to A), replayed
    // to B within the window: refused, and the answer says why.
    let for_a = auth::sign_request(&member, &a.key(), "POST", "/v1/hosts", &body, unix_now());
    let (status, answer) = to(b.url(), headers_of(&for_a), body.clone()).await;
    let (code, message) = error_of(&answer);
    assert_eq!(
        (status, code.as_str()),
        (401, "unauthenticated"),
        "{message}"
    );
    assert!(message.contains("signed for coordinator"), "{message}");
    // Delivered to A it is good (the recording did not spend it there)…
    let (status, answer) = to(a.url(), headers_of(&for_a), body.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    // …and refused by B after A served it too.
    let (status, _) = to(b.url(), headers_of(&for_a), body.clone()).await;
    assert_eq!(status, 401);
    // Renaming the coordinator in the header does not help: the signature
    // covers the key.
    let mut renamed = for_a.clone();
    renamed.coordinator = b.key().to_string();
    let (status, answer) = to(b.url(), headers_of(&renamed), body.clone()).await;
    let (_, message) = error_of(&answer);
    assert_eq!(status, 401);
    assert!(message.contains("signature"), "{message}");
    // A request that names no coordinator (an older client's) is refused.
    let mut unnamed = headers_of(&auth::sign_request(
        &member,
        &b.key(),
        "POST",
        "/v1/hosts",
        &body,
        unix_now(),
    ));
    unnamed.retain(|(k, _)| *k != auth::HDR_COORDINATOR);
    let (status, answer) = to(b.url(), unnamed, body.clone()).await;
    let (_, message) = error_of(&answer);
    assert_eq!(status, 401);
    assert!(message.contains(auth::HDR_COORDINATOR), "{message}");
    // Both refusals are counted under their own reason.
    let metrics = crate::support::network::coordinator_metrics(&b.url()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "dportage_auth_failures_total{reason=\"wrong_coordinator\"} 3"),
        "{metrics}"
    );

    // The client checks the key a coordinator presents against the one it
    // pinned (or was given) before signing anything for it.
    let dir = tmp.path().join("member");
    std::fs::create_dir_all(&dir).unwrap();
    let a_url = CoordinatorUrl::parse(&a.url()).unwrap().to_string();
    dportage::network::host_list::pin(&dir, &a_url, &b.key()).unwrap();
    let pinned_wrong = client(&a.url(), &member)
        .expecting_pinned_key(&dir)
        .unwrap();
    match pinned_wrong.whoami().await {
        Err(e @ NetworkError::CoordinatorKeyMismatch { .. }) => {
            let text = e.to_string();
            assert!(text.contains("coordinator-keys.json"), "{text}");
            assert!(text.contains(&a.key().to_string()), "{text}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let given = client(&a.url(), &member).expecting_key(a.key(), KeySource::Given);
    given.whoami().await.expect("the right key is accepted");
}
