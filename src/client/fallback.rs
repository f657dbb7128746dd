//! Compiling here when distribution cannot give a result, for plain and
//! verified dispatch alike: distcc 3.4's fallback rules (spec §8.8), with
//! `DISTCC_FALLBACK=0` stopping instead, told in distcc 3.4's words.
//!
//! Build logs are grepped for those words ("failed to distribute", "can't
//! distribute work", "fallbacks are disabled"), so each line here is the line
//! distcc prints, with the function name it prints (`dcc_…` targets, see
//! `trace.rs`); `tests/it/client/distcc_words.rs` compares them with distcc's own.

use std::fmt::Display;

use crate::args::CompileJob;
use crate::exitcode;
use crate::hosts::{HostSpecError, DEFAULT_LOCAL_SLOTS};

use super::hostsource::{distcc_dir, HostSourceError};
use super::local::run_compiler_in_slot;
use super::preprocess::PreprocessError;
use super::settings::Settings;
use super::slots::LockDir;
use super::trace::write_stderr;

/// The lock directory for host and local slots, or `None` (with a warning)
/// when it cannot be used.
pub(super) fn open_lock_dir(settings: &Settings) -> Option<LockDir> {
    let dir = distcc_dir();
    match LockDir::open(&dir, settings.backoff_period) {
        Ok(lock) => Some(lock),
        Err(e) => {
            tracing::warn!(
                "cannot use the lock directory under {}: {e}; running without slots (check DISTCC_DIR)",
                dir.display()
            );
            None
        }
    }
}

/// The host list cannot be read: compile here in a local slot with distcc's
/// default limit, or stop when fallback is disabled.
pub(super) fn without_host_list(
    job: &CompileJob,
    settings: &Settings,
    error: &HostSourceError,
) -> i32 {
    log_host_list_error(error);
    if !settings.fallback {
        log_fallbacks_disabled();
        return exitcode::NO_HOSTS;
    }
    log_running_locally(None);
    let lock = open_lock_dir(settings);
    Fallback::new(job, settings, lock.as_ref(), DEFAULT_LOCAL_SLOTS).compile_here()
}

/// Host slots cannot be locked ([`open_lock_dir`] said why): compile here
/// without a slot, or stop when fallback is disabled.
pub(super) fn without_lock_dir(job: &CompileJob, settings: &Settings) -> i32 {
    if !settings.fallback {
        // distcc 3.4 exits 116 here too rather than compile behind the user's back.
        log_fallbacks_disabled();
        return exitcode::NO_HOSTS;
    }
    log_running_locally(None);
    Fallback::new(job, settings, None, DEFAULT_LOCAL_SLOTS).compile_here()
}

/// One job that may have to be compiled here.
pub(super) struct Fallback<'a> {
    job: &'a CompileJob,
    settings: &'a Settings,
    /// `None` when there are no slots to hold (no usable lock directory).
    lock: Option<&'a LockDir>,
    local_slots: u32,
}

impl<'a> Fallback<'a> {
    pub(super) fn new(
        job: &'a CompileJob,
        settings: &'a Settings,
        lock: Option<&'a LockDir>,
        local_slots: u32,
    ) -> Self {
        Fallback {
            job,
            settings,
            lock,
            local_slots,
        }
    }

    /// The user's own command, here, in a local slot when slots work.
    pub(super) fn compile_here(&self) -> i32 {
        let code = run_compiler_in_slot(&self.job.argv, self.settings, self.lock, self.local_slots);
        critique(self.job.input(), LOCALHOST, code);
        code
    }

    /// The preprocessor failed for a job going to `host`. distcc 3.4 reports
    /// that as a failed compile on the host, in the same words, so we do too;
    /// unlike it, we do not back a healthy host off for the user's own error.
    pub(super) fn preprocessor_failed(&self, error: PreprocessError, host: &str) -> i32 {
        let PreprocessError::Failed { status, stderr } = &error else {
            return self.without_source(error);
        };
        let input = self.job.input();
        let code = super::local::exit_code_of(*status);
        critique(input, host, code);
        if self.settings.skip_local_retry {
            write_stderr(stderr);
            return code;
        }
        log_retrying_locally(input);
        if !self.settings.fallback {
            log_fallbacks_disabled();
            write_stderr(stderr);
            return code;
        }
        log_running_locally(Some((input, host)));
        // The local compile shows the same diagnostics; not twice.
        self.compile_here()
    }

    /// There is no preprocessed source; the local compiler shows why.
    pub(super) fn without_source(&self, error: PreprocessError) -> i32 {
        let input = self.job.input();
        if !self.settings.fallback {
            if let PreprocessError::Failed { status, stderr } = &error {
                write_stderr(stderr);
                return super::local::exit_code_of(*status);
            }
            tracing::error!("{error}");
            log_fallbacks_disabled();
            return exitcode::DISTCC_FAILED;
        }
        match &error {
            PreprocessError::Failed { .. } => {
                tracing::info!("{error} for {input}; compiling locally to show the diagnostics")
            }
            _ => tracing::warn!("{error}; compiling {input} locally"),
        }
        self.compile_here()
    }

    /// Verified dispatch cannot verify: compile here (a remote result is
    /// never accepted unverified), or stop when fallback is disabled.
    pub(super) fn unverifiable(&self, reason: &dyn Display) -> i32 {
        let input = self.job.input();
        if !self.settings.fallback {
            tracing::error!(
                "cannot verify {input}: {reason}; not compiling locally because DISTCC_FALLBACK=0"
            );
            return exitcode::NO_HOSTS;
        }
        tracing::info!("compiling {input} locally: {reason}");
        self.compile_here()
    }
}

/// How distcc names this machine in its messages.
pub(super) const LOCALHOST: &str = "localhost";

fn log_host_list_error(error: &HostSourceError) {
    match error {
        HostSourceError::NotSet => tracing::warn!(
            target: "dcc_get_hostlist",
            "no hostlist is set; can't distribute work"
        ),
        HostSourceError::Parse {
            origin,
            source: HostSpecError::Empty,
        } => tracing::warn!(
            target: "dcc_parse_hosts",
            "{origin} contained no hosts; can't distribute work"
        ),
        // distcc's parse errors are terser; ours say what to write instead.
        other => tracing::error!(target: "dcc_parse_hosts", "{other}"),
    }
}

pub(super) fn log_fallbacks_disabled() {
    tracing::error!(
        target: "dcc_build_somewhere",
        "failed to distribute and fallbacks are disabled"
    );
}

pub(super) fn log_retrying_locally(input: &str) {
    tracing::warn!(
        target: "dcc_build_somewhere",
        "remote compilation of '{input}' failed, retrying locally"
    );
}

/// Before a local compile of a job that was to be distributed: naming the
/// input and the host that failed when there was one (distcc prints that line
/// without its function name), else without either.
pub(super) fn log_running_locally(failed_on: Option<(&str, &str)>) {
    match failed_on {
        Some((input, host)) => {
            tracing::warn!("failed to distribute {input} to {host}, running locally instead")
        }
        None => tracing::warn!(
            target: "dcc_build_somewhere",
            "failed to distribute, running locally instead"
        ),
    }
}

/// distcc's verdict on a compile that failed (`dcc_critique_status`): the
/// user sees where it failed. `code` is an exit code; 128 + signal and above
/// are left to the shell, which reports signals itself.
pub(super) fn critique(input: &str, host: &str, code: i32) {
    match code {
        1 => tracing::error!("compile {input} on {host} failed"),
        2..=127 => tracing::error!("compile {input} on {host} failed with exit code {code}"),
        _ => {}
    }
}
