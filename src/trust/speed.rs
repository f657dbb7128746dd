//! What this client learned of each host's speed, as pure rules: a smoothed
//! time per job, how often the host failed or had to be hedged, and whether
//! it is demoted. The client keeps one [`SpeedBook`] per state directory
//! (`speed.json`), updates it at the end of every verified job and turns it
//! into draw weights ([`SpeedBook::rank`]) at the start of the next.
//!
//! Rules, and why:
//! * Time per job is an exponential moving average of the seconds from the
//!   moment a host could start (its launch, or the source being ready) to its
//!   answer. It is not normalised by input size: hosts are drawn at random for
//!   the same mix of jobs, so per-job means compare fairly over a few jobs.
//! * The weight is [`speed_weight`] against the fastest host of the job's
//!   candidates, so bounded to 1 ..= [`MAX_SPEED_WEIGHT`]: speed never buys a
//!   host (an attacker's) more than a bounded share of the draws. A host never
//!   measured gets the middle weight, so it is tried and measured.
//! * A host that needed a hedge or failed in [`DEMOTE_AFTER`] of its last
//!   [`WINDOW`] jobs is demoted for [`DEMOTION_SECS`] (the rest of the build
//!   and the builds after it): minimum weight, and drawn only when no other
//!   eligible host has a free slot. Two fast answers in a row end the
//!   demotion early: a host that was only busy for a while recovers as soon
//!   as it is used again.
//! * The book is bounded: hosts unseen for [`FORGET_AFTER_SECS`] are
//!   forgotten, and at most [`MAX_HOSTS`] are kept (the most recently seen).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::pairing::{speed_weight, MAX_SPEED_WEIGHT};

/// How many of a host's latest jobs the demotion rule looks at.
pub const WINDOW: u32 = 4;
/// Slow (hedged) or failed jobs among the last [`WINDOW`] that demote a host.
pub const DEMOTE_AFTER: u32 = 2;
/// Fast answers in a row that end a demotion early.
pub const RECOVER_AFTER: u32 = 2;
/// How long a demotion lasts unless the host recovers: longer than most
/// builds, so one slow host costs a build a few hedges, not one per job.
pub const DEMOTION_SECS: u64 = 12 * 3600;
/// Hosts not seen for this long are forgotten.
pub const FORGET_AFTER_SECS: u64 = 30 * 24 * 3600;
/// The most hosts a book keeps.
pub const MAX_HOSTS: usize = 512;
/// Weight of the newest job in the smoothed time per job.
const SMOOTHING: f64 = 0.3;

/// How one host did on one job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// It answered, without being hedged, after `secs`.
    Answered { secs: f64 },
    /// It lagged and another host was asked too; `secs` is how long it took
    /// to answer, or how long it had worked when the job no longer needed it
    /// (a lower bound).
    Hedged { secs: f64 },
    /// It could not compile the job at all (connection, refusal, crash).
    Failed,
}

impl Outcome {
    fn slow_or_failed(self) -> bool {
        !matches!(self, Outcome::Answered { .. })
    }
}

/// What this client knows of one host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSpeed {
    /// The host's identity (hex) when the signed host list gave one: another
    /// identity at the same address is another host, measured afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Smoothed seconds per job; `None` until it answered once.
    #[serde(default)]
    pub secs_per_job: Option<f64>,
    #[serde(default)]
    pub jobs: u64,
    #[serde(default)]
    pub failures: u64,
    /// Jobs on which it lagged and was hedged.
    #[serde(default)]
    pub hedges: u64,
    /// The latest [`WINDOW`] jobs, newest in bit 0: set when slow or failed.
    #[serde(default)]
    pub recent: u32,
    /// Fast answers in a row (up to [`RECOVER_AFTER`]).
    #[serde(default)]
    pub fast_streak: u32,
    /// Unix seconds until which the host is demoted (0: not demoted).
    #[serde(default)]
    pub demoted_until: u64,
    /// Unix seconds of its latest job.
    #[serde(default)]
    pub last_seen: u64,
}

impl HostSpeed {
    /// Take in how the host did on one job that ended at `now`.
    pub fn update(&mut self, outcome: Outcome, now: u64) {
        self.jobs = self.jobs.saturating_add(1);
        self.last_seen = now;
        let secs = match outcome {
            Outcome::Answered { secs } | Outcome::Hedged { secs } => Some(secs),
            Outcome::Failed => None,
        };
        if let Some(secs) = secs.filter(|s| s.is_finite() && *s >= 0.0) {
            // A hedged host's time may be a lower bound; it still only makes
            // the host look faster than it is, never slower.
            let secs = secs.min(3600.0);
            self.secs_per_job = Some(match self.secs_per_job.filter(|s| s.is_finite()) {
                Some(old) => old + SMOOTHING * (secs - old),
                None => secs,
            });
        }
        match outcome {
            Outcome::Hedged { .. } => self.hedges = self.hedges.saturating_add(1),
            Outcome::Failed => self.failures = self.failures.saturating_add(1),
            Outcome::Answered { .. } => {}
        }
        let mask = (1u32 << WINDOW) - 1;
        self.recent = ((self.recent << 1) | u32::from(outcome.slow_or_failed())) & mask;
        if outcome.slow_or_failed() {
            self.fast_streak = 0;
        } else {
            self.fast_streak = (self.fast_streak + 1).min(RECOVER_AFTER);
        }
        if self.fast_streak >= RECOVER_AFTER {
            self.demoted_until = 0;
        } else if self.bad_recently() >= DEMOTE_AFTER {
            self.demoted_until = now.saturating_add(DEMOTION_SECS);
        }
    }

    /// Slow or failed jobs among the latest [`WINDOW`].
    pub fn bad_recently(&self) -> u32 {
        (self.recent & ((1u32 << WINDOW) - 1)).count_ones()
    }

    pub fn is_demoted(&self, now: u64) -> bool {
        now < self.demoted_until
    }
}

/// How a draw sees one candidate host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rank {
    /// 1 ..= [`MAX_SPEED_WEIGHT`].
    pub weight: u32,
    /// Drawn only when no other eligible host has a free slot.
    pub demoted: bool,
    /// Smoothed seconds per job; `None`: never answered a job yet.
    pub secs_per_job: Option<f64>,
}

impl Rank {
    /// What a host gets when nothing is known of any host.
    pub fn unknown() -> Rank {
        Rank {
            weight: MAX_SPEED_WEIGHT.div_ceil(2),
            demoted: false,
            secs_per_job: None,
        }
    }
}

/// A host as the book keys it: its address (`ip:port`) and, when the signed
/// host list names it, its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostKey<'a> {
    pub address: &'a str,
    pub id: Option<&'a str>,
}

/// Every host this client measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeedBook {
    /// By address.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostSpeed>,
}

impl SpeedBook {
    /// What is known of `host`: nothing when another identity was measured
    /// at its address.
    pub fn get(&self, host: HostKey<'_>) -> Option<&HostSpeed> {
        self.hosts
            .get(host.address)
            .filter(|known| host.id.is_none() || known.id.as_deref() == host.id)
    }

    /// Take in how `host` did on one job that ended at `now`.
    pub fn record(&mut self, host: HostKey<'_>, outcome: Outcome, now: u64) {
        let entry = self.hosts.entry(host.address.to_owned()).or_default();
        if let Some(id) = host.id {
            if entry.id.as_deref() != Some(id) {
                *entry = HostSpeed {
                    id: Some(id.to_owned()),
                    ..HostSpeed::default()
                };
            }
        }
        entry.update(outcome, now);
    }

    /// Forget hosts unseen for [`FORGET_AFTER_SECS`], and the least recently
    /// seen beyond [`MAX_HOSTS`].
    pub fn prune(&mut self, now: u64) {
        self.hosts
            .retain(|_, h| h.last_seen.saturating_add(FORGET_AFTER_SECS) > now);
        if self.hosts.len() > MAX_HOSTS {
            let mut seen: Vec<u64> = self.hosts.values().map(|h| h.last_seen).collect();
            seen.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = seen[MAX_HOSTS - 1];
            self.hosts.retain(|_, h| h.last_seen >= cutoff);
            // Ties at the cutoff: drop by address until the bound holds.
            while self.hosts.len() > MAX_HOSTS {
                let Some(key) = self
                    .hosts
                    .iter()
                    .find(|(_, h)| h.last_seen == cutoff)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.hosts.remove(&key);
            }
        }
    }

    /// The draw weight and demotion of each of a job's candidate `hosts` at
    /// `now`, index for index. Speeds compare against the fastest host not
    /// demoted (or, when all are, the fastest of all).
    pub fn rank(&self, hosts: &[HostKey<'_>], now: u64) -> Vec<Rank> {
        let known: Vec<Option<&HostSpeed>> = hosts.iter().map(|h| self.get(*h)).collect();
        let measured = |demoted_too: bool| {
            known
                .iter()
                .flatten()
                .filter(|h| demoted_too || !h.is_demoted(now))
                .filter_map(|h| h.secs_per_job)
                .filter(|s| s.is_finite() && *s > 0.0)
                .fold(None, |min: Option<f64>, s| {
                    Some(min.map_or(s, |m| m.min(s)))
                })
        };
        let fastest = measured(false).or_else(|| measured(true));
        known
            .iter()
            .map(|known| {
                let Some(h) = known else {
                    return Rank::unknown();
                };
                let demoted = h.is_demoted(now);
                let weight = if demoted {
                    1
                } else {
                    match fastest {
                        Some(f) => speed_weight(h.secs_per_job, f),
                        None => Rank::unknown().weight,
                    }
                };
                Rank {
                    weight,
                    demoted,
                    secs_per_job: h.secs_per_job.filter(|s| s.is_finite()),
                }
            })
            .collect()
    }
}

/// The order in which to try hosts where the list's order decides (a plain
/// `DISTCC_HOSTS` list): hosts not demoted first, and among them those never
/// measured (so they get measured), then the fastest first. Ties keep the
/// list's order.
pub fn preference_order(ranks: &[Rank]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ranks.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |r: &Rank| (r.demoted, r.secs_per_job.is_some());
        let (ra, rb) = (&ranks[a], &ranks[b]);
        key(ra).cmp(&key(rb)).then_with(|| {
            let secs = |r: &Rank| r.secs_per_job.unwrap_or(0.0);
            secs(ra).total_cmp(&secs(rb))
        })
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HostKey<'static> = HostKey {
        address: "10.0.0.1:3632",
        id: None,
    };
    const B: HostKey<'static> = HostKey {
        address: "10.0.0.2:3632",
        id: None,
    };
    const C: HostKey<'static> = HostKey {
        address: "10.0.0.3:3632",
        id: None,
    };

    fn fast(secs: f64) -> Outcome {
        Outcome::Answered { secs }
    }

    #[test]
    fn demotion_table() {
        use Outcome::Failed;
        let hedged = Outcome::Hedged { secs: 1.5 };
        let ok = fast(0.2);
        // (history, demoted afterwards)
        let cases: Vec<(Vec<Outcome>, bool)> = vec![
            (vec![], false),
            (vec![ok, ok, ok], false),
            (vec![hedged], false),
            (vec![hedged, hedged], true),
            (vec![hedged, ok, hedged], true),
            (vec![Failed, ok, Failed], true),
            (vec![hedged, Failed], true),
            // Two fast answers in a row end it.
            (vec![hedged, hedged, ok], true),
            (vec![hedged, hedged, ok, ok], false),
            // Once out of the window, old hedges no longer count.
            (vec![hedged, ok, ok, ok, hedged], false),
            (vec![hedged, ok, ok, hedged, ok], true),
        ];
        for (n, (history, want)) in cases.into_iter().enumerate() {
            let mut h = HostSpeed::default();
            for (t, o) in history.iter().enumerate() {
                h.update(*o, 1000 + t as u64);
            }
            assert_eq!(h.is_demoted(1100), want, "case {n}: {history:?} → {h:?}");
        }
    }

    #[test]
    fn demotion_decays() {
        let mut h = HostSpeed::default();
        h.update(Outcome::Hedged { secs: 2.0 }, 100);
        h.update(Outcome::Hedged { secs: 2.0 }, 101);
        assert!(h.is_demoted(101 + DEMOTION_SECS - 1));
        assert!(!h.is_demoted(101 + DEMOTION_SECS));
        assert_eq!((h.jobs, h.hedges, h.failures), (2, 2, 0));
    }

    #[test]
    fn time_per_job_is_smoothed() {
        let mut h = HostSpeed::default();
        h.update(fast(1.0), 1);
        assert_eq!(h.secs_per_job, Some(1.0));
        h.update(fast(2.0), 2);
        assert!((h.secs_per_job.unwrap() - 1.3).abs() < 1e-9);
        h.update(Outcome::Failed, 3);
        assert!((h.secs_per_job.unwrap() - 1.3).abs() < 1e-9, "no time");
        h.update(fast(f64::NAN), 4);
        h.update(fast(-1.0), 5);
        assert!((h.secs_per_job.unwrap() - 1.3).abs() < 1e-9, "nonsense");
    }

    #[test]
    fn ranks_favour_the_fast_and_demote_the_hedged() {
        let mut book = SpeedBook::default();
        for t in 0..5 {
            book.record(A, fast(0.25), t);
            book.record(B, fast(0.5), t);
        }
        book.record(C, Outcome::Hedged { secs: 1.2 }, 5);
        book.record(C, Outcome::Hedged { secs: 1.3 }, 6);
        let d = HostKey {
            address: "10.0.0.4:3632",
            id: None,
        };
        let ranks = book.rank(&[A, B, C, d], 10);
        assert_eq!(ranks[0].weight, MAX_SPEED_WEIGHT);
        assert_eq!(ranks[1].weight, 2);
        assert_eq!((ranks[2].weight, ranks[2].demoted), (1, true));
        assert_eq!(ranks[3], Rank::unknown(), "never measured: still tried");
        assert_eq!(preference_order(&ranks), [3, 0, 1, 2]);
        // When only the demoted host is known, the others compare to nothing.
        let ranks = book.rank(&[C, d], 10);
        assert!(ranks[0].demoted && !ranks[1].demoted);
        assert_eq!(ranks[1].weight, Rank::unknown().weight);
        // A slow host that is not demoted (yet) is still tried after faster
        // ones, however coarse the weights.
        book.record(d, fast(0.3), 7);
        book.record(
            HostKey {
                address: "10.0.0.5:3632",
                id: None,
            },
            Outcome::Hedged { secs: 1.0 },
            7,
        );
        let e = HostKey {
            address: "10.0.0.5:3632",
            id: None,
        };
        let ranks = book.rank(&[e, d, A], 10);
        assert!(!ranks[0].demoted);
        assert_eq!(preference_order(&ranks), [2, 1, 0]);
    }

    #[test]
    fn another_identity_at_an_address_starts_afresh() {
        let mut book = SpeedBook::default();
        let old = HostKey {
            address: A.address,
            id: Some("aa"),
        };
        let new = HostKey {
            address: A.address,
            id: Some("bb"),
        };
        book.record(old, Outcome::Failed, 1);
        book.record(old, Outcome::Failed, 2);
        assert!(book.rank(&[old], 3)[0].demoted);
        assert!(book.get(new).is_none());
        assert_eq!(book.rank(&[new], 3)[0], Rank::unknown());
        book.record(new, fast(1.0), 3);
        assert_eq!(book.hosts[A.address].jobs, 1);
        // Without an identity, the address alone decides.
        assert!(book.get(A).is_some());
    }

    #[test]
    fn book_is_bounded() {
        let mut book = SpeedBook::default();
        for i in 0..(MAX_HOSTS + 40) {
            let address = format!("10.1.{}.{}:3632", i / 256, i % 256);
            let key = HostKey {
                address: &address,
                id: None,
            };
            book.record(key, fast(1.0), 1_000 + (i as u64 / 3));
        }
        book.prune(2_000);
        assert_eq!(book.hosts.len(), MAX_HOSTS);
        assert!(book.hosts.values().all(|h| h.last_seen >= 1_000 + 13));
        book.prune(1_000 + FORGET_AFTER_SECS + 10_000);
        assert!(book.hosts.is_empty(), "all forgotten");
    }

    fn outcome_strategy() -> impl proptest::strategy::Strategy<Value = Outcome> {
        use proptest::prelude::*;
        prop_oneof![
            (0.0f64..100.0).prop_map(|secs| Outcome::Answered { secs }),
            (0.0f64..100.0).prop_map(|secs| Outcome::Hedged { secs }),
            Just(Outcome::Failed),
        ]
    }

    proptest::proptest! {
        /// Whatever the hosts did: weights stay within the bounds, a demoted
        /// host has the least weight and comes after every host that is not
        /// demoted, and a host never measured keeps the middle weight.
        #[test]
        fn ranks_stay_bounded_and_demoted_hosts_last(
            histories in proptest::collection::vec(
                proptest::collection::vec((0usize..4, outcome_strategy()), 0..40), 1..4),
            now in 0u64..100,
        ) {
            let addresses: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:1")).collect();
            let keys: Vec<HostKey<'_>> = addresses
                .iter()
                .map(|a| HostKey { address: a, id: None })
                .collect();
            let mut book = SpeedBook::default();
            for history in &histories {
                for (t, (host, outcome)) in history.iter().enumerate() {
                    book.record(keys[*host], *outcome, t as u64);
                }
            }
            let ranks = book.rank(&keys, now);
            for (i, r) in ranks.iter().enumerate() {
                proptest::prop_assert!((1..=MAX_SPEED_WEIGHT).contains(&r.weight));
                if r.demoted {
                    proptest::prop_assert_eq!(r.weight, 1);
                }
                if book.get(keys[i]).is_none() {
                    proptest::prop_assert_eq!(*r, Rank::unknown());
                }
            }
            // Host 4 never ran a job.
            proptest::prop_assert!(!ranks[4].demoted);
            let order = preference_order(&ranks);
            let first_demoted = order.iter().position(|&i| ranks[i].demoted);
            if let Some(at) = first_demoted {
                proptest::prop_assert!(order[at..].iter().all(|&i| ranks[i].demoted));
            }
            let mut sorted = order.clone();
            sorted.sort_unstable();
            proptest::prop_assert_eq!(sorted, (0..keys.len()).collect::<Vec<_>>());
        }
    }
}
