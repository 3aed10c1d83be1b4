//! The hook driver of one unit: it turns the roles its [`RoleSource`] publishes, the
//! settings versions the store announces and the commands it is given into hooks, in the
//! order its [`HookQueue`] decides, and runs them.
//!
//! Invariants:
//! - It never changes the unit's leadership: a step-down or a stop is a request to the role
//!   source, answered once the new role is published, so no hook runs on a stale role.
//! - Commands come before news: a stop wins over anything that would queue more hooks, and
//!   a stop that arrives during a hook gives the hook the stop grace, then interrupts it.
//! - After every hook the local state and status are recorded ([`Records`]); what need not
//!   survive a crash is written behind, by its due time and at the stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::AgentCommand;
use super::queue::{HookQueue, Next};
use super::records::Records;
use super::role::{Role, RoleSource};
use crate::events::LogLevel;
use crate::hooks::{HookError, HookKind, HookOutcome};
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
}

impl HookDriver {
    /// Runs hooks until the stop sequence is done, then stops the unit's services and ends
    /// its role source (which gives up the lease).
    pub(super) async fn run(mut self, roles: RoleSource, mut commands: mpsc::Receiver<AgentCommand>) {
        let unit = self.sandbox.unit().clone();
        let clock = unit.leadership().clock().clone();
        let mut settings = unit.leadership().watch_settings();
        self.queue.on_settings(*settings.borrow_and_update());
        let mut role_rx = roles.roles.clone();
        let mut health = roles.health.clone();
        let mut acted_on = Role::Unknown;
        let mut stopping = false;
        let mut pending: Option<AgentCommand> = None;
        loop {
            let role = *role_rx.borrow_and_update();
            if role != acted_on {
                acted_on = role;
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
            if self.records.write_due().is_some_and(|due| due <= clock.now()) {
                self.records.write_behind(&unit);
            }
            for dropped in self.queue.take_dropped() {
                unit.log(LogLevel::Info, format!("dropped stale {} (term {:?})", dropped.hook, dropped.term));
            }
            let wait_until = match self.queue.next(clock.now(), unit.leadership().held_term()) {
                Next::Run(queued) => {
                    let version = *settings.borrow();
                    let outcome = if stopping {
                        self.runtime.run_hook_within(&self.charm, &self.sandbox, queued.hook, self.stop_grace).await
                    } else {
                        let hook = self.runtime.run_hook(&self.charm, &self.sandbox, queued.hook);
                        run_until_stopped(hook, queued.hook, &mut commands, &mut pending, self.stop_grace).await
                    };
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
            // Whichever comes first: the queue's next retry or the state written behind.
            let wait_until = wait_until.into_iter().chain(self.records.write_due()).min();
            if acted_on != Role::Unknown {
                unit.reporter().mark_settled();
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
                () = retry => {}
            }
        }
        self.records.write_behind(&unit);
        unit.services().stop_all().await;
        roles.finish().await;
        self.records.save_status(&unit);
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
