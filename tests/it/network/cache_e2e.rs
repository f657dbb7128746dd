//! Issue 16's verified result cache end to end on loopback, with real
//! processes: a coordinator, five `dportage serve` network daemons on five
//! networks (members reach them with tickets only), two members on one
//! machine building the demo sample with `dportage make`, real gcc.
//!
//! * Member A builds: every job is verified by two hosts, which claim their
//!   results; a lone liar's earlier claim for one of the jobs makes no entry.
//! * Member B builds the same sources in another directory: every job is a
//!   hit, no host compiles anything, every object is the local build's.
//! * Two colluding hosts plant an entry for a new file (their stores serve
//!   the planted object). A, spot checks off, is served it; B, spot checking,
//!   is not: its hosts' verified result is written, the entry is disputed,
//!   the coordinator's referees re-run the evidence, the entry is withdrawn
//!   and both colluders blacklisted; `dportage cache audit` then tells A which
//!   object to rebuild.

use std::fs;
use std::process::Command;

use crate::support::cache_net::*;
use crate::support::client::run_ok;
use crate::support::network::*;
use crate::support::*;
use dportage::network::cache_api::CacheClaim;
use dportage::network::Identity;
use dportage::protocol::reply::Reply;
use dportage::protocol::ProtocolVersion;

/// The colluders' planted object.
const PLANTED: &[u8] = b"\x7fELF planted by two colluding hosts";
const EXTRA: &str = "int extra(int x) { return 7 * x + 1; }\n";

#[test]
fn a_member_builds_from_the_verified_cache_and_a_planted_entry_is_caught_and_withdrawn() {
    let net = CacheNet::start();
    let a = net.member("a");
    let b = net.member("b");
    // The local build the network must match, object for object.
    let reference = net.root.path().join("reference");
    write_project(&reference);
    fs::write(reference.join("extra.c"), EXTRA).unwrap();
    run_ok("make", &["-s", "-j4", "all", "extra.o"], &reference);

    // A lone liar claims a wrong result for main.c before anyone built it.
    let keys: Vec<(String, (String, String, String))> = sources()
        .into_iter()
        .map(|s| (s.clone(), a.key(&s)))
        .collect();
    let (_, (main_key, _, toolchain)) = keys.iter().find(|(s, _)| s == "main.c").unwrap();
    let lie = net.claim(
        4,
        CacheClaim {
            key: main_key.clone(),
            toolchain: toolchain.clone(),
            result: object_result(PLANTED),
            bytes: PLANTED.len() as u64,
        },
    );
    assert_eq!((lie.accepted, lie.entries_made), (1, 0), "one host's word");

    // A builds: every job verified by two hosts, which claim it.
    a.make("0");
    for s in sources() {
        let o = s.replace(".c", ".o");
        assert_eq!(
            fs::read(a.work.join(&o)).unwrap(),
            fs::read(reference.join(&o)).unwrap(),
            "A's {o} differs from the local build"
        );
    }
    for (source, (key, _, _)) in &keys {
        let o = source.replace(".c", ".o");
        let want = object_result(&fs::read(reference.join(&o)).unwrap());
        wait_until(LIMIT, format!("an entry for {source}"), || {
            a.lookup(&net.rt, key).is_some_and(|e| e.result == want)
        });
    }
    assert!(
        a.verdicts().iter().all(|v| v != "cache_hit"),
        "A's build had nothing to hit: {:?}",
        a.verdicts()
    );

    // B builds the same sources elsewhere: all hits, no compiles anywhere.
    let before = net.compiled();
    b.make("0");
    for s in sources() {
        let o = s.replace(".c", ".o");
        assert_eq!(
            fs::read(b.work.join(&o)).unwrap(),
            fs::read(reference.join(&o)).unwrap(),
            "B's {o} differs from the local build"
        );
    }
    let verdicts = b.verdicts();
    let hits = verdicts.iter().filter(|v| *v == "cache_hit").count();
    assert!(
        hits * 10 >= sources().len() * 9,
        "B's jobs: {verdicts:?} ({hits} hits of {})",
        sources().len()
    );
    assert_eq!(net.compiled(), before, "a host compiled something for B");

    // Two colluders plant an entry for extra.c, serving the planted object.
    for m in [&a, &b] {
        fs::write(m.work.join("extra.c"), EXTRA).unwrap();
    }
    let (x_key, _, toolchain) = a.key("extra.c");
    let bad = object_result(PLANTED);
    let reply = Reply {
        version: ProtocolVersion::V2,
        status: 0,
        stderr: Vec::new(),
        stdout: Vec::new(),
        object: PLANTED.to_vec(),
    }
    .encode();
    let mut made = 0;
    for colluder in [3, 4] {
        net.plant(colluder, &bad, &reply);
        let ack = net.claim(
            colluder,
            CacheClaim {
                key: x_key.clone(),
                toolchain: toolchain.clone(),
                result: bad.clone(),
                bytes: reply.len() as u64,
            },
        );
        made += ack.entries_made;
    }
    assert_eq!(
        made, 1,
        "two established hosts of two owners and networks agree"
    );

    // A, without spot checks, is served the planted object.
    let out = a.compile(&["DPORTAGE_SPOTCHECK=0"], "extra.c");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(a.work.join("extra.o")).unwrap(), PLANTED);

    // B spot-checks: the hosts' verified object is written, never the planted one.
    let out = b.compile(&["DPORTAGE_SPOTCHECK=1"], "extra.c");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(b.work.join("extra.o")).unwrap(),
        fs::read(reference.join("extra.o")).unwrap()
    );
    // The referees decide: withdrawn, both colluders blacklisted.
    wait_until(LIMIT, "the planted entry to be withdrawn", || {
        a.lookup(&net.rt, &x_key).is_none()
    });
    let asker = client(&net.url(), &a.identity);
    let colluders: Vec<_> = [3, 4]
        .iter()
        .map(|&i| Identity::load(&net.daemon_dirs[i]).unwrap().id())
        .collect();
    wait_until(LIMIT, "both colluders to be blacklisted", || {
        let listed = net.rt.block_on(blacklisted_ids(&asker));
        colluders.iter().all(|c| listed.contains(c))
    });
    let withdrawn = net
        .rt
        .block_on(asker.cache_withdrawn(vec![x_key.clone()]))
        .unwrap();
    assert_eq!(withdrawn.withdrawn.len(), 1);
    assert_eq!(withdrawn.withdrawn[0].result, bad);

    // A learns which object to rebuild.
    let audit = Command::new(dportage_bin())
        .args(["cache", "audit", "--delete"])
        .env("DPORTAGE_DIR", &a.dir)
        .env("DPORTAGE_COORDINATOR", net.url())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&a.work.join("extra.o").display().to_string()),
        "{said}"
    );
    assert!(!a.work.join("extra.o").exists(), "--delete removes it");
}
