//! `distccd` / `dportage serve`: the job server.

pub mod job;
pub mod sandbox;

use std::ffi::OsString;

/// Entry point for `distccd ARGS…` and `dportage serve ARGS…`. `args` excludes
/// the program name. Returns the process exit code.
pub fn serve_main(args: Vec<OsString>) -> i32 {
    let _ = args;
    eprintln!("dportage serve: not implemented yet");
    crate::exitcode::DISTCC_FAILED
}
