//! The leadership engine boundary: leases with terms, and fenced leader-settings writes.
//!
//! A [`LeadershipEngine`] owns, per application, at most one lease and one settings bucket.
//! Every implementation guarantees:
//! - **At most one holder.** A claim is granted only if nobody holds the lease or it has
//!   expired, and extended only for its current holder.
//! - **A claim holds from the start of the call.** A granted claim of `duration` is valid
//!   until at least `start + duration`, `start` being read before the engine is asked, so
//!   a caller that measures its guarantee the same way never overestimates it.
//! - **Terms only go up.** Each new holder gets a term greater than every earlier term of
//!   the application; an extension keeps the term.
//! - **Writes are fenced.** A settings write names the writer's term and is applied only if
//!   that term still holds the lease, checked atomically with the write; the whole group is
//!   applied or none of it.
//!
//! Non-guarantees: the engine says nothing about *when* a waiting unit will get the lease,
//! and readers of settings may see any version not older than the last one they saw.

pub mod memory;

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::names::{AppName, UnitName};
use crate::settings::{InvalidSettings, SettingsSnapshot};

pub use memory::MemoryLeadership;

/// A granted or extended claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The holder's term: the same for every extension of one tenure.
    pub term: u64,
    /// The lease is guaranteed to this unit until at least this instant.
    pub valid_until: Instant,
}

/// Why a lease operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Another unit holds the lease.
    #[error("leadership of {app} is held by {holder}")]
    Denied {
        /// The application.
        app: AppName,
        /// The unit holding the lease.
        holder: UnitName,
    },
    /// The requested duration is outside the accepted range.
    #[error("lease duration {0:?} is outside the accepted range of 1s to 5min")]
    InvalidDuration(Duration),
    /// The store could not be reached or failed.
    #[error("leadership store unavailable: {0}")]
    Store(String),
}

/// Why a fenced settings write was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The writer's term does not hold the lease (any more).
    #[error("{unit} is not the leader of {app} at term {term}")]
    NotLeader {
        /// The application.
        app: AppName,
        /// The would-be writer.
        unit: UnitName,
        /// The term it wrote under.
        term: u64,
    },
    /// The group broke a rule; see [`InvalidSettings`].
    #[error(transparent)]
    Invalid(#[from] InvalidSettings),
    /// The store could not be reached or failed.
    #[error("leadership store unavailable: {0}")]
    Store(String),
}

/// Accepted lease durations.
pub const LEASE_DURATION_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(300);

/// Leases and leader settings for every application it serves. See the module docs for
/// what every implementation guarantees.
pub trait LeadershipEngine: Send + Sync + 'static {
    /// Claims or extends the lease of `unit`'s application for `duration`.
    fn claim(&self, unit: &UnitName, duration: Duration) -> Result<Claim, LeaseError>;

    /// Gives up the lease if `unit` holds it; does nothing otherwise.
    fn release(&self, unit: &UnitName) -> Result<(), LeaseError>;

    /// The unit holding `app`'s unexpired lease, if any.
    fn leader(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError>;

    /// The current contents of `app`'s settings bucket.
    fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, WriteError>;

    /// Validates and applies `group` to the writer's application bucket if `term` still
    /// holds its lease, atomically; returns the bucket after the write. A group that changes
    /// nothing leaves the version as it was.
    fn write_settings(
        &self,
        writer: &UnitName,
        term: u64,
        group: &[(String, String)],
    ) -> Result<SettingsSnapshot, WriteError>;

    /// A receiver that sees `app`'s settings version each time it changes.
    fn watch_settings(&self, app: &AppName) -> watch::Receiver<u64>;
}

/// Checks a requested lease duration against [`LEASE_DURATION_RANGE`].
pub fn validate_duration(duration: Duration) -> Result<(), LeaseError> {
    if LEASE_DURATION_RANGE.contains(&duration) {
        Ok(())
    } else {
        Err(LeaseError::InvalidDuration(duration))
    }
}
