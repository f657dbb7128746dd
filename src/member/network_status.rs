//! `dportage status [--coordinator URL] [--json]`: the coordinator's detailed
//! status (`GET /v1/status`), signed with `$DPORTAGE_DIR`'s key. Only members
//! and admin keys get it; the public page (`GET /`) has counts only.

use std::ffi::OsString;
use std::sync::Arc;

use serde_json::Value;

use crate::exitcode;
use crate::network::identity::{self, Identity};
use crate::network::{CoordinatorClient, NetworkError};

fn usage() -> i32 {
    eprintln!("usage: dportage status [--coordinator URL] [--json]");
    exitcode::BAD_ARGUMENTS
}

/// Entry point behind `dportage status …`.
pub fn status_main(args: Vec<OsString>) -> i32 {
    let mut coordinator = std::env::var("DPORTAGE_COORDINATOR").ok();
    let mut json = false;
    let mut it = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--coordinator" => match it.next() {
                Some(v) => coordinator = Some(v),
                None => return usage(),
            },
            s if s.starts_with("--coordinator=") => {
                coordinator = Some(s["--coordinator=".len()..].to_string())
            }
            _ => return usage(),
        }
    }
    let Some(url) = coordinator.filter(|s| !s.trim().is_empty()) else {
        eprintln!(
            "dportage status: no coordinator: pass --coordinator URL or set DPORTAGE_COORDINATOR"
        );
        return exitcode::BAD_ARGUMENTS;
    };
    match fetch(url.trim()) {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            0
        }
        Ok(v) => {
            print!("{}", render(&v));
            print!("{}", own_hit_rate(&identity::dportage_dir()));
            0
        }
        Err(e) => {
            eprintln!("dportage status: {e}");
            match &e {
                NetworkError::Unreachable { .. } => exitcode::CONNECT_FAILED,
                NetworkError::Api { code, .. } if code == "not_member" || code == "blacklisted" => {
                    exitcode::ACCESS_DENIED
                }
                NetworkError::BadUrl { .. } => exitcode::BAD_ARGUMENTS,
                _ => exitcode::DISTCC_FAILED,
            }
        }
    }
}

fn fetch(url: &str) -> Result<Value, NetworkError> {
    let dir = identity::dportage_dir();
    let me = Arc::new(Identity::load_or_create(&dir)?);
    let client = CoordinatorClient::new(url, me)?.expecting_pinned_key(&dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetworkError::io("starting the runtime".to_string(), e))?;
    rt.block_on(client.call("GET", "/v1/status", Vec::new()))
}

/// This member's own jobs as its monitor log has them: how many came from
/// the result cache.
fn own_hit_rate(dir: &std::path::Path) -> String {
    let text: String = ["monitor.log.1", "monitor.log"]
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(name)).unwrap_or_default())
        .collect();
    let (hits, jobs) = crate::jobstate::outcome::cache_hits(text.lines());
    if jobs == 0 {
        return String::new();
    }
    format!(
        "your jobs {jobs}  cache hits {hits} ({:.0} %)\n",
        100.0 * hits as f64 / jobs as f64
    )
}

/// Text for a terminal. Peer strings are printed with control characters
/// replaced: a hostile version string must not drive the terminal.
fn render(v: &Value) -> String {
    let clean = |v: &Value| -> String {
        v.as_str()
            .map(|s| {
                s.chars()
                    .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                    .collect()
            })
            .unwrap_or_else(|| v.to_string())
    };
    let mut out = format!(
        "live hosts {}  job slots {}  identities {}  blacklisted {}  requests {}  reports {}\n",
        v["live_hosts"],
        v["job_slots"],
        v["known_identities"],
        v["blacklist"].as_array().map_or(0, |a| a.len()),
        v["requests"],
        v["reports"]
    );
    let cache = &v["cache"];
    if cache.is_object() {
        let (lookups, hits) = (
            cache["lookups"].as_u64().unwrap_or(0),
            cache["hits"].as_u64().unwrap_or(0),
        );
        let rate = if lookups == 0 {
            0.0
        } else {
            100.0 * hits as f64 / lookups as f64
        };
        out.push_str(&format!(
            "result cache: entries {}  lookups {lookups}  hits {hits} ({rate:.0} %)  withdrawn {}  disputes {}\n",
            cache["entries"], cache["withdrawn"], cache["disputes"]
        ));
    }
    for t in v["toolchains"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "toolchain {}  {}  {}  hosts {}\n",
            clean(&t["id"]),
            clean(&t["version"]),
            clean(&t["target"]),
            t["hosts"]
        ));
    }
    for b in v["blacklist"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "blacklisted {}  since {}  {}\n",
            clean(&b["id"]),
            b["since"],
            clean(&b["reason"])
        ));
    }
    for e in v["recent_events"].as_array().into_iter().flatten().take(20) {
        out.push_str(&format!("event {}  {}\n", e["unix"], clean(&e["text"])));
    }
    out
}
