//! Each test unit's view of the shared in-memory store: it can be cut off (a partition),
//! and it records every write the store acknowledged, for the invariants.
//!
//! Invariants: while a unit is partitioned, every one of its store calls fails as
//! unreachable and none reaches the store (its watches still fire: they are local
//! channels here, and a unit that hears news it cannot read acts as a partitioned agent
//! would); every acknowledged write is in the [`Ledger`], in the order the store applied
//! it, with the lease as it stood just before it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::leadership::{
    Claim, Claimant, Clock, LeadershipStore, Lease, LeaseError, Release, StoreError, StoreFailure, Tenure, Timestamp,
    UnitData, UnitDataChanges, UnitDataStore, UnitWriteError, WriteError,
};
use crate::names::{AppName, UnitName};
use crate::settings::SettingsSnapshot;

/// A write the store acknowledged.
#[derive(Debug, Clone)]
pub struct AcknowledgedWrite {
    /// The unit that wrote.
    pub writer: UnitName,
    /// The term it wrote under.
    pub term: u64,
    /// The group.
    pub group: Vec<(String, String)>,
    /// The settings version after it.
    pub version: u64,
    /// The lease just before the write.
    pub lease_before: Option<Lease>,
}

/// Every write the store acknowledged, in order.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    writes: Mutex<Vec<AcknowledgedWrite>>,
}

impl Ledger {
    pub(crate) fn writes(&self) -> Vec<AcknowledgedWrite> {
        self.writes_since(0)
    }

    /// The writes after the first `seen`.
    pub(crate) fn writes_since(&self, seen: usize) -> Vec<AcknowledgedWrite> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).get(seen..).map(<[_]>::to_vec).unwrap_or_default()
    }

    fn record(&self, write: AcknowledgedWrite) {
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).push(write);
    }
}

/// One unit's view of the store.
pub(crate) struct UnitStore {
    inner: Arc<dyn LeadershipStore>,
    partitioned: AtomicBool,
    ledger: Arc<Ledger>,
}

impl UnitStore {
    pub(crate) fn new(inner: Arc<dyn LeadershipStore>, ledger: Arc<Ledger>) -> Self {
        Self { inner, partitioned: AtomicBool::new(false), ledger }
    }

    pub(crate) fn set_partitioned(&self, partitioned: bool) {
        self.partitioned.store(partitioned, Ordering::SeqCst);
    }

    pub(crate) fn is_partitioned(&self) -> bool {
        self.partitioned.load(Ordering::SeqCst)
    }

    fn reachable(&self) -> Result<(), StoreError> {
        if self.is_partitioned() {
            Err(StoreError::new(StoreFailure::Unreachable, "partitioned from the store by the test"))
        } else {
            Ok(())
        }
    }

    fn lease_reachable(&self) -> Result<(), LeaseError> {
        self.reachable().map_err(LeaseError::Store)
    }
}

#[async_trait]
impl LeadershipStore for UnitStore {
    fn clock(&self) -> &Arc<dyn Clock> {
        self.inner.clock()
    }
    async fn claim(&self, unit: &Claimant, duration: Duration) -> Result<Claim, LeaseError> {
        self.lease_reachable()?;
        self.inner.claim(unit, duration).await
    }
    async fn revoke(&self, unit: &Claimant, why: Release) -> Result<(), LeaseError> {
        self.lease_reachable()?;
        self.inner.revoke(unit, why).await
    }
    async fn history(&self, app: Option<&AppName>, limit: usize) -> Result<Vec<Tenure>, LeaseError> {
        self.lease_reachable()?;
        self.inner.history(app, limit).await
    }
    async fn mark_lost_renewals(
        &self,
        unit: &UnitName,
        term: u64,
    ) -> Result<crate::leadership::LostRenewals, LeaseError> {
        self.lease_reachable()?;
        self.inner.mark_lost_renewals(unit, term).await
    }
    async fn reserve(&self, unit: &UnitName, duration: Duration) -> Result<(), LeaseError> {
        self.lease_reachable()?;
        self.inner.reserve(unit, duration).await
    }
    async fn reservation(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError> {
        self.lease_reachable()?;
        self.inner.reservation(app).await
    }
    async fn pin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        self.lease_reachable()?;
        self.inner.pin(app, entity).await
    }
    async fn unpin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        self.lease_reachable()?;
        self.inner.unpin(app, entity).await
    }
    async fn pins(&self) -> Result<BTreeMap<AppName, Vec<String>>, LeaseError> {
        self.lease_reachable()?;
        self.inner.pins().await
    }
    async fn lease(&self, app: &AppName) -> Result<Option<Lease>, LeaseError> {
        self.lease_reachable()?;
        self.inner.lease(app).await
    }
    async fn last_term(&self, app: &AppName) -> Result<u64, LeaseError> {
        self.lease_reachable()?;
        self.inner.last_term(app).await
    }
    async fn leaders(&self) -> Result<BTreeMap<AppName, UnitName>, LeaseError> {
        self.lease_reachable()?;
        self.inner.leaders().await
    }
    async fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, StoreError> {
        self.reachable()?;
        self.inner.read_settings(app).await
    }
    async fn write_settings_by(
        &self,
        writer: &Claimant,
        term: u64,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<SettingsSnapshot, WriteError> {
        self.reachable().map_err(WriteError::Store)?;
        // The in-memory store answers at once: nothing else runs between these two calls.
        let lease_before = self.inner.lease(writer.unit().app()).await.ok().flatten();
        let snapshot = self.inner.write_settings_by(writer, term, group, apply_by).await?;
        self.ledger.record(AcknowledgedWrite {
            writer: writer.unit().clone(),
            term,
            group: group.to_vec(),
            version: snapshot.version,
            lease_before,
        });
        Ok(snapshot)
    }
    fn watch_settings(&self, app: &AppName) -> watch::Receiver<u64> {
        self.inner.watch_settings(app)
    }
    fn watch_leases(&self, app: &AppName) -> watch::Receiver<u64> {
        self.inner.watch_leases(app)
    }
}

#[async_trait]
impl UnitDataStore for UnitStore {
    async fn join_unit(&self, claimant: &Claimant) -> Result<UnitData, StoreError> {
        self.reachable()?;
        self.inner.join_unit(claimant).await
    }
    async fn write_unit_data(
        &self,
        writer: &Claimant,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<UnitData, UnitWriteError> {
        self.reachable()?;
        self.inner.write_unit_data(writer, group, apply_by).await
    }
    async fn read_unit_data(&self, unit: &UnitName) -> Result<Option<UnitData>, StoreError> {
        self.reachable()?;
        self.inner.read_unit_data(unit).await
    }
    async fn unit_data_since(&self, app: &AppName, since: u64) -> Result<UnitDataChanges, StoreError> {
        self.reachable()?;
        self.inner.unit_data_since(app, since).await
    }
    async fn remove_unit(&self, unit: &UnitName) -> Result<bool, StoreError> {
        self.reachable()?;
        self.inner.remove_unit(unit).await
    }
    fn watch_unit_data(&self, app: &AppName) -> watch::Receiver<u64> {
        self.inner.watch_unit_data(app)
    }
}
