//! Client → server: `DIST`, `ARGC`, `ARGV`×n, `DOTI`.

use bytes::BytesMut;

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
        todo!()
    }
    /// Decode one whole request from `bytes`; errors if incomplete or trailing.
    pub fn decode_all(bytes: &[u8], limits: &Limits) -> Result<Request, ProtocolError> {
        let _ = (bytes, limits);
        todo!()
    }
}

/// `DIST`, `ARGC` and every `ARGV`: what a client can send before preprocessing ends.
pub fn encode_request_head(version: ProtocolVersion, argv: &[Vec<u8>]) -> Vec<u8> {
    let _ = (version, argv);
    todo!()
}

/// The `DOTI` packet for `source` (compressed for v2; an empty body is length 0).
pub fn encode_doti(version: ProtocolVersion, source: &[u8]) -> Vec<u8> {
    let _ = (version, source);
    todo!()
}

/// One step of an incoming request, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    /// `DIST` read. For `V3` the decoder stops: the caller decides to refuse.
    Version(ProtocolVersion),
    /// `ARGC` and all `ARGV` packets read.
    Argv(Vec<Vec<u8>>),
    /// `DOTI` read and decompressed. The request is complete.
    Doti(Vec<u8>),
}

/// Incremental request decoder: feed it bytes, take events.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }
    /// Take the next event from the front of `buf`, consuming its bytes.
    /// `Ok(None)`: more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RequestEvent>, ProtocolError> {
        let _ = (buf, &self.limits);
        todo!()
    }
    /// How many more bytes the decoder needs at least before it can make
    /// progress (a hint for read sizes; never more than the current packet).
    pub fn wanted(&self, buffered: usize) -> usize {
        let _ = buffered;
        todo!()
    }
}
