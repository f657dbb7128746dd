//! Properties of the wire codec (src/protocol) over generated inputs: round
//! trips at any split, the `wanted` read hint, truncation and trailing bytes,
//! LZO against the `lzo1x` reference decoder, and hostile bytes under tight
//! [`Limits`]: only errors, never a panic, never an allocation the limits do
//! not allow (measured by a counting global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use dportage::protocol::lzo::{self, LzoError};
use dportage::protocol::{
    encode_doti, encode_header, encode_request_head, parse_header, Limits, ProtocolError,
    ProtocolVersion, Reply, ReplyDecoder, Request, RequestDecoder, RequestEvent, Token,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Allocation meter: the largest single allocation made by this thread while
// metering. Thread-local because the test harness runs tests in parallel.

struct MeteredAlloc;

thread_local! {
    static METERING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = METERING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for MeteredAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: MeteredAlloc = MeteredAlloc;

/// Run `f`, returning its result and the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    METERING.with(|m| m.set(true));
    let value = f();
    METERING.with(|m| m.set(false));
    (value, LARGEST.with(Cell::get))
}

/// Small limits, so a hostile header is far above them and any allocation
/// sized from it would stand out from the ones the limits allow.
fn tight_limits() -> Limits {
    Limits {
        max_argc: 64,
        max_arg_len: 256,
        max_argv_total: 2048,
        max_path_len: 256,
        max_body: 4096,
        max_decompressed: 16 * 1024,
        max_stream_body: 1024,
    }
}

/// The largest single allocation decoding `input_len` bytes under `limits` may
/// make: the input copy, a `Vec` grown by doubling to a bounded size, argv's
/// first reservation. Generous by a constant factor, never by the peer's say-so.
fn allocation_bound(input_len: usize, limits: &Limits) -> usize {
    // argv starts at min(ARGC, 256) slots and grows by doubling up to ARGC.
    let argv_slots = 2 * (limits.max_argc as usize).max(256) * std::mem::size_of::<Vec<u8>>();
    2 * input_len
        .max(limits.max_decompressed)
        .max(limits.max_body as usize)
        .max(limits.max_argv_total)
        .max(argv_slots)
        + 4096
}

// ---------------------------------------------------------------------------
// Strategies.

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V1), Just(ProtocolVersion::V2)]
}

/// Bytes that compress (short random pieces repeated), so LZO matches of every
/// kind get exercised, not just literal runs.
fn repetitive_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..12), 1..6),
        prop::collection::vec((any::<prop::sample::Index>(), 1usize..300), 0..40),
    )
        .prop_map(move |(pieces, picks)| {
            let mut out = Vec::new();
            for (index, times) in picks {
                let piece = index.get(&pieces);
                for _ in 0..times {
                    if out.len() >= max_len {
                        out.truncate(max_len);
                        return out;
                    }
                    out.extend_from_slice(piece);
                }
            }
            out.truncate(max_len);
            out
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..2000),
        repetitive_bytes(20_000),
    ]
}

/// An argument: any bytes but NUL (which the wire cannot carry in ARGV).
fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..40)
}

fn request() -> impl Strategy<Value = Request> {
    (version(), prop::collection::vec(arg(), 1..10), body()).prop_map(|(version, argv, doti)| {
        Request {
            version,
            argv,
            doti,
        }
    })
}

fn status() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(0x100), Just(0x8b), any::<u32>()]
}

fn reply() -> impl Strategy<Value = Reply> {
    (version(), status(), body(), body(), body()).prop_map(
        |(version, status, stderr, stdout, object)| Reply {
            version,
            status,
            stderr,
            stdout,
            // The wire never carries an object with a failing status.
            object: if status == 0 { object } else { Vec::new() },
        },
    )
}

fn token() -> impl Strategy<Value = Token> {
    prop::sample::select(vec![
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
    ])
}

/// `bytes` cut at the (sorted, deduplicated) points `cuts` pick.
fn chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

// ---------------------------------------------------------------------------
// Drivers: feed pieces as a network read loop would.

fn request_events(pieces: &[Vec<u8>], limits: Limits) -> Result<Vec<RequestEvent>, ProtocolError> {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while !decoder.is_finished() {
            match decoder.decode(&mut buf)? {
                Some(event) => events.push(event),
                None => {
                    assert!(decoder.wanted(buf.len()) >= 1, "wanted 0 while stuck");
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

fn reply_result(
    pieces: &[Vec<u8>],
    version: ProtocolVersion,
    limits: Limits,
) -> Result<Option<Reply>, ProtocolError> {
    let mut decoder = ReplyDecoder::new(version, limits);
    let mut buf = BytesMut::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        if let Some(reply) = decoder.decode(&mut buf)? {
            return Ok(Some(reply));
        }
        assert!(decoder.wanted(buf.len()) >= 1, "wanted 0 while stuck");
    }
    Ok(None)
}

/// Read from `stream` exactly `wanted` bytes at a time, as a server that never
/// over-reads would. Returns the events and how much of `stream` was read.
fn request_by_wanted(stream: &[u8]) -> (Result<Vec<RequestEvent>, ProtocolError>, usize) {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut read = 0;
    let mut events = Vec::new();
    while !decoder.is_finished() {
        match decoder.decode(&mut buf) {
            Err(e) => return (Err(e), read),
            Ok(Some(event)) => events.push(event),
            Ok(None) => {
                let n = decoder.wanted(buf.len());
                let Some(more) = stream.get(read..read + n) else {
                    return (Err(ProtocolError::Incomplete), read);
                };
                buf.extend_from_slice(more);
                read += n;
            }
        }
    }
    assert!(
        buf.is_empty(),
        "decoder finished with bytes left in its buffer"
    );
    (Ok(events), read)
}

fn reply_by_wanted(
    stream: &[u8],
    version: ProtocolVersion,
) -> (Result<Reply, ProtocolError>, usize) {
    let mut decoder = ReplyDecoder::new(version, Limits::default());
    let mut buf = BytesMut::new();
    let mut read = 0;
    loop {
        match decoder.decode(&mut buf) {
            Err(e) => return (Err(e), read),
            Ok(Some(reply)) => {
                assert!(
                    buf.is_empty(),
                    "decoder finished with bytes left in its buffer"
                );
                return (Ok(reply), read);
            }
            Ok(None) => {
                let n = decoder.wanted(buf.len());
                let Some(more) = stream.get(read..read + n) else {
                    return (Err(ProtocolError::Incomplete), read);
                };
                buf.extend_from_slice(more);
                read += n;
            }
        }
    }
}

fn events_of(request: &Request) -> Vec<RequestEvent> {
    vec![
        RequestEvent::Version(request.version),
        RequestEvent::Argv(request.argv.clone()),
        RequestEvent::Doti(request.doti.clone()),
    ]
}

/// Whether `request` fits `limits` as the wire carries it.
fn request_fits(request: &Request, limits: &Limits) -> bool {
    let total: usize = request.argv.iter().map(Vec::len).sum();
    let doti_wire = wire_len(request.version, &request.doti);
    request.argv.len() <= limits.max_argc as usize
        && request
            .argv
            .iter()
            .all(|a| a.len() <= limits.max_arg_len as usize)
        && total <= limits.max_argv_total
        && doti_wire <= limits.max_body as usize
        && request.doti.len() <= limits.max_decompressed
}

/// Per limit: `None` leaves it generous, `Some(d)` sets it to what the message
/// needs plus `d`, so both sides of every boundary get hit.
fn offsets() -> impl Strategy<Value = Vec<Option<i64>>> {
    prop::collection::vec(
        prop_oneof![2 => Just(None), 1 => (-2i64..=2).prop_map(Some)],
        5,
    )
}

fn near(need: usize, offset: Option<i64>, generous: usize) -> usize {
    match offset {
        None => generous,
        Some(d) => usize::try_from(need as i64 + d).unwrap_or(0),
    }
}

fn wire_len(version: ProtocolVersion, body: &[u8]) -> usize {
    encode_doti(version, body).len() - 12
}

/// Limits around what `request` needs.
fn limits_near_request(request: &Request, o: &[Option<i64>]) -> Limits {
    let d = Limits::default();
    let longest = request.argv.iter().map(Vec::len).max().unwrap_or(0);
    let total = request.argv.iter().map(Vec::len).sum();
    Limits {
        max_argc: near(request.argv.len(), o[0], d.max_argc as usize) as u32,
        max_arg_len: near(longest, o[1], d.max_arg_len as usize) as u32,
        max_argv_total: near(total, o[2], d.max_argv_total),
        max_body: near(wire_len(request.version, &request.doti), o[3], 1 << 20) as u32,
        max_decompressed: near(request.doti.len(), o[4], 1 << 20),
        ..d
    }
}

/// Limits around what `reply` needs.
fn limits_near_reply(reply: &Reply, o: &[Option<i64>]) -> Limits {
    let d = Limits::default();
    let bodies = [&reply.stderr, &reply.stdout, &reply.object];
    let wire = |b: &Vec<u8>| wire_len(reply.version, b);
    let streams = bodies[..2]
        .iter()
        .map(|b| wire(b).max(b.len()))
        .max()
        .unwrap_or(0);
    Limits {
        max_stream_body: near(streams, o[0], 1 << 20) as u32,
        max_body: near(
            bodies.iter().map(|b| wire(b)).max().unwrap_or(0),
            o[1],
            1 << 20,
        ) as u32,
        max_decompressed: near(
            bodies.iter().map(|b| b.len()).max().unwrap_or(0),
            o[2],
            1 << 20,
        ),
        ..d
    }
}

/// Offset and token of every packet header in a valid message.
fn packet_starts(bytes: &[u8]) -> Vec<(usize, [u8; 4])> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let token: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        let value =
            u32::from_str_radix(std::str::from_utf8(&bytes[at + 4..at + 12]).unwrap(), 16).unwrap();
        starts.push((at, token));
        at += 12;
        if matches!(&token, b"ARGV" | b"DOTI" | b"SERR" | b"SOUT" | b"DOTO") {
            at += value as usize;
        }
    }
    assert_eq!(at, bytes.len(), "not a valid message");
    starts
}

fn set_header_value(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at + 4..at + 12].copy_from_slice(format!("{value:08x}").as_bytes());
}

fn same_kind<T>(result: &Result<T, ProtocolError>, expected: &ProtocolError) -> bool {
    matches!(result, Err(e) if std::mem::discriminant(e) == std::mem::discriminant(expected))
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    // Modest: the whole file runs in a few seconds even on a loaded machine.
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn header_round_trip(token in token(), value in any::<u32>(), upper in any::<bool>()) {
        let mut out = Vec::new();
        encode_header(token, value, &mut out);
        prop_assert_eq!(out.len(), 12);
        prop_assert_eq!(&out[..4], token.as_bytes());
        prop_assert_eq!(parse_header(&out, token), Ok(value));
        if upper {
            // distcc writes lowercase; any peer may write uppercase hex.
            out[4..].make_ascii_uppercase();
            prop_assert_eq!(parse_header(&out, token), Ok(value));
        }
    }

    #[test]
    fn request_round_trip_whole(request in request()) {
        let bytes = request.encode();
        let mut parts = encode_request_head(request.version, &request.argv);
        parts.extend(encode_doti(request.version, &request.doti));
        prop_assert_eq!(&parts, &bytes);
        prop_assert_eq!(Request::decode_all(&bytes, &Limits::default()), Ok(request));
    }

    #[test]
    fn request_round_trip_at_any_split(
        request in request(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let bytes = request.encode();
        prop_assert_eq!(
            request_events(&chunks(&bytes, &cuts), Limits::default()),
            Ok(events_of(&request))
        );
    }

    #[test]
    fn request_wanted_never_reads_past_the_message(
        request in request(),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut stream = request.encode();
        let len = stream.len();
        stream.extend_from_slice(&after);
        let (events, read) = request_by_wanted(&stream);
        prop_assert_eq!(events, Ok(events_of(&request)));
        prop_assert_eq!(read, len);
    }

    #[test]
    fn request_prefix_is_incomplete_and_suffix_is_trailing(
        request in request(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..20),
    ) {
        let bytes = request.encode();
        let cut = cut.index(bytes.len());
        prop_assert_eq!(
            Request::decode_all(&bytes[..cut], &Limits::default()),
            Err(ProtocolError::Incomplete)
        );
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert_eq!(
            Request::decode_all(&longer, &Limits::default()),
            Err(ProtocolError::TrailingBytes(extra.len()))
        );
    }

    #[test]
    fn request_accepted_exactly_when_within_limits(request in request(), offsets in offsets()) {
        let limits = limits_near_request(&request, &offsets);
        let bytes = request.encode();
        let (decoded, largest) =
            largest_allocation(|| Request::decode_all(&bytes, &limits));
        if request_fits(&request, &limits) {
            prop_assert_eq!(decoded, Ok(request));
        } else {
            prop_assert!(
                matches!(
                    decoded,
                    Err(ProtocolError::TooLong { .. })
                        | Err(ProtocolError::Lzo { source: LzoError::OutputLimit { .. }, .. })
                ),
                "over the limits but got {:?}",
                decoded
            );
        }
        prop_assert!(largest <= allocation_bound(bytes.len(), &limits), "allocated {}", largest);
    }

    #[test]
    fn reply_round_trip_whole(reply in reply()) {
        let bytes = reply.encode();
        prop_assert_eq!(Reply::decode_all(&bytes, reply.version, &Limits::default()), Ok(reply));
    }

    #[test]
    fn reply_round_trip_at_any_split(
        reply in reply(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let bytes = reply.encode();
        prop_assert_eq!(
            reply_result(&chunks(&bytes, &cuts), reply.version, Limits::default()),
            Ok(Some(reply))
        );
    }

    #[test]
    fn reply_wanted_never_reads_past_the_message(
        reply in reply(),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut stream = reply.encode();
        let len = stream.len();
        stream.extend_from_slice(&after);
        let (decoded, read) = reply_by_wanted(&stream, reply.version);
        prop_assert_eq!(decoded, Ok(reply));
        prop_assert_eq!(read, len);
    }

    #[test]
    fn reply_prefix_is_incomplete_and_suffix_is_trailing(
        reply in reply(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..20),
    ) {
        let bytes = reply.encode();
        let cut = cut.index(bytes.len());
        prop_assert_eq!(
            Reply::decode_all(&bytes[..cut], reply.version, &Limits::default()),
            Err(ProtocolError::Incomplete)
        );
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert_eq!(
            Reply::decode_all(&longer, reply.version, &Limits::default()),
            Err(ProtocolError::TrailingBytes(extra.len()))
        );
    }

    #[test]
    fn reply_in_the_wrong_version_is_refused(reply in reply()) {
        let other = match reply.version {
            ProtocolVersion::V1 => ProtocolVersion::V2,
            _ => ProtocolVersion::V1,
        };
        prop_assert_eq!(
            Reply::decode_all(&reply.encode(), other, &Limits::default()),
            Err(ProtocolError::VersionMismatch {
                sent: other.number(),
                got: reply.version.number()
            })
        );
    }

    #[test]
    fn reply_accepted_exactly_when_within_limits(reply in reply(), offsets in offsets()) {
        let limits = limits_near_reply(&reply, &offsets);
        let bytes = reply.encode();
        let wire = |body: &[u8]| wire_len(reply.version, body);
        let stream_cap = limits.max_stream_body as usize;
        let stream_fits = |body: &[u8]| {
            wire(body) <= (limits.max_body as usize).min(stream_cap)
                && body.len() <= limits.max_decompressed.min(stream_cap)
        };
        let fits = stream_fits(&reply.stderr)
            && stream_fits(&reply.stdout)
            && wire(&reply.object) <= limits.max_body as usize
            && reply.object.len() <= limits.max_decompressed;
        let (decoded, largest) =
            largest_allocation(|| Reply::decode_all(&bytes, reply.version, &limits));
        if fits {
            prop_assert_eq!(decoded, Ok(reply));
        } else {
            prop_assert!(
                matches!(
                    decoded,
                    Err(ProtocolError::TooLong { .. })
                        | Err(ProtocolError::Lzo { source: LzoError::OutputLimit { .. }, .. })
                ),
                "over the limits but got {:?}",
                decoded
            );
        }
        prop_assert!(largest <= allocation_bound(bytes.len(), &limits), "allocated {}", largest);
    }

    #[test]
    fn lzo_round_trip_random(data in prop::collection::vec(any::<u8>(), 0..70_000)) {
        let stream = lzo::compress(&data);
        prop_assert_eq!(lzo::decompress(&stream, usize::MAX), Ok(data));
    }

    #[test]
    fn lzo_round_trip_repetitive(data in repetitive_bytes(200_000)) {
        let stream = lzo::compress(&data);
        prop_assert!(data.len() <= lzo::expansion_bound(stream.len()));
        // The reference decoder agrees on what our compressor produced.
        let mut reference = vec![0; data.len()];
        prop_assert!(lzo1x::decompress(&stream, &mut reference).is_ok());
        prop_assert_eq!(&reference, &data);
        // Exactly the output size is enough; one byte less is a bomb to the caller.
        prop_assert_eq!(lzo::decompress(&stream, data.len()), Ok(data.clone()));
        if !data.is_empty() {
            prop_assert_eq!(
                lzo::decompress(&stream, data.len() - 1),
                Err(LzoError::OutputLimit { limit: data.len() - 1 })
            );
        }
    }

    /// Whatever our decoder accepts, the `lzo1x` crate's port of
    /// `lzo1x_decompress_safe` accepts with the same output.
    #[test]
    fn lzo_decoder_agrees_with_reference(
        data in repetitive_bytes(5000),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut stream = lzo::compress(&data);
        for (at, value) in flips {
            let i = at.index(stream.len());
            stream[i] = value;
        }
        if let Ok(ours) = lzo::decompress(&stream, usize::MAX) {
            let mut reference = vec![0; ours.len()];
            prop_assert!(lzo1x::decompress(&stream, &mut reference).is_ok());
            prop_assert_eq!(ours, reference);
        }
    }

    #[test]
    fn lzo_garbage_is_bounded(
        stream in prop::collection::vec(any::<u8>(), 0..3000),
        cap in 0usize..100_000,
    ) {
        let (result, largest) = largest_allocation(|| lzo::decompress(&stream, cap));
        if let Ok(out) = &result {
            prop_assert!(out.len() <= cap.min(lzo::expansion_bound(stream.len())));
        }
        prop_assert!(largest <= 2 * cap.min(lzo::expansion_bound(stream.len())) + 64);
    }

    #[test]
    fn decoders_survive_garbage(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let limits = tight_limits();
        let pieces = chunks(&bytes, &cuts);
        let bound = allocation_bound(bytes.len(), &limits);
        let (_, largest) = largest_allocation(|| request_events(&pieces, limits));
        prop_assert!(largest <= bound, "request decoder allocated {}", largest);
        for version in [ProtocolVersion::V1, ProtocolVersion::V2, ProtocolVersion::V3] {
            let (_, largest) = largest_allocation(|| reply_result(&pieces, version, limits));
            prop_assert!(largest <= bound, "reply decoder allocated {}", largest);
        }
    }

    /// A valid message whose packet at a random place claims a hostile
    /// count or length: the decoders' deeper states see it, refuse it on the
    /// header when it is over the limits, and never size an allocation by it.
    #[test]
    fn hostile_claim_in_any_packet(
        request in request(),
        reply in reply(),
        pick in any::<prop::sample::Index>(),
        claim in prop_oneof![Just(u32::MAX), Just(0x7fff_ffff), 0x10000u32..],
    ) {
        // Room for every generated body, far below every claim.
        let limits = Limits {
            max_body: 32 * 1024,
            max_decompressed: 32 * 1024,
            max_stream_body: 32 * 1024,
            ..tight_limits()
        };
        let mut hostile_request = request.encode();
        let (at, token) = *pick.get(&packet_starts(&hostile_request));
        set_header_value(&mut hostile_request, at, claim);
        let (result, largest) =
            largest_allocation(|| Request::decode_all(&hostile_request, &limits));
        prop_assert!(largest <= allocation_bound(hostile_request.len(), &limits), "allocated {}", largest);
        let expected = match &token {
            b"DIST" => ProtocolError::UnsupportedVersion(claim),
            _ => ProtocolError::TooLong { what: "", len: 0, limit: 0 },
        };
        prop_assert!(same_kind(&result, &expected), "{:?} claimed {}: {:?}", token, claim, result);

        let mut hostile_reply = reply.encode();
        let (at, token) = *pick.get(&packet_starts(&hostile_reply));
        set_header_value(&mut hostile_reply, at, claim);
        let (result, largest) =
            largest_allocation(|| Reply::decode_all(&hostile_reply, reply.version, &limits));
        prop_assert!(largest <= allocation_bound(hostile_reply.len(), &limits), "allocated {}", largest);
        let expected = match &token {
            b"DONE" => Some(ProtocolError::VersionMismatch { sent: 0, got: 0 }),
            // Any status is legal; what follows decides.
            b"STAT" => None,
            b"DOTO" if reply.status != 0 => {
                Some(ProtocolError::BodyOnFailure { status: 0, len: 0 })
            }
            _ => Some(ProtocolError::TooLong { what: "", len: 0, limit: 0 }),
        };
        if let Some(expected) = expected {
            prop_assert!(same_kind(&result, &expected), "{:?} claimed {}: {:?}", token, claim, result);
        }
    }

    /// Valid messages with a few bytes overwritten: errors only, bounded memory.
    #[test]
    fn decoders_survive_corrupted_messages(
        request in request(),
        reply in reply(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let limits = Limits { max_decompressed: 1 << 20, ..Limits::default() };
        let mut request_bytes = request.encode();
        let mut reply_bytes = reply.encode();
        for (at, value) in &flips {
            let i = at.index(request_bytes.len());
            request_bytes[i] = *value;
            let i = at.index(reply_bytes.len());
            reply_bytes[i] = *value;
        }
        let (_, largest) = largest_allocation(|| {
            let _ = request_events(&chunks(&request_bytes, &cuts), limits);
            let _ = Request::decode_all(&request_bytes, &limits);
            let _ = reply_result(&chunks(&reply_bytes, &cuts), reply.version, limits);
            let _ = Reply::decode_all(&reply_bytes, reply.version, &limits);
        });
        let input = request_bytes.len().max(reply_bytes.len());
        prop_assert!(largest <= 2 * input.max(limits.max_decompressed) + 4096);
    }
}

/// The allocation meter itself sees a large allocation (otherwise every bound
/// above would pass vacuously).
#[test]
fn allocation_meter_sees_allocations() {
    let (v, largest) = largest_allocation(|| vec![0u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(largest >= 1 << 20, "meter saw only {largest}");
    let (_, largest) = largest_allocation(|| 1 + 1);
    assert_eq!(largest, 0);
}

/// A header claiming 4 GiB under default limits is refused on the header,
/// before a byte of body is buffered or reserved.
#[test]
fn huge_claims_are_refused_before_allocating() {
    let limits = Limits::default();
    for hostile in [
        &b"DIST00000001ARGCffffffff"[..],
        b"DIST00000001ARGC00000001ARGVffffffff",
        b"DIST00000002ARGC00000001ARGV00000001aDOTIffffffff",
    ] {
        let (result, largest) = largest_allocation(|| Request::decode_all(hostile, &limits));
        assert!(
            matches!(result, Err(ProtocolError::TooLong { .. })),
            "{result:?}"
        );
        assert!(largest < 64 * 1024, "allocated {largest} for {hostile:?}");
    }
    let (result, largest) = largest_allocation(|| {
        Reply::decode_all(
            b"DONE00000002STAT00000000SERR00000000SOUT00000000DOTOffffffff",
            ProtocolVersion::V2,
            &limits,
        )
    });
    assert!(
        matches!(result, Err(ProtocolError::TooLong { .. })),
        "{result:?}"
    );
    assert!(largest < 64 * 1024, "allocated {largest}");
}
