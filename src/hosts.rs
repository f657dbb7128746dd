//! `DISTCC_HOSTS` grammar (distcc 3.4, spec §10) → [`HostList`]. Pure: reading the
//! host files is the client's job; this module only parses text.
//!
//! Where distcc 3.4 accepts nonsense we are stricter and say why, so a typo is
//! reported instead of silently changing which hosts are used. Every such case is
//! listed in `tests/it/client/hosts_vs_distcc.rs` next to what the real binary does:
//! ports must be 1–65535 and plain digits; slot limits must be plain digits ≥ 1;
//! `--localslots…` must be followed by nothing or `/N`/`=N`; entries may not hold
//! control characters. distcc also reads some fields past the end of an entry
//! (`h/ 3` gives `h` 3 slots *and* a host named `3`); we never look past it.

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
    /// `,zstd` (dportage extension): this host is a dportage server; bodies
    /// are zstd instead of LZO. distcc 3.4 rejects a list with it.
    pub zstd: bool,
    /// `,verify` (dportage extension): a host of the network, which may only
    /// vote in verified dispatch (`DPORTAGE_REDUNDANCY` ≥ 2), never compile
    /// alone. distcc 3.4 rejects a list with it and compiles locally, so a
    /// client that does not verify can never use the network's hosts.
    pub verify: bool,
    /// `,down`: listed, never chosen.
    pub down: bool,
    /// `,auth[=NAME]` (GSS-API): `Some(None)` for plain `,auth`.
    pub auth: Option<Option<String>>,
}

/// distcc's default TCP port.
pub const DEFAULT_PORT: u16 = 3632;
/// Slot limit of a TCP or SSH host without `/N`.
pub const DEFAULT_LIMIT: u32 = 4;
/// Slot limit of `localhost` without `/N`.
pub const DEFAULT_LOCALHOST_LIMIT: u32 = 2;
/// `--localslots` default: jobs that must run locally.
pub const DEFAULT_LOCAL_SLOTS: u32 = 4;
/// `--localslots_cpp` default: concurrent local preprocessors.
pub const DEFAULT_LOCAL_SLOTS_CPP: u32 = 8;

impl HostSpec {
    /// The protocol this host is spoken to in: none → 1, `,lzo` → 2, `,cpp,lzo` → 3,
    /// `,zstd` (with or without the others) → dportage's zstd protocol.
    pub fn protocol(&self) -> ProtocolVersion {
        if self.zstd {
            return ProtocolVersion::Zstd;
        }
        match (self.lzo, self.cpp) {
            (true, true) => ProtocolVersion::V3,
            (true, false) => ProtocolVersion::V2,
            // `,cpp` without `,lzo` never survives parsing.
            (false, _) => ProtocolVersion::V1,
        }
    }

    /// distcc's lock-file stem: `localhost`, `tcp_HOST_PORT`, `ssh_HOST`.
    pub fn lock_stem(&self) -> String {
        match &self.kind {
            HostKind::Local => "localhost".to_string(),
            HostKind::Tcp { host, port } => format!("tcp_{host}_{port}"),
            HostKind::Ssh { host, .. } => format!("ssh_{host}"),
        }
    }

    /// Is this the `localhost` entry (compile here, no daemon)?
    pub fn is_local(&self) -> bool {
        self.kind == HostKind::Local
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
        self.hosts
            .iter()
            .fold(0u32, |sum, h| sum.saturating_add(h.limit))
    }

    /// Shuffle the hosts the way `--randomize` asks for, deterministically from
    /// `seed` (distcc seeds with its process id, so each run differs).
    pub fn shuffle(&mut self, seed: u64) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        self.hosts.shuffle(&mut rng);
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

/// Characters that separate entries (distcc: `strcspn(" #\t\n\f\r")`). A
/// vertical tab is skipped between entries but does not end one.
fn ends_entry(c: char) -> bool {
    matches!(c, ' ' | '#' | '\t' | '\n' | '\x0c' | '\r')
}

/// Parse a whole host list (the value of `DISTCC_HOSTS` or a hosts file).
pub fn parse_host_list(text: &str) -> Result<HostList, HostSpecError> {
    let mut list = HostList {
        hosts: Vec::new(),
        randomize: false,
        local_slots: DEFAULT_LOCAL_SLOTS,
        local_slots_cpp: DEFAULT_LOCAL_SLOTS_CPP,
        zeroconf: false,
    };
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '#' {
            // A comment runs to the end of the line (LF or CR).
            let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
            rest = &rest[end..];
            continue;
        }
        if c.is_ascii_whitespace() || c == '\x0b' {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let len = rest.find(ends_entry).unwrap_or(rest.len());
        let entry = &rest[..len];
        rest = &rest[len..];
        parse_entry(entry, &mut list)?;
    }
    if list.hosts.is_empty() {
        return Err(HostSpecError::Empty);
    }
    Ok(list)
}

fn bad(entry: &str, why: impl Into<String>) -> HostSpecError {
    HostSpecError::BadEntry {
        entry: entry.to_string(),
        why: why.into(),
    }
}

fn parse_entry(entry: &str, list: &mut HostList) -> Result<(), HostSpecError> {
    if let Some(c) = entry.chars().find(|c| c.is_control()) {
        return Err(bad(
            entry,
            format!("it contains the control character {c:?}; remove it"),
        ));
    }
    if entry.starts_with("--randomize") {
        list.randomize = true;
        return Ok(());
    }
    if let Some(after) = entry.strip_prefix("--localslots_cpp") {
        if let Some(n) = global_slot_option(entry, after)? {
            list.local_slots_cpp = n;
        }
        return Ok(());
    }
    if let Some(after) = entry.strip_prefix("--localslots") {
        if let Some(n) = global_slot_option(entry, after)? {
            list.local_slots = n;
        }
        return Ok(());
    }
    if entry == "+zeroconf" {
        list.zeroconf = true;
        return Ok(());
    }
    let host = if entry == "localhost" || entry.starts_with("localhost/") {
        parse_localhost(entry)?
    } else if entry.contains('@') {
        parse_ssh(entry)?
    } else {
        parse_tcp(entry)?
    };
    list.hosts.push(host);
    Ok(())
}

/// `--localslots[_cpp]` followed by nothing or `/N` / `=N`.
fn global_slot_option(entry: &str, after: &str) -> Result<Option<u32>, HostSpecError> {
    if after.is_empty() {
        return Ok(None);
    }
    let mut cursor = after;
    match parse_limit(entry, &mut cursor)? {
        Some(n) => Ok(Some(n)),
        None => Err(bad(
            entry,
            "expected `/N` or `=N` after the option, e.g. `--localslots=4`",
        )),
    }
}

fn new_spec(entry: &str, kind: HostKind, limit: u32) -> HostSpec {
    HostSpec {
        verbatim: entry.to_string(),
        kind,
        limit,
        lzo: false,
        cpp: false,
        zstd: false,
        verify: false,
        down: false,
        auth: None,
    }
}

fn parse_localhost(entry: &str) -> Result<HostSpec, HostSpecError> {
    let mut cursor = &entry["localhost".len()..];
    let limit = parse_limit(entry, &mut cursor)?.unwrap_or(DEFAULT_LOCALHOST_LIMIT);
    // distcc ignores whatever follows the limit ("localhost/3,lzo" = 3 slots).
    Ok(new_spec(entry, HostKind::Local, limit))
}

/// Split `s` at the first character in `stops`.
fn take_until<'a>(s: &'a str, stops: &[char]) -> (&'a str, &'a str) {
    let at = s.find(stops).unwrap_or(s.len());
    (&s[..at], &s[at..])
}

fn parse_ssh(entry: &str) -> Result<HostSpec, HostSpecError> {
    let (user, after_user) = take_until(entry, &['@']);
    let after_at = &after_user[1..];
    let (host, mut cursor) = take_until(after_at, &['/', ':', ',']);
    if host.is_empty() {
        return Err(bad(
            entry,
            "a host name is required after `@` (e.g. `@build1` or `me@build1`)",
        ));
    }
    let limit = parse_limit(entry, &mut cursor)?.unwrap_or(DEFAULT_LIMIT);
    let mut command = None;
    if let Some(after_colon) = cursor.strip_prefix(':') {
        let (cmd, after_cmd) = take_until(after_colon, &[',']);
        if !cmd.is_empty() {
            command = Some(cmd.to_string());
        }
        cursor = after_cmd;
    }
    let mut spec = new_spec(
        entry,
        HostKind::Ssh {
            user: (!user.is_empty()).then(|| user.to_string()),
            host: host.to_string(),
            command,
        },
        limit,
    );
    parse_options(entry, cursor, &mut spec)?;
    Ok(spec)
}

fn parse_tcp(entry: &str) -> Result<HostSpec, HostSpecError> {
    let (host, mut cursor) = if let Some(inner) = entry.strip_prefix('[') {
        let (host, after) = take_until(inner, &['/', ']', ',']);
        let Some(after_bracket) = after.strip_prefix(']') else {
            return Err(bad(
                entry,
                "an IPv6 address needs a closing `]` (e.g. `[::1]:3632`)",
            ));
        };
        (host, after_bracket)
    } else {
        take_until(entry, &['/', ':', ','])
    };
    if host.is_empty() {
        return Err(bad(
            entry,
            "a host name is required (e.g. `build1`, `build1:3632`, `[::1]`)",
        ));
    }
    let mut limit = parse_limit(entry, &mut cursor)?;
    let mut port = DEFAULT_PORT;
    if let Some(after_colon) = cursor.strip_prefix(':') {
        let digits_len = after_colon
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_colon.len());
        let (digits, after_port) = after_colon.split_at(digits_len);
        if !(after_port.is_empty() || after_port.starts_with(['/', ','])) {
            return Err(bad(
                entry,
                format!("invalid port {after_colon:?}: write a number from 1 to 65535 after `:`"),
            ));
        }
        port = match digits.parse::<u32>() {
            Ok(n @ 1..=65535) => n as u16,
            Ok(n) => {
                return Err(bad(
                    entry,
                    format!("port {n} is out of range: use 1 to 65535"),
                ))
            }
            Err(_) if digits.is_empty() => {
                return Err(bad(
                    entry,
                    "the port after `:` is missing: write a number from 1 to 65535",
                ))
            }
            Err(_) => {
                return Err(bad(
                    entry,
                    format!("port {digits} is out of range: use 1 to 65535"),
                ))
            }
        };
        cursor = after_port;
    }
    if let Some(n) = parse_limit(entry, &mut cursor)? {
        limit = Some(n);
    }
    let mut spec = new_spec(
        entry,
        HostKind::Tcp {
            host: host.to_string(),
            port,
        },
        limit.unwrap_or(DEFAULT_LIMIT),
    );
    parse_options(entry, cursor, &mut spec)?;
    Ok(spec)
}

/// An optional slot limit: `/N` or `=N`, N decimal ≥ 1. Digits end at the
/// first non-digit, which is left in `cursor` (distcc ignores such junk).
fn parse_limit(entry: &str, cursor: &mut &str) -> Result<Option<u32>, HostSpecError> {
    let Some(after) = cursor.strip_prefix(['/', '=']) else {
        return Ok(None);
    };
    let digits_len = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    let digits = &after[..digits_len];
    let limit = match digits.parse::<u32>() {
        Ok(0) => {
            return Err(bad(
                entry,
                "bad slot limit 0: write a number of 1 or more after `/`",
            ))
        }
        Ok(n) => n,
        Err(_) if digits.is_empty() => {
            return Err(bad(
                entry,
                "the slot limit after `/` is missing: write a number of 1 or more",
            ))
        }
        Err(_) => return Err(bad(entry, format!("slot limit {digits} is too large"))),
    };
    *cursor = &after[digits_len..];
    Ok(Some(limit))
}

/// `{ "," OPTION }`; parsing stops (and ignores the rest) at the first
/// character after an option that is not a comma, as distcc 3.4 does: in
/// `h,cppx,lzo` the `,lzo` is never read.
fn parse_options(entry: &str, mut cursor: &str, spec: &mut HostSpec) -> Result<(), HostSpecError> {
    while let Some(option) = cursor.strip_prefix(',') {
        if let Some(after) = option.strip_prefix("lzo") {
            spec.lzo = true;
            cursor = after;
        } else if let Some(after) = option.strip_prefix("cpp") {
            spec.cpp = true;
            cursor = after;
        } else if let Some(after) = option.strip_prefix("zstd") {
            spec.zstd = true;
            cursor = after;
        } else if let Some(after) = option.strip_prefix("verify") {
            spec.verify = true;
            cursor = after;
        } else if let Some(after) = option.strip_prefix("down") {
            spec.down = true;
            cursor = after;
        } else if let Some(after) = option.strip_prefix("auth") {
            if let Some(named) = after.strip_prefix('=') {
                let (name, after_name) = take_until(named, &[',']);
                spec.auth = Some((!name.is_empty()).then(|| name.to_string()));
                cursor = after_name;
            } else {
                spec.auth = Some(None);
                cursor = after;
            }
        } else {
            let (word, _) = take_until(option, &[',']);
            return Err(bad(
                entry,
                format!(
                    "unknown option {word:?}: use lzo, zstd, cpp (with lzo), verify, down or auth"
                ),
            ));
        }
    }
    if spec.cpp && !spec.lzo {
        return Err(bad(
            entry,
            "pump mode (`,cpp`) requires compression: write `,cpp,lzo`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> HostKind {
        HostKind::Tcp {
            host: host.into(),
            port,
        }
    }

    fn one(text: &str) -> HostSpec {
        let list = parse_host_list(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(list.hosts.len(), 1, "{text:?}");
        list.hosts.into_iter().next().unwrap()
    }

    /// (entry, kind, limit, lzo, cpp, down)
    #[test]
    fn single_entries() {
        let cases: &[(&str, HostKind, u32, bool, bool, bool)] = &[
            ("localhost", HostKind::Local, 2, false, false, false),
            ("localhost/7", HostKind::Local, 7, false, false, false),
            ("localhost/3junk", HostKind::Local, 3, false, false, false),
            ("localhost/3,lzo", HostKind::Local, 3, false, false, false),
            ("localhost/3:40", HostKind::Local, 3, false, false, false),
            (
                "localhost=3",
                tcp("localhost=3", 3632),
                4,
                false,
                false,
                false,
            ),
            (
                "localhost:3632",
                tcp("localhost", 3632),
                4,
                false,
                false,
                false,
            ),
            (
                "localhost,lzo",
                tcp("localhost", 3632),
                4,
                true,
                false,
                false,
            ),
            ("a", tcp("a", 3632), 4, false, false, false),
            ("b:4000", tcp("b", 4000), 4, false, false, false),
            ("c/7", tcp("c", 3632), 7, false, false, false),
            ("d:4000/2", tcp("d", 4000), 2, false, false, false),
            ("e/2:4000", tcp("e", 4000), 2, false, false, false),
            ("h/2:4000/3", tcp("h", 4000), 3, false, false, false),
            ("h/3/4", tcp("h", 3632), 4, false, false, false),
            ("h=3", tcp("h=3", 3632), 4, false, false, false),
            ("h=3/2", tcp("h=3", 3632), 2, false, false, false),
            ("h/3junk", tcp("h", 3632), 3, false, false, false),
            (
                "10.0.0.1:3700/3,lzo",
                tcp("10.0.0.1", 3700),
                3,
                true,
                false,
                false,
            ),
            ("h:65535", tcp("h", 65535), 4, false, false, false),
            ("h:1", tcp("h", 1), 4, false, false, false),
            ("[::1]", tcp("::1", 3632), 4, false, false, false),
            ("[::1]:3700/3,lzo", tcp("::1", 3700), 3, true, false, false),
            ("[::1]=3", tcp("::1", 3632), 3, false, false, false),
            ("[::1]/2:3000", tcp("::1", 3000), 2, false, false, false),
            (
                "[fe80::1]junk",
                tcp("fe80::1", 3632),
                4,
                false,
                false,
                false,
            ),
            ("h,lzo", tcp("h", 3632), 4, true, false, false),
            ("h,lzox", tcp("h", 3632), 4, true, false, false),
            ("h,lzo,cpp", tcp("h", 3632), 4, true, true, false),
            ("h,cpp,lzo", tcp("h", 3632), 4, true, true, false),
            ("h,lzo,cppx", tcp("h", 3632), 4, true, true, false),
            // The rest after a non-comma is never read.
            ("h,lzox,cpp", tcp("h", 3632), 4, true, false, false),
            ("h,down", tcp("h", 3632), 4, false, false, true),
            ("h,downx", tcp("h", 3632), 4, false, false, true),
            ("h,lzo,down,cpp", tcp("h", 3632), 4, true, true, true),
            ("h,lzo/3", tcp("h", 3632), 4, true, false, false),
            ("h:3632/3,lzo", tcp("h", 3632), 3, true, false, false),
        ];
        for (text, kind, limit, lzo, cpp, down) in cases {
            let h = one(text);
            assert_eq!(&h.kind, kind, "{text}");
            assert_eq!(h.limit, *limit, "{text}");
            assert_eq!((h.lzo, h.cpp, h.down), (*lzo, *cpp, *down), "{text}");
            assert_eq!(h.verbatim, *text);
        }
    }

    #[test]
    fn ssh_entries() {
        /// (entry, user, host, command, limit, lzo)
        type SshCase<'a> = (
            &'a str,
            Option<&'a str>,
            &'a str,
            Option<&'a str>,
            u32,
            bool,
        );
        let cases: &[SshCase] = &[
            ("@ssh1", None, "ssh1", None, 4, false),
            (
                "user@ssh2/5:/opt/distccd",
                Some("user"),
                "ssh2",
                Some("/opt/distccd"),
                5,
                false,
            ),
            ("@h:cmd/3", None, "h", Some("cmd/3"), 4, false),
            ("@h/3:cmd,lzo", None, "h", Some("cmd"), 3, true),
            ("@h:cmd,lzo/3", None, "h", Some("cmd"), 4, true),
            ("u@h/2", Some("u"), "h", None, 2, false),
            ("@h:", None, "h", None, 4, false),
            ("a@b@c", Some("a"), "b@c", None, 4, false),
            ("@h,lzo", None, "h", None, 4, true),
        ];
        for (text, user, host, command, limit, lzo) in cases {
            let h = one(text);
            assert_eq!(
                h.kind,
                HostKind::Ssh {
                    user: user.map(String::from),
                    host: host.to_string(),
                    command: command.map(String::from),
                },
                "{text}"
            );
            assert_eq!((h.limit, h.lzo), (*limit, *lzo), "{text}");
            assert_eq!(h.lock_stem(), format!("ssh_{host}"));
        }
    }

    #[test]
    fn auth_option() {
        assert_eq!(one("h,auth").auth, Some(None));
        assert_eq!(one("h,auth=svc").auth, Some(Some("svc".into())));
        assert_eq!(one("h,authfoo,cpp").auth, Some(None));
        assert!(!one("h,authfoo,cpp").cpp);
        assert_eq!(one("h,lzo,auth=svc,cpp").protocol(), ProtocolVersion::V3);
        assert!(parse_host_list("h,auth=svc,cpp").is_err());
        assert_eq!(one("h").auth, None);
    }

    #[test]
    fn spec_examples() {
        let l = parse_host_list("localhost").unwrap();
        assert_eq!(l.total_slots(), 2);
        assert_eq!(l.hosts[0].lock_stem(), "localhost");

        let l = parse_host_list("a b:4000 c/7 d:4000/2 e/2:4000").unwrap();
        assert_eq!(l.total_slots(), 19);
        let stems: Vec<_> = l.hosts.iter().map(HostSpec::lock_stem).collect();
        assert_eq!(
            stems,
            [
                "tcp_a_3632",
                "tcp_b_4000",
                "tcp_c_3632",
                "tcp_d_4000",
                "tcp_e_4000"
            ]
        );

        let l = parse_host_list("@ssh1 user@ssh2/5:/opt/distccd ssh3,lzo").unwrap();
        assert_eq!(l.total_slots(), 13);
        assert_eq!(l.hosts[2].protocol(), ProtocolVersion::V2);
        assert_eq!(l.hosts[0].protocol(), ProtocolVersion::V1);

        let l = parse_host_list("[::1]:3700/3,lzo [fe80::1]").unwrap();
        assert_eq!(l.total_slots(), 7);
        assert_eq!(l.hosts[0].lock_stem(), "tcp_::1_3700");

        let l = parse_host_list("--localslots=9 --localslots_cpp=3 a").unwrap();
        assert_eq!(l.total_slots(), 4);
        assert_eq!((l.local_slots, l.local_slots_cpp), (9, 3));

        let l = parse_host_list("a # comment b\nc").unwrap();
        let names: Vec<_> = l.hosts.iter().map(|h| h.verbatim.as_str()).collect();
        assert_eq!(names, ["a", "c"]);

        let l = parse_host_list("h,cpp,lzo").unwrap();
        assert_eq!(l.hosts[0].protocol(), ProtocolVersion::V3);
    }

    #[test]
    fn globals_and_layout() {
        let l = parse_host_list("--randomize a").unwrap();
        assert!(l.randomize);
        let l = parse_host_list("--randomizefoo a").unwrap();
        assert!(l.randomize);
        let l = parse_host_list("--localslots/3 --localslots_cpp/5 a").unwrap();
        assert_eq!((l.local_slots, l.local_slots_cpp), (3, 5));
        let l = parse_host_list("--localslots --localslots_cpp a").unwrap();
        assert_eq!((l.local_slots, l.local_slots_cpp), (4, 8));
        let l = parse_host_list("+zeroconf a").unwrap();
        assert!(l.zeroconf);
        assert_eq!(l.hosts.len(), 1);
        // Comments end at CR or LF; '#' ends an entry.
        let l = parse_host_list("a\r\nb#x\rc").unwrap();
        let names: Vec<_> = l.hosts.iter().map(|h| h.verbatim.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let l = parse_host_list("a#c b").unwrap();
        assert_eq!(l.hosts.len(), 1);
        // A vertical tab between entries is skipped.
        let l = parse_host_list("a \x0b b\tc\x0cd").unwrap();
        assert_eq!(l.hosts.len(), 4);
        let l = parse_host_list("  a  \n\n  b  ").unwrap();
        assert_eq!(l.total_slots(), 8);
    }

    #[test]
    fn errors() {
        let cases: &[&str] = &[
            "h,cpp",
            "@h,cpp",
            "h,down,cpp",
            "h,cppx,lzo",
            "h,bogus",
            "h,zst",
            "h,",
            "h,lzo,",
            "h/0",
            "h/",
            "h/-3",
            "h/x",
            "h/4294967296",
            "localhost/0",
            "localhost/",
            "h:3632/0",
            "h:notaport",
            "h:3632junk",
            "h:3632:3633",
            "h:3632=5",
            "h:",
            "h:0",
            "h:-5",
            "h:+5",
            "h:65536",
            "h:99999",
            "h:4294967296",
            "[::1",
            "[::1/3]",
            "[]",
            "[::1]:x",
            ":3632",
            ",lzo",
            "/3",
            "user@",
            "@",
            "@/3",
            "--localslots=0",
            "--localslots_cpp=0",
            "--localslotsX",
            "--localslots=",
            "a\x0bb",
            "a\x01",
        ];
        for text in cases {
            match parse_host_list(text) {
                Err(HostSpecError::BadEntry { entry, why }) => {
                    assert!(text.contains(entry.as_str()), "{text}: {entry}");
                    assert!(!why.is_empty());
                }
                other => panic!("{text:?} should be a bad entry, got {other:?}"),
            }
            // One bad entry spoils the whole list.
            assert!(parse_host_list(&format!("good {text} other")).is_err());
        }
    }

    #[test]
    fn port_errors_name_the_entry() {
        let e = parse_host_list("a h:99999 b").unwrap_err();
        assert_eq!(
            e,
            HostSpecError::BadEntry {
                entry: "h:99999".into(),
                why: "port 99999 is out of range: use 1 to 65535".into()
            }
        );
        assert!(e.to_string().contains("h:99999"));
    }

    #[test]
    fn empty_lists() {
        for text in [
            "",
            " ",
            "\n\t ",
            "# only a comment",
            "--randomize",
            "--localslots=3",
            "--localslots_cpp",
            "+zeroconf",
        ] {
            assert_eq!(parse_host_list(text), Err(HostSpecError::Empty), "{text:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let alphabet = [
            "a",
            "[",
            "]",
            ":",
            "/",
            "=",
            ",",
            "@",
            "#",
            " ",
            "\n",
            "0",
            "9",
            "lzo",
            "cpp",
            "localhost",
            "--localslots",
            "é",
            "\x0b",
            "auth=",
        ];
        // Every string of up to four symbols.
        let mut stack: Vec<(String, usize)> = vec![(String::new(), 0)];
        while let Some((s, symbols)) = stack.pop() {
            let _ = parse_host_list(&s);
            if symbols < 4 {
                for a in alphabet {
                    stack.push((format!("{s}{a}"), symbols + 1));
                }
            }
        }
    }

    #[test]
    fn verify_marks_hosts_for_verified_dispatch_only() {
        let h = one("10.0.0.1:3632/4,lzo,verify");
        assert!(h.verify && h.lzo);
        assert_eq!(h.protocol(), ProtocolVersion::V2);
        assert!(one("h,verify,zstd").verify);
        assert!(!one("h,lzo").verify);
    }

    #[test]
    fn protocol_and_slots() {
        assert_eq!(one("h").protocol(), ProtocolVersion::V1);
        assert_eq!(one("h,lzo").protocol(), ProtocolVersion::V2);
        assert_eq!(one("h,lzo,cpp").protocol(), ProtocolVersion::V3);
        // zstd only where the entry says so: a distccd entry never gets it.
        assert_eq!(one("h,zstd").protocol(), ProtocolVersion::Zstd);
        assert_eq!(one("h:3700/3,lzo,zstd").protocol(), ProtocolVersion::Zstd);
        for plain in ["h", "h,lzo", "h,lzo,cpp", "h,down"] {
            assert!(!one(plain).zstd, "{plain}");
        }
        assert!(one("localhost").is_local());
        assert!(!one("localhost:3632").is_local());
        let l = parse_host_list("h/4294967295 g/4294967295").unwrap();
        assert_eq!(l.total_slots(), u32::MAX);
    }

    #[test]
    fn shuffle_is_deterministic_and_keeps_hosts() {
        let l = parse_host_list("--randomize a b c d e f g h").unwrap();
        let mut x = l.clone();
        let mut y = l.clone();
        x.shuffle(42);
        y.shuffle(42);
        assert_eq!(x, y);
        let mut names: Vec<_> = x.hosts.iter().map(|h| h.verbatim.clone()).collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c", "d", "e", "f", "g", "h"]);
    }
}
