//! Runs the units of one application in this process, each with its own
//! [`agent`](crate::agent), sharing one store, one runtime and one compiled charm.
//!
//! Invariants: every unit's agent runs on its own task and holds its unit's lock in the
//! state directory while it runs (as `charm-host agent` does: the same application started
//! twice, in this process or another, is refused); [`RunningApplication::stop`] stops
//! them all gracefully (minions first, then the leader: deposed, stop, revoke) and waits
//! for them; a unit that is
//! [`killed`](RunningApplication::kill) stops at once without giving up its lease, like a
//! crashed agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agent::{self, AgentCommand, AgentConfig, AgentError, AgentLock, LocalState};
use crate::events::EventSink;
use crate::leadership::LeadershipStore;
use crate::names::{AppName, UnitName};
use crate::report::{AgentState, UnitReport};
use crate::runtime::{Charm, HookRuntime};
use crate::services::ServiceConfig;
use crate::state_dir::{StateDir, StateDirError};
use crate::timing;
use crate::unit::Unit;

/// How one application's units are set up: [`ApplicationConfig::new`] with the defaults,
/// changed with the `with_` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplicationConfig {
    /// The application's name.
    pub app: AppName,
    /// How many units to run, numbered from 0.
    pub units: u32,
    /// The `is-leader` guarantee window.
    pub guarantee_window: Duration,
    /// Where units keep their data, agent state and status.
    pub state_dir: StateDir,
    /// The services every unit's charm may start, and their stop grace period.
    pub services: (Vec<ServiceConfig>, Duration),
    /// How each unit's agent behaves (its record files are the state directory's).
    pub agent: AgentConfig,
}

/// Why an application could not be set up or controlled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplicationError {
    /// A unit's data directory could not be created.
    #[error("cannot create the data directory of {unit}: {source}")]
    DataDir {
        /// The unit.
        unit: UnitName,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid application configuration: {0}")]
    Config(String),
    /// A unit's directories could not be prepared, or its lock taken: another agent runs it.
    #[error("{unit} cannot start: {source}")]
    StateDir {
        /// The unit.
        unit: UnitName,
        /// Why.
        source: Box<StateDirError>,
    },
    /// No running unit has that name.
    #[error("no running unit {0}")]
    NoSuchUnit(UnitName),
    /// A unit's agent cannot start.
    #[error("{unit} cannot start: {source}")]
    Agent {
        /// The unit.
        unit: UnitName,
        /// Why.
        source: Box<AgentError>,
    },
}

impl ApplicationConfig {
    /// `units` units of `app` keeping their state under `state_dir`, with the default
    /// guarantee window, no services, and agents as [`AgentConfig::default`] sets them up.
    pub fn new(app: AppName, units: u32, state_dir: StateDir) -> Self {
        Self {
            app,
            units,
            guarantee_window: timing::DEFAULT_GUARANTEE_WINDOW,
            state_dir,
            services: (Vec::new(), timing::DEFAULT_SERVICE_GRACE),
            agent: AgentConfig::default(),
        }
    }

    /// With this guarantee window.
    pub fn with_guarantee_window(mut self, window: Duration) -> Self {
        self.guarantee_window = window;
        self
    }

    /// With these services, and this long between SIGTERM and SIGKILL when one stops.
    pub fn with_services(mut self, services: Vec<ServiceConfig>, grace: Duration) -> Self {
        self.services = (services, grace);
        self
    }

    /// With agents set up so (their record files are set by [`Self::agent_config`]).
    pub fn with_agent(mut self, agent: AgentConfig) -> Self {
        self.agent = agent;
        self
    }

    /// The agent configuration of `unit`: its records in the state directory.
    pub fn agent_config(&self, unit: &UnitName) -> AgentConfig {
        self.agent.clone().with_state_file(self.state_dir.agent_state(unit)).with_status_file(self.state_dir.status_file(unit))
    }
}

/// The units of one application.
pub struct Application {
    runtime: Arc<HookRuntime>,
    charm: Charm,
    units: Vec<Arc<Unit>>,
    config: ApplicationConfig,
    /// Each unit's lock and local state as its preflight (in [`Application::new`]) returned
    /// it, until [`Application::start`] hands them to the unit's agent.
    checked: std::sync::Mutex<Vec<Option<(AgentLock, LocalState)>>>,
}

impl Application {
    /// Creates the units (and their directories); nothing runs until [`Self::start`].
    pub async fn new(
        runtime: Arc<HookRuntime>,
        charm: Charm,
        store: Arc<dyn LeadershipStore>,
        events: Arc<dyn EventSink>,
        config: &ApplicationConfig,
    ) -> Result<Self, ApplicationError> {
        timing::GUARANTEE_WINDOW.check(config.guarantee_window).map_err(|e| ApplicationError::Config(e.to_string()))?;
        timing::STOP_GRACE.check(config.agent.stop_grace).map_err(|e| ApplicationError::Config(e.to_string()))?;
        timing::SERVICE_GRACE.check(config.services.1).map_err(|e| ApplicationError::Config(e.to_string()))?;
        let mut units = Vec::new();
        let mut locks = Vec::new();
        for number in 0..config.units {
            let name = UnitName::from_parts(config.app.clone(), number);
            let state_dir = |source| ApplicationError::StateDir { unit: name.clone(), source: Box::new(source) };
            let mut lock = AgentLock::take(&config.state_dir, &name).map_err(state_dir)?;
            let tracker = lock.tracker(name.clone(), store.clone(), config.guarantee_window).map_err(state_dir)?;
            let unit = Unit::new(name.clone(), config.state_dir.data_dir(&name), tracker, events.clone())
                .map_err(|source| ApplicationError::DataDir { unit: name.clone(), source })?;
            units.push(Arc::new(unit.with_services(config.services.0.clone(), config.services.1)));
            locks.push(lock);
        }
        let mut checked = Vec::with_capacity(units.len());
        for (unit, lock) in units.iter().zip(locks) {
            let local = agent::preflight(unit, &config.agent_config(unit.name()))
                .await
                .map_err(|source| ApplicationError::Agent { unit: unit.name().clone(), source: Box::new(source) })?;
            checked.push(Some((lock, local)));
        }
        Ok(Self { runtime, charm, units, config: config.clone(), checked: std::sync::Mutex::new(checked) })
    }

    /// Every unit as a report shows it, its agent running as `running` says.
    pub fn unit_reports(&self, running: &RunningApplication) -> Vec<UnitReport> {
        self.units
            .iter()
            .map(|unit| {
                UnitReport::new(unit.name().clone(), Some(unit.status()), running.state(unit.name()))
            })
            .collect()
    }

    /// The units, in order of their numbers.
    pub fn units(&self) -> &[Arc<Unit>] {
        &self.units
    }

    /// Starts every unit's agent. A second start (once the first one's agents ended) takes
    /// each unit's lock and checks it again; it fails while an agent of a unit still runs.
    pub fn start(&self) -> Result<RunningApplication, ApplicationError> {
        let mut checked = std::mem::take(&mut *self.checked.lock().unwrap_or_else(|p| p.into_inner()));
        checked.resize_with(self.units.len(), || None);
        let mut starts = Vec::with_capacity(self.units.len());
        for (unit, checked) in self.units.iter().zip(checked) {
            let (lock, checked) = match checked {
                Some((lock, local)) => (lock, Some(local)),
                None => {
                    let lock = AgentLock::take(&self.config.state_dir, unit.name())
                        .map_err(|source| ApplicationError::StateDir { unit: unit.name().clone(), source: Box::new(source) })?;
                    (lock, None)
                }
            };
            starts.push((unit, lock, checked));
        }
        let agents = starts
            .into_iter()
            .map(|(unit, lock, checked)| {
                let (commands, receiver) = mpsc::channel(8);
                let config = self.config.agent_config(unit.name());
                let task = tokio::spawn(agent::run_checked_unit(
                    self.runtime.clone(),
                    self.charm.clone(),
                    unit.clone(),
                    lock,
                    config,
                    checked,
                    receiver,
                ));
                (unit.name().clone(), RunningAgent { unit: unit.clone(), commands, task })
            })
            .collect();
        Ok(RunningApplication { agents, ended: HashMap::new() })
    }
}

struct RunningAgent {
    unit: Arc<Unit>,
    commands: mpsc::Sender<AgentCommand>,
    task: JoinHandle<Result<(), agent::AgentError>>,
}

/// The agents of a started application.
pub struct RunningApplication {
    agents: HashMap<UnitName, RunningAgent>,
    /// How each agent that is no longer running ended (stopped or killed).
    ended: HashMap<UnitName, AgentState>,
}

impl RunningApplication {
    /// Sends `command` to `unit`'s agent.
    pub async fn command(&self, unit: &UnitName, command: AgentCommand) -> Result<(), ApplicationError> {
        let agent = self.agents.get(unit).ok_or_else(|| ApplicationError::NoSuchUnit(unit.clone()))?;
        agent.commands.send(command).await.map_err(|_| ApplicationError::NoSuchUnit(unit.clone()))
    }

    /// Whether `unit`'s agent still runs (it was neither stopped nor killed, and has not
    /// ended by itself).
    pub fn is_running(&self, unit: &UnitName) -> bool {
        self.agents.get(unit).is_some_and(|agent| !agent.task.is_finished())
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
        let _ = agent.commands.send(AgentCommand::Stop).await;
        finish(unit, agent.task).await;
        self.ended.insert(unit.clone(), AgentState::Stopped);
        Ok(())
    }

    /// Kills `unit` at once, as a crash would: its services die with it and its lease is
    /// left to expire.
    pub fn kill(&mut self, unit: &UnitName) -> Result<(), ApplicationError> {
        let agent = self.agents.remove(unit).ok_or_else(|| ApplicationError::NoSuchUnit(unit.clone()))?;
        agent.task.abort();
        agent.unit.agent_killed();
        self.ended.insert(unit.clone(), AgentState::Crashed);
        Ok(())
    }

    /// Stops every unit gracefully and waits for all of them: the minions first, in
    /// parallel, then the leader, so that the leader's revoke does not elect a successor
    /// that is about to stop too.
    pub async fn stop(&mut self) {
        let leaders: Vec<UnitName> = self
            .agents
            .iter()
            .filter(|(_, agent)| agent.unit.tracker().held_term().is_some())
            .map(|(name, _)| name.clone())
            .collect();
        let mut last = Vec::new();
        for name in leaders {
            if let Some(agent) = self.agents.remove(&name) {
                last.push((name, agent));
            }
        }
        for batch in [self.agents.drain().collect::<Vec<_>>(), last] {
            for (_, agent) in &batch {
                let _ = agent.commands.send(AgentCommand::Stop).await;
            }
            for (unit, agent) in batch {
                finish(&unit, agent.task).await;
                self.ended.insert(unit, AgentState::Stopped);
            }
        }
    }
}

async fn finish(unit: &UnitName, task: JoinHandle<Result<(), agent::AgentError>>) {
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(%unit, "agent failed: {err}"),
        Err(err) if err.is_cancelled() => {}
        Err(err) => tracing::error!(%unit, "agent panicked: {err}"),
    }
}
