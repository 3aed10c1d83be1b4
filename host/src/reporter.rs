//! Where a unit reports what happens to it: the status the charm and the host set, its
//! events (stamped with the store clock's wall time and the term the unit leads at), and a
//! count of the times its agent settled. Shared by the unit's agent, its hook sandboxes
//! (`status-set`, logs) and its services; it knows nothing of them.
//!
//! Invariants: the status is changed only by the charm (`status-set`) or by the hook driver
//! recording a hook's outcome; every change is also an event, sent before the call returns.
//! (When an agent starts, the workload status its unit last recorded is restored: not a
//! change, so no event.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::events::{Event, EventKind, EventSink, LeadershipChange, LogLevel, WorkloadStatus};
use crate::hooks::{HookKind, HookOutcome};
use crate::leadership::Clock;
use crate::names::UnitName;

/// What the charm and the host last recorded of a unit (the rest of a
/// [`UnitStatus`](crate::UnitStatus) is read from its services and leadership).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedStatus {
    /// The workload status the charm last set.
    pub workload: WorkloadStatus,
    /// The message the charm last set.
    pub message: String,
    /// The last hook that ran.
    pub last_hook: Option<HookKind>,
    /// Why the last hook failed, if it did.
    pub last_error: Option<String>,
}

impl Default for RecordedStatus {
    fn default() -> Self {
        Self { workload: WorkloadStatus::Maintenance, message: String::new(), last_hook: None, last_error: None }
    }
}

/// Where a unit reports what happens to it: its status as the charm and the host set it, its
/// events, and a count of the times its agent settled. Shared by the unit's agent, its hook
/// sandboxes (`status-set`, logs) and its services.
pub struct UnitReporter {
    name: UnitName,
    status: Mutex<RecordedStatus>,
    events: Arc<dyn EventSink>,
    /// What stamps its events' time.
    clock: Arc<dyn Clock>,
    /// The term the unit leads at, 0 while it does not (no real term is 0).
    term: AtomicU64,
    idle: tokio::sync::watch::Sender<u64>,
    /// Whether its agent waits with nothing queued (see [`Self::quiet`]).
    quiet: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for UnitReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitReporter").field("name", &self.name).finish()
    }
}

impl UnitReporter {
    /// A reporter for `name` sending its events to `events`, stamped with the wall time of
    /// `clock` (the unit's store clock; see [`Clock::wall_now`]).
    pub fn new(name: UnitName, events: Arc<dyn EventSink>, clock: Arc<dyn Clock>) -> Self {
        Self {
            name,
            status: Mutex::new(RecordedStatus::default()),
            events,
            clock,
            term: AtomicU64::new(0),
            idle: tokio::sync::watch::Sender::new(0),
            quiet: tokio::sync::watch::Sender::new(false),
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

    fn lock_status(&self) -> MutexGuard<'_, RecordedStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The status as the charm and the host last set it.
    pub fn recorded_status(&self) -> RecordedStatus {
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

    /// Restores the workload status the unit recorded before its agent restarted; no event
    /// (nothing changed).
    pub(crate) fn restore_workload_status(&self, status: WorkloadStatus, message: String) {
        let mut current = self.lock_status();
        current.workload = status;
        current.message = message;
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
                self.report(EventKind::Leadership(LeadershipChange::Elected));
            }
            None => {
                let change = match self.term.load(Ordering::Acquire) {
                    0 => {
                        tracing::debug!(%unit, "a minion");
                        LeadershipChange::Minion
                    }
                    given_up => {
                        tracing::info!(%unit, term = given_up, "no longer leads");
                        LeadershipChange::Deposed
                    }
                };
                self.report(EventKind::Leadership(change));
                self.term.store(0, Ordering::Release);
            }
        }
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

    /// True while the unit's agent knows its role and waits with nothing queued: no hook
    /// runs, none is due, no failed one waits for its retry. False from the moment news
    /// wakes it (news still on its way to it does not count), and once it ended.
    pub fn quiet(&self) -> tokio::sync::watch::Receiver<bool> {
        self.quiet.subscribe()
    }

    /// Called by the agent as it begins to wait (`quiet`: with nothing queued) and as it
    /// wakes (see [`Self::quiet`]).
    pub(crate) fn mark_quiet(&self, quiet: bool) {
        self.quiet.send_if_modified(|was| std::mem::replace(was, quiet) != quiet);
    }
}
