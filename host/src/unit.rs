//! A unit as the host sees it: its identity, data directory, leadership tracker, services,
//! reported status and event sink. Shared by the unit's own task and every hook sandbox it starts.
//!
//! Invariants: a unit's data directory exists once [`Unit::new`] returns (created 0700); its status is
//! only changed by the charm (`status-set`) or by the host recording a hook's outcome.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::events::{Event, EventSink, LogLevel, WorkloadStatus};
use crate::hooks::{HookKind, HookOutcome};
use crate::leadership::{LeadershipStore, Timestamp, WriteError};
use crate::names::UnitName;
use crate::services::{ServiceConfig, ServiceStatus, ServiceSupervisor};
use crate::tracker::LeadershipTracker;

/// A unit's reported state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitStatus {
    /// The workload status the charm last set.
    pub workload: WorkloadStatus,
    /// The message the charm last set.
    pub message: String,
    /// The last hook that ran.
    pub last_hook: Option<HookKind>,
    /// Why the last hook failed, if it did.
    pub last_error: Option<String>,
    /// The unit's services, as of when the status was read.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    /// Why the unit cannot verify its leadership (its claims fail), as of when the status
    /// was read; `is-leader` answers "unknown" meanwhile.
    #[serde(default)]
    pub leadership_error: Option<String>,
}

impl Default for UnitStatus {
    fn default() -> Self {
        Self {
            workload: WorkloadStatus::Maintenance,
            message: String::new(),
            last_hook: None,
            last_error: None,
            services: Vec::new(),
            leadership_error: None,
        }
    }
}

/// One unit of an application, as hooks and the host functions see it.
pub struct Unit {
    name: UnitName,
    data_dir: PathBuf,
    tracker: LeadershipTracker,
    status: Mutex<UnitStatus>,
    events: Arc<dyn EventSink>,
    services: ServiceSupervisor,
    idle: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit").field("name", &self.name).field("data_dir", &self.data_dir).finish()
    }
}

impl Unit {
    /// A unit with its data directory at `data_dir` (created if missing).
    pub fn new(
        name: UnitName,
        data_dir: PathBuf,
        tracker: LeadershipTracker,
        events: Arc<dyn EventSink>,
    ) -> std::io::Result<Self> {
        // Private whatever the umask: the charm keeps its secrets here.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(&data_dir)?;
        let services = ServiceSupervisor::new(name.clone(), events.clone(), Vec::new(), Duration::ZERO);
        let idle = tokio::sync::watch::Sender::new(0);
        Ok(Self { name, data_dir, tracker, status: Mutex::new(UnitStatus::default()), events, services, idle })
    }

    /// Gives the unit the services the operator configured; a stop waits `grace` before
    /// SIGKILL.
    pub fn with_services(mut self, configs: Vec<ServiceConfig>, grace: Duration) -> Self {
        self.services = ServiceSupervisor::new(self.name.clone(), self.events.clone(), configs, grace);
        self
    }

    /// The unit's services.
    pub fn services(&self) -> &ServiceSupervisor {
        &self.services
    }

    /// The unit's name.
    pub fn name(&self) -> &UnitName {
        &self.name
    }

    /// The one host directory the unit's hooks may see.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The unit's leadership tracker.
    pub fn tracker(&self) -> &LeadershipTracker {
        &self.tracker
    }

    /// The store holding the unit's leases and settings.
    pub fn store(&self) -> &Arc<dyn LeadershipStore> {
        self.tracker.store()
    }

    fn lock_status(&self) -> MutexGuard<'_, UnitStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the unit's status, with its services' and its leadership's current state.
    pub fn status(&self) -> UnitStatus {
        let mut status = self.lock_status().clone();
        status.services = self.services.statuses();
        status.leadership_error = self.tracker.store_error();
        status
    }

    /// Records the workload status a charm set.
    pub fn set_workload_status(&self, status: WorkloadStatus, message: String) {
        {
            let mut current = self.lock_status();
            current.workload = status;
            current.message.clone_from(&message);
        }
        self.emit(Event::Status { unit: self.name.clone(), status, message });
    }

    /// Records a hook's outcome in the status and reports it.
    pub fn record_hook(&self, outcome: &HookOutcome) {
        {
            let mut current = self.lock_status();
            current.last_hook = Some(outcome.hook);
            current.last_error = outcome.result.as_ref().err().map(|e| e.to_string());
        }
        self.emit(Event::Hook {
            unit: self.name.clone(),
            hook: outcome.hook,
            result: outcome.result.clone(),
            elapsed: outcome.elapsed,
        });
    }

    /// Writes a group of leader settings under the term this unit holds (the store refuses it
    /// once that term has lost the lease); an empty group from the leader writes nothing.
    /// Without a held term: [`WriteError::NotLeader`] with term 0 (no real term is 0).
    pub async fn leader_set(&self, group: &[(String, String)]) -> Result<(), WriteError> {
        self.leader_set_by(group, None).await
    }

    /// [`Self::leader_set`] for a caller who stops waiting at `apply_by` (machine monotonic
    /// clock): the write is not applied unless the store decides it before then.
    pub async fn leader_set_by(&self, group: &[(String, String)], apply_by: Option<Timestamp>) -> Result<(), WriteError> {
        let not_leader = || WriteError::NotLeader { app: self.name.app().clone(), unit: self.name.clone(), term: 0 };
        let term = self.tracker.held_term().ok_or_else(not_leader)?;
        if !group.is_empty() {
            self.store().write_settings_by(&self.name, term, group, apply_by).await?;
        }
        Ok(())
    }

    /// Counts the times the unit's agent, knowing its role, found nothing to run and began
    /// to wait for news: after news that would cause a hook, the count moving on means the
    /// agent settled without running one (what tests of "nothing more ran" wait for).
    pub fn settled(&self) -> tokio::sync::watch::Receiver<u64> {
        self.idle.subscribe()
    }

    /// Called by the agent each time it settles (see [`Self::settled`]).
    pub(crate) fn mark_settled(&self) {
        self.idle.send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Writes one line to the unit's log.
    pub fn log(&self, level: LogLevel, message: String) {
        self.emit(Event::Log { unit: self.name.clone(), level, message });
    }

    /// Reports an event about this unit.
    pub fn emit(&self, event: Event) {
        self.events.emit(event);
    }
}
