//! What a unit agent keeps on disk, and the checks it makes before it starts: its local
//! state (what it has been told, across restarts) and its status (for `charm-host status`).
//!
//! Invariants: a record is written only when it changed; a failed write leaves the last good
//! record in place and is retried after the next hook; an agent never starts on a store that
//! remembers less than the unit does (see [`AgentError::StoreBehind`]).

use super::local_state::{self, LocalStateError, RecordWriter};
use super::queue::LocalState;
use super::{AgentConfig, AgentError};
use crate::events::LogLevel;
use crate::leadership::WriteError;
use crate::timing;
use crate::unit::{Unit, UnitStatus};

/// What [`super::run_unit`] checks before it starts anything: the durations, the unit's
/// local state, and that the store remembers at least what the unit does. Returns the local
/// state to start from.
pub async fn preflight(unit: &Unit, config: &AgentConfig) -> Result<LocalState, AgentError> {
    timing::STOP_GRACE.check(config.stop_grace)?;
    timing::GUARANTEE_WINDOW.check(unit.tracker().window())?;
    let mut local = match &config.state_file {
        Some(path) => local_state::load(path)?,
        None => LocalState::default(),
    };
    check_store_remembers(unit, &mut local, config.accept_new_store).await?;
    Ok(local)
}

/// Checks that the store remembers at least what the unit does; see [`AgentError::StoreBehind`].
async fn check_store_remembers(unit: &Unit, local: &mut LocalState, accept_new_store: bool) -> Result<(), AgentError> {
    let app = unit.name().app();
    let term = unit.store().last_term(app).await.map_err(|e| AgentError::Store(e.to_string()))?;
    let version = unit.store().read_settings(app).await.map_err(|e: WriteError| AgentError::Store(e.to_string()))?.version;
    let checks = [("term", local.last_elected_term, term), ("leader settings version", local.settings_version_seen, version)];
    let Some((what, Some(remembered), found)) = checks.into_iter().find(|(_, mine, theirs)| mine.is_some_and(|m| m > *theirs))
    else {
        return Ok(());
    };
    if !accept_new_store {
        return Err(AgentError::StoreBehind { unit: unit.name().clone(), what, remembered, found });
    }
    unit.log(
        LogLevel::Warning,
        format!("accepting a new leadership store: it has {what} {found}, this unit remembered {remembered}; forgetting past terms and settings versions"),
    );
    local.last_elected_term = None;
    local.settings_version_seen = None;
    Ok(())
}

/// The unit's local state and status as last written, and their writers.
pub(super) struct Records {
    state: Option<RecordWriter>,
    saved: LocalState,
    status: Option<RecordWriter>,
    saved_status: Option<UnitStatus>,
}

impl Records {
    pub(super) fn open(config: &AgentConfig, local: &LocalState) -> Result<Self, LocalStateError> {
        Ok(Self {
            state: config.state_file.as_deref().map(RecordWriter::open).transpose()?,
            saved: local.clone(),
            status: config.status_file.as_deref().map(RecordWriter::open).transpose()?,
            saved_status: None,
        })
    }

    /// Writes the local state if it changed (durably when it must survive power loss). A
    /// full or failing disk must not kill the unit: the state stays in memory and the write
    /// is retried after the next hook (at worst a restart repeats a hook, which the
    /// at-least-once promise allows).
    pub(super) fn save_local(&mut self, state: &LocalState, unit: &Unit) {
        let Some(writer) = &mut self.state else { return };
        match local_state::save(writer, state, &self.saved) {
            Ok(true) => self.saved = state.clone(),
            Ok(false) => {}
            Err(err) => unit.log(LogLevel::Warning, format!("could not record the unit's state (will retry): {err}")),
        }
    }

    /// Writes the unit's status if it changed since the last write.
    pub(super) fn save_status(&mut self, unit: &Unit) {
        let Some(writer) = &mut self.status else { return };
        let status = unit.status();
        if self.saved_status.as_ref() == Some(&status) {
            return;
        }
        match writer.write(&status, false) {
            Ok(()) => self.saved_status = Some(status),
            Err(err) => unit.log(LogLevel::Warning, format!("could not record the unit's status: {err}")),
        }
    }
}
