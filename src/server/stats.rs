//! Job counters, distccd's `--stats` page (byte layout of distccd 3.4) and a
//! Prometheus text rendering of the same numbers.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::admission::{Admission, Refused};
use crate::metrics::{Exposition, Histogram};

/// Where a request was when its client was dropped for being too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallPhase {
    /// `DIST` … `ARGV` missed `--header-timeout` (or a read stalled there).
    Header,
    /// `DOTI` came slower than `--min-body-rate`, or the whole request missed `--request-timeout`.
    Body,
}

impl StallPhase {
    const ALL: [StallPhase; 2] = [StallPhase::Header, StallPhase::Body];

    fn label(self) -> &'static str {
        match self {
            StallPhase::Header => "header",
            StallPhase::Body => "body",
        }
    }
}

/// `dportage_refused_total`'s reasons, in [`Refused::label`] spelling.
const REFUSAL_LABELS: [&str; 4] = ["per_client", "global", "queue_full", "queue_bytes"];

/// The admission figures shown with the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionSnapshot {
    pub open_connections: usize,
    /// Connections whose request has not fully arrived (read or waiting their turn).
    pub unsent: usize,
    pub queued: usize,
    pub held_bytes: u64,
    pub max_connections: usize,
    pub max_per_client: usize,
    pub max_queued: usize,
    pub max_bytes: u64,
}

impl AdmissionSnapshot {
    pub fn of(admission: &Admission) -> Self {
        let limits = admission.limits();
        Self {
            open_connections: admission.open_connections(),
            unsent: admission.unsent(),
            queued: admission.queued(),
            held_bytes: admission.held_bytes(),
            max_connections: limits.max_connections,
            max_per_client: limits.max_per_client,
            max_queued: limits.max_queued,
            max_bytes: limits.max_bytes,
        }
    }
}

/// How one accepted connection ended: distccd's `STATS_*` categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Protocol error: bad token, unsupported version (including pump), limits, LZO.
    RejBadReq,
    /// No room in the connection queue.
    RejOverload,
    CompileOk,
    CompileError,
    CompileTimeout,
    CliDisconnect,
    /// Everything else: access denied, refusals, truncated requests, stalls, internal errors.
    Other,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::RejBadReq,
        Outcome::RejOverload,
        Outcome::CompileOk,
        Outcome::CompileError,
        Outcome::CompileTimeout,
        Outcome::CliDisconnect,
        Outcome::Other,
    ];

    /// The name distccd 3.4 writes in its job log line.
    pub fn log_name(self) -> &'static str {
        match self {
            Outcome::RejBadReq => "REJ_BAD_REQ",
            Outcome::RejOverload => "REJ_OVERLOAD",
            Outcome::CompileOk => "COMPILE_OK",
            Outcome::CompileError => "COMPILE_ERROR",
            Outcome::CompileTimeout => "COMPILE_TIMEOUT",
            Outcome::CliDisconnect => "CLI_DISCONN",
            Outcome::Other => "OTHER",
        }
    }

    /// The `result` label of `dportage_jobs_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Outcome::RejBadReq => "rej_bad_req",
            Outcome::RejOverload => "rej_overload",
            Outcome::CompileOk => "compile_ok",
            Outcome::CompileError => "compile_error",
            Outcome::CompileTimeout => "compile_timeout",
            Outcome::CliDisconnect => "cli_disconnect",
            Outcome::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether the compiler ran (distccd counts these in `num_compiles`).
    pub fn ran_compiler(self) -> bool {
        matches!(
            self,
            Outcome::CompileOk
                | Outcome::CompileError
                | Outcome::CompileTimeout
                | Outcome::CliDisconnect
        )
    }
}

/// Upper bounds (seconds) of the job-duration histogram buckets.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Seconds of history kept for the 1/5/15-minute figures.
const HISTORY_SECS: u64 = 15 * 60;

#[derive(Debug, Default)]
struct Longest {
    name: String,
    compiler: String,
    msecs: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Second {
    epoch: u64,
    compiles: u32,
    running_sample: u32,
}

#[derive(Debug, Default)]
struct History {
    seconds: VecDeque<Second>,
}

impl History {
    fn slot(&mut self, epoch: u64) -> &mut Second {
        while self
            .seconds
            .front()
            .is_some_and(|s| s.epoch + HISTORY_SECS <= epoch)
        {
            self.seconds.pop_front();
        }
        if self.seconds.back().is_none_or(|s| s.epoch < epoch) {
            self.seconds.push_back(Second {
                epoch,
                ..Second::default()
            });
        }
        // The clock is monotonic, so the newest slot is the one for `epoch` (or later).
        self.seconds.back_mut().expect("a slot was just pushed")
    }

    /// (compiles finished, sum of per-second running samples) within the last `window` seconds.
    fn window(&self, now: u64, window: u64) -> (u64, u64) {
        self.seconds
            .iter()
            .filter(|s| s.epoch + window > now)
            .fold((0, 0), |(c, r), s| {
                (c + u64::from(s.compiles), r + u64::from(s.running_sample))
            })
    }
}

/// Job durations; each bucket counts the jobs at or below its bound (cumulative, as exported).
#[derive(Debug)]
struct JobDurations {
    cumulative: [u64; DURATION_BUCKETS.len()],
    total: u64,
    sum_secs: f64,
}

#[derive(Debug, Clone, Copy)]
struct IoSample {
    at: Instant,
    sectors: u64,
}

/// The result cache's counters (see [`Stats::cache_totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheTotals {
    pub fetches: u64,
    pub fetch_bytes: u64,
    pub misses: u64,
    pub claims_queued: u64,
    pub claims_sent: u64,
}

/// All server counters. Shared by every connection task.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    max_kids: usize,
    tcp_accept: AtomicU64,
    outcomes: [AtomicU64; 7],
    running: AtomicUsize,
    open_connections: AtomicUsize,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Connections and requests not admitted, by [`REFUSAL_LABELS`].
    refused: [AtomicU64; 4],
    /// Clients dropped for being too slow, by [`StallPhase`].
    stall_kills: [AtomicU64; 2],
    /// Busy answers sent (`BUSY`, instead of closing without a word).
    busy_answers: AtomicU64,
    /// Queued sources spooled to disk, and their bytes.
    spooled: AtomicU64,
    spooled_bytes: AtomicU64,
    /// The result cache (issue 16): `CGET`s answered with a reply, their
    /// bytes, `CGET`s closed without one; claims queued and sent.
    cache_fetches: AtomicU64,
    cache_fetch_bytes: AtomicU64,
    cache_misses: AtomicU64,
    cache_claims_queued: AtomicU64,
    cache_claims_sent: AtomicU64,
    longest: Mutex<Option<Longest>>,
    history: Mutex<History>,
    histogram: Mutex<JobDurations>,
    io: Mutex<(Option<IoSample>, i64)>,
}

impl Stats {
    pub fn new(max_kids: usize) -> Self {
        Self {
            started: Instant::now(),
            max_kids,
            tcp_accept: AtomicU64::new(0),
            outcomes: Default::default(),
            running: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            refused: Default::default(),
            stall_kills: Default::default(),
            busy_answers: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            spooled_bytes: AtomicU64::new(0),
            cache_fetches: AtomicU64::new(0),
            cache_fetch_bytes: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            cache_claims_queued: AtomicU64::new(0),
            cache_claims_sent: AtomicU64::new(0),
            longest: Mutex::new(None),
            history: Mutex::new(History::default()),
            histogram: Mutex::new(JobDurations {
                cumulative: [0; DURATION_BUCKETS.len()],
                total: 0,
                sum_secs: 0.0,
            }),
            io: Mutex::new((
                disk_sectors().map(|s| IoSample {
                    at: Instant::now(),
                    sectors: s,
                }),
                -1,
            )),
        }
    }

    fn epoch(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn accepted(&self) {
        self.tcp_accept.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A connection is open from accept to close; the guard keeps the gauge right
    /// even if the task panics.
    pub fn open_connection(&self) -> GaugeGuard<'_> {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(&self.open_connections)
    }

    /// A compile holds a job slot from start to end.
    pub fn start_compile(&self) -> GaugeGuard<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(&self.running)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Connections open now (reading, queued, compiling or replying).
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Count a connection or request the admission rules turned away.
    pub fn refused(&self, why: &Refused) {
        if let Some(i) = REFUSAL_LABELS.iter().position(|l| *l == why.label()) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refusals(&self, label: &str) -> u64 {
        REFUSAL_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Count a busy answer sent.
    pub fn busy_answer(&self) {
        self.busy_answers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn busy_answers(&self) -> u64 {
        self.busy_answers.load(Ordering::Relaxed)
    }

    /// Count a queued source spooled to disk.
    pub fn spooled(&self, bytes: usize) {
        self.spooled.fetch_add(1, Ordering::Relaxed);
        self.spooled_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// (sources spooled, their bytes)
    pub fn spooled_totals(&self) -> (u64, u64) {
        (
            self.spooled.load(Ordering::Relaxed),
            self.spooled_bytes.load(Ordering::Relaxed),
        )
    }

    /// Count a client dropped for being too slow.
    /// A `CGET` answered with a stored reply of `bytes`.
    pub fn cache_fetch(&self, bytes: usize) {
        self.cache_fetches.fetch_add(1, Ordering::Relaxed);
        self.cache_fetch_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A `CGET` of a result this host does not hold.
    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_claim_queued(&self) {
        self.cache_claims_queued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_claims_sent(&self, n: usize) {
        self.cache_claims_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// (fetches served, their bytes, misses, claims queued, claims sent)
    pub fn cache_totals(&self) -> CacheTotals {
        CacheTotals {
            fetches: self.cache_fetches.load(Ordering::Relaxed),
            fetch_bytes: self.cache_fetch_bytes.load(Ordering::Relaxed),
            misses: self.cache_misses.load(Ordering::Relaxed),
            claims_queued: self.cache_claims_queued.load(Ordering::Relaxed),
            claims_sent: self.cache_claims_sent.load(Ordering::Relaxed),
        }
    }

    pub fn stall_kill(&self, phase: StallPhase) {
        self.stall_kills[phase as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn stall_kills(&self, phase: StallPhase) -> u64 {
        self.stall_kills[phase as usize].load(Ordering::Relaxed)
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()].load(Ordering::Relaxed)
    }

    pub fn tcp_accepts(&self) -> u64 {
        self.tcp_accept.load(Ordering::Relaxed)
    }

    /// Record how a connection ended. `job` = (input name, compiler) when known.
    pub fn finish(&self, outcome: Outcome, elapsed: Duration, job: Option<(&str, &str)>) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if !outcome.ran_compiler() {
            return;
        }
        let now = self.epoch();
        if let Ok(mut h) = self.history.lock() {
            let slot = h.slot(now);
            slot.compiles = slot.compiles.saturating_add(1);
        }
        let secs = elapsed.as_secs_f64();
        if let Ok(mut hist) = self.histogram.lock() {
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    hist.cumulative[i] += 1;
                }
            }
            hist.total += 1;
            hist.sum_secs += secs;
        }
        if outcome == Outcome::CompileOk {
            let msecs = elapsed.as_millis() as u64;
            if let (Ok(mut longest), Some((name, compiler))) = (self.longest.lock(), job) {
                if longest.as_ref().is_none_or(|l| l.msecs < msecs) {
                    *longest = Some(Longest {
                        name: name.to_string(),
                        compiler: compiler.to_string(),
                        msecs,
                    });
                }
            }
        }
    }

    /// Called once a second: remember how many compiles are running.
    pub fn sample_running(&self) {
        let running = self.running() as u32;
        let now = self.epoch();
        if let Ok(mut h) = self.history.lock() {
            h.slot(now).running_sample = running;
        }
    }

    /// Disk sectors per second since the last sample, sampled at most every 50 s
    /// (as distccd does); -1 until two samples exist.
    fn io_rate(&self) -> i64 {
        let Ok(mut io) = self.io.lock() else {
            return -1;
        };
        let now = Instant::now();
        match io.0 {
            Some(prev) if now.duration_since(prev.at) < Duration::from_secs(50) => io.1,
            prev => {
                if let Some(sectors) = disk_sectors() {
                    if let Some(prev) = prev {
                        let secs = now.duration_since(prev.at).as_secs().max(1);
                        io.1 = (sectors.saturating_sub(prev.sectors) / secs) as i64;
                    }
                    io.0 = Some(IoSample { at: now, sectors });
                }
                io.1
            }
        }
    }

    /// The numbers of the stats page that come from the counters.
    fn page_numbers(&self) -> PageNumbers {
        let now = self.epoch();
        let (c1, r1, c5, r5, c15, r15) = match self.history.lock() {
            Ok(h) => {
                let (c1, r1) = h.window(now, 60);
                let (c5, r5) = h.window(now, 300);
                let (c15, r15) = h.window(now, 900);
                (c1, r1, c5, r5, c15, r15)
            }
            Err(_) => (0, 0, 0, 0, 0, 0),
        };
        let longest = self.longest.lock().ok().and_then(|l| {
            l.as_ref()
                .map(|l| (l.name.clone(), l.compiler.clone(), l.msecs as i64))
        });
        PageNumbers {
            num_compiles: [c1, c5, c15],
            avg_kids: [r1 / 60, r5 / 300, r15 / 900],
            longest,
            io_rate: self.io_rate(),
        }
    }
}

struct PageNumbers {
    num_compiles: [u64; 3],
    avg_kids: [u64; 3],
    longest: Option<(String, String, i64)>,
    io_rate: i64,
}

/// Decrements its gauge when dropped.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a AtomicUsize);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Machine figures on the stats page, read from `/proc` and `statvfs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemSnapshot {
    pub current_load: i64,
    pub loadavg: [f64; 3],
    pub procs_in_d: i64,
    pub max_rss_kib: i64,
    pub max_rss_name: String,
    pub free_space_mib: i64,
}

impl SystemSnapshot {
    /// Read the machine's state; `tmpdir` is where jobs run (`$TMPDIR`).
    pub fn read(tmpdir: &Path) -> Self {
        let (current_load, loadavg) = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| parse_loadavg(&s))
            .unwrap_or((0, [0.0; 3]));
        let (procs_in_d, max_rss_kib, max_rss_name) = scan_processes();
        Self {
            current_load,
            loadavg,
            procs_in_d,
            max_rss_kib,
            max_rss_name,
            free_space_mib: free_space_mib(tmpdir).unwrap_or(-1),
        }
    }
}

/// `/proc/loadavg` → (running processes, [load1, load5, load15]).
pub fn parse_loadavg(text: &str) -> Option<(i64, [f64; 3])> {
    let mut fields = text.split_whitespace();
    let l1 = fields.next()?.parse().ok()?;
    let l5 = fields.next()?.parse().ok()?;
    let l15 = fields.next()?.parse().ok()?;
    let running = fields.next()?.split('/').next()?.parse().ok()?;
    Some((running, [l1, l5, l15]))
}

/// One `/proc/PID/stat` line → (comm, state, rss in pages).
pub fn parse_proc_stat(line: &str) -> Option<(&str, char, i64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?;
    let mut rest = line.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    // After the state come ppid … ; rss is field 24 of the line, i.e. the 22nd after the state.
    let rss = rest.nth(20)?.parse().ok()?;
    Some((comm, state, rss))
}

/// (processes in state D, largest RSS in KiB, its `(comm)`), skipping
/// compilers (`*cc`, `*++`) as distccd means to.
fn scan_processes() -> (i64, i64, String) {
    let page_kib = {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p / 1024
        } else {
            4
        }
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (-1, -1, "none".into());
    };
    let mut in_d = 0;
    let mut max_rss = 0;
    let mut max_name = String::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((comm, state, rss_pages)) = parse_proc_stat(&text) else {
            continue;
        };
        if state == 'D' {
            in_d += 1;
        }
        let rss = rss_pages.saturating_mul(page_kib as i64);
        let is_compiler = comm.ends_with("cc") || comm.ends_with("++");
        if rss > max_rss && !is_compiler {
            max_rss = rss;
            max_name = format!("({comm})");
        }
    }
    (in_d, max_rss, max_name)
}

/// Sectors read + written since boot by whole disks (not partitions, not
/// loop/ram/device-mapper devices, which would count the same I/O twice).
fn disk_sectors() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/diskstats").ok()?;
    Some(sum_disk_sectors(&text, |dev| {
        Path::new("/sys/block").join(dev).exists()
    }))
}

/// Sum sectors read + written over the lines of `/proc/diskstats` whose device
/// `is_disk` accepts.
pub fn sum_disk_sectors(text: &str, is_disk: impl Fn(&str) -> bool) -> u64 {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dev = *f.get(2)?;
            let virtual_dev = ["loop", "ram", "dm-", "md", "zram", "sr"]
                .iter()
                .any(|p| dev.starts_with(p));
            if virtual_dev || !is_disk(dev) {
                return None;
            }
            let read: u64 = f.get(5)?.parse().ok()?;
            let written: u64 = f.get(9)?.parse().ok()?;
            Some(read + written)
        })
        .sum()
}

fn free_space_mib(dir: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path; statvfs only writes `buf`.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut buf) } != 0 {
        return None;
    }
    let bytes = (buf.f_bavail as u128) * (buf.f_bsize as u128);
    Some((bytes / (1024 * 1024)) as i64)
}

/// distccd 3.4's stats page, byte for byte in layout (LF line ends, no
/// Content-Length, the literal `argv /distccd` line).
///
/// dportage's admission figures follow in a `<dportagestats>` block after
/// `</distccstats>`, so tools that read distccd's block see what they expect.
pub fn render_stats_page(
    stats: &Stats,
    sys: &SystemSnapshot,
    admission: &AdmissionSnapshot,
) -> String {
    let n = stats.page_numbers();
    let (longest_name, longest_compiler, longest_ms) = n
        .longest
        .unwrap_or_else(|| ("none".into(), "none".into(), -1));
    let mut s = String::with_capacity(1024);
    s.push_str("HTTP/1.0 200 OK\nContent-Type: text/plain\nConnection: close\n\n");
    s.push_str("argv /distccd\n<distccstats>\n");
    let _ = writeln!(s, "dcc_tcp_accept {}", stats.tcp_accepts());
    for (label, outcome) in [
        ("dcc_rej_bad_req", Outcome::RejBadReq),
        ("dcc_rej_overload", Outcome::RejOverload),
        ("dcc_compile_ok", Outcome::CompileOk),
        ("dcc_compile_error", Outcome::CompileError),
        ("dcc_compile_timeout", Outcome::CompileTimeout),
        ("dcc_cli_disconnect", Outcome::CliDisconnect),
        ("dcc_other", Outcome::Other),
    ] {
        let _ = writeln!(s, "{label} {}", stats.count(outcome));
    }
    let _ = writeln!(s, "dcc_longest_job {}", one_word(&longest_name));
    let _ = writeln!(
        s,
        "dcc_longest_job_compiler {}",
        one_word(&longest_compiler)
    );
    let _ = writeln!(s, "dcc_longest_job_time_msecs {longest_ms}");
    let _ = writeln!(s, "dcc_max_kids {}", stats.max_kids);
    for (i, v) in n.avg_kids.iter().enumerate() {
        let _ = writeln!(s, "dcc_avg_kids{} {v}", i + 1);
    }
    let _ = writeln!(s, "dcc_current_load {}", sys.current_load);
    for (i, v) in sys.loadavg.iter().enumerate() {
        let _ = writeln!(s, "dcc_load{} {v:.2}", i + 1);
    }
    for (i, v) in n.num_compiles.iter().enumerate() {
        let _ = writeln!(s, "dcc_num_compiles{} {v}", i + 1);
    }
    let _ = writeln!(s, "dcc_num_procstate_D {}", sys.procs_in_d);
    let _ = writeln!(s, "dcc_max_RSS {}", sys.max_rss_kib);
    let _ = writeln!(s, "dcc_max_RSS_name {}", one_word(&sys.max_rss_name));
    let _ = writeln!(s, "dcc_io_rate {}", n.io_rate);
    let _ = writeln!(s, "dcc_free_space {} MB", sys.free_space_mib);
    s.push_str("</distccstats>\n");
    s.push_str("<dportagestats>\n");
    let a = admission;
    for (key, value) in [
        ("dportage_open_connections", a.open_connections as u64),
        ("dportage_unsent_connections", a.unsent as u64),
        ("dportage_max_connections", a.max_connections as u64),
        ("dportage_max_per_client", a.max_per_client as u64),
        ("dportage_queue_depth", a.queued as u64),
        ("dportage_queue_limit", a.max_queued as u64),
        ("dportage_queued_bytes", a.held_bytes),
        ("dportage_queue_bytes_limit", a.max_bytes),
    ] {
        let _ = writeln!(s, "{key} {value}");
    }
    for label in REFUSAL_LABELS {
        let _ = writeln!(s, "dportage_refused_{label} {}", stats.refusals(label));
    }
    for phase in StallPhase::ALL {
        let _ = writeln!(
            s,
            "dportage_stall_kills_{} {}",
            phase.label(),
            stats.stall_kills(phase)
        );
    }
    let _ = writeln!(s, "dportage_busy_answers {}", stats.busy_answers());
    let (spooled, spooled_bytes) = stats.spooled_totals();
    let _ = writeln!(s, "dportage_spooled_requests {spooled}");
    let _ = writeln!(s, "dportage_spooled_bytes {spooled_bytes}");
    let c = stats.cache_totals();
    let _ = writeln!(s, "dportage_cache_fetches {}", c.fetches);
    let _ = writeln!(s, "dportage_cache_fetch_bytes {}", c.fetch_bytes);
    let _ = writeln!(s, "dportage_cache_misses {}", c.misses);
    let _ = writeln!(s, "dportage_cache_claims_queued {}", c.claims_queued);
    let _ = writeln!(s, "dportage_cache_claims_sent {}", c.claims_sent);
    s.push_str("</dportagestats>\n");
    s
}

/// Names from clients end up in a line-based page: keep them one printable word.
fn one_word(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(1024)
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "none".into()
    } else {
        cleaned
    }
}

/// Prometheus text exposition of the counters.
pub fn render_metrics(stats: &Stats, admission: &AdmissionSnapshot) -> String {
    let mut page = Exposition::new();
    page.counter(
        "dportage_connections_total",
        "Connections accepted on the job port.",
    )
    .sample(&[], stats.tcp_accepts());
    let mut jobs = page.counter(
        "dportage_jobs_total",
        "Connections finished, by result (distccd's dcc_* counters).",
    );
    for outcome in Outcome::ALL {
        jobs.sample(&[("result", outcome.metric_label())], stats.count(outcome));
    }
    page.gauge("dportage_jobs_running", "Compiles running now.")
        .sample(&[], stats.running());
    page.gauge("dportage_job_slots", "Compiles allowed at once (--jobs).")
        .sample(&[], stats.max_kids);
    page.gauge(
        "dportage_queue_depth",
        "Complete requests waiting for a job slot.",
    )
    .sample(&[], admission.queued);
    page.gauge(
        "dportage_queue_limit",
        "Requests allowed to wait (--queue).",
    )
    .sample(&[], admission.max_queued);
    page.gauge(
        "dportage_queued_bytes",
        "Bytes of requests held in memory, being read or waiting for a job slot.",
    )
    .sample(&[], admission.held_bytes);
    page.gauge(
        "dportage_queued_bytes_limit",
        "Bytes of requests allowed in memory (--queue-bytes).",
    )
    .sample(&[], admission.max_bytes);
    page.gauge(
        "dportage_connections_open",
        "Job connections open (reading, queued, compiling or replying).",
    )
    .sample(&[], admission.open_connections);
    page.gauge(
        "dportage_connections_unsent",
        "Job connections whose request has not fully arrived (being read, or waiting for \
         their client address's turn: --max-per-client are read at once).",
    )
    .sample(&[], admission.unsent);
    page.gauge(
        "dportage_connections_limit",
        "Job connections allowed at once (--max-connections).",
    )
    .sample(&[], admission.max_connections);
    let mut refused = page.counter(
        "dportage_refused_total",
        "Connections closed at accept (per_client, global) and complete requests closed \
         unserved (queue_full, queue_bytes).",
    );
    for label in REFUSAL_LABELS {
        refused.sample(&[("reason", label)], stats.refusals(label));
    }
    let mut stalls = page.counter(
        "dportage_stall_kills_total",
        "Clients dropped for sending their request too slowly, by the part they were sending.",
    );
    for phase in StallPhase::ALL {
        stalls.sample(&[("phase", phase.label())], stats.stall_kills(phase));
    }
    page.counter(
        "dportage_busy_answers_total",
        "Busy answers (BUSY) sent to refused clients instead of closing without a word.",
    )
    .sample(&[], stats.busy_answers());
    let (spooled, spooled_bytes) = stats.spooled_totals();
    page.counter(
        "dportage_spooled_requests_total",
        "Queued requests whose source (over 1 MiB) waited on disk instead of in memory.",
    )
    .sample(&[], spooled);
    page.counter(
        "dportage_spooled_bytes_total",
        "Bytes of sources spooled to disk while they queued.",
    )
    .sample(&[], spooled_bytes);
    let c = stats.cache_totals();
    page.counter(
        "dportage_cache_fetches_total",
        "Cached replies served by CGET (the result cache).",
    )
    .sample(&[], c.fetches);
    page.counter(
        "dportage_cache_fetch_bytes_total",
        "Bytes of cached replies served by CGET.",
    )
    .sample(&[], c.fetch_bytes);
    page.counter(
        "dportage_cache_misses_total",
        "CGETs of a result this host does not hold (closed without a byte).",
    )
    .sample(&[], c.misses);
    page.counter(
        "dportage_cache_claims_queued_total",
        "Network jobs kept in the result store and queued as claims for the coordinator.",
    )
    .sample(&[], c.claims_queued);
    page.counter(
        "dportage_cache_claims_sent_total",
        "Claims the coordinator acknowledged.",
    )
    .sample(&[], c.claims_sent);
    let mut durations = page.histogram(
        "dportage_job_duration_seconds",
        "Time from accept to reply of jobs that ran the compiler.",
    );
    if let Ok(h) = stats.histogram.lock() {
        durations.sample(
            &[],
            &Histogram {
                bounds: &DURATION_BUCKETS,
                cumulative: h.cumulative.to_vec(),
                count: h.total,
                sum: h.sum_secs,
            },
        );
    }
    page.counter(
        "dportage_request_bytes_total",
        "Bytes read from clients on the job port.",
    )
    .sample(&[], stats.bytes_in.load(Ordering::Relaxed));
    page.counter(
        "dportage_reply_bytes_total",
        "Bytes of replies written to clients.",
    )
    .sample(&[], stats.bytes_out.load(Ordering::Relaxed));
    page.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_parses() {
        let (running, l) = parse_loadavg("4.27 3.37 1.51 1/93 24071\n").unwrap();
        assert_eq!(running, 1);
        assert_eq!(l, [4.27, 3.37, 1.51]);
        assert!(parse_loadavg("garbage").is_none());
    }

    #[test]
    fn proc_stat_parses_names_with_spaces_and_parens() {
        let line = "1234 (tmux: server) S 1 1234 1234 0 -1 4194560 5311 0 0 0 29 11 0 0 20 0 1 0 \
                    3306 10522624 1153 18446744073709551615 1 1 0 0 0 0 0 4096 134301191 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_proc_stat(line), Some(("tmux: server", 'S', 1153)));
        let line = "7 (a) b)) D 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 99 22";
        assert_eq!(parse_proc_stat(line), Some(("a) b)", 'D', 99)));
        assert_eq!(parse_proc_stat("nonsense"), None);
    }

    #[test]
    fn diskstats_counts_whole_disks_only() {
        let text = "   8       0 sda 100 0 1000 0 50 0 500 0 0 0 0\n\
                    \x20  8       1 sda1 100 0 1000 0 50 0 500 0 0 0 0\n\
                    \x20  7       0 loop0 1 0 9999 0 1 0 9999 0 0 0 0\n\
                    \x20253       0 vda 1 0 7 0 1 0 3 0 0 0 0\n";
        let disks = ["sda", "vda", "loop0"];
        assert_eq!(
            sum_disk_sectors(text, |d| disks.contains(&d)),
            1000 + 500 + 7 + 3
        );
    }

    #[test]
    fn counters_and_windows() {
        let stats = Stats::new(4);
        stats.accepted();
        stats.finish(
            Outcome::CompileOk,
            Duration::from_millis(61),
            Some(("x.ii", "g++")),
        );
        stats.finish(
            Outcome::CompileOk,
            Duration::from_millis(10),
            Some(("y.c", "gcc")),
        );
        stats.finish(Outcome::Other, Duration::from_millis(1), None);
        stats.refused(&Refused::PerClient(32));
        stats.stall_kill(StallPhase::Header);
        let adm = AdmissionSnapshot {
            queued: 3,
            held_bytes: 900,
            ..AdmissionSnapshot::default()
        };
        let page = render_stats_page(&stats, &SystemSnapshot::default(), &adm);
        assert!(page.contains("\ndportage_queue_depth 3\n"));
        assert!(page.contains("\ndportage_queued_bytes 900\n"));
        assert!(page.contains("\ndportage_refused_per_client 1\n"));
        assert!(page.contains("\ndportage_stall_kills_header 1\n"));
        assert!(page.contains("\ndcc_compile_ok 2\n"));
        assert!(page.contains("\ndcc_other 1\n"));
        assert!(page.contains("\ndcc_longest_job x.ii\n"));
        assert!(page.contains("\ndcc_longest_job_compiler g++\n"));
        assert!(page.contains("\ndcc_longest_job_time_msecs 61\n"));
        assert!(page.contains("\ndcc_num_compiles1 2\n"));
        assert!(page.contains("\ndcc_max_kids 4\n"));
        let metrics = render_metrics(&stats, &adm);
        assert!(metrics.contains("dportage_queue_depth 3\n"));
        assert!(metrics.contains("dportage_queued_bytes 900\n"));
        assert!(metrics.contains("dportage_refused_total{reason=\"per_client\"} 1\n"));
        assert!(metrics.contains("dportage_refused_total{reason=\"queue_full\"} 0\n"));
        assert!(metrics.contains("dportage_stall_kills_total{phase=\"header\"} 1\n"));
        assert!(metrics.contains("dportage_stall_kills_total{phase=\"body\"} 0\n"));
        assert!(metrics.contains("dportage_jobs_total{result=\"compile_ok\"} 2\n"));
        assert!(metrics.contains("dportage_job_duration_seconds_count 2\n"));
        assert!(metrics.contains("dportage_job_duration_seconds_bucket{le=\"0.05\"} 1\n"));
    }

    #[test]
    fn empty_page_says_none() {
        let page = render_stats_page(
            &Stats::new(1),
            &SystemSnapshot::default(),
            &AdmissionSnapshot::default(),
        );
        assert!(page.starts_with("HTTP/1.0 200 OK\nContent-Type: text/plain\nConnection: close\n\nargv /distccd\n<distccstats>\n"));
        assert!(page.contains("\ndcc_longest_job none\n"));
        assert!(page.contains("\ndcc_longest_job_time_msecs -1\n"));
        assert!(page.contains("\n</distccstats>\n<dportagestats>\n"));
        assert!(page.ends_with("</dportagestats>\n"));
        assert!(!page.contains('\r'));
    }

    #[test]
    fn gauges_follow_guards() {
        let stats = Stats::new(2);
        let c = stats.open_connection();
        let c2 = stats.open_connection();
        assert_eq!(stats.open_connections(), 2);
        let r = stats.start_compile();
        assert_eq!(stats.running(), 1);
        drop(r);
        drop(c);
        drop(c2);
        assert_eq!(stats.open_connections(), 0);
        assert_eq!(stats.running(), 0);
    }
}
