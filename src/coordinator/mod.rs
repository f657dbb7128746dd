//! The coordinator role (`dportage coordinator`): a small HTTP service that
//! keeps who is alive (soft state, rebuilt from heartbeats), who owns what and
//! who is blacklisted (durable, SQLite), hands host lists to members and
//! decides on mismatch reports. Its API types and request signing are the
//! network contract (`crate::network`); nothing outside this folder imports it
//! except `main.rs`, the demo and tests.
//!
//! * [`service`] runs it: [`Coordinator`] (bind, accept loop, sweeper, store
//!   watcher) and [`CoordinatorError`]; [`config`] says how ([`CoordinatorConfig`]).
//! * `state` is what every request shares: pool, store, auth caches, counters, events.
//! * `http` reads signed requests and writes responses and `ApiError`s.
//! * `routes` holds the route table and one file per endpoint group (heartbeat,
//!   hosts, link + whoami, report, admin); `status` is the HTML page and
//!   `metrics_page` the `/metrics` page.
//! * `per_address` caps connections per client address; [`quota`] holds the
//!   per-identity token buckets (requests, heartbeats, reports) and the
//!   per-network ones for new host identities.
//! * `handed_out` remembers which hosts each member was given lately: reports
//!   may name only those.
//! * `challenger` sends hosts challenge jobs at their advertised addresses
//!   and records the outcome: a host is listed only while it passes.
//! * [`pool`] keeps liveness and selects hosts (pure).
//! * [`store`] keeps the durable state: identities, links, reports, the
//!   blacklist (identities, their addresses, whole networks) and each host's
//!   standing record (`trust::standing::HostRecord`).
//! * `units` reads and writes spans of time (`14d`, `4/day`).
//! * `adjudicator` is the task deciding disputes by re-running their evidence
//!   (`trust::adjudication`); `disputes` holds what is pending (in memory),
//!   its counters and the evidence files.
//! * [`cache_index`] is the result cache's index (issue 16, pure): claims
//!   waiting for agreement, entries, their holders and withdrawals; the
//!   `routes` take claims, lookups, disputes and audits, the `adjudicator`
//!   decides cache disputes too.
//! * [`cli`] is `dportage coordinator …` and its admin commands.

mod adjudicator;
pub mod cache_index;
mod challenger;
pub mod cli;
pub mod config;
mod disputes;
mod handed_out;
mod http;
mod metrics_page;
mod per_address;
pub mod pool;
pub mod quota;
mod routes;
pub mod service;
mod state;
mod status;
pub mod store;
mod units;

use std::ffi::OsString;

pub use config::CoordinatorConfig;
pub use service::{Coordinator, CoordinatorError};

/// `dportage coordinator ARGS…`.
pub fn coordinator_main(args: Vec<OsString>) -> i32 {
    cli::coordinator_main(args)
}
