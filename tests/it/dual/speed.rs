//! Host speed learned between jobs (`$DPORTAGE_DIR/speed.json`): a host that
//! lagged is asked last by the next compiles, each its own process, so a slow
//! host costs a build a hedge or two instead of one per job.

use std::time::Duration;

use dportage::trust::speed::SpeedBook;

use crate::support::client::ClientEnv;
use crate::support::dual::*;
use crate::support::*;

const SOURCE: &str = "int twice(int x) { return 2 * x; }\n";

fn book(env: &ClientEnv) -> SpeedBook {
    let path = env.dportage_dir().join("speed.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

/// Three real `dportage serve` hosts, the first in the list behind a proxy
/// that makes every job about 2.4 s slower. The first compile asks it (list
/// order, nothing known yet) and hedges it; every later compile (a new
/// process each) asks the two fast hosts and needs no hedge, and the record
/// says why.
#[test]
fn a_slow_host_is_hedged_once_then_asked_last() {
    if !require_masquerade_dir("a_slow_host_is_hedged_once_then_asked_last") {
        return;
    }
    let slow_host = DportageServer::at(ip("127.0.0.2"));
    let fast_a = DportageServer::at(ip("127.0.0.3"));
    let fast_b = DportageServer::at(ip("127.0.0.4"));
    let slow = SlowProxy::start(ip("127.0.0.5"), slow_host.addr, Duration::from_millis(600));
    let mut env = ClientEnv::dual(&[slow.hostspec(), fast_a.hostspec(), fast_b.hostspec()]);
    env.set("DISTCC_VERBOSE", "1");
    // Hedge soon after the first vote, so the test does not wait for the
    // slow host however loaded the machine is.
    env.set("DPORTAGE_HEDGE_MS", "800");
    env.write("x.c", SOURCE);
    env.reference(&["gcc", "-O2", "-c", "x.c", "-o", "ref.o"]);

    let first = env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x.o"]);
    assert_success(&first, "first compile");
    assert_eq!(env.read("x.o"), env.read("ref.o"));
    let hedges = hedge_lines(&first);
    assert_eq!(hedges.len(), 1, "{}", stderr_text(&first));
    assert!(hedges[0].contains(&slow.hostspec()), "{}", hedges[0]);
    let after_first = book(&env);
    let slow_entry = &after_first.hosts[&slow.hostspec()];
    assert_eq!((slow_entry.jobs, slow_entry.hedges), (1, 1));

    let later = 4;
    for n in 0..later {
        std::fs::remove_file(env.work().join("x.o")).unwrap();
        let out = env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x.o"]);
        assert_success(&out, &format!("compile {}", n + 2));
        assert_eq!(env.read("x.o"), env.read("ref.o"));
        assert!(
            hedge_lines(&out).is_empty(),
            "compile {} hedged again: {}",
            n + 2,
            stderr_text(&out)
        );
        assert!(
            !stderr_text(&out).contains(&format!("sending x.c to {}", slow.hostspec())),
            "compile {} asked the slow host: {}",
            n + 2,
            stderr_text(&out)
        );
    }
    let after = book(&env);
    let slow_entry = &after.hosts[&slow.hostspec()];
    assert_eq!(
        (slow_entry.jobs, slow_entry.hedges),
        (1, 1),
        "the slow host was not asked again: {after:?}"
    );
    for fast in [&fast_a, &fast_b] {
        let entry = &after.hosts[&fast.hostspec()];
        assert_eq!(entry.jobs, 1 + later, "{after:?}");
        assert_eq!(entry.hedges, 0, "{after:?}");
        assert!(entry.secs_per_job.unwrap() < slow_entry.secs_per_job.unwrap());
    }
    // Both fast hosts answered every later job.
    fast_a.wait_for_compile_ok(1 + later as usize);
    fast_b.wait_for_compile_ok(1 + later as usize);
}

/// A speed record that is not one (a crash, an edit) does not stop a build:
/// it is replaced by what this job learned.
#[test]
fn a_corrupt_record_is_a_fresh_start() {
    if !require_masquerade_dir("a_corrupt_record_is_a_fresh_start") {
        return;
    }
    let a = DportageServer::at(ip("127.0.0.2"));
    let b = DportageServer::at(ip("127.0.0.3"));
    let env = ClientEnv::dual(&[a.hostspec(), b.hostspec()]);
    std::fs::write(env.dportage_dir().join("speed.json"), b"\0\0 not json").unwrap();
    env.write("x.c", SOURCE);
    let out = env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "compile over a corrupt speed record");
    let after = book(&env);
    assert_eq!(after.hosts.len(), 2, "{after:?}");
    assert!(after.hosts.values().all(|h| h.jobs == 1 && h.hedges == 0));
}
