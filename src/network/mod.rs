//! The network contract: what the client, the server (its heartbeat agent), the
//! coordinator and member tooling agree on. API types ([`api`]), request
//! signing ([`auth`]), identities and membership tokens ([`identity`]), the
//! clock signatures are stamped with ([`clock`]), the host-selection rule
//! ([`selection`]) and a signed HTTP caller ([`caller`]). Roles sit above this
//! module; it imports none of them.
//!
//! # The coordinator's HTTP API (full text: `docs/coordinator-api.md`)
//!
//! JSON over HTTP/1.1 (https: [`tls`]). Every `/v1/*` request is signed with
//! the caller's Ed25519 key ([`auth`]: headers `X-Dportage-Key`,
//! `-Coordinator`, `-Time`, `-Nonce`, `-Signature` over the coordinator's key,
//! method, path, time, nonce and the blake3 of the body);
//! timestamps outside ±5 min and reused nonces are refused. Bodies are limited
//! to 64 KiB (413; an evidence upload to [`api::MAX_EVIDENCE_BYTES`]),
//! malformed JSON is 400, errors are `{"error", "code"}`.
//!
//! | method, path | who | what |
//! |---|---|---|
//! | `POST /v1/heartbeat` | a daemon | [`api::Heartbeat`] → [`api::HeartbeatAck`]; the first one registers the identity durably |
//! | `POST /v1/hosts` | a member | [`api::HostsRequest`] → [`api::SignedHostList`] (a [`api::HostsResponse`] signed by the coordinator's key; see [`host_list`]) |
//! | `POST /v1/link` | a person | [`api::LinkRequest`] (a daemon's membership token) → [`api::LinkResponse`] |
//! | `POST /v1/whoami` | anyone signed | → [`api::WhoamiResponse`] |
//! | `POST /v1/report` | a member | [`api::MismatchReport`] → [`api::ReportAck`] (after it is durable); `evidence_wanted` asks for the input |
//! | `PUT /v1/evidence/<input_hash>` | a member whose report asked for it | zstd of the preprocessed input (≤ [`api::MAX_EVIDENCE_BYTES`], not JSON; its blake3 after decompression must be `input_hash`) → [`api::EvidenceAck`] |
//! | `GET /v1/admin/blacklist` | an `--admin-key` | → [`api::BlacklistResponse`] |
//! | `POST /v1/admin/blacklist/lift` | an `--admin-key` | [`api::LiftRequest`] → [`api::LiftResponse`] |
//! | `POST /v1/admin/blacklist/lift-network` | an `--admin-key` | [`api::LiftNetworkRequest`] → [`api::LiftNetworkResponse`] |
//! | `POST /v1/admin/vouch`, `/v1/admin/unvouch` | an `--admin-key` | [`api::VouchRequest`] → [`api::VouchResponse`] |
//! | `GET /` | anyone | HTML status page |
//! | `GET /metrics` | anyone | Prometheus text |
//! | `GET /healthz` | anyone | `ok` |
//! | `GET /v1/coordinator-key?challenge=HEX` | anyone | [`api::CoordinatorKeyProof`]: the key signed requests name |
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
pub mod cache_api;
pub mod caller;
pub mod clock;
pub mod host_list;
pub mod identity;
pub mod selection;
pub mod ticket;
pub mod tls;

use std::path::PathBuf;

pub use caller::{
    send_report, send_report_blocking, send_reports, send_reports_blocking, CoordinatorClient,
};
pub use clock::unix_now;
pub use identity::{dportage_dir, Identity, IdentityId};

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
    #[error(
        "coordinator {url} presents key {got}, but {expected} is expected ({}): it is not the \
         coordinator you meant (a wrong URL, or someone in the path). If its operator really \
         changed its key, check the new one with them, then {}",
        key_source.what(),
        key_source.fix()
    )]
    CoordinatorKeyMismatch {
        url: String,
        got: IdentityId,
        expected: IdentityId,
        key_source: caller::KeySource,
    },
    #[error("coordinator {url} sent an unreadable answer: {why}")]
    BadResponse { url: String, why: String },
    #[error(transparent)]
    Fingerprint(#[from] crate::probe::FingerprintError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("{0}")]
    Usage(String),
}

impl NetworkError {
    pub(crate) fn io(what: String, source: std::io::Error) -> Self {
        NetworkError::Io { what, source }
    }
}
