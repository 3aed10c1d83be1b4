//! A unit as the host sees it, split into the parts each layer needs: its identity and data
//! directory, its leadership [`LeadershipTracker`] (owned by the unit's role source; every
//! other part only reads it), its [`ServiceSupervisor`], and its [`UnitReporter`] (reported
//! status and events). A hook sandbox gets one part per capability, never the whole unit.
//!
//! Invariants: a unit's data directory exists once [`Unit::new`] returns (created 0700); its status is
//! only changed by the charm (`status-set`) or by the host recording a hook's outcome.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::events::{Event, EventKind, EventSink, LogLevel, WorkloadStatus};
use crate::hooks::{HookKind, HookOutcome};
use crate::leadership::{Clock, LeadershipStore, WriteError};
use crate::names::UnitName;
use crate::capabilities::call_log::HostCallLog;
use crate::runtime::{GuestEnvironment, HeldPreopen};
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

/// Where a unit reports what happens to it: its status as the charm and the host set it, its
/// events, and a count of the times its agent settled. Shared by the unit's agent, its hook
/// sandboxes (`status-set`, logs) and its services.
pub struct UnitReporter {
    name: UnitName,
    status: Mutex<UnitStatus>,
    events: Arc<dyn EventSink>,
    /// What stamps its events' time.
    clock: Arc<dyn Clock>,
    /// The term the unit leads at, 0 while it does not (no real term is 0).
    term: AtomicU64,
    idle: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for UnitReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitReporter").field("name", &self.name).finish()
    }
}

impl UnitReporter {
    /// A reporter for `name` sending its events to `events`, stamped with the wall time of
    /// `clock` (the unit's store clock; see [`Clock::wall_time`]).
    pub fn new(name: UnitName, events: Arc<dyn EventSink>, clock: Arc<dyn Clock>) -> Self {
        Self {
            name,
            status: Mutex::new(UnitStatus::default()),
            events,
            clock,
            term: AtomicU64::new(0),
            idle: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The unit reported on.
    pub fn name(&self) -> &UnitName {
        &self.name
    }

    /// The sink the unit's events go to.
    pub fn events(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    fn lock_status(&self) -> MutexGuard<'_, UnitStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The status as the charm and the host last set it (without services or leadership).
    pub fn recorded_status(&self) -> UnitStatus {
        self.lock_status().clone()
    }

    /// Records the workload status a charm set.
    pub fn set_workload_status(&self, status: WorkloadStatus, message: String) {
        {
            let mut current = self.lock_status();
            current.workload = status;
            current.message.clone_from(&message);
        }
        self.report(EventKind::Status { status, message });
    }

    /// Reports that a hook starts.
    pub fn hook_started(&self, hook: HookKind) {
        self.report(EventKind::HookStarted { hook });
    }

    /// Records a hook's outcome in the status, logs it (info; warning if it failed) and
    /// reports it.
    pub fn record_hook(&self, outcome: &HookOutcome) {
        let (unit, hook) = (&self.name, outcome.hook);
        let ms = (outcome.elapsed.as_secs_f64() * 1e6).round() / 1e3;
        match &outcome.result {
            Ok(()) => tracing::info!(%unit, %hook, ms, "hook finished"),
            Err(error) => tracing::warn!(%unit, %hook, ms, %error, "hook failed"),
        }
        {
            let mut current = self.lock_status();
            current.last_hook = Some(outcome.hook);
            current.last_error = outcome.result.as_ref().err().map(|e| e.to_string());
        }
        self.report(EventKind::Hook { hook: outcome.hook, result: outcome.result.clone(), elapsed: outcome.elapsed });
    }

    /// Writes one line to the unit's log.
    pub fn log(&self, level: LogLevel, message: String) {
        self.report(EventKind::Log { level, message });
    }

    /// Reports `kind` as happening to this unit now, under the term it leads at.
    pub fn report(&self, kind: EventKind) {
        let term = Some(self.term.load(Ordering::Acquire)).filter(|t| *t != 0);
        let at = self.clock.wall_now();
        self.events.emit(Event::new(at, self.name.clone(), term, kind));
    }

    /// Reports a change of leadership: gaining `Some(term)` (the event carries the new
    /// term, as every later one does) or giving it up (`None`: the event carries the term
    /// given up, and later ones none).
    pub(crate) fn report_leadership(&self, term: Option<u64>) {
        let unit = &self.name;
        match term {
            Some(term) => {
                tracing::info!(%unit, term, "leads");
                self.term.store(term, Ordering::Release);
                self.report(EventKind::Leadership { leader: true });
            }
            None => {
                match self.term.load(Ordering::Acquire) {
                    0 => tracing::debug!(%unit, "a minion"),
                    given_up => tracing::info!(%unit, term = given_up, "no longer leads"),
                }
                self.report(EventKind::Leadership { leader: false });
                self.term.store(0, Ordering::Release);
            }
        }
    }

    /// See [`Unit::settled`].
    pub fn settled(&self) -> tokio::sync::watch::Receiver<u64> {
        self.idle.subscribe()
    }

    /// Called by the agent each time it settles (see [`Unit::settled`]).
    pub(crate) fn mark_settled(&self) {
        self.idle.send_modify(|count| *count = count.wrapping_add(1));
    }
}

/// One unit of an application: its identity, data directory, and the parts the layers use.
pub struct Unit {
    name: UnitName,
    data_dir: PathBuf,
    tracker: Arc<LeadershipTracker>,
    services: Arc<ServiceSupervisor>,
    reporter: Arc<UnitReporter>,
    /// Clocks and randomness for its sandboxes when a test decides them (`None`: the
    /// machine's).
    guest_environment: Option<GuestEnvironment>,
    /// Where its hooks' host calls are recorded, when a test asks.
    call_log: Option<Arc<HostCallLog>>,
    /// Its data directory as its hooks' preopen, once opened (see `runtime::sandbox`).
    preopen: std::sync::OnceLock<HeldPreopen>,
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
        crate::state_dir::create_private_dirs(&data_dir)?;
        let reporter = Arc::new(UnitReporter::new(name.clone(), events, tracker.store().clock().clone()));
        let services = Arc::new(ServiceSupervisor::new(reporter.clone(), Vec::new(), Duration::ZERO));
        Ok(Self { name, data_dir, tracker: Arc::new(tracker), services, reporter, guest_environment: None, call_log: None, preopen: std::sync::OnceLock::new() })
    }

    /// Gives the unit's sandboxes `environment`'s clocks and seeded randomness instead of the
    /// machine's (for tests in virtual time).
    pub fn with_guest_environment(mut self, environment: GuestEnvironment) -> Self {
        self.guest_environment = Some(environment);
        self
    }

    /// Records every host call of its hooks, with its answer, in `log` (for tests).
    pub fn with_call_log(mut self, log: Arc<HostCallLog>) -> Self {
        self.call_log = Some(log);
        self
    }

    /// Where its hooks' host calls are recorded, if anywhere.
    pub(crate) fn call_log(&self) -> Option<&Arc<HostCallLog>> {
        self.call_log.as_ref()
    }

    /// The clocks and randomness its sandboxes get, when not the machine's.
    pub(crate) fn guest_environment(&self) -> Option<&GuestEnvironment> {
        self.guest_environment.as_ref()
    }

    /// Its data directory's handle as its hooks' preopen, once a hook opened and kept it.
    pub(crate) fn preopen(&self) -> &std::sync::OnceLock<HeldPreopen> {
        &self.preopen
    }

    /// Gives the unit the services the operator configured; a stop waits `grace` before
    /// SIGKILL.
    pub fn with_services(mut self, configs: Vec<ServiceConfig>, grace: Duration) -> Self {
        self.services = Arc::new(ServiceSupervisor::new(self.reporter.clone(), configs, grace));
        self
    }

    /// Gives the unit simulated services (see [`ServiceSupervisor::simulated`]), for tests.
    pub fn with_simulated_services(mut self, configs: Vec<ServiceConfig>) -> Self {
        self.services = Arc::new(ServiceSupervisor::simulated(self.reporter.clone(), configs, Duration::ZERO));
        self
    }

    /// The unit's services.
    pub fn services(&self) -> &Arc<ServiceSupervisor> {
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

    /// The unit's leadership tracker. Only the unit's role source (its agent's claim loop)
    /// claims, renews or gives up through it; everything else reads it.
    pub fn tracker(&self) -> &Arc<LeadershipTracker> {
        &self.tracker
    }

    /// Where the unit's status and events are reported.
    pub fn reporter(&self) -> &Arc<UnitReporter> {
        &self.reporter
    }

    /// The store holding the unit's leases and settings.
    pub fn store(&self) -> &Arc<dyn LeadershipStore> {
        self.tracker.store()
    }

    /// A copy of the unit's status, with its services' and its leadership's current state.
    pub fn status(&self) -> UnitStatus {
        let mut status = self.reporter.recorded_status();
        status.services = self.services.statuses();
        status.leadership_error = self.tracker.store_error();
        status.leadership_wait = self.tracker.waiting_for();
        status
    }

    /// Writes a group of leader settings under the term this unit holds; see
    /// [`LeadershipTracker::leader_set_by`].
    pub async fn leader_set(&self, group: &[(String, String)]) -> Result<(), WriteError> {
        self.tracker.leader_set_by(group, None).await
    }

    /// Counts the times the unit's agent, knowing its role, found nothing to run and began
    /// to wait for news: after news that would cause a hook, the count moving on means the
    /// agent settled without running one (what tests of "nothing more ran" wait for).
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
        tracing::info!(unit = %self.name, "agent killed: its lease is left to expire");
        self.services.kill_all();
        self.reporter.report(EventKind::Crashed);
    }

    /// Reports `kind` as happening to this unit now.
    pub fn report(&self, kind: EventKind) {
        self.reporter.report(kind);
    }
}
