//! Issue 13's tickets at the daemons, over real sockets: two `dportage serve`
//! daemons registered with a real coordinator, each allowing only an address
//! no client here uses (`--allow 127.0.0.9`). A member compiling through the
//! printed environment is served (its client presents the coordinator's
//! tickets), and so are the coordinator's own challenge jobs; a dportage
//! client without a ticket and the real distcc 3.4 client are refused and
//! compile locally (right objects); expired, forged, other-host, leaked and
//! replayed tickets are refused; the `--allow` address is served without one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::client::ClientEnv;
use crate::support::network::*;
use crate::support::serve::DportageServer;
use crate::support::*;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::identity::IdentityId;
use dportage::network::ticket::{present, Ticket, NONCE_LEN};
use dportage::network::{unix_now, Identity};
use dportage::protocol::request::encode_ticket;
use dportage::protocol::{ProtocolVersion, Request};
use dportage::trust::standing::StandingRules;

const SOURCE: &str = "int thrice(int x) { return 3 * x; }\n";
/// The only address the daemons allow: no client here connects from it
/// unless it binds to it.
const ALLOWED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
const LIMIT: Duration = Duration::from_secs(60);

/// A network daemon that allows only 127.0.0.9 (see [`ALLOWED`]).
fn network_daemon(at: Ipv4Addr, url: &str, dir: &Path) -> DportageServer {
    crate::support::network::network_daemon(at, url, dir, &ALLOWED.to_string(), &[])
}

/// Send `preamble` then a whole request for `gcc -c t.c` to `to`, from
/// `from` when given; what comes back before the server closes.
fn raw_job(to: SocketAddr, from: Option<Ipv4Addr>, preamble: &[u8]) -> Vec<u8> {
    let mut stream = match from {
        None => TcpStream::connect(to).unwrap(),
        Some(ip) => connect_from(ip, to),
    };
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let request = Request {
        version: ProtocolVersion::V1,
        argv: ["gcc", "-c", "t.c", "-o", "t.o"]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect(),
        doti: SOURCE.as_bytes().to_vec(),
    };
    let mut bytes = preamble.to_vec();
    bytes.extend(request.encode());
    // A refused client may find the connection reset while still writing.
    let _ = stream.write_all(&bytes);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

/// A blocking connection to `to` from `ip` (port chosen by the kernel).
fn connect_from(ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((ip, 0)))?;
            socket.connect(to).await
        })
        .unwrap()
        .into_std()
        .unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

#[test]
fn network_daemons_serve_ticket_holders_and_allowed_addresses_only() {
    let test = "network_daemons_serve_ticket_holders_and_allowed_addresses_only";
    let Some(real_distcc) = real_distcc(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rt = crate::support::network::runtime();
    // Hosts established at once (two probationary hosts are never paired);
    // challenges stay on: they reach the daemons with the coordinator's own
    // ticket, from 127.0.0.1, outside --allow.
    let mut cfg = CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("coord"));
    cfg.standing_rules = StandingRules::AT_ONCE;
    let coord: Coordinator = rt.block_on(Coordinator::bind(cfg)).unwrap();
    let url = coord.url();
    let coordinator_key =
        Identity::load(&tmp.path().join("coord").join("coordinator-key")).unwrap();

    let world = ClientEnv::new("");
    // The member shares the first daemon's DPORTAGE_DIR (one identity).
    let dirs = [world.dportage_dir(), tmp.path().join("owner-2")];
    let owners: Vec<Arc<Identity>> = dirs
        .iter()
        .map(|d| Arc::new(Identity::load_or_create(d).unwrap()))
        .collect();
    let daemons = [
        network_daemon(Ipv4Addr::new(127, 0, 0, 73), &url, &dirs[0]),
        network_daemon(Ipv4Addr::new(127, 0, 0, 74), &url, &dirs[1]),
    ];
    for d in &daemons {
        d.wait_for_log("serving members of", LIMIT);
    }
    wait_serving(&rt, &url, &owners);

    // The member's environment: its client presents tickets and is served.
    let out = run_dportage(&dirs[0], &["--coordinator", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars = eval_in_sh(
        &String::from_utf8_lossy(&out.stdout),
        &[
            "DISTCC_HOSTS",
            "DPORTAGE_REDUNDANCY",
            "DPORTAGE_COORDINATOR",
            "DPORTAGE_HOST_LIST",
        ],
    );
    let mut member = world;
    member.take_environment(&vars);
    assert!(!member.hosts.contains("zstd"), "{}", member.hosts);
    member.set("DPORTAGE_SPOTCHECK", "0");
    member.set("DISTCC_BACKOFF_PERIOD", "0");
    member.write("t.c", SOURCE);
    member.reference(&["gcc", "-O2", "-c", "t.c", "-o", "local.o"]);
    let before: Vec<usize> = daemons.iter().map(compiles_ok).collect();
    let out = member.distcc(&["gcc", "-O2", "-c", "t.c", "-o", "remote.o"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(member.read("remote.o"), member.read("local.o"));
    for (d, was) in daemons.iter().zip(&before) {
        wait_until(LIMIT, "each daemon to compile the member's job", || {
            compiles_ok(d) > *was
        });
    }

    // Clients without a ticket, outside --allow: refused, and they compile
    // locally. Ours with a plain host entry …
    let d0 = &daemons[0];
    let entry = format!("{},lzo", d0.addr);
    // (Default back-off: with none, distcc 3.4 retries a refusing host about
    // a thousand times; spec §0.20.)
    let stranger = ClientEnv::new(&entry);
    stranger.write("t.c", SOURCE);
    stranger.reference(&["gcc", "-O2", "-c", "t.c", "-o", "local.o"]);
    let before = compiles_ok(d0);
    let out = stranger.distcc(&["gcc", "-O2", "-c", "t.c", "-o", "s.o"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stranger.read("s.o"), stranger.read("local.o"));
    // … and the real distcc 3.4 (with its own state: ours backed the host off).
    let real_state = stranger.root.path().join("distcc-dir-real");
    std::fs::create_dir(&real_state).unwrap();
    let out = stranger
        .command(&real_distcc, &["gcc", "-O2", "-c", "t.c", "-o", "d.o"])
        .env("DISTCC_DIR", &real_state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stranger.read("d.o"), stranger.read("local.o"));
    wait_until(LIMIT, "two refusals in the daemon's log", || {
        d0.log()
            .matches("denied: not in --allow and no ticket")
            .count()
            >= 4 // each refusal: a warning and the job line
    });
    assert_eq!(compiles_ok(d0), before, "a stranger's job was compiled");

    // Hand-made passes at daemon 0 (its identity is the member's).
    let host0: IdentityId = owners[0].id();
    let host1: IdentityId = owners[1].id();
    let me = &owners[0];
    let now = unix_now();
    let pass = |ticket: &Ticket, by: &Identity, nonce: u8| {
        encode_ticket(&present(ticket, by, unix_now(), [nonce; NONCE_LEN]))
    };
    let good = Ticket::issue(&coordinator_key, me.id(), host0, now, 3600);
    let refused: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "expired",
            pass(
                &Ticket::issue_between(&coordinator_key, me.id(), host0, now - 7200, now - 3600),
                me,
                1,
            ),
            "expired",
        ),
        (
            "forged (signed by another key)",
            pass(
                &Ticket::issue(&Identity::generate(), me.id(), host0, now, 3600),
                me,
                2,
            ),
            "not by this daemon's coordinator",
        ),
        (
            "for the other host",
            pass(
                &Ticket::issue(&coordinator_key, me.id(), host1, now, 3600),
                me,
                3,
            ),
            "not for this one",
        ),
        (
            "leaked (proved by a key that is not the member's)",
            pass(&good, &Identity::generate(), 4),
            "proof of the ticket's member key",
        ),
        (
            "truncated",
            encode_ticket(&pass(&good, me, 5)[12..100]),
            "bytes, not",
        ),
    ];
    for (name, preamble, words) in refused {
        let reply = raw_job(d0.addr, None, &preamble);
        assert!(reply.is_empty(), "{name}: got {} bytes", reply.len());
        d0.wait_for_log(words, LIMIT);
    }
    // A good pass is served; the same pass again is a replay.
    let once = pass(&good, me, 6);
    let reply = raw_job(d0.addr, None, &once);
    assert!(reply.starts_with(b"DONE00000001"), "{reply:?}");
    let reply = raw_job(d0.addr, None, &once);
    assert!(reply.is_empty(), "a replay was served");
    d0.wait_for_log("used before", LIMIT);

    // The --allow address needs no ticket.
    let reply = raw_job(d0.addr, Some(ALLOWED), b"");
    assert!(reply.starts_with(b"DONE00000001"), "{reply:?}");
    drop(coord);
}
