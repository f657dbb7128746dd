//! Running the compiler on this machine: stdin, stdout and stderr inherited, the
//! recursion guard set, the exit status passed through (spec §8.9).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use crate::exitcode;
use crate::jobstate::binstate::Phase;

use super::monitor_state;
use super::settings::Settings;
use super::slots::{LockDir, SlotGuard};

/// Run `argv` here and return the exit code the client should exit with.
pub fn run_compiler(argv: &[String], child_safeguard: &str) -> i32 {
    let Some(compiler) = argv.first() else {
        tracing::error!("empty compiler command");
        return exitcode::BAD_ARGUMENTS;
    };
    tracing::debug!("running locally: {}", argv.join(" "));
    let status = Command::new(compiler)
        .args(&argv[1..])
        .env("_DISTCC_SAFEGUARD", child_safeguard)
        .status();
    match status {
        Ok(status) => exit_code_of(status),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!("cannot run {compiler:?}: not found in PATH ({e})");
            exitcode::COMPILER_MISSING
        }
        Err(e) => {
            tracing::error!("cannot run {compiler:?}: {e}");
            exitcode::COMPILER_MISSING
        }
    }
}

/// Run `argv` here holding one of `limit` local slots, or none when there is no
/// usable lock directory (as distcc 3.4, rather than not compiling at all).
pub fn run_compiler_in_slot(
    argv: &[String],
    settings: &Settings,
    lock: Option<&LockDir>,
    limit: u32,
) -> i32 {
    let slot = lock.map(|lock| lock.acquire_local(limit, settings.pause));
    let number = slot.as_ref().map_or(0, SlotGuard::number);
    monitor_state::note(monitor_state::MAIN, "localhost", number, Phase::Compile);
    let code = run_compiler(argv, &settings.child_safeguard());
    drop(slot);
    code
}

/// A process's exit code as a shell reports it: the code, or 128 + signal.
pub fn exit_code_of(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => exitcode::DISTCC_FAILED,
    }
}
