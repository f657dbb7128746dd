//! [`CoordinatorConfig`]: everything `dportage coordinator` can be told. Its
//! own file because both the service and the shared state hold it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::store::BlacklistRule;
use crate::network::identity::IdentityId;

/// Everything `dportage coordinator` can be told.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A host not heard from for this long leaves the pool.
    pub expiry: Duration,
    /// Keys allowed to use `/v1/admin/*`.
    pub admin_keys: Vec<IdentityId>,
    /// Hosts per job, told to clients.
    pub redundancy: u32,
    /// Limit for receiving a request's headers, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Limit for receiving a request's body.
    pub body_timeout: Duration,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// New identities accepted per network (/24, /48) per hour.
    pub registrations_per_network_per_hour: u32,
    pub blacklist_rule: BlacklistRule,
    /// Most nonces remembered (bounds memory under a flood of valid requests).
    pub nonce_cache_cap: usize,
}

impl CoordinatorConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            expiry: Duration::from_secs(600),
            admin_keys: Vec::new(),
            redundancy: 2,
            header_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(10),
            max_connections: 8192,
            registrations_per_network_per_hour: 256,
            blacklist_rule: BlacklistRule::default(),
            nonce_cache_cap: 20_000_000,
        }
    }
}
