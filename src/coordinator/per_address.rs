//! Connections per client address: besides the global cap, one address (an
//! IPv4 address, or an IPv6 /64, which one machine usually owns whole) may hold
//! only so many connections at once, so a single machine cannot take every
//! slot and lock honest clients out. Entries exist only while connections are
//! held, so the map is bounded by the global connection cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which connections count together: an IPv4 address (IPv4-mapped IPv6
/// included) or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum AddressKey {
    V4(u32),
    V6Prefix64(u64),
}

impl AddressKey {
    pub(super) fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => AddressKey::V6Prefix64((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Connections held per [`AddressKey`].
pub(super) struct AddressSlots {
    cap: usize,
    held: Mutex<HashMap<AddressKey, usize>>,
}

/// One connection's place in its address's count; given back when dropped.
pub(super) struct AddressSlot {
    slots: Arc<AddressSlots>,
    key: AddressKey,
}

impl AddressSlots {
    pub(super) fn new(cap: usize) -> Arc<AddressSlots> {
        Arc::new(AddressSlots {
            cap,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when its address holds
    /// the cap already.
    pub(super) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = AddressKey::of(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            slots: self.clone(),
            key,
        })
    }

    /// Distinct addresses holding a connection now.
    pub(super) fn addresses(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_groups_by_64_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::of(a), AddressKey::of(b));
        assert_ne!(AddressKey::of(a), AddressKey::of(c));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            AddressKey::of(m),
            AddressKey::of("10.0.0.1".parse().unwrap())
        );
        assert_ne!(
            AddressKey::of("10.0.0.1".parse().unwrap()),
            AddressKey::of("10.0.0.2".parse().unwrap())
        );
    }

    #[test]
    fn cap_per_address_and_release_on_drop() {
        let slots = AddressSlots::new(2);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        let a = slots.try_acquire(ip).unwrap();
        let _b = slots.try_acquire(ip).unwrap();
        assert!(slots.try_acquire(ip).is_none(), "third from one address");
        assert!(
            slots.try_acquire(other).is_some(),
            "another address is served"
        );
        drop(a);
        assert!(slots.try_acquire(ip).is_some(), "a slot comes back");
        drop(_b);
        assert_eq!(slots.addresses(), 0, "no entry outlives its connections");
    }
}
