//! Trust among strangers, as pure rules: on the internet a user is a key and
//! keys are free, so nothing here counts keys. Standing is earned by verified
//! work over time ([`standing`]); the hosts of a job are drawn at random under
//! rules no single owner, network or newcomer can satisfy twice ([`pairing`]),
//! faster hosts more often within a bound and hosts that keep lagging last
//! ([`speed`]); a dispute is settled by re-running its evidence on hosts
//! neither side chose ([`adjudication`]). The coordinator, the client and the
//! collusion simulation (`cargo bench --bench collusion`) all run this code.

pub mod adjudication;
pub mod cache_entry;
pub mod challenge;
pub mod pairing;
pub mod speed;
pub mod standing;
