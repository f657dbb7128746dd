//! One job on the server: check the command, run the compiler in a private job
//! directory under the sandbox, collect status, stderr, stdout and object.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::args::{Refusal, ServerCommand};

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
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            cpu_secs: 600,
            wall: Duration::from_secs(900),
            address_space: 4 << 30,
            max_output: 128 << 20,
            max_diagnostics: 4 << 20,
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

/// Everything a job needs from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Masquerade directories whose entries whitelist compiler names (distccd: `/usr/lib/distcc`).
    pub masquerade_dirs: Vec<PathBuf>,
    /// Extra compiler names allowed (`--allow-compiler`).
    pub extra_compilers: Vec<String>,
    /// `--enable-tcp-insecure`: no compiler whitelist (flag policy and sandbox still apply).
    pub insecure_compilers: bool,
    /// `PATH` used to find compilers (`DISTCCD_PATH`, else the daemon's `PATH`).
    pub compiler_path: OsString,
    /// Where job directories are created (`$TMPDIR`, else `/tmp`).
    pub work_root: PathBuf,
    pub limits: JobLimits,
    pub sandbox: SandboxMode,
    /// The dportage binary, used as the sandbox trampoline.
    pub self_exe: PathBuf,
}

/// How a job ended, for statistics (distccd's `dcc_*` counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobResult {
    CompileOk,
    CompileError,
    Timeout,
    ClientDisconnected,
    Refused,
    Internal,
}

/// The reply material of one job.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// Raw wait status (or fabricated `code << 8`).
    pub status: u32,
    pub stderr: Vec<u8>,
    pub stdout: Vec<u8>,
    /// Empty unless `status == 0`.
    pub object: Vec<u8>,
    pub result: JobResult,
}

/// Check a received command against the whitelist and flag policy.
pub fn check_command(argv: &[Vec<u8>], cfg: &JobConfig) -> Result<ServerCommand, Refusal> {
    let allowed = |name: &str| {
        cfg.insecure_compilers
            || cfg.extra_compilers.iter().any(|c| c == name)
            || cfg.masquerade_dirs.iter().any(|d| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(d.join(name))
                    .map(|m| m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
    };
    crate::args::check_server_command(argv, &allowed, "input", "output.o")
}

/// Run a checked command on `source` (the decompressed DOTI). If `cancelled`
/// completes first (the client went away), the compiler is killed and the
/// outcome is `ClientDisconnected`.
pub async fn run_job(
    cmd: &ServerCommand,
    source: &[u8],
    cfg: &JobConfig,
    cancelled: impl Future<Output = ()>,
) -> JobOutcome {
    // TEMPORARY STUB (not committed)
    let dir = cfg.work_root.join(format!(
        "stub-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir(&dir).unwrap();
    let input = format!("input{}", cmd.input_ext);
    std::fs::write(dir.join(&input), source).unwrap();
    let mut c = tokio::process::Command::new(&cmd.compiler);
    c.args(&cmd.args)
        .current_dir(&dir)
        .env("PATH", &cfg.compiler_path)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let out = tokio::select! {
        o = child.wait_with_output() => Some(o.unwrap()),
        () = cancelled => None,
    };
    let res = match out {
        None => JobOutcome {
            status: 107 << 8,
            stderr: b"killed\n".to_vec(),
            stdout: vec![],
            object: vec![],
            result: JobResult::ClientDisconnected,
        },
        Some(o) => {
            use std::os::unix::process::ExitStatusExt;
            let status = o.status.into_raw() as u32;
            let object = if status == 0 {
                std::fs::read(dir.join("output.o")).unwrap_or_default()
            } else {
                vec![]
            };
            JobOutcome {
                status,
                stderr: o.stderr,
                stdout: o.stdout,
                object,
                result: if status == 0 {
                    JobResult::CompileOk
                } else {
                    JobResult::CompileError
                },
            }
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    res
}
