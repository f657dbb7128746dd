//! `dportage monitor` on a real verified build: two `dportage serve` hosts
//! whose compiler takes 4 s, so the job is in flight on both while the
//! monitor looks. The live view is driven headless (ratatui's TestBackend)
//! against the state files and the verdict log the real client leaves.

use std::process::Stdio;
use std::time::Duration;

use dportage::jobstate::binstate::Phase;
use dportage::monitor::model::buffer_text;
use dportage::monitor::{tui, Sources};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::Terminal;

use crate::support::client::ClientEnv;
use crate::support::monitor::*;
use crate::support::*;

#[test]
fn monitor_shows_a_verified_build_live_and_then_its_verdict() {
    let test = "monitor_shows_a_verified_build_live_and_then_its_verdict";
    if !require_peer(test, &DISTCCMON) || !require_masquerade_dir(test) {
        return;
    }
    let (a, _slow_a) = slow_server(ip("127.0.0.2"), 4);
    let (b, _slow_b) = slow_server(ip("127.0.0.3"), 4);
    let mut env = ClientEnv::dual(&[a.addr.to_string(), b.addr.to_string()]);
    // Both hosts are slow on purpose: no hedge.
    env.set("DPORTAGE_HEDGE_MS", "600000");
    env.set("DPORTAGE_SPOTCHECK", "0");
    env.write("hello.c", "int hello(void) { return 42; }\n");
    env.reference(&["gcc", "-c", "hello.c", "-o", "ref.o"]);
    let client = ChildGuard::new(
        env.command(
            env.distcc_link(),
            &["gcc", "-c", "hello.c", "-o", "hello.o"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let pid = client.id();
    let sources = Sources {
        state_dir: env.distcc_dir().join("state"),
        dportage_dir: env.dportage_dir(),
    };

    // One state file per host in flight, both compiling.
    let files = wait_for_state_files(&sources.state_dir, pid, 2, Phase::Compile);
    let mut hosts: Vec<&str> = files.iter().map(|(_, s)| s.host.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["127.0.0.2", "127.0.0.3"], "{files:?}");

    // The live view, headless: one refresh, then `q`.
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
    let mut keys = vec![
        KeyEvent::from(KeyCode::Char('q')),
        KeyEvent::from(KeyCode::Char(' ')),
    ];
    tui::drive(&mut terminal, &sources, Duration::ZERO, |_| Ok(keys.pop())).unwrap();
    let live = buffer_text(terminal.backend().buffer());
    for needle in [
        "2 jobs running",
        &format!("{pid}"),
        "hello.c",
        "127.0.0.2[0]",
        "127.0.0.3[0]",
        "Compile",
    ] {
        assert!(live.contains(needle), "{needle:?} missing from\n{live}");
    }

    // distcc's own monitor shows the job once per host.
    let lines = distccmon_frame(&env.distcc_dir(), "hello.c", 2);
    assert!(
        lines.iter().any(|l| l.contains("127.0.0.2[0]")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("127.0.0.3[0]")),
        "{lines:?}"
    );

    // `dportage monitor` as a command, stdout not a terminal: one frame.
    let once = run_checked(
        &mut env.command(dportage_bin(), &["monitor"]),
        "dportage monitor (not a terminal)",
    );
    let once = String::from_utf8_lossy(&once.stdout).into_owned();
    assert!(
        once.contains("hello.c") && once.contains("127.0.0.3[0]"),
        "{once}"
    );

    let out = client.into_inner().wait_with_output().unwrap();
    assert_success(&out, "the verified compile on two slow hosts");
    assert!(env.read("hello.o") == env.read("ref.o"));
    assert!(state_files_of(&sources.state_dir, pid).is_empty());

    // Afterwards: no job, the verdict, and each host's vote.
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
    tui::drive(&mut terminal, &sources, Duration::ZERO, |_| {
        Ok(Some(KeyEvent::from(KeyCode::Char('q'))))
    })
    .unwrap();
    let after = buffer_text(terminal.backend().buffer());
    assert!(
        after.contains("0 jobs running; agreed 1, mismatch 0"),
        "{after}"
    );
    let verdict = after
        .lines()
        .find(|l| l.contains("agreed") && l.contains("hello.c"))
        .unwrap_or_else(|| panic!("no verdict line in\n{after}"));
    assert!(
        verdict.contains(&a.addr.to_string()) && verdict.contains(&b.addr.to_string()),
        "{verdict}"
    );
    for host in ["127.0.0.2", "127.0.0.3"] {
        let row: Vec<&str> = after
            .lines()
            .find(|l| l.contains(&format!("│{host} ")) || l.contains(&format!(" {host} ")))
            .unwrap_or_else(|| panic!("no row for {host} in\n{after}"))
            .split(|c: char| c == '│' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        assert!(
            row.ends_with(&[host, "0", "1", "0"]),
            "{host}: {row:?}\n{after}"
        );
    }
}
