//! dportage: a distcc 3.4-compatible client and server in Rust.
//!
//! The pure core (`protocol`, `hosts`, `args`) never touches sockets, processes or
//! files; `client` and `server` own those edges and depend on the core, never on
//! each other.

pub mod adversary;
pub mod args;
pub mod canonical;
pub mod client;
pub mod demo;
pub mod exitcode;
pub mod fingerprint;
pub mod hosts;
pub mod logging;
pub mod network;
pub mod protocol;
pub mod server;
pub mod verify;
pub mod wanproxy;
