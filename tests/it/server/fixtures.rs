//! Replays the byte streams the real distcc 3.4 client sent (captured in
//! `protocol-fixtures/`) to our server and compares our replies with the
//! real distccd 3.4's. Successful compiles must come back byte for byte
//! (same framing, same LZO bytes, same object); compile errors must carry
//! the same status and diagnostics (ours under `LC_ALL=C`, so ASCII quotes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::server::*;
use crate::support::*;
use dportage::protocol::{Limits, ProtocolVersion, Reply};

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("protocol-fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn decode(bytes: &[u8], version: ProtocolVersion) -> Reply {
    Reply::decode_all(bytes, version, &Limits::default())
        .unwrap_or_else(|e| panic!("undecodable reply ({} bytes): {e}", bytes.len()))
}

/// The real distccd's compiler ran in a UTF-8 locale, ours in `C`.
fn ascii_quotes(text: &[u8]) -> String {
    String::from_utf8_lossy(text).replace(['‘', '’'], "'")
}

#[test]
fn successful_compiles_come_back_byte_identical() {
    let s = DportageServer::start(&[]);
    let mut ok = 0;
    for name in [
        "proto1-compile-ok",
        "proto2-lzo-compile-ok-with-warning",
        "proto2-lzo-high-ratio-2MB-doti",
        "accepted-compiler-usr-bin-gcc",
    ] {
        let real = fixture(&format!("{name}.s2c.bin"));
        assert!(real.starts_with(b"DONE"), "{name}: not a reply fixture");
        let ex = exchange(
            s.addr(),
            &fixture(&format!("{name}.c2s.bin")),
            false,
            Duration::from_secs(60),
        );
        ok += 1;
        let version = if real.starts_with(b"DONE00000002") {
            ProtocolVersion::V2
        } else {
            ProtocolVersion::V1
        };
        let (ours_decoded, real_decoded) = (decode(&ex.reply, version), decode(&real, version));
        assert_eq!(
            ours_decoded.status,
            0,
            "{name}: {}",
            ascii_quotes(&ours_decoded.stderr)
        );
        assert_eq!(
            ascii_quotes(&ours_decoded.stderr),
            ascii_quotes(&real_decoded.stderr),
            "{name}: diagnostics"
        );
        assert!(
            ours_decoded.object == real_decoded.object,
            "{name}: object differs from the real distccd's"
        );
        if real_decoded.stderr.is_ascii() {
            assert!(
                ex.reply == real,
                "{name}: reply bytes differ from the real distccd's"
            );
        }
    }
    s.wait_counter("dcc_compile_ok", ok);
}

#[test]
fn compile_errors_come_back_as_the_real_distccd_sends_them() {
    let s = DportageServer::start(&[]);
    for (name, version) in [
        ("proto1-compile-error", ProtocolVersion::V1),
        ("proto2-lzo-compile-error", ProtocolVersion::V2),
    ] {
        let real = decode(&fixture(&format!("{name}.s2c.bin")), version);
        let ex = exchange(
            s.addr(),
            &fixture(&format!("{name}.c2s.bin")),
            false,
            Duration::from_secs(60),
        );
        let ours = decode(&ex.reply, version);
        assert_ne!(real.status, 0);
        assert_eq!(ours.status, real.status, "{name}");
        assert_eq!(
            ascii_quotes(&ours.stderr),
            ascii_quotes(&real.stderr),
            "{name}"
        );
        assert!(ours.stdout.is_empty() && ours.object.is_empty(), "{name}");
    }
    s.wait_counter("dcc_compile_error", 2);
    assert_honest_job_succeeds(&s);
}

/// Dual dispatch compares two servers' replies by hash: two servers with
/// different job directories (different TMPDIRs, so different job paths)
/// must send the same bytes for the same request, debug info and
/// diagnostics included.
#[test]
fn two_servers_send_identical_replies() {
    let a = DportageServer::start(&[]);
    let b = DportageServer::start(&["--jobs", "1"]);
    assert_ne!(a.tmpdir(), b.tmpdir());
    let c_source = preprocess(
        "#include <stdio.h>\nstatic int unused_thing;\nint main(void) { int w; printf(\"hi\\n\"); return 0; }\n",
        "hello.c",
    );
    let cpp_source = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.cpp");
        std::fs::write(
            &path,
            "#include <vector>\nint f(int n) { std::vector<int> v(n); int unused; return (int)v.size(); }\n",
        )
        .unwrap();
        let out = std::process::Command::new("g++")
            .arg("-E")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let cases: [(&[&str], &[u8]); 4] = [
        (
            &[
                "x86_64-linux-gnu-gcc",
                "-Wall",
                "-g",
                "-c",
                "hello.c",
                "-o",
                "hello.o",
            ],
            &c_source,
        ),
        (
            &[
                "x86_64-linux-gnu-gcc",
                "-g3",
                "-O2",
                "-c",
                "hello.c",
                "-o",
                "hello.o",
            ],
            &c_source,
        ),
        (
            &[
                "x86_64-linux-gnu-g++",
                "-Wall",
                "-g",
                "-c",
                "v.cpp",
                "-o",
                "v.o",
            ],
            &cpp_source,
        ),
        (
            &[
                "x86_64-linux-gnu-g++",
                "-g",
                "-O2",
                "-S",
                "v.cpp",
                "-o",
                "v.s",
            ],
            &cpp_source,
        ),
    ];
    for (argv, source) in cases {
        for version in [1, 2] {
            let req = request(version, argv, source);
            let replies: Vec<Vec<u8>> = [&a, &b]
                .iter()
                .map(|s| exchange(s.addr(), &req, false, Duration::from_secs(120)).reply)
                .collect();
            let v = if version == 1 {
                ProtocolVersion::V1
            } else {
                ProtocolVersion::V2
            };
            let decoded = decode(&replies[0], v);
            assert_eq!(
                decoded.status,
                0,
                "{argv:?}: {}",
                ascii_quotes(&decoded.stderr)
            );
            assert!(!decoded.object.is_empty());
            if argv.contains(&"-Wall") {
                assert!(
                    !decoded.stderr.is_empty(),
                    "{argv:?}: no warnings came back"
                );
            }
            assert!(
                replies[0] == replies[1],
                "{argv:?} (protocol {version}): the two servers' replies differ"
            );
            for s in [&a, &b] {
                let path = s.tmpdir().to_str().unwrap().as_bytes().to_vec();
                assert!(
                    !decoded
                        .object
                        .windows(path.len())
                        .any(|w| w == path.as_slice()),
                    "{argv:?}: the object names a server's TMPDIR"
                );
            }
        }
    }
}
