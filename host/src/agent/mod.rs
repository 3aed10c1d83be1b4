//! The unit agent: runs one unit. Control flows one way:
//!
//! ```text
//!  store ──► role source ──roles──► hook driver ──► runtime (one sandbox per hook)
//!            (owns the tracker:       (HookQueue: which hook next;
//!             claims, renews,          records: local state, status)
//!             gives up, revokes)            │
//!                 ▲                         │ requests: give up, deposed ran
//!                 └─────────────────────────┘
//!  commands (step-down, stop) ──► hook driver
//! ```
//!
//! - [`spawn`]: the one place a unit's agent is built (spec, prepared agent, running agent).
//! - [`role`]: the claim loop, which alone owns the unit's tracker; it publishes roles and
//!   measures claims.
//! - [`driver`]: turns roles, settings versions and commands into hooks, runs them, and
//!   alone records their outcomes.
//! - [`records`]: the unit's local state and status on disk, and the checks at start.
//! - [`queue`]: the hook order, as a pure state machine.
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
//! - The role source alone gives up the guarantee and publishes the unit's role (and its
//!   `leadership` event), always before the lease can pass: the driver asks it to, and
//!   its request is answered once the role has changed, before `leader-deposed` runs.
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

mod driver;
mod local_state;
mod records;
mod role;
pub mod spawn;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::leadership::{Incarnation, Origin};
use crate::metrics::Metrics;
use crate::names::UnitName;
use crate::runtime::{Charm, HookRuntime};
use crate::state_dir::{StateDir, StateDirError, UnitLock};
use crate::timing::{StopGrace, UpdateStatusInterval};
use crate::tracker::{AbandonOnDrop, LeadershipTracker};

#[allow(unused_imports)]
pub use local_state::{LocalStateError, RecordWriter, load_json, save_json};
/// The hook queue: one rule with the charm test harness (`charm-rules`).
pub use charm_rules::queue;
#[allow(unused_imports)]
pub use queue::{Backoff, HookQueue, LocalState, Next, QueuedHook};
pub use records::preflight;
/// A unit without an agent, for the bench and this repository's tests.
#[allow(unused_imports)]
pub use spawn::BareUnit;
pub use spawn::{AgentEnded, PreparedAgent, RunningAgent, SpawnError, UnitSetup, UnitSpec};

/// How a unit agent behaves: the defaults, changed with the `with_` methods.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AgentConfig {
    /// Retry timing for failed hooks.
    pub backoff: Backoff,
    /// Where the unit's local state is kept across restarts; `None` keeps it in memory.
    pub state_file: Option<PathBuf>,
    /// Where the unit's status is written after every hook, for `charm-host status`.
    pub status_file: Option<PathBuf>,
    /// On a stop, how long a hook already running may go on before it is interrupted; the
    /// stop's own hooks get at most this long each.
    pub stop_grace: StopGrace,
    /// How often `update-status` runs (5 minutes by default), the first time one period
    /// after the agent started.
    pub update_status_interval: UpdateStatusInterval,
    /// Start even on a store that remembers less than this unit does (it was lost or
    /// replaced): the unit then forgets the terms and settings versions it remembered.
    pub accept_new_store: bool,
    /// Where the unit's claims are measured and, while its agent runs, its state is read
    /// for scrapes (see [`crate::metrics`]).
    pub metrics: Option<Arc<Metrics>>,
    /// Fail the start at once when the store does not answer the checks at start, instead
    /// of asking again for 30 s: for a harness whose steps wait for a start on a clock only
    /// they move (`TestApp`).
    pub fail_fast_at_start: bool,
}

impl AgentConfig {
    /// With this retry timing for failed hooks.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Keeping the unit's local state in `file` across restarts.
    pub fn with_state_file(mut self, file: PathBuf) -> Self {
        self.state_file = Some(file);
        self
    }

    /// Writing the unit's status to `file` after every hook.
    pub fn with_status_file(mut self, file: PathBuf) -> Self {
        self.status_file = Some(file);
        self
    }

    /// Failing the start at once when the store does not answer (see
    /// [`AgentConfig::fail_fast_at_start`]).
    pub fn failing_fast_at_start(mut self) -> Self {
        self.fail_fast_at_start = true;
        self
    }

    /// With this stop grace.
    pub fn with_stop_grace(mut self, grace: StopGrace) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Running `update-status` every `interval`.
    pub fn with_update_status_interval(mut self, interval: UpdateStatusInterval) -> Self {
        self.update_status_interval = interval;
        self
    }

    /// Starting even on a store that remembers less than this unit does.
    pub fn accepting_new_store(mut self, accept: bool) -> Self {
        self.accept_new_store = accept;
        self
    }

    /// Measured in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// Why an agent could not start or could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The unit's local state could not be read or written.
    #[error(transparent)]
    LocalState(#[from] LocalStateError),
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

/// A unit's lock held by its agent: taken before the agent's tracker exists (the tracker's
/// incarnation is made from it), and held for as long as the agent runs. However the agent
/// ends (a stop, an error, its task aborted or dropped), dropping this first makes the
/// unit stop answering as leader, and only then frees the lock: a next agent that takes
/// the lock can trust that nothing of this one still leads
/// ([`crate::leadership::Origin::proves_gone`]).
pub struct AgentLock {
    /// Dropped before `lock` (fields drop in order).
    abandon: Option<AbandonOnDrop>,
    lock: UnitLock,
}

impl AgentLock {
    /// Prepares `unit`'s directories in `state` and takes its lock (see
    /// [`StateDir::lock_unit`]); refused while any agent runs the unit, in this process too.
    pub fn take(state: &StateDir, unit: &UnitName) -> Result<Self, StateDirError> {
        state.prepare_unit(unit)?;
        Ok(Self { abandon: None, lock: state.lock_unit(unit)? })
    }

    /// A new incarnation of the unit, at this process in the lock's state directory: the
    /// only incarnation whose origin names a state directory, so the only kind that can
    /// prove a previous incarnation of the unit gone (see
    /// [`Origin::proves_gone`](crate::leadership::Origin::proves_gone)); only the holder of
    /// the unit's lock makes one.
    pub fn incarnation(&self) -> std::io::Result<Incarnation> {
        Ok(Incarnation::new(Origin::this_process().in_state_dir(self.lock.state_dir())?))
    }

    /// Ties the lock to the tracker the unit's agent runs with: it stops answering as
    /// leader before the lock is freed.
    pub fn holding(mut self, tracker: &LeadershipTracker) -> Self {
        self.abandon = Some(tracker.abandon_on_drop());
        self
    }
}

impl std::fmt::Debug for AgentLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLock").field("lock", &self.lock).finish_non_exhaustive()
    }
}

/// Runs one prepared unit (see [`spawn`]) until it is stopped with [`AgentCommand::Stop`]
/// (or `commands` closes, which is taken as a stop). Returns when the stop sequence is done
/// and leadership is given up.
async fn run(
    runtime: Arc<HookRuntime>,
    charm: Charm,
    parts: spawn::AgentParts,
    mut commands: mpsc::Receiver<AgentCommand>,
) -> Result<(), AgentError> {
    let spawn::AgentParts { tracker, sandbox, lock, config, local } = parts;
    // Held to the end of this future, however it ends; abandons the tracker first.
    let _lock = lock;
    let unit = sandbox.unit().clone();
    let records = records::Records::open(&config, &local, sandbox.guest_environment().is_some())?;
    // The workload status the charm set before the agent restarted stands until it sets
    // another (as Juju keeps it), rather than `maintenance` with no message.
    if let Some(saved) = records::saved_status(&config) {
        unit.reporter().restore_workload_status(saved.workload, saved.message);
    }
    // Counted while this future runs: a stop ends it, a kill drops it.
    let _running = config.metrics.as_ref().map(|metrics| metrics.agent_running(&unit));
    let roles = role::RoleSource::start(tracker, unit.services().clone(), unit.reporter().clone(), config.metrics);
    let queue = HookQueue::new(local, config.backoff);
    let driver = driver::HookDriver {
        runtime,
        charm,
        sandbox,
        queue,
        records,
        stop_grace: config.stop_grace.get(),
        update_status_interval: config.update_status_interval.get(),
    };
    driver.run(roles, &mut commands).await;
    // The command channel closes last, once the lock is released: a sender that sees it
    // closed (`Host::stop`) knows the agent is done with the unit.
    drop((_running, _lock));
    drop(commands);
    Ok(())
}
