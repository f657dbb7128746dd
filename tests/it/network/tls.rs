//! The coordinator link over TLS: a real `dportage coordinator --tls-cert
//! --tls-key` process, a real `dportage serve --coordinator https://…` daemon
//! heartbeating to it, and `dportage --coordinator https://…` getting a host
//! list whose signature checks out; a client that does not trust the
//! certificate is refused with a message that says what to do.

use std::time::Duration;

use crate::support::network::*;
use crate::support::serve::ServeOptions;
use crate::support::*;
use dportage::network::{unix_now, Identity};

/// A member directory with no identity or pins yet.
fn other_dir_for(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    tmp.path().join("stranger")
}

#[test]
fn a_daemon_and_a_member_use_an_https_coordinator() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path(), "good");
    let mut args: Vec<String> = ca.coordinator_args();
    args.extend(NO_CHALLENGES.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let coord = CoordinatorProcess::start(&tmp.path().join("coord"), &args);
    assert!(coord.url.starts_with("https://127.0.0.1:"), "{}", coord.url);

    // One identity for the daemon and the member (one DPORTAGE_DIR).
    let dir = tmp.path().join("owner");
    let ca_file = ca.ca.display().to_string();
    let dir_text = dir.display().to_string();
    let daemon = ServeOptions::new()
        .args(&["--coordinator", &coord.url, "--heartbeat-interval", "1"])
        .env(&[("DPORTAGE_DIR", &dir_text), ("DPORTAGE_CA_FILE", &ca_file)])
        .start();
    let trusted = [("DPORTAGE_CA_FILE", ca_file.as_str())];
    // Listed once its heartbeat (over https) arrived.
    let out = wait_until(Duration::from_secs(60), "a host list over https", || {
        let out = run_dportage(&dir, &["--coordinator", &coord.url], &trusted);
        out.status.success().then_some(out)
    });
    let stderr = stderr_text(&out);
    assert!(!stderr.contains("plain http"), "{stderr}");
    let vars = eval_in_sh(&String::from_utf8_lossy(&out.stdout), &["DISTCC_HOSTS"]);
    let hosts = &vars[0].1;
    assert!(hosts.contains(&daemon.addr.to_string()), "{hosts:?}");
    // The daemon pinned the coordinator's key at its first heartbeat; the
    // member (same directory) checked the signed list against it.
    let key = Identity::load(&coord.data.join("coordinator-key"))
        .unwrap()
        .id()
        .to_string();
    let pins = std::fs::read_to_string(dir.join("coordinator-keys.json")).unwrap();
    assert!(pins.contains(&key) && pins.contains(&coord.url), "{pins}");

    // The key given up front: the right one is accepted, another refused
    // with what went wrong and what to do.
    let fresh = tmp.path().join("fresh-pins");
    std::fs::create_dir_all(&fresh).unwrap();
    for f in ["identity.key", "identity.pub"] {
        if dir.join(f).exists() {
            std::fs::copy(dir.join(f), fresh.join(f)).unwrap();
        }
    }
    let out = run_dportage(
        &fresh,
        &["--coordinator", &coord.url, "--coordinator-key", &key],
        &trusted,
    );
    assert_success(&out, "dportage --coordinator-key (right key)");
    assert!(
        stderr_text(&out).contains("--coordinator-key"),
        "{}",
        stderr_text(&out)
    );
    let wrong = Identity::generate().id().to_string();
    let out = run_dportage(
        &other_dir_for(&tmp),
        &["--coordinator", &coord.url, "--coordinator-key", &wrong],
        &trusted,
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = stderr_text(&out);
    for wanted in ["presents key", &key, &wrong, "--coordinator-key"] {
        assert!(stderr.contains(wanted), "{wanted:?} missing in {stderr}");
    }
    // A daemon told another key does not heartbeat, and says why.
    let wrong_daemon = ServeOptions::new()
        .args(&[
            "--coordinator",
            &coord.url,
            "--coordinator-key",
            &wrong,
            "--heartbeat-interval",
            "1",
        ])
        .env(&[
            (
                "DPORTAGE_DIR",
                &tmp.path().join("wrong-daemon").display().to_string(),
            ),
            ("DPORTAGE_CA_FILE", &ca_file),
        ])
        .log_level("info")
        .start();
    let log = wrong_daemon.wait_for_log("presents key", Duration::from_secs(30));
    assert!(log.contains(&wrong), "{log}");

    // A client that trusts another CA only (SSL_CERT_FILE replaces the
    // system's roots) refuses the coordinator and says what to do.
    let other = TestCa::new(tmp.path(), "other");
    let other_dir = other_dir_for(&tmp);
    let out = run_dportage(
        &other_dir,
        &["--coordinator", &coord.url],
        &[("SSL_CERT_FILE", other.ca.to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = stderr_text(&out);
    for wanted in [
        "not signed by an authority",
        "DPORTAGE_CA_FILE",
        "SSL_CERT_FILE",
    ] {
        assert!(stderr.contains(wanted), "{wanted:?} missing in {stderr}");
    }
    // Plain http to a TLS port is not mistaken for a refusal by the
    // coordinator: it is unreachable, and the exit code says so.
    let plain = coord.url.replacen("https://", "http://", 1);
    let out = run_dportage(&other_dir, &["--coordinator", &plain], &[]);
    assert!(!out.status.success());
    drop(daemon);
}

/// Behind a reverse proxy (`--trusted-proxy`), the coordinator sees the
/// client's address in `X-Forwarded-For`, from that proxy only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trusted_proxy_names_the_client_address() {
    use dportage::coordinator::{Coordinator, CoordinatorConfig};
    use dportage::network::api::HeartbeatAck;
    use dportage::network::auth;
    use dportage::network::caller::{send, CoordinatorUrl};
    use std::net::{IpAddr, Ipv4Addr};

    let tmp = tempfile::tempdir().unwrap();
    let proxy = Ipv4Addr::new(127, 0, 0, 52);
    let mut cfg = CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("c"));
    cfg.challenges = false;
    cfg.trusted_proxies = vec![IpAddr::V4(proxy)];
    let coord = Coordinator::bind(cfg).await.unwrap();
    let url = CoordinatorUrl::parse(&coord.url()).unwrap();
    // A heartbeat that lets the coordinator choose the address to advertise
    // (the one it sees), from `source`, claiming `forwarded`.
    let heartbeat_from = |source: Ipv4Addr, forwarded: &'static str| {
        let url = url.clone();
        let key = coord.key();
        async move {
            let who = Identity::generate();
            let mut hb = heartbeat("127.0.0.1", 4000);
            hb.host = None;
            let body = serde_json::to_vec(&hb).unwrap();
            let signed = auth::sign_request(&who, &key, "POST", "/v1/heartbeat", &body, unix_now());
            let mut headers = signed.pairs().to_vec();
            headers.push(("x-forwarded-for", forwarded));
            let (status, answer) = send(
                &url,
                Some(IpAddr::V4(source)),
                "POST",
                "/v1/heartbeat",
                &headers,
                body,
            )
            .await
            .unwrap();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            serde_json::from_slice::<HeartbeatAck>(&answer)
                .unwrap()
                .advertised
        }
    };
    // Through the proxy: the client's address (not the proxy's, nor what
    // the client wrote into the header itself).
    assert_eq!(
        heartbeat_from(proxy, "127.0.9.9, 127.0.6.7").await,
        "127.0.6.7:4000"
    );
    // From anyone else the header is ignored.
    assert_eq!(
        heartbeat_from(Ipv4Addr::new(127, 0, 0, 53), "127.0.6.8").await,
        "127.0.0.53:4000"
    );
    coord.shutdown();
}

/// Plain http to anything but loopback works but is warned about, once.
#[test]
fn plain_http_beyond_loopback_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = DeadPort::new();
    // 0.0.0.0 is not a loopback address, yet reaches this machine (and the
    // dead port refuses at once).
    let url = format!("http://0.0.0.0:{}", dead.port);
    let out = run_dportage(tmp.path(), &["--coordinator", &url], &[]);
    assert!(!out.status.success());
    let stderr = stderr_text(&out);
    assert_eq!(stderr.matches("plain http").count(), 1, "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
    let loopback = format!("http://127.0.0.1:{}", dead.port);
    let out = run_dportage(tmp.path(), &["--coordinator", &loopback], &[]);
    assert!(!stderr_text(&out).contains("plain http"));
}
