//! Compiler command lines: is a command distributable (distcc 3.4's scanner,
//! shared by client and server), how to rewrite it for the preprocessor and the
//! server, and the server's allow-list of flag shapes. Pure and table-tested.

pub mod policy;
pub mod rewrite;
pub mod scan;

pub use policy::{check_server_command, Refusal, ServerCommand};
pub use rewrite::{preprocessor_argv, server_argv};
pub use scan::{scan, ArgsError, CompileJob, LocalReason, OutputKind, ScanOutcome};
