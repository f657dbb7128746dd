//! `check_command` refuses compilers outside the whitelist and every flag
//! that reads, writes or runs things outside the job; a refused command never
//! reaches `run_job`.

use crate::support::job::*;
use dportage::args::Refusal;
use dportage::server::job::check_command;

fn refusal(command: &str) -> Refusal {
    let root = tempfile::tempdir().unwrap();
    match check_command(&words(command), &config(root.path())) {
        Ok(cmd) => panic!("{command}: accepted as {cmd:?}"),
        Err(e) => e,
    }
}

#[test]
fn shell_as_compiler_is_refused() {
    for command in [
        "sh -c id x.c -c -o x.o",
        "sh -c x.c -o x.o",
        "bash -c x.c -o x.o",
        "python3 -c x.c -o x.o",
        "distccd -c x.c -o x.o",
    ] {
        match refusal(command) {
            Refusal::CompilerNotAllowed(_) => {}
            other => panic!("{command}: {other:?}"),
        }
    }
}

#[test]
fn compiler_paths_outside_the_whitelist_are_refused() {
    for (command, why) in [
        ("/bin/sh -c x.c -o x.o", "not on this server's whitelist"),
        ("./gcc -c x.c -o x.o", "must be a bare name"),
        ("/tmp/gcc -c x.c -o x.o", "must be a bare name"),
        ("/usr/local/bin/gcc -c x.c -o x.o", "must be a bare name"),
        ("../gcc -c x.c -o x.o", "must be a bare name"),
        ("/usr/lib/distcc/gcc -c x.c -o x.o", "must be a bare name"),
        (".. -c x.c -o x.o", "whitelist"),
    ] {
        let e = refusal(command).to_string();
        assert!(e.contains(why), "{command}: {e}");
    }
}

#[test]
fn whitelist_is_masquerade_dir_plus_explicit_list() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path());
    cfg.extra_compilers.clear();
    if !distcc_masquerade_present() {
        return;
    }
    for ok in [
        "gcc -c x.c -o x.o",
        "/usr/bin/g++ -c x.cc -o x.o",
        "clang-14 -c x.c -o x.o",
    ] {
        check_command(&words(ok), &cfg).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // Not in /usr/lib/distcc, allowed only by the explicit list.
    let e = check_command(&words("tcc -c x.c -o x.o"), &cfg).unwrap_err();
    assert_eq!(e, Refusal::CompilerNotAllowed("tcc".into()));
    cfg.extra_compilers.push("tcc".into());
    check_command(&words("tcc -c x.c -o x.o"), &cfg).unwrap();

    // A masquerade dir of our own: a dangling link and a non-executable file do not count.
    let masq = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/usr/bin/gcc", masq.path().join("mycc")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/cc", masq.path().join("dangling")).unwrap();
    std::fs::write(masq.path().join("plain"), b"not a program").unwrap();
    cfg.masquerade_dirs = vec![masq.path().to_path_buf()];
    check_command(&words("mycc -c x.c -o x.o"), &cfg).unwrap();
    for name in ["dangling", "plain", "gcc"] {
        let command = format!("{name} -c x.c -o x.o");
        assert_eq!(
            check_command(&words(&command), &cfg).unwrap_err(),
            Refusal::CompilerNotAllowed(name.into())
        );
    }
}

#[test]
fn each_dangerous_flag_is_refused() {
    for flag in [
        "-fplugin=/tmp/evil.so",
        "-fplugin-arg-evil-x=y",
        "-specs=/tmp/evil.specs",
        "--specs=/tmp/evil.specs",
        "-wrapper /bin/sh,-c,id",
        "-B/tmp/evil",
        "-B /tmp/evil",
        "@/etc/passwd",
        "@args.rsp",
        "-iplugindir=/tmp/evil",
        "-fdump-tree-all=/tmp/dump",
        "-fdump-rtl-all",
        "-aux-info /tmp/aux",
        "-save-temps",
        "-save-temps=obj",
        "-Xclang -load -Xclang /tmp/evil.so",
        "-Wl,-rpath,/tmp",
        "-Wa,-a=/tmp/listing",
        "-MF /tmp/deps.d",
        "-MD",
        "-include /etc/passwd",
        "-I/etc",
        "-fprofile-use=/tmp/p.gcda",
        "-fsanitize-ignorelist=/etc/passwd",
        "--sysroot=/",
        "-fuse-ld=/tmp/ld",
    ] {
        let command = format!("gcc {flag} -c x.c -o x.o");
        let e = refusal(&command);
        assert!(
            matches!(
                e,
                Refusal::DangerousFlag(_) | Refusal::UnknownFlag(_) | Refusal::NotDistributable(_)
            ),
            "{flag}: {e:?}"
        );
        // The reason names what was refused.
        let first = flag.split_whitespace().next().unwrap();
        let e = e.to_string();
        assert!(
            e.contains(first) || e.contains("not distributable"),
            "{flag}: {e}"
        );
    }
}

#[test]
fn output_outside_the_job_is_refused_or_replaced() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path());
    // The job's own output is replaced by the fixed name: the path never reaches gcc.
    let cmd = check_command(&words("gcc -c x.c -o /etc/evil.o"), &cfg).unwrap();
    assert!(!cmd.args.iter().any(|a| a.contains("/etc")), "{cmd:?}");
    assert!(
        cmd.args
            .windows(2)
            .any(|w| w[0] == "-o" && w[1] == "dportage-job.o"),
        "{cmd:?}"
    );
    // A second output, or a second input, is refused.
    for command in [
        "gcc -c x.c -o x.o -o /tmp/y.o",
        "gcc -c x.c /etc/passwd -o x.o",
        "gcc -c x.c -o x.o -MF /tmp/x.d",
    ] {
        let e = refusal(command);
        assert!(
            matches!(
                e,
                Refusal::DangerousFlag(_) | Refusal::UnknownFlag(_) | Refusal::NotDistributable(_)
            ),
            "{command}: {e:?}"
        );
    }
}

#[tokio::test]
async fn next_honest_job_still_succeeds() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path());
    assert!(check_command(&words("sh -c x.c -o x.o"), &cfg).is_err());
    let out = compile("gcc -c x.c -o x.o", b"int x = 1;\n", &cfg).await;
    assert_eq!(out.status, 0, "{}", text(&out.stderr));
    assert!(out.object.starts_with(b"\x7fELF"));
    assert_empty(root.path());
}
