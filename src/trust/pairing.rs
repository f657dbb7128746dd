//! Which hosts vote on a job: drawn at random by the client, so that nobody
//! (not the coordinator's list order, not a host) chooses a pair.
//!
//! A job's voters never share an owner or a network (IPv4 /24, IPv6 /48), and
//! at most one of them is probationary: an attacker's fresh keys can never
//! make up a pair on their own, and hosts it runs in one network count once.
//! Faster hosts are drawn more often, but at most [`MAX_SPEED_WEIGHT`] times
//! as often as the slowest, so that speed cannot buy an attacker more than a
//! bounded share of the draws.

use rand::Rng;

use super::standing::Standing;

/// The most weight speed can give a host over the slowest one.
pub const MAX_SPEED_WEIGHT: u32 = 4;

/// A host of the signed list, as a draw sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<O, N> {
    pub owner: O,
    pub network: N,
    pub standing: Standing,
    /// 1 ..= [`MAX_SPEED_WEIGHT`] ([`speed_weight`]).
    pub weight: u32,
}

/// May `candidate` vote beside the hosts already `chosen` for a job?
pub fn may_join<O: Eq, N: Eq>(chosen: &[&Listed<O, N>], candidate: &Listed<O, N>) -> bool {
    chosen
        .iter()
        .all(|c| c.owner != candidate.owner && c.network != candidate.network)
        && !(candidate.standing == Standing::Probationary
            && chosen.iter().any(|c| c.standing == Standing::Probationary))
}

/// Draw one more voter for a job at random, weighted by speed, among the hosts
/// `eligible` says are usable now (free slot, not backed off) that
/// [`may_join`] the `chosen` ones. `None` when no host qualifies.
pub fn draw<O: Eq, N: Eq, R: Rng + ?Sized>(
    list: &[Listed<O, N>],
    chosen: &[usize],
    eligible: impl Fn(usize) -> bool,
    rng: &mut R,
) -> Option<usize> {
    let picked: Vec<&Listed<O, N>> = chosen.iter().filter_map(|&i| list.get(i)).collect();
    let open: Vec<(usize, u32)> = list
        .iter()
        .enumerate()
        .filter(|(i, l)| !chosen.contains(i) && eligible(*i) && may_join(&picked, l))
        .map(|(i, l)| (i, l.weight.clamp(1, MAX_SPEED_WEIGHT)))
        .collect();
    let total: u64 = open.iter().map(|&(_, w)| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = rng.gen_range(0..total);
    for (i, w) in open {
        if ticket < u64::from(w) {
            return Some(i);
        }
        ticket -= u64::from(w);
    }
    None
}

/// A host's weight from this client's measurements: the mean seconds it took
/// per job against the fastest host's, clamped to 1 ..= [`MAX_SPEED_WEIGHT`].
/// Unmeasured hosts get the middle weight, so they are tried.
pub fn speed_weight(mean_secs: Option<f64>, fastest_secs: f64) -> u32 {
    let Some(mean) = mean_secs.filter(|m| m.is_finite() && *m > 0.0) else {
        return MAX_SPEED_WEIGHT.div_ceil(2);
    };
    if !(fastest_secs.is_finite() && fastest_secs > 0.0) {
        return MAX_SPEED_WEIGHT.div_ceil(2);
    }
    let w = (f64::from(MAX_SPEED_WEIGHT) * fastest_secs / mean).round();
    (w as u32).clamp(1, MAX_SPEED_WEIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use Standing::{Established as E, Probationary as P};

    fn host(owner: u32, network: u32, standing: Standing) -> Listed<u32, u32> {
        Listed {
            owner,
            network,
            standing,
            weight: 1,
        }
    }

    #[test]
    fn join_rules() {
        let a = host(1, 1, E);
        let fresh = host(2, 2, P);
        // Table: (already chosen, candidate, may join)
        type Case<'a> = (Vec<&'a Listed<u32, u32>>, Listed<u32, u32>, bool);
        let cases: Vec<Case> = vec![
            (vec![], host(9, 9, P), true),
            (vec![&a], host(2, 2, E), true),
            (vec![&a], host(1, 2, E), false),     // same owner
            (vec![&a], host(2, 1, E), false),     // same network
            (vec![&a], host(2, 2, P), true),      // one newcomer beside an established host
            (vec![&fresh], host(3, 3, P), false), // two newcomers never pair
            (vec![&fresh], host(3, 3, E), true),
            (vec![&a, &fresh], host(3, 3, P), false),
        ];
        for (n, (chosen, cand, want)) in cases.into_iter().enumerate() {
            assert_eq!(may_join(&chosen, &cand), want, "case {n}");
        }
    }

    #[test]
    fn draw_respects_eligibility_and_is_random() {
        let list: Vec<_> = (0..6).map(|i| host(i, i, E)).collect();
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            let i = draw(&list, &[0], |i| i != 5, &mut rng).unwrap();
            assert!(i != 0 && i != 5);
            seen[i] += 1;
        }
        // Four hosts, drawn uniformly: each about 1500 times.
        for (i, &n) in seen.iter().enumerate().take(5).skip(1) {
            assert!((1300..1700).contains(&n), "host {i} drawn {n} times");
        }
        assert_eq!(draw(&list, &[0], |_| false, &mut rng), None);
    }

    #[test]
    fn weights_are_bounded() {
        let mut list: Vec<_> = (0..2).map(|i| host(i, i, E)).collect();
        list[0].weight = 1000; // claims to be very fast: clamped to 4
        let mut rng = StdRng::seed_from_u64(1);
        let fast = (0..10_000)
            .filter(|_| draw(&list, &[], |_| true, &mut rng) == Some(0))
            .count();
        // 4 : 1 → 80 %.
        assert!((7700..8300).contains(&fast), "{fast}");
        assert_eq!(speed_weight(Some(1.0), 1.0), MAX_SPEED_WEIGHT);
        assert_eq!(speed_weight(Some(100.0), 1.0), 1);
        assert_eq!(speed_weight(Some(2.0), 1.0), 2);
        assert_eq!(speed_weight(None, 1.0), 2);
        assert_eq!(speed_weight(Some(f64::NAN), 1.0), 2);
        assert_eq!(speed_weight(Some(1.0), 0.0), 2);
    }

    proptest::proptest! {
        /// However the list looks, a job's voters drawn one after another never
        /// share an owner or a network, and never include two newcomers.
        #[test]
        fn voters_are_always_distinct(
            hosts in proptest::collection::vec((0u8..6, 0u8..6, proptest::bool::ANY, 1u32..6), 0..30),
            seed in proptest::num::u64::ANY,
            n in 1usize..5,
        ) {
            let list: Vec<Listed<u8, u8>> = hosts
                .iter()
                .map(|&(o, net, est, w)| Listed {
                    owner: o,
                    network: net,
                    standing: if est { E } else { P },
                    weight: w,
                })
                .collect();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut chosen = Vec::new();
            while chosen.len() < n {
                match draw(&list, &chosen, |_| true, &mut rng) {
                    Some(i) => chosen.push(i),
                    None => break,
                }
            }
            for (x, &a) in chosen.iter().enumerate() {
                for &b in &chosen[x + 1..] {
                    proptest::prop_assert!(list[a].owner != list[b].owner);
                    proptest::prop_assert!(list[a].network != list[b].network);
                    proptest::prop_assert!(!(list[a].standing == P && list[b].standing == P));
                }
            }
        }
    }
}
