//! `DISTCC_HOSTS` grammar (distcc 3.4, spec §10) → [`HostList`]. Pure: reading the
//! host files is the client's job; this module only parses text.

use crate::protocol::ProtocolVersion;

/// How a host entry is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// `localhost`: compile here, no daemon.
    Local,
    /// `HOST[:PORT]`.
    Tcp { host: String, port: u16 },
    /// `[USER]@HOST[:COMMAND]`. Parsed; the client refuses to use it (no SSH transport).
    Ssh {
        user: Option<String>,
        host: String,
        command: Option<String>,
    },
}

/// One host entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The entry's text as written, for messages and `--show-hosts`.
    pub verbatim: String,
    pub kind: HostKind,
    /// Slot limit (`/N`; default 4, `localhost` 2).
    pub limit: u32,
    /// `,lzo`.
    pub lzo: bool,
    /// `,cpp` (pump; needs `,lzo`).
    pub cpp: bool,
    /// `,down`: listed, never chosen.
    pub down: bool,
    /// `,auth[=NAME]` (GSS-API): `Some(None)` for plain `,auth`.
    pub auth: Option<Option<String>>,
}

impl HostSpec {
    /// The protocol this host is spoken to in: none → 1, `,lzo` → 2, `,cpp,lzo` → 3.
    pub fn protocol(&self) -> ProtocolVersion {
        todo!()
    }
    /// distcc's lock-file stem: `localhost`, `tcp_HOST_PORT`, `ssh_HOST`.
    pub fn lock_stem(&self) -> String {
        todo!()
    }
}

/// A parsed host list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostList {
    pub hosts: Vec<HostSpec>,
    /// `--randomize` was given.
    pub randomize: bool,
    /// `--localslots` (default 4).
    pub local_slots: u32,
    /// `--localslots_cpp` (default 8).
    pub local_slots_cpp: u32,
    /// `+zeroconf` was given (unsupported: contributes no hosts).
    pub zeroconf: bool,
}

impl HostList {
    /// Sum of the slot limits of all hosts (`distcc -j`).
    pub fn total_slots(&self) -> u32 {
        todo!()
    }
}

/// Why a host list was rejected. distcc rejects the whole list on any of these.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HostSpecError {
    #[error("host list contained no hosts")]
    Empty,
    #[error("bad host entry {entry:?}: {why}")]
    BadEntry { entry: String, why: String },
}

/// Parse a whole host list (the value of `DISTCC_HOSTS` or a hosts file).
pub fn parse_host_list(text: &str) -> Result<HostList, HostSpecError> {
    let _ = text;
    todo!()
}
