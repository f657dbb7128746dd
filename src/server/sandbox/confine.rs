//! What the confined compiler may do: prepared by the zygote (or the
//! trampoline) and applied in the compiler's own process right before `exec`.
//!
//! * rlimits: CORE 0, CPU, AS, FSIZE, NOFILE, NPROC (hard = soft, so the
//!   compiler cannot raise them again; CPU's hard limit is 2 s later, so
//!   SIGXCPU comes first and the compiler can report it), and a nice value of
//!   at least `--min-nice`.
//! * `PR_SET_NO_NEW_PRIVS` (needed for unprivileged Landlock and seccomp; also
//!   makes set-uid binaries inert).
//! * Landlock (unless `--sandbox off`): read+execute on the toolchain only,
//!   read-write in the job directory, read-write `/dev/null`; TCP bind and
//!   connect denied; no signals or abstract-socket connections out of the
//!   sandbox. Everything else on the filesystem is denied for open, create,
//!   remove and execute — `/tmp`, `/etc/passwd`, `/root`, `$HOME` included.
//! * seccomp (unless `--sandbox off`): `socket` and a few kernel interfaces a
//!   compiler never uses fail with `EACCES` (covers UDP and Unix sockets,
//!   which Landlock ABI ≤ 7 does not restrict).
//!
//! Measured with strace on Debian 12: gcc, g++, cc1, cc1plus, as and clang 14
//! open nothing outside `/usr`, `/lib*` and `/etc/ld.so.cache` when run with
//! `LC_ALL=C` and relative file names; clang additionally reads the distro
//! identification files (`/etc/os-release` → `/usr/lib/os-release`,
//! `/etc/debian_version`) and lists `/opt` (harmlessly denied). Readlink and
//! stat are not restricted by Landlock, so `/proc/self/exe` lookups still work.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use landlock::{
    make_bitflags, path_beneath_rules, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, Scope, ABI,
};

use super::SandboxSpec;
use crate::server::limits::SandboxMode;

/// The Landlock ABI whose rights are requested (tested on a 6.18 kernel with
/// ABI 7). Older kernels get the subset they support (best effort).
const ABI_USED: ABI = ABI::V6;

/// Rights inside the job directory: everything a compiler does with its
/// input, output and temporary files. No execute, no devices, fifos,
/// sockets or symlinks.
pub const JOB_DIR_ACCESS: BitFlags<AccessFs> = make_bitflags!(AccessFs::{
    ReadFile | WriteFile | ReadDir | RemoveDir | RemoveFile | MakeDir | MakeReg | Truncate
});

const DEV_NULL_ACCESS: BitFlags<AccessFs> = make_bitflags!(AccessFs::{
    ReadFile | WriteFile | Truncate
});

/// Toolchain directories and files the compiler may read and execute, where
/// they exist: the system prefix, the loader's configuration, alternatives
/// links, and the distro identification files clang reads.
const TOOLCHAIN: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/os-release",
    "/etc/lsb-release",
    "/etc/debian_version",
    "/etc/redhat-release",
    "/etc/system-release",
    "/etc/SuSE-release",
    "/etc/gentoo-release",
    "/etc/alpine-release",
];

/// The toolchain paths that exist on this machine and would be readable for a
/// compiler found at `program` (also for reports and tests).
pub fn toolchain_read_paths(program: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = TOOLCHAIN
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    let canonical = std::fs::canonicalize(program).ok();
    for found in std::iter::once(program.to_path_buf()).chain(canonical) {
        let Some(dir) = found.parent() else { continue };
        if under_any(dir, &paths) {
            continue;
        }
        paths.push(dir.to_path_buf());
        // `PREFIX/bin/gcc` needs `PREFIX/libexec`, `PREFIX/lib`, …: allow the
        // prefix, but only when it looks like an installation prefix.
        if let Some(prefix) = dir.parent() {
            let looks_installed = ["lib", "libexec", "lib64"]
                .iter()
                .any(|sub| prefix.join(sub).is_dir());
            if dir.file_name() == Some("bin".as_ref())
                && prefix != Path::new("/")
                && looks_installed
                && !under_any(prefix, &paths)
            {
                paths.push(prefix.to_path_buf());
            }
        }
    }
    paths
}

fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|root| path.starts_with(root))
}

/// The toolchain a compiler may read and execute, opened (`O_PATH`) with
/// the Landlock rights each entry gets: a directory tree, or one file.
/// Opening and stat-ing a dozen paths per job was a fifth of the zygote's
/// CPU, so the zygote keeps these per compiler ([`ToolchainCache`]).
pub(super) struct Toolchain(Vec<(PathFd, BitFlags<AccessFs>)>);

impl Toolchain {
    pub(super) fn open(program: &Path) -> Self {
        let read = AccessFs::from_read(ABI_USED);
        let entries = toolchain_read_paths(program)
            .into_iter()
            // A path that vanished since it was listed simply stays unreadable.
            .filter_map(|path| {
                let is_dir = std::fs::metadata(&path).ok()?.is_dir();
                let fd = PathFd::new(&path).ok()?;
                let access = if is_dir {
                    read
                } else {
                    read & AccessFs::from_file(ABI_USED)
                };
                Some((fd, access))
            })
            .collect();
        Toolchain(entries)
    }
}

/// [`Toolchain`]s by compiler, for a long-lived process. Keyed by the path
/// the compiler was found at and the path it resolves to, so re-pointing a
/// link (`update-alternatives`) opens the new toolchain.
#[derive(Default)]
pub(super) struct ToolchainCache(std::collections::HashMap<(PathBuf, PathBuf), Rc<Toolchain>>);

/// Distinct compilers a server runs are few; this only bounds a pathological case.
const TOOLCHAIN_CACHE_MAX: usize = 64;

impl ToolchainCache {
    pub(super) fn get(&mut self, program: &Path) -> Rc<Toolchain> {
        let canonical = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
        let key = (program.to_path_buf(), canonical);
        if let Some(found) = self.0.get(&key) {
            return Rc::clone(found);
        }
        if self.0.len() >= TOOLCHAIN_CACHE_MAX {
            self.0.clear();
        }
        let toolchain = Rc::new(Toolchain::open(program));
        self.0.insert(key, Rc::clone(&toolchain));
        toolchain
    }
}

/// Paths resolved before the compiler's process exists, so it only applies them.
pub(super) struct Rules {
    read_exec: Rc<Toolchain>,
    job_dir: PathBuf,
}

impl Rules {
    pub(super) fn with_toolchain(spec: &SandboxSpec, toolchain: Rc<Toolchain>) -> Self {
        Self {
            read_exec: toolchain,
            job_dir: spec.job_dir.clone(),
        }
    }
}

/// Every restriction of one job, resolved before the compiler's process is
/// created: the rlimit values, the Landlock ruleset (an open descriptor with
/// its rules added) and the seccomp program. Applying it ([`Prepared::apply`])
/// is a handful of system calls with no allocation, so it is safe in a child
/// that shares the zygote's memory (`CLONE_VM | CLONE_VFORK`).
pub(super) struct Prepared {
    limits: [(libc::__rlimit_resource_t, &'static str, libc::rlimit); 6],
    min_nice: i32,
    /// `None`: no sandbox requested (`--sandbox off`) or the kernel has no
    /// Landlock (best effort).
    landlock: Option<OwnedFd>,
    seccomp: Option<Vec<libc::sock_filter>>,
    seccomp_required: bool,
}

/// A failed step of [`Prepared::apply`]: what failed, and errno.
#[derive(Debug, Clone, Copy)]
pub(super) struct ApplyError {
    pub what: &'static str,
    pub errno: i32,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

/// Why the restrictions of a job could not be prepared: the compiler is not
/// started, and the client is told why.
#[derive(Debug, thiserror::Error)]
pub(super) enum PrepareError {
    #[error("cannot read the daemon's rlimits: {0}")]
    Rlimits(std::io::Error),
    #[error("cannot set up the Landlock sandbox: {0}")]
    Landlock(RulesetError),
    #[error("{}", NO_LANDLOCK)]
    NoLandlock,
}

/// Resolve every restriction of `spec` (in the parent: may allocate, open
/// files and fail).
pub(super) fn prepare(spec: &SandboxSpec, rules: &Rules) -> Result<Prepared, PrepareError> {
    let limits = rlimits(spec)?;
    let (landlock, seccomp) = if spec.mode == SandboxMode::Off {
        (None, None)
    } else {
        (landlock_ruleset(rules)?, seccomp_program())
    };
    let required = spec.mode == SandboxMode::Required;
    if required && landlock.is_none() {
        return Err(PrepareError::NoLandlock);
    }
    Ok(Prepared {
        limits,
        min_nice: spec.min_nice,
        landlock,
        seccomp,
        seccomp_required: required,
    })
}

impl Prepared {
    /// Restrict the calling process: rlimits, nice, no-new-privs, Landlock,
    /// seccomp, in that order (seccomp last: it may deny what the others need).
    /// Only system calls on memory prepared beforehand: no allocation, no
    /// locks, so it may run in a `CLONE_VM` child.
    pub(super) fn apply(&self) -> Result<(), ApplyError> {
        let fail = |what: &'static str| ApplyError {
            what,
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        };
        for (resource, name, wanted) in &self.limits {
            // SAFETY: setrlimit with a valid pointer.
            if unsafe { libc::setrlimit(*resource, wanted) } != 0 {
                return Err(fail(name));
            }
        }
        // Raise the nice value to at least `min_nice`; never lower it (that
        // needs privileges and would undo a daemon's larger `--nice`).
        // SAFETY: getpriority/setpriority on this process; errno separates a
        // legitimate -1 from an error.
        unsafe {
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, 0);
            if current == -1 && *libc::__errno_location() != 0 {
                return Err(fail("cannot read the nice value"));
            }
            if current < self.min_nice
                && libc::setpriority(libc::PRIO_PROCESS, 0, self.min_nice) != 0
            {
                return Err(fail("cannot lower the compiler's priority"));
            }
        }
        // SAFETY: prctl with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail("cannot set no-new-privileges"));
        }
        if let Some(ruleset) = &self.landlock {
            // SAFETY: a Landlock ruleset descriptor and no flags.
            let r = unsafe {
                libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32)
            };
            // The kernel created the ruleset, so it has Landlock: failing to
            // enforce it is an error even in best-effort mode.
            if r != 0 {
                return Err(fail("cannot enforce the Landlock sandbox"));
            }
        }
        if let Some(program) = &self.seccomp {
            let fprog = libc::sock_fprog {
                len: program.len() as u16,
                filter: program.as_ptr().cast_mut(),
            };
            // SAFETY: fprog points at `program`, alive for the call; no-new-privs is set.
            let r = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog,
                    0,
                    0,
                )
            };
            if r != 0 && self.seccomp_required {
                return Err(fail("cannot install the seccomp filter"));
            }
        }
        Ok(())
    }
}

/// The rlimits of `spec` (hard = soft, except CPU: its hard limit is two
/// seconds later, so SIGXCPU comes first and the compiler can report it),
/// never above a hard limit the daemon itself runs under.
#[allow(clippy::type_complexity)]
fn rlimits(
    spec: &SandboxSpec,
) -> Result<[(libc::__rlimit_resource_t, &'static str, libc::rlimit); 6], PrepareError> {
    let wanted = [
        (libc::RLIMIT_CORE, "cannot set RLIMIT_CORE", 0, 0),
        (
            libc::RLIMIT_CPU,
            "cannot set RLIMIT_CPU",
            spec.cpu_secs,
            spec.cpu_secs.saturating_add(2),
        ),
        (
            libc::RLIMIT_AS,
            "cannot set RLIMIT_AS",
            spec.address_space,
            spec.address_space,
        ),
        (
            libc::RLIMIT_FSIZE,
            "cannot set RLIMIT_FSIZE",
            spec.max_file_size,
            spec.max_file_size,
        ),
        (
            libc::RLIMIT_NOFILE,
            "cannot set RLIMIT_NOFILE",
            spec.max_open_files,
            spec.max_open_files,
        ),
        (
            libc::RLIMIT_NPROC,
            "cannot set RLIMIT_NPROC",
            spec.max_processes,
            spec.max_processes,
        ),
    ];
    let empty = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let mut out = [(libc::RLIMIT_CORE, "", empty); 6];
    for (slot, (resource, name, soft, hard)) in out.iter_mut().zip(wanted) {
        let mut current = empty;
        // SAFETY: getrlimit with a valid pointer.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            return Err(PrepareError::Rlimits(std::io::Error::last_os_error()));
        }
        let max = hard.min(current.rlim_max);
        *slot = (
            resource,
            name,
            libc::rlimit {
                rlim_cur: soft.min(max),
                rlim_max: max,
            },
        );
    }
    Ok(out)
}

/// The job's Landlock ruleset with every rule added, not yet enforced.
/// `None` when the kernel has no Landlock (best effort).
fn landlock_ruleset(rules: &Rules) -> Result<Option<OwnedFd>, PrepareError> {
    let created = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_USED))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| {
            r.add_rules(
                rules
                    .read_exec
                    .0
                    .iter()
                    .map(|(fd, access)| Ok::<_, RulesetError>(PathBeneath::new(fd, *access))),
            )
        })
        .and_then(|r| r.add_rules(path_beneath_rules([&rules.job_dir], JOB_DIR_ACCESS)))
        .and_then(|r| r.add_rules(path_beneath_rules(["/dev/null"], DEV_NULL_ACCESS)))
        .map_err(PrepareError::Landlock)?;
    Ok(created.into())
}

/// Why a required sandbox is impossible, and what to do.
pub const NO_LANDLOCK: &str = "this server requires a sandbox (--sandbox required) but the \
kernel enforces no Landlock rules (needs Linux 5.13+ with `landlock` in the lsm= boot \
parameter); refusing to run the compiler. Use --sandbox best-effort to compile unconfined.";

/// A classic-BPF seccomp filter: the listed syscalls fail with `EACCES`, as
/// does every syscall of a foreign ABI (i386 `int 0x80`, x32). `None` where no
/// filter is built for the architecture (Landlock still applies).
fn seccomp_program() -> Option<Vec<libc::sock_filter>> {
    #[cfg(target_arch = "x86_64")]
    const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        return None;
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        const DENIED: &[libc::c_long] = &[
            libc::SYS_socket,
            libc::SYS_io_uring_setup,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_ptrace,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
        ];
        let deny = libc::SECCOMP_RET_ERRNO | (libc::EACCES as u32 & libc::SECCOMP_RET_DATA);
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jump_to_deny = |code: u32, k: u32, checks_left: usize| libc::sock_filter {
            code: code as u16,
            // Skip the remaining checks and the ALLOW: land on DENY.
            jt: checks_left as u8,
            jf: 0,
            k,
        };
        // seccomp_data: int nr at offset 0, u32 arch at offset 4.
        let mut program = vec![
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 1,
                jf: 0,
                k: NATIVE_ARCH,
            },
            stmt(libc::BPF_RET | libc::BPF_K, deny),
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        ];
        let mut checks: Vec<(u32, u32)> = Vec::new();
        if cfg!(target_arch = "x86_64") {
            // x32 syscalls carry this bit.
            checks.push((libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, 0x4000_0000));
        }
        checks.extend(
            DENIED
                .iter()
                .map(|&nr| (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr as u32)),
        );
        let n = checks.len();
        for (i, (code, k)) in checks.into_iter().enumerate() {
            program.push(jump_to_deny(code, k, n - i));
        }
        program.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
        program.push(stmt(libc::BPF_RET | libc::BPF_K, deny));
        Some(program)
    }
}
