//! Where the host list comes from: `$DISTCC_HOSTS`, `$DISTCC_DIR/hosts`
//! (`~/.distcc/hosts`), `/etc/distcc/hosts` (spec §10.1).

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::hosts::{parse_host_list, HostList, HostSpecError};

/// The system-wide host file (Debian's `SYSCONFDIR/distcc/hosts`).
pub const SYSTEM_HOSTS_FILE: &str = "/etc/distcc/hosts";

/// Host files larger than this are refused rather than read.
const MAX_HOSTS_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HostSourceError {
    #[error(
        "no hostlist is set: set DISTCC_HOSTS (e.g. `export DISTCC_HOSTS=\"localhost build1/8\"`) \
         or write the hosts into ~/.distcc/hosts or /etc/distcc/hosts"
    )]
    NotSet,
    #[error(
        "{origin}: {source}; fix it (entries look like `localhost`, `build1/8`, `build2:3632,lzo`)"
    )]
    Parse {
        origin: String,
        source: HostSpecError,
    },
}

/// The client's state directory: `$DISTCC_DIR`, else `~/.distcc`.
///
/// The default directory is created when missing (as distcc does); a
/// `DISTCC_DIR` that does not exist is left alone, so locking fails and jobs
/// run locally, again as distcc does. An empty `DISTCC_DIR` counts as unset.
pub fn distcc_dir() -> PathBuf {
    let env = std::env::var_os("DISTCC_DIR");
    let (dir, is_default) = distcc_dir_from(env.as_deref(), home_dir);
    if is_default && !dir.exists() {
        // Failure shows up later, when the lock directory cannot be opened.
        let _ = std::fs::create_dir(&dir);
    }
    dir
}

/// The state directory for a `DISTCC_DIR` value, and whether it is the default.
fn distcc_dir_from(env: Option<&OsStr>, home: impl FnOnce() -> PathBuf) -> (PathBuf, bool) {
    match env.filter(|d| !d.is_empty()) {
        Some(dir) => (PathBuf::from(dir), false),
        None => (home().join(".distcc"), true),
    }
}

/// `$HOME`, else the password database's home directory, else `/`.
fn home_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    passwd_home().unwrap_or_else(|| PathBuf::from("/"))
}

fn passwd_home() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 16 * 1024];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage owned here;
    // getpwuid_r writes only within `buf` and `pwd` and sets `result`.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: pw_dir points into `buf`, NUL-terminated by getpwuid_r.
    let dir = unsafe { std::ffi::CStr::from_ptr(pwd.pw_dir) };
    Some(PathBuf::from(OsStr::from_bytes(dir.to_bytes())))
}

/// Load and parse the host list from the first source that exists.
/// With `--randomize` the hosts come back shuffled, seeded by the process id
/// as distcc does.
pub fn load_host_list() -> Result<HostList, HostSourceError> {
    let env = std::env::var_os("DISTCC_HOSTS");
    let mut list =
        load_host_list_from(env.as_deref(), &distcc_dir(), Path::new(SYSTEM_HOSTS_FILE))?;
    if list.randomize {
        list.shuffle(u64::from(std::process::id()));
    }
    Ok(list)
}

/// [`load_host_list`] with its sources explicit (and no shuffling): the value
/// of `DISTCC_HOSTS`, the state directory and the system host file.
pub fn load_host_list_from(
    env_hosts: Option<&OsStr>,
    distcc_dir: &Path,
    system_file: &Path,
) -> Result<HostList, HostSourceError> {
    if let Some(text) = env_hosts {
        return parse_from("$DISTCC_HOSTS", &text.to_string_lossy());
    }
    for file in [distcc_dir.join("hosts"), system_file.to_path_buf()] {
        if let Some(text) = read_hosts_file(&file)? {
            return parse_from(&file.display().to_string(), &text);
        }
    }
    Err(HostSourceError::NotSet)
}

fn parse_from(origin: &str, text: &str) -> Result<HostList, HostSourceError> {
    parse_host_list(text).map_err(|source| HostSourceError::Parse {
        origin: origin.to_string(),
        source,
    })
}

/// The file's text, or `None` when it cannot be read (distcc: not `R_OK`),
/// so the next source is tried.
fn read_hosts_file(path: &Path) -> Result<Option<String>, HostSourceError> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    match file.take(MAX_HOSTS_FILE + 1).read_to_end(&mut bytes) {
        Ok(_) if bytes.len() as u64 > MAX_HOSTS_FILE => Err(HostSourceError::Parse {
            origin: path.display().to_string(),
            source: HostSpecError::BadEntry {
                entry: String::new(),
                why: format!("the file is larger than {MAX_HOSTS_FILE} bytes"),
            },
        }),
        Ok(_) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        // A directory or an unreadable file: try the next source.
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &HostList) -> Vec<&str> {
        list.hosts.iter().map(|h| h.verbatim.as_str()).collect()
    }

    #[test]
    fn environment_comes_first() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("hosts"), "fromfile").unwrap();
        let l = load_host_list_from(
            Some(OsStr::new("a b/2")),
            t.path(),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(names(&l), ["a", "b/2"]);
    }

    #[test]
    fn empty_environment_is_an_error_not_a_fallthrough() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("hosts"), "fromfile").unwrap();
        let e = load_host_list_from(Some(OsStr::new("")), t.path(), Path::new("/nonexistent"))
            .unwrap_err();
        assert!(matches!(
            e,
            HostSourceError::Parse {
                source: HostSpecError::Empty,
                ..
            }
        ));
        let text = e.to_string();
        assert!(
            text.contains("$DISTCC_HOSTS") && text.contains("contained no hosts"),
            "{text}"
        );
        assert!(text.contains("fix it"), "{text}");
    }

    #[test]
    fn then_the_state_directory_then_the_system_file() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let system = t.path().join("system-hosts");
        std::fs::write(&system, "# system\nsys1 sys2\n").unwrap();

        let l = load_host_list_from(None, &state, &system).unwrap();
        assert_eq!(names(&l), ["sys1", "sys2"]);

        std::fs::write(state.join("hosts"), "mine/3\n# comment\nlocalhost\n").unwrap();
        let l = load_host_list_from(None, &state, &system).unwrap();
        assert_eq!(names(&l), ["mine/3", "localhost"]);

        let e = load_host_list_from(None, &t.path().join("nowhere"), &t.path().join("none"))
            .unwrap_err();
        assert!(matches!(e, HostSourceError::NotSet));
        assert!(e.to_string().contains("DISTCC_HOSTS"));
    }

    #[test]
    fn parse_errors_name_the_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("hosts"), "good h:99999\n").unwrap();
        let e = load_host_list_from(None, t.path(), Path::new("/nonexistent")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&t.path().join("hosts").display().to_string()),
            "{text}"
        );
        assert!(text.contains("h:99999"), "{text}");
    }

    #[test]
    fn unreadable_sources_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        // A directory named hosts cannot be read as a file.
        std::fs::create_dir(t.path().join("hosts")).unwrap();
        let system = t.path().join("sys");
        std::fs::write(&system, "s").unwrap();
        let l = load_host_list_from(None, t.path(), &system).unwrap();
        assert_eq!(names(&l), ["s"]);
    }

    #[test]
    fn huge_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let big = vec![b'a'; (MAX_HOSTS_FILE + 10) as usize];
        std::fs::write(t.path().join("hosts"), big).unwrap();
        assert!(matches!(
            load_host_list_from(None, t.path(), Path::new("/nonexistent")),
            Err(HostSourceError::Parse { .. })
        ));
    }

    #[test]
    fn state_directory() {
        let home = || PathBuf::from("/home/u");
        assert_eq!(
            distcc_dir_from(Some(OsStr::new("/s")), home),
            (PathBuf::from("/s"), false)
        );
        assert_eq!(
            distcc_dir_from(Some(OsStr::new("")), home),
            (PathBuf::from("/home/u/.distcc"), true)
        );
        assert_eq!(
            distcc_dir_from(None, home),
            (PathBuf::from("/home/u/.distcc"), true)
        );
    }

    #[test]
    fn home_is_found() {
        assert!(home_dir().is_absolute());
        assert!(passwd_home().is_some());
    }
}
