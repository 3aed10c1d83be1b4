//! An in-memory [`LeadershipEngine`]: the fastest, for tests and for applications whose
//! units all live in one process and need no state after exit.
//!
//! Invariants: one mutex guards every application's lease, term counter and bucket, so a
//! claim, a release and a fenced write are each a single critical section; expiry is judged
//! by `Instant::now()` read inside that section.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Claim, LeaseError, LeadershipEngine, WriteError, validate_duration};
use crate::names::{AppName, UnitName};
use crate::settings::{Settings, SettingsSnapshot, SettingsWrite};

/// Leases and settings held in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryLeadership {
    apps: Mutex<HashMap<AppName, AppState>>,
}

#[derive(Debug)]
struct Lease {
    holder: UnitName,
    term: u64,
    expires: Instant,
}

#[derive(Debug)]
struct AppState {
    lease: Option<Lease>,
    last_term: u64,
    settings: SettingsSnapshot,
    version_tx: watch::Sender<u64>,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            lease: None,
            last_term: 0,
            settings: SettingsSnapshot::default(),
            version_tx: watch::channel(0).0,
        }
    }
}

impl AppState {
    /// The lease if it is held and unexpired at `now`.
    fn live_lease(&self, now: Instant) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.expires > now)
    }
}

impl MemoryLeadership {
    /// An engine with no leases and empty buckets.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AppName, AppState>> {
        // A panic while holding the lock cannot leave a half-applied write (each critical
        // section mutates only after all checks), so a poisoned lock is safe to reuse.
        self.apps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl LeadershipEngine for MemoryLeadership {
    fn claim(&self, unit: &UnitName, duration: Duration) -> Result<Claim, LeaseError> {
        validate_duration(duration)?;
        let start = Instant::now();
        let mut apps = self.lock();
        let app = apps.entry(unit.app().clone()).or_default();
        let now = Instant::now();
        let valid_until = start + duration;
        match app.live_lease(now) {
            Some(lease) if &lease.holder != unit => Err(LeaseError::Denied {
                app: unit.app().clone(),
                holder: lease.holder.clone(),
            }),
            Some(_) => {
                let lease = app.lease.as_mut().ok_or_else(|| LeaseError::Store("lease vanished".into()))?;
                lease.expires = lease.expires.max(valid_until);
                Ok(Claim { term: lease.term, valid_until })
            }
            None => {
                app.last_term += 1;
                let term = app.last_term;
                app.lease = Some(Lease { holder: unit.clone(), term, expires: valid_until });
                Ok(Claim { term, valid_until })
            }
        }
    }

    fn release(&self, unit: &UnitName) -> Result<(), LeaseError> {
        let mut apps = self.lock();
        if let Some(app) = apps.get_mut(unit.app()) {
            if app.lease.as_ref().is_some_and(|l| &l.holder == unit) {
                app.lease = None;
            }
        }
        Ok(())
    }

    fn leader(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError> {
        let apps = self.lock();
        let now = Instant::now();
        Ok(apps.get(app).and_then(|a| a.live_lease(now)).map(|l| l.holder.clone()))
    }

    fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, WriteError> {
        Ok(self.lock().get(app).map(|a| a.settings.clone()).unwrap_or_default())
    }

    fn write_settings(
        &self,
        writer: &UnitName,
        term: u64,
        group: &[(String, String)],
    ) -> Result<SettingsSnapshot, WriteError> {
        let mut apps = self.lock();
        let app = apps.entry(writer.app().clone()).or_default();
        let holds = app
            .live_lease(Instant::now())
            .is_some_and(|l| &l.holder == writer && l.term == term);
        if !holds {
            return Err(WriteError::NotLeader { app: writer.app().clone(), unit: writer.clone(), term });
        }
        let write = SettingsWrite::validate(group, &app.settings.values)?;
        if write.is_noop_on(&app.settings.values) {
            return Ok(app.settings.clone());
        }
        let mut values: Settings = (*app.settings.values).clone();
        write.apply_to(&mut values);
        app.settings = SettingsSnapshot { version: app.settings.version + 1, values: Arc::new(values) };
        app.version_tx.send_replace(app.settings.version);
        Ok(app.settings.clone())
    }

    fn watch_settings(&self, app: &AppName) -> watch::Receiver<u64> {
        self.lock().entry(app.clone()).or_default().version_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> UnitName {
        UnitName::new(name).unwrap()
    }

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn one_holder_and_rising_terms() {
        let engine = MemoryLeadership::new();
        let first = engine.claim(&unit("app/0"), LEASE).unwrap();
        assert!(matches!(engine.claim(&unit("app/1"), LEASE), Err(LeaseError::Denied { .. })));
        let again = engine.claim(&unit("app/0"), LEASE).unwrap();
        assert_eq!(first.term, again.term, "an extension keeps the term");
        engine.release(&unit("app/1")).unwrap();
        assert_eq!(engine.leader(&unit("app/0").app().clone()).unwrap(), Some(unit("app/0")));
        engine.release(&unit("app/0")).unwrap();
        let next = engine.claim(&unit("app/1"), LEASE).unwrap();
        assert!(next.term > first.term);
        // Another application is independent.
        assert!(engine.claim(&unit("other/0"), LEASE).is_ok());
    }

    #[test]
    fn writes_are_fenced_by_term() {
        let engine = MemoryLeadership::new();
        let old = engine.claim(&unit("app/0"), LEASE).unwrap();
        let set = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let snap = engine.write_settings(&unit("app/0"), old.term, &set("a", "1")).unwrap();
        assert_eq!(snap.version, 1);
        engine.release(&unit("app/0")).unwrap();
        let new = engine.claim(&unit("app/1"), LEASE).unwrap();
        let stale = engine.write_settings(&unit("app/0"), old.term, &set("a", "2"));
        assert!(matches!(stale, Err(WriteError::NotLeader { .. })));
        let minion = engine.write_settings(&unit("app/0"), new.term, &set("a", "2"));
        assert!(matches!(minion, Err(WriteError::NotLeader { .. })));
        let noop = engine.write_settings(&unit("app/1"), new.term, &set("a", "1")).unwrap();
        assert_eq!(noop.version, 1, "a write that changes nothing keeps the version");
        assert_eq!(engine.read_settings(unit("app/0").app()).unwrap().values.get("a").unwrap(), "1");
    }

    #[test]
    fn rejects_durations_out_of_range() {
        let engine = MemoryLeadership::new();
        for bad in [Duration::ZERO, Duration::from_millis(999), Duration::from_secs(301)] {
            assert!(matches!(engine.claim(&unit("app/0"), bad), Err(LeaseError::InvalidDuration(_))));
        }
    }
}
