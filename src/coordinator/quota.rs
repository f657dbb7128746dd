//! Per-identity quotas: token buckets for all signed requests, heartbeats and
//! reports. A signature is cheap to make, so without these one key could make
//! the coordinator write (and fsync) as fast as it can send. Buckets are
//! checked when a request's nonce is admitted, before anything is stored,
//! and a refused request consumes nothing. Pure apart from its mutex: the
//! clock is passed in (the pool's milliseconds).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

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

    /// Tokens per millisecond.
    fn per_ms(self) -> f64 {
        self.n as f64 / self.per.as_millis().max(1) as f64
    }
}

/// What a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuotaKind {
    Request = 0,
    Heartbeat = 1,
    Report = 2,
}

impl QuotaKind {
    /// The `limit` label of the refusal counter.
    pub(super) fn label(self) -> &'static str {
        match self {
            QuotaKind::Request => "requests_per_key",
            QuotaKind::Heartbeat => "heartbeats_per_key",
            QuotaKind::Report => "reports_per_key",
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
    rates: [Rate; 3],
    keys: Mutex<HashMap<IdentityId, [Bucket; 3]>>,
}

impl Quotas {
    pub(super) fn new(requests: Rate, heartbeats: Rate, reports: Rate) -> Quotas {
        Quotas {
            rates: [requests, heartbeats, reports],
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

    fn prune_locked(rates: &[Rate; 3], keys: &mut HashMap<IdentityId, [Bucket; 3]>, now_ms: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> IdentityId {
        IdentityId([b; 32])
    }

    #[test]
    fn burst_then_refill_and_retry_after() {
        let q = Quotas::new(Rate::per_minute(3), Rate::per_minute(0), Rate::per_hour(2));
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
        let q = Quotas::new(Rate::per_minute(10), Rate::per_minute(0), Rate::per_hour(1));
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
        let q = Quotas::new(Rate::per_minute(60), Rate::per_minute(0), Rate::per_hour(1));
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
}
