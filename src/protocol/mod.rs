//! distcc's wire format, sans-I/O: packet headers, LZO bodies, and incremental
//! decoders/encoders for requests and replies (protocols 1 and 2).
//!
//! Decoders work like mini-redis' `Frame::parse`: the caller appends bytes from
//! the network to a `BytesMut` and calls `decode`; `Ok(None)` means "need more
//! bytes", `Err` means the peer broke the protocol. Every length from the peer is
//! checked against [`Limits`] before a single byte of it is buffered.

pub mod busy;
mod codec;
pub mod header;
pub mod lzo;
pub mod lzo_stream;
pub mod reply;
pub mod reply_stream;
pub mod request;
pub mod zstd;

pub use header::{encode_header, parse_header, Token, HEADER_LEN};
pub use reply::{Reply, ReplyDecoder};
pub use reply_stream::{ReplyEvent, ReplyHead, ReplyStreamDecoder};
pub use request::{
    encode_doti, encode_fetch, encode_request_head, Request, RequestDecoder, RequestEvent,
};

/// A sans-I/O decoder as a read loop drives it (`crate::transport`): the
/// request and reply decoders differ in what they yield, not in how they are fed.
pub trait Decoder {
    /// One step of the message ([`RequestEvent`]) or all of it ([`Reply`]).
    type Event;

    /// Take the next event from the front of `buf`, consuming its bytes.
    /// `Ok(None)`: more bytes are needed.
    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Self::Event>, ProtocolError>;

    /// At least how many more bytes the decoder needs before it can make
    /// progress, given `buffered` unconsumed bytes (always ≥ 1; never more
    /// than the rest of the current packet, so a hostile length cannot size a
    /// read).
    fn wanted(&self, buffered: usize) -> usize;
}

/// The protocol version a job is spoken in (`DIST`/`DONE` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// Plain: bodies uncompressed.
    V1 = 1,
    /// `,lzo`: BULK bodies are raw LZO1X-1 streams.
    V2 = 2,
    /// `,cpp,lzo` pump mode. Recognised so a server can refuse it cleanly.
    V3 = 3,
    /// dportage only (`,zstd` hosts): protocol 2 with zstd bodies instead of
    /// LZO. The number is far from distcc's so no distcc release can mean
    /// anything else by it; a real distccd refuses it (and the client then
    /// compiles locally), so the client sends it only to hosts marked `,zstd`.
    Zstd = 0x4450_5a31,
}

impl ProtocolVersion {
    pub fn from_wire(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            0x4450_5a31 => Some(Self::Zstd),
            _ => None,
        }
    }
    pub fn number(self) -> u32 {
        self as u32
    }
    /// Whether BULK bodies are compressed in this version (LZO, or zstd for `Zstd`).
    pub fn compressed(self) -> bool {
        !matches!(self, Self::V1)
    }
}

/// Bounds on everything a peer can make us allocate. distcc 3.4 has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum `ARGC`.
    pub max_argc: u32,
    /// Maximum length of one `ARGV` (the kernel's per-argument limit).
    pub max_arg_len: u32,
    /// Maximum total of all `ARGV` bytes.
    pub max_argv_total: usize,
    /// Maximum length of a path-like STR packet (`CDIR`, `NAME`, `LINK`).
    pub max_path_len: u32,
    /// Maximum body length as sent on the wire (compressed for v2).
    pub max_body: u32,
    /// Maximum decompressed size of one body (also capped at 256×compressed+64).
    pub max_decompressed: usize,
    /// Maximum size of a `SERR` or `SOUT` body, on the wire and decompressed
    /// (further capped by `max_body`/`max_decompressed`): compiler diagnostics,
    /// which a client can hold to far less than an object.
    pub max_stream_body: u32,
}

impl Limits {
    /// These limits with the `SERR`/`SOUT` cap applied to every body.
    pub fn for_streams(&self) -> Limits {
        Limits {
            max_body: self.max_body.min(self.max_stream_body),
            max_decompressed: self.max_decompressed.min(self.max_stream_body as usize),
            ..*self
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_argc: 65_536,
            max_arg_len: 128 * 1024,
            max_argv_total: 2 * 1024 * 1024,
            max_path_len: 4096,
            max_body: 256 * 1024 * 1024,
            max_decompressed: 256 * 1024 * 1024,
            max_stream_body: 256 * 1024 * 1024,
        }
    }
}

/// Everything that can be wrong with bytes from a peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed packet header {0:?} (expected 4-letter token + 8 hex digits)")]
    BadHeader(String),
    #[error("protocol derailment: expected {expected}, got {got:?}")]
    UnexpectedToken { expected: &'static str, got: String },
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
    #[error("reply version {got} does not match request version {sent}")]
    VersionMismatch { sent: u32, got: u32 },
    #[error("{what} of {len} exceeds the limit of {limit}")]
    TooLong {
        what: &'static str,
        len: u64,
        limit: u64,
    },
    #[error("{0} contains a NUL byte")]
    EmbeddedNul(&'static str),
    #[error("failing STAT {status:#x} came with a {len}-byte DOTO body")]
    BodyOnFailure { status: u32, len: u32 },
    #[error("LZO body of {what}: {source}")]
    Lzo {
        what: &'static str,
        source: lzo::LzoError,
    },
    #[error("zstd body of {what}: {source}")]
    Zstd {
        what: &'static str,
        source: zstd::ZstdError,
    },
    #[error("decoder used after the message was complete")]
    Finished,
    #[error("ARGC 0: a request needs at least the compiler name")]
    EmptyArgv,
    #[error("message ended early")]
    Incomplete,
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
    #[error("CGET of {0} bytes: a fetch names exactly one 32-byte result hash")]
    BadFetch(u32),
    #[error("the server is busy: {0}")]
    Busy(String),
}
