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
        Role::Server => dportage::server::serve_main_as(&name, args),
        Role::ExplicitClient if wants_help(&args) => {
            print!("{}", dportage::tools::docs::cc_help(&name));
            0
        }
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

/// `--help` or `-h` where the client would take it: first.
fn wants_help(args: &[OsString]) -> bool {
    args.first().is_some_and(|a| a == "--help" || a == "-h")
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
            dportage::server::serve_main_as("dportage serve", args)
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
        Some(dportage::server::heartbeat_agent::SEND_REPORTS_COMMAND) => {
            args.remove(0);
            dportage::client::upload::send_reports_main(args)
        }
        Some("cc") => {
            args.remove(0);
            if wants_help(&args) {
                print!("{}", dportage::tools::docs::cc_help("dportage cc"));
                return 0;
            }
            dportage::client::client_main(argv0, args, true)
        }
        Some("completions") => {
            args.remove(0);
            dportage::tools::docs::completions_main(args)
        }
        Some("man") => {
            args.remove(0);
            dportage::tools::docs::man_main(args)
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
        Some("cache") => {
            args.remove(0);
            dportage::client::cache_main(args)
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
            print!("{}", dportage::tools::docs::top_level_help());
            0
        }
        // No command, options for the environment printer, or CMD ARGS… to run in it.
        _ => dportage::member::env_main(args),
    }
}
