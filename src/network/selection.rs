//! Choosing hosts so that no owner and, where possible, no network appears
//! twice: the rule the coordinator applies to host lists and members apply when
//! they order them. Pure.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;

/// A /24 (IPv4) or /48 (IPv6) network, compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetKey(u64);

impl NetKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                NetKey(
                    (4u64 << 56)
                        | (u64::from(o[0]) << 16)
                        | (u64::from(o[1]) << 8)
                        | u64::from(o[2]),
                )
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Self::of(IpAddr::V4(v4));
                }
                let s = v6.segments();
                NetKey(
                    (6u64 << 56)
                        | (u64::from(s[0]) << 32)
                        | (u64::from(s[1]) << 16)
                        | u64::from(s[2]),
                )
            }
        }
    }

    pub fn display(&self) -> String {
        let v = self.0;
        if v >> 56 == 4 {
            format!("{}.{}.{}.0/24", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
        } else {
            format!(
                "{:x}:{:x}:{:x}::/48",
                (v >> 32) & 0xffff,
                (v >> 16) & 0xffff,
                v & 0xffff
            )
        }
    }
}

/// Choose and order up to `limit` of `items` (given in preference order) for
/// one user's host list.
///
/// * At most one host per owner: a client pairs any two hosts of its list on a
///   job, so two hosts of one owner must never both be in it.
/// * Hosts on networks not yet used come first (in preference order); hosts on
///   an already used network follow (a pool on one LAN, or 127.0.0.x, still
///   yields a usable list), ordered so neighbours differ in network where the
///   list allows it.
pub fn arrange<T, O: PartialEq + Eq + Hash, N: PartialEq + Eq + Hash>(
    items: Vec<T>,
    key: impl Fn(&T) -> (O, N),
    limit: usize,
) -> Vec<T> {
    let mut owners = HashSet::new();
    let mut nets = HashSet::new();
    let mut distinct: Vec<T> = Vec::new();
    let mut later: Vec<Option<T>> = Vec::new();
    // A first pass picks the fully distinct hosts, so a host on a used network
    // never takes the owner slot of a later, fully distinct host of that owner.
    let mut held: Vec<Option<T>> = items.into_iter().map(Some).collect();
    for slot in held.iter_mut() {
        let Some(it) = slot.as_ref() else { continue };
        let (o, n) = key(it);
        if distinct.len() < limit && !owners.contains(&o) && !nets.contains(&n) {
            owners.insert(o);
            nets.insert(n);
            if let Some(it) = slot.take() {
                distinct.push(it);
            }
        }
    }
    for it in held.into_iter().flatten() {
        let (o, _) = key(&it);
        if owners.insert(o) {
            later.push(Some(it));
        }
    }
    let mut out = distinct;
    while out.len() < limit {
        let pick = later
            .iter()
            .position(|it| match (it, out.last()) {
                (Some(it), Some(last)) => key(it).1 != key(last).1,
                (Some(_), None) => true,
                (None, _) => false,
            })
            .or_else(|| later.iter().position(Option::is_some));
        match pick.and_then(|i| later[i].take()) {
            Some(it) => out.push(it),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn netkey_groups_slash24() {
        assert_eq!(NetKey::of(ip(10, 1, 2, 3)), NetKey::of(ip(10, 1, 2, 200)));
        assert_ne!(NetKey::of(ip(10, 1, 2, 3)), NetKey::of(ip(10, 1, 3, 3)));
        assert_eq!(NetKey::of(ip(10, 1, 2, 3)).display(), "10.1.2.0/24");
        let v6: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:ffff::9".parse().unwrap();
        assert_eq!(NetKey::of(v6), NetKey::of(v6b));
        assert_eq!(NetKey::of(v6).display(), "2001:db8:1::/48");
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(NetKey::of(mapped), NetKey::of(ip(10, 1, 2, 9)));
    }

    #[test]
    fn arrange_one_per_owner_distinct_networks_first() {
        // (owner, net)
        let items = vec![(1, 1), (1, 2), (2, 1), (3, 3), (1, 1), (4, 4), (5, 3)];
        let out = arrange(items, |x| *x, 10);
        assert_eq!(&out[..3], &[(1, 1), (3, 3), (4, 4)]);
        assert_eq!(&out[3..], &[(2, 1), (5, 3)], "{out:?}");
        let limited = arrange(vec![(1, 1), (2, 2), (3, 3)], |x| *x, 2);
        assert_eq!(limited, vec![(1, 1), (2, 2)]);
        // One owner only: a single host is handed out.
        let same = arrange(vec![(1, 1), (1, 2), (1, 3)], |x| *x, 10);
        assert_eq!(same.len(), 1);
        // One network (a LAN, or 127.0.0.x): every owner still gets a place.
        let lan = arrange(vec![(1, 7), (2, 7), (3, 7)], |x| *x, 10);
        assert_eq!(lan, vec![(1, 7), (2, 7), (3, 7)]);
        // A later fully distinct host of an owner wins over its earlier host on a
        // used network.
        let pref = arrange(vec![(1, 1), (2, 1), (2, 2)], |x| *x, 10);
        assert_eq!(pref, vec![(1, 1), (2, 2)]);
    }

    proptest::proptest! {
        #[test]
        fn arrange_properties(items in proptest::collection::vec((0u8..5, 0u8..5), 0..40), limit in 1usize..12) {
            let out = arrange(items.clone(), |x| *x, limit);
            proptest::prop_assert!(out.len() <= limit);
            let owners_out: HashSet<u8> = out.iter().map(|x| x.0).collect();
            proptest::prop_assert_eq!(owners_out.len(), out.len(), "one host per owner");
            let owners_in: HashSet<u8> = items.iter().map(|x| x.0).collect();
            proptest::prop_assert_eq!(out.len(), owners_in.len().min(limit), "every owner placed up to the limit");
            // Every output item came from the input (multiset).
            let mut pool = items.clone();
            for o in &out {
                let pos = pool.iter().position(|x| x == o);
                proptest::prop_assert!(pos.is_some());
                pool.remove(pos.unwrap());
            }
            // If the input holds k fully distinct items, at least min(k, limit) are
            // handed out as a fully distinct prefix.
            let mut owners = HashSet::new();
            let mut nets = HashSet::new();
            let mut k = 0;
            for (o, n) in &items {
                if !owners.contains(o) && !nets.contains(n) { owners.insert(*o); nets.insert(*n); k += 1; }
            }
            proptest::prop_assert!(out.len() >= k.min(limit));
        }
    }
}
