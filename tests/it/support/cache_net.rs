//! A small compile network for the result cache (issue 16): a coordinator
//! (hosts established at once, challenges only at registration, two
//! referees), five `dportage serve` network daemons on five networks with
//! their statistics pages (members reach them with tickets only), and
//! members building the demo sample with `dportage make` in their own
//! directories. The end-to-end test and `cargo bench --bench cache` use it.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use super::network::*;
use super::serve::{DportageServer, ServeOptions};
use super::*;
use dportage::coordinator::{Coordinator, CoordinatorConfig};
use dportage::network::api::result_hash;
use dportage::network::cache_api::{
    CacheClaim, CacheClaims, CacheClaimsAck, CacheEntryView, CLAIMS_PATH,
};
use dportage::network::Identity;
use dportage::trust::standing::StandingRules;

pub const LIMIT: Duration = Duration::from_secs(90);
pub const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tools/demo/sample");
pub const MAKEFILE: &str = "OBJS = $(patsubst %.c,%.o,$(wildcard *.c))\n\
all: $(OBJS)\n\
%.o: %.c calc.h\n\tcc -O2 -c $< -o $@\n";

/// The coordinator (hosts established at once, challenges only at
/// registration, two referees) and five daemons on 127.0.(40+i).1, the first
/// publishing the membership both members use.
pub struct CacheNet {
    pub rt: tokio::runtime::Runtime,
    pub coord: Coordinator,
    pub daemons: Vec<DportageServer>,
    pub daemon_dirs: Vec<PathBuf>,
    pub membership: PathBuf,
    pub root: tempfile::TempDir,
}

impl CacheNet {
    pub fn start() -> CacheNet {
        CacheNet::start_allowing("127.0.0.9")
    }

    /// [`CacheNet::start`] with the daemons' `--allow` (their statistics
    /// pages answer only those addresses; members' jobs still carry tickets).
    pub fn start_allowing(allow: &str) -> CacheNet {
        let root = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut cfg = CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), root.path().join("c"));
        cfg.standing_rules = StandingRules::AT_ONCE;
        // Challenges at registration only: later ones would be compiles
        // that a hit must not cause.
        cfg.challenge_interval = Duration::from_secs(24 * 3600);
        cfg.referees = 2;
        // The test's own polling looks keys up far more often than a build.
        cfg.lookups_per_key = dportage::coordinator::quota::Rate::per_minute(0);
        let coord: Coordinator = rt.block_on(Coordinator::bind(cfg)).unwrap();
        let url = coord.url();
        // Daemons started as root run as distccd's user: the membership
        // token goes where that user may write (and members read).
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let membership = shared.join("membership.json");
        let mut daemons = Vec::new();
        let mut daemon_dirs = Vec::new();
        let mut owners = Vec::new();
        for i in 0..5u8 {
            let dir = root.path().join(format!("daemon-{i}"));
            owners.push(Arc::new(Identity::load_or_create(&dir).unwrap()));
            let mut args = vec![
                "--allow",
                allow,
                "--jobs",
                "2",
                "--coordinator",
                &url,
                "--heartbeat-interval",
                "1",
            ];
            let membership = membership.to_str().unwrap();
            if i == 0 {
                args.extend(["--membership-file", membership]);
            }
            daemons.push(
                ServeOptions::new()
                    .at(Ipv4Addr::new(127, 0, 40 + i, 1))
                    .args(&args)
                    .env(&[("DPORTAGE_DIR", dir.to_str().unwrap())])
                    .stats(true)
                    .own_process_group()
                    .start(),
            );
            daemon_dirs.push(dir);
        }
        for d in &daemons {
            d.wait_for_log("serving members of", LIMIT);
        }
        wait_serving(&rt, &url, &owners);
        CacheNet {
            rt,
            coord,
            daemons,
            daemon_dirs,
            membership,
            root,
        }
    }

    pub fn url(&self) -> String {
        self.coord.url()
    }

    pub fn compiled(&self) -> Vec<usize> {
        self.daemons.iter().map(compiles_ok).collect()
    }

    /// A member's state directory and build directory (the sample and its
    /// Makefile).
    pub fn member(&self, name: &str) -> CacheMember {
        let dir = self.root.path().join(format!("{name}-state"));
        let work = self.root.path().join(format!("{name}-work"));
        fs::create_dir_all(&dir).unwrap();
        write_project(&work);
        let identity = Arc::new(Identity::load_or_create(&dir).unwrap());
        CacheMember {
            dir,
            work,
            identity,
            url: self.url(),
            membership: self.membership.clone(),
        }
    }

    /// Host `i`'s signed claim, as its own daemon would send it.
    pub fn claim(&self, i: usize, claim: CacheClaim) -> CacheClaimsAck {
        let me = Arc::new(Identity::load(&self.daemon_dirs[i]).unwrap());
        let body = serde_json::to_vec(&CacheClaims {
            claims: vec![claim],
        })
        .unwrap();
        self.rt
            .block_on(client(&self.url(), &me).call("POST", CLAIMS_PATH, body))
            .expect("the coordinator takes a host's claim")
    }

    /// Put a reply into host `i`'s result store, as a host operator can
    /// (the files then given to the store's owner, the daemon's user).
    pub fn plant(&self, i: usize, result: &str, reply: &[u8]) {
        let dir = self.daemon_dirs[i].join("result-store");
        let store = dportage::result_store::ResultStore::open(&dir, 1 << 30).unwrap();
        store.put(result, reply).unwrap();
        let owner = fs::metadata(&dir).unwrap();
        give_to(&dir, owner.uid(), owner.gid());
    }
}

fn give_to(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap().flatten() {
            give_to(&e.path(), uid, gid);
        }
    }
}

pub fn write_project(work: &Path) {
    fs::create_dir_all(work).unwrap();
    for e in fs::read_dir(SAMPLE).unwrap().flatten() {
        fs::copy(e.path(), work.join(e.file_name())).unwrap();
    }
    fs::write(work.join("Makefile"), MAKEFILE).unwrap();
}

pub fn sources() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(SAMPLE)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".c"))
        .collect();
    v.sort();
    v
}

pub struct CacheMember {
    pub dir: PathBuf,
    pub work: PathBuf,
    pub identity: Arc<Identity>,
    pub url: String,
    pub membership: PathBuf,
}

impl CacheMember {
    /// `dportage --coordinator URL env VARS… CMD…` in the build directory:
    /// CMD runs in the network environment, with `vars` over it.
    pub fn run(&self, vars: &[&str], cmd: &[&str]) -> Output {
        let mut c = Command::new(dportage_bin());
        c.current_dir(&self.work)
            .env("DPORTAGE_DIR", &self.dir)
            .env("DPORTAGE_MEMBERSHIP", &self.membership)
            .env("DPORTAGE_PORTAGE_DISTCC_DIR", self.dir.join("nowhere"))
            .env("DISTCC_FALLBACK", "0")
            .env("LC_ALL", "C")
            .env_remove("DPORTAGE_COORDINATOR")
            .env_remove("DISTCC_HOSTS")
            .env_remove("CC")
            .env_remove("CXX")
            .args(["--coordinator", &self.url, "env"])
            .args(vars)
            .args(cmd);
        c.output().unwrap()
    }

    pub fn make(&self, spot_check: &str) -> Output {
        let spot = format!("DPORTAGE_SPOTCHECK={spot_check}");
        let out = self.run(&[&spot], &["make", "-s", "-j4"]);
        assert!(
            out.status.success(),
            "make failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Compile one file as the Makefile does, with `vars`.
    pub fn compile(&self, vars: &[&str], source: &str) -> Output {
        let object = source.replace(".c", ".o");
        let script = format!("cc -O2 -c {source} -o {object}");
        self.run(vars, &["sh", "-c", &script])
    }

    /// `dportage cache key` of one file's compile: (key, input, toolchain).
    pub fn key(&self, source: &str) -> (String, String, String) {
        let object = source.replace(".c", ".o");
        let script = format!(
            "{} cache key cc -O2 -c {source} -o {object}",
            dportage_bin().display()
        );
        let out = self.run(&[], &["sh", "-c", &script]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        assert!(
            out.status.success() && words.len() == 3,
            "no key for {source}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (words[0].into(), words[1].into(), words[2].into())
    }

    /// The coordinator's signed answer for `key`, checked.
    pub fn lookup(&self, rt: &tokio::runtime::Runtime, key: &str) -> Option<CacheEntryView> {
        let c = client(&self.url, &self.identity);
        let pinned = rt.block_on(c.coordinator_key()).unwrap();
        let signed = rt.block_on(c.cache_lookup(key)).unwrap();
        signed
            .open(
                &pinned,
                key,
                &self.identity.id(),
                dportage::network::clock::unix_now(),
            )
            .expect("a lookup answer signed by the coordinator, for this key and member")
            .entry
    }

    pub fn verdicts(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("monitor.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(dportage::jobstate::outcome::Outcome::parse)
            .map(|o| o.verdict.name().to_owned())
            .collect()
    }
}

pub fn object_result(object: &[u8]) -> String {
    result_hash(&blake3::hash(object).to_hex(), 0)
}
