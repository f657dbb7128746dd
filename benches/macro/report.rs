//! Results, medians, ratios and the markdown table.

use std::fmt::{self, Write as _};

use crate::{Client, Server, LOOPBACK, NETWORKS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowStatus {
    Ok,
    Failed(String),
    TimedOut(String),
    NotImplemented(String),
    /// The servers of this row never started (e.g. `dportage serve` before it
    /// exists): not a failure of the system under test, just nothing to measure.
    Unavailable(String),
    Skipped,
}

impl fmt::Display for RowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowStatus::Ok => write!(f, "ok"),
            RowStatus::Failed(why) => write!(f, "failed: {why}"),
            RowStatus::TimedOut(why) => write!(f, "{why}"),
            RowStatus::NotImplemented(why) => write!(f, "{why}"),
            // The reason is in the notes under the table, once per server kind.
            RowStatus::Unavailable(_) => write!(f, "n/a: server not available"),
            RowStatus::Skipped => write!(f, "skipped (--only)"),
        }
    }
}

/// One build of one configuration.
#[derive(Debug, Clone)]
pub struct RunSample {
    pub wall: f64,
    /// CPU of make and everything it ran on the client side.
    pub client_cpu: f64,
    /// The servers' own CPU during the build, in nanoseconds (no compilers).
    pub server_ns: Option<u64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// TCP connections = jobs sent to servers (a redundant job counts twice).
    pub connections: u64,
    pub object_mismatch: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BuildRow {
    pub label: String,
    pub client: Client,
    pub server: Option<Server>,
    pub network: usize,
    pub host_option: &'static str,
    pub redundant: bool,
    pub status: RowStatus,
    pub runs: Vec<RunSample>,
}

impl BuildRow {
    pub fn new(
        label: &str,
        client: Client,
        server: Option<Server>,
        network: usize,
        host_option: &'static str,
        redundant: bool,
    ) -> Self {
        BuildRow {
            label: label.to_string(),
            client,
            server,
            network,
            host_option,
            redundant,
            status: RowStatus::Ok,
            runs: Vec::new(),
        }
    }

    fn usable(&self) -> bool {
        self.status == RowStatus::Ok && !self.runs.is_empty()
    }

    fn wall(&self) -> Option<f64> {
        self.usable()
            .then(|| median(self.runs.iter().map(|r| r.wall)))
    }

    fn client_cpu(&self) -> Option<f64> {
        self.usable()
            .then(|| median(self.runs.iter().map(|r| r.client_cpu)))
    }

    fn bytes(&self) -> Option<f64> {
        (self.usable() && self.server.is_some())
            .then(|| median(self.runs.iter().map(|r| (r.bytes_up + r.bytes_down) as f64)))
    }

    /// Median over runs of the servers' own CPU per job, in ms.
    fn server_ms_per_job(&self) -> Option<f64> {
        if !self.usable() || self.server.is_none() {
            return None;
        }
        let per_run: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.connections > 0)
            .filter_map(|r| {
                let ns = r.server_ns? as f64;
                Some(ns / 1e6 / r.connections as f64)
            })
            .collect();
        (!per_run.is_empty()).then(|| median(per_run.into_iter()))
    }

    fn objects(&self) -> String {
        if !self.usable() {
            return String::new();
        }
        let bad: Vec<&String> = self
            .runs
            .iter()
            .filter_map(|r| r.object_mismatch.as_ref())
            .collect();
        match bad.first() {
            None if self.client == Client::Local => "reference".into(),
            None => "identical".into(),
            Some(first) => format!("DIFFER in {}/{} runs: {first}", bad.len(), self.runs.len()),
        }
    }

    fn objects_identical(&self) -> bool {
        self.runs.iter().all(|r| r.object_mismatch.is_none())
    }

    fn name(&self) -> String {
        format!("{} ({})", self.label, NETWORKS[self.network].0)
    }
}

#[derive(Debug, Clone)]
pub struct PerJobRow {
    pub label: String,
    pub network: usize,
    pub status: RowStatus,
    pub walls: Vec<f64>,
    /// CPU of the client command and everything it waited for (the local
    /// preprocessor, or the whole compile for the local row).
    pub client_cpus: Vec<f64>,
    /// The servers' own CPU over all runs, in nanoseconds (no compilers).
    pub server_ns: u64,
    pub jobs: u64,
    pub bytes: u64,
}

impl PerJobRow {
    pub fn new(label: &str, network: usize) -> Self {
        PerJobRow {
            label: label.to_string(),
            network,
            status: RowStatus::Ok,
            walls: Vec::new(),
            client_cpus: Vec::new(),
            server_ns: 0,
            jobs: 0,
            bytes: 0,
        }
    }

    fn median(&self) -> Option<f64> {
        (self.status == RowStatus::Ok && !self.walls.is_empty())
            .then(|| median(self.walls.iter().copied()))
    }

    fn client_cpu(&self) -> Option<f64> {
        (self.status == RowStatus::Ok && !self.client_cpus.is_empty())
            .then(|| median(self.client_cpus.iter().copied()))
    }

    fn server_ms_per_job(&self) -> Option<f64> {
        (self.status == RowStatus::Ok && self.jobs > 0)
            .then(|| self.server_ns as f64 / 1e6 / self.jobs as f64)
    }
}

pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

pub struct Report {
    pub runs: usize,
    pub servers: usize,
    pub slots: u32,
    pub objects: usize,
    pub machine: Vec<(String, String)>,
    pub zstd: Result<(), String>,
    pub per_job: Vec<PerJobRow>,
    pub builds: Vec<BuildRow>,
    pub notes: Vec<String>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    }
}

fn show(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "—".into())
}

struct Goal {
    what: String,
    measured: Option<f64>,
    target: f64,
    /// Why it cannot be judged, when `measured` is None.
    missing: String,
    caveat: Option<String>,
}

impl Report {
    pub fn new(runs: usize, servers: usize, slots: u32, objects: usize) -> Self {
        Report {
            runs,
            servers,
            slots,
            objects,
            machine: Vec::new(),
            zstd: Err("not checked".into()),
            per_job: Vec::new(),
            builds: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn baseline(&self, row: &BuildRow) -> Option<&BuildRow> {
        self.builds.iter().find(|b| {
            b.client == Client::Distcc
                && b.server == Some(Server::Distccd)
                && b.network == row.network
                && !b.redundant
        })
    }

    fn find(&self, pred: impl Fn(&BuildRow) -> bool) -> Option<&BuildRow> {
        self.builds.iter().find(|b| pred(b))
    }

    fn dportage_row(&self, network: usize, option: &str, redundant: bool) -> Option<&BuildRow> {
        self.find(|b| {
            b.client == Client::Dportage
                && b.server == Some(Server::DportageServe)
                && b.network == network
                && b.host_option == option
                && b.redundant == redundant
        })
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# dportage macro-benchmark\n");
        for (k, v) in &self.machine {
            let _ = writeln!(out, "- {k}: {v}");
        }
        let _ = writeln!(out);
        if !self.per_job.is_empty() {
            self.per_job_table(&mut out);
        }
        if !self.builds.is_empty() {
            self.build_table(&mut out);
        }
        self.goals_table(&mut out);
        for n in &self.notes {
            let _ = writeln!(out, "\n{n}");
        }
        out
    }

    /// The per-job row whose label starts with `prefix`, on `network`.
    fn per_job_row(&self, prefix: &str, network: usize) -> Option<&PerJobRow> {
        self.per_job
            .iter()
            .find(|r| r.network == network && r.label.starts_with(prefix))
    }

    fn per_job_table(&self, out: &mut String) {
        let runs = self
            .per_job
            .iter()
            .map(|r| r.walls.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "## Per-job overhead\n\nOne tiny translation unit (`gcc -O2 -c tiny.c`), compiled \
             {runs} times per configuration, one job at a time, the configurations interleaved; \
             one server (127.0.0.2, `,lzo`) behind the proxy, on loopback and on the 20 ms / \
             10 Mbit/s WAN (where every extra round trip costs 40 ms). Overhead = median wall \
             time minus the local compile's median; ÷ (a) = overhead ÷ the overhead of distcc \
             → distccd on the same network.\n"
        );
        let _ = writeln!(
            out,
            "| configuration | network | status | median wall | overhead over local | overhead ÷ (a) | \
             client CPU (median, incl. local cpp) | server CPU/job beyond the compiler | \
             bytes/job |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|");
        let local = self.per_job.first().and_then(PerJobRow::median);
        let overhead = |r: &PerJobRow| Some(r.median()? - local?);
        for (i, r) in self.per_job.iter().enumerate() {
            let is_local = i == 0;
            let base = self.per_job_row("(a)", r.network).and_then(overhead);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                NETWORKS[r.network].0,
                r.status,
                show(r.median(), |v| format!("{:.1} ms", v * 1000.0)),
                if is_local {
                    String::new()
                } else {
                    show(overhead(r), |v| format!("{:.1} ms", v * 1000.0))
                },
                if is_local {
                    String::new()
                } else {
                    show(ratio(overhead(r), base), |v| format!("{v:.2}"))
                },
                show(r.client_cpu(), |v| format!("{:.1} ms", v * 1000.0)),
                if is_local {
                    String::new()
                } else {
                    show(r.server_ms_per_job(), |v| format!("{v:.2} ms"))
                },
                if is_local || r.jobs == 0 {
                    String::new()
                } else {
                    format!("{}", r.bytes / r.jobs)
                },
            );
        }
        let _ = writeln!(out);
    }

    fn build_table(&self, out: &mut String) {
        let servers = self.servers;
        let _ = writeln!(
            out,
            "## Lua 5.4.9 build\n\nliblua ({} translation units + `ar`), Lua's own flags (`{}`), \
             a fresh tree per build. Distributed rows: {servers} servers (127.0.0.2…), \
             `--jobs {}` each, `make -j{}`, hosts `127.0.0.x:PORT/{}<option>`, a fresh \
             `DISTCC_DIR`, `DISTCC_FALLBACK=0`; every server sits behind a proxy (counting only on \
             loopback; the WAN rows share one emulated line). Median of {} run(s) per row, rows \
             interleaved run by run. Ratios are to the distcc → distccd row on the same network.\n",
            self.objects,
            crate::lua::CFLAGS,
            self.slots,
            self.slots as usize * servers,
            self.slots,
            self.runs
        );
        let _ = writeln!(
            out,
            "| configuration | network | status | wall (median) | client CPU | server CPU/job \
             beyond the compiler | jobs/build | KiB up / down | objects vs local | wall ÷ distcc \
             | bytes ÷ distcc |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|");
        for r in &self.builds {
            if r.status == RowStatus::Skipped {
                continue;
            }
            let base = self.baseline(r).filter(|b| !std::ptr::eq(*b, r));
            let median_of = |f: fn(&RunSample) -> u64| median(r.runs.iter().map(|s| f(s) as f64));
            let traffic = if r.usable() && r.server.is_some() {
                format!(
                    "{:.0} / {:.0}",
                    median_of(|s| s.bytes_up) / 1024.0,
                    median_of(|s| s.bytes_down) / 1024.0
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                if r.host_option.is_empty() {
                    String::new()
                } else {
                    format!("(`{}`)", r.host_option)
                },
                NETWORKS[r.network].0,
                r.status,
                show(r.wall(), |v| format!("{v:.2} s")),
                show(r.client_cpu(), |v| format!("{v:.2} s")),
                show(r.server_ms_per_job(), |v| format!("{v:.2} ms")),
                if r.usable() && r.server.is_some() {
                    format!("{:.0}", median_of(|s| s.connections))
                } else {
                    String::new()
                },
                traffic,
                r.objects(),
                base.map(|b| show(ratio(r.wall(), b.wall()), |v| format!("{v:.2}")))
                    .unwrap_or_default(),
                base.map(|b| show(ratio(r.bytes(), b.bytes()), |v| format!("{v:.2}")))
                    .unwrap_or_default(),
            );
        }
        let _ = writeln!(
            out,
            "\nServer CPU beyond the compiler = on-CPU time (nanosecond schedstat of every \
             thread) of the daemon's own processes (the daemon, its workers, helpers with its \
             command name; sampled from /proc every 10 ms) during a build, divided by the jobs \
             (TCP connections) it served. Compilers are separate processes (or a trampoline after \
             it execs the compiler) and never counted; CPU a helper spends between the last sample \
             and its exit or exec is missed.\n"
        );
    }

    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        let failed = |row: Option<&BuildRow>, name: &str| match row {
            None => format!("{name}: row not run"),
            Some(r) if r.status != RowStatus::Ok => format!("{}: {}", r.name(), r.status),
            Some(r) if r.runs.is_empty() => format!("{}: no runs", r.name()),
            Some(_) => String::new(),
        };
        let objects_caveat = |row: Option<&BuildRow>| {
            row.filter(|r| !r.objects_identical())
                .map(|r| format!("objects differ from the local build ({})", r.name()))
        };

        // Per-job overhead.
        if !self.per_job.is_empty() {
            let local = self.per_job.first().and_then(PerJobRow::median);
            let find = |p: &str| self.per_job_row(p, LOOPBACK);
            let overhead = |r: Option<&PerJobRow>| Some(r?.median()? - local?);
            let why = [find("(a)"), find("(c)")]
                .iter()
                .flatten()
                .filter(|r| r.status != RowStatus::Ok)
                .map(|r| format!("{}: {}", r.label, r.status))
                .collect::<Vec<_>>()
                .join("; ");
            goals.push(Goal {
                what: "per-job overhead, (c) dportage → dportage serve ÷ (a) distcc → distccd"
                    .into(),
                measured: ratio(overhead(find("(c)")), overhead(find("(a)"))),
                target: 0.8,
                missing: why,
                caveat: None,
            });
        }

        let lo_distcc = self.baseline(&BuildRow::new(
            "",
            Client::Distcc,
            None,
            LOOPBACK,
            "",
            false,
        ));
        let lo_dportage = self.dportage_row(LOOPBACK, ",lzo", false);
        if !self.builds.is_empty() {
            let missing = [
                failed(lo_distcc, "distcc → distccd (loopback)"),
                failed(lo_dportage, "dportage → dportage serve (loopback)"),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
            goals.push(Goal {
                what: "server CPU per job beyond the compiler, Lua build on loopback".into(),
                measured: ratio(
                    lo_dportage.and_then(BuildRow::server_ms_per_job),
                    lo_distcc.and_then(BuildRow::server_ms_per_job),
                ),
                target: 0.5,
                missing: missing.clone(),
                caveat: None,
            });
            goals.push(Goal {
                what: "Lua build over 2 loopback hosts, wall time".into(),
                measured: ratio(
                    lo_dportage.and_then(BuildRow::wall),
                    lo_distcc.and_then(BuildRow::wall),
                ),
                target: 1.0,
                missing,
                caveat: objects_caveat(lo_dportage),
            });
            for (network, (name, _)) in NETWORKS.iter().enumerate().skip(1) {
                let distcc = self
                    .find(|b| b.client == Client::Distcc && b.network == network && !b.redundant);
                for option in [",lzo", ",zstd"] {
                    let Some(dp) = self.dportage_row(network, option, false) else {
                        continue;
                    };
                    let missing = [
                        failed(distcc, "distcc → distccd"),
                        failed(Some(dp), "dportage"),
                    ]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                    goals.push(Goal {
                        what: format!("{name} build, wall time (`{option}`)"),
                        measured: ratio(dp.wall(), distcc.and_then(BuildRow::wall)),
                        target: 0.9,
                        missing: missing.clone(),
                        caveat: objects_caveat(Some(dp)),
                    });
                    goals.push(Goal {
                        what: format!("{name} build, bytes on the wire (`{option}`)"),
                        measured: ratio(dp.bytes(), distcc.and_then(BuildRow::bytes)),
                        target: 0.65,
                        missing,
                        caveat: None,
                    });
                }
            }
            let dual = self.dportage_row(LOOPBACK, ",lzo", true);
            let missing = [
                failed(lo_dportage, "dportage (loopback)"),
                failed(dual, "dportage redundancy 2"),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
            goals.push(Goal {
                what: "dual ÷ single: DPORTAGE_REDUNDANCY=2 ÷ dportage, Lua build on loopback"
                    .into(),
                measured: ratio(
                    dual.and_then(BuildRow::wall),
                    lo_dportage.and_then(BuildRow::wall),
                ),
                target: 1.15,
                missing,
                caveat: objects_caveat(dual),
            });
        }
        goals
    }

    fn goals_table(&self, out: &mut String) {
        let goals = self.goals();
        if goals.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Goals (ratios to distcc in this run)\n");
        let _ = writeln!(out, "| goal | measured | target | verdict |");
        let _ = writeln!(out, "|---|---:|---:|---|");
        for g in goals {
            let verdict = match (g.measured, &g.caveat) {
                (Some(_), Some(c)) => format!("NOT met: {c}"),
                (Some(m), None) if m <= g.target => "met".to_string(),
                (Some(_), None) => "NOT met".to_string(),
                (None, _) if g.missing.is_empty() => "n/a".to_string(),
                (None, _) => format!("n/a ({})", g.missing),
            };
            let _ = writeln!(
                out,
                "| {} | {} | ≤ {:.2} | {} |",
                g.what,
                show(g.measured, |v| format!("{v:.2}")),
                g.target,
                verdict
            );
        }
    }
}
