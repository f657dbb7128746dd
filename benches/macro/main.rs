//! The side-by-side macro-benchmark: dportage against distcc 3.4 on a real code
//! base (Lua 5.4's liblua), on loopback and through emulated WAN links, plus the
//! per-job overhead on a tiny translation unit.
//!
//! ```sh
//! cargo bench --bench macro                 # full run (5 build runs per row)
//! cargo bench --bench macro -- --quick      # 1 build run per row, still 50 per-job runs
//! cargo bench --bench macro -- --help       # every option
//! ```
//!
//! Each row is a *system under test*: a client command, a server command (or
//! none), host options and environment. Every row is run on its own servers'
//! proxies, so bytes on the wire are always counted; rows are interleaved run by
//! run so that machine noise hits all of them alike. A row that cannot run (a
//! server that does not start, a client that fails, a timeout) is reported as
//! "failed: <reason>" and the table is still printed. The table goes to stdout
//! and to `target/bench-macro.md`. See docs/benchmarks.md.

mod lua;
mod procs;
mod report;

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dportage::tools::wanproxy::{ByteCounters, RunningProxy, WanLink, WanProxy};

use lua::LuaSource;
use procs::{CpuTracker, Daemon};
use report::{BuildRow, PerJobRow, Report, RowStatus, RunSample};

/// Server addresses: 127.0.0.2, 127.0.0.3, … (spec §10.4: a daemon on this
/// machine needs a 127.0.0.x address, not `localhost`).
pub fn server_ips(count: usize) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
        .collect()
}
/// Most servers one run starts (each costs a daemon and its proxies).
const MAX_SERVERS: usize = 8;

/// Network profiles. Loopback still goes through a counting proxy.
pub const NETWORKS: [(&str, WanProxy); 3] = [
    ("loopback", WanProxy::counting()),
    (
        "WAN 20 ms / 10 Mbit/s",
        WanProxy::new(Duration::from_millis(20), 10_000_000),
    ),
    (
        "WAN 50 ms / 1 Mbit/s",
        WanProxy::new(Duration::from_millis(50), 1_000_000),
    ),
];
pub const LOOPBACK: usize = 0;
pub const WAN_20MS: usize = 1;

/// A redundancy row whose client sent each job once: dual dispatch is not in
/// this build yet, so the row says so instead of timing a plain build.
const NO_REDUNDANCY: &str = "DPORTAGE_REDUNDANCY=2 had no effect";

const TINY_TU: &str = "int tiny(int x) { return x * 3 + 1; }\n";

const USAGE: &str = "\
cargo bench --bench macro [-- OPTIONS]

  --quick              1 build run per row (default 5), budget 120 s; per-job runs stay at 50
  --runs N             build runs per row
  --per-job-runs N     compiles of the tiny TU per configuration (default 50)
  --servers N          servers per system under test, on 127.0.0.2… (default 2, at most 8)
  --slots J            --jobs per server and slots per host (default 2; make -j is N×J)
  --timeout SECS       limit for one build (default 600; a row over it is reported as such)
  --budget SECS        time for the whole run (default 600, 120 with --quick): no new build
                       round starts when the last one would not fit; the table says so
  --only WORDS         only build rows whose label contains one of the comma-separated WORDS
                       (the local reference build always runs)
  --skip-builds        per-job overhead only
  --skip-per-job       builds only
  --keep-temp          keep the scratch directory and print its path
  --out FILE           also write the table here (default: target/bench-macro.md)

Environment: DPORTAGE_BIN (dportage binary; default the one cargo just built),
DPORTAGE_SERVE_BIN (binary run as `dportage serve`; default DPORTAGE_BIN),
DISTCC_BIN / DISTCCD_BIN (default: found in PATH), LUA_SRC_DIR (Lua sources;
default: the lua-src dev-dependency located with `cargo metadata`).";

#[derive(Debug, Clone)]
struct Options {
    runs: usize,
    per_job_runs: usize,
    servers: usize,
    slots: u32,
    budget: Duration,
    timeout: Duration,
    only: Vec<String>,
    builds: bool,
    per_job: bool,
    keep_temp: bool,
    out: Option<PathBuf>,
    quick: bool,
}

fn parse_options(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options {
        runs: 5,
        per_job_runs: 50,
        servers: 2,
        slots: 2,
        budget: Duration::ZERO,
        timeout: Duration::from_secs(600),
        only: Vec::new(),
        builds: true,
        per_job: true,
        keep_temp: false,
        out: None,
        quick: false,
    };
    let mut runs = None;
    let mut budget = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("{name} needs a positive number, not {v:?}"))
        };
        match a.as_str() {
            // cargo passes --bench to harness = false targets.
            "--bench" => {}
            "--quick" => o.quick = true,
            "--runs" => runs = Some(number("--runs", value("--runs")?)? as usize),
            "--per-job-runs" => {
                o.per_job_runs = number("--per-job-runs", value("--per-job-runs")?)? as usize
            }
            "--servers" => {
                o.servers = usize::try_from(number("--servers", value("--servers")?)?)
                    .ok()
                    .filter(|&n| n <= MAX_SERVERS)
                    .ok_or(format!("--servers must be at most {MAX_SERVERS}"))?
            }
            "--budget" => {
                budget = Some(Duration::from_secs(number("--budget", value("--budget")?)?))
            }
            "--slots" => {
                o.slots = u32::try_from(number("--slots", value("--slots")?)?)
                    .ok()
                    .filter(|&s| s <= 64)
                    .ok_or("--slots must be at most 64")?
            }
            "--timeout" => {
                o.timeout = Duration::from_secs(number("--timeout", value("--timeout")?)?)
            }
            "--only" => {
                o.only = value("--only")?
                    .split(',')
                    .map(|w| w.trim().to_lowercase())
                    .filter(|w| !w.is_empty())
                    .collect()
            }
            "--skip-builds" => o.builds = false,
            "--skip-per-job" => o.per_job = false,
            "--keep-temp" => o.keep_temp = true,
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    o.runs = runs.unwrap_or(if o.quick { 1 } else { 5 });
    o.budget = budget.unwrap_or(Duration::from_secs(if o.quick { 120 } else { 600 }));
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("macro bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    procs::install_interrupt_handler();
    match run(&options) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("macro bench: {e}");
            std::process::exit(1);
        }
    }
}

/// Which client program a configuration compiles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Plain gcc, no distribution.
    Local,
    Distcc,
    Dportage,
}

/// Which daemon serves a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Distccd,
    DportageServe,
}

/// Paths of the programs under test.
struct Tools {
    distcc: Option<PathBuf>,
    distccd: Option<PathBuf>,
    dportage: PathBuf,
    /// The binary run as `dportage serve` (another build may be benchmarked).
    dportage_serve: PathBuf,
    /// A link named `distcc` to the dportage binary: how users run its client.
    dportage_client: PathBuf,
    make: PathBuf,
}

impl Tools {
    fn client_prefix(&self, client: Client) -> Result<String, String> {
        Ok(match client {
            Client::Local => "gcc".to_string(),
            Client::Distcc => format!(
                "{} gcc",
                self.distcc
                    .as_ref()
                    .ok_or("distcc is not installed (apt install distcc)")?
                    .display()
            ),
            Client::Dportage => format!("{} gcc", self.dportage_client.display()),
        })
    }
}

fn find_in_path(name: &str, env_override: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_override) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// One daemon per server address, and their CPU bookkeeping.
struct ServerSet {
    daemons: Vec<Daemon>,
    cpu_index: usize,
}

impl ServerSet {
    fn start(
        server: Server,
        tools: &Tools,
        ips: &[Ipv4Addr],
        slots: u32,
        scratch: &Path,
        tracker: &CpuTracker,
    ) -> Result<ServerSet, String> {
        let name = match server {
            Server::Distccd => "distccd",
            Server::DportageServe => "dportage serve",
        };
        let mut last_err = String::new();
        // A port free a moment ago can be taken before the daemon binds it.
        for _attempt in 0..3 {
            let port =
                procs::free_port_on(ips).map_err(|e| format!("cannot find a free port: {e}"))?;
            let mut daemons = Vec::new();
            for &ip in ips {
                let dir = scratch.join(format!("{}-{ip}-{port}", name.replace(' ', "-")));
                make_world_writable_dir(&dir)?;
                let mut cmd = match server {
                    Server::Distccd => Command::new(
                        tools
                            .distccd
                            .as_ref()
                            .ok_or("distccd is not installed (apt install distcc)")?,
                    ),
                    Server::DportageServe => {
                        let mut c = Command::new(&tools.dportage_serve);
                        c.arg("serve");
                        c
                    }
                };
                // The same options for both: dportage serve takes distccd's.
                cmd.args(["--daemon", "--no-detach", "--allow", "127.0.0.0/8"])
                    .arg("--listen")
                    .arg(ip.to_string())
                    .arg("--port")
                    .arg(port.to_string())
                    .arg("--jobs")
                    .arg(slots.to_string())
                    .arg("--log-file")
                    .arg(dir.join("server.log"))
                    .current_dir(&dir);
                scrub_env(&mut cmd);
                cmd.env("TMPDIR", &dir);
                match Daemon::start(
                    name,
                    cmd,
                    SocketAddrV4::new(ip, port),
                    &dir,
                    Duration::from_secs(15),
                ) {
                    Ok(d) => daemons.push(d),
                    Err(e) => {
                        last_err = e;
                        break;
                    }
                }
            }
            if daemons.len() == ips.len() {
                let cpu_index = tracker.register(daemons.iter().map(Daemon::pid).collect());
                return Ok(ServerSet { daemons, cpu_index });
            }
            if procs::interrupted() || !last_err.contains("did not listen") {
                break;
            }
        }
        Err(last_err)
    }

    fn addrs(&self) -> Vec<SocketAddrV4> {
        self.daemons.iter().map(|d| d.addr).collect()
    }

    /// Why the set can no longer serve, if a daemon died.
    fn health(&mut self) -> Result<(), String> {
        for d in &mut self.daemons {
            if !d.alive() {
                return Err(format!("{} on {} died: {}", d.name, d.addr, d.last_words()));
            }
        }
        Ok(())
    }
}

/// Server directories must be usable by a daemon that dropped root privileges
/// (distccd switches to user `distccd` when started as root).
fn make_world_writable_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o1777))
        .map_err(|e| format!("cannot open up {}: {e}", dir.display()))
}

/// Children get no distcc/dportage settings and no jobserver from the caller.
fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("DISTCC")
            || k.starts_with("DPORTAGE")
            || k.starts_with("CCACHE")
            || k.starts_with("_DISTCC")
            || matches!(
                k.as_ref(),
                "MAKEFLAGS" | "MFLAGS" | "MAKELEVEL" | "CC" | "CFLAGS"
            )
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C");
}

/// Proxies in front of one server pair, all on one emulated link.
struct Route {
    _proxies: Vec<RunningProxy>,
    counters: ByteCounters,
    hosts: Vec<SocketAddr>,
}

impl Route {
    fn open(
        rt: &tokio::runtime::Runtime,
        profile: WanProxy,
        upstreams: &[SocketAddrV4],
    ) -> Result<Route, String> {
        let link = WanLink::new(profile);
        let mut proxies = Vec::new();
        for up in upstreams {
            let listen = SocketAddr::from(SocketAddrV4::new(*up.ip(), 0));
            let proxy = rt
                .block_on(link.bind(listen, SocketAddr::from(*up)))
                .map_err(|e| format!("cannot start the proxy for {up}: {e}"))?;
            proxies.push(proxy);
        }
        Ok(Route {
            hosts: proxies.iter().map(RunningProxy::local_addr).collect(),
            counters: link.counters(),
            _proxies: proxies,
        })
    }

    fn distcc_hosts(&self, slots: u32, option: &str) -> String {
        self.hosts
            .iter()
            .map(|h| format!("{h}/{slots}{option}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Everything a run needs, set up once.
struct Bench<'a> {
    options: &'a Options,
    tools: Tools,
    scratch: PathBuf,
    rt: tokio::runtime::Runtime,
    tracker: CpuTracker,
    distccd: Result<ServerSet, String>,
    dportage_serve: Result<ServerSet, String>,
    started: Instant,
}

impl Bench<'_> {
    /// The running servers of a kind: unavailable if they never started
    /// (dportage serve before it is implemented), failed if one died since.
    fn servers(&mut self, server: Server) -> Result<&mut ServerSet, RowStatus> {
        let set = match server {
            Server::Distccd => &mut self.distccd,
            Server::DportageServe => &mut self.dportage_serve,
        };
        match set {
            Ok(p) => {
                p.health().map_err(RowStatus::Failed)?;
                Ok(p)
            }
            Err(e) => Err(RowStatus::Unavailable(e.clone())),
        }
    }

    /// Time left of the run's budget.
    fn budget_left(&self) -> Duration {
        self.options.budget.saturating_sub(self.started.elapsed())
    }

    /// Environment common to every compile: fresh state dir, our temp dir, and
    /// for distributed rows no silent local fallback (a job that does not
    /// reach a server is a failure of the row, not a fast local compile).
    fn client_command(
        &self,
        program: &str,
        state_dir: &Path,
        hosts: Option<&str>,
        extra_env: &[(&str, &str)],
    ) -> Result<Command, String> {
        fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let client_tmp = self.scratch.join("client-tmp");
        fs::create_dir_all(&client_tmp)
            .map_err(|e| format!("cannot create {}: {e}", client_tmp.display()))?;
        let mut cmd = Command::new(program);
        scrub_env(&mut cmd);
        cmd.env("TMPDIR", &client_tmp).env("DISTCC_DIR", state_dir);
        if let Some(h) = hosts {
            cmd.env("DISTCC_HOSTS", h).env("DISTCC_FALLBACK", "0");
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }
}

fn run(options: &Options) -> Result<(), String> {
    let started = Instant::now();
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dportage = std::env::var_os("DPORTAGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dportage")));
    let scratch_dir = tempfile::Builder::new()
        .prefix("dportage-macro-")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    {
        // Daemons that dropped root must reach their directories inside.
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(scratch_dir.path(), fs::Permissions::from_mode(0o755));
    }
    let scratch = scratch_dir.path().to_path_buf();
    let bin_dir = scratch.join("bin");
    fs::create_dir_all(&bin_dir).map_err(|e| format!("cannot create {bin_dir:?}: {e}"))?;
    let dportage_client = bin_dir.join("distcc");
    std::os::unix::fs::symlink(&dportage, &dportage_client)
        .map_err(|e| format!("cannot link {dportage_client:?}: {e}"))?;

    let tools = Tools {
        distcc: find_in_path("distcc", "DISTCC_BIN"),
        distccd: find_in_path("distccd", "DISTCCD_BIN"),
        dportage_serve: std::env::var_os("DPORTAGE_SERVE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| dportage.clone()),
        dportage,
        dportage_client,
        make: find_in_path("make", "MAKE_BIN").ok_or("make is not installed")?,
    };
    if find_in_path("gcc", "GCC_BIN").is_none() {
        return Err("gcc is not installed".into());
    }
    let lua = LuaSource::locate(&manifest_dir)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the proxy runtime: {e}"))?;
    let tracker = CpuTracker::start();

    let mut report = Report::new(
        options.runs,
        options.servers,
        options.slots,
        lua.object_count(),
    );
    report.machine = machine_facts(&tools);
    report.zstd = detect_zstd(&tools.dportage, &tools.dportage_serve);

    let ips = server_ips(options.servers);
    eprintln!("macro bench: starting distccd and dportage serve on {ips:?}");
    let start = |server| ServerSet::start(server, &tools, &ips, options.slots, &scratch, &tracker);
    let distccd = start(Server::Distccd);
    let dportage_serve = start(Server::DportageServe);
    for (name, set) in [("distccd", &distccd), ("dportage serve", &dportage_serve)] {
        if let Err(e) = set {
            eprintln!("macro bench: {name} is not usable: {e}");
            report
                .notes
                .push(format!("{name} not available, its rows are n/a: {e}"));
        }
    }
    let mut bench = Bench {
        options,
        tools,
        scratch: scratch.clone(),
        rt,
        tracker,
        distccd,
        dportage_serve,
        started,
    };

    if options.per_job {
        report.per_job = per_job_overhead(&mut bench)?;
    }
    if options.builds {
        report.builds = builds(&mut bench, &lua, &report.zstd, &mut report.notes)?;
    }
    if procs::interrupted() {
        report
            .notes
            .push("Interrupted: the numbers are partial.".into());
    }
    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        report.notes.push(format!(
            "Load average at the end: {}; whole run took {:.0} s. Other processes on this \
             machine add noise to every row alike: rows are interleaved run by run, so compare \
             ratios within one run rather than seconds across runs.",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            started.elapsed().as_secs_f64()
        ));
    }

    let markdown = report.markdown();
    println!("{markdown}");
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| target_dir(&manifest_dir).join("bench-macro.md"));
    match fs::write(&out, &markdown) {
        Ok(()) => eprintln!("macro bench: table written to {}", out.display()),
        Err(e) => eprintln!("macro bench: cannot write {}: {e}", out.display()),
    }

    // Daemons and proxies go before the scratch directory they live in.
    drop(bench);
    if options.keep_temp {
        eprintln!(
            "macro bench: scratch kept at {}",
            scratch_dir.keep().display()
        );
    }
    Ok(())
}

fn target_dir(manifest_dir: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                manifest_dir.join(d)
            }
        })
        .unwrap_or_else(|| manifest_dir.join("target"))
}

fn first_line(program: &Path, args: &[&str]) -> String {
    procs::capture_output(program, args, Duration::from_secs(10))
        .and_then(|t| t.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unavailable".into())
}

fn machine_facts(tools: &Tools) -> Vec<(String, String)> {
    let mut facts = vec![(
        "CPUs".to_string(),
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into()),
    )];
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    facts.push(("CPU model".into(), cpu_model));
    if let Ok(kernel) = fs::read_to_string("/proc/sys/kernel/osrelease") {
        facts.push(("Linux".into(), kernel.trim().to_string()));
    }
    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        facts.push((
            "load average at start".into(),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    facts.push(("gcc".into(), first_line(Path::new("gcc"), &["--version"])));
    if let Some(d) = &tools.distcc {
        facts.push(("distcc".into(), first_line(d, &["--version"])));
    }
    let commit = first_line(
        Path::new("git"),
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ],
    );
    facts.push((
        "dportage".into(),
        format!(
            "{} (commit {commit})",
            first_line(&tools.dportage, &["--version"])
        ),
    ));
    if tools.dportage_serve != tools.dportage {
        facts.push((
            "dportage serve binary (DPORTAGE_SERVE_BIN)".into(),
            tools.dportage_serve.display().to_string(),
        ));
    }
    facts
}

/// `,zstd` is only offered if dportage says so in its version or serve help.
fn detect_zstd(dportage: &Path, dportage_serve: &Path) -> Result<(), String> {
    let text: String = [
        procs::capture_output(dportage, &["--version"], Duration::from_secs(10)),
        procs::capture_output(
            dportage_serve,
            &["serve", "--help"],
            Duration::from_secs(10),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if text.to_lowercase().contains("zstd") {
        Ok(())
    } else {
        Err("not implemented (neither `dportage --version` nor `dportage serve --help` mentions zstd)".into())
    }
}

/// The same tiny TU compiled many times, one job at a time, interleaved across
/// configurations: the fixed cost of distributing one job.
fn per_job_overhead(bench: &mut Bench) -> Result<Vec<PerJobRow>, String> {
    let dir = bench.scratch.join("tiny");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    fs::write(dir.join("tiny.c"), TINY_TU).map_err(|e| format!("cannot write tiny.c: {e}"))?;

    // Loopback shows the fixed cost; the 20 ms WAN shows round trips (each one
    // costs 40 ms there, so an extra one cannot hide in the noise).
    let mut configs = vec![("local gcc (no distribution)", Client::Local, None, LOOPBACK)];
    for network in [LOOPBACK, WAN_20MS] {
        configs.extend([
            (
                "(a) distcc → distccd",
                Client::Distcc,
                Some(Server::Distccd),
                network,
            ),
            (
                "(b) dportage client → distccd",
                Client::Dportage,
                Some(Server::Distccd),
                network,
            ),
            (
                "(c) dportage client → dportage serve",
                Client::Dportage,
                Some(Server::DportageServe),
                network,
            ),
        ]);
    }
    struct Live {
        row: PerJobRow,
        client: Client,
        route: Option<Route>,
        cpu_index: Option<usize>,
        server: Option<Server>,
    }
    let mut live = Vec::new();
    for (label, client, server, network) in configs {
        let mut row = PerJobRow::new(label, network);
        let mut route = None;
        let mut cpu_index = None;
        if let Some(s) = server {
            match bench.servers(s) {
                Ok(set) => {
                    cpu_index = Some(set.cpu_index);
                    // One host, one job at a time: only the first server.
                    let first = set.addrs()[..1].to_vec();
                    match Route::open(&bench.rt, NETWORKS[network].1, &first) {
                        Ok(r) => route = Some(r),
                        Err(e) => row.status = RowStatus::Failed(e),
                    }
                }
                Err(status) => row.status = status,
            }
        }
        live.push(Live {
            row,
            client,
            route,
            cpu_index,
            server,
        });
    }

    let runs = bench.options.per_job_runs;
    let mut reference: Option<Vec<u8>> = None;
    eprintln!("macro bench: per-job overhead, {runs} compiles of a tiny TU per configuration");
    for i in 0..runs {
        for (index, l) in live.iter_mut().enumerate() {
            if procs::interrupted() {
                break;
            }
            if !matches!(l.row.status, RowStatus::Ok) {
                continue;
            }
            let obj = dir.join("tiny.o");
            let _ = fs::remove_file(&obj);
            let hosts = l.route.as_ref().map(|r| r.distcc_hosts(1, ",lzo"));
            let prefix = match bench.tools.client_prefix(l.client) {
                Ok(p) => p,
                Err(e) => {
                    l.row.status = RowStatus::Failed(e);
                    continue;
                }
            };
            let mut words = prefix.split(' ');
            let program = words.next().unwrap_or("gcc").to_string();
            let state = bench.scratch.join(format!("state-tiny-{index}"));
            let mut cmd = bench.client_command(&program, &state, hosts.as_deref(), &[])?;
            cmd.args(words)
                .args(["-O2", "-c", "tiny.c", "-o", "tiny.o"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped_to_file(&dir.join("stderr.txt"))?);
            let before_cpu = l.cpu_index.map(|c| bench.tracker.cpu_ns(c));
            let before_net = l.route.as_ref().map(|r| r.counters.snapshot());
            let measured = procs::run_measured(&mut cmd, Duration::from_secs(60))
                .map_err(|e| format!("cannot run {program}: {e}"));
            let after_cpu = l.cpu_index.map(|c| bench.tracker.cpu_ns(c));
            let after_net = l.route.as_ref().map(|r| r.counters.snapshot());
            let failure = match measured {
                Err(e) => Some(e),
                Ok(m) if m.timed_out => Some("timed out after 60 s".into()),
                Ok(m) if m.exit_code != Some(0) => Some(format!(
                    "compile #{} exited with {:?}: {}",
                    i + 1,
                    m.exit_code,
                    last_line(&dir.join("stderr.txt"))
                )),
                Ok(m) => {
                    let object = fs::read(&obj).unwrap_or_default();
                    let net = before_net
                        .zip(after_net)
                        .map(|(b, a)| (a.0 - b.0, a.1 - b.1, a.2 - b.2));
                    match (&reference, net) {
                        (_, Some((_, _, 0))) => {
                            Some("the job never reached the server (compiled locally?)".to_string())
                        }
                        (Some(r), _) if *r != object => {
                            Some("tiny.o differs from the local compile".into())
                        }
                        _ => {
                            if reference.is_none() && l.client == Client::Local {
                                reference = Some(object);
                            }
                            l.row.walls.push(m.wall.as_secs_f64());
                            l.row.client_cpus.push(m.cpu.as_secs_f64());
                            if let Some((up, down, conns)) = net {
                                l.row.bytes += up + down;
                                l.row.jobs += conns;
                            }
                            if let (Some(b), Some(a)) = (before_cpu, after_cpu) {
                                l.row.server_ns += a.saturating_sub(b);
                            }
                            None
                        }
                    }
                }
            };
            if let Some(f) = failure {
                let f = match l.server.map(|s| bench.servers(s).err()) {
                    Some(Some(dead)) => format!("{f} ({dead})"),
                    _ => f,
                };
                l.row.status = RowStatus::Failed(f);
            }
        }
        if (i + 1) % 10 == 0 {
            eprintln!("macro bench: per-job {}/{runs}", i + 1);
        }
    }
    Ok(live.into_iter().map(|l| l.row).collect())
}

/// Extension so a child's stderr lands in a file we can quote on failure.
trait PipedToFile {
    fn piped_to_file(path: &Path) -> Result<Stdio, String>;
}

impl PipedToFile for Stdio {
    fn piped_to_file(path: &Path) -> Result<Stdio, String> {
        fs::File::create(path)
            .map(Stdio::from)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
    }
}

/// The last non-empty line of a log, for failure messages.
fn last_line(path: &Path) -> String {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.starts_with("make"))
                .or_else(|| t.lines().rev().find(|l| !l.trim().is_empty()))
                .map(|l| l.chars().take(300).collect())
        })
        .unwrap_or_else(|| "(no output)".into())
}

/// One build configuration as it runs.
struct LiveRow {
    row: BuildRow,
    client: Client,
    server: Option<Server>,
    host_option: &'static str,
    env: Vec<(&'static str, &'static str)>,
    route: Option<Route>,
    cpu_index: Option<usize>,
}

fn build_rows(zstd: bool) -> Vec<LiveRow> {
    let mut rows = Vec::new();
    let mut add = |label: &str,
                   client: Client,
                   server: Option<Server>,
                   network: usize,
                   host_option: &'static str,
                   env: Vec<(&'static str, &'static str)>| {
        rows.push(LiveRow {
            row: BuildRow::new(label, client, server, network, host_option, !env.is_empty()),
            client,
            server,
            host_option,
            env,
            route: None,
            cpu_index: None,
        });
    };
    add("local make -j2", Client::Local, None, LOOPBACK, "", vec![]);
    for network in 0..NETWORKS.len() {
        add(
            "distcc → distccd",
            Client::Distcc,
            Some(Server::Distccd),
            network,
            ",lzo",
            vec![],
        );
        // Our client against distcc's server: the client's share of any
        // difference, and a dportage row that runs before `dportage serve` exists.
        add(
            "dportage client → distccd",
            Client::Dportage,
            Some(Server::Distccd),
            network,
            ",lzo",
            vec![],
        );
        add(
            "dportage → dportage serve",
            Client::Dportage,
            Some(Server::DportageServe),
            network,
            ",lzo",
            vec![],
        );
        if network == LOOPBACK {
            add(
                "dportage → dportage serve, DPORTAGE_REDUNDANCY=2",
                Client::Dportage,
                Some(Server::DportageServe),
                network,
                ",lzo",
                vec![("DPORTAGE_REDUNDANCY", "2")],
            );
        }
        if zstd {
            add(
                "dportage → dportage serve, zstd",
                Client::Dportage,
                Some(Server::DportageServe),
                network,
                ",zstd",
                vec![],
            );
        }
    }
    if !zstd {
        add(
            "dportage → dportage serve, zstd",
            Client::Dportage,
            Some(Server::DportageServe),
            LOOPBACK,
            ",zstd",
            vec![],
        );
    }
    rows
}

fn builds(
    bench: &mut Bench,
    lua: &LuaSource,
    zstd: &Result<(), String>,
    notes: &mut Vec<String>,
) -> Result<Vec<BuildRow>, String> {
    let options = bench.options;
    let mut rows = build_rows(zstd.is_ok());
    for r in rows.iter_mut() {
        let wanted = r.client == Client::Local
            || options.only.is_empty()
            || options.only.iter().any(|w| {
                let text = format!("{} {}", r.row.label, NETWORKS[r.row.network].0).to_lowercase();
                text.contains(w.as_str())
            });
        if !wanted {
            r.row.status = RowStatus::Skipped;
            continue;
        }
        if let (",zstd", Err(why)) = (r.host_option, zstd) {
            r.row.status = RowStatus::NotImplemented(why.clone());
            continue;
        }
        let Some(server) = r.server else { continue };
        match bench.servers(server) {
            Ok(set) => {
                r.cpu_index = Some(set.cpu_index);
                let addrs = set.addrs();
                match Route::open(&bench.rt, NETWORKS[r.row.network].1, &addrs) {
                    Ok(route) => r.route = Some(route),
                    Err(e) => r.row.status = RowStatus::Failed(e),
                }
            }
            Err(status) => r.row.status = status,
        }
    }

    let tree = bench.scratch.join("build").join("lua");
    let logs = bench.scratch.join("logs");
    fs::create_dir_all(&logs).map_err(|e| format!("cannot create {logs:?}: {e}"))?;
    let mut reference: Option<BTreeMap<String, Vec<u8>>> = None;
    let total_slots = options.slots * options.servers as u32;

    let mut last_round = Duration::ZERO;
    'rounds: for run in 0..options.runs {
        // Every row gets at least one build; later rounds only while the whole
        // round still fits in the budget.
        if run > 0 && bench.budget_left() < last_round {
            notes.push(format!(
                "Budget: stopped after {run} of {} build rounds (--budget {} s; a round took \
                 {:.0} s). Medians are over {run} run(s).",
                options.runs,
                options.budget.as_secs(),
                last_round.as_secs_f64()
            ));
            break;
        }
        let round_started = Instant::now();
        for (index, r) in rows.iter_mut().enumerate() {
            if procs::interrupted() {
                break 'rounds;
            }
            if !matches!(r.row.status, RowStatus::Ok) {
                continue;
            }
            let label = format!("{} ({})", r.row.label, NETWORKS[r.row.network].0);
            lua.prepare(&tree)
                .map_err(|e| format!("cannot prepare the Lua tree in {tree:?}: {e}"))?;
            let jobs = if r.client == Client::Local {
                2
            } else {
                total_slots
            };
            let prefix = bench.tools.client_prefix(r.client);
            let hosts = r
                .route
                .as_ref()
                .map(|route| route.distcc_hosts(options.slots, r.host_option));
            let state = bench.scratch.join(format!("state-{index}-{run}"));
            let log = logs.join(format!("{index}-{run}.log"));
            let outcome = prefix.and_then(|prefix| {
                let mut cmd = bench.client_command(
                    &bench.tools.make.to_string_lossy(),
                    &state,
                    hosts.as_deref(),
                    &r.env,
                )?;
                cmd.arg("-C")
                    .arg(&tree)
                    .arg(format!("-j{jobs}"))
                    .arg(format!("CC={prefix}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped_to_file(&log)?)
                    .stderr(Stdio::from(
                        fs::OpenOptions::new()
                            .append(true)
                            .open(&log)
                            .map_err(|e| format!("cannot open {log:?}: {e}"))?,
                    ));
                let before_cpu = r.cpu_index.map(|c| bench.tracker.cpu_ns(c));
                let before_net = r.route.as_ref().map(|x| x.counters.snapshot());
                let limit = options
                    .timeout
                    .min(bench.budget_left().max(Duration::from_secs(60)));
                let m = procs::run_measured(&mut cmd, limit)
                    .map_err(|e| format!("cannot run make: {e}"))?;
                let after_cpu = r.cpu_index.map(|c| bench.tracker.cpu_ns(c));
                let after_net = r.route.as_ref().map(|x| x.counters.snapshot());
                if m.timed_out {
                    return Err(format!("timeout: one build exceeded {limit:?}"));
                }
                if m.exit_code != Some(0) {
                    return Err(format!(
                        "make exited with {:?}: {}",
                        m.exit_code,
                        last_line(&log)
                    ));
                }
                let (up, down, conns) = match (before_net, after_net) {
                    (Some(b), Some(a)) => (a.0 - b.0, a.1 - b.1, a.2 - b.2),
                    _ => (0, 0, 0),
                };
                if r.server.is_some() && (conns as usize) < lua.object_count() {
                    return Err(format!(
                        "only {conns} of {} compiles reached a server",
                        lua.object_count()
                    ));
                }
                if r.row.redundant && (conns as usize) < 2 * lua.object_count() {
                    return Err(format!(
                        "{NO_REDUNDANCY}: {conns} connections for {} jobs",
                        lua.object_count()
                    ));
                }
                let built = lua::objects(&tree).map_err(|e| format!("cannot read objects: {e}"))?;
                let mismatch = match &reference {
                    None => {
                        reference = Some(built);
                        None
                    }
                    Some(reference) => lua::compare_objects(reference, &built),
                };
                Ok(RunSample {
                    wall: m.wall.as_secs_f64(),
                    client_cpu: m.cpu.as_secs_f64(),
                    server_ns: before_cpu.zip(after_cpu).map(|(b, a)| a.saturating_sub(b)),
                    bytes_up: up,
                    bytes_down: down,
                    connections: conns,
                    object_mismatch: mismatch,
                })
            });
            match outcome {
                Ok(sample) => {
                    eprintln!(
                        "macro bench: run {}/{} {label}: {:.2} s, {} jobs, {} B up, {} B down{}",
                        run + 1,
                        options.runs,
                        sample.wall,
                        sample.connections,
                        sample.bytes_up,
                        sample.bytes_down,
                        sample
                            .object_mismatch
                            .as_ref()
                            .map(|m| format!(", OBJECTS DIFFER: {m}"))
                            .unwrap_or_default()
                    );
                    r.row.runs.push(sample);
                }
                Err(e) => {
                    let e = match r.server.map(|s| bench.servers(s).err()) {
                        Some(Some(dead)) => format!("{e} ({dead})"),
                        _ => e,
                    };
                    eprintln!(
                        "macro bench: run {}/{} {label}: failed: {e}",
                        run + 1,
                        options.runs
                    );
                    r.row.status = if e.starts_with("timeout") {
                        RowStatus::TimedOut(e)
                    } else if e.starts_with(NO_REDUNDANCY) {
                        RowStatus::NotImplemented(format!("not implemented: {e}"))
                    } else {
                        RowStatus::Failed(e)
                    };
                    if r.client == Client::Local {
                        return Err(format!(
                            "the local reference build failed: {}",
                            r.row.status
                        ));
                    }
                }
            }
        }
        last_round = round_started.elapsed();
    }
    Ok(rows.into_iter().map(|r| r.row).collect())
}
