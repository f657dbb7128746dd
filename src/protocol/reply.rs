//! Server → client: `DONE`, `STAT`, `SERR`, `SOUT`, `DOTO`.

use bytes::BytesMut;

use super::codec::{peek_len, put_bulk, put_int, take_bulk, take_int, wanted_for_packet};
use super::header::{Token, HEADER_LEN};
use super::{Limits, ProtocolError, ProtocolVersion};

/// A complete protocol 1/2 reply, bodies decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub version: ProtocolVersion,
    /// Raw wait status of the compiler (`exit << 8`, or the signal number).
    pub status: u32,
    pub stderr: Vec<u8>,
    pub stdout: Vec<u8>,
    /// The output file. Always empty (and sent as `DOTO 00000000`) when
    /// `status != 0`.
    pub object: Vec<u8>,
}

impl Reply {
    /// Encode the whole reply (bodies compressed for v2; empty bodies as length 0).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(60 + self.stderr.len() + self.stdout.len() + self.object.len());
        put_int(&mut out, Token::Done, self.version.number());
        put_int(&mut out, Token::Stat, self.status);
        put_bulk(&mut out, Token::Serr, self.version, &self.stderr);
        put_bulk(&mut out, Token::Sout, self.version, &self.stdout);
        let object: &[u8] = if self.status == 0 { &self.object } else { &[] };
        put_bulk(&mut out, Token::Doto, self.version, object);
        out
    }

    /// Decode one whole reply; errors if incomplete or trailing bytes.
    pub fn decode_all(
        bytes: &[u8],
        version: ProtocolVersion,
        limits: &Limits,
    ) -> Result<Reply, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut decoder = ReplyDecoder::new(version, *limits);
        match decoder.decode(&mut buf)? {
            Some(reply) if buf.is_empty() => Ok(reply),
            Some(_) => Err(ProtocolError::TrailingBytes(buf.len())),
            None => Err(ProtocolError::Incomplete),
        }
    }
}

#[derive(Debug)]
enum State {
    Done,
    Stat,
    Serr,
    Sout,
    Doto,
    Finished,
}

/// Incremental reply decoder for the client. It knows the version it asked
/// for and rejects any other `DONE`.
#[derive(Debug)]
pub struct ReplyDecoder {
    version: ProtocolVersion,
    limits: Limits,
    state: State,
    partial: Reply,
    pending_body: Option<u32>,
}

impl ReplyDecoder {
    pub fn new(version: ProtocolVersion, limits: Limits) -> Self {
        Self {
            version,
            limits,
            state: State::Done,
            partial: Reply {
                version,
                status: 0,
                stderr: Vec::new(),
                stdout: Vec::new(),
                object: Vec::new(),
            },
            pending_body: None,
        }
    }

    /// `Ok(Some(reply))` once the whole reply has been read from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        let result = self.decode_inner(buf);
        let token = match self.state {
            State::Serr => Some(Token::Serr),
            State::Sout => Some(Token::Sout),
            State::Doto => Some(Token::Doto),
            _ => None,
        };
        self.pending_body = token.and_then(|t| peek_len(buf, t, "", u64::MAX).ok().flatten());
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        let (version, limits) = (self.version, self.limits);
        loop {
            match self.state {
                State::Done => {
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
                    self.partial.status = status;
                    self.state = State::Serr;
                }
                State::Serr => {
                    let Some(body) =
                        take_bulk(buf, Token::Serr, "SERR", version, &limits.for_streams())?
                    else {
                        return Ok(None);
                    };
                    self.partial.stderr = body;
                    self.state = State::Sout;
                }
                State::Sout => {
                    let Some(body) =
                        take_bulk(buf, Token::Sout, "SOUT", version, &limits.for_streams())?
                    else {
                        return Ok(None);
                    };
                    self.partial.stdout = body;
                    self.state = State::Doto;
                }
                State::Doto => {
                    if self.partial.status != 0 {
                        // distcc never sends a body with a failing status.
                        let Some(len) = peek_len(buf, Token::Doto, "DOTO", u64::MAX)? else {
                            return Ok(None);
                        };
                        if len != 0 {
                            return Err(ProtocolError::BodyOnFailure {
                                status: self.partial.status,
                                len,
                            });
                        }
                        bytes::Buf::advance(buf, HEADER_LEN);
                    } else {
                        let Some(body) = take_bulk(buf, Token::Doto, "DOTO", version, &limits)?
                        else {
                            return Ok(None);
                        };
                        self.partial.object = body;
                    }
                    self.state = State::Finished;
                    let empty = Reply {
                        version,
                        status: 0,
                        stderr: Vec::new(),
                        stdout: Vec::new(),
                        object: Vec::new(),
                    };
                    return Ok(Some(std::mem::replace(&mut self.partial, empty)));
                }
                State::Finished => return Err(ProtocolError::Finished),
            }
        }
    }

    /// Minimum further bytes needed (read-size hint).
    pub fn wanted(&self, buffered: usize) -> usize {
        wanted_for_packet(buffered, self.pending_body)
    }
}

impl super::Decoder for ReplyDecoder {
    type Event = Reply;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        ReplyDecoder::decode(self, buf)
    }

    fn wanted(&self, buffered: usize) -> usize {
        ReplyDecoder::wanted(self, buffered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(version: ProtocolVersion, status: u32) -> Reply {
        Reply {
            version,
            status,
            stderr: b"x.c:1: warning: something\n".to_vec(),
            stdout: Vec::new(),
            object: if status == 0 {
                b"\x7fELF object bytes".repeat(100)
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn round_trips() {
        for v in [ProtocolVersion::V1, ProtocolVersion::V2] {
            for status in [0, 0x100, 0x8b] {
                let r = reply(v, status);
                assert_eq!(
                    Reply::decode_all(&r.encode(), v, &Limits::default()).unwrap(),
                    r
                );
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let r = reply(ProtocolVersion::V2, 0);
        let mut d = ReplyDecoder::new(ProtocolVersion::V2, Limits::default());
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in r.encode() {
            assert!(got.is_none());
            buf.extend_from_slice(&[b]);
            assert!(d.wanted(buf.len()) >= 1);
            got = d.decode(&mut buf).unwrap();
        }
        assert_eq!(got, Some(r));
    }

    #[test]
    fn hostile_replies() {
        let l = Limits::default();
        let v1 = ProtocolVersion::V1;
        assert_eq!(
            Reply::decode_all(b"DONE00000002", v1, &l),
            Err(ProtocolError::VersionMismatch { sent: 1, got: 2 })
        );
        assert_eq!(
            Reply::decode_all(
                b"DONE00000001STAT00000100SERR00000000SOUT00000000DOTO00000004abcd",
                v1,
                &l
            ),
            Err(ProtocolError::BodyOnFailure {
                status: 0x100,
                len: 4
            })
        );
        let small = Limits { max_body: 10, ..l };
        assert!(matches!(
            Reply::decode_all(
                b"DONE00000001STAT00000000SERR00000000SOUT00000000DOTOffffffff",
                v1,
                &small
            ),
            Err(ProtocolError::TooLong { what: "DOTO", .. })
        ));
        assert_eq!(
            Reply::decode_all(
                b"DONE00000001STAT00000000SERR00000000SOUT00000000DOTO0000000",
                v1,
                &l
            ),
            Err(ProtocolError::Incomplete)
        );
        // An LZO bomb in DOTO is cut at the decompression limit.
        let bomb = Reply {
            object: vec![0; 1 << 20],
            ..reply(ProtocolVersion::V2, 0)
        }
        .encode();
        let tight = Limits {
            max_decompressed: 4096,
            ..l
        };
        assert!(matches!(
            Reply::decode_all(&bomb, ProtocolVersion::V2, &tight),
            Err(ProtocolError::Lzo { what: "DOTO", .. })
        ));
    }

    #[test]
    fn empty_object_is_length_zero() {
        let r = Reply {
            object: vec![],
            ..reply(ProtocolVersion::V2, 0)
        };
        let bytes = r.encode();
        assert!(bytes.ends_with(b"DOTO00000000"));
    }
}
