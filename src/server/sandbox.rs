//! The compiler sandbox. The daemon runs the compiler through its own binary
//! (`dportage __sandbox-exec …`) so the restrictions (Landlock, rlimits, nice,
//! no-new-privs) are applied in a fresh single-threaded process before `exec`,
//! never between fork and exec of the multi-threaded daemon.

use std::ffi::OsString;

/// Entry point of the trampoline: `dportage __sandbox-exec ARGS…`. Applies the
/// restrictions described by ARGS and execs the compiler; returns only on error.
pub fn exec_main(args: Vec<OsString>) -> i32 {
    let _ = args;
    eprintln!("dportage: sandbox trampoline not implemented yet");
    crate::exitcode::COMPILER_MISSING
}
