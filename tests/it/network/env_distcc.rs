//! The printed environment really builds: two real distccd 3.4 hosts on
//! 127.0.0.x register through the heartbeat API, a member evals `dportage`'s
//! sh lines and compiles through dportage's client (no local fallback) on
//! both, and the objects equal a local compile. The real `distcc` 3.4 in the
//! same environment never uses those hosts (`,verify`): it compiles locally.
//! `dportage CMD` runs CMD in it.

use std::fs;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::network::*;
use crate::support::*;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::Identity;

const HELLO: &str =
    "int square(int x) { return x * x; }\nint main(void) { return square(3) - 9; }\n";

#[test]
fn printed_environment_compiles_verified_and_real_distcc_stays_local() {
    if !require_distcc("printed_environment_compiles_verified_and_real_distcc_stays_local") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = crate::support::network::runtime();
    // Hosts established at once: two probationary hosts are never paired.
    let mut cfg = CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("coord"));
    cfg.standing_rules = dportage::trust::standing::StandingRules::AT_ONCE;
    let coord: Coordinator = rt.block_on(Coordinator::bind(cfg)).unwrap();
    let url = coord.url();
    let hosts = [
        DistccdOptions::new(Ipv4Addr::new(127, 0, 0, 61), "127.0.0.0/8")
            .jobs(2)
            .log_level("info")
            .start(),
        DistccdOptions::new(Ipv4Addr::new(127, 0, 0, 62), "127.0.0.0/8")
            .jobs(2)
            .log_level("info")
            .start(),
    ];
    // Each distccd has its own owner; the member shares the first one's
    // DPORTAGE_DIR (the documented single-user setup).
    let dirs = [tmp.path().join("owner-1"), tmp.path().join("owner-2")];
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

    let out = run_dportage(&dirs[0], &["--coordinator", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let vars = eval_in_sh(
        &lines,
        &[
            "DISTCC_HOSTS",
            "DPORTAGE_REDUNDANCY",
            "DPORTAGE_SPOTCHECK",
            "DPORTAGE_COORDINATOR",
            "FEATURES",
            "MAKEOPTS",
        ],
    );
    let get = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let listed = get("DISTCC_HOSTS");
    for d in &hosts {
        assert!(listed.contains(&format!("{}/2,lzo", d.addr)), "{listed}");
    }
    assert_eq!(listed.split_whitespace().count(), 2);
    assert_eq!(get("DPORTAGE_REDUNDANCY"), "2");
    // Among strangers, spot checks are on: they catch colluding pairs.
    assert_eq!(get("DPORTAGE_SPOTCHECK"), "0.02");
    assert_eq!(get("DPORTAGE_COORDINATOR"), url);
    assert_eq!(get("FEATURES"), "distcc -network-sandbox");
    assert_eq!(get("MAKEOPTS"), "-j2", "4 slots, each job on 2 hosts");

    // csh and fish forms name the same values.
    for (shell, prefix) in [
        ("csh", "setenv DISTCC_HOSTS "),
        ("fish", "set -gx DISTCC_HOSTS "),
    ] {
        let out = run_dportage(&dirs[0], &["--coordinator", &url, "--shell", shell], &[]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "{shell}: {text}"
        );
    }

    // The real distcc with exactly that environment never uses the network's
    // hosts (they are `,verify`): without fallback it fails, with it it
    // compiles locally. No unverified remote object, ever.
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("hello.c"), HELLO).unwrap();
    fs::write(work.join("lines.sh"), &lines).unwrap();
    fs::create_dir(tmp.path().join("distcc-state")).unwrap();
    let local = Command::new("gcc")
        .args(["-O2", "-c", "hello.c", "-o", "local.o"])
        .current_dir(&work)
        .status()
        .unwrap();
    assert!(local.success());
    let reference = fs::read(work.join("local.o")).unwrap();
    let before: usize = hosts.iter().map(Distccd::compile_ok_count).sum();
    let real = |script: &str, fallback: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("eval \"$(cat lines.sh)\"\n{script}"))
            .env("REAL_DISTCC", DISTCC)
            .current_dir(&work)
            .env("DISTCC_FALLBACK", fallback)
            .env("DISTCC_DIR", tmp.path().join("distcc-state"))
            .env_remove("DISTCC_HOSTS")
            .output()
            .unwrap()
    };
    let out = real("\"$REAL_DISTCC\" gcc -O2 -c hello.c -o none.o", "0");
    assert!(
        !out.status.success(),
        "distcc 3.4 must refuse `,verify` hosts"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unrecognized option"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!work.join("none.o").exists());
    let out = real("\"$REAL_DISTCC\" gcc -O2 -c hello.c -o fallback.o", "1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(work.join("fallback.o")).unwrap(), reference);

    // dportage's client, as `distcc`, compiles on both real distccd hosts and
    // verifies (no local fallback, so a remote failure fails the test).
    let ours = work.join("bin");
    fs::create_dir(&ours).unwrap();
    std::os::unix::fs::symlink(dportage_bin(), ours.join("distcc")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("set -e\neval \"$(cat lines.sh)\"\nfor i in 1 2; do bin/distcc gcc -O2 -c hello.c -o remote$i.o; done\n")
        .current_dir(&work)
        .env("DISTCC_FALLBACK", "0")
        .env("DPORTAGE_SPOTCHECK", "0")
        .env("DPORTAGE_DIR", &dirs[0])
        .env("DISTCC_DIR", tmp.path().join("distcc-state"))
        .env_remove("DISTCC_HOSTS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 1..=2 {
        assert_eq!(
            fs::read(work.join(format!("remote{i}.o"))).unwrap(),
            reference,
            "remote{i}.o differs from the local object"
        );
    }
    wait_until(Duration::from_secs(20), "distccd to log the jobs", || {
        hosts.iter().map(Distccd::compile_ok_count).sum::<usize>() >= before + 4
    });

    // `dportage CMD ARGS…` runs CMD in the same environment.
    let out = run_dportage(
        &dirs[0],
        &[
            "--coordinator",
            &url,
            "sh",
            "-c",
            "printf '%s|%s' \"$DISTCC_HOSTS\" \"$DPORTAGE_REDUNDANCY\"",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (h, r) = text.split_once('|').unwrap();
    assert_eq!(h.split_whitespace().count(), 2, "{text}");
    assert_eq!(r, "2");
    // CMD's exit status is passed through.
    let out = run_dportage(
        &dirs[0],
        &["--coordinator", &url, "sh", "-c", "exit 7"],
        &[],
    );
    assert_eq!(out.status.code(), Some(7));
    drop(coord);
}
