//! How the client was invoked: distcc's CLI (`distcc [COMPILER] ARGS…`),
//! masquerade links with `PATH` trimming, the recursion guard, and Debian 3.4's
//! compiler-name rewriting (spec §8.1, §8.2, §8.4).

use std::ffi::OsString;

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
    let _ = (argv0, args, explicit, path);
    todo!()
}

/// Recursion guard (`_DISTCC_SAFEGUARD`): `Err(exit code 111 message)` when distcc
/// invoked itself; `Ok(true)` when this process must compile locally at once.
pub fn check_safeguard(level: Option<&str>, path_was_trimmed: bool) -> Result<bool, String> {
    let _ = (level, path_was_trimmed);
    todo!()
}

/// Debian 3.4's compiler-name rewriting, applied unless `DISTCC_NO_REWRITE_CROSS`
/// is set: `cc`/`c++` resolved through `PATH` symlinks, `gcc`→`x86_64-linux-gnu-gcc`
/// when that exists in `PATH`, clang gets `-target TRIPLE`.
pub fn rewrite_compiler_name(argv: &mut Vec<String>, path: Option<&OsString>) {
    let _ = (argv, path);
    todo!()
}
