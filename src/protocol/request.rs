//! Client → server: `DIST`, `ARGC`, `ARGV`×n, `DOTI`; or, dportage only,
//! `CGET` (fetch a cached reply), each after an optional `TCKT`.

use bytes::BytesMut;

use super::codec::{
    peek_len, put_bulk, put_int, put_str, take_body, take_bulk, take_int, wanted_for_packet,
};
use super::header::Token;
use super::{Limits, ProtocolError, ProtocolVersion};

/// A complete protocol 1/2 request, bodies decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub version: ProtocolVersion,
    pub argv: Vec<Vec<u8>>,
    pub doti: Vec<u8>,
}

impl Request {
    /// Encode the whole request (DOTI compressed for v2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = encode_request_head(self.version, &self.argv);
        put_bulk(&mut out, Token::Doti, self.version, &self.doti);
        out
    }

    /// Decode one whole request from `bytes`; errors if incomplete or trailing.
    pub fn decode_all(bytes: &[u8], limits: &Limits) -> Result<Request, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut decoder = RequestDecoder::new(*limits);
        let (mut version, mut argv) = (None, None);
        loop {
            match decoder.decode(&mut buf)? {
                // Judging a ticket is the server's business, not the codec's.
                Some(RequestEvent::Ticket(_)) => {}
                Some(RequestEvent::Fetch(_)) => {
                    return Err(ProtocolError::UnexpectedToken {
                        expected: "DIST",
                        got: "CGET".into(),
                    })
                }
                Some(RequestEvent::Version(v)) => version = Some(v),
                Some(RequestEvent::Argv(a)) => argv = Some(a),
                Some(RequestEvent::Doti(doti)) => {
                    if !buf.is_empty() {
                        return Err(ProtocolError::TrailingBytes(buf.len()));
                    }
                    return match (version, argv) {
                        (Some(version), Some(argv)) => Ok(Request {
                            version,
                            argv,
                            doti,
                        }),
                        _ => Err(ProtocolError::Incomplete),
                    };
                }
                None => return Err(ProtocolError::Incomplete),
            }
        }
    }
}

/// `DIST`, `ARGC` and every `ARGV`: what a client can send before preprocessing ends.
pub fn encode_request_head(version: ProtocolVersion, argv: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + argv.iter().map(|a| a.len() + 12).sum::<usize>());
    put_int(&mut out, Token::Dist, version.number());
    put_int(&mut out, Token::Argc, argv.len() as u32);
    for arg in argv {
        put_str(&mut out, Token::Argv, arg);
    }
    out
}

/// The `DOTI` packet for `source` (compressed for v2; an empty body is length 0).
pub fn encode_doti(version: ProtocolVersion, source: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + source.len());
    put_bulk(&mut out, Token::Doti, version, source);
    out
}

/// The `TCKT` packet (dportage extension) carrying a ticket pass of
/// `pass.len()` bytes, sent before `DIST`.
pub fn encode_ticket(pass: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + pass.len());
    put_str(&mut out, Token::Tckt, pass);
    out
}

/// The `CGET` packet (dportage extension, issue 16): fetch the cached reply
/// whose result hash (`network::api::result_hash`, as raw bytes) is
/// `result`. Sent after an optional `TCKT`, instead of `DIST`; the answer is
/// a whole protocol 2 reply, or the connection closed without a byte.
pub fn encode_fetch(result: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + FETCH_LEN as usize);
    put_str(&mut out, Token::Cget, result);
    out
}

/// The one body length of a `CGET`: a raw blake3 hash.
pub const FETCH_LEN: u32 = 32;

/// Largest `TCKT` body a decoder accepts; the ticket layer wants an exact
/// length, this only bounds what is buffered before it looks.
pub const MAX_TICKET_PACKET: u32 = 1024;

/// One step of an incoming request, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    /// A `TCKT` body (dportage extension), at most once and only before
    /// `DIST`. The decoder does not judge it: the server does.
    Ticket(Vec<u8>),
    /// `CGET` read (dportage extension): the client wants the cached reply
    /// of this result hash, not a compile. The request is complete.
    Fetch([u8; 32]),
    /// `DIST` read. For `V3` the decoder stops: the caller decides to refuse.
    Version(ProtocolVersion),
    /// `ARGC` and all `ARGV` packets read.
    Argv(Vec<Vec<u8>>),
    /// `DOTI` read and decompressed. The request is complete.
    Doti(Vec<u8>),
}

#[derive(Debug)]
enum State {
    Dist,
    Argc(ProtocolVersion),
    Argv {
        version: ProtocolVersion,
        remaining: u32,
        argv: Vec<Vec<u8>>,
        total: usize,
    },
    Doti(ProtocolVersion),
    Finished,
}

/// Incremental request decoder: feed it bytes, take events.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    /// Body length of a packet whose header has arrived but not its body.
    pending_body: Option<u32>,
    /// A `TCKT` was read (a second one is a protocol error).
    ticket_seen: bool,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Dist,
            pending_body: None,
            ticket_seen: false,
        }
    }

    /// Take the next event from the front of `buf`, consuming its bytes.
    /// `Ok(None)`: more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RequestEvent>, ProtocolError> {
        let event = self.decode_inner(buf);
        self.pending_body = match self.state {
            State::Argv { .. } => peek_len(buf, Token::Argv, "", u64::MAX).ok().flatten(),
            State::Doti(_) => peek_len(buf, Token::Doti, "", u64::MAX).ok().flatten(),
            State::Dist if starts_with_ticket(buf) => {
                peek_len(buf, Token::Tckt, "", u64::MAX).ok().flatten()
            }
            State::Dist if buf.starts_with(Token::Cget.as_bytes()) => {
                peek_len(buf, Token::Cget, "", u64::from(FETCH_LEN))
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        event
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<RequestEvent>, ProtocolError> {
        loop {
            match &mut self.state {
                State::Dist if !self.ticket_seen && starts_with_ticket(buf) => {
                    let limit = u64::from(MAX_TICKET_PACKET);
                    let Some(pass) = take_body(buf, Token::Tckt, "TCKT", limit)? else {
                        return Ok(None);
                    };
                    self.ticket_seen = true;
                    return Ok(Some(RequestEvent::Ticket(pass.to_vec())));
                }
                State::Dist if buf.starts_with(Token::Cget.as_bytes()) => {
                    // The length is judged on the header, before the body is
                    // waited for: a fetch is exactly one hash.
                    if let Some(len) = peek_len(buf, Token::Cget, "CGET", u64::MAX)? {
                        if len != FETCH_LEN {
                            return Err(ProtocolError::BadFetch(len));
                        }
                    }
                    let Some(body) = take_body(buf, Token::Cget, "CGET", u64::from(FETCH_LEN))?
                    else {
                        return Ok(None);
                    };
                    let mut hash = [0u8; 32];
                    hash.copy_from_slice(&body);
                    self.state = State::Finished;
                    return Ok(Some(RequestEvent::Fetch(hash)));
                }
                State::Dist => {
                    let Some(v) = take_int(buf, Token::Dist)? else {
                        return Ok(None);
                    };
                    let version = ProtocolVersion::from_wire(v)
                        .ok_or(ProtocolError::UnsupportedVersion(v))?;
                    self.state = match version {
                        ProtocolVersion::V3 => State::Finished,
                        v => State::Argc(v),
                    };
                    return Ok(Some(RequestEvent::Version(version)));
                }
                State::Argc(version) => {
                    let version = *version;
                    let Some(n) = take_int(buf, Token::Argc)? else {
                        return Ok(None);
                    };
                    if n == 0 {
                        return Err(ProtocolError::EmptyArgv);
                    }
                    if n > self.limits.max_argc {
                        return Err(ProtocolError::TooLong {
                            what: "ARGC",
                            len: u64::from(n),
                            limit: u64::from(self.limits.max_argc),
                        });
                    }
                    self.state = State::Argv {
                        version,
                        remaining: n,
                        argv: Vec::with_capacity(n.min(256) as usize),
                        total: 0,
                    };
                }
                State::Argv {
                    version,
                    remaining,
                    argv,
                    total,
                } => {
                    let budget = (self.limits.max_argv_total - *total) as u64;
                    let limit = u64::from(self.limits.max_arg_len).min(budget);
                    let Some(arg) = take_body(buf, Token::Argv, "ARGV", limit)? else {
                        return Ok(None);
                    };
                    if arg.contains(&0) {
                        return Err(ProtocolError::EmbeddedNul("ARGV"));
                    }
                    *total += arg.len();
                    argv.push(arg.to_vec());
                    *remaining -= 1;
                    if *remaining == 0 {
                        let argv = std::mem::take(argv);
                        self.state = State::Doti(*version);
                        return Ok(Some(RequestEvent::Argv(argv)));
                    }
                }
                State::Doti(version) => {
                    let version = *version;
                    let Some(doti) = take_bulk(buf, Token::Doti, "DOTI", version, &self.limits)?
                    else {
                        return Ok(None);
                    };
                    self.state = State::Finished;
                    return Ok(Some(RequestEvent::Doti(doti)));
                }
                State::Finished => return Err(ProtocolError::Finished),
            }
        }
    }

    /// How many more bytes the decoder needs at least before it can make
    /// progress (a hint for read sizes; never more than the current packet).
    pub fn wanted(&self, buffered: usize) -> usize {
        wanted_for_packet(buffered, self.pending_body)
    }

    /// The request has been read completely (or stopped at `DIST 3`, or
    /// was a `CGET`).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }
}

fn starts_with_ticket(buf: &[u8]) -> bool {
    buf.starts_with(Token::Tckt.as_bytes())
}

impl super::Decoder for RequestDecoder {
    type Event = RequestEvent;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RequestEvent>, ProtocolError> {
        RequestDecoder::decode(self, buf)
    }

    fn wanted(&self, buffered: usize) -> usize {
        RequestDecoder::wanted(self, buffered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: ProtocolVersion) -> Request {
        Request {
            version,
            argv: ["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "x.o"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            doti: b"# 0 \"x.c\"\nint answer(void) { return 42; }\n".repeat(50),
        }
    }

    /// One `TCKT` may come before `DIST`, fed byte by byte; a second one, one
    /// after `DIST` or one over the bound is a protocol error.
    #[test]
    fn ticket_before_dist() {
        let request = sample(ProtocolVersion::V2);
        let mut bytes = encode_ticket(b"pass");
        bytes.extend(request.encode());
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for b in bytes {
            buf.extend_from_slice(&[b]);
            assert!(decoder.wanted(buf.len()) >= 1);
            while !decoder.is_finished() {
                match decoder.decode(&mut buf).unwrap() {
                    Some(e) => events.push(e),
                    None => break,
                }
            }
        }
        assert_eq!(events[0], RequestEvent::Ticket(b"pass".to_vec()));
        assert_eq!(events[1], RequestEvent::Version(ProtocolVersion::V2));
        assert_eq!(events.len(), 4);

        let twice = [encode_ticket(b"a"), encode_ticket(b"b")].concat();
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(twice.as_slice());
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        assert!(decoder.decode(&mut buf).is_err());

        let mut after = encode_request_head(ProtocolVersion::V1, &request.argv);
        after.extend(encode_ticket(b"late"));
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(after.as_slice());
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        assert!(decoder.decode(&mut buf).is_err());

        let big = encode_ticket(&vec![0; MAX_TICKET_PACKET as usize + 1]);
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&big[..12]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(ProtocolError::TooLong { what: "TCKT", .. })
        ));

        // And a whole request with a ticket still decodes whole.
        let mut with = encode_ticket(b"pass");
        with.extend(request.encode());
        assert_eq!(
            Request::decode_all(&with, &Limits::default()).unwrap(),
            request
        );
    }

    /// `CGET` with exactly 32 bytes, first or after one `TCKT`, fed byte by
    /// byte, is a fetch; any other length is refused on its header, before a
    /// byte of the body is waited for; nothing may follow it, and it may not
    /// follow `DIST`.
    #[test]
    fn fetch_table() {
        let hash = [0xab; 32];
        let ticketed = [encode_ticket(b"pass"), encode_fetch(&hash)].concat();
        let ok: &[(&str, Vec<u8>, Vec<RequestEvent>)] = &[
            ("bare", encode_fetch(&hash), vec![RequestEvent::Fetch(hash)]),
            (
                "after a ticket",
                ticketed,
                vec![
                    RequestEvent::Ticket(b"pass".to_vec()),
                    RequestEvent::Fetch(hash),
                ],
            ),
        ];
        for (name, bytes, want) in ok {
            assert_eq!(&bytes[bytes.len() - 44..bytes.len() - 32], b"CGET00000020");
            let mut decoder = RequestDecoder::new(Limits::default());
            let mut buf = BytesMut::new();
            let mut events = Vec::new();
            for &b in bytes {
                buf.extend_from_slice(&[b]);
                assert!(decoder.wanted(buf.len()) >= 1);
                while !decoder.is_finished() {
                    match decoder.decode(&mut buf).unwrap() {
                        Some(e) => events.push(e),
                        None => break,
                    }
                }
            }
            assert_eq!(&events, want, "{name}");
            assert!(decoder.is_finished(), "{name}");
            assert_eq!(decoder.decode(&mut buf), Err(ProtocolError::Finished));
        }

        let bad: &[(&str, &[u8], ProtocolError)] = &[
            ("empty", b"CGET00000000", ProtocolError::BadFetch(0)),
            ("short", b"CGET0000001f", ProtocolError::BadFetch(31)),
            ("long", b"CGET00000021", ProtocolError::BadFetch(33)),
            ("huge", b"CGETffffffff", ProtocolError::BadFetch(u32::MAX)),
            (
                "bad digits",
                b"CGET0000002x",
                ProtocolError::BadHeader("CGET0000002x".into()),
            ),
        ];
        for (name, header, want) in bad {
            // Only the header: the refusal cannot wait for a body.
            let mut decoder = RequestDecoder::new(Limits::default());
            let mut buf = BytesMut::from(*header);
            assert_eq!(decoder.decode(&mut buf).as_ref(), Err(want), "{name}");
            let mut after_ticket = RequestDecoder::new(Limits::default());
            let mut buf =
                BytesMut::from([encode_ticket(b"t").as_slice(), header].concat().as_slice());
            assert!(after_ticket.decode(&mut buf).unwrap().is_some());
            assert_eq!(after_ticket.decode(&mut buf).as_ref(), Err(want), "{name}");
        }
        // Not after DIST, and not as a whole request.
        let mut late = encode_request_head(ProtocolVersion::V1, &[b"gcc".to_vec()]);
        late.extend(encode_fetch(&hash));
        assert!(Request::decode_all(&late, &Limits::default()).is_err());
        assert!(Request::decode_all(&encode_fetch(&hash), &Limits::default()).is_err());
        // The wanted-bytes hint never reaches past the 32-byte body.
        let decoder = RequestDecoder::new(Limits::default());
        assert!(decoder.wanted(0) <= 12);
    }

    #[test]
    fn round_trip_both_versions() {
        for v in [ProtocolVersion::V1, ProtocolVersion::V2] {
            let r = sample(v);
            assert_eq!(
                Request::decode_all(&r.encode(), &Limits::default()).unwrap(),
                r
            );
        }
    }

    #[test]
    fn byte_at_a_time() {
        let r = sample(ProtocolVersion::V2);
        let bytes = r.encode();
        let mut d = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for b in bytes {
            buf.extend_from_slice(&[b]);
            assert!(d.wanted(buf.len()) >= 1);
            while !d.is_finished() {
                match d.decode(&mut buf).unwrap() {
                    Some(e) => events.push(e),
                    None => break,
                }
            }
        }
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], RequestEvent::Doti(r.doti));
        assert!(d.is_finished());
    }

    #[test]
    fn limits_are_checked_on_the_header() {
        let limits = Limits::default();
        let cases: &[(&[u8], &str)] = &[
            (b"DIST00000001ARGCffffffff", "ARGC"),
            (b"DIST00000001ARGC00000001ARGV7fffffff", "ARGV"),
            (b"DIST00000001ARGC00000001ARGV00000001aDOTIffffffff", "DOTI"),
        ];
        for (bytes, what) in cases {
            let err = Request::decode_all(bytes, &limits).unwrap_err();
            assert!(
                matches!(err, ProtocolError::TooLong { what: w, .. } if w == *what),
                "{err:?}"
            );
        }
    }

    #[test]
    fn refusals() {
        let l = Limits::default();
        assert_eq!(
            Request::decode_all(b"DIST00000004", &l),
            Err(ProtocolError::UnsupportedVersion(4))
        );
        assert_eq!(
            Request::decode_all(b"DIST00000000", &l),
            Err(ProtocolError::UnsupportedVersion(0))
        );
        assert_eq!(
            Request::decode_all(b"DIST00000001ARGC00000000", &l),
            Err(ProtocolError::EmptyArgv)
        );
        assert_eq!(
            Request::decode_all(b"DIST00000001ARGC00000001ARGV00000003a\0b", &l),
            Err(ProtocolError::EmbeddedNul("ARGV"))
        );
        assert_eq!(
            Request::decode_all(b"DIST00000001ARGC0000", &l),
            Err(ProtocolError::Incomplete)
        );
        let mut d = RequestDecoder::new(l);
        let mut buf = BytesMut::from(&b"DIST00000003CDIR00000001/"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Some(RequestEvent::Version(ProtocolVersion::V3)))
        );
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::Finished));
    }

    #[test]
    fn total_argv_budget() {
        let limits = Limits {
            max_argv_total: 10,
            ..Limits::default()
        };
        let r = Request {
            version: ProtocolVersion::V1,
            argv: vec![b"123456".to_vec(), b"123456".to_vec()],
            doti: vec![],
        };
        assert!(matches!(
            Request::decode_all(&r.encode(), &limits),
            Err(ProtocolError::TooLong { .. })
        ));
    }
}
