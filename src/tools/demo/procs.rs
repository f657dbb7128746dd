//! The demo's child processes: started, watched while waiting, and always
//! stopped (by the PID we started) when the demo ends, however it ends.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every process the demo started, stopped on drop.
pub struct Children {
    running: Vec<(String, Child)>,
    verbose: bool,
}

impl Children {
    pub fn new(verbose: bool) -> Self {
        Self {
            running: Vec::new(),
            verbose,
        }
    }

    /// Start `command` with stdin closed; its output is shown only with `-v`.
    pub fn spawn(&mut self, label: &str, command: &mut Command) -> anyhow::Result<()> {
        command.stdin(Stdio::null());
        if self.verbose {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {label}: {e}"))?;
        self.running.push((label.to_string(), child));
        Ok(())
    }

    /// Fail fast, naming the process, when one of ours has died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (label, child) in &mut self.running {
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!("{label} exited early ({status})");
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        // SIGTERM first so daemons finish cleanly and remove their files.
        for (_, child) in &self.running {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on a PID we spawned and have not yet reaped.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.running {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

/// Wait until something accepts connections on `addr`.
pub fn wait_for_port(
    addr: SocketAddr,
    timeout: Duration,
    children: &mut Children,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        children.check_alive()?;
        if Instant::now() > deadline {
            anyhow::bail!("nothing listening on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until `path` holds a socket address (written by the process once it
/// listens); return it.
pub fn wait_for_address_file(
    path: &Path,
    timeout: Duration,
    children: &mut Children,
) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(addr) = text.trim().parse() {
                return Ok(addr);
            }
        }
        children.check_alive()?;
        if Instant::now() > deadline {
            anyhow::bail!("{} did not appear after {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
