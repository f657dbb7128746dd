//! The sandbox zygote: a small single-threaded process the daemon forks once,
//! before its runtime starts, that forks one supervisor per job.
//!
//! Re-executing the large `dportage` binary as `__sandbox-exec` for every job
//! cost more server CPU than everything else the daemon does for a job put
//! together (execve, the dynamic loader relocating the binary, the Rust
//! runtime starting). A fork of an idle, single-threaded zygote gives the
//! supervisor the same guarantees the exec gave it:
//!
//! * it is single-threaded, so the supervisor may allocate between its own
//!   fork and the compiler's exec (the multi-threaded daemon may not);
//! * it holds no client data: the zygote is forked before the first
//!   connection is accepted, and keeps only descriptors 0–2 and its socket;
//! * the supervisor then runs exactly the code the trampoline runs
//!   ([`super::supervise`]): the same confinement, limits, subreaping and
//!   cancellation.
//!
//! ```text
//! daemon ──SCM_RIGHTS(job socket, stdout pipe, stderr pipe)──▶ zygote
//!                                                        └─fork─▶ supervisor (own process group)
//! daemon ◀──────── job socket: spec →, ← pid, ← wait status ──────▶   └─fork─▶ confine, exec gcc
//! ```
//!
//! The job socket doubles as the control channel: the daemon half-closing it
//! (or dropping it) stops the job, exactly like closing the trampoline's
//! control stdin. If the zygote is gone, the daemon falls back to the
//! trampoline, so a job never fails because of it.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use super::{supervise, SandboxSpec};
use crate::exitcode;

/// Largest spec a supervisor accepts: argv (bounded by the protocol limits to
/// 2 MiB), environment and options, with room to spare.
pub const MAX_SPEC: usize = 8 << 20;

/// How many descriptors come with one job request.
const FDS_PER_JOB: usize = 3;

/// The daemon's handle on its zygote.
#[derive(Debug)]
pub struct Zygote {
    /// SOCK_SEQPACKET: one message = one job, carrying its descriptors.
    socket: OwnedFd,
}

static ZYGOTE: OnceLock<Zygote> = OnceLock::new();

/// The zygote started by [`start`], if any.
pub fn get() -> Option<&'static Zygote> {
    ZYGOTE.get()
}

/// Fork the zygote. Must be called while the process is single-threaded
/// (before any runtime starts) and after privileges and niceness are final:
/// every supervisor inherits them. Fails only if the kernel refuses a socket
/// or a fork; jobs then use the trampoline.
pub fn start() -> io::Result<()> {
    let [daemon_end, zygote_end] = socket_pair(libc::SOCK_SEQPACKET)?;
    // SAFETY: the caller guarantees a single thread, so the child may run
    // ordinary code; it never returns from `zygote_main`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(daemon_end);
        let code = zygote_main(zygote_end);
        // SAFETY: leave without running the daemon's exit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(zygote_end);
    let _ = ZYGOTE.set(Zygote { socket: daemon_end });
    Ok(())
}

/// The daemon's ends of one job started through the zygote.
#[derive(Debug)]
pub struct Launched {
    /// Spec goes out; the supervisor's pid and then its wait status come back.
    /// Shutting down the write side (or closing it) stops the job.
    pub job: UnixStream,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Zygote {
    /// Ask the zygote for a supervisor. The caller then sends
    /// [`encode_spec`] on `job`, reads the 4-byte pid, and later the 4-byte
    /// wait status (both native-endian); EOF instead means the supervisor died.
    pub fn launch(&self) -> io::Result<Launched> {
        let [job, supervisor_end] = socket_pair(libc::SOCK_STREAM)?;
        let (stdout, stdout_w) = pipe()?;
        let (stderr, stderr_w) = pipe()?;
        send_fds(
            &self.socket,
            &[
                supervisor_end.as_raw_fd(),
                stdout_w.as_raw_fd(),
                stderr_w.as_raw_fd(),
            ],
        )?;
        Ok(Launched {
            job: UnixStream::from(job),
            stdout,
            stderr,
        })
    }
}

/// The job as the supervisor needs it: working directory, the compiler's
/// whole environment, and the trampoline's words (`OPTIONS… -- COMPILER ARGS…`).
/// Length-prefixed (u32, native-endian), NUL-separated words. `None` if a word
/// contains a NUL byte or the spec is larger than [`MAX_SPEC`].
pub fn encode_spec(cwd: &OsStr, env: &[(&str, &OsStr)], words: &[OsString]) -> Option<Vec<u8>> {
    let mut body: Vec<u8> = Vec::new();
    let mut put = |word: &[u8]| -> Option<()> {
        if word.contains(&0) {
            return None;
        }
        body.extend_from_slice(word);
        body.push(0);
        Some(())
    };
    put(cwd.as_bytes())?;
    put(env.len().to_string().as_bytes())?;
    for (name, value) in env {
        let mut pair = name.as_bytes().to_vec();
        pair.push(b'=');
        pair.extend_from_slice(value.as_bytes());
        put(&pair)?;
    }
    for word in words {
        put(word.as_bytes())?;
    }
    if body.len() > MAX_SPEC {
        return None;
    }
    let mut out = (body.len() as u32).to_ne_bytes().to_vec();
    out.extend_from_slice(&body);
    Some(out)
}

/// The decoded spec: (cwd, environment pairs, trampoline words).
type DecodedSpec = (OsString, Vec<(OsString, OsString)>, Vec<OsString>);

fn decode_spec(body: &[u8]) -> Option<DecodedSpec> {
    let body = body.strip_suffix(&[0])?;
    let mut words = body.split(|&b| b == 0);
    let cwd = OsString::from_vec(words.next()?.to_vec());
    let count: usize = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
    let mut env = Vec::new();
    for _ in 0..count {
        let pair = words.next()?;
        let eq = pair.iter().position(|&b| b == b'=')?;
        env.push((
            OsString::from_vec(pair[..eq].to_vec()),
            OsString::from_vec(pair[eq + 1..].to_vec()),
        ));
    }
    let rest = words.map(|w| OsString::from_vec(w.to_vec())).collect();
    Some((cwd, env, rest))
}

/// The zygote's loop: one forked supervisor per message, until the daemon
/// closes its end.
fn zygote_main(socket: OwnedFd) -> i32 {
    let socket = socket.as_raw_fd();
    ensure_std_fds();
    // SAFETY: close_range/prctl/setpgid/open/dup2 only affect this process.
    unsafe {
        // Keep 0–2 and the socket; drop the listeners, log file and the rest.
        if socket > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (socket - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (socket + 1) as u32, u32::MAX, 0u32);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        // Out of the daemon's process group: a terminal's ^C or a signal to
        // the daemon's group stops the daemon, which then closes our socket.
        libc::setpgid(0, 0);
        // Supervisors that die leave their stragglers to us, not to PID 1
        // (which reaps nothing in some containers).
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Hold no directory busy: the daemon's work directory is where job
        // directories live, and the zygote outlives every job in it.
        libc::chdir(c"/".as_ptr());
    }
    loop {
        reap_exited();
        let mut fds = libc::pollfd {
            fd: socket,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd. The timeout bounds how long exited
        // supervisors stay zombies when no job comes in.
        let ready = unsafe { libc::poll(&mut fds, 1, 1000) };
        if ready <= 0 {
            continue;
        }
        match receive_fds(socket) {
            Received::Job(job_fds) => {
                // SAFETY: single-threaded; the child runs the supervisor and exits.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    let code = supervisor_main(job_fds);
                    // SAFETY: no exit handlers of the daemon's image.
                    unsafe { libc::_exit(code) };
                }
                // Parent (or failed fork): our copies close here; on failure
                // the daemon sees EOF on the job socket.
                drop(job_fds);
            }
            Received::Nothing => {}
            Received::Closed => return 0,
        }
    }
}

fn reap_exited() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
        if r <= 0 {
            return;
        }
    }
}

/// Descriptors 0–2 must exist, so a received descriptor never lands there
/// and is then mistaken for stdin/stdout/stderr.
fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: fcntl F_GETFD only inspects; open returns the lowest free fd.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

/// In the forked supervisor: wire up the job's descriptors, read the spec,
/// report the pid, supervise, report the wait status.
fn supervisor_main(fds: Vec<OwnedFd>) -> i32 {
    // SAFETY: setpgid and dup2 on this process's own descriptors; the
    // received ones are close-on-exec and above 2 (see `ensure_std_fds`).
    unsafe {
        // Own process group, as the daemon gives the trampoline: the daemon's
        // last-resort kill reaches exactly this group.
        libc::setpgid(0, 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        for (target, fd) in fds.iter().enumerate() {
            if libc::dup2(fd.as_raw_fd(), target as RawFd) < 0 {
                return exitcode::IO_ERROR;
            }
        }
    }
    drop(fds);
    // SAFETY: fd 0 is the job socket, owned by this process from here on.
    let mut job = unsafe { UnixStream::from_raw_fd(0) };
    let Some(body) = read_spec(&mut job) else {
        std::mem::forget(job);
        return exitcode::PROTOCOL_ERROR;
    };
    let Some((cwd, env, words)) = decode_spec(&body) else {
        eprintln!("dportage: sandbox: malformed job spec from the daemon");
        std::mem::forget(job);
        return exitcode::PROTOCOL_ERROR;
    };
    drop(body);
    if job.write_all(&std::process::id().to_ne_bytes()).is_err() {
        std::mem::forget(job);
        return exitcode::IO_ERROR;
    }
    let end = match SandboxSpec::parse(&words) {
        Err(e) => {
            eprintln!("dportage {}: {e}", super::SUBCOMMAND);
            super::End::Exited(exitcode::BAD_ARGUMENTS)
        }
        Ok((spec, command)) => {
            if let Err(e) = std::env::set_current_dir(&cwd) {
                eprintln!(
                    "dportage: sandbox: cannot enter the job directory {}: {e}",
                    cwd.to_string_lossy()
                );
                super::End::Exited(exitcode::IO_ERROR)
            } else {
                replace_environment(&env);
                supervise(&spec, &command)
            }
        }
    };
    let _ = job.write_all(&end.raw_status().to_ne_bytes());
    std::mem::forget(job);
    0
}

/// Read the length-prefixed spec, refusing more than [`MAX_SPEC`].
fn read_spec(job: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    job.read_exact(&mut len).ok()?;
    let len = u32::from_ne_bytes(len) as usize;
    if len > MAX_SPEC {
        return None;
    }
    let mut body = vec![0u8; len];
    job.read_exact(&mut body).ok()?;
    Some(body)
}

/// The compiler's environment is exactly the spec's (the daemon's, which the
/// zygote inherited, is dropped). Single-threaded, so changing it is sound.
fn replace_environment(env: &[(OsString, OsString)]) {
    for (name, _) in std::env::vars_os() {
        std::env::remove_var(name);
    }
    for (name, value) in env {
        if !name.is_empty() {
            std::env::set_var(name, value);
        }
    }
}

fn socket_pair(kind: libc::c_int) -> io::Result<[OwnedFd; 2]> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] })
}

/// (read end, write end), both close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

const CMSG_SPACE: usize = 64;

/// Send one byte with `fds` attached. Never blocks: a zygote that is not
/// keeping up (or gone) makes the job use the trampoline instead.
fn send_fds(socket: &OwnedFd, fds: &[RawFd]) -> io::Result<()> {
    let mut byte = [b'J'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; CMSG_SPACE / 8];
    let payload = std::mem::size_of_val(fds);
    // SAFETY: msghdr/cmsghdr are plain C structs; the control buffer is
    // aligned (u64) and larger than CMSG_SPACE(payload) for 3 descriptors.
    unsafe {
        let space = libc::CMSG_SPACE(payload as u32) as usize;
        assert!(space <= CMSG_SPACE);
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        let sent = libc::sendmsg(
            socket.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
        if sent != 1 {
            return Err(if sent < 0 {
                io::Error::last_os_error()
            } else {
                io::ErrorKind::WriteZero.into()
            });
        }
    }
    Ok(())
}

enum Received {
    Job(Vec<OwnedFd>),
    /// Interrupted, or a message without the right descriptors (dropped).
    Nothing,
    /// The daemon closed its end (or the socket broke): time to exit.
    Closed,
}

fn receive_fds(socket: RawFd) -> Received {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; CMSG_SPACE / 8];
    // SAFETY: as in `send_fds`; every descriptor the kernel installed is
    // taken into an OwnedFd, so none leaks even if the message is malformed.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = CMSG_SPACE;
        let n = libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n == 0 {
            return Received::Closed;
        }
        if n < 0 {
            return match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Received::Nothing,
                _ => Received::Closed,
            };
        }
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if fds.len() == FDS_PER_JOB && msg.msg_flags & libc::MSG_CTRUNC == 0 {
            Received::Job(fds)
        } else {
            Received::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips() {
        let words: Vec<OsString> = ["--job-dir", "/j", "--", "gcc", "-c", "a b.i"]
            .iter()
            .map(OsString::from)
            .collect();
        let env = [
            ("PATH", OsStr::new("/usr/bin")),
            ("LC_ALL", OsStr::new("C=x")),
        ];
        let encoded = encode_spec(OsStr::new("/j"), &env, &words).unwrap();
        let len = u32::from_ne_bytes(encoded[..4].try_into().unwrap()) as usize;
        assert_eq!(len, encoded.len() - 4);
        let (cwd, env_back, words_back) = decode_spec(&encoded[4..]).unwrap();
        assert_eq!(cwd, "/j");
        assert_eq!(
            env_back,
            vec![
                (OsString::from("PATH"), OsString::from("/usr/bin")),
                (OsString::from("LC_ALL"), OsString::from("C=x")),
            ]
        );
        assert_eq!(words_back, words);
    }

    #[test]
    fn spec_refuses_nul_and_garbage() {
        let bad = [OsString::from("a\0b")];
        assert!(encode_spec(OsStr::new("/j"), &[], &bad).is_none());
        assert!(decode_spec(b"/j\0x\0").is_none());
        assert!(decode_spec(b"/j\x002\0A=1\0").is_none());
        assert!(decode_spec(b"no terminator").is_none());
    }
}
