//! Member tooling: `dportage` with no command prints the network environment
//! (like `ssh-agent`), `dportage CMD ARGS…` runs CMD in it. A member is a
//! person whose own daemon serves the network; this role asks the coordinator
//! for hosts through the network contract and never imports another role.
//! `dportage status` shows the coordinator's detailed status to a member.

pub mod cli;
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
    // These parsers are hand-written; their help comes from `cli`'s
    // descriptions (kept in step with them by its tests).
    let sub = args.first().and_then(|a| a.to_str()).unwrap_or("");
    let described = match sub {
        "status" => Some(cli::status as fn() -> clap::Command),
        "membership-token" => Some(cli::membership_token as fn() -> clap::Command),
        "unlink" => Some(cli::unlink as fn() -> clap::Command),
        _ => None,
    };
    if let Some(describe) = described {
        if cli::wants_help(&args[1..]) {
            let cmd = describe();
            let name = format!("dportage {}", cmd.get_name());
            print!("{}", cli::help_text(cmd.bin_name(name)));
            return 0;
        }
    }
    if env::parse_args(&args).is_ok_and(|o| o.help) {
        print!("{}", cli::help_text(cli::env_printer()));
        return 0;
    }
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
