//! One client connection = one job: read the request (bounded in size and
//! time), check the command, wait for a job slot, run the compiler while
//! watching for the client to go away, write the reply, log one line.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::TryAcquireError;
use tokio::time::timeout;

use super::admission::{ByteCharge, ConnectionTicket, Refused};
use super::job::{check_command, run_job, JobOutcome, JobResult};
use super::refusal_log::LogLine;
use super::result_cache::CompiledJob;
use super::spool::{should_spool, Spooled};
use super::stats::{Outcome, StallPhase};
use super::Shared;
use crate::args::Refusal;
use crate::exitcode;
use crate::network::clock::unix_now;
use crate::network::ticket::TicketError;
use crate::protocol::busy::encode_busy;
use crate::protocol::{
    ProtocolError, ProtocolVersion, Reply, Request, RequestDecoder, RequestEvent,
};
use crate::transport::{FrameReader, Patience, ReadPolicy, TransportError};

/// Read sizes: at least this much per read. Small, because it is what a
/// connection that has sent nothing yet costs (the room grows with what the
/// decoder wants: a body is read in large pieces anyway)…
const MIN_READ: usize = 4 * 1024;
/// …and at most this much, whatever the decoder hints.
const MAX_READ: usize = 256 * 1024;
/// Bytes a client may send after its request before we call it a violation.
const MAX_TRAILING_BYTES: usize = 64 * 1024;

/// Why reading the request stopped.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("protocol 3 (pump mode) is not supported; closing so the client compiles locally")]
    Pump,
    #[error("client closed the connection after {0} bytes, before the request was complete")]
    Eof(usize),
    #[error("client stalled: the next piece of its request did not arrive within {0:?}")]
    Stalled(Duration),
    #[error("client did not finish its request within {0:?}")]
    Deadline(Duration),
    #[error("client did not send its request header (DIST … ARGV) within {0:?}")]
    HeaderDeadline(Duration),
    #[error("server busy: {0}; closing so the client compiles locally")]
    Busy(Refused),
    #[error("reading from the client failed: {0}")]
    Io(#[from] io::Error),
    #[error("denied: not in --allow and no ticket")]
    NoTicket,
    #[error("denied: not in --allow and its ticket is refused: {0}")]
    Ticket(TicketError),
}

impl From<TransportError> for ReadError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Protocol(e) => ReadError::Protocol(e),
            TransportError::Closed { received } => ReadError::Eof(received),
            TransportError::Stalled(after) => ReadError::Stalled(after),
            TransportError::Io(e) => match e.get_ref().and_then(|e| e.downcast_ref::<Refused>()) {
                Some(why) => ReadError::Busy(*why),
                None => ReadError::Io(e),
            },
        }
    }
}

impl ReadError {
    fn outcome(&self) -> (Outcome, i32) {
        match self {
            ReadError::Protocol(_) | ReadError::Pump => {
                (Outcome::RejBadReq, exitcode::PROTOCOL_ERROR)
            }
            ReadError::Eof(_) => (Outcome::Other, exitcode::TRUNCATED),
            ReadError::Stalled(_) | ReadError::Deadline(_) | ReadError::HeaderDeadline(_) => {
                (Outcome::Other, exitcode::TIMEOUT)
            }
            ReadError::Busy(_) => (Outcome::RejOverload, exitcode::BUSY),
            ReadError::Io(_) => (Outcome::CliDisconnect, exitcode::IO_ERROR),
            ReadError::NoTicket | ReadError::Ticket(_) => (Outcome::Other, exitcode::ACCESS_DENIED),
        }
    }
}

/// A reader that charges every byte it returns to the request's share of
/// `--queue-bytes`, and fails the read that would pass it: what a request
/// holds while it is read is bounded before it is held, however many
/// clients send at once.
struct Charged<'a, R> {
    inner: &'a mut R,
    charge: &'a mut ByteCharge,
}

impl<R: AsyncRead + Unpin> AsyncRead for Charged<'_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = (buf.filled().len() - before) as u64;
            if let Err(why) = this.charge.grow(n) {
                return Poll::Ready(Err(io::Error::other(why)));
            }
        }
        polled
    }
}

/// How a connection ended, for the stats and the log line.
#[derive(Debug)]
pub struct JobEnd {
    pub outcome: Outcome,
    /// Wait status sent (or that would have been sent) in `STAT`.
    pub status: u32,
    /// distccd's `ret`: 0, or the exit code describing what went wrong.
    pub ret: i32,
    /// (compiler, input name), once the command is known.
    pub job: Option<(String, String)>,
    /// Why it ended this way, when that is not obvious from the outcome.
    pub note: Option<String>,
    /// A `CGET`, not a job: logged, but not counted among distccd's jobs.
    pub fetch: bool,
}

impl JobEnd {
    fn early(outcome: Outcome, ret: i32, note: String) -> Self {
        Self {
            outcome,
            status: 0,
            ret,
            job: None,
            note: Some(note),
            fetch: false,
        }
    }

    fn fetch(note: String) -> Self {
        Self {
            fetch: true,
            ..Self::early(Outcome::Other, 0, note)
        }
    }
}

/// Serve one job on `reader`/`writer` and record it. `peer` is the text the log
/// line shows after `client:`. `admit` says what lets it in: its address
/// (`--allow`, or inetd), or only a ticket pass before `DIST` that
/// [`Shared::tickets`] accepts (otherwise the connection is closed without a
/// byte, as distccd closes on clients it does not allow; their client
/// compiles locally). `ticket` is the connection's place in the admission
/// counts (none under `--inetd`, one connection per process).
pub async fn serve<R, W>(
    mut reader: R,
    mut writer: W,
    peer: &str,
    shared: &Shared,
    admit: Admit,
    ticket: Option<&mut ConnectionTicket>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let started = Instant::now();
    let end = handle(&mut reader, &mut writer, shared, admit, ticket).await;
    drop(reader);
    drop(writer);
    // Refusals come in floods: their lines go through the refusal log's
    // rate limit, like refusals at accept.
    if admit == Admit::ByTicket && end.ret == exitcode::ACCESS_DENIED {
        if refusal_logged(shared, "no_ticket") {
            tracing::warn!(
                "connection from client '{peer}' {}",
                end.note.as_deref().unwrap_or("denied")
            );
            record(shared, peer, started, &end);
        } else {
            record_quietly(shared, started, &end);
        }
        return;
    }
    if end.fetch {
        tracing::info!(
            "client: {peer} CGET ret:{} time:{}ms ({})",
            end.ret,
            started.elapsed().as_millis(),
            end.note.as_deref().unwrap_or("")
        );
        return;
    }
    let refusal = (end.outcome == Outcome::RejOverload).then_some("queue_or_bytes");
    record_refusal(shared, peer, started, &end, refusal);
}

/// What lets a connection in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Its address is in `--allow` (or nothing is checked: inetd).
    ByAddress,
    /// Only a valid ticket pass before `DIST`.
    ByTicket,
}

/// Count and log a finished connection: one line, like distccd's
/// `dcc_job_summary`. Refusals (`refusal` names the reason) are counted
/// always but logged through [`super::refusal_log`], so a flood of them
/// gives a few lines and a summary.
pub fn record(shared: &Shared, peer: &str, started: Instant, end: &JobEnd) {
    record_refusal(shared, peer, started, end, None);
}

/// Count a finished connection without a log line (a refusal the rate
/// limit suppressed).
pub fn record_quietly(shared: &Shared, started: Instant, end: &JobEnd) {
    shared.stats.finish(
        end.outcome,
        started.elapsed(),
        end.job.as_ref().map(|(c, i)| (i.as_str(), c.as_str())),
    );
}

pub fn record_refusal(
    shared: &Shared,
    peer: &str,
    started: Instant,
    end: &JobEnd,
    refusal: Option<&'static str>,
) {
    let elapsed = started.elapsed();
    shared.stats.finish(
        end.outcome,
        elapsed,
        end.job.as_ref().map(|(c, i)| (i.as_str(), c.as_str())),
    );
    if refusal.is_some_and(|reason| !refusal_logged(shared, reason)) {
        return;
    }
    let status = end.status;
    let (exit, sig, core) = (
        (status >> 8) & 0xff,
        status & 0x7f,
        u32::from(status & 0x80 != 0),
    );
    let job = match (&end.job, end.outcome) {
        (Some((compiler, input)), Outcome::CompileOk | Outcome::CompileError) => {
            format!(" {compiler} {input}")
        }
        _ => String::new(),
    };
    let note = end
        .note
        .as_ref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    tracing::info!(
        "client: {peer} {} exit:{exit} sig:{sig} core:{core} ret:{} time:{}ms{job}{note}",
        end.outcome.log_name(),
        end.ret,
        elapsed.as_millis(),
    );
}

async fn handle<R, W>(
    reader: &mut R,
    writer: &mut W,
    shared: &Shared,
    admit: Admit,
    ticket: Option<&mut ConnectionTicket>,
) -> JobEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let cfg = &shared.cfg;
    let mut charge = shared.admission.charge();
    let mut phase = StallPhase::Header;
    let read = {
        let mut charged = Charged {
            inner: &mut *reader,
            charge: &mut charge,
        };
        timeout(
            cfg.request_timeout,
            read_request(&mut charged, shared, ticket.as_deref(), &mut phase, admit),
        )
        .await
        .unwrap_or(Err(ReadError::Deadline(cfg.request_timeout)))
    };
    if let (Ok(_), Some(ticket)) = (&read, ticket) {
        ticket.request_arrived();
    }
    // The decoded request is what stays in memory (larger than what was
    // read when it came LZO-compressed): charge that from now on.
    let read = read.and_then(|incoming| {
        if let Incoming::Job { request: r, .. } = &incoming {
            let held = r.doti.len() + r.argv.iter().map(Vec::len).sum::<usize>();
            charge.resize(held as u64).map_err(ReadError::Busy)?;
        }
        Ok(incoming)
    });
    let (request, ticketed) = match read {
        Ok(Incoming::Job { request, ticketed }) => (request, ticketed),
        Ok(Incoming::Fetch(result)) => {
            return serve_fetch(writer, shared, &result, &mut charge).await;
        }
        Err(e) => {
            match &e {
                ReadError::Stalled(_) | ReadError::HeaderDeadline(_) => {
                    shared.stats.stall_kill(phase)
                }
                ReadError::Deadline(_) => shared.stats.stall_kill(phase),
                ReadError::Busy(why) => {
                    shared.stats.refused(why);
                    // Best effort: the client is still sending, so it may
                    // see the connection reset before it reads this.
                    let _ = write_busy(writer, why, shared).await;
                }
                _ => {}
            }
            let (outcome, ret) = e.outcome();
            return JobEnd::early(outcome, ret, e.to_string());
        }
    };
    let Request {
        version,
        argv,
        doti: mut source,
    } = request;
    let argv_bytes = argv.iter().map(Vec::len).sum::<usize>() as u64;
    let job_names = Some((
        printable(argv.first().map(Vec::as_slice).unwrap_or(b"")),
        input_name(&argv),
    ));

    let command = match check_command(&argv, &cfg.job) {
        Ok(c) => c,
        Err(refusal) => {
            let code = refusal_exit_code(&refusal);
            let reply = Reply {
                version,
                status: (code as u32) << 8,
                stderr: format!("dportage: {refusal}\n").into_bytes(),
                stdout: Vec::new(),
                object: Vec::new(),
            };
            let write = write_reply(writer, &reply, shared).await;
            return JobEnd {
                outcome: Outcome::Other,
                status: reply.status,
                ret: code,
                job: job_names,
                note: Some(match write {
                    Ok(()) => format!("refused: {refusal}"),
                    Err(e) => format!("refused: {refusal}; writing the refusal failed: {e}"),
                }),
                fetch: false,
            };
        }
    };

    // A free slot is taken at once; otherwise the request joins the FIFO
    // queue (bounded by --queue) and waits, giving up if the client does.
    let slot = match shared.job_slots.try_acquire() {
        Ok(slot) => Ok(slot),
        Err(TryAcquireError::Closed) => Err(()),
        Err(TryAcquireError::NoPermits) => {
            let _queued = match shared.admission.enqueue() {
                Ok(t) => t,
                Err(why) => {
                    shared.stats.refused(&why);
                    // The busy answer (see protocol::busy): distcc 3.4 takes
                    // it as a failure to distribute (another host, then a
                    // local compile), ours as "busy, try another host".
                    let sent = write_busy(writer, &why, shared).await;
                    return JobEnd {
                        outcome: Outcome::RejOverload,
                        status: 0,
                        ret: exitcode::BUSY,
                        job: job_names,
                        note: Some(match sent {
                            Ok(()) => format!("server busy: {why}; told the client"),
                            Err(e) => format!("server busy: {why}; telling the client failed: {e}"),
                        }),
                        fetch: false,
                    };
                }
            };
            // A large source waits on disk (see spool.rs), its memory given
            // back to --queue-bytes; it is read back once the slot comes.
            let spooled = if should_spool(source.len()) {
                spool(&mut source, &mut charge, argv_bytes, shared).await
            } else {
                None
            };
            let slot = tokio::select! {
                slot = shared.job_slots.acquire() => slot.map_err(|_| ()),
                () = client_gone(reader) => {
                    return JobEnd {
                        outcome: Outcome::CliDisconnect,
                        status: 0,
                        ret: exitcode::IO_ERROR,
                        job: job_names,
                        note: Some("client went away while waiting for a job slot".into()),
                        fetch: false,
                    };
                }
            };
            if let (Ok(_), Some(spooled)) = (&slot, spooled) {
                let back = tokio::task::spawn_blocking(move || spooled.read_back())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|read| read.map_err(|e| e.to_string()));
                match back {
                    Ok(back) => source = back,
                    Err(why) => {
                        return JobEnd {
                            outcome: Outcome::Other,
                            status: 0,
                            ret: exitcode::IO_ERROR,
                            job: job_names,
                            note: Some(format!("reading back the spooled source failed: {why}")),
                            fetch: false,
                        };
                    }
                }
            }
            slot
        }
    };
    let Ok(_slot) = slot else {
        return JobEnd::early(
            Outcome::Other,
            exitcode::GONE,
            "server is shutting down".into(),
        );
    };
    let outcome = {
        let _running = shared.stats.start_compile();
        run_job(&command, &source, &cfg.job, client_gone(reader)).await
    };
    // Only a network job that compiled is kept (and its input hashed);
    // the fingerprint says the compiler is one the heartbeat probed.
    let keep = (ticketed && outcome.status == 0 && !outcome.object.is_empty())
        .then(|| shared.cache.wants(&argv))
        .flatten()
        .map(|fingerprint| (fingerprint, *blake3::hash(&source).as_bytes()));
    drop(source);
    drop(charge);
    drop(_slot);

    let JobOutcome {
        status,
        stderr,
        stdout,
        mut object,
        result,
    } = outcome;
    if status != 0 {
        object = Vec::new();
    }
    let (mut stats_outcome, mut ret) = match result {
        JobResult::CompileOk => (Outcome::CompileOk, 0),
        JobResult::CompileError => (Outcome::CompileError, 0),
        JobResult::Timeout => (Outcome::CompileTimeout, exitcode::TIMEOUT),
        JobResult::ClientDisconnected => (Outcome::CliDisconnect, exitcode::IO_ERROR),
        JobResult::Refused => (Outcome::Other, fabricated_code(status)),
        JobResult::Internal => (Outcome::Other, fabricated_code(status)),
    };
    let reply = Reply {
        version,
        status,
        stderr,
        stdout,
        object,
    };
    let mut note = None;
    if let Err(e) = write_reply(writer, &reply, shared).await {
        if stats_outcome != Outcome::CliDisconnect {
            note = Some(format!("writing the reply failed: {e}"));
        }
        stats_outcome = Outcome::CliDisconnect;
        ret = exitcode::IO_ERROR;
    }
    // After the reply: the client waits for nothing of this.
    if let (Some((fingerprint, input_hash)), Outcome::CompileOk) = (keep, stats_outcome) {
        keep_result(shared, fingerprint, input_hash, argv, reply).await;
    }
    JobEnd {
        outcome: stats_outcome,
        status,
        ret,
        job: job_names,
        note,
        fetch: false,
    }
}

/// Store a network job's reply and queue its claim, off the async threads.
async fn keep_result(
    shared: &Shared,
    fingerprints: Vec<String>,
    input_hash: [u8; 32],
    argv: Vec<Vec<u8>>,
    reply: Reply,
) {
    let cache = std::sync::Arc::clone(&shared.cache);
    let kept = tokio::task::spawn_blocking(move || {
        cache.keep(
            &fingerprints,
            &CompiledJob {
                argv: &argv,
                input_hash,
                status: reply.status,
                stderr: &reply.stderr,
                stdout: &reply.stdout,
                object: &reply.object,
            },
        )
    })
    .await;
    if let Ok(Some(claim)) = kept {
        shared.stats.cache_claim_queued();
        tracing::debug!(
            "kept result {} of key {} ({} bytes) for the cache",
            &claim.result[..16],
            &claim.key[..16],
            claim.bytes
        );
    }
}

/// Answer a `CGET`: the stored reply of `result`, or the connection closed
/// without a byte. Bounded in time like a reply; the reply held in memory
/// while it is written counts against `--queue-bytes` like a request.
async fn serve_fetch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    shared: &Shared,
    result: &[u8; 32],
    charge: &mut ByteCharge,
) -> JobEnd {
    let cache = std::sync::Arc::clone(&shared.cache);
    let wanted = *result;
    let stored = tokio::task::spawn_blocking(move || cache.fetch(&wanted))
        .await
        .ok()
        .flatten();
    let short = hex::encode(&result[..8]);
    let Some(bytes) = stored else {
        shared.stats.cache_miss();
        let _ = timeout(shared.cfg.io_timeout, writer.shutdown()).await;
        return JobEnd::fetch(format!("fetch of result {short}…: not held"));
    };
    if let Err(why) = charge.resize(bytes.len() as u64) {
        shared.stats.refused(&why);
        drop(bytes);
        let _ = timeout(shared.cfg.io_timeout, writer.shutdown()).await;
        return JobEnd {
            ret: exitcode::BUSY,
            ..JobEnd::fetch(format!("fetch of result {short}…: server busy: {why}"))
        };
    }
    let written = write_all_or_stall(writer, &bytes, shared.cfg.io_timeout, |n| {
        shared.stats.add_bytes_out(n)
    })
    .await;
    let _ = timeout(shared.cfg.io_timeout, writer.shutdown()).await;
    match written {
        Ok(()) => {
            shared.stats.cache_fetch(bytes.len());
            JobEnd::fetch(format!(
                "fetch of result {short}…: served {} bytes",
                bytes.len()
            ))
        }
        Err(e) => JobEnd {
            ret: exitcode::IO_ERROR,
            ..JobEnd::fetch(format!("fetch of result {short}…: writing failed: {e}"))
        },
    }
}

/// `STAT` for a refusal: 110 (compiler missing) when the compiler itself is
/// refused, 101 (bad arguments) for everything else. Both are exit codes in
/// 1..=127, which the 3.4 client treats like a compile error: it compiles the
/// job locally and shows the local result.
fn refusal_exit_code(refusal: &Refusal) -> i32 {
    match refusal {
        Refusal::CompilerNotAllowed(_) | Refusal::CompilerPath(_) => exitcode::COMPILER_MISSING,
        _ => exitcode::BAD_ARGUMENTS,
    }
}

fn fabricated_code(status: u32) -> i32 {
    match (status >> 8) & 0xff {
        0 => exitcode::DISTCC_FAILED,
        code => code as i32,
    }
}

/// What `--min-body-rate` asks of a body: `rate` bytes a second, averaged
/// over `--io-timeout` (a single quiet moment on a busy link is not a stall).
fn body_patience(io_timeout: Duration, rate: u64) -> Patience {
    let unit = rate.saturating_mul(io_timeout.as_secs().max(1));
    Patience {
        timeout: io_timeout,
        unit: usize::try_from(unit).unwrap_or(usize::MAX).max(1),
    }
}

/// Read one request. The header (`DIST` … `ARGV`) must be complete within
/// `--header-timeout`, and every piece of it within `--io-timeout`; the body
/// must keep up `--min-body-rate`. Nothing is read before the client's turn
/// (`--max-per-client` of its connections are read at once); the header
/// deadline counts from the turn, so a crowd behind one address is not
/// timed out for waiting behind itself (a waiting connection costs no
/// buffer, only its own address waits, and `--request-timeout` still bounds
/// it). `phase` says which part was being read when an error ended it.
async fn read_request<R>(
    reader: &mut R,
    shared: &Shared,
    ticket: Option<&ConnectionTicket>,
    phase: &mut StallPhase,
    mut admit: Admit,
) -> Result<Incoming, ReadError>
where
    R: AsyncRead + Unpin,
{
    let cfg = &shared.cfg;
    *phase = StallPhase::Header;
    let _turn = match ticket {
        Some(ticket) => Some(ticket.sending_turn().await),
        None => None,
    };
    let header_deadline = tokio::time::Instant::now() + cfg.header_timeout;
    let policy = ReadPolicy {
        min_read: MIN_READ,
        max_read: MAX_READ,
        patience: Some(body_patience(cfg.io_timeout, cfg.min_body_rate)),
    };
    let mut frames = FrameReader::new(reader, RequestDecoder::new(cfg.limits), policy);
    let mut version = None;
    let mut argv = None;
    let mut ticketed = false;
    loop {
        *phase = if argv.is_some() {
            StallPhase::Body
        } else {
            StallPhase::Header
        };
        let next = frames.next_event(|chunk| shared.stats.add_bytes_in(chunk.len()));
        let event = if argv.is_some() {
            next.await?
        } else {
            tokio::time::timeout_at(header_deadline, next)
                .await
                .map_err(|_| ReadError::HeaderDeadline(cfg.header_timeout))??
        };
        match event {
            RequestEvent::Ticket(pass) => {
                // Checked from an allowed address too: a valid ticket is
                // what makes a job a network job, whose result may be
                // claimed; without one it is a LAN user's, and stays here.
                let checked = match shared.tickets.as_ref() {
                    Some(gate) => gate.check(&pass, unix_now()),
                    None => Err(TicketError::NoCoordinatorKey),
                };
                match checked {
                    Ok(member) => {
                        tracing::debug!("admitted by the ticket of member {}", member.short());
                        admit = Admit::ByAddress;
                        ticketed = true;
                    }
                    Err(e) if admit == Admit::ByTicket => {
                        return Err(if shared.tickets.is_some() {
                            ReadError::Ticket(e)
                        } else {
                            ReadError::NoTicket
                        })
                    }
                    Err(e) => tracing::debug!(
                        "ticket refused ({e}); served as an allowed address's job, not a network job"
                    ),
                }
            }
            RequestEvent::Version(_) | RequestEvent::Fetch(_) if admit == Admit::ByTicket => {
                return Err(ReadError::NoTicket)
            }
            RequestEvent::Fetch(result) => return Ok(Incoming::Fetch(result)),
            RequestEvent::Version(ProtocolVersion::V3) => return Err(ReadError::Pump),
            RequestEvent::Version(v) => version = Some(v),
            RequestEvent::Argv(a) => argv = Some(a),
            RequestEvent::Doti(doti) => {
                let (Some(version), Some(argv)) = (version, argv) else {
                    return Err(ReadError::Protocol(ProtocolError::UnexpectedToken {
                        expected: "DIST and ARGV before DOTI",
                        got: "DOTI".into(),
                    }));
                };
                return Ok(Incoming::Job {
                    request: Request {
                        version,
                        argv,
                        doti,
                    },
                    ticketed,
                });
            }
        }
    }
}

/// What a connection asked for.
#[derive(Debug)]
enum Incoming {
    /// A job; `ticketed`: it came with a ticket pass the gate accepted (a
    /// network job).
    Job { request: Request, ticketed: bool },
    /// `CGET`: the stored reply of this result hash.
    Fetch([u8; 32]),
}

/// Completes when the client closes its side (EOF), the connection breaks, or
/// the client keeps sending bytes it has no business sending.
async fn client_gone<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut scratch = [0u8; 1024];
    let mut extra = 0usize;
    loop {
        match reader.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                extra += n;
                if extra > MAX_TRAILING_BYTES {
                    tracing::warn!("client sent {extra} bytes after its request; dropping it");
                    return;
                }
            }
        }
    }
}

/// Move a queued request's `source` to a spool file and give its memory
/// back (the charge keeps only the arguments). On failure the source stays
/// in memory, as before spooling existed.
async fn spool(
    source: &mut Vec<u8>,
    charge: &mut ByteCharge,
    argv_bytes: u64,
    shared: &Shared,
) -> Option<Spooled> {
    let taken = std::mem::take(source);
    let dir = shared.cfg.job.work_root.clone();
    let (taken, written) = tokio::task::spawn_blocking(move || {
        let written = Spooled::write(&dir, &taken);
        (taken, written)
    })
    .await
    .ok()?;
    match written {
        Ok(spooled) => {
            drop(taken);
            let _ = charge.resize(argv_bytes);
            shared.stats.spooled(spooled.len());
            Some(spooled)
        }
        Err(e) => {
            tracing::warn!(
                "cannot spool a {}-byte source to {}: {e}; it waits in memory",
                taken.len(),
                shared.cfg.job.work_root.display()
            );
            *source = taken;
            None
        }
    }
}

/// Whether a refusal for `reason` gets its log lines now (see
/// [`super::refusal_log`]); writes the summary of a past interval if one ended.
pub fn refusal_logged(shared: &Shared, reason: &'static str) -> bool {
    let (line, summary) = shared
        .refusal_log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .refusal(Instant::now(), reason);
    if let Some(summary) = summary {
        tracing::warn!("{summary}");
    }
    line == LogLine::Write
}

/// The busy answer for `why`, then close our side; counted.
async fn write_busy<W: AsyncWrite + Unpin>(
    writer: &mut W,
    why: &Refused,
    shared: &Shared,
) -> io::Result<()> {
    shared.stats.busy_answer();
    let bytes = encode_busy(&busy_reason(why));
    write_all_or_stall(writer, &bytes, shared.cfg.io_timeout, |n| {
        shared.stats.add_bytes_out(n)
    })
    .await?;
    let _ = timeout(shared.cfg.io_timeout, writer.shutdown()).await;
    Ok(())
}

/// The text of a busy answer: what was full, and what the client should do.
pub fn busy_reason(why: &Refused) -> String {
    format!("dportage server busy: {why}; try another host or compile locally")
}

async fn write_reply<W: AsyncWrite + Unpin>(
    writer: &mut W,
    reply: &Reply,
    shared: &Shared,
) -> io::Result<()> {
    let bytes = reply.encode();
    write_all_or_stall(writer, &bytes, shared.cfg.io_timeout, |n| {
        shared.stats.add_bytes_out(n)
    })
    .await?;
    let _ = timeout(shared.cfg.io_timeout, writer.shutdown()).await;
    Ok(())
}

/// `write_all`, but give up when one write makes no progress for `stall`.
async fn write_all_or_stall<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut data: &[u8],
    stall: Duration,
    mut progress: impl FnMut(usize),
) -> io::Result<()> {
    while !data.is_empty() {
        let n = timeout(stall, writer.write(data))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        progress(n);
        data = data.get(n..).unwrap_or_default();
    }
    timeout(stall, writer.flush())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))?
}

/// Bytes from a client as log text: lossy UTF-8, control characters escaped,
/// bounded length.
pub fn printable(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let mut out: String = text
        .chars()
        .map(|c| {
            if c == ' ' {
                "\\x20".to_string()
            } else if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect();
    if bytes.len() > MAX {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty)");
    }
    out
}

const SOURCE_EXTENSIONS: &[&str] = &[
    "c", "cc", "cpp", "cxx", "cp", "c++", "C", "CC", "i", "ii", "m", "mm", "mi", "mii", "M", "s",
    "S", "sx",
];

/// The input file name as the client wrote it (for the log and the stats
/// page's longest job): the first argument with a source extension, else the
/// last argument that is not an option.
pub fn input_name(argv: &[Vec<u8>]) -> String {
    let mut last_operand = None;
    let mut skip_next = false;
    for arg in argv.iter().skip(1) {
        if skip_next {
            skip_next = false;
            continue;
        }
        if arg.as_slice() == b"-o" {
            skip_next = true;
            continue;
        }
        if arg.starts_with(b"-") {
            continue;
        }
        let is_source = arg
            .rsplit(|&b| b == b'.')
            .next()
            .filter(|_| arg.contains(&b'.'))
            .and_then(|ext| std::str::from_utf8(ext).ok())
            .is_some_and(|ext| SOURCE_EXTENSIONS.contains(&ext));
        if is_source {
            return printable(arg);
        }
        last_operand = Some(arg);
    }
    last_operand
        .map(|a| printable(a))
        .unwrap_or_else(|| "(none)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn input_names() {
        assert_eq!(input_name(&argv(&["gcc", "-c", "x.c", "-o", "x.o"])), "x.c");
        assert_eq!(
            input_name(&argv(&["g++", "-o", "a.cc", "-c", "b.cpp"])),
            "b.cpp"
        );
        assert_eq!(input_name(&argv(&["gcc", "-c", "weird"])), "weird");
        assert_eq!(input_name(&argv(&["gcc", "-c"])), "(none)");
        assert_eq!(input_name(&argv(&["gcc", "-c", "a b\n.c"])), "a\\x20b\\n.c");
    }

    #[test]
    fn printable_bounds_and_escapes() {
        assert_eq!(printable(b"gcc"), "gcc");
        assert_eq!(printable(b""), "(empty)");
        assert_eq!(printable(b"\x1b[31m"), "\\u{1b}[31m");
        let long = vec![b'a'; 1000];
        assert!(printable(&long).chars().count() <= 201);
    }

    #[test]
    fn refusal_codes() {
        assert_eq!(
            refusal_exit_code(&Refusal::CompilerNotAllowed("sh".into())),
            exitcode::COMPILER_MISSING
        );
        assert_eq!(
            refusal_exit_code(&Refusal::CompilerPath("/bin/sh".into())),
            exitcode::COMPILER_MISSING
        );
        assert_eq!(
            refusal_exit_code(&Refusal::DangerousFlag("-fplugin=x".into())),
            exitcode::BAD_ARGUMENTS
        );
        assert_eq!(
            refusal_exit_code(&Refusal::NotDistributable("no -c".into())),
            exitcode::BAD_ARGUMENTS
        );
    }

    #[tokio::test]
    async fn stalled_writer_times_out() {
        let (mut a, _b) = tokio::io::duplex(16);
        let data = vec![0u8; 1024];
        let err = write_all_or_stall(&mut a, &data, Duration::from_millis(50), |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn client_gone_on_eof_and_on_flood() {
        let (mut a, b) = tokio::io::duplex(4096);
        drop(b);
        client_gone(&mut a).await;
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let junk = vec![1u8; 2 * MAX_TRAILING_BYTES];
            let _ = b.write_all(&junk).await;
            // keep `b` open: only the flood can end client_gone
            std::future::pending::<()>().await;
        });
        timeout(Duration::from_secs(5), client_gone(&mut a))
            .await
            .expect("flooding ends the watch");
    }
}
