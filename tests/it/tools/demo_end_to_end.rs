//! `dportage demo`, the README's first command, end to end: a real coordinator,
//! real daemons (one behind a lying proxy), two members building with
//! redundancy 2 through real sockets and real gcc.

use std::process::Command;

use crate::support::dportage_bin;

#[test]
fn the_demo_catches_the_liar_defeats_the_framer_and_keeps_every_object_right() {
    let out = Command::new(dportage_bin())
        .args(["demo", "--hosts", "2"])
        .output()
        .expect("run dportage demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("objects identical to local 18 of 18"),
        "{stdout}"
    );
    assert!(
        stdout.contains("liar blacklisted           yes"),
        "{stdout}"
    );
    assert!(stdout.contains("liar still handed out      no"), "{stdout}");
    // The false report against an honest host struck its reporter instead.
    assert!(
        stdout.contains("framing attempt failed     yes (framer blacklisted: yes; framed host blacklisted: no; still handed out: yes)"),
        "{stdout}"
    );
    assert!(stdout.contains("caught: dportage: mismatch:"), "{stdout}");
    assert!(stdout.contains("result: every object right"), "{stdout}");
}
