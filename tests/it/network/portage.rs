//! Issue 15's Gentoo path, emulated on loopback with real processes: a
//! coordinator, two `dportage serve` network daemons (members reach them
//! with tickets only), Debian's real distcc 3.4, and a build run the way
//! portage runs it under `FEATURES=distcc`: `/usr/lib/distcc/bin` (here a
//! directory of our own, named by `DPORTAGE_PORTAGE_DISTCC_DIR`) first in
//! `PATH`, another user's `HOME`, the machine-wide state directory
//! (`DPORTAGE_SYSTEM_DIR`, set-group-ID like `/var/lib/dportage`).
//!
//! While those links run the real distcc, `dportage` refuses to print the
//! environment, and a build given the environment anyway compiles locally
//! (the hosts are `,verify`): never an unverified remote object. With the
//! links pointing at dportage, as the ebuild installs them, the same build
//! distributes to both hosts and verifies. `dportage make -j8` distributes a
//! plain Makefile project, and a daemon sends the machine's pending reports
//! on its heartbeat.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use crate::support::client::run_ok;
use crate::support::network::*;
use crate::support::serve::DportageServer;
use crate::support::*;
use dportage::client::evidence::{Evidence, HostResult, StateDir};
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::Identity;
use dportage::trust::standing::StandingRules;

const LIMIT: Duration = Duration::from_secs(60);
const SOURCE: &str = "int quadruple(int x) { return 4 * x; }\n";

/// A machine set up like a Gentoo box: the machine-wide directory, a
/// portage `HOME` without `.dportage`, portage's distcc directory.
struct Machine {
    root: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let m = Machine {
            root: tempfile::tempdir().unwrap(),
        };
        for d in [
            "system",
            "portage-home",
            "distcc-bin",
            "distcc-state",
            "tmp",
            "work",
        ] {
            fs::create_dir(m.path(d)).unwrap();
        }
        // As the ebuild installs /var/lib/dportage: root:dportage 2770. The
        // daemons, started as root here, switch to distccd's user, which
        // stands in for the group's daemon user.
        fs::set_permissions(m.system(), fs::Permissions::from_mode(0o2770)).unwrap();
        if let Some(gid) = daemon_group() {
            std::os::unix::fs::chown(m.system(), None, Some(gid)).unwrap();
        }
        m
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn system(&self) -> PathBuf {
        self.path("system")
    }

    fn distcc_bin(&self) -> PathBuf {
        self.path("distcc-bin")
    }

    /// Point portage's compiler links at `target`.
    fn link_compilers_to(&self, target: &Path) {
        for name in ["cc", "gcc", "c++", "g++"] {
            let link = self.distcc_bin().join(name);
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).unwrap();
        }
    }

    /// `program` as portage's build runs it: its distcc directory first in
    /// `PATH`, portage's `HOME`, no `DPORTAGE_DIR`, and `vars`.
    fn command(&self, program: &str, vars: &[(String, String)]) -> Command {
        let mut c = Command::new(program);
        let path = format!(
            "{}:{}",
            self.distcc_bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.current_dir(self.path("work"))
            .env("PATH", path)
            .env("HOME", self.path("portage-home"))
            .env("DPORTAGE_SYSTEM_DIR", self.system())
            .env("DPORTAGE_PORTAGE_DISTCC_DIR", self.distcc_bin())
            .env("DISTCC_DIR", self.path("distcc-state"))
            .env("TMPDIR", self.path("tmp"))
            .env("LC_ALL", "C")
            .env_remove("DPORTAGE_DIR")
            .env_remove("DPORTAGE_MEMBERSHIP")
            .env_remove("DISTCC_HOSTS")
            .env_remove("CC")
            .env_remove("CXX");
        for (k, v) in vars {
            c.env(k, v);
        }
        c
    }

    /// `gcc -O2 -c t.c -o OUT` through portage's compiler path, with `vars`
    /// and `extra` set.
    fn compile(&self, vars: &[(String, String)], out: &str, extra: &[(&str, &str)]) -> Output {
        let mut c = self.command("gcc", vars);
        c.args(["-O2", "-c", "t.c", "-o", out]);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// `dportage --coordinator URL` on this machine.
    fn dportage(&self, url: &str) -> Output {
        self.command(dportage_bin().to_str().unwrap(), &[])
            .args(["--coordinator", url])
            .output()
            .unwrap()
    }
}

/// The group of the user a daemon started as root runs as (distccd's
/// choice: `distccd`, else `nobody`), when running as root.
fn daemon_group() -> Option<u32> {
    // SAFETY: getuid has no preconditions; getpwnam returns static storage or NULL.
    unsafe {
        if libc::getuid() != 0 {
            return None;
        }
        for name in [c"distccd", c"nobody"] {
            let pw = libc::getpwnam(name.as_ptr());
            if !pw.is_null() {
                return Some((*pw).pw_gid);
            }
        }
    }
    None
}

/// The variables a successful `dportage` printed, as a shell sees them.
fn printed(out: &Output) -> Vec<(String, String)> {
    assert!(
        out.status.success(),
        "dportage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eval_in_sh(
        &String::from_utf8_lossy(&out.stdout),
        &[
            "DISTCC_HOSTS",
            "DPORTAGE_REDUNDANCY",
            "DPORTAGE_COORDINATOR",
            "DPORTAGE_HOST_LIST",
            "FEATURES",
        ],
    )
}

/// A coordinator whose hosts are established at once (two probationary
/// hosts are never paired), and two network daemons allowing nobody, the
/// first publishing its membership token into the machine-wide directory.
struct Network {
    _rt: tokio::runtime::Runtime,
    coord: Coordinator,
    daemons: Vec<DportageServer>,
    _dirs: tempfile::TempDir,
}

impl Network {
    fn start(system: &Path, first: u8, extra: &[&str]) -> Network {
        let dirs = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut cfg = CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), dirs.path().join("c"));
        cfg.standing_rules = StandingRules::AT_ONCE;
        let coord: Coordinator = rt.block_on(Coordinator::bind(cfg)).unwrap();
        let url = coord.url();
        let membership = system.join("membership.json");
        let mut daemons = Vec::new();
        let mut owners = Vec::new();
        for i in 0..2u8 {
            let dir = dirs.path().join(format!("daemon-{i}"));
            owners.push(Arc::new(Identity::load_or_create(&dir).unwrap()));
            let mut args: Vec<&str> = extra.to_vec();
            let membership = membership.to_str().unwrap();
            if i == 0 {
                args.extend(["--membership-file", membership]);
            }
            daemons.push(network_daemon(
                Ipv4Addr::new(127, 0, 0, first + i),
                &url,
                &dir,
                "127.0.0.9",
                &args,
            ));
        }
        for d in &daemons {
            d.wait_for_log("serving members of", LIMIT);
        }
        wait_serving(&rt, &url, &owners);
        Network {
            _rt: rt,
            coord,
            daemons,
            _dirs: dirs,
        }
    }

    fn url(&self) -> String {
        self.coord.url()
    }

    fn compiled(&self) -> Vec<usize> {
        self.daemons.iter().map(compiles_ok).collect()
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn portage_path_verifies_every_remote_object_or_compiles_locally() {
    let test = "portage_path_verifies_every_remote_object_or_compiles_locally";
    let Some(real_distcc) = real_distcc(test) else {
        return;
    };
    let m = Machine::new();
    let net = Network::start(&m.system(), 91, &[]);
    let url = net.url();
    fs::write(m.path("work").join("t.c"), SOURCE).unwrap();
    run_ok(
        "gcc",
        &["-O2", "-c", "t.c", "-o", "local.o"],
        &m.path("work"),
    );
    let local = fs::read(m.path("work").join("local.o")).unwrap();

    // sys-devel/distcc's links: portage would run the real distcc.
    m.link_compilers_to(&real_distcc);
    let out = m.dportage(&url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(113), "{stderr}");
    assert!(
        stderr.contains("refusing to print the network environment")
            && stderr.contains("FEATURES=distcc")
            && stderr.contains(&real_distcc.display().to_string())
            && stderr.contains("distcc 3.4"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing to eval on a refusal");

    // The environment obtained anyway (portage's links hidden from the
    // check): the real distcc rejects `,verify` hosts and compiles locally.
    let vars = printed(
        &m.command(dportage_bin().to_str().unwrap(), &[])
            .args(["--coordinator", &url])
            .env("DPORTAGE_PORTAGE_DISTCC_DIR", m.path("nowhere"))
            .output()
            .unwrap(),
    );
    let hosts = &vars.iter().find(|(k, _)| k == "DISTCC_HOSTS").unwrap().1;
    assert_eq!(hosts.matches(",verify").count(), 2, "{hosts}");
    // The portage user's identity is the machine's, in the shared directory:
    // group-readable key, nothing under portage's HOME.
    assert_eq!(mode(&m.system().join("identity.key")), 0o640);
    assert!(!m.path("portage-home").join(".dportage").exists());
    let before = net.compiled();
    let out = m.compile(&vars, "real.o", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(m.path("work").join("real.o")).unwrap(), local);
    let out = m.compile(&vars, "nofallback.o", &[("DISTCC_FALLBACK", "0")]);
    assert!(
        !out.status.success(),
        "without fallback the real distcc must fail"
    );
    assert!(!m.path("work").join("nofallback.o").exists());
    assert_eq!(
        net.compiled(),
        before,
        "a network host compiled for the real distcc"
    );

    // Installed as documented: the links run dportage.
    m.link_compilers_to(&dportage_bin());
    let vars = printed(&m.dportage(&url));
    let out = m.compile(
        &vars,
        "net.o",
        &[("DPORTAGE_SPOTCHECK", "0"), ("DISTCC_FALLBACK", "0")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(m.path("work").join("net.o")).unwrap(), local);
    for (i, was) in before.iter().enumerate() {
        wait_until(LIMIT, format!("daemon {i} to compile the job"), || {
            compiles_ok(&net.daemons[i]) > *was
        });
    }
    // Files the build made in the shared directory are the group's too
    // (the host speed record and its lock, the signed host list), and
    // nobody else's.
    for f in ["speed.json", "speed.lock", "host-list.json"] {
        let p = m.system().join(f);
        assert!(p.exists(), "{f} was not written");
        assert_eq!(mode(&p) & 0o067, 0o060, "{f}: {:o}", mode(&p));
    }
}

#[test]
fn dportage_make_distributes_a_plain_makefile_project() {
    let m = Machine::new();
    let net = Network::start(&m.system(), 93, &[]);
    let url = net.url();
    let work = m.path("work");
    let mut objects = Vec::new();
    for i in 0..8 {
        fs::write(
            work.join(format!("f{i}.c")),
            format!("int f{i}(int x) {{ return x * {} + {i}; }}\n", i + 2),
        )
        .unwrap();
        objects.push(format!("f{i}.o"));
    }
    fs::write(
        work.join("main.c"),
        "int f0(int);\nint main(void) { return f0(1) - 2; }\n",
    )
    .unwrap();
    objects.push("main.o".into());
    // make's built-in rule: $(CC) $(CFLAGS) -c, with CC=cc.
    fs::write(
        work.join("Makefile"),
        format!(
            "CFLAGS = -O2\nprog: {objs}\n\t$(CC) -o $@ $^\n",
            objs = objects.join(" ")
        ),
    )
    .unwrap();
    // A local build of a copy, for the reference objects.
    let reference = m.path("reference");
    fs::create_dir(&reference).unwrap();
    for e in fs::read_dir(&work).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), reference.join(e.file_name())).unwrap();
    }
    run_ok("make", &["-s", "-j4"], &reference);

    let before = net.compiled();
    let out = m
        .command(dportage_bin().to_str().unwrap(), &[])
        .args(["--coordinator", &url, "make", "-s", "-j8"])
        .env("DPORTAGE_PORTAGE_DISTCC_DIR", m.path("nowhere"))
        .env("DPORTAGE_SPOTCHECK", "0")
        .env("DISTCC_FALLBACK", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for o in &objects {
        assert_eq!(
            fs::read(work.join(o)).unwrap(),
            fs::read(reference.join(o)).unwrap(),
            "{o} differs from the local build"
        );
    }
    // Every object was compiled on both hosts (verified dispatch).
    for (i, was) in before.iter().enumerate() {
        wait_until(LIMIT, format!("daemon {i} to compile 9 jobs"), || {
            compiles_ok(&net.daemons[i]) >= was + objects.len()
        });
    }
    let run = Command::new(work.join("prog")).status().unwrap();
    assert!(run.success());
}

#[test]
fn a_daemon_sends_the_machines_pending_reports_on_its_heartbeat() {
    let m = Machine::new();
    // The daemons heartbeat every second and send the reports of the
    // machine-wide directory.
    let system = m.system();
    let net = Network::start(
        &system,
        95,
        &[
            "--heartbeat-interval",
            "1",
            "--send-reports-from",
            system.to_str().unwrap(),
        ],
    );
    let url = net.url();
    // The machine's member identity, linked through the published token.
    let vars = printed(
        &m.command(dportage_bin().to_str().unwrap(), &[])
            .args(["--coordinator", &url])
            .env("DPORTAGE_PORTAGE_DISTCC_DIR", m.path("nowhere"))
            .output()
            .unwrap(),
    );
    assert!(!vars.is_empty());
    // A lost vote recorded by a portage build whose report could not be sent.
    let accused = net.daemons[1].addr.to_string();
    let state = StateDir::open(&system).unwrap();
    let result = |host: &str, object: char| HostResult {
        host: host.to_string(),
        address: host.to_string(),
        status: 0,
        object: object.to_string().repeat(64),
        diagnostics: String::new(),
    };
    let record = Evidence::new(
        "c".repeat(64),
        "t.c".into(),
        vec!["gcc".into(), "-O2".into(), "-c".into(), "t.c".into()],
        vec![result(&accused, 'a'), result("local", 'b')],
        "arbiter",
        "b".repeat(64),
        vec![accused.clone()],
    );
    state.record(&record).unwrap();
    assert_eq!(state.pending_reports().unwrap().len(), 1);
    wait_until(LIMIT, "the daemon to send the pending report", || {
        state.pending_reports().unwrap().is_empty()
    });
    let rt = runtime();
    let stored = rt.block_on(coordinator_metric_line(&url, "dportage_reports_total "));
    assert!(stored.ends_with(" 1") || stored.ends_with(" 2"), "{stored}");
}
