//! The embedding API: a [`Host`] built from a [`HostBuilder`] loads charms and starts
//! applications ([`ApplicationHandle`]) or single unit agents ([`AgentHandle`]), and hands
//! back handles to command and observe them. Everything else in the crate is what these
//! are made of.
//!
//! Invariants:
//! - **Checked at build.** Every duration is checked against its range
//!   ([`crate::timing`]), and the caller must run inside a multi-threaded tokio runtime
//!   (hooks run wasm on the runtime's workers, and a guest spinning until its deadline must
//!   not stall the unit's leadership); anything else is a [`HostError`], never a panic.
//! - **Observation never blocks a unit.** Events go to an optional synchronous
//!   [`EventSink`] and to a bounded broadcast: a subscriber that falls behind misses the
//!   oldest events (and is told how many), nothing grows without bound.
//! - **Library calls, not plumbing.** Hook tools ([`UnitTools`]), step-down, directed
//!   handover and graceful stop are methods; an [`AgentHandle`] also serves the unit's
//!   hook-tool socket, so the CLI's tools work against an embedded agent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::task::AbortOnDropHandle;

use crate::agent::{
    AgentCommand, AgentConfig, AgentEnded, AgentError, Backoff, RunningAgent, SpawnError, UnitSetup, UnitSpec,
};
use crate::application::{Application, ApplicationConfig, ApplicationError, RunningApplication};
use crate::events::{Event, EventSink};
use crate::handover::{self, HandoverError};
use crate::hook_tools::{self, UnitTools};
use crate::leadership::etcd::{ConnectError, EtcdOptions, EtcdStore};
use crate::leadership::sqlite::OpenError;
use crate::leadership::{LeadershipStore, Lease, LeaseError, MemoryStore, SqliteStore, wait_for_lease};
use crate::metrics::Metrics;
use crate::names::{AppName, UnitName};
use crate::report::{ApplicationReport, ReportError};
use crate::runtime::{Charm, HookRuntime, LoadError, RuntimeConfig, RuntimeError};
use crate::services::{ServiceConfig, ServicesConfig};
use crate::state_dir::{StateDir, StateDirError};
use crate::timing::{
    self, DEFAULT_GUARANTEE_WINDOW, GuaranteeWindow, InvalidDuration, StopGrace, UpdateStatusInterval,
};
use crate::unit::{Unit, UnitStatus};

/// Events kept for a subscriber that has not read them yet, unless set otherwise.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// Why the host could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Not called inside a tokio runtime.
    #[error("charm-host must run inside a multi-threaded tokio runtime (none is running on this thread)")]
    NoRuntime,
    /// Called inside a current-thread tokio runtime.
    #[error(
        "charm-host needs a multi-threaded tokio runtime (this is a current-thread one): \
         hooks run wasm on the runtime's workers, and claims must go on meanwhile"
    )]
    CurrentThreadRuntime,
    /// A duration is out of its range.
    #[error(transparent)]
    InvalidDuration(#[from] InvalidDuration),
    /// A setting is unusable.
    #[error("invalid host configuration: {0}")]
    Invalid(String),
    /// Nobody leads the application (there is no leader to step down, say).
    #[error("{app} has no leader to {what}")]
    NoLeader {
        /// The application.
        app: AppName,
        /// What needed one, e.g. "step down".
        what: &'static str,
    },
    /// The unit is not a member of its application: no agent of it ever started, or it was
    /// removed. Electing it would leave the application leaderless until the reservation
    /// ran out.
    #[error("{unit} is not a member of {}: no agent of it has started (or it was removed); refusing to elect it", unit.app())]
    NotAMember {
        /// The unit.
        unit: UnitName,
    },
    /// A wait ran out.
    #[error("{what} did not happen within {within:?}")]
    TimedOut {
        /// What was waited for.
        what: String,
        /// How long.
        within: Duration,
    },
    /// The wasm runtime could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A charm could not be built or loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A charm crate could not be built.
    #[error(transparent)]
    Build(#[from] crate::charm_build::BuildError),
    /// The state directory could not be prepared or locked.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The SQLite store could not be opened.
    #[error(transparent)]
    Sqlite(#[from] OpenError),
    /// The etcd store could not be reached or refused.
    #[error(transparent)]
    Etcd(#[from] ConnectError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] LeaseError),
    /// An application could not be set up or commanded.
    #[error(transparent)]
    Application(#[from] ApplicationError),
    /// A unit's agent could not be prepared (its lock, its directories, its checks at start).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A unit's agent could not go on.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// A unit's agent ended other than by its stop (it panicked, or was killed).
    #[error("the agent's task ended abnormally: {0}")]
    AgentEnded(AgentEnded),
    /// A directed handover failed.
    #[error(transparent)]
    Handover(#[from] HandoverError),
    /// A report could not be read.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A file or socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Checks that the caller runs in a multi-threaded tokio runtime.
fn check_runtime() -> Result<(), HostError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| HostError::NoRuntime)?;
    match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => Err(HostError::CurrentThreadRuntime),
        _ => Ok(()),
    }
}

/// Which leadership store a host uses.
enum StoreChoice {
    Memory,
    Sqlite,
    Etcd(Box<EtcdOptions>),
    Given(Arc<dyn LeadershipStore>),
}

/// Configures a [`Host`]; every setting has a default (see each method).
#[must_use]
pub struct HostBuilder {
    runtime: RuntimeConfig,
    store: StoreChoice,
    state_dir: Option<PathBuf>,
    guarantee_window: Duration,
    /// The stop grace asked for, checked by [`Self::build`].
    stop_grace: Duration,
    /// The `update-status` period asked for, checked by [`Self::build`].
    update_status_interval: Duration,
    agent: AgentConfig,
    services: Vec<ServiceConfig>,
    /// The service grace asked for, checked by [`Self::build`].
    service_grace: Duration,
    sink: Option<Arc<dyn EventSink>>,
    event_capacity: usize,
    /// The retry timing asked for, checked by [`Self::build`].
    hook_backoff: Option<(Duration, Duration)>,
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            store: StoreChoice::Memory,
            state_dir: None,
            guarantee_window: DEFAULT_GUARANTEE_WINDOW,
            stop_grace: timing::DEFAULT_STOP_GRACE,
            update_status_interval: timing::DEFAULT_UPDATE_STATUS_INTERVAL,
            agent: AgentConfig::default(),
            services: Vec::new(),
            service_grace: timing::DEFAULT_SERVICE_GRACE,
            sink: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            hook_backoff: None,
        }
    }
}

impl HostBuilder {
    /// The `is-leader` guarantee window (default 30 s; see [`timing::GUARANTEE_WINDOW`]).
    pub fn guarantee_window(mut self, window: Duration) -> Self {
        self.guarantee_window = window;
        self
    }

    /// How long one hook may run (default 60 s).
    pub fn hook_deadline(mut self, deadline: Duration) -> Self {
        self.runtime.hook_deadline = deadline;
        self
    }

    /// The largest linear memory of one hook instance, in bytes (default 64 MiB).
    pub fn memory_cap(mut self, bytes: usize) -> Self {
        self.runtime.memory_cap = bytes;
        self
    }

    /// How many hooks may run at once across the host (default 64).
    pub fn max_concurrent_hooks(mut self, hooks: u32) -> Self {
        self.runtime.max_concurrent_hooks = hooks;
        self
    }

    /// Where compiled charms are cached (default `~/.cache/charm-host`); `None` compiles
    /// every time.
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.runtime.cache_dir = dir;
        self
    }

    /// On a stop, how long a running hook may go on before it is interrupted (default 3 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// How often `update-status` runs on every unit (default 5 minutes, as Juju; 1 s to a
    /// day, checked by [`Self::build`]).
    pub fn update_status_interval(mut self, interval: Duration) -> Self {
        self.update_status_interval = interval;
        self
    }

    /// Retry timing of failed hooks (default 1 s doubling to 60 s; see [`Backoff::new`]
    /// for what is accepted, checked by [`Self::build`]).
    pub fn hook_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.hook_backoff = Some((base, cap));
        self
    }

    /// The services every unit's charm may start, and how long a stopping one gets between
    /// SIGTERM and SIGKILL (default: none).
    pub fn services(mut self, services: Vec<ServiceConfig>, grace: Duration) -> Self {
        self.services = services;
        self.service_grace = grace;
        self
    }

    /// Where units keep their data, agent state, status, records and sockets (default: a
    /// temporary directory removed when the host is dropped).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Keep leadership in memory, for this process only (the default).
    pub fn memory_store(mut self) -> Self {
        self.store = StoreChoice::Memory;
        self
    }

    /// Keep leadership in the SQLite file of the state directory, shared by the agents of
    /// one machine.
    pub fn sqlite_store(mut self) -> Self {
        self.store = StoreChoice::Sqlite;
        self
    }

    /// Share leadership through etcd, across machines.
    pub fn etcd_store(mut self, options: EtcdOptions) -> Self {
        self.store = StoreChoice::Etcd(Box::new(options));
        self
    }

    /// Use a store the embedder opened (or implemented).
    pub fn store(mut self, store: Arc<dyn LeadershipStore>) -> Self {
        self.store = StoreChoice::Given(store);
        self
    }

    /// Start even on a store that remembers less than a unit does (it was lost or
    /// replaced; see [`AgentError::StoreBehind`]), and on SQLite create the file where units
    /// ran before or adopt a copy of it (see
    /// [`SqliteOptions::accept_moved`](crate::leadership::sqlite::SqliteOptions::accept_moved)):
    /// no tenure is then granted for one claim duration.
    pub fn accept_new_store(mut self, accept: bool) -> Self {
        self.agent.accept_new_store = accept;
        self
    }

    /// Also send every event to `sink`, synchronously, from the unit's own task: it must
    /// not block for long.
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// How many events a subscriber may fall behind by before it misses the oldest
    /// (default [`DEFAULT_EVENT_CAPACITY`]).
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events;
        self
    }

    /// Checks the settings, opens the store and builds the wasm runtime. Must be called
    /// inside a multi-threaded tokio runtime.
    pub async fn build(self) -> Result<Host, HostError> {
        check_runtime()?;
        let window = GuaranteeWindow::new(self.guarantee_window)?;
        let stop_grace = StopGrace::new(self.stop_grace)?;
        let services = ServicesConfig::new(self.services, self.service_grace)?;
        if self.event_capacity == 0 {
            return Err(HostError::Invalid("the event capacity must be at least 1".into()));
        }
        let update_status_interval = UpdateStatusInterval::new(self.update_status_interval)?;
        let mut agent = self.agent.with_stop_grace(stop_grace).with_update_status_interval(update_status_interval);
        if let Some((base, cap)) = self.hook_backoff {
            agent.backoff = Backoff::new(base, cap).map_err(|e| HostError::Invalid(e.to_string()))?;
        }
        let (state, temporary) = match &self.state_dir {
            Some(dir) => (StateDir::new(dir), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("charm-host-")
                    .tempdir()
                    .map_err(|source| HostError::Io { what: "creating a state directory".into(), source })?;
                (StateDir::new(dir.path()), Some(dir))
            }
        };
        state.prepare()?;
        let store: Arc<dyn LeadershipStore> = match self.store {
            StoreChoice::Memory => Arc::new(MemoryStore::new()),
            StoreChoice::Sqlite => {
                let new_store = crate::leadership::sqlite::NewStore::where_units(
                    state.any_unit_ran(),
                    agent.accept_new_store,
                    timing::claim_duration(self.guarantee_window),
                );
                let options = crate::leadership::sqlite::SqliteOptions {
                    new_store,
                    accept_moved: agent.accept_new_store.then(|| timing::claim_duration(self.guarantee_window)),
                    ..Default::default()
                };
                Arc::new(SqliteStore::open_with(&state.store(), Arc::new(crate::leadership::MonotonicClock), options)?)
            }
            StoreChoice::Etcd(options) => {
                let options = options.with_deadlines_within(timing::store_request_timeout(self.guarantee_window));
                Arc::new(EtcdStore::connect(&options).await?)
            }
            StoreChoice::Given(store) => store,
        };
        let runtime = Arc::new(HookRuntime::new(self.runtime)?);
        let (broadcast, _) = broadcast::channel(self.event_capacity);
        let metrics = Arc::new(Metrics::new());
        let events = Arc::new(EventHub { sink: self.sink, broadcast, metrics: metrics.clone() });
        let unit_defaults = UnitSetup { window, services, agent: agent.with_metrics(metrics.clone()) };
        Ok(Host {
            runtime,
            store,
            state,
            _temporary: temporary,
            events,
            unit_defaults,
            metrics,
            agents: std::sync::Mutex::default(),
        })
    }
}

/// Counts each event in the metrics, and sends it to the embedder's sink, if any, and to
/// the subscribers.
struct EventHub {
    sink: Option<Arc<dyn EventSink>>,
    broadcast: broadcast::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl EventSink for EventHub {
    fn emit(&self, event: Event) {
        self.metrics.observe(&event);
        if self.broadcast.receiver_count() == 0 {
            if let Some(sink) = &self.sink {
                sink.emit(event);
            }
            return;
        }
        if let Some(sink) = &self.sink {
            sink.emit(event.clone());
        }
        let _ = self.broadcast.send(event);
    }
}

/// The events of every unit of a host, from when it subscribed; see [`Host::subscribe`].
pub struct EventStream {
    receiver: broadcast::Receiver<Event>,
    missed: u64,
}

impl EventStream {
    /// The next event, waiting for it; `None` once the host and all its units are gone
    /// (handles and [`UnitTools`] keep their units).
    /// Events this subscriber fell too far behind to keep are skipped and counted in
    /// [`Self::missed`].
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => self.missed = self.missed.saturating_add(missed),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            match self.receiver.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => self.missed = self.missed.saturating_add(missed),
                Err(_) => return None,
            }
        }
    }

    /// How many events this subscriber missed because it fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// Runs charms' units with Juju-style leadership, inside the embedder's tokio runtime.
///
/// ```no_run
/// # async fn example() -> Result<(), charm_host::HostError> {
/// use charm_host::{AppName, Host};
///
/// let host = Host::builder().build().await?;
/// let charm = host.load_charm("my-charm.wasm")?;
/// let app = host.start_application(AppName::new("db").unwrap(), &charm, 3).await?;
/// let leader = app.wait_for_leader().await?;
/// println!("{leader} leads");
/// app.stop().await;
/// # Ok(()) }
/// ```
pub struct Host {
    runtime: Arc<HookRuntime>,
    store: Arc<dyn LeadershipStore>,
    state: StateDir,
    _temporary: Option<tempfile::TempDir>,
    events: Arc<EventHub>,
    /// How every unit of this host is set up, checked by [`HostBuilder::build`].
    unit_defaults: UnitSetup,
    metrics: Arc<Metrics>,
    /// Every agent this host started, for [`Host::stop`].
    agents: std::sync::Mutex<Vec<StartedAgent>>,
}

/// An agent a [`Host`] started: its unit and where its commands go.
struct StartedAgent {
    unit: Arc<Unit>,
    commands: mpsc::Sender<AgentCommand>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("state_dir", &self.state.root()).finish()
    }
}

impl Host {
    /// A builder with every default: in-memory store, temporary state directory.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Loads a charm: a `.wasm` component, or a charm crate directory (built for
    /// `wasm32-wasip2` first, with `cargo`).
    pub fn load_charm(&self, path: impl AsRef<Path>) -> Result<Charm, HostError> {
        let path = path.as_ref();
        let wasm = if path.is_dir() {
            crate::charm_build::build_charm(path, crate::charm_build::Progress::Quiet)?
        } else {
            path.to_owned()
        };
        Ok(self.runtime.load_charm(&wasm)?)
    }

    /// The leadership store every unit of this host uses.
    pub fn store(&self) -> &Arc<dyn LeadershipStore> {
        &self.store
    }

    /// Where units keep their data, state, records and sockets.
    pub fn state_dir(&self) -> &Path {
        self.state.root()
    }

    /// The metrics of this host's units (see [`crate::metrics`]): encode them for a scrape,
    /// or serve them with [`crate::metrics::serve`].
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every event of every unit from now on (see [`EventStream`]).
    pub fn subscribe(&self) -> EventStream {
        EventStream { receiver: self.events.broadcast.subscribe(), missed: 0 }
    }

    /// `app`'s current lease, if anyone holds it.
    pub async fn leader(&self, app: &AppName) -> Result<Option<Lease>, HostError> {
        Ok(self.store.lease(app).await?)
    }

    /// A directed handover to `unit`, wherever its agent runs: waits (at most `within`)
    /// until it leads, and returns its term. Refused, with nothing reserved, if `unit` is
    /// not a member of its application (no agent of it ever started, or it was removed):
    /// the leader would step down for a unit that never claims. (A member whose agent is
    /// down cannot be told from the store: the handover then times out, and the application
    /// is leaderless until the reservation runs out.)
    pub async fn elect(&self, unit: &UnitName, within: Duration) -> Result<u64, HostError> {
        let member = self.store.read_unit_data(unit).await.map_err(|e| HostError::Store(e.into()))?;
        if member.is_none() {
            return Err(HostError::NotAMember { unit: unit.clone() });
        }
        Ok(handover::elect(self.store.as_ref(), unit, within).await?)
    }

    /// Stops every agent this host started and still runs, gracefully, and waits for them:
    /// minions first, then leaders (so a leader's revoke elects nobody about to stop), as
    /// [`ApplicationHandle::stop`] does for one application. Handles of stopped agents
    /// report them stopped. Dropping a `Host` stops nothing: call this first.
    pub async fn stop(&self) {
        let agents = std::mem::take(&mut *self.agents.lock().unwrap_or_else(|p| p.into_inner()));
        for batch in crate::application::minions_then_leaders(agents, |agent| &agent.unit) {
            for agent in &batch {
                let _ = agent.commands.send(AgentCommand::Stop).await;
            }
            for agent in &batch {
                // Closed once the agent's hook driver has ended (its stop sequence done).
                agent.commands.closed().await;
            }
        }
    }

    /// Remembers agents started, for [`Self::stop`] (forgetting those that ended).
    fn started(&self, agents: impl IntoIterator<Item = StartedAgent>) {
        let mut started = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        started.retain(|agent| !agent.commands.is_closed());
        started.extend(agents);
    }

    /// Starts `units` units of `app` (numbered from 0) in this process, sharing this host's
    /// store, runtime and `charm`; see [`Self::start_units`].
    pub async fn start_application(
        &self,
        app: AppName,
        charm: &Charm,
        units: u32,
    ) -> Result<ApplicationHandle, HostError> {
        self.start_units(app, charm, 0, units).await
    }

    /// Starts `units` units of `app` numbered from `first` in this process, sharing this
    /// host's store, runtime and `charm`: the other units of the application may run in
    /// other processes or machines over the same store. Each unit holds its lock in the
    /// state directory and serves its hook-tool socket there, as an agent does (the tools
    /// and `charm-host status` work against them).
    pub async fn start_units(
        &self,
        app: AppName,
        charm: &Charm,
        first: u32,
        units: u32,
    ) -> Result<ApplicationHandle, HostError> {
        check_runtime()?;
        if units == 0 {
            return Err(HostError::Invalid("an application needs at least one unit".into()));
        }
        let config = ApplicationConfig::new(app.clone(), units, self.state.clone())
            .from_unit(first)
            .with_setup(self.unit_defaults.clone());
        let events: Arc<dyn EventSink> = self.events.clone();
        let application =
            Application::new(self.runtime.clone(), charm.clone(), self.store.clone(), events, &config).await?;
        // Listening before the agents start, so that a refused socket leaves nothing running;
        // the units' locks (taken above) prove that a leftover socket is ours to replace.
        let mut listeners = Vec::new();
        for unit in application.units() {
            let socket = self.state.socket(unit.name());
            let _ = std::fs::remove_file(&socket);
            let listener = hook_tools::listen(&socket)
                .map_err(|source| HostError::Io { what: format!("listening on {}", socket.display()), source })?;
            listeners.push((unit.clone(), socket, listener));
        }
        let running = application.start()?;
        self.started(
            application
                .units()
                .iter()
                .filter_map(|unit| Some(StartedAgent { unit: unit.clone(), commands: running.commands(unit.name())? })),
        );
        let tools = listeners
            .into_iter()
            .filter_map(|(unit, socket, listener)| {
                let commands = running.commands(unit.name())?;
                let serve = hook_tools::serve(listener, UnitTools::new(unit.clone()), commands);
                Some((unit.name().clone(), ServedSocket { socket, _task: AbortOnDropHandle::new(tokio::spawn(serve)) }))
            })
            .collect();
        Ok(ApplicationHandle { app, application, running, store: self.store.clone(), tools })
    }

    /// Starts one unit's agent, as `charm-host agent` does: it holds the unit's lock in the
    /// state directory (no other agent may run the unit meanwhile), records its tenures, and
    /// serves the hook-tool socket (`charm-host is-leader --unit U --state DIR` and the
    /// other tools work against it).
    pub async fn start_agent(&self, unit: UnitName, charm: &Charm) -> Result<AgentHandle, HostError> {
        check_runtime()?;
        let events: Arc<dyn EventSink> = self.events.clone();
        let spec = UnitSpec::new(unit.clone(), self.state.clone(), self.store.clone(), events)
            .with_setup(self.unit_defaults.clone())
            .recording_tenures();
        // Checked before anything is served, so a refused start leaves no socket behind.
        let prepared = spec.prepare().await?;
        // The lock proves no other agent uses the socket: a leftover one is ours to replace.
        let socket = self.state.socket(&unit);
        let _ = std::fs::remove_file(&socket);
        let listener = hook_tools::listen(&socket)
            .map_err(|source| HostError::Io { what: format!("listening on {}", socket.display()), source })?;
        // The agent holds the unit's lock for as long as it runs, handle or not.
        let agent = prepared.start(self.runtime.clone(), charm.clone());
        self.started([StartedAgent { unit: agent.unit().clone(), commands: agent.commands().clone() }]);
        let tools = hook_tools::serve(listener, UnitTools::new(agent.unit().clone()), agent.commands().clone());
        Ok(AgentHandle { agent, _tools: AbortOnDropHandle::new(tokio::spawn(tools)), socket })
    }
}

/// The running units of one application; see [`Host::start_application`]. Dropping it
/// without [`Self::stop`] leaves the agents running until the runtime ends.
pub struct ApplicationHandle {
    app: AppName,
    application: Application,
    running: RunningApplication,
    store: Arc<dyn LeadershipStore>,
    /// Each running unit's hook-tool socket.
    tools: HashMap<UnitName, ServedSocket>,
}

/// A unit's hook-tool socket, served until dropped (then removed).
struct ServedSocket {
    socket: PathBuf,
    _task: AbortOnDropHandle<()>,
}

impl Drop for ServedSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl ApplicationHandle {
    /// The application.
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// Its units, in order of their numbers (stopped and killed ones included).
    pub fn units(&self) -> Vec<UnitName> {
        self.application.units().iter().map(|unit| unit.name().clone()).collect()
    }

    fn unit(&self, name: &UnitName) -> Result<&Arc<Unit>, HostError> {
        self.application
            .units()
            .iter()
            .find(|unit| unit.name() == name)
            .ok_or_else(|| HostError::Application(ApplicationError::NoSuchUnit(name.clone())))
    }

    /// The application's current lease, if anyone holds it.
    pub async fn leader(&self) -> Result<Option<Lease>, HostError> {
        Ok(self.store.lease(&self.app).await?)
    }

    /// Waits until some unit leads, and returns it.
    pub async fn wait_for_leader(&self) -> Result<UnitName, HostError> {
        let lease = wait_for_lease(self.store.as_ref(), &self.app, None, |_| true).await?;
        lease.map(|l| l.holder).ok_or_else(|| {
            HostError::Store(LeaseError::Store(crate::leadership::StoreError::failed("the wait for a leader ended")))
        })
    }

    /// The application as `charm-host status` shows it: leader, term, pins, settings and
    /// every unit (whether its agent runs, its status, services and errors).
    pub async fn report(&self) -> Result<ApplicationReport, HostError> {
        let units = self.application.unit_reports(&self.running);
        Ok(ApplicationReport::collect(&self.app, self.store.as_ref(), units).await?)
    }

    /// A unit's status as its agent last recorded it.
    pub fn status(&self, unit: &UnitName) -> Result<UnitStatus, HostError> {
        Ok(self.unit(unit)?.status())
    }

    /// The hook tools of a unit: `is-leader`, `leader-get` and `leader-set` as a script
    /// would call them, answered without waiting behind the unit's hooks.
    pub fn tools(&self, unit: &UnitName) -> Result<UnitTools, HostError> {
        Ok(UnitTools::new(self.unit(unit)?.clone()))
    }

    /// The current leader steps down (`leader-deposed`, then revoke); another unit is
    /// elected. Returns the unit that stepped down, once it was told (not once a successor
    /// leads: see [`Self::step_down_and_wait`]).
    pub async fn step_down(&self) -> Result<UnitName, HostError> {
        Ok(self.begin_step_down().await?.holder)
    }

    /// The current leader steps down, as [`Self::step_down`], and this waits (at most
    /// `within`, on the store's clock) until a successor leads, at a later term: returns it
    /// and its term.
    pub async fn step_down_and_wait(&self, within: Duration) -> Result<(UnitName, u64), HostError> {
        let deadline = self.store.clock().now() + within;
        let old = self.begin_step_down().await?;
        match wait_for_lease(self.store.as_ref(), &self.app, Some(deadline), |lease| lease.term > old.term).await? {
            Some(lease) => Ok((lease.holder, lease.term)),
            None => Err(HostError::TimedOut { what: format!("a successor to {} in {}", old.holder, self.app), within }),
        }
    }

    /// Tells the leader (one of this handle's units) to step down; its lease as it was.
    async fn begin_step_down(&self) -> Result<Lease, HostError> {
        let leader =
            self.leader().await?.ok_or_else(|| HostError::NoLeader { app: self.app.clone(), what: "step down" })?;
        self.running.command(&leader.holder, AgentCommand::StepDown).await?;
        Ok(leader)
    }

    /// Waits (at most `within`) until the application has settled: a unit leads (a unit of
    /// this handle knows it does), and every unit of this handle still running knows its
    /// role and waits with nothing queued, the hooks for everything it has heard of run.
    /// Returns the leader. News still on its way to an agent when this returns (a write an
    /// instant before, say) may yet cause hooks.
    pub async fn wait_settled(&self, within: Duration) -> Result<UnitName, HostError> {
        let settled = async {
            let units: Vec<&Arc<Unit>> =
                self.application.units().iter().filter(|unit| self.running.is_running(unit.name())).collect();
            let mut quiet: Vec<_> = units.iter().map(|unit| unit.reporter().quiet()).collect();
            let mut leases = self.store.watch_leases(&self.app);
            loop {
                leases.borrow_and_update();
                if quiet.iter_mut().all(|q| *q.borrow_and_update())
                    && let Some(lease) = self.store.lease(&self.app).await?
                {
                    let here = units.iter().find(|unit| *unit.name() == lease.holder);
                    if here.is_none_or(|unit| unit.leadership().held_term() == Some(lease.term)) {
                        return Ok(lease.holder);
                    }
                }
                // Woken by a lease change, or looked at again shortly (agents' news).
                tokio::select! {
                    _ = leases.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        };
        match tokio::time::timeout(within, settled).await {
            Ok(result) => result,
            Err(_) => Err(HostError::TimedOut { what: format!("{} settling", self.app), within }),
        }
    }

    /// A directed handover to `unit`; waits (at most `within`) until it leads, and returns
    /// its term.
    pub async fn elect(&self, unit: &UnitName, within: Duration) -> Result<u64, HostError> {
        self.unit(unit)?;
        Ok(handover::elect(self.store.as_ref(), unit, within).await?)
    }

    /// Stops `unit` gracefully (deposed if leader, stop, revoke) and waits for it.
    pub async fn stop_unit(&mut self, unit: &UnitName) -> Result<(), HostError> {
        self.running.stop_unit(unit).await?;
        self.tools.remove(unit);
        Ok(())
    }

    /// Kills `unit` at once, as a crash would: its lease is left to expire.
    pub fn kill_unit(&mut self, unit: &UnitName) -> Result<(), HostError> {
        self.running.kill(unit)?;
        self.tools.remove(unit);
        Ok(())
    }

    /// Stops every unit gracefully (minions first, then the leader) and waits for them.
    pub async fn stop(mut self) {
        self.running.stop().await;
        self.tools.clear();
    }

    /// [`Self::stop`], then the application as it ended: each unit's agent
    /// [stopped](crate::report::AgentState::Stopped) or
    /// [crashed](crate::report::AgentState::Crashed) (killed), and the lease as the store
    /// has it then (none after a graceful stop; a killed leader's until it expires).
    pub async fn stop_and_report(mut self) -> Result<ApplicationReport, HostError> {
        self.running.stop().await;
        self.tools.clear();
        self.report().await
    }
}

/// One unit's agent; see [`Host::start_agent`].
pub struct AgentHandle {
    agent: RunningAgent,
    _tools: AbortOnDropHandle<()>,
    socket: PathBuf,
}

impl AgentHandle {
    /// The unit.
    pub fn unit(&self) -> &UnitName {
        self.agent.unit().name()
    }

    /// The unit's status as its agent last recorded it.
    pub fn status(&self) -> UnitStatus {
        self.agent.unit().status()
    }

    /// The unit's hook tools (see [`ApplicationHandle::tools`]).
    pub fn tools(&self) -> UnitTools {
        UnitTools::new(self.agent.unit().clone())
    }

    /// The path of the unit's hook-tool socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The unit, if it leads, steps down (`leader-deposed`, then revoke).
    pub async fn step_down(&self) -> Result<(), HostError> {
        if self.agent.command(AgentCommand::StepDown).await {
            Ok(())
        } else {
            Err(HostError::Application(ApplicationError::NoSuchUnit(self.unit().clone())))
        }
    }

    /// A sender of commands to the agent, for code that stops it from elsewhere (a signal
    /// handler, say): sending [`AgentCommand::Stop`] begins the graceful stop.
    pub fn commands(&self) -> mpsc::Sender<AgentCommand> {
        self.agent.commands().clone()
    }

    /// Makes SIGTERM and SIGINT stop the agent gracefully, as `charm-host agent` does
    /// (SIGKILL stays a crash, after which the unit's lease expires).
    pub fn stop_on_signals(&self) -> Result<(), HostError> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen =
            |kind| signal(kind).map_err(|source| HostError::Io { what: "listening for signals".into(), source });
        let (mut terminate, mut interrupt) = (listen(SignalKind::terminate())?, listen(SignalKind::interrupt())?);
        let commands = self.commands();
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            let _ = commands.send(AgentCommand::Stop).await;
        });
        Ok(())
    }

    /// Stops the unit gracefully (deposed if leader, stop, revoke) and waits for it.
    pub async fn stop(self) -> Result<(), HostError> {
        self.agent.command(AgentCommand::Stop).await;
        self.wait().await
    }

    /// Waits until the agent ends (after a stop sent through [`Self::commands`]), then
    /// removes its socket.
    pub async fn wait(self) -> Result<(), HostError> {
        let Self { agent, socket, _tools } = self;
        let result = agent.wait().await;
        drop(_tools);
        let _ = std::fs::remove_file(&socket);
        match result {
            Ok(()) => Ok(()),
            Err(AgentEnded::Failed(err)) => Err(HostError::Agent(err)),
            Err(other) => Err(HostError::AgentEnded(other)),
        }
    }
}
