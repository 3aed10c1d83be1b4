//! `juju:charm/leadership`: `is-leader`, the sandboxed `leader-get`, and the fenced,
//! write-through `leader-set`.
//!
//! Invariants:
//! - `is-leader` asks the unit's leadership handle at the moment of the call, so it can change
//!   mid-hook in either direction, and never answers true past the guarantee.
//! - Reads come from one snapshot, taken at the hook's first read and kept for the hook;
//!   only this hook's own successful `leader-set` changes it.
//! - `leader-set` writes the whole group under the unit's term in one store call; on any
//!   error nothing was written and the snapshot is unchanged.

use std::sync::Arc;

use crate::leadership::WriteError;
use crate::runtime::bindings::leadership::{Host, LeadershipError};
use crate::settings::{Settings, SettingsWrite};
use crate::tracker::{LeadershipHandle, LeadershipUnknown};

use super::CallRecorder;

/// What `juju:charm/leadership` sees: the unit's leadership handle (which cannot change
/// the claim) and the hook's settings snapshot.
pub(crate) struct LeadershipView {
    pub(crate) leadership: LeadershipHandle,
    pub(crate) snapshot: Option<Arc<Settings>>,
    pub(crate) calls: CallRecorder,
}

impl LeadershipView {
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
