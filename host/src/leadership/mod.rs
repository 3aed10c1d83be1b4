//! The leadership engine: leases with terms and pins, and fenced leader-settings writes,
//! behind one store boundary ([`LeadershipStore`]) with an in-memory, a SQLite and an etcd
//! backend.
//!
//! Every store guarantees, for each application:
//! - **At most one holder.** A claim is granted only if nobody holds the lease or it has
//!   expired, extended only for its holder, denied otherwise. Expiry is judged by the
//!   store's [`Clock`] alone, read inside the same atomic step as the decision.
//! - **A claim holds from the start of the call.** A claim of `duration` is valid until at
//!   least `start + duration`, `start` being the store clock read *before* the store is
//!   asked; a caller measuring its guarantee from the same reading never overestimates it.
//! - **Terms only go up.** Each new holder gets a term greater than every earlier term of
//!   the application, also across restarts of the store; an extension keeps the term.
//! - **Reservations direct a handover.** While a reservation for a unit lasts, a free
//!   lease is granted to that unit only (and its agent claims at once, even if it stepped
//!   down a moment ago); the holder's agent, hearing of it, steps down for that unit.
//! - **Pins stop expiry.** A pinned lease does not expire, whichever entity pinned it;
//!   expiry resumes after the last pin is removed.
//! - **Every tenure is in the history** ([`history`]): started by its grant, ended by its
//!   revoke (with why) or found expired by the next grant, in the same atomic step; the
//!   latest [`HISTORY_LIMIT`] tenures of each application are kept.
//! - **Unit data has one writer**: each unit's latest incarnation; see [`unit_data`].
//! - **Writes are fenced.** A settings write carries the writer's term and is applied only
//!   if that term still holds the lease, checked atomically with the write; the whole group
//!   is applied or none of it, and an acknowledged write is durable (per the store).
//!
//! Non-guarantees: nothing about *when* a waiting unit gets the lease, nor about how soon a
//! watcher hears of a change (in-process: at once; other processes on SQLite: within a
//! poll; on etcd: as its watch delivers).
//!
//! **The boundary is asynchronous** ([`async_trait`](macro@async_trait)): every operation that may wait (for a
//! disk, a lock or a network) is awaited, so a slow call holds only the task that made it.
//! One unit's `leader-set` waiting for an fsync or for another process's lock does not stall
//! the renewals of the other units of the process, and a network store (etcd) lives behind
//! the same trait with no runtime of its own and no thread per call. Each store chooses how
//! to wait: the in-memory store never does, the SQLite store runs each call on tokio's
//! blocking pool, a network store awaits its requests. Only the clock and the watch
//! receivers are plain calls: they never wait. A caller that stops waiting (drops the
//! future) may or may not have had its operation applied, as with any request to a store;
//! a fenced write bounds that with its `apply_by` deadline.
//!
//! The boundary is drawn at these atomic decisions, not at reads and writes of rows, so a
//! distributed store implements it with its own primitives and no home-made consensus:
//! [`etcd`] decides every one in an etcd transaction and lets the server expire leases,
//! the holder measuring its guarantee on its own clock. Where etcd's rules differ (a pin
//! cannot revive an expired lease; the last unpin restarts the TTL), its module says so.

pub mod clock;
pub mod etcd;
pub mod history;
pub mod incarnation;
pub mod memory;
mod rules;
#[cfg(feature = "simulation")]
pub mod simulation;
pub mod sqlite;
pub mod unit_data;
mod waiting;
mod watchers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::names::{AppName, UnitName};
use crate::settings::{InvalidSettings, SettingsSnapshot};

/// Implementations of [`LeadershipStore`] put this attribute on their `impl` block.
pub use async_trait::async_trait;
pub use clock::{BootClock, Clock, MANUAL_WALL_START, ManualClock, MonotonicClock, Timestamp};
pub use etcd::EtcdStore;
pub use history::{HISTORY_LIMIT, LostRenewals, Release, Tenure, TenureEnd};
pub use incarnation::{Claimant, Incarnation, IncarnationId, Origin};
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use unit_data::{UnitData, UnitDataChanges, UnitDataStore, UnitWriteError};
pub use waiting::{LeadershipToken, wait_for_lease, wait_until_released};

/// Accepted lease durations.
pub const LEASE_DURATION_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(300);

/// A granted or extended claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The holder's term: the same for every extension of one tenure.
    pub term: u64,
    /// The lease is guaranteed to the claimant until at least this instant (store clock).
    pub valid_until: Timestamp,
}

/// An application's current lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The unit holding it.
    pub holder: UnitName,
    /// The holder's term.
    pub term: u64,
    /// When it expires unless extended or pinned (store clock).
    pub expires: Timestamp,
    /// True while at least one entity pins it.
    pub pinned: bool,
    /// The incarnation of the holder that was granted this tenure (`None` in a lease
    /// written before incarnations: no incarnation extends it).
    pub incarnation: Option<IncarnationId>,
    /// Where that incarnation runs, as it said.
    pub origin: Option<Arc<Origin>>,
}

/// An application's lease and reservation as a process last saw them (see
/// [`LeadershipStore::lease_hint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHint {
    /// The lease, if held (its `expires` an estimate not before the real expiry).
    pub lease: Option<Lease>,
    /// The unit the next grant is reserved for.
    pub reserved_for: Option<UnitName>,
}

/// Why a lease operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another unit holds the lease.
    #[error("leadership of {app} is held by {holder}")]
    Denied {
        /// The application.
        app: AppName,
        /// The unit holding the lease.
        holder: UnitName,
    },
    /// The lease is held by the same unit in another incarnation: the unit also runs
    /// elsewhere (or ran there, until its tenure ends).
    #[error(
        "{unit} is also running elsewhere ({}), which holds the leadership of {}: waiting for its tenure to end",
        origin.as_ref().map_or_else(|| "an agent from before incarnations".to_owned(), |o| o.to_string()),
        unit.app()
    )]
    OtherIncarnation {
        /// The unit.
        unit: UnitName,
        /// The incarnation holding the lease (`None`: from before incarnations).
        holder: Option<IncarnationId>,
        /// Where it runs, as it said.
        origin: Option<Arc<Origin>>,
    },
    /// The unit asked to give up a lease another unit holds.
    #[error("{unit} does not hold the leadership of {app}")]
    NotHeld {
        /// The application.
        app: AppName,
        /// The unit that asked.
        unit: UnitName,
    },
    /// The requested duration is outside [`LEASE_DURATION_RANGE`].
    #[error("lease duration {0:?} is outside the accepted range of 1s to 5min")]
    InvalidDuration(Duration),
    /// The lease is free but reserved for another unit (a directed handover).
    #[error("leadership of {app} is reserved for {unit}")]
    Reserved {
        /// The application.
        app: AppName,
        /// The unit it is reserved for.
        unit: UnitName,
    },
    /// A pin entity is empty, too long, or has control characters.
    #[error("invalid pin entity {0:?}: it must be 1 to 256 printable characters")]
    InvalidEntity(String),
    /// A wait was cancelled by its caller.
    #[error("waiting for leadership to be released was cancelled")]
    Cancelled,
    /// The store was created where a lost store's agents may still count on the leases it
    /// granted: it grants no tenure until they have run out.
    #[error(
        "the leadership store of {app} is new where a lost store may still be counted on: no unit leads for {left:?} more"
    )]
    NewStore {
        /// The application.
        app: AppName,
        /// How long until a tenure may be granted.
        left: Duration,
    },
    /// The store could not be reached or failed; see [`StoreError::kind`].
    #[error("leadership store failed: {0}")]
    Store(StoreError),
}

/// What kind of failure a store reported: what a caller can do about it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreFailure {
    /// The store could not be reached or did not answer in time. A request may or may not
    /// have been applied; every operation is safe to retry.
    Unreachable,
    /// The store is there but busy: another writer holds its lock, a quota is reached, or
    /// the state kept changing under the operation. Retry later.
    Busy,
    /// The store holds data this program cannot read. Retrying does not help.
    Corrupt,
    /// The store refused or failed for another reason.
    Failed,
    /// The store is no longer the one this process started with: deleted, replaced by
    /// another, or put back to an older copy (its id, file or history says so). Nothing
    /// more is decided on it; retrying does not help until the agents are restarted.
    Replaced,
}

/// A store's failure: its kind, a message that includes the cause, and the cause itself
/// where the store had one (a `rusqlite::Error`, an `etcd_client::Error`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    kind: StoreFailure,
    message: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl From<StoreError> for LeaseError {
    fn from(err: StoreError) -> Self {
        LeaseError::Store(err)
    }
}

impl From<StoreError> for WriteError {
    fn from(err: StoreError) -> Self {
        WriteError::Store(err)
    }
}

impl StoreError {
    /// A failure of `kind` described by `message`.
    pub fn new(kind: StoreFailure, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), cause: None }
    }

    /// A failure of `kind` caused by `cause`; the message is `context: cause`.
    pub fn caused_by(kind: StoreFailure, context: &str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { kind, message: format!("{context}: {cause}"), cause: Some(Arc::new(cause)) }
    }

    /// The kind of failure.
    pub fn kind(&self) -> StoreFailure {
        self.kind
    }

    /// The error the store failed with, if any (its text is part of the message already,
    /// so it is not [`std::error::Error::source`]).
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }

    pub(crate) fn unreachable(message: impl Into<String>) -> Self {
        Self::new(StoreFailure::Unreachable, message)
    }

    pub(crate) fn busy(message: impl Into<String>) -> Self {
        Self::new(StoreFailure::Busy, message)
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Self::new(StoreFailure::Corrupt, message)
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self::new(StoreFailure::Failed, message)
    }
}

/// Equal when of the same kind with the same message (causes are not comparable).
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for StoreError {}

/// Why a fenced settings write did not succeed: refused (nothing was written), or sent with
/// no answer ([`WriteError::OutcomeUnknown`]: it may have been).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// The caller's deadline passed before the write could be applied (its caller has
    /// given up waiting): nothing was written.
    #[error("the write's deadline passed before it could be applied; nothing was written")]
    TooLate,
    /// The store could not be reached or failed, before the write was sent or with a
    /// definite refusal (nothing was written); see [`StoreError::kind`].
    #[error("leadership store failed: {0}")]
    Store(StoreError),
    /// The write was sent, and no answer came (a timeout, a connection lost): it may or
    /// may not have been applied. Read the settings to find out.
    #[error("the write may or may not have been applied ({0}): read the settings to find out")]
    OutcomeUnknown(String),
}

/// Leases, pins and leader settings for every application it serves, and its units' data
/// ([`UnitDataStore`]). See the module docs for what every implementation guarantees.
#[async_trait]
pub trait LeadershipStore: UnitDataStore {
    /// The clock that decides expiry.
    fn clock(&self) -> &Arc<dyn Clock>;

    /// Claims or extends the lease of the claimant's application for `duration`: extended
    /// only for the incarnation it was granted to (another incarnation of the same unit is
    /// [`LeaseError::OtherIncarnation`]).
    async fn claim(&self, claimant: &Claimant, duration: Duration) -> Result<Claim, LeaseError>;

    /// Gives up the claimant's lease: ok if its incarnation held it or nobody does;
    /// [`LeaseError::NotHeld`] if another unit or incarnation holds it. The tenure's
    /// [history](history) entry ends, `why`, in the same atomic step.
    async fn revoke(&self, claimant: &Claimant, why: Release) -> Result<(), LeaseError>;

    /// The tenures of `app` (of every application without one), newest first within each
    /// application (applications by name), at most `limit` of each; see [`history`].
    async fn history(&self, app: Option<&AppName>, limit: usize) -> Result<Vec<Tenure>, LeaseError>;

    /// `unit`'s agent ran through the end of its tenure at `term` but could not renew it: if
    /// that tenure's history entry ended as [`TenureEnd::Expired`], it now reads
    /// [`TenureEnd::LostRenewals`]. Nothing else changes; a tenure still open
    /// ([`LostRenewals::StillOpen`]: ask again once it has passed) or ended otherwise is left
    /// as it is.
    async fn mark_lost_renewals(&self, unit: &UnitName, term: u64) -> Result<LostRenewals, LeaseError>;

    /// Reserves the next grant of `unit`'s application lease for `unit` alone, for `duration`
    /// or until it is granted, whichever comes first; the current holder keeps its lease
    /// until it releases it or it expires. A directed handover is: reserve, then the holder
    /// steps down.
    async fn reserve(&self, unit: &UnitName, duration: Duration) -> Result<(), LeaseError>;

    /// The unit the next grant of `app`'s lease is reserved for, while the reservation lasts.
    async fn reservation(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError>;

    /// Pins `app`'s lease on behalf of `entity` (idempotent).
    async fn pin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError>;

    /// Removes `entity`'s pin of `app`'s lease (idempotent).
    async fn unpin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError>;

    /// Every pinned application with the entities pinning it, sorted.
    async fn pins(&self) -> Result<BTreeMap<AppName, Vec<String>>, LeaseError>;

    /// `app`'s lease, if it is held and unexpired (or pinned).
    async fn lease(&self, app: &AppName) -> Result<Option<Lease>, LeaseError>;

    /// `app`'s lease and reservation as this process last saw them, for deciding when to
    /// look again (a minion's wait for a vacancy): it may lag behind the store by a
    /// watch's delay, so it is never a reason to act as leader, and a claim decides. The
    /// default reads the store ([`Self::lease`], [`Self::reservation`]); a remote store
    /// answers from its watch while the watch runs, so that a waiting minion costs the
    /// store nothing.
    async fn lease_hint(&self, app: &AppName) -> Result<LeaseHint, LeaseError> {
        Ok(LeaseHint { lease: self.lease(app).await?, reserved_for: self.reservation(app).await? })
    }

    /// The highest term ever granted for `app`, held or not (0 if it never had a leader):
    /// what an agent compares with the term it remembers, to notice a lost store.
    async fn last_term(&self, app: &AppName) -> Result<u64, LeaseError>;

    /// Every application's current leader.
    async fn leaders(&self) -> Result<BTreeMap<AppName, UnitName>, LeaseError>;

    /// The contents of `app`'s settings bucket.
    async fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, StoreError>;

    /// Validates and applies `group` to the writer's application bucket if the writer's
    /// incarnation still holds its lease at `term`, atomically; returns the bucket after
    /// the write. A group that changes nothing leaves the version as it was.
    async fn write_settings(
        &self,
        writer: &Claimant,
        term: u64,
        group: &[(String, String)],
    ) -> Result<SettingsSnapshot, WriteError> {
        self.write_settings_by(writer, term, group, None).await
    }

    /// [`Self::write_settings`], refused with [`WriteError::TooLate`] unless it is decided
    /// before `apply_by`, an instant of the machine's [`MonotonicClock`] (the caller stops
    /// waiting then). Stores that may wait for a lock check after they have it.
    async fn write_settings_by(
        &self,
        writer: &Claimant,
        term: u64,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<SettingsSnapshot, WriteError>;

    /// A receiver that sees `app`'s settings version each time it changes.
    fn watch_settings(&self, app: &AppName) -> watch::Receiver<u64>;

    /// A receiver that sees a counter move each time `app`'s lease changes hands, is pinned
    /// or unpinned, or is reserved (not when one merely expires: sleep on the clock for
    /// that). It may also move for other applications' leases; a store that watches
    /// applications one by one (etcd) starts watching `app` here.
    fn watch_leases(&self, app: &AppName) -> watch::Receiver<u64>;
}

/// [`WriteError::TooLate`] once `apply_by` (machine monotonic clock) has passed.
pub fn check_apply_by(apply_by: Option<Timestamp>) -> Result<(), WriteError> {
    if apply_by.is_some_and(|by| MonotonicClock.now() >= by) { Err(WriteError::TooLate) } else { Ok(()) }
}

/// Checks a requested lease duration against [`LEASE_DURATION_RANGE`].
pub fn validate_duration(duration: Duration) -> Result<(), LeaseError> {
    if LEASE_DURATION_RANGE.contains(&duration) { Ok(()) } else { Err(LeaseError::InvalidDuration(duration)) }
}

/// Checks a pin entity: 1 to 256 bytes, no control characters.
pub fn validate_entity(entity: &str) -> Result<(), LeaseError> {
    if entity.is_empty() || entity.len() > 256 || entity.chars().any(char::is_control) {
        return Err(LeaseError::InvalidEntity(entity.to_owned()));
    }
    Ok(())
}
