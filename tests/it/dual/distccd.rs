//! Verified dispatch scenarios that exist for the real distccd 3.4 hosts
//! only: failures that are not votes, timeouts, hedging, host choice, jobs
//! that stay local, the local arbiter and concurrency.

use dportage::client::evidence::pending_reports;

use super::{c_job, C_SOURCE};
use crate::support::client::ClientEnv;
use crate::support::dual::*;
use crate::support::*;

/// Refusals, dead hosts, truncated replies and protocol garbage are not votes:
/// nobody is accused, the host is replaced, and the object is right.
#[test]
fn failures_are_replaced_not_reported() {
    if !require_distcc("failures_are_replaced_not_reported") {
        return;
    }
    let a = Distccd::at(ip("127.0.0.2"));
    let dead = DeadPort::on(ip("127.0.0.7"));
    let refusing = Liar::start(ip("127.0.0.8"), a.addr, &format!("status={}", 110 << 8));
    let truncating = Liar::start(ip("127.0.0.9"), a.addr, "truncate");
    let garbage = Liar::start(ip("127.0.0.10"), a.addr, "garbage");
    let b = Distccd::at(ip("127.0.0.3"));
    let env = ClientEnv::dual(&[
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
    let silent = Distccd::at_as(ip("127.0.0.4"), Behaviour::Stuck);
    let a = Distccd::at(ip("127.0.0.2"));
    let b = Distccd::at(ip("127.0.0.3"));
    let mut env = ClientEnv::dual(&[silent.hostspec(), a.hostspec(), b.hostspec()]);
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
    let a = Distccd::at(ip("127.0.0.2"));
    // A second daemon on the same address is not a second opinion.
    let same = Distccd::at(ip("127.0.0.2"));
    let mut env = ClientEnv::dual(&[a.hostspec(), same.hostspec()]);
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

/// A host far behind its peer is hedged: another host gets the job and the
/// build does not wait for the slow one. The hedge is a later draw from the
/// pool, so this machine confirms the agreement before the object is written.
#[test]
fn lagging_host_is_hedged() {
    if !require_distcc("lagging_host_is_hedged") {
        return;
    }
    let slow = Distccd::at_as(ip("127.0.0.4"), Behaviour::Stuck);
    let a = Distccd::at(ip("127.0.0.2"));
    let b = Distccd::at(ip("127.0.0.3"));
    let mut env = ClientEnv::dual(&[slow.hostspec(), a.hostspec(), b.hostspec()]);
    env.set("DPORTAGE_HEDGE_MS", "200");
    env.set("DISTCC_VERBOSE", "1");
    let started = std::time::Instant::now();
    let out = c_job(&env);
    assert_success(&out, "compile with a lagging host");
    assert!(env.read("x.o") == env.read("ref.o"));
    assert!(mismatch_lines(&out).is_empty(), "{}", stderr_text(&out));
    assert!(
        stderr_text(&out).contains("so this machine confirms"),
        "the hedge's agreement was not confirmed here: {}",
        stderr_text(&out)
    );
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
    let a = Distccd::at(ip("127.0.0.2"));
    let same_net = Distccd::at(ip("127.0.0.3"));
    let other_net = Distccd::at(ip("127.0.1.2"));
    let env = ClientEnv::dual(&[a.hostspec(), same_net.hostspec(), other_net.hostspec()]);
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
    let a = Distccd::at(ip("127.0.0.2"));
    let b = Distccd::at(ip("127.0.0.3"));
    let mut env = ClientEnv::dual(&[a.hostspec(), b.hostspec()]);
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

/// The hosts disagree: this machine compiles the same preprocessed input as
/// arbiter at once, and no further host is asked to break the tie. A host
/// that disagrees with it is named only when a host agrees with it.
#[test]
fn local_arbiter_decides_disputes_at_once() {
    if !require_distcc("local_arbiter_decides_disputes_at_once") {
        return;
    }
    let honest = Distccd::at(ip("127.0.0.2"));
    let flip = Liar::start(ip("127.0.0.5"), honest.addr, "flip");
    let replace = Liar::start(ip("127.0.0.6"), honest.addr, "replace");

    // Two hosts, one lying.
    let env = ClientEnv::dual(&[flip.hostspec(), honest.hostspec()]);
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

    // Three hosts listed, the two liars drawn first: they disagree, and the
    // honest third is not asked to break the tie (had it been a colluder, it
    // could have outvoted an honest host). With no host agreeing with this
    // machine, nobody is accused.
    let mut env = ClientEnv::dual(&[flip.hostspec(), replace.hostspec(), honest.hostspec()]);
    env.set("DISTCC_VERBOSE", "1");
    let out = c_job(&env);
    assert_success(&out, "dispute between the first two hosts");
    assert!(
        env.read("x.o") == env.read("ref.o"),
        "a disputed object was written"
    );
    let err = stderr_text(&out);
    assert!(mismatch_lines(&out).is_empty(), "{err}");
    assert!(err.contains("toolchain may differ"), "{err}");
    let arbiter_line = err
        .lines()
        .find(|l| l.contains("here as arbiter"))
        .unwrap_or_else(|| panic!("no arbiter line: {err}"));
    assert!(
        arbiter_line.contains("the hosts disagree")
            && arbiter_line.contains(&flip.hostspec())
            && arbiter_line.contains(&replace.hostspec())
            && !arbiter_line.contains(&honest.hostspec()),
        "{arbiter_line}"
    );
    assert!(
        !err.contains(&format!("sending x.c to {}", honest.hostspec())),
        "a third host was asked: {err}"
    );
    assert!(pending_reports(&env.dportage_dir()).unwrap().is_empty());
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
    let honest = Distccd::at(ip("127.0.0.2"));
    let flip = Liar::start(ip("127.0.0.5"), honest.addr, "flip");
    let replace = Liar::start(ip("127.0.0.6"), honest.addr, "replace");
    let env = ClientEnv::dual(&[flip.hostspec(), replace.hostspec()]);
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
    let a = Distccd::at(ip("127.0.0.2"));
    let b = Distccd::at(ip("127.0.0.3"));
    let c = Distccd::at(ip("127.0.0.4"));
    let mut env = ClientEnv::dual(&[
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
                env.distcc_link(),
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
    let a = Distccd::at(ip("127.0.0.2"));
    let mut env = ClientEnv::dual(&[a.hostspec()]);
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
