//! Replays the byte streams the real distcc 3.4 client sent (captured in
//! `protocol-fixtures/`) to our server and compares our replies with the
//! real distccd 3.4's. Successful compiles must come back byte for byte
//! (same framing, same LZO bytes, same object); compile errors must carry
//! the same status and diagnostics (ours under `LC_ALL=C`, so ASCII quotes).

mod server_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dportage::protocol::{Limits, ProtocolVersion, Reply};
use server_support::*;

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
    let s = Server::start(&[]);
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
    let s = Server::start(&[]);
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
