//! Spans of time as the command line writes them (`14d`, `36h`, `90min`,
//! `0s`, a bare number of seconds) and back. Pure.

use std::time::Duration;

/// Seconds per unit, longest first (the order [`duration_text`] tries them).
const UNITS: [(&[&str], u64); 5] = [
    (&["w", "week", "weeks"], 7 * 24 * 3600),
    (&["d", "day", "days"], 24 * 3600),
    (&["h", "hour", "hours"], 3600),
    (&["min", "minute", "minutes", "m"], 60),
    (&["s", "sec", "secs", "second", "seconds"], 1),
];

/// Seconds in one `unit` (`d`, `day`, `h`, …), if it is one.
pub fn unit_secs(unit: &str) -> Option<u64> {
    UNITS
        .iter()
        .find(|(names, _)| names.contains(&unit))
        .map(|(_, secs)| *secs)
}

/// `14d`, `36h`, `90min`, `2w`, `0s`, `600` (seconds), `1day`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 14d, 36h, 90min or 0s"))?;
    let per = if unit.is_empty() {
        1
    } else {
        unit_secs(unit.trim())
            .ok_or_else(|| format!("{s:?}: unknown unit {unit:?}; use s, min, h, d or w"))?
    };
    n.checked_mul(per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// The shortest exact form [`parse_duration`] reads back, in days at most:
/// `14d`, `90min`, `0s`.
pub fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    for (names, per) in UNITS.into_iter().skip(1) {
        if secs % per == 0 {
            return format!("{}{}", secs / per, names[0]);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (text, secs, back) in [
            ("14d", 14 * 86400, "14d"),
            ("2w", 14 * 86400, "14d"),
            ("36h", 36 * 3600, "36h"),
            ("90min", 5400, "90min"),
            ("0s", 0, "0s"),
            ("600", 600, "10min"),
            ("1day", 86400, "1d"),
            ("61s", 61, "61s"),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_secs(), secs, "{text}");
            assert_eq!(duration_text(d), back);
            assert_eq!(parse_duration(back).unwrap(), d);
        }
        for bad in ["", "d", "5x", "-1s", "1.5h", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
