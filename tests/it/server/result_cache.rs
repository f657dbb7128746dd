//! Issue 16 on the host: a real `dportage serve` registered with a real
//! coordinator keeps the reply of every ticketed job it compiled with the
//! real gcc, and serves it back by `CGET` over a real socket; a job without
//! a ticket (an `--allow` address's) is not kept, an unknown hash gets a
//! closed connection, a peer admitted only by ticket must show one first,
//! `--cache-size 0` keeps nothing, and the real distcc 3.4 client's jobs are
//! served as before.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::client::ClientEnv;
use crate::support::serve::{DportageServer, ServeOptions};
use crate::support::*;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::api::{result_hash, result_hash_of};
use dportage::network::identity::IdentityId;
use dportage::network::ticket::{present, Ticket, NONCE_LEN};
use dportage::network::{unix_now, Identity};
use dportage::protocol::request::encode_ticket;
use dportage::protocol::{encode_fetch, Limits, ProtocolVersion, Reply, Request};
use dportage::verify::ResultDigest;

const LIMIT: Duration = Duration::from_secs(60);
/// The daemons allow only this address without a ticket; clients connect
/// from it (the default source of a loopback connection) or, to be
/// strangers, bind another.
const ALLOWED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// A stranger's address: admitted only with a ticket.
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 92);

/// A coordinator (in this process) and what it takes to make tickets.
struct Network {
    _coordinator: Coordinator,
    url: String,
    key: Identity,
    tmp: tempfile::TempDir,
    /// Runs the coordinator; dropped last.
    _rt: tokio::runtime::Runtime,
}

impl Network {
    fn start() -> Network {
        let tmp = tempfile::tempdir().unwrap();
        // Run as root, the daemons drop to `distccd`: their directories
        // must be reachable (the store itself is made theirs at start).
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let rt = crate::support::network::runtime();
        let mut cfg =
            CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("coord"));
        // The daemons here only need its tickets' key: no challenge jobs
        // (they would be ticketed jobs too, and fill the stores).
        cfg.challenges = false;
        let coordinator = rt.block_on(Coordinator::bind(cfg)).unwrap();
        let url = coordinator.url();
        let key = Identity::load(&tmp.path().join("coord").join("coordinator-key")).unwrap();
        Network {
            _coordinator: coordinator,
            url,
            key,
            tmp,
            _rt: rt,
        }
    }

    /// A daemon on `at` with its own identity directory (returned), stats
    /// on, allowing [`ALLOWED`], once it takes the coordinator's tickets.
    fn daemon(&self, at: Ipv4Addr, name: &str, extra: &[&str]) -> (DportageServer, PathBuf) {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut args = vec![
            "--allow",
            "127.0.0.1/32",
            "--jobs",
            "2",
            "--coordinator",
            &self.url,
        ];
        args.extend_from_slice(extra);
        let d = ServeOptions::new()
            .at(at)
            .args(&args)
            .env(&[("DPORTAGE_DIR", dir.to_str().unwrap())])
            .stats(true)
            .log_level("debug")
            .own_process_group()
            .start();
        d.wait_for_log("serving members of", LIMIT);
        (d, dir)
    }

    /// A fresh `TCKT` packet for a new member, for the daemon whose
    /// identity lives in `dir`.
    fn pass(&self, dir: &Path, nonce: u8) -> Vec<u8> {
        // The daemon made it at start: this loads it.
        let host: IdentityId = Identity::load_or_create(dir).unwrap().id();
        let member = Identity::generate();
        let ticket = Ticket::issue(&self.key, member.id(), host, unix_now(), 3600);
        encode_ticket(&present(&ticket, &member, unix_now(), [nonce; NONCE_LEN]))
    }
}

fn job_request(source: &str) -> Request {
    Request {
        version: ProtocolVersion::V1,
        argv: ["gcc", "-O2", "-c", "t.c", "-o", "t.o"]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect(),
        doti: source.as_bytes().to_vec(),
    }
}

/// A connection to `to` from `from` (port chosen by the kernel).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    // std has no bind-then-connect: a tokio socket on a tiny runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind(SocketAddr::from((from, 0)))?;
        s.connect(to).await
    })
    .map(|s| {
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s
    })
    .unwrap_or_else(|e| panic!("connect {from} → {to}: {e}"))
}

/// Send `bytes` from `from` to `to`; everything that comes back before the
/// server closes.
fn exchange(to: SocketAddr, from: Ipv4Addr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect_from(from, to);
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    // A refused client may find the connection reset while still writing.
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// What this machine's gcc makes of `source`: the object and its result hash.
/// (Sources here start with a line marker naming `t.c`, so the object names
/// the same file whether compiled here or in the daemon's job directory.)
fn local_object(source: &str) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.c"), source).unwrap();
    let out = std::process::Command::new("gcc")
        .args(["-O2", "-c", "t.c", "-o", "t.o"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_success(&out, "gcc");
    let object = std::fs::read(dir.path().join("t.o")).unwrap();
    let result = result_hash(&blake3::hash(&object).to_hex(), 0);
    (object, result)
}

fn raw(result: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(result, &mut out).unwrap();
    out
}

fn stored(dir: &Path, result: &str) -> PathBuf {
    dir.join("result-store").join(&result[..2]).join(result)
}

/// A counter of the stats page's `<dportagestats>` block.
fn cache_counter(d: &DportageServer, name: &str) -> u64 {
    let page = d
        .try_fetch_stats(b"GET / HTTP/1.0\r\n\r\n")
        .expect("stats page");
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{page}"))
}

fn wait_cache_counter(d: &DportageServer, name: &str, value: u64) {
    wait_until(LIMIT, format!("{name} to reach {value}"), || {
        let got = cache_counter(d, name);
        if got == value {
            Ok(())
        } else {
            Err(format!("{name} is {got}; log:\n{}", d.log()))
        }
    });
}

/// Jobs the daemon has logged as done (its log line comes after the reply
/// was kept, so a count reached means the store is settled).
fn wait_compiles(d: &DportageServer, n: usize) {
    wait_until(LIMIT, format!("{n} compiles in the log"), || {
        d.log().matches(" COMPILE_OK ").count() >= n
    });
}

#[test]
fn ticketed_jobs_are_kept_and_served_back_by_digest() {
    let test = "ticketed_jobs_are_kept_and_served_back_by_digest";
    let Some(real_distcc) = real_distcc(test) else {
        return;
    };
    let net = Network::start();
    let (d, dir) = net.daemon(
        Ipv4Addr::new(127, 0, 0, 91),
        "host",
        &["--heartbeat-interval", "1"],
    );

    // A ticketed job from the allowed address: its ticket is still checked,
    // and makes it a network job, kept.
    let source = "# 1 \"t.c\"\nint kept(int x) { return x * 41 + 1; }\n";
    let (object, result) = local_object(source);
    let mut bytes = net.pass(&dir, 1);
    bytes.extend(job_request(source).encode());
    let reply = exchange(d.addr, ALLOWED, &bytes);
    let reply = Reply::decode_all(&reply, ProtocolVersion::V1, &Limits::default()).unwrap();
    assert_eq!(reply.status, 0);
    assert_eq!(reply.object, object, "the client's reply is unchanged");
    wait_compiles(&d, 1);
    assert!(stored(&dir, &result).is_file(), "log:\n{}", d.log());
    wait_cache_counter(&d, "dportage_cache_claims_queued", 1);
    // The next heartbeat's agent claims it, signed; a coordinator without
    // the route yet answers 404 and the claim waits for a later one.
    wait_until(LIMIT, "the claim to be sent", || {
        d.log()
            .contains("the coordinator takes no cache claims yet")
            || cache_counter(&d, "dportage_cache_claims_sent") >= 1
    });

    // CGET of its result hash, with a ticket, from a stranger's address:
    // a protocol 2 reply with the same object.
    let mut fetch = net.pass(&dir, 2);
    fetch.extend(encode_fetch(&raw(&result)));
    let got = exchange(d.addr, STRANGER, &fetch);
    let fetched = Reply::decode_all(&got, ProtocolVersion::V2, &Limits::default()).unwrap();
    assert_eq!(fetched.object, object);
    assert_eq!(
        result_hash_of(&ResultDigest::of(
            fetched.status,
            &fetched.object,
            &fetched.stderr
        )),
        result
    );
    wait_cache_counter(&d, "dportage_cache_fetches", 1);
    assert_eq!(
        cache_counter(&d, "dportage_cache_fetch_bytes"),
        got.len() as u64
    );
    let before = d.counter("dcc_compile_ok");

    // From the allowed address no ticket is needed to fetch, as for a job.
    let got = exchange(d.addr, ALLOWED, &encode_fetch(&raw(&result)));
    assert_eq!(
        Reply::decode_all(&got, ProtocolVersion::V2, &Limits::default())
            .unwrap()
            .object,
        object
    );

    // An unknown hash: closed without a byte.
    let mut unknown = net.pass(&dir, 3);
    unknown.extend(encode_fetch(&[7; 32]));
    assert!(exchange(d.addr, STRANGER, &unknown).is_empty());
    wait_cache_counter(&d, "dportage_cache_misses", 1);

    // A stranger without a pass: refused like a job, not a byte.
    let got = exchange(d.addr, STRANGER, &encode_fetch(&raw(&result)));
    assert!(
        got.is_empty(),
        "served {} bytes without a ticket",
        got.len()
    );
    d.wait_for_log("denied: not in --allow and no ticket", LIMIT);
    assert_eq!(cache_counter(&d, "dportage_cache_fetches"), 2);
    assert_eq!(
        d.counter("dcc_compile_ok"),
        before,
        "a fetch compiles nothing"
    );

    // A job from the allowed address without a ticket is served, not kept.
    let lan = "# 1 \"t.c\"\nint lan(int x) { return x - 17; }\n";
    let (lan_object, lan_result) = local_object(lan);
    let reply = exchange(d.addr, ALLOWED, &job_request(lan).encode());
    let reply = Reply::decode_all(&reply, ProtocolVersion::V1, &Limits::default()).unwrap();
    assert_eq!(reply.object, lan_object);
    wait_compiles(&d, 2);
    assert!(!stored(&dir, &lan_result).exists(), "a LAN job was kept");
    assert_eq!(cache_counter(&d, "dportage_cache_claims_queued"), 1);

    // The real distcc 3.4 client, from the allowed address: served as ever.
    let client = ClientEnv::new(&format!("{},lzo", d.addr));
    client.write("t.c", source);
    client.reference(&["gcc", "-O2", "-c", "t.c", "-o", "local.o"]);
    let out = client
        .command(&real_distcc, &["gcc", "-O2", "-c", "t.c", "-o", "d.o"])
        .output()
        .unwrap();
    assert_success(&out, "distcc 3.4");
    assert_eq!(client.read("d.o"), client.read("local.o"));
    wait_compiles(&d, 3);
    assert!(
        d.metrics().contains("dportage_cache_fetches_total 2"),
        "{}",
        d.metrics()
    );
}

#[test]
fn cache_size_zero_keeps_nothing() {
    let net = Network::start();
    let (d, dir) = net.daemon(Ipv4Addr::new(127, 0, 0, 93), "off", &["--cache-size", "0"]);
    let source = "# 1 \"t.c\"\nint off(int x) { return x ^ 5; }\n";
    let (object, result) = local_object(source);
    let mut bytes = net.pass(&dir, 1);
    bytes.extend(job_request(source).encode());
    let reply = exchange(d.addr, STRANGER, &bytes);
    let reply = Reply::decode_all(&reply, ProtocolVersion::V1, &Limits::default()).unwrap();
    assert_eq!(reply.object, object);
    wait_compiles(&d, 1);
    assert!(!dir.join("result-store").exists());
    let mut fetch = net.pass(&dir, 2);
    fetch.extend(encode_fetch(&raw(&result)));
    assert!(exchange(d.addr, STRANGER, &fetch).is_empty());
    wait_cache_counter(&d, "dportage_cache_misses", 1);
    assert_eq!(cache_counter(&d, "dportage_cache_claims_queued"), 0);
}
