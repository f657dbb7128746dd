//! Our host-list parser against the real `distcc` 3.4: `--show-hosts` and `-j`
//! read `DISTCC_HOSTS`, so every vector is fed to both and the answers compared.
//! Where we are deliberately stricter the real answer is asserted too, so this
//! file doubles as the list of divergences.

use crate::support::*;
use std::path::PathBuf;
use std::process::Command;

use dportage::hosts::parse_host_list;

/// What the real client says about a host list: `Some(slots, entries)` when
/// it parsed, `None` when it rejected the list.
fn ask_distcc(distcc: &PathBuf, hosts: &str) -> Option<(i64, Vec<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let run = |flag: &str| {
        let out = Command::new(distcc)
            .arg(flag)
            .env("DISTCC_HOSTS", hosts)
            .env("DISTCC_DIR", dir.path())
            .env_remove("DISTCC_VERBOSE")
            .env_remove("DISTCC_LOG")
            .output()
            .expect("run distcc");
        assert!(out.status.success(), "distcc {flag} failed for {hosts:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let jobs = run("-j");
    let jobs = jobs.trim();
    if jobs.is_empty() {
        return None;
    }
    let slots: i64 = jobs.parse().expect("distcc -j prints a number");
    let entries = run("--show-hosts").lines().map(String::from).collect();
    Some((slots, entries))
}

fn ours(hosts: &str) -> Option<(i64, Vec<String>)> {
    parse_host_list(hosts).ok().map(|l| {
        (
            i64::from(l.total_slots()),
            l.hosts.iter().map(|h| h.verbatim.clone()).collect(),
        )
    })
}

/// Spec §10.3 plus grammar corners on which we agree with distcc exactly.
const AGREED: &[&str] = &[
    "localhost",
    "a b:4000 c/7 d:4000/2 e/2:4000",
    "@ssh1 user@ssh2/5:/opt/distccd ssh3,lzo",
    "[::1]:3700/3,lzo [fe80::1]",
    "--localslots=9 --localslots_cpp=3 a",
    "a # comment b\nc",
    "h,cpp",
    "h,bogus",
    "h/0",
    "h:notaport",
    "h:3632junk",
    "h,lzox",
    "h/3junk",
    "localhost=3",
    "localhost:3632",
    "localhost,lzo",
    "localhost/3junk",
    "localhost/0",
    "localhost/",
    "localhost/3,lzo",
    "localhost/3:40",
    "h,lzo,cppx",
    "h,lzox,cpp",
    "h,cppx,lzo",
    "h,cpp,lzo",
    "h,down",
    "h,downx",
    "h,down,cpp",
    "h,lzo,down,cpp",
    "h,auth",
    "h,auth=svc",
    "h,authfoo,cpp",
    "h,auth=svc,cpp",
    "h,lzo,",
    "h,",
    "h,lzo junk",
    "h,lzo/3",
    "h/3,lzo",
    "h:3632,lzo",
    "h:3632/3,lzo",
    "h/2:4000/3",
    "h/3/4",
    "h=3",
    "h=3/2",
    "h:3632:3633",
    "h:3632=5",
    "h:3632/0",
    "h:65535",
    "@h:cmd/3",
    "@h/3:cmd,lzo",
    "@h:cmd,lzo/3",
    "u@h/2",
    "a@b@c",
    "@h,cpp",
    "user@",
    "@",
    "[::1]=3",
    "[::1]/2:3000",
    "[::1]:3000/2",
    "[::1",
    "[::1/3]",
    "[]",
    "[::1]:x",
    "[::1]junk",
    ":3632",
    "",
    " ",
    "# only comment",
    "--randomize",
    "--randomizefoo a",
    "--localslots",
    "--localslots_cpp",
    "--localslots=3",
    "--localslots/3 a",
    "a\r\nb#x\rc",
    "a \x0b b",
    "a#c b",
];

/// Lists distcc 3.4 accepts and we reject on purpose, with distcc's `-j`.
const STRICTER: &[(&str, i64)] = &[
    // Ports above 65535 wrap or truncate in distcc; we name the entry.
    ("h:99999", 4),
    ("h:65536", 4),
    ("h:4294967296", 4),
    // strtol quirks: empty, zero and signed ports.
    ("h:", 4),
    ("h:0", 4),
    ("h:-5", 4),
    ("h:+5", 4),
    // atoi quirks: negative and wrapped slot limits.
    ("h/-3", -3),
    ("h/4294967297", 1),
    // distcc reads the limit past the blank: `h` gets 3 slots and `3` is a host.
    ("h/ 3", 7),
    // A failed `--localslots=0` is re-read as a TCP host of that name.
    ("--localslots=0", 4),
    ("--localslots=", 4),
    // Anything after `--localslots` that is not `/N` or `=N` is ignored.
    ("--localslotsX a", 4),
    ("--localslots_cpp=0 a", 4),
    // A vertical tab inside an entry becomes part of the host name.
    ("a\x0bb", 4),
];

/// Lists distcc 3.4 rejects and we accept: distcc ends the *entry* at `#` but
/// keeps reading the host name past it (`h#x,cpp` is host `h#x` with `,cpp`);
/// we follow the documented grammar, where `#` starts a comment.
const LAXER: &[&str] = &["h#x,cpp", "h#,bogus"];

/// `,zstd` is dportage's own option (a dportage server, zstd bodies): distcc
/// 3.4 rejects the list, so such a list is for dportage clients only.
#[test]
fn zstd_option_is_ours_and_rejected_by_distcc() {
    let list = parse_host_list("h,zstd h2,lzo").expect("ours accepts ,zstd");
    assert!(list.hosts[0].zstd && !list.hosts[1].zstd);
    let Some(distcc) = real_distcc(module_path!()) else {
        return;
    };
    assert_eq!(ask_distcc(&distcc, "h,zstd"), None, "distcc's view changed");
}

#[test]
fn host_lists_agree_with_real_distcc() {
    let Some(distcc) = real_distcc(module_path!()) else {
        return;
    };
    let mut disagreements = Vec::new();
    for hosts in AGREED {
        let real = ask_distcc(&distcc, hosts);
        let mine = ours(hosts);
        if real != mine {
            disagreements.push(format!("{hosts:?}: distcc {real:?}, ours {mine:?}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
}

#[test]
fn stricter_cases_are_really_accepted_by_distcc() {
    let Some(distcc) = real_distcc(module_path!()) else {
        return;
    };
    for (hosts, real_slots) in STRICTER {
        let real = ask_distcc(&distcc, hosts);
        assert_eq!(
            real.map(|(slots, _)| slots),
            Some(*real_slots),
            "distcc's view of {hosts:?} changed"
        );
        let err = parse_host_list(hosts).expect_err(hosts);
        assert!(
            !err.to_string().is_empty(),
            "{hosts:?} must be rejected with a reason"
        );
    }
}

#[test]
fn laxer_cases_are_really_rejected_by_distcc() {
    let Some(distcc) = real_distcc(module_path!()) else {
        return;
    };
    for hosts in LAXER {
        assert_eq!(
            ask_distcc(&distcc, hosts),
            None,
            "distcc's view of {hosts:?} changed"
        );
        let list = parse_host_list(hosts).expect(hosts);
        assert_eq!(list.hosts.len(), 1);
        assert_eq!(list.hosts[0].verbatim, "h");
    }
}
