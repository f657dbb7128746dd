//! Verified dispatch as a sans-I/O state machine: which hosts to ask, when to
//! ask one more, when a remote result may be written, and when this machine
//! decides instead.
//!
//! The driver (`client::dual`) owns the sockets, slots, processes and files. It
//! feeds [`Event`]s to [`Scheduler::handle`] and executes the [`Action`]s it gets
//! back, in order; the scheduler never reads the clock (times come in events),
//! so every rule about what may be written is tested below without a socket.
//!
//! The rules (the README's trust model explains them to users):
//! * `redundancy` hosts are asked at once, at least one before the source is
//!   preprocessed so connecting overlaps preprocessing (distcc's slot order).
//! * A result is accepted when it holds a strict majority of at least
//!   `redundancy` agreeing votes ([`tally`]) and no vote differs: the first
//!   disagreement makes this machine arbitrate at once ([`Shortfall::Disputed`];
//!   asking a further stranger would give an attacker a second draw, and its
//!   colluder could outvote the honest host and have it reported). At most
//!   `redundancy +` [`EXTRA_VOTES`] hosts vote (the extra ones are hedges),
//!   then this machine arbitrates.
//! * A failure (connection, timeout, refusal, or a status that is not a vote per
//!   [`status_is_vote`]) is no vote: the host is replaced, until more than
//!   `redundancy +` [`EXTRA_FAILURES`] hosts have failed.
//! * Once one vote is in, a host still busy `max(2 × first, first + hedge_min)`
//!   after the earliest start among the hosts not yet hedged is hedged: it is
//!   "lagging", no longer counts as one of the votes on the way, and another
//!   host gets the job too. A lagging host's vote still counts when it comes.
//! * Clocks restart when the source is ready: before that no host can work.
//! * After a majority: a spot check, or agreeing hosts whose diagnostics differ,
//!   make this machine compile the same input; when it disagrees, its own result
//!   is written (this machine is trusted over any number of strangers).
//! * Only the first `redundancy` hosts drawn may decide a job on their own. A
//!   majority that needs any later host (one asked after a failure, or a hedge
//!   for a lagging host) is confirmed by this machine's compile first
//!   ([`Check::Confirm`]): every later host is another draw from the pool, so
//!   an attacker holding a fraction f of it would otherwise win about 3f² of
//!   the jobs (a colluder, then a colluder hedging the honest host it was
//!   paired with) instead of f². When this machine disagrees, its own result is
//!   written and the hosts that returned another are reported; when it cannot
//!   compile, the user's command runs here: a later host's result is never
//!   written unconfirmed.

use std::fmt;
use std::time::{Duration, Instant};

use super::{arbitrate, exit_code_of_status, status_is_vote, tally, ResultDigest, Verdict, Vote};

/// Votes asked for beyond the redundancy (hedges for lagging hosts) before the
/// local arbiter decides.
pub const EXTRA_VOTES: usize = 2;
/// Failed hosts tolerated per job beyond the redundancy before no further host
/// is asked.
pub const EXTRA_FAILURES: usize = 2;

/// A voting host, as the driver numbers them. A job asks each host at most
/// once, so it also names that host's flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

/// What the scheduler knows of the job and the user's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Hosts that must agree (2 or more).
    pub redundancy: usize,
    /// The least extra wait for a lagging host (`DPORTAGE_HEDGE_MS`).
    pub hedge_min: Duration,
    /// This job was drawn for a spot check (`DPORTAGE_SPOTCHECK`).
    pub spot_check: bool,
    /// An agreed compile error is shown as the hosts reported it, like a
    /// remote compile error in plain distcc (`DISTCC_SKIP_LOCAL_RETRY`, or
    /// `DISTCC_FALLBACK=0`).
    pub trust_remote_failure: bool,
}

/// What a host returned: the digest votes, the stdout hash only has to agree
/// for the hosts' output to be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub digest: ResultDigest,
    /// blake3 of what the compiler printed on stdout.
    pub stdout: [u8; 32],
}

/// One vote counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub host: HostId,
    pub answer: Answer,
}

/// What happened, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A slot on a host this job has not used, at an address it has not used
    /// (answers [`Action::TakeHost`]). A host granted again is taken as
    /// [`Event::NoHostLeft`], and its slot is not used.
    HostGranted { host: HostId, now: Instant },
    /// Eligible hosts remain, but every slot is taken (answers
    /// [`Action::TakeHost`]).
    AllHostsBusy,
    /// No eligible host is left for this job (answers [`Action::TakeHost`]).
    NoHostLeft,
    /// The preprocessed source went to every host asked (answers
    /// [`Action::Preprocess`]).
    SourceReady { now: Instant },
    /// There is no preprocessed source (answers [`Action::Preprocess`]).
    SourceFailed,
    /// A host answered. Whether it is a vote depends on its status.
    Replied {
        host: HostId,
        answer: Answer,
        now: Instant,
    },
    /// A host could not compile at all; `host_at_fault` is false when the
    /// driver lost the flight itself (nothing to hold against the host).
    HostFailed { host: HostId, host_at_fault: bool },
    /// The time of [`Await::hedge_at`] came.
    HedgeTimerFired { now: Instant },
    /// The pause of [`Await::pause_for_slot`] is over.
    PauseOver,
    /// This machine compiled the preprocessed source: its digest, or `None`
    /// when it could not (answers [`Action::CompileHere`]).
    CompiledHere(Option<ResultDigest>),
    /// The user's own command ran here and exited with this code (answers
    /// [`Action::RetryHere`]).
    RetriedHere { exit_code: i32 },
}

/// What the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Find a slot on a host this job has not used; answer with
    /// [`Event::HostGranted`], [`Event::AllHostsBusy`] or [`Event::NoHostLeft`].
    TakeHost,
    /// Send the job to the host just granted, holding its slot until it is done.
    Launch(HostId),
    /// Preprocess the source and send it to the hosts asked so far (and later
    /// ones); answer with [`Event::SourceReady`] or [`Event::SourceFailed`].
    Preprocess,
    /// Wait for the next flight to end, or for the timer or pause given.
    Await(Await),
    /// The host is slow; another one is being asked too (the driver only says so).
    Hedge {
        lagging: HostId,
        first_vote_after: Duration,
    },
    /// Avoid these hosts for a while, as distcc does after a failure.
    BackOff {
        hosts: Vec<HostId>,
        why: BackOffReason,
    },
    /// The vote is over: stop this flight (its slot is released).
    Cancel(HostId),
    /// Compile the preprocessed source here with the hosts' very arguments;
    /// answer with [`Event::CompiledHere`].
    CompileHere(Check),
    /// Run the user's own command here, as distcc retries a remote compile
    /// error, so the diagnostics are exactly a local build's; answer with
    /// [`Event::RetriedHere`].
    RetryHere {
        failed_on: Vec<HostId>,
        exit_code: i32,
    },
    /// Name the losers, record the evidence, exclude the losers for good.
    Report(Report),
    /// These hosts did their job: forget their backoff.
    ClearBackoff(Vec<HostId>),
    /// No host agreed with this machine's compiler although several voted.
    ToolchainSuspect,
    /// The job's end; nothing follows.
    Finish(Finish),
}

/// What [`Action::Await`] waits for besides the end of a flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Await {
    /// Report [`Event::HedgeTimerFired`] at this time.
    pub hedge_at: Option<Instant>,
    /// A host was wanted but every slot was busy: report [`Event::PauseOver`]
    /// after distcc's pause (`DISTCC_PAUSE_TIME_MSEC`), then a slot is sought
    /// again.
    pub pause_for_slot: bool,
}

/// Why hosts are backed off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackOffReason {
    /// The connection, the protocol or the host failed (the driver saw why).
    Failed,
    /// The host answered with a status that is no vote (a signal, or one of
    /// distcc's own exit codes).
    NotAVote { status: u32 },
    /// The hosts agreed on a compile error this machine did not reproduce:
    /// honest hosts under resource limits can do that, so it is no evidence of
    /// lying, but a reason to avoid them for a while.
    FailureNotReproduced { remote: i32, here: i32 },
}

/// Why this machine compiles the preprocessed source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The job was drawn for a spot check.
    SpotCheck,
    /// The agreeing hosts printed different diagnostics; this machine's are shown.
    DiagnosticsDiffer,
    /// The majority needs a host asked after the first draw (a replacement for
    /// a failed host, or a hedge for a lagging one): this machine decides
    /// whether it stands, and nothing is written unconfirmed.
    Confirm,
    /// No result can be accepted: this machine's result is written.
    Arbiter(Shortfall),
}

/// Why no remote result can be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// Not even one host could be asked.
    NoVotingHost,
    /// Hosts failed, or none was left, before enough votes were in.
    NoFurtherHost {
        votes: usize,
        redundancy: usize,
        failures: usize,
    },
    /// Nothing was left to wait for, with no host missing.
    NothingToAsk,
    /// The votes are split so that no result can win within the votes allowed.
    NoMajorityPossible { max_votes: usize },
    /// The hosts disagree. Another stranger's vote could be an attacker's
    /// second draw (outvoting the honest host and having it reported), so
    /// this machine decides at once.
    Disputed,
}

impl Shortfall {
    /// Does the reason lie in the pool, so that the hosts left out are worth
    /// naming?
    pub fn concerns_the_pool(&self) -> bool {
        matches!(
            self,
            Shortfall::NoVotingHost | Shortfall::NoFurtherHost { .. }
        )
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortfall::NoVotingHost => {
                write!(f, "no voting host is left (all backed off or excluded)")
            }
            Shortfall::NoFurtherHost {
                votes,
                redundancy,
                failures,
            } => write!(
                f,
                "{votes} of {redundancy} votes in, and no further host can be asked \
                 ({failures} failed)"
            ),
            Shortfall::NothingToAsk => write!(f, "no further host can be asked"),
            Shortfall::NoMajorityPossible { max_votes } => write!(
                f,
                "no result can reach a strict majority within {max_votes} votes"
            ),
            Shortfall::Disputed => write!(
                f,
                "the hosts disagree, and this machine decides rather than a further host"
            ),
        }
    }
}

/// A lost vote, to be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub judgement: Judgement,
    pub losers: Vec<HostId>,
    pub winners: Winners,
    /// The result written.
    pub accepted: ResultDigest,
    /// This machine's compile is part of the evidence.
    pub with_local: bool,
}

/// Who decided a lost vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// A strict majority of the hosts.
    Majority,
    /// This machine, checking a majority.
    SpotCheck,
    /// This machine, with at least one host agreeing.
    Arbiter,
}

impl Judgement {
    /// As recorded in the evidence log.
    pub fn name(self) -> &'static str {
        match self {
            Judgement::Majority => "majority",
            Judgement::SpotCheck => "spot-check",
            Judgement::Arbiter => "arbiter",
        }
    }
}

/// Whose result won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Winners {
    Hosts(Vec<HostId>),
    ThisMachine,
    ThisMachineAnd(Vec<HostId>),
}

/// How the job ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The preprocessor failed; the local compiler shows why.
    NoSource,
    /// Not one vote: compile the user's command here (or stop, with
    /// `DISTCC_FALLBACK=0`).
    FallBack(Shortfall),
    /// Write the object of the first host that returned `digest`, then clear
    /// the backoff of `agreeing`.
    WriteRemote {
        digest: ResultDigest,
        agreeing: Vec<HostId>,
        show: Shown,
    },
    /// Show the hosts' agreed compile error and exit with its code.
    ShowRemoteFailure { digest: ResultDigest },
    /// Write this machine's compile of the preprocessed source.
    WriteLocal,
    /// This machine could not compile the preprocessed source to arbitrate:
    /// compile the user's command here.
    CompileSourceHere,
    /// Exit with the code of [`Action::RetryHere`].
    Exit(i32),
}

/// Whose stdout and stderr go with a remote object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// The agreeing hosts printed the same.
    Remote,
    /// They did not; this machine's compile did.
    Local,
    /// They did not and this machine could not compile: show nothing rather
    /// than one host's unconfirmed words.
    Hidden,
}

/// One host working on the job.
#[derive(Debug, Clone, Copy)]
struct Flight {
    host: HostId,
    started: Instant,
    /// Hedged: another host was asked instead of waiting for this one.
    lagging: bool,
}

/// The result a strict majority returned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Agreement {
    digest: ResultDigest,
    agreeing: Vec<HostId>,
    dissenters: Vec<HostId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Taking the first hosts, before the source exists.
    Opening,
    /// No host yet, every slot busy.
    OpeningPause,
    Preprocessing,
    /// Asking for `remaining` more hosts, one [`Action::TakeHost`] at a time.
    Taking {
        remaining: usize,
    },
    Waiting,
    /// This machine checks a majority's object.
    Checking {
        agreement: Agreement,
        words_agree: bool,
    },
    Arbitrating,
    /// This machine retries an agreed compile error.
    Retrying {
        agreement: Agreement,
    },
    Done,
}

/// Verified dispatch of one job. See the module documentation for the rules.
#[derive(Debug)]
pub struct Scheduler {
    rules: Rules,
    phase: Phase,
    flights: Vec<Flight>,
    /// Every host launched: each may vote once.
    asked: Vec<HostId>,
    received: Vec<Received>,
    failures: usize,
    /// How long the first vote took from its host's start.
    first_vote_after: Option<Duration>,
    /// In the current round of [`Action::TakeHost`]: a host was wanted but
    /// every slot was busy.
    waiting_for_slot: bool,
    /// In the current round: no further host may be asked.
    none_left: bool,
}

impl Scheduler {
    pub fn new(rules: Rules) -> Self {
        Scheduler {
            rules,
            phase: Phase::Opening,
            flights: Vec::new(),
            asked: Vec::new(),
            received: Vec::new(),
            failures: 0,
            first_vote_after: None,
            waiting_for_slot: false,
            none_left: false,
        }
    }

    /// The first actions of the job.
    pub fn start(&mut self) -> Vec<Action> {
        self.phase = Phase::Opening;
        vec![Action::TakeHost]
    }

    /// The votes counted so far, in the order they came.
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    /// Most votes asked for before this machine arbitrates.
    pub fn max_votes(&self) -> usize {
        self.rules.redundancy + EXTRA_VOTES
    }

    /// Take in `event`; the actions to execute next, in order. Events the
    /// scheduler did not ask for are ignored, and so is a reply from a host it
    /// did not launch or that answered already: neither is ever a vote.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        // Asking a host again would let it vote twice: a pool that offers no
        // other host has none left.
        let event = match event {
            Event::HostGranted { host, .. } if self.asked.contains(&host) => Event::NoHostLeft,
            event => event,
        };
        match (phase, event) {
            (Phase::Opening, Event::HostGranted { host, now }) => {
                self.launch(host, now, &mut out);
                // A host that failed is replaced; one that voted is not.
                if self.flights.len() + self.received.len() >= self.rules.redundancy {
                    self.preprocess(&mut out);
                } else {
                    self.phase = Phase::Opening;
                    out.push(Action::TakeHost);
                }
            }
            (Phase::Opening, Event::AllHostsBusy) if self.nothing_asked_yet() => {
                self.phase = Phase::OpeningPause;
                out.push(Action::Await(Await {
                    hedge_at: None,
                    pause_for_slot: true,
                }));
            }
            (Phase::Opening, Event::NoHostLeft) if self.nothing_asked_yet() => {
                self.finish(Finish::FallBack(Shortfall::NoVotingHost), &mut out);
            }
            // Some hosts are working (or even voted): preprocess rather than
            // wait for more.
            (Phase::Opening, Event::AllHostsBusy | Event::NoHostLeft) => {
                self.preprocess(&mut out);
            }
            (Phase::OpeningPause, Event::PauseOver) => {
                self.phase = Phase::Opening;
                out.push(Action::TakeHost);
            }
            (Phase::Preprocessing, Event::SourceReady { now }) => {
                // Hosts cannot compile before the source exists; measuring from
                // their launch would hedge them for the preprocessor's time.
                for f in &mut self.flights {
                    f.started = now;
                }
                self.advance(&mut out);
            }
            (Phase::Preprocessing, Event::SourceFailed) => {
                self.cancel_flights(&mut out);
                self.finish(Finish::NoSource, &mut out);
            }
            (Phase::Taking { remaining }, Event::HostGranted { host, now }) => {
                self.launch(host, now, &mut out);
                if remaining > 1 {
                    self.phase = Phase::Taking {
                        remaining: remaining - 1,
                    };
                    out.push(Action::TakeHost);
                } else {
                    self.settle(&mut out);
                }
            }
            (Phase::Taking { .. }, Event::AllHostsBusy) => {
                self.waiting_for_slot = true;
                self.settle(&mut out);
            }
            (Phase::Taking { .. }, Event::NoHostLeft) => {
                self.none_left = true;
                self.settle(&mut out);
            }
            (Phase::Waiting, Event::PauseOver) => self.advance(&mut out),
            (Phase::Waiting, Event::HedgeTimerFired { now }) => {
                self.hedge(now, &mut out);
                self.advance(&mut out);
            }
            (phase, Event::Replied { host, answer, now }) if phase.is_voting() => {
                self.receive(host, answer, now, &mut out);
                self.resume(phase, &mut out);
            }
            (
                phase,
                Event::HostFailed {
                    host,
                    host_at_fault,
                },
            ) if phase.is_voting() => {
                self.fail(host, host_at_fault, &mut out);
                self.resume(phase, &mut out);
            }
            (
                Phase::Checking {
                    agreement,
                    words_agree,
                },
                Event::CompiledHere(local),
            ) => self.accept_object(agreement, words_agree, local, &mut out),
            (Phase::Arbitrating, Event::CompiledHere(local)) => self.arbitrated(local, &mut out),
            (Phase::Retrying { agreement }, Event::RetriedHere { exit_code }) => {
                self.retried(agreement, exit_code, &mut out)
            }
            (phase, _) => {
                self.phase = phase;
                self.await_again(&mut out);
            }
        }
        out
    }

    /// After a flight ended: go on counting when the vote was waiting for it;
    /// otherwise the driver is in the middle of something the scheduler asked
    /// for (preprocessing, taking a host), and the count waits for its answer.
    fn resume(&mut self, phase: Phase, out: &mut Vec<Action>) {
        if phase == Phase::Waiting {
            self.advance(out);
        } else {
            self.phase = phase;
            self.await_again(out);
        }
    }

    /// A driver that is waiting always gets something to go on with, even for
    /// an event that changed nothing: the same wait.
    fn await_again(&self, out: &mut Vec<Action>) {
        match self.phase {
            Phase::OpeningPause => out.push(Action::Await(Await {
                hedge_at: None,
                pause_for_slot: true,
            })),
            Phase::Waiting => out.push(Action::Await(Await {
                hedge_at: self.hedge_at(),
                pause_for_slot: self.waiting_for_slot,
            })),
            _ => {}
        }
    }

    /// No host is working on the job and none has voted.
    fn nothing_asked_yet(&self) -> bool {
        self.flights.is_empty() && self.received.is_empty()
    }

    fn launch(&mut self, host: HostId, now: Instant, out: &mut Vec<Action>) {
        self.asked.push(host);
        self.flights.push(Flight {
            host,
            started: now,
            lagging: false,
        });
        out.push(Action::Launch(host));
    }

    fn preprocess(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Preprocessing;
        out.push(Action::Preprocess);
    }

    fn take_flight(&mut self, host: HostId) -> Option<Flight> {
        let at = self.flights.iter().position(|f| f.host == host)?;
        Some(self.flights.remove(at))
    }

    fn receive(&mut self, host: HostId, answer: Answer, now: Instant, out: &mut Vec<Action>) {
        let Some(flight) = self.take_flight(host) else {
            return;
        };
        if status_is_vote(answer.digest.status) {
            self.first_vote_after
                .get_or_insert(now.saturating_duration_since(flight.started));
            self.received.push(Received { host, answer });
        } else {
            self.failures += 1;
            out.push(Action::BackOff {
                hosts: vec![host],
                why: BackOffReason::NotAVote {
                    status: answer.digest.status,
                },
            });
        }
    }

    fn fail(&mut self, host: HostId, host_at_fault: bool, out: &mut Vec<Action>) {
        if self.take_flight(host).is_none() {
            return;
        }
        self.failures += 1;
        if host_at_fault {
            out.push(Action::BackOff {
                hosts: vec![host],
                why: BackOffReason::Failed,
            });
        }
    }

    fn hedge_threshold(&self) -> Option<Duration> {
        self.first_vote_after
            .map(|first| (first * 2).max(first + self.rules.hedge_min))
    }

    fn hedge(&mut self, now: Instant, out: &mut Vec<Action>) {
        let (Some(first), Some(threshold)) = (self.first_vote_after, self.hedge_threshold()) else {
            return;
        };
        for f in self.flights.iter_mut().filter(|f| !f.lagging) {
            if now.saturating_duration_since(f.started) >= threshold {
                f.lagging = true;
                out.push(Action::Hedge {
                    lagging: f.host,
                    first_vote_after: first,
                });
            }
        }
    }

    fn active(&self) -> usize {
        self.flights.iter().filter(|f| !f.lagging).count()
    }

    fn hedge_at(&self) -> Option<Instant> {
        let threshold = self.hedge_threshold()?;
        let earliest = self
            .flights
            .iter()
            .filter(|f| !f.lagging)
            .map(|f| f.started)
            .min()?;
        Some(earliest + threshold)
    }

    fn votes(&self) -> Vec<Vote<HostId>> {
        self.received
            .iter()
            .map(|r| Vote {
                host: r.host,
                digest: r.answer.digest,
            })
            .collect()
    }

    /// Count the votes: a dispute goes to this machine and a majority
    /// concludes the vote (both end it); otherwise how many more votes are
    /// needed.
    fn count(&mut self, out: &mut Vec<Action>) -> Option<usize> {
        // Before the tally: a majority that outvotes a dissenter must not
        // decide (its later hosts are draws an attacker may hold), whatever
        // order the votes came in.
        if self.disputed() {
            self.arbiter(Shortfall::Disputed, out);
            return None;
        }
        match tally(&self.votes(), self.rules.redundancy) {
            Verdict::Agreed {
                digest,
                agreeing,
                dissenters,
            } => {
                let agreement = Agreement {
                    digest,
                    agreeing,
                    dissenters,
                };
                self.conclude(agreement, out);
                None
            }
            Verdict::Undecided { more } => Some(more),
        }
    }

    /// Count the votes, then ask for as many hosts as the count needs.
    fn advance(&mut self, out: &mut Vec<Action>) {
        let Some(more) = self.count(out) else {
            return;
        };
        let max_votes = self.max_votes();
        let votes = self.received.len();
        if more > max_votes.saturating_sub(votes) {
            return self.arbiter(Shortfall::NoMajorityPossible { max_votes }, out);
        }
        let room = max_votes.saturating_sub(votes + self.flights.len());
        let want = more.saturating_sub(self.active()).min(room);
        self.waiting_for_slot = false;
        self.none_left = self.failures > self.rules.redundancy + EXTRA_FAILURES;
        if !self.none_left && want > 0 {
            self.phase = Phase::Taking { remaining: want };
            out.push(Action::TakeHost);
        } else {
            self.settle(out);
        }
    }

    /// The round of host taking is over: wait, or end without a majority.
    fn settle(&mut self, out: &mut Vec<Action>) {
        // Votes that came in while hosts were being taken were not counted.
        if self.count(out).is_none() {
            return;
        }
        if !self.flights.is_empty() || self.waiting_for_slot {
            self.phase = Phase::Waiting;
            return self.await_again(out);
        }
        let shortfall = if self.none_left {
            Shortfall::NoFurtherHost {
                votes: self.received.len(),
                redundancy: self.rules.redundancy,
                failures: self.failures,
            }
        } else {
            Shortfall::NothingToAsk
        };
        if self.received.is_empty() {
            self.finish(Finish::FallBack(shortfall), out);
        } else {
            self.arbiter(shortfall, out);
        }
    }

    fn cancel_flights(&mut self, out: &mut Vec<Action>) {
        out.extend(self.flights.drain(..).map(|f| Action::Cancel(f.host)));
    }

    fn finish(&mut self, finish: Finish, out: &mut Vec<Action>) {
        self.phase = Phase::Done;
        out.push(Action::Finish(finish));
    }

    /// Do the agreeing hosts also agree on what they printed?
    fn words_agree(&self, digest: &ResultDigest) -> bool {
        let group: Vec<&Answer> = self
            .received
            .iter()
            .map(|r| &r.answer)
            .filter(|a| a.digest.same_vote(digest))
            .collect();
        group.windows(2).all(|w| {
            w[0].digest.diagnostics == w[1].digest.diagnostics && w[0].stdout == w[1].stdout
        })
    }

    fn majority_report(&self, agreement: &Agreement, with_local: bool) -> Option<Action> {
        (!agreement.dissenters.is_empty()).then(|| {
            Action::Report(Report {
                judgement: Judgement::Majority,
                losers: agreement.dissenters.clone(),
                winners: Winners::Hosts(agreement.agreeing.clone()),
                accepted: agreement.digest,
                with_local,
            })
        })
    }

    fn conclude(&mut self, agreement: Agreement, out: &mut Vec<Action>) {
        self.cancel_flights(out);
        let words_agree = self.words_agree(&agreement.digest);
        let later_host_decides = self.needs_later_host(&agreement);
        if agreement.digest.status == 0 {
            if self.rules.spot_check || !words_agree || later_host_decides {
                let check = if later_host_decides {
                    Check::Confirm
                } else if self.rules.spot_check {
                    Check::SpotCheck
                } else {
                    Check::DiagnosticsDiffer
                };
                self.phase = Phase::Checking {
                    agreement,
                    words_agree,
                };
                out.push(Action::CompileHere(check));
            } else {
                self.accept_object(agreement, words_agree, None, out);
            }
        } else if self.rules.trust_remote_failure && words_agree && !later_host_decides {
            out.extend(self.majority_report(&agreement, false));
            self.finish(
                Finish::ShowRemoteFailure {
                    digest: agreement.digest,
                },
                out,
            );
        } else {
            out.push(Action::RetryHere {
                failed_on: agreement.agreeing.clone(),
                exit_code: exit_code_of_status(agreement.digest.status),
            });
            self.phase = Phase::Retrying { agreement };
        }
    }

    /// Two votes differ.
    fn disputed(&self) -> bool {
        self.received.split_first().is_some_and(|(first, rest)| {
            rest.iter()
                .any(|r| !r.answer.digest.same_vote(&first.answer.digest))
        })
    }

    /// Does the majority count a host that was not among the first
    /// `redundancy` drawn?
    fn needs_later_host(&self, agreement: &Agreement) -> bool {
        let first_drawn = &self.asked[..self.asked.len().min(self.rules.redundancy)];
        agreement
            .agreeing
            .iter()
            .any(|host| !first_drawn.contains(host))
    }

    fn accept_object(
        &mut self,
        agreement: Agreement,
        words_agree: bool,
        local: Option<ResultDigest>,
        out: &mut Vec<Action>,
    ) {
        if local.is_none() && self.needs_later_host(&agreement) {
            // Unconfirmed, a later host's agreement is worth no more than one
            // stranger's word: the user's own command decides.
            return self.finish(Finish::CompileSourceHere, out);
        }
        if let Some(local) = local.filter(|l| !l.same_vote(&agreement.digest)) {
            // Exactly the hosts whose vote differs from this machine's result:
            // a host that returned what this machine did is never reported.
            let (honest, losers): (Vec<&Received>, Vec<&Received>) = self
                .received
                .iter()
                .partition(|r| r.answer.digest.same_vote(&local));
            let honest: Vec<HostId> = honest.iter().map(|r| r.host).collect();
            let losers = losers.iter().map(|r| r.host).collect();
            out.push(Action::Report(Report {
                judgement: Judgement::SpotCheck,
                losers,
                winners: if honest.is_empty() {
                    Winners::ThisMachine
                } else {
                    Winners::ThisMachineAnd(honest)
                },
                accepted: local,
                with_local: true,
            }));
            return self.finish(Finish::WriteLocal, out);
        }
        out.extend(self.majority_report(&agreement, local.is_some()));
        let show = match (words_agree, local) {
            (true, _) => Shown::Remote,
            (false, Some(_)) => Shown::Local,
            (false, None) => Shown::Hidden,
        };
        self.finish(
            Finish::WriteRemote {
                digest: agreement.digest,
                agreeing: agreement.agreeing,
                show,
            },
            out,
        );
    }

    fn arbiter(&mut self, shortfall: Shortfall, out: &mut Vec<Action>) {
        self.cancel_flights(out);
        self.phase = Phase::Arbitrating;
        out.push(Action::CompileHere(Check::Arbiter(shortfall)));
    }

    fn arbitrated(&mut self, local: Option<ResultDigest>, out: &mut Vec<Action>) {
        let Some(local) = local else {
            return self.finish(Finish::CompileSourceHere, out);
        };
        let judgement = arbitrate(&self.votes(), &local);
        if !judgement.liars.is_empty() {
            out.push(Action::Report(Report {
                judgement: Judgement::Arbiter,
                losers: judgement.liars,
                winners: Winners::ThisMachineAnd(judgement.honest.clone()),
                accepted: local,
                with_local: true,
            }));
        }
        if judgement.local_toolchain_suspect && self.received.len() > 1 {
            out.push(Action::ToolchainSuspect);
        }
        if !judgement.honest.is_empty() {
            out.push(Action::ClearBackoff(judgement.honest));
        }
        self.finish(Finish::WriteLocal, out);
    }

    fn retried(&mut self, agreement: Agreement, exit_code: i32, out: &mut Vec<Action>) {
        let remote = exit_code_of_status(agreement.digest.status);
        if exit_code == remote {
            out.extend(self.majority_report(&agreement, false));
            out.push(Action::ClearBackoff(agreement.agreeing));
        } else {
            out.push(Action::BackOff {
                hosts: agreement.agreeing,
                why: BackOffReason::FailureNotReproduced {
                    remote,
                    here: exit_code,
                },
            });
        }
        self.finish(Finish::Exit(exit_code), out);
    }
}

impl Phase {
    /// Flights may end in this phase.
    fn is_voting(&self) -> bool {
        matches!(
            self,
            Phase::Opening
                | Phase::OpeningPause
                | Phase::Preprocessing
                | Phase::Taking { .. }
                | Phase::Waiting
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    /// Times are milliseconds after an arbitrary, fixed start.
    fn at(ms: u64) -> Instant {
        static START: OnceLock<Instant> = OnceLock::new();
        *START.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    fn h(i: usize) -> HostId {
        HostId(i)
    }

    fn hosts(ids: &[usize]) -> Vec<HostId> {
        ids.iter().copied().map(HostId).collect()
    }

    fn object(bytes: &[u8]) -> ResultDigest {
        ResultDigest::of(0, bytes, b"")
    }

    fn good() -> ResultDigest {
        object(b"honest object")
    }

    fn bad() -> ResultDigest {
        object(b"trojan")
    }

    fn other() -> ResultDigest {
        object(b"a third object")
    }

    fn compile_error() -> ResultDigest {
        ResultDigest::of(1 << 8, b"", b"x.c:1: error: expected ';'\n")
    }

    fn rules(redundancy: usize) -> Rules {
        Rules {
            redundancy,
            hedge_min: Duration::from_millis(1000),
            spot_check: false,
            trust_remote_failure: false,
        }
    }

    fn granted(i: usize, ms: u64) -> Event {
        Event::HostGranted {
            host: h(i),
            now: at(ms),
        }
    }

    fn ready(ms: u64) -> Event {
        Event::SourceReady { now: at(ms) }
    }

    fn says(i: usize, digest: ResultDigest, ms: u64) -> Event {
        says_with_stdout(i, digest, [0; 32], ms)
    }

    fn says_with_stdout(i: usize, digest: ResultDigest, stdout: [u8; 32], ms: u64) -> Event {
        Event::Replied {
            host: h(i),
            answer: Answer { digest, stdout },
            now: at(ms),
        }
    }

    fn fails(i: usize) -> Event {
        Event::HostFailed {
            host: h(i),
            host_at_fault: true,
        }
    }

    fn hedge_fires(ms: u64) -> Event {
        Event::HedgeTimerFired { now: at(ms) }
    }

    fn wait(hedge_at_ms: Option<u64>) -> Action {
        Action::Await(Await {
            hedge_at: hedge_at_ms.map(at),
            pause_for_slot: false,
        })
    }

    fn pause(hedge_at_ms: Option<u64>) -> Action {
        Action::Await(Await {
            hedge_at: hedge_at_ms.map(at),
            pause_for_slot: true,
        })
    }

    fn back_off(i: usize) -> Action {
        Action::BackOff {
            hosts: vec![h(i)],
            why: BackOffReason::Failed,
        }
    }

    fn write(digest: ResultDigest, agreeing: &[usize], show: Shown) -> Action {
        Action::Finish(Finish::WriteRemote {
            digest,
            agreeing: hosts(agreeing),
            show,
        })
    }

    fn arbiter(shortfall: Shortfall) -> Action {
        Action::CompileHere(Check::Arbiter(shortfall))
    }

    fn no_further_host(votes: usize, redundancy: usize, failures: usize) -> Shortfall {
        Shortfall::NoFurtherHost {
            votes,
            redundancy,
            failures,
        }
    }

    use Action::{Cancel, Launch, Preprocess, TakeHost};

    type Row = (Event, Vec<Action>);

    /// `redundancy` hosts granted at once and the source ready, all at 0 ms.
    fn opening(redundancy: usize) -> Vec<Row> {
        let mut rows: Vec<Row> = (0..redundancy)
            .map(|i| {
                let next = if i + 1 == redundancy {
                    Preprocess
                } else {
                    TakeHost
                };
                (granted(i, 0), vec![Launch(h(i)), next])
            })
            .collect();
        rows.push((ready(0), vec![wait(None)]));
        rows
    }

    /// Feed each row's event and compare the actions; returns the scheduler
    /// for checks on its state.
    fn play(rules: Rules, rows: Vec<Row>) -> Scheduler {
        let mut scheduler = Scheduler::new(rules);
        assert_eq!(scheduler.start(), vec![TakeHost]);
        for (n, (event, want)) in rows.into_iter().enumerate() {
            let got = scheduler.handle(event.clone());
            assert_eq!(got, want, "row {n}: after {event:?}");
        }
        scheduler
    }

    fn then(mut rows: Vec<Row>, more: Vec<Row>) -> Vec<Row> {
        rows.extend(more);
        rows
    }

    // The first vote after 100 ms hedges at max(2 × 100, 100 + 1000) = 1100 ms
    // after the earliest active start.

    #[test]
    fn honest_pair_agrees() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (
                        says(1, good(), 150),
                        vec![write(good(), &[0, 1], Shown::Remote)],
                    ),
                ],
            ),
        );
    }

    /// This machine's arbitration: `liars` reported, `honest` kept.
    fn arbitrated(liars: &[usize], honest: &[usize], accepted: ResultDigest) -> Vec<Action> {
        vec![
            Action::Report(Report {
                judgement: Judgement::Arbiter,
                losers: hosts(liars),
                winners: Winners::ThisMachineAnd(hosts(honest)),
                accepted,
                with_local: true,
            }),
            Action::ClearBackoff(hosts(honest)),
            Action::Finish(Finish::WriteLocal),
        ]
    }

    fn disputed() -> Action {
        arbiter(Shortfall::Disputed)
    }

    #[test]
    fn liar_first_is_disputed_and_this_machine_decides() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, bad(), 100), vec![wait(Some(1100))]),
                    // No third host: this machine decides at once.
                    (says(1, good(), 120), vec![disputed()]),
                    (
                        Event::CompiledHere(Some(good())),
                        arbitrated(&[0], &[1], good()),
                    ),
                ],
            ),
        );
    }

    #[test]
    fn liar_last_is_disputed_and_this_machine_decides() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (says(1, bad(), 120), vec![disputed()]),
                    (
                        Event::CompiledHere(Some(good())),
                        arbitrated(&[1], &[0], good()),
                    ),
                ],
            ),
        );
    }

    /// The framing attack: a liar disagrees with the honest host it was
    /// paired with, hoping a third stranger is its colluder and outvotes the
    /// honest host, which would then be reported and excluded. No third host
    /// is asked; this machine decides, and only the liar is reported.
    #[test]
    fn framing_an_honest_host_takes_no_third_host() {
        let mut scheduler = play(rules(2), opening(2));
        let mut all = Vec::new();
        for (event, want) in [
            (says(0, bad(), 100), vec![wait(Some(1100))]),
            (says(1, good(), 150), vec![disputed()]),
            // The colluder's reply, had it been asked, is no vote.
            (says(2, bad(), 160), vec![]),
            (
                Event::CompiledHere(Some(good())),
                arbitrated(&[0], &[1], good()),
            ),
        ] {
            let got = scheduler.handle(event.clone());
            assert_eq!(got, want, "after {event:?}");
            all.extend(got);
        }
        assert!(!all.contains(&TakeHost), "a third host was sought");
        let reported: Vec<HostId> = all
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some(r.losers.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(reported, hosts(&[0]), "the honest host 1 was reported");
        assert_eq!(scheduler.received().len(), 2);
    }

    /// The collusion case: two liars that agree are a strict majority of two
    /// and win the vote. Only a spot check (or a larger redundancy, with an
    /// honest majority) can catch them; see the next test.
    #[test]
    fn colluding_liars_win_a_vote_of_two() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, bad(), 100), vec![wait(Some(1100))]),
                    (
                        says(1, bad(), 150),
                        vec![write(bad(), &[0, 1], Shown::Remote)],
                    ),
                ],
            ),
        );
    }

    #[test]
    fn colluding_liars_lose_to_a_spot_check() {
        let spot = Rules {
            spot_check: true,
            ..rules(2)
        };
        play(
            spot,
            then(
                opening(2),
                vec![
                    (says(0, bad(), 100), vec![wait(Some(1100))]),
                    (
                        says(1, bad(), 150),
                        vec![Action::CompileHere(Check::SpotCheck)],
                    ),
                    (
                        Event::CompiledHere(Some(good())),
                        vec![
                            Action::Report(Report {
                                judgement: Judgement::SpotCheck,
                                losers: hosts(&[0, 1]),
                                winners: Winners::ThisMachine,
                                accepted: good(),
                                with_local: true,
                            }),
                            Action::Finish(Finish::WriteLocal),
                        ],
                    ),
                ],
            ),
        );
    }

    #[test]
    fn spot_check_that_agrees_writes_the_remote_object() {
        let spot = Rules {
            spot_check: true,
            ..rules(2)
        };
        play(
            spot,
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (
                        says(1, good(), 110),
                        vec![Action::CompileHere(Check::SpotCheck)],
                    ),
                    (
                        Event::CompiledHere(Some(good())),
                        vec![write(good(), &[0, 1], Shown::Remote)],
                    ),
                ],
            ),
        );
    }

    /// A job drawn for a spot check whose hosts disagree: the dispute goes to
    /// this machine like any other, before a third host could be asked.
    #[test]
    fn spot_checked_job_with_a_dispute_is_arbitrated_here() {
        let spot = Rules {
            spot_check: true,
            ..rules(2)
        };
        play(
            spot,
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (says(1, bad(), 110), vec![disputed()]),
                    (
                        Event::CompiledHere(Some(good())),
                        arbitrated(&[1], &[0], good()),
                    ),
                ],
            ),
        );
    }

    #[test]
    fn spot_check_that_cannot_compile_here_trusts_the_majority() {
        let spot = Rules {
            spot_check: true,
            ..rules(2)
        };
        play(
            spot,
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (
                        says(1, good(), 110),
                        vec![Action::CompileHere(Check::SpotCheck)],
                    ),
                    (
                        Event::CompiledHere(None),
                        vec![write(good(), &[0, 1], Shown::Remote)],
                    ),
                ],
            ),
        );
    }

    /// Redundancy 3, one liar: no fourth host is asked to outvote it; the
    /// host still working is cancelled and this machine decides at once.
    #[test]
    fn liar_among_three_goes_to_this_machine_at_once() {
        play(
            rules(3),
            then(
                opening(3),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (says(1, bad(), 110), vec![Cancel(h(2)), disputed()]),
                    (
                        Event::CompiledHere(Some(good())),
                        arbitrated(&[1], &[0], good()),
                    ),
                ],
            ),
        );
    }

    /// The same with the liar answering last, after two honest votes.
    #[test]
    fn liar_last_among_three_goes_to_this_machine_at_once() {
        play(
            rules(3),
            then(
                opening(3),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (says(2, good(), 120), vec![wait(Some(1100))]),
                    (says(1, bad(), 130), vec![disputed()]),
                    (
                        Event::CompiledHere(Some(good())),
                        arbitrated(&[1], &[0, 2], good()),
                    ),
                ],
            ),
        );
    }

    /// Two agreeing liars among three are not enough for redundancy 3; the
    /// honest host's vote makes a dispute, and both liars are reported.
    #[test]
    fn two_agreeing_liars_among_three_go_to_this_machine() {
        play(
            rules(3),
            then(
                opening(3),
                vec![
                    (says(1, bad(), 100), vec![wait(Some(1100))]),
                    (says(2, bad(), 120), vec![wait(Some(1100))]),
                    (says(0, good(), 300), vec![disputed()]),
                    (
                        Event::CompiledHere(Some(good())),
                        arbitrated(&[1, 2], &[0], good()),
                    ),
                ],
            ),
        );
    }

    #[test]
    fn failures_before_the_source_are_replaced_once_it_is_ready() {
        play(
            rules(2),
            vec![
                (granted(0, 0), vec![Launch(h(0)), TakeHost]),
                (granted(1, 0), vec![Launch(h(1)), Preprocess]),
                (fails(0), vec![back_off(0)]),
                (ready(50), vec![TakeHost]),
                (granted(2, 60), vec![Launch(h(2)), wait(None)]),
                (says(1, good(), 150), vec![wait(Some(1160))]),
                // Host 2 replaced host 0: this machine confirms.
                (
                    says(2, good(), 170),
                    vec![Action::CompileHere(Check::Confirm)],
                ),
                (
                    Event::CompiledHere(Some(good())),
                    vec![write(good(), &[1, 2], Shown::Remote)],
                ),
            ],
        );
    }

    #[test]
    fn every_host_failing_before_the_source_is_replaced() {
        play(
            rules(2),
            vec![
                (granted(0, 0), vec![Launch(h(0)), TakeHost]),
                (granted(1, 0), vec![Launch(h(1)), Preprocess]),
                (fails(0), vec![back_off(0)]),
                (fails(1), vec![back_off(1)]),
                (ready(50), vec![TakeHost]),
                (granted(2, 50), vec![Launch(h(2)), TakeHost]),
                (granted(3, 50), vec![Launch(h(3)), wait(None)]),
            ],
        );
    }

    /// Redundancy 2 tolerates 2 + 2 failures; after the fifth no host is asked,
    /// those still working finish, and then, without a vote, the job falls back.
    #[test]
    fn exhausted_failure_budget_without_votes_falls_back() {
        let mut rows = opening(2);
        for i in 0..4 {
            rows.push((fails(i), vec![back_off(i), TakeHost]));
            rows.push((granted(i + 2, 10), vec![Launch(h(i + 2)), wait(None)]));
        }
        rows.push((fails(4), vec![back_off(4), wait(None)]));
        rows.push((
            fails(5),
            vec![
                back_off(5),
                Action::Finish(Finish::FallBack(no_further_host(0, 2, 6))),
            ],
        ));
        play(rules(2), rows);
    }

    #[test]
    fn exhausted_failure_budget_with_a_vote_goes_to_the_arbiter() {
        let mut rows = opening(2);
        rows.push((says(0, good(), 100), vec![wait(Some(1100))]));
        for i in 1..5 {
            rows.push((fails(i), vec![back_off(i), TakeHost]));
            rows.push((
                granted(i + 1, 200),
                vec![Launch(h(i + 1)), wait(Some(1300))],
            ));
        }
        rows.push((
            fails(5),
            vec![back_off(5), arbiter(no_further_host(1, 2, 5))],
        ));
        rows.push((
            Event::CompiledHere(Some(good())),
            vec![
                Action::ClearBackoff(hosts(&[0])),
                Action::Finish(Finish::WriteLocal),
            ],
        ));
        play(rules(2), rows);
    }

    /// A flight the driver lost (its task died) counts against the budget but
    /// is not held against the host.
    #[test]
    fn lost_flights_are_failures_without_backoff() {
        play(
            rules(2),
            then(
                opening(2),
                vec![(
                    Event::HostFailed {
                        host: h(0),
                        host_at_fault: false,
                    },
                    vec![TakeHost],
                )],
            ),
        );
    }

    #[test]
    fn no_host_at_all_falls_back() {
        play(
            rules(2),
            vec![(
                Event::NoHostLeft,
                vec![Action::Finish(Finish::FallBack(Shortfall::NoVotingHost))],
            )],
        );
    }

    #[test]
    fn one_host_alone_votes_then_the_arbiter_decides() {
        play(
            rules(2),
            vec![
                (granted(0, 0), vec![Launch(h(0)), TakeHost]),
                (Event::NoHostLeft, vec![Preprocess]),
                (ready(10), vec![TakeHost]),
                (Event::NoHostLeft, vec![wait(None)]),
                (says(0, good(), 100), vec![TakeHost]),
                (Event::NoHostLeft, vec![arbiter(no_further_host(1, 2, 0))]),
            ],
        );
    }

    /// Running out of hosts ends a round, not the job: when the last flight
    /// fails, hosts are sought again (one may have come back from backoff).
    #[test]
    fn no_host_left_then_last_flight_fails_falls_back() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (fails(0), vec![back_off(0), TakeHost]),
                    (Event::NoHostLeft, vec![wait(None)]),
                    (fails(1), vec![back_off(1), TakeHost]),
                    (
                        Event::NoHostLeft,
                        vec![Action::Finish(Finish::FallBack(no_further_host(0, 2, 2)))],
                    ),
                ],
            ),
        );
    }

    #[test]
    fn all_hosts_busy_then_free() {
        play(
            rules(2),
            vec![
                (Event::AllHostsBusy, vec![pause(None)]),
                (Event::PauseOver, vec![TakeHost]),
                (granted(0, 5), vec![Launch(h(0)), TakeHost]),
                (Event::AllHostsBusy, vec![Preprocess]),
                (ready(10), vec![TakeHost]),
                (Event::AllHostsBusy, vec![pause(None)]),
                (Event::PauseOver, vec![TakeHost]),
                (Event::AllHostsBusy, vec![pause(None)]),
                (Event::PauseOver, vec![TakeHost]),
                (granted(1, 20), vec![Launch(h(1)), wait(None)]),
                (says(0, good(), 110), vec![wait(Some(1120))]),
                (
                    says(1, good(), 130),
                    vec![write(good(), &[0, 1], Shown::Remote)],
                ),
            ],
        );
    }

    /// A vote in while a host is still wanted and every slot busy: the hedge
    /// timer and the pause run together.
    #[test]
    fn busy_slots_and_hedge_timer_together() {
        play(
            rules(2),
            vec![
                (granted(0, 0), vec![Launch(h(0)), TakeHost]),
                (granted(1, 0), vec![Launch(h(1)), Preprocess]),
                (ready(0), vec![wait(None)]),
                (says(0, good(), 100), vec![wait(Some(1100))]),
                (
                    hedge_fires(1100),
                    vec![
                        Action::Hedge {
                            lagging: h(1),
                            first_vote_after: Duration::from_millis(100),
                        },
                        TakeHost,
                    ],
                ),
                (Event::AllHostsBusy, vec![pause(None)]),
                (Event::PauseOver, vec![TakeHost]),
                (granted(2, 1200), vec![Launch(h(2)), wait(Some(2300))]),
            ],
        );
    }

    #[test]
    fn lagging_host_is_hedged_and_its_late_vote_still_counts() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    // Early wake-ups hedge nobody.
                    (hedge_fires(1000), vec![wait(Some(1100))]),
                    (
                        hedge_fires(1100),
                        vec![
                            Action::Hedge {
                                lagging: h(1),
                                first_vote_after: Duration::from_millis(100),
                            },
                            TakeHost,
                        ],
                    ),
                    (granted(2, 1100), vec![Launch(h(2)), wait(Some(2200))]),
                    (
                        says(1, good(), 1500),
                        vec![Cancel(h(2)), write(good(), &[0, 1], Shown::Remote)],
                    ),
                ],
            ),
        );
    }

    /// Host 0 answered at 100 ms; host 1 lags and is hedged by host 2.
    fn hedged(first: ResultDigest) -> Vec<Row> {
        then(
            opening(2),
            vec![
                (says(0, first, 100), vec![wait(Some(1100))]),
                (
                    hedge_fires(1100),
                    vec![
                        Action::Hedge {
                            lagging: h(1),
                            first_vote_after: Duration::from_millis(100),
                        },
                        TakeHost,
                    ],
                ),
                (granted(2, 1100), vec![Launch(h(2)), wait(Some(2200))]),
            ],
        )
    }

    /// A hedge is a later draw: its agreement with the early answerer is
    /// confirmed here, and written when this machine agrees.
    #[test]
    fn hedge_agreeing_with_the_early_answerer_is_confirmed_here() {
        play(
            rules(2),
            then(
                hedged(good()),
                vec![
                    (
                        says(2, good(), 1300),
                        vec![Cancel(h(1)), Action::CompileHere(Check::Confirm)],
                    ),
                    (
                        Event::CompiledHere(Some(good())),
                        vec![write(good(), &[0, 2], Shown::Remote)],
                    ),
                ],
            ),
        );
    }

    /// The hedging attack: a colluder answers fast, the honest host it was
    /// paired with lags, and the hedge is another colluder. This machine
    /// disagrees: its result is written and both colluders are reported; the
    /// lagging honest host, which cast no vote, is not.
    #[test]
    fn hedge_agreeing_with_a_liar_loses_to_this_machine() {
        play(
            rules(2),
            then(
                hedged(bad()),
                vec![
                    (
                        says(2, bad(), 1300),
                        vec![Cancel(h(1)), Action::CompileHere(Check::Confirm)],
                    ),
                    (
                        Event::CompiledHere(Some(good())),
                        vec![
                            Action::Report(Report {
                                judgement: Judgement::SpotCheck,
                                losers: hosts(&[0, 2]),
                                winners: Winners::ThisMachine,
                                accepted: good(),
                                with_local: true,
                            }),
                            Action::Finish(Finish::WriteLocal),
                        ],
                    ),
                ],
            ),
        );
    }

    /// A confirmation this machine cannot make writes nothing remote: the
    /// user's command is compiled here.
    #[test]
    fn confirm_that_cannot_compile_here_compiles_the_source() {
        play(
            rules(2),
            then(
                hedged(good()),
                vec![
                    (
                        says(2, good(), 1300),
                        vec![Cancel(h(1)), Action::CompileHere(Check::Confirm)],
                    ),
                    (
                        Event::CompiledHere(None),
                        vec![Action::Finish(Finish::CompileSourceHere)],
                    ),
                ],
            ),
        );
    }

    /// Confirming outranks a spot check and differing diagnostics: the same
    /// compile serves all three, and without it nothing is written.
    #[test]
    fn confirm_outranks_a_spot_check() {
        let spot = Rules {
            spot_check: true,
            ..rules(2)
        };
        let warned = ResultDigest::of(0, b"honest object", b"x.c:2: warning: unused\n");
        play(
            spot,
            then(
                hedged(good()),
                vec![
                    (
                        says(2, warned, 1300),
                        vec![Cancel(h(1)), Action::CompileHere(Check::Confirm)],
                    ),
                    (
                        Event::CompiledHere(None),
                        vec![Action::Finish(Finish::CompileSourceHere)],
                    ),
                ],
            ),
        );
    }

    /// A replacement for a host that failed after the source was sent is a
    /// later draw too.
    #[test]
    fn replacement_after_a_failure_is_confirmed_here() {
        let rows = then(
            opening(2),
            vec![
                (fails(0), vec![back_off(0), TakeHost]),
                (granted(2, 50), vec![Launch(h(2)), wait(None)]),
                (says(1, good(), 100), vec![wait(Some(1150))]),
                (
                    says(2, good(), 200),
                    vec![Action::CompileHere(Check::Confirm)],
                ),
            ],
        );
        play(
            rules(2),
            then(
                rows.clone(),
                vec![(
                    Event::CompiledHere(Some(good())),
                    vec![write(good(), &[1, 2], Shown::Remote)],
                )],
            ),
        );
        play(
            rules(2),
            then(
                rows,
                vec![(
                    Event::CompiledHere(None),
                    vec![Action::Finish(Finish::CompileSourceHere)],
                )],
            ),
        );
    }

    /// A host that fails during the opening is replaced there; the
    /// replacement is the third draw, not one of the first two.
    #[test]
    fn replacement_during_the_opening_is_a_later_draw() {
        play(
            rules(2),
            vec![
                (granted(0, 0), vec![Launch(h(0)), TakeHost]),
                (fails(0), vec![back_off(0)]),
                (granted(1, 0), vec![Launch(h(1)), TakeHost]),
                (granted(2, 0), vec![Launch(h(2)), Preprocess]),
                (ready(0), vec![wait(None)]),
                (says(1, good(), 100), vec![wait(Some(1100))]),
                (
                    says(2, good(), 150),
                    vec![Action::CompileHere(Check::Confirm)],
                ),
            ],
        );
    }

    /// An agreed compile error that needs a later host is never shown on the
    /// hosts' word, even when remote errors are trusted: the user's command
    /// runs here.
    #[test]
    fn agreed_compile_error_of_a_later_host_is_retried_here() {
        let trusting = Rules {
            trust_remote_failure: true,
            ..rules(2)
        };
        play(
            trusting,
            then(
                hedged(compile_error()),
                vec![(
                    says(2, compile_error(), 1300),
                    vec![
                        Cancel(h(1)),
                        Action::RetryHere {
                            failed_on: hosts(&[0, 2]),
                            exit_code: 1,
                        },
                    ],
                )],
            ),
        );
    }

    /// Votes that come in while a host is being taken are counted when the
    /// round ends: a dispute among them goes to this machine then, whatever
    /// order the votes came in (a majority of first-drawn hosts does not
    /// outvote a later dissenter).
    #[test]
    fn dispute_among_votes_in_while_taking_a_host_is_arbitrated() {
        play(
            rules(2),
            then(
                hedged(good()),
                vec![
                    (
                        hedge_fires(2200),
                        vec![
                            Action::Hedge {
                                lagging: h(2),
                                first_vote_after: Duration::from_millis(100),
                            },
                            TakeHost,
                        ],
                    ),
                    (says(2, bad(), 2250), vec![]),
                    (says(1, good(), 2260), vec![]),
                    (
                        granted(3, 2300),
                        vec![Launch(h(3)), Cancel(h(3)), disputed()],
                    ),
                    (
                        Event::CompiledHere(Some(good())),
                        arbitrated(&[2], &[0, 1], good()),
                    ),
                ],
            ),
        );
    }

    /// The same, agreeing: the first-drawn pair decides when the round ends.
    #[test]
    fn majority_in_while_taking_a_host_decides_when_the_round_ends() {
        play(
            rules(2),
            then(
                hedged(good()),
                vec![
                    (
                        hedge_fires(2200),
                        vec![
                            Action::Hedge {
                                lagging: h(2),
                                first_vote_after: Duration::from_millis(100),
                            },
                            TakeHost,
                        ],
                    ),
                    (says(1, good(), 2250), vec![]),
                    (
                        Event::AllHostsBusy,
                        vec![Cancel(h(2)), write(good(), &[0, 1], Shown::Remote)],
                    ),
                ],
            ),
        );
    }

    /// A lagging host stays in the air, so the hedge cannot exceed the votes
    /// allowed: with 1 vote and 2 hosts on their way, 4 votes are reached.
    #[test]
    fn hedging_stops_at_the_vote_limit() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (
                        hedge_fires(1100),
                        vec![
                            Action::Hedge {
                                lagging: h(1),
                                first_vote_after: Duration::from_millis(100),
                            },
                            TakeHost,
                        ],
                    ),
                    (granted(2, 1100), vec![Launch(h(2)), wait(Some(2200))]),
                    (
                        hedge_fires(2200),
                        vec![
                            Action::Hedge {
                                lagging: h(2),
                                first_vote_after: Duration::from_millis(100),
                            },
                            TakeHost,
                        ],
                    ),
                    (granted(3, 2200), vec![Launch(h(3)), wait(Some(3300))]),
                    (
                        hedge_fires(3300),
                        vec![
                            Action::Hedge {
                                lagging: h(3),
                                first_vote_after: Duration::from_millis(100),
                            },
                            wait(None),
                        ],
                    ),
                ],
            ),
        );
    }

    #[test]
    fn clocks_restart_when_the_source_is_ready() {
        play(
            rules(2),
            vec![
                (granted(0, 0), vec![Launch(h(0)), TakeHost]),
                (granted(1, 0), vec![Launch(h(1)), Preprocess]),
                (ready(5000), vec![wait(None)]),
                (says(0, good(), 5100), vec![wait(Some(6100))]),
            ],
        );
    }

    /// The first vote's time sets the hedge: a slow first vote doubles.
    #[test]
    fn hedge_threshold_is_twice_a_slow_first_vote() {
        play(
            rules(2),
            then(
                opening(2),
                vec![(says(0, good(), 3000), vec![wait(Some(6000))])],
            ),
        );
    }

    /// A split vote no longer waits for the vote limit: the first
    /// disagreement goes to this machine, before a third answer could make a
    /// three-way split.
    #[test]
    fn split_vote_goes_to_the_arbiter_before_the_vote_limit() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (says(1, bad(), 110), vec![disputed()]),
                    (
                        Event::CompiledHere(Some(good())),
                        arbitrated(&[1], &[0], good()),
                    ),
                ],
            ),
        );
    }

    /// Flights still in the air when the vote ends are cancelled.
    #[test]
    fn arbiter_cancels_hosts_still_working() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (
                        hedge_fires(1100),
                        vec![
                            Action::Hedge {
                                lagging: h(1),
                                first_vote_after: Duration::from_millis(100),
                            },
                            TakeHost,
                        ],
                    ),
                    (granted(2, 1100), vec![Launch(h(2)), wait(Some(2200))]),
                    // The hedge disagrees: the lagging host is cancelled.
                    (says(2, bad(), 1200), vec![Cancel(h(1)), disputed()]),
                ],
            ),
        );
    }

    #[test]
    fn arbiter_without_a_witness_accuses_nobody() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (says(1, bad(), 110), vec![disputed()]),
                    (
                        Event::CompiledHere(Some(object(b"this machine's own"))),
                        vec![Action::ToolchainSuspect, Action::Finish(Finish::WriteLocal)],
                    ),
                ],
            ),
        );
    }

    #[test]
    fn arbiter_that_cannot_compile_here_compiles_the_source() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (says(1, bad(), 110), vec![disputed()]),
                    (
                        Event::CompiledHere(None),
                        vec![Action::Finish(Finish::CompileSourceHere)],
                    ),
                ],
            ),
        );
    }

    #[test]
    fn statuses_that_are_not_votes_are_failures() {
        for status in [110 << 8, 107 << 8, 0x8b, 9, 200 << 8] {
            let crash = ResultDigest::of(status, b"", b"");
            play(
                rules(2),
                then(
                    opening(2),
                    vec![
                        (
                            says(0, crash, 100),
                            vec![
                                Action::BackOff {
                                    hosts: vec![h(0)],
                                    why: BackOffReason::NotAVote { status },
                                },
                                TakeHost,
                            ],
                        ),
                        // No vote yet, so no hedge timer either.
                        (granted(2, 100), vec![Launch(h(2)), wait(None)]),
                        (says(1, good(), 150), vec![wait(Some(1250))]),
                        // Host 2 replaced host 0: this machine confirms.
                        (
                            says(2, good(), 200),
                            vec![Action::CompileHere(Check::Confirm)],
                        ),
                        (
                            Event::CompiledHere(Some(good())),
                            vec![write(good(), &[1, 2], Shown::Remote)],
                        ),
                    ],
                ),
            );
        }
    }

    #[test]
    fn agreed_compile_error_is_retried_here() {
        let rows = then(
            opening(2),
            vec![
                (says(0, compile_error(), 100), vec![wait(Some(1100))]),
                (
                    says(1, compile_error(), 120),
                    vec![Action::RetryHere {
                        failed_on: hosts(&[0, 1]),
                        exit_code: 1,
                    }],
                ),
            ],
        );
        play(
            rules(2),
            then(
                rows.clone(),
                vec![(
                    Event::RetriedHere { exit_code: 1 },
                    vec![
                        Action::ClearBackoff(hosts(&[0, 1])),
                        Action::Finish(Finish::Exit(1)),
                    ],
                )],
            ),
        );
        play(
            rules(2),
            then(
                rows,
                vec![(
                    Event::RetriedHere { exit_code: 0 },
                    vec![
                        Action::BackOff {
                            hosts: hosts(&[0, 1]),
                            why: BackOffReason::FailureNotReproduced { remote: 1, here: 0 },
                        },
                        Action::Finish(Finish::Exit(0)),
                    ],
                )],
            ),
        );
    }

    /// A compile error against an object is a dispute like any other: this
    /// machine compiles, and the host it reproduces is kept.
    #[test]
    fn compile_error_against_an_object_is_arbitrated_here() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, compile_error(), 100), vec![wait(Some(1100))]),
                    (says(1, good(), 110), vec![disputed()]),
                    (
                        Event::CompiledHere(Some(compile_error())),
                        arbitrated(&[1], &[0], compile_error()),
                    ),
                ],
            ),
        );
    }

    #[test]
    fn agreed_compile_error_is_shown_when_remote_errors_are_trusted() {
        let trusting = Rules {
            trust_remote_failure: true,
            ..rules(2)
        };
        play(
            trusting,
            then(
                opening(2),
                vec![
                    (says(0, compile_error(), 100), vec![wait(Some(1100))]),
                    (
                        says(1, compile_error(), 120),
                        vec![Action::Finish(Finish::ShowRemoteFailure {
                            digest: compile_error(),
                        })],
                    ),
                ],
            ),
        );
        // Unless the hosts' diagnostics differ: then this machine shows its own.
        let worded = ResultDigest::of(1 << 8, b"", b"x.c:1: some other message\n");
        play(
            trusting,
            then(
                opening(2),
                vec![
                    (says(0, compile_error(), 100), vec![wait(Some(1100))]),
                    (
                        says(1, worded, 120),
                        vec![Action::RetryHere {
                            failed_on: hosts(&[0, 1]),
                            exit_code: 1,
                        }],
                    ),
                ],
            ),
        );
    }

    #[test]
    fn differing_diagnostics_show_this_machines_output() {
        let warned = ResultDigest::of(0, b"honest object", b"x.c:2: warning: unused\n");
        let rows = then(
            opening(2),
            vec![
                (says(0, good(), 100), vec![wait(Some(1100))]),
                (
                    says(1, warned, 120),
                    vec![Action::CompileHere(Check::DiagnosticsDiffer)],
                ),
            ],
        );
        play(
            rules(2),
            then(
                rows.clone(),
                vec![(
                    Event::CompiledHere(Some(good())),
                    vec![write(good(), &[0, 1], Shown::Local)],
                )],
            ),
        );
        play(
            rules(2),
            then(
                rows,
                vec![(
                    Event::CompiledHere(None),
                    vec![write(good(), &[0, 1], Shown::Hidden)],
                )],
            ),
        );
    }

    #[test]
    fn differing_stdout_shows_this_machines_output() {
        play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (
                        says_with_stdout(1, good(), [1; 32], 120),
                        vec![Action::CompileHere(Check::DiagnosticsDiffer)],
                    ),
                ],
            ),
        );
    }

    #[test]
    fn failed_preprocessing_cancels_the_hosts() {
        play(
            rules(2),
            vec![
                (granted(0, 0), vec![Launch(h(0)), TakeHost]),
                (granted(1, 0), vec![Launch(h(1)), Preprocess]),
                (
                    Event::SourceFailed,
                    vec![Cancel(h(0)), Cancel(h(1)), Action::Finish(Finish::NoSource)],
                ),
            ],
        );
    }

    #[test]
    fn replies_from_hosts_not_asked_or_twice_are_no_votes() {
        let scheduler = play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(7, bad(), 50), vec![wait(None)]),
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (says(0, good(), 110), vec![wait(Some(1100))]),
                    (fails(0), vec![wait(Some(1100))]),
                ],
            ),
        );
        assert_eq!(scheduler.received().len(), 1);
    }

    /// A pool that offers the same host again has no other: one host never
    /// casts two votes.
    #[test]
    fn a_host_granted_again_is_not_asked_twice() {
        play(
            rules(2),
            vec![
                (granted(0, 0), vec![Launch(h(0)), TakeHost]),
                (granted(0, 0), vec![Preprocess]),
                (ready(10), vec![TakeHost]),
                (granted(0, 10), vec![wait(None)]),
                (says(0, bad(), 100), vec![TakeHost]),
                (granted(0, 100), vec![arbiter(no_further_host(1, 2, 0))]),
            ],
        );
    }

    #[test]
    fn events_after_the_end_are_ignored() {
        let mut scheduler = play(
            rules(2),
            then(
                opening(2),
                vec![
                    (says(0, good(), 100), vec![wait(Some(1100))]),
                    (
                        says(1, good(), 150),
                        vec![write(good(), &[0, 1], Shown::Remote)],
                    ),
                ],
            ),
        );
        assert!(scheduler.handle(says(2, bad(), 200)).is_empty());
        assert!(scheduler.handle(Event::PauseOver).is_empty());
        assert!(scheduler.handle(granted(3, 300)).is_empty());
    }

    #[test]
    fn shortfalls_read_as_before() {
        assert_eq!(
            no_further_host(1, 2, 5).to_string(),
            "1 of 2 votes in, and no further host can be asked (5 failed)"
        );
        assert_eq!(
            Shortfall::NoMajorityPossible { max_votes: 4 }.to_string(),
            "no result can reach a strict majority within 4 votes"
        );
        assert_eq!(
            Shortfall::Disputed.to_string(),
            "the hosts disagree, and this machine decides rather than a further host"
        );
        assert!(Shortfall::NoVotingHost.concerns_the_pool());
        assert!(!Shortfall::NothingToAsk.concerns_the_pool());
        assert!(!Shortfall::Disputed.concerns_the_pool());
    }

    /// A driver making arbitrary (but well-formed) choices, and an oracle
    /// that counts the votes it fed on its own.
    struct Simulation {
        scheduler: Scheduler,
        redundancy: usize,
        choices: std::vec::IntoIter<u8>,
        now: u64,
        next_host: usize,
        granted: Option<HostId>,
        launched: Vec<HostId>,
        in_flight: Vec<HostId>,
        /// Every vote fed: a host asked, answering for the first time, with a
        /// status that is a vote.
        votes: Vec<(HostId, ResultDigest)>,
        /// What this machine's last compile returned, if it was asked.
        local: Option<Option<ResultDigest>>,
    }

    /// What hosts and this machine may return: the honest object most often,
    /// so that majorities (and confirmations) are common.
    const ANSWERS: [fn() -> ResultDigest; 8] =
        [good, good, good, good, good, bad, other, compile_error];

    impl Simulation {
        fn choose(&mut self, n: usize) -> usize {
            self.choices.next().map_or(0, |c| c as usize % n)
        }

        fn tick(&mut self) -> Instant {
            self.now += self.choose(2000) as u64;
            at(self.now)
        }

        /// Run until the job ends or the choices run out.
        fn run(mut self) -> Result<(), TestCaseError> {
            let mut pending: std::collections::VecDeque<Action> = self.scheduler.start().into();
            loop {
                let Some(action) = pending.pop_front() else {
                    return Err(TestCaseError::fail("the scheduler stopped without an end"));
                };
                if matches!(action, Action::TakeHost | Action::Preprocess) {
                    self.interleave()?;
                }
                let event = match action {
                    Action::TakeHost => match self.choose(8) {
                        0 => Event::AllHostsBusy,
                        1 => Event::NoHostLeft,
                        2 if self.next_host > 0 => {
                            // A broken pool offering a host already asked.
                            let host = HostId(self.choose(self.next_host));
                            Event::HostGranted {
                                host,
                                now: self.tick(),
                            }
                        }
                        _ => {
                            let host = HostId(self.next_host);
                            self.next_host += 1;
                            self.granted = Some(host);
                            Event::HostGranted {
                                host,
                                now: self.tick(),
                            }
                        }
                    },
                    Action::Launch(host) => {
                        prop_assert_eq!(self.granted.take(), Some(host), "launch without a slot");
                        prop_assert!(!self.launched.contains(&host), "{:?} asked twice", host);
                        self.launched.push(host);
                        self.in_flight.push(host);
                        continue;
                    }
                    Action::Preprocess => match self.choose(8) {
                        0 => Event::SourceFailed,
                        _ => Event::SourceReady { now: self.tick() },
                    },
                    Action::Await(Await {
                        hedge_at,
                        pause_for_slot,
                    }) => {
                        if self.choices.len() == 0 {
                            return Ok(());
                        }
                        self.flight_event(hedge_at, pause_for_slot)
                    }
                    Action::Cancel(host) => {
                        prop_assert!(self.in_flight.contains(&host));
                        self.in_flight.retain(|h| *h != host);
                        continue;
                    }
                    Action::CompileHere(_) => {
                        let local = match self.choose(ANSWERS.len() + 1) {
                            0 => None,
                            i => Some(ANSWERS[i - 1]()),
                        };
                        self.local = Some(local);
                        Event::CompiledHere(local)
                    }
                    Action::RetryHere { .. } => Event::RetriedHere {
                        exit_code: self.choose(2) as i32,
                    },
                    Action::Finish(finish) => return self.check_finish(&finish),
                    Action::Report(report) => {
                        self.check_report(&report)?;
                        continue;
                    }
                    Action::Hedge { .. }
                    | Action::BackOff { .. }
                    | Action::ClearBackoff(_)
                    | Action::ToolchainSuspect => continue,
                };
                prop_assert!(
                    self.votes.len() <= self.redundancy + EXTRA_VOTES,
                    "{} votes asked for",
                    self.votes.len()
                );
                pending.extend(self.scheduler.handle(event));
            }
        }

        /// Sometimes flights end while the driver is taking a host or
        /// preprocessing: the scheduler takes the events in, and only backs
        /// hosts off until its question is answered.
        fn interleave(&mut self) -> Result<(), TestCaseError> {
            while !self.in_flight.is_empty() && self.choose(2) == 0 {
                let event = self.flight_event(None, false);
                for action in self.scheduler.handle(event) {
                    prop_assert!(
                        matches!(action, Action::BackOff { .. }),
                        "{action:?} while a question is open"
                    );
                }
            }
            Ok(())
        }

        fn flight_event(&mut self, hedge_at: Option<Instant>, pause_for_slot: bool) -> Event {
            let pick = self.choose(6);
            if pick == 0 {
                if let Some(hedge_at) = hedge_at {
                    self.now = self
                        .now
                        .max(hedge_at.duration_since(at(0)).as_millis() as u64);
                    return Event::HedgeTimerFired { now: at(self.now) };
                }
            }
            if pick == 1 && pause_for_slot {
                return Event::PauseOver;
            }
            if pick == 2 || self.in_flight.is_empty() {
                // A reply nobody asked for, or a second one from a host.
                let host = HostId(self.choose(self.next_host + 2));
                if !self.in_flight.contains(&host) {
                    let digest = ANSWERS[self.choose(ANSWERS.len())]();
                    return Event::Replied {
                        host,
                        answer: Answer {
                            digest,
                            stdout: [0; 32],
                        },
                        now: self.tick(),
                    };
                }
            }
            if self.in_flight.is_empty() {
                return Event::PauseOver;
            }
            let flights = self.in_flight.len();
            let pick = self.choose(flights);
            let host = self.in_flight.remove(pick);
            match self.choose(6) {
                0 => Event::HostFailed {
                    host,
                    host_at_fault: true,
                },
                1 => Event::Replied {
                    host,
                    answer: Answer {
                        digest: ResultDigest::of(110 << 8, b"", b""),
                        stdout: [0; 32],
                    },
                    now: self.tick(),
                },
                _ => {
                    let digest = ANSWERS[self.choose(ANSWERS.len())]();
                    self.votes.push((host, digest));
                    Event::Replied {
                        host,
                        answer: Answer {
                            digest,
                            stdout: [self.choose(2) as u8; 32],
                        },
                        now: self.tick(),
                    }
                }
            }
        }

        fn check_finish(&self, finish: &Finish) -> Result<(), TestCaseError> {
            let digest = match finish {
                Finish::WriteRemote { digest, .. } | Finish::ShowRemoteFailure { digest } => digest,
                _ => return Ok(()),
            };
            let agreeing: Vec<HostId> = self
                .votes
                .iter()
                .filter(|(_, v)| v.same_vote(digest))
                .map(|(host, _)| *host)
                .collect();
            prop_assert!(
                agreeing.len() >= self.redundancy && agreeing.len() * 2 > self.votes.len(),
                "{finish:?} with {} agreeing of {} votes",
                agreeing.len(),
                self.votes.len()
            );
            if let Finish::WriteRemote { agreeing: said, .. } = finish {
                prop_assert_eq!(said, &agreeing, "the agreeing hosts named");
            }
            // The first `redundancy` hosts asked may decide alone, and only
            // when no vote differed; anything else needs this machine's word.
            let first_drawn = &self.launched[..self.launched.len().min(self.redundancy)];
            let alone = agreeing.len() == self.votes.len()
                && agreeing.iter().all(|host| first_drawn.contains(host));
            let confirmed = self
                .local
                .flatten()
                .is_some_and(|local| local.same_vote(digest));
            match finish {
                Finish::WriteRemote { .. } => prop_assert!(
                    alone || confirmed,
                    "{finish:?} unconfirmed: votes {:?}, first drawn {first_drawn:?}, local {:?}",
                    self.votes,
                    self.local
                ),
                _ => prop_assert!(
                    alone,
                    "{finish:?} shown on the word of {agreeing:?} of votes {:?}",
                    self.votes
                ),
            }
            Ok(())
        }

        /// A host whose vote is the result accepted is never reported.
        fn check_report(&self, report: &Report) -> Result<(), TestCaseError> {
            for loser in &report.losers {
                let vote = self.votes.iter().find(|(host, _)| host == loser);
                prop_assert!(
                    vote.is_some_and(|(_, v)| !v.same_vote(&report.accepted)),
                    "{loser:?} reported with vote {vote:?} in {report:?}"
                );
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Whatever the hosts, slots, timers and local compiles do, a remote
        /// result is accepted only with a strict majority of at least
        /// `redundancy` agreeing votes, and only when either the first
        /// `redundancy` hosts asked returned it with no vote differing, or
        /// this machine's compile agreed; a host that returned the accepted
        /// result is never reported; and never more votes are asked for than
        /// allowed.
        #[test]
        fn remote_results_need_a_strict_majority_of_first_drawn_or_confirmed_hosts(
            redundancy in 2usize..=4,
            spot_check: bool,
            trust_remote_failure: bool,
            choices in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let rules = Rules {
                redundancy,
                hedge_min: Duration::from_millis(1000),
                spot_check,
                trust_remote_failure,
            };
            Simulation {
                scheduler: Scheduler::new(rules),
                redundancy,
                choices: choices.into_iter(),
                now: 0,
                next_host: 0,
                granted: None,
                launched: Vec::new(),
                in_flight: Vec::new(),
                votes: Vec::new(),
                local: None,
            }
            .run()?;
        }
    }
}
