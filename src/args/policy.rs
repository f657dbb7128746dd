//! The server's policy for commands from strangers: which compilers may run and
//! which flag shapes are allowed. An allow-list: anything not recognised as safe
//! is refused, with the reason.

/// Why the server refuses a command. `Display` goes into `SERR` and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("compiler {0:?} is not on this server's whitelist")]
    CompilerNotAllowed(String),
    #[error("compiler {0:?} must be a bare name, not a path")]
    CompilerPath(String),
    #[error("argument {0:?} is not allowed on this server (it can read, write or run things outside the job)")]
    DangerousFlag(String),
    #[error("argument {0:?} is not a flag this server knows to be safe")]
    UnknownFlag(String),
    #[error("argument is not valid UTF-8")]
    NotUtf8,
    #[error("command is not distributable: {0}")]
    NotDistributable(String),
}

/// A checked command, ready to run in a job directory: the input and output
/// paths replaced by the fixed job-relative names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCommand {
    /// The compiler as the client named it (already whitelisted).
    pub compiler: String,
    /// Arguments after the compiler, with the input replaced by `input_name`
    /// and the output by `output_name`.
    pub args: Vec<String>,
    /// Preprocessed extension of the input (`.i`, `.ii`, …), for the input file name.
    pub input_ext: &'static str,
}

/// Check a command received from the network.
/// `compiler_allowed(name)` decides the whitelist for a bare compiler name
/// (after dropping a leading `/usr/bin/` or `/bin/`); `input_name` and
/// `output_name` are the fixed job-relative file names to substitute.
pub fn check_server_command(
    argv: &[Vec<u8>],
    compiler_allowed: &dyn Fn(&str) -> bool,
    input_stem: &str,
    output_name: &str,
) -> Result<ServerCommand, Refusal> {
    let _ = (argv, compiler_allowed, input_stem, output_name);
    todo!()
}
