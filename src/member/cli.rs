//! What the member's commands accept, as clap `Command`s: `dportage`'s
//! environment printer (`dportage [OPTIONS] [CMD ARGS…]`), `status`,
//! `membership-token` and `unlink`. Those commands are parsed by hand (the
//! printer stops at the first word that is not an option: that is CMD), so
//! these descriptions only render `--help` here, and completions and manual
//! pages in `tools::docs`; the tests below keep them and the hand parsers in
//! step. [`VARIABLES`] documents every `DPORTAGE_*` variable the program reads.

use clap::builder::PossibleValue;
use clap::{Arg, ArgAction, Command, ValueHint};

/// One environment variable: its name, the shape of its value, what it does,
/// and whether the compile client (`distcc`, `dportage cc`, masquerade links)
/// reads it.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    pub value: &'static str,
    pub help: &'static str,
    pub client: bool,
}

const fn var(
    name: &'static str,
    value: &'static str,
    help: &'static str,
    client: bool,
) -> Variable {
    Variable {
        name,
        value,
        help,
        client,
    }
}

/// Every `DPORTAGE_*` variable the code reads (a unit test scans `src/` for
/// new ones).
pub const VARIABLES: &[Variable] = &[
    var(
        "DPORTAGE_COORDINATOR",
        "URL",
        "the network's coordinator: --coordinator's default; set by dportage for CMD; \
         the client reports mismatches there",
        true,
    ),
    var(
        "DPORTAGE_DIR",
        "DIR",
        "identity, pinned coordinator keys, host list, latency, host speed, evidence \
         and excluded hosts (default ~/.dportage if it exists, else the machine-wide \
         directory if you may write it, else ~/.dportage)",
        true,
    ),
    var(
        "DPORTAGE_SYSTEM_DIR",
        "DIR",
        "the machine-wide directory shared by the dportage group (/var/lib/dportage): \
         used without DPORTAGE_DIR and ~/.dportage, e.g. by portage's builds",
        true,
    ),
    var(
        "DPORTAGE_PORTAGE_DISTCC_DIR",
        "DIR",
        "portage's distcc masquerade directory to check (default: each of \
         /usr/lib64/distcc/bin, /usr/lib/distcc/bin, /usr/libexec/distcc/bin that exists); \
         dportage refuses if its links run a client that does not verify",
        false,
    ),
    var(
        "DPORTAGE_MEMBERSHIP",
        "FILE",
        "a daemon's membership token to present, tried before DIR/membership.json, \
         /var/lib/dportage/membership.json and /etc/dportage/membership.json",
        false,
    ),
    var(
        "DPORTAGE_CACHE",
        "0|1",
        "the verified result cache (default 1): 0 neither looks jobs up in DIR/cache and \
         the network's index nor keeps results (dportage --no-cache prints it)",
        true,
    ),
    var(
        "DPORTAGE_CACHE_SIZE",
        "BYTES",
        "what DIR/cache keeps at most, least recently used dropped first (K, M, G \
         suffixes; default 1G)",
        true,
    ),
    var(
        "DPORTAGE_HOST_LIST",
        "FILE",
        "the coordinator's signed host list (set by dportage): verified jobs draw \
         their hosts from it, only while its signature checks out",
        true,
    ),
    var(
        "DPORTAGE_REDUNDANCY",
        "N",
        "hosts that must agree on each job: 1 (plain distcc) to 9 (set by dportage \
         from the coordinator)",
        true,
    ),
    var(
        "DPORTAGE_SPOTCHECK",
        "F",
        "share of verified jobs also compiled here and compared, 0 to 1 (default 0; \
         dportage sets 0.02)",
        true,
    ),
    var(
        "DPORTAGE_SPOT_CHECK",
        "F",
        "the same as DPORTAGE_SPOTCHECK (read when that is unset)",
        true,
    ),
    var(
        "DPORTAGE_HEDGE_MS",
        "MS",
        "a host still busy max(2 x first, first + MS) after the first result is \
         hedged to another (default 1000)",
        true,
    ),
    var(
        "DPORTAGE_REPLY_PACE_WINDOW",
        "SECS",
        "a reply that has started must keep arriving at DPORTAGE_REPLY_MIN_RATE, \
         averaged over this window (default 10)",
        true,
    ),
    var(
        "DPORTAGE_REPLY_MIN_RATE",
        "BYTES",
        "bytes a second a started reply must average (default 16384)",
        true,
    ),
    var(
        "DPORTAGE_REPLY_TIMEOUTS",
        "N",
        "the whole reply within N x DISTCC_IO_TIMEOUT of sending the source (default 4)",
        true,
    ),
    var(
        "DPORTAGE_INCLUDE_UNCONFINED",
        "1",
        "also ask for hosts that run jobs without a sandbox",
        false,
    ),
    var(
        "DPORTAGE_CA_FILE",
        "FILE",
        "extra CA certificates (PEM) to trust for an https coordinator, besides the \
         system's (SSL_CERT_FILE, SSL_CERT_DIR)",
        false,
    ),
    var(
        "DPORTAGE_VERBOSE",
        "1",
        "the environment printer logs what it does on stderr",
        false,
    ),
];

/// `NAME=VALUE  help` lines, aligned, for `--help` and the manual.
pub fn variable_lines(vars: &[(&str, &str, &str)]) -> String {
    let width = vars
        .iter()
        .map(|(n, v, _)| n.len() + v.len() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, value, help) in vars {
        let left = format!("{name}={value}");
        out.push_str(&format!("  {left:<width$}  {help}\n"));
    }
    out
}

fn dportage_variables(filter: impl Fn(&Variable) -> bool) -> String {
    let vars: Vec<(&str, &str, &str)> = VARIABLES
        .iter()
        .filter(|v| filter(v))
        .map(|v| (v.name, v.value, v.help))
        .collect();
    variable_lines(&vars)
}

/// The environment printer's `Environment:` section.
pub fn env_printer_after_help() -> String {
    format!(
        "Environment:\n{}\n\
         Printed (or given to CMD): DISTCC_HOSTS, DPORTAGE_REDUNDANCY, DPORTAGE_SPOTCHECK,\n\
         DPORTAGE_COORDINATOR, DPORTAGE_HOST_LIST, FEATURES and MAKEOPTS. CC and CXX\n\
         name the compilers to match when --compiler is not given (default cc, c++).\n",
        dportage_variables(|_| true)
    )
}

/// `dportage [OPTIONS] [CMD ARGS…]`: the environment printer.
pub fn env_printer() -> Command {
    Command::new("dportage")
        .about(
            "Ask the coordinator for hosts with this machine's toolchain and print them \
             as shell lines to eval (like ssh-agent), or run CMD with them",
        )
        .override_usage(
            "dportage [OPTIONS]             print the network environment\n       \
             dportage [OPTIONS] CMD ARGS...  run CMD in it",
        )
        .disable_version_flag(true)
        .arg(
            Arg::new("coordinator")
                .long("coordinator")
                .value_name("URL")
                .env("DPORTAGE_COORDINATOR")
                .hide_env_values(true)
                .value_hint(ValueHint::Url)
                .help("The coordinator, https://HOST[:PORT] (http:// on loopback or a trusted network)"),
        )
        .arg(
            Arg::new("coordinator-key")
                .long("coordinator-key")
                .value_name("HEX")
                .help(
                    "The coordinator's public key (64 hex digits) instead of trusting the key \
                     it presents at first contact",
                ),
        )
        .arg(
            Arg::new("shell")
                .long("shell")
                .value_name("SHELL")
                .value_parser([
                    PossibleValue::new("sh").aliases(["bash", "zsh", "dash", "ksh"]),
                    PossibleValue::new("csh").alias("tcsh"),
                    PossibleValue::new("fish"),
                ])
                .help("Syntax of the printed lines [default: sh]"),
        )
        .arg(
            Arg::new("sh")
                .short('s')
                .action(ArgAction::SetTrue)
                .help("The same as --shell sh (like ssh-agent -s)"),
        )
        .arg(
            Arg::new("csh")
                .short('c')
                .action(ArgAction::SetTrue)
                .help("The same as --shell csh (like ssh-agent -c)"),
        )
        .arg(
            Arg::new("compiler")
                .long("compiler")
                .value_name("NAME")
                .action(ArgAction::Append)
                .value_hint(ValueHint::CommandName)
                .help("A compiler whose toolchain the hosts must have; repeatable [default: $CC and $CXX, or cc and c++]"),
        )
        .arg(
            Arg::new("max-hosts")
                .long("max-hosts")
                .value_name("N")
                .help("Hosts to put in DISTCC_HOSTS, 1 to 64 [default: 10]"),
        )
        .arg(
            Arg::new("no-cache")
                .long("no-cache")
                .action(ArgAction::SetTrue)
                .help("Print DPORTAGE_CACHE=0: CMD's jobs neither use nor fill the result cache"),
        )
        .arg(
            Arg::new("command")
                .value_name("CMD")
                .num_args(1..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_hint(ValueHint::CommandWithArguments)
                .help("Run CMD ARGS... with the environment instead of printing it (-- before CMD if it starts with -)"),
        )
        .after_help(env_printer_after_help())
}

fn coordinator_arg() -> Arg {
    Arg::new("coordinator")
        .long("coordinator")
        .value_name("URL")
        .env("DPORTAGE_COORDINATOR")
        .hide_env_values(true)
        .value_hint(ValueHint::Url)
        .help("The coordinator")
}

const IDENTITY_FOOTER: &str = "Environment:\n  \
    DPORTAGE_DIR=DIR  the identity requests are signed with (default ~/.dportage)\n";

/// `dportage status [--coordinator URL] [--json]`.
pub fn status() -> Command {
    Command::new("status")
        .about(
            "What the coordinator says of the network: hosts, toolchains, blacklist, \
             recent events (members and admin keys only)",
        )
        .arg(coordinator_arg())
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the coordinator's answer as JSON"),
        )
        .after_help(IDENTITY_FOOTER)
}

/// `dportage membership-token --for ID`.
pub fn membership_token() -> Command {
    Command::new("membership-token")
        .about(
            "Print a membership token for one person, signed by this daemon's identity \
             (run as the daemon's user); valid 7 days",
        )
        .arg(
            Arg::new("for")
                .long("for")
                .value_name("ID")
                .required(true)
                .help("The person's identity (their identity.pub, 64 hex digits)"),
        )
        .after_help(
            "The person saves the token as membership.json in their DPORTAGE_DIR, or points\n\
             DPORTAGE_MEMBERSHIP at it.\n\n\
             Environment:\n  DPORTAGE_DIR=DIR  the daemon's identity (default ~/.dportage)\n",
        )
}

/// `dportage unlink PERSON [--daemon ID] [--coordinator URL]`.
pub fn unlink() -> Command {
    Command::new("unlink")
        .about("End a person's link to a daemon (signed by the daemon, or by the person)")
        .arg(
            Arg::new("person")
                .value_name("PERSON")
                .required(true)
                .help("The person's identity (64 hex digits)"),
        )
        .arg(
            Arg::new("daemon")
                .long("daemon")
                .value_name("ID")
                .help("The daemon's identity [default: this identity]"),
        )
        .arg(coordinator_arg())
        .after_help(IDENTITY_FOOTER)
}

/// `--help` or `-h` among `args`.
pub fn wants_help(args: &[std::ffi::OsString]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// The help text of `cmd`, plain (no terminal styles).
pub fn help_text(mut cmd: Command) -> String {
    cmd.render_help().to_string()
}

#[cfg(test)]
pub(crate) mod sync {
    //! Keeping a clap description and a hand parser in step: the option
    //! spellings a parser's source names, and the ones a description has.

    use std::collections::BTreeSet;

    /// The options (`--name`, `-x`) named by string literals in the body of
    /// `fn name` in `source`; `--name=` prefixes count as `--name`.
    pub fn option_literals(source: &str, name: &str) -> BTreeSet<String> {
        let start = source
            .find(&format!("fn {name}("))
            .unwrap_or_else(|| panic!("fn {name} not found"));
        let body = &source[start..];
        // Up to the next item at column 0.
        let end = body[1..].find("\n}\n").map(|i| i + 1).unwrap_or(body.len());
        let body = &body[..end];
        let mut out = BTreeSet::new();
        for piece in body.split('"').skip(1).step_by(2) {
            let is_option = piece.starts_with('-')
                && piece.len() > 1
                && piece
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '=');
            if is_option && piece != "--" {
                out.insert(piece.trim_end_matches('=').to_string());
            }
        }
        out
    }

    /// The options of `cmd` as spelled on a command line (help excluded).
    pub fn model_options(cmd: &clap::Command) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for a in cmd.get_arguments() {
            if a.get_id() == "help" || a.get_id() == "version" || a.is_hide_set() {
                continue;
            }
            if let Some(l) = a.get_long() {
                out.insert(format!("--{l}"));
            }
            if let Some(s) = a.get_short() {
                out.insert(format!("-{s}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::sync::{model_options, option_literals};
    use super::*;
    use std::collections::BTreeSet;
    use std::ffi::OsString;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// A value the hand parser accepts for an option of the description.
    fn sample(arg: &Arg) -> String {
        if let Some(v) = arg.get_possible_values().first() {
            return v.get_name().to_string();
        }
        match arg
            .get_value_names()
            .and_then(|n| n.first())
            .map(|n| n.as_str())
        {
            Some("HEX") | Some("ID") => "ab".repeat(32),
            Some("N") => "5".into(),
            Some("URL") => "http://127.0.0.1:1".into(),
            _ => "gcc".into(),
        }
    }

    #[test]
    fn the_env_printer_description_and_parse_args_accept_the_same_options() {
        let cmd = env_printer();
        cmd.clone().debug_assert();
        let model = model_options(&cmd);
        let source = include_str!("env.rs");
        let parsed = option_literals(source, "parse_args");
        let help: BTreeSet<String> = ["--help", "-h"].iter().map(|s| s.to_string()).collect();
        let parsed: BTreeSet<String> = parsed.difference(&help).cloned().collect();
        assert_eq!(
            model, parsed,
            "src/member/cli.rs env_printer() and env.rs parse_args must name the same options"
        );
        // Every option of the description is accepted by the parser, with a
        // value where it takes one, and leaves the command alone.
        for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
            let takes_value = arg.get_action().takes_values();
            for spelling in [
                arg.get_long().map(|l| format!("--{l}")),
                arg.get_short().map(|s| format!("-{s}")),
            ]
            .into_iter()
            .flatten()
            {
                let mut argv = vec![spelling.clone()];
                if takes_value {
                    argv.push(sample(arg));
                }
                argv.extend(["make".to_string(), "-j4".to_string()]);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let o = crate::member::env::parse_args(&os(&argv))
                    .unwrap_or_else(|e| panic!("parse_args refuses {spelling}: {e}"));
                assert_eq!(o.command, os(&["make", "-j4"]), "{spelling}");
            }
        }
        // And help, before the command only.
        assert!(
            crate::member::env::parse_args(&os(&["--coordinator", "http://c:1", "--help"]))
                .unwrap()
                .help
        );
        assert!(crate::member::env::parse_args(&os(&["-h"])).unwrap().help);
        let o = crate::member::env::parse_args(&os(&["make", "--help"])).unwrap();
        assert!(!o.help, "after CMD, --help is CMD's");
    }

    #[test]
    fn status_token_and_unlink_descriptions_name_their_parsers_options() {
        for (cmd, file, func) in [
            (status(), include_str!("network_status.rs"), "status_main"),
            (
                membership_token(),
                include_str!("membership.rs"),
                "token_main",
            ),
            (unlink(), include_str!("membership.rs"), "unlink_main"),
        ] {
            cmd.clone().debug_assert();
            assert_eq!(
                model_options(&cmd),
                option_literals(file, func),
                "src/member/cli.rs {} and fn {func} must name the same options",
                cmd.get_name()
            );
        }
    }

    #[test]
    fn help_requests_are_found_anywhere() {
        assert!(wants_help(&os(&["--json", "-h"])));
        assert!(wants_help(&os(&["--help"])));
        assert!(!wants_help(&os(&["--json"])));
    }

    #[test]
    fn every_dportage_variable_the_code_reads_is_documented() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        walk(&src, &mut files);
        let mut read = BTreeSet::new();
        for f in files {
            if f.ends_with("member/cli.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for piece in text.split('"').skip(1).step_by(2) {
                if piece.starts_with("DPORTAGE_")
                    && piece[9..]
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && piece.len() > 9
                {
                    read.insert(piece.to_string());
                }
            }
        }
        let documented: BTreeSet<String> = VARIABLES.iter().map(|v| v.name.to_string()).collect();
        let missing: Vec<_> = read.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "undocumented variables {missing:?}: add a line for each to VARIABLES in src/member/cli.rs"
        );
        let stale: Vec<_> = documented.difference(&read).collect();
        assert!(stale.is_empty(), "documented but never read: {stale:?}");
        let help = help_text(env_printer());
        for v in VARIABLES {
            assert!(help.contains(v.name), "{} missing from --help", v.name);
        }
    }
}
