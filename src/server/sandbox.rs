//! The compiler sandbox. The restrictions (Landlock, seccomp, rlimits,
//! no-new-privs) are prepared in a single-threaded process and applied by the
//! compiler's child between fork and exec, never between fork and exec of the
//! multi-threaded daemon. Normally that process is the [`zygote`]; when the
//! daemon has none, the daemon runs its own binary as a trampoline
//! (`dportage __sandbox-exec …`), which stays alive as a small supervisor
//! while the compiler runs:
//!
//! ```text
//! daemon ──spawn──▶ dportage __sandbox-exec   (own process group; child subreaper)
//!                     └─clone(VM|VFORK)─▶ confine, exec ▶ gcc   (own session = process group)
//!                                                └─▶ cc1, as …
//! ```
//!
//! * It is a child subreaper, so every process the compiler leaves behind comes
//!   back to it and is reaped: no zombies or strays even where PID 1 reaps
//!   nothing (containers where the daemon is PID 1, this test machine).
//! * With `--control-stdin`, its stdin is a pipe from the daemon. EOF on it
//!   (the daemon cancelled the job, dropped it, or died) makes it kill the
//!   compiler's process group, reap everything, remove the job directory and
//!   exit. The compiler itself gets `/dev/null` as stdin.
//! * It passes the compiler's wait status on: the exit code, or the same
//!   signal re-raised on itself, so the daemon sees the compiler's raw status.
//!
//! Nothing is written to stderr on the success path: the compiler's stderr is
//! reply material and must be identical on every server.

mod confine;
mod spawn;
pub mod zygote;

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::limits::{JobLimits, SandboxMode};
use crate::exitcode;

pub use confine::{toolchain_read_paths, JOB_DIR_ACCESS, NO_LANDLOCK};

/// The subcommand of `dportage` that runs the trampoline.
pub const SUBCOMMAND: &str = "__sandbox-exec";

/// How long a supervisor (trampoline or zygote) keeps killing and reaping
/// stragglers after the compiler ended before it gives up on them.
const REAP_GRACE: Duration = Duration::from_secs(3);

/// A trampoline or zygote command line that cannot be run. The daemon writes
/// these itself, so one means a bug or a hand-made `dportage __sandbox-exec`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("missing `-- COMPILER ARGS…`")]
    NoSeparator,
    #[error("option {0:?} is not UTF-8")]
    NotUtf8(OsString),
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("option {option} needs a number, not {value:?}")]
    NotANumber { option: String, value: OsString },
    #[error("--min-nice needs a number from -20 to 19, not {0:?}")]
    Nice(OsString),
    #[error("--sandbox takes required, best-effort or off, not {0:?}")]
    Mode(OsString),
    #[error("unknown option {0}")]
    UnknownOption(String),
    #[error("no compiler given after `--`")]
    NoCompiler,
    #[error("--job-dir must be absolute, not {0:?}")]
    RelativeJobDir(PathBuf),
    #[error("--job-dir is required")]
    NoJobDir,
}

/// What the trampoline is told on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The private job directory: the only place the compiler may write.
    pub job_dir: PathBuf,
    /// RLIMIT_CPU seconds (soft; the hard limit is two seconds later).
    pub cpu_secs: u64,
    /// RLIMIT_AS bytes.
    pub address_space: u64,
    /// RLIMIT_FSIZE bytes.
    pub max_file_size: u64,
    /// RLIMIT_NOFILE.
    pub max_open_files: u64,
    /// RLIMIT_NPROC (per user; not enforced for root).
    pub max_processes: u64,
    /// Lowest priority the compiler runs at (nice value raised to at least this).
    pub min_nice: i32,
    pub mode: SandboxMode,
    /// Stdin is the daemon's control pipe: EOF means stop the job.
    pub control_stdin: bool,
}

impl SandboxSpec {
    /// The spec for one job of the daemon.
    pub fn for_job(job_dir: &Path, limits: &JobLimits, mode: SandboxMode) -> Self {
        Self {
            job_dir: job_dir.to_path_buf(),
            cpu_secs: limits.cpu_secs,
            address_space: limits.address_space,
            max_file_size: limits.max_output,
            max_open_files: limits.max_open_files,
            max_processes: limits.max_processes,
            min_nice: limits.min_nice,
            mode,
            control_stdin: true,
        }
    }

    /// The options as command-line words (everything before `--`).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["--job-dir".into(), self.job_dir.clone().into_os_string()];
        for (name, value) in [
            ("--cpu-secs", self.cpu_secs),
            ("--address-space", self.address_space),
            ("--max-file-size", self.max_file_size),
            ("--max-open-files", self.max_open_files),
            ("--max-processes", self.max_processes),
        ] {
            args.push(name.into());
            args.push(value.to_string().into());
        }
        args.push("--min-nice".into());
        args.push(self.min_nice.to_string().into());
        args.push("--sandbox".into());
        args.push(self.mode.as_str().into());
        if self.control_stdin {
            args.push("--control-stdin".into());
        }
        args
    }

    /// Parse `OPTIONS… -- COMPILER ARGS…`. Options not given take the
    /// defaults of [`JobLimits`] and `--sandbox required`; `--job-dir` is mandatory.
    pub fn parse(args: &[OsString]) -> Result<(Self, Vec<OsString>), SpecError> {
        let defaults = JobLimits::default();
        let mut job_dir = None;
        let mut spec = Self {
            job_dir: PathBuf::new(),
            cpu_secs: defaults.cpu_secs,
            address_space: defaults.address_space,
            max_file_size: defaults.max_output,
            max_open_files: defaults.max_open_files,
            max_processes: defaults.max_processes,
            min_nice: defaults.min_nice,
            mode: SandboxMode::Required,
            control_stdin: false,
        };
        let mut words = args.iter();
        loop {
            let Some(word) = words.next() else {
                return Err(SpecError::NoSeparator);
            };
            let word = word
                .to_str()
                .ok_or_else(|| SpecError::NotUtf8(word.clone()))?;
            if word == "--" {
                break;
            }
            if word == "--control-stdin" {
                spec.control_stdin = true;
                continue;
            }
            let value = words
                .next()
                .ok_or_else(|| SpecError::MissingValue(word.to_owned()))?;
            let number = || -> Result<u64, SpecError> {
                value
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| SpecError::NotANumber {
                        option: word.to_owned(),
                        value: value.clone(),
                    })
            };
            match word {
                "--job-dir" => job_dir = Some(PathBuf::from(value)),
                "--cpu-secs" => spec.cpu_secs = number()?,
                "--address-space" => spec.address_space = number()?,
                "--max-file-size" => spec.max_file_size = number()?,
                "--max-open-files" => spec.max_open_files = number()?,
                "--max-processes" => spec.max_processes = number()?,
                "--min-nice" => {
                    spec.min_nice = value
                        .to_str()
                        .and_then(|v| v.parse().ok())
                        .filter(|n| (-20..=19).contains(n))
                        .ok_or_else(|| SpecError::Nice(value.clone()))?
                }
                "--sandbox" => {
                    spec.mode = value
                        .to_str()
                        .and_then(SandboxMode::parse)
                        .ok_or_else(|| SpecError::Mode(value.clone()))?
                }
                other => return Err(SpecError::UnknownOption(other.to_owned())),
            }
        }
        let command: Vec<OsString> = words.cloned().collect();
        if command.is_empty() {
            return Err(SpecError::NoCompiler);
        }
        match job_dir {
            Some(dir) if dir.is_absolute() => spec.job_dir = dir,
            Some(dir) => return Err(SpecError::RelativeJobDir(dir)),
            None => return Err(SpecError::NoJobDir),
        }
        Ok((spec, command))
    }
}

/// Entry point of the trampoline: `dportage __sandbox-exec ARGS…`. Runs the
/// compiler confined and returns its exit code (or dies of its signal).
pub fn exec_main(args: Vec<OsString>) -> i32 {
    let (spec, command) = match SandboxSpec::parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("dportage {SUBCOMMAND}: {e}");
            return exitcode::BAD_ARGUMENTS;
        }
    };
    match supervise(&spec, &command) {
        End::Exited(code) => code,
        End::Signaled(signal) => die_of(signal),
        End::Cancelled => exitcode::IO_ERROR,
    }
}

/// The subcommand that runs one command through a zygote, as the daemon does.
pub const ZYGOTE_SUBCOMMAND: &str = "__zygote-exec";

/// `dportage __zygote-exec ARGS…` (same arguments as [`SUBCOMMAND`]): start a
/// zygote, run the command through it exactly as the daemon runs a job, relay
/// its output and end like it. For tests of the zygote's confinement with
/// arbitrary commands; must be called while the process is single-threaded.
pub fn zygote_exec_main(args: Vec<OsString>) -> i32 {
    use std::io::{Read, Write};
    if let Err(e) = SandboxSpec::parse(&args) {
        eprintln!("dportage {ZYGOTE_SUBCOMMAND}: {e}");
        return exitcode::BAD_ARGUMENTS;
    }
    let run = || -> std::io::Result<u32> {
        zygote::start()?;
        let zygote = zygote::get().ok_or_else(|| std::io::Error::other("no zygote"))?;
        let cwd = std::env::current_dir()?;
        let vars: Vec<(String, OsString)> = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
            .collect();
        let env: Vec<(&str, &OsStr)> = vars
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_os_str()))
            .collect();
        let spec = zygote::encode_spec(cwd.as_os_str(), &env, &args)
            .ok_or_else(|| std::io::Error::other("the command does not fit a zygote spec"))?;
        let launched = zygote.launch()?;
        let mut job = launched.job;
        job.write_all(&spec)?;
        let relay = |fd: std::os::fd::OwnedFd, to_stdout: bool| {
            std::thread::spawn(move || {
                let mut from = std::fs::File::from(fd);
                let mut bytes = Vec::new();
                let _ = from.read_to_end(&mut bytes);
                let _ = if to_stdout {
                    std::io::stdout().write_all(&bytes)
                } else {
                    std::io::stderr().write_all(&bytes)
                };
            })
        };
        let out = relay(launched.stdout, true);
        let err = relay(launched.stderr, false);
        let mut word = [0u8; 4];
        job.read_exact(&mut word)?; // the pid
        job.read_exact(&mut word)?; // the wait status
        let _ = out.join();
        let _ = err.join();
        Ok(u32::from_ne_bytes(word))
    };
    match run() {
        Ok(status) if status & 0x7f != 0 => die_of((status & 0x7f) as i32),
        Ok(status) => ((status >> 8) & 0xff) as i32,
        Err(e) => {
            eprintln!("dportage {ZYGOTE_SUBCOMMAND}: {e}");
            exitcode::IO_ERROR
        }
    }
}

/// How the compiler's process ended, as far as the supervisor cares.
enum End {
    Exited(i32),
    Signaled(i32),
    /// The daemon closed the control pipe; the compiler was killed.
    Cancelled,
}

/// Run the compiler confined and wait for it (and every straggler). Failures
/// before the compiler runs are reported on stderr and as an exit code.
fn supervise(spec: &SandboxSpec, command: &[OsString]) -> End {
    close_inherited_fds();
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let ready = match spawn::Ready::new(spec, command, &env, |program| {
        Rc::new(confine::Toolchain::open(program))
    }) {
        Ok(ready) => ready,
        Err(not_started) => {
            eprint!("{}", not_started.message);
            return End::Exited(not_started.code);
        }
    };

    // SAFETY: plain prctl; the flag only changes who reaps our orphans.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // The control pipe on stdin is for us; the compiler then reads /dev/null.
    let stdin = (!spec.control_stdin).then_some(0);
    let mut stack = spawn::ChildStack::new();
    let pid = match ready.start(c".", stdin, 1, 2, &mut stack) {
        Ok(pid) => pid,
        Err(not_started) => {
            eprint!("{}", not_started.message);
            return End::Exited(not_started.code);
        }
    };

    let end = wait_compiler(pid, spec.control_stdin);
    // The compiler is gone; anything left in its group is a straggler.
    kill_group(pid);
    reap_everything();
    if let End::Cancelled = end {
        // The daemon may have dropped the job without waiting for us.
        let _ = std::fs::remove_dir_all(&spec.job_dir);
    }
    end
}

/// Resolve the compiler like `execvp`: a name with `/` as is (falling back to
/// its basename in `PATH`, as distccd does), otherwise the first executable
/// `PATH` entry. Relative `PATH` entries (the job directory!) are skipped.
fn find_program(name: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    let as_path = Path::new(name);
    if name.as_bytes().contains(&b'/') {
        if is_executable_file(as_path) {
            return Some(as_path.to_path_buf());
        }
        return find_program(as_path.file_name()?, path);
    }
    if name.is_empty() {
        return None;
    }
    std::env::split_paths(path?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c_path is NUL-terminated.
    meta.is_file() && unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } == 0
}

/// The daemon's descriptors are close-on-exec already; this also covers
/// anything a future caller forgets.
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; unsupported kernels return ENOSYS.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Wait for the compiler; with a control pipe, also watch it for EOF.
fn wait_compiler(pid: libc::pid_t, control_stdin: bool) -> End {
    if control_stdin {
        // SAFETY: pidfd_open takes a pid and flags, returns a new descriptor.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        // Without pidfd (Linux < 5.3) fall back to polling the child.
        let tick = if pidfd >= 0 { -1 } else { 20 };
        loop {
            if let Some(end) = try_wait(pid) {
                return end;
            }
            let mut fds = [
                libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let count = if pidfd >= 0 { 2 } else { 1 };
            // SAFETY: fds is a valid array of `count` pollfd entries.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, tick) };
            if ready > 0 && fds[0].revents != 0 && control_says_stop() {
                kill_group(pid);
                while wait_blocking(pid).is_none() {}
                return End::Cancelled;
            }
        }
    }
    loop {
        if let Some(end) = wait_blocking(pid) {
            return end;
        }
    }
}

/// Anything readable on the control pipe (EOF, error or a stray byte) means stop.
fn control_says_stop() -> bool {
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into a valid buffer.
    let n = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
    !(n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted)
}

fn try_wait(pid: libc::pid_t) -> Option<End> {
    let mut status = 0;
    // SAFETY: waitpid with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (r == pid).then(|| decode(status))
}

fn wait_blocking(pid: libc::pid_t) -> Option<End> {
    let mut status = 0;
    // SAFETY: waitpid with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r == pid {
        return Some(decode(status));
    }
    if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
        // Not our child any more (cannot happen): report a failure, don't spin.
        return Some(End::Exited(exitcode::DISTCC_FAILED));
    }
    None
}

fn decode(status: i32) -> End {
    if libc::WIFSIGNALED(status) {
        End::Signaled(libc::WTERMSIG(status))
    } else {
        End::Exited(libc::WEXITSTATUS(status))
    }
}

/// SIGKILL the compiler's process group, and the compiler itself in case it
/// had not reached `setsid` yet.
fn kill_group(pid: libc::pid_t) {
    // SAFETY: signals to a process group and a pid we created.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Reap every descendant that was reparented to us, killing any still alive,
/// for at most [`REAP_GRACE`].
fn reap_everything() {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
        if r > 0 {
            continue;
        }
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return; // ECHILD: nothing left
        }
        if start.elapsed() > REAP_GRACE {
            return;
        }
        for child in own_children() {
            // SAFETY: signalling a child of ours.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Our direct children, from `/proc/self/task/*/children`.
fn own_children() -> Vec<libc::pid_t> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}

/// Pass a signal death on to the daemon: die of the same signal.
fn die_of(signal: i32) -> i32 {
    // SAFETY: making this process non-dumpable, restoring the default action
    // and raising the signal on ourselves.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    // Signals whose default action is to continue: report like a shell would.
    128 + signal
}

/// The Landlock ABI the running kernel offers (0: none), for the daemon's
/// decision whether a required sandbox is possible. Does not restrict anything.
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes a NULL attribute and size 0.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<OsString> {
        text.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn spec_round_trips_through_args() {
        let spec = SandboxSpec {
            job_dir: PathBuf::from("/tmp/dportage-job-1234"),
            cpu_secs: 7,
            address_space: 1 << 30,
            max_file_size: 12345,
            max_open_files: 64,
            max_processes: 99,
            min_nice: 7,
            mode: SandboxMode::BestEffort,
            control_stdin: true,
        };
        let mut args = spec.to_args();
        args.extend(words("-- gcc -c x.i"));
        let (parsed, command) = SandboxSpec::parse(&args).unwrap();
        assert_eq!(parsed, spec);
        assert_eq!(command, words("gcc -c x.i"));
    }

    #[test]
    fn parse_defaults_and_errors() {
        let (spec, command) = SandboxSpec::parse(&words("--job-dir /j -- cat")).unwrap();
        assert_eq!(spec.mode, SandboxMode::Required);
        assert!(!spec.control_stdin);
        assert_eq!(spec.max_file_size, JobLimits::default().max_output);
        assert_eq!(command, words("cat"));

        for (bad, why) in [
            ("--job-dir /j", "missing `--"),
            ("--job-dir /j --", "no compiler"),
            ("--job-dir rel -- cc", "absolute"),
            ("-- cc", "required"),
            ("--job-dir /j --cpu-secs x -- cc", "number"),
            ("--job-dir /j --sandbox maybe -- cc", "best-effort"),
            ("--job-dir /j --frobnicate 1 -- cc", "unknown option"),
            ("--job-dir", "needs a value"),
        ] {
            let e = SandboxSpec::parse(&words(bad)).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn finds_programs_like_execvp() {
        // /bin/sh exists on every Linux.
        let path = Some(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
        assert_eq!(
            find_program(OsStr::new("/bin/sh"), path),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(find_program(OsStr::new("sh"), path).is_some());
        // A path that does not exist falls back to its basename.
        assert!(find_program(OsStr::new("/nonexistent/dir/sh"), path).is_some());
        assert_eq!(find_program(OsStr::new("no-such-compiler-xyz"), path), None);
        assert_eq!(find_program(OsStr::new(""), path), None);
        assert_eq!(find_program(OsStr::new("sh"), None), None);
        assert_eq!(
            find_program(OsStr::new("sh"), Some(OsStr::new("bin:usr/bin"))),
            None
        );
    }
}
