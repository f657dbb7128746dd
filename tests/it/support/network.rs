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
        confined: true,
    }
}

/// A host list request for this machine's compilers.
pub fn local_hosts_request() -> dportage::network::api::HostsRequest {
    dportage::network::api::HostsRequest {
        fingerprints: local_toolchains().into_iter().map(|t| t.id).collect(),
        tz_offset_secs: 0,
        max: None,
        include_unconfined: false,
    }
}

pub fn client(url: &str, identity: &Arc<Identity>) -> CoordinatorClient {
    CoordinatorClient::new(url, identity.clone())
        .unwrap()
        .with_timeout(Duration::from_secs(20))
}

/// The key of the coordinator at `url`, as a client learns it (what signed
/// requests must name).
pub async fn coordinator_key(url: &str) -> dportage::network::IdentityId {
    client(url, &Arc::new(Identity::generate()))
        .coordinator_key()
        .await
        .expect("the coordinator's key")
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
        // `--tls-cert` makes it an https coordinator.
        let scheme = if extra.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        me.url = format!("{scheme}://{}", addr.trim());
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

/// A network daemon: `dportage serve --coordinator URL --allow ALLOW --jobs
/// 2` on `at` with `dir` as its DPORTAGE_DIR (its identity), in its own
/// process group, plus `extra` arguments. Members reach it with tickets only.
pub fn network_daemon(
    at: Ipv4Addr,
    url: &str,
    dir: &Path,
    allow: &str,
    extra: &[&str],
) -> super::serve::DportageServer {
    let mut args = vec!["--allow", allow, "--jobs", "2", "--coordinator", url];
    args.extend_from_slice(extra);
    super::serve::ServeOptions::new()
        .at(at)
        .args(&args)
        .env(&[("DPORTAGE_DIR", dir.to_str().unwrap())])
        .own_process_group()
        .start()
}

/// Compiles a `dportage serve` has logged as done.
pub fn compiles_ok(d: &super::serve::DportageServer) -> usize {
    d.log().matches(" COMPILE_OK ").count()
}

/// Run the `dportage` binary with `DPORTAGE_DIR=dir` and `args`.
pub fn run_dportage(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(dportage_bin());
    c.args(args)
        .env("DPORTAGE_DIR", dir)
        .env_remove("DPORTAGE_COORDINATOR")
        .env_remove("DPORTAGE_MEMBERSHIP")
        .env_remove("DPORTAGE_CA_FILE")
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

/// A job to dispute: argv, preprocessed source, and the result hash an
/// honest host returns (the object this machine's gcc makes, status 0).
pub struct Job {
    pub argv: Vec<String>,
    pub source: String,
    pub honest: String,
}

impl Job {
    /// Its input hash, as a report names it.
    pub fn input_hash(&self) -> String {
        blake3::hash(self.source.as_bytes()).to_hex().to_string()
    }

    /// Its input, as the evidence upload carries it.
    pub fn evidence(&self) -> Vec<u8> {
        zstd::bulk::compress(self.source.as_bytes(), 3).unwrap()
    }
}

/// An ordinary-looking translation unit (a challenge's, from `seed`), with
/// `extra` appended to its source.
pub fn disputed_job_with(seed: u64, extra: &str) -> Job {
    let challenge = dportage::trust::challenge::generate(seed);
    let argv = challenge.argv("gcc");
    let source = format!("{}{extra}", challenge.source);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(&challenge.file), &source).unwrap();
    let out = Command::new("gcc")
        .args(&argv[1..])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let object = fs::read(dir.path().join(&argv[5])).unwrap();
    let honest = dportage::network::api::result_hash(&blake3::hash(&object).to_hex(), 0);
    Job {
        argv,
        source,
        honest,
    }
}

pub fn disputed_job(seed: u64) -> Job {
    disputed_job_with(seed, "")
}

/// A certificate authority made for one test, and a server certificate it
/// issued for 127.0.0.1 and localhost: PEM files in `dir`.
pub struct TestCa {
    /// The CA's certificate: what a client must trust.
    pub ca: PathBuf,
    /// The server's certificate (chain) and private key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// Files `NAME-ca.pem`, `NAME-cert.pem`, `NAME-key.pem` in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("dportage test CA {name}"));
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        let out = TestCa {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}-cert.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        fs::write(&out.ca, ca_cert.pem()).unwrap();
        fs::write(&out.cert, leaf.pem()).unwrap();
        fs::write(&out.key, leaf_key.serialize_pem()).unwrap();
        out
    }

    /// `--tls-cert FILE --tls-key FILE` for `dportage coordinator`.
    pub fn coordinator_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

/// The coordinator at `url`'s `/metrics` page (unsigned, as a scraper reads it).
pub async fn coordinator_metrics(url: &str) -> String {
    let (_, body) = dportage::network::caller::send(
        &dportage::network::caller::CoordinatorUrl::parse(url).unwrap(),
        None,
        "GET",
        "/metrics",
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

/// The sample line of `url`'s `/metrics` that starts with `start` ("" if none).
pub async fn coordinator_metric_line(url: &str, start: &str) -> String {
    coordinator_metrics(url)
        .await
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or("")
        .to_string()
}

/// A two-thread tokio runtime for tests that drive clients of real processes.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The identities on the coordinator's blacklist, as a member (`asker`)
/// reads them from the detailed status (`GET /v1/status`).
pub async fn blacklisted_ids(asker: &CoordinatorClient) -> Vec<dportage::network::IdentityId> {
    let detail: serde_json::Value = asker.call("GET", "/v1/status", Vec::new()).await.unwrap();
    detail["blacklist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}
