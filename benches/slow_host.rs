//! What one slow host costs a build (issue 15): the demo sample's C files,
//! several copies, compiled `-j4` with verified dispatch (redundancy 2) over
//! three `dportage serve` hosts on loopback, once as they are and once with
//! the first host of the list behind a proxy that makes each of its jobs
//! about 3 s slower (`dportage __wanproxy`, 750 ms each way). The delayed
//! build runs twice in one state directory: first with nothing known of the
//! hosts, then with what the first build learned (`speed.json`); and once
//! with nothing recorded at all, as every build ran before host speed was
//! learned. Hedges are counted from the clients' debug lines. For comparison, distcc 3.4 builds the same
//! sources over the same hosts (it has no hedging: its figure is what a slow
//! host costs it).
//!
//! `cargo bench --bench slow_host` (copies of the sample: `SLOW_HOST_COPIES`,
//! default 3, i.e. 27 compiles a build).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::client::ClientEnv;
use support::dual::*;
use support::*;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tools/demo/sample");
const PARALLEL: usize = 4;
/// Each way: a job pays a connection's round trip, the request and the reply.
const ONE_WAY: Duration = Duration::from_millis(750);
const DISTCC: &str = "/usr/bin/distcc";
/// Far beyond any compile here, slow host included.
const COMPILE_LIMIT: Duration = Duration::from_secs(120);

/// Write `copies` copies of the sample under the work directory; the `.c`
/// files to compile, relative to it.
fn write_sources(env: &ClientEnv, copies: usize) -> Vec<String> {
    let mut sources = Vec::new();
    for copy in 0..copies {
        let dir = env.work().join(format!("copy{copy}"));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(SAMPLE).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut text = std::fs::read_to_string(entry.path()).unwrap();
            // Distinct inputs per copy, so no layer can reuse a result.
            text.push_str(&format!("\n/* copy {copy} */\n"));
            std::fs::write(dir.join(&name), text).unwrap();
            if name.ends_with(".c") {
                sources.push(format!("copy{copy}/{name}"));
            }
        }
    }
    sources.sort();
    sources
}

/// Compile every source, `PARALLEL` at a time, with `program gcc -O2 -c`;
/// the wall time and the hedges the clients logged.
fn build(env: &ClientEnv, program: &Path, sources: &[String]) -> (Duration, usize) {
    for s in sources {
        let _ = std::fs::remove_file(env.work().join(s.replace(".c", ".o")));
    }
    let next = AtomicUsize::new(0);
    let hedges = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(source) = sources.get(i) else {
                    break;
                };
                let object = source.replace(".c", ".o");
                let mut command =
                    env.command(program, &["gcc", "-O2", "-c", source, "-o", &object]);
                let out = run_bounded(&mut command, env, i);
                assert_success(&out, &format!("compiling {source}"));
                assert!(
                    mismatch_lines(&out).is_empty(),
                    "honest hosts disagreed: {}",
                    stderr_text(&out)
                );
                hedges.fetch_add(hedge_lines(&out).len(), Ordering::Relaxed);
            });
        }
    });
    (started.elapsed(), hedges.into_inner())
}

/// Run `command`, killing it (and failing the bench) after [`COMPILE_LIMIT`]:
/// a hung compile must not hang the run. Its stderr goes through a file.
fn run_bounded(command: &mut Command, env: &ClientEnv, n: usize) -> Output {
    let log = env.tmpdir().join(format!("bench-stderr-{n}"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + COMPILE_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a compile took over {COMPILE_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    Output {
        status,
        stdout: Vec::new(),
        stderr,
    }
}

/// Verified dispatch over `hosts`, logging hedges.
fn dual_env(hosts: &[String]) -> ClientEnv {
    let mut env = ClientEnv::dual(hosts);
    env.set("DISTCC_VERBOSE", "1");
    env
}

/// Four slots per host on the client's side, as a user lists a 4-core host.
fn listed(spec: String) -> String {
    format!("{spec}/4")
}

struct Row {
    label: String,
    secs: f64,
    hedges: Option<usize>,
    base: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then
    // only check that the set-up works, on one copy.
    let benching = std::env::args().any(|a| a == "--bench");
    if !require_masquerade_dir("bench slow_host") {
        return;
    }
    let copies: usize = if benching {
        std::env::var("SLOW_HOST_COPIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
            .max(1)
    } else {
        1
    };
    let hosts: Vec<DportageServer> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|a| DportageServer::at(ip(a)))
        .collect();
    let slow = SlowProxy::start(ip("127.0.0.5"), hosts[0].addr, ONE_WAY);
    let plain: Vec<String> = hosts.iter().map(|h| listed(h.hostspec())).collect();
    let delayed: Vec<String> = std::iter::once(listed(slow.hostspec()))
        .chain(hosts[1..].iter().map(|h| listed(h.hostspec())))
        .collect();

    let mut rows = Vec::new();
    let env = dual_env(&plain);
    let sources = write_sources(&env, copies);
    let jobs = sources.len();
    let (time, hedges) = build(&env, &env.distcc_link(), &sources);
    let base = time.as_secs_f64();
    rows.push(Row {
        label: "dportage, redundancy 2, no delay".into(),
        secs: base,
        hedges: Some(hedges),
        base,
    });
    // What every build cost before host speed was learned: a directory
    // where `speed.json` would be, so no job can record anything.
    let env = dual_env(&delayed);
    std::fs::create_dir(env.dportage_dir().join("speed.json")).unwrap();
    let sources = write_sources(&env, copies);
    let (time, hedges) = build(&env, &env.distcc_link(), &sources);
    rows.push(Row {
        label: "dportage, redundancy 2, one host +3 s, nothing remembered".into(),
        secs: time.as_secs_f64(),
        hedges: Some(hedges),
        base,
    });
    let env = dual_env(&delayed);
    let sources = write_sources(&env, copies);
    for label in ["first build", "next build"] {
        let (time, hedges) = build(&env, &env.distcc_link(), &sources);
        rows.push(Row {
            label: format!("dportage, redundancy 2, one host +3 s, {label}"),
            secs: time.as_secs_f64(),
            hedges: Some(hedges),
            base,
        });
    }
    if Path::new(DISTCC).exists() {
        let env = ClientEnv::new(&plain.join(" "));
        let sources = write_sources(&env, copies);
        let distcc_base = build(&env, Path::new(DISTCC), &sources).0.as_secs_f64();
        rows.push(Row {
            label: "distcc 3.4, no delay".into(),
            secs: distcc_base,
            hedges: None,
            base: distcc_base,
        });
        let env = ClientEnv::new(&delayed.join(" "));
        let sources = write_sources(&env, copies);
        rows.push(Row {
            label: "distcc 3.4, one host +3 s".into(),
            secs: build(&env, Path::new(DISTCC), &sources).0.as_secs_f64(),
            hedges: None,
            base: distcc_base,
        });
    } else {
        println!("(no {DISTCC}: distcc 3.4 rows left out)");
    }

    println!(
        "slow host: {jobs} compiles, -j{PARALLEL}, 3 hosts (dportage serve, 2 jobs each, listed /4); \
         the delayed host is listed first, +{:.1} s a job",
        ONE_WAY.as_secs_f64() * 4.0
    );
    println!(
        "{:<60} {:>9} {:>7} {:>12}",
        "build", "time (s)", "hedges", "vs no delay"
    );
    for r in &rows {
        println!(
            "{:<60} {:>9.2} {:>7} {:>12.2}",
            r.label,
            r.secs,
            r.hedges.map_or("-".to_owned(), |h| h.to_string()),
            r.secs / r.base
        );
    }
}
