//! The 12-byte packet header: 4-letter token + 8 lowercase hex digits.

use nom::bytes::complete::take_while_m_n;
use nom::IResult;

use super::ProtocolError;

pub const HEADER_LEN: usize = 12;

/// Every token distcc 3.4 puts on the wire (GSS-API's `TLEN` excluded), and
/// dportage's `BUSY`.
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
    /// dportage extension: a ticket pass before `DIST` (see
    /// `crate::network::ticket`), sent only to hosts listed as taking
    /// tickets, so no distcc release ever receives one.
    Tckt,
    /// dportage extension (issue 16): fetch a cached reply by its 32-byte
    /// result hash, instead of `DIST`; only sent to dportage hosts an index
    /// named as holders.
    Cget,
    /// dportage's own: a server too busy to queue the request (see `busy`).
    Busy,
}

const ALL: [Token; 18] = [
    Token::Dist,
    Token::Cdir,
    Token::Argc,
    Token::Argv,
    Token::Doti,
    Token::Nfil,
    Token::Name,
    Token::File,
    Token::Link,
    Token::Done,
    Token::Stat,
    Token::Serr,
    Token::Sout,
    Token::Doto,
    Token::Dotd,
    Token::Tckt,
    Token::Cget,
    Token::Busy,
];

impl Token {
    pub fn as_bytes(self) -> &'static [u8; 4] {
        match self {
            Token::Dist => b"DIST",
            Token::Cdir => b"CDIR",
            Token::Argc => b"ARGC",
            Token::Argv => b"ARGV",
            Token::Doti => b"DOTI",
            Token::Nfil => b"NFIL",
            Token::Name => b"NAME",
            Token::File => b"FILE",
            Token::Link => b"LINK",
            Token::Done => b"DONE",
            Token::Stat => b"STAT",
            Token::Serr => b"SERR",
            Token::Sout => b"SOUT",
            Token::Doto => b"DOTO",
            Token::Dotd => b"DOTD",
            Token::Tckt => b"TCKT",
            Token::Cget => b"CGET",
            Token::Busy => b"BUSY",
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        ALL.into_iter().find(|t| t.as_bytes().as_slice() == bytes)
    }

    pub fn name(self) -> &'static str {
        // Tokens are ASCII by construction.
        std::str::from_utf8(self.as_bytes()).unwrap_or("????")
    }
}

/// Append a canonical header (`TOKN` + 8 lowercase hex digits) to `out`.
pub fn encode_header(token: Token, value: u32, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(token.as_bytes());
    for shift in (0..8).rev() {
        out.push(HEX[((value >> (shift * 4)) & 0xf) as usize]);
    }
}

fn hex8(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while_m_n(8, 8, |c: u8| c.is_ascii_hexdigit())(input)
}

/// Parse a header that must carry `expected`. `bytes` must hold at least
/// [`HEADER_LEN`] bytes; only the first 12 are looked at. Accepts exactly 8
/// characters of `[0-9a-fA-F]`.
pub fn parse_header(bytes: &[u8], expected: Token) -> Result<u32, ProtocolError> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(ProtocolError::BadHeader(printable(bytes)));
    };
    let (token, digits) = header.split_at(4);
    if token != expected.as_bytes() {
        return Err(ProtocolError::UnexpectedToken {
            expected: expected.name(),
            got: printable(token),
        });
    }
    let (_, digits) = hex8(digits).map_err(|_| ProtocolError::BadHeader(printable(header)))?;
    let value = digits.iter().fold(0u32, |acc, &c| {
        let nibble = (c as char).to_digit(16).unwrap_or(0);
        (acc << 4) | nibble
    });
    Ok(value)
}

/// Peer bytes rendered safely for an error message.
pub(crate) fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(32)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_canonically() {
        let mut out = Vec::new();
        encode_header(Token::Doto, 1104, &mut out);
        encode_header(Token::Stat, 0x6b00, &mut out);
        assert_eq!(out, b"DOTO00000450STAT00006b00");
    }

    #[test]
    fn parse_table() {
        let ok: &[(&[u8], u32)] = &[
            (b"DIST00000001", 1),
            (b"DIST0000000A", 10),
            (b"DISTffffffff", u32::MAX),
            (b"DIST00000450trailing", 0x450),
        ];
        for (bytes, want) in ok {
            assert_eq!(parse_header(bytes, Token::Dist), Ok(*want), "{bytes:?}");
        }
        let bad: &[&[u8]] = &[
            b"DIST0x000001",
            b"DIST     001",
            b"DIST+0000001",
            b"DIST-0000001",
            b"DIST0000001g",
            b"DIST0000001",
            b"",
        ];
        for bytes in bad {
            assert!(parse_header(bytes, Token::Dist).is_err(), "{bytes:?}");
        }
        assert!(matches!(
            parse_header(b"dist00000001", Token::Dist),
            Err(ProtocolError::UnexpectedToken { .. })
        ));
        assert!(matches!(
            parse_header(b"ARGC00000001", Token::Dist),
            Err(ProtocolError::UnexpectedToken { .. })
        ));
    }

    #[test]
    fn tokens_round_trip() {
        for t in ALL {
            assert_eq!(Token::from_bytes(t.as_bytes()), Some(t));
        }
        assert_eq!(Token::from_bytes(b"TLEN"), None);
    }
}
