//! Built on any [`LeadershipStore`]: waiting until an application has no leader or a
//! lease of a given kind, and tokens that check a unit's leadership later.

use std::future::Future;
use std::sync::Arc;

use super::{LeadershipStore, Lease, LeaseError, StoreError, Timestamp};
use crate::names::{AppName, UnitName};

/// Completes once `app` has no leader (released, revoked or expired), or fails with
/// [`LeaseError::Cancelled`] as soon as `cancel` completes. A pinned lease never expires,
/// so only a revoke or an unpin followed by expiry ends the wait.
pub async fn wait_until_released(
    store: &dyn LeadershipStore,
    app: &AppName,
    cancel: impl Future<Output = ()>,
) -> Result<(), LeaseError> {
    let mut changes = store.watch_leases(app);
    tokio::pin!(cancel);
    loop {
        changes.borrow_and_update();
        // As last seen: a claim decides, so a lagging answer only delays the next look.
        let Some(lease) = store.lease_hint(app).await?.lease else { return Ok(()) };
        // An expiry already past (an estimate, while the store has not yet deleted the
        // lease) is looked at again a little later, not at once in a loop.
        let now = store.clock().now();
        let expires = if lease.expires > now { lease.expires } else { now + LOOK_AGAIN };
        let expiry = if lease.pinned { Box::pin(std::future::pending()) } else { store.clock().sleep_until(expires) };
        tokio::select! {
            biased;
            () = &mut cancel => return Err(LeaseError::Cancelled),
            changed = changes.changed() => {
                changed.map_err(|_| LeaseError::Store(StoreError::failed("the store was closed")))?;
            }
            () = expiry => {}
        }
    }
}

/// Waits until `app`'s lease is held and `wanted` by the caller, and returns it; `Ok(None)`
/// once `deadline` (store clock) passes first. Woken by the store's lease watch, and looks
/// again at least every 100 ms in case a change by another process is announced late.
pub async fn wait_for_lease(
    store: &dyn LeadershipStore,
    app: &AppName,
    deadline: Option<Timestamp>,
    wanted: impl Fn(&Lease) -> bool,
) -> Result<Option<Lease>, LeaseError> {
    let clock = store.clock().clone();
    let mut changes = store.watch_leases(app);
    loop {
        changes.borrow_and_update();
        if let Some(lease) = store.lease(app).await?.filter(|l| wanted(l)) {
            return Ok(Some(lease));
        }
        if deadline.is_some_and(|d| clock.now() >= d) {
            return Ok(None);
        }
        let next_look = clock.now() + LOOK_AGAIN;
        let next_look = deadline.map_or(next_look, |d| next_look.min(d));
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    clock.sleep_until(next_look).await;
                }
            }
            () = clock.sleep_until(next_look) => {}
        }
    }
}

/// How often [`wait_for_lease`] looks again without news.
const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(100);

/// A unit's leadership as of when the token was taken. It does not prove leadership by
/// existing: [`LeadershipToken::check`] does, each time it is called.
#[derive(Clone)]
pub struct LeadershipToken {
    store: Arc<dyn LeadershipStore>,
    unit: UnitName,
    term: Option<u64>,
}

impl std::fmt::Debug for LeadershipToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeadershipToken").field("unit", &self.unit).field("term", &self.term).finish()
    }
}

impl LeadershipToken {
    /// A token for `unit`'s leadership of its application, at the term it holds now.
    pub async fn new(store: Arc<dyn LeadershipStore>, unit: UnitName) -> Result<Self, LeaseError> {
        let term = store.lease(unit.app()).await?.filter(|l| l.holder == unit).map(|l| l.term);
        Ok(Self { store, unit, term })
    }

    /// The term the token was taken at, if the unit was leader then.
    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// Ok while the unit still holds the lease at the token's term; fails once it has
    /// moved, even if it later came back to the same unit.
    pub async fn check(&self) -> Result<(), LeaseError> {
        let not_held = || LeaseError::NotHeld { app: self.unit.app().clone(), unit: self.unit.clone() };
        let lease = self.store.lease(self.unit.app()).await?.ok_or_else(not_held)?;
        if lease.holder == self.unit && Some(lease.term) == self.term { Ok(()) } else { Err(not_held()) }
    }
}
