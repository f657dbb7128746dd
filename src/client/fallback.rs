//! Compiling here when distribution cannot give a result, for plain and
//! verified dispatch alike: distcc 3.4's fallback rules (spec §8.8), with
//! `DISTCC_FALLBACK=0` stopping instead.

use std::fmt::Display;

use crate::args::CompileJob;
use crate::exitcode;
use crate::hosts::DEFAULT_LOCAL_SLOTS;

use super::hostsource::distcc_dir;
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
pub(super) fn without_host_list(job: &CompileJob, settings: &Settings, error: &dyn Display) -> i32 {
    let input = job.input();
    if !settings.fallback {
        tracing::error!("{error}; not compiling {input} locally because DISTCC_FALLBACK=0");
        return exitcode::NO_HOSTS;
    }
    tracing::warn!("{error}; compiling {input} locally");
    let lock = open_lock_dir(settings);
    Fallback::new(job, settings, lock.as_ref(), DEFAULT_LOCAL_SLOTS).compile_here()
}

/// Host slots cannot be locked ([`open_lock_dir`] said why): compile here
/// without a slot, or stop when fallback is disabled.
pub(super) fn without_lock_dir(job: &CompileJob, settings: &Settings) -> i32 {
    let input = job.input();
    if !settings.fallback {
        // distcc 3.4 exits 116 here too rather than compile behind the user's back.
        tracing::error!(
            "cannot lock host slots under {} and DISTCC_FALLBACK=0 forbids compiling {input} locally; create the directory or unset DISTCC_FALLBACK",
            distcc_dir().display()
        );
        return exitcode::NO_HOSTS;
    }
    tracing::warn!("compiling {input} locally because host slots cannot be locked");
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
        run_compiler_in_slot(&self.job.argv, self.settings, self.lock, self.local_slots)
    }

    /// There is no preprocessed source; the local compiler shows why.
    pub(super) fn without_source(&self, error: PreprocessError) -> i32 {
        let input = self.job.input();
        if !self.settings.fallback {
            if let PreprocessError::Failed { status, stderr } = &error {
                write_stderr(stderr);
                return super::local::exit_code_of(*status);
            }
            tracing::error!("{error}; not compiling {input} locally because DISTCC_FALLBACK=0");
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
