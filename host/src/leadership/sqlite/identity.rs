//! Which store a [`super::SqliteStore`] talks to, checked in every transaction.
//!
//! A file can be lost under running agents in ways SQLite itself does not refuse: deleted
//! (`rm state.db`: the agents keep the unlinked file, a newcomer creates a fresh one),
//! replaced (`mv backup state.db`), or overwritten in place with an older copy (`cp`).
//! Each would let a newcomer be granted a lease an agent of the old file still counts on,
//! or let terms go backwards.
//!
//! Invariants:
//! - **An identity made at creation.** A new store gets a random id (`meta.store_id`) and
//!   its creation instant; a store from before identities gets its id when first opened.
//! - **Every transaction checks it**, first, inside the transaction: the path still names
//!   the file this connection opened (same device and inode: not deleted, renamed or
//!   replaced), the file holds the id read at open, and its generation (`meta.generation`)
//!   is not below the highest this process has seen. Any of these failing is
//!   [`StoreFailure::Replaced`]: nothing is decided on that file any more.
//! - **Every write raises the generation** in its own transaction (a renewal too), so an
//!   older copy written back in place reads as going back in time.
//! - **A store created where units ran before grants nothing at first**: opened with
//!   [`NewStore::Refuse`] it is not created at all; with [`NewStore::CreateAfterLoss`] no
//!   new tenure is granted until `wait` after its creation (`meta.grants_from_ns`), by
//!   which time every lease of the lost store has run out. (On a new boot nobody of the old
//!   one runs: the wait is dropped with the other readings of the old boot's clock.)
//!
//! - **A copy is not the store's file.** The store records the file it was made in (inode,
//!   birth time). A copy of it put in its place (`mv backup state.db`, a state directory
//!   copied to another disk) is refused at open ([`super::OpenError::Copy`]): agents of the
//!   original may still run elsewhere, and the write-ahead log beside it may be the
//!   original's, which SQLite would apply to the copy. Accepted
//!   ([`super::SqliteOptions::accept_moved`]), it is adopted, granting no new tenure for a
//!   claim duration, and never while a write-ahead log lies beside it. Until the file is
//!   known to be the store's own, a connection closes without checkpointing.
//!
//! Non-guarantees: an older copy written over the file in place (`cp backup state.db`, same
//! inode) while no agent of the store runs cannot be told from the real one (no agent is
//! left to be fooled, and the agents' own records refuse a store that remembers less than
//! they do). Written in place under running agents, it is found when SQLite first reads
//! the copy's pages: until its write-ahead log is checkpointed and restarted, SQLite goes on
//! reading the newer pages the log holds (a copy written over a live file is not a restore
//! SQLite supports; stop the agents first). A path whose
//! identity changes between `open` and the first `stat` (microseconds) is caught by
//! SQLite's own refusal to write a moved file (`SQLITE_READONLY_DBMOVED`).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction, params};

use crate::leadership::{IncarnationId, StoreError, StoreFailure, Timestamp};

/// What opening a file that holds no store yet does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NewStore {
    /// Creates it; a tenure may be granted at once (no store was here before).
    #[default]
    Create,
    /// Creates it, but grants no new tenure until `wait` (store clock) after its creation:
    /// agents of a store that was here and was lost may still count on leases it granted,
    /// for at most their claim duration, which `wait` must cover.
    CreateAfterLoss {
        /// How long no tenure is granted.
        wait: Duration,
    },
    /// Refuses to create it ([`super::OpenError::Lost`]): units ran here, so a store was
    /// here and was lost.
    Refuse,
}

impl NewStore {
    /// How a missing store may be created: at once where no agent ran (`units_ran` false);
    /// where one ran (a store was there and was lost, maybe under agents that still run),
    /// not at all unless `accept` (`--accept-new-store`), and then granting no tenure for
    /// `claim_duration` (every lease of the lost store has run out by then).
    pub fn where_units(units_ran: bool, accept: bool, claim_duration: std::time::Duration) -> Self {
        match (units_ran, accept) {
            (false, _) => NewStore::Create,
            (true, true) => NewStore::CreateAfterLoss { wait: claim_duration },
            (true, false) => NewStore::Refuse,
        }
    }
}

/// The file and store a connection was opened on, and the newest generation seen.
#[derive(Debug)]
pub(super) struct StoreIdentity {
    path: PathBuf,
    device: u64,
    inode: u64,
    id: String,
    seen: AtomicI64,
    /// This open adopted a copy of the store's file (and set its wait).
    adopted_copy: bool,
}

/// A store failure saying the file is no longer the store this process opened.
pub(super) fn replaced(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        StoreFailure::Replaced,
        format!(
            "the leadership store {} {what}: nothing more is decided on it (restart the agents once the store is \
             restored, or with --accept-new-store to start anew)",
            path.display()
        ),
    )
}

impl StoreIdentity {
    /// Reads the identity of the store `tx` has open at `path`, making its id if it has none
    /// (a new store, or one from before identities). A copy of the store's file is refused,
    /// or with `accept_copy` adopted as the store's file, granting no new tenure for that
    /// long from `now`; a copy beside a write-ahead log is refused either way.
    pub(super) fn read(
        tx: &Transaction<'_>,
        path: &Path,
        accept_copy: Option<Duration>,
        now: Timestamp,
    ) -> Result<Self, super::OpenError> {
        let sqlite = |source| super::OpenError::Sqlite { path: path.to_owned(), source };
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?1)",
            [IncarnationId::random().to_string()],
        )
        .map_err(sqlite)?;
        let id: String =
            tx.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| r.get(0)).map_err(sqlite)?;
        let generation = generation(tx).map_err(sqlite)?;
        let meta =
            std::fs::metadata(path).map_err(|source| super::OpenError::File { path: path.to_owned(), source })?;
        let actual = file_tag(&meta);
        let recorded: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key = 'file'", [], |r| r.get(0)).optional().map_err(sqlite)?;
        let mut adopted_copy = false;
        match (recorded, accept_copy) {
            (Some(recorded), _) if recorded == actual => {}
            (Some(recorded), None) => return Err(super::OpenError::Copy { path: path.to_owned(), recorded, actual }),
            (Some(_), Some(wait)) => {
                let log = super::beside(path, "-wal");
                if std::fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
                    return Err(super::OpenError::CopyBesideLog { path: path.to_owned(), log });
                }
                grant_nothing_before(tx, now + wait).map_err(sqlite)?;
                tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('file', ?1)", [&actual])
                    .map_err(sqlite)?;
                adopted_copy = true;
            }
            (None, _) => {
                tx.execute("INSERT INTO meta (key, value) VALUES ('file', ?1)", [&actual]).map_err(sqlite)?;
            }
        }
        Ok(Self {
            path: path.to_owned(),
            device: meta.dev(),
            inode: meta.ino(),
            id,
            seen: AtomicI64::new(generation),
            adopted_copy,
        })
    }

    /// Whether this open adopted a copy of the store's file (its wait is this boot's).
    pub(super) fn adopted_copy(&self) -> bool {
        self.adopted_copy
    }

    /// The store's id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Checks, inside `tx`, that it is still the store this process opened (see the module
    /// docs); returns its generation.
    pub(super) fn check(&self, tx: &Transaction<'_>) -> Result<i64, StoreError> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == (self.device, self.inode) => {}
            Ok(_) => {
                return Err(replaced(
                    &self.path,
                    "was replaced by another file (renamed over, or deleted and created anew)",
                ));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(replaced(&self.path, "was deleted")),
            Err(err) => {
                return Err(StoreError::caused_by(StoreFailure::Unreachable, "the leadership store's file", err));
            }
        }
        let sqlite = |e| StoreError::caused_by(StoreFailure::Failed, "SQLite", e);
        // One read for both: the id (text) and the generation (a number; 0 before any write).
        let (mut id, mut generation) = (None::<String>, 0_i64);
        let mut statement =
            tx.prepare_cached("SELECT key, value FROM meta WHERE key IN ('store_id', 'generation')").map_err(sqlite)?;
        let mut rows = statement.query([]).map_err(sqlite)?;
        while let Some(row) = rows.next().map_err(sqlite)? {
            match row.get_ref(0).map_err(sqlite)?.as_str().unwrap_or_default() {
                "store_id" => id = row.get(1).ok(),
                _ => generation = row.get(1).unwrap_or(0),
            }
        }
        if id.as_deref() != Some(self.id.as_str()) {
            let found = id.unwrap_or_else(|| "none".into());
            return Err(replaced(
                &self.path,
                format_args!("now holds another store (id {found}; this process opened {})", self.id),
            ));
        }
        let seen = self.seen.load(Ordering::Acquire);
        if generation < seen {
            return Err(replaced(
                &self.path,
                format_args!(
                    "went back in time (generation {generation}, this process saw {seen}): an older copy was put in its place"
                ),
            ));
        }
        self.seen.fetch_max(generation, Ordering::AcqRel);
        Ok(generation)
    }

    /// Raises the generation in `tx` (a write), past `checked` as [`Self::check`] read it;
    /// returns the new one, for [`Self::committed`] once the transaction commits.
    pub(super) fn raise(&self, tx: &Transaction<'_>, checked: i64) -> rusqlite::Result<i64> {
        let next = checked.saturating_add(1);
        tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?1)")?
            .execute(params![next])?;
        Ok(next)
    }

    /// The transaction that raised the generation to `generation` committed: it is seen.
    /// (Not before: a commit that fails, on a full disk say, leaves the file where it was.)
    pub(super) fn committed(&self, generation: i64) {
        self.seen.fetch_max(generation, Ordering::AcqRel);
    }
}

/// The file a store lives in, as recorded inside it: its inode and, where the filesystem
/// keeps one, its birth time. A copy (`cp`, `VACUUM INTO`, a restored backup, a state
/// directory copied to another disk) is another file carrying its original's record; a
/// rename within the filesystem keeps the file. (Not the device number: a volume's may
/// change at a reboot.)
fn file_tag(meta: &std::fs::Metadata) -> String {
    let born = meta.created().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    match born {
        Some(born) => format!("inode {} born {}.{:09}", meta.ino(), born.as_secs(), born.subsec_nanos()),
        None => format!("inode {}", meta.ino()),
    }
}

/// The store's generation (0 before its first write).
fn generation(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    Ok(tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'generation'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// A new store (`tx` created its schema just now) grants no tenure before `from`.
pub(super) fn grant_nothing_before(tx: &Transaction<'_>, from: Timestamp) -> rusqlite::Result<()> {
    let from = i64::try_from(from.as_nanos()).unwrap_or(i64::MAX);
    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('grants_from_ns', ?1)", [from])?;
    Ok(())
}

/// The first instant (store clock) a new tenure may be granted in `tx`'s store, if it is
/// still ahead of `now`.
pub(super) fn grants_from(tx: &Transaction<'_>, now: Timestamp) -> rusqlite::Result<Option<Timestamp>> {
    let from: Option<i64> = tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'grants_from_ns'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(from.map(|ns| Timestamp::from_nanos(u64::try_from(ns).unwrap_or(0))).filter(|from| *from > now))
}

/// Drops the wait of a store created after a loss (its instant belongs to a past boot).
pub(super) fn forget_grants_from(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM meta WHERE key = 'grants_from_ns'", [])?;
    Ok(())
}
