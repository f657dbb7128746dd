//! Deciding a dispute by re-running its evidence, never by counting who
//! complained: the coordinator sends the reported job (the very preprocessed
//! input, canonical arguments and toolchain) to [`REFEREES`] established hosts
//! whose owners and networks are unrelated to everyone in the dispute, and the
//! strike goes to whichever side disagrees with their unanimous result.
//!
//! A report is the reporter's word about what the hosts returned, and words
//! are free: a host is struck only for a wrong result the coordinator saw
//! itself, by sending the same job to the parties' hosts beside the referees.
//! The reporter is struck for a report the referees contradict (it signed
//! that report, claiming a result they do not get). So nobody can frame a
//! host by claiming it returned garbage, nor by naming it as an accomplice.
//! The price: a liar that answers the coordinator honestly is not struck by
//! an adjudication (each member that caught it still excludes it); signed
//! result receipts from the hosts would close that.

use rand::Rng;

use super::pairing::{draw, Listed};
use super::standing::Standing;

/// Referees re-running a disputed job. Three, and they must be unanimous: for
/// referees to strike an honest host, all three would have to be an
/// attacker's established hosts (about g³ of disputes, g its share of
/// established hosts). The collusion simulation (`cargo bench --bench
/// collusion`) measured two referees letting 0.25 % of framing attempts
/// through at g = 5 % and three letting none of 2000 through.
pub const REFEREES: usize = 3;

/// One side's claim in a dispute: the result hash it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute<Id, H> {
    /// The reported host and the result it returned.
    pub accused: Id,
    pub accused_result: H,
    /// The hosts whose result the reporter accepted (may be empty: the
    /// reporter's own compile decided alone) and that result.
    pub reporter_side: Vec<Id>,
    pub reported_result: H,
}

/// Who loses a dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ruling<Id> {
    /// The referees agree with the reporter, and the accused returned a wrong
    /// result to the coordinator too: the accused host gets a strike.
    AccusedWrong { struck: Id },
    /// The referees agree with the reporter, but the accused, asked by the
    /// coordinator, did not return a wrong result (it returned the right one,
    /// or nothing): what it returned to the reporter rests on the reporter's
    /// word, so nobody is struck.
    Unconfirmed,
    /// The referees agree with the accused, and the accused returned that
    /// result to the coordinator too: the report was false (a framing
    /// attempt, or a broken reporter). The reporter gets a strike, and so does
    /// every host that sided with it and returned a wrong result to the
    /// coordinator too.
    ReportFalse { struck: Vec<Id> },
    /// The referees disagree among themselves, or with both sides, or too few
    /// answered: nobody is struck (the dispute may be retried).
    Inconclusive,
}

/// Rule on `dispute` given the referees' results ([`REFEREES`] are needed)
/// and what the parties' hosts returned when the coordinator sent them the
/// job (`seen`: host, result; a host that did not answer is absent).
/// `reporter` is the member that filed the report (struck when the report
/// was false).
pub fn rule<Id: Clone + PartialEq, H: PartialEq>(
    dispute: &Dispute<Id, H>,
    reporter: &Id,
    referee_results: &[H],
    seen: &[(Id, H)],
) -> Ruling<Id> {
    rule_with(dispute, reporter, referee_results, REFEREES, seen)
}

/// [`rule`] with `needed` unanimous referees instead of [`REFEREES`] (for
/// the simulation's comparison of two and three).
pub fn rule_with<Id: Clone + PartialEq, H: PartialEq>(
    dispute: &Dispute<Id, H>,
    reporter: &Id,
    referee_results: &[H],
    needed: usize,
    seen: &[(Id, H)],
) -> Ruling<Id> {
    let Some((first, rest)) = referee_results.split_first() else {
        return Ruling::Inconclusive;
    };
    if referee_results.len() < needed.max(1) || rest.iter().any(|r| r != first) {
        return Ruling::Inconclusive;
    }
    // Did `host` return a wrong result to the coordinator itself?
    let seen_wrong = |host: &Id| seen.iter().any(|(h, r)| h == host && r != first);
    if *first == dispute.reported_result && *first != dispute.accused_result {
        if seen_wrong(&dispute.accused) {
            Ruling::AccusedWrong {
                struck: dispute.accused.clone(),
            }
        } else {
            Ruling::Unconfirmed
        }
    } else if *first == dispute.accused_result && *first != dispute.reported_result {
        // The coordinator must have seen the accused return the referees'
        // result too: otherwise the referees' word stands against what the
        // accused gave the coordinator (or it did not answer), and a retry
        // with other referees decides.
        if !seen
            .iter()
            .any(|(h, r)| *h == dispute.accused && r == first)
        {
            return Ruling::Inconclusive;
        }
        let mut struck = vec![reporter.clone()];
        struck.extend(
            dispute
                .reporter_side
                .iter()
                .filter(|h| seen_wrong(h))
                .cloned(),
        );
        Ruling::ReportFalse { struck }
    } else {
        Ruling::Inconclusive
    }
}

/// Draw `count` ([`REFEREES`]) established hosts from `pool` (usable per
/// `eligible`) whose owners and networks differ from those of `parties` (the
/// accused, the reporter's hosts, the hosts that sided with it) and from each
/// other. Fewer when the pool has not enough.
pub fn pick_referees<O: Eq, N: Eq, R: Rng + ?Sized>(
    pool: &[Listed<O, N>],
    parties: &[usize],
    count: usize,
    eligible: impl Fn(usize) -> bool,
    rng: &mut R,
) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < count {
        // The parties count as already chosen, so referees differ from them by
        // owner and network; newcomers never referee.
        let taken: Vec<usize> = parties.iter().chain(&chosen).copied().collect();
        let unrelated = |i: usize| {
            pool[i].standing == Standing::Established
                && eligible(i)
                && taken.iter().all(|&t| {
                    pool.get(t)
                        .is_none_or(|p| p.owner != pool[i].owner && p.network != pool[i].network)
                })
        };
        match draw(pool, &taken, unrelated, rng) {
            Some(i) => chosen.push(i),
            None => break,
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn dispute() -> Dispute<&'static str, u8> {
        Dispute {
            accused: "honest",
            accused_result: 1,
            reporter_side: vec!["liar1", "liar2"],
            reported_result: 2,
        }
    }

    #[test]
    fn rulings() {
        let d = dispute();
        // What the parties returned to the coordinator itself.
        let liars_repeat: &[(&str, u8)] = &[("honest", 1), ("liar1", 2), ("liar2", 2)];
        let liars_behave: &[(&str, u8)] = &[("honest", 1), ("liar1", 1)];
        let accused_repeats: &[(&str, u8)] = &[("honest", 1)];
        let accused_behaves: &[(&str, u8)] = &[("honest", 2)];
        // (referee results, parties seen, ruling)
        type Seen<'a> = &'a [(&'a str, u8)];
        let cases: Vec<(Vec<u8>, Seen, Ruling<&str>)> = vec![
            // A framing attempt: the reporter claims 2 is right; the
            // referees and the accused say 1. The reporter is struck, and
            // its side only where the coordinator saw it return 2.
            (
                vec![1, 1, 1],
                liars_repeat,
                Ruling::ReportFalse {
                    struck: vec!["member", "liar1", "liar2"],
                },
            ),
            (
                vec![1, 1, 1],
                liars_behave,
                Ruling::ReportFalse {
                    struck: vec!["member"],
                },
            ),
            // The accused gave the coordinator nothing, or not what the
            // referees got: their word alone strikes nobody.
            (vec![1, 1, 1], &[], Ruling::Inconclusive),
            (vec![1, 1, 1], accused_behaves, Ruling::Inconclusive),
            // The referees side with the reporter: the accused is struck
            // only when it returned a wrong result to the coordinator too.
            (
                vec![2, 2, 2],
                accused_repeats,
                Ruling::AccusedWrong { struck: "honest" },
            ),
            (vec![2, 2, 2], accused_behaves, Ruling::Unconfirmed),
            (vec![2, 2, 2], &[], Ruling::Unconfirmed),
            (vec![2, 2, 1], accused_repeats, Ruling::Inconclusive),
            (vec![2, 2], accused_repeats, Ruling::Inconclusive),
            (vec![1], liars_repeat, Ruling::Inconclusive),
            (vec![], liars_repeat, Ruling::Inconclusive),
            (vec![3, 3, 3], liars_repeat, Ruling::Inconclusive),
            (
                vec![2, 2, 2, 2],
                accused_repeats,
                Ruling::AccusedWrong { struck: "honest" },
            ),
        ];
        for (results, seen, want) in cases {
            assert_eq!(
                rule(&d, &"member", &results, seen),
                want,
                "{results:?} {seen:?}"
            );
        }
        // A report whose two sides claim the same result proves nothing.
        let same = Dispute {
            reported_result: 1,
            ..dispute()
        };
        assert_eq!(
            rule(&same, &"member", &[1, 1, 1], liars_repeat),
            Ruling::Inconclusive
        );
        // Two unanimous referees, where asked for.
        assert_eq!(
            rule_with(&d, &"member", &[2, 2], 2, accused_repeats),
            Ruling::AccusedWrong { struck: "honest" }
        );
    }

    #[test]
    fn nobody_is_framed_on_the_reporters_word() {
        // An honest accused returns the right result to the coordinator, and
        // an honest host named as an accomplice too: whatever the report
        // claims, neither is ever struck.
        let d = Dispute {
            accused: "honest",
            accused_result: 9, // the claim: it returned garbage
            reporter_side: vec!["framer", "bystander"],
            reported_result: 1,
        };
        let seen: &[(&str, u8)] = &[("honest", 1), ("bystander", 1), ("framer", 1)];
        for referees in [vec![1u8, 1, 1], vec![9, 9, 9], vec![1, 9, 1], vec![]] {
            let ruling = rule(&d, &"member", &referees, seen);
            let struck: Vec<&str> = match &ruling {
                Ruling::AccusedWrong { struck } => vec![*struck],
                Ruling::ReportFalse { struck } => struck.clone(),
                Ruling::Unconfirmed | Ruling::Inconclusive => vec![],
            };
            assert!(
                !struck.contains(&"honest") && !struck.contains(&"bystander"),
                "{referees:?}: {ruling:?}"
            );
        }
    }

    #[test]
    fn referees_are_established_and_unrelated() {
        use Standing::{Established as E, Probationary as P};
        let l = |owner: u32, network: u32, standing| Listed {
            owner,
            network,
            standing,
            weight: 1,
        };
        let pool = vec![
            l(1, 1, E), // 0: accused
            l(2, 2, E), // 1: reporter's side
            l(1, 3, E), // 2: accused's owner
            l(4, 2, E), // 3: reporter side's network
            l(5, 5, P), // 4: newcomer
            l(6, 6, E), // 5
            l(7, 6, E), // 6: same network as 5
            l(8, 8, E), // 7
            l(9, 9, E), // 8
        ];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let refs = pick_referees(&pool, &[0, 1], REFEREES, |_| true, &mut rng);
            assert_eq!(refs.len(), 3);
            for &r in &refs {
                assert!([5, 6, 7, 8].contains(&r), "{refs:?}");
            }
            assert!(
                !(refs.contains(&5) && refs.contains(&6)),
                "one network once"
            );
        }
        // Too small a pool gives fewer referees, never related ones.
        let refs = pick_referees(&pool[..6], &[0, 1], REFEREES, |_| true, &mut rng);
        assert_eq!(refs, vec![5]);
    }
}
