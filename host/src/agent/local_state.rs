//! Where a unit's [`LocalState`] lives between runs of its agent: a small JSON file written
//! atomically (temporary file, rename), so a crash leaves the old or the new state. Changes
//! that must survive power loss too (install done, a tenure's `leader-elected` done) are
//! fsynced; a newer settings version seen is not, since losing it costs one more
//! `leader-settings-changed`, which the at-least-once promise allows.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::queue::LocalState;

/// Why local state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LocalStateError {
    /// The file could not be read or written.
    #[error("unit state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid state.
    #[error("unit state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Reads the state at `path`; a missing file is a unit that never ran.
pub fn load(path: &Path) -> Result<LocalState, LocalStateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| LocalStateError::Corrupt { path: path.to_owned(), source }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(LocalState::default()),
        Err(source) => Err(LocalStateError::Io { path: path.to_owned(), source }),
    }
}

/// Replaces the state at `path`, if it differs from `previous`; returns whether it wrote.
pub fn save(path: &Path, state: &LocalState, previous: &LocalState) -> Result<bool, LocalStateError> {
    if state == previous {
        return Ok(false);
    }
    let durable = state.installed != previous.installed || state.last_elected_term != previous.last_elected_term;
    save_json(path, state, durable)?;
    Ok(true)
}

/// Replaces the file at `path` with `value` as JSON, atomically; `durable` also fsyncs it.
pub fn save_json(path: &Path, value: &impl serde::Serialize, durable: bool) -> Result<(), LocalStateError> {
    let io = |source| LocalStateError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| io(std::io::Error::other(e)))?;
    file.write_all(&bytes).map_err(io)?;
    if durable {
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}
