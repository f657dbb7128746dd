//! The shared compile network: the coordinator (HTTP, durable store, selection,
//! blacklist, status page), daemon heartbeats, identity keys, and the
//! environment printer behind `dportage` / `dportage CMD…`.
//!
//! # The coordinator's HTTP API (full text: `docs/coordinator-api.md`)
//!
//! JSON over HTTP/1.1. Every `/v1/*` request is signed with the caller's
//! Ed25519 key ([`auth`]: headers `X-Dportage-Key`, `-Time`, `-Nonce`,
//! `-Signature` over method, path, time, nonce and the blake3 of the body);
//! timestamps outside ±5 min and reused nonces are refused. Bodies are limited
//! to 64 KiB (413), malformed JSON is 400, errors are `{"error", "code"}`.
//!
//! | method, path | who | what |
//! |---|---|---|
//! | `POST /v1/heartbeat` | a daemon | [`api::Heartbeat`] → [`api::HeartbeatAck`]; the first one registers the identity durably |
//! | `POST /v1/hosts` | a member | [`api::HostsRequest`] → [`api::HostsResponse`] |
//! | `POST /v1/link` | a person | [`api::LinkRequest`] (a daemon's membership token) → [`api::LinkResponse`] |
//! | `POST /v1/whoami` | anyone signed | → [`api::WhoamiResponse`] |
//! | `POST /v1/report` | a member | [`api::MismatchReport`] → [`api::ReportAck`] (after it is durable) |
//! | `GET /v1/admin/blacklist` | an `--admin-key` | → [`api::BlacklistResponse`] |
//! | `POST /v1/admin/blacklist/lift` | an `--admin-key` | [`api::LiftRequest`] → [`api::LiftResponse`] |
//! | `GET /` | anyone | HTML status page |
//! | `GET /metrics` | anyone | Prometheus text |
//! | `GET /healthz` | anyone | `ok` |
//!
//! # For the other modules
//!
//! * The server (`dportage serve --coordinator URL [--advertise HOST:PORT]
//!   [--heartbeat-interval SECS]`): build a [`heartbeat::HeartbeatConfig`]
//!   (`HeartbeatConfig::new(url, port, jobs)`, then set `advertise`, `interval`
//!   and, if wanted, `compilers`) and spawn [`heartbeat::run`]`(cfg, shutdown)`
//!   inside the tokio runtime; it heartbeats until `shutdown` completes. Or
//!   keep the handle of [`heartbeat::spawn_heartbeat`] (dropping it stops).
//! * The client, for its pending mismatch records: [`client::send_reports_blocking`]
//!   (or the async [`client::send_reports`]) with [`api::MismatchReport`]s, one
//!   result per report sent; [`api::host_addr_of_entry`] turns a host entry
//!   (`HOST:PORT/N,lzo`) into the `host_addr` to report. The URL is
//!   `$DPORTAGE_COORDINATOR`.
//! * Tests and benchmarks: [`server::Coordinator::bind`] runs a coordinator in
//!   process; [`client::CoordinatorClient`] speaks to one.
//!
//! # Membership across users
//!
//! A daemon running as a service user publishes a signed membership token
//! (`membership.json`, mode 0640) in its `$DPORTAGE_DIR`; a person's `dportage`
//! presents it once (`POST /v1/link`) and is then linked to the daemon's owner
//! group durably. `DPORTAGE_DIR` pointing both at one directory also works (one
//! identity). Details: `docs/coordinator-api.md`.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod envprint;
pub mod heartbeat;
pub mod identity;
pub mod pool;
pub mod server;
mod status;
pub mod store;

use std::ffi::OsString;
use std::path::PathBuf;

pub use client::{
    send_report, send_report_blocking, send_reports, send_reports_blocking, CoordinatorClient,
};
pub use heartbeat::{
    prepare_heartbeat, spawn_heartbeat, spawn_prepared_heartbeat, HeartbeatConfig, HeartbeatHandle,
    HeartbeatStatus, PreparedHeartbeat,
};
pub use identity::{dportage_dir, Identity, IdentityId};
pub use server::{Coordinator, CoordinatorConfig};

/// Errors of the network layer's client side (identity files, talking to a
/// coordinator, probing compilers).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: {why}; move the file away to create a new identity (you will be a new member)"
    )]
    BadKeyFile { path: PathBuf, why: String },
    #[error("coordinator URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the coordinator at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("coordinator {url} refused ({status} {code}): {message}")]
    Api {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("coordinator {url} sent an unreadable answer: {why}")]
    BadResponse { url: String, why: String },
    #[error(transparent)]
    Fingerprint(#[from] crate::fingerprint::FingerprintError),
    #[error("{0}")]
    Usage(String),
}

impl NetworkError {
    pub(crate) fn io(what: String, source: std::io::Error) -> Self {
        NetworkError::Io { what, source }
    }
}

/// `dportage coordinator ARGS…`.
pub fn coordinator_main(args: Vec<OsString>) -> i32 {
    cli::coordinator_main(args)
}

/// `dportage [--coordinator URL] [--shell sh|csh|fish]` (print the environment) and
/// `dportage [OPTIONS] CMD ARGS…` (run CMD in it).
pub fn env_main(args: Vec<OsString>) -> i32 {
    envprint::env_main(args)
}
