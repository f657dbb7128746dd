//! For the monitor tests: a `dportage serve` whose compiler waits before it
//! compiles (so a job stays in flight long enough to be seen), the state
//! files a running client keeps, and the real `distccmon-text`.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dportage::jobstate::binstate::{self, TaskState};

use super::distccd::stuck_compilers;
use super::serve::ServeOptions;
use super::{daemon_dir, wait_until, ChildGuard, DportageServer, Peer};

pub const DISTCCMON_TEXT: &str = "/usr/bin/distccmon-text";

/// distcc's text monitor.
pub const DISTCCMON: Peer = Peer {
    paths: &[DISTCCMON_TEXT],
    package: "distcc",
};

/// A `dportage serve` on `at` whose gcc sleeps `delay_secs` before compiling
/// (the directory holding that gcc lives as long as the server).
pub fn slow_server(at: Ipv4Addr, delay_secs: u32) -> (DportageServer, tempfile::TempDir) {
    let (dir, _tmp) = daemon_dir("dportage-slow-gcc-");
    let script = format!("#!/bin/sh\nsleep {delay_secs}\nexec /usr/bin/gcc \"$@\"\n");
    let path = stuck_compilers(
        dir.path(),
        &script,
        &std::env::var_os("PATH").unwrap_or_default(),
    );
    let path = path.to_string_lossy().into_owned();
    let server = ServeOptions::new()
        .at(at)
        .args(&["--allow", "127.0.0.0/8", "--jobs", "2"])
        .env(&[("PATH", path.as_str())])
        .own_process_group()
        .start();
    (server, dir)
}

/// The state files in `state_dir` of process `pid` (`binstate_<pid>` and
/// `binstate_<pid>_<n>`), decoded; files caught mid-replace are skipped.
pub fn state_files_of(state_dir: &Path, pid: u32) -> Vec<(String, TaskState)> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let own = binstate::file_name(pid, None);
    let mut files: Vec<(String, TaskState)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mine = name == own || name.starts_with(&format!("{own}_"));
            let state = binstate::decode(&std::fs::read(e.path()).ok()?).ok()?;
            mine.then_some((name, state))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Wait until `pid` keeps `want` state files all in `phase`.
pub fn wait_for_state_files(
    state_dir: &Path,
    pid: u32,
    want: usize,
    phase: binstate::Phase,
) -> Vec<(String, TaskState)> {
    wait_until(
        Duration::from_secs(30),
        format_args!("{want} state files of pid {pid} in phase {phase:?}"),
        || {
            let files = state_files_of(state_dir, pid);
            if files.len() == want && files.iter().all(|(_, s)| s.phase == phase) {
                Ok(files)
            } else {
                Err(format!("{files:?}"))
            }
        },
    )
}

/// Run the real `distccmon-text 1` (a frame a second) on `distcc_dir` until
/// a frame has `want` lines naming `needle`; returns that frame. The monitor
/// is killed (by PID) after at most 15 s.
pub fn distccmon_frame(distcc_dir: &Path, needle: &str, want: usize) -> Vec<String> {
    let child = Command::new(DISTCCMON_TEXT)
        .arg("1")
        .env("DISTCC_DIR", distcc_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run distccmon-text");
    let mut guard = ChildGuard::new(child);
    let stdout = guard.child().stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    // Frames are separated by an empty line; the reader ends when the
    // monitor is killed.
    std::thread::spawn(move || {
        let mut frame = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.is_empty() {
                if tx.send(std::mem::take(&mut frame).join("\n")).is_err() {
                    return;
                }
            } else {
                frame.push(line);
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(frame) => {
                let lines: Vec<String> = frame
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_owned)
                    .collect();
                if lines.len() == want {
                    return lines;
                }
                last = frame;
            }
            Err(_) => break,
        }
    }
    drop(guard);
    panic!("distccmon-text never showed {want} lines with {needle:?}; last frame:\n{last}");
}
