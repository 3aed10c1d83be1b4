//! An operator's copy of a SQLite store, for the tests that put one back under running
//! units: taken with SQLite's own `VACUUM INTO` (a consistent copy of a live store), put back
//! by renaming a copy of it over the file (`mv backup state.db`), and adopted as the refusals
//! tell an operator to. (Written over a live file in place, `cp backup state.db`, a copy is
//! found only once SQLite reads its pages: see the SQLite store's `identity.rs`.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use charm_host::leadership::sqlite::{OpenError, SqliteOptions};
use charm_host::leadership::{ManualClock, SqliteStore};

pub struct SqliteCopy {
    /// The store's file.
    pub path: PathBuf,
    /// Where the copy is kept.
    pub copy: PathBuf,
    /// How the store is opened.
    pub options: SqliteOptions,
}

impl SqliteCopy {
    /// Takes a copy of the store as it is now, in place of any earlier one.
    pub fn take(&self) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.copy);
        let connection = rusqlite::Connection::open(&self.path).map_err(|e| e.to_string())?;
        connection
            .execute("VACUUM INTO ?1", [self.copy.to_string_lossy()])
            .map_err(|e| format!("copy the store: {e}"))?;
        Ok(())
    }

    /// Puts the copy back in place of the store (the copy is kept, to be put back again).
    pub fn put_back(&self) -> Result<(), String> {
        let renamed = self.copy.with_extension("renamed");
        std::fs::copy(&self.copy, &renamed).map_err(|e| e.to_string())?;
        std::fs::rename(&renamed, &self.path).map_err(|e| e.to_string())
    }

    /// Opens what was put back as an operator told by the refusals does: it is refused as a
    /// copy, then refused for the old file's write-ahead log beside it; with the log moved
    /// away, it is adopted, granting nothing for `wait`.
    pub fn adopt(&self, clock: &Arc<ManualClock>, wait: Duration) -> Result<SqliteStore, String> {
        match SqliteStore::open_with(&self.path, clock.clone(), self.options.clone()) {
            Err(OpenError::Copy { .. }) => {}
            other => return Err(format!("a copy put back was not refused: {other:?}")),
        }
        let accepting = SqliteOptions { accept_moved: Some(wait), ..self.options.clone() };
        match SqliteStore::open_with(&self.path, clock.clone(), accepting.clone()) {
            Err(OpenError::CopyBesideLog { log, .. }) => {
                std::fs::remove_file(&log).map_err(|e| e.to_string())?;
                let mut shm = self.path.clone().into_os_string();
                shm.push("-shm");
                let _ = std::fs::remove_file(PathBuf::from(shm));
            }
            Err(err) => return Err(format!("accepting the copy: {err}")),
            Ok(store) => return Ok(store),
        }
        SqliteStore::open_with(&self.path, clock.clone(), accepting).map_err(|e| e.to_string())
    }
}
