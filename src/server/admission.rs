//! Who may hold a connection, and how many bytes of requests may wait in
//! memory: the server's admission rules, in the shape of a hardened web
//! server's.
//!
//! * A connection costs a small read buffer and no job slot until its whole
//!   request has arrived, so accepting is cheap and the caps here are far
//!   above `--jobs`: `--max-connections` in all.
//! * Per client address (an IPv6 client is its /64: one host is given a whole
//!   /64, so counting single IPv6 addresses would cap nothing) only the
//!   connections still *sending* their request are capped, because those are
//!   the ones that can stall: `--max-per-client` of them are read at once, the
//!   others wait their turn in arrival order without being read (costing a
//!   descriptor, no buffer), and at most half of `--max-connections` may be
//!   sending or waiting to send from one address, so one address can never
//!   take every connection. A request that has fully arrived no longer counts
//!   against its address: it waits in the bounded queue, then runs. So a
//!   crowd behind one address (a NAT'd build farm, 200 `distcc` processes on
//!   one machine) is served, and stalled connections from one address delay
//!   only that address, and only until `--header-timeout`.
//! * Every byte a request holds in memory, while it is read and while it
//!   waits for a job slot, is charged to one budget (`--queue-bytes`); a
//!   request that would overflow it is closed, as distccd closes when it is
//!   overloaded, and its client compiles locally.
//! * At most `--queue` complete requests wait for a job slot.
//!
//! The counting is plain data behind a mutex (no sockets), so tables test it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What the per-client cap counts: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(std::net::Ipv4Addr),
    V6Prefix(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4),
                None => ClientKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The limits, checked by option parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Open job connections in all.
    pub max_connections: usize,
    /// Connections per [`ClientKey`] read at once while their request is
    /// still arriving (others from that client wait their turn).
    pub max_per_client: usize,
    /// Complete requests waiting for a job slot.
    pub max_queued: usize,
    /// Bytes of requests held in memory (being read or waiting).
    pub max_bytes: u64,
}

/// Why a connection or a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{0} connections from this client are still sending their request or waiting to: \
         over half of --max-connections"
    )]
    PerClient(usize),
    #[error("{0} connections open: over --max-connections")]
    Global(usize),
    #[error("{0} requests already wait for a job slot: over --queue")]
    QueueFull(usize),
    #[error("{held} bytes of requests held in memory, {wanted} more would pass --queue-bytes")]
    Bytes { held: u64, wanted: u64 },
}

impl Refused {
    /// The `reason` label of `dportage_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::PerClient(_) => "per_client",
            Refused::Global(_) => "global",
            Refused::QueueFull(_) => "queue_full",
            Refused::Bytes { .. } => "queue_bytes",
        }
    }
}

impl AdmissionLimits {
    /// Connections one client may have sending or waiting to send: half of
    /// `--max-connections`, so the rest always stays open to other clients.
    pub fn max_unsent_per_client(&self) -> usize {
        (self.max_connections / 2).max(self.max_per_client).max(1)
    }
}

/// One client's connections whose request has not fully arrived.
#[derive(Debug)]
struct Unsent {
    count: usize,
    /// `--max-per-client` turns to be read; tokio's semaphore is fair, so
    /// waiting connections get them in arrival order.
    turns: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_client: HashMap<ClientKey, Unsent>,
    queued: usize,
}

/// The admission state shared by every connection.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    counts: Mutex<Counts>,
    /// Bytes charged by [`ByteCharge`]s (atomic: charged on every read).
    bytes: AtomicU64,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            counts: Mutex::new(Counts::default()),
            bytes: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update
        // is a single statement.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admit a new connection from `ip`; the ticket holds its place until
    /// dropped, and counts it as unsent until [`ConnectionTicket::request_arrived`].
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionTicket, Refused> {
        let key = ClientKey::of(ip);
        let mut c = self.counts();
        if c.open >= self.limits.max_connections {
            return Err(Refused::Global(c.open));
        }
        let max_per_client = self.limits.max_per_client;
        let unsent = c.per_client.entry(key).or_insert_with(|| Unsent {
            count: 0,
            turns: Arc::new(Semaphore::new(max_per_client)),
        });
        if unsent.count >= self.limits.max_unsent_per_client() {
            return Err(Refused::PerClient(unsent.count));
        }
        unsent.count += 1;
        let turns = Arc::clone(&unsent.turns);
        c.open += 1;
        Ok(ConnectionTicket {
            admission: Arc::clone(self),
            key,
            unsent: Some(turns),
        })
    }

    /// Take a place in the queue for a job slot.
    pub fn enqueue(self: &Arc<Self>) -> Result<QueueTicket, Refused> {
        let mut c = self.counts();
        if c.queued >= self.limits.max_queued {
            return Err(Refused::QueueFull(c.queued));
        }
        c.queued += 1;
        Ok(QueueTicket {
            admission: Arc::clone(self),
        })
    }

    /// A charge of zero bytes, to grow as a request's bytes arrive.
    pub fn charge(self: &Arc<Self>) -> ByteCharge {
        ByteCharge {
            admission: Arc::clone(self),
            held: 0,
        }
    }

    pub fn open_connections(&self) -> usize {
        self.counts().open
    }

    /// Connections whose request has not fully arrived (being read or
    /// waiting for their client's turn).
    pub fn unsent(&self) -> usize {
        self.counts().per_client.values().map(|u| u.count).sum()
    }

    pub fn queued(&self) -> usize {
        self.counts().queued
    }

    pub fn held_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionTicket {
    admission: Arc<Admission>,
    key: ClientKey,
    /// The client's turns to be read, while the request has not fully arrived.
    unsent: Option<Arc<Semaphore>>,
}

/// A turn to be read: one of `--max-per-client` per client address.
#[derive(Debug)]
pub struct SendingTurn(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl ConnectionTicket {
    /// Wait until this connection may be read: at most `--max-per-client`
    /// connections of one client are read at once, the others wait here in
    /// arrival order.
    pub async fn sending_turn(&self) -> SendingTurn {
        match &self.unsent {
            Some(turns) => SendingTurn(Arc::clone(turns).acquire_owned().await.ok()),
            None => SendingTurn(None),
        }
    }

    /// The whole request has arrived: it no longer counts against its client.
    pub fn request_arrived(&mut self) {
        if self.unsent.take().is_some() {
            self.admission.counts().forget_unsent(self.key);
        }
    }
}

impl Counts {
    fn forget_unsent(&mut self, key: ClientKey) {
        if let Some(unsent) = self.per_client.get_mut(&key) {
            unsent.count -= 1;
            if unsent.count == 0 {
                // Forget the client, or a scan of many addresses would grow the map forever.
                self.per_client.remove(&key);
            }
        }
    }
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        c.open = c.open.saturating_sub(1);
        if self.unsent.take().is_some() {
            c.forget_unsent(self.key);
        }
    }
}

/// One request waiting for a job slot.
#[derive(Debug)]
pub struct QueueTicket {
    admission: Arc<Admission>,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        c.queued = c.queued.saturating_sub(1);
    }
}

/// Bytes one request holds in memory, against `--queue-bytes`; given back when dropped.
#[derive(Debug)]
pub struct ByteCharge {
    admission: Arc<Admission>,
    held: u64,
}

impl ByteCharge {
    /// Charge `n` more bytes, unless that would pass the budget.
    pub fn grow(&mut self, n: u64) -> Result<(), Refused> {
        let max = self.admission.limits.max_bytes;
        let bytes = &self.admission.bytes;
        let mut now = bytes.load(Ordering::Relaxed);
        loop {
            let next = now.saturating_add(n);
            if next > max {
                return Err(Refused::Bytes {
                    held: now,
                    wanted: n,
                });
            }
            match bytes.compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.held += n;
                    return Ok(());
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Charge exactly `total` bytes from now on (the decoded request may be
    /// larger than what was read, when it was compressed).
    pub fn resize(&mut self, total: u64) -> Result<(), Refused> {
        if total > self.held {
            self.grow(total - self.held)
        } else {
            self.admission
                .bytes
                .fetch_sub(self.held - total, Ordering::Relaxed);
            self.held = total;
            Ok(())
        }
    }

    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for ByteCharge {
    fn drop(&mut self) {
        self.admission.bytes.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_connections: usize, max_per_client: usize) -> Arc<Admission> {
        Arc::new(Admission::new(AdmissionLimits {
            max_connections,
            max_per_client,
            max_queued: 2,
            max_bytes: 100,
        }))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn client_keys() {
        assert_eq!(
            ClientKey::of(ip("::ffff:10.0.0.1")),
            ClientKey::of(ip("10.0.0.1"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn per_client_and_global_caps() {
        // 6 connections in all: at most 3 unsent from one client.
        let a = admission(6, 1);
        let mut t1 = a.connect(ip("127.0.0.2")).unwrap();
        let _t2 = a.connect(ip("127.0.0.2")).unwrap();
        let _t3 = a.connect(ip("127.0.0.2")).unwrap();
        assert_eq!(
            a.connect(ip("127.0.0.2")).unwrap_err(),
            Refused::PerClient(3)
        );
        // A whole request no longer counts against its client…
        t1.request_arrived();
        assert_eq!(a.unsent(), 2);
        let _t4 = a.connect(ip("127.0.0.2")).unwrap();
        // …but still against --max-connections.
        let t5 = a.connect(ip("127.0.0.3")).unwrap();
        let _t6 = a.connect(ip("127.0.0.4")).unwrap();
        assert_eq!(a.connect(ip("127.0.0.5")).unwrap_err(), Refused::Global(6));
        drop(t1);
        assert_eq!(a.open_connections(), 5);
        drop(t5);
        assert!(!a
            .counts()
            .per_client
            .contains_key(&ClientKey::of(ip("127.0.0.3"))));
    }

    #[tokio::test]
    async fn turns_to_send_are_per_client_and_in_arrival_order() {
        let a = admission(100, 2);
        let t1 = a.connect(ip("127.0.0.2")).unwrap();
        let t2 = a.connect(ip("127.0.0.2")).unwrap();
        let mut t3 = a.connect(ip("127.0.0.2")).unwrap();
        let other = a.connect(ip("127.0.0.3")).unwrap();
        let turn1 = t1.sending_turn().await;
        let _turn2 = t2.sending_turn().await;
        let mut third = Box::pin(t3.sending_turn());
        assert!(
            futures_poll_once(&mut third).is_none(),
            "two turns per client"
        );
        // Another client is not held up by this one's turns.
        let _other_turn = other.sending_turn().await;
        drop(turn1);
        let turn3 = third.await;
        drop(turn3);
        t3.request_arrived();
        // Once the request is whole, no turn is needed to go on.
        let _free = t3.sending_turn().await;
        assert_eq!(a.unsent(), 3);
    }

    fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn queue_and_bytes() {
        let a = admission(10, 10);
        let q1 = a.enqueue().unwrap();
        let _q2 = a.enqueue().unwrap();
        assert_eq!(a.enqueue().unwrap_err(), Refused::QueueFull(2));
        drop(q1);
        assert_eq!(a.queued(), 1);

        let mut c1 = a.charge();
        c1.grow(60).unwrap();
        let mut c2 = a.charge();
        assert!(matches!(c2.grow(41), Err(Refused::Bytes { held: 60, .. })));
        c2.grow(40).unwrap();
        assert_eq!(a.held_bytes(), 100);
        c1.resize(10).unwrap();
        assert_eq!(a.held_bytes(), 50);
        assert!(c1.resize(61).is_err());
        drop(c2);
        drop(c1);
        assert_eq!(a.held_bytes(), 0);
    }
}
