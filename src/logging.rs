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

/// The `--version` text of `program` (`distcc`, `distccd`): distcc 3.4's first
/// two lines, which scripts and distcc's own test suite parse (name, version,
/// platform; then the protocols and the port), followed by what this really is.
///
/// The protocols line says 1 and 2, not distcc's "1, 2 and 3": neither our
/// client nor our server speaks pump mode, and a script that picks protocol 3
/// because we claimed it would fail. distcc's own test only asks for
/// `(protocol…) (default port 3632)` there.
pub fn distcc_version_text(program: &str) -> String {
    format!(
        "{program} 3.4 {}\n  (protocols 1 and 2) (default port 3632)\n  dportage {}: distcc 3.4 reimplemented in Rust; no pump mode (protocol 3)\n",
        host_triple(),
        env!("CARGO_PKG_VERSION")
    )
}

/// The platform this binary was built for, spelt as GNU `config.guess` spells
/// it (`x86_64-pc-linux-gnu`), because that is what distcc's `--version` shows
/// and what scripts compare against `gcc -dumpmachine`-like names. Rust's own
/// triple differs in the vendor field (`x86_64-unknown-linux-gnu`).
pub fn host_triple() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le",
        other => other,
    };
    // config.guess's vendors: `pc` for x86 PCs, `ibm` for mainframes.
    let vendor = match arch {
        "x86_64" | "i686" => "pc",
        "s390x" => "ibm",
        _ => "unknown",
    };
    let os = match std::env::consts::OS {
        "linux" if cfg!(target_env = "musl") => "linux-musl".to_owned(),
        "linux" if cfg!(all(target_arch = "arm", target_abi = "eabihf")) => {
            "linux-gnueabihf".to_owned()
        }
        "linux" => "linux-gnu".to_owned(),
        "android" => "linux-android".to_owned(),
        "macos" => "apple-darwin".to_owned(),
        other => other.to_owned(),
    };
    if os == "apple-darwin" {
        return format!("{arch}-{os}");
    }
    format!("{arch}-{vendor}-{os}")
}

/// An I/O error as C's `strerror` words it ("No such file or directory"),
/// without Rust's " (os error 2)": distcc's messages end with exactly these
/// words and scripts match on them.
pub fn strerror(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => {
            let text = error.to_string();
            let suffix = format!(" (os error {code})");
            text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
        }
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text_keeps_distccs_first_two_lines_shape() {
        let text = distcc_version_text("distccd");
        let mut lines = text.lines();
        let first = lines.next().unwrap();
        let words: Vec<&str> = first.split(' ').collect();
        assert_eq!(words.len(), 3, "{first}");
        assert_eq!(&words[..2], ["distccd", "3.4"]);
        assert_eq!(
            lines.next(),
            Some("  (protocols 1 and 2) (default port 3632)")
        );
        assert!(lines.next().unwrap().contains(env!("CARGO_PKG_VERSION")));
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_triple_is_config_guess_style() {
        assert_eq!(host_triple(), "x86_64-pc-linux-gnu");
    }

    #[test]
    fn strerror_drops_rusts_os_error_suffix() {
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(strerror(&e), "No such file or directory");
    }
}
