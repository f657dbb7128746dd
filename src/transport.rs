//! The one read loop between a byte stream and the protocol's sans-I/O
//! decoders, shaped like mini-redis' `Connection::read_frame`: the server
//! reading a request, the client reading a reply and the lying proxy reading
//! both all go through [`FrameReader::next_event`], so a bound or a timeout
//! cannot be right in one of them and missing in another.
//!
//! What the peer announces never sizes a read: the room reserved before each
//! read is the decoder's [`Decoder::wanted`] clamped to the caller's
//! [`ReadPolicy`], and the decoder has checked every length against its limits
//! before it asks for the body.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::protocol::{Decoder, ProtocolError};

/// How a [`FrameReader`] reads: how much room per read, and how long the peer
/// may take.
#[derive(Debug, Clone, Copy)]
pub struct ReadPolicy {
    /// At least this much room per read, however little the decoder wants:
    /// fewer syscalls on large bodies. Also the buffer's initial capacity.
    pub min_read: usize,
    /// At most this much room reserved at once, however large a body is
    /// announced (the buffer still grows to hold a whole packet, read by read).
    pub max_read: usize,
    /// `None`: wait for the peer forever (only for peers we trust not to stall).
    pub patience: Option<Patience>,
}

/// How long a peer may go without progress. Progress is a decoded event, or
/// the next `unit` bytes (or the rest of the packet the decoder waits for, if
/// that is less) received: a peer trickling a byte a second is as stuck as
/// one that sends nothing.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub timeout: Duration,
    /// Bytes that must arrive within one `timeout`. 1 means "every read must
    /// return within `timeout`" (see [`Patience::per_read`]).
    pub unit: usize,
}

impl Patience {
    /// Each read must return something within `timeout`: the plain socket
    /// timeout distcc applies (`DISTCC_IO_TIMEOUT`).
    pub fn per_read(timeout: Duration) -> Self {
        Self { timeout, unit: 1 }
    }
}

/// Why no event could be read.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The bytes broke the protocol (or one of its bounds).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The peer closed its side before the decoder had what it needed.
    #[error(
        "the peer closed the connection after {received} bytes, before the message was complete"
    )]
    Closed { received: usize },
    /// No progress within the [`Patience`] timeout.
    #[error("no progress from the peer within {0:?}")]
    Stalled(Duration),
    #[error("reading from the peer failed: {0}")]
    Io(#[from] io::Error),
}

/// A byte stream with a decoder on top: the next event, read in bounded
/// pieces within the policy's patience.
#[derive(Debug)]
pub struct FrameReader<R, D> {
    reader: R,
    decoder: D,
    buf: BytesMut,
    policy: ReadPolicy,
    /// Bytes read so far (for messages and the stall accounting).
    received: usize,
    /// `received` must reach this before `deadline`...
    target: usize,
    deadline: Option<Instant>,
    /// ...unless an event was decoded since the deadline was set.
    progressed: bool,
}

impl<R, D> FrameReader<R, D>
where
    R: AsyncRead + Unpin,
    D: Decoder,
{
    pub fn new(reader: R, decoder: D, policy: ReadPolicy) -> Self {
        assert!(
            0 < policy.min_read && policy.min_read <= policy.max_read,
            "read sizes {}..={} are not a range",
            policy.min_read,
            policy.max_read
        );
        Self {
            reader,
            decoder,
            buf: BytesMut::with_capacity(policy.min_read),
            policy,
            received: 0,
            target: 0,
            deadline: None,
            progressed: false,
        }
    }

    /// Read until the decoder yields its next event. `on_read` sees every
    /// chunk as it arrives (byte counters; a proxy's verbatim copy).
    pub async fn next_event(
        &mut self,
        mut on_read: impl FnMut(&[u8]),
    ) -> Result<D::Event, TransportError> {
        loop {
            if let Some(event) = self.decoder.decode(&mut self.buf)? {
                self.progressed = true;
                return Ok(event);
            }
            let wanted = self.decoder.wanted(self.buf.len());
            if let Some(patience) = self.policy.patience {
                if self.progressed || self.received >= self.target {
                    self.target = self.received + wanted.clamp(1, patience.unit.max(1));
                    self.deadline = Some(Instant::now() + patience.timeout);
                    self.progressed = false;
                }
            }
            self.buf
                .reserve(wanted.clamp(self.policy.min_read, self.policy.max_read));
            let read = self.reader.read_buf(&mut self.buf);
            let n = match (self.deadline, self.policy.patience) {
                (Some(deadline), Some(patience)) => tokio::time::timeout_at(deadline, read)
                    .await
                    .map_err(|_| TransportError::Stalled(patience.timeout))??,
                _ => read.await?,
            };
            if n == 0 {
                return Err(TransportError::Closed {
                    received: self.received,
                });
            }
            on_read(&self.buf[self.buf.len() - n..]);
            self.received += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        Limits, ProtocolVersion, Reply, ReplyDecoder, Request, RequestDecoder, RequestEvent,
    };
    use tokio::io::AsyncWriteExt;

    const SMALL: ReadPolicy = ReadPolicy {
        min_read: 16,
        max_read: 64,
        patience: None,
    };

    fn request() -> Request {
        Request {
            version: ProtocolVersion::V2,
            argv: vec![b"cc".to_vec(), b"-c".to_vec(), b"x.c".to_vec()],
            doti: b"int x;\n".repeat(100),
        }
    }

    #[tokio::test]
    async fn events_in_order_and_every_byte_seen() {
        let bytes = request().encode();
        let mut reader =
            FrameReader::new(&bytes[..], RequestDecoder::new(Limits::default()), SMALL);
        let mut seen = Vec::new();
        let mut events = Vec::new();
        loop {
            let event = reader
                .next_event(|b| seen.extend_from_slice(b))
                .await
                .unwrap();
            let done = matches!(event, RequestEvent::Doti(_));
            events.push(event);
            if done {
                break;
            }
        }
        assert_eq!(events.len(), 3);
        assert_eq!(seen, bytes);
    }

    #[tokio::test]
    async fn eof_and_protocol_errors() {
        let reply = Reply {
            version: ProtocolVersion::V1,
            status: 0,
            stderr: Vec::new(),
            stdout: Vec::new(),
            object: b"obj".to_vec(),
        }
        .encode();
        let cut = &reply[..reply.len() - 1];
        let decoder = ReplyDecoder::new(ProtocolVersion::V1, Limits::default());
        let err = FrameReader::new(cut, decoder, SMALL)
            .next_event(|_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Closed { received } if received == cut.len()),
            "{err:?}"
        );
        let decoder = ReplyDecoder::new(ProtocolVersion::V2, Limits::default());
        let err = FrameReader::new(&reply[..], decoder, SMALL)
            .next_event(|_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::Protocol(ProtocolError::VersionMismatch { .. })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_trickle_is_a_stall() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let policy = ReadPolicy {
            patience: Some(Patience {
                timeout: Duration::from_secs(1),
                unit: 12,
            }),
            ..SMALL
        };
        let mut reader = FrameReader::new(rx, RequestDecoder::new(Limits::default()), policy);
        tokio::spawn(async move {
            // A byte every 150 ms: each read returns, but the 12-byte
            // header takes longer than the 1 s it is given.
            for b in b"DIST00000001" {
                let _ = tx.write_all(&[*b]).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            std::future::pending::<()>().await;
        });
        let err = reader.next_event(|_| {}).await.unwrap_err();
        assert!(matches!(err, TransportError::Stalled(_)), "{err:?}");
    }

    #[tokio::test]
    async fn per_read_patience_allows_a_slow_steady_peer() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let policy = ReadPolicy {
            patience: Some(Patience::per_read(Duration::from_secs(1))),
            ..SMALL
        };
        let mut reader = FrameReader::new(rx, RequestDecoder::new(Limits::default()), policy);
        tokio::spawn(async move {
            for b in b"DIST00000001" {
                let _ = tx.write_all(&[*b]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        });
        let event = reader.next_event(|_| {}).await.unwrap();
        assert_eq!(event, RequestEvent::Version(ProtocolVersion::V1));
        let err = reader.next_event(|_| {}).await.unwrap_err();
        assert!(matches!(err, TransportError::Stalled(_)), "{err:?}");
    }
}
