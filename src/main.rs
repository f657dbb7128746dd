//! argv[0] and subcommand dispatch only; every role lives in the library.

use std::ffi::OsString;
use std::path::Path;

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = if args.is_empty() {
        OsString::from("dportage")
    } else {
        args.remove(0)
    };
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = match role_for(&name) {
        Role::Server => dportage::server::serve_main(args),
        Role::ExplicitClient => dportage::client::client_main(argv0, args, true),
        Role::Masquerade => dportage::client::client_main(argv0, args, false),
        Role::Dportage => dportage_main(argv0, args),
    };
    std::process::exit(code);
}

enum Role {
    Server,
    ExplicitClient,
    Masquerade,
    Dportage,
}

fn role_for(name: &str) -> Role {
    if name == "distccd" || name == "dportage-serve" {
        Role::Server
    } else if name.contains("distcc") || name == "dportage-cc" {
        Role::ExplicitClient
    } else if name == "dportage" || name.starts_with("dportage") {
        Role::Dportage
    } else {
        Role::Masquerade
    }
}

/// `dportage SUBCOMMAND …`.
fn dportage_main(argv0: OsString, mut args: Vec<OsString>) -> i32 {
    let sub = args.first().map(|a| a.to_string_lossy().into_owned());
    match sub.as_deref() {
        Some("serve") => {
            args.remove(0);
            dportage::server::serve_main(args)
        }
        Some("__sandbox-exec") => {
            args.remove(0);
            dportage::server::sandbox::exec_main(args)
        }
        Some("__zygote-exec") => {
            args.remove(0);
            dportage::server::sandbox::zygote_exec_main(args)
        }
        Some("__wanproxy") => {
            args.remove(0);
            dportage::tools::wanproxy::wanproxy_main(args)
        }
        Some("__frame") => {
            args.remove(0);
            dportage::tools::framer::frame_main(args)
        }
        Some("__liar") => {
            args.remove(0);
            dportage::tools::adversary::liar_main(args)
        }
        Some("cc") => {
            args.remove(0);
            dportage::client::client_main(argv0, args, true)
        }
        Some("--version") | Some("-V") => {
            // distcc's shape (name, version, platform; protocols and port), so
            // a script that reads `distcc --version` can read this one too.
            println!(
                "dportage {} {}\n  (protocols 1 and 2) (default port 3632)\n  \
                 distcc 3.4's client and server; zstd with `,zstd` dportage hosts",
                env!("CARGO_PKG_VERSION"),
                dportage::logging::host_triple()
            );
            0
        }
        Some("demo") => {
            args.remove(0);
            dportage::tools::demo::demo_main(args)
        }
        Some("monitor") => {
            args.remove(0);
            dportage::monitor::monitor_main(args)
        }
        Some("coordinator") => {
            args.remove(0);
            dportage::coordinator::coordinator_main(args)
        }
        Some("--help") | Some("-h") => {
            print!("{}", USAGE);
            0
        }
        // No command, options for the environment printer, or CMD ARGS… to run in it.
        _ => dportage::member::env_main(args),
    }
}

const USAGE: &str = "\
dportage: distcc 3.4-compatible compile client and server

Usage:
  dportage serve [DISTCCD OPTIONS]   run the job server (same as `distccd`)
  dportage cc COMPILER ARGS...       compile through the host list (same as `distcc`)
  dportage coordinator [OPTIONS]     run the network coordinator (HTTP)
  dportage demo [--hosts N] [-v]     a whole network on 127.0.0.x, one host lying
  dportage                           print the network environment (like ssh-agent)
  dportage CMD ARGS...               run CMD with the network environment
  dportage status [--json]           what the coordinator says of the network (members only)
  distcc COMPILER ARGS...            (through a link named distcc or dportage-cc)
  gcc ARGS...                        (through a masquerade link named like a compiler)
";
