//! The one clock that signed requests, tokens and heartbeats are stamped with.

use std::time::{SystemTime, UNIX_EPOCH};

/// Accepted clock skew either way between a signer and the coordinator.
pub const CLOCK_WINDOW_SECS: u64 = 300;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
