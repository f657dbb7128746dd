//! The client's environment variables (spec §8.11), read once per process.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Default `DISTCC_IO_TIMEOUT` in seconds.
const DEFAULT_IO_TIMEOUT_SECS: u64 = 300;
/// Default `DISTCC_BACKOFF_PERIOD` in seconds.
const DEFAULT_BACKOFF_SECS: u64 = 60;
/// Default `DISTCC_PAUSE_TIME_MSEC`.
const DEFAULT_PAUSE_MSEC: u64 = 1000;
/// Most hosts `DPORTAGE_REDUNDANCY` may ask to agree: beyond this the pool
/// pays far more than any attacker model justifies.
pub const MAX_REDUNDANCY: usize = 9;
/// Default `DPORTAGE_HEDGE_MS`: the least extra wait for a lagging host.
const DEFAULT_HEDGE_MSEC: u64 = 1000;

/// Everything the compile path reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DISTCC_VERBOSE=1`.
    pub verbose: bool,
    /// `DISTCC_LOG`: log file instead of stderr.
    pub log_file: Option<PathBuf>,
    /// `UNCACHED_ERR_FD` (only used when `DISTCC_LOG` is unset).
    pub uncached_err_fd: Option<i32>,
    /// `DISTCC_FALLBACK` (default true): compile locally after a failure to distribute.
    pub fallback: bool,
    /// `DISTCC_SKIP_LOCAL_RETRY` set: trust a remote compile error.
    pub skip_local_retry: bool,
    /// `DISTCC_BACKOFF_PERIOD`.
    pub backoff_period: Duration,
    /// `DISTCC_IO_TIMEOUT`, or the message for an invalid value (exit 101 when it
    /// is needed; a job that never touches the network does not care).
    pub io_timeout: Result<Duration, String>,
    /// `DISTCC_PAUSE_TIME_MSEC`.
    pub pause: Duration,
    /// `DISTCC_SAVE_TEMPS=1`.
    pub save_temps: bool,
    /// `DISTCC_NO_REWRITE_CROSS` set.
    pub no_rewrite_cross: bool,
    /// `TMPDIR` (default `/tmp`).
    pub tmpdir: PathBuf,
    /// `_DISTCC_SAFEGUARD` as found.
    pub safeguard: Option<String>,
    /// `DPORTAGE_REDUNDANCY` (default 1): distinct hosts that must agree on each
    /// distributable job, or the message for an invalid value.
    pub redundancy: Result<usize, String>,
    /// `DPORTAGE_SPOTCHECK` (default 0; `DPORTAGE_SPOT_CHECK` is accepted too):
    /// the fraction of verified jobs also compiled here and compared, or the
    /// message for an invalid value.
    pub spot_check: Result<f64, String>,
    /// `DPORTAGE_HEDGE_MS` (default 1000): a host still busy
    /// max(2 × first, first + this) after the first result is hedged.
    pub hedge_min: Duration,
    /// `DPORTAGE_DIR` (default `~/.dportage`): exclusions and evidence.
    pub dportage_dir: Option<PathBuf>,
    /// `DPORTAGE_COORDINATOR`: where evidence is reported (by the network layer).
    pub coordinator: Option<String>,
}

impl Settings {
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Read settings through `lookup` (the environment, or a table in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        let text = |name: &str| lookup(name).map(|v| v.to_string_lossy().into_owned());
        let backoff_secs = text("DISTCC_BACKOFF_PERIOD")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_BACKOFF_SECS);
        let pause_msec = text("DISTCC_PAUSE_TIME_MSEC")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_PAUSE_MSEC);
        let uncached_err_fd = text("UNCACHED_ERR_FD")
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|fd| *fd >= 0);
        let tmpdir = lookup("TMPDIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        Settings {
            verbose: env_bool(text("DISTCC_VERBOSE").as_deref(), false),
            log_file: lookup("DISTCC_LOG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            uncached_err_fd,
            fallback: env_bool(text("DISTCC_FALLBACK").as_deref(), true),
            skip_local_retry: lookup("DISTCC_SKIP_LOCAL_RETRY").is_some(),
            backoff_period: Duration::from_secs(backoff_secs),
            io_timeout: parse_io_timeout(text("DISTCC_IO_TIMEOUT").as_deref()),
            pause: Duration::from_millis(pause_msec),
            save_temps: env_bool(text("DISTCC_SAVE_TEMPS").as_deref(), false),
            no_rewrite_cross: lookup("DISTCC_NO_REWRITE_CROSS").is_some(),
            tmpdir,
            safeguard: text("_DISTCC_SAFEGUARD"),
            redundancy: parse_redundancy(text("DPORTAGE_REDUNDANCY").as_deref()),
            spot_check: parse_spot_check(
                text("DPORTAGE_SPOTCHECK")
                    .or_else(|| text("DPORTAGE_SPOT_CHECK"))
                    .as_deref(),
            ),
            hedge_min: Duration::from_millis(
                text("DPORTAGE_HEDGE_MS")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(DEFAULT_HEDGE_MSEC),
            ),
            dportage_dir: lookup("DPORTAGE_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    lookup("HOME")
                        .filter(|v| !v.is_empty())
                        .map(|home| PathBuf::from(home).join(".dportage"))
                }),
            coordinator: text("DPORTAGE_COORDINATOR").filter(|v| !v.trim().is_empty()),
        }
    }

    /// Does a distributable job go through verified (redundant) dispatch? Also
    /// true for an invalid `DPORTAGE_REDUNDANCY`, so that path reports it: a
    /// typo must not silently turn verification off.
    pub fn verifies(&self) -> bool {
        self.redundancy != Ok(1)
    }

    /// The recursion level this process runs at (0 at top level).
    pub fn safeguard_level(&self) -> u32 {
        self.safeguard
            .as_deref()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0)
    }

    /// The `_DISTCC_SAFEGUARD` value every child of this process gets.
    pub fn child_safeguard(&self) -> String {
        self.safeguard_level().saturating_add(1).to_string()
    }
}

/// distcc's `dcc_getenv_bool`: exactly `1` is true, exactly `0` is false,
/// anything else (or unset) is the default.
fn env_bool(value: Option<&str>, default: bool) -> bool {
    match value {
        Some("1") => true,
        Some("0") => false,
        _ => default,
    }
}

/// `DISTCC_IO_TIMEOUT`: a positive number of seconds (spec §8.10).
fn parse_io_timeout(value: Option<&str>) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(Duration::from_secs(DEFAULT_IO_TIMEOUT_SECS));
    };
    match value.trim().parse::<i64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs as u64)),
        _ => Err(format!(
            "bad DISTCC_IO_TIMEOUT value {value:?}: it must be a whole number of seconds greater than 0 \
             (unset it for the default of {DEFAULT_IO_TIMEOUT_SECS})"
        )),
    }
}

/// `DPORTAGE_REDUNDANCY`: 1 (plain distcc) to [`MAX_REDUNDANCY`].
fn parse_redundancy(value: Option<&str>) -> Result<usize, String> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(1);
    };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_REDUNDANCY).contains(&n) => Ok(n),
        _ => Err(format!(
            "bad DPORTAGE_REDUNDANCY value {value:?}: it must be a whole number from 1 \
             (plain distcc) to {MAX_REDUNDANCY}; 2 sends every job to two hosts and compares"
        )),
    }
}

/// `DPORTAGE_SPOTCHECK`: a probability, 0 to 1.
fn parse_spot_check(value: Option<&str>) -> Result<f64, String> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(0.0);
    };
    match value.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "bad DPORTAGE_SPOTCHECK value {value:?}: it must be a number from 0 to 1 \
             (the fraction of jobs also compiled locally, e.g. 0.05)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_distcc() {
        let s = settings(&[]);
        assert!(!s.verbose);
        assert!(s.fallback);
        assert!(!s.skip_local_retry);
        assert_eq!(s.backoff_period, Duration::from_secs(60));
        assert_eq!(s.io_timeout, Ok(Duration::from_secs(300)));
        assert_eq!(s.pause, Duration::from_millis(1000));
        assert_eq!(s.tmpdir, PathBuf::from("/tmp"));
        assert_eq!(s.safeguard_level(), 0);
        assert_eq!(s.child_safeguard(), "1");
    }

    #[test]
    fn io_timeout_must_be_positive_integer() {
        assert_eq!(
            settings(&[("DISTCC_IO_TIMEOUT", "2")]).io_timeout,
            Ok(Duration::from_secs(2))
        );
        for bad in ["0", "-1", "abc", "", "1.5"] {
            assert!(
                settings(&[("DISTCC_IO_TIMEOUT", bad)]).io_timeout.is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn booleans_follow_dcc_getenv_bool() {
        assert!(settings(&[("DISTCC_VERBOSE", "1")]).verbose);
        assert!(!settings(&[("DISTCC_VERBOSE", "yes")]).verbose);
        assert!(!settings(&[("DISTCC_FALLBACK", "0")]).fallback);
        assert!(settings(&[("DISTCC_FALLBACK", "no")]).fallback);
        assert!(settings(&[("DISTCC_SKIP_LOCAL_RETRY", "")]).skip_local_retry);
        assert!(settings(&[("DISTCC_NO_REWRITE_CROSS", "0")]).no_rewrite_cross);
    }

    #[test]
    fn verification_settings() {
        let s = settings(&[("HOME", "/home/u")]);
        assert_eq!(s.redundancy, Ok(1));
        assert!(!s.verifies());
        assert_eq!(s.spot_check, Ok(0.0));
        assert_eq!(s.hedge_min, Duration::from_millis(1000));
        assert_eq!(s.dportage_dir, Some(PathBuf::from("/home/u/.dportage")));
        assert_eq!(s.coordinator, None);
        let s = settings(&[
            ("DPORTAGE_REDUNDANCY", "2"),
            ("DPORTAGE_SPOT_CHECK", "0.25"),
            ("DPORTAGE_HEDGE_MS", "50"),
            ("DPORTAGE_DIR", "/state"),
            ("DPORTAGE_COORDINATOR", "https://c.example"),
        ]);
        assert_eq!(s.redundancy, Ok(2));
        assert!(s.verifies());
        assert_eq!(s.spot_check, Ok(0.25));
        assert_eq!(s.hedge_min, Duration::from_millis(50));
        assert_eq!(s.dportage_dir, Some(PathBuf::from("/state")));
        assert_eq!(s.coordinator.as_deref(), Some("https://c.example"));
        for bad in ["0", "-1", "two", "10", "1.5"] {
            let s = settings(&[("DPORTAGE_REDUNDANCY", bad)]);
            assert!(s.redundancy.is_err(), "{bad:?}");
            assert!(
                s.verifies(),
                "an invalid value must reach the verified path"
            );
        }
        for bad in ["-0.1", "1.5", "half", "NaN"] {
            assert!(
                settings(&[("DPORTAGE_SPOT_CHECK", bad)])
                    .spot_check
                    .is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(settings(&[("DPORTAGE_REDUNDANCY", "")]).redundancy, Ok(1));
        assert_eq!(
            settings(&[("DPORTAGE_SPOTCHECK", "1.0")]).spot_check,
            Ok(1.0),
            "the documented spelling"
        );
        assert_eq!(
            settings(&[("DPORTAGE_SPOTCHECK", "1"), ("DPORTAGE_SPOT_CHECK", "0")]).spot_check,
            Ok(1.0),
            "the documented spelling wins"
        );
    }

    #[test]
    fn safeguard_levels() {
        let s = settings(&[("_DISTCC_SAFEGUARD", "2")]);
        assert_eq!(s.safeguard_level(), 2);
        assert_eq!(s.child_safeguard(), "3");
        assert_eq!(settings(&[("TMPDIR", "")]).tmpdir, PathBuf::from("/tmp"));
    }
}
