//! The integration tests are three binaries grouped by role, built in
//! parallel: this one (`cargo test --test client`) holds the wire protocol,
//! the client, the tools and the architecture check; `main_server.rs` the
//! server; `main_network.rs` verified dispatch and the network. All three
//! share the one [`support`] module. Nothing here changes process-wide state
//! (environment, working directory, signal dispositions): every test
//! configures only the processes it starts.

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
    mod monitor;
    mod slots_processes;
    mod slots_vs_distcc;
    mod stalls_and_bombs;
}

/// The demo, the WAN emulator, the macro-benchmark's plumbing, the command
/// line's help, completions and manual pages, and the Gentoo packaging.
mod tools {
    mod demo_end_to_end;
    mod gentoo_packaging;
    mod help_and_docs;
    mod wanproxy_link;
    mod wanproxy_macro_procs;
}
