//! What a unit agent keeps on disk, and the checks it makes before it starts: its local
//! state (what it has been told, across restarts) and its status (for `charm-host status`).
//!
//! Invariants: a record is written only when it changed; a change that must survive power
//! loss is written (and fsynced) before the next hook, any other change within
//! [`WRITE_BEHIND`] and at the agent's stop, so a burst of hooks writes it once, off the
//! hooks' path; a failed write leaves the last good record in place and is retried after the
//! next hook; an agent never starts on a store that remembers less than the unit does (see
//! [`AgentError::StoreBehind`]); a store that does not answer at start is asked again, with
//! a backoff, for [`STORE_PATIENCE_AT_START`] (a slow store under a crowd of starting
//! units is ordinary, and one unit's refusal to start would stop every unit of a process).

use std::time::Duration;

use super::local_state::{self, LocalStateError, RecordWriter};
use super::queue::LocalState;
use super::{AgentConfig, AgentError};
use crate::events::LogLevel;
use crate::leadership::Timestamp;
use crate::unit::{Unit, UnitStatus};

/// How long an agent keeps asking a leadership store that does not answer at start.
pub const STORE_PATIENCE_AT_START: Duration = Duration::from_secs(30);

/// What an agent checks before it starts anything (see [`super::spawn`]): the unit's local
/// state, and that the store remembers at least what the unit does. Returns the local state
/// to start from.
pub async fn preflight(unit: &Unit, config: &AgentConfig) -> Result<LocalState, AgentError> {
    let mut local = match &config.state_file {
        Some(path) => local_state::load(path)?,
        None => LocalState::default(),
    };
    let clock = unit.leadership().clock().clone();
    let patience = if config.fail_fast_at_start { Duration::ZERO } else { STORE_PATIENCE_AT_START };
    let give_up_at = clock.now() + patience;
    let mut attempts: u32 = 0;
    loop {
        match store_checks(unit, &mut local, config.accept_new_store).await {
            // Reads, and a join the same incarnation may repeat: safe to ask again.
            Err(AgentError::Store(reason)) if clock.now() < give_up_at => {
                attempts = attempts.saturating_add(1);
                unit.log(LogLevel::Warning, format!("the leadership store did not answer at start ({reason}); asking again"));
                let pause = crate::timing::backoff(Duration::from_millis(200), Duration::from_secs(5), attempts);
                clock.sleep_until((clock.now() + pause).min(give_up_at)).await;
            }
            checked => return checked.map(|()| local),
        }
    }
}

/// The checks at start that ask the store: it remembers what the unit does, and the unit
/// joins (a member from now on, and this incarnation its data's only writer).
async fn store_checks(unit: &Unit, local: &mut LocalState, accept_new_store: bool) -> Result<(), AgentError> {
    check_store_remembers(unit, local, accept_new_store).await?;
    unit.unit_data().join().await.map_err(|e| AgentError::Store(e.to_string()))?;
    Ok(())
}

/// Checks that the store remembers at least what the unit does; see [`AgentError::StoreBehind`].
async fn check_store_remembers(unit: &Unit, local: &mut LocalState, accept_new_store: bool) -> Result<(), AgentError> {
    let leadership = unit.leadership();
    let term = leadership.last_term().await.map_err(|e| AgentError::Store(e.to_string()))?;
    let version = leadership.read_settings().await.map_err(|e| AgentError::Store(e.to_string()))?.version;
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

fn could_not_record(unit: &Unit, err: &dyn std::fmt::Display) {
    unit.log(LogLevel::Warning, format!("could not record the unit's state (will retry): {err}"));
}

/// How long a change of the local state that need not survive a crash (a newer settings
/// version seen) may wait to be written. Losing it costs one more `leader-settings-changed`,
/// which the at-least-once promise allows; writing it after every hook made a settings
/// change to a thousand units wait for a thousand file writes.
pub(super) const WRITE_BEHIND: Duration = Duration::from_secs(1);

/// The status the unit's agent last recorded in `config`'s status file, if it can be read
/// (an unreadable one is only a status lost: the charm sets it again at its next hook).
pub(super) fn saved_status(config: &AgentConfig) -> Option<UnitStatus> {
    let path = config.status_file.as_deref()?;
    match local_state::load_json::<UnitStatus>(path) {
        Ok(status) => status,
        Err(err) => {
            tracing::warn!("could not read the unit's last status ({err}): it starts as maintenance");
            None
        }
    }
}

/// The unit's local state and status as last written, and their writers.
pub(super) struct Records {
    state: Option<RecordWriter>,
    saved: LocalState,
    /// A newer state than `saved` that need not survive a crash, and when it is due.
    behind: Option<(LocalState, Timestamp)>,
    status: Option<RecordWriter>,
    saved_status: Option<UnitStatus>,
    /// Durable writes stay on the calling thread (a unit whose clocks a test decides, as its
    /// hooks do, see `GuestEnvironment`: the test's runtime then sees it busy, not idle).
    inline: bool,
}

impl Records {
    /// The records `config` names, as of `local`; durable writes on the calling thread if
    /// `inline`.
    pub(super) fn open(config: &AgentConfig, local: &LocalState, inline: bool) -> Result<Self, LocalStateError> {
        Ok(Self {
            state: config.state_file.as_deref().map(RecordWriter::open).transpose()?,
            saved: local.clone(),
            behind: None,
            status: config.status_file.as_deref().map(RecordWriter::open).transpose()?,
            saved_status: None,
            inline,
        })
    }

    /// Records the local state after a hook, as of `now` on the unit's clock: at once (and
    /// durably, on a blocking thread: a thousand units starting at once fsync side by side
    /// instead of one after another on the async workers) if what changed must survive power
    /// loss, else by [`Self::write_due`]. A full or failing disk must not kill the unit: the
    /// state stays in memory and the write is retried after the next hook (at worst a
    /// restart repeats a hook, which the at-least-once promise allows).
    pub(super) async fn save_local(&mut self, state: &LocalState, unit: &Unit, now: Timestamp) {
        if self.state.is_none() || *state == self.saved {
            self.behind = None;
        } else if local_state::must_be_durable(state, &self.saved) {
            self.write_durably(state.clone(), unit).await;
        } else {
            let due = self.behind.as_ref().map_or_else(|| now + WRITE_BEHIND, |(_, due)| *due);
            self.behind = Some((state.clone(), due));
        }
    }

    /// When the state written behind is due, if there is one.
    pub(super) fn write_due(&self) -> Option<Timestamp> {
        self.behind.as_ref().map(|(_, due)| *due)
    }

    /// Writes the state written behind now, if there is one (when due, and at the stop).
    pub(super) fn write_behind(&mut self, unit: &Unit) {
        if let Some((state, _)) = self.behind.take() {
            self.write_local(state, false, unit);
        }
    }

    fn write_local(&mut self, state: LocalState, durable: bool, unit: &Unit) {
        self.behind = None;
        let Some(writer) = &mut self.state else { return };
        match writer.write(&state, durable) {
            Ok(()) => self.saved = state,
            Err(err) => could_not_record(unit, &err),
        }
    }

    async fn write_durably(&mut self, state: LocalState, unit: &Unit) {
        if self.inline {
            return self.write_local(state, true, unit);
        }
        self.behind = None;
        let Some(writer) = &self.state else { return };
        // The writer moves on (to the other slot) only if the write succeeded.
        let mut next = writer.clone();
        let record = state.clone();
        match tokio::task::spawn_blocking(move || next.write(&record, true).map(|()| next)).await {
            Ok(Ok(next)) => {
                self.state = Some(next);
                self.saved = state;
            }
            Ok(Err(err)) => could_not_record(unit, &err),
            Err(err) => could_not_record(unit, &err),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::events::RecordingSink;
    use crate::leadership::{LeadershipStore, MemoryStore};
    use crate::names::UnitName;
    use crate::services::ServicesConfig;
    use crate::tracker::LeadershipTracker;

    #[tokio::test]
    async fn a_settings_version_is_written_behind_and_an_install_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let name = UnitName::new("app/0").unwrap();
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
        let tracker = LeadershipTracker::new(name.clone(), store, Duration::from_secs(30));
        let events = Arc::new(RecordingSink::new());
        let unit = Unit::new(dir.path().join("data"), tracker.handle().clone(), events, &ServicesConfig::default()).unwrap();
        let path = dir.path().join("agent.json");
        let config = AgentConfig::default().with_state_file(path.clone());
        let mut records = Records::open(&config, &LocalState::default(), false).unwrap();
        let at = |secs: u64| Timestamp::from_nanos(secs * 1_000_000_000);

        let installed = LocalState { installed: true, ..LocalState::default() };
        records.save_local(&installed, &unit, at(1)).await;
        assert_eq!(local_state::load(&path).unwrap(), installed, "install done is written at once");
        assert_eq!(records.write_due(), None);

        let seen = |version| LocalState { settings_version_seen: Some(version), ..installed.clone() };
        records.save_local(&seen(1), &unit, at(2)).await;
        records.save_local(&seen(2), &unit, at(2) + Duration::from_millis(500)).await;
        assert_eq!(local_state::load(&path).unwrap(), installed, "a settings version waits");
        assert_eq!(records.write_due(), Some(at(2) + WRITE_BEHIND), "due a while after the first change, not the last");
        records.write_behind(&unit);
        assert_eq!(local_state::load(&path).unwrap(), seen(2));
        assert_eq!(records.write_due(), None);

        // A durable change takes what waited with it.
        records.save_local(&seen(3), &unit, at(4)).await;
        let elected = LocalState { last_elected_term: Some(7), ..seen(3) };
        records.save_local(&elected, &unit, at(4)).await;
        assert_eq!(local_state::load(&path).unwrap(), elected);
        assert_eq!(records.write_due(), None);
    }
}
