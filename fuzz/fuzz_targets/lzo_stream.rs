//! Hostile LZO1X streams into the streaming decoder, fed in pieces chosen by
//! the input itself. Checks: no panic; never more output per call than the
//! room given; the same verdict and bytes as the one-shot decoder under the
//! same limit (which the `lzo_decompress` target ties to the reference).
#![no_main]

use dportage::protocol::{lzo, lzo_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // First byte: piece size; second: output room per call; rest: the stream.
    let [step, room, data @ ..] = input else {
        return;
    };
    let step = usize::from(*step).max(1);
    let room = usize::from(*room) * 257 + 1;
    let cap = 16 << 20;
    let one_shot = lzo::decompress(data, cap);
    let mut d = lzo_stream::StreamDecoder::new(cap.min(lzo::expansion_bound(data.len())));
    let mut out = Vec::new();
    let streamed = (|| {
        for piece in data.chunks(step) {
            let mut rest = piece;
            while !rest.is_empty() {
                let before = out.len();
                let used = d.decode(rest, &mut out, room)?;
                assert!(out.len() - before <= room);
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
        d.finish()
    })();
    match (one_shot, streamed) {
        (Ok(expected), Ok(())) => assert_eq!(out, expected),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("one-shot {:?} vs streamed {:?}", a.map(|v| v.len()), b),
    }
});
