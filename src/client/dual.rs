//! Verified dispatch (`DPORTAGE_REDUNDANCY=N`, N ≥ 2): one distributable job goes
//! to N remote hosts with distinct addresses at once, and an object is written
//! only when N of them agree on it (object bytes and exit status, compared by
//! blake3) as a strict majority of all votes — or when this machine's compiler,
//! given the very same preprocessed input, decides.
//!
//! The rules (the README's trust model explains them to users):
//! * One preprocessing per job; the argv is canonicalised (`crate::canonical`)
//!   so honest hosts agree byte for byte; jobs that cannot be made
//!   deterministic run here.
//! * Failures to compile (connection, timeout, protocol, refusal, statuses that
//!   are not votes per [`status_is_vote`]) are not votes: the host is backed off
//!   as distcc does and replaced by another one.
//! * Disagreement: further hosts are asked until a strict majority agrees, at
//!   most `N + 2` votes in all; otherwise this machine compiles the `.i` as
//!   arbiter. A host that loses a vote is named on stderr, excluded from this
//!   user's builds for good and recorded in the evidence log
//!   (`super::evidence`).
//! * A host lagging far behind the first result is hedged: another host gets
//!   the job too and the first agreeing votes win.
//! * `DPORTAGE_SPOTCHECK=p` compiles a random fraction of verified jobs here as
//!   well; when this machine disagrees with the hosts' agreed result, its own
//!   result is written and every host that disagrees with it is reported.
//! * A remote result is never written unverified: when N hosts cannot be had,
//!   the job is compiled here.
//!
//! Slots: one distcc slot per host in use, held only while that host works on
//! the job, so two clients each holding one host's last slot cannot wait for
//! each other forever.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::args::scan::{scan_locating_output, OutputAt};
use crate::args::{server_argv, CompileJob, ScanOutcome};
use crate::canonical::{canonicalize, preprocessor_extra_args, Canonical};
use crate::exitcode;
use crate::hosts::{HostKind, HostList, HostSpec, DEFAULT_LOCAL_SLOTS};
use crate::protocol::{ProtocolVersion, Reply};
use crate::verify::{arbitrate, status_is_vote, tally, ResultDigest, Verdict, Vote};

use super::evidence::{now_secs, Evidence, Exclusion, HostResult, StateDir, EXCLUDED_FILE};
use super::hostsource::{distcc_dir, load_host_list};
use super::local::run_compiler;
use super::log::{write_stderr, write_stdout};
use super::output::{strip_terminal_controls, write_output_atomically};
use super::preprocess::{preprocess, PreprocessError, Preprocessed};
use super::remote::{Connection, NetTimeouts, RemoteError, RemoteHost, CONNECT_TIMEOUT};
use super::settings::Settings;
use super::slots::{LockDir, SlotGuard};

/// Votes asked for beyond the redundancy before the local arbiter decides.
const EXTRA_VOTES: usize = 2;
/// Failed hosts tolerated per job beyond the redundancy before compiling here.
const EXTRA_FAILURES: usize = 2;

/// Compile `job` with verified dispatch and return the exit code.
pub fn distribute(job: CompileJob, settings: &Settings) -> i32 {
    let redundancy = match &settings.redundancy {
        Ok(n) => *n,
        Err(message) => {
            tracing::error!("{message}");
            return exitcode::BAD_ARGUMENTS;
        }
    };
    let spot_check = match &settings.spot_check {
        Ok(p) => *p,
        Err(message) => {
            tracing::error!("{message}");
            return exitcode::BAD_ARGUMENTS;
        }
    };
    let io = match &settings.io_timeout {
        Ok(io) => *io,
        Err(message) => {
            tracing::error!("{message}");
            return exitcode::BAD_ARGUMENTS;
        }
    };
    let input = job.input().to_owned();
    let hosts = match load_host_list() {
        Ok(hosts) => hosts,
        Err(e) => {
            if !settings.fallback {
                tracing::error!("{e}; not compiling {input} locally because DISTCC_FALLBACK=0");
                return exitcode::NO_HOSTS;
            }
            tracing::warn!("{e}; compiling {input} locally");
            return compile_source_here(&job, settings, None, DEFAULT_LOCAL_SLOTS);
        }
    };
    let lock = match LockDir::open(&distcc_dir(), settings.backoff_period) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::warn!(
                "compiling {input} locally because host slots cannot be locked: {e} (check DISTCC_DIR)"
            );
            return run_compiler(&job.argv, &settings.child_safeguard());
        }
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
            return compile_source_here(&job, settings, Some(&lock), hosts.local_slots);
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
                return compile_source_here(&job, settings, Some(&lock), hosts.local_slots);
            }
        },
        None => Vec::new(),
    };
    let pool = Pool::new(&hosts, &excluded);
    let usable = pool.distinct_usable(&lock);
    if usable < redundancy {
        let reason = format!(
            "DPORTAGE_REDUNDANCY={redundancy} needs {redundancy} remote hosts with distinct \
             addresses, and {usable} {} usable{}",
            if usable == 1 { "is" } else { "are" },
            pool.why_not()
        );
        return fall_back_here(&job, settings, &lock, hosts.local_slots, &reason);
    }
    let wire_bytes = Arc::new(wire.iter().map(|a| a.clone().into_bytes()).collect());
    let mut verified = Verified {
        job,
        settings,
        lock,
        pool,
        local_slots: hosts.local_slots,
        local_slots_cpp: hosts.local_slots_cpp,
        wire,
        wire_bytes,
        redundancy,
        spot_check,
        timeouts: NetTimeouts {
            connect: CONNECT_TIMEOUT,
            io,
        },
        state,
    };
    verified.run()
}

/// Plain dispatch (redundancy 1) never sends to a host that lost a vote
/// either: the exclusion is for all of this user's builds. Costs one failed
/// `stat` when nothing was ever excluded; an unreadable list keeps distcc's
/// behaviour (nothing is excluded) with a warning.
pub fn drop_excluded_hosts(hosts: &mut HostList, settings: &Settings) {
    let Some(dir) = &settings.dportage_dir else {
        return;
    };
    if !dir.join(EXCLUDED_FILE).exists() {
        return;
    }
    let excluded: Vec<SocketAddr> = match StateDir::open(dir).and_then(|s| s.excluded()) {
        Ok(list) => list.into_iter().map(|e| e.address).collect(),
        Err(e) => {
            tracing::warn!("{e}; hosts excluded after losing a vote may be used");
            return;
        }
    };
    if excluded.is_empty() {
        return;
    }
    hosts.hosts.retain(|spec| {
        let HostKind::Tcp { host, port } = &spec.kind else {
            return true;
        };
        let keep = resolve(host, *port).is_none_or(|addr| !excluded.contains(&addr));
        if !keep {
            tracing::debug!(
                "not using {}: excluded after losing a vote (see {} in {})",
                spec.verbatim,
                EXCLUDED_FILE,
                dir.display()
            );
        }
        keep
    });
}

/// A host that may vote on this job.
#[derive(Debug, Clone)]
struct Candidate {
    spec: HostSpec,
    remote: RemoteHost,
    addr: SocketAddr,
}

/// The hosts of the list that may vote, and why the others may not.
struct Pool {
    /// Only the candidates, for the slot machinery.
    list: HostList,
    candidates: Vec<Candidate>,
    left_out: Vec<String>,
}

impl Pool {
    fn new(hosts: &HostList, excluded: &[SocketAddr]) -> Pool {
        let mut candidates = Vec::new();
        let mut left_out = Vec::new();
        for spec in &hosts.hosts {
            if spec.down {
                continue;
            }
            let (name, port) = match &spec.kind {
                HostKind::Local => {
                    left_out.push(format!(
                        "{}: this machine is the arbiter, not a remote vote",
                        spec.verbatim
                    ));
                    continue;
                }
                HostKind::Ssh { .. } => {
                    left_out.push(format!(
                        "{}: SSH hosts are not supported by dportage",
                        spec.verbatim
                    ));
                    continue;
                }
                HostKind::Tcp { host, port } => (host, *port),
            };
            if spec.auth.is_some() {
                left_out.push(format!(
                    "{}: GSS-API authentication is not supported by dportage",
                    spec.verbatim
                ));
                continue;
            }
            let Some(addr) = resolve(name, port) else {
                left_out.push(format!("{}: cannot resolve {name}", spec.verbatim));
                continue;
            };
            if excluded.contains(&addr) {
                left_out.push(format!(
                    "{}: excluded after losing a vote (see excluded-hosts in DPORTAGE_DIR)",
                    spec.verbatim
                ));
                continue;
            }
            let version = match spec.protocol() {
                // Pump mode is served by preprocessing here and speaking protocol 2.
                ProtocolVersion::V3 => ProtocolVersion::V2,
                other => other,
            };
            candidates.push(Candidate {
                spec: spec.clone(),
                remote: RemoteHost {
                    label: spec.verbatim.clone(),
                    // The resolved address, so every connection of the job goes
                    // to the address whose distinctness was checked.
                    host: addr.ip().to_string(),
                    port,
                    version,
                },
                addr,
            });
        }
        for note in &left_out {
            tracing::debug!("not a voting host: {note}");
        }
        let list = HostList {
            hosts: candidates.iter().map(|c| c.spec.clone()).collect(),
            ..hosts.clone()
        };
        Pool {
            list,
            candidates,
            left_out,
        }
    }

    /// Distinct addresses among candidates that are not backed off.
    fn distinct_usable(&self, lock: &LockDir) -> usize {
        let mut ips: Vec<IpAddr> = Vec::new();
        for c in &self.candidates {
            if !lock.is_backed_off(&c.spec) && !ips.contains(&c.addr.ip()) {
                ips.push(c.addr.ip());
            }
        }
        ips.len()
    }

    fn why_not(&self) -> String {
        if self.left_out.is_empty() {
            String::new()
        } else {
            format!(" (not voting: {})", self.left_out.join("; "))
        }
    }
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    (host, port).to_socket_addrs().ok()?.next()
}

/// The network an address belongs to, for preferring hosts of different
/// networks: IPv4 /24, IPv6 /48.
fn network(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets()[..3].to_vec(),
            None => v6.octets()[..6].to_vec(),
        },
    }
}

/// Digest of a reply or local result: the object counts only on success, so a
/// partial object next to a failing status never makes honest hosts disagree.
fn digest_of(status: u32, object: &[u8], stderr: &[u8]) -> ResultDigest {
    let object: &[u8] = if status == 0 { object } else { &[] };
    ResultDigest::of(status, object, stderr)
}

/// The shell's exit code for a raw wait status.
fn exit_code_of_status(status: u32) -> i32 {
    let signal = (status & 0x7f) as i32;
    if signal == 0 {
        ((status >> 8) & 0xff) as i32
    } else {
        128 + signal
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

/// What one voting host returned.
struct Received {
    idx: usize,
    label: String,
    digest: ResultDigest,
    stdout: [u8; 32],
    /// Kept for the first vote of each result only (the one that may be written).
    reply: Option<Reply>,
}

impl Received {
    fn vote(&self) -> Vote {
        Vote {
            host: self.label.clone(),
            digest: self.digest,
        }
    }

    fn same_result(&self, other: &ResultDigest) -> bool {
        self.digest.status == other.status && self.digest.object == other.object
    }
}

/// The preprocessed source, shared by every dispatch of the job.
struct Source {
    /// Holds the temporary file and the preprocessor's stderr.
    pre: Preprocessed,
    bytes: Arc<Vec<u8>>,
    hash: String,
}

/// How the vote ended.
enum Decision {
    NoSource(PreprocessError),
    /// No vote at all: compile the source here.
    NoHosts(String),
    Agreed {
        digest: ResultDigest,
        agreeing: Vec<String>,
        dissenters: Vec<String>,
        received: Vec<Received>,
        source: Source,
    },
    /// Votes that decide nothing: the local arbiter decides.
    Undecided {
        reason: String,
        received: Vec<Received>,
        source: Source,
    },
}

/// This machine's compile of the preprocessed input.
struct LocalResult {
    status: u32,
    object: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    digest: ResultDigest,
}

type DispatchResult = (usize, Result<Reply, RemoteError>);

/// One host working on the job.
struct Flight {
    idx: usize,
    started: Instant,
    /// Hedged: another host was asked instead of waiting for this one.
    lagging: bool,
}

/// Hosts working on the job; dropping it aborts them (closing their sockets
/// and releasing their slots).
struct Flights {
    set: JoinSet<DispatchResult>,
    info: HashMap<tokio::task::Id, Flight>,
}

impl Flights {
    fn len(&self) -> usize {
        self.info.len()
    }

    fn active(&self) -> usize {
        self.info.values().filter(|f| !f.lagging).count()
    }

    fn restart_clocks(&mut self) {
        let now = Instant::now();
        for f in self.info.values_mut() {
            f.started = now;
        }
    }

    fn earliest_active_start(&self) -> Option<Instant> {
        self.info
            .values()
            .filter(|f| !f.lagging)
            .map(|f| f.started)
            .min()
    }
}

enum Take {
    Got(usize, SlotGuard),
    /// Eligible hosts exist, but every slot is taken.
    Busy,
    /// No eligible host is left for this job.
    NoneLeft,
}

struct Verified<'a> {
    job: CompileJob,
    settings: &'a Settings,
    lock: LockDir,
    pool: Pool,
    local_slots: u32,
    local_slots_cpp: u32,
    /// The argv every host gets.
    wire: Vec<String>,
    wire_bytes: Arc<Vec<Vec<u8>>>,
    redundancy: usize,
    spot_check: f64,
    timeouts: NetTimeouts,
    state: Option<StateDir>,
}

impl Verified<'_> {
    fn run(&mut self) -> i32 {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let reason = format!("cannot start the network runtime: {e}");
                return self.fall_back(&reason);
            }
        };
        let decision = runtime.block_on(self.decide());
        // Close the sockets of hosts whose votes were not needed.
        drop(runtime);
        match decision {
            Decision::NoSource(e) => self.without_source(e),
            Decision::NoHosts(reason) => self.fall_back(&reason),
            Decision::Agreed {
                digest,
                agreeing,
                dissenters,
                received,
                source,
            } => {
                if digest.status == 0 {
                    self.agreed_object(&digest, &agreeing, &dissenters, &received, source)
                } else {
                    self.agreed_failure(&digest, &agreeing, &dissenters, &received, source)
                }
            }
            Decision::Undecided {
                reason,
                received,
                source,
            } => self.arbiter(&reason, &received, source),
        }
    }

    fn input(&self) -> &str {
        self.job.input()
    }

    fn max_votes(&self) -> usize {
        self.redundancy + EXTRA_VOTES
    }

    /// Run the vote. Everything remote happens here; everything local after.
    async fn decide(&self) -> Decision {
        let input = self.input().to_owned();
        let (source_tx, source_rx) = watch::channel::<Option<Arc<Vec<u8>>>>(None);
        let mut flights = Flights {
            set: JoinSet::new(),
            info: HashMap::new(),
        };
        let mut used: Vec<usize> = Vec::new();

        // Remote slots first (distcc's order rule), at least one before the
        // preprocessor runs, so connecting overlaps preprocessing.
        loop {
            match self.take_host(&used) {
                Take::Got(idx, slot) => {
                    used.push(idx);
                    self.launch(&mut flights, idx, slot, source_rx.clone());
                    if flights.len() >= self.redundancy {
                        break;
                    }
                }
                Take::Busy if flights.len() == 0 => {
                    tracing::debug!("every slot of the voting hosts is busy; waiting");
                    tokio::time::sleep(self.settings.pause).await;
                }
                Take::NoneLeft if flights.len() == 0 => {
                    return Decision::NoHosts(format!(
                        "no voting host is left (all backed off or excluded){}",
                        self.pool.why_not()
                    ));
                }
                Take::Busy | Take::NoneLeft => break,
            }
        }

        let cpp_slot = (!self.job.preprocessed).then(|| {
            self.lock
                .acquire_local(self.local_slots_cpp, self.settings.pause)
        });
        let mut pre = match preprocess(&self.job, self.settings, cpp_slot).await {
            Ok(pre) => pre,
            Err(e) => return Decision::NoSource(e),
        };
        let bytes = Arc::new(std::mem::take(&mut pre.source));
        let source = Source {
            hash: blake3::hash(&bytes).to_hex().to_string(),
            bytes: Arc::clone(&bytes),
            pre,
        };
        let _ = source_tx.send(Some(bytes));
        flights.restart_clocks();

        let mut received: Vec<Received> = Vec::new();
        let mut failures = 0usize;
        let mut first_vote_after: Option<Duration> = None;
        loop {
            let votes: Vec<Vote> = received.iter().map(Received::vote).collect();
            let more = match tally(&votes, self.redundancy) {
                Verdict::Agreed {
                    digest,
                    agreeing,
                    dissenters,
                } => {
                    return Decision::Agreed {
                        digest,
                        agreeing,
                        dissenters,
                        received,
                        source,
                    }
                }
                Verdict::Undecided { more } => more,
            };
            if more > self.max_votes().saturating_sub(received.len()) {
                return Decision::Undecided {
                    reason: format!(
                        "no result can reach a strict majority within {} votes",
                        self.max_votes()
                    ),
                    received,
                    source,
                };
            }
            let room = self
                .max_votes()
                .saturating_sub(received.len() + flights.len());
            let want = more.saturating_sub(flights.active()).min(room);
            let mut waiting_for_slot = false;
            let mut none_left = failures > self.redundancy + EXTRA_FAILURES;
            if !none_left {
                for _ in 0..want {
                    match self.take_host(&used) {
                        Take::Got(idx, slot) => {
                            used.push(idx);
                            self.launch(&mut flights, idx, slot, source_rx.clone());
                        }
                        Take::Busy => {
                            waiting_for_slot = true;
                            break;
                        }
                        Take::NoneLeft => {
                            none_left = true;
                            break;
                        }
                    }
                }
            }
            if flights.len() == 0 {
                if waiting_for_slot {
                    tracing::debug!("every slot of the remaining voting hosts is busy; waiting");
                    tokio::time::sleep(self.settings.pause).await;
                    continue;
                }
                let reason = if none_left {
                    format!(
                        "{} of {} votes in, and no further host can be asked \
                         ({failures} failed){}",
                        received.len(),
                        self.redundancy,
                        self.pool.why_not()
                    )
                } else {
                    "no further host can be asked".to_owned()
                };
                if received.is_empty() {
                    return Decision::NoHosts(reason);
                }
                return Decision::Undecided {
                    reason,
                    received,
                    source,
                };
            }

            let hedge_at = first_vote_after.and_then(|first| {
                let threshold = (first * 2).max(first + self.settings.hedge_min);
                flights.earliest_active_start().map(|s| s + threshold)
            });
            tokio::select! {
                joined = flights.set.join_next_with_id() => {
                    let (id, outcome) = match joined {
                        Some(Ok((id, (idx, outcome)))) => (id, Some((idx, outcome))),
                        Some(Err(e)) => (e.id(), None),
                        None => continue,
                    };
                    let flight = flights.info.remove(&id);
                    let Some((idx, outcome)) = outcome else {
                        failures += 1;
                        continue;
                    };
                    let candidate = &self.pool.candidates[idx];
                    let label = &candidate.spec.verbatim;
                    match outcome {
                        Ok(reply) if status_is_vote(reply.status) => {
                            let elapsed = flight.map(|f| f.started.elapsed()).unwrap_or_default();
                            first_vote_after.get_or_insert(elapsed);
                            let digest = digest_of(reply.status, &reply.object, &reply.stderr);
                            tracing::debug!(
                                "{label} compiled {input} in {} ms: {digest}",
                                elapsed.as_millis()
                            );
                            let first_of_its_kind = !received.iter().any(|r| r.same_result(&digest));
                            received.push(Received {
                                idx,
                                label: label.clone(),
                                digest,
                                stdout: *blake3::hash(&reply.stdout).as_bytes(),
                                reply: first_of_its_kind.then_some(reply),
                            });
                        }
                        Ok(reply) => {
                            failures += 1;
                            tracing::warn!(
                                "{label} could not compile {input}: {}; asking another host",
                                describe_status(reply.status)
                            );
                            self.lock.mark_failed(&candidate.spec);
                        }
                        Err(e) => {
                            failures += 1;
                            tracing::warn!("cannot compile {input} on {label}: {e}; asking another host");
                            self.lock.mark_failed(&candidate.spec);
                        }
                    }
                }
                _ = sleep_until(hedge_at), if hedge_at.is_some() => {
                    let Some(first) = first_vote_after else {
                        continue;
                    };
                    let now = Instant::now();
                    let threshold = (first * 2).max(first + self.settings.hedge_min);
                    for f in flights.info.values_mut().filter(|f| !f.lagging) {
                        if now.duration_since(f.started) >= threshold {
                            f.lagging = true;
                            tracing::debug!(
                                "{} is slow on {input} (the first vote took {} ms); asking another host too",
                                self.pool.candidates[f.idx].spec.verbatim,
                                first.as_millis()
                            );
                        }
                    }
                }
                _ = tokio::time::sleep(self.settings.pause), if waiting_for_slot => {}
            }
        }
    }

    /// Send the job to candidate `idx`, holding `slot` while it works.
    fn launch(
        &self,
        flights: &mut Flights,
        idx: usize,
        slot: SlotGuard,
        source: watch::Receiver<Option<Arc<Vec<u8>>>>,
    ) {
        let remote = self.pool.candidates[idx].remote.clone();
        tracing::debug!(
            "sending {} to {} (protocol {})",
            self.input(),
            remote.label,
            remote.version.number()
        );
        let argv = Arc::clone(&self.wire_bytes);
        let timeouts = self.timeouts;
        let handle = flights
            .set
            .spawn(dispatch(idx, remote, argv, source, timeouts, slot));
        flights.info.insert(
            handle.id(),
            Flight {
                idx,
                started: Instant::now(),
                lagging: false,
            },
        );
    }

    /// A slot on a host this job has not used, at an address it has not used,
    /// preferring networks it has not used.
    fn take_host(&self, used: &[usize]) -> Take {
        let candidates = &self.pool.candidates;
        let used_ips: Vec<IpAddr> = used.iter().map(|&i| candidates[i].addr.ip()).collect();
        let used_nets: Vec<Vec<u8>> = used_ips.iter().map(|ip| network(*ip)).collect();
        let mut same_address = Vec::new();
        let mut same_network = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            if used.contains(&i) || used_ips.contains(&c.addr.ip()) {
                same_address.push(c.spec.verbatim.clone());
                same_network.push(c.spec.verbatim.clone());
            } else if used_nets.contains(&network(c.addr.ip())) {
                same_network.push(c.spec.verbatim.clone());
            }
        }
        let any_eligible = |exclude: &[String]| {
            candidates
                .iter()
                .any(|c| !exclude.contains(&c.spec.verbatim) && !self.lock.is_backed_off(&c.spec))
        };
        let found = |spec: &HostSpec| {
            candidates
                .iter()
                .enumerate()
                .position(|(i, c)| c.spec.verbatim == spec.verbatim && !used.contains(&i))
        };
        if any_eligible(&same_network) {
            if let Some((spec, slot)) = self.lock.try_acquire(&self.pool.list, &same_network) {
                if let Some(idx) = found(&spec) {
                    return Take::Got(idx, slot);
                }
            }
        }
        if !any_eligible(&same_address) {
            return Take::NoneLeft;
        }
        match self.lock.try_acquire(&self.pool.list, &same_address) {
            Some((spec, slot)) => match found(&spec) {
                Some(idx) => Take::Got(idx, slot),
                None => Take::NoneLeft,
            },
            None => Take::Busy,
        }
    }

    /// The hosts agree on an object.
    fn agreed_object(
        &mut self,
        digest: &ResultDigest,
        agreeing: &[String],
        dissenters: &[String],
        received: &[Received],
        source: Source,
    ) -> i32 {
        let input = self.input().to_owned();
        let words_agree = self.words_agree(digest, received);
        let spot = self.spot_check > 0.0 && rand::random::<f64>() < self.spot_check;
        let local = if spot || !words_agree {
            let why = if spot {
                "spot check"
            } else {
                "the hosts' diagnostics differ"
            };
            tracing::debug!("compiling {input} here too ({why})");
            match self.compile_preprocessed_here(&source) {
                Ok(local) => Some(local),
                Err(e) => {
                    tracing::warn!("cannot compile {input} here to check the hosts: {e}");
                    None
                }
            }
        } else {
            None
        };
        if let Some(local) = &local {
            if !same_ballot(&local.digest, digest) {
                // This machine is trusted over any number of strangers.
                let losers: Vec<String> = received
                    .iter()
                    .filter(|r| !r.same_result(&local.digest))
                    .map(|r| r.label.clone())
                    .collect();
                self.report(
                    "spot-check",
                    &losers,
                    "this machine's compiler",
                    &local.digest,
                    received,
                    Some(local),
                    &source,
                );
                return self.finish_with_local(local, &source);
            }
        }
        if !dissenters.is_empty() {
            self.report(
                "majority",
                dissenters,
                &agreeing.join(" and "),
                digest,
                received,
                local.as_ref(),
                &source,
            );
        }
        let Some(reply) = received
            .iter()
            .find(|r| r.same_result(digest))
            .and_then(|r| r.reply.as_ref())
        else {
            return self.fall_back("the agreed result was not kept (a bug)");
        };
        if let Err(e) = write_output_atomically(Path::new(&self.job.output), &reply.object) {
            tracing::error!(
                "cannot write {}: {e}; compiling {input} locally",
                self.job.output
            );
            drop(source);
            return compile_source_here(
                &self.job,
                self.settings,
                Some(&self.lock),
                self.local_slots,
            );
        }
        self.clear_backoff(agreeing);
        write_stderr(&source.pre.stderr);
        match (&local, words_agree) {
            (_, true) => {
                write_stdout(&reply.stdout);
                write_stderr(&strip_terminal_controls(&reply.stderr));
            }
            (Some(local), false) => {
                write_stdout(&local.stdout);
                write_stderr(&local.stderr);
            }
            (None, false) => tracing::warn!(
                "the hosts agree on {input} but not on its diagnostics, which are therefore not \
                 shown; compile it without DPORTAGE_REDUNDANCY to see them"
            ),
        }
        0
    }

    /// The hosts agree that the compile fails (a compile error, a vote).
    fn agreed_failure(
        &mut self,
        digest: &ResultDigest,
        agreeing: &[String],
        dissenters: &[String],
        received: &[Received],
        source: Source,
    ) -> i32 {
        let input = self.input().to_owned();
        let code = exit_code_of_status(digest.status);
        let trust_remote = self.settings.skip_local_retry || !self.settings.fallback;
        if trust_remote && self.words_agree(digest, received) {
            if !dissenters.is_empty() {
                self.report(
                    "majority",
                    dissenters,
                    &agreeing.join(" and "),
                    digest,
                    received,
                    None,
                    &source,
                );
            }
            if let Some(reply) = received
                .iter()
                .find(|r| r.same_result(digest))
                .and_then(|r| r.reply.as_ref())
            {
                write_stderr(&source.pre.stderr);
                write_stdout(&reply.stdout);
                write_stderr(&strip_terminal_controls(&reply.stderr));
            }
            return code;
        }
        tracing::info!(
            "compiling {input} failed on {} with exit code {code}; compiling locally to show the diagnostics",
            agreeing.join(" and ")
        );
        // The local retry compiles the user's command, as distcc does, so the
        // diagnostics are exactly those of a local build.
        let report_source = SourceSummary::of(&source);
        drop(source);
        let local =
            compile_source_here(&self.job, self.settings, Some(&self.lock), self.local_slots);
        if local == code {
            if !dissenters.is_empty() {
                self.report_summary(
                    "majority",
                    dissenters,
                    &agreeing.join(" and "),
                    digest,
                    received,
                    None,
                    &report_source,
                );
            }
            self.clear_backoff(agreeing);
        } else {
            // Honest hosts under resource limits can agree on a failure; that is
            // a reason to avoid them for a while, not evidence of lying.
            tracing::warn!(
                "compiling {input} failed on {} (exit code {code}) but gave exit code {local} \
                 here; those hosts are backed off",
                agreeing.join(" and ")
            );
            for label in agreeing {
                if let Some(c) = self.candidate(label) {
                    self.lock.mark_failed(&c.spec);
                }
            }
        }
        local
    }

    /// No strict majority: this machine decides.
    fn arbiter(&mut self, reason: &str, received: &[Received], source: Source) -> i32 {
        let input = self.input().to_owned();
        let seen: Vec<String> = received
            .iter()
            .map(|r| format!("{}: {}", r.label, r.digest))
            .collect();
        tracing::info!(
            "compiling {input} here as arbiter: {reason} ({})",
            seen.join("; ")
        );
        let local = match self.compile_preprocessed_here(&source) {
            Ok(local) => local,
            Err(e) => {
                tracing::error!(
                    "cannot compile the preprocessed {input} here to decide between the hosts: \
                     {e}; compiling the source instead"
                );
                drop(source);
                return compile_source_here(
                    &self.job,
                    self.settings,
                    Some(&self.lock),
                    self.local_slots,
                );
            }
        };
        let votes: Vec<Vote> = received.iter().map(Received::vote).collect();
        let judgement = arbitrate(&votes, &local.digest);
        if !judgement.liars.is_empty() {
            self.report(
                "arbiter",
                &judgement.liars,
                &format!(
                    "this machine's compiler and {}",
                    judgement.honest.join(" and ")
                ),
                &local.digest,
                received,
                Some(&local),
                &source,
            );
        }
        if judgement.local_toolchain_suspect && received.len() > 1 {
            tracing::warn!(
                "no host agreed with this machine's compiler on {input}; nobody is reported, \
                 but this machine's toolchain may differ from the hosts' (use the same compiler \
                 build everywhere)"
            );
        }
        self.clear_backoff(&judgement.honest);
        self.finish_with_local(&local, &source)
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
    fn compile_preprocessed_here(&self, source: &Source) -> Result<LocalResult, String> {
        let ext = self.job.preprocessed_ext;
        let tmp = &self.settings.tmpdir;
        let temp_error = |e: std::io::Error| {
            format!(
                "cannot create a temporary file in {}: {e} (set TMPDIR to a writable directory)",
                tmp.display()
            )
        };
        let mut input = tempfile::Builder::new()
            .prefix("dportage_check_")
            .suffix(ext)
            .tempfile_in(tmp)
            .map_err(temp_error)?;
        let _input_cleanup = super::cleanup::register(input.path());
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
        let _output_cleanup = super::cleanup::register(&output);
        let argv = local_argv(
            &self.wire,
            &input.path().to_string_lossy(),
            &output.to_string_lossy(),
        )?;
        let Some((compiler, args)) = argv.split_first() else {
            return Err("empty compiler command".to_owned());
        };
        tracing::debug!("compiling here: {}", argv.join(" "));
        let slot = self
            .lock
            .acquire_local(self.local_slots, self.settings.pause);
        let run = Command::new(compiler)
            .args(args)
            .stdin(Stdio::null())
            .env("_DISTCC_SAFEGUARD", self.settings.child_safeguard())
            .output()
            .map_err(|e| format!("cannot run {compiler:?}: {e}"))?;
        drop(slot);
        let status = run.status.into_raw() as u32;
        let object = if status == 0 {
            std::fs::read(&output).map_err(|e| format!("cannot read {}: {e}", output.display()))?
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

    /// Do the agreeing hosts also agree on what they printed?
    fn words_agree(&self, digest: &ResultDigest, received: &[Received]) -> bool {
        let group: Vec<&Received> = received.iter().filter(|r| r.same_result(digest)).collect();
        group.windows(2).all(|w| {
            w[0].digest.diagnostics == w[1].digest.diagnostics && w[0].stdout == w[1].stdout
        })
    }

    fn candidate(&self, label: &str) -> Option<&Candidate> {
        self.pool
            .candidates
            .iter()
            .find(|c| c.spec.verbatim == label)
    }

    fn clear_backoff(&self, labels: &[String]) {
        for label in labels {
            if let Some(c) = self.candidate(label) {
                self.lock.clear(&c.spec);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        verdict: &str,
        losers: &[String],
        winners: &str,
        accepted: &ResultDigest,
        received: &[Received],
        local: Option<&LocalResult>,
        source: &Source,
    ) {
        self.report_summary(
            verdict,
            losers,
            winners,
            accepted,
            received,
            local,
            &SourceSummary::of(source),
        );
    }

    /// Name each loser on stderr, record the evidence, exclude the losers.
    #[allow(clippy::too_many_arguments)]
    fn report_summary(
        &self,
        verdict: &str,
        losers: &[String],
        winners: &str,
        accepted: &ResultDigest,
        received: &[Received],
        local: Option<&LocalResult>,
        source: &SourceSummary,
    ) {
        let input = self.input();
        let mut results: Vec<HostResult> = received
            .iter()
            .map(|r| HostResult {
                host: r.label.clone(),
                address: self.pool.candidates[r.idx].addr.to_string(),
                status: r.digest.status,
                object: r.digest.object_hex(),
                diagnostics: hex(&r.digest.diagnostics),
            })
            .collect();
        if let Some(local) = local {
            results.push(HostResult {
                host: "local".to_owned(),
                address: String::new(),
                status: local.digest.status,
                object: local.digest.object_hex(),
                diagnostics: hex(&local.digest.diagnostics),
            });
        }
        let evidence = Evidence::new(
            source.hash.clone(),
            input.to_owned(),
            self.wire.clone(),
            results,
            verdict,
            accepted.object_hex(),
            losers.to_vec(),
        );
        let recorded = match &self.state {
            Some(state) => match state.record(&evidence) {
                Ok(()) => format!(
                    "evidence {} in {}",
                    evidence.id,
                    state.evidence_path().display()
                ),
                Err(e) => {
                    tracing::warn!("cannot record the evidence: {e}");
                    "evidence not recorded".to_owned()
                }
            },
            None => "evidence not recorded: no DPORTAGE_DIR".to_owned(),
        };
        for loser in losers {
            let said = received
                .iter()
                .find(|r| &r.label == loser)
                .map(|r| r.digest.to_string())
                .unwrap_or_default();
            let candidate = self.candidate(loser);
            let address = candidate.map(|c| c.addr.to_string()).unwrap_or_default();
            let excluded = match (&self.state, candidate) {
                (Some(state), Some(c)) => {
                    let exclusion = Exclusion {
                        address: c.addr,
                        since: now_secs(),
                        entry: loser.clone(),
                        evidence: evidence.id.clone(),
                    };
                    match state.exclude(&exclusion) {
                        Ok(()) => "excluded from now on",
                        Err(e) => {
                            tracing::warn!("cannot exclude {loser}: {e}");
                            "NOT excluded (cannot write the exclusion file)"
                        }
                    }
                }
                _ => "NOT excluded (no DPORTAGE_DIR)",
            };
            write_stderr(
                format!(
                    "dportage: mismatch: {input}: host {loser} ({address}) returned {said}, but \
                     {winners} returned {accepted}; {loser} is {excluded} ({recorded})\n"
                )
                .as_bytes(),
            );
        }
        if let Some(coordinator) = &self.settings.coordinator {
            // Sends this record and any earlier ones still waiting; what fails
            // stays in the log and goes with the next mismatch.
            match super::upload::send_pending_evidence_blocking(coordinator) {
                Ok(sent) => tracing::info!("reported {sent} mismatch record(s) to {coordinator}"),
                Err(e) => tracing::warn!(
                    "evidence {} waits in the log: cannot report it to {coordinator}: {e}",
                    evidence.id
                ),
            }
        }
    }

    /// There is no preprocessed source; the local compiler shows why.
    fn without_source(&self, error: PreprocessError) -> i32 {
        let input = self.input().to_owned();
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
        compile_source_here(&self.job, self.settings, Some(&self.lock), self.local_slots)
    }

    fn fall_back(&self, reason: &str) -> i32 {
        fall_back_here(
            &self.job,
            self.settings,
            &self.lock,
            self.local_slots,
            reason,
        )
    }
}

/// What the evidence needs of the source once the source itself is gone.
struct SourceSummary {
    hash: String,
}

impl SourceSummary {
    fn of(source: &Source) -> Self {
        SourceSummary {
            hash: source.hash.clone(),
        }
    }
}

fn same_ballot(a: &ResultDigest, b: &ResultDigest) -> bool {
    a.status == b.status && a.object == b.object
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// One host: connect and send the request head at once, the source when it is
/// ready, then read the reply. The slot is held until the host is done.
async fn dispatch(
    idx: usize,
    remote: RemoteHost,
    argv: Arc<Vec<Vec<u8>>>,
    mut source: watch::Receiver<Option<Arc<Vec<u8>>>>,
    timeouts: NetTimeouts,
    slot: SlotGuard,
) -> DispatchResult {
    let result = async {
        let connection = Connection::open(&remote, &argv, timeouts).await?;
        let bytes = {
            let ready =
                source
                    .wait_for(|s| s.is_some())
                    .await
                    .map_err(|_| RemoteError::Closed {
                        during: "waiting for the preprocessed source",
                    })?;
            ready.as_ref().map(Arc::clone).unwrap_or_default()
        };
        connection.finish(&bytes).await
    }
    .await;
    drop(slot);
    (idx, result)
}

/// `wire` with its input replaced by `input` and its output by `output`, found
/// the way a server finds them.
fn local_argv(wire: &[String], input: &str, output: &str) -> Result<Vec<String>, String> {
    let not_a_job = || format!("the command sent to the hosts is not a compile job: {wire:?}");
    let (outcome, output_at) = scan_locating_output(wire).map_err(|e| e.to_string())?;
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

/// Redundancy cannot be met: compile here (never accept an unverified remote
/// result), or stop when fallback is disabled.
fn fall_back_here(
    job: &CompileJob,
    settings: &Settings,
    lock: &LockDir,
    local_slots: u32,
    reason: &str,
) -> i32 {
    let input = job.input();
    if !settings.fallback {
        tracing::error!(
            "cannot verify {input}: {reason}; not compiling locally because DISTCC_FALLBACK=0"
        );
        return exitcode::NO_HOSTS;
    }
    tracing::info!("compiling {input} locally: {reason}");
    compile_source_here(job, settings, Some(lock), local_slots)
}

/// The user's own command, here, in a local slot when slots work.
fn compile_source_here(
    job: &CompileJob,
    settings: &Settings,
    lock: Option<&LockDir>,
    local_slots: u32,
) -> i32 {
    let slot = lock.map(|lock| lock.acquire_local(local_slots, settings.pause));
    let code = run_compiler(&job.argv, &settings.child_safeguard());
    drop(slot);
    code
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

    #[test]
    fn networks_group_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(network(ip("10.1.2.3")), network(ip("10.1.2.200")));
        assert_ne!(network(ip("10.1.2.3")), network(ip("10.1.3.3")));
        assert_eq!(
            network(ip("2001:db8:1::1")),
            network(ip("2001:db8:1:ff::2"))
        );
        assert_ne!(network(ip("2001:db8:1::1")), network(ip("2001:db8:2::1")));
        assert_eq!(network(ip("::ffff:10.1.2.3")), network(ip("10.1.2.9")));
    }

    #[test]
    fn failed_compiles_vote_on_status_only() {
        let a = digest_of(0x100, b"partial object", b"x.c:1: error\n");
        let b = digest_of(0x100, b"", b"x.c:1: error\n");
        assert!(same_ballot(&a, &b));
        assert!(!same_ballot(
            &digest_of(0, b"o", b""),
            &digest_of(0, b"p", b"")
        ));
    }

    #[test]
    fn exit_codes_of_wait_statuses() {
        assert_eq!(exit_code_of_status(0), 0);
        assert_eq!(exit_code_of_status(0x100), 1);
        assert_eq!(exit_code_of_status(0x8b), 139);
        assert_eq!(exit_code_of_status(9), 137);
        assert!(describe_status(110 << 8).contains("server"));
    }

    #[test]
    fn pool_leaves_out_local_and_excluded_hosts() {
        let hosts = crate::hosts::parse_host_list(
            "localhost 127.0.0.2:4000 127.0.0.3:4000,lzo 127.0.0.9:1,down",
        )
        .unwrap();
        let excluded = vec!["127.0.0.3:4000".parse().unwrap()];
        let pool = Pool::new(&hosts, &excluded);
        let names: Vec<&str> = pool
            .candidates
            .iter()
            .map(|c| c.spec.verbatim.as_str())
            .collect();
        assert_eq!(names, ["127.0.0.2:4000"]);
        assert_eq!(pool.list.hosts.len(), 1);
        let why = pool.why_not();
        assert!(
            why.contains("localhost: this machine is the arbiter"),
            "{why}"
        );
        assert!(why.contains("127.0.0.3:4000,lzo: excluded"), "{why}");
    }
}
