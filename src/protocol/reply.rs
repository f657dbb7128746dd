//! Server → client: `DONE`, `STAT`, `SERR`, `SOUT`, `DOTO`.

use bytes::BytesMut;

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
        todo!()
    }
    /// Decode one whole reply; errors if incomplete or trailing bytes.
    pub fn decode_all(
        bytes: &[u8],
        version: ProtocolVersion,
        limits: &Limits,
    ) -> Result<Reply, ProtocolError> {
        let _ = (bytes, version, limits);
        todo!()
    }
}

/// Incremental reply decoder for the client. It knows the version it asked
/// for and rejects any other `DONE`.
#[derive(Debug)]
pub struct ReplyDecoder {
    version: ProtocolVersion,
    limits: Limits,
}

impl ReplyDecoder {
    pub fn new(version: ProtocolVersion, limits: Limits) -> Self {
        Self { version, limits }
    }
    /// `Ok(Some(reply))` once the whole reply has been read from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        let _ = (buf, self.version, &self.limits);
        todo!()
    }
    /// Minimum further bytes needed (read-size hint).
    pub fn wanted(&self, buffered: usize) -> usize {
        let _ = buffered;
        todo!()
    }
}
