//! Acting on the vote: write the agreed object, show the agreed failure,
//! compile here as arbiter, spot check or retry, as the scheduler decides.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::args::scan::{scan_locating_output, OutputAt};
use crate::args::{ArgsError, ScanOutcome};
use crate::exitcode;
use crate::verify::scheduler::{Action, Check, Event, Finish, HostId, Scheduler, Shortfall, Shown};
use crate::verify::{exit_code_of_status, ResultDigest};

use crate::client::monitor_state::{self, MAIN};
use crate::client::output::{strip_terminal_controls, write_output_atomically};
use crate::client::remote::RemoteReply;
use crate::client::trace::{write_stderr, write_stdout};
use crate::jobstate::binstate::Phase;
use crate::jobstate::outcome::Verdict;

use super::driver::{Source, Voted};
use super::{digest_of, Verified};

/// This machine's compile of the preprocessed input.
pub(super) struct LocalResult {
    pub(super) status: u32,
    pub(super) object: Vec<u8>,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) digest: ResultDigest,
}

/// Why the preprocessed input could not be compiled here.
#[derive(Debug, thiserror::Error)]
enum LocalCompileError {
    #[error(
        "cannot create a temporary file in {dir}: {source} (set TMPDIR to a writable directory)"
    )]
    TempFile { dir: String, source: std::io::Error },
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("the command sent to the hosts is not a compile job: {0:?}")]
    NotAJob(Vec<String>),
    #[error("empty compiler command")]
    EmptyCommand,
    #[error("the preprocessed source is gone (a bug)")]
    SourceGone,
    #[error("cannot run {compiler:?}: {source}")]
    Spawn {
        compiler: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    ReadObject {
        path: String,
        source: std::io::Error,
    },
}

/// Execute the scheduler's actions after the vote until the job ends.
pub(super) fn act(job: &Verified<'_>, voted: Voted) -> i32 {
    let Voted {
        mut scheduler,
        mut next,
        mut source,
        preprocess_error,
        mut replies,
        // Recorded before the verdict.
        speeds: _,
    } = voted;
    // The evidence names the source even after its file is gone.
    let source_hash = source.as_ref().map(|s| s.hash.clone()).unwrap_or_default();
    // And keeps its bytes (the `.i` file may be dropped before a report).
    let source_bytes = source.as_ref().map(|s| std::sync::Arc::clone(&s.bytes));
    let mut local: Option<LocalResult> = None;
    let mut preprocess_error = preprocess_error;
    // For the monitor log: who lost a vote, and whether this was a spot check.
    let mut losers: Vec<String> = Vec::new();
    let mut spot_checked = false;
    while let Some(action) = next.pop_front() {
        let event = match action {
            Action::CompileHere(check) => {
                spot_checked |= matches!(check, Check::SpotCheck);
                local = job.check_here(check, source.as_ref(), &scheduler);
                Event::CompiledHere(local.as_ref().map(|l| l.digest))
            }
            Action::RetryHere {
                failed_on,
                exit_code,
            } => {
                tracing::info!(
                    "compiling {} failed on {} with exit code {exit_code}; compiling locally to \
                     show the diagnostics",
                    job.input(),
                    job.labels(&failed_on)
                );
                // The local retry compiles the user's command, as distcc does, so
                // the diagnostics are exactly those of a local build; the `.i` is
                // of no further use.
                source = None;
                Event::RetriedHere {
                    exit_code: job.fallback().compile_here(),
                }
            }
            Action::Report(report) => {
                losers.extend(
                    report
                        .losers
                        .iter()
                        .map(|h| job.voters.label(h.0).to_owned()),
                );
                job.report(
                    &report,
                    scheduler.received(),
                    local.as_ref(),
                    &source_hash,
                    source_bytes.as_deref().map(Vec::as_slice),
                );
                continue;
            }
            Action::ClearBackoff(hosts) => {
                job.clear_backoff(&hosts);
                continue;
            }
            Action::BackOff { hosts, why } => {
                job.back_off(&hosts, why);
                continue;
            }
            Action::ToolchainSuspect => {
                tracing::warn!(
                    "no host agreed with this machine's compiler on {}; nobody is reported, but \
                     this machine's toolchain may differ from the hosts' (use the same compiler \
                     build everywhere)",
                    job.input()
                );
                continue;
            }
            // Their runtime is gone, and with it their sockets and slots.
            Action::Cancel(_) => continue,
            Action::Finish(finish) => {
                let verdict = verdict_of(&finish, !losers.is_empty(), spot_checked);
                let mut hosts: Vec<String> = Vec::new();
                for received in scheduler.received() {
                    let label = job.voters.label(received.host.0);
                    if !hosts.iter().any(|h| h == label) {
                        hosts.push(label.to_owned());
                    }
                }
                let code = match finish {
                    Finish::NoSource => match preprocess_error.take() {
                        Some(e) => job.fallback().without_source(e),
                        None => job.fallback().unverifiable(&"the source vanished (a bug)"),
                    },
                    Finish::FallBack(shortfall) => {
                        job.fallback().unverifiable(&job.shortfall(&shortfall))
                    }
                    Finish::WriteRemote {
                        digest,
                        agreeing,
                        show,
                    } => job.write_remote(&digest, &agreeing, show, &mut replies, source, local),
                    Finish::ShowRemoteFailure { digest } => {
                        job.show_remote_failure(&digest, &replies, source.as_ref())
                    }
                    Finish::WriteLocal => match (&local, &source) {
                        (Some(local), Some(source)) => job.finish_with_local(local, source),
                        _ => job.fallback().compile_here(),
                    },
                    Finish::CompileSourceHere => {
                        drop(source);
                        job.fallback().compile_here()
                    }
                    Finish::Exit(code) => code,
                };
                super::record_outcome(
                    job.settings,
                    job.input(),
                    job.started,
                    verdict,
                    hosts,
                    losers,
                );
                return code;
            }
            Action::TakeHost
            | Action::Launch(_)
            | Action::Preprocess
            | Action::Await(_)
            | Action::Hedge { .. } => {
                tracing::error!("the vote asked for {action:?} after it ended (a bug)");
                return job
                    .fallback()
                    .unverifiable(&"the vote ended without a decision (a bug)");
            }
        };
        next.extend(scheduler.handle(event));
    }
    job.fallback()
        .unverifiable(&"the vote ended without a decision (a bug)")
}

/// What the monitor log calls a job that ended with `finish`.
fn verdict_of(finish: &Finish, a_host_lost: bool, spot_checked: bool) -> Verdict {
    match finish {
        _ if a_host_lost => Verdict::Mismatch,
        Finish::WriteRemote { .. } if spot_checked => Verdict::SpotCheck,
        Finish::WriteRemote { .. } | Finish::ShowRemoteFailure { .. } => Verdict::Agreed,
        Finish::NoSource
        | Finish::FallBack(_)
        | Finish::WriteLocal
        | Finish::CompileSourceHere
        | Finish::Exit(_) => Verdict::Local,
    }
}

impl Verified<'_> {
    /// Why no remote result can be had, naming the hosts left out when they
    /// are the reason.
    pub(super) fn shortfall(&self, shortfall: &Shortfall) -> String {
        if shortfall.concerns_the_pool() {
            format!("{shortfall}{}", self.voters.why_not())
        } else {
            shortfall.to_string()
        }
    }

    /// Compile the preprocessed source here, as `check` asks; `None` when it
    /// cannot be (said why).
    fn check_here(
        &self,
        check: Check,
        source: Option<&Source>,
        scheduler: &Scheduler,
    ) -> Option<LocalResult> {
        let input = self.input();
        match check {
            Check::SpotCheck => tracing::debug!("compiling {input} here too (spot check)"),
            Check::Confirm => tracing::info!(
                "compiling {input} here too: the hosts that agree include one asked after the \
                 first draw (a replacement for a failed host, or a hedge for a slow one), so \
                 this machine confirms their result before it is written"
            ),
            Check::DiagnosticsDiffer => {
                tracing::debug!("compiling {input} here too (the hosts' diagnostics differ)")
            }
            Check::Arbiter(shortfall) => {
                let seen: Vec<String> = scheduler
                    .received()
                    .iter()
                    .map(|r| format!("{}: {}", self.voters.label(r.host.0), r.answer.digest))
                    .collect();
                tracing::info!(
                    "compiling {input} here as arbiter: {} ({})",
                    self.shortfall(&shortfall),
                    seen.join("; ")
                );
            }
        }
        let result = match source {
            Some(source) => self.compile_preprocessed_here(source),
            None => Err(LocalCompileError::SourceGone),
        };
        match result {
            Ok(local) => Some(local),
            Err(e) => {
                match check {
                    Check::Arbiter(_) => tracing::error!(
                        "cannot compile the preprocessed {input} here to decide between the \
                         hosts: {e}; compiling the source instead"
                    ),
                    Check::Confirm => tracing::error!(
                        "cannot compile the preprocessed {input} here to confirm the hosts' \
                         result: {e}; compiling the source instead"
                    ),
                    _ => tracing::warn!("cannot compile {input} here to check the hosts: {e}"),
                }
                None
            }
        }
    }

    /// The hosts agree on an object: write it.
    fn write_remote(
        &self,
        digest: &ResultDigest,
        agreeing: &[HostId],
        show: Shown,
        replies: &mut [(ResultDigest, RemoteReply)],
        source: Option<Source>,
        local: Option<LocalResult>,
    ) -> i32 {
        let input = self.input();
        let kept = replies
            .iter_mut()
            .find(|(kept, _)| kept.same_vote(digest))
            .map(|(_, reply)| reply);
        let (Some(reply), Some(source)) = (kept, source) else {
            return self
                .fallback()
                .unverifiable(&"the agreed result was not kept (a bug)");
        };
        // The agreed object streamed into a temporary file beside the output,
        // hashed on the way; it is renamed into place only now.
        let output = Path::new(&self.job.output);
        let written = match reply.object.take() {
            Some(object) => object.persist(output),
            None => write_output_atomically(output, b""),
        };
        if let Err(e) = written {
            tracing::error!(
                "cannot write {}: {e}; compiling {input} locally",
                self.job.output
            );
            drop(source);
            return self.fallback().compile_here();
        }
        self.clear_backoff(agreeing);
        self.after_verified_write(digest, &reply.stderr, &reply.stdout, &source.bytes);
        write_stderr(&source.pre.stderr);
        match (show, &local) {
            (Shown::Remote, _) => {
                write_stdout(&reply.stdout);
                write_stderr(&strip_terminal_controls(&reply.stderr));
            }
            (Shown::Local, Some(local)) => {
                write_stdout(&local.stdout);
                write_stderr(&local.stderr);
            }
            (Shown::Local, None) | (Shown::Hidden, _) => tracing::warn!(
                "the hosts agree on {input} but not on its diagnostics, which are therefore not \
                 shown; compile it without DPORTAGE_REDUNDANCY to see them"
            ),
        }
        0
    }

    /// The hosts agree that the compile fails, and their word is taken.
    fn show_remote_failure(
        &self,
        digest: &ResultDigest,
        replies: &[(ResultDigest, RemoteReply)],
        source: Option<&Source>,
    ) -> i32 {
        if let (Some(reply), Some(source)) = (kept_reply(replies, digest), source) {
            write_stderr(&source.pre.stderr);
            write_stdout(&reply.stdout);
            write_stderr(&strip_terminal_controls(&reply.stderr));
        }
        exit_code_of_status(digest.status)
    }

    /// Write this machine's result and show its output.
    fn finish_with_local(&self, local: &LocalResult, source: &Source) -> i32 {
        if local.status == 0 {
            if let Err(e) = write_output_atomically(Path::new(&self.job.output), &local.object) {
                tracing::error!("cannot write {}: {e}", self.job.output);
                return exitcode::DISTCC_FAILED;
            }
        }
        write_stderr(&source.pre.stderr);
        write_stdout(&local.stdout);
        write_stderr(&local.stderr);
        exit_code_of_status(local.status)
    }

    /// Compile the very `.i` the hosts got, with the very argv they got, here.
    fn compile_preprocessed_here(&self, source: &Source) -> Result<LocalResult, LocalCompileError> {
        let ext = self.job.preprocessed_ext;
        let tmp = &self.settings.tmpdir;
        let temp_error = |source: std::io::Error| LocalCompileError::TempFile {
            dir: tmp.display().to_string(),
            source,
        };
        let mut input = tempfile::Builder::new()
            .prefix("dportage_check_")
            .suffix(ext)
            .tempfile_in(tmp)
            .map_err(temp_error)?;
        let _input_cleanup = crate::client::cleanup::register(input.path());
        std::io::Write::write_all(&mut input, &source.bytes).map_err(temp_error)?;
        let out_ext = Path::new(&self.job.output)
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_else(|| ".o".to_owned());
        let output = tempfile::Builder::new()
            .prefix("dportage_check_")
            .suffix(&out_ext)
            .tempfile_in(tmp)
            .map_err(temp_error)?
            .into_temp_path();
        let _output_cleanup = crate::client::cleanup::register(&output);
        let argv = local_argv(
            &self.wire,
            &input.path().to_string_lossy(),
            &output.to_string_lossy(),
        )?;
        let Some((compiler, args)) = argv.split_first() else {
            return Err(LocalCompileError::EmptyCommand);
        };
        tracing::debug!("compiling here: {}", argv.join(" "));
        let slot = self
            .lock
            .acquire_local(self.local_slots, self.settings.pause);
        monitor_state::note(MAIN, "localhost", slot.number(), Phase::Compile);
        let run = Command::new(compiler)
            .args(args)
            .stdin(Stdio::null())
            .env("_DISTCC_SAFEGUARD", self.settings.child_safeguard())
            .output()
            .map_err(|source| LocalCompileError::Spawn {
                compiler: compiler.clone(),
                source,
            });
        monitor_state::forget(MAIN);
        drop(slot);
        let run = run?;
        let status = run.status.into_raw() as u32;
        let object = if status == 0 {
            std::fs::read(&output).map_err(|source| LocalCompileError::ReadObject {
                path: output.display().to_string(),
                source,
            })?
        } else {
            Vec::new()
        };
        Ok(LocalResult {
            status,
            digest: digest_of(status, &object, &run.stderr),
            object,
            stdout: run.stdout,
            stderr: run.stderr,
        })
    }
}

/// The first reply that returned `digest`'s result.
fn kept_reply<'r>(
    replies: &'r [(ResultDigest, RemoteReply)],
    digest: &ResultDigest,
) -> Option<&'r RemoteReply> {
    replies
        .iter()
        .find(|(kept, _)| kept.same_vote(digest))
        .map(|(_, reply)| reply)
}

/// `wire` with its input replaced by `input` and its output by `output`, found
/// the way a server finds them.
fn local_argv(
    wire: &[String],
    input: &str,
    output: &str,
) -> Result<Vec<String>, LocalCompileError> {
    let not_a_job = || LocalCompileError::NotAJob(wire.to_vec());
    let (outcome, output_at) = scan_locating_output(wire)?;
    let (ScanOutcome::Distribute(job), Some(output_at)) = (outcome, output_at) else {
        return Err(not_a_job());
    };
    let mut argv = job.argv;
    *argv.get_mut(job.input_index).ok_or_else(not_a_job)? = input.to_owned();
    let (index, value) = match output_at {
        OutputAt::Separate(i) => (i + 1, output.to_owned()),
        OutputAt::Joined(i) => (i, format!("-o{output}")),
        OutputAt::Bare(i) => (i, output.to_owned()),
    };
    *argv.get_mut(index).ok_or_else(not_a_job)? = value;
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn local_argv_replaces_input_and_output_like_a_server() {
        assert_eq!(
            local_argv(&words("gcc -O2 -c x.c -o sub/x.o"), "/t/in.i", "/t/out.o").unwrap(),
            words("gcc -O2 -c /t/in.i -o /t/out.o")
        );
        assert_eq!(
            local_argv(&words("g++ -c -osub/y.o y.cpp -g"), "/t/in.ii", "/t/o.o").unwrap(),
            words("g++ -c -o/t/o.o /t/in.ii -g")
        );
        assert_eq!(
            local_argv(
                &words("gcc -flto=auto -c x.c -o x.o -frandom-seed=abc"),
                "/t/i.i",
                "/t/o.o"
            )
            .unwrap(),
            words("gcc -flto=auto -c /t/i.i -o /t/o.o -frandom-seed=abc")
        );
        assert!(local_argv(&words("gcc x.c -o x"), "/t/i.i", "/t/o.o").is_err());
    }
}
