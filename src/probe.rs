//! Running a compiler to learn its exact identity ([`crate::fingerprint`]):
//! the one edge that executes compilers outside a job. It runs them with a
//! minimal fixed environment, like the server runs jobs, and [`probe_cached`]
//! remembers results per compiler binary so a client does not pay ~50 ms per
//! compiler on every invocation.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fingerprint::{
    fingerprint_id, is_cxx_name, HostFacts, Toolchain, PROBE_C, PROBE_CXX, PROBE_FLAGS,
};

/// Longest probe or version output we keep; compilers print short lines.
const MAX_OUTPUT: usize = 64 * 1024;
/// A compiler that takes longer than this on the probe is broken or overloaded.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("compiler {0:?} not found in PATH; install it or name it with a full path")]
    NotFound(String),
    #[error("cannot run {compiler}: {source}")]
    Spawn {
        compiler: String,
        source: std::io::Error,
    },
    #[error("{compiler} {what} failed (status {status}): {stderr}")]
    Failed {
        compiler: String,
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{compiler} {what} took longer than {secs} s; it was killed")]
    Timeout {
        compiler: String,
        what: String,
        secs: u64,
    },
    #[error("{compiler}: {what}: {source}")]
    Io {
        compiler: String,
        what: String,
        source: std::io::Error,
    },
}

/// Find `name` in `path` (or take it as a path when it contains `/`), skipping
/// anything that resolves to one of `skip` (our own binary, so a masquerade
/// directory in `PATH` does not make us fingerprint ourselves) or that lives in a
/// directory whose name contains `distcc`.
pub fn resolve_compiler(name: &str, path: Option<&OsString>, skip: &[PathBuf]) -> Option<PathBuf> {
    let usable = |p: &Path| -> bool {
        let Ok(meta) = std::fs::metadata(p) else {
            return false;
        };
        if !meta.is_file() {
            return false;
        }
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return false;
        }
        let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        !skip.contains(&real)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return usable(&p).then_some(p);
    }
    let path = path.cloned().or_else(|| std::env::var_os("PATH"))?;
    for dir in std::env::split_paths(&path) {
        if dir.to_string_lossy().contains("distcc") {
            continue;
        }
        let cand = dir.join(name);
        if usable(&cand) {
            return Some(cand);
        }
    }
    None
}

/// Run the compiler's version queries and the probe compile.
pub fn probe(name: &str, compiler: &Path) -> Result<Toolchain, FingerprintError> {
    let shown = compiler.display().to_string();
    let version_out = run(compiler, &["--version"], None, "--version")?;
    let version = first_line(&version_out);
    if version.is_empty() {
        return Err(FingerprintError::Failed {
            compiler: shown,
            what: "--version".into(),
            status: "0".into(),
            stderr: "printed nothing".into(),
        });
    }
    // clang answers -dumpfullversion with an error; gcc answers it with "12.2.0".
    let full_version = run(compiler, &["-dumpfullversion"], None, "-dumpfullversion")
        .map(|o| first_line(&o))
        .unwrap_or_default();
    let target = first_line(&run(compiler, &["-dumpmachine"], None, "-dumpmachine")?);

    let dir = tempfile::Builder::new()
        .prefix("dportage-probe")
        .tempdir()
        .map_err(|e| FingerprintError::Io {
            compiler: shown.clone(),
            what: "creating a probe directory".into(),
            source: e,
        })?;
    let (src_name, lang, text) = if is_cxx_name(name) {
        ("probe.cc", "c++", PROBE_CXX)
    } else {
        ("probe.c", "c", PROBE_C)
    };
    std::fs::write(dir.path().join(src_name), text).map_err(|e| FingerprintError::Io {
        compiler: shown.clone(),
        what: "writing the probe source".into(),
        source: e,
    })?;
    let mut args: Vec<&str> = vec!["-x", lang];
    args.extend_from_slice(PROBE_FLAGS);
    args.extend_from_slice(&[src_name, "-o", "probe.o"]);
    run(compiler, &args, Some(dir.path()), "probe compile")?;
    let object = std::fs::read(dir.path().join("probe.o")).map_err(|e| FingerprintError::Io {
        compiler: shown.clone(),
        what: "reading the probe object".into(),
        source: e,
    })?;
    let probe_hash = blake3::hash(&object).to_hex().to_string();
    let id = fingerprint_id(&version, &full_version, &target, &probe_hash);
    Ok(Toolchain {
        name: name.to_string(),
        version,
        target,
        probe_hash,
        id,
    })
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(256)
        .collect()
}

/// Run `compiler ARGS` with a fixed minimal environment, bounded in time and
/// output; returns stdout.
fn run(
    compiler: &Path,
    args: &[&str],
    cwd: Option<&Path>,
    what: &str,
) -> Result<Vec<u8>, FingerprintError> {
    let shown = compiler.display().to_string();
    let mut cmd = Command::new(compiler);
    cmd.args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| FingerprintError::Spawn {
        compiler: shown.clone(),
        source: e,
    })?;
    // Readers on threads so a chatty compiler cannot block on a full pipe.
    let read_bounded = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(MAX_OUTPUT as u64).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read_bounded(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let err = read_bounded(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(FingerprintError::Timeout {
                    compiler: shown,
                    what: what.into(),
                    secs: PROBE_TIMEOUT.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return Err(FingerprintError::Io {
                    compiler: shown,
                    what: what.into(),
                    source: e,
                })
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(FingerprintError::Failed {
            compiler: shown,
            what: what.into(),
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr).chars().take(512).collect(),
        });
    }
    Ok(stdout)
}

/// What we remember about a compiler binary to know the cached probe still holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BinaryStamp {
    size: u64,
    mtime_ns: i128,
    inode: u64,
}

fn stamp(path: &Path) -> Option<BinaryStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(BinaryStamp {
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        inode: m.ino(),
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProbeCache {
    entries: BTreeMap<String, (BinaryStamp, Toolchain)>,
}

/// [`probe`], remembered in `cache_file` per (name, resolved binary, size, mtime,
/// inode). A cache that cannot be read or written is ignored: it only saves time.
pub fn probe_cached(
    name: &str,
    compiler: &Path,
    cache_file: &Path,
) -> Result<Toolchain, FingerprintError> {
    let real = std::fs::canonicalize(compiler).unwrap_or_else(|_| compiler.to_path_buf());
    let key = cache_key(name, &real);
    let current = stamp(&real);
    let mut cache = read_cache(cache_file);
    if let (Some(cur), Some((old, tc))) = (&current, cache.entries.get(&key)) {
        if cur == old {
            return Ok(tc.clone());
        }
    }
    let tc = probe(name, compiler)?;
    if let Some(cur) = current {
        cache.entries.insert(key, (cur, tc.clone()));
        if cache.entries.len() > 256 {
            let first = cache.entries.keys().next().cloned();
            if let Some(k) = first {
                cache.entries.remove(&k);
            }
        }
        if let Ok(bytes) = serde_json::to_vec_pretty(&cache) {
            let tmp = cache_file.with_extension(format!("tmp.{}", std::process::id()));
            if std::fs::write(&tmp, bytes).is_ok() {
                crate::shared_dir::share_with_group(
                    &tmp,
                    crate::shared_dir::GroupAccess::ReadWrite,
                );
                if std::fs::rename(&tmp, cache_file).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
        }
    }
    Ok(tc)
}

/// The cache of [`probe_cached`] inside `$DPORTAGE_DIR` (written by the
/// `dportage` command for the member's compilers).
pub const FINGERPRINT_CACHE_FILE: &str = "fingerprints.json";

/// Largest cache file read; a larger one is ignored.
const MAX_CACHE_FILE: u64 = 4 << 20;

fn cache_key(name: &str, real: &Path) -> String {
    format!("{name}\0{}", real.display())
}

fn read_cache(cache_file: &Path) -> ProbeCache {
    use std::io::Read;
    let mut bytes = Vec::new();
    match std::fs::File::open(cache_file) {
        Ok(f) => {
            if f.take(MAX_CACHE_FILE).read_to_end(&mut bytes).is_err()
                || bytes.len() as u64 >= MAX_CACHE_FILE
            {
                return ProbeCache::default();
            }
        }
        Err(_) => return ProbeCache::default(),
    }
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// What [`probe_cached`] remembers about `compiler` (run as `name`), without
/// running anything: `None` when the cache has no entry for that binary as it
/// is now (changed since, or never probed). An entry made under another name
/// of the same binary counts when both names are of one language (C or C++:
/// the probe compiles a different source for each), so `gcc` finds what
/// `dportage` probed as `cc` when both resolve to one compiler.
pub fn cached_toolchain(name: &str, compiler: &Path, cache_file: &Path) -> Option<Toolchain> {
    let real = std::fs::canonicalize(compiler).ok()?;
    let current = stamp(&real)?;
    let cache = read_cache(cache_file);
    if let Some((old, tc)) = cache.entries.get(&cache_key(name, &real)) {
        if *old == current {
            return Some(tc.clone());
        }
    }
    let path = real.display().to_string();
    cache
        .entries
        .iter()
        .find(|(key, (old, _))| {
            key.split_once('\0').is_some_and(|(other, p)| {
                p == path && is_cxx_name(other) == is_cxx_name(name) && *old == current
            })
        })
        .map(|(_, (_, tc))| tc.clone())
}

impl HostFacts {
    pub fn of_this_machine() -> Self {
        Self {
            libc: libc_version(),
            arch: std::env::consts::ARCH.to_string(),
            tz_offset_secs: timezone_offset_secs(),
        }
    }
}

/// glibc's version string, or what `ldd --version` says, or "unknown".
pub fn libc_version() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
        let ptr = unsafe { libc::gnu_get_libc_version() };
        if !ptr.is_null() {
            // SAFETY: non-null, static, NUL-terminated (glibc contract).
            let s = unsafe { std::ffi::CStr::from_ptr(ptr) };
            return format!("glibc {}", s.to_string_lossy());
        }
    }
    Command::new("ldd")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| first_line(&o.stdout))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Offset of local time from UTC now, in seconds (east positive).
pub fn timezone_offset_secs() -> i32 {
    // SAFETY: time(NULL) and localtime_r with valid pointers to stack values.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_gcc_is_stable_and_distinct_from_gxx() {
        let Some(gcc) = resolve_compiler("gcc", None, &[]) else {
            assert!(std::env::var_os("CI").is_none(), "gcc missing under CI");
            eprintln!("note: gcc not installed; skipping");
            return;
        };
        let a = probe("gcc", &gcc).expect("probe gcc");
        let b = probe("gcc", &gcc).expect("probe gcc again");
        assert_eq!(a, b, "probing twice must give the same fingerprint");
        assert!(
            a.version.contains("gcc") || a.version.contains("GCC"),
            "{a:?}"
        );
        assert!(!a.target.is_empty());
        if let Some(gxx) = resolve_compiler("g++", None, &[]) {
            let c = probe("g++", &gxx).expect("probe g++");
            assert_ne!(a.id, c.id, "C and C++ probes must differ");
        }
        if let Some(clang) = resolve_compiler("clang", None, &[]) {
            let d = probe("clang", &clang).expect("probe clang");
            assert_ne!(a.id, d.id, "gcc and clang must not be paired");
        }
    }

    #[test]
    fn cache_reuses_and_survives_garbage() {
        let Some(gcc) = resolve_compiler("gcc", None, &[]) else {
            assert!(std::env::var_os("CI").is_none(), "gcc missing under CI");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("fp.json");
        std::fs::write(&cache, b"not json").unwrap();
        let a = probe_cached("gcc", &gcc, &cache).unwrap();
        let b = probe_cached("gcc", &gcc, &cache).unwrap();
        assert_eq!(a, b);
        assert!(std::fs::read_to_string(&cache).unwrap().contains(&a.id));
    }

    #[test]
    fn cached_toolchains_are_found_without_probing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join(FINGERPRINT_CACHE_FILE);
        // Not a compiler: anything run would fail, so a hit proves nothing ran.
        let binary = dir.path().join("x86_64-linux-gnu-gcc-12");
        std::fs::write(&binary, b"#!/bin/false\n").unwrap();
        let link = dir.path().join("cc");
        std::os::unix::fs::symlink(&binary, &link).unwrap();
        assert_eq!(cached_toolchain("gcc", &binary, &cache), None, "no cache");
        let tc = |name: &str, id: char| Toolchain {
            name: name.into(),
            version: "gcc 12".into(),
            target: "x86_64-linux-gnu".into(),
            probe_hash: "a".repeat(64),
            id: id.to_string().repeat(64),
        };
        let real = std::fs::canonicalize(&binary).unwrap();
        let mut entries = BTreeMap::new();
        entries.insert(
            cache_key("cc", &real),
            (stamp(&real).unwrap(), tc("cc", 'c')),
        );
        let other = dir.path().join("clang");
        std::fs::write(&other, b"other").unwrap();
        let other = std::fs::canonicalize(&other).unwrap();
        entries.insert(
            cache_key("clang++", &other),
            (stamp(&other).unwrap(), tc("clang++", 'd')),
        );
        std::fs::write(&cache, serde_json::to_vec(&ProbeCache { entries }).unwrap()).unwrap();
        let id = |name: &str, path: &Path| cached_toolchain(name, path, &cache).map(|t| t.id);
        assert_eq!(id("cc", &link), Some("c".repeat(64)), "the exact entry");
        assert_eq!(id("gcc", &binary), Some("c".repeat(64)), "same binary, C");
        assert_eq!(id("x86_64-linux-gnu-gcc", &link), Some("c".repeat(64)));
        assert_eq!(
            id("g++", &binary),
            None,
            "a C++ driver name is not the C probe"
        );
        assert_eq!(id("clang", &other), None);
        assert_eq!(id("clang++", &other), Some("d".repeat(64)));
        // The binary changed since the probe: the entry no longer holds.
        std::fs::write(&binary, b"#!/bin/false\n# upgraded\n").unwrap();
        assert_eq!(id("cc", &link), None);
        std::fs::write(&cache, b"not json").unwrap();
        assert_eq!(id("clang++", &other), None);
    }

    #[test]
    fn facts() {
        let f = HostFacts::of_this_machine();
        assert!(!f.arch.is_empty());
        assert!(f.libc.starts_with("glibc") || f.libc != "unknown");
        assert!(f.tz_offset_secs.abs() <= 14 * 3600);
    }
}
