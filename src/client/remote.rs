//! One job on one distcc server over TCP (protocols 1 and 2).
//!
//! Split in two steps so the caller can overlap them with other work:
//! [`Connection::open`] connects and sends the request head (`DIST`, `ARGC`,
//! `ARGV`s) while the local preprocessor still runs; [`Connection::finish`] sends
//! `DOTI` and reads the reply. [`run_remote`] does both, and several of them can
//! run at once on different hosts (each future owns its socket).
//!
//! The socket is never half-closed: distcc 3.4 servers kill the compile when the
//! client shuts down its sending side (spec §0.16).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::exitcode;
use crate::jobstate::binstate::Phase;
use crate::network::clock::unix_now;
use crate::network::identity::Identity;
use crate::network::ticket::{present, Ticket, NONCE_LEN};
use crate::protocol::request::{encode_doti, encode_request_head, encode_ticket};
use crate::protocol::{
    Limits, ProtocolError, ProtocolVersion, ReplyEvent, ReplyHead, ReplyStreamDecoder,
};
use crate::transport::{FrameReader, Pace, PaceError, Patience, ReadPolicy, TransportError};

use super::monitor_state::Flight;
use super::output::ObjectFile;

/// distcc's connect timeout per address (spec §8.10); not configurable there either.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Largest object (`DOTO`) the client accepts, on the wire and decompressed:
/// 1 GiB, far above real objects (a debug-info-heavy LTO object is a few
/// hundred MiB). Objects stream to disk, so this bounds disk use, not memory.
pub const MAX_OBJECT: usize = 1024 * 1024 * 1024;
/// Once a reply has started, every `PACE_WINDOW` must bring at least
/// `PACE_MIN_BYTES` (16 KiB/s on average, a 128 kbit/s link) or the end of the
/// reply. A distcc server sends its whole reply at once after the compile, so
/// an honest one is never near this; a dripping one fails within 10 s.
/// Defaults of `DPORTAGE_REPLY_PACE_WINDOW` and `DPORTAGE_REPLY_MIN_RATE`.
pub const PACE_WINDOW: Duration = Duration::from_secs(10);
pub const PACE_MIN_BYTES: usize = 160 * 1024;
/// The whole reply (compile included) must be in within this many
/// `DISTCC_IO_TIMEOUT`s of sending the source: 20 minutes by default. The
/// compile itself is already bounded by one timeout (the first byte must come
/// within it); the rest leaves a 1 GiB object ~1 MiB/s. Default of
/// `DPORTAGE_REPLY_TIMEOUTS`.
pub const REPLY_DEADLINE_TIMEOUTS: u32 = 4;

/// How a reply must keep coming once it has started (the client's
/// `DPORTAGE_REPLY_*` settings; the defaults are the constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyPace {
    /// Every `window` must bring `min_bytes` or the end of the reply.
    pub window: Duration,
    pub min_bytes: usize,
    /// The whole reply within this many `DISTCC_IO_TIMEOUT`s.
    pub deadline_timeouts: u32,
}

impl Default for ReplyPace {
    fn default() -> Self {
        Self {
            window: PACE_WINDOW,
            min_bytes: PACE_MIN_BYTES,
            deadline_timeouts: REPLY_DEADLINE_TIMEOUTS,
        }
    }
}
/// Largest `SERR` or `SOUT` the client accepts: compiler diagnostics, not data.
pub const MAX_STREAM: usize = 16 * 1024 * 1024;
/// Writes are split so that `DISTCC_IO_TIMEOUT` bounds the time without progress,
/// not the time for a whole large `DOTI`.
const WRITE_CHUNK: usize = 256 * 1024;
/// Read sizes: at least this much room per read …
const READ_MIN: usize = 16 * 1024;
/// … and never more reserved at once than this, however large a body is announced.
const READ_MAX: usize = 256 * 1024;

/// The limits the client applies to a reply, checked by the decoder against
/// each announced length before any of the body is buffered.
pub fn reply_limits() -> Limits {
    Limits {
        max_body: MAX_OBJECT as u32,
        max_decompressed: MAX_OBJECT,
        max_stream_body: MAX_STREAM as u32,
        ..Limits::default()
    }
}

/// A server to send a job to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHost {
    /// The host entry as written, for messages.
    pub label: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `V1` or `V2`; `V3` (pump) is never spoken by this client.
    pub version: ProtocolVersion,
    /// The coordinator's ticket for this host, when its signed list entry
    /// says it takes one: presented before the job (`TCKT`).
    pub ticket: Option<Arc<TicketHolder>>,
}

/// A ticket and the member key that proves it is ours.
#[derive(Debug)]
pub struct TicketHolder {
    pub ticket: Ticket,
    pub member: Arc<Identity>,
}

impl PartialEq for TicketHolder {
    fn eq(&self, other: &Self) -> bool {
        self.ticket == other.ticket && self.member.id() == other.member.id()
    }
}

impl Eq for TicketHolder {}

impl TicketHolder {
    /// The `TCKT` packet for one connection: the ticket and a fresh proof.
    pub fn packet(&self) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        encode_ticket(&present(&self.ticket, &self.member, unix_now(), nonce))
    }
}

/// Time limits for one job.
#[derive(Debug, Clone, Copy)]
pub struct NetTimeouts {
    /// Per address tried.
    pub connect: Duration,
    /// Per read or write without progress (`DISTCC_IO_TIMEOUT`).
    pub io: Duration,
    /// How the reply must keep coming once started.
    pub pace: ReplyPace,
}

/// Why a job could not be completed on a host. Every variant counts as "failed
/// to distribute" (spec §8.9): another host is tried, and the host is backed
/// off unless it only said it was busy ([`RemoteError::is_busy`]).
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    // distcc's words, which build logs are grepped for.
    #[error(
        "failed to resolve host {host} port {port}: {}",
        resolver_words(source)
    )]
    Resolve {
        host: String,
        port: u16,
        source: io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error(
        "nonblocking connect to {addr} failed: {}",
        crate::logging::strerror(source)
    )]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connecting to {addr} timed out after {} s", .after.as_secs())]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("network error while {during}: {source}")]
    Io {
        during: &'static str,
        source: io::Error,
    },
    #[error("no progress for {} s while {during} (raise DISTCC_IO_TIMEOUT if the server is just slow)", .after.as_secs())]
    Timeout {
        during: &'static str,
        after: Duration,
    },
    #[error("the server closed the connection while {during} without a complete reply (it refused or failed the job; its log says why)")]
    Closed { during: &'static str },
    #[error("the reply came too slowly: {0} (a host that drips is treated as failed)")]
    TooSlow(PaceError),
    #[error("the server is busy ({0}); trying another host")]
    Busy(String),
    #[error("bad reply: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("cannot write the object received to a temporary file beside {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("the preprocessed source is {0} bytes, too large to send")]
    SourceTooLarge(usize),
    #[error("pump mode (protocol 3) is not supported by this client")]
    Unsupported,
}

impl RemoteError {
    /// The host answered that it is too busy to queue the job: a healthy
    /// host, so it is not backed off (it is only skipped for this job).
    pub fn is_busy(&self) -> bool {
        matches!(self, RemoteError::Busy(_))
    }

    /// distcc's exit code for this failure, used when fallback is disabled.
    pub fn exit_code(&self) -> i32 {
        match self {
            RemoteError::Resolve { .. }
            | RemoteError::NoAddress { .. }
            | RemoteError::Connect { .. }
            | RemoteError::ConnectTimeout { .. } => exitcode::CONNECT_FAILED,
            RemoteError::Io { .. } | RemoteError::Timeout { .. } | RemoteError::TooSlow(_) => {
                exitcode::IO_ERROR
            }
            RemoteError::Closed { .. } => exitcode::TRUNCATED,
            RemoteError::Busy(_) => exitcode::BUSY,
            RemoteError::Protocol(_) => exitcode::PROTOCOL_ERROR,
            RemoteError::SourceTooLarge(_)
            | RemoteError::Unsupported
            | RemoteError::Output { .. } => exitcode::DISTCC_FAILED,
        }
    }
}

/// A reply received whole and valid, its object (when the status is 0) in a
/// temporary file beside the output, not yet renamed into place.
#[derive(Debug)]
pub struct RemoteReply {
    /// Raw wait status of the compiler (`exit << 8`, or the signal number).
    pub status: u32,
    pub stderr: Vec<u8>,
    pub stdout: Vec<u8>,
    /// `None` when the status is not 0 (distcc sends no object then).
    pub object: Option<ObjectFile>,
}

impl RemoteReply {
    /// Size of the object (0 without one).
    pub fn object_len(&self) -> u64 {
        self.object.as_ref().map_or(0, ObjectFile::len)
    }

    /// blake3 of the object (of nothing without one), computed as it streamed.
    pub fn object_hash(&self) -> [u8; 32] {
        match &self.object {
            Some(object) => object.hash(),
            None => *blake3::hash(b"").as_bytes(),
        }
    }
}

/// A connection with the request head sent, waiting for the source.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    version: ProtocolVersion,
    io_timeout: Duration,
    pace: ReplyPace,
    /// Where this job's phases are shown to monitors, if anywhere.
    monitor: Option<Flight>,
}

impl Connection {
    /// Show this connection's phases (sending, compiling, receiving) to
    /// monitors as `flight`.
    pub fn monitored(mut self, flight: Flight) -> Connection {
        self.monitor = Some(flight);
        self
    }

    fn note(&self, phase: Phase) {
        if let Some(flight) = &self.monitor {
            flight.note(phase);
        }
    }

    /// Connect to `host` and send `DIST`, `ARGC` and the `ARGV`s of `argv`.
    pub async fn open(
        host: &RemoteHost,
        argv: &[Vec<u8>],
        timeouts: NetTimeouts,
    ) -> Result<Connection, RemoteError> {
        if host.version == ProtocolVersion::V3 {
            return Err(RemoteError::Unsupported);
        }
        Connection::start(
            host,
            host.version,
            timeouts,
            &encode_request_head(host.version, argv),
        )
        .await
    }

    /// Connect to `host`, then send its ticket (when it has one) and `head`
    /// in one write, to be answered in protocol `version`.
    async fn start(
        host: &RemoteHost,
        version: ProtocolVersion,
        timeouts: NetTimeouts,
        head: &[u8],
    ) -> Result<Connection, RemoteError> {
        let stream = connect(&host.host, host.port, timeouts.connect).await?;
        // The head and DOTI are each written whole; without NODELAY a small DOTI
        // would wait for the ACK of the head (Nagle). Whole writes are also why
        // DISTCC_TCP_CORK needs no handling here: there is nothing to coalesce.
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream,
            version,
            io_timeout: timeouts.io,
            pace: timeouts.pace,
            monitor: None,
        };
        let mut first = match &host.ticket {
            Some(holder) => holder.packet(),
            None => Vec::new(),
        };
        first.extend_from_slice(head);
        conn.write("sending the request", &first).await?;
        Ok(conn)
    }

    /// Ask `host` for the reply it stored under `result` (the cache's
    /// `CGET`, after the ticket when it has one) and read it as any reply,
    /// bounded the same way, its object into a temporary file beside
    /// `output`. A host without it closes the connection
    /// ([`RemoteError::Closed`]). Nothing is trusted here: the caller checks
    /// the result hash of what came.
    pub async fn fetch_stored(
        host: &RemoteHost,
        result: &[u8; 32],
        timeouts: NetTimeouts,
        output: &Path,
    ) -> Result<RemoteReply, RemoteError> {
        // Stored replies are protocol 2 (LZO) whatever the host entry says.
        let fetch = crate::protocol::request::encode_fetch(result);
        let mut conn = Connection::start(host, ProtocolVersion::V2, timeouts, &fetch).await?;
        conn.read_reply(output).await
    }

    /// Send the source (`DOTI`) and read the whole reply, streaming its
    /// object into a temporary file beside `output`.
    pub async fn finish(
        mut self,
        source: &[u8],
        output: &Path,
    ) -> Result<RemoteReply, RemoteError> {
        if u32::try_from(source.len()).is_err() {
            return Err(RemoteError::SourceTooLarge(source.len()));
        }
        let doti = encode_doti(self.version, source);
        self.note(Phase::Send);
        self.write("sending the source", &doti).await?;
        self.note(Phase::Compile);
        self.read_reply(output).await
    }

    async fn write(&mut self, during: &'static str, bytes: &[u8]) -> Result<(), RemoteError> {
        for chunk in bytes.chunks(WRITE_CHUNK) {
            match timeout(self.io_timeout, self.stream.write_all(chunk)).await {
                Err(_) => {
                    return Err(RemoteError::Timeout {
                        during,
                        after: self.io_timeout,
                    })
                }
                Ok(Err(e)) if is_peer_gone(&e) => return Err(RemoteError::Closed { during }),
                Ok(Err(source)) => return Err(RemoteError::Io { during, source }),
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    }

    async fn read_reply(&mut self, output: &Path) -> Result<RemoteReply, RemoteError> {
        let policy = ReadPolicy {
            min_read: READ_MIN,
            max_read: READ_MAX,
            patience: Some(Patience::per_read(self.io_timeout)),
        };
        let pace = Pace {
            window: self.pace.window,
            min_bytes: self.pace.min_bytes,
            deadline: tokio::time::Instant::now()
                + self.io_timeout.saturating_mul(self.pace.deadline_timeouts),
        };
        let decoder = ReplyStreamDecoder::new(self.version, reply_limits());
        let monitor = self.monitor.clone();
        let mut frames = FrameReader::new(&mut self.stream, decoder, policy).with_pace(pace);
        let ReplyHead {
            status,
            stderr,
            stdout,
        } = match frames.next_event(|_| {}).await.map_err(reply_error)? {
            ReplyEvent::Head(head) => head,
            // The decoder yields the head first; anything else is a bug there.
            _ => return Err(RemoteError::Protocol(ProtocolError::Incomplete)),
        };
        if let Some(flight) = &monitor {
            flight.note(Phase::Receive);
        }
        let output_error = |source| RemoteError::Output {
            path: output.to_owned(),
            source,
        };
        let mut object = if status == 0 {
            Some(ObjectFile::beside(output).map_err(output_error)?)
        } else {
            None
        };
        loop {
            match frames.next_event(|_| {}).await.map_err(reply_error)? {
                ReplyEvent::Object(piece) => match object.as_mut() {
                    Some(object) => object.write(&piece).map_err(output_error)?,
                    None => return Err(RemoteError::Protocol(ProtocolError::Incomplete)),
                },
                ReplyEvent::End => break,
                ReplyEvent::Head(_) => return Err(RemoteError::Protocol(ProtocolError::Finished)),
            }
        }
        Ok(RemoteReply {
            status,
            stderr,
            stdout,
            object,
        })
    }
}

fn reply_error(e: TransportError) -> RemoteError {
    const DURING: &str = "waiting for the reply";
    if let Some(pace) = PaceError::of(&e) {
        let pace = match pace {
            PaceError::TooSlow { got, min, window } => PaceError::TooSlow {
                got: *got,
                min: *min,
                window: *window,
            },
            PaceError::Deadline { received } => PaceError::Deadline {
                received: *received,
            },
        };
        return RemoteError::TooSlow(pace);
    }
    match e {
        TransportError::Protocol(ProtocolError::Busy(reason)) => RemoteError::Busy(reason),
        TransportError::Protocol(e) => RemoteError::Protocol(e),
        TransportError::Closed { .. } => RemoteError::Closed { during: DURING },
        TransportError::Stalled(after) => RemoteError::Timeout {
            during: DURING,
            after,
        },
        TransportError::Io(e) if is_peer_gone(&e) => RemoteError::Closed { during: DURING },
        TransportError::Io(source) => RemoteError::Io {
            during: DURING,
            source,
        },
    }
}

/// Run a whole job on `host`: connect, send the request, read the reply
/// (its object into a temporary file beside `output`).
pub async fn run_remote(
    host: &RemoteHost,
    argv: &[Vec<u8>],
    source: &[u8],
    output: &Path,
    timeouts: NetTimeouts,
) -> Result<RemoteReply, RemoteError> {
    Connection::open(host, argv, timeouts)
        .await?
        .finish(source, output)
        .await
}

fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// The resolver's own message ("Name or service not known", gai_strerror's
/// words, as distcc prints them) without the standard library's preamble.
fn resolver_words(e: &io::Error) -> String {
    let text = crate::logging::strerror(e);
    match text.strip_prefix("failed to lookup address information: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// Connect to the first address of `host` that answers within `per_address`.
async fn connect(host: &str, port: u16, per_address: Duration) -> Result<TcpStream, RemoteError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        // Numeric addresses skip the resolver (and its thread hop) entirely.
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match timeout(per_address, tokio::net::lookup_host((host, port))).await {
            Err(_) => {
                return Err(RemoteError::Resolve {
                    host: host.to_owned(),
                    port,
                    source: io::Error::new(io::ErrorKind::TimedOut, "name lookup timed out"),
                })
            }
            Ok(Err(source)) => {
                return Err(RemoteError::Resolve {
                    host: host.to_owned(),
                    port,
                    source,
                })
            }
            Ok(Ok(found)) => found.collect(),
        },
    };
    let mut last = None;
    for addr in addrs {
        match timeout(per_address, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(source)) => last = Some(RemoteError::Connect { addr, source }),
            Err(_) => {
                last = Some(RemoteError::ConnectTimeout {
                    addr,
                    after: per_address,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| RemoteError::NoAddress {
        host: host.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::{encode_header, Token};
    use crate::protocol::ReplyDecoder;
    use bytes::BytesMut;

    fn head(status: u32) -> BytesMut {
        let mut out = Vec::new();
        encode_header(Token::Done, 1, &mut out);
        encode_header(Token::Stat, status, &mut out);
        BytesMut::from(&out[..])
    }

    #[test]
    fn oversized_streams_are_refused_from_their_header() {
        for (token, before) in [(Token::Serr, 0), (Token::Sout, 1)] {
            let mut buf = head(0);
            let mut raw = Vec::new();
            if before == 1 {
                encode_header(Token::Serr, 0, &mut raw);
            }
            encode_header(token, MAX_STREAM as u32 + 1, &mut raw);
            buf.extend_from_slice(&raw);
            let mut decoder = ReplyDecoder::new(ProtocolVersion::V1, reply_limits());
            assert!(
                matches!(decoder.decode(&mut buf), Err(ProtocolError::TooLong { .. })),
                "{token:?} over the limit must fail before its body arrives"
            );
        }
    }

    #[test]
    fn large_objects_and_full_size_streams_are_accepted() {
        let mut buf = head(0);
        let mut raw = Vec::new();
        encode_header(Token::Serr, MAX_STREAM as u32, &mut raw);
        buf.extend_from_slice(&raw);
        let mut decoder = ReplyDecoder::new(ProtocolVersion::V1, reply_limits());
        assert!(matches!(decoder.decode(&mut buf), Ok(None)));
        let mut buf = head(0);
        let mut raw = Vec::new();
        encode_header(Token::Serr, 0, &mut raw);
        encode_header(Token::Sout, 0, &mut raw);
        encode_header(Token::Doto, 300 * 1024 * 1024, &mut raw);
        buf.extend_from_slice(&raw);
        let mut decoder = ReplyDecoder::new(ProtocolVersion::V1, reply_limits());
        assert!(
            matches!(decoder.decode(&mut buf), Ok(None)),
            "a 300 MiB object is allowed"
        );
        assert!(decoder.wanted(buf.len()) > 0);
    }
}
