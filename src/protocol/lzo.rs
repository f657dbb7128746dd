//! LZO1X bodies for protocol 2. Compression uses the `lzo1x` crate at the level
//! equivalent to LZO 2.10's `lzo1x_1_compress`; decompression is our own bounded
//! decoder, because the receiver is never told the decompressed size.

/// Why an LZO stream was rejected.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum LzoError {
    #[error("input ends inside an instruction")]
    Truncated,
    #[error("match distance reaches before the start of the output")]
    LookBehind,
    #[error("decompressed size would exceed {limit} bytes")]
    OutputLimit { limit: usize },
    #[error("bytes after the end-of-stream marker")]
    TrailingBytes,
    #[error("no end-of-stream marker")]
    NoEndMarker,
}

/// Largest output an LZO1X stream of `compressed_len` bytes can honestly produce.
pub fn expansion_bound(compressed_len: usize) -> usize {
    compressed_len.saturating_mul(256).saturating_add(64)
}

/// Compress `input` as distcc does (raw LZO1X-1 stream ending in `11 00 00`).
pub fn compress(input: &[u8]) -> Vec<u8> {
    // Level 3 is `compress_1` with 2^14 dictionary entries: LZO 2.10's
    // lzo1x_1_compress (D_BITS 14). protocol-fixtures tests hold us to distcc's bytes.
    lzo1x::compress(input, lzo1x::CompressLevel::new(3))
}

/// Decompress a raw LZO1X stream, refusing to produce more than
/// `min(max_output, expansion_bound(input.len()))` bytes.
pub fn decompress(input: &[u8], max_output: usize) -> Result<Vec<u8>, LzoError> {
    let limit = max_output.min(expansion_bound(input.len()));
    let mut d = Decoder {
        input,
        ip: 0,
        out: Vec::with_capacity(limit.min(input.len().saturating_mul(4))),
        limit,
    };
    d.run()?;
    if d.ip != input.len() {
        return Err(LzoError::TrailingBytes);
    }
    Ok(d.out)
}

struct Decoder<'a> {
    input: &'a [u8],
    ip: usize,
    out: Vec<u8>,
    limit: usize,
}

/// What the decoder does next; mirrors the labels of `lzo1x_decompress_safe`.
enum Step {
    /// Read an instruction after a literal-free state (S = 0).
    Outer,
    /// Read an instruction right after a literal run of 4 or more (S = 4).
    AfterLiteralRun,
    /// Read an instruction after 1–3 trailing literals (S = 1..3).
    Match(usize),
}

impl Decoder<'_> {
    fn byte(&mut self) -> Result<usize, LzoError> {
        let b = *self.input.get(self.ip).ok_or(LzoError::Truncated)?;
        self.ip += 1;
        Ok(b as usize)
    }

    /// Extended length: each `00` adds 255, the first non-zero byte ends it.
    fn extended(&mut self, base: usize) -> Result<usize, LzoError> {
        let mut len = base;
        loop {
            match self.byte()? {
                0 => {
                    len = len
                        .checked_add(255)
                        .ok_or(LzoError::OutputLimit { limit: self.limit })?;
                    if len > self.limit {
                        return Err(LzoError::OutputLimit { limit: self.limit });
                    }
                }
                x => return Ok(len + x),
            }
        }
    }

    fn literals(&mut self, n: usize) -> Result<(), LzoError> {
        let end = self.ip.checked_add(n).ok_or(LzoError::Truncated)?;
        let src = self.input.get(self.ip..end).ok_or(LzoError::Truncated)?;
        if self.out.len() + n > self.limit {
            return Err(LzoError::OutputLimit { limit: self.limit });
        }
        self.out.extend_from_slice(src);
        self.ip = end;
        Ok(())
    }

    fn copy_match(&mut self, distance: usize, len: usize) -> Result<(), LzoError> {
        if distance == 0 || distance > self.out.len() {
            return Err(LzoError::LookBehind);
        }
        if self.out.len() + len > self.limit {
            return Err(LzoError::OutputLimit { limit: self.limit });
        }
        let start = self.out.len() - distance;
        if distance >= len {
            self.out.extend_from_within(start..start + len);
        } else {
            // Overlapping copy: each byte may be one this match just produced.
            for i in 0..len {
                let b = self.out[start + i];
                self.out.push(b);
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), LzoError> {
        let first = *self.input.first().ok_or(LzoError::NoEndMarker)? as usize;
        let mut step = if first > 17 {
            self.ip = 1;
            let n = first - 17;
            self.literals(n)?;
            if n < 4 {
                Step::Match(n)
            } else {
                Step::AfterLiteralRun
            }
        } else {
            Step::Outer
        };
        loop {
            let (t, state) = match step {
                Step::Outer => {
                    if self.ip >= self.input.len() {
                        return Err(LzoError::NoEndMarker);
                    }
                    let t = self.byte()?;
                    if t < 16 {
                        let n = if t == 0 {
                            self.extended(15)? + 3
                        } else {
                            t + 3
                        };
                        self.literals(n)?;
                        step = Step::AfterLiteralRun;
                        continue;
                    }
                    (t, 0)
                }
                Step::AfterLiteralRun => (self.byte()?, 4),
                Step::Match(s) => (self.byte()?, s),
            };
            let trailing;
            if t >= 64 {
                let h = self.byte()?;
                let distance = 1 + ((t >> 2) & 7) + (h << 3);
                self.copy_match(distance, (t >> 5) + 1)?;
                trailing = t & 3;
            } else if t >= 32 {
                let len = match t & 31 {
                    0 => self.extended(31)?,
                    l => l,
                } + 2;
                let (b0, b1) = (self.byte()?, self.byte()?);
                self.copy_match(1 + (b0 >> 2) + (b1 << 6), len)?;
                trailing = b0 & 3;
            } else if t >= 16 {
                let high = (t & 8) << 11;
                let len = match t & 7 {
                    0 => self.extended(7)?,
                    l => l,
                } + 2;
                let (b0, b1) = (self.byte()?, self.byte()?);
                let low = (b0 >> 2) + (b1 << 6);
                if high == 0 && low == 0 {
                    return Ok(()); // end of stream
                }
                self.copy_match(16384 + high + low, len)?;
                trailing = b0 & 3;
            } else if state == 4 {
                let h = self.byte()?;
                self.copy_match(2049 + (t >> 2) + (h << 2), 3)?;
                trailing = t & 3;
            } else {
                // S = 1..3 (S = 0 with t < 16 was a literal run above).
                let h = self.byte()?;
                self.copy_match(1 + (t >> 2) + (h << 2), 2)?;
                trailing = t & 3;
            }
            if trailing == 0 {
                step = Step::Outer;
            } else {
                self.literals(trailing)?;
                step = Step::Match(trailing);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut data = Vec::new();
        for i in 0..20_000u32 {
            data.extend_from_slice(format!("line {} of text {}\n", i % 97, i % 13).as_bytes());
        }
        for input in [&b""[..], b"a", b"abc", &[0xaa; 100], &data] {
            let c = compress(input);
            assert_eq!(decompress(&c, usize::MAX).unwrap(), input);
        }
    }

    #[test]
    fn empty_stream_is_end_marker() {
        assert_eq!(compress(b""), [0x11, 0, 0]);
        assert_eq!(decompress(&[0x11, 0, 0], 10).unwrap(), b"");
    }

    #[test]
    fn spec_worked_decode() {
        // shared/spec §4.4: SERR body of proto2-lzo-compile-error.
        let mut s = vec![0x00, 0x2a];
        s.extend_from_slice(
            "bad.c: In function \u{2018}broken\u{2019}:\nbad.c:1:29: error: expected".as_bytes(),
        );
        s.extend_from_slice(&[0x64, 0x05, 0x00, 0x08]);
        s.extend_from_slice(";\u{2019} before \u{2018}}\u{2019} token\n".as_bytes());
        s.extend_from_slice(&[0x11, 0, 0]);
        let out = decompress(&s, 1 << 20).unwrap();
        assert_eq!(out.len(), 90);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("expected \u{2018};\u{2019} before"));
    }

    #[test]
    fn literal_only_encoder_is_accepted() {
        // §4.5: one literal run.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut s = vec![0x00];
        let mut rest = data.len() - 18;
        while rest > 255 {
            s.push(0);
            rest -= 255;
        }
        s.push(rest as u8);
        s.extend_from_slice(&data);
        s.extend_from_slice(&[0x11, 0, 0]);
        assert_eq!(decompress(&s, 1 << 20).unwrap(), data);
    }

    #[test]
    fn rejects_hostile_streams() {
        // Match before any output.
        assert_eq!(
            decompress(&[18, b'a', 0x4c, 0x00, 0x11, 0, 0], 100),
            Err(LzoError::LookBehind)
        );
        // Trailing bytes after the end marker.
        assert_eq!(
            decompress(&[0x11, 0, 0, 0], 100),
            Err(LzoError::TrailingBytes)
        );
        // Truncated literal run.
        assert_eq!(
            decompress(&[0x20 + 17, b'a'], 100),
            Err(LzoError::Truncated)
        );
        // No end marker.
        assert_eq!(decompress(&[18, b'a'], 100), Err(LzoError::Truncated));
        assert_eq!(decompress(&[], 100), Err(LzoError::NoEndMarker));
        // A bomb: expands far beyond the caller's limit.
        let zeros = vec![0u8; 1 << 20];
        let c = compress(&zeros);
        assert_eq!(
            decompress(&c, 1000),
            Err(LzoError::OutputLimit { limit: 1000 })
        );
        assert_eq!(decompress(&c, usize::MAX).unwrap().len(), 1 << 20);
    }

    #[test]
    fn never_panics_on_prefixes_and_mutations() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 17) as u8).collect();
        let c = compress(&data);
        for cut in 0..c.len() {
            let _ = decompress(&c[..cut], 1 << 20);
        }
        for i in 0..c.len() {
            let mut m = c.clone();
            m[i] ^= 0x5a;
            let _ = decompress(&m, 1 << 20);
        }
    }
}
