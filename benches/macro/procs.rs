//! Processes the benchmark starts: servers (killed by PID on drop), measured
//! commands (wall time and CPU of the whole tree, bounded in time), and the
//! `/proc` readers that attribute server CPU to the daemon rather than to the
//! compilers it runs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM: every wait loop gives up, guards clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turn Ctrl-C into an orderly stop, so Drop guards kill the servers.
pub fn install_interrupt_handler() {
    let handler = note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Clock ticks per second for /proc/<pid>/stat times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn signal_group_and_pid(pid: i32, sig: libc::c_int) {
    if pid <= 0 {
        return;
    }
    // SAFETY: plain syscalls on a process (group) this benchmark started.
    unsafe {
        libc::kill(-pid, sig);
        libc::kill(pid, sig);
    }
}

fn signal_pid(pid: i32, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: plain syscall on a descendant of a process this benchmark started.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// How a measured command ended.
#[derive(Debug, Clone)]
pub struct Measured {
    pub wall: Duration,
    /// utime + stime of the command and every descendant it waited for.
    pub cpu: Duration,
    /// Exit code, or None if killed by a signal.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
}

/// Run `cmd` in its own process group; on timeout or interrupt the whole group
/// is killed. The wall clock stops when the kernel reports the exit (no polling
/// granularity), which matters for 30 ms jobs.
pub fn run_measured(cmd: &mut Command, timeout: Duration) -> io::Result<Measured> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    // From here on the child is reaped by wait4 below, never by `Child`.
    drop(child);

    let reaped = Arc::new(Mutex::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let reaped = Arc::clone(&reaped);
        let timed_out = Arc::clone(&timed_out);
        thread::spawn(move || {
            let deadline = start + timeout;
            loop {
                if *reaped.lock().unwrap_or_else(PoisonError::into_inner) {
                    return;
                }
                if Instant::now() >= deadline || interrupted() {
                    let done = reaped.lock().unwrap_or_else(PoisonError::into_inner);
                    if !*done {
                        timed_out.store(!interrupted(), Ordering::SeqCst);
                        signal_group_and_pid(pid, libc::SIGKILL);
                    }
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let result = loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            break Err(err);
        }
    };
    let wall = start.elapsed();
    {
        let mut done = reaped.lock().unwrap_or_else(PoisonError::into_inner);
        *done = true;
    }
    let _ = watchdog.join();
    result?;

    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    let exit_code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    Ok(Measured {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        exit_code,
        timed_out: timed_out.load(Ordering::SeqCst),
    })
}

/// Run a short command and capture stdout+stderr, bounded in time.
pub fn capture_output(program: &Path, args: &[&str], timeout: Duration) -> Option<String> {
    let dir = tempfile::tempdir().ok()?;
    let out_path = dir.path().join("out");
    let out = fs::File::create(&out_path).ok()?;
    let err = out.try_clone().ok()?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    let measured = run_measured(&mut cmd, timeout).ok()?;
    if measured.timed_out {
        return None;
    }
    fs::read_to_string(out_path).ok()
}

/// One line of /proc/<pid>/stat, the fields we use.
#[derive(Debug, Clone)]
pub struct ProcStat {
    pub comm: String,
    pub ppid: i32,
    /// utime + stime, in clock ticks; excludes waited-for children.
    pub own_ticks: u64,
    pub start_time: u64,
}

pub fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        own_ticks: field(14)? + field(15)?,
        start_time: field(22)?,
    })
}

/// Children of every thread of `pid` (a child belongs to the thread that forked
/// it). None when the kernel lacks CONFIG_PROC_CHILDREN.
fn children_of(pid: i32) -> Option<Vec<i32>> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut kids = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = fs::read_to_string(&path) {
            any = true;
            kids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    any.then_some(kids)
}

/// Every process on the machine with its parent, for kernels without
/// /proc/<pid>/task/<tid>/children.
fn all_processes() -> Vec<(i32, i32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?.ppid)))
        .collect()
}

/// All live descendants of `roots` (roots included), parents before children.
pub fn process_tree(roots: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue: Vec<i32> = roots.to_vec();
    let mut fallback: Option<Vec<(i32, i32)>> = None;
    while let Some(pid) = queue.pop() {
        if !seen.insert(pid) {
            continue;
        }
        out.push(pid);
        match children_of(pid) {
            Some(kids) => queue.extend(kids),
            None => {
                let table = fallback.get_or_insert_with(all_processes);
                queue.extend(
                    table
                        .iter()
                        .filter(|(_, ppid)| *ppid == pid)
                        .map(|(p, _)| *p),
                );
            }
        }
    }
    out
}

/// On-CPU time of every thread of `pid`, in nanoseconds, keyed by thread id:
/// the first field of /proc/<pid>/task/<tid>/schedstat, which the scheduler
/// keeps exactly (utime/stime in /proc/<pid>/stat are rounded to 10 ms ticks,
/// coarser than a whole distccd job). None without CONFIG_SCHED_INFO.
fn thread_cpu_ns(pid: i32) -> Option<Vec<(i32, u64)>> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
        out.push((tid, ns));
    }
    Some(out)
}

/// CPU that a server spends itself, not in the compilers it runs: the on-CPU
/// time of every process in its tree whose command name is the daemon's own
/// (the daemon, its workers, a trampoline before it execs the compiler). A
/// compiler is a separate process (or the trampoline after exec, when its
/// command name changes), so its time never lands in these counters. Threads
/// are keyed by (process, start time, thread) and remembered after they exit,
/// so a replaced worker keeps its share; CPU spent after the last sample
/// before an exit (or an exec) is lost, which frequent sampling keeps small.
#[derive(Debug)]
pub struct ServerCpu {
    roots: Vec<i32>,
    comm: String,
    ticks_ns: u64,
    seen: HashMap<(i32, u64, i32), u64>,
}

impl ServerCpu {
    pub fn new(roots: Vec<i32>) -> Self {
        let comm = roots
            .first()
            .and_then(|&pid| read_stat(pid))
            .map(|s| s.comm)
            .unwrap_or_default();
        ServerCpu {
            roots,
            comm,
            ticks_ns: 1_000_000_000 / clock_ticks_per_sec(),
            seen: HashMap::new(),
        }
    }

    pub fn sample(&mut self) {
        for pid in process_tree(&self.roots) {
            let Some(stat) = read_stat(pid) else { continue };
            if stat.comm != self.comm && !self.roots.contains(&pid) {
                continue;
            }
            match thread_cpu_ns(pid) {
                Some(threads) => {
                    for (tid, ns) in threads {
                        self.seen.insert((pid, stat.start_time, tid), ns);
                    }
                }
                None => {
                    self.seen
                        .insert((pid, stat.start_time, 0), stat.own_ticks * self.ticks_ns);
                }
            }
        }
    }

    pub fn total_ns(&self) -> u64 {
        self.seen.values().sum()
    }
}

/// Samples every registered server set in the background, so short-lived
/// workers are seen before they exit.
#[derive(Clone, Default)]
pub struct CpuTracker {
    sets: Arc<Mutex<Vec<ServerCpu>>>,
    stop: Arc<AtomicBool>,
}

/// Often enough to catch most of a short-lived worker, rarely enough that the
/// sampler itself stays well under 1 % of a core.
const SAMPLE_PERIOD: Duration = Duration::from_millis(10);

impl CpuTracker {
    pub fn start() -> Self {
        let tracker = CpuTracker::default();
        let bg = tracker.clone();
        thread::spawn(move || {
            while !bg.stop.load(Ordering::SeqCst) {
                {
                    let mut sets = bg.sets.lock().unwrap_or_else(PoisonError::into_inner);
                    for set in sets.iter_mut() {
                        set.sample();
                    }
                }
                thread::sleep(SAMPLE_PERIOD);
            }
        });
        tracker
    }

    /// Track a server set; returns its index for [`CpuTracker::cpu_ns`].
    pub fn register(&self, roots: Vec<i32>) -> usize {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut set = ServerCpu::new(roots);
        set.sample();
        sets.push(set);
        sets.len() - 1
    }

    /// Sample now and return the set's accumulated own CPU in nanoseconds.
    pub fn cpu_ns(&self, index: usize) -> u64 {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        match sets.get_mut(index) {
            Some(set) => {
                set.sample();
                set.total_ns()
            }
            None => 0,
        }
    }
}

impl Drop for CpuTracker {
    fn drop(&mut self) {
        // Only the last handle stops the thread (the thread holds one more).
        if Arc::strong_count(&self.stop) <= 2 {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Is something listening on `addr`? Read from /proc/net/tcp, so probing does
/// not hand the server a bogus job.
pub fn is_listening(addr: SocketAddrV4) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    );
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1);
        let state = cols.nth(1);
        local == Some(want.as_str()) && state == Some("0A")
    })
}

/// A port free on every one of `ips` right now.
pub fn free_port_on(ips: &[Ipv4Addr]) -> io::Result<u16> {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind(SocketAddrV4::new(ips[0], 0))?;
        let port = first.local_addr()?.port();
        let others: Result<Vec<_>, _> = ips[1..]
            .iter()
            .map(|ip| std::net::TcpListener::bind(SocketAddrV4::new(*ip, port)))
            .collect();
        if others.is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no port free on all server addresses after 50 tries",
    ))
}

/// A daemon this benchmark started. Dropping it kills its process group and
/// then every descendant still alive, by PID.
pub struct Daemon {
    pub name: String,
    pub addr: SocketAddrV4,
    pub dir: PathBuf,
    child: Child,
}

impl Daemon {
    /// Start `cmd` (already carrying its arguments), wait until it listens on
    /// `addr`. On failure the message says how it died and what it printed.
    pub fn start(
        name: &str,
        mut cmd: Command,
        addr: SocketAddrV4,
        dir: &Path,
        ready_timeout: Duration,
    ) -> Result<Daemon, String> {
        use std::os::unix::process::CommandExt;
        let output = dir.join("output.txt");
        let out =
            fs::File::create(&output).map_err(|e| format!("cannot create {output:?}: {e}"))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot duplicate {output:?}: {e}"))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let mut daemon = Daemon {
            name: name.to_string(),
            addr,
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + ready_timeout;
        loop {
            if is_listening(addr) {
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before listening on {addr}: {}",
                    daemon.last_words()
                ));
            }
            if Instant::now() >= deadline || interrupted() {
                return Err(format!(
                    "{name} did not listen on {addr} within {ready_timeout:?}: {}",
                    daemon.last_words()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Is it still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines the daemon printed or logged, for failure messages.
    pub fn last_words(&self) -> String {
        let mut text = String::new();
        for f in ["output.txt", "server.log"] {
            if let Ok(t) = fs::read_to_string(self.dir.join(f)) {
                text.push_str(&t);
            }
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        if tail.is_empty() {
            "(no output)".to_string()
        } else {
            tail
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.pid();
        // Compilers run in process groups of their own; collect them first, with
        // their start times so a recycled PID is never signalled.
        let tree: Vec<(i32, u64)> = process_tree(&[pid])
            .into_iter()
            .filter(|&p| p != pid)
            .filter_map(|p| Some((p, read_stat(p)?.start_time)))
            .collect();
        signal_group_and_pid(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        signal_group_and_pid(pid, libc::SIGKILL);
        for (other, started) in tree {
            if read_stat(other).map(|s| s.start_time) == Some(started) {
                signal_pid(other, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}
