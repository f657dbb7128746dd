//! Verified dispatch (`DPORTAGE_REDUNDANCY=2`) against real distccd 3.4 hosts
//! and `dportage __liar` proxies that alter what an honest distccd returned:
//! every object right, every liar named, honest hosts never accused.

mod dual_support;

use std::fs;

use dportage::client::evidence::{mark_reported, pending_reports, StateDir};
use dual_support::*;

const C_SOURCE: &str = "#include <stdio.h>\n#define ANSWER 42\nint answer(void) { return ANSWER; }\nint show(int x) { return printf(\"%d\\n\", x + ANSWER); }\n";
const CPP_SOURCE: &str = "#include <vector>\n#include <numeric>\nint sum(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); }\n";

/// Three honest hosts' worth of addresses: the liar sits between two honest
/// hosts in the list, so the first pair always includes it.
fn honest_liar_honest(lie: &str) -> (Distccd, Liar, Distccd) {
    let a = Distccd::start(ip("127.0.0.2"));
    let liar = Liar::start(ip("127.0.0.5"), a.addr, lie);
    let b = Distccd::start(ip("127.0.0.3"));
    (a, liar, b)
}

fn c_job(env: &ClientEnv) -> std::process::Output {
    env.write("x.c", C_SOURCE);
    env.reference(&["gcc", "-O2", "-c", "x.c", "-o", "ref.o"]);
    env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x.o"])
}

fn assert_liar_caught(lie: &str) {
    if !require_distcc("assert_liar_caught") {
        return;
    }
    let (a, liar, b) = honest_liar_honest(lie);
    let mut env = ClientEnv::new(&[a.hostspec(), liar.hostspec(), b.hostspec()]);
    // Relaying a 64 MB lie can outlast the hedge threshold on a loaded machine;
    // this test is about the lie, not the lag.
    env.set("DPORTAGE_HEDGE_MS", "600000");
    let out = c_job(&env);
    assert_success(&out, &format!("dual compile with a {lie} liar"));
    assert!(
        env.read("x.o") == env.read("ref.o"),
        "{lie}: the object written is not the honest one"
    );
    let mismatches = mismatch_lines(&out);
    assert_eq!(mismatches.len(), 1, "{lie}: {}", stderr_text(&out));
    assert!(
        mismatches[0].contains(&liar.addr.to_string()),
        "{lie}: the liar is not named: {}",
        mismatches[0]
    );
    assert!(
        !mismatches[0].contains(&format!("host {}", a.addr))
            && !mismatches[0].contains(&format!("host {}", b.addr)),
        "{lie}: an honest host is accused: {}",
        mismatches[0]
    );

    // The evidence waits for the coordinator.
    let pending = pending_reports(&env.dportage_dir()).unwrap();
    assert_eq!(pending.len(), 1, "{lie}");
    let record = &pending[0];
    assert_eq!(record.losers, [liar.hostspec()]);
    assert_eq!(record.verdict, "majority");
    assert_eq!(
        record.input.len(),
        64,
        "blake3 hex of the preprocessed input"
    );
    assert!(record.args.iter().any(|a| a == "-O2"), "{:?}", record.args);
    assert!(record.time > 1_600_000_000);
    let hosts: Vec<&str> = record.results.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    for spec in [a.hostspec(), liar.hostspec(), b.hostspec()] {
        assert!(hosts.contains(&spec.as_str()), "{spec} missing: {hosts:?}");
    }
    let liar_result = record
        .results
        .iter()
        .find(|r| r.host == liar.hostspec())
        .unwrap();
    assert_ne!(liar_result.object, record.accepted);
    let excluded = StateDir::open(&env.dportage_dir())
        .unwrap()
        .excluded()
        .unwrap();
    assert_eq!(excluded.len(), 1);
    assert_eq!(excluded[0].address, liar.addr);
    assert_eq!(excluded[0].evidence, record.id);

    // The liar is never asked again: the honest pair agrees at once.
    // The first job ran on `a` twice (directly and behind the liar) and on
    // `b` once; distccd logs after replying, so wait for those lines first.
    a.wait_for_compile_ok(2);
    b.wait_for_compile_ok(1);
    let before = (a.compile_ok_count(), b.compile_ok_count());
    let out = env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x2.o"]);
    assert_success(&out, "second compile");
    assert!(mismatch_lines(&out).is_empty(), "{}", stderr_text(&out));
    assert!(env.read("x2.o") == env.read("ref.o"));
    // Both lines, or a late one from `a` would be counted against the
    // liar's upstream below.
    a.wait_for_compile_ok(before.0 + 1);
    b.wait_for_compile_ok(before.1 + 1);
    assert_eq!(pending_reports(&env.dportage_dir()).unwrap().len(), 1);

    assert_eq!(
        mark_reported(&env.dportage_dir(), std::slice::from_ref(&record.id)).unwrap(),
        1
    );

    // Plain dispatch (redundancy 1) does not use the liar either: with only
    // the liar listed, the job compiles here and its upstream sees nothing.
    env.hosts = liar.hostspec();
    env.set("DPORTAGE_REDUNDANCY", "1");
    env.set("DISTCC_VERBOSE", "1");
    let upstream_jobs = a.compile_ok_count();
    let out = env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x3.o"]);
    assert_success(&out, "plain compile with only the liar listed");
    assert!(env.read("x3.o") == env.read("ref.o"));
    assert!(
        stderr_text(&out).contains("excluded after losing a vote"),
        "{}",
        stderr_text(&out)
    );
    assert_eq!(a.compile_ok_count(), upstream_jobs);
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
    assert!(
        env.leftover_temp_files().is_empty(),
        "{:?}",
        env.leftover_temp_files()
    );
}

#[test]
fn liar_flipping_one_byte_is_outvoted_and_named() {
    assert_liar_caught("flip");
}

#[test]
fn liar_replacing_the_object_is_outvoted_and_named() {
    assert_liar_caught("replace");
}

#[test]
fn liar_claiming_a_compile_error_is_outvoted_and_named() {
    assert_liar_caught("status=256");
}

#[test]
fn liar_returning_an_oversized_object_is_outvoted_and_named() {
    assert_liar_caught("oversize");
}

/// C, C++ and `-g` (gcc and clang) on honest pairs, each also checked by this
/// machine's compiler (spot check 1.0): no one is ever accused.
#[test]
fn honest_pairs_never_mismatch() {
    if !require_distcc("honest_pairs_never_mismatch") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    let b = Distccd::start(ip("127.0.0.3"));
    let mut env = ClientEnv::new(&[a.hostspec(), b.hostspec()]);
    env.set("DPORTAGE_SPOTCHECK", "1.0");
    env.write("x.c", C_SOURCE);
    env.write("y.cpp", CPP_SOURCE);
    let mut jobs = 0;
    let cases: &[(&str, &[&str], &str)] = &[
        ("gcc", &["-O2"], "x.c"),
        ("g++", &["-O2"], "y.cpp"),
        ("gcc", &["-g", "-O1"], "x.c"),
        ("g++", &["-g"], "y.cpp"),
        ("clang", &["-g"], "x.c"),
        ("clang++", &["-O2", "-g"], "y.cpp"),
        // LTO sections carry a random id unless seeded (canonical.rs seeds them;
        // plain `-flto` stays local under distcc 3.4 rules, `-flto=auto` goes).
        ("gcc", &["-O2", "-flto=auto"], "x.c"),
    ];
    for (compiler, flags, input) in cases {
        let mut args = vec![*compiler];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-c", input, "-o", "out.o"]);
        let out = env.distcc(&args);
        assert_success(&out, &format!("{args:?}"));
        assert!(
            out.stderr.is_empty(),
            "{args:?} printed: {}",
            stderr_text(&out)
        );
        jobs += 1;
        // Both hosts really compiled it.
        a.wait_for_compile_ok(jobs);
        b.wait_for_compile_ok(jobs);
        let debug = flags.contains(&"-g");
        let lto = flags.iter().any(|f| f.starts_with("-flto"));
        if !debug && !lto {
            // Without -g an honest remote compile equals a local compile of
            // the source (with -g, macro expansion shifts debug columns for
            // every distcc, so only the spot check's local compile of the same
            // preprocessed input is the reference, and it agreed).
            let mut reference = vec![*compiler];
            reference.extend_from_slice(flags);
            reference.extend_from_slice(&["-c", input, "-o", "ref.o"]);
            env.reference(&reference);
            assert!(env.read("out.o") == env.read("ref.o"), "{args:?}");
        }
    }
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
    assert!(!env.dportage_dir().join("excluded-hosts").exists());
}

/// Two hosts run by one attacker agree on the same wrong object: the vote
/// cannot see it, the local spot check does.
#[test]
fn colluding_liars_are_caught_by_a_full_spot_check() {
    if !require_distcc("colluding_liars_are_caught_by_a_full_spot_check") {
        return;
    }
    let honest = Distccd::start(ip("127.0.0.2"));
    let l1 = Liar::start(ip("127.0.0.5"), honest.addr, "flip");
    let l2 = Liar::start(ip("127.0.0.6"), honest.addr, "flip");
    let mut env = ClientEnv::new(&[l1.hostspec(), l2.hostspec()]);

    // The documented limit: without a spot check two colluders win.
    env.set("DPORTAGE_SPOTCHECK", "0");
    let out = c_job(&env);
    assert_success(&out, "collusion without spot check");
    assert!(mismatch_lines(&out).is_empty());
    assert!(
        env.read("x.o") != env.read("ref.o"),
        "two colluders agreeing must win a pure vote; if not, this test lies"
    );

    env.set("DPORTAGE_SPOTCHECK", "1.0");
    let out = env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "collusion with spot check 1.0");
    assert!(
        env.read("x.o") == env.read("ref.o"),
        "the trojan was written"
    );
    let mismatches = mismatch_lines(&out);
    assert_eq!(mismatches.len(), 2, "{}", stderr_text(&out));
    assert!(mismatches.iter().any(|l| l.contains(&l1.addr.to_string())));
    assert!(mismatches.iter().any(|l| l.contains(&l2.addr.to_string())));
    let pending = pending_reports(&env.dportage_dir()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].verdict, "spot-check");
    assert_eq!(pending[0].losers.len(), 2);
    assert!(pending[0].results.iter().any(|r| r.host == "local"));
    assert!(
        env.leftover_temp_files().is_empty(),
        "{:?}",
        env.leftover_temp_files()
    );
}

/// Refusals, dead hosts, truncated replies and protocol garbage are not votes:
/// nobody is accused, the host is replaced, and the object is right.
#[test]
fn failures_are_replaced_not_reported() {
    if !require_distcc("failures_are_replaced_not_reported") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    let dead = DeadHost::new(ip("127.0.0.7"));
    let refusing = Liar::start(ip("127.0.0.8"), a.addr, &format!("status={}", 110 << 8));
    let truncating = Liar::start(ip("127.0.0.9"), a.addr, "truncate");
    let garbage = Liar::start(ip("127.0.0.10"), a.addr, "garbage");
    let b = Distccd::start(ip("127.0.0.3"));
    let env = ClientEnv::new(&[
        dead.hostspec(),
        refusing.hostspec(),
        truncating.hostspec(),
        garbage.hostspec(),
        a.hostspec(),
        b.hostspec(),
    ]);
    let out = c_job(&env);
    assert_success(&out, "compile with dead, refusing and broken hosts");
    assert!(env.read("x.o") == env.read("ref.o"));
    assert!(mismatch_lines(&out).is_empty(), "{}", stderr_text(&out));
    let err = stderr_text(&out);
    for failing in [
        dead.hostspec(),
        refusing.hostspec(),
        truncating.hostspec(),
        garbage.hostspec(),
    ] {
        assert!(err.contains(&failing), "{failing} not mentioned: {err}");
    }
    b.wait_for_compile_ok(1);
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
    assert!(!env.dportage_dir().join("excluded-hosts").exists());
}

/// A host that stops answering times out (`DISTCC_IO_TIMEOUT`) and is replaced.
#[test]
fn silent_host_times_out_and_is_replaced() {
    if !require_distcc("silent_host_times_out_and_is_replaced") {
        return;
    }
    let silent = Distccd::start_as(ip("127.0.0.4"), Behaviour::Stuck);
    let a = Distccd::start(ip("127.0.0.2"));
    let b = Distccd::start(ip("127.0.0.3"));
    let mut env = ClientEnv::new(&[silent.hostspec(), a.hostspec(), b.hostspec()]);
    env.set("DISTCC_IO_TIMEOUT", "2");
    env.set("DPORTAGE_HEDGE_MS", "600000");
    let out = c_job(&env);
    assert_success(&out, "compile with a silent host");
    assert!(env.read("x.o") == env.read("ref.o"));
    let err = stderr_text(&out);
    assert!(mismatch_lines(&out).is_empty(), "{err}");
    assert!(err.contains("no progress for 2 s"), "{err}");
    assert!(err.contains(&silent.hostspec()), "{err}");
    silent.wait_for_stuck_job();
    b.wait_for_compile_ok(1);
}

/// One remote host cannot verify anything: the job compiles here.
#[test]
fn unmet_redundancy_compiles_locally() {
    if !require_distcc("unmet_redundancy_compiles_locally") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    // A second daemon on the same address is not a second opinion.
    let same = Distccd::start(ip("127.0.0.2"));
    let mut env = ClientEnv::new(&[a.hostspec(), same.hostspec()]);
    env.set("DISTCC_VERBOSE", "1");
    let out = c_job(&env);
    assert_success(&out, "unverifiable compile");
    assert!(env.read("x.o") == env.read("ref.o"));
    let err = stderr_text(&out);
    assert!(
        err.contains("DPORTAGE_REDUNDANCY=2 needs 2 remote hosts with distinct addresses"),
        "{err}"
    );
    assert_eq!(a.compile_ok_count() + same.compile_ok_count(), 0);
}

/// A host that dies in the middle of a job does not fail the build, and is
/// not called a liar.
#[test]
fn host_killed_mid_job_is_replaced() {
    if !require_distcc("host_killed_mid_job_is_replaced") {
        return;
    }
    let mut victim = Distccd::start_as(ip("127.0.0.4"), Behaviour::Stuck);
    let a = Distccd::start(ip("127.0.0.2"));
    let b = Distccd::start(ip("127.0.0.3"));
    let mut env = ClientEnv::new(&[victim.hostspec(), a.hostspec(), b.hostspec()]);
    // No hedging: the kill, not the lag, must be what replaces the victim.
    env.set("DPORTAGE_HEDGE_MS", "600000");
    env.write("x.c", C_SOURCE);
    env.reference(&["gcc", "-O2", "-c", "x.c", "-o", "ref.o"]);
    let child = env
        .command(
            env.root.path().join("bin/distcc"),
            &["gcc", "-O2", "-c", "x.c", "-o", "x.o"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    victim.wait_for_stuck_job();
    victim.kill_now();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "compile with a host killed mid-job");
    assert!(env.read("x.o") == env.read("ref.o"));
    assert!(mismatch_lines(&out).is_empty(), "{}", stderr_text(&out));
    let err = stderr_text(&out);
    assert!(err.contains(&victim.hostspec()), "{err}");
    a.wait_for_compile_ok(1);
    b.wait_for_compile_ok(1);
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
}

/// A host far behind its peer is hedged: another host gets the job and the
/// build does not wait for the slow one.
#[test]
fn lagging_host_is_hedged() {
    if !require_distcc("lagging_host_is_hedged") {
        return;
    }
    let slow = Distccd::start_as(ip("127.0.0.4"), Behaviour::Stuck);
    let a = Distccd::start(ip("127.0.0.2"));
    let b = Distccd::start(ip("127.0.0.3"));
    let mut env = ClientEnv::new(&[slow.hostspec(), a.hostspec(), b.hostspec()]);
    env.set("DPORTAGE_HEDGE_MS", "200");
    let started = std::time::Instant::now();
    let out = c_job(&env);
    assert_success(&out, "compile with a lagging host");
    assert!(env.read("x.o") == env.read("ref.o"));
    assert!(mismatch_lines(&out).is_empty(), "{}", stderr_text(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(40),
        "the client waited for the stuck host (60 s)"
    );
    slow.wait_for_stuck_job();
    a.wait_for_compile_ok(1);
    b.wait_for_compile_ok(1);
}

/// With hosts in two /24 networks, the pair spans both.
#[test]
fn pairs_prefer_distinct_networks() {
    if !require_distcc("pairs_prefer_distinct_networks") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    let same_net = Distccd::start(ip("127.0.0.3"));
    let other_net = Distccd::start(ip("127.0.1.2"));
    let env = ClientEnv::new(&[a.hostspec(), same_net.hostspec(), other_net.hostspec()]);
    let out = c_job(&env);
    assert_success(&out, "compile over two networks");
    assert!(env.read("x.o") == env.read("ref.o"));
    a.wait_for_compile_ok(1);
    other_net.wait_for_compile_ok(1);
    assert_eq!(same_net.compile_ok_count(), 0, "{}", same_net.log_text());
}

/// Jobs whose output cannot be compared between hosts never leave (distcc's
/// own rules already keep `--coverage` and `-fprofile-*` here; these are the
/// ones only verification keeps).
#[test]
fn nondeterministic_jobs_stay_local() {
    if !require_distcc("nondeterministic_jobs_stay_local") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    let b = Distccd::start(ip("127.0.0.3"));
    let mut env = ClientEnv::new(&[a.hostspec(), b.hostspec()]);
    env.set("DISTCC_VERBOSE", "1");
    env.write("x.c", C_SOURCE);
    for flags in [
        &["-g", "-gsplit-dwarf"][..],
        &["-g", "-fno-working-directory"][..],
    ] {
        let mut args = vec!["gcc"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-c", "x.c", "-o", "x.o"]);
        let out = env.distcc(&args);
        assert_success(&out, &format!("{args:?}"));
        let err = stderr_text(&out);
        assert!(err.contains("cannot be compared between hosts"), "{err}");
        assert!(!env.read("x.o").is_empty());
    }
    assert!(env.work().join("x.dwo").exists());
    assert_eq!(a.compile_ok_count() + b.compile_ok_count(), 0);
    // Plain redundancy 1 still sends such a job, as distcc does.
    env.set("DPORTAGE_REDUNDANCY", "1");
    let out = env.distcc(&[
        "gcc",
        "-g",
        "-fno-working-directory",
        "-c",
        "x.c",
        "-o",
        "x.o",
    ]);
    assert_success(&out, "redundancy 1");
    a.wait_for_compile_ok(1);
}

/// Agreeing hosts that both report a compile error: the diagnostics shown
/// are the local compiler's, once, with its exit status.
#[test]
fn agreed_compile_error_shows_diagnostics_once() {
    if !require_distcc("agreed_compile_error_shows_diagnostics_once") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    let b = Distccd::start(ip("127.0.0.3"));
    let env = ClientEnv::new(&[a.hostspec(), b.hostspec()]);
    env.write("bad.c", "int f(void) { return undeclared_thing; }\n");
    let out = env.distcc(&["gcc", "-c", "bad.c", "-o", "bad.o"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let err = stderr_text(&out);
    assert_eq!(
        err.matches("error: 'undeclared_thing' undeclared").count(),
        1,
        "{err}"
    );
    assert!(mismatch_lines(&out).is_empty());
    assert!(!env.work().join("bad.o").exists());
    assert!(!fs::read_dir(env.work()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".o")));
}

/// No majority is possible (one honest host against one or two liars): this
/// machine compiles the same preprocessed input as arbiter, and every host
/// that disagrees with it and with the honest host is named.
#[test]
fn local_arbiter_decides_when_no_majority_is_possible() {
    if !require_distcc("local_arbiter_decides_when_no_majority_is_possible") {
        return;
    }
    let honest = Distccd::start(ip("127.0.0.2"));
    let flip = Liar::start(ip("127.0.0.5"), honest.addr, "flip");
    let replace = Liar::start(ip("127.0.0.6"), honest.addr, "replace");

    // Two hosts, one lying.
    let env = ClientEnv::new(&[flip.hostspec(), honest.hostspec()]);
    let out = c_job(&env);
    assert_success(&out, "arbitrated compile");
    assert!(
        env.read("x.o") == env.read("ref.o"),
        "a disputed object was written"
    );
    let mismatches = mismatch_lines(&out);
    assert_eq!(mismatches.len(), 1, "{}", stderr_text(&out));
    assert!(
        mismatches[0].contains(&flip.hostspec()),
        "{}",
        mismatches[0]
    );
    let pending = pending_reports(&env.dportage_dir()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].verdict, "arbiter");
    assert_eq!(pending[0].losers, [flip.hostspec()]);

    // Three hosts, three different answers.
    let env = ClientEnv::new(&[flip.hostspec(), replace.hostspec(), honest.hostspec()]);
    let out = c_job(&env);
    assert_success(&out, "three-way dispute");
    assert!(
        env.read("x.o") == env.read("ref.o"),
        "a disputed object was written"
    );
    let mismatches = mismatch_lines(&out);
    assert_eq!(mismatches.len(), 2, "{}", stderr_text(&out));
    assert!(mismatches.iter().any(|l| l.contains(&flip.hostspec())));
    assert!(mismatches.iter().any(|l| l.contains(&replace.hostspec())));
    assert!(!mismatches
        .iter()
        .any(|l| l.contains(&format!("host {} ", honest.hostspec()))));
    assert!(
        env.leftover_temp_files().is_empty(),
        "{:?}",
        env.leftover_temp_files()
    );
}

/// Two liars that disagree with each other and no honest host: the local
/// compile is written, but with no remote witness nobody is accused (this
/// machine's toolchain might be the odd one out).
#[test]
fn arbiter_without_a_witness_accuses_nobody() {
    if !require_distcc("arbiter_without_a_witness_accuses_nobody") {
        return;
    }
    let honest = Distccd::start(ip("127.0.0.2"));
    let flip = Liar::start(ip("127.0.0.5"), honest.addr, "flip");
    let replace = Liar::start(ip("127.0.0.6"), honest.addr, "replace");
    let env = ClientEnv::new(&[flip.hostspec(), replace.hostspec()]);
    let out = c_job(&env);
    assert_success(&out, "dispute without witness");
    assert!(env.read("x.o") == env.read("ref.o"));
    assert!(mismatch_lines(&out).is_empty(), "{}", stderr_text(&out));
    assert!(
        stderr_text(&out).contains("toolchain may differ"),
        "{}",
        stderr_text(&out)
    );
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
}

/// A `make -j` worth of verified jobs from concurrent client processes on hosts
/// with one slot each: every job finishes (no two clients hold each other's
/// last slot forever) and every object is right.
#[test]
fn concurrent_clients_share_single_slot_hosts() {
    if !require_distcc("concurrent_clients_share_single_slot_hosts") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    let b = Distccd::start(ip("127.0.0.3"));
    let c = Distccd::start(ip("127.0.0.4"));
    let mut env = ClientEnv::new(&[
        format!("{}/1", a.hostspec()),
        format!("{}/1", b.hostspec()),
        format!("{}/1", c.hostspec()),
    ]);
    env.set("DISTCC_PAUSE_TIME_MSEC", "20");
    const JOBS: usize = 6;
    for i in 0..JOBS {
        env.write(
            &format!("f{i}.c"),
            &C_SOURCE.replace("answer", &format!("answer{i}")),
        );
        env.reference(&[
            "gcc",
            "-O2",
            "-c",
            &format!("f{i}.c"),
            "-o",
            &format!("ref{i}.o"),
        ]);
    }
    let children: Vec<_> = (0..JOBS)
        .map(|i| {
            env.command(
                env.root.path().join("bin/distcc"),
                &[
                    "gcc",
                    "-O2",
                    "-c",
                    &format!("f{i}.c"),
                    "-o",
                    &format!("f{i}.o"),
                ],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_success(&out, &format!("job {i}"));
        assert!(mismatch_lines(&out).is_empty(), "{}", stderr_text(&out));
        assert!(
            env.read(&format!("f{i}.o")) == env.read(&format!("ref{i}.o")),
            "job {i}"
        );
    }
    let remote = a.compile_ok_count() + b.compile_ok_count() + c.compile_ok_count();
    assert!(remote >= 2, "hardly anything went remote: {remote} jobs");
}

/// Redundancy that cannot be met with `DISTCC_FALLBACK=0`: a clear failure,
/// never an unverified remote result.
#[test]
fn unmet_redundancy_without_fallback_fails() {
    if !require_distcc("unmet_redundancy_without_fallback_fails") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    let mut env = ClientEnv::new(&[a.hostspec()]);
    env.set("DISTCC_FALLBACK", "0");
    env.write("x.c", C_SOURCE);
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("DISTCC_FALLBACK=0"),
        "{}",
        stderr_text(&out)
    );
    assert!(!env.work().join("x.o").exists());
    assert_eq!(a.compile_ok_count(), 0);
}

/// Honest hosts' warnings (compiler and assembler) agree after normalisation:
/// the job needs no local check, and the warnings are shown once.
#[test]
fn honest_warnings_agree_after_normalisation() {
    if !require_distcc("honest_warnings_agree_after_normalisation") {
        return;
    }
    let a = Distccd::start(ip("127.0.0.2"));
    let b = Distccd::start(ip("127.0.0.3"));
    let mut env = ClientEnv::new(&[a.hostspec(), b.hostspec()]);
    env.set("DISTCC_VERBOSE", "1");
    env.write(
        "w.c",
        "int f(void) { int unused_var; asm(\".warning \\\"from the assembler\\\"\"); return 0; }\n",
    );
    env.reference(&["gcc", "-Wall", "-c", "w.c", "-o", "ref.o"]);
    let out = env.distcc(&["gcc", "-Wall", "-c", "w.c", "-o", "w.o"]);
    assert_success(&out, "compile with warnings");
    let err = stderr_text(&out);
    assert!(mismatch_lines(&out).is_empty(), "{err}");
    assert!(!err.contains("diagnostics differ"), "{err}");
    assert_eq!(err.matches("unused variable").count(), 1, "{err}");
    assert_eq!(
        err.matches("Warning: from the assembler").count(),
        1,
        "{err}"
    );
    assert!(err.contains("Assembler messages"), "{err}");
    assert!(env.read("w.o") == env.read("ref.o"));
    a.wait_for_compile_ok(1);
    b.wait_for_compile_ok(1);
}
