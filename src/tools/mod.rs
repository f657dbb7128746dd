//! Things that are not roles of the network but run the roles: the demo (a
//! whole network on 127.0.0.x), the WAN emulator of the benchmarks, the
//! lying server of the tests, and the command line's help, completions and
//! manual pages (`docs`). Tools may import any layer; nothing imports them
//! except `main.rs`, tests and benchmarks.

pub mod adversary;
pub mod demo;
pub mod docs;
pub mod framer;
pub mod wanproxy;

/// A tool's command line that cannot be used (exit code `BAD_ARGUMENTS`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("{option} needs {what}")]
    MissingValue {
        option: &'static str,
        what: &'static str,
    },
    #[error("{option} {value:?}: use {range}")]
    OutOfRange {
        option: &'static str,
        value: String,
        range: &'static str,
    },
    #[error("unknown argument {0:?}")]
    UnknownArgument(String),
    #[error(
        "unknown lie {0:?}: use honest, flip, replace, oversize, truncate, garbage or status=N"
    )]
    UnknownLie(String),
    #[error("bad status {value:?}: {source}")]
    BadStatus {
        value: String,
        source: std::num::ParseIntError,
    },
}
