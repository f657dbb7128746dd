//! `dportage __frame`: the framing attempt the demo shows failing. A member
//! (the identity in `$DPORTAGE_DIR`, established, with a host of its own)
//! files the report the issue's attacker filed: "this honest host's object
//! is wrong, mine is right", for a real job whose honest result it knows.
//! The coordinator re-runs the job on a referee and on both hosts, sees the
//! accused give the right object, and strikes the reporter instead.

use std::ffi::OsString;
use std::sync::Arc;

use crate::network::api::{result_hash, HostResultHash, HostsRequest, MismatchReport};
use crate::network::identity::{self, Identity};
use crate::network::CoordinatorClient;
use crate::trust::challenge::generate;

/// `dportage __frame --coordinator URL --accused HOST:PORT`: prints the
/// report's id and whether the coordinator asked for (and got) the input.
pub fn frame_main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (mut url, mut accused) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--coordinator", Some(v)) => url = Some(v.clone()),
            ("--accused", Some(v)) => accused = Some(v.clone()),
            _ => {
                eprintln!("usage: dportage __frame --coordinator URL --accused HOST:PORT");
                return crate::exitcode::BAD_ARGUMENTS;
            }
        }
    }
    let (Some(url), Some(accused)) = (url, accused) else {
        eprintln!("usage: dportage __frame --coordinator URL --accused HOST:PORT");
        return crate::exitcode::BAD_ARGUMENTS;
    };
    match frame(&url, &accused) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("dportage __frame: {e:#}");
            1
        }
    }
}

fn frame(url: &str, accused: &str) -> anyhow::Result<String> {
    use anyhow::Context;

    let me = Arc::new(Identity::load_or_create(&identity::dportage_dir())?);
    let gcc = crate::probe::resolve_compiler("gcc", None, &[]).context("gcc not found")?;
    let toolchain = crate::probe::probe("gcc", &gcc)?;
    // A real job, and its honest result (this machine's gcc is the
    // network's toolchain in the demo).
    let challenge = generate(std::process::id() as u64);
    let argv = challenge.argv("gcc");
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(&challenge.file), &challenge.source)?;
    let out = std::process::Command::new(&gcc)
        .args(&argv[1..])
        .current_dir(dir.path())
        .output()?;
    anyhow::ensure!(out.status.success(), "gcc failed on the framing job");
    let object = std::fs::read(dir.path().join(&argv[5]))?;
    let honest = result_hash(&blake3::hash(&object).to_hex(), 0);

    let rt = crate::runtime::current_thread()?;
    rt.block_on(async {
        let client = CoordinatorClient::new(url, me.clone())?;
        // Only hosts the coordinator handed to this key can be reported.
        let list = client
            .hosts(&HostsRequest {
                fingerprints: vec![toolchain.id.clone()],
                tz_offset_secs: 0,
                max: None,
                include_unconfined: false,
            })
            .await?;
        let target = list
            .hosts
            .iter()
            .find(|h| format!("{}:{}", h.host, h.port) == accused)
            .with_context(|| format!("{accused} is not in this key's host list"))?;
        let mine = list.hosts.iter().find(|h| h.id == me.id()).map_or_else(
            || "unlisted".to_string(),
            |h| format!("{}:{}", h.host, h.port),
        );
        let report = MismatchReport {
            host_id: Some(target.id),
            host_addr: accused.to_string(),
            input_hash: blake3::hash(challenge.source.as_bytes())
                .to_hex()
                .to_string(),
            args: argv.clone(),
            results: vec![
                HostResultHash {
                    host: accused.to_string(),
                    id: Some(target.id),
                    hash: honest.clone(),
                },
                // "My host returned another object, the right one."
                HostResultHash {
                    host: mine,
                    id: Some(me.id()),
                    hash: "cd".repeat(32),
                },
            ],
            time: crate::network::unix_now(),
            evidence_id: None,
            toolchain: Some(toolchain.id.clone()),
        };
        let ack = client.report(&report).await?;
        let mut line = format!(
            "report #{} against {} filed ({})",
            ack.report_id,
            target.id.short(),
            if ack.counted {
                "counted"
            } else {
                "not counted"
            }
        );
        if ack.evidence_wanted {
            let compressed = zstd::bulk::compress(challenge.source.as_bytes(), 3)?;
            client
                .upload_evidence(&report.input_hash, compressed)
                .await?;
            line.push_str("; input sent for adjudication");
        }
        Ok(line)
    })
}
