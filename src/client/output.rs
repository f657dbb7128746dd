//! What reaches the user's disk and terminal from a remote job: the output file
//! (written whole or not at all) and the server's diagnostics (made harmless for
//! a terminal).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// An object being received: a temporary file beside its destination, hashed
/// as it is written, so that a reply of any size passes through constant
/// memory. It becomes the output only through [`ObjectFile::persist`], called
/// once the whole reply was read and found valid; dropped, it is deleted.
pub struct ObjectFile {
    tmp: tempfile::NamedTempFile,
    /// Removes the temporary file if the client is killed meanwhile.
    _cleanup: super::cleanup::CleanupGuard,
    /// Boxed: the hasher is ~2 KiB and replies are moved around by value.
    hasher: Box<blake3::Hasher>,
    len: u64,
    /// The output is a device or FIFO (`-o /dev/null`): the object is copied
    /// into it, never renamed over it (which would replace `/dev/null` for
    /// everyone when the client runs as root).
    special: bool,
}

impl std::fmt::Debug for ObjectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFile")
            .field("path", &self.tmp.path())
            .field("len", &self.len)
            .finish()
    }
}

impl ObjectFile {
    /// A new, empty temporary file in the directory of `path` (created if
    /// missing), so that the final rename cannot cross file systems.
    pub fn beside(path: &Path) -> std::io::Result<ObjectFile> {
        let special = is_special_file(path);
        let tmp = if special {
            tempfile::Builder::new()
                .prefix("dportage-object.")
                .suffix(".dportage-tmp")
                .tempfile()?
        } else {
            temp_file_beside(path)?
        };
        let cleanup = super::cleanup::register(tmp.path());
        Ok(ObjectFile {
            tmp,
            _cleanup: cleanup,
            hasher: Box::new(blake3::Hasher::new()),
            len: 0,
            special,
        })
    }

    /// Append the next piece of the object.
    pub fn write(&mut self, piece: &[u8]) -> std::io::Result<()> {
        self.tmp.write_all(piece)?;
        self.hasher.update(piece);
        self.len += piece.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// blake3 of everything written (what dual dispatch votes on).
    pub fn hash(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }

    /// Rename the complete object over `path` (which must be in the same
    /// directory as the one given to [`ObjectFile::beside`]).
    pub fn persist(self, path: &Path) -> std::io::Result<()> {
        let ObjectFile {
            mut tmp,
            _cleanup,
            special,
            ..
        } = self;
        tmp.as_file_mut().flush()?;
        if special {
            use std::io::Seek;
            let file = tmp.as_file_mut();
            file.rewind()?;
            let mut device = std::fs::OpenOptions::new().write(true).open(path)?;
            std::io::copy(file, &mut device)?;
            return Ok(());
        }
        // On failure the temporary file is removed when the error's handle drops.
        tmp.persist(path).map_err(|e| e.error)?;
        // Only now that the temporary name is gone (renamed or deleted).
        drop(_cleanup);
        Ok(())
    }
}

/// Does `path` name something that exists and is not a regular file (a
/// device such as `/dev/null`, a FIFO, a socket)? Symbolic links are followed.
fn is_special_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

fn temp_file_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_owned());
    tempfile::Builder::new()
        .prefix(&format!(".{stem}."))
        .suffix(".dportage-tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)
}

/// Write `bytes` to `path` so that `path` is either untouched or complete: a
/// temporary file in the same directory (mode 0666 minus umask, like a compiler's
/// output) renamed over `path`. Missing parent directories are created.
pub fn write_output_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if is_special_file(path) {
        // A device or FIFO (`-o /dev/null`) is written into, never replaced.
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(bytes);
    }
    let mut tmp = temp_file_beside(path)?;
    let cleanup = super::cleanup::register(tmp.path());
    let written = (move || {
        tmp.write_all(bytes)?;
        tmp.as_file_mut().flush()?;
        // On failure the temporary file is removed when the error's handle drops.
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })();
    // Only now that the temporary name is gone (renamed or deleted).
    drop(cleanup);
    written
}

/// Make text from a server safe to copy to a terminal: drop escape sequences
/// (CSI, OSC, DCS and the other string sequences, two-byte escapes), C0 controls
/// other than newline and tab, DEL and C1 controls. Valid UTF-8 text is kept;
/// bytes that are not UTF-8 become U+FFFD.
pub fn strip_terminal_controls(bytes: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(bytes.len());
    let mut state = Escape::None;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            state = state.step(c, &mut out);
        }
        if !chunk.invalid().is_empty() {
            // Invalid bytes end any escape sequence in progress, like a terminal would.
            state = Escape::None;
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    out.into_bytes()
}

/// Where we are inside an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// After ESC and intermediate bytes (0x20–0x2F), waiting for the final byte.
    Intermediate,
    /// Inside `ESC [` parameters, waiting for the final byte 0x40–0x7E.
    Csi,
    /// Inside an OSC/DCS/SOS/PM/APC string, waiting for BEL or `ESC \`.
    String,
    /// After ESC inside a string: `\` ends it.
    StringEnd,
}

impl Escape {
    fn step(self, c: char, out: &mut String) -> Escape {
        const ESC: char = '\u{1b}';
        const BEL: char = '\u{7}';
        match self {
            Escape::None => {
                if c == ESC {
                    Escape::Start
                } else {
                    if c == '\n' || c == '\t' || !c.is_control() {
                        out.push(c);
                    }
                    Escape::None
                }
            }
            Escape::Start => match c {
                '[' => Escape::Csi,
                ']' | 'P' | 'X' | '^' | '_' => Escape::String,
                ESC => Escape::Start,
                '\u{20}'..='\u{2f}' => Escape::Intermediate,
                // Any other byte is the final byte of a two-byte escape; a
                // control or non-ASCII character simply ends the sequence.
                _ => Escape::None,
            },
            Escape::Intermediate => match c {
                '\u{20}'..='\u{2f}' => Escape::Intermediate,
                ESC => Escape::Start,
                _ => Escape::None,
            },
            Escape::Csi => match c {
                '\u{20}'..='\u{3f}' => Escape::Csi,
                ESC => Escape::Start,
                _ => Escape::None,
            },
            Escape::String => match c {
                BEL => Escape::None,
                ESC => Escape::StringEnd,
                _ => Escape::String,
            },
            Escape::StringEnd => match c {
                ESC => Escape::StringEnd,
                _ => Escape::None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_null_is_written_into_never_replaced() {
        let null = Path::new("/dev/null");
        write_output_atomically(null, b"object").unwrap();
        let mut object = ObjectFile::beside(null).unwrap();
        object.write(b"streamed object").unwrap();
        object.persist(null).unwrap();
        let meta = std::fs::metadata(null).unwrap();
        assert!(!meta.is_file(), "/dev/null was replaced by a regular file");
        assert_eq!(std::fs::read(null).unwrap(), b"");
    }

    fn strip(s: &[u8]) -> String {
        String::from_utf8(strip_terminal_controls(s)).unwrap()
    }

    #[test]
    fn plain_diagnostics_pass_unchanged() {
        let text = "x.c:1:26: error: expected ‘;’ before ‘}’ token\n\t| ^~\n";
        assert_eq!(strip(text.as_bytes()), text);
    }

    #[test]
    fn colour_and_cursor_sequences_are_removed() {
        assert_eq!(strip(b"\x1b[01;31m\x1b[Kerror:\x1b[m\x1b[K x"), "error: x");
        assert_eq!(strip(b"a\x1b[2J\x1b[1;1Hb"), "ab");
        assert_eq!(strip(b"a\x1b[?1049hb"), "ab");
    }

    #[test]
    fn string_sequences_are_removed_whole() {
        // OSC 0 (window title), OSC 8 hyperlinks, DCS, with BEL or ST endings.
        assert_eq!(strip(b"a\x1b]0;pwned\x07b"), "ab");
        assert_eq!(
            strip(b"a\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\b"),
            "alinkb"
        );
        assert_eq!(strip(b"a\x1bPq#0;2;0;0;0\x1b\\b"), "ab");
        // An unterminated string swallows the rest rather than leaking into the terminal.
        assert_eq!(strip(b"a\x1b]0;title never ends"), "a");
    }

    #[test]
    fn other_controls_are_removed() {
        assert_eq!(strip(b"a\rb\x08c\x07d\x7fe\x00f"), "abcdef");
        assert_eq!(strip(b"a\x1b(Bb\x1bcc"), "abc");
        // C1 CSI (U+009B) encoded as UTF-8.
        assert_eq!(strip("a\u{9b}31mb".as_bytes()), "a31mb");
        assert_eq!(strip(b"trailing escape\x1b"), "trailing escape");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(strip(b"caf\xe9 \x9b2J"), "caf\u{fffd} \u{fffd}2J");
    }

    #[test]
    fn atomic_write_creates_directories_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/x.o");
        write_output_atomically(&target, b"object").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"object");
        write_output_atomically(&target, b"").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("x.o")]);
    }

    #[test]
    fn object_file_is_hashed_and_only_appears_when_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/x.o");
        let mut object = ObjectFile::beside(&target).unwrap();
        object.write(b"obj").unwrap();
        object.write(b"ect").unwrap();
        assert_eq!(object.len(), 6);
        assert_eq!(object.hash(), *blake3::hash(b"object").as_bytes());
        assert!(!target.exists());
        object.persist(&target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"object");
        let abandoned = {
            let mut o = ObjectFile::beside(&target).unwrap();
            o.write(b"partial").unwrap();
            o.tmp.path().to_owned()
        };
        assert!(
            !abandoned.exists(),
            "a dropped object leaves nothing behind"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"object");
    }

    #[test]
    fn atomic_write_uses_umask_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.o");
        write_output_atomically(&target, b"o").unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        assert_eq!(mode, 0o666 & !umask);
    }
}
