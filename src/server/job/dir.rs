//! The private job directory: created 0700 under an unpredictable name,
//! removed with everything in it when the guard is dropped (normal end,
//! error, panic, or the job future being dropped).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Attempts at finding an unused name before giving up (a collision of 64
/// random bits means something else is creating these names on purpose).
const NAME_ATTEMPTS: usize = 16;

/// Depth bound for the permission repair walk before a second removal attempt.
const MAX_REPAIR_DEPTH: usize = 64;

#[derive(Debug)]
pub(crate) struct JobDir {
    path: PathBuf,
}

impl JobDir {
    /// Create `ROOT/dportage-job-<16 random hex digits>` with mode 0700.
    /// The root is resolved first: the compiler sees its cwd through
    /// `getcwd`, which has no symlinks, and the job's path-mapping flags
    /// must name the same string.
    pub(crate) fn create(root: &Path) -> io::Result<Self> {
        let root = fs::canonicalize(root)?;
        let mut last_error = None;
        for _ in 0..NAME_ATTEMPTS {
            let path = root.join(format!("dportage-job-{:016x}", rand::random::<u64>()));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let dir = Self { path };
                    // The umask can only have removed bits; make it exact anyway.
                    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700))?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no unused job directory name")))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Write a new file (never an existing one) readable only by the owner.
    pub(crate) fn write_new(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.path.join(name))?;
        file.write_all(bytes)
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// Remove a job directory. The compiler may have left directories without
/// write or search permission; repair those and try once more.
pub(crate) fn remove_tree(path: &Path) {
    match fs::remove_dir_all(path) {
        Ok(()) => return,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(_) => {}
    }
    make_dirs_writable(path, 0);
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "cannot remove job directory {}: {e}; remove it by hand",
            path.display()
        ),
    }
}

fn make_dirs_writable(dir: &Path, depth: usize) {
    if depth > MAX_REPAIR_DEPTH {
        return;
    }
    // symlink_metadata: never follow a link the compiler may have planted.
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        _ => return,
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path(), depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_unpredictable_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let a = JobDir::create(root.path()).unwrap();
        let b = JobDir::create(root.path()).unwrap();
        assert_ne!(a.path(), b.path());
        let mode = fs::metadata(a.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        a.write_new("x.i", b"int x;").unwrap();
        assert_eq!(
            a.write_new("x.i", b"again").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        // A locked subdirectory does not survive the removal.
        let locked = a.path().join("sub/deeper");
        fs::create_dir_all(&locked).unwrap();
        fs::write(locked.join("f"), b"x").unwrap();
        fs::set_permissions(a.path().join("sub"), fs::Permissions::from_mode(0o000)).unwrap();
        drop(a);
        drop(b);
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn removed_on_panic() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().to_path_buf();
        let result = std::panic::catch_unwind(move || {
            let _dir = JobDir::create(&root_path).unwrap();
            panic!("compiler job blew up");
        });
        assert!(result.is_err());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
