//! The lease rules as pure functions, so every store decides claims, revokes and fenced
//! writes the same way; a store's job is only to run them atomically on its own data.

use std::time::Duration;

use super::{Claim, Claimant, IncarnationId, Lease, LeaseError, Origin, WriteError};
use crate::names::UnitName;

/// A lease as stored: the last holder (with the incarnation its tenure was granted to), its
/// term and expiry, and a reservation for a directed handover. Stores keep the record (with
/// its term) after release, with no holder, so terms never go backwards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LeaseRecord {
    pub holder: Option<UnitName>,
    /// The holder's incarnation (`None` in a record from before incarnations).
    pub incarnation: Option<IncarnationId>,
    /// Where that incarnation runs, as it said.
    pub origin: Option<std::sync::Arc<Origin>>,
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
        (pinned || self.expires > now).then(|| Lease {
            holder,
            term: self.term,
            expires: self.expires,
            pinned,
            incarnation: self.incarnation,
            origin: self.origin.clone(),
        })
    }
}

/// Whether `lease` is the claimant's own tenure: its unit, in its incarnation.
pub(crate) fn held_by(lease: &Lease, claimant: &Claimant) -> bool {
    &lease.holder == claimant.unit() && lease.incarnation == Some(claimant.id())
}

/// Why `claimant` may not have `lease`, which another unit or incarnation holds.
pub(crate) fn refusal(lease: Lease, claimant: &Claimant) -> LeaseError {
    if &lease.holder == claimant.unit() {
        LeaseError::OtherIncarnation { unit: lease.holder, holder: lease.incarnation, origin: lease.origin }
    } else {
        LeaseError::Denied { app: claimant.unit().app().clone(), holder: lease.holder }
    }
}

/// Decides a claim by `claimant` for `duration` made at `start`, judged at `now`; returns
/// the claim and the record to store, or why it is denied. Only the incarnation a tenure
/// was granted to extends it; no new tenure is granted before `grants_from` (a store new
/// where a lost one may still be counted on).
pub(crate) fn claim(
    record: Option<&LeaseRecord>,
    pinned: bool,
    claimant: &Claimant,
    duration: Duration,
    (start, now): (super::Timestamp, super::Timestamp),
    grants_from: Option<super::Timestamp>,
) -> Result<(Claim, LeaseRecord), LeaseError> {
    super::validate_duration(duration)?;
    let unit = claimant.unit();
    let valid_until = start + duration;
    match record.and_then(|r| r.live(pinned, now)) {
        Some(lease) if !held_by(&lease, claimant) => Err(refusal(lease, claimant)),
        Some(lease) => {
            let expires = lease.expires.max(valid_until);
            let reserved = record.and_then(|r| r.reserved.clone());
            let record = LeaseRecord {
                holder: Some(lease.holder),
                incarnation: lease.incarnation,
                origin: lease.origin,
                term: lease.term,
                expires,
                reserved,
            };
            Ok((Claim { term: lease.term, valid_until }, record))
        }
        None => {
            let reservation = record.and_then(|r| r.reserved.as_ref()).filter(|r| r.until > now);
            if let Some(reservation) = reservation.filter(|r| &r.unit != unit) {
                return Err(LeaseError::Reserved { app: unit.app().clone(), unit: reservation.unit.clone() });
            }
            if let Some(from) = grants_from.filter(|from| *from > now) {
                return Err(LeaseError::NewStore { app: unit.app().clone(), left: from.saturating_since(now) });
            }
            let term = record
                .map_or(0, |r| r.term)
                .checked_add(1)
                .ok_or_else(|| LeaseError::Store(super::StoreError::failed("the term counter is exhausted")))?;
            let record = LeaseRecord {
                holder: Some(unit.clone()),
                incarnation: Some(claimant.id()),
                origin: Some(std::sync::Arc::new(claimant.incarnation().origin.clone())),
                term,
                expires: valid_until,
                reserved: None,
            };
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

/// Decides a revoke by `claimant`: the record to store, `None` if nothing changes. Only
/// the incarnation holding the tenure gives it up.
pub(crate) fn revoke(
    record: Option<&LeaseRecord>,
    pinned: bool,
    claimant: &Claimant,
    now: super::Timestamp,
) -> Result<Option<LeaseRecord>, LeaseError> {
    match record.and_then(|r| r.live(pinned, now)) {
        Some(lease) if held_by(&lease, claimant) => {
            let reserved = record.and_then(|r| r.reserved.clone());
            Ok(Some(LeaseRecord {
                holder: None,
                incarnation: None,
                origin: None,
                term: lease.term,
                expires: now,
                reserved,
            }))
        }
        Some(_) => Err(LeaseError::NotHeld { app: claimant.unit().app().clone(), unit: claimant.unit().clone() }),
        None => Ok(None),
    }
}

/// Checks that `writer`'s incarnation holds the live lease at `term`.
pub(crate) fn check_fence(
    record: Option<&LeaseRecord>,
    pinned: bool,
    writer: &Claimant,
    term: u64,
    now: super::Timestamp,
) -> Result<(), WriteError> {
    match record.and_then(|r| r.live(pinned, now)) {
        Some(lease) if held_by(&lease, writer) && lease.term == term => Ok(()),
        _ => Err(WriteError::NotLeader { app: writer.unit().app().clone(), unit: writer.unit().clone(), term }),
    }
}
