//! A member's signed host list on disk, and the coordinator keys it is checked
//! against.
//!
//! `dportage` pins a coordinator's key the first time it talks to it (trust on
//! first use, like ssh's known_hosts) in `$DPORTAGE_DIR/coordinator-keys.json`,
//! and refuses a list signed by any other key from then on. It writes the
//! list it got, signature and all, to `$DPORTAGE_DIR/host-list.json`
//! (`DPORTAGE_HOST_LIST`); the client checks that file again before each
//! verified job, so nothing in the environment or on disk can add a host of
//! someone else's choosing to the list the pairing rules draw from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::api::{HostListError, HostsResponse, SignedHostList};
use super::identity::IdentityId;

/// Pinned coordinator keys, by coordinator URL.
pub const PINS_FILE: &str = "coordinator-keys.json";
/// The member's current signed host list.
pub const HOST_LIST_FILE: &str = "host-list.json";
/// Bounds what the client reads (a list holds at most 64 hosts).
const MAX_FILE_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HostListFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error(
        "no key is pinned for coordinator {url} in {}: run `dportage --coordinator {url}` \
         to fetch a host list first",
        dir.display()
    )]
    NotPinned { url: String, dir: PathBuf },
    #[error("{}: {source}", path.display())]
    Rejected {
        path: PathBuf,
        source: HostListError,
    },
}

/// What pinning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    /// First contact: the key is now pinned.
    New,
    /// The key matches the pin.
    Known,
}

fn read_bounded(path: &Path) -> Result<String, HostListFileError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| HostListFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| HostListFileError::Io {
            path: path.to_owned(),
            source,
        })?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(HostListFileError::Unreadable {
            path: path.to_owned(),
            why: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(text)
}

fn load_pins(dir: &Path) -> Result<BTreeMap<String, IdentityId>, HostListFileError> {
    let path = dir.join(PINS_FILE);
    match read_bounded(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| HostListFileError::Unreadable {
            path,
            why: e.to_string(),
        }),
        Err(HostListFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(BTreeMap::new())
        }
        Err(e) => Err(e),
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, so a reader
/// never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HostListFileError> {
    let io = |source| HostListFileError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::fs::write(tmp.path(), bytes).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    crate::shared_dir::share_with_group(path, crate::shared_dir::GroupAccess::ReadWrite);
    Ok(())
}

/// The key pinned for coordinator `url` in `dir`, if any.
pub fn pinned_key(dir: &Path, url: &str) -> Result<Option<IdentityId>, HostListFileError> {
    Ok(load_pins(dir)?.get(url).copied())
}

/// Pin `key` for `url` on first contact; afterwards it must match (the
/// mismatch is reported by [`SignedHostList::open`]).
pub fn pin(dir: &Path, url: &str, key: &IdentityId) -> Result<Pinned, HostListFileError> {
    let mut pins = load_pins(dir)?;
    if pins.contains_key(url) {
        return Ok(Pinned::Known);
    }
    pins.insert(url.to_owned(), *key);
    let text = serde_json::to_vec_pretty(&pins).unwrap_or_default();
    write_atomically(&dir.join(PINS_FILE), &text)?;
    Ok(Pinned::New)
}

/// Save the member's signed list; returns its path.
pub fn save(dir: &Path, list: &SignedHostList) -> Result<PathBuf, HostListFileError> {
    let path = dir.join(HOST_LIST_FILE);
    let text = serde_json::to_vec(list).unwrap_or_default();
    write_atomically(&path, &text)?;
    Ok(path)
}

/// Read the signed list at `path` and check it: signed by the key pinned in
/// `dir` for `url`, made for `me`, and fresh at `now` (unix seconds).
pub fn load(
    path: &Path,
    dir: &Path,
    url: &str,
    me: &IdentityId,
    now: u64,
) -> Result<HostsResponse, HostListFileError> {
    let text = read_bounded(path)?;
    let signed: SignedHostList =
        serde_json::from_str(&text).map_err(|e| HostListFileError::Unreadable {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    let pinned = pinned_key(dir, url)?.ok_or_else(|| HostListFileError::NotPinned {
        url: url.to_owned(),
        dir: dir.to_owned(),
    })?;
    let rejected = |source| HostListFileError::Rejected {
        path: path.to_owned(),
        source,
    };
    let list = signed.open(Some(&pinned)).map_err(rejected)?;
    list.check_for(me, now).map_err(rejected)?;
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::api::HostsResponse;
    use crate::network::identity::Identity;

    fn list_for(me: IdentityId, at: u64) -> String {
        serde_json::to_string(&HostsResponse {
            hosts: Vec::new(),
            redundancy: 2,
            member_via: me,
            issued_to: me,
            issued_at: at,
            tickets: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn pinned_signed_fresh_and_mine() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = Identity::generate();
        let me = Identity::generate().id();
        let url = "http://c:1";
        let signed = SignedHostList::sign(&coordinator, list_for(me, 1000));
        assert_eq!(
            pin(dir.path(), url, &signed.coordinator).unwrap(),
            Pinned::New
        );
        assert_eq!(
            pin(dir.path(), url, &signed.coordinator).unwrap(),
            Pinned::Known
        );
        let path = save(dir.path(), &signed).unwrap();
        assert!(load(&path, dir.path(), url, &me, 1001).is_ok());

        // Another member's list.
        let other = Identity::generate().id();
        let e = load(&path, dir.path(), url, &other, 1001).unwrap_err();
        assert!(e.to_string().contains("issued to"), "{e}");
        // Too old.
        let e = load(&path, dir.path(), url, &me, 1000 + 8 * 24 * 3600).unwrap_err();
        assert!(e.to_string().contains("old"), "{e}");
        // A coordinator with no pin.
        let e = load(&path, dir.path(), "http://elsewhere:1", &me, 1001).unwrap_err();
        assert!(matches!(e, HostListFileError::NotPinned { .. }), "{e}");

        // Someone on the path signs their own list with their own key.
        let mallory = SignedHostList::sign(&Identity::generate(), list_for(me, 1000));
        let path = save(dir.path(), &mallory).unwrap();
        let e = load(&path, dir.path(), url, &me, 1001).unwrap_err();
        assert!(e.to_string().contains("impersonating"), "{e}");

        // An altered list under the right key's signature.
        let mut altered = signed.clone();
        altered.list = altered.list.replace("\"redundancy\":2", "\"redundancy\":1");
        let path = save(dir.path(), &altered).unwrap();
        let e = load(&path, dir.path(), url, &me, 1001).unwrap_err();
        assert!(e.to_string().contains("altered"), "{e}");
    }
}
