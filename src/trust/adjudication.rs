//! Deciding a dispute by re-running its evidence, never by counting who
//! complained: the coordinator sends the reported job (the very preprocessed
//! input, canonical arguments and toolchain) to [`REFEREES`] established hosts
//! whose owners and networks are unrelated to everyone in the dispute, and the
//! strike goes to whichever side disagrees with their unanimous result.

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
    /// The referees agree with the reporter: the accused host gets a strike.
    AccusedWrong { struck: Id },
    /// The referees agree with the accused: the report was false. The reporter
    /// and every host that sided with it get a strike (a framing attempt).
    ReportFalse { struck: Vec<Id> },
    /// The referees disagree among themselves, or with both sides, or too few
    /// answered: nobody is struck (the dispute may be retried).
    Inconclusive,
}

/// Rule on `dispute` given the referees' results ([`REFEREES`] are needed).
/// `reporter` is the member that filed the report (struck with its side when
/// the report was false).
pub fn rule<Id: Clone, H: PartialEq>(
    dispute: &Dispute<Id, H>,
    reporter: &Id,
    referee_results: &[H],
) -> Ruling<Id> {
    rule_with(dispute, reporter, referee_results, REFEREES)
}

/// [`rule`] with `needed` unanimous referees instead of [`REFEREES`] (for
/// the simulation's comparison of two and three).
pub fn rule_with<Id: Clone, H: PartialEq>(
    dispute: &Dispute<Id, H>,
    reporter: &Id,
    referee_results: &[H],
    needed: usize,
) -> Ruling<Id> {
    let Some((first, rest)) = referee_results.split_first() else {
        return Ruling::Inconclusive;
    };
    if referee_results.len() < needed.max(1) || rest.iter().any(|r| r != first) {
        return Ruling::Inconclusive;
    }
    if *first == dispute.reported_result && *first != dispute.accused_result {
        Ruling::AccusedWrong {
            struck: dispute.accused.clone(),
        }
    } else if *first == dispute.accused_result && *first != dispute.reported_result {
        let mut struck = vec![reporter.clone()];
        struck.extend(dispute.reporter_side.iter().cloned());
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
        // (referee results, ruling)
        let cases: Vec<(Vec<u8>, Ruling<&str>)> = vec![
            (
                vec![1, 1, 1],
                Ruling::ReportFalse {
                    struck: vec!["member", "liar1", "liar2"],
                },
            ),
            (vec![2, 2, 2], Ruling::AccusedWrong { struck: "honest" }),
            (vec![2, 2, 1], Ruling::Inconclusive),
            (vec![2, 2], Ruling::Inconclusive),
            (vec![1], Ruling::Inconclusive),
            (vec![], Ruling::Inconclusive),
            (vec![3, 3, 3], Ruling::Inconclusive),
            (vec![2, 2, 2, 2], Ruling::AccusedWrong { struck: "honest" }),
        ];
        for (results, want) in cases {
            assert_eq!(rule(&d, &"member", &results), want, "{results:?}");
        }
        // A report whose two sides claim the same result proves nothing.
        let same = Dispute {
            reported_result: 1,
            ..dispute()
        };
        assert_eq!(rule(&same, &"member", &[1, 1, 1]), Ruling::Inconclusive);
        // Two unanimous referees, where asked for.
        assert_eq!(
            rule_with(&d, &"member", &[2, 2], 2),
            Ruling::AccusedWrong { struck: "honest" }
        );
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
