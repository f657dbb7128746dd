//! distcc's own monitor sees our jobs: the state files the client keeps
//! while a job runs are the ones distcc 3.4 writes.

use std::process::Stdio;
use std::time::Duration;

use dportage::jobstate::binstate::Phase;

use crate::support::client::ClientEnv;
use crate::support::monitor::*;
use crate::support::*;

/// A job on a host whose compiler takes 4 s: `distccmon-text 1` shows it
/// (pid, phase, input, host and slot) while it compiles, and the state file
/// is gone when the client exits.
#[test]
fn distccmon_text_shows_a_dportage_job_in_flight() {
    let test = "distccmon_text_shows_a_dportage_job_in_flight";
    if !require_peer(test, &DISTCCMON) || !require_masquerade_dir(test) {
        return;
    }
    let (server, _slow) = slow_server(ip("127.0.0.2"), 4);
    let env = ClientEnv::new(&server.addr.to_string());
    env.write("hello.c", "int hello(void) { return 42; }\n");
    let client = ChildGuard::new(
        env.command(
            env.distcc_link(),
            &["gcc", "-c", "hello.c", "-o", "hello.o"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let pid = client.id();
    let state_dir = env.distcc_dir().join("state");
    let files = wait_for_state_files(&state_dir, pid, 1, Phase::Compile);
    assert_eq!(files[0].0, format!("binstate_{pid}"));
    assert_eq!(files[0].1.file, "hello.c");
    assert_eq!(files[0].1.host, "127.0.0.2");

    let lines = distccmon_frame(&env.distcc_dir(), "hello.c", 1);
    let words: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        words,
        [
            pid.to_string().as_str(),
            "Compile",
            "hello.c",
            "127.0.0.2[0]"
        ],
        "{lines:?}"
    );

    let out = client.into_inner().wait_with_output().unwrap();
    assert_success(&out, "the compile on the slow host");
    assert_eq!(
        server
            .wait_for_log("COMPILE_OK", Duration::from_secs(10))
            .matches("COMPILE_OK")
            .count(),
        1
    );
    assert!(
        state_files_of(&state_dir, pid).is_empty(),
        "the state file outlived the client"
    );
}
