//! The leadership history: every tenure of an application (unit, term, when it started,
//! when and how it ended), kept by each store in the same atomic step as the lease change
//! it records, so an operator can tell who led when, and how long a handover left the
//! application without a leader.
//!
//! Invariants, for every store:
//! - A tenure is recorded by the grant that starts it (in the grant's transaction), with the
//!   wall time of the grant.
//! - A tenure given up ([`LeadershipStore::revoke`](super::LeadershipStore::revoke)) ends
//!   in the revoke's transaction, with its [`Release`] as how it ended.
//! - A tenure that ran out ends when the next grant finds it expired: its end is the
//!   lease's expiry ([`TenureEnd::Expired`]); the holder's agent, if it ran but could not
//!   renew, later says so ([`LeadershipStore::mark_lost_renewals`](super::LeadershipStore::mark_lost_renewals):
//!   [`TenureEnd::LostRenewals`]). A tenure still open has no end.
//! - **Bounded**: each application keeps its [`HISTORY_LIMIT`] latest tenures; a grant of
//!   term `T` prunes the tenures of terms `T - HISTORY_LIMIT` and below, in the same step.
//! - Times are wall-clock times of the machine that decided (the grant's, the revoke's, or
//!   for an expiry the store's reading of it): they are for people, never for deciding.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Clock;
use super::rules::LeaseRecord;
use crate::names::{AppName, UnitName};

/// How many tenures of each application a store keeps.
pub const HISTORY_LIMIT: u64 = 1000;

/// The oldest term a store keeps once `term` is granted: older tenures are pruned.
pub(crate) fn oldest_kept(term: u64) -> u64 {
    term.saturating_sub(HISTORY_LIMIT - 1).max(1)
}

/// Why a holder gives its lease up: the argument of a revoke, and how its tenure ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Release {
    /// It stepped down (an operator asked, `charm-host step-down`).
    StepDown,
    /// Its agent stopped.
    Stop,
    /// It stepped down for the unit the lease was reserved for (`charm-host elect`).
    Handover,
    /// Its agent died without giving it up, and the unit's next agent, started in the same
    /// state directory on the same boot (so certain that it was gone), ended it.
    Restarted,
    /// It could not renew in time and deposed itself; it gave the tenure up once it reached
    /// the store again (which had kept it).
    LostRenewals,
}

/// How a tenure ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TenureEnd {
    /// The holder stepped down.
    StepDown,
    /// The holder's agent stopped.
    Stop,
    /// A directed handover: the holder stepped down for the reserved unit.
    Handover,
    /// The holder's agent died, and the unit's next agent on the same machine and state
    /// directory ended the tenure at its start.
    Restarted,
    /// The lease ran out without being given up: its holder crashed (or was cut off and has
    /// not come back to say so).
    Expired,
    /// The lease ran out while its holder's agent ran: its renewals failed (it said so when
    /// it could reach the store again).
    LostRenewals,
}

impl TenureEnd {
    /// Its name, as the history prints it: `step-down`, `stop`, `handover`, `restarted`,
    /// `expired`, `lost-renewals`.
    pub fn name(self) -> &'static str {
        match self {
            TenureEnd::StepDown => "step-down",
            TenureEnd::Stop => "stop",
            TenureEnd::Handover => "handover",
            TenureEnd::Restarted => "restarted",
            TenureEnd::Expired => "expired",
            TenureEnd::LostRenewals => "lost-renewals",
        }
    }

    /// The end a name stands for (as [`Self::name`] gives it).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::StepDown, Self::Stop, Self::Handover, Self::Restarted, Self::Expired, Self::LostRenewals]
            .into_iter()
            .find(|end| end.name() == name)
    }
}

/// What [`LeadershipStore::mark_lost_renewals`](super::LeadershipStore::mark_lost_renewals)
/// found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostRenewals {
    /// The tenure had ended as an expiry: it now reads [`TenureEnd::LostRenewals`].
    Marked,
    /// The tenure is still open in the store (its lease has not passed to anyone yet): ask
    /// again later.
    StillOpen,
    /// Nothing to mark: the tenure ended otherwise, was not the unit's, or is not (any more)
    /// in the history.
    NotApplicable,
}

impl From<Release> for TenureEnd {
    fn from(release: Release) -> Self {
        match release {
            Release::StepDown => TenureEnd::StepDown,
            Release::Stop => TenureEnd::Stop,
            Release::Handover => TenureEnd::Handover,
            Release::Restarted => TenureEnd::Restarted,
            Release::LostRenewals => TenureEnd::LostRenewals,
        }
    }
}

/// One tenure of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenure {
    /// The application.
    pub app: AppName,
    /// The unit that led.
    pub unit: UnitName,
    /// Its term.
    pub term: u64,
    /// When it was granted (wall clock).
    #[serde(with = "rfc3339")]
    pub started: SystemTime,
    /// When it ended, if it has (wall clock).
    #[serde(with = "rfc3339_option")]
    pub ended: Option<SystemTime>,
    /// How it ended, if it has.
    pub how: Option<TenureEnd>,
}

impl Tenure {
    /// A tenure of `unit` at `term`, started at `started`, still open.
    pub fn started(unit: UnitName, term: u64, started: SystemTime) -> Self {
        Self { app: unit.app().clone(), unit, term, started, ended: None, how: None }
    }

    /// Ends it at `at`, `how`, unless it has ended already (an end is never rewritten,
    /// except an expiry that turns out to be [`TenureEnd::LostRenewals`]).
    pub(crate) fn end(&mut self, at: SystemTime, how: TenureEnd) {
        if self.how.is_none() {
            self.ended = Some(at.max(self.started));
            self.how = Some(how);
        }
    }

    /// Records that the expiry that ended it was a loss of renewals (nothing else changes).
    pub(crate) fn mark_lost_renewals(&mut self) -> LostRenewals {
        match self.how {
            None => LostRenewals::StillOpen,
            Some(TenureEnd::Expired) => {
                self.how = Some(TenureEnd::LostRenewals);
                LostRenewals::Marked
            }
            Some(_) => LostRenewals::NotApplicable,
        }
    }

    /// How long it lasted (so far, at `now`, if it is still open).
    pub fn duration(&self, now: SystemTime) -> Duration {
        self.ended.unwrap_or(now).duration_since(self.started).unwrap_or_default()
    }
}

/// What a grant records in the history of a store that keeps [`LeaseRecord`]s (memory,
/// SQLite): the end of the tenure before it if its holder never gave it up (it expired,
/// at its expiry), the new tenure, and the oldest term to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub expired: Option<(u64, SystemTime)>,
    pub started: Tenure,
    pub oldest_kept: u64,
}

/// The history a claim that turned `previous` into `granted` records: `None` unless it
/// granted a new term. A record that still names a holder was never revoked, so its
/// tenure ran out, at its expiry (as the store's `clock` maps it to the wall).
pub(crate) fn on_grant(previous: Option<&LeaseRecord>, granted: &LeaseRecord, clock: &dyn Clock) -> Option<Grant> {
    let unit = granted.holder.clone()?;
    if previous.is_some_and(|p| p.term == granted.term) {
        return None;
    }
    let expired = previous.filter(|p| p.holder.is_some()).map(|p| (p.term, clock.wall_time(p.expires)));
    let started = Tenure::started(unit, granted.term, clock.wall_now());
    Some(Grant { expired, started, oldest_kept: oldest_kept(granted.term) })
}

/// Nanoseconds since the Unix epoch, as stores keep wall times (0 before it; saturating).
pub(crate) fn unix_nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The wall time `nanos` after the Unix epoch (negative: the epoch).
pub(crate) fn from_unix_nanos(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// Serde for a wall time as RFC 3339 (UTC).
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for an optional wall time as RFC 3339 (UTC) or `null`.
mod rfc3339_option {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.collect_str(&humantime::format_rfc3339_millis(*at)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_keeps_the_latest_tenures() {
        assert_eq!(oldest_kept(1), 1);
        assert_eq!(oldest_kept(HISTORY_LIMIT), 1);
        assert_eq!(oldest_kept(HISTORY_LIMIT + 1), 2, "the latest {HISTORY_LIMIT} tenures");
    }

    #[test]
    fn an_end_is_kept_and_reads_back() {
        let unit = UnitName::new("db/1").unwrap();
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let mut tenure = Tenure::started(unit, 7, at(100));
        assert_eq!(tenure.duration(at(130)), Duration::from_secs(30), "open: so far");
        assert_eq!(tenure.mark_lost_renewals(), LostRenewals::StillOpen);
        assert_eq!(tenure.how, None, "an open tenure is not marked");
        tenure.end(at(160), TenureEnd::Expired);
        tenure.end(at(170), TenureEnd::Stop);
        assert_eq!((tenure.ended, tenure.how), (Some(at(160)), Some(TenureEnd::Expired)), "the first end stays");
        assert_eq!(tenure.mark_lost_renewals(), LostRenewals::Marked);
        assert_eq!(tenure.how, Some(TenureEnd::LostRenewals));
        assert_eq!(tenure.mark_lost_renewals(), LostRenewals::NotApplicable);
        let json = serde_json::to_value(&tenure).unwrap();
        assert_eq!(json["started"], "1970-01-01T00:01:40.000Z");
        assert_eq!(json["how"], "lost-renewals");
        assert_eq!(serde_json::from_value::<Tenure>(json).unwrap(), tenure);
        for end in
            [TenureEnd::StepDown, TenureEnd::Stop, TenureEnd::Handover, TenureEnd::Expired, TenureEnd::LostRenewals]
        {
            assert_eq!(TenureEnd::from_name(end.name()), Some(end));
            assert_eq!(serde_json::to_value(end).unwrap(), end.name());
        }
    }
}
