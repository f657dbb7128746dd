//! For the network tests: real coordinators (in process and as a `dportage
//! coordinator` process), real compilers' fingerprints, and the `dportage`
//! binary run as a member.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dportage::fingerprint::Toolchain;
use dportage::network::api::Heartbeat;
use dportage::network::{CoordinatorClient, Identity};
use dportage::probe;

use super::{dportage_bin, wait_until};

/// The toolchains of this machine's `cc` and `c++`, as `dportage` (no
/// arguments) fingerprints them: hosts advertising these are compatible.
pub fn local_toolchains() -> Vec<Toolchain> {
    static CACHE: OnceLock<Vec<Toolchain>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            ["cc", "c++"]
                .iter()
                .map(|name| {
                    let path = probe::resolve_compiler(name, None, &[])
                        .unwrap_or_else(|| panic!("{name} not found in PATH"));
                    probe::probe(name, &path).expect("probe the local compiler")
                })
                .collect()
        })
        .clone()
}

/// A heartbeat advertising `host:port` with this machine's compilers.
pub fn heartbeat(host: &str, port: u16) -> Heartbeat {
    Heartbeat {
        host: Some(host.to_string()),
        port,
        toolchains: local_toolchains(),
        libc: probe::libc_version(),
        arch: std::env::consts::ARCH.to_string(),
        tz_offset_secs: 0,
        capacity: 2,
        lzo: true,
        tickets: false,
        software: "test".into(),
    }
}

/// A host list request for this machine's compilers.
pub fn local_hosts_request() -> dportage::network::api::HostsRequest {
    dportage::network::api::HostsRequest {
        fingerprints: local_toolchains().into_iter().map(|t| t.id).collect(),
        tz_offset_secs: 0,
        max: None,
    }
}

pub fn client(url: &str, identity: &Arc<Identity>) -> CoordinatorClient {
    CoordinatorClient::new(url, identity.clone())
        .unwrap()
        .with_timeout(Duration::from_secs(20))
}

/// A port on `ip` that really accepts TCP connections while the value lives
/// (`dportage` drops candidates it cannot connect to).
pub struct Listening {
    pub addr: SocketAddr,
    _listener: TcpListener,
}

impl Listening {
    pub fn on(ip: Ipv4Addr) -> Listening {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        Listening {
            addr: listener.local_addr().unwrap(),
            _listener: listener,
        }
    }
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// A heartbeat advertising this listener with this machine's compilers.
    pub fn heartbeat(&self) -> Heartbeat {
        heartbeat(&self.host(), self.addr.port())
    }
}

/// `dportage coordinator` flags that make hosts established at their first
/// heartbeat (a network in a box, as the demo runs it): fresh daemons'
/// reports count. Real networks earn it over weeks (the defaults).
pub const ESTABLISHED_AT_ONCE: &[&str] = &[
    "--establish-challenges",
    "0",
    "--establish-agreements",
    "0",
    "--establish-age",
    "0s",
];

/// `dportage coordinator` flags for tests whose hosts are fakes (`Listening`
/// only accepts TCP): no challenge jobs, every live host listed.
pub const NO_CHALLENGES: &[&str] = &["--challenges", "off"];

/// A `dportage coordinator` process, killed (SIGKILL) when dropped.
pub struct CoordinatorProcess {
    child: Child,
    pub url: String,
    pub data: PathBuf,
}

impl CoordinatorProcess {
    pub fn start(data: &Path, extra: &[&str]) -> CoordinatorProcess {
        let addr_file = data.with_extension("addr");
        let _ = fs::remove_file(&addr_file);
        let child = Command::new(dportage_bin())
            .args(["coordinator", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--address-file")
            .arg(&addr_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dportage coordinator");
        let mut me = CoordinatorProcess {
            child,
            url: String::new(),
            data: data.to_path_buf(),
        };
        let addr = wait_until(Duration::from_secs(20), "the coordinator to start", || {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("dportage coordinator exited at start: {status}");
            }
            fs::read_to_string(&addr_file)
                .ok()
                .filter(|text| text.ends_with('\n'))
        });
        me.url = format!("http://{}", addr.trim());
        me
    }

    pub fn kill9(mut self) {
        // SAFETY: kill on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the `dportage` binary with `DPORTAGE_DIR=dir` and `args`.
pub fn run_dportage(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(dportage_bin());
    c.args(args)
        .env("DPORTAGE_DIR", dir)
        .env_remove("DPORTAGE_COORDINATOR")
        .env_remove("DPORTAGE_MEMBERSHIP")
        .env_remove("CC")
        .env_remove("CXX")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run dportage")
}

/// Parse `NAME='value'; export NAME;` lines by evaluating them in a real sh.
pub fn eval_in_sh(lines: &str, names: &[&str]) -> Vec<(String, String)> {
    let mut script = String::from(lines);
    for n in names {
        script.push_str(&format!("printf '%s=%s\\n' {n} \"${n}\"\n"));
    }
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "sh could not eval:\n{lines}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Wait until the coordinator at `url` says each of `owners`' own daemon
/// serves: it passed a challenge job at its advertised address, so it is
/// listed (membership is proven service).
pub fn wait_serving(rt: &tokio::runtime::Runtime, url: &str, owners: &[Arc<Identity>]) {
    for owner in owners {
        wait_until(
            Duration::from_secs(60),
            format!("{} to pass a challenge", owner.id()),
            || {
                rt.block_on(client(url, owner).whoami())
                    .is_ok_and(|w| w.daemons.iter().any(|d| d.id == owner.id() && d.serves))
            },
        );
    }
}
