//! The accept loops (job port and stats port) and graceful shutdown, in the
//! shape of mini-redis' server: one task per connection, a signal (or
//! `--lifetime`) ends accepting, running jobs finish. Accepting is cheap:
//! a connection only has to pass the caps of [`super::admission`] (in all,
//! and per client address on connections still sending their request); job
//! slots are taken once a request is whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::access::display_ip;
use super::admission::Refused;
use super::connection::{self, JobEnd};
use super::stats::{render_metrics, render_stats_page, AdmissionSnapshot, Outcome, SystemSnapshot};
use super::Shared;
use crate::exitcode;
use crate::protocol::busy::encode_busy;

/// How long running jobs get to finish after SIGTERM/SIGINT or `--lifetime`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// Stats requests served at once; more are closed.
const STATS_CONCURRENCY: usize = 16;
/// How long a stats client gets to send its request line.
const STATS_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Serve until a signal or `--lifetime`; returns the exit code.
pub async fn run(
    shared: Arc<Shared>,
    jobs: std::net::TcpListener,
    stats: Option<std::net::TcpListener>,
) -> i32 {
    let jobs = match TcpListener::from_std(jobs) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot use the listening socket: {e}");
            return exitcode::BIND_FAILED;
        }
    };
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return exitcode::DISTCC_FAILED;
        }
    };
    if let Ok(addr) = jobs.local_addr() {
        tracing::info!(
            "listening on {addr}, {} job slots; up to {} connections ({} per client read at once), \
             {} queued requests, {} bytes of requests in memory",
            shared.cfg.jobs,
            shared.cfg.admission.max_connections,
            shared.cfg.admission.max_per_client,
            shared.cfg.admission.max_queued,
            shared.cfg.admission.max_bytes,
        );
    }

    let sampler = tokio::spawn({
        let shared = Arc::clone(&shared);
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                shared.stats.sample_running();
                // A flood of refusals that stopped still gets its summary line.
                let summary = shared
                    .refusal_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .tick(Instant::now());
                if let Some(summary) = summary {
                    tracing::warn!("{summary}");
                }
            }
        }
    });
    let stats_task = match stats.map(TcpListener::from_std) {
        Some(Ok(l)) => {
            if let Ok(addr) = l.local_addr() {
                tracing::info!("statistics on http://{addr}/ (and /metrics)");
            }
            Some(tokio::spawn(serve_stats(l, Arc::clone(&shared))))
        }
        Some(Err(e)) => {
            tracing::error!("cannot use the stats socket: {e}");
            None
        }
        None => None,
    };

    let lifetime = shared.cfg.lifetime;
    let reason = tokio::select! {
        () = accept_loop(&jobs, &shared) => "accept loop ended",
        why = signals.next(lifetime) => why,
    };
    drop(jobs);
    if let Some(t) = stats_task {
        t.abort();
    }
    sampler.abort();

    let busy = shared.admission.open_connections();
    if busy > 0 {
        tracing::info!("{reason}: no longer accepting; waiting up to {SHUTDOWN_GRACE:?} for {busy} connection(s)");
    } else {
        tracing::info!("{reason}: exiting");
    }
    let drained = async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while shared.admission.open_connections() > 0 {
            tick.tick().await;
        }
    };
    tokio::select! {
        r = timeout(SHUTDOWN_GRACE, drained) => {
            if r.is_err() {
                tracing::warn!("jobs still running after {SHUTDOWN_GRACE:?}; exiting anyway");
            }
        }
        why = signals.next(None) => {
            tracing::warn!("{why} again: exiting without waiting for running jobs");
        }
    }
    0
}

async fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let started = Instant::now();
        shared.stats.accepted();
        let label = peer_label(peer);
        // Outside --allow, a registered daemon still hears the client out
        // for a ticket (`connection::Admit::ByTicket`); otherwise, distccd's way.
        let mut needs_ticket = false;
        if let Some(access) = &shared.cfg.access {
            if !access.allows(peer.ip()) && shared.tickets.is_some() {
                needs_ticket = true;
            } else if !access.allows(peer.ip()) {
                drop(stream);
                let end = JobEnd {
                    outcome: Outcome::Other,
                    status: 0,
                    ret: exitcode::ACCESS_DENIED,
                    job: None,
                    note: Some("denied by access list".into()),
                    fetch: false,
                };
                if connection::refusal_logged(shared, "access") {
                    tracing::warn!(
                        "connection from client '{}' denied by access list",
                        display_ip(peer.ip())
                    );
                    connection::record(shared, &label, started, &end);
                } else {
                    connection::record_quietly(shared, started, &end);
                }
                continue;
            }
        }
        let mut ticket = match shared.admission.connect(peer.ip()) {
            Ok(t) => t,
            Err(why) => {
                shared.stats.refused(&why);
                refuse_busy(stream, &why, shared);
                connection::record_refusal(
                    shared,
                    &label,
                    started,
                    &JobEnd {
                        outcome: Outcome::RejOverload,
                        status: 0,
                        ret: exitcode::BUSY,
                        job: None,
                        note: Some(why.to_string()),
                        fetch: false,
                    },
                    Some(why.label()),
                );
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let _open = shared.stats.open_connection();
            // The ticket lives in the job task: a panic there drops it while
            // unwinding, so the counts stay right.
            let job = tokio::spawn({
                let shared = Arc::clone(&shared);
                let label = label.clone();
                async move {
                    let (reader, writer) = stream.into_split();
                    let admit = if needs_ticket {
                        connection::Admit::ByTicket
                    } else {
                        connection::Admit::ByAddress
                    };
                    connection::serve(reader, writer, &label, &shared, admit, Some(&mut ticket))
                        .await;
                }
            });
            if let Err(e) = job.await {
                let what = if e.is_panic() {
                    panic_text(e.into_panic())
                } else {
                    "cancelled".into()
                };
                tracing::error!("job task for {label} failed: {what}");
                connection::record(
                    &shared,
                    &label,
                    started,
                    &JobEnd {
                        outcome: Outcome::Other,
                        status: 0,
                        ret: exitcode::DISTCC_FAILED,
                        job: None,
                        note: Some(format!("internal error: {what}")),
                        fetch: false,
                    },
                );
            }
        });
    }
}

/// Refused connections being closed gracefully at once, at most.
const REFUSAL_DRAINS: usize = 32;
/// How long, and how many bytes, a refused client's request is read and
/// thrown away so that closing sends FIN, not RST (an RST could destroy the
/// busy answer before the client reads it).
const REFUSAL_DRAIN_TIME: Duration = Duration::from_secs(2);
const REFUSAL_DRAIN_BYTES: usize = 1 << 20;

/// Refuse a connection at accept with the busy answer: written without
/// waiting (it fits any socket buffer), then our side is shut and, while
/// fewer than [`REFUSAL_DRAINS`] are, the client's request drained briefly.
/// Past that the connection is just closed, as distccd closes when full.
fn refuse_busy(stream: TcpStream, why: &Refused, shared: &Arc<Shared>) {
    static DRAINS: Semaphore = Semaphore::const_new(REFUSAL_DRAINS);
    let answer = encode_busy(&connection::busy_reason(why));
    if stream.try_write(&answer).is_ok_and(|n| n == answer.len()) {
        shared.stats.busy_answer();
        shared.stats.add_bytes_out(answer.len());
    }
    let Ok(permit) = DRAINS.try_acquire() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let _ = timeout(REFUSAL_DRAIN_TIME, async {
            let mut sink = [0u8; 16 * 1024];
            let mut drained = 0;
            while drained < REFUSAL_DRAIN_BYTES {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    });
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}

/// `ADDR:PORT`, with IPv4-mapped IPv6 shown as IPv4.
pub fn peer_label(peer: SocketAddr) -> String {
    SocketAddr::new(display_ip(peer.ip()), peer.port()).to_string()
}

/// The stats port: any request gets distccd's page; `GET /metrics` gets
/// Prometheus text.
async fn serve_stats(listener: TcpListener, shared: Arc<Shared>) {
    let limit = Arc::new(Semaphore::new(STATS_CONCURRENCY));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("stats accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(access) = &shared.cfg.access {
            if !access.allows(peer.ip()) {
                tracing::warn!(
                    "stats connection from client '{}' denied by access list",
                    display_ip(peer.ip())
                );
                continue;
            }
        }
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = answer_stats(stream, &shared).await {
                tracing::debug!("stats client {peer}: {e}");
            }
        });
    }
}

/// What a stats client asked for, judged from the start of its request.
#[derive(Debug, PartialEq, Eq)]
pub enum StatsRequest {
    Page,
    Metrics,
}

pub fn classify_stats_request(head: &[u8]) -> StatsRequest {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ' || b == b'\r');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if method == b"GET" && path == b"/metrics" {
        StatsRequest::Metrics
    } else {
        StatsRequest::Page
    }
}

async fn answer_stats(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let _ = timeout(STATS_READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while head.len() < 1024 && !head.contains(&b'\n') {
            let n = stream.read(&mut chunk[..1024 - head.len()]).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    let body = match classify_stats_request(&head) {
        StatsRequest::Metrics => {
            let text = render_metrics(&shared.stats, &AdmissionSnapshot::of(&shared.admission));
            format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
        }
        StatsRequest::Page => {
            let tmpdir = shared.cfg.job.work_root.clone();
            let sys = tokio::task::spawn_blocking(move || SystemSnapshot::read(&tmpdir))
                .await
                .unwrap_or_default();
            render_stats_page(
                &shared.stats,
                &sys,
                &AdmissionSnapshot::of(&shared.admission),
            )
        }
    };
    timeout(STATS_READ_TIMEOUT * 5, stream.write_all(body.as_bytes()))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "stats client stopped reading")
        })??;
    let _ = stream.shutdown().await;
    // Drain what the client may still send, so closing does not reset the page away.
    let mut sink = [0u8; 1024];
    let _ = timeout(Duration::from_millis(200), stream.read(&mut sink)).await;
    Ok(())
}

/// SIGTERM, SIGINT and SIGHUP all mean "stop accepting and finish".
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self, lifetime: Option<Duration>) -> &'static str {
        let deadline = async {
            match lifetime {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
            () = deadline => "--lifetime expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_requests() {
        assert_eq!(
            classify_stats_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            StatsRequest::Metrics
        );
        assert_eq!(
            classify_stats_request(b"GET /metrics?x=1 HTTP/1.0\n"),
            StatsRequest::Metrics
        );
        assert_eq!(
            classify_stats_request(b"GET /metrics"),
            StatsRequest::Metrics
        );
        assert_eq!(
            classify_stats_request(b"GET / HTTP/1.0\r\n\r\n"),
            StatsRequest::Page
        );
        assert_eq!(classify_stats_request(b""), StatsRequest::Page);
        assert_eq!(
            classify_stats_request(b"\x00\xffgarbage"),
            StatsRequest::Page
        );
        assert_eq!(
            classify_stats_request(b"POST /metrics HTTP/1.0\r\n"),
            StatsRequest::Page
        );
    }

    #[test]
    fn peer_labels_unmap_ipv4() {
        assert_eq!(
            peer_label("[::ffff:127.0.0.1]:4000".parse().unwrap()),
            "127.0.0.1:4000"
        );
        assert_eq!(peer_label("[::1]:4000".parse().unwrap()), "[::1]:4000");
    }
}
