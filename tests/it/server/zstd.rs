//! dportage's `,zstd` protocol against a real `dportage serve` over real
//! sockets: a zstd job round-trips (zstd bodies both ways, the same object as
//! over LZO), a zstd bomb is dropped like an LZO bomb, and the dportage
//! client speaks zstd to a host only when its entry says `,zstd`.

use std::time::Duration;

use crate::support::server::*;
use crate::support::*;
use dportage::protocol::{zstd, Limits, ProtocolVersion, Reply, Request};

const ZSTD_WIRE: u32 = 0x4450_5a31;

fn argv() -> Vec<Vec<u8>> {
    ["x86_64-linux-gnu-gcc", "-O2", "-c", "x.c", "-o", "x.o"]
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect()
}

fn body_after<'a>(bytes: &'a [u8], token: &[u8]) -> &'a [u8] {
    let at = bytes
        .windows(4)
        .position(|w| w == token)
        .expect("token present");
    &bytes[at + 12..]
}

#[test]
fn zstd_job_round_trips_with_the_same_object_as_lzo() {
    let s = DportageServer::start(&["--jobs", "1"]);
    let doti = preprocess(
        "int table[64];\nint sum(void) { int s = 0; for (int i = 0; i < 64; ++i) s += table[i]; return s; }\n",
        "x.c",
    );
    let mut objects = Vec::new();
    for version in [ProtocolVersion::Zstd, ProtocolVersion::V2] {
        let request = Request {
            version,
            argv: argv(),
            doti: doti.clone(),
        }
        .encode();
        if version == ProtocolVersion::Zstd {
            assert!(request.starts_with(format!("DIST{ZSTD_WIRE:08x}").as_bytes()));
            assert_eq!(&body_after(&request, b"DOTI")[..4], b"\x28\xb5\x2f\xfd");
        }
        let ex = exchange(s.addr(), &request, false, Duration::from_secs(60));
        let reply = Reply::decode_all(&ex.reply, version, &Limits::default())
            .unwrap_or_else(|e| panic!("{version:?} reply: {e}; log:\n{}", s.log()));
        assert_eq!(
            reply.status,
            0,
            "{}",
            String::from_utf8_lossy(&reply.stderr)
        );
        assert!(reply.object.starts_with(b"\x7fELF"));
        if version == ProtocolVersion::Zstd {
            assert_eq!(
                &body_after(&ex.reply, b"DOTO")[..4],
                b"\x28\xb5\x2f\xfd",
                "the object comes back as a zstd frame"
            );
        }
        objects.push(reply.object);
    }
    assert_eq!(
        objects[0], objects[1],
        "zstd and LZO jobs give the same object"
    );
}

#[test]
fn zstd_bomb_is_dropped_and_the_server_goes_on() {
    let s = DportageServer::start(&["--jobs", "1", "--max-source-size", "1M"]);
    let zeros = vec![0u8; 64 << 20];
    let bomb = zstd::compress(&zeros);
    assert!(bomb.len() < 64 * 1024, "a small bomb: {} bytes", bomb.len());
    let argv: Vec<&str> = vec!["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "x.o"];
    let mut req = request_head(ZSTD_WIRE, &argv);
    req.extend(body_packet("DOTI", &bomb));
    let ex = exchange(s.addr(), &req, false, Duration::from_secs(40));
    assert!(ex.reply.is_empty(), "server answered a zstd bomb");
    let mut req = request_head(ZSTD_WIRE, &argv);
    req.extend(body_packet("DOTI", b"not a zstd frame at all"));
    let ex = exchange(s.addr(), &req, false, Duration::from_secs(40));
    assert!(ex.reply.is_empty(), "server answered garbage");
    s.wait_counter("dcc_rej_bad_req", 2);
    assert_honest_job_succeeds(&s);
}

fn request_bytes(s: &DportageServer) -> u64 {
    s.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("dportage_request_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("dportage_request_bytes_total in /metrics")
}

/// The dportage client against our server: `,zstd` in the host entry makes
/// it speak zstd (the server's byte counters see fewer bytes than with
/// `,lzo`), and the object is correct either way.
#[test]
fn client_speaks_zstd_only_to_zstd_entries() {
    let s = DportageServer::start(&["--jobs", "1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let source: String = (0..300)
        .map(|i| format!("int f{i}(int x) {{ return x * {i} + {i}; }}\n"))
        .collect();
    std::fs::write(dir.path().join("x.c"), source).expect("write source");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let client = dportage_bin();
    let mut bytes_in = Vec::new();
    for option in [",lzo", ",zstd"] {
        let before = request_bytes(&s);
        let out = std::process::Command::new(&client)
            .args(["cc", "gcc", "-O2", "-c", "x.c", "-o", "x.o"])
            .current_dir(dir.path())
            .env(
                "DISTCC_HOSTS",
                format!("127.0.0.1:{}/1{option}", s.addr().port()),
            )
            .env("DISTCC_DIR", &state)
            .env("DISTCC_FALLBACK", "0")
            .env_remove("DISTCC_VERBOSE")
            .output()
            .expect("run the client");
        assert!(
            out.status.success(),
            "{option}: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
        bytes_in.push(request_bytes(&s) - before);
    }
    assert!(
        bytes_in[1] < bytes_in[0],
        "zstd request not smaller than LZO: {bytes_in:?}"
    );
}

/// A real distccd gets LZO from a `,lzo` entry (and compiles it); an entry
/// wrongly marked `,zstd` makes distccd refuse the unknown protocol, and the
/// build still succeeds by compiling locally.
#[test]
fn real_distccd_gets_lzo_and_a_wrong_zstd_entry_falls_back() {
    if !require_peer(
        "real_distccd_gets_lzo_and_a_wrong_zstd_entry_falls_back",
        &peer::DISTCCD,
    ) {
        return;
    }
    let d = real_distccd(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("x.c"), "int x(void) { return 7; }\n").expect("write");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let run = |option: &str, fallback: &str| {
        let _ = std::fs::remove_file(dir.path().join("x.o"));
        run_checked(
            std::process::Command::new(dportage_bin())
                .args(["cc", "gcc", "-c", "x.c", "-o", "x.o"])
                .current_dir(dir.path())
                .env("DISTCC_HOSTS", format!("127.0.0.1:{}/1{option}", d.port))
                .env("DISTCC_DIR", &state)
                .env("DISTCC_FALLBACK", fallback)
                .env("DISTCC_BACKOFF_PERIOD", "0")
                .env_remove("DISTCC_VERBOSE"),
            option,
        );
        assert!(dir.path().join("x.o").exists());
    };
    run(",lzo", "0");
    d.wait_for_compile_ok(1);
    run(",zstd", "1");
    // Positive evidence that distccd got the zstd request and refused it
    // (it logs the job summary after closing the connection); only then can
    // its count of compiled jobs say it did not compile it.
    let log = d.wait_until_logged("the refused zstd request", |log| {
        log.contains("can't handle requested protocol version") && log.contains(" REJ_BAD_REQ ")
    });
    assert_eq!(
        count_lines(&log, " COMPILE_OK "),
        1,
        "distccd must not have compiled a zstd job:\n{log}"
    );
}
