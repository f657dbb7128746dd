//! Verified dispatch (`DPORTAGE_REDUNDANCY=2`) with our own server,
//! `dportage serve`, as the honest hosts: pairs of our servers and mixed pairs
//! (one real distccd 3.4, one `dportage serve`) agree byte for byte; liars in
//! front of our servers are outvoted and named; a server killed mid-job is
//! replaced; colluding liars fall to the spot check.

mod dual_support;

use std::time::Duration;

use dportage::client::evidence::{pending_reports, StateDir};
use dual_support::*;

const C_SOURCE: &str = "#include <stdio.h>\n#define ANSWER 42\nint answer(void) { return ANSWER; }\nint show(int x) { return printf(\"%d\\n\", x + ANSWER); }\n";
const CPP_SOURCE: &str = "#include <vector>\n#include <numeric>\nint sum(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); }\n";

/// C, C++ and `-g` for gcc and clang: what honest hosts must agree on.
const HONEST_CASES: &[(&str, &[&str], &str)] = &[
    ("gcc", &["-O2"], "x.c"),
    ("g++", &["-O2"], "y.cpp"),
    ("gcc", &["-g", "-O1"], "x.c"),
    ("g++", &["-g"], "y.cpp"),
    ("clang", &["-g"], "x.c"),
    ("clang++", &["-O2", "-g"], "y.cpp"),
    // LTO sections carry a random id unless the client seeds them.
    ("gcc", &["-O2", "-flto=auto"], "x.c"),
];

fn c_job(env: &ClientEnv) -> std::process::Output {
    env.write("x.c", C_SOURCE);
    env.reference(&["gcc", "-O2", "-c", "x.c", "-o", "ref.o"]);
    env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x.o"])
}

/// A host of either kind, as far as these tests count its jobs.
trait Host {
    fn wait_for_compile_ok(&self, n: usize);
}

impl Host for Distccd {
    fn wait_for_compile_ok(&self, n: usize) {
        Distccd::wait_for_compile_ok(self, n)
    }
}

impl Host for DportageServe {
    fn wait_for_compile_ok(&self, n: usize) {
        DportageServe::wait_for_compile_ok(self, n)
    }
}

/// Run every honest case on the pair `a`, `b` with a full local spot check:
/// both hosts compile each job, nobody is accused, nothing is printed, and
/// without `-g` the object equals a local compile of the source.
fn assert_honest_pair_agrees(a: &dyn Host, b: &dyn Host, hosts: &[String], what: &str) {
    let mut env = ClientEnv::new(hosts);
    // Three opinions per job: both hosts and this machine's compiler on the
    // same preprocessed input. Any difference would print a mismatch or a
    // "toolchain may differ" note and leave evidence.
    env.set("DPORTAGE_SPOTCHECK", "1.0");
    env.write("x.c", C_SOURCE);
    env.write("y.cpp", CPP_SOURCE);
    for (jobs, (compiler, flags, input)) in HONEST_CASES.iter().enumerate() {
        let mut args = vec![*compiler];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-c", input, "-o", "out.o"]);
        let out = env.distcc(&args);
        assert_success(&out, &format!("{what}: {args:?}"));
        assert!(
            out.stderr.is_empty(),
            "{what}: {args:?} printed: {}",
            stderr_text(&out)
        );
        // Both hosts really compiled it (no local fallback hid a difference).
        a.wait_for_compile_ok(jobs + 1);
        b.wait_for_compile_ok(jobs + 1);
        let lto = flags.iter().any(|f| f.starts_with("-flto"));
        if !flags.contains(&"-g") && !lto {
            // With -g macro expansion shifts debug columns for every distcc,
            // so the spot check's compile of the same preprocessed input is
            // the reference there, and it agreed.
            let mut reference = vec![*compiler];
            reference.extend_from_slice(flags);
            reference.extend_from_slice(&["-c", input, "-o", "ref.o"]);
            env.reference(&reference);
            assert!(env.read("out.o") == env.read("ref.o"), "{what}: {args:?}");
        }
    }
    assert!(
        pending_reports(&env.dportage_dir()).unwrap().is_empty(),
        "{what}"
    );
    assert!(
        !env.dportage_dir().join("excluded-hosts").exists(),
        "{what}"
    );
    assert!(
        env.leftover_temp_files().is_empty(),
        "{what}: {:?}",
        env.leftover_temp_files()
    );
}

#[test]
fn honest_pairs_of_our_servers_never_mismatch() {
    if !require_masquerade_dir("honest_pairs_of_our_servers_never_mismatch") {
        return;
    }
    let a = DportageServe::start(ip("127.0.0.2"));
    let b = DportageServe::start(ip("127.0.0.3"));
    assert_honest_pair_agrees(
        &a,
        &b,
        &[a.hostspec(), b.hostspec()],
        "two dportage servers",
    );
    a.wait_for_jobs_gone(Duration::from_secs(10));
    b.wait_for_jobs_gone(Duration::from_secs(10));
}

/// One real distccd 3.4 and one `dportage serve` on the same job return the
/// same bytes: users can mix both kinds of server in one host list.
#[test]
fn mixed_pairs_of_distccd_and_our_server_agree() {
    if !require_distcc("mixed_pairs_of_distccd_and_our_server_agree")
        || !require_masquerade_dir("mixed_pairs_of_distccd_and_our_server_agree")
    {
        return;
    }
    let theirs = Distccd::start(ip("127.0.0.2"));
    let ours = DportageServe::start(ip("127.0.0.3"));
    assert_honest_pair_agrees(
        &theirs,
        &ours,
        &[theirs.hostspec(), ours.hostspec()],
        "distccd 3.4 + dportage serve",
    );

    // Without the spot check the two servers alone decide, and they still
    // agree at once (no third host exists to ask).
    let mut env = ClientEnv::new(&[ours.hostspec(), theirs.hostspec()]);
    env.set("DPORTAGE_SPOTCHECK", "0");
    let before = (theirs.compile_ok_count(), ours.compile_ok_count());
    let out = c_job(&env);
    assert_success(&out, "mixed pair without spot check");
    assert!(out.stderr.is_empty(), "{}", stderr_text(&out));
    assert!(env.read("x.o") == env.read("ref.o"));
    theirs.wait_for_compile_ok(before.0 + 1);
    ours.wait_for_compile_ok(before.1 + 1);
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
}

/// A liar proxy in front of our server, between two of our honest servers in
/// the host list: the object is the honest one and only the liar is named.
fn assert_liar_before_our_server_caught(lie: &str) {
    if !require_masquerade_dir("assert_liar_before_our_server_caught") {
        return;
    }
    let a = DportageServe::start(ip("127.0.0.2"));
    let liar = Liar::start(ip("127.0.0.5"), a.addr, lie);
    let b = DportageServe::start(ip("127.0.0.3"));
    let mut env = ClientEnv::new(&[a.hostspec(), liar.hostspec(), b.hostspec()]);
    // No hedging: on a loaded machine relaying the 64 MB of an oversized
    // reply can lag a second behind the honest server, and a hedged host is
    // dropped unjudged; this test is about the lie, not the lag.
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
        mismatches[0].contains(&liar.hostspec()),
        "{lie}: the liar is not named: {}",
        mismatches[0]
    );
    assert!(
        !mismatches[0].contains(&format!("host {}", a.addr))
            && !mismatches[0].contains(&format!("host {}", b.addr)),
        "{lie}: an honest server is accused: {}",
        mismatches[0]
    );
    let pending = pending_reports(&env.dportage_dir()).unwrap();
    assert_eq!(pending.len(), 1, "{lie}");
    assert_eq!(pending[0].losers, [liar.hostspec()], "{lie}");
    assert_eq!(pending[0].verdict, "majority", "{lie}");
    let excluded = StateDir::open(&env.dportage_dir())
        .unwrap()
        .excluded()
        .unwrap();
    assert_eq!(excluded.len(), 1, "{lie}");
    assert_eq!(excluded[0].address, liar.addr, "{lie}");
    // The liar's upstream and the other honest server both compiled.
    a.wait_for_compile_ok(1);
    b.wait_for_compile_ok(1);
    assert!(
        env.leftover_temp_files().is_empty(),
        "{lie}: {:?}",
        env.leftover_temp_files()
    );
}

#[test]
fn liar_flipping_one_byte_of_our_server_is_outvoted_and_named() {
    assert_liar_before_our_server_caught("flip");
}

#[test]
fn liar_replacing_our_servers_object_is_outvoted_and_named() {
    assert_liar_before_our_server_caught("replace");
}

#[test]
fn liar_turning_our_servers_success_into_an_error_is_outvoted_and_named() {
    assert_liar_before_our_server_caught("status=256");
}

#[test]
fn liar_inflating_our_servers_object_is_outvoted_and_named() {
    assert_liar_before_our_server_caught("oversize");
}

/// `dportage serve` SIGKILLed while its compiler runs: the build succeeds
/// on the other servers, nobody is called a liar, and the orphaned job
/// (sandbox trampoline and compiler) cleans itself up.
#[test]
fn our_server_killed_mid_job_is_replaced() {
    if !require_masquerade_dir("our_server_killed_mid_job_is_replaced") {
        return;
    }
    let mut victim = DportageServe::start_as(ip("127.0.0.4"), Behaviour::Stuck);
    let a = DportageServe::start(ip("127.0.0.2"));
    let b = DportageServe::start(ip("127.0.0.3"));
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
    assert_success(&out, "compile with our server killed mid-job");
    assert!(env.read("x.o") == env.read("ref.o"));
    let err = stderr_text(&out);
    assert!(mismatch_lines(&out).is_empty(), "{err}");
    assert!(err.contains(&victim.hostspec()), "{err}");
    a.wait_for_compile_ok(1);
    b.wait_for_compile_ok(1);
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
    assert!(!env.dportage_dir().join("excluded-hosts").exists());
    // With its daemon gone, the job's trampoline kills the compiler and
    // removes the job directory (the `sleep 60` would otherwise linger).
    victim.wait_for_jobs_gone(Duration::from_secs(15));
}

/// Two liars in front of one honest server of ours agree on the same wrong
/// object: the vote cannot see it, the full local spot check does.
#[test]
fn colluding_liars_before_our_server_are_caught_by_a_full_spot_check() {
    if !require_masquerade_dir("colluding_liars_before_our_server_are_caught_by_a_full_spot_check")
    {
        return;
    }
    let honest = DportageServe::start(ip("127.0.0.2"));
    let l1 = Liar::start(ip("127.0.0.5"), honest.addr, "flip");
    let l2 = Liar::start(ip("127.0.0.6"), honest.addr, "flip");
    let mut env = ClientEnv::new(&[l1.hostspec(), l2.hostspec()]);

    // The documented limit: without a spot check two colluders win.
    env.set("DPORTAGE_SPOTCHECK", "0");
    let out = c_job(&env);
    assert_success(&out, "collusion without spot check");
    assert!(mismatch_lines(&out).is_empty(), "{}", stderr_text(&out));
    assert!(
        env.read("x.o") != env.read("ref.o"),
        "two colluders agreeing must win a pure vote; if not, this test lies"
    );
    honest.wait_for_compile_ok(2);

    env.set("DPORTAGE_SPOTCHECK", "1.0");
    let out = env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "collusion with spot check 1.0");
    assert!(
        env.read("x.o") == env.read("ref.o"),
        "the trojan was written"
    );
    let mismatches = mismatch_lines(&out);
    assert_eq!(mismatches.len(), 2, "{}", stderr_text(&out));
    assert!(mismatches.iter().any(|l| l.contains(&l1.hostspec())));
    assert!(mismatches.iter().any(|l| l.contains(&l2.hostspec())));
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

/// Warnings from the compiler and the assembler: distccd runs `as` on a
/// temporary file, our server pipes into it (`{standard input}`), and the
/// client's normalisation makes both agree; the warnings show once.
#[test]
fn mixed_pair_warnings_agree_after_normalisation() {
    if !require_distcc("mixed_pair_warnings_agree_after_normalisation")
        || !require_masquerade_dir("mixed_pair_warnings_agree_after_normalisation")
    {
        return;
    }
    let theirs = Distccd::start(ip("127.0.0.2"));
    let ours = DportageServe::start(ip("127.0.0.3"));
    let mut env = ClientEnv::new(&[theirs.hostspec(), ours.hostspec()]);
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
    assert!(env.read("w.o") == env.read("ref.o"));
    theirs.wait_for_compile_ok(1);
    ours.wait_for_compile_ok(1);
}

/// A compile error on a mixed pair: both servers return the same failing
/// status (a vote, not a failure), nobody is accused, no object is written
/// and the diagnostics show once with the compiler's exit status.
#[test]
fn mixed_pair_agrees_on_a_compile_error() {
    if !require_distcc("mixed_pair_agrees_on_a_compile_error")
        || !require_masquerade_dir("mixed_pair_agrees_on_a_compile_error")
    {
        return;
    }
    let theirs = Distccd::start(ip("127.0.0.2"));
    let ours = DportageServe::start(ip("127.0.0.3"));
    let env = ClientEnv::new(&[theirs.hostspec(), ours.hostspec()]);
    env.write("bad.c", "int f(void) { return undeclared_thing; }\n");
    let out = env.distcc(&["gcc", "-c", "bad.c", "-o", "bad.o"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let err = stderr_text(&out);
    assert_eq!(
        err.matches("error: 'undeclared_thing' undeclared").count(),
        1,
        "{err}"
    );
    assert!(mismatch_lines(&out).is_empty(), "{err}");
    assert!(!env.work().join("bad.o").exists());
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
    // Both servers compiled it and reported the error as distccd does.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(theirs.log_text().contains(" COMPILE_ERROR ")
        && ours.log_text().contains(" COMPILE_ERROR "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "distccd:\n{}\ndportage serve:\n{}",
            theirs.log_text(),
            ours.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
