//! contrib/gentoo: the ebuild, the OpenRC service and the systemd unit are
//! valid, run command lines `dportage serve` accepts, and every name the
//! ebuild links to the binary takes the role it is installed for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::dportage_bin;

fn gentoo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/gentoo")
}

fn package_dir() -> PathBuf {
    gentoo().join("sys-devel/dportage")
}

fn ebuild() -> PathBuf {
    package_dir().join("dportage-0.1.0.ebuild")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `bash -c SCRIPT` with `args` as $1…, its stdout lines.
fn bash_lines(script: &str, args: &[&Path]) -> Vec<String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "bash: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn ebuilds_and_service_scripts_are_valid_shell() {
    let files = [
        ebuild(),
        gentoo().join("acct-user/dportage/dportage-0.ebuild"),
        gentoo().join("acct-group/dportage/dportage-0.ebuild"),
        package_dir().join("files/dportage.initd"),
        package_dir().join("files/dportage.confd"),
        gentoo().join("make-distfiles.sh"),
    ];
    for f in &files {
        let out = Command::new("bash").arg("-n").arg(f).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            f.display(),
            text(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string(gentoo().join("profiles/repo_name"))
            .unwrap()
            .trim(),
        "dportage"
    );
}

/// The keys of a systemd unit: `Section.Key` → values in order.
fn unit_keys(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in std::fs::read_to_string(path).unwrap().lines() {
        let line = format!("{pending}{}", raw.trim());
        pending.clear();
        if let Some(cont) = line.strip_suffix('\\') {
            pending = format!("{cont} ");
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not a key: {line}", path.display()));
        keys.entry(format!("{section}.{}", k.trim()))
            .or_default()
            .push(v.trim().to_string());
    }
    keys
}

/// Run `dportage ARGS… --help`: clap parses every argument before it
/// reaches `--help`, so success means each flag exists and each value
/// parses.
fn serve_accepts(args: &[String], origin: &str) {
    let out = Command::new(dportage_bin())
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("Usage: dportage serve"),
        "{origin}: `dportage {}` is not a command line serve accepts:\n{}",
        args.join(" "),
        text(&out)
    );
}

#[test]
fn the_systemd_unit_runs_a_serve_command_line_serve_accepts() {
    let unit = package_dir().join("files/dportage.service");
    let keys = unit_keys(&unit);
    let one = |k: &str| -> String {
        let v = keys.get(k).unwrap_or_else(|| panic!("{k} missing"));
        v.last().unwrap().clone()
    };
    assert_eq!(one("Service.User"), "dportage");
    assert_eq!(one("Service.Group"), "dportage");
    assert_eq!(one("Service.Nice"), "10");
    assert_eq!(one("Service.NoNewPrivileges"), "yes");
    assert_eq!(one("Service.ProtectSystem"), "strict");
    assert_eq!(one("Service.ReadWritePaths"), "/var/lib/dportage");
    assert_eq!(one("Service.PrivateTmp"), "yes");
    assert!(
        keys["Service.Environment"].contains(&"DPORTAGE_DIR=/var/lib/dportage/daemon".to_string())
    );
    let exec = one("Service.ExecStart");
    let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "/usr/bin/dportage");
    assert_eq!(words[1], "serve");
    let joined = words.join(" ");
    for want in [
        "--no-detach",
        "--coordinator ${DPORTAGE_COORDINATOR}",
        "--membership-file /var/lib/dportage/membership.json",
    ] {
        assert!(joined.contains(want), "ExecStart lacks {want}: {joined}");
    }
    // With the variables systemd would substitute.
    let args: Vec<String> = words[1..]
        .iter()
        .filter(|w| *w != "$DPORTAGE_OPTS")
        .map(|w| {
            w.replace(
                "${DPORTAGE_COORDINATOR}",
                "https://coordinator.example.org:3700",
            )
        })
        .collect();
    serve_accepts(&args, "dportage.service ExecStart");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "note: systemd-analyze is not installed: dportage.service was checked by \
             the_systemd_unit_runs_a_serve_command_line_serve_accepts only"
        );
        return;
    };
    assert!(version.status.success());
    let tmp = tempfile::tempdir().unwrap();
    // The unit as installed, with the binary where this build has it.
    let unit = std::fs::read_to_string(package_dir().join("files/dportage.service"))
        .unwrap()
        .replace("/usr/bin/dportage", dportage_bin().to_str().unwrap());
    let path = tmp.path().join("dportage.service");
    std::fs::write(&path, unit).unwrap();
    // Documentation=man:dportage-serve(1): verify runs man, which must find
    // the page the binary writes.
    let man = tmp.path().join("man");
    let out = Command::new(dportage_bin())
        .args(["man", "--out"])
        .arg(man.join("man1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    let report = text(&out);
    assert!(
        out.status.success() && !report.contains("dportage.service"),
        "systemd-analyze verify:\n{report}"
    );
}

#[test]
fn the_openrc_service_runs_a_serve_command_line_serve_accepts() {
    let files = package_dir().join("files");
    // openrc-run sources conf.d, then the script; supervise-daemon splits
    // command_args on white space.
    let lines = bash_lines(
        "set -e; RC_SVCNAME=dportage; source \"$1\"; \
         DPORTAGE_COORDINATOR=https://coordinator.example.org:3700; source \"$2\"; \
         printf '%s\\n' \"$command\" \"$command_user\" \"$supervisor\" \"$supervise_daemon_args\"; \
         printf '%s\\n' $command_args",
        &[&files.join("dportage.confd"), &files.join("dportage.initd")],
    );
    assert_eq!(lines[0], "/usr/bin/dportage");
    assert_eq!(lines[1], "dportage:dportage");
    assert_eq!(lines[2], "supervise-daemon");
    assert_eq!(lines[3], "--env DPORTAGE_DIR=/var/lib/dportage/daemon");
    let args = &lines[4..];
    assert_eq!(args[0], "serve");
    let joined = args.join(" ");
    for want in [
        "--no-detach",
        "--nice 10",
        "--coordinator https://coordinator.example.org:3700",
        "--membership-file /var/lib/dportage/membership.json",
    ] {
        assert!(joined.contains(want), "command_args lack {want}: {joined}");
    }
    serve_accepts(args, "dportage.initd command_args");
}

/// The names the ebuild links to /usr/bin/dportage: (in /usr/bin, in the
/// masquerade directory), for `chost`.
fn ebuild_links(chost: &str) -> (Vec<String>, Vec<String>) {
    let lines = bash_lines(
        &format!(
            "set -e; inherit() {{ :; }}; CHOST={chost}; source \"$1\"; \
             printf 'bin %s\\n' \"${{DPORTAGE_BIN_LINKS[@]}}\"; \
             for n in $(dportage_masquerade_names); do printf 'masq %s\\n' \"$n\"; done"
        ),
        &[&ebuild()],
    );
    let pick = |kind: &str| {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(kind))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    (pick("bin "), pick("masq "))
}

#[test]
fn every_masquerade_link_the_ebuild_installs_runs_the_compiler_past_it() {
    let chost = "x86_64-pc-linux-gnu";
    let (_, masq) = ebuild_links(chost);
    for want in ["cc", "c++", "gcc", "g++", "clang", "clang++"] {
        assert!(
            masq.iter().any(|n| n == want),
            "{want} not linked: {masq:?}"
        );
    }
    assert!(masq.contains(&format!("{chost}-gcc")) && masq.contains(&format!("{chost}-g++")));
    // The layout portage sees: /usr/lib/distcc with `bin` a link to itself,
    // /usr/lib/distcc/bin first in PATH, the real compilers after it.
    let root = tempfile::tempdir().unwrap();
    let distcc_dir = root.path().join("usr/lib/distcc");
    let real = root.path().join("real");
    std::fs::create_dir_all(&distcc_dir).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(".", distcc_dir.join("bin")).unwrap();
    for name in &masq {
        std::os::unix::fs::symlink(dportage_bin(), distcc_dir.join(name)).unwrap();
        let fake = real.join(name);
        std::fs::write(&fake, format!("#!/bin/sh\necho \"real {name} $*\"\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let state = root.path().join("distcc");
    std::fs::create_dir_all(&state).unwrap();
    let masq_bin = distcc_dir.join("bin");
    let path = format!("{}:{}:/usr/bin:/bin", masq_bin.display(), real.display());
    for name in &masq {
        // `--version` is no compile job: a masquerading client runs the
        // compiler of that name found past its own directory.
        let out = Command::new(masq_bin.join(name))
            .arg("--version")
            .env_clear()
            .env("PATH", &path)
            .env("HOME", root.path())
            .env("DISTCC_HOSTS", "")
            .env("DISTCC_DIR", &state)
            // Else gcc becomes this machine's <triple>-gcc (distcc 3.4's
            // rewrite), found in /usr/bin rather than among the fakes.
            .env("DISTCC_NO_REWRITE_CROSS", "1")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("real {name} --version\n"),
            "{name} did not masquerade: {}",
            text(&out)
        );
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
}

#[test]
fn the_ebuilds_bin_links_are_the_client_and_the_server() {
    let (bin, _) = ebuild_links("x86_64-pc-linux-gnu");
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for name in &bin {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(dportage_bin(), &link).unwrap();
        let out = Command::new(&link)
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
        let version = String::from_utf8_lossy(&out.stdout).into_owned();
        let role = if version.starts_with("distccd 3.4") {
            "server"
        } else if version.starts_with("distcc 3.4") {
            "client"
        } else {
            panic!("{name} --version: {version}")
        };
        seen.push((name.as_str(), role));
    }
    assert_eq!(
        seen,
        [
            ("distcc", "client"),
            ("distccd", "server"),
            ("dportage-cc", "client")
        ]
    );
}
