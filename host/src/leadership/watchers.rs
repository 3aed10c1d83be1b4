//! Change notification shared by the stores: per application, a settings-version channel,
//! a unit-data-revision channel and a lease-change counter.
//!
//! Invariant: a version's or revision's value only grows (a lease-change counter only
//! moves), and it is updated after the change it announces is committed, so a woken
//! watcher always reads the change (or a later one).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::names::AppName;

#[derive(Debug, Default)]
pub(crate) struct Watchers {
    settings: Counters,
    unit_data: Counters,
    leases: Counters,
}

impl Watchers {
    /// A receiver of `app`'s settings version, starting from the version `read_current`
    /// returns (see [`Counters::subscribe`]).
    pub fn settings(&self, app: &AppName, read_current: impl FnOnce() -> u64) -> watch::Receiver<u64> {
        self.settings.subscribe(app, read_current)
    }

    /// Announces that `app`'s settings reached `version`.
    pub fn settings_changed(&self, app: &AppName, version: u64) {
        self.settings.raise(app, version);
    }

    /// The applications whose settings someone watches.
    pub fn watched_apps(&self) -> Vec<AppName> {
        self.settings.apps()
    }

    /// A receiver of `app`'s unit-data revision, starting from `read_current`'s.
    pub fn unit_data(&self, app: &AppName, read_current: impl FnOnce() -> u64) -> watch::Receiver<u64> {
        self.unit_data.subscribe(app, read_current)
    }

    /// Announces that `app`'s unit data reached `revision`.
    pub fn unit_data_changed(&self, app: &AppName, revision: u64) {
        self.unit_data.raise(app, revision);
    }

    /// The applications whose unit data someone watches.
    pub fn watched_unit_data(&self) -> Vec<AppName> {
        self.unit_data.apps()
    }

    /// Whether a receiver of `app`'s unit-data revision is still held.
    pub fn unit_data_watched(&self, app: &AppName) -> bool {
        self.unit_data.held(app)
    }

    /// A receiver of `app`'s lease-change counter.
    pub fn leases(&self, app: &AppName) -> watch::Receiver<u64> {
        self.leases.subscribe(app, || 0)
    }

    /// Announces that `app`'s lease changed hands, or was pinned, unpinned or reserved.
    pub fn leases_changed(&self, app: &AppName) {
        self.leases.bump(Some(app));
    }

    /// Announces that any lease may have changed (a store that cannot tell which).
    pub fn all_leases_changed(&self) {
        self.leases.bump(None);
    }
}

/// One growing counter per application.
#[derive(Debug, Default)]
struct Counters(Mutex<HashMap<AppName, watch::Sender<u64>>>);

impl Counters {
    /// A receiver of `app`'s counter, starting from the value `read_current` returns. It
    /// runs while no change can be announced, so a change that commits around the
    /// subscription is either in that value or announced to the new receiver.
    fn subscribe(&self, app: &AppName, read_current: impl FnOnce() -> u64) -> watch::Receiver<u64> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let current = read_current();
        let sender = map.entry(app.clone()).or_insert_with(|| watch::channel(current).0);
        sender.send_if_modified(|v| raise(v, current));
        sender.subscribe()
    }

    fn raise(&self, app: &AppName, to: u64) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = map.get(app) {
            sender.send_if_modified(|v| raise(v, to));
        }
    }

    /// Moves `app`'s counter (every application's with `None`), whatever its value: a
    /// counter of changes, not a version (it wraps, and every move is announced).
    fn bump(&self, app: Option<&AppName>) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bump = |sender: &watch::Sender<u64>| sender.send_modify(|n| *n = n.wrapping_add(1));
        match app {
            Some(app) => map.get(app).into_iter().for_each(bump),
            None => map.values().for_each(bump),
        }
    }

    fn held(&self, app: &AppName) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(app).is_some_and(|s| s.receiver_count() > 0)
    }

    fn apps(&self) -> Vec<AppName> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }
}

fn raise(value: &mut u64, to: u64) -> bool {
    if to > *value {
        *value = to;
        true
    } else {
        false
    }
}
