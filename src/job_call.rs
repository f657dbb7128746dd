//! One compile job sent to a host by someone other than the client: the
//! coordinator's challenge jobs (is this address really serving honest
//! compiles?) and its adjudication re-runs (who told the truth in a dispute?).
//! Only the result's digest comes back: the object is hashed as it streams and
//! never kept, so a host cannot make the caller hold more than one read buffer.
//! Every step is bounded like the client's own calls (`client::remote`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::protocol::request::{encode_doti, encode_request_head, encode_ticket};
use crate::protocol::{Limits, ProtocolError, ProtocolVersion, ReplyEvent, ReplyStreamDecoder};
use crate::transport::{FrameReader, Pace, Patience, ReadPolicy, TransportError};
use crate::verify::{normalize_diagnostics, ResultDigest};

/// Largest object a called host may send (hashed, not stored).
const MAX_OBJECT: usize = 256 * 1024 * 1024;
/// Largest diagnostics.
const MAX_STREAM: usize = 4 * 1024 * 1024;

/// A job to send.
#[derive(Debug, Clone)]
pub struct JobCall<'a> {
    pub addr: SocketAddr,
    /// 1 (plain) or 2 (LZO), as the host advertises.
    pub version: ProtocolVersion,
    /// The server's argv, as a client would send it.
    pub argv: &'a [String],
    /// The preprocessed source.
    pub source: &'a [u8],
    /// A ticket pass (`TCKT` body) to present before the job, for hosts
    /// that take tickets.
    pub ticket_pass: Option<Vec<u8>>,
    /// Bounds the connect, every write, the wait for the reply's first byte
    /// and (four times over) the whole reply.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum JobCallError {
    #[error("cannot connect to {addr}: {why}")]
    Connect { addr: SocketAddr, why: String },
    #[error("{addr} took longer than {after:?} {during}")]
    Timeout {
        addr: SocketAddr,
        during: &'static str,
        after: Duration,
    },
    #[error("{addr} failed {during}: {why}")]
    Io {
        addr: SocketAddr,
        during: &'static str,
        why: String,
    },
    #[error("{addr} sent a bad reply: {0}", addr = .1)]
    Protocol(ProtocolError, SocketAddr),
    #[error("protocol 3 (pump) jobs are not sent from here")]
    Unsupported,
}

/// Send `job` and return the digest of what the host answered.
pub async fn call(job: &JobCall<'_>) -> Result<ResultDigest, JobCallError> {
    if job.version == ProtocolVersion::V3 {
        return Err(JobCallError::Unsupported);
    }
    let addr = job.addr;
    let mut stream = match timeout(job.timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(JobCallError::Timeout {
                addr,
                during: "to accept the connection",
                after: job.timeout,
            })
        }
        Ok(Err(e)) => {
            return Err(JobCallError::Connect {
                addr,
                why: e.to_string(),
            })
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let argv: Vec<Vec<u8>> = job.argv.iter().map(|a| a.clone().into_bytes()).collect();
    let mut request = match &job.ticket_pass {
        Some(pass) => encode_ticket(pass),
        None => Vec::new(),
    };
    request.extend(encode_request_head(job.version, &argv));
    request.extend(encode_doti(job.version, job.source));
    match timeout(job.timeout, stream.write_all(&request)).await {
        Err(_) => {
            return Err(JobCallError::Timeout {
                addr,
                during: "to take the request",
                after: job.timeout,
            })
        }
        Ok(Err(e)) => {
            return Err(JobCallError::Io {
                addr,
                during: "taking the request",
                why: e.to_string(),
            })
        }
        Ok(Ok(())) => {}
    }
    let limits = Limits {
        max_body: MAX_OBJECT as u32,
        max_decompressed: MAX_OBJECT,
        max_stream_body: MAX_STREAM as u32,
        ..Limits::default()
    };
    let policy = ReadPolicy {
        min_read: 16 * 1024,
        max_read: 256 * 1024,
        patience: Some(Patience::per_read(job.timeout)),
    };
    let pace = Pace {
        window: Duration::from_secs(10),
        min_bytes: 160 * 1024,
        deadline: tokio::time::Instant::now() + job.timeout * 4,
    };
    let decoder = ReplyStreamDecoder::new(job.version, limits);
    let mut frames = FrameReader::new(&mut stream, decoder, policy).with_pace(pace);
    let failed = |e: TransportError| match e {
        TransportError::Protocol(p) => JobCallError::Protocol(p, addr),
        TransportError::Stalled(after) => JobCallError::Timeout {
            addr,
            during: "to reply",
            after,
        },
        other => JobCallError::Io {
            addr,
            during: "replying",
            why: other.to_string(),
        },
    };
    let head = match frames.next_event(|_| {}).await.map_err(failed)? {
        ReplyEvent::Head(head) => head,
        _ => return Err(JobCallError::Protocol(ProtocolError::Incomplete, addr)),
    };
    let mut object = blake3::Hasher::new();
    loop {
        match frames.next_event(|_| {}).await.map_err(failed)? {
            ReplyEvent::Object(piece) => {
                object.update(&piece);
            }
            ReplyEvent::End => break,
            ReplyEvent::Head(_) => {
                return Err(JobCallError::Protocol(ProtocolError::Finished, addr))
            }
        }
    }
    Ok(ResultDigest {
        status: head.status,
        object: *object.finalize().as_bytes(),
        diagnostics: *blake3::hash(&normalize_diagnostics(&head.stderr)).as_bytes(),
    })
}
