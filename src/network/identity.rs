//! Installation identities (Ed25519 key pairs in `$DPORTAGE_DIR`) and the
//! membership token a daemon hands to the people allowed to use its membership.
//!
//! Files in the identity directory (default `~/.dportage`, created 0700):
//!
//! | file | mode | what |
//! |---|---|---|
//! | `identity.key` | 0600 | the secret seed, hex, one line after a header line |
//! | `identity.pub` | 0644 | the public key (= the identity id), hex |
//! | `membership.json` | 0640 | written by a daemon: its signed membership token |
//!
//! The key is created atomically (written to a private temporary file, then
//! hard-linked into place), so two processes starting at once end up sharing one
//! key instead of overwriting each other.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::NetworkError;
use crate::shared_dir::GroupAccess;

pub const KEY_FILE: &str = "identity.key";
pub const PUB_FILE: &str = "identity.pub";
pub const MEMBERSHIP_FILE: &str = "membership.json";
const KEY_HEADER: &str = "dportage-ed25519-secret-v1";
/// How long a membership token is accepted after it was issued. The daemon
/// rewrites it long before that; a leaked old copy stops working.
pub const MEMBERSHIP_TOKEN_LIFETIME_SECS: u64 = 7 * 24 * 3600;
const MEMBERSHIP_CONTEXT: &[u8] = b"dportage-membership-v1\n";

/// An identity's public key; its lowercase hex form is the id shown to people.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityId(pub [u8; 32]);

impl IdentityId {
    /// No identity: what a field absent from an old peer's message means.
    pub fn zero() -> Self {
        IdentityId([0; 32])
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityId({})", self.short())
    }
}

/// Why text is not an identity id (as `identity.pub`, `--admin-key` and the
/// `X-Dportage-Key` header carry it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IdentityIdError {
    #[error("identity {value:?} is not 64 hex digits (it is {len} characters)")]
    Length { value: String, len: usize },
    #[error("identity {value:?} is not hex: {source}")]
    NotHex {
        value: String,
        source: hex::FromHexError,
    },
}

impl IdentityId {
    /// Parse the 64 hex digits of an id (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, IdentityIdError> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(IdentityIdError::Length {
                value: s.to_owned(),
                len: s.len(),
            });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|source| IdentityIdError::NotHex {
            value: s.to_owned(),
            source,
        })?;
        Ok(IdentityId(out))
    }
}

/// [`IdentityId::from_hex`] with the error as text, because the coordinator's
/// store puts it in a `String` field (`StoreError::BadRow`). Switch that to
/// `from_hex` and this `Err` to [`IdentityIdError`] together.
impl FromStr for IdentityId {
    type Err = IdentityIdError;
    fn from_str(s: &str) -> Result<Self, IdentityIdError> {
        Self::from_hex(s)
    }
}

impl Serialize for IdentityId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for IdentityId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        IdentityId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A key pair.
pub struct Identity {
    signing: SigningKey,
    id: IdentityId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.id.short())
    }
}

impl Identity {
    /// A fresh random key pair (not stored anywhere).
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Self::from_seed(seed)
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let id = IdentityId(signing.verifying_key().to_bytes());
        Self { signing, id }
    }

    pub fn id(&self) -> IdentityId {
        self.id
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// Load `dir/identity.key`; never creates one.
    pub fn load(dir: &Path) -> Result<Self, NetworkError> {
        let key_path = dir.join(KEY_FILE);
        let text = std::fs::read_to_string(&key_path)
            .map_err(|e| NetworkError::io(format!("reading {}", key_path.display()), e))?;
        Self::parse_key_file(&key_path, &text)
    }

    /// Load `dir/identity.key`, creating the directory (0700) and the key (0600)
    /// on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, NetworkError> {
        let key_path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&key_path) {
            Ok(text) => return Self::parse_key_file(&key_path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(NetworkError::io(
                    format!("reading {}", key_path.display()),
                    e,
                ))
            }
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| NetworkError::io(format!("creating {}", dir.display()), e))?;
        let fresh = Self::generate();
        // Unique per process and per thread: both race on first use.
        let tmp = dir.join(format!(
            ".{KEY_FILE}.{}.{:016x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        let text = format!("{KEY_HEADER}\n{}\n", hex::encode(fresh.signing.to_bytes()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(NetworkError::io(format!("writing {}", tmp.display()), e));
        }
        // link() fails if another process won the race: use its key then.
        let linked = std::fs::hard_link(&tmp, &key_path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                // In the machine-wide directory everyone in the group signs
                // as the machine (never others: see `shared_dir`).
                crate::shared_dir::share_with_group(&key_path, GroupAccess::Read);
                let _ = write_public(dir, fresh.id);
                tracing::info!("created identity {} in {}", fresh.id, dir.display());
                Ok(fresh)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&key_path)
                    .map_err(|e| NetworkError::io(format!("reading {}", key_path.display()), e))?;
                Self::parse_key_file(&key_path, &text)
            }
            Err(e) => Err(NetworkError::io(
                format!("creating {}", key_path.display()),
                e,
            )),
        }
    }

    fn parse_key_file(path: &Path, text: &str) -> Result<Self, NetworkError> {
        let bad = |why: &str| NetworkError::BadKeyFile {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(KEY_HEADER) {
            return Err(bad("the first line is not the dportage key header"));
        }
        let hexseed = lines.next().map(str::trim).unwrap_or("");
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hexseed, &mut seed)
            .map_err(|_| bad("the second line is not 64 hex digits"))?;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o007 != 0 {
                tracing::warn!(
                    "{} is accessible by other users (mode {:o}); run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
        }
        Ok(Self::from_seed(seed))
    }

    /// A membership token signed by this (daemon) identity, issued at `now`.
    pub fn membership_token(&self, now_unix: u64) -> MembershipToken {
        let msg = MembershipToken::signed_bytes(self.id, now_unix, None);
        MembershipToken {
            v: 1,
            daemon: self.id,
            issued: now_unix,
            person: None,
            sig: hex::encode(self.sign(&msg)),
        }
    }

    /// A token only `person`'s key can link with (a leaked copy is worth
    /// nothing to anyone else).
    pub fn membership_token_for(&self, person: IdentityId, now_unix: u64) -> MembershipToken {
        let msg = MembershipToken::signed_bytes(self.id, now_unix, Some(&person));
        MembershipToken {
            v: 2,
            daemon: self.id,
            issued: now_unix,
            person: Some(person),
            sig: hex::encode(self.sign(&msg)),
        }
    }
}

fn write_public(dir: &Path, id: IdentityId) -> std::io::Result<()> {
    let path = dir.join(PUB_FILE);
    let tmp = dir.join(format!(
        ".{PUB_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

/// `$DPORTAGE_DIR`; else `~/.dportage` if it exists; else the machine-wide
/// directory (`/var/lib/dportage`) if this user may write it (the `dportage`
/// group); else `~/.dportage`. See [`crate::shared_dir`].
pub fn dportage_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    };
    resolve_dportage_dir(
        var("DPORTAGE_DIR"),
        Some(home_dir()),
        var("DPORTAGE_SYSTEM_DIR"),
    )
    .unwrap_or_else(|| home_dir().join(".dportage"))
}

/// [`dportage_dir`] from the values of `DPORTAGE_DIR`, `HOME` and
/// `DPORTAGE_SYSTEM_DIR` (for the compile client, which reads its settings
/// through one lookup). `None` without `DPORTAGE_DIR` and without a home.
pub fn resolve_dportage_dir(
    explicit: Option<PathBuf>,
    home: Option<PathBuf>,
    system: Option<PathBuf>,
) -> Option<PathBuf> {
    if explicit.is_some() {
        return explicit;
    }
    let personal = home?.join(".dportage");
    let system = system.unwrap_or_else(|| PathBuf::from(crate::shared_dir::SYSTEM_DIR));
    let personal_exists = personal.is_dir();
    let system_writable = !personal_exists && crate::shared_dir::writable(&system);
    Some(crate::shared_dir::choose(
        None,
        personal,
        personal_exists,
        system,
        system_writable,
    ))
}

/// Where a daemon keeps its identity, and the machine-wide directory it
/// serves when it uses that one: `$DPORTAGE_DIR` or an existing
/// `~/.dportage` (no shared directory); else, when this user may write the
/// machine-wide directory, its `daemon/` (created 0700 without the
/// set-group-ID bit, so the group never reads the daemon's key); else
/// `~/.dportage`.
pub fn daemon_dir() -> (PathBuf, Option<PathBuf>) {
    let chosen = dportage_dir();
    let system = crate::shared_dir::system_dir();
    if chosen != system {
        return (chosen, None);
    }
    let dir = system.join(crate::shared_dir::DAEMON_SUBDIR);
    if !dir.is_dir() {
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    }
    // mkdir copies the parent's set-group-ID bit; the key is the daemon's alone.
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    (dir, Some(system))
}

/// `$HOME`, else the password database's home directory, else `/`.
fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // SAFETY: getpwuid returns a pointer to static storage or NULL.
            unsafe {
                let pw = libc::getpwuid(libc::getuid());
                if pw.is_null() || (*pw).pw_dir.is_null() {
                    PathBuf::from("/")
                } else {
                    PathBuf::from(
                        std::ffi::CStr::from_ptr((*pw).pw_dir)
                            .to_string_lossy()
                            .into_owned(),
                    )
                }
            }
        })
}

/// Why a membership token is refused; the coordinator sends the text back
/// to the person who presented it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipTokenError {
    #[error("membership token version {0} is not supported (expected 1)")]
    Version(u32),
    #[error(
        "membership token is issued in the future (at {issued}, {} s ahead of this clock); \
         check the daemon's clock",
        .issued.saturating_sub(*.now)
    )]
    FromTheFuture { issued: u64, now: u64 },
    #[error(
        "membership token is older than {} days (issued at {issued}); the daemon rewrites it \
         while it runs",
        MEMBERSHIP_TOKEN_LIFETIME_SECS / 86400
    )]
    Expired { issued: u64 },
    #[error("membership token signature is not 128 hex digits")]
    SignatureEncoding,
    #[error("membership token names an invalid public key ({0})")]
    BadKey(IdentityId),
    #[error("membership token signature does not verify for daemon {0}")]
    BadSignature(IdentityId),
}

/// A daemon's statement "this person may use my membership" (v2, `person`
/// set: only that key can link with it; `dportage membership-token --for`)
/// or "whoever holds this may" (v1, the group-readable `membership.json`
/// the daemon writes for the people of its own machine). A person's
/// `dportage` presents it once (`POST /v1/link`) and is then linked to that
/// daemon (same owner) until the daemon unlinks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipToken {
    pub v: u32,
    pub daemon: IdentityId,
    pub issued: u64,
    /// v2: the one key this token links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<IdentityId>,
    /// Ed25519 signature (hex) by `daemon` over [`MembershipToken::signed_bytes`].
    pub sig: String,
}

impl MembershipToken {
    pub fn signed_bytes(daemon: IdentityId, issued: u64, person: Option<&IdentityId>) -> Vec<u8> {
        let mut m = MEMBERSHIP_CONTEXT.to_vec();
        m.extend_from_slice(daemon.to_string().as_bytes());
        m.push(b'\n');
        m.extend_from_slice(issued.to_string().as_bytes());
        if let Some(p) = person {
            m.extend_from_slice(b"\nfor ");
            m.extend_from_slice(p.to_string().as_bytes());
        }
        m
    }

    /// Check the signature and the age. Returns the daemon's id.
    pub fn verify(&self, now_unix: u64) -> Result<IdentityId, MembershipTokenError> {
        if !matches!((self.v, &self.person), (1, None) | (2, Some(_))) {
            return Err(MembershipTokenError::Version(self.v));
        }
        if self.issued > now_unix + super::clock::CLOCK_WINDOW_SECS {
            return Err(MembershipTokenError::FromTheFuture {
                issued: self.issued,
                now: now_unix,
            });
        }
        if now_unix.saturating_sub(self.issued) > MEMBERSHIP_TOKEN_LIFETIME_SECS {
            return Err(MembershipTokenError::Expired {
                issued: self.issued,
            });
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.sig, &mut sig)
            .map_err(|_| MembershipTokenError::SignatureEncoding)?;
        let key = VerifyingKey::from_bytes(&self.daemon.0)
            .map_err(|_| MembershipTokenError::BadKey(self.daemon))?;
        key.verify_strict(
            &Self::signed_bytes(self.daemon, self.issued, self.person.as_ref()),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| MembershipTokenError::BadSignature(self.daemon))?;
        Ok(self.daemon)
    }
}

/// Write `token` to `path` atomically with mode 0640 (group-readable, so people
/// in the daemon's group can present it).
pub fn write_membership_token(path: &Path, token: &MembershipToken) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".membership.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let bytes = serde_json::to_vec_pretty(token).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))?;
    std::fs::rename(&tmp, path)
}

/// Where a person's `dportage` looks for daemon membership tokens, in order:
/// `$DPORTAGE_MEMBERSHIP` (a file), `$DPORTAGE_DIR/membership.json`,
/// `/var/lib/dportage/membership.json`, `/etc/dportage/membership.json`.
pub fn membership_token_paths(own_dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("DPORTAGE_MEMBERSHIP").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    v.push(own_dir.join(MEMBERSHIP_FILE));
    v.push(PathBuf::from("/var/lib/dportage").join(MEMBERSHIP_FILE));
    v.push(PathBuf::from("/etc/dportage").join(MEMBERSHIP_FILE));
    v
}

/// Read the tokens that exist and parse (signatures are checked by the coordinator).
pub fn read_membership_tokens(own_dir: &Path) -> Vec<(PathBuf, MembershipToken)> {
    let mut out = Vec::new();
    for p in membership_token_paths(own_dir) {
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        if bytes.len() > 16 * 1024 {
            continue;
        }
        match serde_json::from_slice::<MembershipToken>(&bytes) {
            Ok(t) => out.push((p, t)),
            Err(e) => tracing::warn!("ignoring {}: not a membership token ({e})", p.display()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_created_private_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sub").join(".dportage");
        let a = Identity::load_or_create(&dir).unwrap();
        let b = Identity::load_or_create(&dir).unwrap();
        assert_eq!(a.id(), b.id());
        let dmode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        let kmode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(kmode, 0o600);
        let pubtext = std::fs::read_to_string(dir.join(PUB_FILE)).unwrap();
        assert_eq!(pubtext.trim(), a.id().to_string());
    }

    #[test]
    fn concurrent_creation_agrees() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let ids: Vec<IdentityId> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Identity::load_or_create(&dir).unwrap().id()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "all processes must end with one key"
        );
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_a_new_key() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(KEY_FILE), "garbage\n").unwrap();
        let e = Identity::load_or_create(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("identity.key"), "{e}");
    }

    #[test]
    fn id_text_round_trip() {
        let id = Identity::generate().id();
        let s = id.to_string();
        assert_eq!(s.parse::<IdentityId>().unwrap(), id);
        assert!(matches!(
            IdentityId::from_hex("abc"),
            Err(IdentityIdError::Length { len: 3, .. })
        ));
        assert!(matches!(
            IdentityId::from_hex(&"zz".repeat(32)),
            Err(IdentityIdError::NotHex { .. })
        ));
        let e = "zz".repeat(32).parse::<IdentityId>().unwrap_err();
        assert!(e.to_string().contains(&"zz".repeat(32)), "{e}");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<IdentityId>(&json).unwrap(), id);
    }

    #[test]
    fn membership_token_checks() {
        let d = Identity::generate();
        let t = d.membership_token(1_000_000);
        assert_eq!(t.verify(1_000_100).unwrap(), d.id());
        assert_eq!(
            t.verify(1_000_000 + MEMBERSHIP_TOKEN_LIFETIME_SECS + 1),
            Err(MembershipTokenError::Expired { issued: 1_000_000 }),
        );
        assert!(matches!(
            t.verify(0),
            Err(MembershipTokenError::FromTheFuture { .. })
        ));
        let mut forged = t.clone();
        forged.issued += 1;
        assert!(forged.verify(1_000_100).is_err(), "issued time is signed");
        let mut other = t.clone();
        other.daemon = Identity::generate().id();
        assert!(other.verify(1_000_100).is_err(), "daemon id is signed");
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(MEMBERSHIP_FILE);
        write_membership_token(&p, &t).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let found = read_membership_tokens(tmp.path());
        assert!(found.iter().any(|(_, f)| *f == t));
    }
}
