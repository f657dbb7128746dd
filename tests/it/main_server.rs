//! The server's integration tests (`cargo test --test server`): `dportage
//! serve`, and the jobs it runs. See `main_client.rs` for how the integration
//! tests are split.

mod support;

/// The server, `dportage serve`, and the jobs it runs.
mod server {
    mod admission;
    mod fixtures;
    mod hostile;
    mod interop;
    mod job_objects;
    mod job_refusals;
    mod job_sandbox;
    mod lifecycle;
    mod result_cache;
    mod zstd;
    mod zygote;
}
