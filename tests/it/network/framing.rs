//! The attack that opened issue 12, end to end on loopback with real daemons,
//! real gcc, a real coordinator process and lying proxies: one person with
//! two keys runs two colluding liars in two different /24s and tries to
//! frame an honest host, first by claiming the honest host returned garbage,
//! then by outvoting it ("our object is the right one"). The honest host
//! stays listed, the liars end up blacklisted (the coordinator saw them lie
//! itself), and an honest member's objects are all right before and after.
//! A daemon advertising a dead address gets no hosts, and a blacklisted
//! host's address takes no new key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::client::ClientEnv;
use crate::support::dual::{CompileHost, Liar};
use crate::support::network::*;
use crate::support::*;
use dportage::network::api::{HostResultHash, MismatchReport};
use dportage::network::{CoordinatorClient, Identity, IdentityId, NetworkError};
use dportage::trust::standing::Standing;

const LIMIT: Duration = Duration::from_secs(90);

/// What the liars lie about: jobs whose input carries it (the attacker's own
/// framing jobs). Every other job, challenges included, they serve honestly,
/// as a patient attacker's hosts would.
const TARGET: &str = "frame_the_honest_host";

struct Host {
    owner: Arc<Identity>,
    dir: std::path::PathBuf,
    ip: Ipv4Addr,
    port: u16,
}

impl Host {
    fn new(tmp: &Path, name: &str, ip: Ipv4Addr, port: u16) -> Host {
        let dir = tmp.join(name);
        let owner = Arc::new(Identity::load_or_create(&dir).unwrap());
        Host {
            owner,
            dir,
            ip,
            port,
        }
    }

    fn at(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn id(&self) -> IdentityId {
        self.owner.id()
    }

    /// Its owner's client, connecting from the host's own address.
    fn client(&self, url: &str) -> CoordinatorClient {
        client(url, &self.owner).with_source_ip(IpAddr::V4(self.ip))
    }
}

/// A real `dportage serve` on `ip`, with its stats page (to count compiles).
fn server(ip: Ipv4Addr) -> DportageServer {
    crate::support::serve::ServeOptions::new()
        .at(ip)
        .args(&["--allow", "127.0.0.0/8", "--jobs", "2"])
        .stats(true)
        .start()
}

/// Compiles the servers did, so far.
fn compiled(servers: &[&DportageServer]) -> u64 {
    servers.iter().map(|s| s.counter("dcc_compile_ok")).sum()
}

fn api_code(e: &NetworkError) -> String {
    match e {
        NetworkError::Api { code, status, .. } => format!("{status} {code}"),
        other => format!("not an API error: {other}"),
    }
}

/// A report against `accused` claiming it returned `accused_hash` while the
/// `side` hosts returned `side_hash`.
fn report(
    job: &Job,
    accused: &Host,
    accused_hash: &str,
    side: &[&Host],
    side_hash: &str,
) -> MismatchReport {
    let mut results = vec![HostResultHash {
        host: accused.at(),
        id: Some(accused.id()),
        hash: accused_hash.to_string(),
    }];
    results.extend(side.iter().map(|h| HostResultHash {
        host: h.at(),
        id: Some(h.id()),
        hash: side_hash.to_string(),
    }));
    MismatchReport {
        host_id: Some(accused.id()),
        host_addr: accused.at(),
        input_hash: job.input_hash(),
        args: job.argv.clone(),
        results,
        time: 1,
        evidence_id: None,
        toolchain: Some(local_toolchains()[0].id.clone()),
    }
}

/// `key` files `rep` (after asking for hosts, as a member does) and sends the
/// input when asked.
async fn file(url: &str, key: &Host, rep: &MismatchReport, job: &Job) {
    key.client(url).hosts(&local_hosts_request()).await.unwrap();
    let ack = key.client(url).report(rep).await.unwrap();
    assert!(ack.counted, "an established key's report counts: {ack:?}");
    assert!(!ack.blacklisted, "a report never blacklists: {ack:?}");
    if ack.evidence_wanted {
        let stored = key
            .client(url)
            .upload_evidence(&rep.input_hash, job.evidence())
            .await
            .unwrap();
        assert!(stored.stored);
    }
}

async fn blacklisted(url: &str, asker: &Host) -> Vec<IdentityId> {
    blacklisted_ids(&asker.client(url)).await
}

async fn adjudications(url: &str, ruling: &str) -> u64 {
    let name = format!("dportage_adjudications_total{{ruling=\"{ruling}\"}} ");
    coordinator_metric_line(url, &name)
        .await
        .strip_prefix(&name)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The honest member: `dportage --coordinator URL` as its owner, evaluated,
/// then `n` files compiled through the network and compared with this
/// machine's own objects. Returns the hosts the printed environment named.
fn member_builds(world: &mut ClientEnv, url: &str, round: &str, n: usize) -> String {
    let out = run_dportage(&world.dportage_dir(), &["--coordinator", url], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let vars = eval_in_sh(
        &String::from_utf8_lossy(&out.stdout),
        &[
            "DISTCC_HOSTS",
            "DPORTAGE_REDUNDANCY",
            "DPORTAGE_SPOTCHECK",
            "DPORTAGE_COORDINATOR",
            "DPORTAGE_HOST_LIST",
        ],
    );
    for (k, v) in &vars {
        world.set(k, v);
    }
    let hosts = vars
        .iter()
        .find(|(k, _)| k == "DISTCC_HOSTS")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    world.hosts = hosts.clone();
    world.set("DISTCC_BACKOFF_PERIOD", "0");
    for i in 0..n {
        let file = format!("{round}{i}.c");
        world.write(
            &file,
            &format!("int {round}_{i}(int x) {{ return x * {} + {i}; }}\n", i + 3),
        );
        let local = format!("{round}{i}.local.o");
        let remote = format!("{round}{i}.o");
        world.reference(&["gcc", "-O2", "-c", &file, "-o", &local]);
        let out = world.distcc(&["gcc", "-O2", "-c", &file, "-o", &remote]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            world.read(&remote),
            world.read(&local),
            "{file}: the member got a wrong object"
        );
    }
    hosts
}

#[test]
fn two_colluding_liars_cannot_frame_an_honest_host_and_are_caught() {
    let test = "two_colluding_liars_cannot_frame_an_honest_host_and_are_caught";
    if !DportageServer::require(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = crate::support::network::runtime();
    let admin = Arc::new(Identity::generate());
    let admin_hex = admin.id().to_string();
    // Standing is earned by one passed challenge here (a real network asks
    // for weeks): the attacker's hosts become established, so their reports
    // count and start adjudications. Two unanimous referees.
    let coord = CoordinatorProcess::start(
        &tmp.path().join("coord"),
        &[
            "--establish-challenges",
            "1",
            "--establish-agreements",
            "0",
            "--establish-age",
            "0s",
            "--referees",
            "2",
            "--admin-key",
            &admin_hex,
            "--requests-per-key",
            "6000",
        ],
    );
    let url = coord.url.clone();

    // Three honest hosts, each its own owner on its own /24; the operator
    // vouches for them (a new network's start).
    let honest_servers: Vec<DportageServer> = (0..3)
        .map(|i| server(Ipv4Addr::new(127, 0, 41 + i, 2)))
        .collect();
    let mut world = ClientEnv::new("");
    let honest: Vec<Host> = honest_servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ip = Ipv4Addr::new(127, 0, 41 + i as u8, 2);
            let mut h = Host::new(tmp.path(), &format!("honest-{i}"), ip, s.port);
            if i == 1 {
                // The member below is this host's owner.
                h.dir = world.dportage_dir();
                h.owner = Arc::new(Identity::load_or_create(&h.dir).unwrap());
            }
            h
        })
        .collect();
    rt.block_on(async {
        for h in &honest {
            h.client(&url)
                .heartbeat(&heartbeat(&h.ip.to_string(), h.port))
                .await
                .unwrap();
            let v = client(&url, &admin)
                .admin_vouch(h.id(), true)
                .await
                .unwrap();
            assert_eq!(v.standing, Standing::Established);
        }
    });

    // The attacker: two keys, two real daemons in two /24s, each behind a
    // proxy that lies about the attacker's target jobs only.
    let liar_servers: Vec<DportageServer> = (0..2)
        .map(|i| server(Ipv4Addr::new(127, 0, 44 + i, 3)))
        .collect();
    let proxies: Vec<Liar> = liar_servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Liar::start_targeted(
                Ipv4Addr::new(127, 0, 44 + i as u8, 2),
                s.addr(),
                "flip",
                Some(TARGET),
            )
        })
        .collect();
    let liars: Vec<Host> = proxies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Host::new(
                tmp.path(),
                &format!("liar-{i}"),
                Ipv4Addr::new(127, 0, 44 + i as u8, 2),
                p.addr.port(),
            )
        })
        .collect();
    // A daemon that advertises an address where nothing listens.
    let dead_ip = Ipv4Addr::new(127, 0, 46, 2);
    let dead = Host::new(tmp.path(), "dead", dead_ip, free_port_on(dead_ip));
    rt.block_on(async {
        for h in liars.iter().chain([&dead]) {
            h.client(&url)
                .heartbeat(&heartbeat(&h.ip.to_string(), h.port))
                .await
                .unwrap();
        }
    });
    // Every live host passes its registration challenge (the liars too:
    // challenges are not their target) and the liars earn standing.
    let serving: Vec<Arc<Identity>> = honest
        .iter()
        .chain(&liars)
        .map(|h| h.owner.clone())
        .collect();
    wait_serving(&rt, &url, &serving);
    rt.block_on(async {
        for l in &liars {
            let who = l.client(&url).whoami().await.unwrap();
            assert_eq!(who.daemons[0].standing, Standing::Established, "{who:?}");
        }
    });

    // The dead address: its owner is no member and gets no hosts.
    let out = run_dportage(&dead.dir, &["--coordinator", &url], &[]);
    assert!(!out.status.success(), "a dead address got hosts");
    assert!(out.stdout.is_empty(), "nothing to eval for a dead address");

    // The honest member builds with the liars in the pool, on the network
    // (each job on two hosts).
    let all: Vec<&DportageServer> = honest_servers.iter().chain(&liar_servers).collect();
    let before = compiled(&all);
    let listed = member_builds(&mut world, &url, "before", 4);
    assert!(compiled(&all) >= before + 8, "the member compiled locally");
    for h in honest.iter().chain(&liars) {
        if h.id() != honest[1].id() {
            assert!(listed.contains(&h.at()), "{} not listed: {listed}", h.at());
        }
    }

    let accused = &honest[0];
    rt.block_on(async {
        // 1. "The honest host returned garbage; our hosts returned the right
        //    object." The referees agree with the right object, but the
        //    accused returns it to the coordinator too: nobody is struck.
        let job = disputed_job_with(21, &format!("static const char tag[] = \"{TARGET}\";\n"));
        let rep = report(
            &job,
            accused,
            &"ab".repeat(32),
            &[&liars[0], &liars[1]],
            &job.honest,
        );
        file(&url, &liars[0], &rep, &job).await;
        file(&url, &liars[1], &rep, &job).await;
        wait_until_async(
            LIMIT,
            "the first framing to be ruled unconfirmed",
            async || adjudications(&url, "unconfirmed").await >= 1,
        )
        .await;
        assert!(blacklisted(&url, &honest[2]).await.is_empty());

        // 2. The attack: the two liars outvote the honest host and
        //    both keys report it. The referees and the accused give the
        //    coordinator the honest object, the liars give it their own.
        let job = disputed_job_with(22, &format!("static const char tag[] = \"{TARGET}\";\n"));
        let rep = report(
            &job,
            accused,
            &job.honest,
            &[&liars[0], &liars[1]],
            &"cd".repeat(32),
        );
        file(&url, &liars[0], &rep, &job).await;
        file(&url, &liars[1], &rep, &job).await;
        wait_until_async(LIMIT, "both liars to be blacklisted", async || {
            let b = blacklisted(&url, &honest[2]).await;
            liars.iter().all(|l| b.contains(&l.id()))
        })
        .await;
        let b = blacklisted(&url, &honest[2]).await;
        for h in &honest {
            assert!(!b.contains(&h.id()), "an honest host was struck: {b:?}");
        }
        assert!(adjudications(&url, "report_false").await >= 1);
        assert_eq!(adjudications(&url, "accused_wrong").await, 0);
    });

    // The honest host stays listed; the liars are gone; the member's objects
    // are all right.
    let before = compiled(&all);
    let listed = member_builds(&mut world, &url, "after", 3);
    assert!(compiled(&all) >= before + 6, "the member compiled locally");
    assert!(
        listed.contains(&accused.at()),
        "the framed host left: {listed}"
    );
    for l in &liars {
        assert!(
            !listed.contains(&l.at()),
            "a liar is still listed: {listed}"
        );
    }

    // A blacklisted host cannot come back under a new key at its address.
    let again = Host::new(tmp.path(), "liar-again", liars[0].ip, liars[0].port);
    let e = rt
        .block_on(
            again
                .client(&url)
                .heartbeat(&heartbeat(&again.ip.to_string(), again.port)),
        )
        .unwrap_err();
    assert_eq!(api_code(&e), "403 blacklisted");
    drop(proxies);
    drop(coord);
}
