//! Shared helpers for the `job_*` integration tests: a job configuration
//! pointing at the real toolchain and the built `dportage` binary, and local
//! reference compiles.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::run_checked;
use dportage::server::job::{
    check_command, run_job, JobConfig, JobLimits, JobOutcome, SandboxMode,
};

/// A job config with a private work root, the distcc masquerade dir as the
/// whitelist and the Landlock sandbox required (the kernel here has it).
pub fn config(work_root: &Path) -> JobConfig {
    JobConfig {
        masquerade_dirs: vec![PathBuf::from("/usr/lib/distcc")],
        // The compilers the tests use, so only the whitelist test depends
        // on distcc's masquerade directory being installed.
        extra_compilers: ["gcc", "g++", "clang", "clang++"]
            .map(String::from)
            .to_vec(),
        insecure_compilers: false,
        compiler_path: "/usr/local/bin:/usr/bin:/bin".into(),
        work_root: work_root.to_path_buf(),
        limits: JobLimits {
            wall: Duration::from_secs(120),
            ..JobLimits::default()
        },
        sandbox: SandboxMode::Required,
        self_exe: super::dportage_bin(),
    }
}

/// Is distcc's masquerade directory (the whitelist source) installed? Under
/// CI its absence is a failure; elsewhere the caller skips with a note.
pub fn distcc_masquerade_present() -> bool {
    super::require_masquerade_dir("the masquerade-dir checks")
}

pub fn words(text: &str) -> Vec<Vec<u8>> {
    text.split_whitespace()
        .map(|w| w.as_bytes().to_vec())
        .collect()
}

/// Check `command` and run it on `source`, never cancelled.
pub async fn compile(command: &str, source: &[u8], cfg: &JobConfig) -> JobOutcome {
    let cmd =
        check_command(&words(command), cfg).unwrap_or_else(|e| panic!("{command}: refused: {e}"));
    run_job(&cmd, source, cfg, std::future::pending()).await
}

/// Preprocess `source` (C or C++ by `ext`) in `dir` as a distcc client would.
pub fn preprocess(compiler: &str, dir: &Path, name: &str, source: &str, flags: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    let mut cmd = Command::new(compiler);
    cmd.args(flags).arg("-E").arg(name).current_dir(dir);
    run_checked(cmd.env("LC_ALL", "C"), "preprocess").stdout
}

/// Compile a preprocessed file locally in `dir`, as the client's own compiler
/// would: returns the object.
pub fn local_compile(
    compiler: &str,
    dir: &Path,
    name: &str,
    pre: &[u8],
    flags: &[&str],
) -> Vec<u8> {
    std::fs::write(dir.join(name), pre).unwrap();
    let mut cmd = Command::new(compiler);
    cmd.args(flags).args(["-c", name, "-o", "local.o"]);
    run_checked(cmd.current_dir(dir).env("LC_ALL", "C"), "local compile");
    std::fs::read(dir.join("local.o")).unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The work root holds nothing once every job ended.
pub fn assert_empty(root: &Path) {
    let left: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
