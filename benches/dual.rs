//! Wall time of one job with verified dispatch (`DPORTAGE_REDUNDANCY=2`)
//! against plain dispatch (`DPORTAGE_REDUNDANCY=1`), measured in the same run
//! on two idle real distccd 3.4 hosts on loopback, alternating so that machine
//! noise hits both sides alike. Goal (issue 4): dual/single ≤ 1.15.
//!
//! On one machine the hosts share the client's cores, so a dual job's second
//! compile competes with the first for CPU, which separate idle hosts would not.
//! The last columns therefore also time the same CPU work as two plain jobs
//! started together, one per host: dual against that is what verification
//! itself costs (dispatch, hashing, comparing).
//!
//! `cargo bench --bench dual` (runs per side: `DUAL_BENCH_RUNS`, default 21).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::client::ClientEnv;
use support::dual::*;
use support::*;

const C_SOURCE: &str = "#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\nstruct item { char name[32]; int value; };\nstatic int cmp(const void *a, const void *b) { return ((const struct item *)a)->value - ((const struct item *)b)->value; }\nint sort_items(struct item *v, size_t n) { qsort(v, n, sizeof *v, cmp); for (size_t i = 0; i < n; i++) printf(\"%s=%d\\n\", v[i].name, v[i].value); return (int)strlen(v[0].name); }\n";
const CPP_SOURCE: &str = "#include <map>\n#include <string>\n#include <vector>\n#include <algorithm>\n#include <numeric>\nstd::map<std::string, int> count(const std::vector<std::string>& words) { std::map<std::string, int> m; for (auto& w : words) ++m[w]; return m; }\nint total(const std::vector<int>& v) { std::vector<int> s(v); std::sort(s.begin(), s.end()); return std::accumulate(s.begin(), s.end(), 0); }\n";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_one(env: &ClientEnv, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = env.distcc(args);
    let elapsed = started.elapsed();
    assert_success(&out, &format!("{args:?}"));
    assert!(
        mismatch_lines(&out).is_empty(),
        "honest hosts disagreed: {}",
        stderr_text(&out)
    );
    elapsed
}

/// Two plain jobs at once, one per host: the CPU work of a dual job (plus one
/// extra preprocessing), so dual against this is dportage's own cost once the
/// second compile's competition for this machine's cores is taken out.
fn time_pair(left: &ClientEnv, right: &ClientEnv, args: &[&str]) -> Duration {
    let started = Instant::now();
    let children: Vec<_> = [left, right]
        .iter()
        .map(|env| {
            env.command(env.distcc_link(), args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_success(&out, &format!("{args:?}"));
    }
    started.elapsed()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only
    // check that the set-up works, with one run per side.
    let benching = std::env::args().any(|a| a == "--bench");
    if !require_distcc("bench dual") {
        return;
    }
    let runs: usize = if benching {
        std::env::var("DUAL_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(21)
            .max(1)
    } else {
        1
    };
    let a = Distccd::at(ip("127.0.0.2"));
    let b = Distccd::at(ip("127.0.0.3"));
    let mut single = ClientEnv::dual(&[a.hostspec(), b.hostspec()]);
    single.set("DPORTAGE_REDUNDANCY", "1");
    let dual = ClientEnv::dual(&[a.hostspec(), b.hostspec()]);
    let mut only_a = ClientEnv::dual(&[a.hostspec()]);
    only_a.set("DPORTAGE_REDUNDANCY", "1");
    let mut only_b = ClientEnv::dual(&[b.hostspec()]);
    only_b.set("DPORTAGE_REDUNDANCY", "1");
    for env in [&single, &dual, &only_a, &only_b] {
        env.write("job.c", C_SOURCE);
        env.write("job.cpp", CPP_SOURCE);
    }

    println!(
        "dual dispatch: wall time per job, median of {runs} runs, 2 idle distccd 3.4 on loopback \
         ({} cores here, shared by the client and both hosts)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<11} {:>10} {:>10} {:>12} {:>12} {:>11}",
        "job", "single ms", "dual ms", "dual/single", "2×single ms", "dual/2×single"
    );
    for (name, args) in [
        ("C -O2", &["gcc", "-O2", "-c", "job.c", "-o", "job.o"][..]),
        (
            "C++ -O2 -g",
            &["g++", "-O2", "-g", "-c", "job.cpp", "-o", "job.o"][..],
        ),
    ] {
        // Warm the page cache and both daemons.
        for env in [&single, &dual] {
            time_one(env, args);
        }
        time_pair(&only_a, &only_b, args);
        let mut one = Vec::with_capacity(runs);
        let mut two = Vec::with_capacity(runs);
        let mut pair = Vec::with_capacity(runs);
        for i in 0..runs {
            // Rotate the order so drift in load is shared.
            for side in 0..3 {
                match (i + side) % 3 {
                    0 => one.push(time_one(&single, args)),
                    1 => two.push(time_one(&dual, args)),
                    _ => pair.push(time_pair(&only_a, &only_b, args)),
                }
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (one, two, pair) = (median(one), median(two), median(pair));
        println!(
            "{:<11} {:>10.1} {:>10.1} {:>12.3} {:>12.1} {:>11.3}",
            name,
            ms(one),
            ms(two),
            two.as_secs_f64() / one.as_secs_f64(),
            ms(pair),
            two.as_secs_f64() / pair.as_secs_f64()
        );
    }
    println!(
        "dual/single includes the second compile competing for this machine's cores (separate \
         idle hosts would not); dual/2×single is verification's own cost"
    );
    if !benching {
        println!("(smoke run; `cargo bench --bench dual` measures)");
    }
}
