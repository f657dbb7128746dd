//! The sandbox zygote: a small single-threaded process the daemon forks once,
//! before its runtime starts, that starts and supervises every job's compiler.
//!
//! Re-executing the large `dportage` binary as `__sandbox-exec` for every job
//! cost more server CPU than everything else the daemon does for a job put
//! together (execve, the dynamic loader relocating the binary, the Rust
//! runtime starting); forking a supervisor per job still cost a page-table
//! copy and hundreds of page faults per fork. The zygote does neither:
//!
//! * it is single-threaded, so it may allocate while preparing a job and
//!   start the compiler with [`spawn`] (`clone(CLONE_VM | CLONE_VFORK)`, as
//!   `posix_spawn` does): the child shares the zygote's memory until it
//!   execs, and applies only the prepared confinement (rlimits, nice,
//!   no-new-privs, Landlock, seccomp) — the same [`confine::Prepared`] the
//!   trampoline applies;
//! * it holds no client data: the zygote is forked before the first
//!   connection is accepted, and keeps only descriptors 0–2, its socket and
//!   the descriptors of the jobs in flight (all close-on-exec);
//! * it supervises every job in one `poll` loop: a pidfd per compiler, the
//!   job socket for cancellation, a child subreaper for orphans, the
//!   compiler's process group killed and drained before the status goes out.
//!
//! ```text
//! daemon ──SCM_RIGHTS(job socket, stdout pipe, stderr pipe)──▶ zygote
//! daemon ◀── job socket: spec →, ← pid, ← wait status ──▶ zygote ─clone(VM|VFORK)─▶ confine, exec gcc
//! ```
//!
//! The job socket doubles as the control channel: the daemon half-closing it
//! (or dropping it) stops the job, exactly like closing the trampoline's
//! control stdin. If the zygote is gone, the daemon falls back to the
//! trampoline, so a job never fails because of it. A pid of 0 means the
//! compiler could not be started; the status (and a reason on the job's
//! stderr) follows at once.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use super::{confine, spawn, SandboxSpec, REAP_GRACE};
use crate::exitcode;

/// Largest spec the zygote accepts: argv (bounded by the protocol limits to
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
/// every compiler inherits them. Fails only if the kernel refuses a socket
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
    /// Spec goes out; the compiler's pid and then its wait status come back.
    /// Shutting down the write side (or closing it) stops the job.
    pub job: UnixStream,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Zygote {
    /// Hand the zygote a new job. The caller then sends
    /// [`encode_spec`] on `job`, reads the 4-byte pid, and later the 4-byte
    /// wait status (both native-endian); EOF instead means the zygote died.
    pub fn launch(&self) -> io::Result<Launched> {
        let [job, zygote_end] = socket_pair(libc::SOCK_STREAM)?;
        let (stdout, stdout_w) = pipe()?;
        let (stderr, stderr_w) = pipe()?;
        send_fds(
            &self.socket,
            &[
                zygote_end.as_raw_fd(),
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

/// The job as the zygote needs it: working directory, the compiler's
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

/// One job in the zygote.
struct Job {
    /// Non-blocking. Spec in; pid and wait status out; EOF or any byte in
    /// while the compiler runs means "stop".
    socket: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    state: JobState,
}

enum JobState {
    /// Reading the length-prefixed spec.
    Spec(Vec<u8>),
    /// The compiler runs; `pidfd` makes its exit wake `poll`.
    Running {
        pid: libc::pid_t,
        pidfd: Option<OwnedFd>,
        job_dir: PathBuf,
        cancelled: bool,
    },
    /// The compiler was reaped; its process group is being killed and
    /// drained before the status goes out, so nothing of the job still runs
    /// when the daemon reads the object or removes the directory.
    Draining {
        pid: libc::pid_t,
        status: u32,
        since: Instant,
        job_dir: PathBuf,
        cancelled: bool,
    },
    /// Could not start: this status goes out (after pid 0), then the job ends.
    Failed(u32),
    /// Malformed or abandoned before it started: dropped without a word, so
    /// the daemon (if still there) falls back to the trampoline.
    Dropped,
}

impl Job {
    fn compiler(&self) -> Option<libc::pid_t> {
        match self.state {
            JobState::Running { pid, .. } | JobState::Draining { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

/// What the zygote keeps from job to job to start compilers cheaply.
struct Launcher {
    stack: spawn::ChildStack,
    toolchains: confine::ToolchainCache,
}

/// What a `pollfd` entry watches.
#[derive(Clone, Copy)]
enum Watch {
    Daemon,
    Socket(usize),
    Exit,
}

/// The zygote's loop: jobs come in as messages on `socket`; each compiler
/// is started with [`spawn`] and supervised here (exit, cancellation,
/// stragglers), until the daemon closes its end and the last job is done.
fn zygote_main(socket: OwnedFd) -> i32 {
    let socket = socket.as_raw_fd();
    ensure_std_fds();
    // SAFETY: close_range/prctl/setpgid/open/dup2/signal only affect this process.
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
        // Compilers' orphans come back to us, not to PID 1 (which reaps
        // nothing in some containers).
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Children must stay waitable; a vanished daemon is an EPIPE, not a signal.
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        // Hold no directory busy: the daemon's work directory is where job
        // directories live, and the zygote outlives every job in it.
        libc::chdir(c"/".as_ptr());
    }
    let mut launcher = Launcher {
        stack: spawn::ChildStack::new(),
        toolchains: confine::ToolchainCache::default(),
    };
    let mut jobs: Vec<Job> = Vec::new();
    let mut daemon_gone = false;
    loop {
        if daemon_gone && jobs.is_empty() {
            return 0;
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(1 + 2 * jobs.len());
        let mut watches: Vec<Watch> = Vec::with_capacity(fds.capacity());
        let mut watch = |fd: RawFd, what: Watch| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            watches.push(what);
        };
        if !daemon_gone {
            watch(socket, Watch::Daemon);
        }
        let mut draining = false;
        for (i, job) in jobs.iter().enumerate() {
            match &job.state {
                JobState::Spec(_) => watch(job.socket.as_raw_fd(), Watch::Socket(i)),
                JobState::Running {
                    pidfd, cancelled, ..
                } => {
                    if !cancelled {
                        watch(job.socket.as_raw_fd(), Watch::Socket(i));
                    }
                    if let Some(pidfd) = pidfd {
                        watch(pidfd.as_raw_fd(), Watch::Exit);
                    }
                }
                JobState::Draining { .. } => draining = true,
                JobState::Failed(_) | JobState::Dropped => {}
            }
        }
        // Without pidfd (Linux < 5.3) exits are found by polling every 20 ms.
        let polling = jobs
            .iter()
            .any(|j| matches!(j.state, JobState::Running { pidfd: None, .. }));
        let timeout = if draining {
            1
        } else if polling {
            20
        } else {
            1000
        };
        // SAFETY: `fds` is a valid array of pollfd entries.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready > 0 {
            for (pollfd, what) in fds.iter().zip(&watches) {
                if pollfd.revents == 0 {
                    continue;
                }
                match *what {
                    Watch::Daemon => match receive_fds(socket) {
                        Received::Job(fds) => {
                            if let Some(job) = Job::accept(fds) {
                                jobs.push(job);
                            }
                        }
                        Received::Nothing => {}
                        Received::Closed => daemon_gone = true,
                    },
                    Watch::Socket(i) => jobs[i].on_socket(&mut launcher),
                    // Handled by `reap` below, which sees every exit.
                    Watch::Exit => {}
                }
            }
        }
        reap(&mut jobs);
        // A job's status goes out only once nothing of its tree runs, not
        // even a process that left its session (`setsid`): such a process
        // comes back to us when its parent dies and is killed here first.
        let draining = jobs
            .iter()
            .any(|job| matches!(job.state, JobState::Draining { .. }));
        let strays = if draining || ready == 0 {
            kill_strays(&jobs)
        } else {
            0
        };
        jobs.retain_mut(|job| !job.finished(strays > 0));
    }
}

impl Job {
    fn accept(fds: Vec<OwnedFd>) -> Option<Job> {
        let mut fds = fds.into_iter();
        let (Some(socket), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next())
        else {
            return None;
        };
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(socket.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(socket.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Some(Job {
            socket,
            stdout,
            stderr,
            state: JobState::Spec(Vec::new()),
        })
    }

    /// The job socket is readable: more spec, or (while running) the daemon
    /// asking to stop.
    fn on_socket(&mut self, launcher: &mut Launcher) {
        match &mut self.state {
            JobState::Spec(buf) => match read_spec_chunk(self.socket.as_raw_fd(), buf) {
                SpecRead::More => {}
                // Without a pid the daemon falls back to the trampoline.
                SpecRead::Broken => self.state = JobState::Dropped,
                SpecRead::Done => {
                    let body = std::mem::take(buf);
                    self.start(&body[4..], launcher);
                }
            },
            JobState::Running { pid, cancelled, .. } => {
                let mut byte = 0u8;
                // SAFETY: reads at most one byte into a valid buffer.
                let n = unsafe {
                    libc::read(self.socket.as_raw_fd(), (&mut byte as *mut u8).cast(), 1)
                };
                let transient = n < 0
                    && matches!(
                        io::Error::last_os_error().kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    );
                if !transient {
                    kill_group(*pid);
                    *cancelled = true;
                }
            }
            _ => {}
        }
    }

    /// Start the compiler for a complete spec, or tell the daemon why not
    /// (on the job's stderr, with the exit code the trampoline would have).
    fn start(&mut self, body: &[u8], launcher: &mut Launcher) {
        let Some((cwd, env, words)) = decode_spec(body) else {
            // Malformed: no pid, so the daemon uses the trampoline.
            self.state = JobState::Dropped;
            return;
        };
        let job_dir = PathBuf::from(&cwd);
        match self.launch(&cwd, &env, &words, launcher) {
            Ok(pid) => {
                // SAFETY: pidfd_open takes a pid and flags, returns a new descriptor.
                let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
                // SAFETY: a new descriptor owned by nobody else.
                let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
                send_word(&self.socket, pid as u32);
                self.state = JobState::Running {
                    pid,
                    pidfd,
                    job_dir,
                    cancelled: false,
                };
            }
            Err(spawn::NotStarted { message, code }) => {
                spawn::write_all(self.stderr.as_raw_fd(), message.as_bytes());
                send_word(&self.socket, 0);
                self.state = JobState::Failed(((code as u32) & 0xff) << 8);
            }
        }
    }

    /// Resolve the compiler and its confinement, then start it.
    fn launch(
        &self,
        cwd: &OsStr,
        env: &[(OsString, OsString)],
        words: &[OsString],
        launcher: &mut Launcher,
    ) -> Result<libc::pid_t, spawn::NotStarted> {
        let (spec, command) = SandboxSpec::parse(words).map_err(|e| spawn::NotStarted {
            message: format!("dportage {}: {e}\n", super::SUBCOMMAND),
            code: exitcode::BAD_ARGUMENTS,
        })?;
        let toolchains = &mut launcher.toolchains;
        let ready = spawn::Ready::new(&spec, &command, env, |program| toolchains.get(program))?;
        let job_dir = CString::new(cwd.as_bytes()).map_err(|_| spawn::NotStarted {
            message: format!(
                "dportage {}: the job directory contains a NUL byte\n",
                super::SUBCOMMAND
            ),
            code: exitcode::BAD_ARGUMENTS,
        })?;
        ready.start(
            &job_dir,
            None,
            self.stdout.as_raw_fd(),
            self.stderr.as_raw_fd(),
            &mut launcher.stack,
        )
    }

    /// Drain a job whose compiler is gone; true once its status went out and
    /// it can be dropped. `strays` says stray children were just killed and
    /// are not reaped yet (they may be this job's).
    fn finished(&mut self, strays: bool) -> bool {
        match &self.state {
            JobState::Spec(_) | JobState::Running { .. } => false,
            JobState::Dropped => true,
            JobState::Failed(status) => {
                send_word(&self.socket, *status);
                true
            }
            JobState::Draining {
                pid,
                status,
                since,
                job_dir,
                cancelled,
            } => {
                kill_group(*pid);
                // SAFETY: signal 0 only checks whether the group still has members.
                let alive = unsafe { libc::kill(-*pid, 0) } == 0;
                if (alive || strays) && since.elapsed() < REAP_GRACE {
                    return false;
                }
                let status = if *cancelled {
                    (exitcode::IO_ERROR as u32) << 8
                } else {
                    *status
                };
                send_word(&self.socket, status);
                if *cancelled {
                    // The daemon may have dropped the job without waiting for us.
                    let _ = std::fs::remove_dir_all(job_dir);
                }
                true
            }
        }
    }
}

enum SpecRead {
    More,
    Done,
    Broken,
}

/// Read what is available of the length-prefixed spec into `buf`, refusing
/// more than [`MAX_SPEC`].
fn read_spec_chunk(fd: RawFd, buf: &mut Vec<u8>) -> SpecRead {
    loop {
        let want = match buf.get(..4) {
            None => 4,
            Some(prefix) => {
                let len = u32::from_ne_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
                if len > MAX_SPEC {
                    return SpecRead::Broken;
                }
                4 + len
            }
        };
        let have = buf.len();
        if have >= 4 && have == want {
            return SpecRead::Done;
        }
        let chunk = (want - have).min(1 << 20);
        buf.resize(have + chunk, 0);
        // SAFETY: reads into the newly resized tail of `buf`.
        let n = unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), chunk) };
        if n <= 0 {
            buf.truncate(have);
            if n < 0
                && matches!(
                    io::Error::last_os_error().kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                )
            {
                return SpecRead::More;
            }
            return SpecRead::Broken;
        }
        buf.truncate(have + n as usize);
    }
}

/// Reap every exited child: a job's compiler moves the job to draining with
/// its wait status; anything else is a straggler reparented to us.
fn reap(jobs: &mut [Job]) {
    loop {
        // SAFETY: waitid with a zeroed siginfo; WNOWAIT leaves the child
        // waitable so the matching waitpid below collects its status.
        let pid = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            if libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL,
            ) != 0
            {
                return;
            }
            info.si_pid()
        };
        if pid <= 0 {
            return;
        }
        let mut status = 0;
        // SAFETY: waitpid on a child that is known to have exited.
        unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        for job in jobs.iter_mut() {
            if let JobState::Running {
                pid: compiler,
                job_dir,
                cancelled,
                ..
            } = &mut job.state
            {
                if *compiler == pid {
                    job.state = JobState::Draining {
                        pid,
                        status: status as u32,
                        since: Instant::now(),
                        job_dir: std::mem::take(job_dir),
                        cancelled: *cancelled,
                    };
                    break;
                }
            }
        }
    }
}

/// Kill every child of ours that is not a job's compiler: an orphan of a
/// job's process tree that left its process group (`setsid`) and outlived
/// its parent. Returns how many were signalled (they are reaped later).
fn kill_strays(jobs: &[Job]) -> usize {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let Ok(text) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
        return 0;
    };
    let mut killed = 0;
    for child in text
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if !jobs.iter().any(|job| job.compiler() == Some(child)) {
            // SAFETY: signalling a child of ours.
            unsafe { libc::kill(child, libc::SIGKILL) };
            killed += 1;
        }
    }
    killed
}

/// SIGKILL the compiler's process group (its session), and the compiler
/// itself in case it had not reached `setsid` yet.
fn kill_group(pid: libc::pid_t) {
    if pid <= 1 {
        return;
    }
    // SAFETY: signals to a process group and a pid we created.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// A 4-byte native-endian word to the daemon; never blocks or raises SIGPIPE.
fn send_word(socket: &OwnedFd, word: u32) {
    let bytes = word.to_ne_bytes();
    // SAFETY: sends from a valid 4-byte buffer.
    unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        );
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
