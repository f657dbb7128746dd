//! Hostile server bytes into the client's reply decoder. Checks: no panic;
//! memory bounded by the limits (run with `-malloc_limit_mb`); feeding in pieces
//! gives the same reply or the same error as decoding whole; `wanted` is never
//! 0; an accepted reply re-encodes to one that decodes equal.
#![no_main]

use bytes::BytesMut;
use dportage::protocol::{Limits, ProtocolError, ProtocolVersion, Reply, ReplyDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    // Low 2 bits: the version the client asked for; the rest: read size.
    let version = match control & 3 {
        0 => ProtocolVersion::V1,
        1 | 2 => ProtocolVersion::V2,
        _ => ProtocolVersion::V3,
    };
    let chunk = usize::from(control >> 2) + 1;
    let limits = Limits {
        max_body: 1 << 20,
        max_decompressed: 4 << 20,
        max_stream_body: 64 << 10,
        ..Limits::default()
    };
    let whole = Reply::decode_all(bytes, version, &limits);
    let split = feed(bytes, chunk, version, limits);

    match &whole {
        Ok(reply) => {
            assert_eq!(split.as_ref(), Ok(&Some(reply.clone())));
            assert!(reply.stderr.len() <= limits.max_stream_body as usize);
            assert!(reply.stdout.len() <= limits.max_stream_body as usize);
            assert!(reply.object.len() <= limits.max_decompressed);
            assert!(reply.status == 0 || reply.object.is_empty());
            let again = Reply::decode_all(&reply.encode(), version, &limits);
            assert_eq!(again.as_ref(), Ok(reply));
        }
        Err(ProtocolError::Incomplete) => assert_eq!(split, Ok(None)),
        Err(ProtocolError::TrailingBytes(n)) => {
            assert!(*n > 0);
            assert!(matches!(split, Ok(Some(_))));
        }
        Err(e) => assert_eq!(split.as_ref().err(), Some(e)),
    }
});

/// Feed `bytes` in `chunk`-sized reads, as the client's read loop would.
fn feed(
    bytes: &[u8],
    chunk: usize,
    version: ProtocolVersion,
    limits: Limits,
) -> Result<Option<Reply>, ProtocolError> {
    let mut decoder = ReplyDecoder::new(version, limits);
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        if let Some(reply) = decoder.decode(&mut buf)? {
            return Ok(Some(reply));
        }
        assert!(decoder.wanted(buf.len()) > 0);
    }
    Ok(None)
}
