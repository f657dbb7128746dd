//! Member tooling: `dportage` with no command prints the network environment
//! (like `ssh-agent`), `dportage CMD ARGS…` runs CMD in it. A member is a
//! person whose own daemon serves the network; this role asks the coordinator
//! for hosts through the network contract and never imports another role.

pub mod env;

use std::ffi::OsString;

/// `dportage [--coordinator URL] [--shell sh|csh|fish]` (print the environment) and
/// `dportage [OPTIONS] CMD ARGS…` (run CMD in it).
pub fn env_main(args: Vec<OsString>) -> i32 {
    env::env_main(args)
}
