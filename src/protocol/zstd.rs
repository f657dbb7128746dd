//! zstd bodies for dportage's own protocol version ([`super::ProtocolVersion::Zstd`]),
//! spoken only to hosts marked `,zstd`. Decompression is bounded exactly like
//! LZO's: never more than `min(max_output, 256 × compressed + 64)` bytes, and
//! the decoder's window is capped so a frame header cannot make it allocate
//! more than a few MiB either.

use std::io::Read;

use super::lzo::expansion_bound;

/// Level for requests (`DOTI`): the client compresses each source once and
/// the bytes cross the slowest link; level 9 is ~14 % smaller than level 3 on
/// preprocessed C (Lua 5.4) at ~75 MB/s, a millisecond or two per TU.
pub const REQUEST_LEVEL: i32 = 9;

/// Level for replies: zstd's default. The server compresses every object and
/// its CPU per job is a goal; objects gain only ~8 % from higher levels.
pub const REPLY_LEVEL: i32 = 3;

/// Largest window a peer's frame may ask for (2^23 = 8 MiB; level 3 uses at most 2^21).
const MAX_WINDOW_LOG: u32 = 23;

/// Why a zstd body was rejected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ZstdError {
    #[error("decompressed size would exceed {limit} bytes")]
    OutputLimit { limit: usize },
    #[error("corrupt stream: {0}")]
    Corrupt(String),
}

/// Compress one body as a single zstd frame at [`REPLY_LEVEL`].
pub fn compress(input: &[u8]) -> Vec<u8> {
    compress_at(input, REPLY_LEVEL)
}

/// Compress one body as a single zstd frame at `level` (1–19).
pub fn compress_at(input: &[u8], level: i32) -> Vec<u8> {
    // Compressing from memory into memory cannot fail for a valid level.
    zstd::bulk::compress(input, level).unwrap_or_else(|_| {
        // Unreachable in practice; a stored frame keeps the stream valid anyway.
        zstd::stream::encode_all(input, 1).unwrap_or_default()
    })
}

/// Decompress `input`, refusing to produce more than
/// `min(max_output, expansion_bound(input.len()))` bytes.
pub fn decompress(input: &[u8], max_output: usize) -> Result<Vec<u8>, ZstdError> {
    let limit = max_output.min(expansion_bound(input.len()));
    let mut decoder =
        zstd::stream::read::Decoder::new(input).map_err(|e| ZstdError::Corrupt(e.to_string()))?;
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(|e| ZstdError::Corrupt(e.to_string()))?;
    let mut out = Vec::with_capacity(limit.min(input.len().saturating_mul(4)));
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ZstdError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(ZstdError::OutputLimit { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_smaller_than_lzo_on_c() {
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| {
                format!("static int f{i}(int x) {{ return x * {i} + 1; }}\n").into_bytes()
            })
            .collect();
        let z = compress(&text);
        assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
        assert!(z.len() < super::super::lzo::compress(&text).len());
        assert_eq!(decompress(&z, usize::MAX).unwrap(), text);
        assert_eq!(decompress(&compress(b""), 10).unwrap(), b"");
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let zeros = vec![0u8; 10 << 20];
        let bomb = compress(&zeros);
        assert!(bomb.len() * 256 + 64 < zeros.len(), "a real bomb");
        assert!(matches!(
            decompress(&bomb, usize::MAX),
            Err(ZstdError::OutputLimit { .. })
        ));
        let honest = compress(b"int x;\n");
        assert!(matches!(
            decompress(&honest, 3),
            Err(ZstdError::OutputLimit { limit: 3 })
        ));
        assert!(matches!(
            decompress(b"not zstd at all", usize::MAX),
            Err(ZstdError::Corrupt(_))
        ));
        let mut truncated = compress(&vec![7u8; 5000]);
        truncated.truncate(truncated.len() - 3);
        assert!(decompress(&truncated, usize::MAX).is_err());
    }
}
