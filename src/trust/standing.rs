//! A host's standing: probationary until verified work over time makes it
//! established. Only the coordinator's own observations count (challenge jobs
//! it checked, agreements with established hosts that it adjudicated or that
//! members reported as verified, age): nothing a host or its friends say.

use serde::{Deserialize, Serialize};

/// What it takes to become established. The defaults are for a real network:
/// an attacker must run a host honestly for two weeks, pass 30 challenge jobs
/// and agree 200 times with established hosts before the host may be paired
/// with another newcomer's opposite, vote as a referee or count as a reporter.
/// Tests and small networks set them low (`dportage coordinator --establish-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingRules {
    /// Challenge jobs passed.
    pub challenges: u32,
    /// Verified agreements with established hosts.
    pub agreements: u32,
    /// Seconds since the identity first registered.
    pub min_age_secs: u64,
}

impl StandingRules {
    /// Every host established from its first heartbeat: for a private
    /// network of known hosts (and tests), never for strangers.
    pub const AT_ONCE: StandingRules = StandingRules {
        challenges: 0,
        agreements: 0,
        min_age_secs: 0,
    };
}

impl Default for StandingRules {
    fn default() -> Self {
        StandingRules {
            challenges: 30,
            agreements: 200,
            min_age_secs: 14 * 24 * 3600,
        }
    }
}

/// The coordinator's record of one host identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Unix seconds of the first registration.
    pub registered_at: u64,
    pub challenges_passed: u32,
    pub challenges_failed: u32,
    /// Consecutive challenges failed or unanswered (a pass resets it).
    pub challenges_failed_in_a_row: u32,
    /// Unix seconds of the last challenge passed, 0 if none.
    pub last_passed_at: u64,
    /// Verified agreements with established hosts.
    pub agreements: u32,
    /// Adjudications lost.
    pub strikes: u32,
    /// The operator vouched for this host (`dportage coordinator vouch`).
    pub vouched: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// What an unknown or old peer's entry means: the cautious side.
    #[default]
    Probationary,
    Established,
}

impl Standing {
    pub fn name(self) -> &'static str {
        match self {
            Standing::Probationary => "probationary",
            Standing::Established => "established",
        }
    }

    pub fn is_established(self) -> bool {
        self == Standing::Established
    }
}

impl StandingRules {
    /// The standing `record` has at `now` (unix seconds). A strike loses it
    /// for good: a host that lost an adjudication is blacklisted anyway, and a
    /// lifted one starts over under a new record.
    pub fn standing(&self, record: &HostRecord, now: u64) -> Standing {
        if record.strikes > 0 {
            return Standing::Probationary;
        }
        if record.vouched {
            return Standing::Established;
        }
        let old_enough = now.saturating_sub(record.registered_at) >= self.min_age_secs;
        if old_enough
            && record.challenges_passed >= self.challenges
            && record.agreements >= self.agreements
        {
            Standing::Established
        } else {
            Standing::Probationary
        }
    }
}

/// When an address stops being a member: it failed or did not answer this
/// many challenges in a row.
pub const CHALLENGE_FAILURES_TO_DROP: u32 = 2;

/// Membership is proven service: a host is listed only once it has passed a
/// challenge job at the address it advertises, and not after
/// [`CHALLENGE_FAILURES_TO_DROP`] failures in a row.
pub fn serves(record: &HostRecord) -> bool {
    record.challenges_passed > 0 && record.challenges_failed_in_a_row < CHALLENGE_FAILURES_TO_DROP
}

impl HostRecord {
    pub fn new(registered_at: u64) -> Self {
        HostRecord {
            registered_at,
            ..HostRecord::default()
        }
    }

    pub fn challenge_passed(&mut self, now: u64) {
        self.challenges_passed = self.challenges_passed.saturating_add(1);
        self.challenges_failed_in_a_row = 0;
        self.last_passed_at = now;
    }

    pub fn challenge_failed(&mut self) {
        self.challenges_failed = self.challenges_failed.saturating_add(1);
        self.challenges_failed_in_a_row = self.challenges_failed_in_a_row.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    #[test]
    fn standing_needs_challenges_agreements_and_age() {
        let rules = StandingRules {
            challenges: 3,
            agreements: 5,
            min_age_secs: DAY,
        };
        let t0 = 1_000_000;
        let mut rec = HostRecord::new(t0);
        assert_eq!(rules.standing(&rec, t0), Standing::Probationary);
        for _ in 0..3 {
            rec.challenge_passed(t0);
        }
        rec.agreements = 5;
        // Everything but age.
        assert_eq!(rules.standing(&rec, t0 + DAY - 1), Standing::Probationary);
        assert_eq!(rules.standing(&rec, t0 + DAY), Standing::Established);
        // Short of one agreement.
        rec.agreements = 4;
        assert_eq!(rules.standing(&rec, t0 + 2 * DAY), Standing::Probationary);
        rec.agreements = 5;
        // A strike loses it for good, vouched or not.
        rec.strikes = 1;
        rec.vouched = true;
        assert_eq!(rules.standing(&rec, t0 + 9 * DAY), Standing::Probationary);
    }

    #[test]
    fn vouching_is_the_only_shortcut() {
        let rules = StandingRules::default();
        let mut rec = HostRecord::new(5);
        rec.vouched = true;
        assert_eq!(rules.standing(&rec, 5), Standing::Established);
        // A clock that went backwards does not underflow.
        assert_eq!(
            rules.standing(&HostRecord::new(100), 5),
            Standing::Probationary
        );
    }

    #[test]
    fn membership_is_proven_service() {
        let mut rec = HostRecord::new(0);
        assert!(!serves(&rec), "a heartbeat alone is no service");
        rec.challenge_passed(10);
        assert!(serves(&rec));
        rec.challenge_failed();
        assert!(serves(&rec), "one lost challenge may be bad luck");
        rec.challenge_failed();
        assert!(!serves(&rec));
        rec.challenge_passed(20);
        assert!(serves(&rec));
        assert_eq!(rec.challenges_failed, 2);
    }
}
