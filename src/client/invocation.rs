//! How the client was invoked: distcc's CLI (`distcc [COMPILER] ARGS…`),
//! masquerade links with `PATH` trimming, the recursion guard, and Debian 3.4's
//! compiler-name rewriting (spec §8.1, §8.2, §8.4).
//!
//! This sits at the edge: `PATH` lookups and symlink reads use the file system.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::args::scan::is_source;
use crate::exitcode;

/// What the user asked the client to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// Compile (remotely or locally) this command line; argv[0] is the compiler.
    Compile(Invocation),
    /// `--show-hosts`
    ShowHosts,
    /// `-j`
    Jobs,
    /// `--version`
    Version,
    /// `--help`
    Help,
    /// A usage error: message and exit code (101 for distcc's "missing option/operand").
    Usage { message: String, code: i32 },
}

/// A compiler command plus the environment edits the invocation implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// argv[0] = compiler name (basename for masquerade), then its arguments.
    pub argv: Vec<String>,
    /// `PATH` with the masquerade directory (and everything before it) removed,
    /// when masquerading; `None` when unchanged.
    pub trimmed_path: Option<OsString>,
}

/// Decide what to do from argv[0], the arguments and the current `PATH`.
/// `explicit` is true for `distcc`/`dportage-cc`.
pub fn parse_invocation(
    argv0: &OsString,
    args: &[OsString],
    explicit: bool,
    path: Option<&OsString>,
) -> ClientCommand {
    let shown = argv0.to_string_lossy();
    let args: Vec<String> = match args
        .iter()
        .map(|a| a.to_str().map(String::from).ok_or(a))
        .collect::<Result<_, _>>()
    {
        Ok(args) => args,
        Err(bad) => {
            return ClientCommand::Usage {
                message: format!(
                    "{shown}: argument {:?} is not valid UTF-8; rename the file or run the compiler directly",
                    bad.to_string_lossy()
                ),
                code: exitcode::BAD_ARGUMENTS,
            }
        }
    };
    if explicit {
        return parse_explicit(&shown, args);
    }
    let name = match Path::new(argv0).file_name().and_then(OsStr::to_str) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => {
            return ClientCommand::Usage {
                message: format!(
                    "{shown}: cannot tell which compiler to run from this program name; \
                     call it through a link named like the compiler (gcc, cc, …) or as `distcc COMPILER …`"
                ),
                code: exitcode::BAD_ARGUMENTS,
            }
        }
    };
    let cwd = std::env::current_dir().ok();
    let trimmed_path = path.and_then(|p| masquerade_path(argv0, &name, p, cwd.as_deref()));
    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(name);
    argv.extend(args);
    ClientCommand::Compile(Invocation { argv, trimmed_path })
}

fn parse_explicit(shown: &str, args: Vec<String>) -> ClientCommand {
    let Some(first) = args.first() else {
        return ClientCommand::Usage {
            message: format!(
                "{shown}: missing option/operand\nTry `{shown} --help' for more information."
            ),
            code: exitcode::BAD_ARGUMENTS,
        };
    };
    match first.as_str() {
        "--help" => return ClientCommand::Help,
        "--version" => return ClientCommand::Version,
        "--show-hosts" => return ClientCommand::ShowHosts,
        "-j" => return ClientCommand::Jobs,
        "--scan-includes" => {
            return ClientCommand::Usage {
                message: format!(
                    "{shown}: --scan-includes needs pump mode, which this client does not implement; \
                     use distcc-pump's own client for it"
                ),
                code: exitcode::BAD_ARGUMENTS,
            }
        }
        "--show-principal" => {
            return ClientCommand::Usage {
                message: format!(
                    "{shown}: --show-principal is for GSS-API authentication, which this client does not implement"
                ),
                code: exitcode::BAD_ARGUMENTS,
            }
        }
        _ => {}
    }
    // distcc's implicit mode: `distcc -c x.c` means `cc -c x.c`.
    let implicit = first.starts_with('-') || is_source(first) || is_object(first);
    let argv = if implicit {
        std::iter::once("cc".to_string()).chain(args).collect()
    } else {
        args
    };
    ClientCommand::Compile(Invocation {
        argv,
        trimmed_path: None,
    })
}

/// distcc's `dcc_is_object`: the extension is exactly `.o`.
fn is_object(path: &str) -> bool {
    match path.rfind('.') {
        Some(dot) => &path[dot..] == ".o",
        None => false,
    }
}

/// The `PATH` a masquerading client gives its children (distcc's
/// `dcc_support_masquerade`): everything after the element holding us.
/// `None` when nothing matched or nothing follows the match.
fn masquerade_path(
    argv0: &OsStr,
    name: &str,
    path: &OsStr,
    cwd: Option<&Path>,
) -> Option<OsString> {
    let argv0 = argv0.as_bytes();
    let find: Option<Vec<u8>> = match argv0.iter().rposition(|&b| b == b'/') {
        Some(slash) => {
            // distcc passes a zero length for "/gcc" and then uses the whole string.
            let dir = if slash == 0 { argv0 } else { &argv0[..slash] };
            Some(absolute_dir(dir, cwd?))
        }
        None => None,
    };
    let path = path.as_bytes();
    let mut start = 0;
    // A trailing empty element (after a final ':') is never examined.
    while start < path.len() {
        let end = path[start..]
            .iter()
            .position(|&b| b == b':')
            .map_or(path.len(), |at| start + at);
        let element = &path[start..end];
        let rest_start = (end + 1).min(path.len());
        let matched = match &find {
            Some(dir) => element == dir.as_slice(),
            None => {
                let mut candidate = element.to_vec();
                candidate.push(b'/');
                candidate.extend_from_slice(name.as_bytes());
                is_executable(Path::new(OsStr::from_bytes(&candidate)))
            }
        };
        if matched {
            let rest = &path[rest_start..];
            return (!rest.is_empty()).then(|| OsStr::from_bytes(rest).to_os_string());
        }
        start = rest_start.max(end + 1);
    }
    None
}

/// distcc's `dcc_abspath`: prefix the working directory to a relative path
/// (dropping one leading `./`) and remove `dir/../` pairs. No other cleaning.
fn absolute_dir(dir: &[u8], cwd: &Path) -> Vec<u8> {
    let mut buf: Vec<u8>;
    let search_from;
    if dir.first() == Some(&b'/') {
        buf = dir.to_vec();
        search_from = 0;
    } else {
        buf = cwd.as_os_str().as_bytes().to_vec();
        buf.push(b'/');
        search_from = buf.len() - 1;
        let rel = dir.strip_prefix(b"./").unwrap_or(dir);
        buf.extend_from_slice(rel);
    }
    let mut from = search_from;
    while let Some(at) = find_bytes(&buf[from.min(buf.len())..], b"/../").map(|p| p + from) {
        let slash = buf[..at].iter().rposition(|&b| b == b'/').unwrap_or(at);
        buf.drain(slash..at + 3);
        from = slash;
    }
    buf
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_executable(path: &Path) -> bool {
    // access(X_OK) follows symlinks; so does metadata().
    match std::fs::metadata(path) {
        Ok(meta) => meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

/// distcc found itself where it looked for the real compiler (exit code 111).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "distcc seems to have invoked itself recursively! A compiler found in PATH is \
     a link back to distcc/dportage: put the masquerade directory in PATH only once, \
     before the real compiler's, or call the real compiler by its full path"
)]
pub struct Recursion;

/// Recursion guard (`_DISTCC_SAFEGUARD`): `Err(Recursion)` when distcc invoked
/// itself; `Ok(true)` when this process must compile locally at once.
pub fn check_safeguard(level: Option<&str>, path_was_trimmed: bool) -> Result<bool, Recursion> {
    let level = match level {
        None => 0,
        // distcc: atoi(), and any value that reads as 0 counts as 1.
        Some(text) => match c_atoi(text) {
            0 => 1,
            n => n,
        },
    };
    if level - i64::from(path_was_trimmed) > 0 {
        return Err(Recursion);
    }
    Ok(level > 0)
}

/// C's `atoi`: leading blanks, an optional sign, digits; anything else ends it.
fn c_atoi(text: &str) -> i64 {
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if negative {
        -n
    } else {
        n
    }
}

/// The build triples of this client, as Debian's distcc 3.4 names them:
/// clang's `-target` value and the GNU prefix of cross-named gcc.
pub fn build_triples() -> (String, String) {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        other => other,
    };
    let vendor = if matches!(arch, "x86_64" | "i686") {
        "pc"
    } else {
        "unknown"
    };
    (
        format!("{arch}-{vendor}-linux-gnu"),
        format!("{arch}-linux-gnu"),
    )
}

/// Debian 3.4's compiler-name rewriting, applied unless `DISTCC_NO_REWRITE_CROSS`
/// is set: `cc`/`c++` resolved through `PATH` symlinks, `gcc`→`x86_64-linux-gnu-gcc`
/// when that exists in `PATH`, clang gets `-target TRIPLE`.
pub fn rewrite_compiler_name(argv: &mut Vec<String>, path: Option<&OsString>) {
    let own_exe = std::env::current_exe().ok();
    let (clang_triple, gnu_triple) = build_triples();
    rewrite_with(
        argv,
        path.map(OsString::as_os_str),
        own_exe.as_deref(),
        &clang_triple,
        &gnu_triple,
    );
}

/// [`rewrite_compiler_name`] with its inputs explicit (for tests).
pub fn rewrite_with(
    argv: &mut Vec<String>,
    path: Option<&OsStr>,
    own_exe: Option<&Path>,
    clang_triple: &str,
    gnu_triple: &str,
) {
    let Some(compiler) = argv.first().cloned() else {
        return;
    };
    let dirs = search_dirs(path, own_exe);

    // 1. cc / c++ → the gcc or clang their symlink names.
    let generic = match compiler.as_str() {
        "cc" => Some(("gcc", "clang")),
        "c++" => Some(("g++", "clang++")),
        _ => None,
    };
    if let Some((gnu, llvm)) = generic {
        if let Some(target) = resolve_generic(&compiler, &dirs, own_exe) {
            if target == gnu || target == llvm {
                argv[0] = target;
            }
        }
    }

    // 2. clang: tell it the target, as the server may be a cross compiler.
    let name = argv[0].as_str();
    let is_clang = name == "clang"
        || name.starts_with("clang-")
        || name == "clang++"
        || name.starts_with("clang++-");
    if is_clang && !argv.iter().any(|a| a == "-target") {
        argv.push("-target".to_string());
        argv.push(clang_triple.to_string());
    }

    // 3. gcc: the cross-named driver, when this machine has it.
    let name = argv[0].as_str();
    let is_gcc =
        name == "gcc" || name.starts_with("gcc-") || name == "g++" || name.starts_with("g++-");
    if is_gcc {
        let qualified = format!("{gnu_triple}-{name}");
        if dirs.iter().any(|d| is_executable(&d.join(&qualified))) {
            argv[0] = qualified;
        }
    }
}

/// `PATH` elements worth looking in: not empty, not a distcc masquerade
/// directory (its name contains `distcc`), not a directory of links to us.
fn search_dirs(path: Option<&OsStr>, own_exe: Option<&Path>) -> Vec<PathBuf> {
    let Some(path) = path else { return Vec::new() };
    let own = own_exe.and_then(|p| std::fs::canonicalize(p).ok());
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .filter(|dir| {
            !dir.as_os_str()
                .as_bytes()
                .windows(6)
                .any(|w| w == b"distcc")
        })
        .filter(|dir| !holds_link_to(dir, own.as_deref()))
        .collect()
}

/// Does `dir` hold a masquerade of ours: a compiler-named entry that resolves
/// to our own executable? Checked on the names the rewrite looks up.
fn holds_link_to(dir: &Path, own: Option<&Path>) -> bool {
    let Some(own) = own else { return false };
    ["cc", "c++", "gcc", "g++"].iter().any(|name| {
        std::fs::canonicalize(dir.join(name))
            .map(|p| p == own)
            .unwrap_or(false)
    })
}

/// distcc's `dcc_rewrite_generic_compiler`: find `cc`/`c++` in `dirs`; it must be
/// a symlink; read it, and read once more when that lands on the alternatives
/// link of the same name (Debian: `/etc/alternatives/cc`); the final target must
/// be executable. Returns its basename.
fn resolve_generic(command: &str, dirs: &[PathBuf], own_exe: Option<&Path>) -> Option<String> {
    let dir = dirs.iter().find(|d| is_executable(&d.join(command)))?;
    let link = dir.join(command);
    let meta = std::fs::symlink_metadata(&link).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let mut target = std::fs::read_link(&link).ok()?;
    let first = dir.join(&target);
    let is_alternatives = target
        .as_os_str()
        .as_bytes()
        .ends_with(format!("/alternatives/{command}").as_bytes());
    if is_alternatives
        && std::fs::symlink_metadata(&first)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    {
        target = std::fs::read_link(&first).ok()?;
    }
    let resolved = dir.join(&target);
    if !is_executable(&resolved) {
        return None;
    }
    if let (Some(own), Ok(real)) = (own_exe, std::fs::canonicalize(&resolved)) {
        if std::fs::canonicalize(own).is_ok_and(|o| o == real) {
            return None;
        }
    }
    target.file_name().and_then(OsStr::to_str).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn compile(cmd: ClientCommand) -> Invocation {
        match cmd {
            ClientCommand::Compile(inv) => inv,
            other => panic!("expected a compile, got {other:?}"),
        }
    }

    fn strings(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn explicit_and_implicit_modes() {
        let d = os("distcc");
        let rows = [
            ("gcc -c x.c", "gcc -c x.c"),
            ("-c x.c", "cc -c x.c"),
            ("x.c -o x", "cc x.c -o x"),
            ("x.o y.o", "cc x.o y.o"),
            ("x.cpp", "cc x.cpp"),
            ("/usr/bin/gcc -c x.c", "/usr/bin/gcc -c x.c"),
            ("ccache gcc -c x.c", "ccache gcc -c x.c"),
            ("x.h", "x.h"),
            ("gcc --help", "gcc --help"),
            ("gcc -j", "gcc -j"),
        ];
        for (given, want) in rows {
            let inv = compile(parse_invocation(&d, &args(given), true, None));
            assert_eq!(inv.argv, strings(want), "{given}");
            assert_eq!(inv.trimmed_path, None);
        }
    }

    #[test]
    fn distcc_options_only_as_first_argument() {
        let d = os("/usr/bin/distcc");
        let p = |a: &str| parse_invocation(&d, &args(a), true, None);
        assert_eq!(p("--help"), ClientCommand::Help);
        assert_eq!(p("--version"), ClientCommand::Version);
        assert_eq!(p("--show-hosts"), ClientCommand::ShowHosts);
        assert_eq!(p("-j"), ClientCommand::Jobs);
        assert_eq!(p("-j extra"), ClientCommand::Jobs);
        assert!(matches!(
            p("--scan-includes gcc -c x.c"),
            ClientCommand::Usage { code: 101, .. }
        ));
        assert!(matches!(
            p("--show-principal"),
            ClientCommand::Usage { code: 101, .. }
        ));
        assert_eq!(compile(p("-j4 -c x.c")).argv, strings("cc -j4 -c x.c"));
        match p("") {
            ClientCommand::Usage { message, code } => {
                assert_eq!(code, 101);
                assert!(message.contains("missing option/operand"), "{message}");
                assert!(message.contains("/usr/bin/distcc --help"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_utf8_arguments_are_a_usage_error() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(b"x\xff.c".to_vec());
        let r = parse_invocation(&os("distcc"), &[os("gcc"), os("-c"), bad], true, None);
        assert!(matches!(r, ClientCommand::Usage { code: 101, .. }), "{r:?}");
    }

    #[test]
    fn masquerade_by_name_trims_path_after_the_link_directory() {
        let t = tempfile::tempdir().unwrap();
        let masq = t.path().join("masq");
        let other = t.path().join("other");
        executable(&masq.join("gcc"));
        std::fs::create_dir_all(&other).unwrap();
        let path = format!(
            "/nonexistent:{}:{}:/usr/bin",
            masq.display(),
            other.display()
        );
        let inv = compile(parse_invocation(
            &os("gcc"),
            &args("-c x.c"),
            false,
            Some(&os(&path)),
        ));
        assert_eq!(inv.argv, strings("gcc -c x.c"));
        assert_eq!(
            inv.trimmed_path,
            Some(os(&format!("{}:/usr/bin", other.display())))
        );
        // The link directory is last: nothing follows it, PATH stays as it is.
        let path = format!("/nonexistent:{}", masq.display());
        let inv = compile(parse_invocation(
            &os("gcc"),
            &args("-c x.c"),
            false,
            Some(&os(&path)),
        ));
        assert_eq!(inv.trimmed_path, None);
        // Not found at all.
        let inv = compile(parse_invocation(
            &os("gcc"),
            &args("-c x.c"),
            false,
            Some(&os("/a:/b")),
        ));
        assert_eq!(inv.trimmed_path, None);
        let inv = compile(parse_invocation(&os("gcc"), &args("-c x.c"), false, None));
        assert_eq!(inv.trimmed_path, None);
    }

    #[test]
    fn masquerade_by_path_matches_the_element_as_a_string() {
        let cwd = Path::new("/home/u/src");
        let m = |argv0: &str, path: &str| {
            masquerade_path(OsStr::new(argv0), "gcc", OsStr::new(path), Some(cwd))
        };
        assert_eq!(
            m("/usr/lib/distcc/gcc", "/usr/lib/distcc:/usr/bin:/bin"),
            Some(os("/usr/bin:/bin"))
        );
        assert_eq!(
            m("/usr/lib/distcc/gcc", "/a:/usr/lib/distcc:/usr/bin"),
            Some(os("/usr/bin"))
        );
        // Same directory spelled differently: no match (string equality only).
        assert_eq!(m("/usr/lib/distcc/gcc", "/usr/lib/distcc/:/usr/bin"), None);
        assert_eq!(m("/usr/lib//distcc/gcc", "/usr/lib/distcc:/usr/bin"), None);
        // Relative: made absolute against the working directory, "./" dropped.
        assert_eq!(
            m("./bin/gcc", "/home/u/src/bin:/usr/bin"),
            Some(os("/usr/bin"))
        );
        assert_eq!(
            m("bin/gcc", "/home/u/src/bin:/usr/bin"),
            Some(os("/usr/bin"))
        );
        assert_eq!(
            m("../tools/gcc", "/home/u/tools:/usr/bin"),
            Some(os("/usr/bin"))
        );
        assert_eq!(
            m("/opt/x/../y/gcc", "/opt/y:/usr/bin"),
            Some(os("/usr/bin"))
        );
        assert_eq!(m("/usr/lib/distcc/gcc", "/usr/bin"), None);
        assert_eq!(m("/usr/lib/distcc/gcc", ""), None);
    }

    #[test]
    fn absolute_dir_like_distcc() {
        let cwd = Path::new("/w");
        let a = |d: &str| String::from_utf8(absolute_dir(d.as_bytes(), cwd)).unwrap();
        assert_eq!(a("/usr/lib/distcc"), "/usr/lib/distcc");
        assert_eq!(a("bin"), "/w/bin");
        assert_eq!(a("./bin"), "/w/bin");
        assert_eq!(a("."), "/w/.");
        assert_eq!(a("../x"), "/x");
        assert_eq!(a("a/b/../../c"), "/w/c");
        assert_eq!(a("/a/b/../c/../d"), "/a/d");
    }

    #[test]
    fn safeguard_levels() {
        assert_eq!(check_safeguard(None, false), Ok(false));
        assert_eq!(check_safeguard(None, true), Ok(false));
        assert_eq!(check_safeguard(Some("1"), true), Ok(true));
        assert!(check_safeguard(Some("1"), false).is_err());
        assert!(check_safeguard(Some("2"), true).is_err());
        // Set but not a number: level 1.
        assert_eq!(check_safeguard(Some(""), true), Ok(true));
        assert!(check_safeguard(Some("yes"), false).is_err());
        assert_eq!(check_safeguard(Some(" 1x"), true), Ok(true));
        assert_eq!(check_safeguard(Some("-1"), false), Ok(false));
        let e = check_safeguard(Some("1"), false).unwrap_err();
        assert!(e.to_string().contains("invoked itself recursively"), "{e}");
    }

    const CLANG_T: &str = "x86_64-pc-linux-gnu";
    const GNU_T: &str = "x86_64-linux-gnu";

    fn rewrite(cmd: &str, path: &Path, own: Option<&Path>) -> Vec<String> {
        let mut argv = strings(cmd);
        rewrite_with(&mut argv, Some(path.as_os_str()), own, CLANG_T, GNU_T);
        argv
    }

    #[test]
    fn gcc_gets_the_cross_name_when_it_exists() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        executable(&bin.join("x86_64-linux-gnu-gcc"));
        executable(&bin.join("x86_64-linux-gnu-g++-12"));
        let path = std::env::join_paths([bin.clone()]).unwrap();
        let r = |cmd: &str| rewrite(cmd, Path::new(&path), None);
        assert_eq!(r("gcc -c x.c"), strings("x86_64-linux-gnu-gcc -c x.c"));
        assert_eq!(
            r("g++-12 -c x.c"),
            strings("x86_64-linux-gnu-g++-12 -c x.c")
        );
        assert_eq!(r("g++ -c x.c"), strings("g++ -c x.c"));
        assert_eq!(r("gcc-12 -c x.c"), strings("gcc-12 -c x.c"));
        assert_eq!(r("/usr/bin/gcc -c x.c"), strings("/usr/bin/gcc -c x.c"));
        assert_eq!(r("tcc -c x.c"), strings("tcc -c x.c"));
    }

    #[test]
    fn clang_gets_a_target() {
        let t = tempfile::tempdir().unwrap();
        let r = |cmd: &str| rewrite(cmd, t.path(), None);
        assert_eq!(
            r("clang -c x.c -o x.o"),
            strings("clang -c x.c -o x.o -target x86_64-pc-linux-gnu")
        );
        assert_eq!(
            r("clang++-14 -c x.cc"),
            strings("clang++-14 -c x.cc -target x86_64-pc-linux-gnu")
        );
        assert_eq!(
            r("clang -target arm -c x.c"),
            strings("clang -target arm -c x.c")
        );
        // As in 3.4, only the separate -target counts.
        assert_eq!(
            r("clang --target=arm -c x.c"),
            strings("clang --target=arm -c x.c -target x86_64-pc-linux-gnu")
        );
        assert_eq!(r("clangd x.c"), strings("clangd x.c"));
    }

    #[test]
    fn cc_follows_its_symlink_and_the_alternatives_link() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let bin = root.join("bin");
        let alternatives = root.join("etc/alternatives");
        executable(&bin.join("gcc-12"));
        executable(&bin.join("clang-14"));
        executable(&bin.join("x86_64-linux-gnu-gcc"));
        std::fs::create_dir_all(&alternatives).unwrap();
        symlink("gcc-12", bin.join("gcc")).unwrap();
        symlink(bin.join("gcc"), alternatives.join("cc")).unwrap();
        symlink(alternatives.join("cc"), bin.join("cc")).unwrap();
        symlink("clang-14", bin.join("clang")).unwrap();
        symlink(bin.join("clang"), alternatives.join("c++")).unwrap();
        symlink(alternatives.join("c++"), bin.join("c++")).unwrap();
        let r = |cmd: &str| rewrite(cmd, &bin, None);
        // cc → /etc/alternatives/cc → …/gcc: "gcc", then its cross name.
        assert_eq!(r("cc -c x.c"), strings("x86_64-linux-gnu-gcc -c x.c"));
        // c++ → alternatives → clang: not clang++, so unchanged.
        assert_eq!(r("c++ -c x.cc"), strings("c++ -c x.cc"));

        // A plain file named cc is not rewritten.
        let plain = root.join("plain");
        executable(&plain.join("cc"));
        assert_eq!(rewrite("cc -c x.c", &plain, None), strings("cc -c x.c"));

        // cc → clang directly.
        let direct = root.join("direct");
        std::fs::create_dir_all(&direct).unwrap();
        symlink(bin.join("clang"), direct.join("cc")).unwrap();
        assert_eq!(
            rewrite("cc -c x.c", &direct, None),
            strings("clang -c x.c -target x86_64-pc-linux-gnu")
        );

        // A dangling link is not followed.
        let dangling = root.join("dangling");
        std::fs::create_dir_all(&dangling).unwrap();
        symlink(root.join("nowhere/gcc"), dangling.join("cc")).unwrap();
        assert_eq!(rewrite("cc -c x.c", &dangling, None), strings("cc -c x.c"));
    }

    #[test]
    fn masquerade_directories_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let real = root.join("real");
        executable(&real.join("gcc"));
        symlink("gcc", real.join("cc")).unwrap();
        // A distcc masquerade directory whose cc links to something else.
        let masq = root.join("lib/distcc");
        executable(&root.join("bin/distcc"));
        std::fs::create_dir_all(&masq).unwrap();
        symlink(root.join("bin/distcc"), masq.join("cc")).unwrap();
        // Our own masquerade: cc links to "our" executable.
        let ours = root.join("lib/ours");
        let own_exe = root.join("bin/dportage");
        executable(&own_exe);
        std::fs::create_dir_all(&ours).unwrap();
        symlink(&own_exe, ours.join("cc")).unwrap();

        let path = std::env::join_paths([masq.clone(), ours.clone(), real.clone()]).unwrap();
        let mut argv = strings("cc -c x.c");
        rewrite_with(&mut argv, Some(&path), Some(&own_exe), CLANG_T, GNU_T);
        assert_eq!(argv, strings("gcc -c x.c"));

        // Without knowing our own executable the link to it is taken: no rewrite.
        let path = std::env::join_paths([ours, real]).unwrap();
        let mut argv = strings("cc -c x.c");
        rewrite_with(&mut argv, Some(&path), None, CLANG_T, GNU_T);
        assert_eq!(argv, strings("cc -c x.c"));
    }

    #[test]
    fn triples_for_this_machine() {
        let (clang, gnu) = build_triples();
        assert!(clang.ends_with("-linux-gnu") && gnu.ends_with("-linux-gnu"));
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(clang, "x86_64-pc-linux-gnu");
            assert_eq!(gnu, "x86_64-linux-gnu");
        }
    }

    #[test]
    fn atoi() {
        assert_eq!(c_atoi("12"), 12);
        assert_eq!(c_atoi("  +3z"), 3);
        assert_eq!(c_atoi("-7"), -7);
        assert_eq!(c_atoi("x"), 0);
        assert_eq!(c_atoi(""), 0);
        assert_eq!(c_atoi("99999999999999999999999"), i64::MAX);
    }
}
