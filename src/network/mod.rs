//! The shared compile network: the coordinator (HTTP, durable store, selection,
//! blacklist, status page), daemon heartbeats, identity keys, and the
//! environment printer behind `dportage` / `dportage CMD…`.

use std::ffi::OsString;

/// `dportage coordinator ARGS…`.
pub fn coordinator_main(args: Vec<OsString>) -> i32 {
    let _ = args;
    eprintln!("dportage coordinator: not implemented yet");
    crate::exitcode::DISTCC_FAILED
}

/// `dportage [--coordinator URL] [--shell sh|csh|fish]` (print the environment) and
/// `dportage [OPTIONS] CMD ARGS…` (run CMD in it).
pub fn env_main(args: Vec<OsString>) -> i32 {
    let _ = args;
    eprintln!("dportage: network environment not implemented yet");
    crate::exitcode::DISTCC_FAILED
}
