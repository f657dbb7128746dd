//! Verified dispatch (`DPORTAGE_REDUNDANCY=2`): every object right, every
//! liar named, honest hosts never accused.
//!
//! Each scenario below is written once against [`CompileHost`] and run on
//! hosts of both kinds: the real distccd 3.4 (`…::distccd`) and our own
//! server, `dportage serve` (`…::dportage`); scenarios about a pair of hosts
//! also run on a mixed pair, one of each (`…::mixed`). Scenarios that exist
//! for one kind only live in [`distccd`] and at the end of this file.

mod distccd;
mod speed;

use std::time::Duration;

use dportage::client::evidence::{mark_reported, pending_reports, StateDir};
use dportage::client::kept_inputs::KeptInputs;
use dportage::jobstate::outcome::{Outcome, Verdict};
use dportage::probe;

use crate::support::client::ClientEnv;
use crate::support::dual::*;
use crate::support::*;

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
    // LTO sections carry a random id unless seeded (canonical.rs seeds them;
    // plain `-flto` stays local under distcc 3.4 rules, `-flto=auto` goes).
    ("gcc", &["-O2", "-flto=auto"], "x.c"),
];

fn c_job(env: &ClientEnv) -> std::process::Output {
    env.write("x.c", C_SOURCE);
    env.reference(&["gcc", "-O2", "-c", "x.c", "-o", "ref.o"]);
    env.distcc(&["gcc", "-O2", "-c", "x.c", "-o", "x.o"])
}

/// Whether both kinds of a pair can run here (under CI: must).
fn require_pair<A: CompileHost, B: CompileHost>(test: &str) -> bool {
    A::require(test) && (A::KIND == B::KIND || B::require(test))
}

crate::on_both_hosts!(
    liar_flipping_one_byte_is_caught_and_named,
    liar_replacing_the_object_is_caught_and_named,
    liar_claiming_a_compile_error_is_caught_and_named,
    liar_returning_an_oversized_object_is_caught_and_named,
    honest_pairs_never_mismatch,
    colluding_liars_are_caught_by_a_full_spot_check,
    host_killed_mid_job_is_replaced,
);

crate::on_host_pairs!(
    honest_warnings_agree_after_normalisation,
    agreed_compile_error_shows_diagnostics_once,
);

fn liar_flipping_one_byte_is_caught_and_named<H: CompileHost>() {
    assert_liar_caught::<H>("flip");
}

fn liar_replacing_the_object_is_caught_and_named<H: CompileHost>() {
    assert_liar_caught::<H>("replace");
}

fn liar_claiming_a_compile_error_is_caught_and_named<H: CompileHost>() {
    assert_liar_caught::<H>("status=256");
}

fn liar_returning_an_oversized_object_is_caught_and_named<H: CompileHost>() {
    assert_liar_caught::<H>("oversize");
}

/// A liar proxy in front of an honest host, between two honest hosts in the
/// host list (so the first pair always includes it): the dispute goes to this
/// machine at once (no third host is asked), the object is the honest one,
/// only the liar is named, with the honest host as witness, the evidence
/// waits for the coordinator, and the liar is never asked again.
fn assert_liar_caught<H: CompileHost>(lie: &str) {
    if !H::require("assert_liar_caught") {
        return;
    }
    let a = H::start(ip("127.0.0.2"));
    let liar = Liar::start(ip("127.0.0.5"), a.addr(), lie);
    let b = H::start(ip("127.0.0.3"));
    let mut env = ClientEnv::dual(&[a.hostspec(), liar.hostspec(), b.hostspec()]);
    // No hedging: on a loaded machine relaying the 64 MB of an oversized
    // reply can lag a second behind the honest host, and a hedged host is
    // dropped unjudged; this test is about the lie, not the lag.
    env.set("DPORTAGE_HEDGE_MS", "600000");
    // What `dportage` (the environment command) leaves: this machine's gcc,
    // fingerprinted, for the evidence to name.
    let gcc = probe::resolve_compiler("gcc", None, &[]).expect("gcc in PATH");
    let toolchain = probe::probe_cached(
        "gcc",
        &gcc,
        &env.dportage_dir().join(probe::FINGERPRINT_CACHE_FILE),
    )
    .expect("probe gcc");
    env.write("x.c", C_SOURCE);
    env.reference(&["gcc", "-O2", "-c", "x.c", "-o", "ref.o"]);
    // With a preprocessor-only flag: the hosts do not get it, nor does the
    // evidence.
    let out = env.distcc(&["gcc", "-O2", "-DUNUSED=1", "-c", "x.c", "-o", "x.o"]);
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
        !mismatches[0].contains(&format!("host {}", a.addr()))
            && !mismatches[0].contains(&format!("host {}", b.addr())),
        "{lie}: an honest host is accused: {}",
        mismatches[0]
    );

    // `dportage monitor` sees the mismatch and its loser.
    let log = std::fs::read_to_string(env.dportage_dir().join("monitor.log")).unwrap();
    let outcome = log.lines().last().and_then(Outcome::parse);
    let outcome = outcome.unwrap_or_else(|| panic!("{lie}: no verdict line in {log:?}"));
    assert_eq!(outcome.verdict, Verdict::Mismatch, "{lie}");
    assert_eq!(outcome.losers, [liar.hostspec()], "{lie}");

    // The evidence waits for the coordinator.
    let pending = pending_reports(&env.dportage_dir()).unwrap();
    assert_eq!(pending.len(), 1, "{lie}");
    let record = &pending[0];
    assert_eq!(record.losers, [liar.hostspec()], "{lie}");
    assert_eq!(record.verdict, "arbiter", "{lie}");
    assert_eq!(
        record.input.len(),
        64,
        "blake3 hex of the preprocessed input"
    );
    assert!(record.args.iter().any(|a| a == "-O2"), "{:?}", record.args);
    assert!(
        !record.args.iter().any(|a| a.starts_with("-D")),
        "the evidence holds the hosts' argv, not the user's: {:?}",
        record.args
    );
    assert!(record.time > 1_600_000_000);
    assert_eq!(
        record.toolchain.as_deref(),
        Some(toolchain.id.as_str()),
        "{lie}"
    );
    // The input every host got is kept for the coordinator's referees.
    let kept = env
        .dportage_dir()
        .join("evidence-inputs")
        .join(format!("{}.zst", record.input));
    let compressed = std::fs::read(&kept).unwrap_or_else(|e| panic!("{}: {e}", kept.display()));
    let input = zstd::stream::decode_all(compressed.as_slice()).unwrap();
    assert_eq!(
        blake3::hash(&input).to_hex().as_str(),
        record.input,
        "{lie}"
    );
    assert!(
        std::str::from_utf8(&input).unwrap().contains("return 42"),
        "the preprocessed source"
    );
    assert_eq!(
        KeptInputs::in_dir(&env.dportage_dir())
            .read(&record.input)
            .unwrap(),
        Some(compressed)
    );
    // Two votes and this machine's: the liar's, one honest host's (the
    // witness), and no third host's.
    let hosts: Vec<&str> = record.results.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    assert!(hosts.contains(&liar.hostspec().as_str()), "{hosts:?}");
    assert!(hosts.contains(&"local"), "{hosts:?}");
    let witnesses = [a.hostspec(), b.hostspec()]
        .into_iter()
        .filter(|spec| hosts.contains(&spec.as_str()))
        .count();
    assert_eq!(witnesses, 1, "{hosts:?}");
    let local_result = record.results.iter().find(|r| r.host == "local").unwrap();
    assert_eq!(local_result.object, record.accepted, "{lie}");
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
    assert_eq!(excluded.len(), 1, "{lie}");
    assert_eq!(excluded[0].address, liar.addr, "{lie}");
    assert_eq!(excluded[0].evidence, record.id);

    // The liar is never asked again: the honest pair agrees at once.
    // The first job ran twice on the honest hosts (once behind the liar, on
    // `a`, and once on the witness); hosts log after replying, so wait for
    // those lines first.
    wait_until(
        Duration::from_secs(30),
        "the first job's two COMPILE_OK lines",
        || match a.compile_ok_count() + b.compile_ok_count() {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} lines")),
        },
    );
    let before = (a.compile_ok_count(), b.compile_ok_count());
    assert_eq!(before.0 + before.1, 2, "{lie}: a third host compiled");
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
        "{lie}: {:?}",
        env.leftover_temp_files()
    );
}

/// Run every honest case on the pair `a`, `b` with a full local spot check:
/// both hosts compile each job, nobody is accused, nothing is printed, and
/// without `-g` the object equals a local compile of the source.
fn assert_honest_pair_agrees(
    a: &impl CompileHost,
    b: &impl CompileHost,
    hosts: &[String],
    what: &str,
) {
    let mut env = ClientEnv::dual(hosts);
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
            // Without -g an honest remote compile equals a local compile of
            // the source (with -g, macro expansion shifts debug columns for
            // every distcc, so only the spot check's local compile of the same
            // preprocessed input is the reference, and it agreed).
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

/// C, C++ and `-g` (gcc and clang) on honest pairs, each also checked by this
/// machine's compiler (spot check 1.0): no one is ever accused.
fn honest_pairs_never_mismatch<H: CompileHost>() {
    if !H::require("honest_pairs_never_mismatch") {
        return;
    }
    let a = H::start(ip("127.0.0.2"));
    let b = H::start(ip("127.0.0.3"));
    let what = format!("two {} hosts", H::KIND);
    assert_honest_pair_agrees(&a, &b, &[a.hostspec(), b.hostspec()], &what);
    a.wait_for_jobs_gone(Duration::from_secs(10));
    b.wait_for_jobs_gone(Duration::from_secs(10));
}

/// Two hosts run by one attacker agree on the same wrong object: the vote
/// cannot see it, the local spot check does.
fn colluding_liars_are_caught_by_a_full_spot_check<H: CompileHost>() {
    if !H::require("colluding_liars_are_caught_by_a_full_spot_check") {
        return;
    }
    let honest = H::start(ip("127.0.0.2"));
    let l1 = Liar::start(ip("127.0.0.5"), honest.addr(), "flip");
    let l2 = Liar::start(ip("127.0.0.6"), honest.addr(), "flip");
    let mut env = ClientEnv::dual(&[l1.hostspec(), l2.hostspec()]);

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

/// A host SIGKILLed while its compiler runs does not fail the build and is
/// not called a liar; the job it left (for our server: the sandbox
/// trampoline and compiler) ends.
fn host_killed_mid_job_is_replaced<H: CompileHost>() {
    if !H::require("host_killed_mid_job_is_replaced") {
        return;
    }
    let mut victim = H::start_as(ip("127.0.0.4"), Behaviour::Stuck);
    let a = H::start(ip("127.0.0.2"));
    let b = H::start(ip("127.0.0.3"));
    let mut env = ClientEnv::dual(&[victim.hostspec(), a.hostspec(), b.hostspec()]);
    // No hedging: the kill, not the lag, must be what replaces the victim.
    env.set("DPORTAGE_HEDGE_MS", "600000");
    env.write("x.c", C_SOURCE);
    env.reference(&["gcc", "-O2", "-c", "x.c", "-o", "ref.o"]);
    let child = env
        .command(env.distcc_link(), &["gcc", "-O2", "-c", "x.c", "-o", "x.o"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    victim.wait_for_stuck_job();
    victim.kill_now();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "compile with a host killed mid-job");
    assert!(env.read("x.o") == env.read("ref.o"));
    let err = stderr_text(&out);
    assert!(mismatch_lines(&out).is_empty(), "{err}");
    assert!(err.contains(&victim.hostspec()), "{err}");
    a.wait_for_compile_ok(1);
    b.wait_for_compile_ok(1);
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
    assert!(!env.dportage_dir().join("excluded-hosts").exists());
    // With its daemon gone, the job ends (our server's trampoline kills the
    // compiler and removes the job directory; the `sleep 60` would
    // otherwise linger).
    victim.wait_for_jobs_gone(Duration::from_secs(15));
}

/// Warnings from the compiler and the assembler (distccd runs `as` on a
/// temporary file, our server pipes into it, `{standard input}`): the
/// client's normalisation makes honest hosts agree, the job needs no local
/// check, and the warnings show once.
fn honest_warnings_agree_after_normalisation<A: CompileHost, B: CompileHost>() {
    if !require_pair::<A, B>("honest_warnings_agree_after_normalisation") {
        return;
    }
    let a = A::start(ip("127.0.0.2"));
    let b = B::start(ip("127.0.0.3"));
    let mut env = ClientEnv::dual(&[a.hostspec(), b.hostspec()]);
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

/// Agreeing hosts that both report a compile error (a vote, not a failure):
/// nobody is accused, no object is written, and the diagnostics shown are
/// the compiler's, once, with its exit status.
fn agreed_compile_error_shows_diagnostics_once<A: CompileHost, B: CompileHost>() {
    if !require_pair::<A, B>("agreed_compile_error_shows_diagnostics_once") {
        return;
    }
    let a = A::start(ip("127.0.0.2"));
    let b = B::start(ip("127.0.0.3"));
    let env = ClientEnv::dual(&[a.hostspec(), b.hostspec()]);
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
    assert!(!std::fs::read_dir(env.work()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".o")));
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
    // Both hosts compiled it and reported the error as distccd does.
    wait_until(
        Duration::from_secs(30),
        "both hosts to log COMPILE_ERROR",
        || {
            let logs = (a.log_text(), b.log_text());
            if logs.0.contains(" COMPILE_ERROR ") && logs.1.contains(" COMPILE_ERROR ") {
                Ok(())
            } else {
                Err(format!(
                    "{}:\n{}\n{}:\n{}",
                    A::KIND,
                    logs.0,
                    B::KIND,
                    logs.1
                ))
            }
        },
    );
}

/// One real distccd 3.4 and one `dportage serve` on the same job return the
/// same bytes: users can mix both kinds of server in one host list.
#[test]
fn mixed_pairs_of_distccd_and_our_server_agree() {
    if !require_pair::<Distccd, DportageServer>("mixed_pairs_of_distccd_and_our_server_agree") {
        return;
    }
    let theirs = Distccd::at(ip("127.0.0.2"));
    let ours = DportageServer::at(ip("127.0.0.3"));
    assert_honest_pair_agrees(
        &theirs,
        &ours,
        &[theirs.hostspec(), ours.hostspec()],
        "distccd 3.4 + dportage serve",
    );

    // Without the spot check the two servers alone decide, and they still
    // agree at once (no third host exists to ask).
    let mut env = ClientEnv::dual(&[ours.hostspec(), theirs.hostspec()]);
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
