//! Starting the confined compiler, for the zygote and the trampoline alike
//! ([`Ready`]), without copying the parent: a child made with
//! `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own, as `posix_spawn`
//! does. It shares its parent's memory until `execve`, so
//! there is no page-table copy, no copy-on-write fault and no re-faulting of
//! the daemon's code pages, which a `fork` per job paid for (most of the
//! server's own CPU per job). The price is discipline: between `clone` and
//! `execve` the child only makes system calls on memory prepared by the
//! parent ([`Plan`], [`confine::Prepared`]); it never allocates, locks or
//! unwinds. The parent is suspended until the child has exec'd or exited.

use std::ffi::{c_char, c_int, c_void, CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use super::{confine, find_program, SandboxSpec};
use crate::exitcode;

/// Why a compiler was not started: a line for the job's stderr and the exit
/// code the daemon reads, as for a compiler that failed that way.
#[derive(Debug)]
pub(super) struct NotStarted {
    pub message: String,
    pub code: i32,
}

impl NotStarted {
    fn new(code: i32, message: String) -> Self {
        NotStarted { message, code }
    }
}

/// A compiler ready to start, shared by the zygote and the trampoline: found
/// in the job's `PATH`, its words converted for `execve`, its confinement
/// prepared.
pub(super) struct Ready {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    prepared: confine::Prepared,
    exec_failed: Vec<u8>,
}

impl Ready {
    /// `command` is the compiler and its arguments, `env` its whole
    /// environment (its `PATH` finds the compiler); `toolchain` opens (or
    /// recalls) what the found compiler may read.
    pub(super) fn new(
        spec: &SandboxSpec,
        command: &[OsString],
        env: &[(OsString, OsString)],
        toolchain: impl FnOnce(&Path) -> Rc<confine::Toolchain>,
    ) -> Result<Self, NotStarted> {
        let path = env
            .iter()
            .find(|(name, _)| name == "PATH")
            .map(|(_, value)| value.as_os_str());
        let name = command.first().map_or(OsStr::new(""), |n| n.as_os_str());
        let program = find_program(name, path).ok_or_else(|| {
            NotStarted::new(
                exitcode::COMPILER_MISSING,
                format!(
                    "dportage: failed to exec {}: No such file or directory (searched PATH={})\n",
                    name.to_string_lossy(),
                    path.unwrap_or_default().to_string_lossy()
                ),
            )
        })?;
        let nul = |what: &str| {
            NotStarted::new(
                exitcode::BAD_ARGUMENTS,
                format!(
                    "dportage {}: {what} contains a NUL byte\n",
                    super::SUBCOMMAND
                ),
            )
        };
        let argv = command
            .iter()
            .map(|a| CString::new(a.as_bytes()).ok())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| nul("an argument"))?;
        let envp = env
            .iter()
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, value)| {
                let mut pair = name.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                CString::new(pair).ok()
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| nul("the environment"))?;
        let program_c =
            CString::new(program.as_os_str().as_bytes()).map_err(|_| nul("the compiler path"))?;
        let rules = confine::Rules::with_toolchain(spec, toolchain(&program));
        let prepared = confine::prepare(spec, &rules).map_err(|e| {
            NotStarted::new(
                exitcode::COMPILER_MISSING,
                format!("dportage: sandbox: {e}\n"),
            )
        })?;
        let exec_failed = format!("dportage: failed to exec {}: ", name.to_string_lossy());
        Ok(Ready {
            program: program_c,
            argv,
            envp,
            prepared,
            exec_failed: exec_failed.into_bytes(),
        })
    }

    /// Start the compiler in `job_dir` with these descriptors as 0, 1 and 2
    /// (`None` for stdin: `/dev/null`); returns its pid.
    pub(super) fn start(
        &self,
        job_dir: &CStr,
        stdin: Option<RawFd>,
        stdout: RawFd,
        stderr: RawFd,
        stack: &mut ChildStack,
    ) -> Result<libc::pid_t, NotStarted> {
        let null = match stdin {
            Some(_) => None,
            None => Some(open_dev_null().map_err(|e| {
                NotStarted::new(
                    exitcode::COMPILER_MISSING,
                    format!("dportage: sandbox: cannot open /dev/null for stdin: {e}\n"),
                )
            })?),
        };
        let argv = pointers(&self.argv);
        let envp = pointers(&self.envp);
        let plan = Plan {
            program: &self.program,
            argv: &argv,
            envp: &envp,
            job_dir,
            stdin: stdin.unwrap_or_else(|| null.as_ref().map_or(0, |fd| fd.as_raw_fd())),
            stdout,
            stderr,
            prepared: &self.prepared,
            exec_failed: &self.exec_failed,
        };
        spawn(&plan, stack).map_err(|e| {
            NotStarted::new(
                exitcode::OUT_OF_MEMORY,
                format!("dportage: cannot start the compiler: {e}\n"),
            )
        })
    }
}

fn open_dev_null() -> std::io::Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated literal.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Room for the child's few frames (system-call wrappers and `Prepared::apply`).
const CHILD_STACK: usize = 256 * 1024;

/// Everything the child needs, resolved by the parent.
struct Plan<'a> {
    program: &'a CStr,
    /// NULL-terminated.
    argv: &'a [*const c_char],
    /// NULL-terminated.
    envp: &'a [*const c_char],
    job_dir: &'a CStr,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    prepared: &'a confine::Prepared,
    /// `dportage: failed to exec NAME: `
    exec_failed: &'a [u8],
}

/// A reusable stack for [`spawn`] (one per zygote: it spawns one child at a time).
pub(super) struct ChildStack(Vec<u8>);

impl ChildStack {
    pub fn new() -> Self {
        ChildStack(vec![0u8; CHILD_STACK])
    }
}

/// Start the child; returns its pid once it has exec'd the compiler (or
/// exited after writing why it could not, with its exit code telling the
/// daemon as the trampoline's would).
fn spawn(plan: &Plan<'_>, stack: &mut ChildStack) -> std::io::Result<libc::pid_t> {
    // The stack grows down: hand clone its 16-byte aligned top.
    let top = stack.0.as_mut_ptr_range().end as usize & !15;
    // SAFETY: the child runs `child_main` on its own stack, reads `plan`
    // (alive: the parent is suspended until the child execs or exits, so the
    // borrow outlives every use) and only makes system calls.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            plan as *const Plan<'_> as *mut c_void,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid)
}

extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Plan` the parent passed to `spawn`, alive while
    // the parent is suspended.
    let plan = unsafe { &*(arg as *const Plan<'_>) };
    // SAFETY: system calls on this child's own descriptors, session, signal
    // dispositions and mask (no CLONE_FILES/CLONE_FS/CLONE_SIGHAND: all of
    // them are the child's copies), then exec or _exit.
    unsafe {
        // Own session = own process group: the zygote's and the daemon's
        // kills reach the compiler and everything it starts.
        libc::setsid();
        if libc::dup2(plan.stdin, 0) < 0
            || libc::dup2(plan.stdout, 1) < 0
            || libc::dup2(plan.stderr, 2) < 0
        {
            libc::_exit(exitcode::IO_ERROR);
        }
        if libc::chdir(plan.job_dir.as_ptr()) != 0 {
            fail(b"dportage: sandbox: cannot enter the job directory: ");
            libc::_exit(exitcode::IO_ERROR);
        }
        // The compiler gets default dispositions (the Rust runtime ignores
        // SIGPIPE) and an empty signal mask, as distccd gives it.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if let Err(e) = plan.prepared.apply() {
            write_all(2, b"dportage: sandbox: ");
            write_all(2, e.what.as_bytes());
            write_all(2, b": ");
            write_errno(e.errno);
            libc::_exit(exitcode::COMPILER_MISSING);
        }
        // Only 0–2 cross into the compiler (everything else is close-on-exec
        // already; this covers a descriptor someone forgets to mark).
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::execve(
            plan.program.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        );
        fail(plan.exec_failed);
        libc::_exit(exitcode::COMPILER_MISSING)
    }
}

/// `prefix` and the text of the current errno on stderr.
fn fail(prefix: &[u8]) {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    write_all(2, prefix);
    write_errno(errno);
}

/// The text of `errno` and a newline on stderr, without allocating
/// (`strerror_r` copies into the stack buffer; the zygote never set a locale).
fn write_errno(errno: i32) {
    let mut buf = [0u8; 128];
    // SAFETY: the buffer and its length are valid; the XSI variant writes a
    // NUL-terminated message into it.
    let ok = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let text = if ok {
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        &buf[..len]
    } else {
        &b"unknown error"[..]
    };
    write_all(2, text);
    write_all(2, b"\n");
}

/// Every byte of `bytes` to `fd`, without allocating (stops at an error).
pub(super) fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes from a valid slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// NUL-terminated pointer array over `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}
