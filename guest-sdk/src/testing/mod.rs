//! # Testing a charm natively, with `cargo test`
//!
//! In a charm crate's own `cargo test` (any target but `wasm32`), the SDK's calls are
//! answered by test units instead of a host, so a hook runs as a plain Rust function:
//!
//! ```
//! use charm_sdk::testing::{Call, CallKind, Change, Hook, Unit};
//! use charm_sdk::{Charm, Error, Result, WorkloadStatus};
//!
//! struct Greeter;
//!
//! impl Charm for Greeter {
//!     fn leader_elected() -> Result<()> {
//!         if charm_sdk::is_leader()? && charm_sdk::leader_get("greeting")?.is_none() {
//!             charm_sdk::leader_set([("greeting", "hello")])?;
//!         }
//!         charm_sdk::status_set(WorkloadStatus::Active, "leading");
//!         Ok(())
//!     }
//! }
//!
//! // A leader writes its greeting once.
//! let unit = Unit::new("greeter/0").leader();
//! let run = unit.run::<Greeter>(Hook::LeaderElected);
//! assert_eq!(run.result, Ok(()));
//! assert_eq!(run.writes, vec![vec![("greeting".to_owned(), "hello".to_owned())]]);
//! assert_eq!(unit.settings()["greeting"], "hello");
//!
//! // Leadership lapses after is-leader said true, just before the write: the host refuses
//! // it, and so does the test unit.
//! let unit = Unit::new("greeter/1").leader();
//! unit.before(CallKind::LeaderSet, Change::LoseLeadership);
//! let run = unit.run::<Greeter>(Hook::LeaderElected);
//! assert_eq!(run.result, Err(Error::NotLeader));
//! assert!(run.calls.iter().any(|c| c.call == Call::IsLeader && c.answer.is_ok()));
//! assert!(unit.settings().is_empty());
//! ```
//!
//! Two forms:
//! - [`Unit`]: one unit; the test says which hook runs, scripts leadership and store
//!   faults (also between two calls of one hook), and reads everything the hook did.
//! - [`App`]: N units of one application sharing leadership, settings and unit data, each
//!   with the host's own hook queue, so the test says what happens (`elect`, `depose`, `stop`,
//!   `advance`) and [`App::settle`] runs the hooks that follows, coalesced and ordered as
//!   the host would.
//!
//! Fidelity: settings validation, unit names and the hook queue are the host's own code
//! (the `charm-rules` crate both use), not a second implementation.
//!
//! What it cannot catch: the hook runs in the test's process, so statics keep their values
//! between hooks (the host gives every hook a fresh instance), `std::fs` outside
//! [`crate::data_dir`] reaches the real filesystem, and there is no clock: leases, the
//! guarantee window and hook deadlines are the host's. `charm_host::testing::TestApp` runs
//! the real component on the real host in virtual time for those.

mod app;
pub(crate) mod backend;
mod world;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use charm_rules::names::UnitName;
use charm_rules::settings::Settings;

pub use app::App;
/// The hooks a test runs: the host's own list.
pub use charm_rules::HookKind as Hook;

use crate::bindings::juju::charm::services::ServiceStatus;
use crate::{Charm, LogLevel, Result, WorkloadStatus};
use world::{Service, UnitState, World};

/// A host call a hook made, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `unit-name`.
    UnitName,
    /// `application-name`.
    ApplicationName,
    /// `hook-name`.
    HookName,
    /// `log`.
    Log {
        /// The level.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// `status-set`.
    StatusSet {
        /// The status.
        status: WorkloadStatus,
        /// Its message.
        message: String,
    },
    /// `is-leader`.
    IsLeader,
    /// `leader-term`.
    LeaderTerm,
    /// `leader-get KEY`.
    LeaderGet {
        /// The key read.
        key: String,
    },
    /// `leader-get` of every key.
    LeaderGetAll,
    /// `leader-set`, one group.
    LeaderSet {
        /// The group as given.
        settings: Vec<(String, String)>,
    },
    /// `unit-set`, one group of the unit's own data.
    UnitSet {
        /// The group as given.
        settings: Vec<(String, String)>,
    },
    /// `unit-get UNIT KEY`.
    UnitGet {
        /// The unit read.
        unit: String,
        /// The key read.
        key: String,
    },
    /// `unit-get` of every key of a unit.
    UnitGetAll {
        /// The unit read.
        unit: String,
    },
    /// `units`.
    Units,
    /// `services.start`.
    ServiceStart {
        /// The service.
        name: String,
    },
    /// `services.stop`.
    ServiceStop {
        /// The service.
        name: String,
    },
    /// `services.status`.
    ServiceStatus {
        /// The service.
        name: String,
    },
}

/// A kind of [`Call`], to script a [`Change`] before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallKind {
    /// `unit-name`.
    UnitName,
    /// `application-name`.
    ApplicationName,
    /// `hook-name`.
    HookName,
    /// `log`.
    Log,
    /// `status-set`.
    StatusSet,
    /// `is-leader`.
    IsLeader,
    /// `leader-term`.
    LeaderTerm,
    /// `leader-get KEY`.
    LeaderGet,
    /// `leader-get` of every key.
    LeaderGetAll,
    /// `leader-set`.
    LeaderSet,
    /// `unit-set`.
    UnitSet,
    /// `unit-get UNIT KEY`.
    UnitGet,
    /// `unit-get` of every key of a unit.
    UnitGetAll,
    /// `units`.
    Units,
    /// `services.start`.
    ServiceStart,
    /// `services.stop`.
    ServiceStop,
    /// `services.status`.
    ServiceStatus,
}

impl CallKind {
    /// The call's name in the WIT contract, e.g. `leader-set`.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::UnitName => "unit-name",
            CallKind::ApplicationName => "application-name",
            CallKind::HookName => "hook-name",
            CallKind::Log => "log",
            CallKind::StatusSet => "status-set",
            CallKind::IsLeader => "is-leader",
            CallKind::LeaderTerm => "leader-term",
            CallKind::LeaderGet => "leader-get",
            CallKind::LeaderGetAll => "leader-get-all",
            CallKind::LeaderSet => "leader-set",
            CallKind::UnitSet => "unit-set",
            CallKind::UnitGet => "unit-get",
            CallKind::UnitGetAll => "unit-get-all",
            CallKind::Units => "units",
            CallKind::ServiceStart => "services.start",
            CallKind::ServiceStop => "services.stop",
            CallKind::ServiceStatus => "services.status",
        }
    }
}

impl Call {
    /// What kind of call this is.
    pub fn kind(&self) -> CallKind {
        match self {
            Call::UnitName => CallKind::UnitName,
            Call::ApplicationName => CallKind::ApplicationName,
            Call::HookName => CallKind::HookName,
            Call::Log { .. } => CallKind::Log,
            Call::StatusSet { .. } => CallKind::StatusSet,
            Call::IsLeader => CallKind::IsLeader,
            Call::LeaderTerm => CallKind::LeaderTerm,
            Call::LeaderGet { .. } => CallKind::LeaderGet,
            Call::LeaderGetAll => CallKind::LeaderGetAll,
            Call::LeaderSet { .. } => CallKind::LeaderSet,
            Call::UnitSet { .. } => CallKind::UnitSet,
            Call::UnitGet { .. } => CallKind::UnitGet,
            Call::UnitGetAll { .. } => CallKind::UnitGetAll,
            Call::Units => CallKind::Units,
            Call::ServiceStart { .. } => CallKind::ServiceStart,
            Call::ServiceStop { .. } => CallKind::ServiceStop,
            Call::ServiceStatus { .. } => CallKind::ServiceStatus,
        }
    }
}

/// What a host call answered, when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// The call returns nothing.
    Done,
    /// A name.
    Text(String),
    /// `is-leader`'s answer.
    Bool(bool),
    /// `leader-term`'s answer.
    Term(Option<u64>),
    /// `leader-get KEY`'s answer.
    Value(Option<String>),
    /// Every setting, sorted by key.
    Settings(Vec<(String, String)>),
    /// `units`'s answer, sorted.
    Units(Vec<String>),
    /// A service's status.
    Service(ServiceStatus),
}

/// One host call and its answer, in the order the hook made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCall {
    /// The call.
    pub call: Call,
    /// Its answer: what the SDK function returned to the charm (as [`Reply::Done`] for
    /// calls that return nothing).
    pub answer: Result<Reply>,
}

/// Something that happens to a unit's world, scripted with [`Unit::before`] or applied at
/// once with [`Unit::change`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The unit's leadership lapses (nobody leads until someone is elected); its
    /// leader-only services stop.
    LoseLeadership,
    /// The unit becomes leader at a new term; a previous leader loses leadership.
    GainLeadership,
    /// The store cannot be reached, for this reason: reads and writes fail with
    /// [`crate::Error::Unknown`], and so does `is-leader` on a minion (a leader's guarantee still
    /// holds).
    StoreUnreachable(String),
    /// The store can be reached again.
    StoreReachable,
}

/// What one hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct HookRun {
    /// The hook.
    pub hook: Hook,
    /// What the charm returned.
    pub result: Result<()>,
    /// Every host call, with its answer, in order.
    pub calls: Vec<HostCall>,
    /// The lines it logged.
    pub logs: Vec<(LogLevel, String)>,
    /// The statuses it set, in order.
    pub statuses: Vec<(WorkloadStatus, String)>,
    /// Each settings group the store accepted, as given.
    pub writes: Vec<Vec<(String, String)>>,
    /// Each group of the unit's own data the store accepted, as given.
    pub unit_writes: Vec<Vec<(String, String)>>,
    /// The units a `unit-data-changed` announced (empty for any other hook).
    pub changed: Vec<String>,
}

impl HookRun {
    /// The status the hook set last, if any: what the unit reports after it.
    pub fn status(&self) -> Option<(WorkloadStatus, &str)> {
        self.statuses.last().map(|(status, message)| (*status, message.as_str()))
    }

    /// The host calls the hook made, without their answers.
    pub fn call_kinds(&self) -> Vec<CallKind> {
        self.calls.iter().map(|c| c.call.kind()).collect()
    }
}

/// One test unit: its name, leadership, the application's settings (its own, or shared
/// through an [`App`]), its services, its data directory, and what its hooks did.
///
/// Built with [`Unit::new`] and its `with_*` methods; [`Unit::run`] runs one hook of a
/// charm on it. A unit built alone belongs to an application of one unit.
#[derive(Debug, Clone)]
pub struct Unit {
    state: Rc<RefCell<UnitState>>,
}

impl Unit {
    /// A minion named `name` (`application/number`), with empty settings, no services and
    /// a seed derived from its name.
    ///
    /// # Panics
    /// If `name` is not a valid unit name, with the host's reason.
    pub fn new(name: &str) -> Self {
        let world = Rc::new(RefCell::new(World::default()));
        Self::in_world(name, world, world::seed_for(name))
    }

    pub(crate) fn in_world(name: &str, world: Rc<RefCell<World>>, seed: u64) -> Self {
        let name = match UnitName::new(name) {
            Ok(name) => name,
            Err(e) => panic!("charm_sdk::testing::Unit::new: {e}"),
        };
        Self { state: Rc::new(RefCell::new(UnitState::new(name, world, seed))) }
    }

    /// This unit leads (at a new term).
    pub fn leader(self) -> Self {
        self.change(Change::GainLeadership);
        self
    }

    /// Writes `settings` to the application's settings before any hook runs (validated as
    /// a `leader-set` would be; a group that changes something counts as one version).
    ///
    /// # Panics
    /// If the group is not valid, with the host's reason.
    pub fn with_settings<K: Into<String>, V: Into<String>>(self, settings: impl IntoIterator<Item = (K, V)>) -> Self {
        let group: Vec<(String, String)> = settings.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let written = self.world().borrow_mut().write(&group);
        if let Err(reason) = written {
            panic!("charm_sdk::testing: invalid initial settings: {reason}");
        }
        self
    }

    /// `random_hex` draws from a stream seeded with `seed`.
    pub fn with_seed(self, seed: u64) -> Self {
        self.state.borrow_mut().reseed(seed);
        self
    }

    /// The operator configured a service `name` for this unit; a `leader_only` one starts
    /// only on the leader and stops when leadership is lost.
    pub fn with_service(self, name: &str, leader_only: bool) -> Self {
        let index = self.state.borrow().index;
        if let Some(services) = self.world().borrow_mut().services.get_mut(index) {
            services.insert(name.to_owned(), Service { leader_only, pid: None });
        }
        self
    }

    /// Scripts `change` to happen just before this unit's next call of kind `before`, in
    /// whichever hook makes it: leadership that moves between two calls of one hook.
    pub fn before(&self, before: CallKind, change: Change) -> &Self {
        self.state.borrow_mut().script(before, change);
        self
    }

    /// Applies `change` now, between hooks.
    pub fn change(&self, change: Change) -> &Self {
        self.state.borrow_mut().apply(change);
        self
    }

    /// Runs `hook` of charm `C` on this unit, now, and returns what it did. (The unit's
    /// queue is not consulted: any hook runs when asked; [`App`] runs them as the host
    /// would.)
    ///
    /// A `leader-elected` forgets the unit-data changes not yet announced (it sees
    /// everything); a `unit-data-changed` announces them (other units' changes since the
    /// last one, see [`Self::with_unit_data`]) and, if it fails, keeps them for the next.
    pub fn run<C: Charm>(&self, hook: Hook) -> HookRun {
        let changed = self.state.borrow_mut().begin(hook);
        let result = {
            let _installed = backend::install(self.state.clone());
            match hook {
                Hook::Install => C::install(),
                Hook::LeaderElected => C::leader_elected(),
                Hook::LeaderSettingsChanged => C::leader_settings_changed(),
                Hook::LeaderDeposed => C::leader_deposed(),
                Hook::UnitDataChanged => C::unit_data_changed(changed),
                Hook::UpdateStatus => C::update_status(),
                Hook::Stop => C::stop(),
            }
        };
        self.state.borrow_mut().finish(hook, result)
    }

    /// Unit `name` of this application is a member with `data` (validated as a `unit-set`
    /// would be), as if it had joined and written it: a change the leader has not heard of.
    ///
    /// # Panics
    /// If `name` is not a unit of this unit's application, or the data is not valid.
    pub fn with_unit_data<K: Into<String>, V: Into<String>>(
        self,
        name: &str,
        data: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let group: Vec<(String, String)> = data.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let unit = match UnitName::new(name) {
            Ok(unit) if unit.app() == self.state.borrow().name.app() => unit,
            Ok(_) => panic!("charm_sdk::testing: {name} is not a unit of {}", self.state.borrow().name.app()),
            Err(e) => panic!("charm_sdk::testing: {e}"),
        };
        let world = self.world();
        let mut world = world.borrow_mut();
        world.join(&unit.to_string());
        if let Err(reason) = world.write_unit_data(&unit.to_string(), &group) {
            panic!("charm_sdk::testing: invalid unit data for {name}: {reason}");
        }
        drop(world);
        self
    }

    /// `unit`'s data now (not a hook's snapshot); `None` if it is not a member.
    pub fn unit_data(&self, unit: &str) -> Option<Settings> {
        self.world().borrow().members.get(unit).cloned()
    }

    /// The application's members now, sorted.
    pub fn units(&self) -> Vec<String> {
        self.world().borrow().members.keys().cloned().collect()
    }

    /// The unit's name.
    pub fn name(&self) -> String {
        self.state.borrow().name.to_string()
    }

    /// True while this unit leads.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().is_leading()
    }

    /// The term of the application's current (or last) tenure; 0 before the first.
    pub fn term(&self) -> u64 {
        self.world().borrow().term
    }

    /// The application's settings now (not a hook's snapshot).
    pub fn settings(&self) -> Settings {
        self.world().borrow().settings.clone()
    }

    /// The settings' version: one more for every write that changed them.
    pub fn settings_version(&self) -> u64 {
        self.world().borrow().version
    }

    /// The status the unit reports: the last one any of its hooks set.
    pub fn status(&self) -> Option<(WorkloadStatus, String)> {
        self.state.borrow().statuses.last().cloned()
    }

    /// Every status any of its hooks set, in order.
    pub fn status_history(&self) -> Vec<(WorkloadStatus, String)> {
        self.state.borrow().statuses.clone()
    }

    /// A configured service's status now.
    pub fn service(&self, name: &str) -> Option<ServiceStatus> {
        self.state.borrow().service(name)
    }

    /// The unit's data directory ([`crate::data_dir`] inside its hooks); removed when the
    /// last clone of the unit is dropped.
    pub fn data_dir(&self) -> PathBuf {
        self.state.borrow().data_dir.path().to_owned()
    }

    pub(crate) fn world(&self) -> Rc<RefCell<World>> {
        self.state.borrow().world.clone()
    }
}
