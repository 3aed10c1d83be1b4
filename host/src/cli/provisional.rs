//! What a command creates as it starts (the state directory, its store, a unit's
//! directory), removed again if the start fails: a refused start leaves nothing behind, so
//! the next one is not taken for a unit that ran (see `StateDir::new_store`).

use std::path::{Path, PathBuf};

use crate::names::UnitName;
use crate::state_dir::StateDir;

/// The paths that did not exist before a start, to remove if it fails.
#[derive(Debug)]
pub struct Provisional {
    created: Vec<PathBuf>,
}

impl Provisional {
    /// Notes which of `dir`, its store and the directories of `units` do not exist yet
    /// (nothing without a `dir`: a temporary one goes anyway).
    pub fn before(dir: Option<&Path>, units: &[UnitName]) -> Self {
        let Some(dir) = dir else { return Self { created: Vec::new() } };
        let state = StateDir::new(dir);
        let mut candidates = vec![dir.to_owned(), state.store()];
        candidates.extend(units.iter().map(|unit| state.unit_dir(unit)));
        Self { created: candidates.into_iter().filter(|path| std::fs::symlink_metadata(path).is_err()).collect() }
    }

    /// `started`, the outcome of the start: what it created stays if it succeeded, and is
    /// removed if it failed.
    pub fn kept_if<T>(self, started: anyhow::Result<T>) -> anyhow::Result<T> {
        if started.is_err() {
            self.undo();
        }
        started
    }

    /// The start failed: removes what it created (a store with its journal, unit
    /// directories, the state directory), most specific first.
    fn undo(self) {
        for path in self.created.iter().rev() {
            let Ok(meta) = std::fs::symlink_metadata(path) else { continue };
            if meta.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(file));
                }
            }
        }
    }
}
