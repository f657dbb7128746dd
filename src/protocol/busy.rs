//! dportage's busy answer, sent instead of a reply when a server will not
//! queue a request: `BUSY` + 8 hex digits (the length of a reason) + the
//! reason as UTF-8 text.
//!
//! It is deliberately not a `DONE`…`STAT` reply. The real distcc 3.4 client
//! treats a reply with `STAT` exit code 1–127 as a compile error: with
//! `DISTCC_SKIP_LOCAL_RETRY` it fails the build with that code (114 for
//! EXIT_BUSY), and without it it recompiles locally but warns that the local
//! result differed. A token it does not expect instead is a failure to
//! distribute, as if the server had closed: it backs the host off, tries
//! another, and compiles locally, whatever `DISTCC_SKIP_LOCAL_RETRY` says, and
//! prints the reason in its "error context" line. dportage's client reads
//! the answer as "busy": it tries another host without backing this one off.

use bytes::{Buf, BytesMut};

use super::header::{encode_header, parse_header, Token, HEADER_LEN};
use super::ProtocolError;

/// Longest reason accepted: a sentence, not data.
pub const MAX_BUSY_REASON: u32 = 4096;

/// The busy answer carrying `reason` (cut to [`MAX_BUSY_REASON`] bytes).
pub fn encode_busy(reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_BUSY_REASON as usize);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut out = Vec::with_capacity(HEADER_LEN + reason.len());
    encode_header(Token::Busy, reason.len() as u32, &mut out);
    out.extend_from_slice(reason);
    out
}

/// Whether `buf` begins a busy answer (as far as it goes).
pub fn starts_busy(buf: &[u8]) -> bool {
    let token = Token::Busy.as_bytes();
    let n = buf.len().min(token.len());
    n > 0 && buf[..n] == token[..n]
}

/// Take a whole busy answer from the front of `buf`: `Ok(None)` until it is
/// complete, then its reason (invalid UTF-8 shown lossily).
pub fn take_busy(buf: &mut BytesMut) -> Result<Option<String>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = parse_header(buf, Token::Busy)?;
    if len > MAX_BUSY_REASON {
        return Err(ProtocolError::TooLong {
            what: "BUSY reason",
            len: u64::from(len),
            limit: u64::from(MAX_BUSY_REASON),
        });
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let reason = buf.split_to(len as usize);
    Ok(Some(String::from_utf8_lossy(&reason).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answers_round_trip_and_are_bounded() {
        let wire = encode_busy("queue full");
        assert_eq!(&wire[..], b"BUSY0000000aqueue full");
        for cut in 0..wire.len() {
            assert!(starts_busy(&wire[..cut]) || cut == 0);
            let mut part = BytesMut::from(&wire[..cut]);
            assert_eq!(take_busy(&mut part), Ok(None), "cut at {cut}");
        }
        let mut whole = BytesMut::from(&wire[..]);
        whole.extend_from_slice(b"rest");
        assert_eq!(take_busy(&mut whole), Ok(Some("queue full".into())));
        assert_eq!(&whole[..], b"rest");

        assert!(!starts_busy(b"DONE00000001"));
        assert!(!starts_busy(b""));
        let long = "é".repeat(3000);
        let wire = encode_busy(&long);
        assert!(wire.len() <= HEADER_LEN + MAX_BUSY_REASON as usize);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(take_busy(&mut buf).unwrap().unwrap().starts_with('é'));
        let mut huge = BytesMut::from(&b"BUSY00100000"[..]);
        assert!(matches!(
            take_busy(&mut huge),
            Err(ProtocolError::TooLong { .. })
        ));
    }
}
