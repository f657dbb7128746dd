//! The WAN emulator over real sockets: delay, bandwidth, byte counts, half-close
//! and resets. Timing assertions are lower bounds only (a loaded machine can only
//! make things slower).

use std::net::SocketAddr;
use std::time::Duration;

use dportage::tools::wanproxy::{WanLink, WanProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

use crate::support::wait_until_async;

const LOOPBACK_ANY_PORT: ([u8; 4], u16) = ([127, 0, 0, 1], 0);
/// Generous bound so a wedged proxy fails the test instead of hanging it.
const STUCK: Duration = Duration::from_secs(30);

/// An upstream that echoes every connection until EOF, then half-closes.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(LOOPBACK_ANY_PORT))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// An upstream that reads to EOF and answers with the byte count (8 bytes, LE).
async fn counting_sink() -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(LOOPBACK_ANY_PORT))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                let _ = s.write_all(&total.to_le_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn send_all_and_read_reply(proxy: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(payload).await.unwrap();
    c.shutdown().await.unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).await.unwrap();
    reply
}

#[tokio::test]
async fn a_round_trip_takes_at_least_two_one_way_delays_and_is_counted() {
    let delay = Duration::from_millis(40);
    let proxy = WanProxy::new(delay, 0)
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), echo_server().await)
        .await
        .unwrap();
    let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
    // Let the emulated handshake pass so only the data's round trip is timed.
    tokio::time::sleep(3 * delay).await;

    let start = Instant::now();
    c.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    timeout(STUCK, c.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    let rtt = start.elapsed();

    assert_eq!(&echoed, b"ping");
    assert!(rtt >= 2 * delay, "round trip {rtt:?} < 2 × {delay:?}");
    let (up, down, conns) = proxy.counters().snapshot();
    assert_eq!((up, down, conns), (4, 4, 1));
}

#[tokio::test]
async fn a_new_connection_pays_a_handshake_round_trip_before_its_first_byte() {
    let delay = Duration::from_millis(40);
    let proxy = WanProxy::new(delay, 0)
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), echo_server().await)
        .await
        .unwrap();
    let start = Instant::now();
    let reply = timeout(STUCK, send_all_and_read_reply(proxy.local_addr(), b"hello"))
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(reply, b"hello");
    // Handshake (2 d) + request (d) + reply (d).
    assert!(elapsed >= 4 * delay, "{elapsed:?} < 4 × {delay:?}");
}

#[tokio::test]
async fn one_megabyte_at_ten_megabit_takes_at_least_point_eight_seconds() {
    let proxy = WanProxy::new(Duration::from_millis(5), 10_000_000)
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), counting_sink().await)
        .await
        .unwrap();
    let payload = vec![0x5au8; 1_000_000];

    let start = Instant::now();
    let reply = timeout(STUCK, send_all_and_read_reply(proxy.local_addr(), &payload))
        .await
        .unwrap();
    let elapsed = start.elapsed();

    assert_eq!(reply, 1_000_000u64.to_le_bytes());
    assert!(
        elapsed >= Duration::from_millis(800),
        "1 MB through a 10 Mbit/s link took only {elapsed:?}"
    );
    let (up, down, conns) = proxy.counters().snapshot();
    assert_eq!((up, down, conns), (1_000_000, 8, 1));
}

#[tokio::test]
async fn connections_on_one_link_share_its_bandwidth() {
    let link = WanLink::new(WanProxy::new(Duration::ZERO, 10_000_000));
    let sink = counting_sink().await;
    let a = link
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), sink)
        .await
        .unwrap();
    let b = link
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), sink)
        .await
        .unwrap();
    let payload = vec![1u8; 300_000];

    let start = Instant::now();
    let (ra, rb) = timeout(STUCK, async {
        tokio::join!(
            send_all_and_read_reply(a.local_addr(), &payload),
            send_all_and_read_reply(b.local_addr(), &payload),
        )
    })
    .await
    .unwrap();
    let elapsed = start.elapsed();

    assert_eq!(ra, 300_000u64.to_le_bytes());
    assert_eq!(rb, 300_000u64.to_le_bytes());
    // 600 kB over one 10 Mbit/s line is 0.48 s; two separate lines would take 0.24 s.
    assert!(
        elapsed >= Duration::from_millis(480),
        "two transfers on one link finished in {elapsed:?}"
    );
    let (up, down, conns) = link.counters().snapshot();
    assert_eq!((up, down, conns), (600_000, 16, 2));
}

#[tokio::test]
async fn a_server_half_close_is_forwarded_and_the_client_can_still_send() {
    // The server greets, half-closes, then reads what the client sends afterwards.
    let listener = TcpListener::bind(SocketAddr::from(LOOPBACK_ANY_PORT))
        .await
        .unwrap();
    let upstream = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"hello").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let proxy = WanProxy::new(Duration::from_millis(10), 1_000_000)
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), upstream)
        .await
        .unwrap();

    let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut greeting = Vec::new();
    timeout(STUCK, c.read_to_end(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(greeting, b"hello");
    c.write_all(b"after your FIN").await.unwrap();
    c.shutdown().await.unwrap();

    let got = timeout(STUCK, server).await.unwrap().unwrap();
    assert_eq!(got, b"after your FIN");
    let (up, down, _) = proxy.counters().snapshot();
    assert_eq!((up, down), (14, 5));
}

#[tokio::test]
async fn a_server_reset_reaches_the_client_as_an_error_not_a_clean_eof() {
    let listener = TcpListener::bind(SocketAddr::from(LOOPBACK_ANY_PORT))
        .await
        .unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
    });
    let proxy = WanProxy::new(Duration::from_millis(5), 0)
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), upstream)
        .await
        .unwrap();

    let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    let read = timeout(STUCK, c.read_to_end(&mut buf)).await.unwrap();
    assert!(
        read.is_err(),
        "expected a reset, got a clean EOF after {} bytes",
        buf.len()
    );
}

#[tokio::test]
async fn an_unreachable_upstream_fails_the_connection_and_the_proxy_keeps_serving() {
    // A port that was free a moment ago: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind(SocketAddr::from(LOOPBACK_ANY_PORT)).unwrap();
        l.local_addr().unwrap()
    };
    let link = WanLink::new(WanProxy::counting());
    let to_dead = link
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), dead)
        .await
        .unwrap();
    let mut c = TcpStream::connect(to_dead.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    let read = timeout(STUCK, c.read_to_end(&mut buf)).await.unwrap();
    assert!(read.is_err() || buf.is_empty());

    let to_echo = link
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), echo_server().await)
        .await
        .unwrap();
    let reply = timeout(
        STUCK,
        send_all_and_read_reply(to_echo.local_addr(), b"still"),
    )
    .await
    .unwrap();
    assert_eq!(reply, b"still");
    assert_eq!(link.counters().snapshot().2, 2);
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_listener() {
    let proxy = WanProxy::counting()
        .bind(SocketAddr::from(LOOPBACK_ANY_PORT), echo_server().await)
        .await
        .unwrap();
    let addr = proxy.local_addr();
    drop(proxy);
    // The abort is processed on the runtime; wait for the port to refuse.
    wait_until_async(STUCK, "the listener to close after drop", async || {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}
