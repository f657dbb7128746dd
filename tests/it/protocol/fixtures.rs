//! Byte streams recorded from real distcc 3.4 (protocol-fixtures/): every request
//! and reply decodes, and re-encodes to exactly the same bytes — which also holds
//! our LZO compressor to LZO 2.10's lzo1x_1 output.

use std::path::PathBuf;

use bytes::BytesMut;
use dportage::protocol::{
    Limits, ProtocolError, ProtocolVersion, Reply, Request, RequestDecoder, RequestEvent,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("protocol-fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Complete exchanges: (capture name, protocol version).
const EXCHANGES: &[(&str, ProtocolVersion)] = &[
    ("proto1-compile-ok", ProtocolVersion::V1),
    ("proto1-compile-error", ProtocolVersion::V1),
    ("proto2-lzo-compile-ok-with-warning", ProtocolVersion::V2),
    ("proto2-lzo-compile-error", ProtocolVersion::V2),
    ("proto2-lzo-high-ratio-2MB-doti", ProtocolVersion::V2),
    ("accepted-compiler-usr-bin-gcc", ProtocolVersion::V1),
    ("compiler-not-found-on-server-stat-110", ProtocolVersion::V1),
];

#[test]
fn requests_decode_and_reencode_byte_for_byte() {
    for (name, version) in EXCHANGES {
        let bytes = fixture(&format!("{name}.c2s.bin"));
        let request = Request::decode_all(&bytes, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(request.version, *version, "{name}");
        assert_eq!(
            request.encode(),
            bytes,
            "{name}: re-encoded request differs"
        );
    }
}

#[test]
fn replies_decode_and_reencode_byte_for_byte() {
    for (name, version) in EXCHANGES {
        let bytes = fixture(&format!("{name}.s2c.bin"));
        let reply = Reply::decode_all(&bytes, *version, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reply.encode(), bytes, "{name}: re-encoded reply differs");
    }
}

#[test]
fn known_contents() {
    let ok = Reply::decode_all(
        &fixture("proto1-compile-ok.s2c.bin"),
        ProtocolVersion::V1,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(ok.status, 0);
    assert_eq!(ok.object.len(), 1104);
    assert!(ok.object.starts_with(b"\x7fELF"));
    let err = Reply::decode_all(
        &fixture("proto1-compile-error.s2c.bin"),
        ProtocolVersion::V1,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(err.status, 0x100);
    assert_eq!(err.stderr.len(), 90);
    let missing = Reply::decode_all(
        &fixture("compiler-not-found-on-server-stat-110.s2c.bin"),
        ProtocolVersion::V1,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(missing.status, 110 << 8);
    let big = Request::decode_all(
        &fixture("proto2-lzo-high-ratio-2MB-doti.c2s.bin"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(big.doti.len(), 2_000_145);
    let req =
        Request::decode_all(&fixture("proto1-compile-ok.c2s.bin"), &Limits::default()).unwrap();
    let argv: Vec<&[u8]> = req.argv.iter().map(Vec::as_slice).collect();
    assert_eq!(
        argv,
        [&b"x86_64-linux-gnu-gcc"[..], b"-c", b"x.c", b"-o", b"x.o"]
    );
}

#[test]
fn every_split_point_gives_the_same_events() {
    let bytes = fixture("proto2-lzo-compile-ok-with-warning.c2s.bin");
    let whole = Request::decode_all(&bytes, &Limits::default()).unwrap();
    for step in [1usize, 7, 12, 13, 100] {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut doti = None;
        for chunk in bytes.chunks(step) {
            buf.extend_from_slice(chunk);
            while doti.is_none() {
                match decoder.decode(&mut buf).unwrap() {
                    Some(RequestEvent::Doti(d)) => doti = Some(d),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        assert_eq!(doti.as_deref(), Some(whole.doti.as_slice()), "step {step}");
    }
}

#[test]
fn refused_requests() {
    let l = Limits::default();
    assert_eq!(
        Request::decode_all(&fixture("refused-dist-version-4.c2s.bin"), &l),
        Err(ProtocolError::UnsupportedVersion(4))
    );
    assert!(matches!(
        Request::decode_all(&fixture("refused-bad-first-token.c2s.bin"), &l),
        Err(ProtocolError::UnexpectedToken { .. } | ProtocolError::BadHeader(_))
    ));
    // distccd accepts DIST 0 as a quirk; we refuse it.
    assert_eq!(
        Request::decode_all(&fixture("quirk-dist-version-0-accepted.c2s.bin"), &l),
        Err(ProtocolError::UnsupportedVersion(0))
    );
    // Well-formed requests that distccd refused by policy still decode.
    for name in [
        "refused-compiler-sh-not-whitelisted",
        "refused-compiler-absolute-path",
        "refused-fplugin",
        "refused-by-DISTCC_CMDLIST",
    ] {
        Request::decode_all(&fixture(&format!("{name}.c2s.bin")), &l)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            fixture(&format!("{name}.s2c.bin")).is_empty(),
            "{name}: distccd refuses silently"
        );
    }
}
