//! A userspace WAN emulator: a TCP proxy that delays and rate-limits traffic the
//! way a slow, distant link would, and counts the bytes it carries.
//!
//! `tc netem` needs privileges and a kernel module the benchmark machines lack, so
//! the macro-benchmark puts this proxy in front of every server instead (with a
//! zero-delay, unlimited profile it is just a byte counter).
//!
//! The model, per direction, is a serial link followed by a fixed propagation
//! delay: a chunk read at `t` starts serialising when the link is free, occupies
//! it for `len × 8 / bandwidth`, and arrives `one_way_delay` after its last bit
//! left. Each chunk carries its own arrival time, so data in flight is pipelined
//! rather than queued behind the delay. The link is shared by every connection
//! through the same [`WanLink`] (a client's line to the servers is one line), and
//! a bounded send queue (like a router buffer) pushes back on the sender instead
//! of buffering without limit. A new connection pays one round trip before its
//! first byte moves, as a TCP handshake over the link would. Not modelled: loss,
//! jitter, TCP slow start.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, Instant};

/// Largest read the proxy makes at once on an unlimited link.
const MAX_CHUNK: usize = 64 * 1024;
/// Smallest chunk on a rate-limited link: about one Ethernet segment.
const MIN_CHUNK: usize = 1448;
/// Chunks per direction and connection that may wait for delivery; bounds memory
/// when the link itself does not (an unlimited link with a delay).
const CHANNEL_CHUNKS: usize = 64;

/// A link profile: how far away and how thin the line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WanProxy {
    /// Propagation delay in each direction.
    pub one_way_delay: Duration,
    /// Line rate in each direction; 0 means unlimited.
    pub bandwidth_bits_per_sec: u64,
}

impl WanProxy {
    /// A profile; `bandwidth_bits_per_sec` 0 means unlimited.
    pub const fn new(one_way_delay: Duration, bandwidth_bits_per_sec: u64) -> Self {
        WanProxy {
            one_way_delay,
            bandwidth_bits_per_sec,
        }
    }

    /// No delay, no cap: only counts bytes.
    pub const fn counting() -> Self {
        WanProxy::new(Duration::ZERO, 0)
    }

    /// A fresh link with this profile (own counters, own queues).
    pub fn link(&self) -> WanLink {
        WanLink::new(*self)
    }

    /// Proxy `listen` → `upstream` over a link of its own.
    pub async fn bind(&self, listen: SocketAddr, upstream: SocketAddr) -> io::Result<RunningProxy> {
        self.link().bind(listen, upstream).await
    }
}

impl std::fmt::Display for WanProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.one_way_delay.as_secs_f64() * 1000.0;
        match self.bandwidth_bits_per_sec {
            0 => write!(f, "{ms:.0} ms one-way, unlimited"),
            bps if bps % 1_000_000 == 0 => {
                write!(f, "{ms:.0} ms one-way, {} Mbit/s", bps / 1_000_000)
            }
            bps => write!(f, "{ms:.0} ms one-way, {bps} bit/s"),
        }
    }
}

/// Bytes and connections seen by a link, readable while it runs.
#[derive(Debug, Clone, Default)]
pub struct ByteCounters {
    /// Bytes read from clients (towards the server).
    pub client_to_server: Arc<AtomicU64>,
    /// Bytes read from servers (towards the client).
    pub server_to_client: Arc<AtomicU64>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
}

impl ByteCounters {
    /// (client→server bytes, server→client bytes, connections) right now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.client_to_server.load(Ordering::Relaxed),
            self.server_to_client.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
        )
    }
}

/// One direction of a link: when it is next free to start serialising.
#[derive(Debug)]
struct Lane {
    profile: WanProxy,
    next_free: Mutex<Instant>,
    /// How much serialisation backlog a sender may build before it is paused.
    queue_limit: Duration,
}

impl Lane {
    fn new(profile: WanProxy) -> Self {
        Lane {
            profile,
            next_free: Mutex::new(Instant::now()),
            queue_limit: Duration::from_millis(50),
        }
    }

    /// How much to read at once: about 10 ms of line time, so pacing stays smooth
    /// without a wake-up per packet.
    fn chunk_size(&self) -> usize {
        match self.profile.bandwidth_bits_per_sec {
            0 => MAX_CHUNK,
            bps => usize::try_from(bps / 8 / 100)
                .unwrap_or(MAX_CHUNK)
                .clamp(MIN_CHUNK, MAX_CHUNK),
        }
    }

    fn serialisation_time(&self, len: usize) -> Duration {
        match self.profile.bandwidth_bits_per_sec {
            0 => Duration::ZERO,
            bps => Duration::from_secs_f64(len as f64 * 8.0 / bps as f64),
        }
    }

    /// When a sender may hand the link more data: once the backlog ahead of it has
    /// shrunk to the queue limit.
    fn ready_at(&self) -> Instant {
        let next_free = *self
            .next_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        next_free
            .checked_sub(self.queue_limit)
            .unwrap_or_else(Instant::now)
    }

    /// Reserve the line for `len` bytes that arrived at `now`; returns when they
    /// reach the far end.
    fn schedule(&self, len: usize, now: Instant) -> Instant {
        if self.profile.bandwidth_bits_per_sec == 0 {
            return now + self.profile.one_way_delay;
        }
        let mut next_free = self
            .next_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let start = (*next_free).max(now);
        let done = start + self.serialisation_time(len);
        *next_free = done;
        done + self.profile.one_way_delay
    }
}

/// A shared emulated line (both directions) and its counters. Every proxy bound
/// through the same link competes for the same bandwidth.
#[derive(Debug, Clone)]
pub struct WanLink {
    up: Arc<Lane>,
    down: Arc<Lane>,
    counters: ByteCounters,
}

impl WanLink {
    /// A fresh link with this profile.
    pub fn new(profile: WanProxy) -> Self {
        WanLink {
            up: Arc::new(Lane::new(profile)),
            down: Arc::new(Lane::new(profile)),
            counters: ByteCounters::default(),
        }
    }

    /// The profile this link emulates.
    pub fn profile(&self) -> WanProxy {
        self.up.profile
    }

    /// The link's byte and connection counters (shared with every proxy on it).
    pub fn counters(&self) -> ByteCounters {
        self.counters.clone()
    }

    /// Listen on `listen` and forward every connection to `upstream` over this
    /// link. Must be called inside a tokio runtime; the proxy runs on it until
    /// the returned handle is dropped.
    pub async fn bind(&self, listen: SocketAddr, upstream: SocketAddr) -> io::Result<RunningProxy> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, upstream, self.clone()));
        Ok(RunningProxy {
            local_addr,
            counters: self.counters(),
            task,
        })
    }
}

/// A proxy accepting connections; dropping it closes the listener and every
/// connection it carries.
#[derive(Debug)]
pub struct RunningProxy {
    local_addr: SocketAddr,
    counters: ByteCounters,
    task: JoinHandle<()>,
}

impl RunningProxy {
    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters of the link this proxy forwards over.
    pub fn counters(&self) -> ByteCounters {
        self.counters.clone()
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accept loop. Connections live in a JoinSet owned by this task, so aborting
/// the task tears all of them down.
async fn serve(listener: TcpListener, upstream: SocketAddr, link: WanLink) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    link.counters.connections.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(carry(client, upstream, link.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("wanproxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What travels through a lane.
enum Segment {
    Data(Bytes),
    /// The sender half-closed.
    Fin,
    /// The sender's connection broke; the far end should see a reset.
    Reset,
}

/// The connection is torn down with resets on both sides.
struct Broken;

/// Carry one client connection to `upstream` and back.
async fn carry(mut client: TcpStream, upstream: SocketAddr, link: WanLink) {
    let accepted_at = Instant::now();
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("wanproxy: cannot reach {upstream}: {e}");
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // The emulated handshake: the client's first byte leaves after one round trip
    // (its connect() would only have returned then).
    let first_byte_not_before = accepted_at + 2 * link.profile().one_way_delay;
    let result = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::try_join!(
            direction(
                client_read,
                server_write,
                &link.up,
                &link.counters.client_to_server,
                first_byte_not_before,
            ),
            direction(
                server_read,
                client_write,
                &link.down,
                &link.counters.server_to_client,
                accepted_at,
            ),
        )
    };
    if result.is_err() {
        // A broken side must look broken on the other side too, not like a clean
        // end of stream that a client could mistake for a complete reply.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// One direction: a reader timestamps chunks onto the lane, a writer delivers
/// them when they are due.
async fn direction(
    from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    lane: &Lane,
    counter: &AtomicU64,
    not_before: Instant,
) -> Result<(), Broken> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (read, written) = tokio::join!(
        read_side(from, tx, lane, counter, not_before),
        write_side(to, rx)
    );
    read.and(written)
}

async fn read_side(
    mut from: ReadHalf<'_>,
    tx: mpsc::Sender<(Instant, Segment)>,
    lane: &Lane,
    counter: &AtomicU64,
    not_before: Instant,
) -> Result<(), Broken> {
    let mut buf = vec![0u8; lane.chunk_size()];
    if not_before > Instant::now() {
        sleep_until(not_before).await;
    }
    // Deliveries on one connection never overtake each other.
    let mut last_delivery = not_before;
    loop {
        let ready = lane.ready_at();
        if ready > Instant::now() {
            sleep_until(ready).await;
        }
        let (segment, outcome) = match from.read(&mut buf).await {
            Ok(0) => (Segment::Fin, Ok(())),
            Ok(n) => {
                counter.fetch_add(n as u64, Ordering::Relaxed);
                let due = lane.schedule(n, Instant::now());
                last_delivery = last_delivery.max(due);
                let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                if tx.send((last_delivery, Segment::Data(data))).await.is_err() {
                    return Err(Broken);
                }
                continue;
            }
            Err(_) => (Segment::Reset, Err(Broken)),
        };
        let due = last_delivery.max(Instant::now() + lane.profile.one_way_delay);
        let _ = tx.send((due, segment)).await;
        return outcome;
    }
}

async fn write_side(
    mut to: WriteHalf<'_>,
    mut rx: mpsc::Receiver<(Instant, Segment)>,
) -> Result<(), Broken> {
    while let Some((due, segment)) = rx.recv().await {
        if due > Instant::now() {
            sleep_until(due).await;
        }
        match segment {
            Segment::Data(data) => to.write_all(&data).await.map_err(|_| Broken)?,
            Segment::Fin => {
                // Forward the half-close; the other direction keeps flowing.
                let _ = to.shutdown().await;
                return Ok(());
            }
            Segment::Reset => return Err(Broken),
        }
    }
    // The reader gave up without a FIN (its own send failed).
    Err(Broken)
}

/// Parse "20ms", "1.5s", "0" into a duration.
fn parse_delay(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1e-3)
    };
    let value: f64 = number.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0 && value * scale < 3600.0)
        .then(|| Duration::from_secs_f64(value * scale))
}

/// Parse "10mbit", "1mbit", "512kbit", "8000000", "0" (unlimited) into bits/s.
fn parse_rate(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let (number, scale) = if let Some(n) = lower.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = lower.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("kbit") {
        (n, 1e3)
    } else {
        (lower.as_str(), 1.0)
    };
    let value: f64 = number.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0 && value * scale < 1e12).then_some((value * scale) as u64)
}

const WANPROXY_USAGE: &str =
    "usage: dportage __wanproxy --upstream ADDR:PORT [--listen ADDR:PORT] \
[--delay 20ms] [--rate 10mbit]";

/// `dportage __wanproxy --listen ADDR --upstream ADDR --delay 20ms --rate 10mbit`:
/// the WAN emulator as a stand-alone process, for trying a profile by hand.
/// Prints the bound address on stdout, and the byte counts on stderr at exit
/// (SIGINT/SIGTERM).
pub fn wanproxy_main(args: Vec<std::ffi::OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut upstream = None;
    let mut profile = WanProxy::counting();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().map(String::as_str);
        let ok = match (flag.as_str(), value) {
            ("--listen", Some(v)) => v.parse().map(|a| listen = a).is_ok(),
            ("--upstream", Some(v)) => v.parse().map(|a| upstream = Some(a)).is_ok(),
            ("--delay", Some(v)) => parse_delay(v).map(|d| profile.one_way_delay = d).is_some(),
            ("--rate", Some(v)) => parse_rate(v)
                .map(|r| profile.bandwidth_bits_per_sec = r)
                .is_some(),
            _ => false,
        };
        if !ok {
            eprintln!(
                "dportage __wanproxy: bad option {flag} {}\n{WANPROXY_USAGE}",
                value.unwrap_or("")
            );
            return crate::exitcode::BAD_ARGUMENTS;
        }
    }
    let Some(upstream) = upstream else {
        eprintln!("dportage __wanproxy: --upstream ADDR:PORT is required\n{WANPROXY_USAGE}");
        return crate::exitcode::BAD_ARGUMENTS;
    };
    let rt = match crate::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dportage __wanproxy: {e}");
            return crate::exitcode::DISTCC_FAILED;
        }
    };
    rt.block_on(async move {
        let proxy = match profile.bind(listen, upstream).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("dportage __wanproxy: cannot listen on {listen}: {e}");
                return crate::exitcode::BIND_FAILED;
            }
        };
        println!("{}", proxy.local_addr());
        eprintln!("dportage __wanproxy: {profile}, forwarding to {upstream}");
        wait_for_termination().await;
        let (up, down, conns) = proxy.counters().snapshot();
        eprintln!("dportage __wanproxy: {conns} connections, {up} bytes up, {down} bytes down");
        0
    })
}

async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_with_units() {
        assert_eq!(parse_delay("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_delay("0.05s"), Some(Duration::from_millis(50)));
        assert_eq!(parse_delay("7"), Some(Duration::from_millis(7)));
        assert_eq!(parse_delay("-1ms"), None);
        assert_eq!(parse_delay("soon"), None);
    }

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse_rate("10mbit"), Some(10_000_000));
        assert_eq!(parse_rate("1Mbit"), Some(1_000_000));
        assert_eq!(parse_rate("512kbit"), Some(512_000));
        assert_eq!(parse_rate("0"), Some(0));
        assert_eq!(parse_rate("fast"), None);
    }

    #[test]
    fn a_lane_serialises_back_to_back_chunks() {
        let lane = Lane::new(WanProxy::new(Duration::from_millis(20), 8_000_000));
        let now = Instant::now();
        // 1000 bytes at 1 MB/s = 1 ms each; the second waits for the first.
        let first = lane.schedule(1000, now);
        let second = lane.schedule(1000, now);
        assert_eq!(first - now, Duration::from_millis(21));
        assert_eq!(second - now, Duration::from_millis(22));
    }

    #[test]
    fn an_unlimited_lane_only_delays() {
        let lane = Lane::new(WanProxy::new(Duration::from_millis(5), 0));
        let now = Instant::now();
        assert_eq!(lane.schedule(1 << 20, now) - now, Duration::from_millis(5));
        assert_eq!(lane.chunk_size(), MAX_CHUNK);
    }

    #[test]
    fn chunks_are_about_ten_ms_of_line_time() {
        assert_eq!(
            Lane::new(WanProxy::new(Duration::ZERO, 10_000_000)).chunk_size(),
            12_500
        );
        assert_eq!(
            Lane::new(WanProxy::new(Duration::ZERO, 1_000_000)).chunk_size(),
            MIN_CHUNK
        );
    }
}
