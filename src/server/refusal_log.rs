//! Rate limit for the log lines of refused connections: a flood of refusals
//! (a crowd over the caps, a scan, a stall attack) must not flood the log.
//! In each interval the first few refusals are logged one line each as
//! before; the rest are only counted, and one summary line per interval
//! gives their number by reason. Pure: the caller passes the time in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Refusals logged one line each per interval.
pub const REFUSALS_LOGGED_PER_INTERVAL: u32 = 10;
/// The interval; also how often a summary line may appear.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What to do with one refusal's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLine {
    /// Log it as usual.
    Write,
    /// Count it for the interval's summary instead.
    Suppress,
}

/// The refusals of a past interval that were not logged one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    /// Length of the interval they fell in.
    pub over: Duration,
    /// How many, by reason (in name order, for a stable line).
    pub by_reason: BTreeMap<&'static str, u64>,
}

impl Suppressed {
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }
}

impl std::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} more connection(s) refused in the last {} s without a log line each:",
            self.total(),
            self.over.as_secs()
        )?;
        for (reason, n) in &self.by_reason {
            write!(f, " {reason}={n}")?;
        }
        Ok(())
    }
}

/// The limiter's state.
#[derive(Debug)]
pub struct RefusalLog {
    per_interval: u32,
    interval: Duration,
    started: Option<Instant>,
    written: u32,
    suppressed: BTreeMap<&'static str, u64>,
}

impl RefusalLog {
    pub fn new(per_interval: u32, interval: Duration) -> Self {
        Self {
            per_interval,
            interval,
            started: None,
            written: 0,
            suppressed: BTreeMap::new(),
        }
    }

    /// A refusal for `reason` at `now`: whether to log its line, and the
    /// summary of the previous interval if that one just ended.
    pub fn refusal(&mut self, now: Instant, reason: &'static str) -> (LogLine, Option<Suppressed>) {
        let summary = self.tick(now);
        self.started.get_or_insert(now);
        if self.written < self.per_interval {
            self.written += 1;
            (LogLine::Write, summary)
        } else {
            *self.suppressed.entry(reason).or_insert(0) += 1;
            (LogLine::Suppress, summary)
        }
    }

    /// Called now and then (and on each refusal): once the interval is
    /// over, start a new one and return what it suppressed, if anything.
    pub fn tick(&mut self, now: Instant) -> Option<Suppressed> {
        let started = self.started?;
        let over = now.saturating_duration_since(started);
        if over < self.interval {
            return None;
        }
        self.started = None;
        self.written = 0;
        if self.suppressed.is_empty() {
            return None;
        }
        Some(Suppressed {
            over,
            by_reason: std::mem::take(&mut self.suppressed),
        })
    }
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new(REFUSALS_LOGGED_PER_INTERVAL, REFUSAL_LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_refusals_are_written_then_counted_then_summarised() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = RefusalLog::new(2, s(10));
        // (seconds after t0, reason, line expected, summary total expected)
        let table: &[(u64, &str, LogLine, Option<u64>)] = &[
            (0, "per_client", LogLine::Write, None),
            (1, "per_client", LogLine::Write, None),
            (2, "per_client", LogLine::Suppress, None),
            (3, "global", LogLine::Suppress, None),
            (9, "per_client", LogLine::Suppress, None),
            // The interval is over: a new one starts, the old one is summarised.
            (10, "global", LogLine::Write, Some(3)),
            (11, "global", LogLine::Write, None),
            // A quiet interval ends with nothing to say.
            (30, "queue_full", LogLine::Write, None),
        ];
        for &(at, reason, line, summary) in table {
            let (got, sum) = log.refusal(t0 + s(at), reason);
            assert_eq!(got, line, "at {at} s");
            assert_eq!(sum.as_ref().map(Suppressed::total), summary, "at {at} s");
        }
    }

    #[test]
    fn a_tick_summarises_a_flood_that_stopped() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = RefusalLog::new(1, s(10));
        assert_eq!(log.tick(t0), None, "nothing happened yet");
        for i in 0..1000 {
            log.refusal(t0 + Duration::from_millis(i), "per_client");
        }
        log.refusal(t0 + s(2), "global");
        assert_eq!(log.tick(t0 + s(9)), None, "the interval is not over");
        let summary = log.tick(t0 + s(10)).expect("summary");
        assert_eq!(summary.total(), 1000);
        assert_eq!(summary.by_reason["per_client"], 999);
        assert_eq!(summary.by_reason["global"], 1);
        assert_eq!(
            summary.to_string(),
            "1000 more connection(s) refused in the last 10 s without a log line each: \
             global=1 per_client=999"
        );
        assert_eq!(log.tick(t0 + s(30)), None, "said once");
        assert_eq!(log.refusal(t0 + s(31), "global").0, LogLine::Write);
    }
}
