//! `dportage serve` starts each job's compiler straight from its zygote (no
//! re-exec of the binary, no per-job supervisor process), and the zygote
//! never holds a job directory or survives the daemon.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::support::server::*;
use crate::support::*;

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn compilers_are_children_of_the_zygote_without_a_re_exec_or_supervisor() {
    let mut s = DportageServer::start(&["--jobs", "1"]);
    let daemon = s.pid().expect("server pid");
    let req = slow_request(&slow_source(100_000));
    let mut c = TcpStream::connect(s.addr()).expect("connect");
    c.write_all(&req).expect("send request");
    // The compiler driver: a job process (cwd in the job directory) running g++.
    let compiler = wait_until(Duration::from_secs(30), "a compiler to start", || {
        let procs = s.job_processes();
        procs
            .iter()
            .copied()
            .find(|&pid| cmdline(pid).starts_with("x86_64-linux-gnu-g++"))
            .ok_or_else(|| {
                format!(
                    "job processes: {:?}\nlog:\n{}",
                    procs.iter().map(|&p| cmdline(p)).collect::<Vec<_>>(),
                    s.log()
                )
            })
    });
    for pid in s.job_processes() {
        let line = cmdline(pid);
        assert!(
            !line.contains("__sandbox-exec") && !line.contains("serve"),
            "a job process runs dportage's image (trampoline or supervisor): {line}"
        );
    }
    let zygote = parent_of(compiler).expect("compiler's parent");
    assert!(
        cmdline(zygote).contains("serve"),
        "the compiler's parent is the zygote: {}",
        cmdline(zygote)
    );
    assert_ne!(zygote, daemon, "the compiler is not the daemon's child");
    assert_eq!(
        parent_of(zygote),
        Some(daemon),
        "the zygote is the daemon's child"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{zygote}/cwd")).expect("zygote cwd"),
        std::path::PathBuf::from("/"),
        "the zygote must not hold the work directory"
    );

    // Cancelling still stops the compiler, and the daemon goes on serving.
    c.shutdown(Shutdown::Both).expect("close");
    drop(c);
    s.wait_for_no_job_processes(Duration::from_secs(15));
    assert_honest_job_succeeds(&s);

    // The zygote exits with the daemon.
    s.terminate(Duration::from_secs(20));
    wait_until(
        Duration::from_secs(10),
        "the zygote to exit with the daemon",
        || !alive(zygote as i32),
    );
}
