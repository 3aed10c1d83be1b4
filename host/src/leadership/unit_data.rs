//! Unit data and membership: each unit's own bag of settings, which only the unit writes
//! and the leader reads, and the units an application has (joined, not removed).
//!
//! Every store guarantees, for each application:
//! - **Membership.** A unit is a member from the first [`UnitDataStore::join_unit`] of its
//!   agent until an operator removes it ([`UnitDataStore::remove_unit`]); removing it deletes
//!   its data in the same atomic step.
//! - **One writer per unit: its latest incarnation.** A join makes the joining incarnation
//!   the only one whose writes apply to its unit's data (the data itself is kept). A write is
//!   applied only if the writer's incarnation is the one that joined last, checked in the
//!   same atomic step: an older start of the unit, or a copy of it on a cloned machine that
//!   joined earlier, is refused ([`UnitWriteError::OtherIncarnation`], naming where the
//!   writer that joined last runs), and so is a unit that is not a member.
//! - **Groups as for leader settings.** The same validation and limits
//!   ([`crate::settings::SettingsWrite`]); a group is applied whole or not at
//!   all; an acknowledged write is durable (per the store); a group that changes nothing
//!   leaves the version as it was.
//! - **A change feed.** A new member, a write that changes a bag and a removal each raise
//!   the application's unit-data revision; [`UnitDataStore::unit_data_since`] names every
//!   unit changed after a revision, so a reader that keeps a copy reads only what changed,
//!   whatever the number of units (an in-memory `UnitBook` keeps that index).
//!
//! Non-guarantees: which of two incarnations running at once joined last (the later join
//! wins, and the other's writes fail saying so); how soon a watcher hears of a change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::watch;

use super::{Claimant, IncarnationId, Origin, StoreError, Timestamp};
use crate::names::{AppName, UnitName};
use crate::settings::{InvalidSettings, Settings, SettingsSnapshot, SettingsWrite};

/// A unit's data: a bag with the same rules as leader settings, and its own version (the
/// number of writes that changed it).
pub type UnitData = SettingsSnapshot;

/// The units of an application whose data or membership changed after a revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitDataChanges {
    /// The revision this answer is complete to: the `since` of the next question.
    pub revision: u64,
    /// True when `units` is every member, and a unit it does not list is not one (the
    /// asked revision was older than the store remembers changes for, or 0): a reader
    /// replaces what it kept.
    pub full: bool,
    /// Each unit changed after the asked revision, with its data, or `None` if it is no
    /// longer a member. Sorted by unit.
    pub units: Vec<(UnitName, Option<UnitData>)>,
}

/// Why a unit-data write did not succeed: refused (nothing was written), or sent with no
/// answer ([`UnitWriteError::OutcomeUnknown`]: it may have been).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitWriteError {
    /// The unit is not a member of its application (it never joined, or was removed).
    #[error("{unit} is not a member of {} (never joined, or removed)", unit.app())]
    NotMember {
        /// The unit.
        unit: UnitName,
    },
    /// Another incarnation of the unit joined after the writer: only it writes the data.
    #[error(
        "{unit}'s data belongs to a later start of it ({}): this copy of the unit is stale, or the unit runs twice",
        origin.as_ref().map_or_else(|| "where, unknown".to_owned(), |o| o.to_string())
    )]
    OtherIncarnation {
        /// The unit.
        unit: UnitName,
        /// Where the incarnation that joined last runs, as it said.
        origin: Option<Arc<Origin>>,
    },
    /// The group broke a rule; see [`InvalidSettings`].
    #[error(transparent)]
    Invalid(#[from] InvalidSettings),
    /// The caller's deadline passed before the write could be applied: nothing was written.
    #[error("the write's deadline passed before it could be applied; nothing was written")]
    TooLate,
    /// The store could not be reached or failed, with nothing written.
    #[error("leadership store failed: {0}")]
    Store(StoreError),
    /// The write was sent, and no answer came: it may or may not have been applied.
    #[error("the write may or may not have been applied ({0}): read the unit's data to find out")]
    OutcomeUnknown(String),
}

impl From<StoreError> for UnitWriteError {
    fn from(err: StoreError) -> Self {
        UnitWriteError::Store(err)
    }
}

/// Unit data and membership of every application a store serves. See the module docs for
/// what every implementation guarantees.
#[async_trait::async_trait]
pub trait UnitDataStore: Send + Sync + 'static {
    /// Makes `claimant`'s unit a member of its application (if it is not one) and
    /// `claimant`'s incarnation the only writer of its data; returns the data, kept from
    /// earlier incarnations.
    async fn join_unit(&self, claimant: &Claimant) -> Result<UnitData, StoreError>;

    /// Validates and applies `group` to the writer's unit data if the writer's incarnation
    /// joined last, atomically; returns the data after the write. Refused with
    /// [`UnitWriteError::TooLate`] unless decided before `apply_by` (machine monotonic
    /// clock).
    async fn write_unit_data(
        &self,
        writer: &Claimant,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<UnitData, UnitWriteError>;

    /// `unit`'s data, `None` if it is not a member.
    async fn read_unit_data(&self, unit: &UnitName) -> Result<Option<UnitData>, StoreError>;

    /// The units of `app` whose data or membership changed after revision `since` (every
    /// member for 0); see [`UnitDataChanges`].
    async fn unit_data_since(&self, app: &AppName, since: u64) -> Result<UnitDataChanges, StoreError>;

    /// Removes `unit` from its application's members, with its data; false if it was not
    /// one. Its incarnations' writes are refused from then on (a later join adds it again).
    async fn remove_unit(&self, unit: &UnitName) -> Result<bool, StoreError>;

    /// A receiver that sees `app`'s unit-data revision each time it changes.
    fn watch_unit_data(&self, app: &AppName) -> watch::Receiver<u64>;
}

/// The incarnation that joined last for a unit, and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub id: IncarnationId,
    pub origin: Option<Arc<Origin>>,
}

impl Owner {
    pub fn of(claimant: &Claimant) -> Self {
        Self { id: claimant.id(), origin: Some(Arc::new(claimant.incarnation().origin.clone())) }
    }
}

/// Checks that `writer` may write its unit's data, owned by `owner` (`None`: not a member).
pub(crate) fn check_writer(owner: Option<&Owner>, writer: &Claimant) -> Result<(), UnitWriteError> {
    match owner {
        None => Err(UnitWriteError::NotMember { unit: writer.unit().clone() }),
        Some(owner) if owner.id == writer.id() => Ok(()),
        Some(owner) => {
            Err(UnitWriteError::OtherIncarnation { unit: writer.unit().clone(), origin: owner.origin.clone() })
        }
    }
}

/// Applies `group` to `current` under the settings rules: the new data, or `None` if it
/// changes nothing.
pub(crate) fn apply_group(current: &UnitData, group: &[(String, String)]) -> Result<Option<UnitData>, InvalidSettings> {
    let write = SettingsWrite::validate(group, &current.values)?;
    if write.is_noop_on(&current.values) {
        return Ok(None);
    }
    let mut values: Settings = (*current.values).clone();
    write.apply_to(&mut values);
    Ok(Some(UnitData { version: current.version.saturating_add(1), values: Arc::new(values) }))
}

/// A member as a [`UnitBook`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// `None` where the book does not track writers (a mirror of another store).
    pub owner: Option<Owner>,
    pub data: UnitData,
}

/// An application's members and their data in memory, indexed by the revision of each
/// unit's latest change, so the units changed after a revision are found in time
/// proportional to their number. The in-memory store keeps its data in one; a store on
/// another server keeps a mirror of a watched application in one.
///
/// Invariants: `revision` is the highest revision recorded; `changed_at` and `last_change`
/// are each other's inverse (one entry per unit ever recorded, removed units included);
/// below `floor` nothing is indexed, and a question about it gets a full listing.
#[derive(Debug, Default)]
pub(crate) struct UnitBook {
    revision: u64,
    floor: u64,
    members: BTreeMap<UnitName, Member>,
    changed_at: BTreeMap<u64, UnitName>,
    last_change: HashMap<UnitName, u64>,
}

impl UnitBook {
    /// A book holding `members` as of `revision`, with no changes indexed before it.
    pub fn listed(members: BTreeMap<UnitName, Member>, revision: u64) -> Self {
        Self { revision, floor: revision, members, changed_at: BTreeMap::new(), last_change: HashMap::new() }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn member(&self, unit: &UnitName) -> Option<&Member> {
        self.members.get(unit)
    }

    /// The revision after the highest one recorded (for a store that counts its own).
    pub fn next_revision(&self) -> u64 {
        self.revision.saturating_add(1)
    }

    /// Records that `unit` became `member` (`None`: removed) at `revision`. A revision not
    /// above the unit's latest change is an event seen before, and ignored.
    pub fn record(&mut self, unit: &UnitName, member: Option<Member>, revision: u64) {
        if revision <= self.floor || self.last_change.get(unit).is_some_and(|at| *at >= revision) {
            return;
        }
        if let Some(previous) = self.last_change.insert(unit.clone(), revision) {
            self.changed_at.remove(&previous);
        }
        self.changed_at.insert(revision, unit.clone());
        match member {
            Some(member) => self.members.insert(unit.clone(), member),
            None => self.members.remove(unit),
        };
        self.revision = self.revision.max(revision);
    }

    /// Changes `unit`'s writer without recording a change (its data is the same).
    pub fn set_owner(&mut self, unit: &UnitName, owner: Owner) {
        if let Some(member) = self.members.get_mut(unit) {
            member.owner = Some(owner);
        }
    }

    /// The units changed after `since`, or every member if `since` is 0 or older than the
    /// book indexes.
    pub fn since(&self, since: u64) -> UnitDataChanges {
        if since == 0 || since < self.floor {
            let units = self.members.iter().map(|(unit, m)| (unit.clone(), Some(m.data.clone()))).collect();
            return UnitDataChanges { revision: self.revision, full: true, units };
        }
        let mut units: Vec<(UnitName, Option<UnitData>)> = self
            .changed_at
            .range(since.saturating_add(1)..)
            .map(|(_, unit)| (unit.clone(), self.members.get(unit).map(|m| m.data.clone())))
            .collect();
        units.sort_by(|a, b| a.0.cmp(&b.0));
        UnitDataChanges { revision: self.revision, full: false, units }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> UnitName {
        name.parse().unwrap()
    }

    fn member(value: &str) -> Member {
        let values = Settings::from([("k".to_owned(), value.to_owned())]);
        Member { owner: None, data: UnitData { version: 1, values: Arc::new(values) } }
    }

    #[test]
    fn a_book_answers_with_only_what_changed_since() {
        let mut book = UnitBook::default();
        book.record(&unit("a/0"), Some(member("x")), 1);
        book.record(&unit("a/1"), Some(member("y")), 2);
        book.record(&unit("a/0"), Some(member("z")), 3);
        book.record(&unit("a/1"), None, 4);
        let all = book.since(0);
        assert!(all.full);
        assert_eq!(all.units.iter().map(|(u, _)| u.to_string()).collect::<Vec<_>>(), ["a/0"]);
        let later = book.since(2);
        assert!(!later.full);
        assert_eq!(later.revision, 4);
        assert_eq!(later.units, [(unit("a/0"), Some(member("z").data)), (unit("a/1"), None)]);
        assert_eq!(book.since(3).units, [(unit("a/1"), None)]);
        assert!(book.since(4).units.is_empty());
        // An event seen before changes nothing.
        book.record(&unit("a/0"), Some(member("old")), 3);
        assert_eq!(book.member(&unit("a/0")).map(|m| m.data.clone()), Some(member("z").data));
    }

    #[test]
    fn a_listed_book_answers_older_questions_with_everything() {
        let members = BTreeMap::from([(unit("a/0"), member("x"))]);
        let mut book = UnitBook::listed(members, 10);
        assert!(book.since(5).full, "changes before the listing are unknown");
        book.record(&unit("a/1"), Some(member("y")), 12);
        let changes = book.since(10);
        assert!(!changes.full);
        assert_eq!(changes.units, [(unit("a/1"), Some(member("y").data))]);
    }

    #[test]
    fn only_the_incarnation_that_joined_last_writes() {
        let writer = Claimant::fresh(unit("a/0"));
        let later = Claimant::fresh(unit("a/0"));
        assert!(matches!(check_writer(None, &writer), Err(UnitWriteError::NotMember { .. })));
        assert_eq!(check_writer(Some(&Owner::of(&writer)), &writer), Ok(()));
        let refused = check_writer(Some(&Owner::of(&later)), &writer).unwrap_err();
        assert!(matches!(refused, UnitWriteError::OtherIncarnation { .. }));
        assert!(refused.to_string().contains("later start"), "{refused}");
    }
}
