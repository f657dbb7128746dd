//! How far one job may go (rlimits, wall clock, output sizes) and how strictly
//! it is confined: configuration shared by the job runner and the sandbox.

use std::time::Duration;

/// Bounds for one compile.
#[derive(Debug, Clone)]
pub struct JobLimits {
    /// RLIMIT_CPU seconds.
    pub cpu_secs: u64,
    /// Wall-clock limit (`--job-lifetime`); the compiler's process group is killed after it.
    pub wall: Duration,
    /// RLIMIT_AS bytes.
    pub address_space: u64,
    /// RLIMIT_FSIZE bytes: the largest file the compiler may write (bounds the object).
    pub max_output: u64,
    /// Largest stderr/stdout kept (the rest is cut, with a note).
    pub max_diagnostics: usize,
    /// RLIMIT_NOFILE for the compiler.
    pub max_open_files: u64,
    /// RLIMIT_NPROC for the compiler. The kernel counts every process and
    /// thread of the daemon's user against it (and ignores it for root), so
    /// it must leave room for the daemon and all concurrent jobs.
    pub max_processes: u64,
    /// The compiler runs at this niceness or lower priority: the trampoline
    /// raises its nice value to at least this (never lowers it, so a daemon
    /// started with a larger `--nice` keeps it for its compilers).
    pub min_nice: i32,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            cpu_secs: 600,
            wall: Duration::from_secs(900),
            address_space: 4 << 30,
            max_output: 128 << 20,
            max_diagnostics: 4 << 20,
            max_open_files: 256,
            max_processes: 1024,
            // distccd's default `--nice`.
            min_nice: 5,
        }
    }
}

/// How strictly the compiler is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Refuse to run jobs when the kernel offers no sandbox.
    Required,
    /// Sandbox where the kernel offers one; warn once otherwise.
    BestEffort,
    /// No filesystem sandbox (rlimits and nice still apply). For debugging only.
    Off,
}

impl SandboxMode {
    /// The spelling used on the trampoline's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Required => "required",
            SandboxMode::BestEffort => "best-effort",
            SandboxMode::Off => "off",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "required" => Some(SandboxMode::Required),
            "best-effort" => Some(SandboxMode::BestEffort),
            "off" => Some(SandboxMode::Off),
            _ => None,
        }
    }
}
