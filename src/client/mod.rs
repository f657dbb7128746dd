//! The client: `distcc`, `dportage-cc`, and masquerade links named like compilers.
//!
//! `compile` holds the compile path; `remote` one job on one server (async, so a
//! job can later go to several hosts at once); `preprocess`, `local` and
//! `output` are the process and file edges; `slots`, `hostsource` and
//! `invocation` implement distcc 3.4's conventions shared with the real client.

mod cleanup;
pub mod compile;
pub mod dual;
pub mod evidence;
mod fallback;
pub mod hostsource;
pub mod invocation;
pub mod kept_inputs;
pub mod local;
pub mod monitor_state;
pub mod output;
pub mod preprocess;
pub mod remote;
pub mod result_cache;
pub mod settings;
pub mod slots;
mod trace;
pub mod upload;

use std::ffi::OsString;

use invocation::{parse_invocation, ClientCommand};
use settings::Settings;

/// Entry point for the client. `argv0` is the name the binary was invoked
/// under (as given, possibly with a directory); `args` excludes it.
/// `explicit` is true for `distcc`/`dportage-cc` (distcc's CLI), false for
/// masquerade links (`gcc`, `cc`, …). Returns the process exit code.
pub fn client_main(argv0: OsString, args: Vec<OsString>, explicit: bool) -> i32 {
    let settings = Settings::from_env();
    trace::init(&settings);
    let path = std::env::var_os("PATH");
    match parse_invocation(&argv0, &args, explicit, path.as_ref()) {
        ClientCommand::Compile(invocation) => compile::compile(invocation, &settings),
        ClientCommand::ShowHosts => show_hosts(),
        ClientCommand::Jobs => show_jobs(),
        ClientCommand::Version => {
            print!("{}", version_text());
            0
        }
        ClientCommand::Help => {
            print!("{}{}", version_text(), HELP);
            0
        }
        ClientCommand::Usage { message, code } => {
            eprintln!("{message}");
            code
        }
    }
}

/// `dportage cache stats` and `dportage cache audit [--delete]`.
pub fn cache_main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut settings = Settings::from_env();
    match args.first().map(String::as_str) {
        Some("audit") => result_cache::audit_main(&args[1..], &settings),
        Some("key") if args.len() > 1 => {
            // The compile path itself, stopped where the key is known.
            trace::init(&settings);
            settings.cache_explain = true;
            let path = std::env::var_os("PATH");
            let argv0 = OsString::from("dportage");
            let rest: Vec<OsString> = args[1..].iter().map(Into::into).collect();
            match parse_invocation(&argv0, &rest, true, path.as_ref()) {
                ClientCommand::Compile(invocation) => compile::compile(invocation, &settings),
                _ => {
                    eprintln!("dportage cache key: give a compile: COMPILER ARGS...");
                    2
                }
            }
        }
        Some("stats") if args.len() == 1 => result_cache::stats_main(&settings),
        Some("--help") | Some("-h") | None => {
            print!("{}", result_cache::CACHE_HELP);
            i32::from(args.is_empty()) * 2
        }
        Some(other) => {
            eprintln!(
                "dportage cache: unknown command {other:?}\n{}",
                result_cache::CACHE_HELP
            );
            2
        }
    }
}

/// `--show-hosts`: the host entries, one per line, as written.
fn show_hosts() -> i32 {
    match hostsource::load_host_list() {
        Ok(list) => {
            for host in &list.hosts {
                println!("{}", host.verbatim);
            }
            0
        }
        Err(e) => {
            tracing::error!("cannot read the host list: {e}");
            crate::exitcode::BAD_HOSTSPEC
        }
    }
}

/// `-j`: how many jobs the host list can take at once.
fn show_jobs() -> i32 {
    match hostsource::load_host_list() {
        Ok(list) => {
            println!("{}", list.total_slots());
            0
        }
        Err(e) => {
            tracing::error!("cannot read the host list: {e}");
            crate::exitcode::BAD_HOSTSPEC
        }
    }
}

fn version_text() -> String {
    crate::logging::distcc_version_text("distcc")
}

const HELP: &str = "
Usage:
   distcc [--scan-includes] [COMPILER] [compile options] -o OBJECT -c SOURCE
   distcc [--help|--version|--show-hosts|-j]

Options:
   COMPILER                   defaults to \"cc\"
   --help                     explain usage, and exit
   --version                  show version, and exit
   --show-hosts               show host list, and exit
   -j                         calculate the concurrency level from the host list

Environment variables:
   DISTCC_HOSTS=HOSTSPEC ...  hosts to compile on; else $DISTCC_DIR/hosts,
                              ~/.distcc/hosts, /etc/distcc/hosts
   DISTCC_VERBOSE=1           explain what happens to each job on stderr
   DISTCC_LOG=FILE            write messages to FILE instead of stderr
   DISTCC_FALLBACK=0          never compile locally after a failure to distribute
   DISTCC_SKIP_LOCAL_RETRY=1  trust a remote compile error, do not retry locally
   DISTCC_IO_TIMEOUT=SECS     network inactivity timeout (300)
   DISTCC_BACKOFF_PERIOD=SECS avoid a failed host this long (60; 0 = never)
   DISTCC_PAUSE_TIME_MSEC=MS  wait between tries when every slot is busy (1000)
   DISTCC_SAVE_TEMPS=1        keep temporary files
   DISTCC_DIR=DIR             state directory (~/.distcc)
   DISTCC_NO_REWRITE_CROSS=1  do not rewrite the compiler name
   TMPDIR=DIR                 temporary files (/tmp)

Host specifications:
   localhost                  run jobs on this machine (2 at a time, or localhost/N)
   HOST[:PORT][/LIMIT]        TCP connection to distccd, port 3632 by default
   HOST[:PORT][/LIMIT],lzo    the same, with compression (protocol 2)
   HOST[:PORT][/LIMIT],zstd   a dportage server, with zstd compression (not distccd)
   ...,verify                 a network host: used only with DPORTAGE_REDUNDANCY >= 2
                              (distcc 3.4 rejects the list and compiles locally)
   --localslots=N             local compiles at once (4)
   --localslots_cpp=N         local preprocessor runs at once (8)
Not supported by this client: SSH hosts (USER@HOST), ,auth, pump mode (,cpp is
accepted and served by preprocessing locally with protocol 2), +zeroconf.
";
