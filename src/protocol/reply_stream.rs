//! Server → client, streamed: the same reply as [`super::ReplyDecoder`], but
//! the object (`DOTO`) comes out in bounded, decompressed pieces instead of
//! one buffer, so the client's memory stays flat whatever size a server
//! claims or a bomb expands to. The diagnostics (`SERR`, `SOUT`) are still
//! read whole, bounded by [`Limits::max_stream_body`].

use bytes::{Buf, BytesMut};

use super::codec::{peek_len, take_bulk, take_int, wanted_for_packet};
use super::header::{Token, HEADER_LEN};
use super::lzo::{expansion_bound, LzoError};
use super::{lzo_stream, zstd, Limits, ProtocolError, ProtocolVersion};

/// Largest object piece yielded at once (and the most compressed input
/// asked for per read while in the body).
pub const OBJECT_CHUNK: usize = 256 * 1024;

/// What the streaming reply decoder yields, in this order: one `Head`, any
/// number of `Object` pieces (only when the status is 0), one `End`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyEvent {
    Head(ReplyHead),
    /// The next piece of the decompressed object (never empty).
    Object(Vec<u8>),
    /// The reply is complete and valid: the body's length matched and its
    /// compressed stream ended properly. Only now may the object be used.
    End,
}

/// Everything in a reply but the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyHead {
    /// Raw wait status of the compiler.
    pub status: u32,
    pub stderr: Vec<u8>,
    pub stdout: Vec<u8>,
}

#[derive(Debug)]
enum Body {
    Plain,
    Lzo(lzo_stream::StreamDecoder),
    Zstd(Box<zstd::StreamDecoder>),
}

#[derive(Debug)]
enum State {
    Done,
    Stat,
    Serr,
    Sout,
    DotoHeader,
    /// `left` compressed bytes of the body still to come.
    DotoBody {
        left: usize,
        body: Body,
    },
    /// Body fully fed: drain what the decompressor still holds, then check it.
    Draining(Body),
    Finished,
}

/// Incremental, streaming reply decoder (sans-I/O, like [`super::ReplyDecoder`]).
#[derive(Debug)]
pub struct ReplyStreamDecoder {
    version: ProtocolVersion,
    limits: Limits,
    state: State,
    status: u32,
    stderr: Vec<u8>,
    /// The header length of the packet being waited for (read-size hint).
    pending_body: Option<u32>,
}

impl ReplyStreamDecoder {
    pub fn new(version: ProtocolVersion, limits: Limits) -> Self {
        Self {
            version,
            limits,
            state: State::Done,
            status: 0,
            stderr: Vec::new(),
            pending_body: None,
        }
    }

    /// The next event from the front of `buf`; `Ok(None)`: more bytes needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ReplyEvent>, ProtocolError> {
        let result = self.decode_inner(buf);
        let token = match self.state {
            State::Serr => Some(Token::Serr),
            State::Sout => Some(Token::Sout),
            _ => None,
        };
        self.pending_body = token.and_then(|t| peek_len(buf, t, "", u64::MAX).ok().flatten());
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<ReplyEvent>, ProtocolError> {
        let (version, limits) = (self.version, self.limits);
        loop {
            match &mut self.state {
                State::Done => {
                    if super::busy::starts_busy(buf) {
                        return match super::busy::take_busy(buf)? {
                            Some(reason) => Err(ProtocolError::Busy(reason)),
                            None => Ok(None),
                        };
                    }
                    let Some(v) = take_int(buf, Token::Done)? else {
                        return Ok(None);
                    };
                    if v != version.number() {
                        return Err(ProtocolError::VersionMismatch {
                            sent: version.number(),
                            got: v,
                        });
                    }
                    self.state = State::Stat;
                }
                State::Stat => {
                    let Some(status) = take_int(buf, Token::Stat)? else {
                        return Ok(None);
                    };
                    self.status = status;
                    self.state = State::Serr;
                }
                State::Serr => {
                    let streams = limits.for_streams();
                    let Some(body) = take_bulk(buf, Token::Serr, "SERR", version, &streams)? else {
                        return Ok(None);
                    };
                    self.stderr = body;
                    self.state = State::Sout;
                }
                State::Sout => {
                    let streams = limits.for_streams();
                    let Some(stdout) = take_bulk(buf, Token::Sout, "SOUT", version, &streams)?
                    else {
                        return Ok(None);
                    };
                    self.state = State::DotoHeader;
                    return Ok(Some(ReplyEvent::Head(ReplyHead {
                        status: self.status,
                        stderr: std::mem::take(&mut self.stderr),
                        stdout,
                    })));
                }
                State::DotoHeader => {
                    let Some(len) = peek_len(buf, Token::Doto, "DOTO", u64::from(limits.max_body))?
                    else {
                        return Ok(None);
                    };
                    if self.status != 0 && len != 0 {
                        // distcc never sends a body with a failing status.
                        return Err(ProtocolError::BodyOnFailure {
                            status: self.status,
                            len,
                        });
                    }
                    buf.advance(HEADER_LEN);
                    let len = len as usize;
                    if len == 0 {
                        self.state = State::Finished;
                        return Ok(Some(ReplyEvent::End));
                    }
                    let body = if !version.compressed() {
                        if len > limits.max_decompressed {
                            return Err(ProtocolError::TooLong {
                                what: "DOTO",
                                len: len as u64,
                                limit: limits.max_decompressed as u64,
                            });
                        }
                        Body::Plain
                    } else {
                        // The same bound as the one-shot decoders.
                        let limit = limits.max_decompressed.min(expansion_bound(len));
                        if version == ProtocolVersion::Zstd {
                            Body::Zstd(Box::new(
                                zstd::StreamDecoder::new(limit).map_err(zstd_error)?,
                            ))
                        } else {
                            Body::Lzo(lzo_stream::StreamDecoder::new(limit))
                        }
                    };
                    self.state = State::DotoBody { left: len, body };
                }
                State::DotoBody { left, body } => {
                    let n = (*left).min(buf.len());
                    let mut out = Vec::new();
                    let used = feed(body, &buf[..n], &mut out)?;
                    buf.advance(used);
                    *left -= used;
                    let starved = n == 0 || used == 0 && *left != 0;
                    if *left == 0 {
                        let body = std::mem::replace(body, Body::Plain);
                        self.state = State::Draining(body);
                    }
                    if !out.is_empty() {
                        return Ok(Some(ReplyEvent::Object(out)));
                    }
                    if starved {
                        return Ok(None);
                    }
                }
                State::Draining(body) => {
                    // A match or a zstd block may still be pending after the
                    // last input byte; room is bounded, so drain in pieces.
                    let mut out = Vec::new();
                    feed(body, &[], &mut out)?;
                    if !out.is_empty() {
                        return Ok(Some(ReplyEvent::Object(out)));
                    }
                    match body {
                        Body::Plain => {}
                        Body::Lzo(d) => d.finish().map_err(lzo_error)?,
                        Body::Zstd(d) => d.finish().map_err(zstd_error)?,
                    }
                    self.state = State::Finished;
                    return Ok(Some(ReplyEvent::End));
                }
                State::Finished => return Err(ProtocolError::Finished),
            }
        }
    }

    /// Minimum further bytes needed (read-size hint); never more than one
    /// [`OBJECT_CHUNK`] of the body, so the read buffer stays small.
    pub fn wanted(&self, buffered: usize) -> usize {
        match &self.state {
            State::DotoBody { left, .. } => left.saturating_sub(buffered).clamp(1, OBJECT_CHUNK),
            _ => wanted_for_packet(buffered, self.pending_body),
        }
    }
}

/// Feed `input` to the body's decoder for at most one [`OBJECT_CHUNK`] of output.
fn feed(body: &mut Body, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    match body {
        Body::Plain => {
            let n = input.len().min(OBJECT_CHUNK);
            out.extend_from_slice(&input[..n]);
            Ok(n)
        }
        Body::Lzo(d) => d.decode(input, out, OBJECT_CHUNK).map_err(lzo_error),
        Body::Zstd(d) => d.decode(input, out, OBJECT_CHUNK).map_err(zstd_error),
    }
}

fn lzo_error(source: LzoError) -> ProtocolError {
    ProtocolError::Lzo {
        what: "DOTO",
        source,
    }
}

fn zstd_error(source: zstd::ZstdError) -> ProtocolError {
    ProtocolError::Zstd {
        what: "DOTO",
        source,
    }
}

impl super::Decoder for ReplyStreamDecoder {
    type Event = ReplyEvent;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ReplyEvent>, ProtocolError> {
        ReplyStreamDecoder::decode(self, buf)
    }

    fn wanted(&self, buffered: usize) -> usize {
        ReplyStreamDecoder::wanted(self, buffered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Reply;

    /// Decode `bytes` fed `step` at a time; the reply rebuilt from the events.
    fn streamed(
        bytes: &[u8],
        version: ProtocolVersion,
        limits: Limits,
        step: usize,
    ) -> Result<Reply, ProtocolError> {
        let mut d = ReplyStreamDecoder::new(version, limits);
        let mut buf = BytesMut::new();
        let mut reply = Reply {
            version,
            status: 0,
            stderr: Vec::new(),
            stdout: Vec::new(),
            object: Vec::new(),
        };
        let mut chunks = bytes.chunks(step.max(1));
        loop {
            match d.decode(&mut buf)? {
                Some(ReplyEvent::Head(h)) => {
                    reply.status = h.status;
                    reply.stderr = h.stderr;
                    reply.stdout = h.stdout;
                }
                Some(ReplyEvent::Object(piece)) => {
                    assert!(!piece.is_empty() && piece.len() <= OBJECT_CHUNK);
                    reply.object.extend_from_slice(&piece);
                }
                Some(ReplyEvent::End) => {
                    assert!(buf.is_empty() && chunks.next().is_none());
                    return Ok(reply);
                }
                None => match chunks.next() {
                    Some(c) => {
                        assert!(d.wanted(buf.len()) >= 1);
                        buf.extend_from_slice(c);
                    }
                    None => return Err(ProtocolError::Incomplete),
                },
            }
        }
    }

    #[test]
    fn agrees_with_the_whole_reply_decoder() {
        let object: Vec<u8> = (0..600_000u32)
            .map(|i| (i % 253) as u8 ^ (i / 4096) as u8)
            .collect();
        for version in [
            ProtocolVersion::V1,
            ProtocolVersion::V2,
            ProtocolVersion::Zstd,
        ] {
            for status in [0, 0x100] {
                let r = Reply {
                    version,
                    status,
                    stderr: b"warning: x\n".to_vec(),
                    stdout: b"out".to_vec(),
                    object: if status == 0 {
                        object.clone()
                    } else {
                        Vec::new()
                    },
                };
                let bytes = r.encode();
                for step in [1usize << 20, 4096, 1000] {
                    assert_eq!(
                        streamed(&bytes, version, Limits::default(), step).unwrap(),
                        r
                    );
                }
            }
        }
    }

    #[test]
    fn bombs_and_truncated_bodies_are_refused() {
        let zeros = vec![0u8; 8 << 20];
        let tight = Limits {
            max_decompressed: 1 << 20,
            ..Limits::default()
        };
        for version in [ProtocolVersion::V2, ProtocolVersion::Zstd] {
            let r = Reply {
                version,
                status: 0,
                stderr: Vec::new(),
                stdout: Vec::new(),
                object: zeros.clone(),
            };
            let bytes = r.encode();
            let err = streamed(&bytes, version, tight, 65536).unwrap_err();
            assert!(
                matches!(err, ProtocolError::Lzo { .. } | ProtocolError::Zstd { .. }),
                "{err:?}"
            );
            // The whole body, cut short: never an End.
            let cut = &bytes[..bytes.len() - 2];
            assert!(streamed(cut, version, Limits::default(), 4096).is_err());
        }
    }
}
