//! One job on the server: check the command, run the compiler in a private job
//! directory under the sandbox, collect status, stderr, stdout and object.
//!
//! Every server runs a job the same way, so two servers given the same job
//! return the same bytes: fixed file names (`dportage-job.i` →
//! `dportage-job.o`), relative to the job directory as cwd; a fixed
//! environment (`PATH`, `LC_ALL=C`, `LANG=C`, `TMPDIR`=`HOME`=job dir,
//! `_DISTCC_SAFEGUARD=1`, nothing else); `-pipe`, so assembler messages name
//! `{standard input}` instead of a random temporary file; and flags that keep
//! the job directory's name out of debug info (see `canonical_args`).

mod dir;

use std::ffi::{CString, OsStr, OsString};
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use self::dir::JobDir;
pub use super::limits::{JobLimits, SandboxMode};
use super::sandbox::{self, zygote, SandboxSpec};
use crate::args::{Refusal, ServerCommand};
use crate::exitcode;

/// Stem of the input file in the job directory; the extension is the
/// preprocessed one (`.i`, `.ii`, …). Fixed so every server is identical.
pub const INPUT_STEM: &str = "dportage-job";
/// The output file in the job directory (also for `-S`).
pub const OUTPUT_NAME: &str = "dportage-job.o";

/// After the daemon asked the trampoline to stop a job, how long it waits for
/// it to kill and reap the compiler before killing the trampoline itself.
const STOP_GRACE: Duration = Duration::from_secs(5);

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

impl JobOutcome {
    /// A job that ended before or without the compiler: `code << 8` and a message.
    fn fabricated(code: i32, message: String, result: JobResult) -> Self {
        Self {
            status: (code as u32) << 8,
            stderr: message.into_bytes(),
            stdout: Vec::new(),
            object: Vec::new(),
            result,
        }
    }
}

/// Check a received command against the whitelist and flag policy.
///
/// The whitelist is distccd 3.4's (spec §9.5): the bare name (after a leading
/// `/usr/bin/` or `/bin/`) must be executable in one of the masquerade
/// directories (symlinks followed, so a dangling link does not count), or be
/// one of `extra_compilers`; `insecure_compilers` lifts only this check.
/// Input and output become [`INPUT_STEM`]`.<ext>` and [`OUTPUT_NAME`].
pub fn check_command(argv: &[Vec<u8>], cfg: &JobConfig) -> Result<ServerCommand, Refusal> {
    let allowed = |name: &str| compiler_allowed(name, cfg);
    crate::args::check_server_command(argv, &allowed, INPUT_STEM, OUTPUT_NAME)
}

/// Is the bare compiler `name` on this daemon's whitelist?
pub fn compiler_allowed(name: &str, cfg: &JobConfig) -> bool {
    cfg.insecure_compilers
        || cfg.extra_compilers.iter().any(|c| c == name)
        || cfg
            .masquerade_dirs
            .iter()
            .any(|dir| executable(&dir.join(name)))
}

/// `access(path, X_OK)`.
fn executable(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c_path is NUL-terminated and lives across the call.
    unsafe { libc::access(c_path.as_ptr(), libc::X_OK) == 0 }
}

/// Run a checked command on `source` (the decompressed DOTI). If `cancelled`
/// completes first (the client went away), the compiler is killed and the
/// outcome is `ClientDisconnected`.
///
/// Dropping the returned future also stops the compiler: the trampoline sees
/// its control pipe close, kills the compiler's process group and removes the
/// job directory.
pub async fn run_job(
    cmd: &ServerCommand,
    source: &[u8],
    cfg: &JobConfig,
    cancelled: impl Future<Output = ()>,
) -> JobOutcome {
    if let Err(refusal) = sandbox_possible(cfg.sandbox) {
        return refusal;
    }
    let dir = match JobDir::create(&cfg.work_root) {
        Ok(dir) => dir,
        Err(e) => {
            return JobOutcome::fabricated(
                exitcode::IO_ERROR,
                format!(
                    "dportage: cannot create a job directory in {}: {e}; check that it exists \
                     and is writable by the server (TMPDIR)\n",
                    cfg.work_root.display()
                ),
                JobResult::Internal,
            )
        }
    };
    let input_name = format!("{INPUT_STEM}{}", cmd.input_ext);
    // A page-cache write of the already-bounded source; not worth a thread hop.
    if let Err(e) = dir.write_new(&input_name, source) {
        return JobOutcome::fabricated(
            exitcode::IO_ERROR,
            format!(
                "dportage: cannot write the job's source into {}: {e}\n",
                dir.path().display()
            ),
            JobResult::Internal,
        );
    }
    let running = match start_compiler(cmd, cfg, dir.path()).await {
        Ok(running) => running,
        Err(e) => {
            return JobOutcome::fabricated(
                exitcode::COMPILER_MISSING,
                format!(
                    "dportage: cannot start the sandbox trampoline {}: {e}\n",
                    cfg.self_exe.display()
                ),
                JobResult::Internal,
            )
        }
    };
    let outcome = collect(running, cfg, &dir, cancelled).await;
    drop(dir);
    outcome
}

/// Is the configured sandbox possible on this kernel? `Required` without
/// Landlock fails every job; `BestEffort` warns once and runs unconfined.
fn sandbox_possible(mode: SandboxMode) -> Result<(), JobOutcome> {
    static LANDLOCK_ABI: OnceLock<i32> = OnceLock::new();
    static WARNED: OnceLock<()> = OnceLock::new();
    if mode == SandboxMode::Off {
        return Ok(());
    }
    let abi = *LANDLOCK_ABI.get_or_init(sandbox::landlock_abi);
    if abi > 0 {
        return Ok(());
    }
    match mode {
        SandboxMode::Required => Err(JobOutcome::fabricated(
            exitcode::COMPILER_MISSING,
            format!("dportage: {}\n", sandbox::NO_LANDLOCK),
            JobResult::Internal,
        )),
        _ => {
            WARNED.get_or_init(|| {
                tracing::warn!(
                    "the kernel offers no Landlock sandbox: compilers run with rlimits only and \
                     can read every file this server can (use a kernel with Landlock, or \
                     --sandbox required to refuse jobs instead)"
                )
            });
            Ok(())
        }
    }
}

/// A started job: its supervisor (the zygote or a trampoline) and its pipes.
struct Running {
    /// The process group to kill as a last resort: the trampoline's, or the
    /// compiler's own session when the zygote started it.
    pid: Option<i32>,
    /// Holding it keeps the job alive; dropping it stops the job.
    control: Box<dyn Send>,
    stdout: Box<dyn AsyncRead + Unpin + Send>,
    stderr: Box<dyn AsyncRead + Unpin + Send>,
    /// The compiler's wait status, as its supervisor reports it.
    status: Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send>>,
}

/// How long a live zygote may take to read the spec and start the compiler
/// before the job uses the trampoline instead.
const ZYGOTE_ANSWER: Duration = Duration::from_secs(10);

/// Start the job's compiler: by the zygote when the daemon has one, else
/// through the trampoline (`dportage __sandbox-exec`). Both confine it with
/// the same `confine::Prepared`.
async fn start_compiler(
    cmd: &ServerCommand,
    cfg: &JobConfig,
    job_dir: &Path,
) -> std::io::Result<Running> {
    let spec = SandboxSpec::for_job(job_dir, &cfg.limits, cfg.sandbox);
    let mut words = spec.to_args();
    words.push("--".into());
    words.push(cmd.compiler.clone().into());
    words.extend(canonical_args(cmd, job_dir));
    words.extend(cmd.args.iter().map(OsString::from));
    let path = compiler_search_path(cfg);
    let env: [(&str, &OsStr); 6] = [
        ("PATH", &path),
        ("LC_ALL", OsStr::new("C")),
        ("LANG", OsStr::new("C")),
        ("TMPDIR", job_dir.as_os_str()),
        ("HOME", job_dir.as_os_str()),
        ("_DISTCC_SAFEGUARD", OsStr::new("1")),
    ];
    if let Some(zygote) = zygote::get() {
        match start_with_zygote(zygote, job_dir, &env, &words).await {
            Ok(running) => return Ok(running),
            Err(e) => {
                static WARNED: OnceLock<()> = OnceLock::new();
                WARNED.get_or_init(|| {
                    tracing::warn!(
                        "the sandbox zygote did not start a job ({e}); using the trampoline"
                    )
                });
            }
        }
    }
    spawn_trampoline(cfg, job_dir, &env, &words)
}

async fn start_with_zygote(
    zygote: &zygote::Zygote,
    job_dir: &Path,
    env: &[(&str, &OsStr)],
    words: &[OsString],
) -> std::io::Result<Running> {
    let spec = zygote::encode_spec(job_dir.as_os_str(), env, words)
        .ok_or_else(|| std::io::Error::other("the job's command does not fit the zygote's spec"))?;
    let launched = zygote.launch()?;
    launched.job.set_nonblocking(true)?;
    let (mut from_zygote, mut to_zygote) =
        tokio::net::UnixStream::from_std(launched.job)?.into_split();
    let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(launched.stdout)?;
    let stderr = tokio::net::unix::pipe::Receiver::from_owned_fd(launched.stderr)?;
    let answer = async {
        to_zygote.write_all(&spec).await?;
        let mut pid = [0u8; 4];
        from_zygote.read_exact(&mut pid).await?;
        Ok::<_, std::io::Error>(i32::from_ne_bytes(pid))
    };
    let pid = tokio::time::timeout(ZYGOTE_ANSWER, answer)
        .await
        .map_err(|_| std::io::Error::other("no answer from the sandbox zygote"))??;
    let status = async move {
        let mut raw = [0u8; 4];
        from_zygote.read_exact(&mut raw).await.map_err(|e| {
            std::io::Error::other(format!(
                "the sandbox zygote ended without reporting the compiler's status ({e})"
            ))
        })?;
        Ok(ExitStatus::from_raw(i32::from_ne_bytes(raw)))
    };
    Ok(Running {
        // 0 means the zygote could not start the compiler (it reports why on
        // the job's stderr); never let that become `kill(-0)`.
        pid: (pid > 1).then_some(pid),
        control: Box::new(to_zygote),
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        status: Box::pin(status),
    })
}

fn spawn_trampoline(
    cfg: &JobConfig,
    job_dir: &Path,
    env: &[(&str, &OsStr)],
    words: &[OsString],
) -> std::io::Result<Running> {
    let mut command = tokio::process::Command::new(&cfg.self_exe);
    command
        .arg(sandbox::SUBCOMMAND)
        .args(words)
        .current_dir(job_dir)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: signals meant for the daemon's group (a
        // terminal's ^C) do not reach the job, and the daemon's last-resort
        // kill reaches only the trampoline's group.
        .process_group(0);
    let mut child = command.spawn()?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let (Some(control), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("the trampoline's pipes are missing"));
    };
    Ok(Running {
        pid,
        control: Box::new(control),
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        status: Box::pin(async move { child.wait().await }),
    })
}

/// The compiler's `PATH`: `compiler_path` without the masquerade directories
/// (their entries are links to a distcc client, which would only recurse)
/// and without relative entries (they would resolve in the job directory,
/// where the client's bytes are).
fn compiler_search_path(cfg: &JobConfig) -> OsString {
    // Resolving every directory costs a few syscalls per path component; the
    // answer only changes with the configuration, so keep the last one.
    type Cached = (OsString, Vec<PathBuf>, OsString);
    static LAST: std::sync::Mutex<Option<Cached>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((path, dirs, answer)) = last.as_ref() {
        if *path == cfg.compiler_path && *dirs == cfg.masquerade_dirs {
            return answer.clone();
        }
    }
    let answer = resolve_compiler_search_path(cfg);
    *last = Some((
        cfg.compiler_path.clone(),
        cfg.masquerade_dirs.clone(),
        answer.clone(),
    ));
    answer
}

fn resolve_compiler_search_path(cfg: &JobConfig) -> OsString {
    let masquerade: Vec<PathBuf> = cfg
        .masquerade_dirs
        .iter()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        .collect();
    let kept: Vec<PathBuf> = std::env::split_paths(&cfg.compiler_path)
        .filter(|dir| dir.is_absolute())
        .filter(|dir| {
            let resolved = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            !masquerade.contains(&resolved)
        })
        .collect();
    std::env::join_paths(kept).unwrap_or_default()
}

/// Which compiler driver a name is, for the flags that pin its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Clang,
    /// gcc and everything else (`cc`, `c++`, cross gcc names).
    Gcc,
}

fn family(compiler: &str) -> Family {
    let name = compiler.rsplit('/').next().unwrap_or(compiler);
    if name.contains("clang") {
        Family::Clang
    } else {
        Family::Gcc
    }
}

/// Flags the server puts before the client's, so the object and diagnostics
/// do not depend on the job directory's name:
///
/// * `-pipe`: assembler messages name `{standard input}`, not a random
///   temporary file.
/// * gcc: `-fdebug-prefix-map=JOBDIR=.`. With `-g`, gcc takes
///   `DW_AT_comp_dir` from the `# 1 "/client/cwd//"` line the client's
///   preprocessor wrote, so this changes nothing then; without that line the
///   directory would be the job directory. gcc leaves prefix maps out of
///   `DW_AT_producer` and `-frecord-gcc-switches`, so the map's own text
///   does not leak into the object.
/// * clang ignores that line and records its cwd, and records its whole
///   command line with `-grecord-command-line`, so it gets no job-directory
///   path at all: `-ffile-compilation-dir=.`, unless the client chose a
///   compilation directory itself (as dual dispatch clients do with `$PWD`,
///   which makes the object identical to a local compile).
fn canonical_args(cmd: &ServerCommand, job_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if !cmd.args.iter().any(|a| a == "-pipe") {
        args.push("-pipe".into());
    }
    match family(&cmd.compiler) {
        Family::Clang => {
            let chosen = cmd.args.iter().any(|a| {
                a.starts_with("-fdebug-compilation-dir") || a.starts_with("-ffile-compilation-dir")
            });
            if !chosen {
                args.push("-ffile-compilation-dir=.".into());
            }
        }
        Family::Gcc => {
            // gcc splits the map at the first `=`; a directory with one in
            // its name cannot be mapped (and is never one we create).
            if !job_dir.as_os_str().as_bytes().contains(&b'=') {
                let mut map = OsString::from("-fdebug-prefix-map=");
                map.push(job_dir.as_os_str());
                map.push("=.");
                args.push(map);
            }
        }
    }
    args
}

/// Output of one pipe, kept up to a cap, counted in full.
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

impl Captured {
    /// The kept bytes, with a note when some were cut.
    fn into_text(mut self, cap: usize, what: &str) -> Vec<u8> {
        if self.total > self.kept.len() as u64 {
            if self.kept.last().is_some_and(|&b| b != b'\n') {
                self.kept.push(b'\n');
            }
            self.kept.extend_from_slice(
                format!(
                    "dportage: compiler {what} cut after {cap} bytes ({} bytes in total)\n",
                    self.total
                )
                .as_bytes(),
            );
        }
        self.kept
    }
}

/// Read a pipe to EOF, keeping at most `cap` bytes and discarding the rest,
/// so the compiler never blocks on a full pipe. Reads straight into the kept
/// buffer (no zeroed scratch buffer per job: most compilers print nothing).
async fn read_bounded(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> Captured {
    let mut captured = Captured {
        kept: Vec::new(),
        total: 0,
    };
    let Some(mut pipe) = pipe else {
        return captured;
    };
    let mut discard = Vec::new();
    loop {
        let room = cap.saturating_sub(captured.kept.len());
        let (target, limit) = if room > 0 {
            captured.kept.reserve(room.min(16 * 1024));
            (&mut captured.kept, room)
        } else {
            discard.clear();
            discard.reserve(16 * 1024);
            (&mut discard, usize::MAX)
        };
        let limit = limit.min(target.capacity() - target.len());
        let result = (&mut pipe).take(limit as u64).read_buf(target).await;
        match result {
            Ok(0) => return captured,
            Ok(n) => captured.total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return captured,
        }
    }
}

/// Why the daemon stopped a job before it ended.
enum Stop {
    Timeout,
    Cancelled,
}

async fn collect(
    running: Running,
    cfg: &JobConfig,
    dir: &JobDir,
    cancelled: impl Future<Output = ()>,
) -> JobOutcome {
    let cap = cfg.limits.max_diagnostics;
    let Running {
        pid: trampoline_pid,
        control,
        stdout,
        stderr,
        status,
    } = running;
    let finished = async {
        tokio::join!(
            status,
            read_bounded(Some(stdout), cap),
            read_bounded(Some(stderr), cap)
        )
    };
    tokio::pin!(finished);
    tokio::pin!(cancelled);

    let stop = tokio::select! {
        biased;
        (status, out, err) = &mut finished => {
            drop(control);
            return finish(status, out, err, cfg, dir).await;
        }
        () = &mut cancelled => Stop::Cancelled,
        () = tokio::time::sleep(cfg.limits.wall) => Stop::Timeout,
    };

    drop(control);
    let drained = match tokio::time::timeout(STOP_GRACE, &mut finished).await {
        Ok(done) => Some(done),
        Err(_) => {
            // The trampoline did not stop the job in time: kill it (its own
            // group; the compiler's session is out of reach from here).
            if let Some(pid) = trampoline_pid {
                // SAFETY: signalling the process group we created.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            tokio::time::timeout(STOP_GRACE, &mut finished).await.ok()
        }
    };
    let (stdout, mut stderr) = match drained {
        Some((_, out, err)) => (out.into_text(cap, "stdout"), err.into_text(cap, "stderr")),
        None => (Vec::new(), Vec::new()),
    };
    let (code, message, result) = match stop {
        Stop::Timeout => (
            exitcode::TIMEOUT,
            format!(
                "dportage: Compilation takes too long, timeout. (this server's limit is {} s)\n",
                cfg.limits.wall.as_secs_f64()
            ),
            JobResult::Timeout,
        ),
        Stop::Cancelled => (
            exitcode::IO_ERROR,
            "dportage: Client fd disconnected, killing job\n".to_string(),
            JobResult::ClientDisconnected,
        ),
    };
    stderr.extend_from_slice(message.as_bytes());
    JobOutcome {
        status: (code as u32) << 8,
        stderr,
        stdout,
        object: Vec::new(),
        result,
    }
}

/// The compiler ended on its own: status, diagnostics, and the object if it succeeded.
async fn finish(
    status: std::io::Result<std::process::ExitStatus>,
    out: Captured,
    err: Captured,
    cfg: &JobConfig,
    dir: &JobDir,
) -> JobOutcome {
    let cap = cfg.limits.max_diagnostics;
    let stdout = out.into_text(cap, "stdout");
    let mut stderr = err.into_text(cap, "stderr");
    let status = match status {
        Ok(status) => status.into_raw() as u32,
        Err(e) => {
            stderr.extend_from_slice(
                format!("dportage: lost track of the compiler process: {e}\n").as_bytes(),
            );
            return JobOutcome {
                status: (exitcode::DISTCC_FAILED as u32) << 8,
                stderr,
                stdout,
                object: Vec::new(),
                result: JobResult::Internal,
            };
        }
    };
    let output = dir.path().join(OUTPUT_NAME);
    if status != 0 {
        explain_limit(&mut stderr, status, &output, &cfg.limits);
        let exited_with = (status & 0x7f == 0).then_some((status >> 8) as i32);
        let result = match exited_with {
            // The trampoline's own failures: no compiler, no sandbox, bad spec.
            Some(exitcode::COMPILER_MISSING | exitcode::BAD_ARGUMENTS) => JobResult::Internal,
            _ => JobResult::CompileError,
        };
        return JobOutcome {
            status,
            stderr,
            stdout,
            object: Vec::new(),
            result,
        };
    }
    let limit = cfg.limits.max_output;
    let read = tokio::task::spawn_blocking(move || read_object(&output, limit)).await;
    match read {
        Ok(Ok(object)) => JobOutcome {
            status,
            stderr,
            stdout,
            object,
            result: JobResult::CompileOk,
        },
        Ok(Err(e)) => internal_failure(stderr, stdout, &e.to_string()),
        Err(e) => internal_failure(stderr, stdout, &format!("reading the object failed: {e}")),
    }
}

/// The job ran, but the daemon could not collect its result: distcc's own
/// failure status, with the reason after the compiler's diagnostics.
fn internal_failure(mut stderr: Vec<u8>, stdout: Vec<u8>, why: &str) -> JobOutcome {
    stderr.extend_from_slice(format!("dportage: {why}\n").as_bytes());
    JobOutcome {
        status: (exitcode::DISTCC_FAILED as u32) << 8,
        stderr,
        stdout,
        object: Vec::new(),
        result: JobResult::Internal,
    }
}

/// Why a successful compile's object cannot be sent; the client is told in
/// `SERR` and compiles locally.
#[derive(Debug, thiserror::Error)]
enum ObjectError {
    #[error(
        "the compiler reported success but its output {} cannot be opened: {0}",
        OUTPUT_NAME
    )]
    Open(std::io::Error),
    #[error("cannot inspect the output {}: {0}", OUTPUT_NAME)]
    Inspect(std::io::Error),
    #[error(
        "the compiler's output is {size} bytes, more than this server's limit of {limit} \
         bytes (--max-object-size); compile this file locally"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("cannot read the output {}: {0}", OUTPUT_NAME)]
    Read(std::io::Error),
    #[error("the compiler's output grew beyond this server's limit of {0} bytes while being read")]
    Grew(u64),
}

/// Read the object, refusing (without reading) one larger than `limit`.
fn read_object(path: &Path, limit: u64) -> Result<Vec<u8>, ObjectError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ObjectError::Open)?;
    let size = file.metadata().map_err(ObjectError::Inspect)?.len();
    if size > limit {
        return Err(ObjectError::TooLarge { size, limit });
    }
    let mut object = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut object)
        .map_err(ObjectError::Read)?;
    if object.len() as u64 > limit {
        return Err(ObjectError::Grew(limit));
    }
    Ok(object)
}

/// Add a line saying which server limit stopped a failed compile, when one did.
/// Compilers report a killed child with the signal's `strsignal` text, which
/// `LC_ALL=C` keeps fixed.
fn explain_limit(stderr: &mut Vec<u8>, status: u32, output: &Path, limits: &JobLimits) {
    let signal = (status & 0x7f) as i32;
    let says = |text: &str| stderr.windows(text.len()).any(|w| w == text.as_bytes());
    let output_full = std::fs::metadata(output).is_ok_and(|m| m.len() >= limits.max_output);
    let note = if signal == libc::SIGXFSZ || output_full || says("File size limit exceeded") {
        format!(
            "dportage: the compiler hit this server's limit of {} bytes per output file \
             (--max-object-size); compile this file locally",
            limits.max_output
        )
    } else if signal == libc::SIGXCPU || says("CPU time limit exceeded") {
        format!(
            "dportage: the compiler hit this server's CPU time limit of {} s",
            limits.cpu_secs
        )
    } else if says("out of memory") || says("virtual memory exhausted") {
        format!(
            "dportage: the compiler hit this server's memory limit of {} bytes of address space",
            limits.address_space
        )
    } else {
        return;
    };
    if stderr.last().is_some_and(|&b| b != b'\n') {
        stderr.push(b'\n');
    }
    stderr.extend_from_slice(note.as_bytes());
    stderr.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_mode_spelling_round_trips() {
        for mode in [
            SandboxMode::Required,
            SandboxMode::BestEffort,
            SandboxMode::Off,
        ] {
            assert_eq!(SandboxMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(SandboxMode::parse("yes"), None);
    }

    fn command(compiler: &str, args: &[&str]) -> ServerCommand {
        ServerCommand {
            compiler: compiler.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            input_ext: ".i",
        }
    }

    #[test]
    fn canonical_args_pin_debug_paths_per_compiler() {
        let dir = Path::new("/w/dportage-job-1");
        let gcc = canonical_args(&command("/usr/bin/gcc", &["-g"]), dir);
        assert_eq!(gcc, ["-pipe", "-fdebug-prefix-map=/w/dportage-job-1=."]);
        let clang = canonical_args(&command("clang++-14", &["-pipe", "-g"]), dir);
        assert_eq!(clang, ["-ffile-compilation-dir=."]);
        let chosen = command("clang", &["-fdebug-compilation-dir=/home/u"]);
        assert_eq!(canonical_args(&chosen, dir), ["-pipe"]);
        let odd = canonical_args(&command("gcc", &[]), Path::new("/w/a=b"));
        assert_eq!(odd, ["-pipe"]);
    }

    #[test]
    fn compiler_path_skips_masquerade_and_relative_dirs() {
        let masq = tempfile::tempdir().unwrap();
        let cfg = JobConfig {
            masquerade_dirs: vec![masq.path().to_path_buf()],
            extra_compilers: Vec::new(),
            insecure_compilers: false,
            compiler_path: format!("{}:bin:/usr/bin:.:/bin", masq.path().display()).into(),
            work_root: PathBuf::from("/tmp"),
            limits: JobLimits::default(),
            sandbox: SandboxMode::Off,
            self_exe: PathBuf::from("/nonexistent"),
        };
        assert_eq!(compiler_search_path(&cfg), "/usr/bin:/bin");
    }

    #[test]
    fn captured_output_is_cut_with_a_note() {
        let c = Captured {
            kept: b"abc".to_vec(),
            total: 10,
        };
        let text = String::from_utf8(c.into_text(3, "stderr")).unwrap();
        assert_eq!(
            text,
            "abc\ndportage: compiler stderr cut after 3 bytes (10 bytes in total)\n"
        );
        let c = Captured {
            kept: b"all\n".to_vec(),
            total: 4,
        };
        assert_eq!(c.into_text(3, "stdout"), b"all\n");
    }

    #[tokio::test]
    async fn read_bounded_keeps_cap_and_counts_everything() {
        let data = vec![b'x'; 100_000];
        let c = read_bounded(Some(&data[..]), 1000).await;
        assert_eq!(c.kept.len(), 1000);
        assert_eq!(c.total, 100_000);
    }

    #[test]
    fn object_bigger_than_the_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTPUT_NAME);
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: 1 GiB on paper, nothing on disk.
        file.set_len(1 << 30).unwrap();
        let e = read_object(&path, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("1073741824 bytes"), "{e}");
        std::fs::write(&path, b"\x7fELF").unwrap();
        assert_eq!(read_object(&path, 4).unwrap(), b"\x7fELF");
        let e = read_object(&dir.path().join("missing"), 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dportage-job.o cannot be opened: "), "{e}");
    }
}
