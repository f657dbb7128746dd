//! The 12-byte packet header: 4-letter token + 8 lowercase hex digits.

use super::ProtocolError;

pub const HEADER_LEN: usize = 12;

/// Every token distcc 3.4 puts on the wire (GSS-API's `TLEN` excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    Dist,
    Cdir,
    Argc,
    Argv,
    Doti,
    Nfil,
    Name,
    File,
    Link,
    Done,
    Stat,
    Serr,
    Sout,
    Doto,
    Dotd,
}

impl Token {
    pub fn as_bytes(self) -> &'static [u8; 4] {
        todo!()
    }
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let _ = bytes;
        todo!()
    }
    pub fn name(self) -> &'static str {
        todo!()
    }
}

/// Append a canonical header (`TOKN` + 8 lowercase hex digits) to `out`.
pub fn encode_header(token: Token, value: u32, out: &mut Vec<u8>) {
    let _ = (token, value, out);
    todo!()
}

/// Parse a header that must carry `expected`. `bytes` must hold at least
/// [`HEADER_LEN`] bytes; only the first 12 are looked at. Accepts exactly 8
/// characters of `[0-9a-fA-F]`.
pub fn parse_header(bytes: &[u8], expected: Token) -> Result<u32, ProtocolError> {
    let _ = (bytes, expected);
    todo!()
}
