//! The hook driver of one unit: it turns the roles its [`RoleSource`] publishes, the
//! settings versions the store announces, the unit-data changes it hears of while the unit
//! leads and the commands it is given into hooks, in the order its [`HookQueue`] decides,
//! and runs them.
//!
//! Invariants:
//! - It never changes the unit's leadership: a step-down or a stop is a request to the role
//!   source, answered once the new role is published, so no hook runs on a stale role.
//! - Commands come before news: a stop wins over anything that would queue more hooks, and
//!   a stop that arrives during a hook gives the hook the stop grace, then interrupts it.
//! - After every hook the local state and status are recorded ([`Records`]); what need not
//!   survive a crash is written behind, by its due time and at the stop.
//! - `update-status` comes every `update_status_interval` on the unit's clock, the first
//!   one period after the driver starts; the queue coalesces periods and runs it after
//!   anything else, one hook at a time, so it never overlaps itself.
//! - Only a leader watches unit data ([`UnitDataWatch`]): it subscribes when the unit
//!   becomes leader and drops the subscription when it stops leading, so a change wakes
//!   only the leader's agent. The units a `unit-data-changed` announces are taken from the
//!   mirror when it starts and given back if it fails.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::AgentCommand;
use super::queue::{HookQueue, Next};
use super::records::Records;
use super::role::{Role, RoleSource};
use crate::events::LogLevel;
use crate::hooks::{HookCall, HookError, HookKind, HookOutcome};
use crate::leadership::{Clock, Timestamp};
use crate::runtime::{Charm, HookRuntime, UnitSandbox};
use crate::timing;

pub(super) struct HookDriver {
    pub(super) runtime: Arc<HookRuntime>,
    pub(super) charm: Charm,
    pub(super) sandbox: Arc<UnitSandbox>,
    pub(super) queue: HookQueue,
    pub(super) records: Records,
    pub(super) stop_grace: Duration,
    pub(super) update_status_interval: Duration,
}

impl HookDriver {
    /// Runs hooks until the stop sequence is done, then stops the unit's services and ends
    /// its role source (which gives up the lease).
    pub(super) async fn run(mut self, roles: RoleSource, commands: &mut mpsc::Receiver<AgentCommand>) {
        let unit = self.sandbox.unit().clone();
        let clock = unit.leadership().clock().clone();
        let mut settings = unit.leadership().watch_settings();
        self.queue.on_settings(*settings.borrow_and_update());
        let mut role_rx = roles.roles.clone();
        let mut health = roles.health.clone();
        let mut acted_on = Role::Unknown;
        let mut stopping = false;
        let mut pending: Option<AgentCommand> = None;
        let mut unit_data = UnitDataWatch::default();
        let mut next_update_status = clock.now() + self.update_status_interval;
        loop {
            let role = *role_rx.borrow_and_update();
            if role != acted_on {
                acted_on = role;
                unit_data.follow(role, &unit);
                match role {
                    Role::Leader(term) => self.queue.on_leader(term),
                    Role::Minion => {
                        self.queue.on_minion();
                        // A tenure this driver never saw (it began and ended during a
                        // hook) owes no `leader-deposed`: a lease given up by request is
                        // released now rather than left to expire.
                        if !self.queue.deposed_pending() {
                            roles.deposed().await;
                        }
                    }
                    Role::Unknown => {}
                }
            }
            if settings.has_changed().unwrap_or(false) {
                self.queue.on_settings(*settings.borrow_and_update());
            }
            if let Some(command) = pending.take() {
                // Answered once the role source has given up the guarantee (and stopped the
                // leader-only services): the role read next says so, and `leader-deposed`
                // then runs with `is-leader` false.
                match command {
                    AgentCommand::StepDown => roles.step_down().await,
                    AgentCommand::Stop => {
                        stopping = true;
                        self.queue.on_stop();
                        roles.stop().await;
                    }
                }
                continue;
            }
            // After the commands: a store call must not delay a stop.
            unit_data.refresh_if_stale(&unit, clock.now()).await;
            if unit.unit_data().has_pending() {
                self.queue.on_unit_data();
            }
            if self.records.write_due().is_some_and(|due| due <= clock.now()) {
                self.records.write_behind(&unit);
            }
            let now = clock.now();
            if now >= next_update_status {
                self.queue.on_update_status();
                next_update_status = now + self.update_status_interval;
            }
            for dropped in self.queue.take_dropped() {
                unit.log(LogLevel::Info, format!("dropped stale {} (term {:?})", dropped.hook, dropped.term));
            }
            let wait_until = match self.queue.next(clock.now(), unit.leadership().held_term()) {
                Next::Run(queued) => {
                    let version = *settings.borrow();
                    let call = match queued.hook {
                        HookKind::UnitDataChanged => HookCall::unit_data_changed(unit.unit_data().take_pending()),
                        hook => {
                            if hook == HookKind::LeaderElected {
                                // It reads every unit's data: nothing before it is owed.
                                unit.unit_data().clear_pending();
                            }
                            HookCall::from(hook)
                        }
                    };
                    let outcome = if stopping {
                        self.runtime.run_hook_within(&self.charm, &self.sandbox, call.clone(), self.stop_grace).await
                    } else {
                        let hook = self.runtime.run_hook(&self.charm, &self.sandbox, call.clone());
                        run_until_stopped(hook, queued.hook, commands, &mut pending, self.stop_grace).await
                    };
                    if outcome.result.is_err() {
                        unit.unit_data().restore_pending(call.into_changed());
                    }
                    // Only the driver records a hook's outcome: in the status, the log and
                    // the events.
                    unit.reporter().record_hook(&outcome);
                    let now = clock.now();
                    self.queue.finished(queued, outcome.result.is_ok(), now, Some(version));
                    self.records.save_local(self.queue.local_state(), &unit, now).await;
                    self.records.save_status(&unit);
                    if queued.hook == HookKind::LeaderDeposed {
                        roles.deposed().await;
                    }
                    continue;
                }
                Next::Stopped => break,
                Next::WaitUntil(at) => Some(at),
                Next::Idle => None,
            };
            let nothing_queued = wait_until.is_none();
            // Whichever comes first: the queue's next retry, the state written behind, the
            // unit-data refresh that failed tried again, or the next `update-status`.
            let wait_until = wait_until
                .into_iter()
                .chain(self.records.write_due())
                .chain(unit_data.retry_at)
                .chain((!stopping).then_some(next_update_status))
                .min();
            if acted_on != Role::Unknown {
                unit.reporter().mark_settled();
                unit.reporter().mark_quiet(nothing_queued && !stopping);
            }
            let retry = sleep_until_or_forever(clock.as_ref(), wait_until);
            // Commands first: a stop must win over news that would queue more hooks.
            tokio::select! {
                biased;
                command = commands.recv(), if !stopping => pending = Some(command.unwrap_or(AgentCommand::Stop)),
                changed = role_rx.changed() => if changed.is_err() { break },
                changed = settings.changed() => {
                    // `changed()` marks the version seen: hand it to the queue now.
                    if changed.is_ok() {
                        self.queue.on_settings(*settings.borrow_and_update());
                    }
                }
                // The store started or stopped failing: the status says so.
                _ = health.changed() => self.records.save_status(&unit),
                () = unit_data.changed() => {}
                () = retry => {}
            }
            unit.reporter().mark_quiet(false);
        }
        unit.reporter().mark_quiet(false);
        self.records.write_behind(&unit);
        unit.services().stop_all().await;
        roles.finish().await;
        self.records.save_status(&unit);
    }
}

/// The leader's subscription to its application's unit data (none while not leading), and
/// whether its mirror must be brought up to date.
#[derive(Default)]
struct UnitDataWatch {
    watch: Option<tokio::sync::watch::Receiver<u64>>,
    stale: bool,
    /// When a refresh that failed is tried again.
    retry_at: Option<Timestamp>,
    failures: u32,
}

impl UnitDataWatch {
    /// Subscribes when the unit becomes leader (and refreshes at once), drops the
    /// subscription otherwise.
    fn follow(&mut self, role: Role, unit: &crate::unit::Unit) {
        match role {
            Role::Leader(_) if self.watch.is_none() => {
                self.watch = Some(unit.unit_data().watch());
                self.stale = true;
            }
            Role::Leader(_) => {}
            Role::Minion | Role::Unknown => *self = Self::default(),
        }
    }

    /// Brings the mirror up to date if a change was announced (or a retry is due); a
    /// failure is retried with a backoff, and nothing announced is lost meanwhile (the
    /// mirror's revision did not move).
    async fn refresh_if_stale(&mut self, unit: &crate::unit::Unit, now: Timestamp) {
        if let Some(watch) = &mut self.watch
            && watch.has_changed().unwrap_or(false)
        {
            watch.borrow_and_update();
            self.stale = true;
        }
        if !self.stale || self.retry_at.is_some_and(|at| at > now) {
            return;
        }
        match unit.unit_data().refresh().await {
            Ok(()) => {
                self.stale = false;
                self.retry_at = None;
                self.failures = 0;
            }
            Err(err) => {
                self.failures = self.failures.saturating_add(1);
                let pause = timing::backoff(Duration::from_millis(100), Duration::from_secs(5), self.failures);
                self.retry_at = Some(now + pause);
                unit.log(LogLevel::Warning, format!("could not read the units' data (will retry): {err}"));
            }
        }
    }

    /// Returns when a change is announced (never while not leading); the mirror is then
    /// stale.
    async fn changed(&mut self) {
        match &mut self.watch {
            Some(watch) => {
                if watch.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                self.stale = true;
            }
            None => std::future::pending().await,
        }
    }
}

/// Runs `hook` to its end, taking commands meanwhile: a stop that arrives gives the hook
/// `grace` more, then interrupts it (the hook's future is dropped; running wasm yields at
/// every epoch tick, so it stops within one).
async fn run_until_stopped(
    hook: impl std::future::Future<Output = HookOutcome>,
    kind: HookKind,
    commands: &mut mpsc::Receiver<AgentCommand>,
    pending: &mut Option<AgentCommand>,
    grace: Duration,
) -> HookOutcome {
    let started = std::time::Instant::now();
    tokio::pin!(hook);
    let mut interrupt_at: Option<tokio::time::Instant> = None;
    loop {
        let interrupt = async {
            match interrupt_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            outcome = &mut hook => return outcome,
            // A stop supersedes a pending step-down (it gives up leadership too).
            command = commands.recv(), if *pending != Some(AgentCommand::Stop) => {
                let command = command.unwrap_or(AgentCommand::Stop);
                if command == AgentCommand::Stop {
                    interrupt_at = Some(timing::deadline_after(grace));
                }
                if pending.is_none() || command == AgentCommand::Stop {
                    *pending = Some(command);
                }
            }
            () = interrupt => {
                return HookOutcome { hook: kind, result: Err(HookError::Interrupted(grace)), elapsed: started.elapsed() };
            }
        }
    }
}

/// Sleeps on `clock` until `at`, or forever without one.
async fn sleep_until_or_forever(clock: &dyn Clock, at: Option<Timestamp>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}
