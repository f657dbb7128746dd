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

/// A streaming zstd decoder: compressed chunks in, bounded output chunks out,
/// with the same window cap and output limit as [`decompress`], so an object
/// of any size is decoded in constant memory (the window, ≤ 8 MiB, plus
/// zstd's own buffers).
pub struct StreamDecoder {
    inner: zstd::stream::raw::Decoder<'static>,
    produced: usize,
    limit: usize,
    /// zstd reported the end of a frame and has nothing more to flush.
    frame_done: bool,
    /// Any input at all was fed (an empty body is not a frame).
    fed: bool,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("zstd::StreamDecoder")
            .field("produced", &self.produced)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl StreamDecoder {
    /// A decoder that refuses to produce more than `limit` bytes in all.
    pub fn new(limit: usize) -> Result<Self, ZstdError> {
        let mut inner =
            zstd::stream::raw::Decoder::new().map_err(|e| ZstdError::Corrupt(e.to_string()))?;
        inner
            .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))
            .map_err(|e| ZstdError::Corrupt(e.to_string()))?;
        Ok(Self {
            inner,
            produced: 0,
            limit,
            frame_done: false,
            fed: false,
        })
    }

    /// Decode from `input`, appending at most `room` bytes to `out`; returns
    /// the input bytes consumed (all, unless `room` ran out: call again).
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<usize, ZstdError> {
        use zstd::stream::raw::Operation;
        let start = out.len();
        // One byte past the limit, so that exceeding it is seen, not clipped.
        let room = room.min((self.limit - self.produced).saturating_add(1));
        out.resize(start + room, 0);
        let mut read = 0;
        let mut written = 0;
        loop {
            let status = self
                .inner
                .run_on_buffers(&input[read..], &mut out[start + written..])
                .map_err(|e| ZstdError::Corrupt(e.to_string()));
            let status = match status {
                Ok(s) => s,
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            };
            read += status.bytes_read;
            written += status.bytes_written;
            if status.bytes_read > 0 {
                self.fed = true;
            }
            if status.bytes_read > 0 || status.bytes_written > 0 {
                self.frame_done = status.remaining == 0;
            }
            let stuck = status.bytes_read == 0 && status.bytes_written == 0;
            if stuck || read == input.len() && written < room || written == room {
                break;
            }
        }
        out.truncate(start + written);
        self.produced += written;
        if self.produced > self.limit {
            out.truncate(start);
            return Err(ZstdError::OutputLimit { limit: self.limit });
        }
        Ok(read)
    }

    /// Bytes produced so far.
    pub fn produced(&self) -> usize {
        self.produced
    }

    /// The compressed body is complete: did it end a frame, fully flushed?
    /// (Call [`StreamDecoder::decode`] with empty input until it produces
    /// nothing first.)
    pub fn finish(&self) -> Result<(), ZstdError> {
        if self.fed && self.frame_done {
            Ok(())
        } else {
            Err(ZstdError::Corrupt(
                "the body ends inside a frame".to_owned(),
            ))
        }
    }
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

    fn stream(input: &[u8], limit: usize, step: usize, room: usize) -> Result<Vec<u8>, ZstdError> {
        let mut d = StreamDecoder::new(limit.min(expansion_bound(input.len())))?;
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let used = d.decode(rest, &mut out, room)?;
                rest = &rest[used..];
            }
        }
        loop {
            let before = out.len();
            d.decode(&[], &mut out, room)?;
            if out.len() == before {
                break;
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn streaming_agrees_with_one_shot() {
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("int g{i} = {};\n", i * 7).into_bytes())
            .collect();
        // Noisy bytes: honest data, not a bomb beyond the expansion bound.
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for input in [&b"x"[..], &text, &noise] {
            let z = compress(input);
            for step in [1, 13, 4096, z.len()] {
                for room in [1, 1000, 1 << 16] {
                    if step == 1 && room == 1 && input.len() > 100_000 {
                        continue;
                    }
                    assert_eq!(stream(&z, usize::MAX, step, room).unwrap(), input);
                }
            }
        }
        let bomb = compress(&vec![0u8; 10 << 20]);
        assert!(matches!(
            stream(&bomb, usize::MAX, 4096, 1 << 16),
            Err(ZstdError::OutputLimit { .. })
        ));
        let mut truncated = compress(&text);
        truncated.truncate(truncated.len() - 3);
        assert!(stream(&truncated, usize::MAX, 100, 1 << 16).is_err());
        assert!(stream(b"", usize::MAX, 1, 1).is_err());
        assert!(stream(b"not zstd at all", usize::MAX, 3, 100).is_err());
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
