//! The client: `distcc`, `dportage-cc`, and masquerade links named like compilers.

pub mod hostsource;
pub mod invocation;
pub mod slots;

use std::ffi::OsString;

/// Entry point for the client. `argv0` is the name the binary was invoked
/// under (as given, possibly with a directory); `args` excludes it.
/// `explicit` is true for `distcc`/`dportage-cc` (distcc's CLI), false for
/// masquerade links (`gcc`, `cc`, …). Returns the process exit code.
pub fn client_main(argv0: OsString, args: Vec<OsString>, explicit: bool) -> i32 {
    let _ = (argv0, args, explicit);
    eprintln!("dportage: client not implemented yet");
    crate::exitcode::DISTCC_FAILED
}
