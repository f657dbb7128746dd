//! Token buckets. Per identity ([`Quotas`]): all signed requests, heartbeats
//! and reports. A signature is cheap to make, so without these one key could
//! make the coordinator write (and fsync) as fast as it can send. Buckets are
//! checked when a request's nonce is admitted, before anything is stored,
//! and a refused request consumes nothing. Per network ([`NewHostQuota`]):
//! new host identities, since keys are free but networks are not. Pure apart
//! from their mutexes: the clock is passed in (the pool's milliseconds).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use super::pool::NetKey;
use super::units::{duration_text, parse_duration, unit_secs};
use crate::network::identity::IdentityId;

/// `n` per `per`, with a burst of `n`; `n == 0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub per: Duration,
}

impl Rate {
    pub const fn per_minute(n: u32) -> Rate {
        Rate {
            n,
            per: Duration::from_secs(60),
        }
    }

    pub const fn per_hour(n: u32) -> Rate {
        Rate {
            n,
            per: Duration::from_secs(3600),
        }
    }

    pub const fn per_day(n: u32) -> Rate {
        Rate {
            n,
            per: Duration::from_secs(24 * 3600),
        }
    }

    /// Tokens per millisecond.
    fn per_ms(self) -> f64 {
        self.n as f64 / self.per.as_millis().max(1) as f64
    }
}

/// `N/PERIOD` as the command line writes it: `4/day`, `32/d`, `10/12h`,
/// `120/min`; `0` (or `0/anything`) for no limit.
impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let s = s.trim();
        let (n, period) = s.split_once('/').unwrap_or((s, "s"));
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not N/PERIOD like 4/day (0 for no limit)"))?;
        let period = period.trim();
        let per = match unit_secs(period) {
            Some(secs) => Duration::from_secs(secs),
            None => parse_duration(period)?,
        };
        if n > 0 && per.is_zero() {
            return Err(format!("{s:?}: the period must be longer than 0"));
        }
        Ok(Rate { n, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.per.as_secs() {
            86400 => "day".to_string(),
            3600 => "hour".to_string(),
            60 => "min".to_string(),
            _ => duration_text(self.per),
        };
        write!(f, "{}/{per}", self.n)
    }
}

/// What a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuotaKind {
    Request = 0,
    Heartbeat = 1,
    Report = 2,
    /// Cache lookups, one per job of a build: their own, larger budget
    /// instead of the requests'.
    Lookup = 3,
}

impl QuotaKind {
    /// The `limit` label of the refusal counter.
    pub(super) fn label(self) -> &'static str {
        match self {
            QuotaKind::Request => "requests_per_key",
            QuotaKind::Heartbeat => "heartbeats_per_key",
            QuotaKind::Report => "reports_per_key",
            QuotaKind::Lookup => "lookups_per_key",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    fn full(rate: Rate, now_ms: u64) -> Bucket {
        Bucket {
            tokens: rate.n as f64,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: Rate, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.last_ms) as f64;
        self.tokens = (self.tokens + dt * rate.per_ms()).min(rate.n as f64);
        self.last_ms = now_ms.max(self.last_ms);
    }

    /// Whole seconds until one token is there (at least 1).
    fn wait_secs(&self, rate: Rate) -> u64 {
        // Milliseconds per token, not the reciprocal of tokens per ms: exact
        // for whole periods.
        let ms_per_token = rate.per.as_millis() as f64 / rate.n.max(1) as f64;
        let ms = (1.0 - self.tokens).max(0.0) * ms_per_token;
        ((ms / 1000.0).ceil() as u64).max(1)
    }
}

/// Keys tracked at most; past it, idle keys are dropped, and if none is idle
/// new keys are refused until some are (bounds memory under a flood of fresh keys).
const MAX_TRACKED_KEYS: usize = 1_000_000;

/// Why a request was refused: the quota it ran out of (`None`: too many keys
/// are being tracked) and the seconds until it may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OverQuota {
    pub(super) kind: Option<QuotaKind>,
    pub(super) retry_after_secs: u64,
}

pub(super) struct Quotas {
    rates: [Rate; 4],
    keys: Mutex<HashMap<IdentityId, [Bucket; 4]>>,
}

impl Quotas {
    pub(super) fn new(requests: Rate, heartbeats: Rate, reports: Rate, lookups: Rate) -> Quotas {
        Quotas {
            rates: [requests, heartbeats, reports, lookups],
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Spend one token of each of `kinds` for `id`, or none if any is empty.
    pub(super) fn admit(
        &self,
        id: &IdentityId,
        kinds: &[QuotaKind],
        now_ms: u64,
    ) -> Result<(), OverQuota> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if !keys.contains_key(id) && keys.len() >= MAX_TRACKED_KEYS {
            Self::prune_locked(&self.rates, &mut keys, now_ms);
            if keys.len() >= MAX_TRACKED_KEYS {
                return Err(OverQuota {
                    kind: None,
                    retry_after_secs: 60,
                });
            }
        }
        let rates = self.rates;
        let buckets = keys
            .entry(*id)
            .or_insert_with(|| rates.map(|r| Bucket::full(r, now_ms)));
        for &k in kinds {
            let (rate, b) = (rates[k as usize], &mut buckets[k as usize]);
            if rate.n == 0 {
                continue;
            }
            b.refill(rate, now_ms);
            if b.tokens < 1.0 {
                return Err(OverQuota {
                    kind: Some(k),
                    retry_after_secs: b.wait_secs(rate),
                });
            }
        }
        for &k in kinds {
            if rates[k as usize].n > 0 {
                buckets[k as usize].tokens -= 1.0;
            }
        }
        Ok(())
    }

    /// Forget keys whose buckets have all refilled: they are as good as new.
    pub(super) fn prune(&self, now_ms: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Self::prune_locked(&self.rates, &mut keys, now_ms);
    }

    fn prune_locked(rates: &[Rate; 4], keys: &mut HashMap<IdentityId, [Bucket; 4]>, now_ms: u64) {
        keys.retain(|_, buckets| {
            buckets.iter_mut().zip(rates).any(|(b, r)| {
                b.refill(*r, now_ms);
                b.tokens < r.n as f64
            })
        });
    }

    pub(super) fn tracked_keys(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A wide network: an IPv4 /16 or an IPv6 /32 (a provider's block rather
/// than one customer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct WideNet(u64);

impl WideNet {
    pub(super) fn of(ip: IpAddr) -> WideNet {
        match ip {
            IpAddr::V4(v4) => WideNet((4 << 56) | u64::from(u32::from(v4) >> 16)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => WideNet::of(IpAddr::V4(v4)),
                None => WideNet((6 << 56) | (u128::from(v6) >> 96) as u64),
            },
        }
    }

    pub(super) fn display(self) -> String {
        let v = self.0 & 0xffff_ffff;
        if self.0 >> 56 == 4 {
            format!("{}.{}.0.0/16", v >> 8, v & 0xff)
        } else {
            format!("{:x}:{:x}::/32", v >> 16, v & 0xffff)
        }
    }
}

/// Why a new host identity was refused: the network whose quota it ran out
/// of, that quota, and the seconds until one more may register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewHostRefusal {
    pub(super) network: String,
    pub(super) rate: Rate,
    /// `--new-hosts-per-wide-network` rather than `--new-hosts-per-network`.
    pub(super) wide: bool,
    pub(super) retry_after_secs: u64,
}

/// New host identities per network (/24, IPv6 /48) and per wide network
/// (/16, IPv6 /32): a bucket each, spent together or not at all. Entries
/// exist only for networks that registered hosts recently (a full bucket is
/// forgotten by [`NewHostQuota::prune`]).
pub(super) struct NewHostQuota {
    narrow: Rate,
    wide: Rate,
    buckets: Mutex<(HashMap<NetKey, Bucket>, HashMap<WideNet, Bucket>)>,
}

impl NewHostQuota {
    pub(super) fn new(narrow: Rate, wide: Rate) -> NewHostQuota {
        NewHostQuota {
            narrow,
            wide,
            buckets: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    /// Spend one registration from `ip`'s network and wide network, or none.
    pub(super) fn admit(&self, ip: IpAddr, now_ms: u64) -> Result<(), NewHostRefusal> {
        let (net, wide) = (NetKey::of(ip), WideNet::of(ip));
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (narrow_map, wide_map) = &mut *guard;
        let mut checks: Vec<(&mut Bucket, Rate, bool, String)> = Vec::with_capacity(2);
        if self.narrow.n > 0 {
            let b = narrow_map
                .entry(net)
                .or_insert_with(|| Bucket::full(self.narrow, now_ms));
            checks.push((b, self.narrow, false, net.display()));
        }
        if self.wide.n > 0 {
            let b = wide_map
                .entry(wide)
                .or_insert_with(|| Bucket::full(self.wide, now_ms));
            checks.push((b, self.wide, true, wide.display()));
        }
        for (b, rate, is_wide, network) in checks.iter_mut() {
            b.refill(*rate, now_ms);
            if b.tokens < 1.0 {
                return Err(NewHostRefusal {
                    network: std::mem::take(network),
                    rate: *rate,
                    wide: *is_wide,
                    retry_after_secs: b.wait_secs(*rate),
                });
            }
        }
        for (b, ..) in checks {
            b.tokens -= 1.0;
        }
        Ok(())
    }

    /// At start: hosts first registered from `ip` `age` ago still count
    /// against its buckets when `age` is within a bucket's period, so a
    /// restart does not hand out a fresh day's worth of registrations. (Spent
    /// as if just now: a little stricter than the uninterrupted bucket.)
    pub(super) fn spend_before_start(&self, ip: IpAddr, age: Duration) {
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (narrow_map, wide_map) = &mut *guard;
        if self.narrow.n > 0 && age < self.narrow.per {
            let b = narrow_map
                .entry(NetKey::of(ip))
                .or_insert_with(|| Bucket::full(self.narrow, 0));
            b.tokens = (b.tokens - 1.0).max(0.0);
        }
        if self.wide.n > 0 && age < self.wide.per {
            let b = wide_map
                .entry(WideNet::of(ip))
                .or_insert_with(|| Bucket::full(self.wide, 0));
            b.tokens = (b.tokens - 1.0).max(0.0);
        }
    }

    /// The longer of the two periods: registrations older than this no
    /// longer count.
    pub(super) fn memory(&self) -> Duration {
        self.narrow.per.max(self.wide.per)
    }

    /// Forget networks whose buckets have refilled.
    pub(super) fn prune(&self, now_ms: u64) {
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (narrow_map, wide_map) = &mut *guard;
        narrow_map.retain(|_, b| {
            b.refill(self.narrow, now_ms);
            b.tokens < self.narrow.n as f64
        });
        wide_map.retain(|_, b| {
            b.refill(self.wide, now_ms);
            b.tokens < self.wide.n as f64
        });
    }

    /// Networks and wide networks tracked now.
    pub(super) fn tracked(&self) -> usize {
        let guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.len() + guard.1.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> IdentityId {
        IdentityId([b; 32])
    }

    #[test]
    fn burst_then_refill_and_retry_after() {
        let q = Quotas::new(
            Rate::per_minute(3),
            Rate::per_minute(0),
            Rate::per_hour(2),
            Rate::per_minute(0),
        );
        let r = [QuotaKind::Request];
        for _ in 0..3 {
            q.admit(&id(1), &r, 0).unwrap();
        }
        let e = q.admit(&id(1), &r, 0).unwrap_err();
        assert_eq!(e.kind, Some(QuotaKind::Request));
        assert_eq!(e.retry_after_secs, 20, "one token per 20 s");
        q.admit(&id(2), &r, 0)
            .expect("another key has its own bucket");
        q.admit(&id(1), &r, 20_000).expect("refilled after 20 s");
        assert!(q.admit(&id(1), &r, 20_001).is_err());
    }

    #[test]
    fn a_refusal_spends_nothing() {
        let q = Quotas::new(
            Rate::per_minute(10),
            Rate::per_minute(0),
            Rate::per_hour(1),
            Rate::per_minute(0),
        );
        let both = [QuotaKind::Request, QuotaKind::Report];
        q.admit(&id(1), &both, 0).unwrap();
        for _ in 0..20 {
            let e = q.admit(&id(1), &both, 0).unwrap_err();
            assert_eq!(e.kind, Some(QuotaKind::Report));
            assert_eq!(e.retry_after_secs, 3600);
        }
        // The refused reports did not spend request tokens: 9 are left.
        for _ in 0..9 {
            q.admit(&id(1), &[QuotaKind::Request], 0).unwrap();
        }
        assert!(q.admit(&id(1), &[QuotaKind::Request], 0).is_err());
    }

    #[test]
    fn zero_is_unlimited_and_idle_keys_are_forgotten() {
        let q = Quotas::new(
            Rate::per_minute(60),
            Rate::per_minute(0),
            Rate::per_hour(1),
            Rate::per_minute(0),
        );
        for _ in 0..1000 {
            q.admit(&id(1), &[QuotaKind::Heartbeat], 0).unwrap();
        }
        q.admit(&id(2), &[QuotaKind::Request], 0).unwrap();
        assert_eq!(q.tracked_keys(), 2);
        q.prune(500);
        assert_eq!(
            q.tracked_keys(),
            1,
            "key 1 spent nothing limited; key 2 has not refilled"
        );
        q.prune(1000);
        assert_eq!(q.tracked_keys(), 0);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rates_parse_and_print() {
        let day = Rate::per_day(4);
        assert_eq!("4/day".parse::<Rate>().unwrap(), day);
        assert_eq!("4/d".parse::<Rate>().unwrap(), day);
        assert_eq!("4/24h".parse::<Rate>().unwrap(), day);
        assert_eq!(day.to_string(), "4/day");
        assert_eq!(Rate::per_hour(60).to_string(), "60/hour");
        let odd: Rate = "10/12h".parse().unwrap();
        assert_eq!(odd.per, Duration::from_secs(12 * 3600));
        assert_eq!(odd.to_string(), "10/12h");
        assert_eq!(odd.to_string().parse::<Rate>().unwrap(), odd);
        assert_eq!("0".parse::<Rate>().unwrap().n, 0);
        for bad in ["", "x/day", "4/fortnight", "4/0s", "-1/day"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wide_networks() {
        assert_eq!(WideNet::of(ip("10.1.2.3")), WideNet::of(ip("10.1.200.9")));
        assert_ne!(WideNet::of(ip("10.1.2.3")), WideNet::of(ip("10.2.2.3")));
        assert_eq!(WideNet::of(ip("10.1.2.3")).display(), "10.1.0.0/16");
        assert_eq!(
            WideNet::of(ip("::ffff:10.1.2.3")),
            WideNet::of(ip("10.1.9.9"))
        );
        assert_eq!(WideNet::of(ip("2001:db8:5::1")).display(), "2001:db8::/32");
        assert_eq!(
            WideNet::of(ip("2001:db8:5::1")),
            WideNet::of(ip("2001:db8:ffff::1"))
        );
    }

    #[test]
    fn new_hosts_per_network_and_per_wide_network() {
        let q = NewHostQuota::new(Rate::per_day(2), Rate::per_day(3));
        q.admit(ip("10.1.1.1"), 0).unwrap();
        q.admit(ip("10.1.1.2"), 0).unwrap();
        let e = q.admit(ip("10.1.1.3"), 0).unwrap_err();
        assert_eq!(e.network, "10.1.1.0/24");
        assert!(!e.wide);
        assert_eq!(e.retry_after_secs, 12 * 3600, "one a half day");
        // Another /24 of the same /16: one more, then the /16 is full.
        q.admit(ip("10.1.2.1"), 0).unwrap();
        let e = q.admit(ip("10.1.3.1"), 0).unwrap_err();
        assert!(e.wide, "{e:?}");
        assert_eq!(e.network, "10.1.0.0/16");
        // The refusals spent nothing: 10.1.3.0/24 still has both its tokens
        // once the /16 refills one.
        q.admit(ip("10.1.3.1"), (8 * 3600 + 1) * 1000).unwrap();
        // Elsewhere is untouched.
        q.admit(ip("10.9.0.1"), 0).unwrap();
        // Unlimited.
        let free = NewHostQuota::new(Rate::per_day(0), Rate::per_day(0));
        for _ in 0..100 {
            free.admit(ip("10.1.1.1"), 0).unwrap();
        }
        assert_eq!(free.tracked(), 0);
    }

    #[test]
    fn registrations_before_a_restart_still_count() {
        let q = NewHostQuota::new(Rate::per_day(2), Rate::per_day(32));
        q.spend_before_start(ip("10.1.1.0"), Duration::from_secs(3600));
        q.spend_before_start(ip("10.1.1.0"), Duration::from_secs(2 * 86400));
        q.admit(ip("10.1.1.7"), 0).unwrap();
        assert!(
            q.admit(ip("10.1.1.8"), 0).is_err(),
            "one left after the restart"
        );
        q.prune(0);
        assert_eq!(q.tracked(), 2, "spent buckets are kept");
        q.prune(3 * 86400 * 1000);
        assert_eq!(q.tracked(), 0, "refilled buckets are forgotten");
    }
}
