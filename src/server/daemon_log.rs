//! Where the daemon's log goes: syslog (distccd's default, `daemon` facility),
//! stderr (`--log-stderr`) or a file (`--log-file`). `RUST_LOG` overrides the
//! level.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use super::options::LogTarget;

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level))
}

/// Install the subscriber. Returns a warning to log once it is installed
/// (e.g. the log file could not be opened and stderr is used instead).
pub fn init(target: &LogTarget, level: &str) -> Option<String> {
    match target {
        LogTarget::Stderr => {
            stderr(level);
            None
        }
        LogTarget::File(path) => match open_append(path) {
            Ok(file) => {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter(level))
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false)
                    .with_target(false)
                    .try_init();
                None
            }
            Err(e) => {
                stderr(level);
                Some(format!(
                    "cannot open log file {}: {e}; logging to stderr",
                    path.display()
                ))
            }
        },
        LogTarget::Syslog => match UnixDatagram::unbound() {
            Ok(socket) => {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter(level))
                    .with_writer(Syslog {
                        socket: Arc::new(socket),
                    })
                    .with_ansi(false)
                    .with_target(false)
                    .without_time()
                    .with_level(true)
                    .try_init();
                None
            }
            Err(e) => {
                stderr(level);
                Some(format!(
                    "cannot open a syslog socket: {e}; logging to stderr"
                ))
            }
        },
    }
}

fn stderr(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(io::stderr)
        .with_target(false)
        .try_init();
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Sends each formatted event as one datagram to `/dev/log`.
#[derive(Clone)]
struct Syslog {
    socket: Arc<UnixDatagram>,
}

struct SyslogLine {
    socket: Arc<UnixDatagram>,
    severity: u8,
}

const FACILITY_DAEMON: u8 = 3;

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> Self::Writer {
        self.line(6)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        self.line(severity)
    }
}

impl Syslog {
    fn line(&self, severity: u8) -> SyslogLine {
        SyslogLine {
            socket: Arc::clone(&self.socket),
            severity,
        }
    }
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let message = format!(
            "<{}>distccd[{}]: {}",
            FACILITY_DAEMON * 8 + self.severity,
            // Read at each line: the daemon forks after the subscriber is installed.
            std::process::id(),
            text.trim_end()
        );
        // A missing syslog daemon must not stop the server: drop the line.
        let _ = self.socket.send_to(message.as_bytes(), "/dev/log");
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
