//! The result cache's coordinator side (issue 16) over real sockets: a real
//! `dportage coordinator` process takes signed claims from host identities
//! (heartbeating from 127.0.x.1, so each /24 is its own network), makes an
//! entry only when two established hosts of distinct owners and networks
//! agree, answers members' lookups with a signed answer naming live holders
//! and tickets, and decides a dispute by re-running the evidence on real
//! referees (distccd 3.4 and `dportage serve`): a wrong entry is withdrawn
//! and its witnesses struck.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::dual::CompileHost;
use crate::support::network::{
    client, coordinator_key, coordinator_metric_line, disputed_job, local_toolchains,
    CoordinatorProcess, Listening, ESTABLISHED_AT_ONCE, NO_CHALLENGES,
};
use crate::support::{wait_until_async, Distccd, DportageServer};
use dportage::network::cache_api::{
    CacheAnswer, CacheClaim, CacheClaims, CacheClaimsAck, CacheDispute, CacheDisputeAck,
    CacheLookup, CacheWithdrawnQuery, CacheWithdrawnResponse, SignedCacheAnswer, CLAIMS_PATH,
    DISPUTE_PATH, LOOKUP_PATH, WITHDRAWN_PATH,
};
use dportage::network::ticket::Ticket;
use dportage::network::{unix_now, CoordinatorClient, Identity, NetworkError};
use dportage::trust::cache_entry::CacheKey;

/// A host identity heartbeating from `ip` (its network), advertising a
/// port there that accepts TCP.
struct Host {
    id: Arc<Identity>,
    ip: Ipv4Addr,
    _port: Listening,
}

impl Host {
    async fn start(url: &str, ip: Ipv4Addr) -> Host {
        let h = Host {
            id: Arc::new(Identity::generate()),
            ip,
            _port: Listening::on(ip),
        };
        h.heartbeat(url).await;
        h
    }

    fn client(&self, url: &str) -> CoordinatorClient {
        client(url, &self.id).with_source_ip(self.ip.into())
    }

    async fn heartbeat(&self, url: &str) {
        let mut hb = self._port.heartbeat();
        hb.tickets = true;
        self.client(url).heartbeat(&hb).await.unwrap();
    }

    async fn claim(&self, url: &str, key: &str, result: &str) -> CacheClaimsAck {
        let body = CacheClaims {
            claims: vec![CacheClaim {
                key: key.to_string(),
                toolchain: toolchain(),
                result: result.to_string(),
                bytes: 1000,
            }],
        };
        self.client(url)
            .call("POST", CLAIMS_PATH, serde_json::to_vec(&body).unwrap())
            .await
            .unwrap()
    }
}

fn toolchain() -> String {
    local_toolchains()[0].id.clone()
}

fn hash(c: char) -> String {
    c.to_string().repeat(64)
}

fn api_code(e: &NetworkError) -> String {
    match e {
        NetworkError::Api { code, status, .. } => format!("{status} {code}"),
        other => format!("not an API error: {other}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn coordinator(tmp: &tempfile::TempDir, extra: &[&str]) -> CoordinatorProcess {
    let mut flags = NO_CHALLENGES.to_vec();
    flags.extend([
        "--new-hosts-per-network",
        "0",
        "--new-hosts-per-wide-network",
        "0",
        "--requests-per-key",
        "6000",
    ]);
    flags.extend_from_slice(extra);
    CoordinatorProcess::start(&tmp.path().join("c"), &flags)
}

async fn lookup(url: &str, member: &Arc<Identity>, key: &str) -> Result<CacheAnswer, String> {
    let signed: SignedCacheAnswer = client(url, member)
        .call(
            "POST",
            LOOKUP_PATH,
            serde_json::to_vec(&CacheLookup {
                key: key.to_string(),
            })
            .unwrap(),
        )
        .await
        .map_err(|e| api_code(&e))?;
    let pinned = coordinator_key(url).await;
    Ok(signed
        .open(&pinned, key, &member.id(), unix_now())
        .expect("a lookup answer verifies under the coordinator's key"))
}

async fn withdrawn(url: &str, member: &Arc<Identity>, keys: &[String]) -> CacheWithdrawnResponse {
    let q = CacheWithdrawnQuery {
        keys: keys.to_vec(),
    };
    client(url, member)
        .call("POST", WITHDRAWN_PATH, serde_json::to_vec(&q).unwrap())
        .await
        .unwrap()
}

async fn dispute(
    url: &str,
    member: &Arc<Identity>,
    d: &CacheDispute,
) -> Result<CacheDisputeAck, NetworkError> {
    client(url, member)
        .call("POST", DISPUTE_PATH, serde_json::to_vec(d).unwrap())
        .await
}

#[test]
fn two_unrelated_established_hosts_make_an_entry_members_look_up() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp, ESTABLISHED_AT_ONCE);
    let url = coord.url.clone();
    rt().block_on(async {
        let a = Host::start(&url, Ipv4Addr::new(127, 0, 41, 1)).await;
        let b = Host::start(&url, Ipv4Addr::new(127, 0, 42, 1)).await;
        let member = Host::start(&url, Ipv4Addr::new(127, 0, 43, 1)).await;
        let key = hash('1');
        let result = hash('2');

        let ack = a.claim(&url, &key, &result).await;
        assert_eq!((ack.accepted, ack.entries_made), (1, 0));
        assert!(lookup(&url, &member.id, &key)
            .await
            .unwrap()
            .entry
            .is_none());
        let ack = b.claim(&url, &key, &result).await;
        assert_eq!((ack.accepted, ack.entries_made), (1, 1));

        let answer = lookup(&url, &member.id, &key).await.unwrap();
        let entry = answer.entry.expect("an entry");
        assert_eq!(entry.result, result);
        let mut holders: Vec<String> = entry.holders.iter().map(|h| h.id.to_string()).collect();
        holders.sort();
        let mut want = vec![a.id.id().to_string(), b.id.id().to_string()];
        want.sort();
        assert_eq!(holders, want);
        let coord_key = coordinator_key(&url).await;
        for h in &entry.holders {
            let ticket = Ticket::from_hex(h.ticket.as_deref().expect("a ticket")).unwrap();
            assert_eq!(ticket.member, member.id.id());
            ticket.verify(&coord_key, &h.id, unix_now()).unwrap();
            assert_eq!(
                h.host,
                if h.id == a.id.id() {
                    "127.0.41.1"
                } else {
                    "127.0.42.1"
                }
            );
        }

        // A conflicting claim is counted and changes nothing.
        let c = Host::start(&url, Ipv4Addr::new(127, 0, 44, 1)).await;
        c.claim(&url, &key, &hash('3')).await;
        let entry = lookup(&url, &member.id, &key).await.unwrap().entry.unwrap();
        assert_eq!(entry.result, result);
        assert_eq!(entry.holders.len(), 2);

        // Non-members get nothing, not even a miss.
        let stranger = Arc::new(Identity::generate());
        assert_eq!(
            lookup(&url, &stranger, &key).await.unwrap_err(),
            "403 not_member"
        );
        assert!(lookup(&url, &member.id, &hash('9'))
            .await
            .unwrap()
            .entry
            .is_none());

        for (line, want) in [
            ("dportage_cache_entries ", " 1"),
            ("dportage_cache_conflicts_total ", " 1"),
            ("dportage_cache_hits_total ", " 2"),
            ("dportage_cache_lookups_total ", " 4"),
        ] {
            let got = coordinator_metric_line(&url, line).await;
            assert!(got.ends_with(want), "{got:?}");
        }
        let detail: serde_json::Value = client(&url, &member.id)
            .call("GET", "/v1/status", Vec::new())
            .await
            .unwrap();
        assert_eq!(detail["cache"]["entries"], 1);
        assert_eq!(detail["cache"]["hits"], 2);
    });
    // The entry survives a restart.
    let data = coord.data.clone();
    coord.kill9();
    let again = CoordinatorProcess::start(&data, &[NO_CHALLENGES, ESTABLISHED_AT_ONCE].concat());
    rt().block_on(async {
        let line = coordinator_metric_line(&again.url, "dportage_cache_entries ").await;
        assert!(line.ends_with(" 1"), "{line:?}");
    });
}

#[test]
fn one_host_or_related_hosts_make_no_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp, ESTABLISHED_AT_ONCE);
    let url = coord.url.clone();
    rt().block_on(async {
        let a = Host::start(&url, Ipv4Addr::new(127, 0, 51, 1)).await;
        let member = Host::start(&url, Ipv4Addr::new(127, 0, 59, 1)).await;
        let same_net = Host::start(&url, Ipv4Addr::new(127, 0, 51, 2)).await;
        // Another host of the same owner: one person linked to both.
        let same_owner = Host::start(&url, Ipv4Addr::new(127, 0, 52, 1)).await;
        let person = Arc::new(Identity::generate());
        for h in [&a, &same_owner] {
            let token = h.id.membership_token(unix_now());
            assert!(client(&url, &person).link(&token).await.unwrap().member);
        }
        // One host, however often it says so.
        for _ in 0..3 {
            let ack = a.claim(&url, &hash('a'), &hash('b')).await;
            assert_eq!(ack.entries_made, 0);
        }
        // Each related pair on a key of its own (the other pair,
        // `same_net` and `same_owner`, is unrelated).
        for (key, related) in [(hash('a'), &same_net), (hash('f'), &same_owner)] {
            assert_eq!(a.claim(&url, &key, &hash('b')).await.entries_made, 0);
            let ack = related.claim(&url, &key, &hash('b')).await;
            assert_eq!(ack.entries_made, 0);
        }
        assert!(lookup(&url, &member.id, &hash('a'))
            .await
            .unwrap()
            .entry
            .is_none());
        let line = coordinator_metric_line(&url, "dportage_cache_pending_claims ").await;
        assert!(line.ends_with(" 4"), "{line:?}");
        // An unrelated host settles it.
        let other = Host::start(&url, Ipv4Addr::new(127, 0, 53, 1)).await;
        assert_eq!(
            other.claim(&url, &hash('a'), &hash('b')).await.entries_made,
            1
        );
        // A member's identity that is not a host cannot claim.
        let person_claim = client(&url, &person)
            .call::<CacheClaimsAck>(
                "POST",
                CLAIMS_PATH,
                serde_json::to_vec(&CacheClaims { claims: vec![] }).unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(api_code(&person_claim), "403 not_a_host");
    });
}

#[test]
fn a_probationary_host_does_not_count() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = Arc::new(Identity::generate());
    let admin_hex = admin.id().to_string();
    let coord = coordinator(&tmp, &["--admin-key", &admin_hex]);
    let url = coord.url.clone();
    rt().block_on(async {
        let a = Host::start(&url, Ipv4Addr::new(127, 0, 61, 1)).await;
        let b = Host::start(&url, Ipv4Addr::new(127, 0, 62, 1)).await;
        let member = Host::start(&url, Ipv4Addr::new(127, 0, 63, 1)).await;
        client(&url, &admin)
            .admin_vouch(a.id.id(), true)
            .await
            .unwrap();
        assert_eq!(a.claim(&url, &hash('c'), &hash('d')).await.entries_made, 0);
        assert_eq!(b.claim(&url, &hash('c'), &hash('d')).await.entries_made, 0);
        assert!(lookup(&url, &member.id, &hash('c'))
            .await
            .unwrap()
            .entry
            .is_none());
        // Once established, its next claim counts.
        client(&url, &admin)
            .admin_vouch(b.id.id(), true)
            .await
            .unwrap();
        assert_eq!(b.claim(&url, &hash('c'), &hash('d')).await.entries_made, 1);
    });
}

#[test]
fn a_dispute_must_name_its_own_key() {
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(&tmp, ESTABLISHED_AT_ONCE);
    let url = coord.url.clone();
    rt().block_on(async {
        let member = Host::start(&url, Ipv4Addr::new(127, 0, 71, 1)).await;
        let job = disputed_job(31);
        let d = CacheDispute {
            key: hash('e'),
            toolchain: toolchain(),
            args: job.argv.clone(),
            input_hash: job.input_hash(),
            result: job.honest.clone(),
            time: unix_now(),
        };
        let e = dispute(&url, &member.id, &d).await.unwrap_err();
        assert_eq!(api_code(&e), "400 key_mismatch");
        // The right key of a job without an entry: nothing to decide.
        let mut input = [0u8; 32];
        hex::decode_to_slice(job.input_hash(), &mut input).unwrap();
        let key = CacheKey::of(&toolchain(), &job.argv, &input).to_hex();
        let ack = dispute(&url, &member.id, &CacheDispute { key, ..d.clone() })
            .await
            .unwrap();
        assert!(!ack.evidence_wanted && !ack.withdrawn, "{ack:?}");
        // Non-members may not dispute.
        let stranger = Arc::new(Identity::generate());
        let e = dispute(&url, &stranger, &d).await.unwrap_err();
        assert_eq!(api_code(&e), "403 not_member");
    });
}

/// A network for a dispute: a coordinator needing two unanimous referees,
/// two real referees (distccd 3.4 and `dportage serve`), two witnesses that
/// made an entry of `entry_result` for `job`'s key, and a member.
struct Disputed {
    coord: CoordinatorProcess,
    _tmp: tempfile::TempDir,
    _referees: (Distccd, DportageServer),
    _referee_ids: Vec<Arc<Identity>>,
    witnesses: [Host; 2],
    member: Host,
    key: String,
}

fn disputed(
    test: &str,
    net: u8,
    job: &crate::support::network::Job,
    entry_result: &str,
) -> Option<Disputed> {
    if !Distccd::require(test) || !DportageServer::require(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let coord = coordinator(
        &tmp,
        &[
            ESTABLISHED_AT_ONCE,
            &["--referees", "2", "--referees-any-network"],
        ]
        .concat(),
    );
    let url = coord.url.clone();
    let ip = |n: u8| Ipv4Addr::new(127, net, n, 1);
    let referees = (
        <Distccd as CompileHost>::start(ip(1)),
        <DportageServer as CompileHost>::start(ip(2)),
    );
    let mut input = [0u8; 32];
    hex::decode_to_slice(job.input_hash(), &mut input).unwrap();
    let key = CacheKey::of(&toolchain(), &job.argv, &input).to_hex();
    rt().block_on(async {
        let mut referee_ids = Vec::new();
        for (addr, n) in [(referees.0.addr(), 1), (referees.1.addr(), 2)] {
            let id = Arc::new(Identity::generate());
            client(&url, &id)
                .with_source_ip(ip(n).into())
                .heartbeat(&crate::support::network::heartbeat(
                    &addr.ip().to_string(),
                    addr.port(),
                ))
                .await
                .unwrap();
            referee_ids.push(id);
        }
        let w1 = Host::start(&url, ip(3)).await;
        let w2 = Host::start(&url, ip(4)).await;
        w1.claim(&url, &key, entry_result).await;
        assert_eq!(w2.claim(&url, &key, entry_result).await.entries_made, 1);
        let member = Host::start(&url, ip(5)).await;
        Some(Disputed {
            coord,
            _tmp: tmp,
            _referees: referees,
            _referee_ids: referee_ids,
            witnesses: [w1, w2],
            member,
            key,
        })
    })
}

impl Disputed {
    fn dispute(&self, job: &crate::support::network::Job, result: &str) -> CacheDispute {
        CacheDispute {
            key: self.key.clone(),
            toolchain: toolchain(),
            args: job.argv.clone(),
            input_hash: job.input_hash(),
            result: result.to_string(),
            time: unix_now(),
        }
    }
}

#[test]
fn a_wrong_entry_is_withdrawn_by_adjudication_and_its_witnesses_struck() {
    let job = disputed_job(32);
    let wrong = "ab".repeat(32);
    let Some(net) = disputed(
        "a_wrong_entry_is_withdrawn_by_adjudication_and_its_witnesses_struck",
        81,
        &job,
        &wrong,
    ) else {
        return;
    };
    let (url, key, member) = (net.coord.url.clone(), net.key.clone(), &net.member);
    let [w1, w2] = &net.witnesses;
    rt().block_on(async {
        let entry = lookup(&url, &member.id, &key).await.unwrap().entry.unwrap();
        assert_eq!(entry.result, wrong);

        // The member's spot check got the honest result.
        let d = net.dispute(&job, &job.honest);
        // A dispute agreeing with the entry asks for nothing.
        let ack = dispute(&url, &member.id, &net.dispute(&job, &wrong))
            .await
            .unwrap();
        assert!(!ack.evidence_wanted, "{ack:?}");
        let ack = dispute(&url, &member.id, &d).await.unwrap();
        assert!(ack.evidence_wanted && !ack.withdrawn, "{ack:?}");
        let stored = client(&url, &member.id)
            .upload_evidence(&d.input_hash, job.evidence())
            .await
            .unwrap();
        assert!(stored.stored);

        wait_until_async(
            Duration::from_secs(60),
            "the entry to be withdrawn",
            async || {
                !withdrawn(&url, &member.id, std::slice::from_ref(&key))
                    .await
                    .withdrawn
                    .is_empty()
            },
        )
        .await;
        let w = withdrawn(&url, &member.id, &[key.clone(), hash('0')]).await;
        assert_eq!(w.withdrawn.len(), 1);
        assert_eq!(w.withdrawn[0].key, key);
        assert_eq!(w.withdrawn[0].result, wrong);
        assert!(lookup(&url, &member.id, &key)
            .await
            .unwrap()
            .entry
            .is_none());
        let asker = client(&url, &member.id);
        let mut black: Vec<String> = crate::support::network::blacklisted_ids(&asker)
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        black.sort();
        let mut want = vec![w1.id.id().to_string(), w2.id.id().to_string()];
        want.sort();
        assert_eq!(black, want, "both witnesses, nobody else");
        // Decided: disputing again changes nothing.
        let ack = dispute(&url, &member.id, &d).await.unwrap();
        assert!(ack.withdrawn && !ack.evidence_wanted, "{ack:?}");
        let line =
            coordinator_metric_line(&url, "dportage_cache_disputes_total{outcome=\"upheld\"}")
                .await;
        assert!(line.ends_with(" 1"), "{line:?}");
    });
}

#[test]
fn a_right_entry_stays_when_referees_agree_with_it() {
    let job = disputed_job(33);
    let Some(net) = disputed(
        "a_right_entry_stays_when_referees_agree_with_it",
        91,
        &job,
        &job.honest,
    ) else {
        return;
    };
    let (url, key, member) = (net.coord.url.clone(), net.key.clone(), &net.member);
    rt().block_on(async {
        // A lying member disputes a right entry.
        let d = net.dispute(&job, &"cd".repeat(32));
        let ack = dispute(&url, &member.id, &d).await.unwrap();
        assert!(ack.evidence_wanted, "{ack:?}");
        client(&url, &member.id)
            .upload_evidence(&d.input_hash, job.evidence())
            .await
            .unwrap();
        wait_until_async(
            Duration::from_secs(60),
            "the dispute to be rejected",
            async || {
                coordinator_metric_line(&url, "dportage_cache_disputes_total{outcome=\"rejected\"}")
                    .await
                    .ends_with(" 1")
            },
        )
        .await;
        let entry = lookup(&url, &member.id, &key).await.unwrap().entry.unwrap();
        assert_eq!(entry.result, job.honest);
        assert_eq!(entry.holders.len(), 2);
        assert!(withdrawn(&url, &member.id, std::slice::from_ref(&key))
            .await
            .withdrawn
            .is_empty());
        let asker = client(&url, &member.id);
        assert!(crate::support::network::blacklisted_ids(&asker)
            .await
            .is_empty());
        // Decided: the same dispute is not taken again.
        let ack = dispute(&url, &member.id, &d).await.unwrap();
        assert!(!ack.evidence_wanted && !ack.withdrawn, "{ack:?}");
    });
}
