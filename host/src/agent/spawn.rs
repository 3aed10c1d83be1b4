//! The one place a unit's agent is built, for the embedding API, applications, the test
//! harness, the bench and the tests alike:
//!
//! ```text
//! UnitSpec ──prepare──► PreparedAgent ──start──► RunningAgent
//!  (what the unit is,    (its lock taken, its tracker in the    (its agent's task:
//!   where it runs)        lock's incarnation, its unit and       command it, stop it,
//!                         sandbox, the checks at start done)     kill it, wait for it)
//! ```
//!
//! Invariants:
//! - **One owner of the claim.** The unit's [`LeadershipTracker`] is made here and moved
//!   into the agent's claim loop; every other part of the unit gets a
//!   [`LeadershipHandle`](crate::tracker::LeadershipHandle), which cannot claim.
//! - **The lock outlives no tenure.** The unit's lock is taken first (no other agent runs
//!   the unit meanwhile, in this process or another), the tracker's incarnation is made from
//!   it, and the lock is tied to the tracker at once: however the agent ends, the unit stops
//!   answering as leader before the lock is freed. A prepared agent that is dropped frees
//!   its lock.
//! - **Checked before anything runs.** The agent's checks at start ([`preflight`]) run in
//!   [`UnitSpec::prepare`]: an agent that cannot start is an error there, before a socket
//!   is served or a task spawned.

use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{AgentCommand, AgentConfig, AgentError, AgentLock, LocalState, preflight};
use crate::capabilities::HostCallLog;
use crate::events::EventSink;
use crate::leadership::{Claimant, LeadershipStore};
use crate::names::UnitName;
use crate::runtime::{Charm, GuestEnvironment, HookRuntime, UnitSandbox};
use crate::services::ServicesConfig;
use crate::state_dir::{StateDir, StateDirError};
use crate::tenure_record::TenureRecord;
use crate::timing::GuaranteeWindow;
use crate::tracker::LeadershipTracker;
use crate::unit::Unit;

/// Commands an agent may have waiting before it takes them.
const COMMAND_QUEUE: usize = 8;

/// How a unit is set up, whichever code runs it (a [`crate::Host`], an application, the
/// test harness): its guarantee window, its services and its agent, each checked when it
/// was made. The defaults, changed with the `with_` methods.
#[derive(Debug, Clone, Default)]
pub struct UnitSetup {
    /// The `is-leader` guarantee window.
    pub window: GuaranteeWindow,
    /// The services its charm may start.
    pub services: ServicesConfig,
    /// How its agent behaves (its record files are its state directory's).
    pub agent: AgentConfig,
}

impl UnitSetup {
    /// With this guarantee window.
    pub fn with_window(mut self, window: GuaranteeWindow) -> Self {
        self.window = window;
        self
    }

    /// With these services.
    pub fn with_services(mut self, services: ServicesConfig) -> Self {
        self.services = services;
        self
    }

    /// With the agent set up so.
    pub fn with_agent(mut self, agent: AgentConfig) -> Self {
        self.agent = agent;
        self
    }
}

/// What one unit's agent is made from: see the [module docs](self).
#[must_use]
pub struct UnitSpec {
    name: UnitName,
    state: StateDir,
    store: Arc<dyn LeadershipStore>,
    events: Arc<dyn EventSink>,
    setup: UnitSetup,
    record_tenures: bool,
    guest: Option<GuestEnvironment>,
    calls: Option<Arc<HostCallLog>>,
    claimant: Option<Claimant>,
}

impl std::fmt::Debug for UnitSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitSpec").field("name", &self.name).field("state", &self.state).finish_non_exhaustive()
    }
}

/// Why a unit's agent could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The unit's directories could not be prepared, or its lock taken: another agent runs it.
    #[error("{unit} cannot start: {source}")]
    StateDir {
        /// The unit.
        unit: UnitName,
        /// Why.
        source: Box<StateDirError>,
    },
    /// The unit's data directory could not be created.
    #[error("cannot create the data directory of {unit}: {source}")]
    DataDir {
        /// The unit.
        unit: UnitName,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The agent's checks at start failed.
    #[error("{unit}'s agent cannot start: {source}")]
    Agent {
        /// The unit.
        unit: UnitName,
        /// Why.
        source: Box<AgentError>,
    },
}

impl SpawnError {
    /// The unit that could not start.
    pub fn unit(&self) -> &UnitName {
        match self {
            SpawnError::StateDir { unit, .. } | SpawnError::DataDir { unit, .. } | SpawnError::Agent { unit, .. } => {
                unit
            }
        }
    }
}

impl UnitSpec {
    /// The unit `name`, its directories, lock and records in `state`, leading through
    /// `store`, reporting to `events`, set up as [`UnitSetup::default`] says.
    pub fn new(name: UnitName, state: StateDir, store: Arc<dyn LeadershipStore>, events: Arc<dyn EventSink>) -> Self {
        Self {
            name,
            state,
            store,
            events,
            setup: UnitSetup::default(),
            record_tenures: false,
            guest: None,
            calls: None,
            claimant: None,
        }
    }

    /// Set up so; its agent's local state and status files are the state directory's (see
    /// [`StateDir::agent_state`] and [`StateDir::status_file`]).
    pub fn with_setup(mut self, setup: UnitSetup) -> Self {
        self.setup = setup;
        self
    }

    /// Recording every tenure the unit believes in (see [`TenureRecord`]), as
    /// `charm-host agent` does.
    pub fn recording_tenures(mut self) -> Self {
        self.record_tenures = true;
        self
    }

    /// With `environment`'s clocks and seeded randomness in its hooks instead of the
    /// machine's (for tests in virtual time).
    pub fn with_guest_environment(mut self, environment: GuestEnvironment) -> Self {
        self.guest = Some(environment);
        self
    }

    /// Recording every host call of its hooks, with its answer, in `log` (for tests).
    pub fn with_call_log(mut self, log: Arc<HostCallLog>) -> Self {
        self.calls = Some(log);
        self
    }

    /// Claiming as `claimant` instead of a new incarnation made from the unit's lock: for
    /// tests in which an agent comes back as the same incarnation.
    pub fn claiming_as(mut self, claimant: Claimant) -> Self {
        self.claimant = Some(claimant);
        self
    }

    /// The unit.
    pub fn name(&self) -> &UnitName {
        &self.name
    }

    /// The unit without an agent, for benches and tests of the runtime and the host
    /// functions: no lock is taken (it claims as a fresh incarnation of this process, or as
    /// the claimant given), no checks run, and the caller owns its tracker (to claim with)
    /// and its sandbox (to run hooks in). It is not a member of its application until its
    /// unit data joins (`unit().unit_data().join()`), which the agent's checks at start do.
    pub fn bare(self) -> Result<BareUnit, SpawnError> {
        let claimant = self.claimant.clone().unwrap_or_else(|| Claimant::fresh(self.name.clone()));
        let (tracker, unit) = self.tracker_and_unit(claimant)?;
        let sandbox = UnitSandbox::new(unit).with_guest_environment(self.guest).with_call_log(self.calls);
        Ok(BareUnit { tracker, sandbox })
    }

    /// The unit's tracker, claiming as `claimant`, and the unit (its data directory made).
    fn tracker_and_unit(&self, claimant: Claimant) -> Result<(LeadershipTracker, Arc<Unit>), SpawnError> {
        let record = self.record_tenures.then(|| TenureRecord::new(self.state.tenure_record(&self.name)));
        let tracker = LeadershipTracker::with_parts(claimant, self.store.clone(), self.setup.window.get(), record);
        let unit = Unit::new(
            self.state.data_dir(&self.name),
            tracker.handle().clone(),
            self.events.clone(),
            &self.setup.services,
        )
        .map_err(|source| SpawnError::DataDir { unit: self.name.clone(), source })?;
        Ok((tracker, Arc::new(unit)))
    }

    /// Takes the unit's lock, makes its tracker, unit and sandbox, and runs the agent's
    /// checks at start. Nothing runs until [`PreparedAgent::start`].
    pub async fn prepare(self) -> Result<PreparedAgent, SpawnError> {
        let (name, state) = (&self.name, &self.state);
        let state_dir = |source| SpawnError::StateDir { unit: name.clone(), source: Box::new(source) };
        let lock = AgentLock::take(state, name).map_err(state_dir)?;
        let claimant = match &self.claimant {
            Some(claimant) => claimant.clone(),
            None => {
                let incarnation = lock
                    .incarnation()
                    .map_err(|source| StateDirError::Io { path: state.root().to_owned(), source });
                Claimant::new(name.clone(), incarnation.map_err(state_dir)?)
            }
        };
        let (tracker, unit) = self.tracker_and_unit(claimant)?;
        let lock = lock.holding(&tracker);
        let config =
            self.setup.agent.with_state_file(state.agent_state(name)).with_status_file(state.status_file(name));
        let local = preflight(&unit, &config)
            .await
            .map_err(|source| SpawnError::Agent { unit: self.name.clone(), source: Box::new(source) })?;
        let sandbox = UnitSandbox::new(unit.clone()).with_guest_environment(self.guest).with_call_log(self.calls);
        let parts = AgentParts { tracker, sandbox: Arc::new(sandbox), lock, config, local };
        Ok(PreparedAgent { unit, parts })
    }
}

/// A unit without an agent: see [`UnitSpec::bare`].
#[derive(Debug)]
pub struct BareUnit {
    /// Its tracker: the caller claims, renews and gives up with it.
    pub tracker: LeadershipTracker,
    /// Its sandbox: the caller runs its hooks in it.
    pub sandbox: UnitSandbox,
}

impl BareUnit {
    /// The unit.
    pub fn unit(&self) -> &Arc<Unit> {
        self.sandbox.unit()
    }
}

/// What a prepared agent runs with: its tracker (for the claim loop alone), its unit's
/// sandbox, its lock, its configuration and the local state its checks returned.
pub(super) struct AgentParts {
    pub(super) tracker: LeadershipTracker,
    /// Behind an `Arc`: ten thousand agents' futures stay small (it holds the kept preopen).
    pub(super) sandbox: Arc<UnitSandbox>,
    pub(super) lock: AgentLock,
    pub(super) config: AgentConfig,
    pub(super) local: LocalState,
}

/// A unit whose agent is ready to start: its lock is held, its checks passed.
pub struct PreparedAgent {
    unit: Arc<Unit>,
    parts: AgentParts,
}

impl std::fmt::Debug for PreparedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedAgent").field("unit", self.unit.name()).finish_non_exhaustive()
    }
}

impl PreparedAgent {
    /// The unit, to observe (or hand to its hook tools) before its agent starts.
    pub fn unit(&self) -> &Arc<Unit> {
        &self.unit
    }

    /// Starts the agent on the current tokio runtime, running hooks of `charm` on `runtime`.
    pub fn start(self, runtime: Arc<HookRuntime>, charm: Charm) -> RunningAgent {
        self.start_on(&tokio::runtime::Handle::current(), runtime, charm)
    }

    /// [`Self::start`] on the tokio runtime `tokio` (the test harness's own).
    pub fn start_on(self, tokio: &tokio::runtime::Handle, runtime: Arc<HookRuntime>, charm: Charm) -> RunningAgent {
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio.spawn(super::run(runtime, charm, self.parts, receiver));
        RunningAgent { unit: self.unit, commands, task }
    }
}

/// How an agent ended other than by a graceful stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentEnded {
    /// It could not go on.
    #[error("failed: {0}")]
    Failed(#[from] AgentError),
    /// Its task panicked.
    #[error("panicked: {0}")]
    Panicked(String),
    /// It was killed.
    #[error("killed")]
    Killed,
}

/// A unit's running agent: see [`PreparedAgent::start`]. Dropping it leaves the agent
/// running until the runtime ends.
pub struct RunningAgent {
    unit: Arc<Unit>,
    commands: mpsc::Sender<AgentCommand>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl std::fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAgent").field("unit", self.unit.name()).finish_non_exhaustive()
    }
}

impl RunningAgent {
    /// The unit.
    pub fn unit(&self) -> &Arc<Unit> {
        &self.unit
    }

    /// Where commands to the agent go (for its hook-tool server and signal handlers).
    pub fn commands(&self) -> &mpsc::Sender<AgentCommand> {
        &self.commands
    }

    /// Sends `command` to the agent; false if it has ended.
    pub async fn command(&self, command: AgentCommand) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// Whether the agent's task has ended (stopped, failed or killed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Kills the agent at once, as a crash would: its services die with it, its lease is
    /// left to expire, and a [`crate::EventKind::Crashed`] event says so.
    pub fn kill(self) {
        self.task.abort();
        self.unit.agent_killed();
    }

    /// [`Self::kill`], then waits until its task has ended (its lock is free then).
    pub async fn kill_and_wait(self) {
        self.task.abort();
        self.unit.agent_killed();
        let _ = self.task.await;
    }

    /// Stops the agent gracefully (deposed if leader, stop, revoke) and waits for it.
    pub async fn stop(self) -> Result<(), AgentEnded> {
        let _ = self.commands.send(AgentCommand::Stop).await;
        self.wait().await
    }

    /// Waits until the agent ends (after a stop sent through [`Self::commands`]).
    pub async fn wait(self) -> Result<(), AgentEnded> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(AgentEnded::Failed(err)),
            Err(err) if err.is_cancelled() => Err(AgentEnded::Killed),
            Err(err) => Err(AgentEnded::Panicked(err.to_string())),
        }
    }
}
