//! What `dportage monitor` shows, built from state files and log lines and
//! drawn into a ratatui [`Buffer`]: no terminal, no files, so a test can draw
//! it anywhere and read the cells back.

use std::collections::BTreeMap;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Widget};

use crate::jobstate::binstate::TaskState;
use crate::jobstate::outcome::{Outcome, Verdict};

/// Verdicts listed under "Recent verdicts".
pub const RECENT: usize = 10;
/// Mismatches listed under "Mismatches".
pub const MISMATCHES: usize = 3;

/// One host's line: jobs on it now and what its votes came to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostRow {
    pub host: String,
    /// Jobs working on it now.
    pub running: usize,
    /// Jobs it answered whose vote counted (in the log read).
    pub votes: u64,
    /// Votes it lost.
    pub lost: u64,
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MonitorModel {
    /// Jobs in flight, one per state file.
    pub jobs: Vec<TaskState>,
    pub hosts: Vec<HostRow>,
    /// Newest first.
    pub recent: Vec<Outcome>,
    /// Newest first.
    pub mismatches: Vec<Outcome>,
    pub totals: BTreeMap<Verdict, u64>,
    /// Unix seconds, for the ages shown.
    pub now: u64,
}

impl MonitorModel {
    /// The frame for `jobs` in flight and `outcomes` (oldest first) at `now`.
    pub fn new(jobs: Vec<TaskState>, outcomes: &[Outcome], now: u64) -> MonitorModel {
        let mut hosts: BTreeMap<String, HostRow> = BTreeMap::new();
        fn row<'a>(hosts: &'a mut BTreeMap<String, HostRow>, name: &str) -> &'a mut HostRow {
            hosts.entry(name.to_owned()).or_insert_with(|| HostRow {
                host: name.to_owned(),
                ..HostRow::default()
            })
        }
        for job in &jobs {
            row(&mut hosts, &job.host).running += 1;
        }
        let mut totals: BTreeMap<Verdict, u64> = Verdict::ALL.iter().map(|v| (*v, 0)).collect();
        for outcome in outcomes {
            *totals.entry(outcome.verdict).or_default() += 1;
            for host in &outcome.hosts {
                row(&mut hosts, host_of(host)).votes += 1;
            }
            for host in &outcome.losers {
                row(&mut hosts, host_of(host)).lost += 1;
            }
        }
        let recent = outcomes.iter().rev().take(RECENT).cloned().collect();
        let mismatches = outcomes
            .iter()
            .rev()
            .filter(|o| o.verdict == Verdict::Mismatch)
            .take(MISMATCHES)
            .cloned()
            .collect();
        MonitorModel {
            jobs,
            hosts: hosts.into_values().collect(),
            recent,
            mismatches,
            totals,
            now,
        }
    }

    /// The one-line summary at the top.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self
            .totals
            .iter()
            .map(|(verdict, n)| format!("{} {n}", verdict.name()))
            .collect();
        let done: u64 = self.totals.values().sum();
        let hits = self.totals.get(&Verdict::CacheHit).copied().unwrap_or(0);
        let rate = if done == 0 {
            String::new()
        } else {
            format!(
                "; cache hit rate {:.0} %",
                100.0 * hits as f64 / done as f64
            )
        };
        format!(
            "dportage monitor: {} job{} running; {}{rate}",
            self.jobs.len(),
            if self.jobs.len() == 1 { "" } else { "s" },
            counts.join(", ")
        )
    }

    /// Rows for the middle, mismatch and recent blocks (borders included).
    fn heights(&self) -> (u16, u16, u16) {
        let middle = self.jobs.len().max(self.hosts.len()).max(1) + 3;
        let mismatches = if self.mismatches.is_empty() {
            0
        } else {
            self.mismatches.len() + 2
        };
        let recent = self.recent.len().max(1) + 2;
        (clamp(middle), clamp(mismatches), clamp(recent))
    }

    /// Rows a frame needs to show everything.
    pub fn height(&self) -> u16 {
        let (middle, mismatches, recent) = self.heights();
        1 + middle + mismatches + recent
    }

    /// Draw the frame into `area` of `buf`.
    pub fn render(&self, area: Rect, buf: &mut Buffer) {
        let (middle, mismatches, recent) = self.heights();
        let [top, mid, mism, rec] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(middle.min(5)),
            Constraint::Length(mismatches),
            Constraint::Length(recent),
        ])
        .areas(area);
        Paragraph::new(Line::from(format!("{}   (q quits)", self.summary())))
            .style(Style::new().add_modifier(Modifier::BOLD))
            .render(top, buf);
        let [jobs_area, hosts_area] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(mid);
        self.jobs_table().render(jobs_area, buf);
        self.hosts_table().render(hosts_area, buf);
        if mismatches > 0 {
            self.mismatch_table().render(mism, buf);
        }
        self.recent_table().render(rec, buf);
    }

    /// One frame as text, `width` columns wide, without trailing blanks.
    pub fn to_text(&self, width: u16) -> String {
        let area = Rect::new(0, 0, width, self.height());
        let mut buf = Buffer::empty(area);
        self.render(area, &mut buf);
        buffer_text(&buf)
    }

    fn jobs_table(&self) -> Table<'_> {
        let rows = self.jobs.iter().map(|j| {
            Row::new(vec![
                j.pid.to_string(),
                j.phase.name().to_owned(),
                j.file.clone(),
                format!("{}[{}]", j.host, j.slot),
            ])
        });
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Fill(2),
                Constraint::Fill(2),
            ],
        )
        .header(header(&["pid", "phase", "file", "host[slot]"]))
        .block(Block::bordered().title(" Jobs in flight "))
    }

    fn hosts_table(&self) -> Table<'_> {
        let rows = self.hosts.iter().map(|h| {
            let style = if h.lost > 0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            Row::new(vec![
                h.host.clone(),
                h.running.to_string(),
                h.votes.to_string(),
                h.lost.to_string(),
            ])
            .style(style)
        });
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(4),
                Constraint::Length(6),
                Constraint::Length(5),
            ],
        )
        .header(header(&["host", "now", "votes", "lost"]))
        .block(Block::bordered().title(" Hosts "))
    }

    fn mismatch_table(&self) -> Table<'_> {
        let rows = self.mismatches.iter().map(|o| {
            Row::new(vec![
                self.age(o.time),
                o.input.clone(),
                format!("lost: {}", o.losers.join(", ")),
            ])
            .style(Style::new().fg(Color::Red))
        });
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Fill(1),
                Constraint::Fill(1),
            ],
        )
        .block(Block::bordered().title(" Mismatches "))
    }

    fn recent_table(&self) -> Table<'_> {
        let rows = self.recent.iter().map(|o| {
            let style = match o.verdict {
                Verdict::Mismatch => Style::new().fg(Color::Red),
                Verdict::Local => Style::new().fg(Color::Yellow),
                _ => Style::new(),
            };
            Row::new(vec![
                self.age(o.time),
                o.verdict.name().to_owned(),
                o.input.clone(),
                o.hosts.join(" "),
                format!("{} ms", o.ms),
            ])
            .style(style)
        });
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Fill(1),
                Constraint::Fill(1),
                Constraint::Length(9),
            ],
        )
        .block(Block::bordered().title(" Recent verdicts "))
    }

    fn age(&self, time: u64) -> String {
        let secs = self.now.saturating_sub(time);
        match secs {
            0..=99 => format!("{secs}s ago"),
            100..=5999 => format!("{}m ago", secs / 60),
            _ => format!("{}h ago", secs / 3600),
        }
    }
}

fn header(names: &[&str]) -> Row<'static> {
    Row::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .style(Style::new().add_modifier(Modifier::UNDERLINED))
}

fn clamp(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX).min(1000)
}

/// The host part of a host entry (`h:3632/4,lzo` → `h`, `[::1]:3632` → `::1`),
/// as the state files name hosts.
pub fn host_of(label: &str) -> &str {
    let end = label.find(['/', ',']).unwrap_or(label.len());
    let hostport = &label[..end];
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match hostport.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => hostport,
    }
}

/// The text of `buf`, one line per row, trailing blanks and rows dropped.
pub fn buffer_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut lines: Vec<String> = (area.top()..area.bottom())
        .map(|y| {
            let line: String = (area.left()..area.right())
                .map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol()))
                .collect();
            line.trim_end().to_owned()
        })
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobstate::binstate::Phase;

    fn job(pid: u64, file: &str, host: &str, phase: Phase) -> TaskState {
        TaskState {
            pid,
            file: file.into(),
            host: host.into(),
            slot: 1,
            phase,
        }
    }

    fn outcome(input: &str, verdict: Verdict, hosts: &[&str], losers: &[&str]) -> Outcome {
        Outcome {
            time: 1000,
            input: input.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            verdict,
            losers: losers.iter().map(|h| h.to_string()).collect(),
            ms: 250,
        }
    }

    #[test]
    fn host_entries_reduce_to_hosts() {
        for (label, host) in [
            ("127.0.0.2", "127.0.0.2"),
            ("127.0.0.2:4000", "127.0.0.2"),
            ("build1:3632/8,lzo", "build1"),
            ("build1/4", "build1"),
            ("[::1]:3632", "::1"),
            ("::1", "::1"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(host_of(label), host, "{label}");
        }
    }

    #[test]
    fn counts_per_host_and_verdict() {
        let jobs = vec![
            job(10, "a.c", "127.0.0.2", Phase::Compile),
            job(11, "b.c", "127.0.0.3", Phase::Send),
            job(11, "b.c", "127.0.0.2", Phase::Receive),
        ];
        let outcomes = [
            outcome("x.c", Verdict::Agreed, &["127.0.0.2:1", "127.0.0.3:1"], &[]),
            outcome(
                "y.c",
                Verdict::Mismatch,
                &["127.0.0.2:1", "127.0.0.4:1"],
                &["127.0.0.4:1"],
            ),
            outcome("z.c", Verdict::Local, &[], &[]),
            outcome("w.c", Verdict::CacheHit, &[], &[]),
        ];
        let m = MonitorModel::new(jobs, &outcomes, 1005);
        let row = |h: &str| m.hosts.iter().find(|r| r.host == h).unwrap().clone();
        assert_eq!((row("127.0.0.2").running, row("127.0.0.2").votes), (2, 2));
        assert_eq!((row("127.0.0.4").running, row("127.0.0.4").lost), (0, 1));
        assert_eq!(m.totals[&Verdict::Agreed], 1);
        assert_eq!(m.totals[&Verdict::CacheHit], 1);
        assert_eq!(m.totals[&Verdict::SpotCheck], 0);
        assert_eq!(m.recent[0].input, "w.c");
        assert_eq!(m.mismatches.len(), 1);
        assert_eq!(
            m.summary(),
            "dportage monitor: 3 jobs running; agreed 1, mismatch 1, local 1, spotcheck 0, cache_hit 1; \
             cache hit rate 25 %"
        );
    }

    #[test]
    fn a_frame_shows_jobs_hosts_and_verdicts() {
        let m = MonitorModel::new(
            vec![job(4242, "hello.c", "127.0.0.2", Phase::Compile)],
            &[outcome(
                "liar.c",
                Verdict::Mismatch,
                &["127.0.0.2:1", "127.0.0.9:1"],
                &["127.0.0.9:1"],
            )],
            1003,
        );
        let text = m.to_text(120);
        for needle in [
            "1 job running",
            "4242",
            "Compile",
            "hello.c",
            "127.0.0.2[1]",
            "Mismatches",
            "lost: 127.0.0.9:1",
            "3s ago",
            "mismatch",
            "250 ms",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        assert_eq!(text.lines().count(), usize::from(m.height()));
    }

    #[test]
    fn an_empty_frame_and_a_small_terminal() {
        let m = MonitorModel::new(Vec::new(), &[], 0);
        assert!(m.to_text(80).contains("0 jobs running"));
        // Too small for everything: drawn clipped, never a panic.
        let area = Rect::new(0, 0, 10, 3);
        let mut buf = Buffer::empty(area);
        MonitorModel::new(vec![job(1, "a.c", "h", Phase::Send); 50], &[], 0).render(area, &mut buf);
    }
}
