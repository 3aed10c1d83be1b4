//! The lease rules as pure functions, so every store decides claims, revokes and fenced
//! writes the same way; a store's job is only to run them atomically on its own data.

use std::time::Duration;

use super::{Claim, Lease, LeaseError, WriteError};
use crate::names::UnitName;

/// A lease as stored: the last holder, its term and expiry, and a reservation for a
/// directed handover. Stores keep the record (with its term) after release, with no
/// holder, so terms never go backwards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LeaseRecord {
    pub holder: Option<UnitName>,
    pub term: u64,
    pub expires: super::Timestamp,
    pub reserved: Option<Reservation>,
}

/// Only `unit` may be granted the lease until `until` (or until it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    pub unit: UnitName,
    pub until: super::Timestamp,
}

impl LeaseRecord {
    /// The live lease this record describes at `now`, if any.
    pub fn live(&self, pinned: bool, now: super::Timestamp) -> Option<Lease> {
        let holder = self.holder.clone()?;
        (pinned || self.expires > now).then_some(Lease { holder, term: self.term, expires: self.expires, pinned })
    }
}

/// Decides a claim by `unit` for `duration` made at `start`, judged at `now`; returns the
/// claim and the record to store, or why it is denied.
pub(crate) fn claim(
    record: Option<&LeaseRecord>,
    pinned: bool,
    unit: &UnitName,
    duration: Duration,
    start: super::Timestamp,
    now: super::Timestamp,
) -> Result<(Claim, LeaseRecord), LeaseError> {
    super::validate_duration(duration)?;
    let valid_until = start + duration;
    match record.and_then(|r| r.live(pinned, now)) {
        Some(lease) if &lease.holder != unit => Err(LeaseError::Denied { app: unit.app().clone(), holder: lease.holder }),
        Some(lease) => {
            let expires = lease.expires.max(valid_until);
            let reserved = record.and_then(|r| r.reserved.clone());
            Ok((Claim { term: lease.term, valid_until }, LeaseRecord { holder: Some(lease.holder), term: lease.term, expires, reserved }))
        }
        None => {
            let reservation = record.and_then(|r| r.reserved.as_ref()).filter(|r| r.until > now);
            if let Some(reservation) = reservation.filter(|r| &r.unit != unit) {
                return Err(LeaseError::Reserved { app: unit.app().clone(), unit: reservation.unit.clone() });
            }
            let term = record.map_or(0, |r| r.term) + 1;
            let record = LeaseRecord { holder: Some(unit.clone()), term, expires: valid_until, reserved: None };
            Ok((Claim { term, valid_until }, record))
        }
    }
}

/// Reserves the next grant of the lease for `unit` until `until`.
pub(crate) fn reserve(record: Option<&LeaseRecord>, unit: &UnitName, until: super::Timestamp) -> LeaseRecord {
    let mut record = record.cloned().unwrap_or_default();
    record.reserved = Some(Reservation { unit: unit.clone(), until });
    record
}

/// Decides a revoke by `unit`: the record to store, `None` if nothing changes.
pub(crate) fn revoke(
    record: Option<&LeaseRecord>,
    pinned: bool,
    unit: &UnitName,
    now: super::Timestamp,
) -> Result<Option<LeaseRecord>, LeaseError> {
    match record.and_then(|r| r.live(pinned, now)) {
        Some(lease) if &lease.holder == unit => {
            let reserved = record.and_then(|r| r.reserved.clone());
            Ok(Some(LeaseRecord { holder: None, term: lease.term, expires: now, reserved }))
        }
        Some(_) => Err(LeaseError::NotHeld { app: unit.app().clone(), unit: unit.clone() }),
        None => Ok(None),
    }
}

/// Checks that `writer` holds the live lease at `term`.
pub(crate) fn check_fence(
    record: Option<&LeaseRecord>,
    pinned: bool,
    writer: &UnitName,
    term: u64,
    now: super::Timestamp,
) -> Result<(), WriteError> {
    match record.and_then(|r| r.live(pinned, now)) {
        Some(lease) if &lease.holder == writer && lease.term == term => Ok(()),
        _ => Err(WriteError::NotLeader { app: writer.app().clone(), unit: writer.clone(), term }),
    }
}
