//! What the confined compiler may do, applied in the forked child of the
//! trampoline right before `exec`.
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

use std::path::{Path, PathBuf};

use landlock::{
    make_bitflags, path_beneath_rules, Access, AccessFs, AccessNet, BitFlags, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::SandboxSpec;
use crate::server::job::SandboxMode;

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

/// Paths resolved before `fork`, so the child only applies them.
pub(super) struct Rules {
    read_exec: Vec<PathBuf>,
    job_dir: PathBuf,
}

impl Rules {
    pub(super) fn new(spec: &SandboxSpec, program: &Path) -> Self {
        Self {
            read_exec: toolchain_read_paths(program),
            job_dir: spec.job_dir.clone(),
        }
    }
}

/// Apply every restriction of `spec` to the calling (single-threaded) process.
pub(super) fn apply(spec: &SandboxSpec, rules: &Rules) -> Result<(), String> {
    set_limits(spec)?;
    lower_priority(spec.min_nice)?;
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "cannot set no-new-privileges: {}",
            std::io::Error::last_os_error()
        ));
    }
    if spec.mode == SandboxMode::Off {
        return Ok(());
    }
    let required = spec.mode == SandboxMode::Required;
    landlock(rules, required)?;
    match seccomp() {
        Err(e) if required => Err(e),
        _ => Ok(()),
    }
}

/// Raise the nice value to at least `min_nice`; never lower it (that needs
/// privileges and would undo a daemon's larger `--nice`).
fn lower_priority(min_nice: i32) -> Result<(), String> {
    // SAFETY: getpriority/setpriority on this process; errno separates a
    // legitimate -1 from an error.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        if current == -1 && *libc::__errno_location() != 0 {
            return Err(format!(
                "cannot read the nice value: {}",
                std::io::Error::last_os_error()
            ));
        }
        if current < min_nice && libc::setpriority(libc::PRIO_PROCESS, 0, min_nice) != 0 {
            return Err(format!(
                "cannot lower the compiler's priority to nice {min_nice}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn set_limits(spec: &SandboxSpec) -> Result<(), String> {
    let limits = [
        (libc::RLIMIT_CORE, "RLIMIT_CORE", 0, 0),
        (
            libc::RLIMIT_CPU,
            "RLIMIT_CPU",
            spec.cpu_secs,
            spec.cpu_secs.saturating_add(2),
        ),
        (
            libc::RLIMIT_AS,
            "RLIMIT_AS",
            spec.address_space,
            spec.address_space,
        ),
        (
            libc::RLIMIT_FSIZE,
            "RLIMIT_FSIZE",
            spec.max_file_size,
            spec.max_file_size,
        ),
        (
            libc::RLIMIT_NOFILE,
            "RLIMIT_NOFILE",
            spec.max_open_files,
            spec.max_open_files,
        ),
        (
            libc::RLIMIT_NPROC,
            "RLIMIT_NPROC",
            spec.max_processes,
            spec.max_processes,
        ),
    ];
    for (resource, name, soft, hard) in limits {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with valid pointers.
        unsafe {
            if libc::getrlimit(resource, &mut current) != 0 {
                return Err(format!(
                    "cannot read {name}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // Never try to raise a limit the daemon itself runs under.
            let max = hard.min(current.rlim_max);
            let wanted = libc::rlimit {
                rlim_cur: soft.min(max),
                rlim_max: max,
            };
            if libc::setrlimit(resource, &wanted) != 0 {
                return Err(format!(
                    "cannot set {name}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

fn landlock(rules: &Rules, required: bool) -> Result<(), String> {
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_USED))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                &rules.read_exec,
                AccessFs::from_read(ABI_USED),
            ))
        })
        .and_then(|r| r.add_rules(path_beneath_rules([&rules.job_dir], JOB_DIR_ACCESS)))
        .and_then(|r| r.add_rules(path_beneath_rules(["/dev/null"], DEV_NULL_ACCESS)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("cannot set up the Landlock sandbox: {e}"))?;
    if required && status.ruleset == RulesetStatus::NotEnforced {
        return Err(NO_LANDLOCK.into());
    }
    Ok(())
}

/// Why a required sandbox is impossible, and what to do.
pub const NO_LANDLOCK: &str = "this server requires a sandbox (--sandbox required) but the \
kernel enforces no Landlock rules (needs Linux 5.13+ with `landlock` in the lsm= boot \
parameter); refusing to run the compiler. Use --sandbox best-effort to compile unconfined.";

/// A classic-BPF seccomp filter: the listed syscalls fail with `EACCES`, as
/// does every syscall of a foreign ABI (i386 `int 0x80`, x32).
fn seccomp() -> Result<(), String> {
    #[cfg(target_arch = "x86_64")]
    const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // No filter built for this architecture; Landlock still applies.
        return Ok(());
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
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
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
        if r != 0 {
            return Err(format!(
                "cannot install the seccomp filter: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}
