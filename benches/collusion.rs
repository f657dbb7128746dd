//! Collusion: one attacker running a fraction *f* of a 10 000-host network
//! through many keys, against the network's actual rules. A discrete-event
//! simulation that drives the real code: `trust::pairing::draw` picks every
//! simulated job's voters, `verify::scheduler::Scheduler` decides every
//! simulated job's verdict (a generic driver answers whatever action comes),
//! `trust::standing::StandingRules::standing` decides when a host is
//! established, and `trust::adjudication::{pick_referees, rule}` settles every
//! report.
//!
//! The model:
//! * 10 000 hosts, one key each. Honest hosts sit two to a /24 and start
//!   established (a mature network); the attacker's hosts sit
//!   `COLLUSION_HOSTS_PER_NET` (4) to a /24 and all register at day 0 (a
//!   coordinated start). All hosts have the speed weight 2 (an unmeasured
//!   host's); `COLLUSION_ATTACKER_WEIGHT=4` gives the attacker the fastest hosts.
//! * Probation: a newcomer passes `COLLUSION_CHALLENGES_PER_DAY` (4) challenges
//!   a day and agrees with an established host on each of its
//!   `COLLUSION_JOBS_PER_HOST_DAY` (100) jobs a day (two newcomers are never
//!   paired); `StandingRules::default()` (30 challenges, 200 agreements, 14
//!   days) decides. While probationary the attacker's hosts are honest.
//! * Once established the attacker lies only when every voter of a job is one
//!   of its established hosts (its hosts share input hashes, so they know), and
//!   answers honestly otherwise; no vote ever shows a mismatch. Its
//!   established hosts also file false reports (`COLLUSION_FRAMING`, 0.01 per
//!   host and day): "honest host H returned garbage, my host returned the
//!   right object", reporter and colluder the same key; and as referees they
//!   side with the attacker.
//! * An adjudication also sends the job to the parties' hosts, and strikes a
//!   host only for a wrong result the coordinator saw itself. The attacker's
//!   hosts know the coordinator's address and answer it honestly
//!   (`COLLUSION_EVADE`, 1; 0: they lie to it as to anyone), so with the
//!   default a caught lie burns none of them: only each member's own
//!   exclusion of a host it caught works against them.
//! * Honest members' clients spot-check `COLLUSION_SPOTCHECK` (2 %) of their
//!   jobs. A report (from a spot check, or a false one) goes to
//!   `pick_referees` and `rule`, retried with fresh referees while inconclusive
//!   (`COLLUSION_RETRIES`, 3). A struck host is blacklisted: an attacker's
//!   host re-joins at once under a fresh key and pays probation again; an
//!   honest one is lost (counted).
//!
//! Sampling (the whole run stays near a minute on one core): a draw over
//! 10 000 hosts costs about 0.1 ms, and the network runs 500 000 jobs a day,
//! so the network's job flow is aggregated per simulated hour. From the pool of
//! the hour, the probability that all voters of a job are the attacker's
//! established hosts is computed from the draw weights and the one-host-per-/24
//! rule (exact for two voters; the later voters of larger redundancies by
//! mean weights); that many jobs lie, each is spot-checked with the client's
//! probability, and each caught one is run in full: its voters drawn by the
//! real `draw` restricted to the attacker's established hosts (the right
//! conditional distribution), the scheduler with its spot check, the report
//! adjudicated. The builds that are measured run every one of their 1000 jobs
//! in full against the whole pool, at the worst moment (the hour the
//! attacker's hosts become established, before any is caught) and at hours
//! drawn at random over the horizon; their count of builds with a wrong object
//! is printed beside the model's probability for the same hours, which checks
//! the aggregation. Framing odds are measured on 2000 false reports at the
//! worst moment, with 2 referees and with 3 unanimous ones (not applied).
//!
//! Run: `cargo bench --bench collusion`. Knobs (env): `COLLUSION_SEED` (1),
//! `COLLUSION_DAYS` (90), `COLLUSION_SPOTCHECK` (0.02), `COLLUSION_FRACTIONS`
//! (0.01,0.05,0.10), `COLLUSION_HOSTS` (10000), `COLLUSION_REDUNDANCY` (2),
//! `COLLUSION_REFEREES` (3, as the coordinator; or 2), `COLLUSION_BUILDS` (20 per measurement),
//! `COLLUSION_FRAMES` (2000), `COLLUSION_VARIANTS` (1: also the table of
//! defences at f = 5 %), and those above.
//!
//! One run (seed 1, 448 s on 2 cores shared with three builds): at f = 1 /
//! 5 / 10 % a 1000-job build gets a wrong object with probability 9 / 91 /
//! 100 % at the worst moment and 7.6 / 77 / 84 % averaged over 90 days; no
//! honest host was blacklisted and no framing attempt won, and none of the
//! (evading) attacker's hosts was burned. At f = 5 % only redundancy 4 brings
//! both figures under 1 % (0.6 % / 0.5 %).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use dportage::trust::adjudication::{pick_referees, rule_with, Dispute, Ruling, REFEREES};
use dportage::trust::pairing::{draw, Listed};
use dportage::trust::standing::{HostRecord, Standing, StandingRules};
use dportage::verify::scheduler::{
    Action, Answer, Event, Finish, HostId, Rules, Scheduler, Winners,
};
use dportage::verify::ResultDigest;

const DAY: u64 = 86_400;
/// Simulated unix time of day 0.
const T0: u64 = 1_700_000_000;
const BUILD_JOBS: usize = 1000;
const STEPS_PER_DAY: u64 = 24;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
struct Params {
    hosts: usize,
    fraction: f64,
    hosts_per_net: usize,
    days: u64,
    spot: f64,
    /// A higher spot-check rate for jobs with a host established less than
    /// this many days ago.
    young_spot: Option<(f64, u64)>,
    /// The attacker knows that rule and lies only once its hosts are no
    /// longer young.
    patient: bool,
    redundancy: usize,
    referees: usize,
    retries: usize,
    jobs_per_host_day: f64,
    challenges_per_day: f64,
    honest_weight: u32,
    attacker_weight: u32,
    framing: f64,
    /// The attacker's hosts answer the coordinator's own re-run of a
    /// disputed job honestly (they know its address), so an adjudication
    /// never sees them lie.
    evade: bool,
    builds: usize,
    frames: usize,
    seed: u64,
}

impl Params {
    fn from_env() -> Self {
        Params {
            hosts: knob("COLLUSION_HOSTS", 10_000),
            fraction: 0.05,
            hosts_per_net: knob("COLLUSION_HOSTS_PER_NET", 4usize).max(1),
            days: knob("COLLUSION_DAYS", 90),
            spot: knob("COLLUSION_SPOTCHECK", 0.02),
            young_spot: None,
            patient: false,
            redundancy: knob("COLLUSION_REDUNDANCY", 2usize).max(2),
            referees: knob("COLLUSION_REFEREES", REFEREES).clamp(2, 3),
            retries: knob("COLLUSION_RETRIES", 3),
            jobs_per_host_day: knob("COLLUSION_JOBS_PER_HOST_DAY", 100.0),
            challenges_per_day: knob("COLLUSION_CHALLENGES_PER_DAY", 4.0),
            honest_weight: 2,
            attacker_weight: knob("COLLUSION_ATTACKER_WEIGHT", 2u32).clamp(1, 4),
            framing: knob("COLLUSION_FRAMING", 0.01),
            evade: knob("COLLUSION_EVADE", 1u32) != 0,
            builds: knob("COLLUSION_BUILDS", 20),
            frames: knob("COLLUSION_FRAMES", 2000),
            seed: knob("COLLUSION_SEED", 1),
        }
    }

    /// Network jobs a day: every host serves `jobs_per_host_day` votes.
    fn network_jobs_per_day(&self) -> f64 {
        self.hosts as f64 * self.jobs_per_host_day / self.redundancy as f64
    }

    /// The attacker's share of the draw weight once all its hosts are established.
    fn f_eff(&self) -> f64 {
        let a = (self.hosts as f64 * self.fraction).round();
        let h = self.hosts as f64 - a;
        let wa = a * f64::from(self.attacker_weight);
        wa / (wa + h * f64::from(self.honest_weight))
    }

    /// The estimate: per job f_eff^r × (1 − spot), over a 1000-job build.
    fn analytic_build(&self) -> f64 {
        build_odds(self.f_eff().powi(self.redundancy as i32) * (1.0 - self.spot))
    }
}

/// P(at least one wrong object in a build) from the per-job probability.
fn build_odds(per_job: f64) -> f64 {
    1.0 - (1.0 - per_job.clamp(0.0, 1.0)).powi(BUILD_JOBS as i32)
}

fn good() -> ResultDigest {
    ResultDigest::of(0, b"the honest object", b"")
}

fn bad() -> ResultDigest {
    ResultDigest::of(0, b"the trojan", b"")
}

/// What one job came to.
struct JobOut {
    wrong: bool,
    all_liars: bool,
    /// (losers, the hosts on the winning side) of each report.
    reports: Vec<(Vec<usize>, Vec<usize>)>,
}

/// The outcome of one report's adjudication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The accused were struck.
    Accused,
    /// The report was false: the reporter's side was struck.
    Reporter,
    /// The referees sided with the reporter but the accused, re-asked by the
    /// coordinator, returned no wrong result: nobody struck.
    Unconfirmed,
    Inconclusive,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    builds_worst: usize,
    wrong_builds_worst: usize,
    builds_long: usize,
    wrong_builds_long: usize,
    build_jobs: usize,
    build_jobs_wrong: usize,
    /// Build jobs whose voters were all the attacker's established hosts,
    /// and how many the model expected.
    build_jobs_all_liars: usize,
    build_jobs_all_liars_model: f64,
    model_worst: f64,
    model_long_sum: f64,
    model_steps: usize,
    /// Network jobs in which the attacker lied, and how many were caught.
    lies: u64,
    caught: u64,
    honest_framed: usize,
    honest_reporters_struck: usize,
    burned_caught: usize,
    burned_framing: usize,
    frames: usize,
    frames_won: usize,
    reports_inconclusive: usize,
    probation_host_days: f64,
    established_peak: usize,
    half_burned_after: Option<f64>,
    ninety_burned_after: Option<f64>,
    worst_day: Option<f64>,
    /// (won, lost, inconclusive) of the framing measurement, 2 and 3 referees.
    framing2: (usize, usize, usize),
    framing3: (usize, usize, usize),
    f_established: f64,
}

struct Sim {
    p: Params,
    rules: StandingRules,
    list: Vec<Listed<u32, u32>>,
    attacker: Vec<bool>,
    alive: Vec<bool>,
    record: Vec<HostRecord>,
    established_at: Vec<u64>,
    attacker_slots: Vec<usize>,
    honest_slots: Vec<usize>,
    /// The attacker's /24s, as indices 0.. (its hosts' network minus `ATT_NET`).
    attacker_nets: usize,
    next_owner: u32,
    now: u64,
    rng: RefCell<StdRng>,
    base: Instant,
    tick: u64,
    s: Stats,
}

/// Where the attacker's network numbers start.
const ATT_NET: u32 = 1 << 24;

impl Sim {
    fn new(p: Params) -> Self {
        let attackers = (p.hosts as f64 * p.fraction).round() as usize;
        let honest = p.hosts - attackers;
        let mut list = Vec::with_capacity(p.hosts);
        let mut attacker = Vec::with_capacity(p.hosts);
        let mut record = Vec::with_capacity(p.hosts);
        // Honest hosts: old, with every challenge and agreement long done.
        let veteran = HostRecord {
            registered_at: T0 - 365 * DAY,
            challenges_passed: 1000,
            last_passed_at: T0,
            agreements: 100_000,
            ..HostRecord::default()
        };
        for i in 0..honest {
            list.push(Listed {
                owner: i as u32,
                network: (i / 2) as u32,
                standing: Standing::Established,
                weight: p.honest_weight,
            });
            attacker.push(false);
            record.push(veteran);
        }
        for j in 0..attackers {
            list.push(Listed {
                owner: (honest + j) as u32,
                network: ATT_NET + (j / p.hosts_per_net) as u32,
                standing: Standing::Probationary,
                weight: p.attacker_weight,
            });
            attacker.push(true);
            record.push(HostRecord::new(T0));
        }
        let n = list.len();
        Sim {
            rules: StandingRules::default(),
            attacker_slots: (honest..n).collect(),
            honest_slots: (0..honest).collect(),
            attacker_nets: attackers.div_ceil(p.hosts_per_net),
            list,
            attacker,
            alive: vec![true; n],
            record,
            established_at: vec![0; n],
            next_owner: n as u32,
            now: T0,
            rng: RefCell::new(StdRng::seed_from_u64(p.seed)),
            base: Instant::now(),
            tick: 0,
            s: Stats::default(),
            p,
        }
    }

    fn liar(&self, i: usize) -> bool {
        self.attacker[i] && self.alive[i] && self.list[i].standing == Standing::Established
    }

    /// Would host `i` lie on a job where every voter is the attacker's?
    fn lies(&self, i: usize) -> bool {
        self.liar(i) && !(self.p.patient && self.young(i))
    }

    fn young(&self, i: usize) -> bool {
        match self.p.young_spot {
            Some((_, days)) => {
                self.list[i].standing == Standing::Established
                    && self.now.saturating_sub(self.established_at[i]) < days * DAY
            }
            None => false,
        }
    }

    fn clock(&mut self) -> Instant {
        self.tick += 1;
        self.base + Duration::from_millis(self.tick)
    }

    /// The attacker's probationary hosts accrue challenges and agreements; the
    /// real rules decide their standing.
    fn update_standing(&mut self) {
        for k in 0..self.attacker_slots.len() {
            let i = self.attacker_slots[k];
            if self.list[i].standing == Standing::Established {
                continue;
            }
            let age_days =
                self.now.saturating_sub(self.record[i].registered_at) as f64 / DAY as f64;
            let r = &mut self.record[i];
            r.challenges_passed = (age_days * self.p.challenges_per_day) as u32;
            r.agreements = (age_days * self.p.jobs_per_host_day) as u32;
            if r.challenges_passed > 0 {
                r.last_passed_at = self.now;
            }
            let standing = self.rules.standing(r, self.now);
            if standing == Standing::Established {
                self.established_at[i] = self.now;
            }
            self.list[i].standing = standing;
        }
    }

    /// P(every voter of a network job is one of the attacker's established
    /// hosts that `which` selects): the first two draws exactly (weights, one
    /// host per /24), later ones by the mean weights of the chosen /24s.
    fn p_all_liars(&self, which: impl Fn(usize) -> bool) -> f64 {
        let total: f64 = (0..self.list.len())
            .filter(|&i| self.alive[i])
            .map(|i| f64::from(self.list[i].weight))
            .sum();
        let mut x = vec![0.0f64; self.attacker_nets];
        let mut t = vec![0.0f64; self.attacker_nets];
        for &i in &self.attacker_slots {
            if !self.alive[i] {
                continue;
            }
            let n = (self.list[i].network - ATT_NET) as usize;
            let w = f64::from(self.list[i].weight);
            t[n] += w;
            if self.lies(i) && which(i) {
                x[n] += w;
            }
        }
        let xs: f64 = x.iter().sum();
        if xs == 0.0 {
            return 0.0;
        }
        let pair: f64 = x
            .iter()
            .zip(&t)
            .map(|(&xn, &tn)| xn / total * (xs - xn) / (total - tn))
            .sum();
        let x_mean: f64 = x.iter().map(|&xn| xn * xn).sum::<f64>() / xs;
        let t_mean: f64 = x.iter().zip(&t).map(|(&xn, &tn)| xn * tn).sum::<f64>() / xs;
        let mut p = pair;
        for k in 2..self.p.redundancy {
            let k = k as f64;
            p *= ((xs - k * x_mean) / (total - k * t_mean)).max(0.0);
        }
        p
    }

    /// One job, run in full: voters by `draw` among the live hosts `restrict`
    /// allows, the client's spot check, the scheduler driven by whatever it asks.
    fn job(&mut self, restrict: &dyn Fn(&Sim, usize) -> bool, spot: Option<bool>) -> JobOut {
        let r = self.p.redundancy;
        let mut chosen: Vec<usize> = Vec::with_capacity(r + 2);
        // The opening voters are drawn first, so a client that checks young
        // hosts more often knows whom it got; later hosts are drawn on demand.
        for _ in 0..r {
            let elig = |i: usize| self.alive[i] && restrict(self, i);
            match draw(&self.list, &chosen, elig, &mut *self.rng.borrow_mut()) {
                Some(i) => chosen.push(i),
                None => break,
            }
        }
        let all_liars = chosen.len() >= r && chosen.iter().all(|&i| self.lies(i));
        let spot = spot.unwrap_or_else(|| {
            let rate = match self.p.young_spot {
                Some((young_rate, _)) if chosen.iter().any(|&i| self.young(i)) => young_rate,
                _ => self.p.spot,
            };
            self.rng.borrow_mut().gen_bool(rate)
        });
        let mut scheduler = Scheduler::new(Rules {
            redundancy: r,
            hedge_min: Duration::from_millis(1000),
            spot_check: spot,
            trust_remote_failure: false,
        });
        let mut opening: VecDeque<usize> = chosen.iter().copied().collect();
        let mut launched: Vec<usize> = Vec::new();
        let mut pending: VecDeque<usize> = VecDeque::new();
        let mut actions: VecDeque<Action> = scheduler.start().into();
        let mut out = JobOut {
            wrong: false,
            all_liars,
            reports: Vec::new(),
        };
        while let Some(action) = actions.pop_front() {
            let event = match action {
                Action::TakeHost => {
                    let next = opening.pop_front().or_else(|| {
                        let elig = |i: usize| self.alive[i];
                        draw(&self.list, &launched, elig, &mut *self.rng.borrow_mut())
                    });
                    match next {
                        Some(i) => {
                            launched.push(i);
                            Event::HostGranted {
                                host: HostId(i),
                                now: self.clock(),
                            }
                        }
                        None => Event::NoHostLeft,
                    }
                }
                Action::Launch(HostId(i)) => {
                    pending.push_back(i);
                    continue;
                }
                Action::Preprocess => Event::SourceReady { now: self.clock() },
                Action::Await(wait) => match pending.pop_front() {
                    Some(i) => {
                        // A colluder lies only when every host on the job is
                        // one of its own established ones.
                        let lie = launched.len() >= r && launched.iter().all(|&h| self.lies(h));
                        Event::Replied {
                            host: HostId(i),
                            answer: Answer {
                                digest: if lie { bad() } else { good() },
                                stdout: [0; 32],
                            },
                            now: self.clock(),
                        }
                    }
                    None => match wait.hedge_at {
                        Some(at) => Event::HedgeTimerFired { now: at },
                        None if wait.pause_for_slot => Event::PauseOver,
                        None => panic!("the scheduler waits for nothing"),
                    },
                },
                Action::Cancel(HostId(i)) => {
                    pending.retain(|&h| h != i);
                    continue;
                }
                Action::CompileHere(_) => Event::CompiledHere(Some(good())),
                Action::RetryHere { .. } => Event::RetriedHere { exit_code: 0 },
                Action::Report(report) => {
                    let losers = report.losers.iter().map(|h| h.0).collect();
                    let side = match report.winners {
                        Winners::Hosts(h) | Winners::ThisMachineAnd(h) => {
                            h.iter().map(|h| h.0).collect()
                        }
                        Winners::ThisMachine => Vec::new(),
                    };
                    out.reports.push((losers, side));
                    continue;
                }
                Action::Finish(finish) => {
                    out.wrong =
                        matches!(finish, Finish::WriteRemote { digest, .. } if digest == bad());
                    break;
                }
                _ => continue,
            };
            actions.extend(scheduler.handle(event));
        }
        out
    }

    /// Settle a job's reports: the member that filed them is a random honest host.
    fn settle_reports(&mut self, out: &JobOut) {
        for (losers, side) in &out.reports {
            let reporter = self.random_honest();
            let (outcome, struck) = self.adjudicate(losers, bad(), side, reporter, good());
            self.apply(outcome, &struck, false);
        }
    }

    fn random_honest(&mut self) -> usize {
        loop {
            let i = self.honest_slots[self.rng.borrow_mut().gen_range(0..self.honest_slots.len())];
            if self.alive[i] {
                return i;
            }
        }
    }

    /// Adjudicate a report against each of `accused`: referees re-run the job,
    /// an honest one gets the true (good) object, an attacker's one claims the
    /// attacker's (bad) one. Retried with fresh referees while inconclusive.
    fn adjudicate(
        &mut self,
        accused: &[usize],
        accused_result: ResultDigest,
        side: &[usize],
        reporter: usize,
        reported: ResultDigest,
    ) -> (Outcome, Vec<usize>) {
        let mut parties: Vec<usize> = accused.to_vec();
        parties.extend(side);
        parties.push(reporter);
        for _ in 0..=self.p.retries {
            let alive = &self.alive;
            let referees = pick_referees(
                &self.list,
                &parties,
                self.p.referees,
                |i| alive[i],
                &mut *self.rng.borrow_mut(),
            );
            if referees.len() < self.p.referees {
                continue;
            }
            let results: Vec<ResultDigest> = referees
                .iter()
                .map(|&i| if self.liar(i) { bad() } else { good() })
                .collect();
            // What the parties return when the coordinator sends them the job.
            let seen: Vec<(usize, ResultDigest)> = accused
                .iter()
                .chain(side)
                .map(|&i| {
                    let lies = self.liar(i) && !self.p.evade;
                    (i, if lies { bad() } else { good() })
                })
                .collect();
            let mut struck: Vec<usize> = Vec::new();
            let mut outcome = Outcome::Inconclusive;
            for &a in accused {
                let dispute = Dispute {
                    accused: a,
                    accused_result,
                    reporter_side: side.to_vec(),
                    reported_result: reported,
                };
                match rule_with(&dispute, &reporter, &results, self.p.referees, &seen) {
                    Ruling::AccusedWrong { struck: s } => {
                        outcome = Outcome::Accused;
                        struck.push(s);
                    }
                    Ruling::ReportFalse { struck: s } => {
                        outcome = Outcome::Reporter;
                        struck.extend(s);
                    }
                    Ruling::Unconfirmed => {
                        if outcome == Outcome::Inconclusive {
                            outcome = Outcome::Unconfirmed;
                        }
                    }
                    Ruling::Inconclusive => {}
                }
            }
            if outcome != Outcome::Inconclusive {
                struck.sort_unstable();
                struck.dedup();
                return (outcome, struck);
            }
        }
        (Outcome::Inconclusive, Vec::new())
    }

    /// Blacklist the struck hosts; an attacker's re-joins at once under a fresh key.
    fn apply(&mut self, outcome: Outcome, struck: &[usize], framing: bool) {
        if matches!(outcome, Outcome::Inconclusive | Outcome::Unconfirmed) {
            self.s.reports_inconclusive += 1;
        }
        for &i in struck {
            if !self.alive[i] {
                continue;
            }
            if self.attacker[i] {
                if framing {
                    self.s.burned_framing += 1;
                } else {
                    self.s.burned_caught += 1;
                }
                self.list[i].owner = self.next_owner;
                self.next_owner += 1;
                self.list[i].standing = Standing::Probationary;
                self.record[i] = HostRecord::new(self.now);
            } else {
                if framing {
                    self.s.honest_framed += 1;
                } else {
                    self.s.honest_reporters_struck += 1;
                }
                self.alive[i] = false;
            }
        }
    }

    /// One false report: "honest host H returned X, my host C returned Y".
    fn frame(&mut self, liars: &[usize], apply: bool) -> Outcome {
        let c = liars[self.rng.borrow_mut().gen_range(0..liars.len())];
        let h = self.random_honest();
        // "Honest host h returned garbage, my host returned the right
        // object": the claim about h is the framer's word alone.
        let (outcome, struck) = self.adjudicate(&[h], bad(), &[c], c, good());
        if apply {
            self.s.frames += 1;
            if outcome == Outcome::Accused {
                self.s.frames_won += 1;
            }
            self.apply(outcome, &struck, true);
        }
        outcome
    }

    fn build(&mut self) -> bool {
        let mut wrong = false;
        self.s.build_jobs_all_liars_model += self.p_all_liars(|_| true) * BUILD_JOBS as f64;
        for _ in 0..BUILD_JOBS {
            let out = self.job(&|_, _| true, None);
            self.s.build_jobs += 1;
            self.s.build_jobs_all_liars += usize::from(out.all_liars);
            if out.wrong {
                self.s.build_jobs_wrong += 1;
                wrong = true;
            }
            self.settle_reports(&out);
        }
        wrong
    }

    /// The framing odds at this moment, with 2 and 3 referees, not applied.
    fn measure_framing(&mut self) {
        let liars: Vec<usize> = self
            .attacker_slots
            .iter()
            .copied()
            .filter(|&i| self.liar(i))
            .collect();
        if liars.is_empty() {
            return;
        }
        let keep = self.p.referees;
        for referees in [2, 3] {
            self.p.referees = referees;
            let mut tally = (0, 0, 0);
            for _ in 0..self.p.frames {
                match self.frame(&liars, false) {
                    Outcome::Accused => tally.0 += 1,
                    Outcome::Reporter => tally.1 += 1,
                    Outcome::Unconfirmed | Outcome::Inconclusive => tally.2 += 1,
                }
            }
            if referees == 2 {
                self.s.framing2 = tally;
            } else {
                self.s.framing3 = tally;
            }
        }
        self.p.referees = keep;
    }

    fn stochastic_round(&mut self, x: f64) -> u64 {
        let floor = x.floor();
        floor as u64 + u64::from(self.rng.borrow_mut().gen::<f64>() < x - floor)
    }

    fn run(mut self) -> Stats {
        let steps = self.p.days * STEPS_PER_DAY;
        let dt = DAY / STEPS_PER_DAY;
        let dt_days = 1.0 / STEPS_PER_DAY as f64;
        let mut long_builds: Vec<u64> = (0..self.p.builds)
            .map(|_| self.rng.borrow_mut().gen_range(0..steps))
            .collect();
        long_builds.sort_unstable();
        let mut long_builds: VecDeque<u64> = long_builds.into();
        let jobs_per_step = self.p.network_jobs_per_day() * dt_days;
        let mut worst_step: Option<u64> = None;
        let mut first_generation: Vec<(usize, u32)> = Vec::new();
        for step in 0..steps {
            self.now = T0 + step * dt;
            self.update_standing();
            let liars: Vec<usize> = self
                .attacker_slots
                .iter()
                .copied()
                .filter(|&i| self.liar(i))
                .collect();
            let probationary = self
                .attacker_slots
                .iter()
                .filter(|&&i| self.list[i].standing == Standing::Probationary)
                .count();
            self.s.probation_host_days += probationary as f64 * dt_days;

            // The model's odds this hour, split by the spot-check rate that applies.
            let p_all = self.p_all_liars(|_| true);
            let (p_old, young_rate) = match self.p.young_spot {
                Some((rate, _)) => (self.p_all_liars(|i| !self.young(i)), rate),
                None => (p_all, self.p.spot),
            };
            let p_young = (p_all - p_old).max(0.0);
            let per_job = p_old * (1.0 - self.p.spot) + p_young * (1.0 - young_rate);
            let model = build_odds(per_job);
            self.s.model_long_sum += model;
            self.s.model_steps += 1;

            if worst_step.is_none() && liars.iter().any(|&i| self.lies(i)) {
                // The coordinated start: every host established, none caught.
                worst_step = Some(step);
                self.s.worst_day = Some(step as f64 * dt_days);
                self.s.model_worst = model;
                self.s.established_peak = liars.len();
                first_generation = liars.iter().map(|&i| (i, self.list[i].owner)).collect();
                let total_alive = self.alive.iter().filter(|&&a| a).count();
                self.s.f_established = liars.len() as f64 / total_alive as f64;
                self.measure_framing();
                for _ in 0..self.p.builds {
                    self.s.builds_worst += 1;
                    if self.build() {
                        self.s.wrong_builds_worst += 1;
                    }
                }
            }
            while long_builds.front() == Some(&step) {
                long_builds.pop_front();
                self.s.builds_long += 1;
                if self.build() {
                    self.s.wrong_builds_long += 1;
                }
            }
            if let Some(w) = worst_step {
                let since = (step - w) as f64 * dt_days;
                let peak = self.s.established_peak;
                let left = first_generation
                    .iter()
                    .filter(|&&(i, owner)| self.list[i].owner == owner)
                    .count();
                if self.s.half_burned_after.is_none() && left * 2 <= peak {
                    self.s.half_burned_after = Some(since);
                }
                if self.s.ninety_burned_after.is_none() && left * 10 <= peak {
                    self.s.ninety_burned_after = Some(since);
                }
            }

            // The network's lying jobs this hour; the caught ones run in full.
            for (p, rate, young) in [(p_old, self.p.spot, false), (p_young, young_rate, true)] {
                if p <= 0.0 {
                    continue;
                }
                let lies = self.stochastic_round(jobs_per_step * p);
                for _ in 0..lies {
                    self.s.lies += 1;
                    if !self.rng.borrow_mut().gen_bool(rate) {
                        continue;
                    }
                    self.s.caught += 1;
                    let mut out = None;
                    for _ in 0..50 {
                        let o = self.job(&|s: &Sim, i| s.lies(i), Some(true));
                        let pair_young = self.young_pair(&o);
                        if pair_young == young || self.p.young_spot.is_none() {
                            out = Some(o);
                            break;
                        }
                    }
                    if let Some(out) = out {
                        self.settle_reports(&out);
                    }
                }
            }

            // False reports.
            let liars: Vec<usize> = liars.into_iter().filter(|&i| self.liar(i)).collect();
            if !liars.is_empty() {
                let frames = self.stochastic_round(self.p.framing * liars.len() as f64 * dt_days);
                for _ in 0..frames {
                    self.frame(&liars, true);
                }
            }
        }
        self.s
    }

    /// Did a caught job involve a young host? (Its losers are its voters.)
    fn young_pair(&self, out: &JobOut) -> bool {
        out.reports
            .iter()
            .any(|(losers, _)| losers.iter().any(|&i| self.young(i)))
    }
}

fn pct(x: f64) -> String {
    if x >= 0.9995 {
        "100 %".into()
    } else if x >= 0.1 {
        format!("{:.0} %", x * 100.0)
    } else if x >= 0.001 {
        format!("{:.1} %", x * 100.0)
    } else if x > 0.0 {
        format!("{:.3} %", x * 100.0)
    } else {
        "0".into()
    }
}

fn days(x: Option<f64>) -> String {
    x.map_or("-".into(), |d| {
        if d < 1.0 {
            format!("{:.0} h", d * 24.0)
        } else {
            format!("{d:.1} d")
        }
    })
}

fn main() {
    let base = Params::from_env();
    let fractions: Vec<f64> = std::env::var("COLLUSION_FRACTIONS")
        .ok()
        .map(|v| v.split(',').filter_map(|f| f.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0.01, 0.05, 0.10]);
    let started = Instant::now();
    println!(
        "Parameters: {} hosts (honest 2 per /24, the attacker's {} per /24), weights {} honest / {} attacker; \
         redundancy {}, spot check {}, {} referees, {} retries; probation (StandingRules::default()) {} challenges, {} agreements, {} days, earned at {} challenges and {} jobs a day; \
         {} network jobs a day; false reports {} per established attacker host and day; {} days from a coordinated \
         start; {} builds of {} jobs per measurement; seed {}.\n",
        base.hosts,
        base.hosts_per_net,
        base.honest_weight,
        base.attacker_weight,
        base.redundancy,
        pct(base.spot),
        base.referees,
        base.retries,
        StandingRules::default().challenges,
        StandingRules::default().agreements,
        StandingRules::default().min_age_secs / DAY,
        base.challenges_per_day,
        base.jobs_per_host_day,
        base.network_jobs_per_day(),
        base.framing,
        base.days,
        base.builds,
        BUILD_JOBS,
        base.seed,
    );
    println!(
        "| f | P(wrong) worst moment: model · builds | analytic f²(1−s) | P(wrong) {}-day average: model · builds \
         | honest blacklisted (framed + as reporters) | attacker: probation host-days · hosts burned (caught + framing) \
         | first generation half / 90 % burned |",
        base.days
    );
    println!("|---|---|---|---|---|---|---|");
    let mut framing_rows = Vec::new();
    let mut baseline_5 = None;
    for &f in &fractions {
        let p = Params {
            fraction: f,
            ..base.clone()
        };
        let s = Sim::new(p.clone()).run();
        println!(
            "| {} | {} · {}/{} | {} | {} · {}/{} | {} ({} + {}) | {:.0} · {} ({} + {}) | {} / {} |",
            pct(f),
            pct(s.model_worst),
            s.wrong_builds_worst,
            s.builds_worst,
            pct(p.analytic_build()),
            pct(s.model_long_sum / s.model_steps.max(1) as f64),
            s.wrong_builds_long,
            s.builds_long,
            s.honest_framed + s.honest_reporters_struck,
            s.honest_framed,
            s.honest_reporters_struck,
            s.probation_host_days,
            s.burned_caught + s.burned_framing,
            s.burned_caught,
            s.burned_framing,
            days(s.half_burned_after),
            days(s.ninety_burned_after),
        );
        if (f - 0.05).abs() < 1e-9 {
            baseline_5 = Some(s.clone());
        }
        framing_rows.push((f, s));
    }
    println!();
    for (f, s) in &framing_rows {
        println!(
            "Check of the aggregation at f = {}: {} of the measured builds' {} jobs had only the attacker's \
             established hosts as voters (the model: {:.1}), {} wrote its object.",
            pct(*f),
            s.build_jobs_all_liars,
            s.build_jobs,
            s.build_jobs_all_liars_model,
            s.build_jobs_wrong,
        );
    }
    println!(
        "\nFraming (false reports at the worst moment, {} each; retried while inconclusive; g = the attacker's \
         share of established hosts):\n",
        base.frames
    );
    println!("| f | g | won · lost · inconclusive, 2 referees | g²/(g²+(1−g)²) | won · lost · inconclusive, 3 unanimous referees | g³/(g³+(1−g)³) | in the run: false reports · won |");
    println!("|---|---|---|---|---|---|---|");
    for (f, s) in &framing_rows {
        let g = s.f_established;
        let (a, b, c) = s.framing2;
        let (d, e, h) = s.framing3;
        println!(
            "| {} | {} | {a} · {b} · {c} | {} | {d} · {e} · {h} | {} | {} · {} |",
            pct(*f),
            pct(g),
            pct(g * g / (g * g + (1.0 - g) * (1.0 - g))),
            pct(g.powi(3) / (g.powi(3) + (1.0 - g).powi(3))),
            s.frames,
            s.frames_won,
        );
    }
    if knob("COLLUSION_VARIANTS", 1u32) != 0 {
        println!(
            "\nDefences at f = 5 % (model · builds, {} builds per measurement):\n",
            (base.builds * 2 / 5).max(4)
        );
        println!("| variant | P(wrong) worst moment | P(wrong) {}-day average | honest blacklisted | hosts burned | first generation half burned |", base.days);
        println!("|---|---|---|---|---|---|");
        let v = |name: &str, s: &Stats| {
            println!(
                "| {name} | {} · {}/{} | {} · {}/{} | {} | {} | {} |",
                pct(s.model_worst),
                s.wrong_builds_worst,
                s.builds_worst,
                pct(s.model_long_sum / s.model_steps.max(1) as f64),
                s.wrong_builds_long,
                s.builds_long,
                s.honest_framed + s.honest_reporters_struck,
                s.burned_caught + s.burned_framing,
                days(s.half_burned_after),
            );
        };
        if let Some(s) = &baseline_5 {
            v("as above", s);
        }
        let at5 = Params {
            fraction: 0.05,
            builds: (base.builds * 2 / 5).max(4),
            frames: 0,
            ..base.clone()
        };
        let variants: Vec<(String, Params)> = vec![
            (
                "attacker's hosts the fastest (weight 4 vs 2)".into(),
                Params {
                    attacker_weight: 4,
                    ..at5.clone()
                },
            ),
            (
                "spot check 10 %".into(),
                Params {
                    spot: 0.10,
                    ..at5.clone()
                },
            ),
            (
                "spot check 50 % for hosts established < 30 days".into(),
                Params {
                    young_spot: Some((0.5, 30)),
                    ..at5.clone()
                },
            ),
            (
                "the same, the attacker waiting those 30 days".into(),
                Params {
                    young_spot: Some((0.5, 30)),
                    patient: true,
                    ..at5.clone()
                },
            ),
            (
                "10× the network's jobs (1000 per host and day)".into(),
                Params {
                    jobs_per_host_day: base.jobs_per_host_day * 10.0,
                    ..at5.clone()
                },
            ),
            (
                "redundancy 3".into(),
                Params {
                    redundancy: 3,
                    ..at5.clone()
                },
            ),
            (
                "redundancy 3, spot check 10 %".into(),
                Params {
                    redundancy: 3,
                    spot: 0.10,
                    ..at5.clone()
                },
            ),
            (
                "redundancy 4".into(),
                Params {
                    redundancy: 4,
                    ..at5.clone()
                },
            ),
            (
                "3 unanimous referees".into(),
                Params {
                    referees: 3,
                    ..at5.clone()
                },
            ),
            (
                "redundancy 4, 3 unanimous referees".into(),
                Params {
                    redundancy: 4,
                    referees: 3,
                    ..at5.clone()
                },
            ),
            (
                "f = 10 %, 3 unanimous referees".into(),
                Params {
                    fraction: 0.10,
                    referees: 3,
                    ..at5.clone()
                },
            ),
        ];
        for (name, p) in variants {
            let s = Sim::new(p).run();
            v(&name, &s);
        }
    }
    println!("\n({:.0?} in all.)", started.elapsed());
}
