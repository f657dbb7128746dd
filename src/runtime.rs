//! The one place that starts a tokio runtime, so every command fails the same
//! way (and says why) when it cannot get one.
//!
//! Short blocking commands (a report upload, `dportage` env printing, the test
//! tools) want a current-thread runtime: no worker threads to start or stop.
//! The daemons (the job server, the coordinator) want a multi-thread one.

use std::io;

/// Which runtime could not be started, and the system's reason.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start the {flavor} async runtime: {source} (the process may be out of \
     file descriptors or threads; check `ulimit -n` and `ulimit -u`)"
)]
pub struct RuntimeError {
    flavor: &'static str,
    #[source]
    source: io::Error,
}

/// A runtime that runs everything on the calling thread, with I/O and timers.
pub fn current_thread() -> Result<tokio::runtime::Runtime, RuntimeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RuntimeError {
            flavor: "current-thread",
            source,
        })
}

/// A work-stealing runtime with one worker per core, with I/O and timers.
/// `thread_name` names its threads (as `ps -L` shows them); `None` keeps
/// tokio's default name.
pub fn multi_thread(thread_name: Option<&str>) -> Result<tokio::runtime::Runtime, RuntimeError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(name) = thread_name {
        builder.thread_name(name);
    }
    builder.build().map_err(|source| RuntimeError {
        flavor: "multi-thread",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_flavours_run_timers_and_io() {
        for rt in [
            current_thread().unwrap(),
            multi_thread(Some("rt-test")).unwrap(),
        ] {
            rt.block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                assert!(listener.local_addr().is_ok());
            });
        }
    }

    #[test]
    fn the_error_names_the_flavour_and_the_cause() {
        let e = RuntimeError {
            flavor: "multi-thread",
            source: io::Error::from_raw_os_error(libc::EMFILE),
        };
        let text = e.to_string();
        assert!(text.contains("multi-thread"), "{text}");
        assert!(text.contains("ulimit"), "{text}");
    }
}
