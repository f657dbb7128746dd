//! The whole command line as one clap description, and what is made of it:
//! `dportage --help`, the help of the commands parsed by hand outside the
//! member role (`cc`, `demo`), `dportage completions SHELL` and
//! `dportage man [--out DIR]`.
//!
//! The description reuses the `Command`s the roles parse with
//! (`server::options::ServeArgs`, `coordinator::cli`) and the ones that
//! describe hand parsers (`member::cli`); the hand-parsed rest is described
//! here, and the tests keep every description in step with its parser.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory, ValueHint};
use clap_mangen::roff::{roman, Roff};

use crate::exitcode;
use crate::member::cli as member_cli;

/// The forms `dportage` is used in, for `dportage --help`.
const USAGE_LINES: &str =
    "  dportage [OPTIONS]                 print the network environment (like ssh-agent)
  dportage [OPTIONS] CMD ARGS...     run CMD with the network environment
  dportage serve [DISTCCD OPTIONS]   run the job server (same as `distccd`)
  dportage cc COMPILER ARGS...       compile through the host list (same as `distcc`)
  dportage coordinator [OPTIONS]     run the network coordinator (HTTP)
  dportage demo [--hosts N] [-v]     a whole network on 127.0.0.x, one host lying
  dportage status [--json]           what the coordinator says of the network (members only)
  dportage monitor                   live view of jobs, hosts and verdicts
  dportage cache stats|audit|key     the verified result cache: hit rate, withdrawn entries, keys
  dportage membership-token --for ID a membership token for one person (daemon's user)
  dportage unlink PERSON             end a person's link to a daemon
  dportage completions bash|zsh|fish print a shell completion script
  dportage man [--out DIR]           the manual pages (roff)
  distcc COMPILER ARGS...            (through a link named distcc or dportage-cc)
  distccd [OPTIONS]                  (through a link named distccd or dportage-serve)
  gcc ARGS...                        (through a masquerade link named like a compiler)
";

/// The manual pages `dportage man` writes: file name and page.
pub const MAN_PAGES: &[&str] = &["dportage.1", "dportage-serve.1", "dportage-coordinator.8"];

/// `dportage serve`: distccd's options, as the server parses them.
pub fn serve_command() -> Command {
    crate::server::options::ServeArgs::command()
        .name("serve")
        .about("Run the job server: distccd 3.4's options, plus dportage's own ([dportage])")
}

/// `dportage coordinator`, as it parses.
pub fn coordinator_command() -> Command {
    crate::coordinator::cli::command().name("coordinator")
}

/// The client's variables besides dportage's own (distcc 3.4's).
const DISTCC_VARIABLES: &[(&str, &str, &str)] = &[
    (
        "DISTCC_HOSTS",
        "HOSTSPEC...",
        "hosts to compile on; else $DISTCC_DIR/hosts, ~/.distcc/hosts, /etc/distcc/hosts",
    ),
    (
        "DISTCC_VERBOSE",
        "1",
        "explain what happens to each job on stderr",
    ),
    (
        "DISTCC_LOG",
        "FILE",
        "write messages to FILE instead of stderr",
    ),
    (
        "DISTCC_FALLBACK",
        "0",
        "never compile locally after a failure to distribute",
    ),
    (
        "DISTCC_SKIP_LOCAL_RETRY",
        "1",
        "trust a remote compile error, do not retry locally",
    ),
    (
        "DISTCC_IO_TIMEOUT",
        "SECS",
        "network inactivity timeout (300)",
    ),
    (
        "DISTCC_BACKOFF_PERIOD",
        "SECS",
        "avoid a failed host this long (60; 0 = never)",
    ),
    (
        "DISTCC_PAUSE_TIME_MSEC",
        "MS",
        "wait between tries when every slot is busy (1000)",
    ),
    ("DISTCC_SAVE_TEMPS", "1", "keep temporary files"),
    ("DISTCC_DIR", "DIR", "state directory (~/.distcc)"),
    (
        "DISTCC_NO_REWRITE_CROSS",
        "1",
        "do not rewrite the compiler name",
    ),
    (
        "UNCACHED_ERR_FD",
        "FD",
        "where diagnostics go when DISTCC_LOG is unset (set by ccache)",
    ),
    ("TMPDIR", "DIR", "temporary files (/tmp)"),
];

const HOST_SPECS: &str = "\
Host specifications:
  localhost                  run jobs on this machine (2 at a time, or localhost/N)
  HOST[:PORT][/LIMIT]        TCP connection to distccd, port 3632 by default
  HOST[:PORT][/LIMIT],lzo    the same, with compression (protocol 2)
  HOST[:PORT][/LIMIT],zstd   a dportage server, with zstd compression (not distccd)
  --localslots=N             local compiles at once (4)
  --localslots_cpp=N         local preprocessor runs at once (8)
";

/// `dportage cc` / `distcc` / `dportage-cc`: distcc 3.4's client, named
/// `program` in its usage lines.
pub fn cc_command(program: &str) -> Command {
    let mut vars: Vec<(&str, &str, &str)> = DISTCC_VARIABLES.to_vec();
    vars.extend(
        member_cli::VARIABLES
            .iter()
            .filter(|v| v.client)
            .map(|v| (v.name, v.value, v.help)),
    );
    Command::new("cc")
        .about(
            "Compile through the host list: distcc 3.4's client; with DPORTAGE_REDUNDANCY=2 \
             or more, every job goes to several hosts that must agree",
        )
        .override_usage(format!(
            "{program} [COMPILER] [compile options] -o OBJECT -c SOURCE\n       \
             {program} --show-hosts | -j | --version | --help"
        ))
        .disable_version_flag(true)
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::SetTrue)
                .help("Show the version, and exit"),
        )
        .arg(
            Arg::new("show-hosts")
                .long("show-hosts")
                .action(ArgAction::SetTrue)
                .help("Show the host list, and exit"),
        )
        .arg(
            Arg::new("jobs")
                .short('j')
                .action(ArgAction::SetTrue)
                .help("Print the concurrency level of the host list, and exit"),
        )
        .arg(
            Arg::new("compiler")
                .value_name("COMPILER")
                .num_args(1..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_hint(ValueHint::CommandWithArguments)
                .help("The compiler (default cc) and its arguments"),
        )
        .after_help(format!(
            "Environment:\n{}\n{HOST_SPECS}\
             Not supported: SSH hosts (USER@HOST), ,auth, pump mode (,cpp is served by\n\
             preprocessing locally with protocol 2), +zeroconf.\n",
            member_cli::variable_lines(&vars)
        ))
}

/// `dportage demo`.
pub fn demo_command() -> Command {
    Command::new("demo")
        .about(
            "Run a whole network on 127.0.0.x (a coordinator, honest hosts and one that \
             lies), build a bundled program through it as two members, and show the liar \
             caught, reported and blacklisted",
        )
        .arg(
            Arg::new("hosts")
                .long("hosts")
                .value_name("N")
                .help("Honest hosts, 2 to 8 [default: 3]"),
        )
        .arg(
            Arg::new("keep")
                .long("keep")
                .action(ArgAction::SetTrue)
                .help("Keep the demo's temporary directory"),
        )
        .arg(
            Arg::new("verbose")
                .short('v')
                .long("verbose")
                .action(ArgAction::SetTrue)
                .help("Show each daemon's log"),
        )
}

/// `dportage monitor` (its options are the monitor's own).
pub fn monitor_command() -> Command {
    Command::new("monitor").about("Live view of jobs, hosts and verdicts")
}

/// `dportage cache` (parsed by hand in `client::result_cache`).
pub fn cache_command() -> Command {
    Command::new("cache")
        .about("The verified result cache: hit rate, withdrawn entries, a compile's key")
        .subcommand(
            Command::new("stats")
                .about("This member's hit rate (from DIR/monitor.log) and local cache size"),
        )
        .subcommand(
            Command::new("audit")
                .about(
                    "Which objects written from the network's cache came from entries \
                     withdrawn since (exit 1 when some must be rebuilt)",
                )
                .arg(
                    Arg::new("delete")
                        .long("delete")
                        .action(ArgAction::SetTrue)
                        .help("Delete those objects so the next build makes them again"),
                ),
        )
        .subcommand(
            Command::new("key")
                .about("Print the key, input hash and toolchain a verified compile is looked up by")
                .arg(
                    Arg::new("compile")
                        .value_name("COMPILER ARGS")
                        .num_args(1..)
                        .trailing_var_arg(true)
                        .allow_hyphen_values(true)
                        .required(true),
                ),
        )
}

fn completions_command() -> Command {
    Command::new("completions")
        .about("Print a completion script for SHELL")
        .after_help(
            "bash: dportage completions bash > /usr/share/bash-completion/completions/dportage\n\
             zsh:  dportage completions zsh > /usr/share/zsh/site-functions/_dportage\n\
             fish: dportage completions fish > /usr/share/fish/vendor_completions.d/dportage.fish",
        )
        .arg(
            Arg::new("shell")
                .value_name("SHELL")
                .required(true)
                .value_parser(["bash", "zsh", "fish"]),
        )
}

fn man_command() -> Command {
    Command::new("man")
        .about("Print a manual page (roff), or write them all to a directory")
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .value_hint(ValueHint::DirPath)
                .value_parser(clap::value_parser!(PathBuf))
                .help("Write dportage.1, dportage-serve.1 and dportage-coordinator.8 here"),
        )
        .arg(
            Arg::new("page")
                .value_name("PAGE")
                .conflicts_with("out")
                .value_parser(["dportage", "dportage-serve", "dportage-coordinator"])
                .help("The page to print [default: dportage]"),
        )
}

/// The whole command line: the environment printer's options at the top
/// level, every subcommand below it.
pub fn dportage_command() -> Command {
    let template = format!(
        "{{about-with-newline}}\nUsage:\n{USAGE_LINES}\nOptions:\n{{options}}{{after-help}}"
    );
    member_cli::env_printer()
        .version(env!("CARGO_PKG_VERSION"))
        .disable_version_flag(false)
        .about("distcc 3.4-compatible compile client and server, grown into a verified, shared compile network")
        .help_template(template)
        .subcommand(serve_command())
        .subcommand(cc_command("dportage cc"))
        .subcommand(coordinator_command())
        .subcommand(demo_command())
        .subcommand(member_cli::status())
        .subcommand(monitor_command())
        .subcommand(cache_command())
        .subcommand(member_cli::membership_token())
        .subcommand(member_cli::unlink())
        .subcommand(completions_command())
        .subcommand(man_command())
}

/// `dportage --help`.
pub fn top_level_help() -> String {
    member_cli::help_text(dportage_command())
}

/// `--help` of `dportage cc`, `distcc`, `dportage-cc`, as `program`.
pub fn cc_help(program: &str) -> String {
    member_cli::help_text(cc_command(program).bin_name(program))
}

/// `dportage demo --help`.
pub fn demo_help() -> String {
    member_cli::help_text(demo_command().bin_name("dportage demo"))
}

/// Parse `args` with `cmd`; help, version and errors are printed here.
fn matches(cmd: Command, args: Vec<OsString>) -> Result<clap::ArgMatches, i32> {
    let argv = std::iter::once(OsString::from(format!("dportage {}", cmd.get_name()))).chain(args);
    cmd.try_get_matches_from(argv).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            exitcode::BAD_ARGUMENTS
        } else {
            0
        }
    })
}

/// `dportage completions bash|zsh|fish`.
pub fn completions_main(args: Vec<OsString>) -> i32 {
    let m = match matches(completions_command(), args) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let shell = match m.get_one::<String>("shell").map(String::as_str) {
        Some("zsh") => clap_complete::Shell::Zsh,
        Some("fish") => clap_complete::Shell::Fish,
        _ => clap_complete::Shell::Bash,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut dportage_command(), "dportage", &mut out);
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dportage: writing to stdout: {e}");
            exitcode::IO_ERROR
        }
    }
}

/// `dportage man [--out DIR] [PAGE]`.
pub fn man_main(args: Vec<OsString>) -> i32 {
    let m = match matches(man_command(), args) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if let Some(dir) = m.get_one::<PathBuf>("out") {
        return match write_man_pages(dir) {
            Ok(written) => {
                for p in written {
                    println!("{}", p.display());
                }
                0
            }
            Err(e) => {
                eprintln!("dportage man: {e}");
                exitcode::IO_ERROR
            }
        };
    }
    let name = m
        .get_one::<String>("page")
        .map(String::as_str)
        .unwrap_or("dportage");
    let file = MAN_PAGES
        .iter()
        .find(|f| f.rsplit_once('.').is_some_and(|(stem, _)| stem == name))
        .copied()
        .unwrap_or("dportage.1");
    write_stdout(&man_page(file))
}

/// Write every page of [`MAN_PAGES`] into `dir` (created if missing).
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| annotate(e, dir))?;
    let mut written = Vec::new();
    for file in MAN_PAGES {
        let path = dir.join(file);
        std::fs::write(&path, man_page(file)).map_err(|e| annotate(e, &path))?;
        written.push(path);
    }
    Ok(written)
}

fn annotate(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The command forms of [`USAGE_LINES`], without their descriptions, for
/// the manual's synopsis.
fn synopsis_forms() -> String {
    USAGE_LINES
        .lines()
        .map(|l| l.get(2..37).unwrap_or(l).trim())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One page of [`MAN_PAGES`], in roff.
pub fn man_page(file: &str) -> Vec<u8> {
    let (title, cmd, section, bin, synopsis_note) = match file {
        "dportage-serve.1" => (
            "dportage-serve",
            serve_command(),
            "1",
            "dportage serve",
            "Also installed as distccd (a link): the same program, the same options.",
        ),
        "dportage-coordinator.8" => (
            "dportage-coordinator",
            coordinator_command(),
            "8",
            "dportage coordinator",
            "",
        ),
        _ => (
            "dportage",
            dportage_command().override_usage(synopsis_forms()),
            "1",
            "dportage",
            "Also installed as distcc and dportage-cc (the compile client, as dportage cc), \
             distccd (the server, as dportage serve), and as masquerade links named like \
             compilers (cc, gcc, c++, ...) in /usr/lib/distcc, which make it the client \
             running that compiler.",
        ),
    };
    let cmd = cmd
        .name(title)
        .bin_name(bin)
        .version(env!("CARGO_PKG_VERSION"));
    let man = clap_mangen::Man::new(cmd.clone())
        .title(title.to_uppercase())
        .section(section)
        .source(format!("dportage {}", env!("CARGO_PKG_VERSION")))
        .manual("dportage");
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    if !synopsis_note.is_empty() {
        let mut roff = Roff::new();
        roff.control("PP", []).text([roman(synopsis_note)]);
        let _ = out.write_all(roff.to_roff().as_bytes());
    }
    let _ = man.render_options_section(&mut out);
    if cmd.has_subcommands() {
        let _ = man.render_subcommands_section(&mut out);
    }
    // after_help holds the environment and notes: kept as written.
    if let Some(after) = cmd.get_after_help() {
        let mut roff = Roff::new();
        roff.control("SH", ["NOTES"]).control("nf", []);
        for line in after.to_string().lines() {
            roff.text([roman(line)]).control("br", []);
        }
        roff.control("fi", []);
        let _ = out.write_all(roff.to_roff().as_bytes());
    }
    let _ = man.render_version_section(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::cli::sync::{model_options, option_literals};
    use std::collections::BTreeSet;

    #[test]
    fn the_whole_description_is_valid_clap() {
        dportage_command().debug_assert();
        for page in MAN_PAGES {
            assert!(!man_page(page).is_empty());
        }
    }

    #[test]
    fn the_demo_description_and_its_parser_accept_the_same_options() {
        let cmd = demo_command();
        assert_eq!(
            model_options(&cmd),
            option_literals(include_str!("demo/mod.rs"), "parse_args"),
            "demo_command() and tools/demo parse_args must name the same options"
        );
        for arg in cmd.get_arguments().filter(|a| a.get_id() != "help") {
            let mut argv = vec![format!("--{}", arg.get_long().unwrap())];
            if arg.get_action().takes_values() {
                argv.push("4".into());
            }
            let argv: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
            assert!(
                super::super::demo::parse_args(&argv).is_ok(),
                "demo refuses {argv:?}"
            );
        }
    }

    /// Every variable the client's sources name appears in `cc --help`.
    #[test]
    fn cc_help_documents_every_variable_the_client_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.join("hosts.rs")];
        let mut dirs = vec![root.join("client")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut names = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for piece in text.split('"').skip(1).step_by(2) {
                let shaped = piece.len() > 3
                    && piece
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                let ours = ["DISTCC_", "DPORTAGE_"]
                    .iter()
                    .any(|p| piece.starts_with(p))
                    || piece == "UNCACHED_ERR_FD"
                    || piece == "TMPDIR";
                if shaped && ours {
                    names.insert(piece.to_string());
                }
            }
        }
        assert!(names.contains("DISTCC_HOSTS") && names.contains("DPORTAGE_REDUNDANCY"));
        let help = cc_help("distcc");
        let missing: Vec<_> = names
            .iter()
            .filter(|n| !help.contains(n.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "cc --help lacks {missing:?}: add them to DISTCC_VARIABLES in src/tools/docs.rs \
             or, for DPORTAGE_*, to VARIABLES (client: true) in src/member/cli.rs"
        );
    }

    #[test]
    fn help_names_the_program_as_invoked() {
        assert!(cc_help("dportage-cc").contains("Usage: dportage-cc [COMPILER]"));
        assert!(cc_help("dportage cc").contains("dportage cc --show-hosts"));
        assert!(demo_help().contains("Usage: dportage demo"));
        let top = top_level_help();
        assert!(top
            .contains("dportage monitor                   live view of jobs, hosts and verdicts"));
        for v in member_cli::VARIABLES {
            assert!(top.contains(v.name), "{} missing:\n{top}", v.name);
        }
        for opt in model_options(&member_cli::env_printer()) {
            assert!(top.contains(&opt), "{opt} missing:\n{top}");
        }
    }

    #[test]
    fn completions_cover_every_subcommand() {
        let names: Vec<String> = dportage_command()
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut dportage_command(), "dportage", &mut out);
            let text = String::from_utf8(out).unwrap();
            for n in &names {
                assert!(text.contains(n.as_str()), "{shell}: {n} missing");
            }
            // fish spells them `-l max-hosts`.
            for opt in ["coordinator", "max-hosts", "allow-private", "establish-age"] {
                assert!(text.contains(opt), "{shell}: {opt} missing");
            }
        }
    }
}
