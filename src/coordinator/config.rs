//! [`CoordinatorConfig`]: everything `dportage coordinator` can be told. Its
//! own file because both the service and the shared state hold it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::quota::Rate;
use crate::network::identity::IdentityId;
use crate::trust::standing::StandingRules;

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
    /// How long the tickets handed out with a host list last.
    pub ticket_lifetime: Duration,
    /// Limit for receiving a request's headers, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Limit for receiving a request's body.
    pub body_timeout: Duration,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// New host identities per network (/24, IPv6 /48).
    pub new_hosts_per_network: Rate,
    /// New host identities per wide network (/16, IPv6 /32).
    pub new_hosts_per_wide_network: Rate,
    /// What makes a host established.
    pub standing_rules: StandingRules,
    /// Blacklisted identities in one network (/24, /48) after which no new
    /// identity registers from it; 0: networks are never blacklisted.
    pub network_strikes: u32,
    /// How long a member may report a host after it was handed that host.
    pub report_window: Duration,
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
    /// Cache lookups per identity (one per job of a build), counted instead
    /// of `requests_per_key`.
    pub lookups_per_key: Rate,
    /// Nonces remembered per identity: one key cannot fill the cache.
    pub max_nonces_per_key: usize,
    /// Nonces remembered per network (/24, IPv6 /48): one machine minting
    /// fresh keys cannot fill the cache either.
    pub max_nonces_per_network: usize,
    /// Largest report body accepted (bytes).
    pub max_report_bytes: usize,
    /// Send hosts challenge jobs and list only those that pass
    /// (`--challenges on|off`). Off only for private networks and tests
    /// whose hosts the coordinator cannot reach: every host is then listed.
    pub challenges: bool,
    /// Mean time between a host's challenges (exponentially distributed;
    /// never more often than a quarter of it). The first is at registration.
    pub challenge_interval: Duration,
    /// Bounds each step of a challenge job (connect, send, first reply byte;
    /// four times over the whole reply).
    pub challenge_timeout: Duration,
    /// Unanimous referees an adjudication needs (1..=5).
    pub referees: usize,
    /// Bytes of evidence kept under `data_dir/evidence` (oldest go first).
    pub evidence_quota: u64,
    /// Referees differ from the parties by owner only (one network in a box).
    pub referees_any_network: bool,
    /// How long a referee may take over a re-run job.
    pub referee_timeout: Duration,
    /// Serve https with this PEM certificate chain and private key
    /// (`--tls-cert`, `--tls-key`); `None`: plain http (loopback, or behind a
    /// TLS-terminating proxy).
    pub tls: Option<TlsFiles>,
    /// Reverse proxies whose `X-Forwarded-For` names the real client
    /// (`--trusted-proxy`): per-address limits, network grouping and
    /// advertised addresses then see the client, not the proxy. Their own
    /// connections are not limited per address (they carry everyone's).
    pub trusted_proxies: Vec<IpAddr>,
}

/// The coordinator's certificate chain and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Defaults, shared with the command line's.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// A real contributor adds a few machines, and rarely more than a handful a
/// day from one network; an attacker who needs hundreds of identities needs
/// many networks and weeks (500 hosts: 125 /24s for a day, or one /24 for
/// four months).
pub const DEFAULT_NEW_HOSTS_PER_NETWORK: Rate = Rate::per_day(4);
/// A provider's block (/16, IPv6 /32): eight /24s' worth a day, so renting
/// addresses in one data centre does not multiply the per-/24 allowance.
pub const DEFAULT_NEW_HOSTS_PER_WIDE_NETWORK: Rate = Rate::per_day(32);
/// Two blacklisted hosts in one /24 are a pattern, not bad luck.
pub const DEFAULT_NETWORK_STRIKES: u32 = 2;
/// A member uploads its evidence at its next run; a day covers a night.
pub const DEFAULT_REPORT_WINDOW: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Two a second sustained, a minute's worth at once: far above what a
/// daemon (a heartbeat every few minutes) or a member (a host list per
/// `dportage` run) needs.
pub const DEFAULT_REQUESTS_PER_KEY_PER_MINUTE: u32 = 120;
/// A member's build looks up every job: fifty a second sustained covers
/// `-j64` of one-second compiles; a lookup costs a hash-map probe and two
/// signatures.
pub const DEFAULT_LOOKUPS_PER_KEY_PER_MINUTE: u32 = 3000;
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
/// Four challenges a day on average: cheap for a host, and a host that stops
/// serving drops out within about half a day (two failures in a row).
pub const DEFAULT_CHALLENGE_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// A challenge is a small translation unit: a minute covers a busy host.
pub const DEFAULT_CHALLENGE_TIMEOUT: Duration = Duration::from_secs(60);

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
            ticket_lifetime: Duration::from_secs(crate::network::ticket::DEFAULT_LIFETIME_SECS),
            header_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            new_hosts_per_network: DEFAULT_NEW_HOSTS_PER_NETWORK,
            new_hosts_per_wide_network: DEFAULT_NEW_HOSTS_PER_WIDE_NETWORK,
            standing_rules: StandingRules::default(),
            network_strikes: DEFAULT_NETWORK_STRIKES,
            report_window: DEFAULT_REPORT_WINDOW,
            nonce_cache_cap: 20_000_000,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            requests_per_key: Rate::per_minute(DEFAULT_REQUESTS_PER_KEY_PER_MINUTE),
            heartbeats_per_key: Rate::per_minute(DEFAULT_HEARTBEATS_PER_KEY_PER_MINUTE),
            reports_per_key: Rate::per_hour(DEFAULT_REPORTS_PER_KEY_PER_HOUR),
            lookups_per_key: Rate::per_minute(DEFAULT_LOOKUPS_PER_KEY_PER_MINUTE),
            max_nonces_per_key: nonces_per_key_for(
                DEFAULT_REQUESTS_PER_KEY_PER_MINUTE + DEFAULT_LOOKUPS_PER_KEY_PER_MINUTE,
            ),
            max_report_bytes: DEFAULT_MAX_REPORT_BYTES,
            max_nonces_per_network: DEFAULT_MAX_NONCES_PER_NETWORK,
            challenges: true,
            challenge_interval: DEFAULT_CHALLENGE_INTERVAL,
            challenge_timeout: DEFAULT_CHALLENGE_TIMEOUT,
            referees: crate::trust::adjudication::REFEREES,
            evidence_quota: 1 << 30,
            referee_timeout: Duration::from_secs(120),
            referees_any_network: false,
            tls: None,
            trusted_proxies: Vec::new(),
        }
    }
}
