//! `dportage serve` starts each job's sandbox supervisor from its zygote (a
//! fork, no re-exec of the binary), and the zygote never holds a job
//! directory or survives the daemon.

mod server_support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use server_support::*;

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

/// Running or sleeping: not gone and not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .unwrap_or("Z");
    state != "Z" && state != "X"
}

#[test]
fn jobs_are_supervised_by_forks_of_the_zygote_not_a_re_exec() {
    let mut s = Server::start(&["--jobs", "1"]);
    let daemon = s.pid().expect("server pid");
    let req = request(
        1,
        &[
            "x86_64-linux-gnu-g++",
            NO_CONSTEXPR_LIMIT,
            "-c",
            "slow.cc",
            "-o",
            "slow.o",
        ],
        &slow_source(100_000),
    );
    let mut c = TcpStream::connect(s.addr()).expect("connect");
    c.write_all(&req).expect("send request");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The supervisor: a job process (cwd in the job directory) that is not a
    // compiler. It must be the daemon's image, forked, never `__sandbox-exec`.
    let supervisor = loop {
        let found = s
            .job_processes()
            .into_iter()
            .find(|&pid| cmdline(pid).contains("serve"));
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no supervisor forked from the zygote; job processes: {:?}\nlog:\n{}",
            s.job_processes()
                .iter()
                .map(|&p| cmdline(p))
                .collect::<Vec<_>>(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    for pid in s.job_processes() {
        assert!(
            !cmdline(pid).contains("__sandbox-exec"),
            "a job used the re-exec trampoline: {}",
            cmdline(pid)
        );
    }
    let zygote = parent_of(supervisor).expect("supervisor's parent");
    assert_ne!(zygote, daemon, "the supervisor is not the daemon's child");
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
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.job_processes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "job processes outlived the client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_honest_job_succeeds(&s);

    // The zygote exits with the daemon.
    s.terminate(Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(zygote) {
        assert!(Instant::now() < deadline, "the zygote outlived the daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
}
