//! Coordinator load: a pool of 100 000 registered hosts, then signed
//! heartbeats and signed host-list requests as fast as the coordinator
//! answers them over real HTTP/1.1 on loopback; prints requests/s and latency
//! percentiles (goal: ≥ 20 000 req/s, p99 < 10 ms).
//!
//! Every request is a real, distinct, signed request (fresh nonce): the
//! coordinator verifies each Ed25519 signature, checks the nonce and the clock,
//! parses and validates the JSON, and (for heartbeats) updates its index. The
//! requests are signed before the clock starts, so the numbers measure the
//! coordinator, not the load generator's signing; both still share this
//! machine's cores. Connections are kept alive (a daemon or a `make -j` client
//! would open one per request, which adds a TCP handshake on loopback).
//!
//! Each phase also prints the process's CPU time per request (coordinator and
//! load generator together), which other work on the machine disturbs far less
//! than requests/s.
//!
//! Run: `cargo bench --bench coordinator_load`. Knobs: `DPORTAGE_BENCH_HOSTS`
//! (default 100000), `DPORTAGE_BENCH_REQUESTS` per phase (default 40000),
//! `DPORTAGE_BENCH_CONNECTIONS` (default 32), `DPORTAGE_BENCH_SECONDS` cap per
//! phase (default 20).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::fingerprint::Toolchain;
use dportage::network::api::{Heartbeat, HostsRequest};
use dportage::network::auth;
use dportage::network::unix_now;
use dportage::network::{Identity, IdentityId};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn toolchain(i: usize) -> Toolchain {
    // A few toolchains, as in a real pool: most hosts share the common one.
    let which = if i % 10 < 7 { 0 } else { i % 4 };
    let h = |s: &str| {
        blake3::hash(format!("{s}{which}").as_bytes())
            .to_hex()
            .to_string()
    };
    Toolchain {
        name: "gcc".into(),
        version: format!("gcc (Debian 12.2.0-14) 12.2.{which}"),
        target: "x86_64-linux-gnu".into(),
        probe_hash: h("probe"),
        id: h("id"),
    }
}

fn heartbeat(i: usize) -> (Heartbeat, IpAddr) {
    let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
    let hb = Heartbeat {
        host: Some(ip.to_string()),
        port: 3632,
        toolchains: vec![toolchain(i)],
        libc: "glibc 2.36".into(),
        arch: "x86_64".into(),
        tz_offset_secs: ((i % 25) as i32 - 12) * 3600,
        capacity: 1 + (i % 16) as u32,
        lzo: true,
        // As real daemons: every host list then carries signed tickets.
        tickets: true,
        software: "bench".into(),
        confined: true,
    };
    (hb, IpAddr::V4(ip))
}

struct Signed {
    path: &'static str,
    headers: auth::SignedHeaders,
    body: Bytes,
}

fn sign(
    identity: &Identity,
    coordinator: &IdentityId,
    path: &'static str,
    body: Vec<u8>,
) -> Signed {
    let headers = auth::sign_request(identity, coordinator, "POST", path, &body, unix_now());
    Signed {
        path,
        headers,
        body: Bytes::from(body),
    }
}

struct PhaseResult {
    done: usize,
    errors: usize,
    wall: Duration,
    /// CPU time this process (coordinator and load generator) spent in the
    /// phase: steadier than wall time when other work shares the machine.
    cpu: Duration,
    latencies_us: Vec<u64>,
}

/// User plus system CPU time of this process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass; no other effect.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

async fn run_phase(
    addr: SocketAddr,
    requests: Vec<Signed>,
    connections: usize,
    cap: Duration,
) -> PhaseResult {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let cpu_start = process_cpu();
    let deadline = start + cap;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let requests = requests.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests.len() || Instant::now() > deadline {
                    break;
                }
                let r = &requests[i];
                let mut b = Request::builder()
                    .method("POST")
                    .uri(r.path)
                    .header("host", "bench")
                    .header("content-type", "application/json");
                for (k, v) in r.headers.pairs() {
                    b = b.header(k, v);
                }
                let req = b.body(Full::new(r.body.clone())).unwrap();
                let t = Instant::now();
                if sender.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        lat.push(t.elapsed().as_micros() as u64);
                        if !ok {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies_us.extend(l);
        errors += e;
    }
    PhaseResult {
        done: latencies_us.len(),
        errors,
        wall: start.elapsed(),
        cpu: process_cpu().saturating_sub(cpu_start),
        latencies_us,
    }
}

fn report(name: &str, mut r: PhaseResult) {
    r.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if r.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((r.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        r.latencies_us[i] as f64 / 1000.0
    };
    println!(
        "{name:<22} {:>8} req in {:>6.2} s = {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms   CPU {:>5.1} us/req   errors {}",
        r.done,
        r.wall.as_secs_f64(),
        r.done as f64 / r.wall.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        r.cpu.as_secs_f64() * 1e6 / r.done.max(1) as f64,
        r.errors
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; keep
    // that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let hosts = knob("DPORTAGE_BENCH_HOSTS", if quick { 2_000 } else { 100_000 });
    let per_phase = knob(
        "DPORTAGE_BENCH_REQUESTS",
        if quick { 2_000 } else { 40_000 },
    );
    let connections = knob("DPORTAGE_BENCH_CONNECTIONS", 32).max(1);
    let cap = Duration::from_secs(knob("DPORTAGE_BENCH_SECONDS", 20) as u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut cfg = CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().into());
        cfg.challenges = false;
        cfg.new_hosts_per_network = dportage::coordinator::quota::Rate::per_day(0);
        cfg.new_hosts_per_wide_network = dportage::coordinator::quota::Rate::per_day(0);
        let coord = Coordinator::bind(cfg).await.unwrap();
        let addr = coord.local_addr();

        let t = Instant::now();
        // Keys only for the identities that will send requests; the rest of the
        // pool needs no secret.
        let senders = per_phase.min(hosts);
        let identities: Vec<Identity> = (0..senders).map(|_| Identity::generate()).collect();
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..hosts {
            let id = identities
                .get(i)
                .map(Identity::id)
                .unwrap_or_else(|| Identity::generate().id());
            let (hb, ip) = heartbeat(i);
            batch.push((id, hb, ip));
            if batch.len() == 10_000 {
                coord
                    .register_directly(std::mem::take(&mut batch))
                    .await
                    .unwrap();
            }
        }
        if !batch.is_empty() {
            coord.register_directly(batch).await.unwrap();
        }
        println!(
            "coordinator_load: {} hosts registered in {:.1} s ({} live); {connections} keep-alive connections, 2-core machine shared with the load generator",
            hosts,
            t.elapsed().as_secs_f64(),
            coord.live_hosts()
        );

        let heartbeats: Vec<Signed> = (0..per_phase)
            .map(|k| {
                let i = k % senders;
                let (hb, _) = heartbeat(i);
                sign(&identities[i], &coord.key(), "/v1/heartbeat", serde_json::to_vec(&hb).unwrap())
            })
            .collect();
        let r = run_phase(addr, heartbeats, connections, cap).await;
        report("heartbeat", r);

        let lists: Vec<Signed> = (0..per_phase)
            .map(|k| {
                let i = (k * 7919) % senders;
                let req = HostsRequest {
                    fingerprints: vec![toolchain(i).id],
                    tz_offset_secs: ((k % 25) as i32 - 12) * 3600,
                    max: Some(32),
                    include_unconfined: false,
                };
                sign(&identities[i], &coord.key(), "/v1/hosts", serde_json::to_vec(&req).unwrap())
            })
            .collect();
        let r = run_phase(addr, lists, connections, cap).await;
        report("host list (32 hosts)", r);
        coord.shutdown();
    });
}
