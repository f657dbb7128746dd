//! The client's own messages. Warnings and errors go to stderr by default (like
//! distcc's); `DISTCC_VERBOSE=1` adds the debug story of each job; `DISTCC_LOG`
//! sends everything to a file instead; `UNCACHED_ERR_FD` (set by ccache) is where
//! messages go when `DISTCC_LOG` is unset, so ccache does not cache them.
//!
//! `RUST_LOG` is deliberately ignored: the client runs inside builds of other
//! software whose own tools may set it.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::settings::Settings;

/// distcc's own line format, `distcc[PID] (function) Warning: message`,
/// because build logs are grepped for it (`distcc\[`, `Warning:`, `ERROR:`,
/// "failed to distribute"). The program name is always `distcc`, as distcc's
/// is whatever name it was invoked under. No timestamps: the user reads these
/// interleaved with compiler diagnostics.
///
/// An event whose target is a distcc function name (`dcc_…`, set with
/// `tracing::warn!(target: "dcc_parse_hosts", …)`) gets it in parentheses,
/// like distcc's messages that tools match word for word; other events go
/// without, like distcc's `RS_LOG_NONAME` lines.
struct ClientFormat;

impl<S, N> FormatEvent<S, N> for ClientFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // distcc's rs_severities: only errors and warnings are labelled.
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR: ",
            Level::WARN => "Warning: ",
            Level::INFO | Level::DEBUG | Level::TRACE => "",
        };
        write!(writer, "distcc[{}] ", std::process::id())?;
        let target = event.metadata().target();
        if target.starts_with("dcc_") {
            write!(writer, "({target}) ")?;
        }
        write!(writer, "{level}")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Install the client's subscriber according to `settings`.
pub fn init(settings: &Settings) {
    let stderr_level = if settings.verbose {
        LevelFilter::DEBUG
    } else {
        LevelFilter::WARN
    };
    if let Some(path) = &settings.log_file {
        let file_level = if settings.verbose {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        };
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => return install(Mutex::new(file), file_level),
            Err(e) => {
                install(std::io::stderr, stderr_level);
                tracing::error!(
                    target: "dcc_set_trace_from_env",
                    "failed to open logfile {}: {}",
                    path.display(),
                    crate::logging::strerror(&e)
                );
                return;
            }
        }
    }
    if let Some(file) = settings.uncached_err_fd.and_then(duplicate_fd) {
        return install(Mutex::new(file), stderr_level);
    }
    install(std::io::stderr, stderr_level);
}

fn install<W>(writer: W, level: LevelFilter)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(writer)
        .with_ansi(false)
        .event_format(ClientFormat)
        .try_init();
}

/// Our own copy of an inherited descriptor, or `None` when `fd` is not open.
fn duplicate_fd(fd: i32) -> Option<File> {
    // SAFETY: F_DUPFD_CLOEXEC on an arbitrary number is harmless: it fails with
    // EBADF when `fd` is not open, and otherwise returns a new descriptor we own.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return None;
    }
    // SAFETY: `copy` is a freshly duplicated descriptor owned by nobody else.
    Some(unsafe { File::from_raw_fd(copy) })
}

/// Write raw bytes to stderr (compiler diagnostics are not log events).
pub fn write_stderr(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

/// Write raw bytes to stdout.
pub fn write_stdout(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}
