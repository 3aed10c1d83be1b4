//! Runs the units of one application in this process, each with its own
//! [`agent`](crate::agent) (built by [`crate::agent::spawn`]), sharing one store, one
//! runtime and one compiled charm.
//!
//! Invariants: every unit's agent runs on its own task and holds its unit's lock in the
//! state directory while it runs (as `charm-host agent` does: the same application started
//! twice, in this process or another, is refused); [`RunningApplication::stop`] stops
//! them all gracefully (minions first, then the leader: deposed, stop, revoke) and waits
//! for them; a unit that is
//! [`killed`](RunningApplication::kill) stops at once without giving up its lease, like a
//! crashed agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::agent::{AgentCommand, AgentEnded, PreparedAgent, RunningAgent, SpawnError, UnitSetup, UnitSpec};
use crate::events::EventSink;
use crate::leadership::LeadershipStore;
use crate::names::{AppName, UnitName};
use crate::report::{AgentState, UnitReport};
use crate::runtime::{Charm, HookRuntime};
use crate::state_dir::StateDir;
use crate::unit::Unit;

/// One application's units: [`ApplicationConfig::new`] with the default set-up, changed
/// with [`ApplicationConfig::with_setup`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplicationConfig {
    /// The application's name.
    pub app: AppName,
    /// How many units to run, numbered from [`Self::first_unit`].
    pub units: u32,
    /// The number of the first unit (0 unless [`Self::from_unit`] says otherwise): a process
    /// that runs some of an application's units over a shared store runs its own numbers.
    pub first_unit: u32,
    /// Where units keep their data, agent state and status.
    pub state_dir: StateDir,
    /// How every unit is set up.
    pub setup: UnitSetup,
}

/// Why an application could not be set up or controlled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplicationError {
    /// A unit's agent could not be prepared (its lock is held by another agent, its
    /// directories cannot be made, or its checks at start failed).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// No running unit has that name.
    #[error("no running unit {0}")]
    NoSuchUnit(UnitName),
    /// The application's agents were started already.
    #[error("the units of {0} were started already")]
    AlreadyStarted(AppName),
    /// Unit numbers past the largest a unit may have.
    #[error("{units} units of {app} from number {first} go past the largest unit number")]
    Numbering {
        /// The application.
        app: AppName,
        /// The first unit's number.
        first: u32,
        /// How many units.
        units: u32,
    },
}

impl ApplicationConfig {
    /// `units` units of `app` keeping their state under `state_dir`, set up as
    /// [`UnitSetup::default`] says.
    pub fn new(app: AppName, units: u32, state_dir: StateDir) -> Self {
        Self { app, units, first_unit: 0, state_dir, setup: UnitSetup::default() }
    }

    /// Numbered from `first` instead of 0.
    pub fn from_unit(mut self, first: u32) -> Self {
        self.first_unit = first;
        self
    }

    /// The numbers of the units, or an error if the last would not fit in a `u32`.
    pub fn unit_numbers(&self) -> Result<std::ops::Range<u32>, ApplicationError> {
        match self.first_unit.checked_add(self.units) {
            Some(end) => Ok(self.first_unit..end),
            None => Err(ApplicationError::Numbering { app: self.app.clone(), first: self.first_unit, units: self.units }),
        }
    }

    /// With every unit set up so.
    pub fn with_setup(mut self, setup: UnitSetup) -> Self {
        self.setup = setup;
        self
    }

    /// What unit `number`'s agent is made from.
    pub fn unit_spec(&self, number: u32, store: Arc<dyn LeadershipStore>, events: Arc<dyn EventSink>) -> UnitSpec {
        UnitSpec::new(UnitName::from_parts(self.app.clone(), number), self.state_dir.clone(), store, events)
            .with_setup(self.setup.clone())
    }
}

/// The units of one application.
pub struct Application {
    app: AppName,
    runtime: Arc<HookRuntime>,
    charm: Charm,
    units: Vec<Arc<Unit>>,
    /// Each unit's agent as [`Application::new`] prepared it, until [`Application::start`].
    prepared: Mutex<Option<Vec<PreparedAgent>>>,
}

impl Application {
    /// Prepares the units (their locks, directories and checks at start); nothing runs
    /// until [`Self::start`].
    pub async fn new(
        runtime: Arc<HookRuntime>,
        charm: Charm,
        store: Arc<dyn LeadershipStore>,
        events: Arc<dyn EventSink>,
        config: &ApplicationConfig,
    ) -> Result<Self, ApplicationError> {
        let mut prepared = Vec::new();
        for number in config.unit_numbers()? {
            let spec = config.unit_spec(number, store.clone(), events.clone());
            prepared.push(spec.prepare().await?);
        }
        let units = prepared.iter().map(|agent| agent.unit().clone()).collect();
        Ok(Self { app: config.app.clone(), runtime, charm, units, prepared: Mutex::new(Some(prepared)) })
    }

    /// Every unit as a report shows it, its agent running as `running` says.
    pub fn unit_reports(&self, running: &RunningApplication) -> Vec<UnitReport> {
        self.units
            .iter()
            .map(|unit| UnitReport::new(unit.name().clone(), Some(unit.status()), running.state(unit.name())))
            .collect()
    }

    /// The units, in order of their numbers.
    pub fn units(&self) -> &[Arc<Unit>] {
        &self.units
    }

    /// Starts every unit's agent; once only.
    pub fn start(&self) -> Result<RunningApplication, ApplicationError> {
        let prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner()).take();
        let prepared = prepared.ok_or_else(|| ApplicationError::AlreadyStarted(self.app.clone()))?;
        let agents = prepared
            .into_iter()
            .map(|agent| {
                let running = agent.start(self.runtime.clone(), self.charm.clone());
                (running.unit().name().clone(), running)
            })
            .collect();
        Ok(RunningApplication { agents, ended: HashMap::new() })
    }
}

/// The agents of a started application.
pub struct RunningApplication {
    agents: HashMap<UnitName, RunningAgent>,
    /// How each agent that is no longer running ended (stopped or killed).
    ended: HashMap<UnitName, AgentState>,
}

impl RunningApplication {
    /// A sender of commands to `unit`'s agent, while it runs here.
    pub fn commands(&self, unit: &UnitName) -> Option<tokio::sync::mpsc::Sender<AgentCommand>> {
        self.agents.get(unit).map(|agent| agent.commands().clone())
    }

    /// Sends `command` to `unit`'s agent.
    pub async fn command(&self, unit: &UnitName, command: AgentCommand) -> Result<(), ApplicationError> {
        let agent = self.agents.get(unit).ok_or_else(|| ApplicationError::NoSuchUnit(unit.clone()))?;
        if agent.command(command).await { Ok(()) } else { Err(ApplicationError::NoSuchUnit(unit.clone())) }
    }

    /// Whether `unit`'s agent still runs (it was neither stopped nor killed, and has not
    /// ended by itself: its command channel, closed as it ends, still open).
    pub fn is_running(&self, unit: &UnitName) -> bool {
        self.agents.get(unit).is_some_and(|agent| !agent.is_finished() && !agent.commands().is_closed())
    }

    /// Whether `unit`'s agent runs, or how it ended: [`AgentState::Stopped`] or
    /// [`AgentState::Crashed`] when stopped or killed here, [`AgentState::Down`] if it ended
    /// by itself.
    pub fn state(&self, unit: &UnitName) -> AgentState {
        match self.ended.get(unit) {
            Some(ended) => *ended,
            None if self.is_running(unit) => AgentState::Running,
            None => AgentState::Down,
        }
    }

    /// Stops `unit` gracefully and waits for it.
    pub async fn stop_unit(&mut self, unit: &UnitName) -> Result<(), ApplicationError> {
        let agent = self.agents.remove(unit).ok_or_else(|| ApplicationError::NoSuchUnit(unit.clone()))?;
        finish(unit, agent.stop().await);
        self.ended.insert(unit.clone(), AgentState::Stopped);
        Ok(())
    }

    /// Kills `unit` at once, as a crash would: its services die with it and its lease is
    /// left to expire.
    pub fn kill(&mut self, unit: &UnitName) -> Result<(), ApplicationError> {
        let agent = self.agents.remove(unit).ok_or_else(|| ApplicationError::NoSuchUnit(unit.clone()))?;
        agent.kill();
        self.ended.insert(unit.clone(), AgentState::Crashed);
        Ok(())
    }

    /// Stops every unit gracefully and waits for all of them: the minions first, in
    /// parallel, then the leader, so that the leader's revoke does not elect a successor
    /// that is about to stop too.
    pub async fn stop(&mut self) {
        for batch in minions_then_leaders(self.agents.drain(), |(_, agent)| agent.unit()) {
            for (_, agent) in &batch {
                agent.command(AgentCommand::Stop).await;
            }
            for (unit, agent) in batch {
                finish(&unit, agent.wait().await);
                self.ended.insert(unit, AgentState::Stopped);
            }
        }
    }
}

/// `agents` in the order a graceful stop of many takes them: the minions, then the units
/// that lead (so that a leader's revoke does not elect a successor about to stop too).
pub(crate) fn minions_then_leaders<T>(agents: impl IntoIterator<Item = T>, unit: impl Fn(&T) -> &Unit) -> [Vec<T>; 2] {
    let (leaders, minions): (Vec<T>, Vec<T>) =
        agents.into_iter().partition(|agent| unit(agent).leadership().held_term().is_some());
    [minions, leaders]
}

/// Logs how `unit`'s agent ended, if not by its stop.
fn finish(unit: &UnitName, ended: Result<(), AgentEnded>) {
    match ended {
        Ok(()) | Err(AgentEnded::Killed) => {}
        Err(err) => tracing::error!(%unit, "agent {err}"),
    }
}
