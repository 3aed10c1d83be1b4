//! The layout of a state directory (`--state DIR`), in one place:
//!
//! ```text
//! DIR/state.db                      leases, terms, pins, leader settings (SQLite)
//! DIR/units/<app>-<n>/data/         the unit's charm data, the hooks' only filesystem
//! DIR/units/<app>-<n>/agent.{0,1}   what the unit's agent remembers across restarts
//! DIR/units/<app>-<n>/status.{0,1}  the unit's last reported status
//! DIR/units/<app>-<n>/agent.sock    where its agent answers hook tools
//! ```

use std::path::{Path, PathBuf};

use crate::names::UnitName;

/// Paths inside one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite store.
    pub fn store(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// Everything of one unit.
    pub fn unit_dir(&self, unit: &UnitName) -> PathBuf {
        self.root.join("units").join(format!("{}-{}", unit.app(), unit.number()))
    }

    /// The unit's charm data directory.
    pub fn data_dir(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("data")
    }

    /// The unit agent's local state (two slot files; see [`crate::agent::load_json`]).
    pub fn agent_state(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("agent")
    }

    /// The unit's last reported status (two slot files, like the agent state).
    pub fn status_file(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("status")
    }

    /// The unit agent's hook-tool socket.
    pub fn socket(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("agent.sock")
    }

    /// Every unit that has a directory here, sorted.
    pub fn units(&self) -> std::io::Result<Vec<UnitName>> {
        let dir = self.root.join("units");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut units = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((app, number)) = name.rsplit_once('-')
                && let Ok(unit) = UnitName::new(&format!("{app}/{number}"))
            {
                units.push(unit);
            }
        }
        units.sort();
        Ok(units)
    }
}
