//! Per-job cost of our client against the real distcc 3.4 client, side by side
//! in one run, on loopback, alternating a/b so machine noise hits both equally.
//!
//! 1. The requested comparison: the same tiny translation unit compiled many
//!    times through (a) real `distcc` → real `distccd` and (b) our binary as
//!    `distcc` → the same `distccd`. Wall time of a whole `distcc gcc -c`; most
//!    of it is gcc's own work (local `gcc -E`, remote `cc1` + `as`), identical
//!    for both clients.
//! 2. Client overhead alone: both clients against an instant fake server (reads
//!    the request, answers at once with a canned object) on an already
//!    preprocessed `.i` input, so no compiler runs anywhere: what remains is
//!    process start-up, host list, slots, connect, send, receive, write.
//! 3. As 2 with the `.c` input: client overhead plus the local preprocessor.
//!
//! Run: `cargo bench --bench client_overhead` (`DPORTAGE_BENCH_RUNS=N` jobs per
//! client and scenario, default 60).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::client::*;
use support::*;

const TINY_TU: &str =
    "static int table[] = {1, 2, 3};\nint answer(int i) { return table[i % 3] * 42; }\n";
const WARMUP: usize = 3;

fn main() {
    if !require_distcc("client_overhead bench") {
        return;
    }
    let runs: usize = std::env::var("DPORTAGE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .max(5);
    println!("client_overhead: {runs} jobs per client and scenario (+{WARMUP} warm-up), loopback");

    let server = Distccd::start();
    let env = ClientEnv::new(&server.hostspec());
    write_file(&env.work(), "tiny.c", TINY_TU);
    let mut jobs = 0;
    let real = measure(&env, runs, "tiny.c", || {
        // Every job must really have gone to distccd.
        jobs += 1;
        server.wait_for_exact_compile_ok(jobs);
    });
    report("1. real distccd, tiny.c (whole job)", &real);

    let instant = InstantServer::start(&env);
    let env = ClientEnv::new(&format!("127.0.0.1:{}", instant.port));
    write_file(&env.work(), "tiny.c", TINY_TU);
    let preprocessed = Command::new("gcc")
        .args(["-O2", "-E", "tiny.c"])
        .current_dir(env.work())
        .output()
        .unwrap();
    fs::write(env.work().join("tiny.i"), preprocessed.stdout).unwrap();
    let overhead = measure(&env, runs, "tiny.i", || {});
    report(
        "2. instant server, tiny.i (client overhead alone)",
        &overhead,
    );
    let with_cpp = measure(&env, runs, "tiny.c", || {});
    report(
        "3. instant server, tiny.c (client overhead + local gcc -E)",
        &with_cpp,
    );
    let answered = instant.stop();
    assert_eq!(
        answered,
        4 * (runs + WARMUP),
        "every job must have reached the instant server"
    );
}

/// Wall times of `distcc gcc -O2 -c INPUT -o tiny.o` per client: [distcc 3.4, ours].
fn measure(
    env: &ClientEnv,
    runs: usize,
    input: &str,
    mut after_each: impl FnMut(),
) -> [Vec<f64>; 2] {
    let clients = [Path::new(DISTCC).to_path_buf(), env.distcc_link()];
    let mut walls: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..WARMUP + runs {
        // Alternate which client goes first so neither always follows the other.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let started = Instant::now();
            let out = env
                .command(
                    &clients[which],
                    &["gcc", "-O2", "-c", input, "-o", "tiny.o"],
                )
                .output()
                .unwrap();
            let wall = started.elapsed().as_secs_f64() * 1e3;
            assert_success(&out, &format!("{} {input}", NAMES[which]));
            assert!(
                out.stderr.is_empty(),
                "{}: {}",
                NAMES[which],
                stderr_text(&out)
            );
            after_each();
            if round >= WARMUP {
                walls[which].push(wall);
            }
        }
    }
    walls
}

const NAMES: [&str; 2] = ["distcc 3.4", "dportage"];

fn report(title: &str, walls: &[Vec<f64>; 2]) {
    println!("{title}");
    let mut medians = [0.0; 2];
    for which in 0..2 {
        let mut w = walls[which].clone();
        w.sort_by(|a, b| a.total_cmp(b));
        medians[which] = percentile(&w, 50);
        println!(
            "  {:<10} median {:7.2} ms   p10 {:7.2}   p90 {:7.2}",
            NAMES[which],
            medians[which],
            percentile(&w, 10),
            percentile(&w, 90)
        );
    }
    println!(
        "  ratio dportage/distcc (medians): {:.3}   (goal <= 0.8)",
        medians[1] / medians[0]
    );
}

/// Answers every job at once with the same canned object, on its own thread.
struct InstantServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl InstantServer {
    fn start(env: &ClientEnv) -> InstantServer {
        write_file(&env.work(), "canned.c", TINY_TU);
        let obj = env.work().join("canned.o");
        let status = Command::new("gcc")
            .args(["-O2", "-c", "canned.c", "-o"])
            .arg(&obj)
            .current_dir(env.work())
            .status()
            .unwrap();
        assert!(status.success());
        let object = fs::read(&obj).unwrap();
        let mut reply = format!(
            "DONE00000001STAT00000000SERR00000000SOUT00000000DOTO{:08x}",
            object.len()
        )
        .into_bytes();
        reply.extend_from_slice(&object);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answered = 0;
            while !stop_flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = stream.set_nodelay(true);
                        let request = read_request(&mut stream, |d| request_len(d).is_some());
                        if request_len(&request).is_some() && stream.write_all(&reply).is_ok() {
                            answered += 1;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            answered
        });
        InstantServer { port, stop, thread }
    }

    /// Stop and return how many jobs were answered.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Length of a complete protocol 1 request at the start of `data`.
fn request_len(data: &[u8]) -> Option<usize> {
    let value = |at: usize| -> Option<usize> {
        let h = data.get(at..at + 12)?;
        usize::from_str_radix(std::str::from_utf8(&h[4..]).ok()?, 16).ok()
    };
    let argc = value(12)?;
    let mut at = 24;
    for _ in 0..argc {
        at += 12 + value(at)?;
    }
    let end = at + 12 + value(at)?;
    (data.len() >= end).then_some(end)
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    let index = (sorted.len().saturating_sub(1) * p + 50) / 100;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}
