//! The client trusts no unsigned list: `dportage` pins the coordinator's key
//! at first contact and refuses a list signed by another key; the client
//! draws a verified job's hosts only from a signed list that checks out, and
//! compiles locally (never on the listed hosts) when the list was altered.

use std::fs;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::client::ClientEnv;
use crate::support::network::*;
use crate::support::*;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::Identity;
use dportage::trust::standing::StandingRules;

const HELLO: &str = "int twice(int x) { return 2 * x; }\n";

#[test]
fn only_a_signed_list_under_the_pinned_key_is_used() {
    let test = "only_a_signed_list_under_the_pinned_key_is_used";
    if !require_distcc(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = crate::support::network::runtime();
    // Hosts established at their first heartbeat (two probationary hosts
    // would never be paired).
    let mut cfg = CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("coord"));
    cfg.standing_rules = StandingRules::AT_ONCE;
    let coord: Coordinator = rt.block_on(Coordinator::bind(cfg)).unwrap();
    let url = coord.url();
    let hosts = [
        DistccdOptions::new(Ipv4Addr::new(127, 0, 0, 71), "127.0.0.0/8")
            .jobs(2)
            .log_level("info")
            .start(),
        DistccdOptions::new(Ipv4Addr::new(127, 0, 0, 72), "127.0.0.0/8")
            .jobs(2)
            .log_level("info")
            .start(),
    ];
    let world = ClientEnv::new("");
    // The member shares the first owner's DPORTAGE_DIR (one identity).
    let dirs = [world.dportage_dir(), tmp.path().join("owner-2")];
    let mut owners = Vec::new();
    for (d, dir) in hosts.iter().zip(&dirs) {
        let identity = Arc::new(Identity::load_or_create(dir).unwrap());
        rt.block_on(
            client(&url, &identity).heartbeat(&heartbeat(&d.addr.ip().to_string(), d.addr.port())),
        )
        .unwrap();
        owners.push(identity);
    }
    // Challenges are on: the real distccds are listed once they pass one.
    wait_serving(&rt, &url, &owners);

    // First contact pins the key and says so.
    let out = run_dportage(&dirs[0], &["--coordinator", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pinned coordinator"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let mut world = world;
    world.take_environment(&vars);
    let list_path = vars
        .iter()
        .find(|(k, _)| k == "DPORTAGE_HOST_LIST")
        .unwrap()
        .1
        .clone();
    world.set("DPORTAGE_SPOTCHECK", "0");
    world.set("DISTCC_BACKOFF_PERIOD", "0");
    world.write("twice.c", HELLO);
    world.reference(&["gcc", "-O2", "-c", "twice.c", "-o", "local.o"]);

    // The signed list checks out: both hosts compile the job.
    let before: usize = hosts.iter().map(Distccd::compile_ok_count).sum();
    let out = world.distcc(&["gcc", "-O2", "-c", "twice.c", "-o", "remote.o"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(world.read("remote.o"), world.read("local.o"));
    wait_until(Duration::from_secs(20), "both hosts to log the job", || {
        hosts.iter().map(Distccd::compile_ok_count).sum::<usize>() >= before + 2
    });

    // Someone alters the list on disk (here: to a redundancy of one): the
    // signature no longer verifies, so the job is compiled here, and the
    // hosts see nothing.
    let signed = fs::read_to_string(&list_path).unwrap();
    let altered = signed.replace("\\\"redundancy\\\":2", "\\\"redundancy\\\":1");
    assert_ne!(altered, signed, "the list names its redundancy");
    fs::write(&list_path, altered).unwrap();
    let before: usize = hosts.iter().map(Distccd::compile_ok_count).sum();
    let out = world.distcc(&["gcc", "-O2", "-c", "twice.c", "-o", "here.o"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not using the network's hosts"), "{stderr}");
    assert!(stderr.contains("altered"), "{stderr}");
    assert_eq!(world.read("here.o"), world.read("local.o"));
    let out = world.distcc(&["gcc", "-O2", "-c", "twice.c", "-o", "here2.o"]);
    assert!(out.status.success());
    // A compile that reached a host would be logged before the client ends.
    assert_eq!(
        hosts.iter().map(Distccd::compile_ok_count).sum::<usize>(),
        before,
        "a host got a job from an altered list"
    );

    // Another key claims to be the coordinator: `dportage` refuses it (at the
    // key it presents, before asking for a list).
    let pins = dirs[0].join("coordinator-keys.json");
    let text = fs::read_to_string(&pins).unwrap();
    let real = coord_key_in(&text);
    let fake = Identity::generate().id().to_string();
    fs::write(&pins, text.replace(&real, &fake)).unwrap();
    let out = run_dportage(&dirs[0], &["--coordinator", &url], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not the coordinator you meant"), "{stderr}");
    assert!(stderr.contains(&fake) && stderr.contains(&real), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing to eval");
    drop(coord);
}

/// The one key pinned in a `coordinator-keys.json`.
fn coord_key_in(pins: &str) -> String {
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(pins).unwrap();
    assert_eq!(map.len(), 1, "{pins}");
    map.into_values().next().unwrap()
}
