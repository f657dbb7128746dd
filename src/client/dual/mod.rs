//! Verified dispatch (`DPORTAGE_REDUNDANCY=N`, N ≥ 2): one distributable job goes
//! to N remote hosts with distinct addresses at once, and a remote object is
//! written only when the N hosts first drawn agree on it (object bytes and exit
//! status, compared by blake3) and no vote differs — or when this machine's
//! compiler, given the very same preprocessed input, confirms it. A dispute,
//! or a majority that needs a host drawn later (a hedge, a replacement), is
//! decided by this machine.
//!
//! The rules live, sans-I/O and tested event by event, in
//! [`crate::verify::scheduler`] (the README's trust model explains them to
//! users). This module executes them:
//! * here, the job is prepared: one preprocessing per job; the argv is
//!   canonicalised (`crate::canonical`) so honest hosts agree byte for byte;
//!   jobs that cannot be made deterministic run here;
//! * [`voters`]: which hosts may vote, and a slot on the next one;
//! * [`speed`]: how fast each host was on earlier jobs (`speed.json`), which
//!   weighs the draw; hosts that keep lagging are asked last;
//! * [`driver`]: the vote, on the network (tokio), as the scheduler directs;
//! * [`verdict`]: acting on the decision — write the agreed object, show the
//!   agreed failure, compile here as arbiter or spot check;
//! * [`mismatch`]: a host that loses a vote is named on stderr, excluded from this
//!   user's builds for good and recorded in the evidence log
//!   (`super::evidence`), which goes to the coordinator.
//!
//! A remote result is never written unverified: when N hosts cannot be had,
//! the job is compiled here (`super::fallback`).
//!
//! Slots: one distcc slot per host in use, held only while that host works on
//! the job, so two clients each holding one host's last slot cannot wait for
//! each other forever.

mod cached;
mod driver;
mod mismatch;
mod speed;
mod verdict;
mod voters;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::args::{server_argv, CompileJob};
use crate::canonical::{canonicalize, preprocessor_extra_args, Canonical};
use crate::jobstate::outcome::{Outcome, Verdict};
use crate::network::{clock::unix_now, identity};
use crate::verify::scheduler::{BackOffReason, HostId, Rules};
use crate::verify::ResultDigest;

use super::evidence::StateDir;
use super::fallback::{self, open_lock_dir, Fallback};
use super::hostsource::load_host_list;
use super::remote::NetTimeouts;
use super::settings::{Settings, Verification};
use super::slots::LockDir;

pub use voters::drop_excluded_hosts;
use voters::Voters;

/// The signed host list of `DPORTAGE_HOST_LIST`, checked against the key
/// pinned for `DPORTAGE_COORDINATOR` and this member's identity.
/// Also returns the member's identity, which proves its tickets.
fn signed_host_list(
    path: &std::path::Path,
    settings: &Settings,
) -> Result<(crate::network::api::HostsResponse, identity::Identity), String> {
    use crate::network::{caller::CoordinatorUrl, host_list};
    let dir = settings
        .dportage_dir
        .as_deref()
        .ok_or("no DPORTAGE_DIR (or HOME) holds the pinned coordinator key")?;
    let url = settings
        .coordinator
        .as_deref()
        .ok_or("DPORTAGE_HOST_LIST is set without DPORTAGE_COORDINATOR")?;
    let url = CoordinatorUrl::parse(url.trim())
        .map_err(|e| e.to_string())?
        .to_string();
    let me = identity::Identity::load(dir).map_err(|e| e.to_string())?;
    let list = host_list::load(path, dir, &url, &me.id(), unix_now()).map_err(|e| e.to_string())?;
    Ok((list, me))
}

/// Compile `job` with verified dispatch and return the exit code.
pub fn distribute(
    job: CompileJob,
    settings: &Settings,
    verification: &Verification,
    timeouts: NetTimeouts,
) -> i32 {
    let started = Instant::now();
    let input = job.input().to_owned();
    let mut voted = false;
    let code = prepare(job, settings, verification, timeouts, started, &mut voted);
    // Jobs the vote decided record themselves, with its verdict; the rest
    // were compiled here without one.
    if !voted {
        record_outcome(
            settings,
            &input,
            started,
            Verdict::Local,
            Vec::new(),
            Vec::new(),
        );
    }
    code
}

/// Everything before the vote; `voted` is set once a vote ran.
fn prepare(
    job: CompileJob,
    settings: &Settings,
    verification: &Verification,
    timeouts: NetTimeouts,
    started: Instant,
    voted: &mut bool,
) -> i32 {
    let input = job.input().to_owned();
    let hosts = match load_host_list() {
        Ok(hosts) => hosts,
        Err(e) => return fallback::without_host_list(&job, settings, &e),
    };
    let Some(lock) = open_lock_dir(settings) else {
        return fallback::without_lock_dir(&job, settings);
    };
    let mut wire = server_argv(&job);
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    match canonicalize(&wire, &cwd, &input) {
        Canonical::Local(why) => {
            tracing::info!(
                "compiling {input} locally: its result cannot be compared between hosts ({why})"
            );
            return Fallback::new(&job, settings, Some(&lock), hosts.local_slots).compile_here();
        }
        Canonical::Send { extra_args } => wire.extend(extra_args),
    }
    // Only the local preprocessing gets these (the hosts compile a `.i`); the
    // user's argv is also what a local fallback runs, where they are harmless.
    let mut job = job;
    job.argv.extend(preprocessor_extra_args(&job.argv));
    let state = match &settings.dportage_dir {
        Some(dir) => match StateDir::open(dir) {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::warn!("{e}; hosts that lose a vote cannot be remembered");
                None
            }
        },
        None => {
            tracing::warn!(
                "no home directory and no DPORTAGE_DIR: hosts that lose a vote cannot be \
                 remembered (set DPORTAGE_DIR)"
            );
            None
        }
    };
    let excluded: Vec<SocketAddr> = match &state {
        Some(state) => match state.excluded() {
            Ok(list) => list.into_iter().map(|e| e.address).collect(),
            Err(e) => {
                // Refusing to work is better than trusting a known liar again.
                tracing::error!(
                    "{e}; cannot tell which hosts are excluded, so compiling {input} locally"
                );
                return Fallback::new(&job, settings, Some(&lock), hosts.local_slots)
                    .compile_here();
            }
        },
        None => Vec::new(),
    };
    let mut voters = Voters::new(&hosts, &excluded);
    let mut member = None;
    if let Some(path) = &settings.host_list {
        match signed_host_list(path, settings) {
            Ok((list, me)) => {
                let me = Arc::new(me);
                voters.pair_by(&list, &me, unix_now());
                member = Some(me);
            }
            Err(why) => {
                // Hosts of a list nobody vouches for are hosts of anyone's
                // choosing: no vote among them is worth anything.
                let fallback = Fallback::new(&job, settings, Some(&lock), hosts.local_slots);
                let why = format!("not using the network's hosts: {why}");
                if settings.fallback {
                    tracing::warn!("{why}; compiling {input} locally");
                }
                return fallback.unverifiable(&why);
            }
        }
    }
    if let Some(state) = &state {
        voters.rank_by_speed(&speed::load(state.path()), unix_now());
    }
    let redundancy = verification.redundancy;
    let usable = voters.distinct_usable(&lock);
    if usable < redundancy {
        let reason = format!(
            "DPORTAGE_REDUNDANCY={redundancy} needs {redundancy} remote hosts with distinct \
             addresses, and {usable} {} usable{}",
            if usable == 1 { "is" } else { "are" },
            voters.why_not()
        );
        return Fallback::new(&job, settings, Some(&lock), hosts.local_slots).unverifiable(&reason);
    }
    let spot_check =
        verification.spot_check > 0.0 && rand::random::<f64>() < verification.spot_check;
    let wire_bytes = Arc::new(wire.iter().map(|a| a.clone().into_bytes()).collect());
    let verified = Verified {
        job,
        settings,
        lock,
        voters,
        local_slots: hosts.local_slots,
        local_slots_cpp: hosts.local_slots_cpp,
        wire,
        wire_bytes,
        rules: Rules {
            redundancy,
            hedge_min: verification.hedge_min,
            spot_check,
            trust_remote_failure: settings.skip_local_retry || !settings.fallback,
        },
        timeouts,
        state,
        started,
        member,
        cache: std::cell::RefCell::new(None),
    };
    *voted = true;
    verified.run()
}

/// Add this job's line to the monitor log (`dportage monitor` reads it).
fn record_outcome(
    settings: &Settings,
    input: &str,
    started: Instant,
    verdict: Verdict,
    hosts: Vec<String>,
    losers: Vec<String>,
) {
    let Some(dir) = &settings.dportage_dir else {
        return;
    };
    let outcome = Outcome {
        time: unix_now(),
        input: input.to_owned(),
        hosts,
        verdict,
        losers,
        ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    super::monitor_state::record_outcome(dir, &outcome);
}

/// One job under verified dispatch, and what executing its actions needs.
struct Verified<'a> {
    job: CompileJob,
    settings: &'a Settings,
    lock: LockDir,
    voters: Voters,
    local_slots: u32,
    local_slots_cpp: u32,
    /// The argv every host gets.
    wire: Vec<String>,
    wire_bytes: Arc<Vec<Vec<u8>>>,
    rules: Rules,
    timeouts: NetTimeouts,
    state: Option<StateDir>,
    /// When the job started, for the monitor log.
    started: Instant,
    /// The member's identity when the hosts came from the network's signed
    /// list: it proves tickets and signs cache lookups.
    member: Option<Arc<identity::Identity>>,
    /// The job's key in the cache, once looked up, and the hit the vote is
    /// spot-checking (see [`cached`]).
    cache: std::cell::RefCell<Option<cached::CacheCheck>>,
}

impl Verified<'_> {
    fn run(&self) -> i32 {
        let runtime = match crate::runtime::current_thread() {
            Ok(rt) => rt,
            Err(e) => return self.fallback().unverifiable(&e.to_string()),
        };
        let mut ready = None;
        if let Some(toolchain) = self.cache_toolchain() {
            let source = runtime.block_on(driver::preprocess_source(self));
            if let Ok(source) = &source {
                if let Some(code) = self.try_cache(&runtime, toolchain, source) {
                    return code;
                }
            }
            ready = Some(source);
        }
        let voted = runtime.block_on(driver::vote(self, ready));
        // Close the sockets of hosts whose votes were not needed, and release
        // their slots, before anything is compiled here.
        drop(runtime);
        self.remember_speeds(&voted.speeds);
        for host in 0..self.voters.candidates.len() {
            super::monitor_state::forget(driver::flight_key(HostId(host)));
        }
        verdict::act(self, voted)
    }

    /// Add how each host did to the speed record (before any compile here, so
    /// the next jobs of the build already know).
    fn remember_speeds(&self, speeds: &[(HostId, crate::trust::speed::Outcome)]) {
        let Some(state) = &self.state else {
            return;
        };
        let outcomes: Vec<_> = speeds
            .iter()
            .filter_map(|(host, outcome)| {
                let c = self.voters.candidates.get(host.0)?;
                Some((c.addr.to_string(), c.id.clone(), *outcome))
            })
            .collect();
        if let Err(e) = speed::record(state.path(), &outcomes) {
            tracing::warn!("{e}; how fast the hosts were on this job is not remembered");
        }
    }

    fn input(&self) -> &str {
        self.job.input()
    }

    fn fallback(&self) -> Fallback<'_> {
        Fallback::new(&self.job, self.settings, Some(&self.lock), self.local_slots)
    }

    /// Avoid `hosts` for a while, saying why when nobody did yet.
    fn back_off(&self, hosts: &[HostId], why: BackOffReason) {
        let input = self.input();
        match why {
            // Said when the failure was seen.
            BackOffReason::Failed => {}
            BackOffReason::NotAVote { status } => {
                for host in hosts {
                    tracing::warn!(
                        "{} could not compile {input}: {}; asking another host",
                        self.voters.label(host.0),
                        describe_status(status)
                    );
                }
            }
            BackOffReason::FailureNotReproduced { remote, here } => tracing::warn!(
                "compiling {input} failed on {} (exit code {remote}) but gave exit code {here} \
                 here; those hosts are backed off",
                self.labels(hosts)
            ),
        }
        for host in hosts {
            self.lock.mark_failed(&self.voters.candidates[host.0].spec);
        }
    }

    /// These hosts did their job: forget their backoff.
    fn clear_backoff(&self, hosts: &[HostId]) {
        for host in hosts {
            self.lock.clear(&self.voters.candidates[host.0].spec);
        }
    }

    /// The hosts' entries, as a list for a sentence.
    fn labels(&self, hosts: &[HostId]) -> String {
        hosts
            .iter()
            .map(|h| self.voters.label(h.0))
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

fn describe_status(status: u32) -> String {
    let signal = status & 0x7f;
    if signal == 0 {
        let code = (status >> 8) & 0xff;
        if code >= 100 {
            format!("exit code {code} (a failure of the server, not of the compile)")
        } else {
            format!("exit code {code}")
        }
    } else {
        format!("compiler killed by signal {signal}")
    }
}

/// Digest of a reply or local result: the object counts only on success, so a
/// partial object next to a failing status never makes honest hosts disagree.
fn digest_of(status: u32, object: &[u8], stderr: &[u8]) -> ResultDigest {
    let object: &[u8] = if status == 0 { object } else { &[] };
    ResultDigest::of(status, object, stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_described_for_users() {
        assert_eq!(describe_status(1 << 8), "exit code 1");
        assert!(describe_status(110 << 8).contains("server"));
        assert_eq!(describe_status(9), "compiler killed by signal 9");
    }

    #[test]
    fn failed_compiles_vote_on_status_only() {
        let a = digest_of(0x100, b"partial object", b"x.c:1: error\n");
        let b = digest_of(0x100, b"", b"x.c:1: error\n");
        assert!(a.same_vote(&b));
        assert!(!digest_of(0, b"o", b"").same_vote(&digest_of(0, b"p", b"")));
    }
}
