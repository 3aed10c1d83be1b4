//! What a test observes of a [`TestApp`]: the leader and term, settings, history, the
//! timeline, each unit's hooks, statuses, logs, host calls and services, and the writes
//! the store acknowledged. Reading never takes a step.

use std::path::PathBuf;
use std::time::Duration;

use super::{AcknowledgedWrite, HostCall, TestApp, TimedEvent};
use crate::events::{EventKind, LogLevel, WorkloadStatus};
use crate::hooks::{HookError, HookKind};
use crate::leadership::{Clock, Tenure};
use crate::names::UnitName;
use crate::services::ServiceStatus;
use crate::settings::Settings;
use crate::unit::UnitStatus;

impl TestApp {
    /// How many units the application has.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// False: an application has at least one unit.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The unit that holds the lease now, if any (it may have crashed).
    pub fn leader(&self) -> Option<usize> {
        self.lease().map(|(leader, _)| leader)
    }

    /// The term of the current lease, if one is held.
    pub fn term(&self) -> Option<u64> {
        self.lease().map(|(_, term)| term)
    }

    /// Virtual time since the application was built.
    pub fn elapsed(&self) -> Duration {
        self.world.clock.now().saturating_since(self.world.timeline.start)
    }

    /// The application's settings now.
    pub fn settings(&self) -> Settings {
        let store = self.world.store.clone();
        let app = self.setup.app.clone();
        self.world
            .runtime
            .block_on(async move { store.read_settings(&app).await })
            .map(|snapshot| (*snapshot.values).clone())
            .unwrap_or_default()
    }

    /// The application's tenures as the store's history records them, newest first (times
    /// on the virtual wall clock, from [`WALL_CLOCK_START`](super::WALL_CLOCK_START)).
    pub fn history(&self) -> Vec<Tenure> {
        let store = self.world.store.clone();
        let app = self.setup.app.clone();
        self.world.runtime.block_on(async move { store.history(Some(&app), usize::MAX).await }).unwrap_or_default()
    }

    /// Every event so far, in order, with its virtual time.
    pub fn timeline(&self) -> Vec<TimedEvent> {
        self.world.timeline.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The timeline as JSON Lines: the objects `charm-host run --json` prints, with `at_ms`.
    pub fn timeline_json(&self) -> String {
        self.timeline().iter().map(|e| format!("{}\n", e.to_json())).collect()
    }

    /// The hooks unit `i` finished, in order.
    pub fn hooks(&self, i: usize) -> Vec<HookKind> {
        self.hook_results(i).into_iter().map(|(hook, _)| hook).collect()
    }

    /// The hooks unit `i` finished, in order, with how each ended.
    pub fn hook_results(&self, i: usize) -> Vec<(HookKind, Result<(), HookError>)> {
        self.unit_events(i, |event| match event {
            EventKind::Hook { hook, result, .. } => Some((hook, result)),
            _ => None,
        })
    }

    /// Asserts that unit `a`'s latest `first` hook had finished before unit `b`'s first
    /// `then` hook since it began started: e.g. `(0, LeaderDeposed)` before
    /// `(2, LeaderElected)`, the old leader's deposed hook over before the new leader's
    /// elected hook began.
    ///
    /// # Panics
    /// If either never ran or they ran in another order, with the timeline.
    #[track_caller]
    pub fn assert_finished_before_started(&self, a: usize, first: HookKind, b: usize, then: HookKind) {
        let timeline = self.timeline();
        let (name_a, name_b) = (self.unit_name(a), self.unit_name(b));
        let is = |e: &TimedEvent, unit: &UnitName, hook: HookKind, started: bool| {
            e.event.unit == *unit
                && match &e.event.kind {
                    EventKind::HookStarted { hook: h } => started && *h == hook,
                    EventKind::Hook { hook: h, .. } => !started && *h == hook,
                    _ => false,
                }
        };
        let last = |unit: &UnitName, hook, started| timeline.iter().rposition(|e| is(e, unit, hook, started));
        let next = |after: usize, unit: &UnitName, hook, started| {
            timeline.iter().skip(after + 1).position(|e| is(e, unit, hook, started)).map(|p| p + after + 1)
        };
        // a's latest run of `first`, and the first start of b's `then` after it began.
        let started = last(&name_a, first, true);
        let finished = started.and_then(|s| next(s, &name_a, first, false));
        let began = started.and_then(|s| next(s, &name_b, then, true));
        let in_order = matches!((finished, began), (Some(finished), Some(began)) if finished < began);
        assert!(
            in_order,
            "expected {name_a}'s {first} to finish before {name_b}'s {then} started; timeline:\n{}",
            self.timeline_json()
        );
    }

    /// The statuses unit `i`'s hooks set, in order.
    pub fn statuses(&self, i: usize) -> Vec<(WorkloadStatus, String)> {
        self.unit_events(i, |event| match event {
            EventKind::Status { status, message } => Some((status, message)),
            _ => None,
        })
    }

    /// The lines unit `i` logged, in order.
    pub fn logs(&self, i: usize) -> Vec<(LogLevel, String)> {
        self.unit_events(i, |event| match event {
            EventKind::Log { level, message } => Some((level, message)),
            _ => None,
        })
    }

    /// Unit `i`'s status as its agent last recorded it (`None` while its agent is down).
    pub fn status(&self, i: usize) -> Option<UnitStatus> {
        self.units.get(i)?.agent.as_ref().map(|agent| agent.unit().status())
    }

    /// True while unit `i`'s tracker would answer `is-leader` true (after a crash, never:
    /// the agent's process is gone, and its unit's lock gave its tracker up as it went).
    pub fn believes_it_leads(&self, i: usize) -> bool {
        self.units.get(i).and_then(|u| u.last.as_ref()).is_some_and(|unit| unit.leadership().is_leader() == Ok(true))
    }

    /// Every host call unit `i`'s hooks made (`is-leader`, `leader-get`, `status-set`, ...),
    /// in order, each with the hook that made it and its answer.
    pub fn calls(&self, i: usize) -> Vec<HostCall> {
        self.units.get(i).map(|u| u.calls.calls()).unwrap_or_default()
    }

    /// A configured service of unit `i`, as its supervisor sees it now (`None` if no such
    /// service is configured or the unit never ran).
    pub fn service(&self, i: usize, name: &str) -> Option<ServiceStatus> {
        self.units.get(i)?.last.as_ref()?.services().status(name).ok()
    }

    /// Every write the store acknowledged, in order.
    pub fn acknowledged_writes(&self) -> Vec<AcknowledgedWrite> {
        self.world.ledger.writes()
    }

    /// Unit `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        match self.units.get(i) {
            Some(unit) => self.state_dir().data_dir(&unit.name),
            None => self.world.dir.path().join(format!("unit-{i}")).join("data"),
        }
    }

    /// The units' state directory (one per machine: every unit of a `TestApp` runs on one,
    /// but for copies started elsewhere).
    pub(super) fn state_dir(&self) -> crate::state_dir::StateDir {
        crate::state_dir::StateDir::new(self.world.dir.path())
    }
}
