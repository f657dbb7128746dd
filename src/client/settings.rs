//! The client's environment variables (spec §8.11), read once per process.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::remote::ReplyPace;

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

/// How a distributable job is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dispatch {
    /// To one host, as distcc does (`DPORTAGE_REDUNDANCY` unset or 1).
    Plain,
    /// To several hosts that must agree.
    Verified(Verification),
}

/// The settings of verified dispatch, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verification {
    /// `DPORTAGE_REDUNDANCY`: distinct hosts that must agree on each job, 2 to
    /// [`MAX_REDUNDANCY`].
    pub redundancy: usize,
    /// `DPORTAGE_SPOTCHECK` (default 0; `DPORTAGE_SPOT_CHECK` is accepted too):
    /// the fraction of verified jobs also compiled here and compared, 0 to 1.
    pub spot_check: f64,
    /// `DPORTAGE_HEDGE_MS` (default 1000): a host still busy
    /// max(2 × first, first + this) after the first result is hedged.
    pub hedge_min: Duration,
}

/// An environment variable whose value cannot be used. The message names the
/// variable and the value, and says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "bad DISTCC_IO_TIMEOUT value {value:?}: it must be a whole number of seconds greater \
         than 0 (unset it for the default of {DEFAULT_IO_TIMEOUT_SECS})"
    )]
    IoTimeout { value: String },
    #[error(
        "bad DPORTAGE_REDUNDANCY value {value:?}: it must be a whole number from 1 \
         (plain distcc) to {MAX_REDUNDANCY}; 2 sends every job to two hosts and compares"
    )]
    Redundancy { value: String },
    #[error(
        "bad {variable} value {value:?}: it must be a number from 0 to 1 \
         (the fraction of jobs also compiled locally, e.g. 0.05)"
    )]
    SpotCheck {
        variable: &'static str,
        value: String,
    },
    #[error(
        "bad {variable} value {value:?}: it must be a whole number greater than 0 \
         ({meaning}; unset it for the default of {default})"
    )]
    ReplyPace {
        variable: &'static str,
        value: String,
        meaning: &'static str,
        default: u64,
    },
}

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
    /// `DISTCC_IO_TIMEOUT`. An invalid value stops a job only once it needs the
    /// network (exit 101, as distcc 3.4 exits on its first network wait), so a
    /// job compiled here, or one whose host list cannot be read, is unaffected.
    pub io_timeout: Result<Duration, SettingsError>,
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
    /// How distributable jobs are sent (`DPORTAGE_REDUNDANCY` and the settings
    /// of verified dispatch). An invalid value stops every distributable job
    /// (exit 101) rather than silently turning verification off.
    pub dispatch: Result<Dispatch, SettingsError>,
    /// How a reply must keep coming once it has started:
    /// `DPORTAGE_REPLY_PACE_WINDOW` (seconds, 10), `DPORTAGE_REPLY_MIN_RATE`
    /// (bytes a second averaged over the window, 16384) and
    /// `DPORTAGE_REPLY_TIMEOUTS` (the whole reply within this many
    /// `DISTCC_IO_TIMEOUT`s, 4). Like `DISTCC_IO_TIMEOUT`, an invalid value
    /// stops a job only once it needs the network.
    pub reply_pace: Result<ReplyPace, SettingsError>,
    /// `DPORTAGE_DIR` (default `~/.dportage`): exclusions and evidence.
    pub dportage_dir: Option<PathBuf>,
    /// `DPORTAGE_COORDINATOR`: where evidence is reported (by the network layer).
    pub coordinator: Option<String>,
    /// `DPORTAGE_HOST_LIST`: the coordinator's signed list (`dportage` sets it).
    /// When set, verified jobs draw their hosts at random under the pairing
    /// rules, and only once the list's signature checks out.
    pub host_list: Option<PathBuf>,
    /// `DPORTAGE_CACHE` (default on; `0` turns it off): verified results
    /// are looked up in `$DPORTAGE_DIR/cache` and, with a coordinator, in
    /// the network's cache before anything is compiled.
    pub cache: bool,
    /// `DPORTAGE_CACHE_SIZE`: bytes the local cache keeps at most (suffixes
    /// K, M, G; default [`DEFAULT_CACHE_SIZE`]; unreadable is the default).
    pub cache_size: u64,
    /// `dportage cache key`: print the job's key where it would be looked
    /// up, and stop there.
    pub cache_explain: bool,
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
            dispatch: parse_dispatch(&text),
            reply_pace: parse_reply_pace(&text),
            dportage_dir: {
                let path = |name: &str| lookup(name).filter(|v| !v.is_empty()).map(PathBuf::from);
                crate::network::identity::resolve_dportage_dir(
                    path("DPORTAGE_DIR"),
                    path("HOME"),
                    path("DPORTAGE_SYSTEM_DIR"),
                )
            },
            coordinator: text("DPORTAGE_COORDINATOR").filter(|v| !v.trim().is_empty()),
            host_list: lookup("DPORTAGE_HOST_LIST")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            cache: env_bool(text("DPORTAGE_CACHE").as_deref(), true),
            cache_size: text("DPORTAGE_CACHE_SIZE")
                .and_then(|v| parse_size(&v))
                .unwrap_or(DEFAULT_CACHE_SIZE),
            cache_explain: false,
        }
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

/// What the local result cache keeps at most unless `DPORTAGE_CACHE_SIZE` says.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;

/// `123`, `64K`, `512M`, `2G` (powers of 1024).
pub fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim();
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => v.split_at(i),
        None => (v, ""),
    };
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
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
fn parse_io_timeout(value: Option<&str>) -> Result<Duration, SettingsError> {
    let Some(value) = value else {
        return Ok(Duration::from_secs(DEFAULT_IO_TIMEOUT_SECS));
    };
    match value.trim().parse::<i64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs as u64)),
        _ => Err(SettingsError::IoTimeout {
            value: value.to_owned(),
        }),
    }
}

/// The `DPORTAGE_REPLY_*` settings; the first bad one is reported.
fn parse_reply_pace(text: &impl Fn(&str) -> Option<String>) -> Result<ReplyPace, SettingsError> {
    let defaults = ReplyPace::default();
    let window_secs = defaults.window.as_secs();
    let number = |variable: &'static str, meaning: &'static str, default: u64| {
        let Some(value) = text(variable) else {
            return Ok(default);
        };
        match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(SettingsError::ReplyPace {
                variable,
                value,
                meaning,
                default,
            }),
        }
    };
    let window = number(
        "DPORTAGE_REPLY_PACE_WINDOW",
        "seconds over which a started reply must keep up the minimum rate",
        window_secs,
    )?;
    let rate = number(
        "DPORTAGE_REPLY_MIN_RATE",
        "bytes a second a started reply must average over the window",
        defaults.min_bytes as u64 / window_secs,
    )?;
    let timeouts = number(
        "DPORTAGE_REPLY_TIMEOUTS",
        "the whole reply must arrive within this many DISTCC_IO_TIMEOUTs",
        u64::from(defaults.deadline_timeouts),
    )?;
    Ok(ReplyPace {
        window: Duration::from_secs(window),
        min_bytes: usize::try_from(rate.saturating_mul(window)).unwrap_or(usize::MAX),
        deadline_timeouts: u32::try_from(timeouts).unwrap_or(u32::MAX),
    })
}

/// `DPORTAGE_REDUNDANCY`, and with 2 or more the other settings of verified
/// dispatch. A bad redundancy is reported before a bad spot check; a spot
/// check is not looked at without verification.
fn parse_dispatch(text: &impl Fn(&str) -> Option<String>) -> Result<Dispatch, SettingsError> {
    let redundancy = parse_redundancy(text("DPORTAGE_REDUNDANCY").as_deref())?;
    if redundancy == 1 {
        return Ok(Dispatch::Plain);
    }
    let spot_check = match text("DPORTAGE_SPOTCHECK") {
        Some(value) => parse_spot_check("DPORTAGE_SPOTCHECK", &value)?,
        None => match text("DPORTAGE_SPOT_CHECK") {
            Some(value) => parse_spot_check("DPORTAGE_SPOT_CHECK", &value)?,
            None => 0.0,
        },
    };
    // Like distcc's own timing variables, an unreadable value is the default.
    let hedge_min = Duration::from_millis(
        text("DPORTAGE_HEDGE_MS")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_HEDGE_MSEC),
    );
    Ok(Dispatch::Verified(Verification {
        redundancy,
        spot_check,
        hedge_min,
    }))
}

/// `DPORTAGE_REDUNDANCY`: 1 (plain distcc) to [`MAX_REDUNDANCY`].
fn parse_redundancy(value: Option<&str>) -> Result<usize, SettingsError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(1);
    };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_REDUNDANCY).contains(&n) => Ok(n),
        _ => Err(SettingsError::Redundancy {
            value: value.to_owned(),
        }),
    }
}

/// `DPORTAGE_SPOTCHECK`: a probability, 0 to 1 (empty is 0).
fn parse_spot_check(variable: &'static str, value: &str) -> Result<f64, SettingsError> {
    if value.trim().is_empty() {
        return Ok(0.0);
    }
    match value.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(SettingsError::SpotCheck {
            variable,
            value: value.to_owned(),
        }),
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
    fn cache_settings() {
        let s = settings(&[]);
        assert!(s.cache);
        assert_eq!(s.cache_size, DEFAULT_CACHE_SIZE);
        let s = settings(&[("DPORTAGE_CACHE", "0"), ("DPORTAGE_CACHE_SIZE", "64M")]);
        assert!(!s.cache);
        assert_eq!(s.cache_size, 64 << 20);
        let sizes = [
            ("123", Some(123)),
            ("4k", Some(4096)),
            ("2G", Some(2 << 30)),
            ("1MiB", Some(1 << 20)),
            ("", None),
            ("x", None),
            ("5Q", None),
            ("99999999999999T", None),
        ];
        for (text, want) in sizes {
            assert_eq!(parse_size(text), want, "{text}");
        }
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

    fn verified(vars: &[(&str, &str)]) -> Verification {
        match settings(vars).dispatch {
            Ok(Dispatch::Verified(v)) => v,
            other => panic!("{vars:?}: {other:?}"),
        }
    }

    #[test]
    fn verification_settings() {
        let s = settings(&[("HOME", "/home/u")]);
        assert_eq!(s.dispatch, Ok(Dispatch::Plain));
        assert_eq!(s.dportage_dir, Some(PathBuf::from("/home/u/.dportage")));
        assert_eq!(s.coordinator, None);
        let s = settings(&[
            ("DPORTAGE_REDUNDANCY", "2"),
            ("DPORTAGE_SPOT_CHECK", "0.25"),
            ("DPORTAGE_HEDGE_MS", "50"),
            ("DPORTAGE_DIR", "/state"),
            ("DPORTAGE_COORDINATOR", "https://c.example"),
        ]);
        assert_eq!(
            s.dispatch,
            Ok(Dispatch::Verified(Verification {
                redundancy: 2,
                spot_check: 0.25,
                hedge_min: Duration::from_millis(50),
            }))
        );
        assert_eq!(s.dportage_dir, Some(PathBuf::from("/state")));
        assert_eq!(s.coordinator.as_deref(), Some("https://c.example"));
        let defaults = verified(&[("DPORTAGE_REDUNDANCY", "3")]);
        assert_eq!(defaults.spot_check, 0.0);
        assert_eq!(defaults.hedge_min, Duration::from_millis(1000));
        assert_eq!(
            verified(&[("DPORTAGE_REDUNDANCY", "2"), ("DPORTAGE_HEDGE_MS", "soon")]).hedge_min,
            Duration::from_millis(1000),
            "like distcc's timing variables, an unreadable value is the default"
        );
        for bad in ["0", "-1", "two", "10", "1.5"] {
            assert_eq!(
                settings(&[("DPORTAGE_REDUNDANCY", bad)]).dispatch,
                Err(SettingsError::Redundancy { value: bad.into() }),
                "an invalid value must stop distributable jobs, not turn verification off"
            );
        }
        for bad in ["-0.1", "1.5", "half", "NaN"] {
            assert_eq!(
                settings(&[("DPORTAGE_REDUNDANCY", "2"), ("DPORTAGE_SPOT_CHECK", bad)]).dispatch,
                Err(SettingsError::SpotCheck {
                    variable: "DPORTAGE_SPOT_CHECK",
                    value: bad.into()
                }),
            );
        }
        assert_eq!(
            settings(&[("DPORTAGE_REDUNDANCY", "x"), ("DPORTAGE_SPOTCHECK", "y")]).dispatch,
            Err(SettingsError::Redundancy { value: "x".into() }),
            "the redundancy is reported first"
        );
        assert_eq!(
            settings(&[("DPORTAGE_SPOTCHECK", "half")]).dispatch,
            Ok(Dispatch::Plain),
            "a spot check means nothing without verification"
        );
        assert_eq!(
            settings(&[("DPORTAGE_REDUNDANCY", "")]).dispatch,
            Ok(Dispatch::Plain)
        );
        assert_eq!(
            verified(&[("DPORTAGE_REDUNDANCY", "2"), ("DPORTAGE_SPOTCHECK", "1.0")]).spot_check,
            1.0,
            "the documented spelling"
        );
        assert_eq!(
            verified(&[
                ("DPORTAGE_REDUNDANCY", "2"),
                ("DPORTAGE_SPOTCHECK", "1"),
                ("DPORTAGE_SPOT_CHECK", "0")
            ])
            .spot_check,
            1.0,
            "the documented spelling wins"
        );
    }

    #[test]
    fn errors_name_the_variable_the_value_and_the_remedy() {
        let text = SettingsError::IoTimeout { value: "0".into() }.to_string();
        assert!(text.contains("DISTCC_IO_TIMEOUT value \"0\""), "{text}");
        assert!(text.contains("default of 300"), "{text}");
        let text = SettingsError::Redundancy {
            value: "two".into(),
        }
        .to_string();
        assert!(text.contains("DPORTAGE_REDUNDANCY value \"two\""), "{text}");
        assert!(text.contains("from 1 (plain distcc) to 9"), "{text}");
        let text = settings(&[("DPORTAGE_REDUNDANCY", "2"), ("DPORTAGE_SPOTCHECK", "5%")])
            .dispatch
            .unwrap_err()
            .to_string();
        assert!(text.contains("DPORTAGE_SPOTCHECK value \"5%\""), "{text}");
        assert!(text.contains("e.g. 0.05"), "{text}");
    }

    #[test]
    fn reply_pace_settings() {
        assert_eq!(settings(&[]).reply_pace, Ok(ReplyPace::default()));
        assert_eq!(
            ReplyPace::default(),
            ReplyPace {
                window: Duration::from_secs(10),
                min_bytes: 160 * 1024,
                deadline_timeouts: 4,
            }
        );
        assert_eq!(
            settings(&[
                ("DPORTAGE_REPLY_PACE_WINDOW", "30"),
                ("DPORTAGE_REPLY_MIN_RATE", " 1000 "),
                ("DPORTAGE_REPLY_TIMEOUTS", "2"),
            ])
            .reply_pace,
            Ok(ReplyPace {
                window: Duration::from_secs(30),
                min_bytes: 30_000,
                deadline_timeouts: 2,
            })
        );
        // (variable, bad value)
        let table = [
            ("DPORTAGE_REPLY_PACE_WINDOW", "0"),
            ("DPORTAGE_REPLY_PACE_WINDOW", "1.5"),
            ("DPORTAGE_REPLY_MIN_RATE", "16K"),
            ("DPORTAGE_REPLY_MIN_RATE", "-1"),
            ("DPORTAGE_REPLY_TIMEOUTS", ""),
            ("DPORTAGE_REPLY_TIMEOUTS", "0"),
        ];
        for (variable, bad) in table {
            let err = settings(&[(variable, bad)]).reply_pace.unwrap_err();
            assert!(
                matches!(&err, SettingsError::ReplyPace { variable: v, value, .. }
                    if *v == variable && value == bad),
                "{variable}={bad:?}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("bad {variable} value {bad:?}"))
                    && text.contains("whole number greater than 0")
                    && text.contains("unset it for the default"),
                "{text}"
            );
        }
    }

    #[test]
    fn safeguard_levels() {
        let s = settings(&[("_DISTCC_SAFEGUARD", "2")]);
        assert_eq!(s.safeguard_level(), 2);
        assert_eq!(s.child_safeguard(), "3");
        assert_eq!(settings(&[("TMPDIR", "")]).tmpdir, PathBuf::from("/tmp"));
    }
}
