//! A unit's side of unit data: its own bag (written under its incarnation), and, while it
//! leads, a mirror of every unit's data kept from the store's change feed, with the units
//! changed since the leader last heard.
//!
//! Invariants:
//! - **Only what changed is read.** The mirror asks the store for the changes after the
//!   revision it holds ([`UnitDataStore::unit_data_since`]); a full answer (the store does
//!   not remember that far back) is compared with what the mirror held, so a unit that
//!   changed or left meanwhile is still named.
//! - **Every change is named at least once.** Each unit a refresh finds changed (another
//!   unit: a leader knows its own writes) joins the pending set, which only
//!   [`UnitDataHandle::take_pending`] empties, for the hook that announces them; a failed
//!   hook gives them back ([`UnitDataHandle::restore_pending`]). `leader-elected` sees
//!   everything, so the driver clears the set when one starts.
//! - **Snapshots are cheap and stay put.** A hook's snapshot is the mirror's map behind an
//!   `Arc`; a refresh while a hook holds one copies the map once (copy-on-write) and leaves
//!   the hook's view as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::leadership::{Claimant, LeadershipStore, StoreError, Timestamp, UnitData, UnitDataChanges, UnitWriteError};
use crate::names::UnitName;

/// Every member's data, by unit.
pub type UnitDataMap = BTreeMap<UnitName, UnitData>;

/// A unit's access to unit data: its own writes and reads, and the leader's mirror. Cheap
/// to clone.
#[derive(Clone)]
pub struct UnitDataHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UnitDataHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitDataHandle").field("claimant", &self.shared.claimant).finish_non_exhaustive()
    }
}

struct Shared {
    claimant: Claimant,
    store: Arc<dyn LeadershipStore>,
    mirror: Mutex<Mirror>,
    /// One refresh at a time (the driver's and a hook's first read may meet).
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Mirror {
    loaded: bool,
    revision: u64,
    units: Arc<UnitDataMap>,
    pending: BTreeSet<UnitName>,
}

impl Mirror {
    /// Applies the store's answer; every unit it changed but `me` becomes pending (none on
    /// the first load: the leader's `leader-elected` reads everything).
    fn apply(&mut self, changes: UnitDataChanges, me: &UnitName) {
        let announce = self.loaded;
        let units = Arc::make_mut(&mut self.units);
        if changes.full {
            let listed: UnitDataMap = changes.units.into_iter().filter_map(|(u, d)| Some((u, d?))).collect();
            if announce {
                let gone = units.keys().filter(|u| !listed.contains_key(*u));
                let changed = listed.iter().filter(|(u, d)| units.get(*u) != Some(*d)).map(|(u, _)| u);
                let named: Vec<UnitName> = gone.chain(changed).cloned().collect();
                self.pending.extend(named);
            }
            *units = listed;
        } else {
            for (unit, data) in changes.units {
                match data {
                    Some(data) => units.insert(unit.clone(), data),
                    None => units.remove(&unit),
                };
                if announce {
                    self.pending.insert(unit);
                }
            }
        }
        self.pending.remove(me);
        // A full answer is the store's word; an incremental one may come from a mirror
        // that trails an earlier full answer (etcd), whose revision stays the floor.
        self.revision = if changes.full { changes.revision } else { self.revision.max(changes.revision) };
        self.loaded = true;
    }
}

impl UnitDataHandle {
    /// `claimant`'s unit data in `store`.
    pub fn new(claimant: Claimant, store: Arc<dyn LeadershipStore>) -> Self {
        let mirror = Mutex::new(Mirror::default());
        Self { shared: Arc::new(Shared { claimant, store, mirror, refreshing: tokio::sync::Mutex::new(()) }) }
    }

    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        self.shared.mirror.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unit(&self) -> &UnitName {
        self.shared.claimant.unit()
    }

    /// Makes the unit a member, this incarnation its data's only writer (see
    /// [`UnitDataStore::join_unit`](crate::leadership::UnitDataStore::join_unit)).
    pub async fn join(&self) -> Result<UnitData, StoreError> {
        self.shared.store.join_unit(&self.shared.claimant).await
    }

    /// Writes a group of the unit's own data (see
    /// [`UnitDataStore::write_unit_data`](crate::leadership::UnitDataStore::write_unit_data)).
    pub async fn set_by(
        &self,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<UnitData, UnitWriteError> {
        self.shared.store.write_unit_data(&self.shared.claimant, group, apply_by).await
    }

    /// The unit's own data as the store has it now (`None`: not a member).
    pub async fn read_own(&self) -> Result<Option<UnitData>, StoreError> {
        self.shared.store.read_unit_data(self.unit()).await
    }

    /// `unit`'s data as the store has it now (an operator's read; a hook reads a snapshot).
    pub async fn read(&self, unit: &UnitName) -> Result<Option<UnitData>, StoreError> {
        self.shared.store.read_unit_data(unit).await
    }

    /// A receiver that sees the application's unit-data revision each time it changes.
    /// Only the leader holds one: on etcd it is a watch of the application's unit data.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.store.watch_unit_data(self.unit().app())
    }

    /// Brings the mirror up to the store's change feed: reads only the units changed since
    /// the revision it holds, and names them pending.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.shared.refreshing.lock().await;
        let since = {
            let mirror = self.mirror();
            if mirror.loaded { mirror.revision } else { 0 }
        };
        let changes = self.shared.store.unit_data_since(self.unit().app(), since).await?;
        self.mirror().apply(changes, self.unit());
        Ok(())
    }

    /// Every member's data as of the last refresh (refreshed first if it never was).
    pub async fn snapshot(&self) -> Result<Arc<UnitDataMap>, StoreError> {
        if !self.mirror().loaded {
            self.refresh().await?;
        }
        Ok(self.mirror().units.clone())
    }

    /// True while some change is not yet announced.
    pub fn has_pending(&self) -> bool {
        !self.mirror().pending.is_empty()
    }

    /// The units changed since the last hook that announced changes: they are now that
    /// hook's to announce.
    pub fn take_pending(&self) -> Vec<UnitName> {
        std::mem::take(&mut self.mirror().pending).into_iter().collect()
    }

    /// Gives back units a hook that failed was to announce.
    pub fn restore_pending(&self, units: impl IntoIterator<Item = UnitName>) {
        self.mirror().pending.extend(units);
    }

    /// Forgets what was pending: a `leader-elected` that reads everything starts.
    pub fn clear_pending(&self) {
        self.mirror().pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leadership::MemoryStore;
    use crate::settings::Settings;

    fn unit(name: &str) -> UnitName {
        name.parse().unwrap()
    }

    fn set(key: &str, value: &str) -> Vec<(String, String)> {
        vec![(key.to_owned(), value.to_owned())]
    }

    #[tokio::test]
    async fn the_mirror_names_what_changed_except_its_own_unit() {
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
        let units: Vec<UnitDataHandle> =
            (0..3).map(|n| UnitDataHandle::new(Claimant::fresh(unit(&format!("a/{n}"))), store.clone())).collect();
        for handle in &units {
            handle.join().await.unwrap();
        }
        let leader = &units[0];
        let first = leader.snapshot().await.unwrap();
        assert_eq!(first.len(), 3);
        assert!(!leader.has_pending(), "the first load is leader-elected's to read");
        units[1].set_by(&set("addr", "x"), None).await.unwrap();
        leader.set_by(&set("addr", "me"), None).await.unwrap();
        store.remove_unit(&unit("a/2")).await.unwrap();
        leader.refresh().await.unwrap();
        assert_eq!(leader.take_pending(), [unit("a/1"), unit("a/2")], "its own write is not news to it");
        assert_eq!(first.len(), 3, "a snapshot taken before stays as it was");
        let now = leader.snapshot().await.unwrap();
        assert_eq!(now.keys().cloned().collect::<Vec<_>>(), [unit("a/0"), unit("a/1")]);
        assert_eq!(now[&unit("a/1")].values.as_ref(), &Settings::from([("addr".into(), "x".into())]));
        leader.restore_pending([unit("a/1")]);
        assert!(leader.has_pending(), "a failed hook gives its units back");
        leader.clear_pending();
        assert!(!leader.has_pending());
    }

    #[test]
    fn a_full_answer_is_compared_with_what_the_mirror_held() {
        let data = |v: &str| UnitData { version: 1, values: Arc::new(Settings::from([("k".into(), v.into())])) };
        let mut mirror = Mirror::default();
        let listing = |units: Vec<(&str, &str)>, revision| UnitDataChanges {
            revision,
            full: true,
            units: units.into_iter().map(|(u, v)| (unit(u), Some(data(v)))).collect(),
        };
        mirror.apply(listing(vec![("a/0", "x"), ("a/1", "y"), ("a/2", "z")], 5), &unit("a/0"));
        assert!(mirror.pending.is_empty());
        mirror.apply(listing(vec![("a/0", "changed"), ("a/1", "y"), ("a/3", "new")], 9), &unit("a/0"));
        assert_eq!(mirror.pending.iter().cloned().collect::<Vec<_>>(), [unit("a/2"), unit("a/3")]);
        assert_eq!(mirror.revision, 9);
    }
}
