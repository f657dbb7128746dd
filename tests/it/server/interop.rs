//! The real distcc 3.4 client against `dportage serve`: objects identical to
//! local compiles, diagnostics delivered, failures and refusals handled the
//! way the real client expects. Remote execution is proven with the server's
//! own counters.

use std::path::Path;

use crate::support::server::*;
use crate::support::*;

const HELLO_C: &str = "#include <stdio.h>\n\
static int twice(int x) { return 2 * x; }\n\
int main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n";

const HELLO_CPP: &str = "#include <string>\n#include <vector>\n\
template <typename T> T sum(const std::vector<T>& v) { T s{}; for (auto& x : v) s += x; return s; }\n\
std::string greet(const std::string& who) { return \"hello, \" + who; }\n\
int total() { return sum(std::vector<int>{1, 2, 3}); }\n";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write source");
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn hosts(server: &DportageServer, lzo: bool) -> String {
    if lzo {
        format!("127.0.0.1:{},lzo", server.port)
    } else {
        format!("127.0.0.1:{}", server.port)
    }
}

/// What a remote object is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reference {
    /// A local compile of the source file.
    Source,
    /// A local compile of the locally preprocessed file, i.e. exactly what the
    /// server got. Needed for g++ with `-g`: there even the real distccd's
    /// objects differ from a compile of the source (debug line/column data),
    /// and equal a compile of the `.ii`.
    Preprocessed,
}

/// Compile `source` remotely through the real client and locally with the
/// same compiler and flags; both objects must be byte-identical, and the
/// server must have counted exactly one more successful compile.
#[allow(clippy::too_many_arguments)]
fn assert_remote_matches_local(
    server: &DportageServer,
    lzo: bool,
    compiler: &str,
    name: &str,
    source: &str,
    flags: &[&str],
    reference: Reference,
    expected_ok: u64,
) {
    let work = shared_tempdir();
    let dir = work.path();
    write(dir, name, source);
    let out_ext = if flags.contains(&"-S") { "s" } else { "o" };
    let remote_out = format!("remote.{out_ext}");
    let local_out = format!("local.{out_ext}");
    let mut args = vec![compiler];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[name, "-o", &remote_out]);
    let run = run_distcc(
        dir,
        &hosts(server, lzo),
        &args,
        &[("TMPDIR", dir.to_str().unwrap())],
    );
    assert!(
        run.status.success(),
        "distcc {args:?} failed: {}\nserver log:\n{}",
        run.stderr,
        server.log()
    );
    server.wait_counter("dcc_compile_ok", expected_ok);
    let local_input = match reference {
        Reference::Source => name.to_string(),
        Reference::Preprocessed => {
            let ext = if compiler.contains("++") { "ii" } else { "i" };
            let pre = format!("pre.{ext}");
            let mut pre_args: Vec<&str> = flags
                .iter()
                .copied()
                .filter(|f| *f != "-c" && *f != "-S")
                .collect();
            pre_args.extend_from_slice(&["-E", name, "-o", &pre]);
            let (status, stderr) = run_local(dir, compiler, &pre_args);
            assert!(status.success(), "local preprocessing failed: {stderr}");
            pre
        }
    };
    let mut local_args: Vec<&str> = flags.to_vec();
    local_args.extend_from_slice(&[&local_input, "-o", &local_out]);
    let (status, stderr) = run_local(dir, compiler, &local_args);
    assert!(status.success(), "local {compiler} failed: {stderr}");
    assert!(
        read(dir, &remote_out) == read(dir, &local_out),
        "{compiler} {flags:?} (lzo: {lzo}): remote and local ({reference:?}) outputs differ"
    );
}

#[test]
fn c_objects_match_local_compiles() {
    if !have_distcc() {
        return;
    }
    let s = DportageServer::start(&[]);
    let mut ok = 0;
    for lzo in [false, true] {
        for flags in [&["-c"][..], &["-c", "-O2"], &["-c", "-g"], &["-S", "-O1"]] {
            ok += 1;
            assert_remote_matches_local(
                &s,
                lzo,
                "gcc",
                "hello.c",
                HELLO_C,
                flags,
                Reference::Source,
                ok,
            );
        }
    }
    assert_eq!(s.counter("dcc_compile_error"), 0);
    assert_eq!(s.counter("dcc_rej_bad_req"), 0);
}

#[test]
fn cpp_objects_match_local_compiles() {
    if !have_distcc() {
        return;
    }
    let s = DportageServer::start(&[]);
    let mut ok = 0;
    for lzo in [false, true] {
        for (flags, reference) in [
            (&["-c"][..], Reference::Source),
            (&["-c", "-O2"], Reference::Source),
            (&["-c", "-g"], Reference::Preprocessed),
            (&["-c", "-g", "-O2"], Reference::Preprocessed),
        ] {
            ok += 1;
            assert_remote_matches_local(
                &s,
                lzo,
                "g++",
                "hello.cpp",
                HELLO_CPP,
                flags,
                reference,
                ok,
            );
        }
    }
}

#[test]
fn warnings_come_back_on_stderr() {
    if !have_distcc() {
        return;
    }
    let s = DportageServer::start(&[]);
    let mut ok = 0;
    for lzo in [false, true] {
        let work = shared_tempdir();
        write(
            work.path(),
            "w.c",
            "int f(void) { int unused_thing; return 1; }\n",
        );
        let run = run_distcc(
            work.path(),
            &hosts(&s, lzo),
            &["gcc", "-Wall", "-c", "w.c", "-o", "w.o"],
            &[("TMPDIR", work.path().to_str().unwrap())],
        );
        assert!(run.status.success(), "{}", run.stderr);
        ok += 1;
        s.wait_counter("dcc_compile_ok", ok);
        assert_eq!(
            run.stderr
                // ASCII quotes: every compiler runs with LC_ALL=C.
                .matches("warning: unused variable 'unused_thing'")
                .count(),
            1,
            "stderr: {}",
            run.stderr
        );
        assert!(work.path().join("w.o").exists());
    }
}

#[test]
fn compile_error_is_shown_once_with_exit_status_1() {
    if !have_distcc() {
        return;
    }
    let s = DportageServer::start(&[]);
    for (round, lzo) in [false, true].into_iter().enumerate() {
        let work = shared_tempdir();
        write(work.path(), "bad.c", "int broken(void) { return 42 }\n");
        let run = run_distcc(
            work.path(),
            &hosts(&s, lzo),
            &["gcc", "-c", "bad.c", "-o", "bad.o"],
            &[("TMPDIR", work.path().to_str().unwrap())],
        );
        assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
        s.wait_counter("dcc_compile_error", round as u64 + 1);
        // The real client retries locally and shows only the local diagnostics.
        assert_eq!(
            run.stderr
                .matches("error: expected ‘;’ before ‘}’ token")
                .count(),
            1,
            "stderr: {}",
            run.stderr
        );
        assert!(!work.path().join("bad.o").exists());
    }
    assert_eq!(s.counter("dcc_compile_ok"), 0);
}

#[test]
fn big_source_with_many_warnings() {
    if !have_distcc() {
        return;
    }
    const FUNCTIONS: usize = 8000;
    let mut source = String::new();
    for i in 0..FUNCTIONS {
        source.push_str(&format!(
            "int function_with_a_rather_long_name_number_{i:06}(int parameter_{i:06}) \
             {{ int unused_variable_number_{i:06}; return parameter_{i:06} * {i}; }}\n"
        ));
    }
    assert!(source.len() > 1 << 20);
    let s = DportageServer::start(&[]);
    for (round, lzo) in [true, false].into_iter().enumerate() {
        let work = shared_tempdir();
        write(work.path(), "big.c", &source);
        let run = run_distcc(
            work.path(),
            &hosts(&s, lzo),
            &["gcc", "-Wall", "-c", "big.c", "-o", "remote.o"],
            &[("TMPDIR", work.path().to_str().unwrap())],
        );
        assert!(
            run.status.success(),
            "distcc failed: {}",
            &run.stderr[..run.stderr.len().min(2000)]
        );
        s.wait_counter("dcc_compile_ok", round as u64 + 1);
        assert!(
            run.stderr.len() > 500 * 1024,
            "only {} bytes of warnings",
            run.stderr.len()
        );
        assert_eq!(
            run.stderr.matches("warning: unused variable").count(),
            FUNCTIONS
        );
        let (status, _) = run_local(
            work.path(),
            "gcc",
            &["-Wall", "-c", "big.c", "-o", "local.o"],
        );
        assert!(status.success());
        assert!(read(work.path(), "remote.o") == read(work.path(), "local.o"));
    }
}

#[test]
fn refused_compiler_makes_the_real_client_compile_locally() {
    if !have_distcc() {
        return;
    }
    let empty = tempfile::tempdir().expect("empty masquerade dir");
    let s = DportageServer::start(&["--masquerade-dir", empty.path().to_str().unwrap()]);
    let work = shared_tempdir();
    write(work.path(), "hello.c", HELLO_C);
    let run = run_distcc(
        work.path(),
        &hosts(&s, false),
        &["gcc", "-c", "hello.c", "-o", "hello.o"],
        &[("TMPDIR", work.path().to_str().unwrap())],
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        work.path().join("hello.o").exists(),
        "no local fallback object"
    );
    s.wait_counter("dcc_other", 1);
    assert_eq!(s.counter("dcc_compile_ok"), 0);
    s.wait_for_log("refused", std::time::Duration::from_secs(10));
    let (_, _) = run_local(work.path(), "gcc", &["-c", "hello.c", "-o", "local.o"]);
    assert!(read(work.path(), "hello.o") == read(work.path(), "local.o"));
}

#[test]
fn denied_client_compiles_locally() {
    if !have_distcc() {
        return;
    }
    // The stats port applies the same access list, so no --stats here.
    let s = DportageServer::start_with(&["--allow", "10.0.0.0/8"], false, &[]);
    let work = shared_tempdir();
    write(work.path(), "hello.c", HELLO_C);
    let run = run_distcc(
        work.path(),
        &hosts(&s, true),
        &["gcc", "-c", "hello.c", "-o", "hello.o"],
        &[("TMPDIR", work.path().to_str().unwrap())],
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(work.path().join("hello.o").exists());
    let log = s.wait_for_log("denied by access list", std::time::Duration::from_secs(10));
    assert!(!log.contains("COMPILE_OK"));
}

#[test]
fn inetd_mode_over_a_fake_ssh() {
    if !have_distcc() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let work = shared_tempdir();
    let log = work.path().join("inetd.log");
    let ssh = work.path().join("fake-ssh");
    // distcc runs: SSH [-l USER] HOST distccd --inetd --enable-tcp-insecure
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ] && [ \"$1\" != distccd ]; do shift; done\nshift\n\
             exec '{}' serve \"$@\" --log-file '{}' --log-level info\n",
            dportage_bin().display(),
            log.display()
        ),
    )
    .expect("write fake ssh");
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    write(work.path(), "hello.c", HELLO_C);
    let run = run_distcc(
        work.path(),
        "@localhost,lzo",
        &["gcc", "-c", "-g", "hello.c", "-o", "remote.o"],
        &[
            ("TMPDIR", work.path().to_str().unwrap()),
            ("DISTCC_SSH", ssh.to_str().unwrap()),
        ],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("COMPILE_OK"),
        "inetd server log:\n{text}\nclient:\n{}",
        run.stderr
    );
    let (status, _) = run_local(
        work.path(),
        "gcc",
        &["-c", "-g", "hello.c", "-o", "local.o"],
    );
    assert!(status.success());
    assert!(read(work.path(), "remote.o") == read(work.path(), "local.o"));
}

#[test]
fn objects_equal_those_of_the_real_distccd() {
    if !have_distcc() {
        return;
    }
    let ours = DportageServer::start(&[]);
    let real = real_distccd(&[]);
    let mut ok = 0;
    for (compiler, name, source) in [("gcc", "hello.c", HELLO_C), ("g++", "hello.cpp", HELLO_CPP)] {
        for lzo in [false, true] {
            let work = shared_tempdir();
            let dir = work.path();
            write(dir, name, source);
            let suffix = if lzo { ",lzo" } else { "" };
            for (host, out) in [
                (format!("127.0.0.1:{}{suffix}", ours.port), "ours.o"),
                (format!("127.0.0.1:{}{suffix}", real.port), "real.o"),
            ] {
                let run = run_distcc(
                    dir,
                    &host,
                    &[compiler, "-c", "-g", "-O2", name, "-o", out],
                    &[("TMPDIR", dir.to_str().unwrap())],
                );
                assert!(run.status.success(), "{host}: {}", run.stderr);
            }
            ok += 1;
            ours.wait_counter("dcc_compile_ok", ok);
            real.wait_for_compile_ok(ok as usize);
            assert!(
                read(dir, "ours.o") == read(dir, "real.o"),
                "{compiler} (lzo: {lzo}): our object differs from the real distccd's"
            );
        }
    }
}

/// Diagnostics come back exactly as the real distccd (given the same
/// `LC_ALL=C` we give every compiler) sends them: same text, same
/// file names, the same absence of source excerpts (the compiler sees only
/// the preprocessed file), same exit status.
#[test]
fn diagnostics_equal_those_of_the_real_distccd() {
    if !have_distcc() {
        return;
    }
    let ours = DportageServer::start(&[]);
    let real = real_distccd(&[("LC_ALL", "C")]);
    let cases: [(&str, &str, &str, bool); 3] = [
        (
            "gcc",
            "warn.c",
            "int f(void) { int unused_thing; return 1; }\nint g(int x) { if (x = 2) return 1; return 0; }\n",
            true,
        ),
        (
            "gcc",
            "err.c",
            "int f(void) { return nope; }\n#warning hello\n",
            false,
        ),
        (
            "g++",
            "err.cpp",
            "#include <vector>\nint f() { std::vector<int> v; return v.nothing(); }\n",
            false,
        ),
    ];
    for (compiler, name, source, succeeds) in cases {
        for lzo in [false, true] {
            let work = shared_tempdir();
            let dir = work.path();
            write(dir, name, source);
            let suffix = if lzo { ",lzo" } else { "" };
            let mut runs = Vec::new();
            let mut stderrs = Vec::new();
            for port in [ours.port, real.port] {
                let run = run_distcc(
                    dir,
                    &format!("127.0.0.1:{port}{suffix}"),
                    &[compiler, "-Wall", "-c", name, "-o", "out.o"],
                    &[("TMPDIR", dir.to_str().unwrap()), ("DISTCC_FALLBACK", "0")],
                );
                assert_eq!(
                    run.status.success(),
                    succeeds,
                    "{compiler} {name}: {}",
                    run.stderr
                );
                stderrs.push(without_pid_and_port(&run.stderr, port));
                runs.push(run);
            }
            assert!(
                !runs[0].stderr.is_empty(),
                "{name}: no diagnostics came back"
            );
            assert_eq!(
                stderrs[0], stderrs[1],
                "{compiler} {name} (lzo: {lzo}): ours vs the real distccd"
            );
            assert_eq!(runs[0].status.code(), runs[1].status.code());
        }
    }
}

/// The client's own lines name its pid and the server's port; neither is
/// the server's doing.
fn without_pid_and_port(stderr: &str, port: u16) -> String {
    stderr
        .lines()
        .map(|line| {
            let line = line.replace(&format!(":{port}"), ":PORT");
            match (line.strip_prefix("distcc["), line.find(']')) {
                (Some(_), Some(end)) => format!("distcc[PID{}", &line[end..]),
                _ => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
