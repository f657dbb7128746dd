//! Large request bodies wait for a job slot on disk, not in memory.
//!
//! A request whose source (`DOTI`, decompressed) is larger than
//! [`SPOOL_THRESHOLD`] and that has to queue is written to an unnamed file in
//! the server's work directory (`TMPDIR`, where job directories go) and its
//! memory is given back to `--queue-bytes`; it is read back when its job
//! slot comes. So many large queued requests cost disk (page cache), not
//! resident memory: what a queued request holds in memory is its arguments.
//! Requests still arriving are held in memory and charged as before.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// Sources larger than this are spooled while they queue: 1 MiB, far above
/// most preprocessed C files, so the common small job never touches disk.
pub const SPOOL_THRESHOLD: usize = 1024 * 1024;

/// Whether a source of `len` bytes that must queue is spooled.
pub fn should_spool(len: usize) -> bool {
    len > SPOOL_THRESHOLD
}

/// A source waiting on disk. The file has no name: it disappears with the
/// handle, whatever happens to the connection.
#[derive(Debug)]
pub struct Spooled {
    file: File,
    len: usize,
}

impl Spooled {
    /// Write `source` to an unnamed file in `dir` (blocking).
    pub fn write(dir: &Path, source: &[u8]) -> io::Result<Spooled> {
        let mut file = tempfile::tempfile_in(dir)?;
        file.write_all(source)?;
        Ok(Spooled {
            file,
            len: source.len(),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The source again (blocking); the file goes away.
    pub fn read_back(mut self) -> io::Result<Vec<u8>> {
        self.file.rewind()?;
        let mut source = Vec::with_capacity(self.len);
        self.file.read_to_end(&mut source)?;
        if source.len() != self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the spooled source shrank from {} to {} bytes",
                    self.len,
                    source.len()
                ),
            ));
        }
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold() {
        assert!(!should_spool(0));
        assert!(!should_spool(SPOOL_THRESHOLD));
        assert!(should_spool(SPOOL_THRESHOLD + 1));
    }

    #[test]
    fn round_trip_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let source: Vec<u8> = (0..3 * SPOOL_THRESHOLD).map(|i| (i % 251) as u8).collect();
        let spooled = Spooled::write(dir.path(), &source).unwrap();
        assert_eq!(spooled.len(), source.len());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spool file has no name"
        );
        assert_eq!(spooled.read_back().unwrap(), source);
    }
}
