//! Challenge jobs (`trust::challenge`) sent with the coordinator's one-shot
//! caller (`job_call`) to real hosts, distccd 3.4 and `dportage serve`: every
//! generated challenge is valid C, and an honest host's digest is exactly the
//! object a local compile makes, so a challenge can tell an honest host from
//! a lying one.

use std::fs;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::on_both_hosts;
use crate::support::dual::CompileHost;
use dportage::job_call::{call, JobCall};
use dportage::protocol::ProtocolVersion;
use dportage::trust::challenge::generate;

fn challenges_match_local_compiles<H: CompileHost>() {
    let test = "challenges_match_local_compiles";
    if !H::require(test) {
        return;
    }
    let host = H::start(Ipv4Addr::new(127, 0, 0, 81));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..12u64 {
        let challenge = generate(seed);
        let argv = challenge.argv("gcc");
        fs::write(dir.path().join(&challenge.file), &challenge.source).unwrap();
        let local = std::process::Command::new("gcc")
            .args(&argv[1..])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            local.status.success(),
            "challenge {seed} is not valid C:\n{}\n{}",
            String::from_utf8_lossy(&local.stderr),
            challenge.source
        );
        let object = fs::read(dir.path().join(&argv[5])).unwrap();
        let version = if seed % 2 == 0 {
            ProtocolVersion::V1
        } else {
            ProtocolVersion::V2
        };
        let digest = rt
            .block_on(call(&JobCall {
                addr: host.addr(),
                version,
                argv: &argv,
                source: challenge.source.as_bytes(),
                timeout: Duration::from_secs(30),
                ticket_pass: None,
            }))
            .unwrap_or_else(|e| panic!("{} on challenge {seed}: {e}", H::KIND));
        assert_eq!(digest.status, 0, "{} on challenge {seed}", H::KIND);
        assert_eq!(
            digest.object,
            *blake3::hash(&object).as_bytes(),
            "{} compiled challenge {seed} differently from this machine",
            H::KIND
        );
    }
    // Nothing listens: an error, not a hang.
    let dead = std::net::TcpListener::bind("127.0.0.82:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let challenge = generate(99);
    let err = rt
        .block_on(call(&JobCall {
            addr,
            version: ProtocolVersion::V1,
            argv: &challenge.argv("gcc"),
            source: challenge.source.as_bytes(),
            timeout: Duration::from_secs(5),
            ticket_pass: None,
        }))
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

on_both_hosts!(challenges_match_local_compiles);
