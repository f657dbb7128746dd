//! Micro-benchmarks of the pure hot paths a job crosses: request/reply encode
//! and decode (protocols 1 and 2), LZO on a real preprocessed C file, blake3
//! over results, and the argument scanner and server policy.
//!
//! The input is `gcc -E` of the demo calculator (src/demo/sample/) made at
//! bench start, once as the one translation unit and once with a typical set
//! of system headers (closer to real-world `.i` sizes).
//!
//! Run: `cargo bench --bench micro` (about a minute), or quickly:
//! `cargo bench --bench micro -- --quick`; one group: `cargo bench --bench micro -- lzo`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dportage::args::{check_server_command, scan, server_argv, ScanOutcome};
use dportage::protocol::lzo;
use dportage::protocol::{
    encode_doti, encode_request_head, Limits, ProtocolVersion, Reply, ReplyDecoder, Request,
    RequestDecoder, RequestEvent,
};
use dportage::verify::ResultDigest;

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V1, ProtocolVersion::V2];

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/demo/sample")
}

/// `gcc -E` of `source` (C text) with the sample directory on the include path.
fn preprocess(source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("creating a temp dir for the bench input");
    let path = dir.path().join("tu.c");
    std::fs::write(&path, source).expect("writing the bench translation unit");
    let out = Command::new("gcc")
        .arg("-E")
        .arg("-I")
        .arg(sample_dir())
        .arg(&path)
        .output()
        .expect("running gcc -E (install gcc to run these benchmarks)");
    assert!(
        out.status.success(),
        "gcc -E failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Two realistic `.i` files: the sample TU alone, and with common headers.
fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let funcs = std::fs::read_to_string(sample_dir().join("funcs.c")).expect("reading funcs.c");
    let headers = [
        "stdio.h",
        "stdlib.h",
        "string.h",
        "math.h",
        "pthread.h",
        "sys/socket.h",
        "netinet/in.h",
        "unistd.h",
        "signal.h",
        "time.h",
    ]
    .iter()
    .map(|h| format!("#include <{h}>\n"))
    .collect::<String>();
    vec![
        ("funcs.i", preprocess(&funcs)),
        ("funcs+headers.i", preprocess(&(headers + &funcs))),
    ]
}

/// The argv of a typical distributed compile, as the client sends it.
fn typical_argv() -> Vec<String> {
    [
        "gcc",
        "-O2",
        "-g",
        "-Wall",
        "-Wextra",
        "-std=gnu11",
        "-fPIC",
        "-DNDEBUG",
        "-D_GNU_SOURCE",
        "-DVERSION=\"1.2.3\"",
        "-Iinclude",
        "-I../common/include",
        "-isystem",
        "/usr/local/include",
        "-MD",
        "-MF",
        "build/funcs.d",
        "-c",
        "src/funcs.c",
        "-o",
        "build/funcs.o",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn wire_argv(argv: &[String]) -> Vec<Vec<u8>> {
    argv.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn decode_request(bytes: &[u8], read_size: usize) -> Vec<u8> {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(read_size);
    for piece in bytes.chunks(read_size) {
        buf.extend_from_slice(piece);
        while let Some(event) = decoder.decode(&mut buf).expect("valid request") {
            if let RequestEvent::Doti(doti) = event {
                return doti;
            }
        }
    }
    panic!("request incomplete");
}

fn decode_reply(bytes: &[u8], version: ProtocolVersion, read_size: usize) -> Reply {
    let mut decoder = ReplyDecoder::new(version, Limits::default());
    let mut buf = BytesMut::with_capacity(read_size);
    for piece in bytes.chunks(read_size) {
        buf.extend_from_slice(piece);
        if let Some(reply) = decoder.decode(&mut buf).expect("valid reply") {
            return reply;
        }
    }
    panic!("reply incomplete");
}

fn bench_request(c: &mut Criterion, inputs: &[(&str, Vec<u8>)]) {
    let argv = wire_argv(&typical_argv());
    let mut group = c.benchmark_group("request");
    for (name, source) in inputs {
        group.throughput(Throughput::Bytes(source.len() as u64));
        for version in VERSIONS {
            let id = |what: &str| BenchmarkId::new(what, format!("v{} {name}", version.number()));
            group.bench_function(id("encode"), |b| {
                b.iter(|| {
                    let mut out = encode_request_head(version, black_box(&argv));
                    out.extend(encode_doti(version, black_box(source)));
                    out
                })
            });
            let wire = Request {
                version,
                argv: argv.clone(),
                doti: source.clone(),
            }
            .encode();
            // 64 KiB reads, as the server's read loop does on a fast link.
            group.bench_function(id("decode"), |b| {
                b.iter(|| decode_request(black_box(&wire), 64 * 1024))
            });
        }
    }
    group.finish();
}

fn bench_reply(c: &mut Criterion, object: &[u8]) {
    let mut group = c.benchmark_group("reply");
    group.throughput(Throughput::Bytes(object.len() as u64));
    for version in VERSIONS {
        let reply = Reply {
            version,
            status: 0,
            stderr: b"funcs.c:3:5: warning: unused variable 'x' [-Wunused-variable]\n".to_vec(),
            stdout: Vec::new(),
            object: object.to_vec(),
        };
        let id = |what: &str| BenchmarkId::new(what, format!("v{} funcs.o", version.number()));
        group.bench_function(id("encode"), |b| b.iter(|| black_box(&reply).encode()));
        let wire = reply.encode();
        group.bench_function(id("decode"), |b| {
            b.iter(|| decode_reply(black_box(&wire), version, 64 * 1024))
        });
    }
    group.finish();
}

fn bench_lzo(c: &mut Criterion, inputs: &[(&str, Vec<u8>)]) {
    let mut group = c.benchmark_group("lzo");
    for (name, source) in inputs {
        group.throughput(Throughput::Bytes(source.len() as u64));
        group.bench_with_input(BenchmarkId::new("compress", name), source, |b, s| {
            b.iter(|| lzo::compress(black_box(s)))
        });
        let stream = lzo::compress(source);
        group.bench_with_input(BenchmarkId::new("decompress", name), &stream, |b, s| {
            b.iter(|| lzo::decompress(black_box(s), usize::MAX).expect("own stream"))
        });
        // The `lzo1x` crate's decoder (given the exact size) as a yardstick.
        group.bench_with_input(
            BenchmarkId::new("decompress_lzo1x_crate", name),
            &stream,
            |b, s| {
                let mut out = vec![0; source.len()];
                b.iter(|| lzo1x::decompress(black_box(s), &mut out).expect("own stream"))
            },
        );
    }
    group.finish();
}

fn bench_blake3(c: &mut Criterion, source: &[u8], object: &[u8]) {
    let mut group = c.benchmark_group("blake3");
    group.throughput(Throughput::Bytes(source.len() as u64));
    group.bench_function("hash funcs+headers.i", |b| {
        b.iter(|| blake3::hash(black_box(source)))
    });
    group.throughput(Throughput::Bytes(object.len() as u64));
    let stderr = b"funcs.c:3:5: warning: unused variable 'x' [-Wunused-variable]\n";
    group.bench_function("result_digest funcs.o", |b| {
        b.iter(|| ResultDigest::of(0, black_box(object), black_box(stderr)))
    });
    group.finish();
}

fn bench_args(c: &mut Criterion) {
    let argv = typical_argv();
    let ScanOutcome::Distribute(job) = scan(&argv).expect("scannable") else {
        panic!("the typical command line must distribute");
    };
    let sent = wire_argv(&server_argv(&job));
    let mut group = c.benchmark_group("args");
    group.bench_function("scan typical", |b| b.iter(|| scan(black_box(&argv))));
    let link: Vec<String> = ["gcc", "-o", "calc", "main.o", "funcs.o", "-lm"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    group.bench_function("scan link (local)", |b| b.iter(|| scan(black_box(&link))));
    group.bench_function("server_argv typical", |b| {
        b.iter(|| server_argv(black_box(&job)))
    });
    let allowed = |name: &str| name == "gcc" || name == "cc";
    group.bench_function("check_server_command typical", |b| {
        b.iter(|| check_server_command(black_box(&sent), &allowed, "job", "job.o"))
    });
    group.finish();
}

/// A real object: the sample TU compiled with `gcc -c`.
fn object_of(source: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("creating a temp dir for the bench object");
    let (input, output) = (dir.path().join("tu.i"), dir.path().join("tu.o"));
    std::fs::write(&input, source).expect("writing the bench .i");
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-c"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .status()
        .expect("running gcc -c");
    assert!(status.success(), "gcc -c of the bench input failed");
    std::fs::read(&output).expect("reading the bench object")
}

fn micro(c: &mut Criterion) {
    let inputs = inputs();
    let object = object_of(&inputs[0].1);
    bench_request(c, &inputs);
    bench_reply(c, &object);
    bench_lzo(c, &inputs);
    bench_blake3(c, &inputs[1].1, &object);
    bench_args(c);
}

criterion_group! {
    name = benches;
    // Short by default: these are steady pure functions on a shared machine.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = micro
}
criterion_main!(benches);
