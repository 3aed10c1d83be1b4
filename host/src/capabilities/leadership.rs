//! `juju:charm/leadership`: `is-leader`, the sandboxed `leader-get`, the fenced,
//! write-through `leader-set`, and unit data (`unit-set`, `unit-get`, `units`).
//!
//! Invariants:
//! - `is-leader` asks the unit's leadership handle at the moment of the call, so it can change
//!   mid-hook in either direction, and never answers true past the guarantee.
//! - Reads come from one snapshot, taken at the hook's first read and kept for the hook;
//!   only this hook's own successful `leader-set` changes it.
//! - `leader-set` writes the whole group under the unit's term in one store call; on any
//!   error nothing was written and the snapshot is unchanged.
//! - Unit data reads come from one snapshot per hook too: the unit's own data (read at the
//!   hook's first read of it, then changed only by its own `unit-set`) and, for the leader,
//!   every unit's (the leader's mirror, brought up to date at the first read). Another
//!   unit's data is answered only while `is-leader` would answer true, at each call.

use std::sync::Arc;

use crate::leadership::{UnitData, UnitWriteError, WriteError};
use crate::names::UnitName;
use crate::runtime::bindings::leadership::{Host, LeadershipError};
use crate::settings::{Settings, SettingsWrite};
use crate::tracker::{LeadershipHandle, LeadershipUnknown};
use crate::unit_data::{UnitDataHandle, UnitDataMap};

use super::CallRecorder;

/// What `juju:charm/leadership` sees: the unit's leadership handle (which cannot change
/// the claim) and the hook's settings snapshot.
pub(crate) struct LeadershipView {
    leadership: LeadershipHandle,
    snapshot: Option<Arc<Settings>>,
    unit_data: UnitDataHandle,
    /// Every unit's data, taken at the leader's first read of another unit's.
    units: Option<Arc<UnitDataMap>>,
    /// The unit's own data (`None` inside: not a member), taken at its first read.
    own: Option<Option<UnitData>>,
    calls: CallRecorder,
}

impl LeadershipView {
    pub(crate) fn new(leadership: LeadershipHandle, unit_data: UnitDataHandle, calls: CallRecorder) -> Self {
        Self { leadership, snapshot: None, unit_data, units: None, own: None, calls }
    }

    /// The hook's snapshot, taken now if this is the first read.
    async fn snapshot(&mut self) -> Result<&Settings, LeadershipError> {
        if self.snapshot.is_none() {
            let current = self.leadership.read_settings().await.map_err(|e| LeadershipError::Unknown(e.to_string()))?;
            // Shared with the store's copy until this hook's own write changes it.
            self.snapshot = Some(current.values);
        }
        Ok(self.snapshot.get_or_insert_default())
    }
}

impl Host for LeadershipView {
    fn is_leader(&mut self) -> Result<bool, LeadershipError> {
        let ask = |leadership: &LeadershipHandle| {
            leadership.is_leader().map_err(|LeadershipUnknown::StoreFailed(e)| LeadershipError::Unknown(e))
        };
        let answer = ask(&self.leadership);
        self.calls.note(|| "is-leader".into(), &answer);
        // True only if it still holds as the call returns (the process may have been paused
        // since the clock was read): the guarantee is read off the clock once more, last.
        if matches!(answer, Ok(true)) { ask(&self.leadership) } else { answer }
    }

    fn leader_term(&mut self) -> Result<Option<u64>, LeadershipError> {
        let answer =
            self.leadership.leader_term().map_err(|LeadershipUnknown::StoreFailed(e)| LeadershipError::Unknown(e));
        self.calls.note(|| "leader-term".into(), &answer);
        answer
    }

    async fn leader_get(&mut self, key: String) -> Result<Option<String>, LeadershipError> {
        // Every read but a hook's first answers from the snapshot without awaiting; the first
        // read's store call is boxed, so the future of every call stays small.
        let answer = match &self.snapshot {
            Some(snapshot) => Ok(snapshot.get(&key).cloned()),
            None => Box::pin(self.snapshot()).await.map(|s| s.get(&key).cloned()),
        };
        self.calls.note(|| format!("leader-get {key:?}"), &answer);
        answer
    }

    async fn leader_get_all(&mut self) -> Result<Vec<(String, String)>, LeadershipError> {
        let answer = self.snapshot().await.map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>());
        self.calls.note(|| "leader-get-all".into(), &answer);
        answer
    }

    async fn leader_set(&mut self, settings: Vec<(String, String)>) -> Result<(), LeadershipError> {
        let answer = self.write(&settings).await;
        self.calls.note(|| format!("leader-set {settings:?}"), &answer);
        answer
    }

    async fn unit_set(&mut self, settings: Vec<(String, String)>) -> Result<(), LeadershipError> {
        let answer = match self.unit_data.set_by(&settings, None).await {
            Ok(data) => {
                self.own = Some(Some(data));
                Ok(())
            }
            Err(err) => Err(unit_write_error(err)),
        };
        self.calls.note(|| format!("unit-set {settings:?}"), &answer);
        answer
    }

    async fn unit_get(&mut self, unit: String, key: String) -> Result<Option<String>, LeadershipError> {
        let answer = self.data_of(&unit).await.map(|data| data.and_then(|d| d.values.get(&key).cloned()));
        self.calls.note(|| format!("unit-get {unit} {key:?}"), &answer);
        answer
    }

    async fn unit_get_all(&mut self, unit: String) -> Result<Vec<(String, String)>, LeadershipError> {
        let answer = self.data_of(&unit).await.map(|data| {
            data.map(|d| d.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
        });
        self.calls.note(|| format!("unit-get-all {unit}"), &answer);
        answer
    }

    async fn units(&mut self) -> Result<Vec<String>, LeadershipError> {
        let answer = self.all_units().await.map(|units| units.keys().map(UnitName::to_string).collect());
        self.calls.note(|| "units".into(), &answer);
        answer
    }
}

impl LeadershipView {
    async fn write(&mut self, settings: &[(String, String)]) -> Result<(), LeadershipError> {
        self.leadership.leader_set_by(settings, None).await.map_err(|err| match err {
            WriteError::NotLeader { .. } => LeadershipError::NotLeader,
            WriteError::Invalid(reason) => LeadershipError::Invalid(reason.to_string()),
            WriteError::Store(reason) => LeadershipError::Unknown(reason.to_string()),
            too_late @ WriteError::TooLate => LeadershipError::Unknown(too_late.to_string()),
            unknown @ WriteError::OutcomeUnknown(_) => LeadershipError::Unknown(unknown.to_string()),
        })?;
        if let Some(snapshot) = &mut self.snapshot
            && !settings.is_empty()
        {
            // The store accepted the group, so it is valid; apply it to the hook's view.
            let write = SettingsWrite::validate(settings, &Settings::new())
                .map_err(|e| LeadershipError::Invalid(e.to_string()))?;
            write.apply_to(Arc::make_mut(snapshot));
        }
        Ok(())
    }
}

/// A refused or failed `unit-set` as the charm sees it.
fn unit_write_error(err: UnitWriteError) -> LeadershipError {
    match err {
        UnitWriteError::Invalid(reason) => LeadershipError::Invalid(reason.to_string()),
        stale @ (UnitWriteError::NotMember { .. } | UnitWriteError::OtherIncarnation { .. }) => {
            LeadershipError::Stale(stale.to_string())
        }
        other => LeadershipError::Unknown(other.to_string()),
    }
}

impl LeadershipView {
    /// Every unit's data, for the leader only, from the hook's snapshot (taken now if this
    /// is the first read).
    async fn all_units(&mut self) -> Result<&Arc<UnitDataMap>, LeadershipError> {
        if !self.leadership.is_leader().map_err(|LeadershipUnknown::StoreFailed(e)| LeadershipError::Unknown(e))? {
            return Err(LeadershipError::NotLeader);
        }
        if self.units.is_none() {
            // Brought up to date first: the hook sees at least every change announced to it.
            self.unit_data.refresh().await.map_err(|e| LeadershipError::Unknown(e.to_string()))?;
            let units = self.unit_data.snapshot().await.map_err(|e| LeadershipError::Unknown(e.to_string()))?;
            self.units = Some(units);
        }
        Ok(self.units.get_or_insert_default())
    }

    /// `unit`'s data from the hook's snapshot: this unit's own for anyone, another's for
    /// the leader only.
    async fn data_of(&mut self, unit: &str) -> Result<Option<UnitData>, LeadershipError> {
        let unit: UnitName =
            unit.parse().map_err(|e: crate::names::NameError| LeadershipError::Invalid(e.to_string()))?;
        let me = self.leadership.unit();
        if unit.app() != me.app() {
            return Err(LeadershipError::Invalid(format!("{unit} is not a unit of {}", me.app())));
        }
        if &unit != me {
            return Ok(self.all_units().await?.get(&unit).cloned());
        }
        if self.own.is_none() {
            let own = self.unit_data.read_own().await.map_err(|e| LeadershipError::Unknown(e.to_string()))?;
            self.own = Some(own);
        }
        Ok(self.own.clone().flatten())
    }
}
