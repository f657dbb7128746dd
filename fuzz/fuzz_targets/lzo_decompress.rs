//! Hostile LZO1X streams into our bounded decoder. Checks: no panic; output
//! within both the caller's cap and the expansion bound; whatever we accept,
//! the `lzo1x` crate (a port of LZO's `lzo1x_decompress_safe`) accepts with
//! the same bytes. The input read as plain data must survive compress →
//! decompress, with exactly its own length as the cap.
#![no_main]

use dportage::protocol::lzo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cap = 16 << 20;
    if let Ok(out) = lzo::decompress(data, cap) {
        assert!(out.len() <= cap.min(lzo::expansion_bound(data.len())));
        let mut reference = vec![0; out.len()];
        assert!(lzo1x::decompress(data, &mut reference).is_ok());
        assert_eq!(out, reference);
    }
    let stream = lzo::compress(data);
    assert_eq!(lzo::decompress(&stream, data.len()).as_deref(), Ok(data));
});
