//! dportage: a distcc 3.4-compatible client and server in Rust, grown into a
//! verified compile network that strangers can share.
//!
//! # Layers (arrows point down only; `docs/architecture.md`, enforced by `tests/it/architecture.rs`)
//!
//! 1. **Pure core**: no tokio, sockets, processes or files. [`protocol`] (the
//!    distcc wire format), [`hosts`] (`DISTCC_HOSTS`), [`args`] (argument
//!    scanning, rewriting, the server's flag policy), [`canonical`] (making
//!    honest hosts agree), [`verify`] (votes, verdicts and the dual-dispatch
//!    scheduler), [`trust`] (standing, random pairing, adjudication: trust
//!    among strangers), [`fingerprint`] (toolchain identity), [`exitcode`],
//!    [`metrics`] (the Prometheus text format), [`jobstate`] (distcc's
//!    monitor state files and the verdict lines `dportage monitor` reads).
//! 2. **Shared edges**: [`probe`] (runs a compiler to fingerprint it),
//!    [`job_call`] (one job sent to a host for its digest: challenges and
//!    adjudication), [`result_store`] (the bounded on-disk store of cached
//!    replies by result hash, shared by daemons and clients),
//!    [`logging`], [`runtime`] (the one way to start tokio), [`transport`]
//!    (the one read loop from a socket into the `protocol` decoders).
//! 3. **Network contract**: [`network`]: API types, request signing,
//!    identities, the clock, the host-selection rule, a signed HTTP caller.
//! 4. **Roles**, which import the layers below and never each other:
//!    [`client`], [`server`] (with its heartbeat agent), [`coordinator`],
//!    [`member`] (`dportage` env printing and `dportage CMD`).
//! 5. **Tools**: [`tools`] (demo, WAN emulator, lying server) and
//!    [`monitor`] (`dportage monitor`: jobs, hosts and verdicts, live), on top.
//!
//! # A job's path
//! 1. `main.rs` → `client/mod.rs` (`client_main`: argv0, masquerading) →
//!    `client/invocation.rs` (which compiler) → `args/scan.rs` (distributable?).
//! 2. `client/compile.rs` (plain dispatch) or `client/dual/` (verified; a
//!    preprocessed job is first looked up in the result cache by
//!    `client/dual/cached.rs` → `client/result_cache.rs`: the member's own
//!    store, then the coordinator's signed index and a holder's `CGET`;
//!    `verify/scheduler.rs` decides, `client/dual/driver.rs` executes, over the
//!    hosts of `client/dual/voters.rs`) → `client/hostsource.rs`,
//!    `client/slots.rs` (hosts and lock files) → `client/preprocess.rs` →
//!    `canonical.rs` → `client/remote.rs` (request out) → `transport.rs` +
//!    `protocol/` (reply in, bounded).
//! 3. On the host: `server/listener.rs` (accept, access via `server/access.rs`)
//!    → `server/connection.rs` → `transport.rs` + `protocol/` (bounded request)
//!    → `args/policy.rs` (compiler and flag shapes) → `server/job.rs` (job dir) →
//!    `server/sandbox/zygote.rs` (confined compiler, `server/limits.rs`) → reply.
//! 4. Back on the client: `verify/` (digests and the vote) →
//!    `client/dual/verdict.rs` (acting on it) → `client/output.rs` (sanitised
//!    diagnostics, atomic object write); any failure → `client/fallback.rs`
//!    (the one local-compile path).
//!
//! # A heartbeat's path
//! `server/options.rs` (`--coordinator`) → `server/heartbeat_agent.rs` (toolchains via
//! `probe.rs`, facts, signed by `network/identity.rs` + `network/auth.rs`) →
//! `network/caller.rs` → `coordinator/routes/mod.rs` (route) →
//! `coordinator/http.rs` (bounded body, signature) → `coordinator/routes/heartbeat.rs`
//! → `coordinator/pool.rs` (liveness) and `coordinator/store.rs` (first
//! registration, durable).
//!
//! # A report's path
//! `client/dual/mismatch.rs` (a host lost a vote) → `client/evidence.rs`
//! (`evidence.jsonl`, `excluded-hosts`) → `client/upload.rs` (pending records →
//! `network::api::MismatchReport`) → `network/caller.rs` →
//! `coordinator/routes/report.rs` → `coordinator/store.rs` (durable, then
//! acknowledged) → `coordinator/pool.rs` (blacklist). The input of the job is
//! kept by `client/kept_inputs.rs` (`evidence-inputs/<hash>.zst`) and, when the
//! acknowledgement asks for it (`evidence_wanted`), uploaded by
//! `client/upload.rs` with `PUT /v1/evidence/<input_hash>`.

// Pure core.
pub mod args;
pub mod canonical;
pub mod exitcode;
pub mod fingerprint;
pub mod hosts;
pub mod jobstate;
pub mod metrics;
pub mod protocol;
pub mod trust;
pub mod verify;

// Shared edges.
pub mod job_call;
pub mod logging;
pub mod probe;
pub mod result_store;
pub mod runtime;
pub mod shared_dir;
pub mod transport;

// The network contract.
pub mod network;

// Roles.
pub mod client;
pub mod coordinator;
pub mod member;
pub mod server;

// Tools.
pub mod monitor;
pub mod tools;
