//! The sandbox and the limits around a job, with the real compilers: files
//! outside the toolchain cannot be read, nothing outside the job directory can
//! be written, no sockets, rlimits and the wall clock stop runaway jobs, and
//! nothing is left behind.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::job::*;
use crate::support::*;
use dportage::args::ServerCommand;
use dportage::server::job::{check_command, run_job, JobConfig, JobLimits, JobResult, SandboxMode};

/// Processes whose cwd is (or was) under `root`: compilers the job left running.
fn processes_under(root: &Path) -> Vec<String> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(&root) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!("{:?}: {}", entry.file_name(), text(&cmdline)));
        }
    }
    found
}

fn incbin_source(path: &str) -> Vec<u8> {
    format!("__asm__(\".section .rodata\\n.incbin \\\"{path}\\\"\\n\");\nint x;\n").into_bytes()
}

#[tokio::test]
async fn incbin_outside_the_toolchain_fails_in_the_sandbox() {
    let root = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, b"the server's secret\n").unwrap();
    let mut cfg = config(root.path());

    for path in ["/etc/passwd", secret.to_str().unwrap()] {
        let source = incbin_source(path);
        cfg.sandbox = SandboxMode::Required;
        let out = compile("gcc -c x.c -o x.o", &source, &cfg).await;
        assert_ne!(out.status, 0, "{path} was read: {}", text(&out.stderr));
        assert!(out.object.is_empty());
        assert_eq!(out.result, JobResult::CompileError);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("Permission denied") || stderr.contains("file not found"),
            "{stderr}"
        );
        assert_empty(root.path());

        // The same job unconfined does read it: the test can fail.
        cfg.sandbox = SandboxMode::Off;
        let out = compile("gcc -c x.c -o x.o", &source, &cfg).await;
        assert_eq!(out.status, 0, "{}", text(&out.stderr));
        let leaked = std::fs::read(path).unwrap();
        assert!(out.object.windows(leaked.len()).any(|w| w == leaked));
    }
}

/// The two ways the daemon confines a compiler: the re-executed trampoline,
/// and the zygote (`__zygote-exec` runs a command through one, as the daemon does).
const LAUNCHERS: [&str; 2] = ["__sandbox-exec", "__zygote-exec"];

fn trampoline(launcher: &str, job_dir: &Path, command: &[&str]) -> std::process::Output {
    Command::new(dportage_bin())
        .arg(launcher)
        .arg("--job-dir")
        .arg(job_dir)
        .arg("--")
        .args(command)
        .current_dir(job_dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .output()
        .unwrap()
}

#[test]
fn writes_only_inside_the_job_dir() {
    LAUNCHERS
        .iter()
        .for_each(|launcher| writes_only_inside_the_job_dir_with(launcher));
}

fn writes_only_inside_the_job_dir_with(launcher: &str) {
    let job = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let inside_file = job.path().join("inside");
    let outside_file = outside.path().join("outside");
    let script = format!(
        "echo ok > {} && echo bad > {} ; echo bad > /tmp/dportage-sandbox-escape-$$ ; echo done",
        inside_file.display(),
        outside_file.display()
    );
    let out = trampoline(launcher, job.path(), &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "done\n");
    assert_eq!(std::fs::read(&inside_file).unwrap(), b"ok\n");
    assert!(!outside_file.exists(), "wrote outside the job dir");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(std::fs::read_dir("/tmp").unwrap().flatten().all(|e| !e
        .file_name()
        .to_string_lossy()
        .starts_with("dportage-sandbox-escape-")));
}

#[test]
fn reads_nothing_outside_the_toolchain() {
    LAUNCHERS
        .iter()
        .for_each(|launcher| reads_nothing_outside_the_toolchain_with(launcher));
}

fn reads_nothing_outside_the_toolchain_with(launcher: &str) {
    let job = tempfile::tempdir().unwrap();
    let out = trampoline(launcher, job.path(), &["/bin/cat", "/etc/passwd"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    // The toolchain itself is readable.
    let out = trampoline(launcher, job.path(), &["/bin/cat", "/usr/include/stdio.h"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn no_network() {
    LAUNCHERS
        .iter()
        .for_each(|launcher| no_network_with(launcher));
}

fn no_network_with(launcher: &str) {
    let job = tempfile::tempdir().unwrap();
    let script = "import socket\n\
        for family, kind in [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_INET6, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_STREAM)]:\n\
        \x20   try:\n\
        \x20       socket.socket(family, kind)\n\
        \x20       print('opened', family, kind)\n\
        \x20   except OSError as e:\n\
        \x20       print('refused', e.errno)\n";
    let out = trampoline(
        launcher,
        job.path(),
        &["/usr/bin/python3", "-S", "-c", script],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    assert_eq!(stdout.matches("refused").count(), 4, "{stdout}");
}

#[test]
fn a_process_that_left_the_session_is_killed_before_the_status_goes_out() {
    LAUNCHERS
        .iter()
        .for_each(|launcher| a_process_that_left_the_session_is_killed_with(launcher));
}

fn a_process_that_left_the_session_is_killed_with(launcher: &str) {
    let job = tempfile::tempdir().unwrap();
    // The "compiler" starts a process in a session of its own (out of reach
    // of the process-group kill), waits until it has written its pid, and
    // exits successfully while it still runs.
    let script = "setsid /bin/sh -c 'echo $$ > escaped.pid.tmp && mv escaped.pid.tmp escaped.pid; exec sleep 300' </dev/null >/dev/null 2>&1 &\n\
        while [ ! -e escaped.pid ]; do sleep 0.01; done\n\
        echo started";
    let out = trampoline(launcher, job.path(), &["/bin/sh", "-c", script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "started\n");
    let pid: u32 = std::fs::read_to_string(job.path().join("escaped.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Already dead (or a zombie awaiting its reaper) when the launcher ended:
    // nothing of the job may write to its directory after the status.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .unwrap_or("gone");
    assert!(
        state == "gone" || state == "Z" || state == "X",
        "{launcher}: the escaped process {pid} still runs (state {state}): {stat}"
    );
}

/// Make `command` see a kernel without Landlock: a seccomp filter, installed
/// just before exec, fails `landlock_create_ruleset` with ENOSYS (what such a
/// kernel answers). Everything else is allowed.
fn without_landlock(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let ret_enosys = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);
    let filter = [
        // seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_landlock_create_ruleset as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: ret_enosys,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    // SAFETY: between fork and exec the closure only makes two prctl calls
    // on memory captured (and allocated) before the fork.
    unsafe {
        command.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                    0,
                    0,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
fn required_sandbox_without_landlock_runs_nothing() {
    LAUNCHERS
        .iter()
        .for_each(|launcher| required_sandbox_without_landlock_runs_nothing_with(launcher));
}

fn required_sandbox_without_landlock_runs_nothing_with(launcher: &str) {
    let run = |mode: &str, job: &Path| {
        without_landlock(
            Command::new(dportage_bin())
                .arg(launcher)
                .arg("--job-dir")
                .arg(job)
                .args(["--sandbox", mode, "--"])
                .args(["/bin/sh", "-c", "echo ran > marker"])
                .current_dir(job)
                .env_clear()
                .env("PATH", "/usr/bin:/bin"),
        )
        .output()
        .unwrap()
    };
    // Best effort on the same "kernel": the command runs (unconfined by
    // Landlock), which shows the filter hides Landlock and nothing else.
    let job = tempfile::tempdir().unwrap();
    let out = run("best-effort", job.path());
    assert!(out.status.success(), "{launcher}: {}", text(&out.stderr));
    assert!(
        job.path().join("marker").exists(),
        "{launcher}: best effort ran nothing"
    );

    let job = tempfile::tempdir().unwrap();
    let out = run("required", job.path());
    assert!(
        !out.status.success(),
        "{launcher}: required sandbox ran without Landlock"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--sandbox required") && stderr.contains("Landlock"),
        "{launcher}: the refusal says why and what to do: {stderr}"
    );
    assert!(
        !job.path().join("marker").exists(),
        "{launcher}: the command ran although the sandbox was required"
    );
}

#[test]
fn compiler_is_niced() {
    LAUNCHERS
        .iter()
        .for_each(|launcher| compiler_is_niced_with(launcher));
}

fn compiler_is_niced_with(launcher: &str) {
    let job = tempfile::tempdir().unwrap();
    let out = trampoline(launcher, job.path(), &["/usr/bin/nice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let nice: i32 = text(&out.stdout).trim().parse().unwrap();
    assert!(nice >= 5, "nice {nice}");
}

#[tokio::test]
async fn object_bomb_is_cut_by_the_file_size_limit() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path());
    cfg.limits.max_output = 16 << 20;
    // 200 MB of initialised data: the assembler would write a 200 MB object.
    let source = b"__asm__(\".data\\n.fill 200*1024*1024,1,0x5a\\n\");\nint x;\n";
    let started = Instant::now();
    let out = compile("gcc -c bomb.c -o bomb.o", source, &cfg).await;
    let stderr = text(&out.stderr);
    assert_ne!(out.status, 0, "{stderr}");
    assert_eq!(out.result, JobResult::CompileError);
    assert!(out.object.is_empty());
    assert!(
        stderr.contains("limit of 16777216 bytes per output file"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_empty(root.path());

    // The next honest job on the same configuration still works.
    let out = compile("gcc -c ok.c -o ok.o", b"int ok = 1;\n", &cfg).await;
    assert_eq!(out.status, 0, "{}", text(&out.stderr));
    assert_empty(root.path());
}

/// A C++ file whose constant evaluation runs for minutes.
const SLOW_CPP: &[u8] = b"constexpr long spin() { long s = 0;\n\
  for (long i = 0; i < 200000; ++i) for (long j = 0; j < 200000; ++j) s += i ^ j;\n\
  return s; }\nconstexpr long value = spin();\nlong get() { return value; }\n";

/// How [`SLOW_CPP`] is compiled (without g++'s cap on constant evaluation).
const SLOW_COMMAND: &str = "g++ -fconstexpr-ops-limit=2000000000000 -c slow.cc -o slow.o";

/// A job configuration on a fresh work root, and [`SLOW_COMMAND`] checked.
fn slow_job() -> (tempfile::TempDir, JobConfig, ServerCommand) {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path());
    let cmd = check_command(&words(SLOW_COMMAND), &cfg).unwrap();
    (root, cfg, cmd)
}

#[tokio::test]
async fn wall_clock_kills_a_long_job() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path());
    cfg.limits.wall = Duration::from_secs(2);
    let started = Instant::now();
    let out = compile(SLOW_COMMAND, SLOW_CPP, &cfg).await;
    let took = started.elapsed();
    assert_eq!(out.result, JobResult::Timeout, "{}", text(&out.stderr));
    assert_eq!(out.status, 118 << 8);
    assert!(
        text(&out.stderr).contains("timeout"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.object.is_empty());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_empty(root.path());
    assert_eq!(processes_under(root.path()), Vec::<String>::new());
}

#[tokio::test]
async fn cancelled_job_is_killed_and_cleaned() {
    let (root, cfg, cmd) = slow_job();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let job = tokio::spawn({
        let cfg = cfg.clone();
        async move {
            run_job(&cmd, SLOW_CPP, &cfg, async {
                let _ = rx.await;
            })
            .await
        }
    });
    // Cancel once the compiler is really running in its job directory.
    wait_until_async(
        Duration::from_secs(30),
        "the compiler to start",
        async || !processes_under(root.path()).is_empty(),
    )
    .await;
    tx.send(()).unwrap();
    let out = job.await.unwrap();
    assert_eq!(out.result, JobResult::ClientDisconnected);
    assert_eq!(out.status, 107 << 8);
    assert_empty(root.path());
    assert_eq!(processes_under(root.path()), Vec::<String>::new());
}

#[tokio::test]
async fn dropped_job_stops_its_compiler_and_removes_its_dir() {
    let (root, cfg, cmd) = slow_job();
    // Boxed, so `drop` below really drops the future (a stack pin would not).
    let mut job = Box::pin(run_job(&cmd, SLOW_CPP, &cfg, std::future::pending()));
    // The job runs only while polled: each probe drives it for a while.
    wait_until_async(
        Duration::from_secs(30),
        "the compiler to start",
        async || {
            tokio::select! {
                out = &mut job => panic!("the slow job ended: {}", text(&out.stderr)),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            !processes_under(root.path()).is_empty()
        },
    )
    .await;
    drop(job);
    // The trampoline notices the closed control pipe, kills and cleans up.
    wait_until_async(
        Duration::from_secs(20),
        "the job to be cleaned up",
        async || {
            let left = processes_under(root.path());
            if left.is_empty() && std::fs::read_dir(root.path()).unwrap().count() == 0 {
                Ok(())
            } else {
                Err(format!("left behind: {left:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn masquerade_dirs_are_not_searched_for_the_compiler() {
    let root = tempfile::tempdir().unwrap();
    let masq = tempfile::tempdir().unwrap();
    // A masquerade entry that would fail the job if it were run.
    std::os::unix::fs::symlink("/bin/false", masq.path().join("gcc")).unwrap();
    let mut cfg = config(root.path());
    cfg.masquerade_dirs = vec![masq.path().to_path_buf()];
    cfg.compiler_path = format!("{}:relative/bin:/usr/bin:/bin", masq.path().display()).into();
    let out = compile("gcc -c x.c -o x.o", b"int x = 1;\n", &cfg).await;
    assert_eq!(out.status, 0, "{}", text(&out.stderr));
    assert!(out.object.starts_with(b"\x7fELF"));
    assert_empty(root.path());
}

#[tokio::test]
async fn cpu_limit_stops_a_spinning_compiler() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path());
    cfg.limits.cpu_secs = 1;
    cfg.limits.wall = Duration::from_secs(60);
    let out = compile(SLOW_COMMAND, SLOW_CPP, &cfg).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.result, JobResult::CompileError, "{stderr}");
    assert_ne!(out.status, 0);
    assert!(stderr.contains("CPU time limit of 1 s"), "{stderr}");
    assert_empty(root.path());
}

#[tokio::test]
async fn diagnostics_are_capped() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path());
    cfg.limits.max_diagnostics = 4096;
    let mut source = String::new();
    for i in 0..2000 {
        source.push_str(&format!("int f{i}(void) {{ int unused{i}; return 0; }}\n"));
    }
    let out = compile("gcc -Wall -c many.c -o many.o", source.as_bytes(), &cfg).await;
    assert_eq!(out.status, 0, "{}", text(&out.stderr));
    assert!(out.object.starts_with(b"\x7fELF"));
    let stderr = text(&out.stderr);
    assert!(out.stderr.len() < 4096 + 200, "{}", out.stderr.len());
    assert!(
        stderr.contains("dportage: compiler stderr cut after 4096 bytes"),
        "{stderr}"
    );
    assert_empty(root.path());
}

#[test]
fn rlimits_reach_the_compiler() {
    LAUNCHERS
        .iter()
        .for_each(|launcher| rlimits_reach_the_compiler_with(launcher));
}

fn rlimits_reach_the_compiler_with(launcher: &str) {
    let job = tempfile::tempdir().unwrap();
    let out = Command::new(dportage_bin())
        .args([launcher, "--job-dir"])
        .arg(job.path())
        .args([
            "--cpu-secs",
            "7",
            "--max-file-size",
            "1048576",
            "--max-open-files",
            "64",
            "--max-processes",
            "99",
            "--address-space",
            "1073741824",
            "--",
            "/bin/sh",
            "-c",
            "ulimit -a; ulimit -Hf",
        ])
        .current_dir(job.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let limits = text(&out.stdout);
    for line in [
        "time(seconds)        7",
        "file(blocks)         2048",
        "coredump(blocks)     0",
        "process              99",
        "nofiles              64",
        "vmemory(kbytes)      1048576",
    ] {
        assert!(
            limits.lines().any(|l| l == line),
            "{line:?} not in\n{limits}"
        );
    }
    // The hard file-size limit equals the soft one: the compiler cannot raise it.
    assert_eq!(limits.lines().last(), Some("2048"), "{limits}");
}

#[tokio::test]
async fn address_space_limit_fails_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path());
    cfg.limits.address_space = 96 << 20;
    let client = tempfile::tempdir().unwrap();
    let source = "#include <regex>\n#include <map>\n#include <string>\n\
        int use() { std::regex r(\"a+b\"); std::map<std::string, int> m; m[\"x\"] = 1;\n\
        return std::regex_match(\"aab\", r) + m.size(); }\n";
    let pre = preprocess("g++", client.path(), "re.cc", source, &[]);
    let out = compile("g++ -O2 -c re.cc -o re.o", &pre, &cfg).await;
    let stderr = text(&out.stderr);
    assert_ne!(out.status, 0, "compiled within 96 MB of address space?");
    assert_eq!(out.result, JobResult::CompileError);
    assert!(out.object.is_empty());
    assert!(
        stderr.contains("memory limit of 100663296 bytes"),
        "{stderr}"
    );
    assert_empty(root.path());

    // With the default limit the same job compiles.
    cfg.limits.address_space = JobLimits::default().address_space;
    let out = compile("g++ -O2 -c re.cc -o re.o", &pre, &cfg).await;
    assert_eq!(out.status, 0, "{}", text(&out.stderr));
}
