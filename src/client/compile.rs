//! The compile path of one command: distributable or local (and why), choosing a
//! host, preprocessing while connecting, reading the reply, and the fallback
//! rules of distcc 3.4 (spec §8.5–§8.9), minus its infinite retry.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;

use crate::args::{scan, server_argv, CompileJob, LocalReason, ScanOutcome};
use crate::exitcode;
use crate::hosts::{HostKind, HostList, HostSpec, DEFAULT_LOCAL_SLOTS, DEFAULT_LOCAL_SLOTS_CPP};
use crate::jobstate::binstate::Phase;
use crate::protocol::ProtocolVersion;

use super::fallback::{
    self, critique, log_fallbacks_disabled, log_retrying_locally, log_running_locally,
    open_lock_dir, Fallback,
};
use super::hostsource::{distcc_dir, load_host_list};
use super::invocation::{check_safeguard, rewrite_compiler_name, Invocation};
use super::local::{run_compiler, run_compiler_in_slot};
use super::monitor_state::{self, Flight, MAIN};
use super::output::{strip_terminal_controls, write_output_atomically};
use super::preprocess::{preprocess, PreprocessError, Preprocessed};
use super::remote::{
    Connection, NetTimeouts, RemoteError, RemoteHost, RemoteReply, CONNECT_TIMEOUT,
};
use super::settings::{Dispatch, Settings, SettingsError};
use super::slots::{LockDir, SlotGuard};
use super::trace::{write_stderr, write_stdout};

/// Remote attempts per job. Failed hosts are excluded, so this only bounds the
/// time spent when several hosts die at once (3.4 retries without limit).
const MAX_REMOTE_ATTEMPTS: usize = 3;

/// Compile `invocation` somewhere and return the exit code.
pub fn compile(invocation: Invocation, settings: &Settings) -> i32 {
    let path_was_trimmed = invocation.trimmed_path.is_some();
    let local_at_once = match check_safeguard(settings.safeguard.as_deref(), path_was_trimmed) {
        Ok(local) => local,
        Err(message) => {
            tracing::error!("{message}");
            return exitcode::RECURSION;
        }
    };
    if let Some(path) = &invocation.trimmed_path {
        // Every child (preprocessor, compiler) must find the real compiler, not us.
        std::env::set_var("PATH", path);
    }
    let mut argv = invocation.argv;
    if local_at_once {
        tracing::debug!(
            "compiling locally at once: started by another distcc-like process (_DISTCC_SAFEGUARD={})",
            settings.safeguard_level()
        );
        return run_compiler(&argv, &settings.child_safeguard());
    }
    if !settings.no_rewrite_cross {
        let path: Option<OsString> = std::env::var_os("PATH");
        rewrite_compiler_name(&mut argv, path.as_ref());
    }
    match scan(&argv) {
        Err(e) => {
            tracing::error!("{e}");
            exitcode::BAD_ARGUMENTS
        }
        Ok(ScanOutcome::Local(reason)) => {
            tracing::info!("compiling locally: {reason}");
            let kind = match reason {
                LocalReason::PreprocessOnly => SlotKind::Preprocessor,
                _ => SlotKind::Compile,
            };
            LocalRunner::new(settings).run(&argv, kind)
        }
        Ok(ScanOutcome::Distribute(job)) => {
            // Shown to distccmon-text and `dportage monitor` until we exit.
            let _shown = monitor_state::start(&distcc_dir(), job.input());
            distribute_by(job, settings)
        }
    }
}

/// A distributable job, by the dispatch `settings` ask for.
fn distribute_by(job: CompileJob, settings: &Settings) -> i32 {
    match &settings.dispatch {
        Ok(Dispatch::Plain) => distribute(job, settings),
        Ok(Dispatch::Verified(verification)) => {
            match (&settings.io_timeout, &settings.reply_pace) {
                (Ok(io_timeout), Ok(pace)) => super::dual::distribute(
                    job,
                    settings,
                    verification,
                    NetTimeouts {
                        connect: CONNECT_TIMEOUT,
                        io: *io_timeout,
                        pace: *pace,
                    },
                ),
                (Err(e), _) | (_, Err(e)) => bad_setting(e),
            }
        }
        Err(e) => bad_setting(e),
    }
}

/// A setting a distributable job needs is invalid: stop, as distcc 3.4 does.
fn bad_setting(error: &SettingsError) -> i32 {
    tracing::error!("{error}");
    exitcode::BAD_ARGUMENTS
}

/// Which local slots a local job counts against (spec §8.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Compile,
    Preprocessor,
}

/// Runs jobs here, holding a local slot when the lock directory is usable.
struct LocalRunner<'a> {
    settings: &'a Settings,
    lock: Option<LockDir>,
    local_slots: u32,
    local_slots_cpp: u32,
}

impl<'a> LocalRunner<'a> {
    /// For jobs that never look at hosts: the host list only supplies slot counts.
    fn new(settings: &'a Settings) -> Self {
        let (local_slots, local_slots_cpp) = match load_host_list() {
            Ok(list) => (list.local_slots, list.local_slots_cpp),
            Err(_) => (DEFAULT_LOCAL_SLOTS, DEFAULT_LOCAL_SLOTS_CPP),
        };
        let lock = open_lock_dir(settings);
        LocalRunner {
            settings,
            lock,
            local_slots,
            local_slots_cpp,
        }
    }

    fn run(&self, argv: &[String], kind: SlotKind) -> i32 {
        let limit = match kind {
            SlotKind::Compile => self.local_slots,
            SlotKind::Preprocessor => self.local_slots_cpp,
        };
        run_compiler_in_slot(argv, self.settings, self.lock.as_ref(), limit)
    }
}

/// How a remote compiler's wait status counts (spec §8.9).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RemoteStatus {
    Success,
    /// Exit code 1–127: an ordinary compile error (or a server-side error code).
    CompileError(i32),
    /// Killed by a signal, exit ≥ 128, or nonsense: the server is at fault.
    Abnormal {
        description: String,
        code: i32,
    },
}

fn classify_status(status: u32) -> RemoteStatus {
    let low = status & 0x7f;
    let code = ((status >> 8) & 0xff) as i32;
    if status == 0 {
        RemoteStatus::Success
    } else if status > 0xffff {
        RemoteStatus::Abnormal {
            description: format!("impossible wait status {status:#x}"),
            code: exitcode::PROTOCOL_ERROR,
        }
    } else if low == 0 && (1..=127).contains(&code) {
        RemoteStatus::CompileError(code)
    } else if low == 0 {
        RemoteStatus::Abnormal {
            description: format!("compiler exited with code {code}"),
            code,
        }
    } else if low == 0x7f {
        RemoteStatus::Abnormal {
            description: format!("compiler stopped ({status:#x})"),
            code: exitcode::COMPILER_CRASHED,
        }
    } else {
        let core = if status & 0x80 != 0 {
            ", core dumped"
        } else {
            ""
        };
        RemoteStatus::Abnormal {
            description: format!("compiler killed by signal {low}{core}"),
            code: 128 + low as i32,
        }
    }
}

/// What one remote attempt produced.
enum Attempt {
    Reply(RemoteReply),
    Failed(RemoteError),
    NoSource(PreprocessError),
}

/// The host list without its `,verify` hosts (the network's, which only
/// vote in verified dispatch), and how many there were.
fn without_network_hosts(mut hosts: HostList) -> (HostList, usize) {
    let before = hosts.hosts.len();
    hosts.hosts.retain(|h| !h.verify);
    let dropped = before - hosts.hosts.len();
    if dropped > 0 {
        tracing::debug!("not using {dropped} `,verify` host(s) without verified dispatch");
    }
    (hosts, dropped)
}

/// One distributable job on its way through the host list.
struct Distribution<'a> {
    job: CompileJob,
    settings: &'a Settings,
    hosts: HostList,
    lock: LockDir,
    timeouts: NetTimeouts,
    wire_argv: Vec<Vec<u8>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The preprocessed source, once produced (kept across attempts).
    source: Option<Preprocessed>,
}

fn distribute(job: CompileJob, settings: &Settings) -> i32 {
    let hosts = match load_host_list() {
        Ok(mut hosts) => {
            super::dual::drop_excluded_hosts(&mut hosts, settings);
            hosts
        }
        Err(e) => return fallback::without_host_list(&job, settings, &e),
    };
    let (hosts, network) = without_network_hosts(hosts);
    if network > 0 && !hosts.hosts.iter().any(|h| !h.is_local()) {
        // Every remote host is the network's: none may compile alone.
        let reason = format!(
            "its {network} remote host(s) are marked `,verify` (the network's hosts), which \
             compile only with verified dispatch; set DPORTAGE_REDUNDANCY=2 (as `dportage` does)"
        );
        let lock = open_lock_dir(settings);
        return Fallback::new(&job, settings, lock.as_ref(), hosts.local_slots)
            .unverifiable(&reason);
    }
    // Only now: distcc 3.4 reads the timeout when it first needs the network.
    let io = match &settings.io_timeout {
        Ok(io) => *io,
        Err(e) => return bad_setting(e),
    };
    let pace = match &settings.reply_pace {
        Ok(pace) => *pace,
        Err(e) => return bad_setting(e),
    };
    let Some(lock) = open_lock_dir(settings) else {
        return fallback::without_lock_dir(&job, settings);
    };
    let wire_argv = server_argv(&job)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let mut distribution = Distribution {
        job,
        settings,
        hosts,
        lock,
        timeouts: NetTimeouts {
            connect: CONNECT_TIMEOUT,
            io,
            pace,
        },
        wire_argv,
        runtime: None,
        source: None,
    };
    distribution.run()
}

impl Distribution<'_> {
    fn run(&mut self) -> i32 {
        let input = self.job.input().to_owned();
        let mut exclude: Vec<String> = Vec::new();
        let mut last_failure: Option<(i32, Vec<u8>)> = None;
        let mut last_host: Option<String> = None;
        let mut attempts = 0;
        while attempts < MAX_REMOTE_ATTEMPTS {
            let Some((host, slot)) = self
                .lock
                .acquire(&self.hosts, &exclude, self.settings.pause)
            else {
                break;
            };
            let remote = match self.remote_host(&host) {
                HostChoice::Remote(remote) => remote,
                HostChoice::Localhost => {
                    tracing::debug!("compiling {input} locally: `localhost` is the host chosen");
                    self.source = None;
                    monitor_state::note(MAIN, "localhost", slot.number(), Phase::Compile);
                    let code = run_compiler(&self.job.argv, &self.settings.child_safeguard());
                    drop(slot);
                    critique(&input, fallback::LOCALHOST, code);
                    return code;
                }
                HostChoice::Unusable(why) => {
                    tracing::warn!("skipping host {}: {why}", host.verbatim);
                    exclude.push(host.verbatim.clone());
                    continue;
                }
            };
            attempts += 1;
            last_host = Some(remote.label.clone());
            tracing::debug!(
                "compiling {input} on {} (protocol {})",
                remote.label,
                remote.version.number()
            );
            match self.attempt(&remote, slot) {
                (Attempt::NoSource(e), slot) => {
                    drop(slot);
                    return self.fallback().preprocessor_failed(e, &remote.label);
                }
                (Attempt::Failed(e), slot) => {
                    drop(slot);
                    log_remote_error(&input, &remote.label, &e);
                    // A busy host is healthy: skip it for this job only, or a
                    // full queue would keep it out of the whole build.
                    if !e.is_busy() {
                        self.lock.mark_failed(&host);
                    }
                    exclude.push(host.verbatim.clone());
                    last_failure = Some((e.exit_code(), Vec::new()));
                }
                (Attempt::Reply(mut reply), slot) => match classify_status(reply.status) {
                    RemoteStatus::Success => {
                        // The object streamed into a temporary file beside the
                        // output; a complete, valid reply is renamed into place.
                        let output = Path::new(&self.job.output);
                        let written = match reply.object.take() {
                            Some(object) => object.persist(output),
                            None => write_output_atomically(output, b""),
                        };
                        match written {
                            Ok(()) => {
                                drop(slot);
                                self.lock.clear(&host);
                                tracing::debug!(
                                    "{input} compiled on {}: {} bytes written to {}",
                                    remote.label,
                                    reply.object_len(),
                                    self.job.output
                                );
                                self.show_remote_output(&reply);
                                return 0;
                            }
                            Err(e) => {
                                drop(slot);
                                tracing::error!(
                                    "cannot write {} received from {}: {e}; compiling locally",
                                    self.job.output,
                                    remote.label
                                );
                                return self.local_fallback();
                            }
                        }
                    }
                    RemoteStatus::CompileError(code) => {
                        drop(slot);
                        return self.remote_compile_error(&host, &reply, code);
                    }
                    RemoteStatus::Abnormal { description, code } => {
                        drop(slot);
                        tracing::error!("compile {input} on {}: {description}", remote.label);
                        self.lock.mark_failed(&host);
                        exclude.push(host.verbatim.clone());
                        last_failure = Some((code, reply.stderr));
                    }
                },
            }
        }
        self.out_of_hosts(last_host, last_failure)
    }

    /// Map a host entry to something we can talk to.
    fn remote_host(&self, host: &HostSpec) -> HostChoice {
        let (name, port) = match &host.kind {
            HostKind::Local => return HostChoice::Localhost,
            HostKind::Ssh { .. } => {
                return HostChoice::Unusable(
                    "SSH hosts (`user@host`) are not supported by dportage; run distccd there \
                     and list it as HOST:PORT instead"
                        .to_owned(),
                )
            }
            HostKind::Tcp { host, port } => (host, *port),
        };
        if host.auth.is_some() {
            return HostChoice::Unusable(
                "GSS-API authentication (`,auth`) is not supported by dportage; remove `,auth` \
                 if the server does not require it"
                    .to_owned(),
            );
        }
        let version = match host.protocol() {
            ProtocolVersion::V3 => {
                tracing::info!(
                    "{}: pump mode (`,cpp`) is not implemented in the dportage client; \
                     preprocessing locally and using protocol 2",
                    host.verbatim
                );
                ProtocolVersion::V2
            }
            other => other,
        };
        HostChoice::Remote(RemoteHost {
            label: host.verbatim.clone(),
            host: name.clone(),
            port,
            version,
            // Tickets come with the signed list, which only verified
            // dispatch reads.
            ticket: None,
        })
    }

    /// One host: preprocess (first time only) while connecting, then send and receive.
    fn attempt(&mut self, remote: &RemoteHost, slot: SlotGuard) -> (Attempt, SlotGuard) {
        // Order rule (spec §8.5): the remote slot is taken before the preprocessor slot.
        let cpp_slot = match (&self.source, self.job.preprocessed) {
            (None, false) => Some(
                self.lock
                    .acquire_local(self.hosts.local_slots_cpp, self.settings.pause),
            ),
            _ => None,
        };
        if let Err(e) = self.ensure_runtime() {
            let during = "starting the network runtime";
            let source = std::io::Error::other(e);
            return (Attempt::Failed(RemoteError::Io { during, source }), slot);
        }
        let Some(runtime) = self.runtime.as_ref() else {
            return (Attempt::Failed(RemoteError::Unsupported), slot);
        };
        let flight = Flight {
            key: MAIN,
            host: remote.host.clone(),
            slot: slot.number(),
        };
        // distcc shows the chosen host while it preprocesses, then the connection.
        flight.note(match (&self.source, self.job.preprocessed) {
            (None, false) => Phase::Preprocess,
            _ => Phase::Connect,
        });
        let job = &self.job;
        let settings = self.settings;
        let timeouts = self.timeouts;
        let wire_argv = &self.wire_argv;
        let source = &mut self.source;
        let outcome = runtime.block_on(async move {
            let connection = if source.is_none() {
                let (preprocessed, connection) = tokio::join!(
                    preprocess(job, settings, cpp_slot),
                    Connection::open(remote, wire_argv, timeouts)
                );
                match preprocessed {
                    Ok(p) => *source = Some(p),
                    // Dropping the connection closes it without DOTI; the server
                    // sees EOF and drops the job (as with distcc 3.4).
                    Err(e) => return Attempt::NoSource(e),
                }
                connection
            } else {
                Connection::open(remote, wire_argv, timeouts).await
            };
            let Some(preprocessed) = source.as_ref() else {
                return Attempt::Failed(RemoteError::Unsupported);
            };
            match connection {
                Ok(connection) => match connection
                    .monitored(flight)
                    .finish(&preprocessed.source, Path::new(&job.output))
                    .await
                {
                    Ok(reply) => Attempt::Reply(reply),
                    Err(e) => Attempt::Failed(e),
                },
                Err(e) => Attempt::Failed(e),
            }
        });
        (outcome, slot)
    }

    fn ensure_runtime(&mut self) -> Result<(), crate::runtime::RuntimeError> {
        if self.runtime.is_none() {
            self.runtime = Some(crate::runtime::current_thread()?);
        }
        Ok(())
    }

    /// The job counts as done remotely: show what the preprocessor and the server said.
    fn show_remote_output(&self, reply: &RemoteReply) {
        if let Some(p) = &self.source {
            write_stderr(&p.stderr);
        }
        // Compilers print diagnostics, not data: the server's stderr is always
        // cleaned; its stdout only when it goes to a terminal (it may be data).
        if std::io::stdout().is_terminal() {
            write_stdout(&strip_terminal_controls(&reply.stdout));
        } else {
            write_stdout(&reply.stdout);
        }
        write_stderr(&strip_terminal_controls(&reply.stderr));
    }

    /// Remote exit code 1–127 (spec §8.9).
    fn remote_compile_error(&mut self, host: &HostSpec, reply: &RemoteReply, code: i32) -> i32 {
        let input = self.job.input().to_owned();
        critique(&input, &host.verbatim, code);
        if self.settings.skip_local_retry {
            self.show_remote_output(reply);
            return code;
        }
        log_retrying_locally(&input);
        if !self.settings.fallback {
            log_fallbacks_disabled();
            self.show_remote_output(reply);
            return code;
        }
        // Backed off until the local compile shows the server was right.
        self.lock.mark_failed(host);
        log_running_locally(Some((&input, &host.verbatim)));
        let local = self.local_fallback();
        if local == 0 {
            tracing::warn!(
                "compiling {input} on {} failed (exit code {code}) but succeeded locally; \
                 the host stays backed off",
                host.verbatim
            );
        } else {
            self.lock.clear(host);
        }
        local
    }

    fn fallback(&self) -> Fallback<'_> {
        Fallback::new(
            &self.job,
            self.settings,
            Some(&self.lock),
            self.hosts.local_slots,
        )
    }

    /// No host left to try; `last_host` is the last one that was.
    fn out_of_hosts(
        &mut self,
        last_host: Option<String>,
        last_failure: Option<(i32, Vec<u8>)>,
    ) -> i32 {
        let input = self.job.input().to_owned();
        if !self.settings.fallback {
            log_fallbacks_disabled();
            return match last_failure {
                Some((code, server_stderr)) => {
                    write_stderr(&strip_terminal_controls(&server_stderr));
                    code
                }
                None => exitcode::NO_HOSTS,
            };
        }
        log_running_locally(last_host.as_deref().map(|host| (input.as_str(), host)));
        self.local_fallback()
    }

    /// Compile here after distribution did not produce a result.
    fn local_fallback(&mut self) -> i32 {
        // The preprocessed file is of no further use; delete it before the
        // compile, which may take a while.
        self.source = None;
        self.fallback().compile_here()
    }
}

/// A host failed before replying: distcc's words for the failures it names
/// (a refused connection, an unknown host name), ours for the rest.
fn log_remote_error(input: &str, host: &str, error: &RemoteError) {
    match error {
        RemoteError::Resolve { .. } => tracing::error!(target: "dcc_connect_by_name", "{error}"),
        RemoteError::Connect { .. } => tracing::error!("{error}"),
        _ => tracing::warn!("cannot compile {input} on {host}: {error}"),
    }
}

enum HostChoice {
    Remote(RemoteHost),
    Localhost,
    Unusable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses() {
        assert_eq!(classify_status(0), RemoteStatus::Success);
        assert_eq!(classify_status(0x100), RemoteStatus::CompileError(1));
        assert_eq!(classify_status(0x6e00), RemoteStatus::CompileError(110));
        assert!(matches!(
            classify_status(0x8b),
            RemoteStatus::Abnormal { code: 139, .. }
        ));
        assert!(matches!(
            classify_status(0x0b),
            RemoteStatus::Abnormal { code: 139, .. }
        ));
        assert!(matches!(
            classify_status(0x8000),
            RemoteStatus::Abnormal { code: 128, .. }
        ));
        assert!(matches!(
            classify_status(0xff00),
            RemoteStatus::Abnormal { code: 255, .. }
        ));
        assert!(matches!(
            classify_status(0x137f),
            RemoteStatus::Abnormal { .. }
        ));
        assert!(matches!(
            classify_status(0x1_0000),
            RemoteStatus::Abnormal {
                code: exitcode::PROTOCOL_ERROR,
                ..
            }
        ));
    }
}
