//! An in-memory [`LeadershipStore`]: the fastest, for tests and for applications whose units
//! all live in one process and need no state after it exits.
//!
//! Invariants: one mutex guards every application's lease record, pins, bucket and unit
//! data, so each operation is a single critical section; the store clock is read inside it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::history::{self, LostRenewals, Release, Tenure, TenureEnd};
use super::rules::{self, LeaseRecord};
use super::unit_data::{self, Member, Owner, UnitBook, UnitData, UnitDataChanges, UnitDataStore, UnitWriteError};
use super::watchers::Watchers;
use super::{
    Claim, Claimant, Clock, LeadershipStore, Lease, LeaseError, MonotonicClock, StoreError, Timestamp, WriteError,
    validate_entity,
};
use crate::names::{AppName, UnitName};
use crate::settings::{Settings, SettingsSnapshot, SettingsWrite};

/// Leases and settings held in this process's memory.
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    apps: Mutex<HashMap<AppName, AppState>>,
    watchers: Watchers,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct AppState {
    lease: Option<LeaseRecord>,
    pins: BTreeSet<String>,
    settings: SettingsSnapshot,
    /// Its tenures, oldest first (at most [`history::HISTORY_LIMIT`]).
    history: VecDeque<Tenure>,
    /// Its members and their data; revisions count from 1.
    units: UnitBook,
}

impl AppState {
    /// Records the grant of `granted` over the lease record before it (see [`history`]).
    fn record_grant(&mut self, previous: Option<&LeaseRecord>, granted: &LeaseRecord, clock: &dyn Clock) {
        let Some(grant) = history::on_grant(previous, granted, clock) else { return };
        if let Some((term, at)) = grant.expired
            && let Some(tenure) = self.tenure(term)
        {
            tenure.end(at, TenureEnd::Expired);
        }
        self.history.push_back(grant.started);
        while self.history.front().is_some_and(|t| t.term < grant.oldest_kept) {
            self.history.pop_front();
        }
    }

    fn tenure(&mut self, term: u64) -> Option<&mut Tenure> {
        self.history.iter_mut().rev().find(|t| t.term == term)
    }
}

impl AppState {
    fn pinned(&self) -> bool {
        !self.pins.is_empty()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the machine's monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(MonotonicClock))
    }

    /// An empty store judging expiry by `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self { clock, apps: Mutex::new(HashMap::new()), watchers: Watchers::default() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AppName, AppState>> {
        // Every critical section mutates only after all its checks, so a panic cannot leave
        // a half-applied change behind and a poisoned lock is safe to reuse.
        self.apps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl LeadershipStore for MemoryStore {
    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    async fn claim(&self, claimant: &Claimant, duration: Duration) -> Result<Claim, LeaseError> {
        let start = self.clock.now();
        let mut apps = self.lock();
        let app = apps.entry(claimant.unit().app().clone()).or_default();
        let (claim, record) =
            rules::claim(app.lease.as_ref(), app.pinned(), claimant, duration, (start, self.clock.now()), None)?;
        let new_holder = app.lease.as_ref().is_none_or(|r| r.term != record.term);
        let previous = app.lease.replace(record.clone());
        app.record_grant(previous.as_ref(), &record, self.clock.as_ref());
        drop(apps);
        if new_holder {
            self.watchers.leases_changed(claimant.unit().app());
        }
        Ok(claim)
    }

    async fn revoke(&self, claimant: &Claimant, why: Release) -> Result<(), LeaseError> {
        let mut apps = self.lock();
        let Some(app) = apps.get_mut(claimant.unit().app()) else { return Ok(()) };
        if let Some(record) = rules::revoke(app.lease.as_ref(), app.pinned(), claimant, self.clock.now())? {
            let at = self.clock.wall_now();
            if let Some(tenure) = app.tenure(record.term) {
                tenure.end(at, why.into());
            }
            app.lease = Some(record);
            drop(apps);
            self.watchers.leases_changed(claimant.unit().app());
        }
        Ok(())
    }

    async fn history(&self, app: Option<&AppName>, limit: usize) -> Result<Vec<Tenure>, LeaseError> {
        let apps = self.lock();
        let mut names: Vec<&AppName> = apps.keys().filter(|name| app.is_none_or(|app| app == *name)).collect();
        names.sort();
        Ok(names.into_iter().flat_map(|name| apps[name].history.iter().rev().take(limit).cloned()).collect())
    }

    async fn mark_lost_renewals(&self, unit: &UnitName, term: u64) -> Result<LostRenewals, LeaseError> {
        let mut apps = self.lock();
        let tenure = apps.get_mut(unit.app()).and_then(|app| app.tenure(term)).filter(|t| t.unit == *unit);
        Ok(tenure.map_or(LostRenewals::NotApplicable, Tenure::mark_lost_renewals))
    }

    async fn reserve(&self, unit: &UnitName, duration: Duration) -> Result<(), LeaseError> {
        super::validate_duration(duration)?;
        let until = self.clock.now() + duration;
        let mut apps = self.lock();
        let app = apps.entry(unit.app().clone()).or_default();
        app.lease = Some(rules::reserve(app.lease.as_ref(), unit, until));
        drop(apps);
        self.watchers.leases_changed(unit.app());
        Ok(())
    }

    async fn reservation(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError> {
        let now = self.clock.now();
        let apps = self.lock();
        let reserved = apps.get(app).and_then(|a| a.lease.as_ref()).and_then(|l| l.reserved.as_ref());
        Ok(reserved.filter(|r| r.until > now).map(|r| r.unit.clone()))
    }

    async fn pin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        validate_entity(entity)?;
        let inserted = self.lock().entry(app.clone()).or_default().pins.insert(entity.to_owned());
        if inserted {
            self.watchers.leases_changed(app);
        }
        Ok(())
    }

    async fn unpin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        validate_entity(entity)?;
        let removed = self.lock().get_mut(app).is_some_and(|a| a.pins.remove(entity));
        if removed {
            self.watchers.leases_changed(app);
        }
        Ok(())
    }

    async fn pins(&self) -> Result<BTreeMap<AppName, Vec<String>>, LeaseError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(_, a)| a.pinned())
            .map(|(name, a)| (name.clone(), a.pins.iter().cloned().collect()))
            .collect())
    }

    async fn lease(&self, app: &AppName) -> Result<Option<Lease>, LeaseError> {
        let now = self.clock.now();
        Ok(self.lock().get(app).and_then(|a| a.lease.as_ref()?.live(a.pinned(), now)))
    }

    async fn last_term(&self, app: &AppName) -> Result<u64, LeaseError> {
        Ok(self.lock().get(app).and_then(|a| a.lease.as_ref()).map_or(0, |l| l.term))
    }

    async fn leaders(&self) -> Result<BTreeMap<AppName, UnitName>, LeaseError> {
        let now = self.clock.now();
        Ok(self
            .lock()
            .iter()
            .filter_map(|(name, a)| Some((name.clone(), a.lease.as_ref()?.live(a.pinned(), now)?.holder)))
            .collect())
    }

    async fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, StoreError> {
        Ok(self.lock().get(app).map(|a| a.settings.clone()).unwrap_or_default())
    }

    async fn write_settings_by(
        &self,
        writer: &Claimant,
        term: u64,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<SettingsSnapshot, WriteError> {
        super::check_apply_by(apply_by)?;
        let mut apps = self.lock();
        let app = apps.entry(writer.unit().app().clone()).or_default();
        rules::check_fence(app.lease.as_ref(), app.pinned(), writer, term, self.clock.now())?;
        let write = SettingsWrite::validate(group, &app.settings.values)?;
        if write.is_noop_on(&app.settings.values) {
            return Ok(app.settings.clone());
        }
        let mut values: Settings = (*app.settings.values).clone();
        write.apply_to(&mut values);
        app.settings = SettingsSnapshot { version: app.settings.version + 1, values: Arc::new(values) };
        let snapshot = app.settings.clone();
        drop(apps);
        self.watchers.settings_changed(writer.unit().app(), snapshot.version);
        Ok(snapshot)
    }

    fn watch_settings(&self, app: &AppName) -> watch::Receiver<u64> {
        self.watchers.settings(app, || self.lock().get(app).map_or(0, |a| a.settings.version))
    }

    fn watch_leases(&self, app: &AppName) -> watch::Receiver<u64> {
        self.watchers.leases(app)
    }
}

#[async_trait::async_trait]
impl UnitDataStore for MemoryStore {
    async fn join_unit(&self, claimant: &Claimant) -> Result<UnitData, StoreError> {
        let unit = claimant.unit();
        let mut apps = self.lock();
        let book = &mut apps.entry(unit.app().clone()).or_default().units;
        let owner = Owner::of(claimant);
        if let Some(member) = book.member(unit) {
            let data = member.data.clone();
            book.set_owner(unit, owner);
            return Ok(data);
        }
        let revision = book.next_revision();
        book.record(unit, Some(Member { owner: Some(owner), data: UnitData::default() }), revision);
        drop(apps);
        self.watchers.unit_data_changed(unit.app(), revision);
        Ok(UnitData::default())
    }

    async fn write_unit_data(
        &self,
        writer: &Claimant,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<UnitData, UnitWriteError> {
        if super::check_apply_by(apply_by).is_err() {
            return Err(UnitWriteError::TooLate);
        }
        let unit = writer.unit();
        let mut apps = self.lock();
        let book = &mut apps.entry(unit.app().clone()).or_default().units;
        let member = book.member(unit);
        unit_data::check_writer(member.and_then(|m| m.owner.as_ref()), writer)?;
        let Some(member) = member.cloned() else { return Err(UnitWriteError::NotMember { unit: unit.clone() }) };
        let Some(data) = unit_data::apply_group(&member.data, group)? else { return Ok(member.data) };
        let revision = book.next_revision();
        book.record(unit, Some(Member { data: data.clone(), ..member }), revision);
        drop(apps);
        self.watchers.unit_data_changed(unit.app(), revision);
        Ok(data)
    }

    async fn read_unit_data(&self, unit: &UnitName) -> Result<Option<UnitData>, StoreError> {
        Ok(self.lock().get(unit.app()).and_then(|a| a.units.member(unit)).map(|m| m.data.clone()))
    }

    async fn unit_data_since(&self, app: &AppName, since: u64) -> Result<UnitDataChanges, StoreError> {
        Ok(self.lock().get(app).map_or_else(|| UnitBook::default().since(since), |a| a.units.since(since)))
    }

    async fn remove_unit(&self, unit: &UnitName) -> Result<bool, StoreError> {
        let mut apps = self.lock();
        let Some(book) = apps.get_mut(unit.app()).map(|a| &mut a.units) else { return Ok(false) };
        if book.member(unit).is_none() {
            return Ok(false);
        }
        let revision = book.next_revision();
        book.record(unit, None, revision);
        drop(apps);
        self.watchers.unit_data_changed(unit.app(), revision);
        Ok(true)
    }

    fn watch_unit_data(&self, app: &AppName) -> watch::Receiver<u64> {
        self.watchers.unit_data(app, || self.lock().get(app).map_or(0, |a| a.units.revision()))
    }
}
