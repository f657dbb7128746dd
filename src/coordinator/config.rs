//! [`CoordinatorConfig`]: everything `dportage coordinator` can be told. Its
//! own file because both the service and the shared state hold it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::quota::Rate;
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
    /// Connections one client address (IPv4 address, IPv6 /64) may hold at
    /// once; more are closed at accept.
    pub max_connections_per_address: usize,
    /// Signed requests per identity (nonce admission), any endpoint.
    pub requests_per_key: Rate,
    /// Heartbeats per identity.
    pub heartbeats_per_key: Rate,
    /// Mismatch reports per identity (each one a durable write).
    pub reports_per_key: Rate,
    /// Nonces remembered per identity: one key cannot fill the cache.
    pub max_nonces_per_key: usize,
    /// Nonces remembered per network (/24, IPv6 /48): one machine minting
    /// fresh keys cannot fill the cache either.
    pub max_nonces_per_network: usize,
    /// Largest report body accepted (bytes).
    pub max_report_bytes: usize,
}

/// Defaults, shared with the command line's.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Two a second sustained, a minute's worth at once: far above what a
/// daemon (a heartbeat every few minutes) or a member (a host list per
/// `dportage` run) needs.
pub const DEFAULT_REQUESTS_PER_KEY_PER_MINUTE: u32 = 120;
/// A daemon heartbeats every few minutes; six a minute leaves room for restarts.
pub const DEFAULT_HEARTBEATS_PER_KEY_PER_MINUTE: u32 = 6;
/// A member that caught a liar reports each lost vote; sixty an hour drains
/// a backlog within hours while bounding what one key adds to the database
/// (≤ 60 × the report size limit per hour).
pub const DEFAULT_REPORTS_PER_KEY_PER_HOUR: u32 = 60;
/// A real report is a compile command line (at most 512 arguments) and up to
/// 16 result hashes: a few KiB, rarely more than 8. 16 KiB leaves room for
/// long include-path lists.
pub const DEFAULT_MAX_REPORT_BYTES: usize = 16 * 1024;
/// 64 Ki nonces (about 3 MB) per network within 616 s: about 100 signed
/// requests a second from one /24, far above a NAT full of members.
pub const DEFAULT_MAX_NONCES_PER_NETWORK: usize = 65_536;

/// Nonces per key that a key sending at its full request rate needs: its
/// burst plus its rate over a nonce's lifetime, rounded up generously.
pub fn nonces_per_key_for(requests_per_minute: u32) -> usize {
    let lifetime = crate::network::auth::NONCE_LIFETIME_SECS as usize;
    let n = requests_per_minute as usize;
    (n + n * lifetime / 60).next_power_of_two().max(256)
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
            registrations_per_network_per_hour: 256,
            blacklist_rule: BlacklistRule::default(),
            nonce_cache_cap: 20_000_000,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            requests_per_key: Rate::per_minute(DEFAULT_REQUESTS_PER_KEY_PER_MINUTE),
            heartbeats_per_key: Rate::per_minute(DEFAULT_HEARTBEATS_PER_KEY_PER_MINUTE),
            reports_per_key: Rate::per_hour(DEFAULT_REPORTS_PER_KEY_PER_HOUR),
            max_nonces_per_key: nonces_per_key_for(DEFAULT_REQUESTS_PER_KEY_PER_MINUTE),
            max_report_bytes: DEFAULT_MAX_REPORT_BYTES,
            max_nonces_per_network: DEFAULT_MAX_NONCES_PER_NETWORK,
        }
    }
}
