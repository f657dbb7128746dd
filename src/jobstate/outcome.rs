//! One line of the monitor log per job under verified dispatch: when, which
//! input, which hosts voted, the verdict, how long the job took. JSON, one
//! object a line, every field bounded so a line stays small whatever the
//! input's name or the host list.

use serde::{Deserialize, Serialize};

/// Longest input name kept, in bytes (the end is kept: it names the file).
pub const MAX_INPUT: usize = 200;
/// Most hosts named in one line.
pub const MAX_HOSTS: usize = 8;
/// Longest host label kept, in bytes.
pub const MAX_HOST: usize = 100;
/// Lines longer than this are not outcome lines (a reader's bound).
pub const MAX_LINE: usize = 4096;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The hosts agreed and their result was written.
    Agreed,
    /// A host lost a vote (named in `losers`); the winning result was written.
    Mismatch,
    /// Compiled on this machine (no vote possible, or the vote was not decisive).
    Local,
    /// The hosts agreed and this machine checked them (and agreed too).
    #[serde(rename = "spotcheck")]
    SpotCheck,
    /// The result came from a cache (kept for the cache to come; counted only).
    CacheHit,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Verdict::Agreed,
        Verdict::Mismatch,
        Verdict::Local,
        Verdict::SpotCheck,
        Verdict::CacheHit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Agreed => "agreed",
            Verdict::Mismatch => "mismatch",
            Verdict::Local => "local",
            Verdict::SpotCheck => "spotcheck",
            Verdict::CacheHit => "cache_hit",
        }
    }
}

/// One job's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Unix time, seconds, when the job ended.
    pub time: u64,
    /// The input file as given on the command line.
    pub input: String,
    /// The hosts whose answers counted, as listed.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub verdict: Verdict,
    /// The hosts that lost the vote (for a mismatch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub losers: Vec<String>,
    /// Milliseconds from the start of the job to its end.
    pub ms: u64,
}

impl Outcome {
    /// The log line, newline included, within [`MAX_LINE`].
    pub fn to_line(&self) -> String {
        let bounded = Outcome {
            time: self.time,
            input: keep_end(&self.input, MAX_INPUT),
            hosts: bound_hosts(&self.hosts),
            verdict: self.verdict,
            losers: bound_hosts(&self.losers),
            ms: self.ms,
        };
        // Strings and numbers only: serialising cannot fail.
        let mut line = serde_json::to_string(&bounded).unwrap_or_default();
        line.push('\n');
        line
    }

    /// A line of the log; `None` for anything else (a torn or foreign line).
    pub fn parse(line: &str) -> Option<Outcome> {
        if line.len() > MAX_LINE {
            return None;
        }
        serde_json::from_str(line.trim_end()).ok()
    }
}

/// Cache hits and jobs among a monitor log's lines (torn lines skipped):
/// the hit rate `dportage status`, `dportage cache stats` and the monitor show.
pub fn cache_hits<'a>(lines: impl IntoIterator<Item = &'a str>) -> (u64, u64) {
    let mut hits = 0;
    let mut jobs = 0;
    for outcome in lines.into_iter().filter_map(Outcome::parse) {
        jobs += 1;
        hits += u64::from(outcome.verdict == Verdict::CacheHit);
    }
    (hits, jobs)
}

fn bound_hosts(hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .take(MAX_HOSTS)
        .map(|h| keep_start(h, MAX_HOST))
        .collect()
}

fn keep_start(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn keep_end(s: &str, max: usize) -> String {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_counts_parsed_lines_only() {
        let log = [
            outcome(Verdict::CacheHit).to_line(),
            outcome(Verdict::Agreed).to_line(),
            "torn {\"time\":\n".to_owned(),
            outcome(Verdict::CacheHit).to_line(),
        ]
        .concat();
        assert_eq!(cache_hits(log.lines()), (2, 3));
        assert_eq!(cache_hits("".lines()), (0, 0));
    }

    fn outcome(verdict: Verdict) -> Outcome {
        Outcome {
            time: 1_700_000_000,
            input: "src/x.c".into(),
            hosts: vec!["127.0.0.2:3632".into(), "127.0.0.3:3632".into()],
            verdict,
            losers: Vec::new(),
            ms: 420,
        }
    }

    #[test]
    fn lines_round_trip_for_every_verdict() {
        for verdict in Verdict::ALL {
            let o = outcome(verdict);
            let line = o.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert!(line.contains(&format!("\"verdict\":\"{}\"", verdict.name())));
            assert_eq!(Outcome::parse(&line), Some(o));
        }
    }

    #[test]
    fn the_format_is_stable() {
        let mut o = outcome(Verdict::Mismatch);
        o.losers = vec!["127.0.0.3:3632".into()];
        assert_eq!(
            o.to_line(),
            "{\"time\":1700000000,\"input\":\"src/x.c\",\"hosts\":[\"127.0.0.2:3632\",\
             \"127.0.0.3:3632\"],\"verdict\":\"mismatch\",\"losers\":[\"127.0.0.3:3632\"],\
             \"ms\":420}\n"
        );
    }

    #[test]
    fn every_field_is_bounded() {
        let o = Outcome {
            time: u64::MAX,
            input: format!("{}tail.c", "d/".repeat(5000)),
            hosts: vec!["h".repeat(1000); 50],
            verdict: Verdict::Agreed,
            losers: vec!["é".repeat(1000); 50],
            ms: u64::MAX,
        };
        let line = o.to_line();
        assert!(line.len() < MAX_LINE, "{} bytes", line.len());
        let back = Outcome::parse(&line).unwrap();
        assert!(back.input.ends_with("tail.c") && back.input.len() <= MAX_INPUT);
        assert_eq!(back.hosts.len(), MAX_HOSTS);
        assert!(back.losers.iter().all(|h| h.len() <= MAX_HOST));
    }

    #[test]
    fn other_lines_are_skipped() {
        for line in [
            "",
            "{",
            "not json",
            "{\"time\":1}",
            "{\"time\":1,\"input\":\"a\",\"verdict\":\"nope\",\"ms\":1}",
        ] {
            assert_eq!(Outcome::parse(line), None, "{line:?}");
        }
        // Hosts may be missing (a cache hit has none).
        let o = Outcome::parse("{\"time\":1,\"input\":\"a.c\",\"verdict\":\"cache_hit\",\"ms\":0}")
            .unwrap();
        assert_eq!(o.verdict, Verdict::CacheHit);
        assert!(o.hosts.is_empty());
        assert_eq!(
            Outcome::parse(&format!("{}\n", "x".repeat(MAX_LINE + 1))),
            None
        );
    }
}
