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
