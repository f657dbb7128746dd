//! The compiler path of the network environment: a masquerade directory of
//! links named like the compilers in `PATH` (and `distcc`) to this binary,
//! put first in `PATH`, so that `dportage make -j12` compiles through
//! verified dispatch however the build names its compiler (`cc`, `gcc-12`,
//! `x86_64-pc-linux-gnu-gcc`, `distcc gcc`).
//!
//! And the check that portage's own compiler path cannot reach a client that
//! does not verify: with `FEATURES=distcc` portage puts `/usr/lib/distcc/bin`
//! first in `PATH`, whatever `dportage` put there. If its links run a real
//! distcc, `dportage` refuses to hand out the environment. (Even then the
//! network cannot fail open: its hosts are marked `,verify`, which distcc
//! 3.4 rejects, compiling locally; the refusal says so instead of letting
//! the build quietly stop distributing.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where portage looks for distcc's masquerade directory under
/// `FEATURES=distcc` (`doebuild_environment`: `/usr/<libdir>/distcc/bin`,
/// `/usr/lib/…`, `/usr/libexec/…`, the first that exists).
/// `DPORTAGE_PORTAGE_DISTCC_DIR` names one instead (a prefix install).
pub const PORTAGE_DISTCC_DIRS: &[&str] = &[
    "/usr/lib64/distcc/bin",
    "/usr/lib/distcc/bin",
    "/usr/libexec/distcc/bin",
];

/// Compiler names a masquerade link is made for: a driver, optionally behind
/// a target triple (`x86_64-pc-linux-gnu-gcc`) and before a version
/// (`gcc-12`, `clang-16`). `gcc-ar`, `c++filt` or `clang-format` are not
/// compilers.
pub fn is_compiler_name(name: &str) -> bool {
    const DRIVERS: &[&str] = &["c++", "g++", "clang++", "cc", "gcc", "clang"];
    // Drop a version suffix: `-12`, `-12.2`.
    let base = match name.rsplit_once('-') {
        Some((head, version))
            if !version.is_empty()
                && version.chars().all(|c| c.is_ascii_digit() || c == '.')
                && version.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            head
        }
        _ => name,
    };
    DRIVERS.iter().any(|d| {
        base == *d
            || base
                .strip_suffix(d)
                .is_some_and(|triple| triple.ends_with('-') && triple.len() > 1)
    })
}

/// The names to link, from the file names found in `PATH` (pure; the caller
/// lists the directories): every compiler name, and `distcc`, so a build
/// that says `CC="distcc gcc"` reaches this client too.
pub fn names_to_link<'a>(found: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = found
        .into_iter()
        .filter(|n| is_compiler_name(n))
        .map(str::to_string)
        .collect();
    names.push("distcc".to_string());
    names.sort();
    names.dedup();
    names
}

/// `CC`/`CXX` as the build should see them: a value whose first word names
/// a compiler (`gcc`, `/usr/bin/gcc -m32`) is pointed at its masquerade
/// link; anything else (`ccache gcc`, `distcc gcc`) is left alone.
pub fn through_masquerade(value: &str, dir: &Path, linked: &[String]) -> Option<String> {
    let trimmed = value.trim_start();
    let (first, rest) = trimmed
        .split_once(char::is_whitespace)
        .map_or((trimmed, ""), |(a, b)| (a, b));
    let name = Path::new(first).file_name()?.to_str()?;
    if !is_compiler_name(name) || !linked.iter().any(|l| l == name) {
        return None;
    }
    let link = dir.join(name).to_string_lossy().into_owned();
    Some(if rest.is_empty() {
        link
    } else {
        format!("{link} {rest}")
    })
}

/// File names in the directories of `path` (bounded: a `PATH` of thousands
/// of entries is not a build's).
fn names_in_path(path: &std::ffi::OsStr, skip: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in std::env::split_paths(path).take(64) {
        if dir == skip {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten().take(20_000) {
            if let Some(name) = entry.file_name().to_str() {
                if is_compiler_name(name) {
                    out.push(name.to_string());
                }
            }
        }
    }
    out
}

/// Make (or refresh) `dir` with a link to `exe` for every compiler of
/// `path`; returns the names linked. Links are replaced atomically, so a
/// build already running in another shell never finds one missing.
pub fn prepare(dir: &Path, exe: &Path, path: &std::ffi::OsStr) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    crate::shared_dir::share_with_group(dir, crate::shared_dir::GroupAccess::ReadWrite);
    let found = names_in_path(path, dir);
    let names = names_to_link(found.iter().map(String::as_str));
    for name in &names {
        let link = dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|t| t == exe) {
            continue;
        }
        let tmp = dir.join(format!(
            ".{name}.{}.{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::os::unix::fs::symlink(exe, &tmp)?;
        if let Err(e) = std::fs::rename(&tmp, &link) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    Ok(names)
}

/// `PATH` with `dir` first (and not again later).
pub fn path_with_first(dir: &Path, path: Option<&std::ffi::OsStr>) -> OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(p) = path {
        dirs.extend(std::env::split_paths(p).filter(|d| d != dir));
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

/// An entry of portage's compiler path that runs a client that does not
/// verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverifying {
    /// The link portage would run, e.g. `/usr/lib/distcc/bin/gcc`.
    pub entry: PathBuf,
    /// What it really runs.
    pub target: PathBuf,
    /// The first line that target prints for `--version`.
    pub says: String,
}

/// The first line `target` prints for `--version`, run under `name`
/// (bounded: 5 s, 4 KiB; control characters dropped).
fn version_line(target: &Path, name: &str) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(target)
        .arg0(name)
        .arg("--version")
        .env_remove("DISTCC_HOSTS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // A stuck program must not hang `dportage`.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut text = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        let _ = out.by_ref().take(4096).read_to_end(&mut text);
    }
    Some(
        String::from_utf8_lossy(&text)
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect(),
    )
}

/// Whether the program at `target` is a dportage (it answers `--version`
/// as `dportage` when invoked under that name), and what it says of itself
/// under its own name (distcc prints `distcc 3.4 …`).
fn is_dportage(target: &Path) -> (bool, String) {
    if version_line(target, "dportage").is_some_and(|l| l.starts_with("dportage ")) {
        return (true, String::new());
    }
    let own = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let says = version_line(target, &own)
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "no version line".to_string());
    (false, says)
}

/// The entries of portage's distcc directory `dir` that would run a client
/// other than dportage (empty when the directory does not exist: portage
/// then compiles locally). `exe` is this binary.
pub fn unverifying_entries(dir: &Path, exe: &Path) -> Vec<Unverifying> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let exe = exe.canonicalize().unwrap_or_else(|_| exe.to_path_buf());
    let mut checked: Vec<(PathBuf, bool, String)> = Vec::new();
    let mut out = Vec::new();
    let mut names: Vec<String> = entries
        .flatten()
        .take(1000)
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| is_compiler_name(n) || n == "distcc")
        .collect();
    names.sort();
    for name in names {
        let entry = dir.join(&name);
        let Ok(target) = entry.canonicalize() else {
            continue; // A dangling link: portage's build fails on it, not us.
        };
        if target == exe {
            continue;
        }
        let (ours, says) = match checked.iter().find(|(t, _, _)| *t == target) {
            Some((_, ours, says)) => (*ours, says.clone()),
            None => {
                let (ours, says) = is_dportage(&target);
                checked.push((target.clone(), ours, says.clone()));
                (ours, says)
            }
        };
        if !ours {
            out.push(Unverifying {
                entry,
                target,
                says,
            });
        }
    }
    out
}

/// The directories portage may put first in `PATH` under `FEATURES=distcc`:
/// `$DPORTAGE_PORTAGE_DISTCC_DIR`, else those of [`PORTAGE_DISTCC_DIRS`]
/// (portage takes the first that exists, trying the default ABI's libdir,
/// then `lib`, then `libexec`; all are checked, since which is first
/// depends on the profile).
pub fn portage_distcc_dirs() -> Vec<PathBuf> {
    match std::env::var_os("DPORTAGE_PORTAGE_DISTCC_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => PORTAGE_DISTCC_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// The message `dportage` refuses with when portage's path is unsafe.
pub fn refusal(dir: &Path, bad: &[Unverifying], exe: &Path) -> String {
    let first = &bad[0];
    let names: Vec<String> = bad
        .iter()
        .take(6)
        .map(|u| {
            u.entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    format!(
        "refusing to print the network environment: it sets FEATURES=distcc, which makes \
         portage run {dir}/ first, and {entry} runs {target} ({says}), a client that does not \
         verify results ({n} such entr{ies}: {names}{more}).\n  \
         The network's hosts are marked `,verify`, so that client would only compile locally.\n  \
         Install dportage as distcc (contrib/gentoo: `emerge sys-devel/dportage`, which replaces \
         sys-devel/distcc), or point the links at this binary: \
         `for f in {dir}/*; do ln -sf {exe} \"$f\"; done`.",
        dir = dir.display(),
        entry = first.entry.display(),
        target = first.target.display(),
        says = first.says,
        n = bad.len(),
        ies = if bad.len() == 1 { "y" } else { "ies" },
        names = names.join(", "),
        more = if bad.len() > names.len() { ", …" } else { "" },
        exe = exe.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_names() {
        for yes in [
            "cc",
            "c++",
            "gcc",
            "g++",
            "clang",
            "clang++",
            "gcc-12",
            "g++-12.2",
            "clang-16",
            "x86_64-pc-linux-gnu-gcc",
            "x86_64-pc-linux-gnu-g++-13",
            "aarch64-linux-gnu-cc",
            "x86_64-linux-gnu-clang++",
        ] {
            assert!(is_compiler_name(yes), "{yes}");
        }
        for no in [
            "gcc-ar",
            "gcc-nm-12",
            "c++filt",
            "clang-format",
            "clang-tidy-16",
            "x86_64-linux-gnu-gcc-ranlib",
            "-gcc",
            "distcc",
            "ccache",
            "xgcc",
            "cpp",
            "gcc-",
        ] {
            assert!(!is_compiler_name(no), "{no}");
        }
    }

    #[test]
    fn names_to_link_adds_distcc_once() {
        let got = names_to_link(["gcc", "ls", "gcc", "cc", "distcc"]);
        assert_eq!(got, vec!["cc", "distcc", "gcc"]);
    }

    #[test]
    fn cc_values_go_through_the_links() {
        let dir = Path::new("/m");
        let linked = vec!["gcc".to_string(), "cc".to_string()];
        assert_eq!(
            through_masquerade("gcc", dir, &linked).as_deref(),
            Some("/m/gcc")
        );
        assert_eq!(
            through_masquerade("/usr/bin/gcc -m32", dir, &linked).as_deref(),
            Some("/m/gcc -m32")
        );
        assert_eq!(through_masquerade("ccache gcc", dir, &linked), None);
        assert_eq!(through_masquerade("clang", dir, &linked), None);
        assert_eq!(through_masquerade("", dir, &linked), None);
    }

    #[test]
    fn path_puts_the_directory_first_once() {
        let p = path_with_first(
            Path::new("/m"),
            Some(std::ffi::OsStr::new("/usr/bin:/m:/bin")),
        );
        assert_eq!(p, OsString::from("/m:/usr/bin:/bin"));
        assert_eq!(path_with_first(Path::new("/m"), None), OsString::from("/m"));
    }

    #[test]
    fn prepare_links_compilers_found_in_path() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for name in ["gcc", "gcc-ar", "x86_64-pc-linux-gnu-g++"] {
            std::fs::write(bin.join(name), b"").unwrap();
        }
        let masq = t.path().join("masq");
        let exe = Path::new("/opt/dportage");
        let names = prepare(&masq, exe, bin.as_os_str()).unwrap();
        assert_eq!(names, vec!["distcc", "gcc", "x86_64-pc-linux-gnu-g++"]);
        for n in &names {
            assert_eq!(std::fs::read_link(masq.join(n)).unwrap(), exe);
        }
        assert!(!masq.join("gcc-ar").exists());
        // Again: nothing changes, no temporary files are left.
        prepare(&masq, exe, bin.as_os_str()).unwrap();
        assert_eq!(std::fs::read_dir(&masq).unwrap().count(), 3);
    }

    #[test]
    fn portage_entries_that_run_another_client_are_found() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("distcc-bin");
        std::fs::create_dir(&dir).unwrap();
        // A stand-in for a real distcc: a script that prints distcc's version.
        let distcc = t.path().join("distcc");
        std::fs::write(
            &distcc,
            "#!/bin/sh\necho 'distcc 3.4 x86_64-pc-linux-gnu'\n",
        )
        .unwrap();
        std::fs::set_permissions(&distcc, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let me = t.path().join("me");
        std::fs::write(&me, b"").unwrap();
        std::os::unix::fs::symlink(&distcc, dir.join("gcc")).unwrap();
        std::os::unix::fs::symlink(&distcc, dir.join("cc")).unwrap();
        std::os::unix::fs::symlink(&me, dir.join("g++")).unwrap();
        std::fs::write(dir.join("README"), b"").unwrap();
        let bad = unverifying_entries(&dir, &me);
        let names: Vec<_> = bad.iter().map(|u| u.entry.file_name().unwrap()).collect();
        assert_eq!(names, vec!["cc", "gcc"]);
        assert!(bad[0].says.starts_with("distcc 3.4"));
        let msg = refusal(&dir, &bad, &me);
        assert!(
            msg.contains("FEATURES=distcc") && msg.contains("2 such entries"),
            "{msg}"
        );
        assert!(unverifying_entries(&t.path().join("missing"), &me).is_empty());
    }
}
