//! `--help` of every command, usage lines that name the program as invoked,
//! and the completions and manual pages made from the clap description, run
//! through the real binary (and bash, groff) as a user would.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::dportage_bin;

/// Run `program ARGS` with an empty home and no dportage variables, so no
/// command can reach a coordinator or read a real identity.
fn run(program: &Path, args: &[&str], home: &Path) -> Output {
    Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A link named `name` to our binary, in `dir`.
fn link(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::os::unix::fs::symlink(dportage_bin(), &path).unwrap();
    path
}

#[test]
fn every_command_answers_help_with_its_options_and_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &[
                "--coordinator",
                "--coordinator-key",
                "--shell",
                "--compiler",
                "--max-hosts",
                "-s",
                "-c",
                "DPORTAGE_REDUNDANCY",
                "DPORTAGE_DIR",
                "DPORTAGE_CA_FILE",
                "dportage monitor                   live view of jobs, hosts and verdicts",
            ],
        ),
        (&["-h"], &["--max-hosts", "dportage serve"]),
        // The environment printer's own help, after some of its options.
        (
            &["--coordinator", "http://127.0.0.1:1", "--help"],
            &["--shell", "--compiler", "CMD", "DPORTAGE_COORDINATOR"],
        ),
        (&["--shell", "fish", "-h"], &["--max-hosts"]),
        (&["serve", "--help"], &["--allow-private", "--coordinator"]),
        (&["serve", "-h"], &["--jobs"]),
        (
            &["cc", "--help"],
            &["--show-hosts", "DISTCC_HOSTS", "DPORTAGE_HEDGE_MS"],
        ),
        (&["cc", "-h"], &["DISTCC_IO_TIMEOUT"]),
        (
            &["coordinator", "--help"],
            &["--establish-age", "blacklist"],
        ),
        (&["coordinator", "blacklist", "--help"], &["lift-network"]),
        (&["coordinator", "blacklist", "list", "-h"], &["Usage"]),
        (&["coordinator", "vouch", "--help"], &["--coordinator"]),
        (&["coordinator", "unvouch", "-h"], &["--coordinator"]),
        (&["coordinator", "reports", "--help"], &["<ID>"]),
        (&["demo", "--help"], &["--hosts", "--keep", "--verbose"]),
        (&["demo", "-h"], &["--hosts"]),
        (
            &["status", "--help"],
            &["--json", "--coordinator", "DPORTAGE_DIR"],
        ),
        (&["status", "-h"], &["--json"]),
        (
            &["membership-token", "--help"],
            &["--for", "DPORTAGE_MEMBERSHIP"],
        ),
        (&["unlink", "--help"], &["--daemon", "PERSON"]),
        (&["completions", "--help"], &["bash", "zsh", "fish"]),
        (&["man", "--help"], &["--out"]),
    ];
    for (args, wanted) in cases {
        let out = run(&dportage_bin(), args, home.path());
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "dportage {args:?}: {:?}\n{}",
            out.status,
            stderr(&out)
        );
        assert!(
            text.contains("Usage"),
            "dportage {args:?}: no usage:\n{text}"
        );
        for w in *wanted {
            assert!(
                text.contains(w),
                "dportage {args:?}: {w:?} missing:\n{text}"
            );
        }
    }
}

#[test]
fn usage_lines_name_the_program_as_invoked() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = dportage_bin();
    let cases: Vec<(std::path::PathBuf, Vec<&str>, &str)> = vec![
        (
            bin.clone(),
            vec!["serve", "--help"],
            "Usage: dportage serve",
        ),
        (
            link(dir.path(), "distccd"),
            vec!["--help"],
            "Usage: distccd",
        ),
        (
            link(dir.path(), "dportage-serve"),
            vec!["--help"],
            "Usage: dportage-serve",
        ),
        (bin.clone(), vec!["cc", "--help"], "Usage: dportage cc"),
        (link(dir.path(), "distcc"), vec!["--help"], "Usage: distcc"),
        (
            link(dir.path(), "dportage-cc"),
            vec!["-h"],
            "Usage: dportage-cc",
        ),
        (
            bin.clone(),
            vec!["status", "--help"],
            "Usage: dportage status",
        ),
        (bin.clone(), vec!["demo", "--help"], "Usage: dportage demo"),
        (
            bin.clone(),
            vec!["coordinator", "vouch", "--help"],
            "Usage: dportage coordinator vouch",
        ),
    ];
    for (program, args, want) in &cases {
        let out = run(program, args, home.path());
        assert!(out.status.success(), "{} {args:?}", program.display());
        let text = stdout(&out);
        assert!(
            text.contains(want),
            "{} {args:?}: {want:?} missing:\n{text}",
            program.display()
        );
    }
    // A wrong option's error names the program too.
    let out = run(&bin, &["serve", "--frobnicate"], home.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Usage: dportage serve"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bash_completion_completes_subcommands_and_their_options() {
    let home = tempfile::tempdir().unwrap();
    let out = run(&dportage_bin(), &["completions", "bash"], home.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let script = home.path().join("dportage.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // Load it into a real bash and ask it what it would complete.
    let complete = |words: &str, cword: usize| -> String {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _dportage dportage \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
        assert!(out.status.success(), "bash: {}", stderr(&out));
        stdout(&out)
    };
    let subs = complete("dportage ser", 1);
    assert!(subs.lines().any(|l| l == "serve"), "{subs}");
    let serve = complete("dportage serve --allow-p", 2);
    assert!(serve.lines().any(|l| l == "--allow-private"), "{serve}");
    let coord = complete("dportage coordinator blacklist li", 3);
    assert!(coord.lines().any(|l| l == "lift"), "{coord}");
    assert!(coord.lines().any(|l| l == "lift-network"), "{coord}");
    let shells = complete("dportage --shell ", 2);
    assert!(shells.lines().any(|l| l == "fish"), "{shells}");
    for shell in ["zsh", "fish"] {
        let out = run(&dportage_bin(), &["completions", shell], home.path());
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
        let file = home.path().join(format!("dportage.{shell}"));
        std::fs::write(&file, &out.stdout).unwrap();
        // Syntax-checked by the shell itself where it is installed.
        let check = if shell == "zsh" { "-n" } else { "--no-execute" };
        match Command::new(shell).arg(check).arg(&file).output() {
            Ok(o) => assert!(o.status.success(), "{shell} {check}: {}", stderr(&o)),
            Err(_) => eprintln!(
                "note: {shell} is not installed; its completion script was only generated"
            ),
        }
    }
}

#[test]
fn man_writes_three_pages_that_groff_renders() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("man");
    let out = run(
        &dportage_bin(),
        &["man", "--out", dir.to_str().unwrap()],
        home.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for (page, wanted) in [
        (
            "dportage.1",
            &[
                "--max-hosts",
                "DPORTAGE_REDUNDANCY",
                "coordinator",
                "masquerade",
            ][..],
        ),
        (
            "dportage-serve.1",
            &[
                "--allow-private",
                "--masquerade-dir",
                "distccd",
                "DISTCCD_PATH",
            ][..],
        ),
        (
            "dportage-coordinator.8",
            &["--establish-age", "blacklist", "vouch"][..],
        ),
    ] {
        let path = dir.join(page);
        assert!(path.is_file(), "{page} not written");
        // -ww: every warning; -z: no output, so stderr holds only problems.
        let check = Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff (groff-base) is needed to check the manual pages");
        assert!(
            check.status.success() && check.stderr.is_empty(),
            "{page}: {}",
            stderr(&check)
        );
        let text = Command::new("groff")
            // No hyphenation, long lines: words stay whole for the search.
            .args(["-man", "-rHY=0", "-rLL=300n", "-Tascii", "-P-cbou"])
            .arg(&path)
            .output()
            .unwrap();
        let text = stdout(&text);
        for w in wanted {
            assert!(text.contains(w), "{page}: {w:?} missing:\n{text}");
        }
    }
    // One page to stdout, by name.
    let out = run(&dportage_bin(), &["man", "dportage-serve"], home.path());
    assert!(out.status.success());
    assert!(
        stdout(&out).contains(".TH DPORTAGE-SERVE 1"),
        "{}",
        stdout(&out)
    );
}
