//! Directed handover: leadership passes to a chosen unit with no other unit leading in
//! between, on one machine or across many. This is the one implementation; the CLI's
//! `elect` and `run --elect`, the bench and the embedding API all call it.
//!
//! How: the lease is **reserved** for the unit ([`LeadershipStore::reserve`]), so a free
//! lease can be granted to it alone; the leader's agent, wherever it runs, hears of the
//! reservation and steps down for it (`leader-deposed`, then revoke); the chosen unit's
//! agent claims at once.
//!
//! Invariants: a unit that already leads is left alone (nothing is reserved); a wait for the
//! handover ends by its deadline, on the store's clock, whatever the agents do.

use std::time::Duration;

use crate::leadership::{LeadershipStore, LeaseError, wait_for_lease};
use crate::names::UnitName;
use crate::timing;

/// What [`request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Requested {
    /// The unit already leads, at this term: nothing was reserved.
    AlreadyLeads {
        /// Its term.
        term: u64,
    },
    /// The lease is reserved for the unit; the leader's agent will step down for it.
    Reserved,
}

/// Why a handover failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// The store refused or failed.
    #[error("cannot hand leadership to {unit}: {source}")]
    Store {
        /// The unit.
        unit: UnitName,
        /// Why (boxed: it is large, and this error travels inside others).
        source: Box<LeaseError>,
    },
    /// The reservation is outside [`timing::RESERVATION`].
    #[error(transparent)]
    InvalidDuration(#[from] timing::InvalidDuration),
    /// The unit did not lead within the time given (its agent may not be running).
    #[error("{unit} did not become leader within {within:?}")]
    TimedOut {
        /// The unit.
        unit: UnitName,
        /// How long was waited.
        within: Duration,
    },
}

/// Reserves the lease of `unit`'s application for `unit`, for `within`, unless it already
/// leads; returns without waiting for the handover.
pub async fn request(
    store: &dyn LeadershipStore,
    unit: &UnitName,
    within: Duration,
) -> Result<Requested, HandoverError> {
    timing::RESERVATION.check(within)?;
    let failed = |source| HandoverError::Store { unit: unit.clone(), source: Box::new(source) };
    if let Some(lease) = store.lease(unit.app()).await.map_err(failed)?.filter(|l| l.holder == *unit) {
        return Ok(Requested::AlreadyLeads { term: lease.term });
    }
    store.reserve(unit, within).await.map_err(failed)?;
    Ok(Requested::Reserved)
}

/// Waits until `unit` holds its application's lease, for at most `within` (store clock);
/// returns its term.
pub async fn wait_until_leads(
    store: &dyn LeadershipStore,
    unit: &UnitName,
    within: Duration,
) -> Result<u64, HandoverError> {
    let deadline = store.clock().now() + within;
    let failed = |source| HandoverError::Store { unit: unit.clone(), source: Box::new(source) };
    match wait_for_lease(store, unit.app(), Some(deadline), |lease| lease.holder == *unit).await.map_err(failed)? {
        Some(lease) => Ok(lease.term),
        None => Err(HandoverError::TimedOut { unit: unit.clone(), within }),
    }
}

/// A directed handover to `unit`, waited for: [`request`], then [`wait_until_leads`].
/// Returns the unit's term.
pub async fn elect(store: &dyn LeadershipStore, unit: &UnitName, within: Duration) -> Result<u64, HandoverError> {
    match request(store, unit, within).await? {
        Requested::AlreadyLeads { term } => Ok(term),
        Requested::Reserved => wait_until_leads(store, unit, within).await,
    }
}
