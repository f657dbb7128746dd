//! Per-job cost of our client against the real distcc 3.4 client, side by side
//! in one run: the same tiny translation unit compiled many times through
//! (a) real `distcc` → real `distccd` and (b) our binary as `distcc` → the same
//! `distccd`, on loopback, alternating a/b so drift hits both equally.
//!
//! Run: `cargo bench --bench client_overhead` (`DPORTAGE_BENCH_RUNS=N` to change
//! the number of jobs per client, default 60).
//!
//! Printed per client: median / p10 / p90 wall time of a whole `distcc gcc -c`
//! invocation, and the median of "client-side time" = wall time minus the
//! compile time distccd logged for that job (`time:NNms`, so 1 ms resolution):
//! preprocessing, connecting, transfer, writing the object, process start-up.

#[path = "../tests/client_support/mod.rs"]
mod client_support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use client_support::*;

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
    let server = Distccd::start();
    let env = ClientEnv::new(&server.hostspec());
    let work = env.work();
    write_file(&work, "tiny.c", TINY_TU);

    let clients: [(&str, std::path::PathBuf); 2] = [
        ("distcc 3.4", Path::new(DISTCC).to_path_buf()),
        ("dportage", env.distcc()),
    ];
    let mut walls: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut server_ms: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut jobs = 0;
    for round in 0..WARMUP + runs {
        // Alternate which client goes first so neither always follows the other.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let started = Instant::now();
            let out = env
                .command(
                    &clients[which].1,
                    &["gcc", "-O2", "-c", "tiny.c", "-o", "tiny.o"],
                    &work,
                )
                .output()
                .unwrap();
            let wall = started.elapsed();
            assert_success(&out, clients[which].0);
            assert!(
                out.stderr.is_empty(),
                "{}: {}",
                clients[which].0,
                stderr_text(&out)
            );
            jobs += 1;
            // Every job must have really gone to distccd; its log line also gives
            // the server's share of the wall time.
            server.wait_for_compile_ok(jobs);
            let ms = last_job_time_ms(&server.log_text());
            if round >= WARMUP {
                walls[which].push(wall);
                server_ms[which].push(ms);
            }
        }
    }
    fs::remove_file(work.join("tiny.o")).ok();

    println!("client_overhead: {runs} jobs per client (+{WARMUP} warm-up), tiny TU, loopback distccd 3.4");
    let mut medians = [0.0f64; 2];
    let mut client_side = [0.0f64; 2];
    for which in 0..2 {
        let mut w: Vec<f64> = walls[which].iter().map(|d| d.as_secs_f64() * 1e3).collect();
        w.sort_by(|a, b| a.total_cmp(b));
        let mut own: Vec<f64> = walls[which]
            .iter()
            .zip(&server_ms[which])
            .map(|(d, ms)| d.as_secs_f64() * 1e3 - *ms as f64)
            .collect();
        own.sort_by(|a, b| a.total_cmp(b));
        medians[which] = percentile(&w, 50);
        client_side[which] = percentile(&own, 50);
        println!(
            "  {:<10} wall median {:7.2} ms  p10 {:7.2}  p90 {:7.2}   client-side median {:7.2} ms",
            clients[which].0,
            medians[which],
            percentile(&w, 10),
            percentile(&w, 90),
            client_side[which]
        );
    }
    println!(
        "  ratio dportage/distcc: wall {:.3}, client-side {:.3} (goal <= 0.8)",
        medians[1] / medians[0],
        client_side[1] / client_side[0]
    );
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    let index = (sorted.len().saturating_sub(1) * p + 50) / 100;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

/// `time:NNms` of the last COMPILE_OK line.
fn last_job_time_ms(log: &str) -> u64 {
    log.lines()
        .rev()
        .find(|l| l.contains(" COMPILE_OK "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("time:")))
        .and_then(|t| t.trim_end_matches("ms").parse().ok())
        .unwrap_or(0)
}
