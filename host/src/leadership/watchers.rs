//! Change notification shared by the stores: a settings-version channel per application
//! and one counter for lease changes.
//!
//! Invariant: a channel's value only grows, and it is updated after the change it
//! announces is committed, so a woken watcher always reads the change (or a later one).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::names::AppName;

#[derive(Debug)]
pub(crate) struct Watchers {
    settings: Mutex<HashMap<AppName, watch::Sender<u64>>>,
    leases: watch::Sender<u64>,
}

impl Default for Watchers {
    fn default() -> Self {
        Self { settings: Mutex::new(HashMap::new()), leases: watch::channel(0).0 }
    }
}

impl Watchers {
    /// A receiver of `app`'s settings version, starting from the version `read_current`
    /// returns. It runs while no change can be announced, so a write that commits around
    /// the subscription is either in that version or announced to the new receiver.
    pub fn settings(&self, app: &AppName, read_current: impl FnOnce() -> u64) -> watch::Receiver<u64> {
        let mut map = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        let current = read_current();
        let sender = map.entry(app.clone()).or_insert_with(|| watch::channel(current).0);
        sender.send_if_modified(|v| raise(v, current));
        sender.subscribe()
    }

    /// Announces that `app`'s settings reached `version`.
    pub fn settings_changed(&self, app: &AppName, version: u64) {
        let map = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = map.get(app) {
            sender.send_if_modified(|v| raise(v, version));
        }
    }

    /// The applications someone watches.
    pub fn watched_apps(&self) -> Vec<AppName> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// A receiver of the lease-change counter.
    pub fn leases(&self) -> watch::Receiver<u64> {
        self.leases.subscribe()
    }

    /// Announces that some lease changed hands or was pinned or unpinned.
    pub fn leases_changed(&self) {
        self.leases.send_modify(|n| *n += 1);
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
