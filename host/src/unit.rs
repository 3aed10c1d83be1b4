//! A unit as the host sees it, split into the parts each layer needs: its identity and data
//! directory, a [`LeadershipHandle`] (the claim itself is owned by its agent's claim loop),
//! its [`UnitDataHandle`], its [`ServiceSupervisor`], and its [`UnitReporter`] (reported status and events). A hook
//! sandbox gets one part per capability, never the whole unit; how its sandboxes are made
//! (test clocks, call log) is the runtime's ([`crate::runtime::UnitSandbox`]).
//!
//! Invariants: a unit's data directory exists once [`Unit::new`] returns (created 0700); it
//! is built in one place, the agent's factory ([`crate::agent::spawn`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::{EventKind, EventSink, LogLevel, WorkloadStatus};
use crate::hooks::HookKind;
use crate::leadership::WriteError;
use crate::names::UnitName;
use crate::reporter::UnitReporter;
use crate::services::{ServiceStatus, ServiceSupervisor, ServicesConfig};
use crate::tracker::LeadershipHandle;
use crate::unit_data::UnitDataHandle;

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
    /// Why the unit waits although it could lead: another incarnation of it (the same unit
    /// started elsewhere) holds the lease, as of when the status was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leadership_wait: Option<String>,
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
            leadership_wait: None,
        }
    }
}

/// One unit of an application: its identity, data directory, and the parts the layers use.
pub struct Unit {
    data_dir: PathBuf,
    leadership: LeadershipHandle,
    unit_data: UnitDataHandle,
    services: Arc<ServiceSupervisor>,
    reporter: Arc<UnitReporter>,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit").field("name", self.name()).field("data_dir", &self.data_dir).finish()
    }
}

impl Unit {
    /// The unit `leadership` is of, with its data directory at `data_dir` (created if
    /// missing), reporting to `events`, with the services `services` configures.
    pub fn new(
        data_dir: PathBuf,
        leadership: LeadershipHandle,
        events: Arc<dyn EventSink>,
        services: &ServicesConfig,
    ) -> std::io::Result<Self> {
        crate::state_dir::create_private_dirs(&data_dir)?;
        let name = leadership.unit().clone();
        let reporter = Arc::new(UnitReporter::new(name, events, leadership.clock().clone()));
        let services = Arc::new(ServiceSupervisor::from_config(reporter.clone(), services));
        let unit_data = leadership.open_unit_data();
        Ok(Self { data_dir, leadership, unit_data, services, reporter })
    }

    /// The unit's services.
    pub fn services(&self) -> &Arc<ServiceSupervisor> {
        &self.services
    }

    /// The unit's name.
    pub fn name(&self) -> &UnitName {
        self.leadership.unit()
    }

    /// The one host directory the unit's hooks may see.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The unit's leadership as everything but its claim loop sees it: `is-leader`, the
    /// held term, the settings and fenced writes.
    pub fn leadership(&self) -> &LeadershipHandle {
        &self.leadership
    }

    /// The unit's own data, and (while it leads) every unit's.
    pub fn unit_data(&self) -> &UnitDataHandle {
        &self.unit_data
    }

    /// Where the unit's status and events are reported.
    pub fn reporter(&self) -> &Arc<UnitReporter> {
        &self.reporter
    }

    /// A copy of the unit's status, with its services' and its leadership's current state.
    pub fn status(&self) -> UnitStatus {
        let recorded = self.reporter.recorded_status();
        UnitStatus {
            workload: recorded.workload,
            message: recorded.message,
            last_hook: recorded.last_hook,
            last_error: recorded.last_error,
            services: self.services.statuses(),
            leadership_error: self.leadership.store_error(),
            leadership_wait: self.leadership.waiting_for(),
        }
    }

    /// Writes a group of leader settings under the term this unit holds; see
    /// [`LeadershipHandle::leader_set_by`].
    pub async fn leader_set(&self, group: &[(String, String)]) -> Result<(), WriteError> {
        self.leadership.leader_set_by(group, None).await
    }

    /// See [`UnitReporter::settled`].
    pub fn settled(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reporter.settled()
    }

    /// Writes one line to the unit's log.
    pub fn log(&self, level: LogLevel, message: String) {
        self.reporter.log(level, message);
    }

    /// What follows the kill of the unit's agent (its task aborted, as a crash would end
    /// it): its services die with it (their parent-death signal), and a
    /// [`EventKind::Crashed`] event says so, with the term it held.
    pub(crate) fn agent_killed(&self) {
        tracing::info!(unit = %self.name(), "agent killed: its lease is left to expire");
        self.services.kill_all();
        self.reporter.report(EventKind::Crashed);
    }

    /// Reports `kind` as happening to this unit now.
    pub fn report(&self, kind: EventKind) {
        self.reporter.report(kind);
    }
}
