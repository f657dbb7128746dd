//! Verified dispatch and the shared network's integration tests (`cargo test
//! --test network`). See `main_client.rs` for how the integration tests are
//! split.

mod support;

/// Verified dispatch (`DPORTAGE_REDUNDANCY=2`).
mod dual;

/// The shared compile network: coordinator, membership, status page.
mod network {
    mod adjudication;
    mod cache;
    mod cache_e2e;
    mod challenge_jobs;
    mod challenges;
    mod coordinator;
    mod coordinator_identity;
    mod env_distcc;
    mod framing;
    mod free_keys;
    mod limits;
    mod monitor;
    mod portage;
    mod signed_list;
    mod status_browser;
    mod tickets;
    mod tls;
}
