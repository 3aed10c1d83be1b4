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
//! - The claim loop alone gives up the guarantee and publishes the unit's role (and its
//!   `leadership` event), always before the lease can pass: the driver asks it to, and
//!   waits for the role to change before it runs `leader-deposed`.
//! - A claim that fails is retried with a backoff (a tenth of a window, doubling up to
//!   half a window; a leader keeps retrying every tenth of a window until its guarantee
//!   deadline); the failure shows in the unit's status and `is-leader` answers unknown.
//!   Store calls run off the async workers, so a slow or failing store never stops the
//!   unit's hook tools from answering.
//! - A stop is bounded whatever the guest does: a hook already running gets the stop
//!   grace, then is interrupted (and reported so); `leader-deposed` and `stop` then get at
//!   most the stop grace each.
//! - An agent refuses to start on a store that remembers less than the unit does (a lower
//!   term than the unit led at, an older settings version than it saw): that store was
//!   lost or replaced, and terms that went backwards would let an old holder pass a fence.
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
use crate::hooks::{HookError, HookKind, HookOutcome};
use crate::leadership::{Clock, LeaseError, Timestamp, WriteError, wait_until_released};
use crate::names::UnitName;
use crate::runtime::{Charm, HookRuntime};
use crate::timing::{self, InvalidDuration};
use crate::tracker::Refresh;
use crate::unit::{Unit, UnitStatus};

pub use local_state::{LocalStateError, RecordWriter, load_json, save_json};
pub use queue::{Backoff, HookQueue, LocalState, Next, QueuedHook};

/// The stop grace when none is given.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(3);

/// How a unit agent behaves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Retry timing for failed hooks.
    pub backoff: Backoff,
    /// Where the unit's local state is kept across restarts; `None` keeps it in memory.
    pub state_file: Option<PathBuf>,
    /// Where the unit's status is written after every hook, for `charm-host status`.
    pub status_file: Option<PathBuf>,
    /// On a stop, how long a hook already running may go on before it is interrupted; the
    /// stop's own hooks get at most this long each. See [`timing::STOP_GRACE`].
    pub stop_grace: Duration,
    /// Start even on a store that remembers less than this unit does (it was lost or
    /// replaced): the unit then forgets the terms and settings versions it remembered.
    pub accept_new_store: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            state_file: None,
            status_file: None,
            stop_grace: DEFAULT_STOP_GRACE,
            accept_new_store: false,
        }
    }
}

/// Why an agent could not start or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The unit's local state could not be read or written.
    #[error(transparent)]
    LocalState(#[from] LocalStateError),
    /// A duration is out of its range.
    #[error(transparent)]
    Config(#[from] InvalidDuration),
    /// The store remembers less than the unit: it was lost or replaced.
    #[error(
        "{unit} remembers {what} {remembered}, but the store's is {found}: the leadership store was lost or \
         replaced. Restore it, or accept the new store explicitly (`--accept-new-store`); terms then start \
         again, so reset anything fenced by the old terms"
    )]
    StoreBehind {
        /// The unit.
        unit: UnitName,
        /// What went backwards: "term" or "leader settings version".
        what: &'static str,
        /// What the unit remembers.
        remembered: u64,
        /// What the store has.
        found: u64,
    },
    /// The store could not be asked what it remembers.
    #[error("cannot read the leadership store at start: {0}")]
    Store(String),
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
    /// Give up the guarantee now, and do not claim before this instant (`None`: never again).
    HoldOff(Option<Timestamp>),
}

/// Aborts a task when dropped: a driver that is dropped (a crash of the unit) takes its
/// claim loop with it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
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
) -> Result<(), AgentError> {
    let local = preflight(&unit, &config).await?;
    let store = unit.store().clone();
    let clock = store.clock().clone();
    let (role_tx, mut role_rx) = watch::channel(Role::Unknown);
    let (control_tx, control_rx) = watch::channel(ClaimControl::Claim);
    let (health_tx, mut health_rx) = watch::channel(None);
    let mut claims = AbortOnDrop(tokio::spawn(claim_loop(unit.clone(), role_tx, control_rx, health_tx)));

    let mut settings_rx = store.watch_settings(unit.name().app());
    // A reservation for another unit while this one leads is a directed handover wherever
    // it was asked for (`elect` on another machine): this unit steps down for it.
    let mut leases_rx = store.watch_leases();
    let mut records = Records::open(&config, &local)?;
    let mut queue = HookQueue::new(local, config.backoff);
    queue.on_settings(*settings_rx.borrow_and_update());
    let mut acted_on = Role::Unknown;
    // The driver asked the claim loop to give up leadership and waits for it to say so.
    let mut giving_up = false;
    let mut revoke_after_deposed = false;
    let mut stopping = false;
    let mut pending: Option<AgentCommand> = None;
    loop {
        let role = *role_rx.borrow_and_update();
        if role != acted_on {
            acted_on = role;
            match role {
                Role::Leader(term) => queue.on_leader(term),
                Role::Minion => queue.on_minion(),
                Role::Unknown => {}
            }
        }
        giving_up &= matches!(acted_on, Role::Leader(_));
        if settings_rx.has_changed().unwrap_or(false) {
            queue.on_settings(*settings_rx.borrow_and_update());
        }
        if let Some(command) = pending.take() {
            if command == AgentCommand::Stop {
                stopping = true;
                queue.on_stop();
            }
            // Leading as far as the claim loop knows, even if its news has not reached
            // the driver yet: a step-down must not be lost in that gap.
            let leading = matches!(acted_on, Role::Leader(_)) || unit.tracker().held_term().is_some();
            if leading || command == AgentCommand::Stop {
                let hold_off = match command {
                    AgentCommand::StepDown => Some(clock.now() + unit.tracker().claim_duration()),
                    AgentCommand::Stop => None,
                };
                control_tx.send_replace(ClaimControl::HoldOff(hold_off));
            }
            if leading {
                // The claim loop gives up the guarantee (and stops leader-only services);
                // `leader-deposed` runs once it has, with `is-leader` false.
                giving_up = true;
                revoke_after_deposed = true;
            }
            continue;
        }
        for dropped in queue.take_dropped() {
            unit.log(LogLevel::Info, format!("dropped stale {} (term {:?})", dropped.hook, dropped.term));
        }
        let next = if giving_up { Next::Idle } else { queue.next(clock.now(), unit.tracker().held_term()) };
        let wait_until = match next {
            Next::Run(queued) => {
                let version = *settings_rx.borrow();
                let outcome = if stopping {
                    runtime.run_hook_within(&charm, &unit, queued.hook, config.stop_grace).await
                } else {
                    let hook = runtime.run_hook(&charm, &unit, queued.hook);
                    run_until_stopped(hook, &unit, queued.hook, &mut commands, &mut pending, config.stop_grace).await
                };
                queue.finished(queued, outcome.result.is_ok(), clock.now(), Some(version));
                // A full or failing disk must not kill the unit: the state stays in memory and
                // the write is retried after the next hook (at worst a restart repeats a hook,
                // which the at-least-once promise allows).
                if let Err(err) = records.save_local(queue.local_state()) {
                    unit.log(LogLevel::Warning, format!("could not record the unit's state (will retry): {err}"));
                }
                records.save_status(&unit);
                if queued.hook == HookKind::LeaderDeposed && revoke_after_deposed {
                    revoke_after_deposed = false;
                    release(&unit).await;
                }
                continue;
            }
            Next::Stopped => break,
            Next::WaitUntil(at) => Some(at),
            Next::Idle => None,
        };
        if acted_on != Role::Unknown && !giving_up {
            unit.mark_settled();
        }
        let retry = sleep_until_or_forever(clock.as_ref(), wait_until);
        // Commands first: a stop must win over news that would queue more hooks.
        tokio::select! {
            biased;
            command = commands.recv(), if !stopping => pending = Some(command.unwrap_or(AgentCommand::Stop)),
            changed = role_rx.changed() => if changed.is_err() { break },
            changed = settings_rx.changed() => {
                // `changed()` marks the version seen: hand it to the queue now.
                if changed.is_ok() {
                    queue.on_settings(*settings_rx.borrow_and_update());
                }
            }
            // The store started or stopped failing: the status says so.
            _ = health_rx.changed() => records.save_status(&unit),
            _ = leases_rx.changed(), if matches!(acted_on, Role::Leader(_)) && !stopping && !giving_up => {
                let reserved = store.reservation(unit.name().app()).await;
                if matches!(&reserved, Ok(Some(other)) if other != unit.name()) && pending.is_none() {
                    unit.log(LogLevel::Info, "the lease is reserved for another unit: stepping down for it".into());
                    pending = Some(AgentCommand::StepDown);
                }
            }
            () = retry => {}
        }
    }
    // The claim loop ends once it sees the control channel close (after any claim in
    // flight), so no claim of it can land after the release below.
    drop(control_tx);
    let _ = (&mut claims.0).await;
    unit.services().stop_all().await;
    release(&unit).await;
    records.save_status(&unit);
    Ok(())
}

/// Runs `hook` to its end, taking commands meanwhile: a stop that arrives gives the hook
/// `grace` more, then interrupts it (the hook's future is dropped; running wasm yields at
/// every epoch tick, so it stops within one).
async fn run_until_stopped(
    hook: impl std::future::Future<Output = HookOutcome>,
    unit: &Unit,
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
                let outcome = HookOutcome { hook: kind, result: Err(HookError::Interrupted(grace)), elapsed: started.elapsed() };
                unit.record_hook(&outcome);
                return outcome;
            }
        }
    }
}

/// What [`run_unit`] checks before it starts anything: the durations, the unit's local
/// state, and that the store remembers at least what the unit does. Returns the local state
/// to start from.
pub async fn preflight(unit: &Unit, config: &AgentConfig) -> Result<LocalState, AgentError> {
    timing::STOP_GRACE.check(config.stop_grace)?;
    timing::GUARANTEE_WINDOW.check(unit.tracker().window())?;
    let mut local = match &config.state_file {
        Some(path) => local_state::load(path)?,
        None => LocalState::default(),
    };
    check_store_remembers(unit, &mut local, config.accept_new_store).await?;
    Ok(local)
}

/// Checks that the store remembers at least what the unit does; see [`AgentError::StoreBehind`].
async fn check_store_remembers(unit: &Unit, local: &mut LocalState, accept_new_store: bool) -> Result<(), AgentError> {
    let app = unit.name().app();
    let term = unit.store().last_term(app).await.map_err(|e| AgentError::Store(e.to_string()))?;
    let version = unit.store().read_settings(app).await.map_err(|e: WriteError| AgentError::Store(e.to_string()))?.version;
    let checks = [("term", local.last_elected_term, term), ("leader settings version", local.settings_version_seen, version)];
    let Some((what, Some(remembered), found)) = checks.into_iter().find(|(_, mine, theirs)| mine.is_some_and(|m| m > *theirs))
    else {
        return Ok(());
    };
    if !accept_new_store {
        return Err(AgentError::StoreBehind { unit: unit.name().clone(), what, remembered, found });
    }
    unit.log(
        LogLevel::Warning,
        format!("accepting a new leadership store: it has {what} {found}, this unit remembered {remembered}; forgetting past terms and settings versions"),
    );
    local.last_elected_term = None;
    local.settings_version_seen = None;
    Ok(())
}

/// The unit's local state and status as last written, and their writers.
struct Records {
    state: Option<RecordWriter>,
    saved: LocalState,
    status: Option<RecordWriter>,
    saved_status: Option<UnitStatus>,
}

impl Records {
    fn open(config: &AgentConfig, local: &LocalState) -> Result<Self, LocalStateError> {
        Ok(Self {
            state: config.state_file.as_deref().map(RecordWriter::open).transpose()?,
            saved: local.clone(),
            status: config.status_file.as_deref().map(RecordWriter::open).transpose()?,
            saved_status: None,
        })
    }

    /// Writes the local state if it changed (durably when it must survive power loss).
    fn save_local(&mut self, state: &LocalState) -> Result<(), LocalStateError> {
        if let Some(writer) = &mut self.state
            && local_state::save(writer, state, &self.saved)?
        {
            self.saved = state.clone();
        }
        Ok(())
    }

    /// Writes the unit's status if it changed since the last write.
    fn save_status(&mut self, unit: &Unit) {
        let Some(writer) = &mut self.status else { return };
        let status = unit.status();
        if self.saved_status.as_ref() == Some(&status) {
            return;
        }
        match writer.write(&status, false) {
            Ok(()) => self.saved_status = Some(status),
            Err(err) => unit.log(LogLevel::Warning, format!("could not record the unit's status: {err}")),
        }
    }
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

async fn release(unit: &Arc<Unit>) {
    if let Err(err) = unit.tracker().release().await {
        unit.log(LogLevel::Warning, format!("could not give up leadership: {err}"));
    }
}

/// The delay before retry number `failures` (from 1): `base` doubling up to `cap`.
fn retry_delay(base: Duration, cap: Duration, failures: u32) -> Duration {
    Backoff { base, cap: cap.max(base) }.delay(failures)
}

/// Keeps the unit's claim fresh and publishes its role; see the module docs for timing.
async fn claim_loop(
    unit: Arc<Unit>,
    role_tx: watch::Sender<Role>,
    mut control: watch::Receiver<ClaimControl>,
    health_tx: watch::Sender<Option<String>>,
) {
    let tracker = unit.tracker();
    let clock = unit.store().clock().clone();
    // Publishes the role; on losing leadership, first stops the leader-only services. The
    // event goes out before the role, so it precedes every hook the new role causes.
    let publish = async |role: Role| {
        let current = *role_tx.borrow();
        if current == role {
            return;
        }
        if matches!(current, Role::Leader(_)) && !matches!(role, Role::Leader(_)) {
            stop_leader_services(&unit).await;
        }
        let (leader, term) = match role {
            Role::Leader(term) => (true, Some(term)),
            _ => (false, None),
        };
        unit.emit(Event::Leadership { unit: unit.name().clone(), leader, term });
        role_tx.send_replace(role);
    };
    let retry_interval = (tracker.window() / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures: u32 = 0;
    let mut leases = unit.store().watch_leases();
    // A step-down's hold-off that a directed handover to this unit has ended.
    let mut hold_off_ended: Option<Timestamp> = None;
    loop {
        let hold_off = match *control.borrow_and_update() {
            ClaimControl::HoldOff(until) if until.is_none_or(|t| clock.now() < t) && (until.is_none() || until != hold_off_ended) => {
                Some(until)
            }
            _ => None,
        };
        if let Some(until) = hold_off {
            tracker.abandon();
            publish(Role::Minion).await;
            leases.borrow_and_update();
            tokio::select! {
                changed = control.changed() => if changed.is_err() { return },
                () = sleep_until_or_forever(clock.as_ref(), until) => {}
                // `elect` of this unit: the lease is reserved for it, so it claims now (a
                // stop's hold-off, with no end, is never cut short).
                _ = leases.changed(), if until.is_some() => {
                    let me = unit.name().clone();
                    let reserved = unit.store().reservation(unit.name().app()).await;
                    if matches!(reserved, Ok(Some(ref holder)) if *holder == me) {
                        hold_off_ended = until;
                    }
                }
            }
            continue;
        }
        let refresh = tracker.refresh_in_time().await;
        health_tx.send_if_modified(|health| {
            let now = tracker.store_error();
            std::mem::replace(health, now.clone()) != now
        });
        failures = if refresh == Refresh::Failed { failures.saturating_add(1) } else { 0 };
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
                // A failing store is retried with a backoff, never in a loop: waiting for a
                // release would end at once when nobody holds the lease.
                if failures > 0 {
                    let delay = retry_delay(retry_interval, tracker.renew_interval(), failures);
                    tokio::select! {
                        changed = control.changed() => if changed.is_err() { return },
                        () = clock.sleep_until(clock.now() + delay) => {}
                    }
                    continue;
                }
                let retry = clock.sleep_until(clock.now() + tracker.renew_interval());
                let released = tokio::select! {
                    changed = control.changed() => { if changed.is_err() { return } continue }
                    released = wait_until_released(unit.store().as_ref(), unit.name().app(), retry) => released,
                };
                if let Err(err) = released
                    && err != LeaseError::Cancelled
                {
                    unit.log(LogLevel::Warning, format!("cannot watch the lease: {err}"));
                    tokio::select! {
                        changed = control.changed() => if changed.is_err() { return },
                        () = clock.sleep_until(clock.now() + retry_interval) => {}
                    }
                }
            }
        }
    }
}
