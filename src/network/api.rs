//! The coordinator's JSON messages and their bounds. Pure (serde + checks); the
//! HTTP surface is described in `docs/coordinator-api.md`.

use serde::{Deserialize, Serialize};

use super::identity::{IdentityId, MembershipToken};
use crate::fingerprint::{is_fingerprint_id, Toolchain};
use crate::trust::standing::Standing;

/// What an older peer that sends no standing means: nothing earned yet.
fn probationary() -> Standing {
    Standing::Probationary
}

/// Largest request body the coordinator reads (larger → 413).
pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_TOOLCHAINS: usize = 32;
pub const MAX_FINGERPRINTS_PER_REQUEST: usize = 8;
pub const MAX_HOSTS_PER_RESPONSE: usize = 64;
pub const MAX_CAPACITY: u32 = 1024;
pub const MAX_REPORT_ARGS: usize = 512;
pub const MAX_REPORT_RESULTS: usize = 16;
pub const MAX_TZ_SECS: i32 = 14 * 3600;
/// Largest body of `PUT /v1/evidence/<input_hash>` (the zstd-compressed
/// preprocessed input of a disputed job): the one route whose body may exceed
/// [`MAX_BODY`]. A client does not keep (so never sends) a larger one.
pub const MAX_EVIDENCE_BYTES: usize = 4 * 1024 * 1024;
/// Largest preprocessed input an evidence upload may decompress to: the
/// coordinator stops decompressing beyond it (a zstd bomb is refused, 413), and
/// a client does not keep a larger input.
pub const MAX_EVIDENCE_INPUT: usize = 64 * 1024 * 1024;
/// The path of the evidence route, followed by the input hash.
pub const EVIDENCE_PATH_PREFIX: &str = "/v1/evidence/";

/// `POST /v1/heartbeat`: a daemon says it is alive and what it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Address to advertise. Absent or empty: the address the request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// distccd's TCP port.
    pub port: u16,
    pub toolchains: Vec<Toolchain>,
    pub libc: String,
    pub arch: String,
    pub tz_offset_secs: i32,
    /// Concurrent jobs accepted (distccd `--jobs`).
    pub capacity: u32,
    /// Speaks distcc protocol 2 (`,lzo`).
    pub lzo: bool,
    /// Serves clients outside its `--allow` that present the coordinator's
    /// tickets (`network::ticket`); absent from older daemons.
    #[serde(default)]
    pub tickets: bool,
    /// Free text: the daemon's software and version.
    #[serde(default)]
    pub software: String,
    /// Jobs run in the sandbox (Landlock and seccomp): a job cannot read the
    /// host's files. A daemon without it (a kernel without Landlock, whose
    /// operator accepted `--sandbox best-effort`) says false, and members do
    /// not get it unless they ask. Absent (older daemons): false.
    #[serde(default)]
    pub confined: bool,
}

/// Why a message from a peer is refused. The coordinator sends the text back
/// as a 400, so it names the field (and the value, where it is short) the
/// sender has to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiValidationError {
    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field} is empty")]
    Empty { field: String },
    #[error("{field} contains control characters")]
    ControlCharacters { field: String },
    #[error("host {host:?} must be 1 to 253 characters")]
    HostLength { host: String },
    #[error("host {host:?} is neither an IP address nor a DNS name")]
    NotAHost { host: String },
    #[error("port must not be 0")]
    PortZero,
    #[error("toolchains is empty: a host must serve at least one compiler")]
    NoToolchains,
    #[error("fingerprints is empty: name the toolchain(s) you compile with")]
    NoFingerprints,
    #[error("{count} {what}; the limit is {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{field} is not 64 lowercase hex digits")]
    NotFingerprint { field: String },
    #[error("{field} must be 1 to 128 hex digits")]
    NotHash { field: String },
    #[error("tz_offset_secs {0} is beyond ±14 h")]
    TimeZone(i32),
    #[error("capacity {0} must be 1..={MAX_CAPACITY}")]
    Capacity(u32),
    #[error("results must have 1 to {MAX_REPORT_RESULTS} entries, not {0}")]
    ResultCount(usize),
}

fn check_text(
    field: &str,
    s: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), ApiValidationError> {
    if s.len() > max {
        return Err(ApiValidationError::TooLong {
            field: field.to_owned(),
            len: s.len(),
            max,
        });
    }
    if !allow_empty && s.trim().is_empty() {
        return Err(ApiValidationError::Empty {
            field: field.to_owned(),
        });
    }
    if s.chars().any(char::is_control) {
        return Err(ApiValidationError::ControlCharacters {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// A host name or IP literal as distcc's host list can carry it.
pub fn check_host_name(s: &str) -> Result<(), ApiValidationError> {
    if s.is_empty() || s.len() > 253 {
        return Err(ApiValidationError::HostLength { host: s.to_owned() });
    }
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(ApiValidationError::NotAHost { host: s.to_owned() })
    }
}

impl Heartbeat {
    pub fn validate(&self) -> Result<(), ApiValidationError> {
        if let Some(h) = self.host.as_deref().filter(|h| !h.is_empty()) {
            check_host_name(h)?;
        }
        if self.port == 0 {
            return Err(ApiValidationError::PortZero);
        }
        if self.toolchains.is_empty() {
            return Err(ApiValidationError::NoToolchains);
        }
        if self.toolchains.len() > MAX_TOOLCHAINS {
            return Err(ApiValidationError::TooMany {
                what: "toolchains",
                count: self.toolchains.len(),
                max: MAX_TOOLCHAINS,
            });
        }
        for (i, t) in self.toolchains.iter().enumerate() {
            check_text(&format!("toolchains[{i}].name"), &t.name, 128, false)?;
            check_text(&format!("toolchains[{i}].version"), &t.version, 256, false)?;
            check_text(&format!("toolchains[{i}].target"), &t.target, 128, false)?;
            if !is_fingerprint_id(&t.id) {
                return Err(ApiValidationError::NotFingerprint {
                    field: format!("toolchains[{i}].id"),
                });
            }
            if !is_fingerprint_id(&t.probe_hash) {
                return Err(ApiValidationError::NotFingerprint {
                    field: format!("toolchains[{i}].probe_hash"),
                });
            }
        }
        check_text("libc", &self.libc, 64, true)?;
        check_text("arch", &self.arch, 32, false)?;
        check_text("software", &self.software, 128, true)?;
        check_tz(self.tz_offset_secs)?;
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(ApiValidationError::Capacity(self.capacity));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub id: IdentityId,
    /// The host leaves the pool after this long without a heartbeat.
    pub expiry_secs: u64,
    /// Send the next heartbeat within this many seconds to stay listed.
    pub heartbeat_within_secs: u64,
    /// Live hosts in the pool.
    pub pool_size: usize,
    /// The address clients are given for this host.
    pub advertised: String,
    /// The coordinator's public key, which signs the tickets this daemon is
    /// to accept (pinned at first sight); absent from older coordinators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<IdentityId>,
}

/// `POST /v1/hosts`: a member asks for hosts compatible with its compilers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsRequest {
    /// Toolchain fingerprint ids; every returned host serves all of them.
    pub fingerprints: Vec<String>,
    pub tz_offset_secs: i32,
    /// How many candidates to return (default 32, at most 64). The client ranks
    /// them by its own latency measurements and keeps 10.
    #[serde(default)]
    pub max: Option<u32>,
    /// Also list hosts that run jobs unconfined (no Landlock): they can be
    /// made to read their own files by a job, which harms their owner, not
    /// this member; off by default so that nobody's machine is used that way
    /// unless someone asks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_unconfined: bool,
}

impl HostsRequest {
    pub fn validate(&self) -> Result<(), ApiValidationError> {
        if self.fingerprints.is_empty() {
            return Err(ApiValidationError::NoFingerprints);
        }
        if self.fingerprints.len() > MAX_FINGERPRINTS_PER_REQUEST {
            return Err(ApiValidationError::TooMany {
                what: "fingerprints",
                count: self.fingerprints.len(),
                max: MAX_FINGERPRINTS_PER_REQUEST,
            });
        }
        if let Some(f) = self.fingerprints.iter().find(|f| !is_fingerprint_id(f)) {
            // Bounded: at most 8 fingerprints in a 64 KiB body.
            return Err(ApiValidationError::NotFingerprint {
                field: format!("fingerprint {f:?}"),
            });
        }
        check_tz(self.tz_offset_secs)
    }
}

fn check_tz(secs: i32) -> Result<(), ApiValidationError> {
    // Not `abs()`: `i32::MIN.abs()` panics in debug builds and stays
    // negative (so passes) in release ones.
    if secs.unsigned_abs() > MAX_TZ_SECS.unsigned_abs() {
        return Err(ApiValidationError::TimeZone(secs));
    }
    Ok(())
}

/// One host handed to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub id: IdentityId,
    pub host: String,
    pub port: u16,
    pub capacity: u32,
    pub lzo: bool,
    /// Takes a ticket (`TCKT`) before the job: send it one from
    /// [`HostsResponse::tickets`]. Absent from older coordinators.
    #[serde(default)]
    pub tickets: bool,
    pub tz_offset_secs: i32,
    /// Owner group (hosts of one owner are never handed out next to each other).
    pub owner: IdentityId,
    /// The network the host heartbeats from (`a.b.c.0/24`, IPv6 `/48`).
    pub network: String,
    pub arch: String,
    /// `probationary` until verified work over time (or the operator's
    /// vouching) made it `established`; absent from older coordinators.
    /// Probationary hosts are never paired with each other.
    #[serde(default = "probationary")]
    pub standing: Standing,
    /// Runs jobs in the sandbox (see [`Heartbeat::confined`]); absent from
    /// older coordinators, which listed only hosts they took as confined.
    #[serde(default = "confined_by_default")]
    pub confined: bool,
}

fn confined_by_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsResponse {
    /// Candidates: nearest time zone first, then in an order in which
    /// consecutive hosts differ in owner and network. The requester's own hosts
    /// are never included.
    pub hosts: Vec<HostEntry>,
    /// How many hosts each job should go to.
    pub redundancy: u32,
    /// The live daemon that makes the requester a member.
    pub member_via: IdentityId,
    /// The member this list was made for: a list is not transferable.
    #[serde(default = "IdentityId::zero")]
    pub issued_to: IdentityId,
    /// Unix seconds when the coordinator made the list.
    #[serde(default)]
    pub issued_at: u64,
    /// Hex tickets (`network::ticket`) for `issued_to`, one per listed host
    /// that takes them; each names its host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tickets: Vec<String>,
}

/// What `POST /v1/hosts` answers: a [`HostsResponse`] as the exact JSON text
/// the coordinator signed with its key, so that nobody on the path (or in the
/// member's environment) can hand a member a list of their own hosts. The
/// member pins the coordinator's key at first contact
/// (`$DPORTAGE_DIR/coordinator-keys.json`) and its client checks the list
/// before every verified job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHostList {
    /// JSON of a [`HostsResponse`], byte for byte as signed.
    pub list: String,
    /// The coordinator's public key.
    pub coordinator: IdentityId,
    /// ed25519 (hex) over [`SignedHostList::signed_bytes`].
    pub signature: String,
}

/// Why a signed host list is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostListError {
    #[error(
        "the host list is signed by coordinator key {got}, but this member pinned {pinned}: \
         someone may be impersonating the coordinator (if its operator really changed keys, \
         delete its line from coordinator-keys.json in DPORTAGE_DIR)"
    )]
    WrongCoordinator { got: String, pinned: String },
    #[error("the host list's signature does not verify: it was altered on the way")]
    BadSignature,
    #[error("the host list is not valid JSON: {0}")]
    Malformed(String),
    #[error("the host list was issued to {issued_to}, not to this member ({me})")]
    NotMine { issued_to: String, me: String },
    #[error("the host list is {age_secs} s old (limit {max_secs} s): run `dportage` again")]
    Stale { age_secs: u64, max_secs: u64 },
}

/// `GET /v1/coordinator-key?challenge=HEX` (unauthenticated): the
/// coordinator's public key, which every signed request names (see
/// [`super::auth`]), with its signature over the client's fresh challenge (32
/// hex digits): the answer comes from the holder of the key, now. A client
/// pins the key at first contact (or is given it, `--coordinator-key`).
pub const COORDINATOR_KEY_PATH: &str = "/v1/coordinator-key";

/// The answer of [`COORDINATOR_KEY_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorKeyProof {
    pub key: IdentityId,
    /// The client's challenge, echoed.
    pub challenge: String,
    /// ed25519 (hex) over [`CoordinatorKeyProof::signed_bytes`].
    pub signature: String,
}

/// Why a [`CoordinatorKeyProof`] is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProofError {
    #[error("the challenge is not 32 hex digits")]
    BadChallenge,
    #[error("the answer is for another challenge (a replayed answer?)")]
    OtherChallenge,
    #[error("the signature does not verify under the key it names")]
    BadSignature,
}

impl CoordinatorKeyProof {
    pub fn signed_bytes(challenge: &str) -> Vec<u8> {
        let mut out = b"dportage coordinator key v1\n".to_vec();
        out.extend_from_slice(challenge.as_bytes());
        out
    }

    pub fn is_challenge(challenge: &str) -> bool {
        challenge.len() == 32
            && challenge
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// The coordinator's answer to `challenge`.
    pub fn sign(
        coordinator: &super::identity::Identity,
        challenge: &str,
    ) -> Result<Self, KeyProofError> {
        if !Self::is_challenge(challenge) {
            return Err(KeyProofError::BadChallenge);
        }
        Ok(CoordinatorKeyProof {
            key: coordinator.id(),
            challenge: challenge.to_string(),
            signature: hex::encode(coordinator.sign(&Self::signed_bytes(challenge))),
        })
    }

    /// The key, once the answer is for `challenge` and signed by that key.
    pub fn verify(&self, challenge: &str) -> Result<IdentityId, KeyProofError> {
        if self.challenge != challenge {
            return Err(KeyProofError::OtherChallenge);
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.key.0)
            .map_err(|_| KeyProofError::BadSignature)?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig).map_err(|_| KeyProofError::BadSignature)?;
        key.verify_strict(
            &Self::signed_bytes(challenge),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| KeyProofError::BadSignature)?;
        Ok(self.key)
    }
}

/// How long a member's client uses a host list (a long build outlives the
/// environment it started in, so days, not minutes).
pub const HOST_LIST_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

impl SignedHostList {
    pub fn signed_bytes(list: &str) -> Vec<u8> {
        let mut out = b"dportage host list v1\n".to_vec();
        out.extend_from_slice(list.as_bytes());
        out
    }

    /// Sign `list_json` (the JSON of a [`HostsResponse`]) as `coordinator`.
    pub fn sign(coordinator: &super::identity::Identity, list_json: String) -> Self {
        let signature = hex::encode(coordinator.sign(&Self::signed_bytes(&list_json)));
        SignedHostList {
            list: list_json,
            coordinator: coordinator.id(),
            signature,
        }
    }

    /// The list, once its signature verifies under `pinned` (or, when `None`,
    /// under the key it names: only proves it is intact). Neither its owner
    /// nor its age is checked here: see [`HostsResponse::check_for`].
    pub fn open(&self, pinned: Option<&IdentityId>) -> Result<HostsResponse, HostListError> {
        if let Some(pinned) = pinned.filter(|p| **p != self.coordinator) {
            return Err(HostListError::WrongCoordinator {
                got: self.coordinator.to_string(),
                pinned: pinned.to_string(),
            });
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.coordinator.0)
            .map_err(|_| HostListError::BadSignature)?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig).map_err(|_| HostListError::BadSignature)?;
        key.verify_strict(
            &Self::signed_bytes(&self.list),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| HostListError::BadSignature)?;
        serde_json::from_str(&self.list).map_err(|e| HostListError::Malformed(e.to_string()))
    }
}

impl HostsResponse {
    /// Is this list for `me`, and fresh at `now` (unix seconds)?
    pub fn check_for(&self, me: &IdentityId, now: u64) -> Result<(), HostListError> {
        if self.issued_to != *me {
            return Err(HostListError::NotMine {
                issued_to: self.issued_to.to_string(),
                me: me.to_string(),
            });
        }
        let age_secs = now.saturating_sub(self.issued_at);
        if age_secs > HOST_LIST_MAX_AGE_SECS {
            return Err(HostListError::Stale {
                age_secs,
                max_secs: HOST_LIST_MAX_AGE_SECS,
            });
        }
        Ok(())
    }
}

/// `POST /v1/link`: present a daemon's membership token to join its owner group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequest {
    pub token: MembershipToken,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkResponse {
    pub daemon: IdentityId,
    pub owner: IdentityId,
    /// The daemon is live and not blacklisted right now.
    pub member: bool,
}

/// `POST /v1/unlink`: the daemon (or the person) ends a link made with a
/// membership token; the person is no longer in the daemon's owner group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlinkRequest {
    pub person: IdentityId,
    pub daemon: IdentityId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlinkResponse {
    /// False when they were not linked.
    pub unlinked: bool,
}

/// `POST /v1/whoami`: what the coordinator knows about the signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoamiResponse {
    pub id: IdentityId,
    pub owner: IdentityId,
    pub member: bool,
    pub blacklisted: bool,
    pub daemons: Vec<DaemonStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub id: IdentityId,
    pub live: bool,
    pub blacklisted: bool,
    #[serde(default = "probationary")]
    pub standing: Standing,
    /// Has proven service (passed a challenge job at its advertised address,
    /// and not failed the last two). With challenges on (the default) only
    /// such a daemon is listed and makes its owner a member.
    #[serde(default)]
    pub serves: bool,
}

/// One host's answer in a disputed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResultHash {
    /// `HOST:PORT` as in `DISTCC_HOSTS`, or `localhost` for the local arbiter.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<IdentityId>,
    /// blake3 (hex) of what the host returned (object + status).
    pub hash: String,
}

/// `POST /v1/report`: a member says a host returned a wrong result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MismatchReport {
    /// The reported host's identity, when the client knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<IdentityId>,
    /// The reported host as the client dialled it (`HOST:PORT`); used to find
    /// the identity when `host_id` is absent.
    pub host_addr: String,
    /// blake3 (hex) of the preprocessed input.
    pub input_hash: String,
    /// The compiler arguments of the job.
    pub args: Vec<String>,
    /// Every host's result hash (the reported one included).
    pub results: Vec<HostResultHash>,
    /// When the mismatch happened (unix seconds, client clock).
    pub time: u64,
    /// The client's evidence record id (`evidence.jsonl`), for tracing a
    /// report back to its evidence; a resent record is still counted once per
    /// reporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_id: Option<String>,
    /// The fingerprint id ([`crate::fingerprint`], 64 hex) of the toolchain
    /// the job was compiled with, when the client knows it: what the
    /// coordinator's referees must serve to re-run the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
}

/// `HOST:PORT` of a `DISTCC_HOSTS` entry (`HOST:PORT/LIMIT,lzo,cpp`), as
/// the coordinator resolves it; distcc's default port when none is written.
pub fn host_addr_of_entry(entry: &str) -> String {
    let base = entry.split([',', '/']).next().unwrap_or("").trim();
    let has_port = match base.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => base.matches(':').count() == 1,
    };
    if has_port || base.is_empty() {
        base.to_string()
    } else {
        format!("{base}:3632")
    }
}

fn check_hash(field: &str, s: &str) -> Result<(), ApiValidationError> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiValidationError::NotHash {
            field: field.to_owned(),
        });
    }
    Ok(())
}

impl MismatchReport {
    pub fn validate(&self) -> Result<(), ApiValidationError> {
        check_text("host_addr", &self.host_addr, 300, self.host_id.is_some())?;
        if let Some(e) = &self.evidence_id {
            check_text("evidence_id", e, 64, false)?;
        }
        if self
            .toolchain
            .as_deref()
            .is_some_and(|t| !is_fingerprint_id(t))
        {
            return Err(ApiValidationError::NotFingerprint {
                field: "toolchain".to_owned(),
            });
        }
        check_hash("input_hash", &self.input_hash)?;
        if self.args.len() > MAX_REPORT_ARGS {
            return Err(ApiValidationError::TooMany {
                what: "args",
                count: self.args.len(),
                max: MAX_REPORT_ARGS,
            });
        }
        if self.results.is_empty() || self.results.len() > MAX_REPORT_RESULTS {
            return Err(ApiValidationError::ResultCount(self.results.len()));
        }
        for (i, r) in self.results.iter().enumerate() {
            check_text(&format!("results[{i}].host"), &r.host, 300, false)?;
            check_hash(&format!("results[{i}].hash"), &r.hash)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    pub report_id: i64,
    pub host: IdentityId,
    /// Distinct reporter owner groups counted against this host since it was
    /// last lifted.
    pub distinct_reporters: u32,
    /// Distinct networks those reporters reported from.
    pub distinct_networks: u32,
    pub blacklisted: bool,
    /// This reporter had already reported this host for this input: the
    /// report was acknowledged (with the first one's id), not counted again.
    #[serde(default)]
    pub duplicate: bool,
    /// The report counts toward a blacklisting: the reporter's owner group has
    /// an established host. A probationary group's reports are only stored.
    #[serde(default)]
    pub counted: bool,
    /// The coordinator asks for the job's preprocessed input (to adjudicate
    /// the dispute): upload it with `PUT /v1/evidence/<input_hash>`. Absent
    /// (older coordinators): not wanted.
    #[serde(default)]
    pub evidence_wanted: bool,
}

/// The answer to `PUT /v1/evidence/<input_hash>`, whose body is the zstd
/// compression of a disputed job's preprocessed input (at most
/// [`MAX_EVIDENCE_BYTES`], decompressing to at most [`MAX_EVIDENCE_INPUT`]
/// bytes whose blake3 is `input_hash`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceAck {
    pub input_hash: String,
    /// The coordinator holds the input now (stored durably by this upload or
    /// an earlier one): the client may delete its copy.
    pub stored: bool,
}

/// Is `s` an input hash as the evidence route takes it: a blake3 hex digest
/// (64 lowercase hex digits)?
pub fn is_input_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `/v1/evidence/<input_hash>`.
pub fn evidence_path(input_hash: &str) -> String {
    format!("{EVIDENCE_PATH_PREFIX}{input_hash}")
}

/// The result hash of a report ([`HostResultHash::hash`]): blake3 (hex) of
/// `"<object hex>:<wait status>"`, what a vote compares. Client and
/// coordinator both compute it with this function, so a referee's result
/// ([`result_hash_of`]) compares with a reported one as text.
pub fn result_hash(object_hex: &str, status: u32) -> String {
    blake3::hash(format!("{object_hex}:{status}").as_bytes())
        .to_hex()
        .to_string()
}

/// [`result_hash`] of a result digest (object and status; the diagnostics do
/// not vote).
pub fn result_hash_of(digest: &crate::verify::ResultDigest) -> String {
    result_hash(&digest.object_hex(), digest.status)
}

/// `POST /v1/admin/blacklist/lift`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiftRequest {
    pub id: IdentityId,
}

/// The operator blacklists a host by hand (`POST /v1/admin/blacklist/add`):
/// the operator's own decision, with its reason kept in the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlacklistAddRequest {
    pub id: IdentityId,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlacklistAddResponse {
    pub id: IdentityId,
    /// False when it was blacklisted already.
    pub added: bool,
    /// The addresses the entry covers (the host's live ones).
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiftResponse {
    pub id: IdentityId,
    /// False when the identity was not blacklisted.
    pub lifted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlacklistEntry {
    pub id: IdentityId,
    /// Unix seconds.
    pub since: u64,
    pub reason: String,
    /// The addresses the entry also covers (the IP the host advertised, or
    /// its name and the IP it heartbeated from): no new identity registers
    /// from them and no heartbeat may advertise them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The network (/24, IPv6 /48) the host heartbeated from, where its
    /// blacklisting counts as a strike.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
}

/// A network (/24, IPv6 /48) in which too many hosts were blacklisted: no
/// new identity registers from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkBlacklistEntry {
    /// `a.b.c.0/24` or `x:y:z::/48`.
    pub network: String,
    /// Unix seconds.
    pub since: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlacklistResponse {
    pub entries: Vec<BlacklistEntry>,
    #[serde(default)]
    pub networks: Vec<NetworkBlacklistEntry>,
}

/// `POST /v1/admin/blacklist/lift-network`: a network, or any address in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiftNetworkRequest {
    pub network: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiftNetworkResponse {
    /// The network as the coordinator writes it (`a.b.c.0/24`).
    pub network: String,
    /// False when the network was not blacklisted.
    pub lifted: bool,
}

/// `POST /v1/admin/vouch` and `POST /v1/admin/unvouch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VouchRequest {
    pub id: IdentityId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VouchResponse {
    pub id: IdentityId,
    pub vouched: bool,
    /// The host's standing now.
    pub standing: Standing,
}

/// Every error response: `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Machine-readable: `bad_request`, `unauthenticated`, `not_member`,
    /// `blacklisted`, `not_admin`, `not_found`, `not_wanted` (409: evidence
    /// nobody asked for), `method_not_allowed`, `too_large`, `timeout`,
    /// `overloaded`, `internal`, `unknown_host`, `not_a_host`,
    /// `not_handed_out`, `too_many_registrations`, … (the full list:
    /// `docs/coordinator-api.md`).
    pub code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc() -> Toolchain {
        Toolchain {
            name: "gcc".into(),
            version: "gcc (Debian 12.2.0-14) 12.2.0".into(),
            target: "x86_64-linux-gnu".into(),
            probe_hash: "a".repeat(64),
            id: "b".repeat(64),
        }
    }

    pub(crate) fn heartbeat() -> Heartbeat {
        Heartbeat {
            host: None,
            port: 3632,
            toolchains: vec![tc()],
            libc: "glibc 2.36".into(),
            arch: "x86_64".into(),
            tz_offset_secs: 3600,
            capacity: 8,
            lzo: true,
            tickets: false,
            software: "dportage".into(),
            confined: true,
        }
    }

    #[test]
    fn heartbeat_bounds() {
        assert!(heartbeat().validate().is_ok());
        let mut h = heartbeat();
        h.capacity = 0;
        assert_eq!(h.validate(), Err(ApiValidationError::Capacity(0)));
        assert!(h.validate().unwrap_err().to_string().contains("capacity 0"));
        let mut h = heartbeat();
        h.toolchains.clear();
        assert!(h.validate().is_err());
        let mut h = heartbeat();
        h.toolchains[0].version = "x\u{1b}[31m".into();
        assert!(h.validate().unwrap_err().to_string().contains("control"));
        let mut h = heartbeat();
        h.host = Some("bad host".into());
        assert!(h.validate().is_err());
        let mut h = heartbeat();
        h.host = Some("build-7.example.org".into());
        assert!(h.validate().is_ok());
        let mut h = heartbeat();
        h.tz_offset_secs = 15 * 3600;
        assert!(h.validate().is_err());
        h.tz_offset_secs = i32::MIN;
        assert_eq!(h.validate(), Err(ApiValidationError::TimeZone(i32::MIN)));
        let mut h = heartbeat();
        h.toolchains[0].id = "B".repeat(64);
        assert!(h.validate().is_err());
    }

    #[test]
    fn host_entries_to_addresses() {
        assert_eq!(
            host_addr_of_entry("127.0.0.11:4000/2,lzo"),
            "127.0.0.11:4000"
        );
        assert_eq!(host_addr_of_entry("build1/4"), "build1:3632");
        assert_eq!(host_addr_of_entry("build1,lzo"), "build1:3632");
        assert_eq!(host_addr_of_entry("[::1]:99/3"), "[::1]:99");
    }

    #[test]
    fn report_bounds() {
        let r = MismatchReport {
            host_id: None,
            host_addr: "127.0.0.1:3632".into(),
            input_hash: "ab".repeat(32),
            args: vec!["-O2".into(), "-c".into()],
            results: vec![HostResultHash {
                host: "127.0.0.1:3632".into(),
                id: None,
                hash: "cd".repeat(32),
            }],
            time: 1,
            evidence_id: Some("00ff".into()),
            toolchain: Some("b".repeat(64)),
        };
        assert!(r.validate().is_ok());
        let mut bad = r.clone();
        bad.toolchain = Some("B".repeat(64));
        assert_eq!(
            bad.validate(),
            Err(ApiValidationError::NotFingerprint {
                field: "toolchain".into()
            })
        );
        bad.toolchain = None;
        assert!(bad.validate().is_ok(), "the toolchain is optional");
        let mut bad = r.clone();
        bad.input_hash = "xyz".into();
        assert!(bad.validate().is_err());
        let mut bad = r.clone();
        bad.results.clear();
        assert!(bad.validate().is_err());
        let mut bad = r;
        bad.host_addr.clear();
        assert!(
            bad.validate().is_err(),
            "without host_id the address is needed"
        );
    }

    #[test]
    fn older_peers_still_parse() {
        // A coordinator without adjudication answers no `evidence_wanted`.
        let ack: ReportAck = serde_json::from_str(&format!(
            r#"{{"report_id": 7, "host": "{}", "distinct_reporters": 1,
                "distinct_networks": 1, "blacklisted": false}}"#,
            "ab".repeat(32)
        ))
        .unwrap();
        assert!(!ack.evidence_wanted);
        assert_eq!(ack.report_id, 7);
        // A report without a toolchain parses, and one with none is sent
        // without the field (older coordinators see the same JSON as before).
        let report: MismatchReport = serde_json::from_str(&format!(
            r#"{{"host_addr": "127.0.0.1:3632", "input_hash": "{}", "args": [],
                "results": [{{"host": "127.0.0.1:3632", "hash": "cd"}}], "time": 1}}"#,
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(report.toolchain, None);
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("toolchain"), "{json}");
        let with: MismatchReport = serde_json::from_str(&json.replace(
            r#""time":1"#,
            &format!(r#""time":1,"toolchain":"{}""#, "e".repeat(64)),
        ))
        .unwrap();
        assert_eq!(with.toolchain, Some("e".repeat(64)));
        let ack: EvidenceAck =
            serde_json::from_str(r#"{"input_hash": "ab", "stored": true}"#).unwrap();
        assert!(ack.stored);
    }

    #[test]
    fn result_hashes_are_of_object_and_status() {
        let digest = crate::verify::ResultDigest::of(0, b"object", b"warning");
        let by_hand = blake3::hash(format!("{}:0", digest.object_hex()).as_bytes())
            .to_hex()
            .to_string();
        assert_eq!(result_hash_of(&digest), by_hand);
        assert_eq!(result_hash(&digest.object_hex(), 0), by_hand);
        // The diagnostics do not vote; the status does.
        let other_warning = crate::verify::ResultDigest::of(0, b"object", b"other");
        assert_eq!(result_hash_of(&other_warning), by_hand);
        let failed = crate::verify::ResultDigest::of(256, b"object", b"warning");
        assert_ne!(result_hash_of(&failed), by_hand);
    }

    #[test]
    fn evidence_paths() {
        let h = blake3::hash(b"int x;").to_hex().to_string();
        assert!(is_input_hash(&h));
        assert_eq!(evidence_path(&h), format!("/v1/evidence/{h}"));
        assert!(!is_input_hash(&h.to_uppercase()));
        assert!(!is_input_hash("../../etc/passwd"));
        assert!(!is_input_hash(&h[1..]));
    }

    #[test]
    fn coordinator_key_proofs() {
        let coordinator = crate::network::identity::Identity::generate();
        let challenge = "0123456789abcdef0123456789abcdef";
        let proof = CoordinatorKeyProof::sign(&coordinator, challenge).unwrap();
        assert_eq!(proof.verify(challenge), Ok(coordinator.id()));
        let other = "f".repeat(32);
        assert_eq!(proof.verify(&other), Err(KeyProofError::OtherChallenge));
        // Someone names the coordinator's key without holding it.
        let mut claimed =
            CoordinatorKeyProof::sign(&crate::network::identity::Identity::generate(), challenge)
                .unwrap();
        claimed.key = coordinator.id();
        assert_eq!(claimed.verify(challenge), Err(KeyProofError::BadSignature));
        for bad in ["", "0123", &"g".repeat(32), &"A".repeat(32)] {
            assert_eq!(
                CoordinatorKeyProof::sign(&coordinator, bad),
                Err(KeyProofError::BadChallenge),
                "{bad:?}"
            );
        }
    }
}
