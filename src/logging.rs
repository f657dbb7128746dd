//! tracing set-up shared by every role. Quiet by default; `DISTCC_VERBOSE=1` or
//! `-v` turns on debug output; `RUST_LOG` overrides both.

use tracing_subscriber::EnvFilter;

/// Install a stderr subscriber. `verbose` raises the default level to debug.
pub fn init(verbose: bool, default_level: &str) {
    let level = if verbose { "debug" } else { default_level };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Install a subscriber writing to a file (append). Falls back to stderr when the
/// file cannot be opened, and says so.
pub fn init_file(path: &std::path::Path, verbose: bool, default_level: &str) {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => {
            let level = if verbose { "debug" } else { default_level };
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .with_target(false)
                .try_init();
        }
        Err(e) => {
            init(verbose, default_level);
            tracing::warn!(
                "cannot open log file {}: {e}; logging to stderr",
                path.display()
            );
        }
    }
}
