//! What the verified result cache (issue 16) saves a member: the demo
//! sample's C files (several distinct copies) built with `dportage make -j4`
//! over the five network daemons of `support::cache_net` (redundancy 2,
//! tickets, real gcc), in one run:
//!
//! * distcc 3.4's client over two `dportage serve` hosts open to loopback
//!   (the baseline: no verification, no cache);
//! * verified dispatch with the cache off (`DPORTAGE_CACHE=0`);
//! * member A's first build with the cache on (every lookup misses; the
//!   hosts claim what they compiled);
//! * member B's build of the same sources in another directory (hits of the
//!   network's cache: fetched from a holder by `CGET`);
//! * member B's rebuild after `make clean` (hits of its own cache).
//!
//! Bytes on the wire are what the hosts read and wrote on their job ports
//! (their `/metrics`), plus, for builds that look jobs up, the coordinator
//! lookups (request body and signed answer, measured on one lookup).
//!
//! `cargo bench --bench cache` (copies of the sample: `CACHE_BENCH_COPIES`,
//! default 3, i.e. 27 compiles a build).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use support::cache_net::*;
use support::serve::{DportageServer, ServeOptions};
use support::*;

const DISTCC_MASQUERADE: &str = "/usr/lib/distcc";

/// `copies` distinct copies of the sample in `work`, replacing its C files
/// (file names prefixed, a definition naming `salt` and the copy appended:
/// a comment would not do, the preprocessor drops it, so no two copies and
/// no two salts share a key); the `.c` names.
fn write_copies(work: &Path, copies: usize, salt: &str) -> Vec<String> {
    fs::create_dir_all(work).unwrap();
    for e in fs::read_dir(work).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".c") || name.ends_with(".o") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let mut sources = Vec::new();
    for entry in fs::read_dir(SAMPLE).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(entry.path()).unwrap();
        if !name.ends_with(".c") {
            fs::write(work.join(&name), text).unwrap();
            continue;
        }
        for copy in 0..copies {
            let copy_name = format!("c{copy}_{name}");
            fs::write(
                work.join(&copy_name),
                format!("{text}\nint bench_copy_{salt}_{copy} = {copy};\n"),
            )
            .unwrap();
            sources.push(copy_name);
        }
    }
    fs::write(work.join("Makefile"), MAKEFILE).unwrap();
    sources.sort();
    sources
}

/// Bytes the hosts read and wrote on their job ports, from their `/metrics`.
fn host_bytes(hosts: &[&DportageServer]) -> u64 {
    let metric = |page: &str, name: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    hosts
        .iter()
        .map(|h| {
            let page = h.metrics();
            metric(&page, "dportage_request_bytes_total ")
                + metric(&page, "dportage_reply_bytes_total ")
        })
        .sum()
}

struct Row {
    label: &'static str,
    secs: f64,
    bytes: u64,
    /// Jobs looked up at the coordinator.
    lookups: usize,
    hits: Option<usize>,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let copies: usize = if benching {
        std::env::var("CACHE_BENCH_COPIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
            .max(1)
    } else {
        1
    };
    let net = CacheNet::start_allowing("127.0.0.1");
    let network_hosts: Vec<&DportageServer> = net.daemons.iter().collect();
    let mut rows = Vec::new();

    // distcc 3.4 over two of our servers, open to loopback.
    let open: Vec<DportageServer> = (0..2u8)
        .map(|i| {
            ServeOptions::new()
                .at(Ipv4Addr::new(127, 0, 60 + i, 1))
                .args(&["--allow", "127.0.0.0/8", "--jobs", "2"])
                .stats(true)
                .start()
        })
        .collect();
    if Path::new(DISTCC_MASQUERADE).join("cc").exists() {
        let work = net.root.path().join("distcc-work");
        let sources = write_copies(&work, copies, "distcc");
        let state = net.root.path().join("distcc-state");
        fs::create_dir_all(&state).unwrap();
        let hosts: Vec<String> = open
            .iter()
            .map(|h| format!("{}/4,lzo", h.hostspec()))
            .collect();
        let before = host_bytes(&open.iter().collect::<Vec<_>>());
        let started = Instant::now();
        let status = Command::new("make")
            .args(["-s", "-j4"])
            .current_dir(&work)
            .env(
                "PATH",
                format!(
                    "{DISTCC_MASQUERADE}:{}",
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("DISTCC_HOSTS", hosts.join(" "))
            .env("DISTCC_DIR", &state)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "distcc's build failed");
        rows.push(Row {
            label: "distcc 3.4, 2 hosts, no verification",
            secs: started.elapsed().as_secs_f64(),
            bytes: host_bytes(&open.iter().collect::<Vec<_>>()) - before,
            lookups: 0,
            hits: None,
        });
        assert_eq!(sources.len(), 9 * copies);
    } else {
        println!("(no {DISTCC_MASQUERADE}/cc: the distcc 3.4 row is left out)");
    }

    let mut timed = |label: &'static str, member: &CacheMember, vars: &[&str], lookups: bool| {
        let before = host_bytes(&network_hosts);
        let log_before = member.verdicts().len();
        let started = Instant::now();
        let out = member.run(vars, &["make", "-s", "-j4"]);
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verdicts = member.verdicts();
        let hits = verdicts[log_before..]
            .iter()
            .filter(|v| *v == "cache_hit")
            .count();
        let jobs = verdicts.len() - log_before;
        assert_eq!(jobs, copies * 9, "{label}: one verdict per job");
        rows.push(Row {
            label,
            secs,
            bytes: host_bytes(&network_hosts) - before,
            lookups: if lookups { jobs } else { 0 },
            hits: Some(hits),
        });
    };

    let off = net.member("off");
    write_copies(&off.work, copies, "off");
    timed(
        "dportage, verified, cache off",
        &off,
        &["DPORTAGE_SPOTCHECK=0", "DPORTAGE_CACHE=0"],
        false,
    );
    let a = net.member("a");
    let sources = write_copies(&a.work, copies, "shared");
    timed(
        "dportage, verified, cache on, first build",
        &a,
        &["DPORTAGE_SPOTCHECK=0"],
        true,
    );
    // B's build needs A's entries: the hosts claim on their next heartbeat.
    for source in &sources {
        let (key, _, _) = a.key(source);
        wait_until(LIMIT, format!("an entry for {source}"), || {
            a.lookup(&net.rt, &key).is_some()
        });
    }
    let b = net.member("b");
    write_copies(&b.work, copies, "shared");
    timed(
        "dportage, network cache hits (member B)",
        &b,
        &["DPORTAGE_SPOTCHECK=0"],
        true,
    );
    let clean = Command::new("sh")
        .args(["-c", "rm -f *.o"])
        .current_dir(&b.work)
        .status()
        .unwrap();
    assert!(clean.success());
    timed(
        "dportage, local cache hits (B again)",
        &b,
        &["DPORTAGE_SPOTCHECK=0"],
        false,
    );

    let jobs = sources.len();
    let (first_key, _, _) = a.key(&sources[0]);
    let per_lookup = lookup_size(&net, &a, first_key);
    for r in &mut rows {
        r.bytes += r.lookups as u64 * per_lookup;
    }
    println!(
        "result cache: {jobs} compiles a build, make -j4; dportage over 5 network daemons \
         (2 jobs each, redundancy 2, tickets), distcc 3.4 over 2 open dportage servers"
    );
    let base = rows.first().map_or(1.0, |r| r.secs);
    let base_bytes = rows.first().map_or(1, |r| r.bytes.max(1));
    println!(
        "{:<46} {:>9} {:>10} {:>12} {:>9} {:>10}",
        "build", "time (s)", "vs first", "wire bytes", "vs first", "hits"
    );
    for r in &rows {
        println!(
            "{:<46} {:>9.2} {:>10.2} {:>12} {:>9.2} {:>10}",
            r.label,
            r.secs,
            r.secs / base,
            r.bytes,
            r.bytes as f64 / base_bytes as f64,
            r.hits.map_or("-".to_owned(), |h| format!("{h}/{jobs}")),
        );
    }
}

/// Bytes of one lookup: the request body and the signed answer (headers and
/// the request's signature are left out).
fn lookup_size(net: &CacheNet, member: &CacheMember, key: String) -> u64 {
    let c = support::network::client(&net.url(), &member.identity);
    let answer = net.rt.block_on(c.cache_lookup(&key)).unwrap();
    let request = serde_json::to_vec(&dportage::network::cache_api::CacheLookup { key }).unwrap();
    (request.len() + serde_json::to_vec(&answer).unwrap().len()) as u64
}
