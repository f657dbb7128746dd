//! `dportage demo`: the whole network on one machine, with no set-up.
//!
//! It starts a coordinator and a few daemons on 127.0.0.x (one of them behind a
//! proxy that flips a byte in every object it returns), then builds a bundled
//! multi-file C program through the network as two different members with
//! redundancy 2. The liar is caught by each member's dual dispatch, reported by
//! both, and blacklisted once the coordinator's referee re-ran the disputed
//! job from the uploaded evidence (adjudication); every object the build kept
//! is compared with a local build. Then an attacker's key (an honest-serving
//! host's owner) tries to frame an honest host with a false report, and the
//! same re-run strikes the attacker instead.
//!
//! Everything runs as child processes of this same binary, so the demo drives
//! exactly the command lines a user would type.

mod procs;

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use self::procs::{wait_for_address_file, wait_for_port, Children};
use super::UsageError;

/// The bundled sample: a small expression calculator, ten translation units.
const SAMPLE: &[(&str, &str)] = &[
    ("calc.h", include_str!("sample/calc.h")),
    ("main.c", include_str!("sample/main.c")),
    ("lexer.c", include_str!("sample/lexer.c")),
    ("parser.c", include_str!("sample/parser.c")),
    ("eval.c", include_str!("sample/eval.c")),
    ("vars.c", include_str!("sample/vars.c")),
    ("hash.c", include_str!("sample/hash.c")),
    ("funcs.c", include_str!("sample/funcs.c")),
    ("strbuf.c", include_str!("sample/strbuf.c")),
    ("util.c", include_str!("sample/util.c")),
];

/// How long any one step (a daemon starting, a build) may take before the demo
/// gives up, so it never hangs on a broken machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub(super) struct DemoOptions {
    honest_hosts: usize,
    keep: bool,
    verbose: bool,
}

/// `dportage demo [--hosts N] [--keep] [-v]`.
pub fn demo_main(args: Vec<OsString>) -> i32 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", super::docs::demo_help());
        return 0;
    }
    let options = match parse_args(&args) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("dportage demo: {message}");
            eprintln!("usage: dportage demo [--hosts N (2-8, default 3)] [--keep] [-v]");
            return crate::exitcode::BAD_ARGUMENTS;
        }
    };
    match run(&options) {
        Ok(summary) if summary.passed() => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("dportage demo: {e:#}");
            eprintln!(
                "dportage demo: nothing was changed outside the demo's temporary directory; \
                 rerun with -v to see each daemon's log"
            );
            1
        }
    }
}

pub(super) fn parse_args(args: &[OsString]) -> Result<DemoOptions, UsageError> {
    let mut options = DemoOptions {
        honest_hosts: 3,
        keep: false,
        verbose: false,
    };
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--hosts" => {
                let v = it.next().ok_or(UsageError::MissingValue {
                    option: "--hosts",
                    what: "a number",
                })?;
                options.honest_hosts = v.parse().ok().filter(|n| (2..=8).contains(n)).ok_or(
                    UsageError::OutOfRange {
                        option: "--hosts",
                        value: v,
                        range: "2 to 8",
                    },
                )?;
            }
            "--keep" => options.keep = true,
            "-v" | "--verbose" => options.verbose = true,
            other => return Err(UsageError::UnknownArgument(other.to_owned())),
        }
    }
    Ok(options)
}

/// What the demo saw, printed at the end.
#[derive(Debug, Default)]
struct Summary {
    jobs: usize,
    local_wall: Duration,
    network_walls: Vec<Duration>,
    mismatch_lines: Vec<String>,
    objects_checked: usize,
    objects_wrong: Vec<String>,
    liar_blacklisted: bool,
    /// The blacklisting came from an adjudication (a referee re-ran the job).
    liar_adjudicated: bool,
    liar_listed_after: bool,
    program_output_matches: bool,
    /// What the framing attempt's report got (the `__frame` tool's line).
    framing_report: String,
    framer_blacklisted: bool,
    framed_host_blacklisted: bool,
    framed_host_listed_after: bool,
}

impl Summary {
    fn passed(&self) -> bool {
        self.objects_wrong.is_empty()
            && self.program_output_matches
            && !self.mismatch_lines.is_empty()
            && self.liar_blacklisted
            && !self.liar_listed_after
            && self.framing_failed()
    }

    fn framing_failed(&self) -> bool {
        self.framer_blacklisted && !self.framed_host_blacklisted && self.framed_host_listed_after
    }
}

/// One daemon of the demo network.
struct Daemon {
    name: String,
    identity_dir: PathBuf,
    /// Where clients are told to connect (the liar's proxy for the liar).
    advertised: SocketAddr,
}

fn run(options: &DemoOptions) -> anyhow::Result<Summary> {
    use anyhow::Context;

    let exe = std::env::current_exe().context("cannot find the dportage executable")?;
    let root = tempfile::Builder::new()
        .prefix("dportage-demo-")
        .tempdir()
        .context("cannot create a temporary directory (set TMPDIR to a writable place)")?;
    let root_path = root.path().to_path_buf();
    let mut children = Children::new(options.verbose);
    let mut summary = Summary {
        jobs: SAMPLE.iter().filter(|(n, _)| n.ends_with(".c")).count(),
        ..Summary::default()
    };

    say("dportage demo: a compile network on 127.0.0.x, one host lying");
    let bin = root_path.join("bin");
    fs::create_dir_all(&bin)?;
    std::os::unix::fs::symlink(&exe, bin.join("dportage-cc"))?;
    std::os::unix::fs::symlink(&exe, bin.join("dportage"))?;

    // 1. The coordinator.
    let coordinator_dir = root_path.join("coordinator");
    let address_file = root_path.join("coordinator.addr");
    children.spawn(
        "coordinator",
        Command::new(&exe)
            .arg("coordinator")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(&coordinator_dir)
            .arg("--address-file")
            .arg(&address_file)
            // A network in a box: every host is new and on 127.0.0.0/24, so
            // hosts are established at once (a real network earns it over
            // weeks, or its operator vouches) and new hosts are not limited
            // per network; the two members' reports then count. Challenges
            // stay on: a daemon is listed once it compiled a challenge job at
            // its advertised address (the liar too: on one /24 there is no
            // referee of another network, so a challenge proves service only).
            .args(["--establish-challenges", "0", "--establish-agreements", "0"])
            .args(["--establish-age", "0s", "--new-hosts-per-network", "0"])
            .args(["--new-hosts-per-wide-network", "0"])
            // Disputes are re-run by one referee unrelated by owner (all
            // hosts share 127.0.0.0/24, so not by network).
            .args(["--referees", "1", "--referees-any-network"])
            // The demo polls for its pool while challenges run; one member
            // key asks far more often than a real one would.
            .args(["--requests-per-key", "6000"]),
    )?;
    let address = wait_for_address_file(&address_file, STEP_TIMEOUT, &mut children)
        .context("the coordinator did not start")?;
    let url = format!("http://{address}");
    say(&format!("  coordinator   {url}"));

    // 2. Honest daemons, each its own identity (its own owner), then the liar.
    let mut daemons = Vec::new();
    for i in 0..options.honest_hosts {
        let ip = Ipv4Addr::new(127, 0, 0, 11 + i as u8);
        let name = format!("honest-{}", i + 1);
        daemons.push(start_daemon(
            &exe,
            &root_path,
            &name,
            ip,
            None,
            &url,
            &mut children,
        )?);
    }
    let liar_ip = Ipv4Addr::new(127, 0, 0, 31);
    let liar = start_daemon(
        &exe,
        &root_path,
        "liar",
        Ipv4Addr::new(127, 0, 0, 21),
        Some(liar_ip),
        &url,
        &mut children,
    )?;
    for d in &daemons {
        say(&format!("  daemon        {:<10} {}", d.name, d.advertised));
    }
    say(&format!(
        "  daemon        {:<10} {}  (flips a byte in every object it returns)",
        liar.name, liar.advertised
    ));
    // The framer: an honest-serving host whose owner will file a false report.
    let framer = start_daemon(
        &exe,
        &root_path,
        "framer",
        Ipv4Addr::new(127, 0, 0, 41),
        None,
        &url,
        &mut children,
    )?;
    say(&format!(
        "  daemon        {:<10} {}  (serves honestly; its owner will frame honest-1)",
        framer.name, framer.advertised
    ));
    let pool_size = daemons.len() + 2;
    wait_for_pool(
        &exe,
        &daemons[0].identity_dir,
        &url,
        pool_size,
        &mut children,
    )
    .context("the daemons did not all register with the coordinator")?;

    // 3. A local build, for timing and as the reference for every object.
    let reference = root_path.join("local");
    write_sample(&reference)?;
    say("");
    say("building locally (reference)…");
    let local = build(&reference, &[], None, summary.jobs)?;
    summary.local_wall = local.wall;
    say(&format!("  done in {:.2} s", local.wall.as_secs_f64()));
    let expected_output = run_program(&reference)?;
    summary.program_output_matches = true;

    // 4. Two members build through the network; each reports the liar.
    for (member, daemon) in daemons.iter().take(2).enumerate() {
        let dir = root_path.join(format!("member-{}", member + 1));
        write_sample(&dir)?;
        say("");
        say(&format!(
            "member {} ({}'s owner) builds through the network, redundancy 2…",
            member + 1,
            daemon.name
        ));
        let env = network_environment(&exe, &daemon.identity_dir, &url)?;
        if options.verbose {
            for (k, v) in &env {
                say(&format!("  {k}={v}"));
            }
        }
        let mut vars = env.clone();
        vars.push((
            "DPORTAGE_DIR".into(),
            daemon.identity_dir.to_string_lossy().into_owned(),
        ));
        vars.push(("PATH".into(), path_with(&bin)));
        let cc = format!("{} gcc", bin.join("dportage-cc").display());
        let outcome = build(&dir, &vars, Some(&cc), summary.jobs)?;
        say(&format!("  done in {:.2} s", outcome.wall.as_secs_f64()));
        for line in &outcome.stderr_lines {
            if line.contains("mismatch") {
                say(&format!("  caught: {line}"));
                summary.mismatch_lines.push(line.clone());
            }
        }
        summary.network_walls.push(outcome.wall);
        for (name, _) in SAMPLE.iter().filter(|(n, _)| n.ends_with(".c")) {
            let object = name.replace(".c", ".o");
            summary.objects_checked += 1;
            let ours = fs::read(dir.join(&object)).unwrap_or_default();
            let reference = fs::read(reference.join(&object)).unwrap_or_default();
            if ours.is_empty() || ours != reference {
                summary
                    .objects_wrong
                    .push(format!("member {}: {object}", member + 1));
            }
        }
        summary.program_output_matches &= run_program(&dir)? == expected_output;
    }

    // 5. The coordinator's verdict.
    say("");
    let blacklist = coordinator_blacklist(&exe, &coordinator_dir)?;
    let liar_id = identity_of(&liar.identity_dir)?;
    summary.liar_blacklisted = blacklist.contains(&liar_id);
    summary.liar_adjudicated = blacklist
        .lines()
        .any(|l| l.contains(&liar_id) && l.contains("adjudication"));
    let listed = network_environment(&exe, &daemons[0].identity_dir, &url)?;
    summary.liar_listed_after = listed
        .iter()
        .any(|(k, v)| k == "DISTCC_HOSTS" && v.contains(&liar.advertised.ip().to_string()));

    // 6. A framing attempt: the framer's owner reports honest-1 ("its object
    //    is wrong, mine is right") for a real job; the coordinator re-runs it.
    let framed = &daemons[0];
    say("");
    say(&format!(
        "the framer's owner reports {} falsely (\"its object is wrong, mine is right\")…",
        framed.name
    ));
    let out = Command::new(&exe)
        .arg("__frame")
        .arg("--coordinator")
        .arg(&url)
        .arg("--accused")
        .arg(framed.advertised.to_string())
        .env("DPORTAGE_DIR", &framer.identity_dir)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "the framing attempt could not be filed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    summary.framing_report = String::from_utf8_lossy(&out.stdout).trim().to_string();
    say(&format!("  {}", summary.framing_report));
    let framer_id = identity_of(&framer.identity_dir)?;
    let framed_id = identity_of(&framed.identity_dir)?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let blacklist = loop {
        children.check_alive()?;
        let b = coordinator_blacklist(&exe, &coordinator_dir)?;
        if b.contains(&framer_id) || b.contains(&framed_id) || Instant::now() > deadline {
            break b;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    summary.framer_blacklisted = blacklist.contains(&framer_id);
    summary.framed_host_blacklisted = blacklist.contains(&framed_id);
    let listed = network_environment(&exe, &daemons[1].identity_dir, &url)?;
    summary.framed_host_listed_after = listed
        .iter()
        .any(|(k, v)| k == "DISTCC_HOSTS" && v.contains(&framed.advertised.to_string()));
    say(&format!(
        "  the referee re-ran the job: {}",
        if summary.framing_failed() {
            format!(
                "{} gave it the right object, the report was false; the framer is blacklisted",
                framed.name
            )
        } else {
            "NOT as expected (see the summary)".to_string()
        }
    ));

    print_summary(&summary, options.honest_hosts);
    drop(children);
    if options.keep {
        let kept = root.keep();
        say(&format!("kept the demo directory: {}", kept.display()));
    }
    Ok(summary)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn path_with(bin: &Path) -> String {
    let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    // The masquerade links are not in bin/, so putting it first only matters for
    // `dportage`; the compiler is still found on the normal PATH.
    format!("{}:{rest}", bin.display())
}

/// A port free on `ip` right now. The daemon binds it a moment later; on a
/// loopback address of our own nobody else is racing for it.
fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind((ip, 0))?;
    Ok(listener.local_addr()?.port())
}

fn start_daemon(
    exe: &Path,
    root: &Path,
    name: &str,
    ip: Ipv4Addr,
    lie_on: Option<Ipv4Addr>,
    url: &str,
    children: &mut Children,
) -> anyhow::Result<Daemon> {
    use anyhow::Context;

    let identity_dir = root.join(format!("identity-{name}"));
    fs::create_dir_all(&identity_dir)?;
    let port = free_port(ip)?;
    let listen = SocketAddr::from((ip, port));
    let advertised = match lie_on {
        Some(liar_ip) => SocketAddr::from((liar_ip, free_port(liar_ip)?)),
        None => listen,
    };
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--no-detach")
        .arg("--log-stderr")
        .arg("--listen")
        .arg(ip.to_string())
        .arg("--port")
        .arg(port.to_string())
        .arg("--allow")
        .arg("127.0.0.0/8")
        .arg("--jobs")
        .arg("1")
        // The demo must not depend on distcc's masquerade directory being
        // installed: whitelist exactly the compilers the sample build sends.
        .arg("--masquerade-dir")
        .arg(root.join("no-masquerade-dir"));
    for compiler in demo_compilers() {
        command.arg("--allow-compiler").arg(compiler);
    }
    command
        .arg("--coordinator")
        .arg(url)
        .arg("--advertise")
        .arg(advertised.to_string())
        .env("DPORTAGE_DIR", &identity_dir);
    children.spawn(name, &mut command)?;
    wait_for_port(listen, STEP_TIMEOUT, children)
        .with_context(|| format!("daemon {name} did not start listening on {listen}"))?;
    if lie_on.is_some() {
        children.spawn(
            &format!("{name}-proxy"),
            Command::new(exe)
                .arg("__liar")
                .arg("--listen")
                .arg(advertised.to_string())
                .arg("--upstream")
                .arg(listen.to_string())
                .arg("--lie")
                .arg("flip"),
        )?;
        wait_for_port(advertised, STEP_TIMEOUT, children)
            .with_context(|| format!("the lying proxy did not start on {advertised}"))?;
    }
    Ok(Daemon {
        name: name.to_string(),
        identity_dir,
        advertised,
    })
}

/// The compilers the daemons advertise, and the target-prefixed names distcc's
/// rewrite turns `gcc` into (`x86_64-linux-gnu-gcc`).
fn demo_compilers() -> Vec<String> {
    let mut names: Vec<String> = ["gcc", "cc", "g++", "c++"].map(String::from).to_vec();
    if let Ok(out) = Command::new("gcc").arg("-dumpmachine").output() {
        let triple = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !triple.is_empty()
            && triple
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            names.push(format!("{triple}-gcc"));
            names.push(format!("{triple}-g++"));
        }
    }
    names
}

/// Wait until the coordinator hands `pool_size` hosts to a member.
fn wait_for_pool(
    exe: &Path,
    identity_dir: &Path,
    url: &str,
    pool_size: usize,
    children: &mut Children,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        children.check_alive()?;
        let last = match network_environment(exe, identity_dir, url) {
            Ok(env) => {
                let hosts = env
                    .iter()
                    .find(|(k, _)| k == "DISTCC_HOSTS")
                    .map(|(_, v)| v.split_whitespace().count())
                    .unwrap_or(0);
                if hosts >= pool_size {
                    return Ok(());
                }
                format!("{hosts} of {pool_size} hosts listed")
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            anyhow::bail!("gave up waiting: {last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Ask `dportage` for the environment it prints for this identity.
fn network_environment(
    exe: &Path,
    identity_dir: &Path,
    url: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new(exe)
        .arg("--coordinator")
        .arg(url)
        .env("DPORTAGE_DIR", identity_dir)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "`dportage --coordinator {url}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_sh_exports(&String::from_utf8_lossy(&out.stdout)))
}

/// Parse `NAME="value"; export NAME;` / `export NAME="value"` lines (sh form).
fn parse_sh_exports(text: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for statement in text.split([';', '\n']) {
        let statement = statement.trim();
        let statement = statement.strip_prefix("export ").unwrap_or(statement);
        let Some((name, value)) = statement.split_once('=') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        vars.push((name.to_string(), value.to_string()));
    }
    vars
}

fn identity_of(identity_dir: &Path) -> anyhow::Result<String> {
    let public = fs::read_to_string(identity_dir.join("identity.pub"))?;
    Ok(public.trim().to_string())
}

fn coordinator_blacklist(exe: &Path, data: &Path) -> anyhow::Result<String> {
    let out = Command::new(exe)
        .args(["coordinator", "blacklist", "list", "--data"])
        .arg(data)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "cannot list the blacklist: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_sample(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, text) in SAMPLE {
        fs::write(dir.join(name), text)?;
    }
    let objects: Vec<String> = SAMPLE
        .iter()
        .filter(|(n, _)| n.ends_with(".c"))
        .map(|(n, _)| n.replace(".c", ".o"))
        .collect();
    // `@echo CC` gives the demo one line per finished job to count progress by.
    let makefile = format!(
        "CC ?= cc\nCFLAGS = -O2 -Wall\nOBJS = {}\n\ncalc: $(OBJS)\n\tgcc -o $@ $(OBJS) -lm\n\n\
         %.o: %.c calc.h\n\t$(CC) $(CFLAGS) -c $< -o $@\n\t@echo CC $<\n",
        objects.join(" ")
    );
    fs::write(dir.join("Makefile"), makefile)?;
    Ok(())
}

struct BuildOutcome {
    wall: Duration,
    stderr_lines: Vec<String>,
}

/// `make -j4` in `dir`, showing one progress line per compiled file.
fn build(
    dir: &Path,
    vars: &[(String, String)],
    cc: Option<&str>,
    jobs: usize,
) -> anyhow::Result<BuildOutcome> {
    let mut command = Command::new("make");
    command
        .arg("-j4")
        .arg("--no-print-directory")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cc) = cc {
        command.arg(format!("CC={cc}"));
    }
    for (k, v) in vars {
        command.env(k, v);
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run make ({e}); install make and gcc"))?;
    let stderr = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let stdout = child.stdout.take().expect("piped");
    let mut done = 0;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(file) = line.strip_prefix("CC ") {
            done += 1;
            say(&format!("  [{done:>2}/{jobs}] {file}"));
        }
    }
    let status = child.wait()?;
    let wall = started.elapsed();
    let stderr_lines = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        for line in &stderr_lines {
            eprintln!("  {line}");
        }
        anyhow::bail!("the build in {} failed ({status})", dir.display());
    }
    Ok(BuildOutcome { wall, stderr_lines })
}

fn run_program(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(dir.join("calc"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run the built program: {e}"))?;
    Ok(out.stdout)
}

fn print_summary(summary: &Summary, honest_hosts: usize) {
    let tick = |ok: bool| if ok { "yes" } else { "NO" };
    say("summary");
    say(&format!(
        "  hosts                      {honest_hosts} honest + 1 liar + 1 framer, each its own owner"
    ));
    say(&format!(
        "  jobs                       {} per build, 2 builds by 2 members, each job on 2 hosts",
        summary.jobs
    ));
    say(&format!(
        "  mismatches caught          {}",
        summary.mismatch_lines.len()
    ));
    say(&format!(
        "  objects identical to local {} of {} {}",
        summary.objects_checked - summary.objects_wrong.len(),
        summary.objects_checked,
        if summary.objects_wrong.is_empty() {
            String::new()
        } else {
            format!("(wrong: {})", summary.objects_wrong.join(", "))
        }
    ));
    say(&format!(
        "  program output as local    {}",
        tick(summary.program_output_matches)
    ));
    say(&format!(
        "  liar blacklisted           {} {}",
        tick(summary.liar_blacklisted),
        if summary.liar_adjudicated {
            "(a referee re-ran the disputed job from the evidence)"
        } else {
            ""
        }
    ));
    say(&format!(
        "  liar still handed out      {}",
        if summary.liar_listed_after {
            "YES"
        } else {
            "no"
        }
    ));
    say(&format!(
        "  framing attempt failed     {} (framer blacklisted: {}; framed host blacklisted: {}; still handed out: {})",
        tick(summary.framing_failed()),
        tick(summary.framer_blacklisted),
        if summary.framed_host_blacklisted { "YES" } else { "no" },
        tick(summary.framed_host_listed_after)
    ));
    let walls: Vec<String> = summary
        .network_walls
        .iter()
        .map(|w| format!("{:.2} s", w.as_secs_f64()))
        .collect();
    say(&format!(
        "  time                       local {:.2} s; network {} (every job compiled twice, plus the arbiter, on this one machine)",
        summary.local_wall.as_secs_f64(),
        walls.join(", ")
    ));
    say(if summary.passed() {
        "result: every object right, the liar caught and blacklisted, the framing attempt turned on the framer"
    } else {
        "result: FAILED (see above)"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_exports_parse_in_both_forms() {
        let text =
            "DISTCC_HOSTS=\"127.0.0.11:3632/1,lzo 127.0.0.12:3632/1,lzo\"; export DISTCC_HOSTS;\n\
                    export MAKEOPTS=\"-j4\"\nFEATURES='distcc'; export FEATURES;\n";
        let vars = parse_sh_exports(text);
        assert_eq!(
            vars,
            vec![
                (
                    "DISTCC_HOSTS".to_string(),
                    "127.0.0.11:3632/1,lzo 127.0.0.12:3632/1,lzo".to_string()
                ),
                ("MAKEOPTS".to_string(), "-j4".to_string()),
                ("FEATURES".to_string(), "distcc".to_string()),
            ]
        );
    }

    #[test]
    fn options_are_bounded() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&[])).unwrap().honest_hosts, 3);
        assert_eq!(
            parse_args(&args(&["--hosts", "5"])).unwrap().honest_hosts,
            5
        );
        assert!(parse_args(&args(&["--hosts", "1"])).is_err());
        assert!(parse_args(&args(&["--hosts", "99"])).is_err());
        assert!(parse_args(&args(&["--bogus"])).is_err());
    }
}
