//! Hostile client bytes into the server's request decoder. Checks: no panic;
//! memory bounded by the limits (run with `-malloc_limit_mb`); feeding the bytes
//! in pieces gives the same events or the same error as decoding them whole;
//! `wanted` is never 0; an accepted request re-encodes to one that decodes equal.
#![no_main]

use bytes::BytesMut;
use dportage::protocol::{
    Limits, ProtocolError, ProtocolVersion, Request, RequestDecoder, RequestEvent,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    // Bounds small enough that a decoder honouring them stays far under
    // libFuzzer's malloc limit; one that does not is caught by it.
    let limits = Limits {
        max_body: 1 << 20,
        max_decompressed: 4 << 20,
        ..Limits::default()
    };
    let whole = Request::decode_all(bytes, &limits);
    // A leading `TCKT` (dportage's ticket extension) is an event the server
    // judges; `decode_all` skips it, so the comparison does too.
    let split = feed(bytes, usize::from(control) + 1, limits).map(|events| {
        events
            .into_iter()
            .filter(|e| !matches!(e, RequestEvent::Ticket(_)))
            .collect::<Vec<_>>()
    });

    match &whole {
        Ok(request) => {
            assert_eq!(
                split,
                Ok(vec![
                    RequestEvent::Version(request.version),
                    RequestEvent::Argv(request.argv.clone()),
                    RequestEvent::Doti(request.doti.clone()),
                ])
            );
            let again = Request::decode_all(&request.encode(), &limits);
            assert_eq!(again.as_ref(), Ok(request));
        }
        // `DIST 3`: the decoder stops after the version; decode_all asks for more.
        Err(ProtocolError::Finished) => {
            assert_eq!(split, Ok(vec![RequestEvent::Version(ProtocolVersion::V3)]));
        }
        Err(ProtocolError::Incomplete) => {
            let events = split.expect("whole input is only incomplete");
            assert!(!events.iter().any(|e| matches!(e, RequestEvent::Doti(_))));
        }
        Err(ProtocolError::TrailingBytes(n)) => {
            assert!(*n > 0);
            let events = split.expect("whole input is complete");
            assert!(matches!(events.last(), Some(RequestEvent::Doti(_))));
        }
        // A `CGET` (fetch of a cached reply) is a whole message of its own,
        // which `decode_all`, made for jobs, refuses.
        Err(ProtocolError::UnexpectedToken { got, .. }) if got == "CGET" => {
            let events = split.expect("a fetch is a complete message");
            assert!(matches!(events.last(), Some(RequestEvent::Fetch(_))));
        }
        Err(e) => assert_eq!(split.as_ref().err(), Some(e)),
    }
});

/// Feed `bytes` in `chunk`-sized reads, as a server's read loop would.
fn feed(bytes: &[u8], chunk: usize, limits: Limits) -> Result<Vec<RequestEvent>, ProtocolError> {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        while !decoder.is_finished() {
            match decoder.decode(&mut buf)? {
                Some(event) => events.push(event),
                None => {
                    assert!(decoder.wanted(buf.len()) > 0);
                    break;
                }
            }
        }
        if decoder.is_finished() {
            break;
        }
    }
    Ok(events)
}
