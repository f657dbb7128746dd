//! Starting the confined compiler without copying the parent: a child made
//! with `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own, as
//! `posix_spawn` does. It shares the zygote's memory until `execve`, so
//! there is no page-table copy, no copy-on-write fault and no re-faulting of
//! the daemon's code pages, which a `fork` per job paid for (most of the
//! server's own CPU per job). The price is discipline: between `clone` and
//! `execve` the child only makes system calls on memory prepared by the
//! parent ([`Plan`], [`confine::Prepared`]); it never allocates, locks or
//! unwinds. The parent is suspended until the child has exec'd or exited.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::RawFd;

use super::confine;
use crate::exitcode;

/// Room for the child's few frames (system-call wrappers and `Prepared::apply`).
const CHILD_STACK: usize = 256 * 1024;

/// Everything the child needs, resolved by the parent.
pub(super) struct Plan<'a> {
    pub program: &'a CStr,
    /// NULL-terminated.
    pub argv: &'a [*const c_char],
    /// NULL-terminated.
    pub envp: &'a [*const c_char],
    pub job_dir: &'a CStr,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub prepared: &'a confine::Prepared,
    /// `dportage: failed to exec NAME: `
    pub exec_failed: &'a [u8],
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
pub(super) fn spawn(plan: &Plan<'_>, stack: &mut ChildStack) -> std::io::Result<libc::pid_t> {
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

fn write_all(fd: RawFd, mut bytes: &[u8]) {
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
pub(super) fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}
