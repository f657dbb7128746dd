//! Shared packet-level pieces of the request and reply codecs: reading one
//! header (+ body) from the front of a buffer with every length checked first,
//! and writing INT/STR/BULK packets.

use bytes::{Buf, BytesMut};

use super::header::{encode_header, parse_header, Token, HEADER_LEN};
use super::{lzo, zstd, Limits, ProtocolError, ProtocolVersion};

/// Read an INT packet (`DIST`, `ARGC`, `DONE`, `STAT`…): `Ok(None)` until 12 bytes are there.
pub(crate) fn take_int(buf: &mut BytesMut, token: Token) -> Result<Option<u32>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let value = parse_header(buf, token)?;
    buf.advance(HEADER_LEN);
    Ok(Some(value))
}

/// Check the length in a body-carrying header without consuming anything.
/// `Ok(None)` until the header is complete.
pub(crate) fn peek_len(
    buf: &[u8],
    token: Token,
    what: &'static str,
    limit: u64,
) -> Result<Option<u32>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = parse_header(buf, token)?;
    if u64::from(len) > limit {
        return Err(ProtocolError::TooLong {
            what,
            len: u64::from(len),
            limit,
        });
    }
    Ok(Some(len))
}

/// Read a packet with a body of at most `limit` bytes: `Ok(None)` until complete.
pub(crate) fn take_body(
    buf: &mut BytesMut,
    token: Token,
    what: &'static str,
    limit: u64,
) -> Result<Option<BytesMut>, ProtocolError> {
    let Some(len) = peek_len(buf, token, what, limit)? else {
        return Ok(None);
    };
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    Ok(Some(buf.split_to(len as usize)))
}

/// Read a BULK packet and decompress it for v2/v3.
pub(crate) fn take_bulk(
    buf: &mut BytesMut,
    token: Token,
    what: &'static str,
    version: ProtocolVersion,
    limits: &Limits,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    let Some(body) = take_body(buf, token, what, u64::from(limits.max_body))? else {
        return Ok(None);
    };
    if !version.compressed() || body.is_empty() {
        if body.len() > limits.max_decompressed {
            return Err(ProtocolError::TooLong {
                what,
                len: body.len() as u64,
                limit: limits.max_decompressed as u64,
            });
        }
        return Ok(Some(body.to_vec()));
    }
    if version == ProtocolVersion::Zstd {
        return zstd::decompress(&body, limits.max_decompressed)
            .map(Some)
            .map_err(|source| ProtocolError::Zstd { what, source });
    }
    lzo::decompress(&body, limits.max_decompressed)
        .map(Some)
        .map_err(|source| ProtocolError::Lzo { what, source })
}

/// Bytes needed before the packet at the front of `buf` is complete (≥ 1).
pub(crate) fn wanted_for_packet(buf_len: usize, body_len: Option<u32>) -> usize {
    match body_len {
        None => HEADER_LEN.saturating_sub(buf_len).max(1),
        Some(len) => (HEADER_LEN + len as usize).saturating_sub(buf_len).max(1),
    }
}

pub(crate) fn put_int(out: &mut Vec<u8>, token: Token, value: u32) {
    encode_header(token, value, out);
}

pub(crate) fn put_str(out: &mut Vec<u8>, token: Token, bytes: &[u8]) {
    encode_header(token, bytes.len() as u32, out);
    out.extend_from_slice(bytes);
}

/// A BULK packet: compressed for v2/v3 unless empty (empty is always length 0).
pub(crate) fn put_bulk(out: &mut Vec<u8>, token: Token, version: ProtocolVersion, body: &[u8]) {
    if body.is_empty() || !version.compressed() {
        put_str(out, token, body);
    } else if version == ProtocolVersion::Zstd {
        let level = if token == Token::Doti {
            zstd::REQUEST_LEVEL
        } else {
            zstd::REPLY_LEVEL
        };
        put_str(out, token, &zstd::compress_at(body, level));
    } else {
        let compressed = lzo::compress(body);
        put_str(out, token, &compressed);
    }
}
