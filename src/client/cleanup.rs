//! Temporary files must not outlive an interrupted build: `make` answers Ctrl-C
//! or a `kill` by signalling every compile at once, and `Drop` never runs then.
//! Each temporary file is registered here while it exists; the first
//! registration installs a handler for SIGINT, SIGTERM and SIGHUP (only where the
//! signal is not ignored) that unlinks the registered files and re-raises the
//! signal with its default action, so the parent still sees us die by it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

/// A job has at most a few temporary files at once (preprocessed source,
/// output being written); extra ones simply go unprotected.
const SLOTS: usize = 8;

static PATHS: [AtomicPtr<libc::c_char>; SLOTS] = [const { AtomicPtr::new(null_mut()) }; SLOTS];
static INSTALL: Once = Once::new();

/// Keeps a path registered for deletion-on-signal until dropped. Drop it after
/// the file is deleted or renamed.
#[derive(Debug)]
pub struct CleanupGuard {
    slot: Option<usize>,
}

/// Register `path` to be unlinked if a terminating signal arrives.
pub fn register(path: &Path) -> CleanupGuard {
    INSTALL.call_once(install_handlers);
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return CleanupGuard { slot: None };
    };
    let raw = c_path.into_raw();
    for (i, cell) in PATHS.iter().enumerate() {
        if cell
            .compare_exchange(null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return CleanupGuard { slot: Some(i) };
        }
    }
    // SAFETY: `raw` came from `CString::into_raw` above and was not published.
    drop(unsafe { CString::from_raw(raw) });
    CleanupGuard { slot: None }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            // The string is leaked on purpose: a handler running on another
            // thread may still be reading it. It is a few bytes per file.
            PATHS[i].store(null_mut(), Ordering::SeqCst);
        }
    }
}

extern "C" fn on_terminating_signal(signal: libc::c_int) {
    for cell in &PATHS {
        let path = cell.load(Ordering::SeqCst);
        if !path.is_null() {
            // SAFETY: registered pointers are valid NUL-terminated strings that are
            // never freed; unlink is async-signal-safe.
            unsafe { libc::unlink(path) };
        }
    }
    // SAFETY: signal and raise are async-signal-safe. The signal is blocked while
    // this handler runs, so it is delivered (with the default action) on return.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

fn install_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: plain sigaction calls with zero-initialised, fully set structs.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            // Respect an ignored signal (nohup, background jobs) and anyone else's handler.
            if old.sa_sigaction != libc::SIG_DFL {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_terminating_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let guards: Vec<_> = (0..SLOTS + 2)
            .map(|i| register(&dir.path().join(i.to_string())))
            .collect();
        assert!(guards.iter().filter(|g| g.slot.is_some()).count() <= SLOTS);
        drop(guards);
        let again = register(&dir.path().join("again"));
        assert!(again.slot.is_some());
    }
}
