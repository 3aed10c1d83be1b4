//! The unit agent: for one unit, a claim loop that keeps leadership (and deposes itself in
//! time), and a driver that runs the hooks its [`HookQueue`] asks for.
//!
//! Timing guarantees, all on the store's clock:
//! - The unit claims twice the guarantee window and renews every half window; a failed
//!   renewal is retried every tenth of a window.
//! - If it cannot renew, then at its **guarantee deadline** (the claim's end minus the
//!   window) it stops answering as leader, stops claiming, and queues `leader-deposed`. The
//!   lease still keeps every other unit out for one more window, so in a live agent the
//!   deposed hook starts before any successor's `leader-elected` (unless a hook of this
//!   unit is still running then: hooks do not preempt each other).
//! - Step-down and graceful stop run `leader-deposed` first and revoke the lease right
//!   after it, so a successor is elected at once instead of after expiry.
//! - Whenever the unit gives up or loses its guarantee, its leader-only services are
//!   stopped first (SIGTERM, SIGKILL after at most half a window), before the lease can
//!   pass to another unit.
//!
//! When the agent itself is dead (killed, frozen, or its machine gone), no hook of it can
//! run: its lease simply expires after at most twice the window, and only then can another
//! unit lead. Its `leader-deposed` never runs for that tenure; a workload that must stop
//! with leadership must be stopped by something that outlives the agent's silence.

mod local_state;
pub mod queue;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::events::{Event, LogLevel};
use crate::hooks::HookKind;
use crate::leadership::{Clock, Timestamp, wait_until_released};
use crate::runtime::{Charm, HookRuntime};
use crate::tracker::Refresh;
use crate::unit::Unit;

pub use local_state::{LocalStateError, RecordWriter, load_json, save_json};
pub use queue::{Backoff, HookQueue, LocalState, Next, QueuedHook};

/// How a unit agent behaves.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    /// Retry timing for failed hooks.
    pub backoff: Backoff,
    /// Where the unit's local state is kept across restarts; `None` keeps it in memory.
    pub state_file: Option<PathBuf>,
    /// Where the unit's status is written after every hook, for `charm-host status`.
    pub status_file: Option<PathBuf>,
}

/// What an operator (or the embedding program) can ask of a running agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCommand {
    /// Give up leadership: `leader-deposed`, then revoke; do not claim again for one
    /// claim duration (or until another unit leads).
    StepDown,
    /// Graceful removal: `leader-deposed` if leader, then `stop`, then revoke, then exit.
    Stop,
}

/// The role the claim loop publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Unknown,
    Leader(u64),
    Minion,
}

/// What the driver asks of the claim loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimControl {
    Claim,
    /// Do not claim before this instant (`None`: never again).
    HoldOff(Option<Timestamp>),
}

/// Runs one unit until it is stopped with [`AgentCommand::Stop`] (or `commands` closes,
/// which is taken as a stop). Returns when the stop sequence is done and leadership is
/// given up.
pub async fn run_unit(
    runtime: Arc<HookRuntime>,
    charm: Charm,
    unit: Arc<Unit>,
    config: AgentConfig,
    mut commands: mpsc::Receiver<AgentCommand>,
) -> Result<(), LocalStateError> {
    let local = match &config.state_file {
        Some(path) => local_state::load(path)?,
        None => LocalState::default(),
    };
    let store = unit.store().clone();
    let clock = store.clock().clone();
    let (role_tx, mut role_rx) = watch::channel(Role::Unknown);
    let (control_tx, control_rx) = watch::channel(ClaimControl::Claim);
    let claims = tokio::spawn(claim_loop(unit.clone(), role_tx, control_rx));

    let mut settings_rx = store.watch_settings(unit.name().app());
    let mut saved = local.clone();
    let mut saved_status = None;
    let mut state_writer = config.state_file.as_deref().map(local_state::RecordWriter::open).transpose()?;
    let mut status_writer = config.status_file.as_deref().map(local_state::RecordWriter::open).transpose()?;
    let mut queue = HookQueue::new(local, config.backoff);
    queue.on_settings(*settings_rx.borrow_and_update());
    let mut acted_on = Role::Unknown;
    // The tenure this agent gave up itself; the claim loop may still report it for a moment.
    let mut given_up: Option<u64> = None;
    let mut revoke_after_deposed = false;
    let mut stopping = false;
    loop {
        let role = match *role_rx.borrow_and_update() {
            Role::Leader(term) if given_up.is_some_and(|g| term <= g) => Role::Minion,
            role => role,
        };
        if role != acted_on {
            acted_on = role;
            match role {
                Role::Leader(term) => queue.on_leader(term),
                Role::Minion => queue.on_minion(),
                Role::Unknown => {}
            }
        }
        if settings_rx.has_changed().unwrap_or(false) {
            queue.on_settings(*settings_rx.borrow_and_update());
        }
        for dropped in queue.take_dropped() {
            unit.log(LogLevel::Info, format!("dropped stale {} (term {:?})", dropped.hook, dropped.term));
        }
        let wait_until = match queue.next(clock.now(), unit.tracker().held_term()) {
            Next::Run(queued) => {
                let version = *settings_rx.borrow();
                let outcome = runtime.run_hook(&charm, &unit, queued.hook).await;
                queue.finished(queued, outcome.result.is_ok(), clock.now(), Some(version));
                if let Some(writer) = &mut state_writer
                    && local_state::save(writer, queue.local_state(), &saved)?
                {
                    saved = queue.local_state().clone();
                }
                let status = unit.status();
                if let Some(writer) = &mut status_writer
                    && saved_status.as_ref() != Some(&status)
                {
                    match writer.write(&status, false) {
                        Ok(()) => saved_status = Some(status),
                        Err(err) => unit.log(LogLevel::Warning, format!("could not record the unit's status: {err}")),
                    }
                }
                if queued.hook == HookKind::LeaderDeposed && revoke_after_deposed {
                    revoke_after_deposed = false;
                    release(&unit);
                }
                continue;
            }
            Next::Stopped => break,
            Next::WaitUntil(at) => Some(at),
            Next::Idle => None,
        };
        let retry = sleep_until_or_forever(clock.as_ref(), wait_until);
        // Commands first: a stop must win over news that would queue more hooks.
        tokio::select! {
            biased;
            command = commands.recv(), if !stopping => {
                let command = command.unwrap_or(AgentCommand::Stop);
                let hold_off = match command {
                    AgentCommand::StepDown => Some(clock.now() + unit.tracker().claim_duration()),
                    AgentCommand::Stop => None,
                };
                if command == AgentCommand::Stop {
                    stopping = true;
                    queue.on_stop();
                }
                if matches!(acted_on, Role::Leader(_)) || command == AgentCommand::Stop {
                    control_tx.send_replace(ClaimControl::HoldOff(hold_off));
                }
                // Give up the guarantee now (the claim loop confirms it), so that
                // `leader-deposed` is the next hook and `is-leader` is false during it.
                if let Role::Leader(term) = acted_on {
                    given_up = Some(term);
                    unit.tracker().abandon();
                    stop_leader_services(&unit).await;
                    acted_on = Role::Minion;
                    queue.on_minion();
                    revoke_after_deposed = true;
                }
            }
            changed = role_rx.changed() => if changed.is_err() { break },
            changed = settings_rx.changed() => {
                // `changed()` marks the version seen: hand it to the queue now.
                if changed.is_ok() {
                    queue.on_settings(*settings_rx.borrow_and_update());
                }
            }
            () = retry => {}
        }
    }
    claims.abort();
    unit.services().stop_all().await;
    release(&unit);
    Ok(())
}

/// Stops the unit's leader-only services, within half a guarantee window: the lease still
/// keeps every other unit out for at least a window when the guarantee is given up.
async fn stop_leader_services(unit: &Unit) {
    unit.services().stop_leader_only(unit.tracker().window() / 2).await;
}

/// Sleeps on `clock` until `at`, or forever without one.
async fn sleep_until_or_forever(clock: &dyn Clock, at: Option<Timestamp>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn release(unit: &Unit) {
    if let Err(err) = unit.tracker().release() {
        unit.log(LogLevel::Warning, format!("could not give up leadership: {err}"));
    }
}

/// Keeps the unit's claim fresh and publishes its role; see the module docs for timing.
async fn claim_loop(unit: Arc<Unit>, role_tx: watch::Sender<Role>, mut control: watch::Receiver<ClaimControl>) {
    let tracker = unit.tracker();
    let store = unit.store().clone();
    let clock = store.clock().clone();
    // Publishes the role; on losing leadership, first stops the leader-only services.
    let publish = async |role: Role| {
        let was_leader = matches!(*role_tx.borrow(), Role::Leader(_));
        if was_leader && !matches!(role, Role::Leader(_)) {
            stop_leader_services(&unit).await;
        }
        if role_tx.send_if_modified(|current| std::mem::replace(current, role) != role) {
            let (leader, term) = match role {
                Role::Leader(term) => (true, Some(term)),
                _ => (false, None),
            };
            unit.emit(Event::Leadership { unit: unit.name().clone(), leader, term });
        }
    };
    let retry_interval = (tracker.window() / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let hold_off = match *control.borrow_and_update() {
            ClaimControl::HoldOff(until) if until.is_none_or(|t| clock.now() < t) => Some(until),
            _ => None,
        };
        if let Some(until) = hold_off {
            tracker.abandon();
            publish(Role::Minion).await;
            tokio::select! {
                changed = control.changed() => if changed.is_err() { return },
                () = sleep_until_or_forever(clock.as_ref(), until) => {}
            }
            continue;
        }
        let refresh = tracker.refresh();
        let role = match refresh {
            Refresh::Leader { term, .. } => Role::Leader(term),
            Refresh::Minion => Role::Minion,
            Refresh::Failed => match *role_tx.borrow() {
                Role::Leader(term) if tracker.guarantee_deadline().is_some_and(|d| clock.now() < d) => Role::Leader(term),
                _ => Role::Minion,
            },
        };
        publish(role).await;
        match role {
            Role::Leader(_) => {
                let Some(deadline) = tracker.guarantee_deadline() else { continue };
                let next_try = if refresh == Refresh::Failed { retry_interval } else { tracker.renew_interval() };
                let wake = (clock.now() + next_try).min(deadline);
                tokio::select! {
                    changed = control.changed() => { if changed.is_err() { return } continue }
                    () = clock.sleep_until(wake) => {}
                }
                if clock.now() >= deadline {
                    // Could not renew in time: depose now, while the lease still keeps
                    // everyone else out, and do not claim again until it has run out.
                    let claim = tracker.abandon();
                    publish(Role::Minion).await;
                    if let Some(claim) = claim {
                        tokio::select! {
                            changed = control.changed() => if changed.is_err() { return },
                            () = clock.sleep_until(claim.valid_until) => {}
                        }
                    }
                }
            }
            Role::Minion | Role::Unknown => {
                let retry = clock.sleep_until(clock.now() + tracker.renew_interval());
                tokio::select! {
                    changed = control.changed() => if changed.is_err() { return },
                    _ = wait_until_released(store.as_ref(), unit.name().app(), retry) => {}
                }
            }
        }
    }
}
