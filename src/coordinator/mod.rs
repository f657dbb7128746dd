//! The coordinator role (`dportage coordinator`): a small HTTP service that
//! keeps who is alive (soft state, rebuilt from heartbeats), who owns what and
//! who is blacklisted (durable, SQLite), hands host lists to members and
//! decides on mismatch reports. Its API types and request signing are the
//! network contract (`crate::network`); nothing outside this folder imports it
//! except `main.rs`, the demo and tests.
//!
//! * [`service`]: configuration, the accept loop, routing and the handlers.
//! * [`pool`]: liveness and host selection (pure).
//! * [`store`]: the durable state.
//! * [`status`]: the HTML status page and `/metrics`.
//! * [`cli`]: `dportage coordinator …` and its admin commands.

pub mod cli;
pub mod pool;
pub mod service;
mod status;
pub mod store;

use std::ffi::OsString;

pub use service::{Coordinator, CoordinatorConfig};

/// `dportage coordinator ARGS…`.
pub fn coordinator_main(args: Vec<OsString>) -> i32 {
    cli::coordinator_main(args)
}
