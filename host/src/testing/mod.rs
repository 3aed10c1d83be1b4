//! # `TestApp`: the real charm on the real host, N units, in virtual time
//!
//! A [`TestApp`] runs a charm's `.wasm` (or builds its crate first) on N unit agents of one
//! application: the host's own agents, hook runtime, lease engine and in-memory store, all
//! on one [`ManualClock`]. Nothing runs until the test takes a step; time moves only when
//! the test moves it; and every step returns once nothing more can happen without the
//! clock moving, with no real sleeps. After every step the leadership invariants are
//! checked, and a violation fails the test with the timeline so far.
//!
//! ```no_run
//! use std::time::Duration;
//! use charm_host::HookKind;
//! use charm_host::testing::TestApp;
//!
//! let mut app = TestApp::builder("example-charms/shared-settings").units(3).build()?;
//! app.settle(); // the agents start: one claims the lease, every unit installs
//! let first = app.leader().expect("a leader");
//! let settings = app.settings();
//!
//! app.crash(first); // its process dies: its lease is left to expire
//! app.advance(Duration::from_secs(120)); // two lease durations, renewals included
//! let next = app.leader().expect("a successor");
//! assert_ne!(next, first);
//! assert_eq!(app.settings(), settings, "the successor kept the settings");
//! assert_eq!(app.hooks(next).last(), Some(&HookKind::LeaderElected));
//! # Ok::<(), charm_host::testing::TestAppError>(())
//! ```
//!
//! Steps: [`settle`](TestApp::settle), [`advance`](TestApp::advance),
//! [`elect`](TestApp::elect), [`step_down`](TestApp::step_down), [`stop`](TestApp::stop),
//! [`crash`](TestApp::crash), [`restart`](TestApp::restart),
//! [`partition`](TestApp::partition) / [`heal`](TestApp::heal),
//! [`set_settings`](TestApp::set_settings). Observations: hooks per unit, statuses, logs,
//! settings, leader and term, every host call with its answer ([`TestApp::calls`]), and the
//! [`timeline`](TestApp::timeline) of events with their virtual time (as JSON Lines:
//! [`TestApp::timeline_json`]).
//!
//! Invariants checked after every step (see [`invariants`]): at most one unit can vouch
//! for leadership, terms never go back, every acknowledged write was made under the term
//! that held the lease, the settings are exactly what the acknowledged writes made, and a
//! leader-only service runs on at most one unit; plus the test's own ([`TestApp::invariant`]). [`TestAppBuilder::explore`] runs seeded
//! random schedules of steps and reports a failing seed with the command that replays it.
//!
//! Guests read the virtual clock (WASI wall and monotonic clocks; the wall clock starts at
//! [`WALL_CLOCK_START`]), sleep on it, and draw seeded randomness; the hook deadline is
//! kept on it too (a hook that sleeps past its deadline fails when the clock passes it). What
//! is still real time: the stop grace, and the deadline of a hook that computes without
//! waiting (a loop is stopped after the real deadline). Services ([`TestAppBuilder::service`]) are simulated, with exact
//! timing: a started service gets a made-up pid and exits the moment it is signalled.

pub mod explore;
mod idle;
pub mod invariants;
mod members;
mod observe;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent::{AgentCommand, AgentConfig, Backoff, RunningAgent, UnitSetup, UnitSpec};
pub use crate::capabilities::call_log::{HostCall, HostCallLog};
use crate::events::{Event, EventKind, EventSink};
use crate::leadership::{Clock, LeadershipStore, ManualClock, MemoryStore, Timestamp};
use crate::names::{AppName, NameError, UnitName};
use crate::runtime::{Charm, GuestEnvironment, HookRuntime, RuntimeConfig};
use crate::services::{ServiceConfig, ServicesConfig};
use crate::unit::Unit;
pub use explore::Step;
use idle::IdleRuntime;
pub use store::AcknowledgedWrite;
use store::{Ledger, UnitStore};

/// Why a test application could not be built or a step could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestAppError {
    /// The charm could not be built or loaded.
    #[error("cannot load the charm {path}: {reason}")]
    Charm {
        /// The crate directory or `.wasm` given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A name or setting was not valid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The test asked for something the application cannot do now.
    #[error("{0}")]
    Step(String),
    /// The runtime, a directory or an agent could not be set up.
    #[error("cannot set up the test application: {0}")]
    Setup(String),
}

/// One event of the timeline, with the virtual time since the application was built.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedEvent {
    /// Virtual time since the application was built.
    pub at: Duration,
    /// The event.
    pub event: Event,
}

impl TimedEvent {
    /// The event as `charm-host run --json` prints it, with `at_ms`, its virtual time.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = self.event.to_json();
        if let Some(object) = value.as_object_mut() {
            object.insert("at_ms".into(), serde_json::json!(self.at.as_millis() as u64));
        }
        value
    }
}

/// Records every event with the virtual time it happened at.
struct Timeline {
    clock: Arc<ManualClock>,
    start: Timestamp,
    events: Mutex<Vec<TimedEvent>>,
}

impl EventSink for Timeline {
    fn emit(&self, event: Event) {
        let at = self.clock.now().saturating_since(self.start);
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(TimedEvent { at, event });
    }
}

/// How a [`TestApp`] is built: see [`TestApp::builder`].
#[derive(Debug, Clone)]
pub struct TestAppBuilder {
    charm: PathBuf,
    app: String,
    units: u32,
    window: Duration,
    /// The retry timing asked for (first delay, cap), checked by `build`.
    backoff: (Duration, Duration),
    hook_deadline: Duration,
    /// The `update-status` period asked for, checked by `build`.
    update_status_interval: Duration,
    seed: u64,
    services: Vec<ServiceConfig>,
}

/// How much longer than the hook deadline a settle may take before it is called a hang.
const SETTLE_SLACK: Duration = Duration::from_secs(30);

/// The wall time every test application's guests read when it is built, and its events'
/// and history's times start from: 2026-01-01T00:00:00Z (its clock's
/// [`MANUAL_WALL_START`](crate::leadership::MANUAL_WALL_START)).
pub const WALL_CLOCK_START: Duration = crate::leadership::MANUAL_WALL_START;

impl TestAppBuilder {
    /// Every unit has a service `name` (as the operator's `--service`, or `--leader-service`
    /// with `leader_only`), simulated: it gets a made-up pid when the charm starts it and
    /// exits the moment it is signalled, so its timing is exact.
    pub fn service(mut self, name: &str, leader_only: bool) -> Self {
        self.services.push(ServiceConfig { name: name.to_owned(), command: "(simulated)".into(), leader_only });
        self
    }

    /// The seed of every unit's guest randomness (default 0): the same seed gives every
    /// hook the same random bytes.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The application's name (default `app`).
    pub fn app_name(mut self, name: &str) -> Self {
        self.app = name.to_owned();
        self
    }

    /// How many units (default 3).
    pub fn units(mut self, units: u32) -> Self {
        self.units = units;
        self
    }

    /// The guarantee window (default 30 s, as in production): a claim lasts twice it.
    pub fn guarantee_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Retry timing of failed hooks (default 1 s doubling to 60 s, as in production;
    /// checked by [`Self::build`] as [`Backoff::new`] checks it).
    pub fn hook_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = (base, cap);
        self
    }

    /// The hook deadline (default 60 s), kept on the virtual clock (a hook that sleeps past
    /// it) and in real time (a hook that computes past it).
    pub fn hook_deadline(mut self, deadline: Duration) -> Self {
        self.hook_deadline = deadline;
        self
    }

    /// How often every unit runs `update-status` on the virtual clock (default 5 minutes,
    /// as in production; 1 s to a day): `advance` crosses every period it spans.
    pub fn update_status_interval(mut self, interval: Duration) -> Self {
        self.update_status_interval = interval;
        self
    }

    /// Loads the charm and prepares the units; no agent runs until the first step.
    pub fn build(self) -> Result<TestApp, TestAppError> {
        let setup = |e: &dyn std::fmt::Display| TestAppError::Setup(e.to_string());
        if self.units == 0 {
            return Err(TestAppError::Step("an application needs at least one unit".into()));
        }
        let window = crate::timing::GuaranteeWindow::new(self.window).map_err(|e| setup(&e))?;
        let backoff = Backoff::new(self.backoff.0, self.backoff.1).map_err(|e| setup(&e))?;
        let update_status =
            crate::timing::UpdateStatusInterval::new(self.update_status_interval).map_err(|e| setup(&e))?;
        let app = AppName::new(&self.app)?;
        let runtime = IdleRuntime::new().map_err(|e| setup(&e))?;
        let charm_failed = |reason: String| TestAppError::Charm { path: self.charm.clone(), reason };
        let wasm = if self.charm.is_dir() {
            crate::charm_build::build_charm(&self.charm, crate::charm_build::Progress::Quiet)
                .map_err(|e| charm_failed(e.to_string()))?
        } else {
            self.charm.clone()
        };
        let config = RuntimeConfig::default().with_hook_deadline(self.hook_deadline);
        let hooks = Arc::new(HookRuntime::new(config).map_err(|e| setup(&e))?);
        let charm = hooks.load_charm(&wasm).map_err(|e| charm_failed(e.to_string()))?;
        let clock = Arc::new(ManualClock::default());
        let dir = tempfile::Builder::new().prefix("charm-test-app-").tempdir().map_err(|e| setup(&e))?;
        let timeline = Arc::new(Timeline { clock: clock.clone(), start: clock.now(), events: Mutex::default() });
        let store: Arc<dyn LeadershipStore> =
            runtime.block_on(async { Arc::new(MemoryStore::with_clock(clock.clone())) });
        let ledger = Arc::new(Ledger::default());
        let units = (0..self.units)
            .map(|n| {
                let name = UnitName::from_parts(app.clone(), n);
                let view = Arc::new(UnitStore::new(store.clone(), ledger.clone()));
                let seed = crate::runtime::guest_seed(self.seed, u64::from(n));
                let guest = GuestEnvironment::new(clock.clone(), WALL_CLOCK_START, seed);
                TestUnit { name, view, guest, calls: Arc::default(), agent: None, last: None, machine: None }
            })
            .collect();
        let services = ServicesConfig::new(self.services, Duration::ZERO).map_err(|e| setup(&e))?.simulated();
        // A restart is one step that waits for the start on the virtual clock: a store that
        // does not answer fails it at once, as a step, instead of waiting for time to move.
        let agent = AgentConfig::default()
            .with_backoff(backoff)
            .with_update_status_interval(update_status)
            .failing_fast_at_start();
        let unit = UnitSetup { window, services, agent };
        Ok(TestApp {
            world: World { runtime, hooks, charm, clock, store, ledger, timeline, dir },
            setup: Setup { app, hook_deadline: self.hook_deadline, unit, seed: self.seed },
            units,
            started: false,
            checks: invariants::Checks::default(),
            user_invariants: Vec::new(),
        })
    }
}

/// One unit of the test application.
struct TestUnit {
    name: UnitName,
    view: Arc<UnitStore>,
    /// Its guests' clocks and randomness, kept across restarts.
    guest: GuestEnvironment,
    /// Every host call its hooks made, across restarts.
    calls: Arc<HostCallLog>,
    agent: Option<RunningAgent>,
    /// The unit of its latest agent, kept after a crash (its status and services).
    last: Option<Arc<Unit>>,
    /// The state directory of its machine, for a copy of a unit started elsewhere
    /// ([`TestApp::start_copy`]); `None`: the application's.
    machine: Option<PathBuf>,
}

/// A user invariant: a name and a check that says what is wrong.
type UserInvariant = (String, Box<dyn Fn(&TestApp) -> Result<(), String>>);

/// N units of one application running a real charm on the real host, in virtual time.
/// See the [module docs](self).
pub struct TestApp {
    world: World,
    setup: Setup,
    units: Vec<TestUnit>,
    /// Whether the agents were started (at the first step).
    started: bool,
    checks: invariants::Checks,
    user_invariants: Vec<UserInvariant>,
}

/// What every unit of a test application shares: the runtime it runs on, the charm, the
/// virtual clock, the store (and the ledger of what it acknowledged), the timeline, and
/// the directory its machines live in.
struct World {
    runtime: IdleRuntime,
    hooks: Arc<HookRuntime>,
    charm: Charm,
    clock: Arc<ManualClock>,
    store: Arc<dyn LeadershipStore>,
    ledger: Arc<Ledger>,
    timeline: Arc<Timeline>,
    dir: tempfile::TempDir,
}

/// The application and how every unit of it is set up, checked when it was built.
struct Setup {
    app: AppName,
    hook_deadline: Duration,
    unit: UnitSetup,
    /// The seed of every unit's guest randomness.
    seed: u64,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("app", &self.setup.app).field("units", &self.units.len()).finish()
    }
}

impl TestApp {
    /// A test application of `charm`: a charm crate directory (built for `wasm32-wasip2`
    /// with cargo) or a `.wasm` component.
    pub fn builder(charm: impl AsRef<Path>) -> TestAppBuilder {
        TestAppBuilder {
            charm: charm.as_ref().to_owned(),
            app: "app".into(),
            units: 3,
            window: crate::timing::DEFAULT_GUARANTEE_WINDOW,
            backoff: (Backoff::default().base(), Backoff::default().cap()),
            hook_deadline: crate::timing::DEFAULT_HOOK_DEADLINE,
            update_status_interval: crate::timing::DEFAULT_UPDATE_STATUS_INTERVAL,
            seed: 0,
            services: Vec::new(),
        }
    }

    // ----- steps -----

    /// Runs until nothing more can happen without the clock moving (starting the agents
    /// at the first step), then checks the invariants.
    pub fn settle(&mut self) {
        self.ensure_started();
        let hooks = self.world.hooks.clone();
        let guests: Vec<GuestEnvironment> = self.units.iter().map(|u| u.guest.clone()).collect();
        // Busy while a hook runs that is not just waiting for the clock to move (a guest's
        // sleep or timeout in virtual time).
        let busy = || hooks.hooks_running() > guests.iter().map(GuestEnvironment::waiting_on_clock).sum::<usize>();
        // A hook may run up to its (real-time) deadline; anything longer is a busy loop.
        let patience = self.setup.hook_deadline.saturating_add(SETTLE_SLACK);
        if let Err(waited) = self.world.runtime.wait_idle(busy, patience) {
            panic!(
                "TestApp: still busy after {waited:?} of real time at {:?} of virtual time (a loop that never \
                 waits for the clock?); timeline:\n{}",
                self.elapsed(),
                self.timeline_json()
            );
        }
        self.check_invariants();
    }

    /// Moves the clock on by `by`, stopping at every deadline on the way (renewals, expiries,
    /// retries), each time letting everything due run and checking the invariants.
    pub fn advance(&mut self, by: Duration) {
        self.settle();
        let target = self.world.clock.now() + by;
        while let Some(next) = self.world.clock.next_deadline().filter(|at| *at <= target) {
            self.world.clock.advance_to(next);
            self.settle();
        }
        self.world.clock.advance_to(target);
        self.settle();
    }

    /// A directed handover to unit `i` (as `charm-host elect`): the lease is reserved for
    /// it (for four windows, at most the 300 s a reservation may last) and the leader steps down for it. Returns its term once it
    /// leads; refused if `i`'s agent is down; an error if it does not lead after settling (a
    /// crashed leader's lease must expire first: [`Self::advance`]).
    pub fn elect(&mut self, i: usize) -> Result<u64, TestAppError> {
        self.settle();
        let unit = self.running(i)?.unit().name().clone();
        // Long enough for a crashed leader's lease to run out, within the allowed range.
        let within =
            (self.setup.unit.window.get() * 4).clamp(crate::timing::RESERVATION.min, crate::timing::RESERVATION.max);
        let store = self.world.store.clone();
        self.world
            .runtime
            .block_on(async { crate::handover::request(store.as_ref(), &unit, within).await })
            .map_err(|e| TestAppError::Step(e.to_string()))?;
        self.settle();
        match self.lease() {
            Some((leader, term)) if leader == i => Ok(term),
            _ => Err(TestAppError::Step(format!("{unit} does not lead yet; the lease is reserved for it"))),
        }
    }

    /// The leader steps down (`leader-deposed`, then revoke); another unit is elected.
    pub fn step_down(&mut self) -> Result<(), TestAppError> {
        self.settle();
        let leader = self.leader().ok_or_else(|| TestAppError::Step("no unit leads".into()))?;
        self.command(leader, AgentCommand::StepDown)?;
        self.settle();
        Ok(())
    }

    /// Stops unit `i` gracefully (`leader-deposed` if it leads, `stop`, revoke) and waits
    /// until its agent has ended.
    pub fn stop(&mut self, i: usize) -> Result<(), TestAppError> {
        self.settle();
        self.running(i)?;
        let Some(agent) = self.unit_mut(i)?.agent.take() else { return Ok(()) };
        let name = agent.unit().name().clone();
        let sent = self.world.runtime.block_on(agent.command(AgentCommand::Stop));
        let ended = self.world.runtime.block_on(agent.wait());
        self.settle();
        match (sent, ended) {
            (true, Ok(())) => Ok(()),
            (false, _) => Err(TestAppError::Step(format!("{name}'s agent had already ended"))),
            (_, Err(e)) => Err(TestAppError::Step(format!("{name}'s agent did not stop: {e}"))),
        }
    }

    /// Unit `i`'s agent crashes: it stops at once, runs nothing more, and its lease is not
    /// revoked (it expires).
    pub fn crash(&mut self, i: usize) -> Result<(), TestAppError> {
        self.settle();
        if let Some(agent) = self.unit_mut(i)?.agent.take() {
            agent.kill();
        }
        self.settle();
        Ok(())
    }

    /// Starts unit `i`'s agent again after a crash or a stop: a fresh process, with the
    /// unit's data directory and local state as they were. Refused if the agent's checks at
    /// start fail (its store cannot be reached: as `charm-host agent`, it does not start).
    pub fn restart(&mut self, i: usize) -> Result<(), TestAppError> {
        self.settle();
        if self.unit(i)?.agent.is_some() {
            return Err(TestAppError::Step(format!("{} is running", self.units[i].name)));
        }
        self.start_agent(i)?;
        self.settle();
        Ok(())
    }

    /// Starts a second agent of unit `i` on another machine (its own state directory, a
    /// copy of the unit's data directory): what a cloned or restored VM, or a machine
    /// re-provisioned while the old one still runs, does. It is another incarnation of the
    /// unit, so it must not lead while the first one's tenure lasts. Returns its index: it
    /// takes part in every step and invariant like any other unit (its name is the
    /// unit's).
    pub fn start_copy(&mut self, i: usize) -> Result<usize, TestAppError> {
        self.settle();
        let setup = |e: &dyn std::fmt::Display| TestAppError::Setup(e.to_string());
        let original = self.unit(i)?;
        let index = self.units.len();
        let machine = self.world.dir.path().join("machines").join(index.to_string());
        crate::state_dir::create_private_dirs(&machine).map_err(|e| setup(&e))?;
        let state = crate::state_dir::StateDir::new(&machine);
        state.prepare_unit(&original.name).map_err(|e| setup(&e))?;
        copy_dir(&self.state_dir().data_dir(&original.name), &state.data_dir(&original.name)).map_err(|e| setup(&e))?;
        let copy = TestUnit {
            name: original.name.clone(),
            view: Arc::new(UnitStore::new(self.world.store.clone(), self.world.ledger.clone())),
            guest: original.guest.clone(),
            calls: Arc::default(),
            agent: None,
            last: None,
            machine: Some(machine),
        };
        self.units.push(copy);
        self.start_agent(index)?;
        self.settle();
        Ok(index)
    }

    /// Unit `i` can no longer reach the store: its claims, reads and writes fail.
    pub fn partition(&mut self, i: usize) -> Result<(), TestAppError> {
        self.unit(i)?.view.set_partitioned(true);
        self.settle();
        Ok(())
    }

    /// Unit `i` reaches the store again.
    pub fn heal(&mut self, i: usize) -> Result<(), TestAppError> {
        self.unit(i)?.view.set_partitioned(false);
        self.settle();
        Ok(())
    }

    /// Writes a group of settings through the leader's hook tools, as an operator's
    /// `charm-host leader-set` does.
    pub fn set_settings<K: Into<String>, V: Into<String>>(
        &mut self,
        group: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), TestAppError> {
        self.settle();
        let group: Vec<(String, String)> = group.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let leader = self.leader().ok_or_else(|| TestAppError::Step("no unit leads".into()))?;
        let unit = self.running(leader)?.unit().clone();
        self.world.runtime.block_on(unit.leader_set(&group)).map_err(|e| TestAppError::Step(e.to_string()))?;
        self.settle();
        Ok(())
    }

    /// Adds an invariant, checked after every step from now on: `check` says what is wrong.
    pub fn invariant(&mut self, name: &str, check: impl Fn(&TestApp) -> Result<(), String> + 'static) {
        self.user_invariants.push((name.to_owned(), Box::new(check)));
        self.check_invariants();
    }

    // ----- internals -----

    fn unit_name(&self, i: usize) -> UnitName {
        match self.units.get(i) {
            Some(unit) => unit.name.clone(),
            None => panic!("TestApp: no unit {i}: the application has {}", self.units.len()),
        }
    }

    fn unit(&self, i: usize) -> Result<&TestUnit, TestAppError> {
        let count = self.units.len();
        self.units.get(i).ok_or_else(|| TestAppError::Step(format!("no unit {i}: the application has {count}")))
    }

    fn unit_mut(&mut self, i: usize) -> Result<&mut TestUnit, TestAppError> {
        let count = self.units.len();
        self.units.get_mut(i).ok_or_else(|| TestAppError::Step(format!("no unit {i}: the application has {count}")))
    }

    fn running(&self, i: usize) -> Result<&RunningAgent, TestAppError> {
        let unit = self.unit(i)?;
        unit.agent.as_ref().ok_or_else(|| TestAppError::Step(format!("{}'s agent is not running", unit.name)))
    }

    fn unit_events<T>(&self, i: usize, pick: impl Fn(EventKind) -> Option<T>) -> Vec<T> {
        let Some(name) = self.units.get(i).map(|u| u.name.clone()) else { return Vec::new() };
        self.timeline().into_iter().filter(|e| e.event.unit == name).filter_map(|e| pick(e.event.kind)).collect()
    }

    fn command(&mut self, i: usize, command: AgentCommand) -> Result<(), TestAppError> {
        let commands = self.running(i)?.commands().clone();
        self.world
            .runtime
            .block_on(commands.send(command))
            .map_err(|_| TestAppError::Step("the agent has ended".into()))
    }

    /// The lease as (unit index, term).
    fn lease(&self) -> Option<(usize, u64)> {
        let store = self.world.store.clone();
        let app = self.setup.app.clone();
        let lease = self.world.runtime.block_on(async move { store.lease(&app).await }).ok().flatten()?;
        // The unit whose agent's incarnation holds it (a unit's copies share its name).
        let holds = |u: &TestUnit| {
            u.last.as_ref().is_some_and(|unit| Some(unit.leadership().claimant().id()) == lease.incarnation)
        };
        let index =
            self.units.iter().position(holds).or_else(|| self.units.iter().position(|u| u.name == lease.holder))?;
        Some((index, lease.term))
    }

    fn ensure_started(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        for i in 0..self.units.len() {
            if let Err(e) = self.start_agent(i) {
                panic!("TestApp: {e}");
            }
        }
    }

    fn start_agent(&mut self, i: usize) -> Result<(), TestAppError> {
        let test_unit = self.unit(i)?;
        let state = test_unit.machine.as_ref().map_or_else(|| self.state_dir(), crate::state_dir::StateDir::new);
        // As `charm-host agent` does: the unit's lock, a new incarnation made from it, and
        // the agent's checks at start first (an agent that cannot start, its store
        // unreachable say, is a refused step, not an agent that dies).
        let events: Arc<dyn EventSink> = self.world.timeline.clone();
        let spec = UnitSpec::new(test_unit.name.clone(), state, test_unit.view.clone(), events)
            .with_setup(self.setup.unit.clone())
            .with_guest_environment(test_unit.guest.clone())
            .with_call_log(test_unit.calls.clone());
        let prepared = self.world.runtime.block_on(spec.prepare()).map_err(|e| TestAppError::Step(e.to_string()))?;
        let agent = prepared.start_on(self.world.runtime.handle(), self.world.hooks.clone(), self.world.charm.clone());
        let test_unit = self.unit_mut(i)?;
        test_unit.last = Some(agent.unit().clone());
        test_unit.agent = Some(agent);
        Ok(())
    }

    fn check_invariants(&mut self) {
        let mut checks = std::mem::take(&mut self.checks);
        let mut failures = checks.check(self);
        self.checks = checks;
        // Agents end only when stopped (or crashed) by the test: one that ended by itself
        // failed, and its unit would otherwise just go quiet.
        for unit in &mut self.units {
            if unit.agent.as_ref().is_some_and(RunningAgent::is_finished)
                && let Some(agent) = unit.agent.take()
            {
                let outcome = match self.world.runtime.block_on(agent.wait()) {
                    Ok(()) => "ended without being stopped".to_owned(),
                    Err(e) => e.to_string(),
                };
                failures.push(format!("{}'s agent {outcome}", unit.name));
            }
        }
        for (name, check) in &self.user_invariants {
            if let Err(why) = check(self) {
                failures.push(format!("{name}: {why}"));
            }
        }
        if !failures.is_empty() {
            panic!(
                "TestApp: invariant violated at {:?} of virtual time:\n  {}\ntimeline:\n{}",
                self.elapsed(),
                failures.join("\n  "),
                self.timeline_json()
            );
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for unit in &mut self.units {
            if let Some(agent) = unit.agent.take() {
                agent.kill();
            }
        }
    }
}

/// Copies the files of directory `from` into `to` (created if missing), recursively.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    crate::state_dir::create_private_dirs(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
