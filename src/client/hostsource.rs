//! Where the host list comes from: `$DISTCC_HOSTS`, `$DISTCC_DIR/hosts`
//! (`~/.distcc/hosts`), `/etc/distcc/hosts` (spec §10.1).

use std::path::PathBuf;

use crate::hosts::{HostList, HostSpecError};

#[derive(Debug, thiserror::Error)]
pub enum HostSourceError {
    #[error("no hostlist is set: set DISTCC_HOSTS or write ~/.distcc/hosts")]
    NotSet,
    #[error("{origin}: {source}")]
    Parse {
        origin: String,
        source: HostSpecError,
    },
}

/// The client's state directory: `$DISTCC_DIR`, else `~/.distcc`.
pub fn distcc_dir() -> PathBuf {
    todo!()
}

/// Load and parse the host list from the first source that exists.
pub fn load_host_list() -> Result<HostList, HostSourceError> {
    todo!()
}
