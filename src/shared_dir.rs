//! The machine-wide state directory, `/var/lib/dportage`, shared by the
//! daemon and by everyone in the `dportage` group (portage's builds among
//! them).
//!
//! Portage compiles as the `portage` user with a `HOME` of its own, so a
//! per-home directory would make every emerge a stranger to the network: not
//! a member, its reports refused, its exclusions forgotten. Installed as the
//! ebuild installs it (root:dportage, mode 2770: set-group-ID, so what is
//! created inside belongs to the group), the directory holds the machine's
//! member identity, the daemon's membership token, pending reports,
//! exclusions and host speed records. The daemon's own key is not here: it
//! lives in `daemon/` (dportage:dportage 0700), which the group cannot read.
//!
//! Files are created with the process's umask, which would leave them
//! unwritable by the rest of the group; [`share_with_group`] gives the group
//! what it needs of each one, and nothing else (other users never get any).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the machine-wide directory is unless `DPORTAGE_SYSTEM_DIR` says.
pub const SYSTEM_DIR: &str = "/var/lib/dportage";

/// The daemon's own directory inside the machine-wide one.
pub const DAEMON_SUBDIR: &str = "daemon";

/// The machine-wide directory: `$DPORTAGE_SYSTEM_DIR`, else [`SYSTEM_DIR`].
pub fn system_dir() -> PathBuf {
    std::env::var_os("DPORTAGE_SYSTEM_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSTEM_DIR))
}

/// Which directory holds this process's identity and state, from what is
/// set and what exists (pure, so the order is tested as a table):
/// `DPORTAGE_DIR`; else a personal `~/.dportage` that exists; else the
/// machine-wide directory if this user may write it; else `~/.dportage`
/// (created on first use).
pub fn choose(
    explicit: Option<PathBuf>,
    personal: PathBuf,
    personal_exists: bool,
    system: PathBuf,
    system_writable: bool,
) -> PathBuf {
    if let Some(dir) = explicit {
        dir
    } else if personal_exists || !system_writable {
        personal
    } else {
        system
    }
}

/// Whether this process may create files in `dir` (it exists, and the
/// kernel says so: group membership included).
pub fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    dir.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

/// Whether `dir` is shared by its group: set-group-ID, as the system
/// directory is installed.
pub fn is_group_shared(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o2000 != 0)
}

/// What the group may do with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAccess {
    /// Read it (the member key: everyone in the group signs as the machine).
    Read,
    /// Read and rewrite it (logs, records, locks).
    ReadWrite,
}

/// The mode a file in a group-shared directory gets: the owner's bits
/// (at least read and write), the group's as `access` says, nothing for others.
pub fn shared_mode(current: u32, access: GroupAccess) -> u32 {
    let group = match access {
        GroupAccess::Read => 0o040,
        GroupAccess::ReadWrite => 0o060,
    };
    let exec = if current & 0o100 != 0 { 0o010 } else { 0 };
    (current & 0o7700) | 0o600 | group | exec
}

/// Give the group `access` to `path` when its directory is group-shared;
/// elsewhere (a personal `~/.dportage`) nothing changes. Best effort: a file
/// someone else created is theirs to chmod, and already shared by them.
pub fn share_with_group(path: &Path, access: GroupAccess) {
    let Some(dir) = path.parent() else { return };
    if !is_group_shared(dir) {
        return;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            return;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() {
            // Directories inside keep the set-group-ID bit (Linux copies it).
            (mode & 0o7000) | 0o2770
        } else {
            shared_mode(mode, access)
        };
        if wanted != mode {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_directory() {
        let p = || PathBuf::from("/home/u/.dportage");
        let s = || PathBuf::from("/var/lib/dportage");
        let e = || Some(PathBuf::from("/x"));
        // (explicit, personal exists, system writable) -> chosen
        let table = [
            (e(), true, true, PathBuf::from("/x")),
            (e(), false, false, PathBuf::from("/x")),
            (None, true, true, p()),
            (None, false, true, s()),
            (None, false, false, p()),
            (None, true, false, p()),
        ];
        for (explicit, exists, writable, want) in table {
            assert_eq!(
                choose(explicit.clone(), p(), exists, s(), writable),
                want,
                "{explicit:?} {exists} {writable}"
            );
        }
    }

    #[test]
    fn modes_give_the_group_what_it_needs_and_others_nothing() {
        assert_eq!(shared_mode(0o600, GroupAccess::Read), 0o640);
        assert_eq!(shared_mode(0o644, GroupAccess::Read), 0o640);
        assert_eq!(shared_mode(0o644, GroupAccess::ReadWrite), 0o660);
        assert_eq!(shared_mode(0o755, GroupAccess::ReadWrite), 0o770);
        assert_eq!(shared_mode(0o666, GroupAccess::ReadWrite), 0o660);
    }

    #[test]
    fn only_files_in_a_set_group_id_directory_are_shared() {
        let t = tempfile::tempdir().unwrap();
        let plain = t.path().join("plain");
        let shared = t.path().join("shared");
        std::fs::create_dir(&plain).unwrap();
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2770)).unwrap();
        for dir in [&plain, &shared] {
            let f = dir.join("f");
            std::fs::write(&f, b"x").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
            share_with_group(&f, GroupAccess::ReadWrite);
        }
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(plain.join("f")), 0o600);
        assert_eq!(mode(shared.join("f")), 0o660);
        assert!(is_group_shared(&shared) && !is_group_shared(&plain));
        assert!(writable(&shared));
        assert!(!writable(&t.path().join("missing")));
    }
}
