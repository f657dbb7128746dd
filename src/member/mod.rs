//! Member tooling: `dportage` with no command prints the network environment
//! (like `ssh-agent`), `dportage CMD ARGS…` runs CMD in it. A member is a
//! person whose own daemon serves the network; this role asks the coordinator
//! for hosts through the network contract and never imports another role.
//! `dportage status` shows the coordinator's detailed status to a member.

pub mod env;
pub mod masquerade;
pub mod membership;
pub mod network_status;

use std::ffi::OsString;

/// `dportage [--coordinator URL] [--coordinator-key HEX] [--shell sh|csh|fish]` (print
/// the environment) and
/// `dportage [OPTIONS] CMD ARGS…` (run CMD in it).
/// `dportage status …` is the member's view of the coordinator;
/// `dportage membership-token --for ID` and `dportage unlink ID` share and
/// end a daemon's membership.
pub fn env_main(mut args: Vec<OsString>) -> i32 {
    if args.first().is_some_and(|a| a == "status") {
        args.remove(0);
        return network_status::status_main(args);
    }
    if args.first().is_some_and(|a| a == "membership-token") {
        args.remove(0);
        return membership::token_main(args);
    }
    if args.first().is_some_and(|a| a == "unlink") {
        args.remove(0);
        return membership::unlink_main(args);
    }
    env::env_main(args)
}
