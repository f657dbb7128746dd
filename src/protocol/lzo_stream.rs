//! A streaming LZO1X decoder: compressed chunks in, bounded output chunks out,
//! so that an object of any size (or a bomb) is decoded in constant memory.
//!
//! LZO1X back-references reach at most 49 151 bytes back (M4: 16384 plus
//! 0x4000 plus 0x3fff, i.e. 0xbfff), so the decoder keeps only a 64 KiB ring
//! of the latest output. It accepts exactly the streams [`super::lzo::decompress`] accepts,
//! with the same bytes and the same output limit; the only state carried
//! between chunks is the position inside the current instruction.

use super::lzo::LzoError;

/// History kept for back-references: a power of two above the largest LZO1X
/// distance (0xbfff), so positions wrap with a mask.
const RING: usize = 1 << 16;
const MASK: usize = RING - 1;

/// Where the decoder is inside the instruction stream. `s` is LZO's state
/// after the previous instruction: 0 (outer), 1–3 (trailing literals), 4
/// (after a literal run of 4 or more); it decides how the next byte reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No byte seen yet (the first byte has its own encoding of literals).
    Start,
    /// Expecting an instruction byte.
    Instr { s: u8 },
    /// `t == 0` literal run: extended length accumulating.
    LiteralLen { len: usize },
    /// M3/M4 match with `len` extended bytes accumulating.
    MatchLen { t: u8, len: usize },
    /// Distance bytes of a match: `got` of `need` read into `b`.
    Distance {
        t: u8,
        s: u8,
        len: usize,
        b: [u8; 2],
        got: u8,
    },
    /// Copying `left` literals from the input, then reading with state `next`.
    Literals { left: usize, next: u8 },
    /// Copying `left` bytes from `distance` back, then `trailing` literals.
    Copy {
        distance: usize,
        left: usize,
        done: usize,
        trailing: u8,
    },
    /// End-of-stream marker read: nothing may follow.
    End,
}

/// The decoder. Feed it with [`StreamDecoder::decode`], then call
/// [`StreamDecoder::finish`] once the compressed body is complete.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    state: State,
    ring: Box<[u8]>,
    /// Total bytes produced (also the ring's write position, masked).
    produced: usize,
    limit: usize,
}

impl StreamDecoder {
    /// A decoder that refuses to produce more than `limit` bytes in all (the
    /// caller applies [`super::lzo::expansion_bound`] of the body's length).
    pub fn new(limit: usize) -> Self {
        Self {
            state: State::Start,
            ring: vec![0; RING].into_boxed_slice(),
            produced: 0,
            limit,
        }
    }

    /// Bytes produced so far.
    pub fn produced(&self) -> usize {
        self.produced
    }

    /// Whether the end-of-stream marker has been read.
    pub fn is_finished(&self) -> bool {
        self.state == State::End
    }

    /// Decode from `input`, appending at most `room` bytes to `out`. Returns
    /// how many input bytes were consumed: all of them, unless `room` ran out
    /// (then call again with the rest and fresh room).
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<usize, LzoError> {
        let mut ip = 0;
        let mut room = room;
        loop {
            match self.state {
                State::Copy { .. } => {
                    if room == 0 {
                        return Ok(ip);
                    }
                    room -= self.copy(out, room)?;
                    continue;
                }
                State::Literals { left, next } => {
                    if left == 0 {
                        self.state = State::Instr { s: next };
                        continue;
                    }
                    let n = left.min(room).min(input.len() - ip);
                    if n == 0 {
                        return Ok(ip);
                    }
                    self.emit(&input[ip..ip + n], out);
                    ip += n;
                    room -= n;
                    self.state = State::Literals {
                        left: left - n,
                        next,
                    };
                    continue;
                }
                _ => {}
            }
            let Some(&byte) = input.get(ip) else {
                return Ok(ip);
            };
            if self.state == State::End {
                return Err(LzoError::TrailingBytes);
            }
            ip += 1;
            self.step(byte)?;
        }
    }

    /// The compressed body is complete: was it a whole stream?
    pub fn finish(&self) -> Result<(), LzoError> {
        match self.state {
            State::End => Ok(()),
            // Where the one-shot decoder would look for the next instruction
            // and find no input: the marker is missing rather than cut.
            State::Start | State::Instr { s: 0 } => Err(LzoError::NoEndMarker),
            _ => Err(LzoError::Truncated),
        }
    }

    /// One byte of an instruction header (never of literals).
    fn step(&mut self, byte: u8) -> Result<(), LzoError> {
        let b = byte as usize;
        self.state = match self.state {
            State::Start if byte > 17 => {
                let n = b - 17;
                self.literals(n, if n < 4 { n as u8 } else { 4 })?
            }
            State::Start => return self.instruction(byte, 0),
            State::Instr { s } => return self.instruction(byte, s),
            State::LiteralLen { len } => match byte {
                0 => State::LiteralLen {
                    len: self.extend(len)?,
                },
                x => self.literals(len + x as usize + 3, 4)?,
            },
            State::MatchLen { t, len } => match byte {
                0 => State::MatchLen {
                    t,
                    len: self.extend(len)?,
                },
                x => State::Distance {
                    t,
                    s: 0,
                    len: len + x as usize + 2,
                    b: [0; 2],
                    got: 0,
                },
            },
            State::Distance {
                t,
                s,
                len,
                mut b,
                got,
            } => {
                b[got as usize] = byte;
                let need = if (16..64).contains(&t) { 2 } else { 1 };
                if got + 1 < need {
                    State::Distance {
                        t,
                        s,
                        len,
                        b,
                        got: got + 1,
                    }
                } else {
                    self.matched(t, s, len, b)?
                }
            }
            State::Literals { .. } | State::Copy { .. } | State::End => {
                unreachable!("decode() handles these states without reading a header byte")
            }
        };
        Ok(())
    }

    /// An instruction byte `t` read in state `s`.
    fn instruction(&mut self, t: u8, s: u8) -> Result<(), LzoError> {
        let tt = t as usize;
        let distance = |len| State::Distance {
            t,
            s,
            len,
            b: [0; 2],
            got: 0,
        };
        self.state = if s == 0 && t < 16 {
            match t {
                0 => State::LiteralLen { len: 15 },
                _ => self.literals(tt + 3, 4)?,
            }
        } else if t >= 64 {
            distance((tt >> 5) + 1)
        } else if t >= 32 {
            match t & 31 {
                0 => State::MatchLen { t, len: 31 },
                l => distance(l as usize + 2),
            }
        } else if t >= 16 {
            match t & 7 {
                0 => State::MatchLen { t, len: 7 },
                l => distance(l as usize + 2),
            }
        } else if s == 4 {
            distance(3)
        } else {
            distance(2)
        };
        Ok(())
    }

    /// The distance bytes of instruction `t` (state `s`, length `len`) are in.
    fn matched(&mut self, t: u8, s: u8, len: usize, b: [u8; 2]) -> Result<State, LzoError> {
        let (tt, b0, b1) = (t as usize, b[0] as usize, b[1] as usize);
        let (distance, trailing) = if t >= 64 {
            (1 + ((tt >> 2) & 7) + (b0 << 3), t & 3)
        } else if t >= 32 {
            (1 + (b0 >> 2) + (b1 << 6), b[0] & 3)
        } else if t >= 16 {
            let high = (tt & 8) << 11;
            let low = (b0 >> 2) + (b1 << 6);
            if high == 0 && low == 0 {
                return Ok(State::End);
            }
            (16384 + high + low, b[0] & 3)
        } else if s == 4 {
            (2049 + (tt >> 2) + (b0 << 2), t & 3)
        } else {
            (1 + (tt >> 2) + (b0 << 2), t & 3)
        };
        if distance == 0 || distance > self.produced {
            return Err(LzoError::LookBehind);
        }
        self.reserve(len)?;
        Ok(State::Copy {
            distance,
            left: len,
            done: 0,
            trailing,
        })
    }

    /// Start a run of `n` literals (checked against the limit up front, as
    /// the one-shot decoder does), then continue in state `next`.
    fn literals(&self, n: usize, next: u8) -> Result<State, LzoError> {
        self.reserve(n)?;
        Ok(State::Literals { left: n, next })
    }

    fn reserve(&self, n: usize) -> Result<(), LzoError> {
        match self.produced.checked_add(n) {
            Some(total) if total <= self.limit => Ok(()),
            _ => Err(LzoError::OutputLimit { limit: self.limit }),
        }
    }

    /// One `00` of an extended length: 255 more, never past the limit (a run
    /// of zeros must not count forever).
    fn extend(&self, len: usize) -> Result<usize, LzoError> {
        match len.checked_add(255) {
            Some(len) if len <= self.limit => Ok(len),
            _ => Err(LzoError::OutputLimit { limit: self.limit }),
        }
    }

    /// Append `bytes` to the output and the ring.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(bytes);
        let mut rest = bytes;
        while !rest.is_empty() {
            let at = self.produced & MASK;
            let n = rest.len().min(RING - at);
            self.ring[at..at + n].copy_from_slice(&rest[..n]);
            self.produced += n;
            rest = &rest[n..];
        }
    }

    /// Copy as much of the current match as `room` allows; returns bytes produced.
    fn copy(&mut self, out: &mut Vec<u8>, room: usize) -> Result<usize, LzoError> {
        let State::Copy {
            distance,
            mut left,
            mut done,
            trailing,
        } = self.state
        else {
            return Ok(0);
        };
        let mut produced = 0;
        while left > 0 && produced < room {
            // Once `done` bytes of the match exist, the output repeats with
            // period `distance`, so any multiple of it up to `done + distance`
            // back is the same byte: copying from there moves long runs (a
            // distance-1 run of zeros) in large pieces instead of byte by byte.
            let mut back = distance;
            if distance < RING / 2 {
                back = distance * ((done + distance).min(RING / 2) / distance);
            }
            let dst = self.produced & MASK;
            let src = (self.produced - back) & MASK;
            // Source and destination must not overlap within one piece, nor
            // run past the end of the ring.
            let n = left
                .min(room - produced)
                .min(back)
                .min(RING - back)
                .min(RING - dst)
                .min(RING - src);
            self.ring.copy_within(src..src + n, dst);
            out.extend_from_slice(&self.ring[dst..dst + n]);
            self.produced += n;
            produced += n;
            left -= n;
            done += n;
        }
        self.state = if left > 0 {
            State::Copy {
                distance,
                left,
                done,
                trailing,
            }
        } else if trailing == 0 {
            State::Instr { s: 0 }
        } else {
            // Like the one-shot decoder, trailing literals are checked
            // against the limit when they start.
            self.literals(trailing as usize, trailing)?
        };
        Ok(produced)
    }
}

#[cfg(test)]
mod tests {
    use super::super::lzo::{compress, decompress, expansion_bound};
    use super::*;

    /// Decode `input` fed in pieces of `step` bytes with `room` bytes of output per call.
    pub(crate) fn stream(
        input: &[u8],
        limit: usize,
        step: usize,
        room: usize,
    ) -> Result<Vec<u8>, LzoError> {
        let mut d = StreamDecoder::new(limit.min(expansion_bound(input.len())));
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let before = out.len();
                let used = d.decode(rest, &mut out, room)?;
                assert!(out.len() - before <= room);
                rest = &rest[used..];
            }
        }
        // Drain a match still pending at the end of input.
        while !d.is_finished() {
            let before = out.len();
            d.decode(&[], &mut out, room)?;
            if out.len() == before {
                break;
            }
        }
        d.finish()?;
        Ok(out)
    }

    fn text() -> Vec<u8> {
        (0..3000u32)
            .flat_map(|i| format!("line {} of text {}\n", i % 97, i % 13).into_bytes())
            .collect()
    }

    #[test]
    fn agrees_with_the_one_shot_decoder_at_every_split() {
        for input in [&b""[..], b"a", b"abcd", &[0u8; 70_000], &text()] {
            let c = compress(input);
            for step in [1, 2, 3, 7, 100, c.len()] {
                for room in [1, 5, 4096, usize::MAX] {
                    assert_eq!(stream(&c, usize::MAX, step, room).unwrap(), input);
                }
            }
        }
    }

    #[test]
    fn long_runs_beyond_the_ring() {
        let mut data = vec![0u8; 300_000];
        for (i, b) in data.iter_mut().enumerate().skip(100_000).step_by(7) {
            *b = (i % 251) as u8;
        }
        let c = compress(&data);
        assert_eq!(stream(&c, usize::MAX, 997, 65_537).unwrap(), data);
    }

    #[test]
    fn hostile_streams_fail_like_the_one_shot_decoder() {
        let zeros = compress(&vec![0u8; 1 << 20]);
        for (input, limit) in [
            (&[18, b'a', 0x4c, 0x00, 0x11, 0, 0][..], 100),
            (&[0x11, 0, 0, 0], 100),
            (&[0x20 + 17, b'a'], 100),
            (&[18, b'a'], 100),
            (&[], 100),
            (&zeros[..], 1000),
        ] {
            let one_shot = decompress(input, limit);
            assert!(one_shot.is_err());
            assert_eq!(stream(input, limit, 1, 7), one_shot, "{input:?}");
        }
    }
}
