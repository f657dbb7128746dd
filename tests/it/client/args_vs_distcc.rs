//! Our scanner against the real `distcc` 3.4 client: for each command line the
//! real client runs against a host list that points at a listener of ours. A
//! connection arriving means distcc decided to distribute; none means it ran
//! the command locally. Our `scan` must say `Distribute` for exactly the first.

use crate::support::client::real_distcc_command;
use crate::support::*;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use dportage::args::{scan, ScanOutcome};

/// Arguments after the compiler (`gcc`), split on spaces.
const ROWS: &[&str] = &[
    "-c x.c -o x.o",
    "-c x.c",
    "-S x.c",
    "-c -S x.c",
    "-c sub/x.c",
    "-c x.c -oout.o",
    "-c x.c out.o",
    "-o x.o -c x.c",
    "-c x.cpp",
    "-c x.cc",
    "-c x.C",
    "-c x.i",
    "-c x.ii",
    "-c x.m",
    "-MD -c x.c",
    "-MMD -MP -MG -c x.c",
    "-MD -MF x.d -c x.c",
    "-MT y.c -c x.c",
    "-MFx.d -MTx.o -MQx.o -c x.c",
    "-x c -c x.c",
    "-x c++ -c x.c",
    "-x c-header -c x.c",
    "-x objective-c -c x.m",
    "-c x.c -x",
    "-flto=auto -c x.c",
    "-march=x86-64 -c x.c",
    "-Wa,--noexecstack -c x.c",
    "-O2 -g -Wall -DX=1 -I inc -c x.c",
    "-Wp,-DX,-UY -c x.c",
    "-Wp,-MD,x.d -c x.c",
    "-Wp,-MMD,x.d,-DZ -c x.c",
    "-c x.c foo.h",
    "-c x.c -o conftest.o",
    "x.c",
    "x.c -o prog",
    "x.o y.o -o prog",
    "-E x.c",
    "-c -E x.c",
    "-M x.c",
    "-MM -c x.c",
    "-Wp,-M -c x.c",
    "-Wp,-E -c x.c",
    "-march=native -c x.c",
    "-mtune=native -c x.c",
    "-flto -c x.c",
    "-Wa,-adhln=x.lst -c x.c",
    "-Wa,--MD,x.d -c x.c",
    "-specs=foo -c x.c",
    "-fprofile-arcs -c x.c",
    "-ftest-coverage -c x.c",
    "--coverage -c x.c",
    "-fprofile-correction -c x.c",
    "-fprofile-generate -c x.c",
    "-fprofile-generate=d -c x.c",
    "-fprofile-use=d -c x.c",
    "-fauto-profile=p -c x.c",
    "-frepo -c x.c",
    "-x assembler -c x.c",
    "-xc -c x.c",
    "-x none -c x.c",
    "-dr -c x.c",
    "-c",
    "-c -o x.o",
    "-c x.s",
    "-c x.S",
    "-c x.c y.c",
    "-c x.c -o a.o -o b.o",
    "-c x.c -o a.o b.o",
    "-c x.c -o -",
    "-c x.c -o-",
    "-c conftest.c",
    "-c sub/conftest.c -o x.o",
    "-c tmp.conftest.c",
    "-I dir.c -c x.c",
    "-include y.c -c x.c",
    "-c x.c -o",
    "-c x.c -o a.o -o",
    "- -c x.c",
    "-c .c",
    "-c sub/.c",
    "-E -march=native x.c",
    "-c x.c -xc",
    "-c x.c -x go",
    "-c x.c -x c -",
    "-c x.c -MF",
    "-c x.c -Wp,-MD",
    "-c x.c -Wa,-a",
    "-c x.c -Wp,-MD,-a",
    "-c x.c -o x.c.o",
    "-c x.c -fprofile-usex",
    "-c x.c --specs=foo",
];

/// Run `distcc gcc ARGS` in `work` against a fresh listener; did it connect?
fn real_distributes(distcc: &Path, work: &Path, args: &[&str]) -> bool {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // A fresh state directory per run: a failed job backs the host off.
    let state = tempfile::tempdir().unwrap();
    let mut argv = vec!["gcc"];
    argv.extend_from_slice(args);
    let mut child = ChildGuard::new(
        real_distcc_command(distcc, &argv, work, port, state.path())
            .env_remove("DISTCC_BACKOFF_PERIOD")
            .spawn()
            .expect("spawn distcc"),
    );
    let mut connections = 0;
    wait_until(
        Duration::from_secs(30),
        format_args!("distcc gcc {args:?} to finish"),
        || {
            loop {
                match listener.accept() {
                    // Dropping the stream refuses the job; distcc then gives up.
                    Ok((stream, _)) => {
                        connections += 1;
                        drop(stream);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("accept: {e}"),
                }
            }
            if child.exited().is_none() {
                return false;
            }
            // A connection made before exit is in the backlog by now.
            while listener.accept().is_ok() {
                connections += 1;
            }
            true
        },
    );
    connections > 0
}

fn make_sources(dir: &Path) {
    let c = "int f(void) { return 1; }\n";
    for name in [
        "x.c",
        "y.c",
        "dir.c",
        "conftest.c",
        "tmp.conftest.c",
        "sub/x.c",
        "sub/conftest.c",
    ] {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
    std::fs::write(dir.join("x.cpp"), "int f() { return 1; }\n").unwrap();
    std::fs::write(dir.join("x.cc"), "int f() { return 1; }\n").unwrap();
    std::fs::write(dir.join("x.C"), "int f() { return 1; }\n").unwrap();
    std::fs::write(dir.join("x.i"), c).unwrap();
    std::fs::write(dir.join("x.ii"), "int f() { return 1; }\n").unwrap();
    std::fs::write(dir.join("x.m"), c).unwrap();
    std::fs::write(dir.join("foo.h"), "").unwrap();
    std::fs::write(dir.join(".c"), c).unwrap();
    std::fs::write(dir.join("sub/.c"), c).unwrap();
    std::fs::write(dir.join("x.s"), ".text\n").unwrap();
    std::fs::write(dir.join("x.S"), ".text\n").unwrap();
    std::fs::create_dir_all(dir.join("inc")).unwrap();
}

#[test]
fn scanner_agrees_with_real_distcc() {
    let Some(distcc) = real_distcc(module_path!()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    make_sources(work.path());
    // Objects for the link row.
    for obj in ["x.o", "y.o"] {
        std::fs::write(work.path().join(obj), "").unwrap();
    }
    let mut disagreements = Vec::new();
    let (mut distributed, mut local) = (0, 0);
    for row in ROWS {
        let args: Vec<&str> = row.split(' ').collect();
        let real = real_distributes(&distcc, work.path(), &args);
        let argv: Vec<String> = std::iter::once("gcc")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        let ours = matches!(scan(&argv), Ok(ScanOutcome::Distribute(_)));
        if real != ours {
            disagreements.push(format!(
                "gcc {row}: distcc {}, ours {:?}",
                if real {
                    "distributes"
                } else {
                    "runs it locally"
                },
                scan(&argv)
            ));
        }
        if real {
            distributed += 1;
        } else {
            local += 1;
        }
    }
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
    // Both kinds of verdict were really exercised.
    assert!(distributed >= 20 && local >= 30, "{distributed} / {local}");
}
