//! An isolated client world per test: our binary installed under the names a
//! user would use, private `DISTCC_DIR`, `TMPDIR`, `HOME` and `DPORTAGE_DIR`.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use super::{dportage_bin, run_checked};

/// An isolated client world: our binary linked as `distcc` and as compilers
/// (`gcc`, `g++`, `cc`, `c++` in a masquerade directory), a private
/// `DISTCC_DIR`, `TMPDIR`, `HOME` and `DPORTAGE_DIR`.
pub struct ClientEnv {
    pub root: TempDir,
    pub hosts: String,
    pub extra_env: Vec<(String, String)>,
}

impl ClientEnv {
    pub fn new(hosts: &str) -> ClientEnv {
        let root = tempfile::Builder::new()
            .prefix("dportage-client-")
            .tempdir()
            .unwrap();
        for d in [
            "bin",
            "masq",
            "distcc-dir",
            "tmp",
            "home",
            "work",
            "dportage",
        ] {
            fs::create_dir(root.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink(dportage_bin(), root.path().join("bin/distcc")).unwrap();
        for name in ["gcc", "g++", "cc", "c++"] {
            std::os::unix::fs::symlink(dportage_bin(), root.path().join("masq").join(name))
                .unwrap();
        }
        ClientEnv {
            root,
            hosts: hosts.to_owned(),
            extra_env: Vec::new(),
        }
    }

    /// For verified dispatch: redundancy 2 unless changed, and no back-off
    /// (a lying or dead host must not make later runs skip honest ones).
    pub fn dual(hosts: &[String]) -> ClientEnv {
        let mut env = ClientEnv::new(&hosts.join(" "));
        env.set("DPORTAGE_REDUNDANCY", "2");
        env.set("DISTCC_BACKOFF_PERIOD", "0");
        env
    }

    /// Our binary under the name `distcc`.
    pub fn distcc_link(&self) -> PathBuf {
        self.root.path().join("bin/distcc")
    }

    /// A masquerade directory: `gcc`, `g++`, `cc`, `c++` → our binary.
    pub fn masquerade_dir(&self) -> PathBuf {
        self.root.path().join("masq")
    }

    pub fn distcc_dir(&self) -> PathBuf {
        self.root.path().join("distcc-dir")
    }

    pub fn dportage_dir(&self) -> PathBuf {
        self.root.path().join("dportage")
    }

    pub fn tmpdir(&self) -> PathBuf {
        self.root.path().join("tmp")
    }

    /// Where tests put sources and run compiles.
    pub fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    /// Set (or replace) an environment variable of every command.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Take the variables `dportage` printed (as a shell evaluated them):
    /// each is set, and `DISTCC_HOSTS` becomes this world's host list.
    pub fn take_environment(&mut self, vars: &[(String, String)]) -> &mut Self {
        for (k, v) in vars {
            if k == "DISTCC_HOSTS" {
                self.hosts = v.clone();
            } else {
                self.set(k, v);
            }
        }
        self
    }

    /// `program args…` in the work directory with only this world's
    /// environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        self.command_in(program, args, &self.work())
    }

    /// `program args…` in `cwd` with only this world's environment.
    pub fn command_in(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        cwd: &Path,
    ) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path().join("home"))
            .env("LC_ALL", "C")
            .env("DISTCC_HOSTS", &self.hosts)
            .env("DISTCC_DIR", self.distcc_dir())
            .env("DPORTAGE_DIR", self.dportage_dir())
            .env("TMPDIR", self.tmpdir());
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        command
    }

    /// PATH with the masquerade directory first.
    pub fn masquerade_path(&self) -> std::ffi::OsString {
        let mut paths = vec![self.masquerade_dir()];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(paths).unwrap()
    }

    /// Run our `distcc args…` in the work directory.
    pub fn distcc(&self, args: &[&str]) -> Output {
        self.command(self.distcc_link(), args).output().unwrap()
    }

    pub fn write(&self, name: &str, contents: &str) {
        write_file(&self.work(), name, contents);
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.work().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A local reference compile in the work directory (no distcc).
    pub fn reference(&self, args: &[&str]) {
        run_ok(args[0], &args[1..], &self.work());
    }

    /// Temporary files left behind in TMPDIR.
    pub fn leftover_temp_files(&self) -> Vec<String> {
        fs::read_dir(self.tmpdir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    pub fn backoff_file(&self, port: u16) -> PathBuf {
        self.distcc_dir()
            .join(format!("lock/backoff_tcp_127.0.0.1_{port}_0"))
    }
}

/// Write `contents` to `dir/name`, creating parent directories.
pub fn write_file(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, contents).unwrap();
}

/// Run a local reference command (no distcc) and insist it succeeds.
pub fn run_ok(program: &str, args: &[&str], cwd: &Path) {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).env("LC_ALL", "C");
    run_checked(&mut cmd, &format!("{program} {args:?}"));
}

/// Assert two files have identical bytes, with a short message when not.
pub fn assert_same_file(ours: &Path, reference: &Path) {
    let a = fs::read(ours).unwrap_or_else(|e| panic!("{}: {e}", ours.display()));
    let b = fs::read(reference).unwrap_or_else(|e| panic!("{}: {e}", reference.display()));
    assert!(
        a == b,
        "{} ({} bytes) differs from {} ({} bytes)",
        ours.display(),
        a.len(),
        reference.display(),
        b.len()
    );
}

/// Read a whole stream from a fake server's accepted socket until `predicate`
/// says the request is complete (or EOF / timeout).
pub fn read_request(stream: &mut TcpStream, complete: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    while !complete(&data) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    data
}

/// The real distcc client (or a link to it) run as `program args…` in `work`
/// against one host, 127.0.0.1:`port`, with `state` as its `DISTCC_DIR` and
/// TMPDIR, no local fallback, no inherited distcc settings, and its output
/// discarded.
pub fn real_distcc_command(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[impl AsRef<std::ffi::OsStr>],
    work: &Path,
    port: u16,
    state: &Path,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(work)
        .env("DISTCC_HOSTS", format!("127.0.0.1:{port}"))
        .env("DISTCC_DIR", state)
        .env("DISTCC_FALLBACK", "0")
        .env("TMPDIR", state)
        .env_remove("DISTCC_VERBOSE")
        .env_remove("DISTCC_LOG")
        .env_remove("DISTCC_NO_REWRITE_CROSS")
        .env_remove("_DISTCC_SAFEGUARD")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}
