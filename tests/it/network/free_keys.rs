//! On the internet a user is a key and keys are free. Over real sockets, with
//! real SQLite stores (and a real `dportage coordinator` process for the
//! admin CLI): a blacklisting sticks to the host's address and, for repeat
//! offences, its network; new identities per network are few; a report must
//! name a host the coordinator handed to the reporter, counts once, and only
//! from an established owner group; vouching is the operator's shortcut to
//! established standing, and host lists show it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::network::*;
use crate::support::*;
use dportage::coordinator::quota::Rate;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::api::{Heartbeat, HostEntry, HostResultHash, MismatchReport};
use dportage::network::{auth, unix_now, Identity, IdentityId, NetworkError};
use dportage::trust::standing::{Standing, StandingRules};

const LIMIT: Duration = Duration::from_secs(30);

/// A coordinator with the real network's rules, except as `tweak` says.
async fn coordinator(dir: &Path, tweak: impl FnOnce(&mut CoordinatorConfig)) -> Coordinator {
    let mut cfg = CoordinatorConfig::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        dir.to_path_buf(),
    );
    // Its hosts are fakes the coordinator cannot challenge.
    cfg.challenges = false;
    tweak(&mut cfg);
    Coordinator::bind(cfg).await.expect("start the coordinator")
}

/// Hosts established at their first heartbeat, so fresh daemons' reports count.
fn at_once(cfg: &mut CoordinatorConfig) {
    cfg.standing_rules = StandingRules::AT_ONCE;
}

fn api_error(e: &NetworkError) -> (String, String) {
    match e {
        NetworkError::Api {
            code,
            status,
            message,
            ..
        } => (format!("{status} {code}"), message.clone()),
        other => (format!("not an API error: {other}"), String::new()),
    }
}

fn api_code(e: &NetworkError) -> String {
    api_error(e).0
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// A client of `url` signing as `who`, connecting from `from`.
fn from(url: &str, who: &Arc<Identity>, from: Ipv4Addr) -> dportage::network::CoordinatorClient {
    client(url, who).with_source_ip(IpAddr::V4(from))
}

fn report_against(host: IdentityId, input: &str) -> MismatchReport {
    MismatchReport {
        host_id: Some(host),
        host_addr: String::new(),
        input_hash: blake3::hash(input.as_bytes()).to_hex().to_string(),
        args: vec!["gcc".into(), "-c".into(), "x.c".into()],
        results: vec![HostResultHash {
            host: "elsewhere:3632".into(),
            id: Some(host),
            hash: "ab".repeat(32),
        }],
        time: 1,
        evidence_id: None,
        toolchain: None,
    }
}

fn listed(hosts: &[HostEntry], id: IdentityId) -> Option<&HostEntry> {
    hosts.iter().find(|h| h.id == id)
}

/// Two members (their own daemons, on their own networks) who have been
/// given the pool's hosts, ready to report.
async fn two_members(url: &str) -> [Arc<Identity>; 2] {
    let members = [
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    ];
    for (i, m) in members.iter().enumerate() {
        let at = ip(127, 1, 1 + i as u8, 1);
        from(url, m, at)
            .heartbeat(&heartbeat(&at.to_string(), 3632))
            .await
            .unwrap();
    }
    members
}

/// The operator blacklists `liar` (as a lost adjudication would; reports
/// never do by themselves).
async fn blacklist_by_admin(url: &str, admin: &Arc<Identity>, liar: IdentityId) {
    let added = client(url, admin)
        .admin_blacklist_add(liar, "test")
        .await
        .unwrap();
    assert!(added.added, "{added:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blacklisted_host_cannot_return_under_a_new_key_at_its_address() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = Arc::new(Identity::generate());
    let coord = coordinator(&tmp.path().join("c"), |cfg| {
        at_once(cfg);
        cfg.admin_keys = vec![admin.id()];
    })
    .await;
    let url = coord.url();
    let members = two_members(&url).await;
    // The liar heartbeats from 127.0.5.1 and advertises that address.
    let home = ip(127, 0, 5, 1);
    let liar = Arc::new(Identity::generate());
    let at_home = heartbeat(&home.to_string(), 4000);
    from(&url, &liar, home).heartbeat(&at_home).await.unwrap();
    // A neighbour behind the same address (another port), registered before.
    let neighbour = Arc::new(Identity::generate());
    let next_door = heartbeat(&home.to_string(), 4001);
    from(&url, &neighbour, home)
        .heartbeat(&next_door)
        .await
        .unwrap();
    blacklist_by_admin(&url, &admin, liar.id()).await;
    let list = client(&url, &admin).admin_blacklist().await.unwrap();
    assert_eq!(list.entries[0].addresses, vec![home.to_string()]);
    assert_eq!(list.entries[0].network, "127.0.5.0/24");

    // A new key at the same address, from the same machine: refused, and
    // told why and what to do.
    let again = Arc::new(Identity::generate());
    let e = from(&url, &again, home)
        .heartbeat(&at_home)
        .await
        .unwrap_err();
    let (code, message) = api_error(&e);
    assert_eq!(code, "403 blacklisted");
    assert!(message.contains(&home.to_string()), "{message}");
    assert!(message.contains("operator"), "{message}");
    // The same machine advertising another address: its IP is blacklisted.
    let e = from(&url, &again, home)
        .heartbeat(&heartbeat("127.0.5.2", 4000))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 blacklisted");
    // Another machine advertising the blacklisted address.
    let e = from(&url, &again, ip(127, 0, 6, 1))
        .heartbeat(&at_home)
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 blacklisted");
    // Nor may a host registered before move onto it.
    let e = from(&url, &members[0], ip(127, 1, 1, 1))
        .heartbeat(&at_home)
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 blacklisted");
    // The neighbour registered before answers for itself and keeps working.
    from(&url, &neighbour, home)
        .heartbeat(&next_door)
        .await
        .expect("a host registered before the blacklisting keeps its address");
    // A new key elsewhere is welcome; nothing of the refusals was registered.
    from(&url, &again, ip(127, 0, 6, 1))
        .heartbeat(&heartbeat("127.0.6.1", 4000))
        .await
        .unwrap();
    let fresh = Arc::new(Identity::generate());
    assert!(client(&url, &fresh)
        .whoami()
        .await
        .unwrap()
        .daemons
        .is_empty());

    // The operator lifts the liar: its address is free again.
    assert!(
        client(&url, &admin)
            .admin_lift(liar.id())
            .await
            .unwrap()
            .lifted
    );
    let list = client(&url, &admin).admin_blacklist().await.unwrap();
    assert!(list.entries.is_empty() && list.networks.is_empty());
    from(&url, &fresh, home)
        .heartbeat(&heartbeat("127.0.5.2", 4000))
        .await
        .expect("lifted: a new key registers from the address again");
    coord.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_is_blacklisted_after_its_strikes() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = Arc::new(Identity::generate());
    let coord = coordinator(&tmp.path().join("c"), |cfg| {
        at_once(cfg);
        cfg.admin_keys = vec![admin.id()];
        assert_eq!(cfg.network_strikes, 2, "the default");
        // More new hosts in 127.0.7.0/24 than a day allows: the strikes alone.
        cfg.new_hosts_per_network = Rate::per_day(0);
    })
    .await;
    let url = coord.url();
    let (liars, neighbour) = (
        [
            Arc::new(Identity::generate()),
            Arc::new(Identity::generate()),
        ],
        Arc::new(Identity::generate()),
    );
    for (i, who) in liars.iter().chain([&neighbour]).enumerate() {
        let at = ip(127, 0, 7, 1 + i as u8);
        from(&url, who, at)
            .heartbeat(&heartbeat(&at.to_string(), 4000))
            .await
            .unwrap();
    }
    // One strike: the network still registers new hosts.
    blacklist_by_admin(&url, &admin, liars[0].id()).await;
    let newcomer = Arc::new(Identity::generate());
    from(&url, &newcomer, ip(127, 0, 7, 20))
        .heartbeat(&heartbeat("127.0.7.20", 4000))
        .await
        .expect("one blacklisted host is one strike");
    // The second: no new identity registers from 127.0.7.0/24.
    blacklist_by_admin(&url, &admin, liars[1].id()).await;
    let list = client(&url, &admin).admin_blacklist().await.unwrap();
    assert_eq!(
        list.networks
            .iter()
            .map(|n| n.network.as_str())
            .collect::<Vec<_>>(),
        vec!["127.0.7.0/24"]
    );
    let e = from(&url, &Arc::new(Identity::generate()), ip(127, 0, 7, 30))
        .heartbeat(&heartbeat("127.0.7.30", 4000))
        .await
        .unwrap_err();
    let (code, message) = api_error(&e);
    assert_eq!(code, "403 blacklisted");
    assert!(message.contains("127.0.7.0/24"), "{message}");
    assert!(message.contains("lift-network"), "{message}");
    // Hosts registered before keep heartbeating.
    for (i, who) in [&neighbour, &newcomer].into_iter().enumerate() {
        let at = [ip(127, 0, 7, 3), ip(127, 0, 7, 20)][i];
        from(&url, who, at)
            .heartbeat(&heartbeat(&at.to_string(), 4000))
            .await
            .expect("an existing host in a blacklisted network");
    }
    // Another /24 of the same /16 is another network.
    from(&url, &Arc::new(Identity::generate()), ip(127, 0, 8, 1))
        .heartbeat(&heartbeat("127.0.8.1", 4000))
        .await
        .unwrap();
    // Lifting a host does not lift the network; lift-network does.
    assert!(
        client(&url, &admin)
            .admin_lift(liars[0].id())
            .await
            .unwrap()
            .lifted
    );
    let e = from(&url, &Arc::new(Identity::generate()), ip(127, 0, 7, 31))
        .heartbeat(&heartbeat("127.0.7.31", 4000))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 blacklisted");
    let lifted = client(&url, &admin)
        .admin_lift_network("127.0.7.99")
        .await
        .unwrap();
    assert_eq!(
        (lifted.network.as_str(), lifted.lifted),
        ("127.0.7.0/24", true)
    );
    from(&url, &Arc::new(Identity::generate()), ip(127, 0, 7, 31))
        .heartbeat(&heartbeat("127.0.7.31", 4000))
        .await
        .expect("the network lifted");
    coord.shutdown();
}

/// POST a signed heartbeat from `source`; the whole answer, lower-cased.
async fn raw_heartbeat(
    coord: SocketAddr,
    source: Ipv4Addr,
    who: &Identity,
    hb: &Heartbeat,
) -> String {
    let body = serde_json::to_vec(hb).unwrap();
    let ckey = coordinator_key(&format!("http://{coord}")).await;
    let signed = auth::sign_request(who, &ckey, "POST", "/v1/heartbeat", &body, unix_now());
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((source, 0))).unwrap();
    let mut s = sock.connect(coord).await.unwrap();
    let mut req = format!(
        "POST /v1/heartbeat HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
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
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_identities_per_network_are_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("c");
    // The defaults: 4 a day per /24, 32 a day per /16.
    let coord = coordinator(&data, |_| {}).await;
    let (url, addr) = (coord.url(), coord.local_addr());
    let mut hosts = Vec::new();
    for d in 1..=4u8 {
        let (who, at) = (Arc::new(Identity::generate()), ip(127, 0, 9, d));
        from(&url, &who, at)
            .heartbeat(&heartbeat(&at.to_string(), 4000))
            .await
            .unwrap();
        hosts.push((who, at));
    }
    // The fifth new key from 127.0.9.0/24 today: 429, and when to come back
    // (one registration per 6 h).
    let fifth = Identity::generate();
    let answer = raw_heartbeat(
        addr,
        ip(127, 0, 9, 5),
        &fifth,
        &heartbeat("127.0.9.5", 4000),
    )
    .await;
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    assert!(answer.contains("too_many_registrations"), "{answer}");
    assert!(answer.contains("127.0.9.0/24"), "{answer}");
    let retry: u64 = answer
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After:\n{answer}"));
    assert!((6 * 3600 - 60..=6 * 3600).contains(&retry), "{retry}");
    // The hosts already registered keep heartbeating.
    for (who, at) in &hosts {
        from(&url, who, *at)
            .heartbeat(&heartbeat(&at.to_string(), 4000))
            .await
            .unwrap();
    }
    // Other /24s of 127.0.0.0/16 register until the /16's 32 a day are spent.
    let mut registered = 4;
    'nets: for c in 10..=20u8 {
        for d in 1..=4u8 {
            let who = Arc::new(Identity::generate());
            let at = ip(127, 0, c, d);
            match from(&url, &who, at)
                .heartbeat(&heartbeat(&at.to_string(), 4000))
                .await
            {
                Ok(_) => registered += 1,
                Err(e) => {
                    let (code, message) = api_error(&e);
                    assert_eq!(code, "429 too_many_registrations");
                    assert!(message.contains("127.0.0.0/16"), "{message}");
                    break 'nets;
                }
            }
        }
    }
    assert_eq!(registered, 32, "the /16's allowance");
    // Another /16 is untouched.
    from(&url, &Arc::new(Identity::generate()), ip(127, 2, 0, 1))
        .heartbeat(&heartbeat("127.2.0.1", 4000))
        .await
        .unwrap();
    let m = wait_until_async(LIMIT, "/metrics", async || {
        let curl = dportage::network::caller::CoordinatorUrl::parse(&url).ok()?;
        let (st, b) =
            dportage::network::caller::send(&curl, None, "GET", "/metrics", &[], Vec::new())
                .await
                .ok()?;
        (st == 200).then(|| String::from_utf8_lossy(&b).into_owned())
    })
    .await;
    for (limit, n) in [
        ("new_hosts_per_network", 1),
        ("new_hosts_per_wide_network", 1),
    ] {
        let line = format!("dportage_limit_refusals_total{{limit=\"{limit}\"}} {n}");
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
    coord.shutdown();

    // A restart does not hand out a fresh day's allowance.
    let again = coordinator(&data, |_| {}).await;
    let answer = raw_heartbeat(
        again.local_addr(),
        ip(127, 0, 9, 6),
        &Identity::generate(),
        &heartbeat("127.0.9.6", 4000),
    )
    .await;
    assert!(
        answer.starts_with("http/1.1 429"),
        "after a restart: {answer}"
    );
    again.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_must_name_a_host_handed_to_the_reporter_and_count_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("c");
    let coord = coordinator(&data, at_once).await;
    let url = coord.url();
    let [m1, m2] = two_members(&url).await;
    let liar = Arc::new(Identity::generate());
    from(&url, &liar, ip(127, 0, 11, 1))
        .heartbeat(&heartbeat("127.0.11.1", 4000))
        .await
        .unwrap();
    // A person's key, linked to m2's daemon: a member, not a host.
    let person = Arc::new(Identity::generate());
    let token = m2.membership_token(unix_now());
    assert!(client(&url, &person).link(&token).await.unwrap().member);

    // Before any host list: nothing was handed out to m1.
    let e = client(&url, &m1)
        .report(&report_against(liar.id(), "x"))
        .await
        .unwrap_err();
    let (code, message) = api_error(&e);
    assert_eq!(code, "422 not_handed_out");
    assert!(message.contains("--report-window"), "{message}");
    let got = client(&url, &m1)
        .hosts(&local_hosts_request())
        .await
        .unwrap();
    assert!(listed(&got.hosts, liar.id()).is_some());
    // A member's or person's key is not a host.
    let e = client(&url, &m1)
        .report(&report_against(person.id(), "x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "422 not_a_host");
    // A host that joined after m1's list was never handed to m1.
    let later = Arc::new(Identity::generate());
    from(&url, &later, ip(127, 0, 12, 1))
        .heartbeat(&heartbeat("127.0.12.1", 4000))
        .await
        .unwrap();
    let e = client(&url, &m1)
        .report(&report_against(later.id(), "x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "422 not_handed_out");
    // Nor is a list handed to another key of the pool.
    client(&url, &m2)
        .hosts(&local_hosts_request())
        .await
        .unwrap();
    let e = client(&url, &person)
        .report(&report_against(liar.id(), "x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "422 not_handed_out", "m2's list is m2's");

    // One report per (reporter, host, input): a resend is acknowledged, not
    // counted again.
    let first = client(&url, &m1)
        .report(&report_against(liar.id(), "job 1"))
        .await
        .unwrap();
    assert!(first.counted && !first.duplicate);
    let again = client(&url, &m1)
        .report(&report_against(liar.id(), "job 1"))
        .await
        .unwrap();
    assert!(again.duplicate && !again.counted, "{again:?}");
    assert_eq!(again.report_id, first.report_id);
    assert_eq!(again.distinct_reporters, 1);
    assert!(!again.blacklisted);
    let db = rusqlite::Connection::open(data.join("coordinator.db")).unwrap();
    let stored: i64 = db
        .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 1, "the duplicate was not stored");
    // Another member's report of the same job is another report.
    let ack = client(&url, &m2)
        .report(&report_against(liar.id(), "job 1"))
        .await
        .unwrap();
    assert_eq!(ack.distinct_reporters, 2);
    assert!(!ack.blacklisted, "reports never blacklist by themselves");
    coord.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probationary_reporter_does_not_count_and_vouching_makes_it_count() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = Arc::new(Identity::generate());
    // The real network's rules: every fresh host is probationary.
    let coord = coordinator(&tmp.path().join("c"), |cfg| {
        cfg.admin_keys = vec![admin.id()];
    })
    .await;
    let url = coord.url();
    let liar = Arc::new(Identity::generate());
    from(&url, &liar, ip(127, 0, 13, 1))
        .heartbeat(&heartbeat("127.0.13.1", 4000))
        .await
        .unwrap();
    // Three fresh keys, each its own daemon on its own network: the frame-up
    // of one person with several keys.
    let fresh: Vec<Arc<Identity>> = (0..3).map(|_| Arc::new(Identity::generate())).collect();
    for (i, f) in fresh.iter().enumerate() {
        let at = ip(127, 0, 14 + i as u8, 1);
        from(&url, f, at)
            .heartbeat(&heartbeat(&at.to_string(), 4000))
            .await
            .unwrap();
        let got = client(&url, f).hosts(&local_hosts_request()).await.unwrap();
        let entry = listed(&got.hosts, liar.id()).expect("the liar is listed");
        assert_eq!(entry.standing, Standing::Probationary);
        let ack = client(&url, f)
            .report(&report_against(liar.id(), "frame"))
            .await
            .unwrap();
        assert!(
            !ack.counted,
            "a probationary host never counts as a reporter"
        );
        assert_eq!(ack.distinct_reporters, 0);
        assert!(!ack.blacklisted);
    }
    let who = client(&url, &fresh[0]).whoami().await.unwrap();
    assert_eq!(who.daemons[0].standing, Standing::Probationary);
    assert!(!who.daemons[0].serves, "no challenge passed yet");

    // The operator vouches for two of them: their next reports count.
    for f in &fresh[..2] {
        let v = client(&url, &admin)
            .admin_vouch(f.id(), true)
            .await
            .unwrap();
        assert_eq!((v.vouched, v.standing), (true, Standing::Established));
    }
    let who = client(&url, &fresh[0]).whoami().await.unwrap();
    assert_eq!(who.daemons[0].standing, Standing::Established);
    let ack = client(&url, &fresh[0])
        .report(&report_against(liar.id(), "caught 1"))
        .await
        .unwrap();
    assert!(ack.counted);
    assert_eq!(ack.distinct_reporters, 1);
    let ack = client(&url, &fresh[1])
        .report(&report_against(liar.id(), "caught 2"))
        .await
        .unwrap();
    assert_eq!(ack.distinct_reporters, 2);
    assert!(ack.counted);
    assert!(!ack.blacklisted, "counted means adjudicated, not voted");
    // Only admins vouch, and only for hosts.
    let e = client(&url, &fresh[2])
        .admin_vouch(fresh[2].id(), true)
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "403 not_admin");
    let e = client(&url, &admin)
        .admin_vouch(admin.id(), true)
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), "404 not_a_host");
    coord.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_and_agreements_earn_standing_and_service() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp.path().join("c"), |cfg| {
        cfg.standing_rules = StandingRules {
            challenges: 2,
            agreements: 1,
            min_age_secs: 0,
        };
    })
    .await;
    let url = coord.url();
    let host = Arc::new(Identity::generate());
    let at = ip(127, 0, 40, 1);
    from(&url, &host, at)
        .heartbeat(&heartbeat(&at.to_string(), 4000))
        .await
        .unwrap();
    let daemon = async || client(&url, &host).whoami().await.unwrap().daemons[0].clone();
    assert_eq!(
        (daemon().await.standing, daemon().await.serves),
        (Standing::Probationary, false)
    );
    // The API the challenge jobs will call.
    let rec = coord
        .record_challenge(host.id(), true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.challenges_passed, 1);
    assert!(
        daemon().await.serves,
        "one challenge passed: proven service"
    );
    coord.record_challenge(host.id(), true).await.unwrap();
    assert_eq!(
        daemon().await.standing,
        Standing::Probationary,
        "no agreement yet"
    );
    coord.record_agreement(host.id()).await.unwrap();
    assert_eq!(daemon().await.standing, Standing::Established);
    assert_eq!(
        standing_listed(&url, &host, host.id()).await,
        Some(Standing::Established),
        "the host list follows at once"
    );
    // Two failures in a row: no longer serving (listing does not enforce it yet).
    coord.record_challenge(host.id(), false).await.unwrap();
    coord.record_challenge(host.id(), false).await.unwrap();
    assert!(!daemon().await.serves);
    assert!(standing_listed(&url, &host, host.id()).await.is_some());
    // Not a host: nothing to record.
    let stranger = Identity::generate().id();
    assert_eq!(coord.record_agreement(stranger).await.unwrap(), None);
    coord.shutdown();
}

/// The standing of `id` in a host list `as_who` gets from `url`.
async fn standing_listed(url: &str, as_who: &Arc<Identity>, id: IdentityId) -> Option<Standing> {
    let got = client(url, as_who)
        .hosts(&local_hosts_request())
        .await
        .ok()?;
    listed(&got.hosts, id).map(|h| h.standing)
}

#[test]
fn vouch_from_the_command_line_makes_a_host_established_and_lists_show_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("coord");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (h1, h2) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let coord = CoordinatorProcess::start(&data, NO_CHALLENGES);
    let url = coord.url.clone();
    let beat = |url: String| {
        let (h1, h2) = (h1.clone(), h2.clone());
        async move {
            for (who, at) in [(&h1, ip(127, 0, 21, 1)), (&h2, ip(127, 0, 22, 1))] {
                from(&url, who, at)
                    .heartbeat(&heartbeat(&at.to_string(), 4000))
                    .await
                    .unwrap();
            }
        }
    };
    rt.block_on(beat(url.clone()));
    assert_eq!(
        rt.block_on(standing_listed(&url, &h1, h2.id())),
        Some(Standing::Probationary)
    );
    let cli = |args: &[&str]| {
        let mut all = vec!["coordinator"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data", data.to_str().unwrap()]);
        run_dportage(tmp.path(), &all, &[])
    };
    let id2 = h2.id().to_string();
    let out = cli(&["vouch", &id2]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("established"), "{said}");
    // The running coordinator picks it up; lists and whoami show it.
    rt.block_on(wait_until_async(
        LIMIT,
        "the vouching to reach the host list",
        async || standing_listed(&url, &h1, h2.id()).await == Some(Standing::Established),
    ));
    let who = rt.block_on(client(&url, &h2).whoami()).unwrap();
    assert_eq!(who.daemons[0].standing, Standing::Established);
    assert_eq!(
        rt.block_on(standing_listed(&url, &h2, h1.id())),
        Some(Standing::Probationary),
        "only the vouched host"
    );
    // Vouching survives kill -9 and a restart.
    coord.kill9();
    let coord = CoordinatorProcess::start(&data, NO_CHALLENGES);
    let url = coord.url.clone();
    rt.block_on(beat(url.clone()));
    assert_eq!(
        rt.block_on(standing_listed(&url, &h1, h2.id())),
        Some(Standing::Established)
    );
    // Unvouched: earned again.
    let out = cli(&["unvouch", &id2]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    rt.block_on(wait_until_async(
        LIMIT,
        "the unvouching to reach the host list",
        async || standing_listed(&url, &h1, h2.id()).await == Some(Standing::Probationary),
    ));
    // A key that is not a host cannot be vouched for; a network that is not
    // blacklisted cannot be lifted.
    let out = cli(&["vouch", &Identity::generate().id().to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("not a host"),
        "{}",
        stderr_text(&out)
    );
    let out = cli(&["blacklist", "lift-network", "127.0.21.0/24"]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("not blacklisted"),
        "{}",
        stderr_text(&out)
    );
    let out = cli(&["blacklist", "lift-network", "not-a-network"]);
    assert!(!out.status.success());
    // --help documents the real network's defaults.
    let help = run_dportage(tmp.path(), &["coordinator", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for want in [
        "--establish-challenges",
        "[default: 30]",
        "[default: 200]",
        "[default: 14d]",
        "--new-hosts-per-network",
        "[default: 4/day]",
        "[default: 32/day]",
        "--network-strikes",
    ] {
        assert!(help.contains(want), "{want} missing from --help:\n{help}");
    }
    drop(coord);
}

#[test]
fn the_admin_cli_lifts_a_blacklisted_network() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("coord");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = Arc::new(Identity::generate());
    let admin_hex = admin.id().to_string();
    let mut args = [ESTABLISHED_AT_ONCE, NO_CHALLENGES].concat();
    args.extend_from_slice(&["--network-strikes", "1", "--admin-key", &admin_hex]);
    let coord = CoordinatorProcess::start(&data, &args);
    let url = coord.url.clone();
    let liar = Arc::new(Identity::generate());
    rt.block_on(async {
        from(&url, &liar, ip(127, 0, 31, 1))
            .heartbeat(&heartbeat("127.0.31.1", 4000))
            .await
            .unwrap();
        blacklist_by_admin(&url, &admin, liar.id()).await;
    });
    let cli = |args: &[&str]| {
        let mut all = vec!["coordinator", "blacklist"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data", data.to_str().unwrap()]);
        run_dportage(tmp.path(), &all, &[])
    };
    let out = cli(&["list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&liar.id().to_string()), "{listed}");
    assert!(listed.contains("127.0.31.1"), "the address: {listed}");
    assert!(listed.contains("127.0.31.0/24"), "the network: {listed}");
    let newcomer = Arc::new(Identity::generate());
    let e = rt
        .block_on(
            from(&url, &newcomer, ip(127, 0, 31, 9)).heartbeat(&heartbeat("127.0.31.9", 4000)),
        )
        .unwrap_err();
    assert_eq!(api_code(&e), "403 blacklisted");
    let out = cli(&["lift-network", "127.0.31.0/24"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    // Polled with fresh keys: a refused heartbeat still spends its key's quota.
    rt.block_on(wait_until_async(
        LIMIT,
        "the lift to take effect",
        async || {
            from(&url, &Arc::new(Identity::generate()), ip(127, 0, 31, 9))
                .heartbeat(&heartbeat("127.0.31.9", 4000))
                .await
                .is_ok()
        },
    ));
    drop(coord);
}
