//! The integration tests, in one binary: each module below used to be a test
//! binary of its own (each linking the whole crate). Shared helpers live in
//! [`support`]; the tests are grouped by the part of dportage they exercise.
//! Nothing here changes process-wide state (environment, working directory,
//! signal dispositions): every test configures only the processes it starts.

mod support;

/// The import rules of docs/architecture.md, checked on `src/`.
mod architecture;

/// The wire protocol and its codec.
mod protocol {
    mod fixtures;
    mod props;
}

/// The client: argument scanning, host lists, slots, and whole compiles
/// against fake and real servers.
mod client {
    mod args_vs_distcc;
    mod args_wire_vs_distcc;
    mod distcc_words;
    mod fake_server;
    mod hosts_vs_distcc;
    mod interop;
    mod slots_processes;
    mod slots_vs_distcc;
    mod stalls_and_bombs;
}

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
    mod zstd;
    mod zygote;
}

/// Verified dispatch (`DPORTAGE_REDUNDANCY=2`).
mod dual;

/// The shared compile network: coordinator, membership, status page.
mod network {
    mod coordinator;
    mod env_distcc;
    mod limits;
    mod status_browser;
}

/// The demo, the WAN emulator and the macro-benchmark's plumbing.
mod tools {
    mod demo_end_to_end;
    mod wanproxy_link;
    mod wanproxy_macro_procs;
}
