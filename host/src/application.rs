//! Runs the units of one application in this process: for each unit, a claim loop that
//! keeps its leadership tracker fresh, and a unit task that decides which hook runs next.
//!
//! Hook order per unit (the guarantees charms rely on):
//! - `install` runs first and alone; nothing leadership-related runs before it succeeds
//!   (a unit whose `install` failed runs nothing more).
//! - Then `leader-elected` if the unit is leader, else `leader-settings-changed`.
//! - `leader-elected` runs once per tenure (term), and only if the unit still holds that
//!   term when the hook would start; a stale one is dropped.
//! - `leader-settings-changed` runs each time the unit becomes a minion, and after the
//!   leader changes the settings; changes while a hook runs coalesce into one more hook.
//!   The leader is not told of settings changes.
//!
//! Claims run on their own task, so a long hook never delays a renewal.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::events::{Event, EventSink};
use crate::hooks::HookKind;
use crate::leadership::LeadershipStore;
use crate::names::{AppName, UnitName};
use crate::runtime::{Charm, HookRuntime};
use crate::tracker::{LeadershipTracker, Refresh};
use crate::unit::Unit;

/// How one application's units are set up.
#[derive(Debug, Clone)]
pub struct ApplicationConfig {
    /// The application's name.
    pub app: AppName,
    /// How many units to run, numbered from 0.
    pub units: u32,
    /// The `is-leader` guarantee window.
    pub guarantee_window: Duration,
    /// Each unit's data directory is `data_root/<app>-<number>`.
    pub data_root: PathBuf,
}

/// Why an application could not be set up.
#[derive(Debug, thiserror::Error)]
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
}

/// The leadership state a unit's hooks act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// No claim has been answered yet.
    Unknown,
    /// Leader at this term, with the guarantee window ahead.
    Leader(u64),
    /// Not leader, or leadership cannot be guaranteed.
    Minion,
}

/// The units of one application, sharing one store and one compiled charm.
pub struct Application {
    runtime: Arc<HookRuntime>,
    charm: Charm,
    units: Vec<Arc<Unit>>,
}

impl Application {
    /// Creates the units (and their data directories); nothing runs until [`Self::run`].
    pub fn new(
        runtime: Arc<HookRuntime>,
        charm: Charm,
        store: Arc<dyn LeadershipStore>,
        events: Arc<dyn EventSink>,
        config: &ApplicationConfig,
    ) -> Result<Self, ApplicationError> {
        if config.guarantee_window < Duration::from_millis(500) || config.guarantee_window > Duration::from_secs(150) {
            return Err(ApplicationError::Config(format!(
                "the guarantee window must be between 500ms and 150s, not {:?}",
                config.guarantee_window
            )));
        }
        let units = (0..config.units)
            .map(|number| {
                let name = UnitName::from_parts(config.app.clone(), number);
                let data_dir = config.data_root.join(format!("{}-{number}", config.app));
                let tracker = LeadershipTracker::new(name.clone(), store.clone(), config.guarantee_window);
                Unit::new(name.clone(), data_dir, tracker, events.clone())
                    .map(Arc::new)
                    .map_err(|source| ApplicationError::DataDir { unit: name, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { runtime, charm, units })
    }

    /// The units, in order of their numbers.
    pub fn units(&self) -> &[Arc<Unit>] {
        &self.units
    }

    /// Runs every unit until `shutdown` completes; hooks still running then are stopped.
    /// Leadership stays held (until it expires) unless [`Self::release_leadership`] follows.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        for unit in &self.units {
            let (role_tx, role_rx) = watch::channel(Role::Unknown);
            tasks.spawn(keep_claiming(unit.clone(), role_tx));
            tasks.spawn(drive_unit(self.runtime.clone(), self.charm.clone(), unit.clone(), role_rx));
        }
        shutdown.await;
        tasks.shutdown().await;
    }

    /// Every unit gives up the leadership it holds, so that a successor (in this process or
    /// a later run on the same store) need not wait for the lease to expire.
    pub fn release_leadership(&self) {
        for unit in &self.units {
            if let Err(err) = unit.tracker().release() {
                tracing::warn!(unit = %unit.name(), "could not give up leadership: {err}");
            }
        }
    }
}

/// Refreshes the unit's claim every renew interval and publishes its role.
async fn keep_claiming(unit: Arc<Unit>, role_tx: watch::Sender<Role>) {
    let tracker = unit.tracker();
    loop {
        let role = match tracker.refresh() {
            Refresh::Leader { term, .. } => Role::Leader(term),
            Refresh::Minion => Role::Minion,
            // The store failed: keep acting as leader only while the guarantee lasts.
            Refresh::Failed => match (*role_tx.borrow(), tracker.is_leader()) {
                (Role::Leader(term), Ok(true)) => Role::Leader(term),
                _ => Role::Minion,
            },
        };
        let previous = *role_tx.borrow();
        role_tx.send_if_modified(|current| std::mem::replace(current, role) != role);
        if previous != role {
            let (leader, term) = match role {
                Role::Leader(term) => (true, Some(term)),
                _ => (false, None),
            };
            unit.emit(Event::Leadership { unit: unit.name().clone(), leader, term });
        }
        tokio::time::sleep(tracker.renew_interval()).await;
    }
}

/// Runs the unit's hooks in the order the module docs give.
async fn drive_unit(runtime: Arc<HookRuntime>, charm: Charm, unit: Arc<Unit>, mut role_rx: watch::Receiver<Role>) {
    if runtime.run_hook(&charm, &unit, HookKind::Install).await.result.is_err() {
        return;
    }
    let mut settings_rx = unit.store().watch_settings(unit.name().app());
    let mut acted_on = Role::Unknown;
    let mut settings_pending = false;
    loop {
        let role = *role_rx.borrow_and_update();
        if role != acted_on {
            acted_on = role;
            match role {
                Role::Leader(term) => {
                    settings_pending = false;
                    if unit.tracker().held_term() == Some(term) {
                        runtime.run_hook(&charm, &unit, HookKind::LeaderElected).await;
                    }
                }
                Role::Minion => settings_pending = true,
                Role::Unknown => {}
            }
            continue;
        }
        match role {
            Role::Minion if settings_pending => {
                // Everything announced so far is in the snapshot this hook will read.
                settings_rx.borrow_and_update();
                settings_pending = false;
                runtime.run_hook(&charm, &unit, HookKind::LeaderSettingsChanged).await;
                continue;
            }
            // The leader is not told of settings changes (they are its own writes).
            Role::Leader(_) => settings_pending = false,
            _ => {}
        }
        tokio::select! {
            changed = role_rx.changed() => if changed.is_err() { return },
            changed = settings_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                // Any number of changes since the last hook make one more hook.
                settings_pending = true;
            }
        }
    }
}
