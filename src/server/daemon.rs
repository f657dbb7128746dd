//! The process edges of the daemon: listening sockets, detaching, the pid
//! file, `nice`, and dropping root. All of it runs before the tokio runtime
//! starts, while the process is still single-threaded (fork and setuid are
//! only sound then).

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::exitcode;

/// A start-up failure, with the exit code distccd uses for it.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}; is another distccd running on this port? choose another with --port")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot detach into the background: {0}")]
    Fork(io::Error),
    #[error("cannot write the pid file {path}: {source}")]
    PidFile { path: PathBuf, source: io::Error },
    #[error("--user {0:?}: no such user on this machine")]
    NoSuchUser(String),
    #[error("cannot switch to user {user} (uid {uid}): {source}")]
    Setuid {
        user: String,
        uid: u32,
        source: io::Error,
    },
    #[error("still running as root after switching to {0}; refusing to serve as root")]
    StillRoot(String),
    #[error(
        "cannot use {path} as the working directory (set TMPDIR to a writable directory): {source}"
    )]
    WorkDir { path: PathBuf, source: io::Error },
    #[error(
        "no compiler can be allowed: the whitelist directory {} does not exist. Install \
         distcc's masquerade links (update-distcc-symlinks), or use --masquerade-dir DIR / \
         --allow-compiler NAME",
        display_paths(.0)
    )]
    NoCompilerAllowed(Vec<PathBuf>),
}

fn display_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

impl DaemonError {
    pub fn code(&self) -> i32 {
        match self {
            DaemonError::Bind { .. } => exitcode::BIND_FAILED,
            DaemonError::Fork(_) => exitcode::OUT_OF_MEMORY,
            DaemonError::PidFile { .. } | DaemonError::WorkDir { .. } => exitcode::IO_ERROR,
            DaemonError::NoSuchUser(_) | DaemonError::Setuid { .. } | DaemonError::StillRoot(_) => {
                exitcode::SETUID_FAILED
            }
            // distccd exits 110 when its whitelist directory is missing.
            DaemonError::NoCompilerAllowed(_) => exitcode::COMPILER_MISSING,
        }
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Listen on `ip:port` like distccd: `SO_REUSEADDR`, backlog 1024, and
/// `TCP_DEFER_ACCEPT` (unless `DISTCC_TCP_DEFER_ACCEPT=0`), so connections that
/// never send a byte do not occupy us. Without `ip`, listen on every address:
/// IPv6 and IPv4 on one dual-stack socket, or IPv4 alone where the kernel has no
/// IPv6.
pub fn listen(ip: Option<IpAddr>, port: u16) -> Result<TcpListener, DaemonError> {
    let candidates: Vec<SocketAddr> = match ip {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ],
    };
    let mut last = None;
    for addr in candidates {
        match listen_one(addr) {
            Ok(l) => return Ok(l),
            Err(e) => {
                let no_family = e.raw_os_error() == Some(libc::EAFNOSUPPORT);
                last = Some(DaemonError::Bind { addr, source: e });
                if !(ip.is_none() && no_family) {
                    break;
                }
            }
        }
    }
    Err(last.expect("at least one candidate address"))
}

fn listen_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor we own; every pointer passed
    // points to a live, correctly sized local.
    unsafe {
        let fd = cvt(libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        cvt(libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            len,
        ))?;
        let mapped = matches!(addr.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
        if family == libc::AF_INET6 && (addr.ip().is_unspecified() || mapped) {
            let zero: libc::c_int = 0;
            // Best effort: dual-stack, so IPv4 clients arrive as ::ffff:a.b.c.d.
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&zero as *const libc::c_int).cast(),
                len,
            );
        }
        if std::env::var("DISTCC_TCP_DEFER_ACCEPT").as_deref() != Ok("0") {
            let secs: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                len,
            );
        }
        match addr {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*v4.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                cvt(libc::bind(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ))?;
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                cvt(libc::bind(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                ))?;
            }
        }
        cvt(libc::listen(fd, 1024))?;
        let listener = TcpListener::from(owned);
        listener.set_nonblocking(true)?;
        Ok(listener)
    }
}

/// Fork into the background. Returns in the child (now a session leader with
/// stdin/stdout, and stderr unless `keep_stderr`, on `/dev/null`); the parent
/// exits 0 at once, as distccd's does.
pub fn detach(keep_stderr: bool) -> Result<(), DaemonError> {
    // SAFETY: called before any thread is started (no runtime yet), so the
    // child is a faithful copy; the parent only calls _exit.
    unsafe {
        match libc::fork() {
            -1 => return Err(DaemonError::Fork(io::Error::last_os_error())),
            0 => {}
            _ => libc::_exit(0),
        }
        libc::setsid();
        let devnull = CString::new("/dev/null").expect("no NUL");
        let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            if !keep_stderr {
                libc::dup2(fd, 2);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

/// Write our pid to `path` (`PID\n`), replacing what was there.
pub fn write_pid_file(path: &Path) -> Result<(), DaemonError> {
    std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
        DaemonError::PidFile {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Hand the pid file to the user we are about to become, so the daemon can
/// still remove it at exit (a sticky directory lets only the owner do that).
pub fn chown_pid_file(path: &Path, persona: &Persona) {
    chown_to(path, persona);
}

/// Give `path` to `persona` (best effort: what it cannot write it reports).
pub fn chown_to(path: &Path, persona: &Persona) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: chown on a valid NUL-terminated path.
        unsafe {
            libc::chown(c.as_ptr(), persona.uid, persona.gid);
        }
    }
}

/// Add `increment` to our nice value. Threads and children created afterwards
/// inherit it, so every compiler runs at the lowered priority.
pub fn renice(increment: i32) -> io::Result<()> {
    if increment == 0 {
        return Ok(());
    }
    // SAFETY: nice() has no memory effects; errno tells -1 results apart.
    unsafe {
        *libc::__errno_location() = 0;
        let r = libc::nice(increment);
        if r == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether we run with root's uid or euid.
pub fn is_root() -> bool {
    // SAFETY: getuid/geteuid cannot fail.
    unsafe { libc::getuid() == 0 || libc::geteuid() == 0 }
}

/// A user to switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persona {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

fn lookup_user(name: &str) -> Option<Persona> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, both live and sized as
    // passed; `result` points to `pwd` or is null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            c.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        Some(Persona {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }
}

/// distccd's choice of persona: `--user`, else `distccd`, else `nobody`, else 65534.
pub fn choose_persona(requested: Option<&str>) -> Result<Persona, DaemonError> {
    if let Some(name) = requested {
        if let Some(p) = lookup_user(name) {
            return Ok(p);
        }
        if let Ok(uid) = name.parse::<u32>() {
            return Ok(Persona {
                name: name.to_string(),
                uid,
                gid: uid,
            });
        }
        return Err(DaemonError::NoSuchUser(name.to_string()));
    }
    Ok(lookup_user("distccd")
        .or_else(|| lookup_user("nobody"))
        .unwrap_or(Persona {
            name: "65534".into(),
            uid: 65534,
            gid: 65534,
        }))
}

/// When running as root, become `persona` for good (supplementary groups,
/// gid, uid), and refuse to go on if root is still there.
pub fn become_persona(persona: &Persona) -> Result<(), DaemonError> {
    let err = |source| DaemonError::Setuid {
        user: persona.name.clone(),
        uid: persona.uid,
        source,
    };
    // SAFETY: single-threaded at this point; the calls take plain values and a
    // pointer to one live gid.
    unsafe {
        let groups = [persona.gid as libc::gid_t];
        cvt(libc::setgroups(1, groups.as_ptr())).map_err(err)?;
        cvt(libc::setgid(persona.gid)).map_err(err)?;
        cvt(libc::setuid(persona.uid)).map_err(err)?;
    }
    if is_root() {
        return Err(DaemonError::StillRoot(persona.name.clone()));
    }
    Ok(())
}

/// No process started from here on can gain privileges (setuid binaries,
/// file capabilities). Landlock needs it anyway.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(|_| ())
}

/// Make `dir` our working directory (distccd runs in `$TMPDIR`).
pub fn enter_work_dir(dir: &Path) -> Result<(), DaemonError> {
    std::env::set_current_dir(dir).map_err(|source| DaemonError::WorkDir {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_with_reuseaddr_on_loopback() {
        let l = listen(Some("127.0.0.1".parse().unwrap()), 0).unwrap();
        let addr = l.local_addr().unwrap();
        assert!(addr.port() != 0);
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let again = listen(Some("127.0.0.1".parse().unwrap()), addr.port());
        assert!(
            matches!(again, Err(DaemonError::Bind { .. })),
            "port is taken"
        );
        assert_eq!(again.unwrap_err().code(), exitcode::BIND_FAILED);
    }

    #[test]
    fn personas() {
        let p = choose_persona(Some("root")).unwrap();
        assert_eq!(p.uid, 0);
        let p = choose_persona(Some("4242")).unwrap();
        assert_eq!((p.uid, p.gid), (4242, 4242));
        assert!(matches!(
            choose_persona(Some("no-such-user-dportage")),
            Err(DaemonError::NoSuchUser(_))
        ));
        let default = choose_persona(None).unwrap();
        assert_ne!(default.uid, 0);
    }
}
