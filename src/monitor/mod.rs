//! `dportage monitor`: the jobs running on this account (from the state files
//! distcc's own monitors read, so jobs of the real distcc show too), per host,
//! and the verdicts of verified dispatch (agreed, mismatch, local, spot check,
//! cache hit) from the monitor log, live in the terminal.
//!
//! [`model`] builds and draws a frame (pure, drawn into a buffer);
//! [`state_files`] reads the files; [`tui`] is the terminal loop.

pub mod model;
pub mod state_files;
pub mod tui;

use std::io::IsTerminal;

pub use model::MonitorModel;
pub use state_files::Sources;

/// Width of a frame printed as text (`--once`, or stdout not a terminal).
pub const TEXT_WIDTH: u16 = 120;

const HELP: &str = "\
Usage: dportage monitor [--once]

Shows the compile jobs running on this account (per host, with their phase),
the verdicts of verified dispatch (agreed, mismatch, local, spotcheck,
cache_hit) and the hosts' votes, refreshed every second; q quits.

Options:
  --once       print one frame as text and exit (also when stdout is not a terminal)
  -h, --help   this text

Environment:
  DISTCC_DIR     where the jobs' state files are ($DISTCC_DIR/state; ~/.distcc)
  DPORTAGE_DIR   where the verdict log is ($DPORTAGE_DIR/monitor.log; ~/.dportage)

distccmon-text and distccmon-gnome show the same jobs (not the verdicts).
";

/// One frame's data, read now.
pub fn load(sources: &Sources) -> MonitorModel {
    MonitorModel::new(
        sources.jobs(),
        &sources.outcomes(),
        crate::network::clock::unix_now(),
    )
}

/// `dportage monitor [--once]`; returns the exit code.
pub fn monitor_main(args: Vec<std::ffi::OsString>) -> i32 {
    let mut once = false;
    for arg in &args {
        match arg.to_str() {
            Some("--once") => once = true,
            Some("-h") | Some("--help") => {
                print!("{HELP}");
                return 0;
            }
            _ => {
                eprintln!(
                    "dportage monitor: unknown argument {arg:?}; `dportage monitor --help` lists the options"
                );
                return crate::exitcode::BAD_ARGUMENTS;
            }
        }
    }
    let sources = Sources::from_env();
    if once || !std::io::stdout().is_terminal() {
        print!("{}", load(&sources).to_text(TEXT_WIDTH));
        return 0;
    }
    match tui::run(&sources) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "dportage monitor: the terminal cannot be used: {e}; try `dportage monitor --once`"
            );
            crate::exitcode::IO_ERROR
        }
    }
}
