//! What the real `distcc` 3.4 client puts in ARGV, against our prediction:
//! `scan`, then Debian's compiler-name rewriting, then `server_argv` — the order
//! distcc applies them in. Every such argv must also pass our server policy
//! (with the whitelist of this machine's `/usr/lib/distcc`), since real clients
//! send exactly these.

use crate::support::client::real_distcc_command;
use crate::support::*;
use std::ffi::OsString;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use dportage::args::{check_server_command, scan, server_argv, ScanOutcome};
use dportage::client::invocation::{parse_invocation, rewrite_compiler_name, ClientCommand};

/// The ARGV words of the request the real client sends for `argv`.
fn wire_argv(distcc: &Path, work: &Path, argv: &[String]) -> Vec<String> {
    let mut all = vec![distcc.to_str().unwrap().to_string()];
    all.extend_from_slice(argv);
    wire_argv_of(work, &all, None)
}

/// The ARGV words the real client sends when run as `command` (a masquerade
/// link or `distcc` itself), with `PATH` replaced when given.
fn wire_argv_of(work: &Path, command: &[String], path: Option<&str>) -> Vec<String> {
    let argv = &command[1..];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = real_distcc_command(&command[0], argv, work, port, state.path());
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let mut child = ChildGuard::new(cmd.spawn().unwrap());
    let mut stream = accept_while_running(
        &listener,
        child.child(),
        Duration::from_secs(30),
        &format!("distcc {argv:?} to connect"),
    );
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let token = |stream: &mut std::net::TcpStream| -> (String, usize) {
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).expect("request header");
        let name = String::from_utf8(head[..4].to_vec()).unwrap();
        let value = usize::from_str_radix(std::str::from_utf8(&head[4..]).unwrap(), 16).unwrap();
        (name, value)
    };
    assert_eq!(token(&mut stream).0, "DIST");
    let (argc_name, argc) = token(&mut stream);
    assert_eq!(argc_name, "ARGC");
    assert!(argc < 1000);
    let mut words = Vec::with_capacity(argc);
    for _ in 0..argc {
        let (name, len) = token(&mut stream);
        assert_eq!(name, "ARGV");
        assert!(len < 1 << 16);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).unwrap();
        words.push(String::from_utf8(body).unwrap());
    }
    drop(stream);
    child.wait_exit(Duration::from_secs(30), &format!("distcc {argv:?} to exit"));
    words
}

fn predicted(argv: &[String]) -> Vec<String> {
    predicted_with_path(argv, std::env::var_os("PATH"))
}

fn predicted_with_path(argv: &[String], path: Option<OsString>) -> Vec<String> {
    let ScanOutcome::Distribute(mut job) = scan(argv).unwrap() else {
        panic!("{argv:?} should distribute");
    };
    rewrite_compiler_name(&mut job.argv, path.as_ref());
    server_argv(&job)
}

fn debian_whitelist(name: &str) -> bool {
    std::fs::metadata(Path::new("/usr/lib/distcc").join(name))
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

const ARGS: &[&str] = &[
    "-c x.c",
    "-c x.c -o x.o",
    "-DFOO=1 -I/usr/include -include stdio.h -c x.c -o x.o",
    "-O2 -g -Wall -MD -c x.c",
    "-S x.c",
    "-Wp,-MD,x.d -c x.c",
    "-x c -c x.c",
    "-std=gnu99 -fPIC -fvisibility=hidden -D_FORTIFY_SOURCE=2 -c x.c -o out.o",
];

#[test]
fn wire_argv_matches_our_prediction_and_passes_our_policy() {
    let Some(distcc) = real_distcc(module_path!()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("x.c"), "int f(void) { return 1; }\n").unwrap();
    let compilers: Vec<&str> = [
        "gcc",
        "cc",
        "c++",
        "g++",
        "gcc-12",
        "g++-12",
        "clang",
        "clang++",
        "clang-14",
        "/usr/bin/gcc",
        "x86_64-linux-gnu-gcc",
    ]
    .into_iter()
    .filter(|c| {
        Path::new("/usr/bin")
            .join(c.trim_start_matches("/usr/bin/"))
            .exists()
    })
    .collect();
    assert!(compilers.contains(&"gcc") && compilers.contains(&"cc"));

    let mut cases: Vec<Vec<String>> = Vec::new();
    for compiler in &compilers {
        for args in ARGS {
            let mut argv = vec![compiler.to_string()];
            argv.extend(args.split(' ').map(String::from));
            cases.push(argv);
        }
    }
    // clang's own target flags.
    for args in [
        "--target=x86_64-pc-linux-gnu -c x.c",
        "-target x86_64-pc-linux-gnu -c x.c",
    ] {
        if compilers.contains(&"clang") {
            let mut argv = vec!["clang".to_string()];
            argv.extend(args.split(' ').map(String::from));
            cases.push(argv);
        }
    }

    let mut problems = Vec::new();
    for argv in &cases {
        let sent = wire_argv(&distcc, work.path(), argv);
        let ours = predicted(argv);
        if sent != ours {
            problems.push(format!(
                "{argv:?}: distcc sent {sent:?}, we predict {ours:?}"
            ));
        }
        let wire: Vec<Vec<u8>> = sent.iter().map(|w| w.as_bytes().to_vec()).collect();
        if let Err(e) = check_server_command(&wire, &debian_whitelist, "job", "job.o") {
            problems.push(format!("{sent:?}: our server refuses it: {e}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Masquerade links in `/usr/lib/distcc`: the real client trims `PATH` and
/// rewrites the name; we must send the same words.
#[test]
fn masquerade_links_send_what_distcc_sends() {
    if real_distcc(module_path!()).is_none() {
        return;
    }
    if !require_masquerade_dir("masquerade_links_send_what_distcc_sends") {
        return;
    }
    let masq = Path::new("/usr/lib/distcc");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("x.c"), "int f(void) { return 1; }\n").unwrap();
    let path = "/usr/lib/distcc:/usr/bin:/bin";
    let mut problems = Vec::new();
    for name in ["gcc", "cc", "c++", "clang", "x86_64-linux-gnu-gcc"] {
        if !masq.join(name).exists() {
            continue;
        }
        for argv0 in [format!("/usr/lib/distcc/{name}"), name.to_string()] {
            let mut command = vec![argv0.clone()];
            command.extend(["-O2", "-c", "x.c"].map(String::from));
            let sent = wire_argv_of(work.path(), &command, Some(path));
            let args: Vec<OsString> = command[1..].iter().map(OsString::from).collect();
            let ClientCommand::Compile(inv) = parse_invocation(
                &OsString::from(&argv0),
                &args,
                false,
                Some(&OsString::from(path)),
            ) else {
                panic!("{argv0}: not a compile");
            };
            let trimmed = inv.trimmed_path.clone().unwrap_or_else(|| path.into());
            let ours = predicted_with_path(&inv.argv, Some(trimmed));
            if sent != ours {
                problems.push(format!(
                    "{argv0}: distcc sent {sent:?}, we predict {ours:?}"
                ));
            }
            if inv.trimmed_path != Some(OsString::from("/usr/bin:/bin")) {
                problems.push(format!("{argv0}: PATH trimmed to {:?}", inv.trimmed_path));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
