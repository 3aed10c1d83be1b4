//! A durable [`LeadershipStore`] in one SQLite file, the embedded default for anything
//! that keeps state. Several processes on one machine may open the same file.
//!
//! Invariants:
//! - Every operation that decides something (claim, revoke, pin, unpin, fenced write) is
//!   one `BEGIN IMMEDIATE` transaction that reads, decides by the shared lease `rules` and
//!   writes; SQLite's write lock makes it atomic across threads and processes, and
//!   `busy_timeout` makes contenders wait rather than fail.
//! - Expiries are stored as readings of the store clock (`CLOCK_MONOTONIC`, the same for
//!   every process on the machine) with the machine's boot id. On opening a file last used
//!   in another boot, every held lease is given its full duration again from now: nobody is
//!   granted a lease a holder may still believe valid; reservations (directed handovers)
//!   of the old boot are dropped. A file last used by another machine (another machine id)
//!   is refused: a state directory belongs to one machine.
//! - A lease's row outlives its tenure (with no holder), so terms only go up across
//!   restarts. Settings and their version change in the same transaction; the history's
//!   `tenures` rows (`history.rs`) change in the claim's and the revoke's.
//! - Durability: WAL journal; with [`Durability::Full`] (the default) every commit is
//!   fsynced before the call returns, so an acknowledged write survives power loss too.
//! - Every transaction first checks that it still talks to the store it opened (the same
//!   file, id and no older generation) and every write raises the generation
//!   (`identity.rs`); a file lost under running agents is [`StoreFailure::Replaced`] for
//!   them, never silently another store.
//! - Other processes' changes reach this process's watchers at once (inotify on the
//!   database's directory wakes the poller at each commit), and within one poll interval
//!   at the latest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::watch;

use super::rules::{self, LeaseRecord, Reservation};
use super::watchers::Watchers;
use super::{
    Claim, Claimant, Clock, IncarnationId, LeadershipStore, Lease, LeaseError, MonotonicClock, Release, StoreError,
    StoreFailure, Tenure, Timestamp, WriteError, validate_entity,
};
use crate::names::{AppName, UnitName};
use crate::settings::{Settings, SettingsSnapshot, SettingsWrite};

/// How hard a commit is pushed to disk before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit (`synchronous=FULL`): survives power loss.
    Full,
    /// fsync at checkpoints only (`synchronous=NORMAL`): survives a process crash; the last
    /// commits may be lost on power loss.
    Normal,
}

/// How a [`SqliteStore`] is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Commit durability.
    pub durability: Durability,
    /// How often other processes' commits are looked for, for watchers.
    pub poll_interval: Duration,
    /// The machine's boot id; `None` reads `/proc/sys/kernel/random/boot_id`.
    pub boot_id: Option<String>,
    /// How long to wait for another process's write lock before failing.
    pub busy_timeout: Duration,
    /// What to do if the file holds no store yet.
    pub new_store: NewStore,
    /// The machine's id; `None` reads `/etc/machine-id` (an empty one skips the check).
    pub machine_id: Option<String>,
    /// Open a file brought here from elsewhere instead of refusing it: one last used by
    /// another machine ([`OpenError::OtherMachine`]: it was moved here for good), or a copy of
    /// its store's file put in its place ([`OpenError::Copy`]: a restored backup, a state
    /// directory copied here), which then grants no new tenure for the given wait (agents of
    /// the original may still run, counting on leases the copy does not show; the wait must
    /// cover their claim duration). `None` refuses both.
    pub accept_moved: Option<Duration>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            poll_interval: Duration::from_millis(20),
            boot_id: None,
            busy_timeout: Duration::from_secs(10),
            new_store: NewStore::Create,
            machine_id: None,
            accept_moved: None,
        }
    }
}

/// Why a SQLite store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// SQLite refused the file or the schema.
    #[error("cannot open the leadership store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer version of this program.
    #[error("the leadership store {path} has schema version {found}; this program knows version {SCHEMA_VERSION}")]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// The boot id could not be read.
    #[error("cannot read the machine's boot id: {0}")]
    BootId(std::io::Error),
    /// The file could not be created or made private.
    #[error("cannot create the leadership store {path}: {source}")]
    File {
        /// The database file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Opened read-only, the file holds no store (missing, empty, or never initialised).
    #[error("{path} holds no leadership state")]
    Empty {
        /// The database file.
        path: PathBuf,
    },
    /// There is no store, but units ran with one here: it was deleted or replaced, maybe
    /// under agents that still run ([`NewStore::Refuse`]).
    #[error(
        "{path} holds no leadership store, but units ran in this state directory before: it was deleted or moved, \
         maybe under agents that still run. Restore it, or start with --accept-new-store (terms start again, and no \
         unit leads until every lease of the lost store has run out)"
    )]
    Lost {
        /// The database file.
        path: PathBuf,
    },
    /// The file is a copy of its store's file, not the file itself (see
    /// [`SqliteOptions::accept_moved`]).
    #[error(
        "{path} is a copy of the leadership store's file, not the file itself (it was made as file {recorded}, this \
         is {actual}): a restored backup, or a state directory copied here. Agents of the original may still run \
         elsewhere, counting on leases this copy does not show. Once none does, start with --accept-new-store (no \
         unit leads until every lease the original granted has run out)"
    )]
    Copy {
        /// The database file.
        path: PathBuf,
        /// The file the store was made in (inode and birth time).
        recorded: String,
        /// This file.
        actual: String,
    },
    /// A copy of the store's file was to be adopted, but a write-ahead log lies beside it,
    /// which SQLite would apply to the copy.
    #[error(
        "{path} is a copy of the leadership store's file, and the write-ahead log {log} beside it most likely \
         belongs to the file it replaced: SQLite would apply it to the copy and mix the two. Stop every agent of \
         this store, move {log} and {path}-shm out of the way (unless they were copied together with {path}), and \
         start again with --accept-new-store",
        log = log.display()
    )]
    CopyBesideLog {
        /// The database file.
        path: PathBuf,
        /// Its write-ahead log.
        log: PathBuf,
    },
    /// The file was last used by another machine: a state directory belongs to one machine
    /// (shared storage would mix their clocks and their locks).
    #[error(
        "{path} was last used by another machine (machine id {recorded}; this one is {ours}): a state directory \
         belongs to one machine; to share leadership across machines use --store etcd://... If the directory was \
         moved here for good, start once with --accept-new-store"
    )]
    OtherMachine {
        /// The database file.
        path: PathBuf,
        /// The machine id the file records.
        recorded: String,
        /// This machine's.
        ours: String,
    },
}

fn current_boot_id(options: &SqliteOptions) -> Result<String, OpenError> {
    match options.boot_id.clone() {
        Some(id) => Ok(id),
        None => std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .map_err(OpenError::BootId),
    }
}

/// The file SQLite keeps beside the database at `path` under its name and `suffix`
/// (`-wal`: the write-ahead log, `-shm`: its index).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates the database file 0600 if it is missing (never through a link), and makes an
/// existing one and its WAL files private if this user owns them. True if it created it.
fn create_private(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let created = crate::state_dir::open_private_file(path, std::fs::OpenOptions::new().write(true).create_new(true));
    match created {
        Ok(_) => return Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(std::io::Error::other("it is a symbolic link; refusing to follow it"));
    }
    let me = rustix::process::geteuid().as_raw();
    for suffix in ["", "-wal", "-shm"] {
        let file = beside(path, suffix);
        if let Ok(meta) = std::fs::symlink_metadata(&file)
            && meta.is_file()
            && meta.uid() == me
            && meta.mode() & 0o077 != 0
        {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(false)
}

mod history;
mod identity;
mod unit_data;

pub use identity::NewStore;
use identity::StoreIdentity;

/// 2 added reservations for directed handovers; 3, the leadership history (`tenures`); 4,
/// the holder's incarnation (an agent of version 3 would extend another incarnation's
/// tenure as its own, so it must refuse the file: it does, as a newer schema).
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value ANY NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    app TEXT PRIMARY KEY,
    holder TEXT,
    term INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    reserved_for TEXT,
    reserved_until_ns INTEGER NOT NULL DEFAULT 0,
    incarnation TEXT,
    origin TEXT
);
CREATE TABLE IF NOT EXISTS pins (app TEXT NOT NULL, entity TEXT NOT NULL, PRIMARY KEY (app, entity)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (
    app TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (app, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings_versions (app TEXT PRIMARY KEY, version INTEGER NOT NULL);
";

struct Shared {
    conn: Mutex<Connection>,
    watchers: Watchers,
}

/// The file and its connection; every call blocks its thread (see [`SqliteStore`]).
struct SqliteFile {
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    path: PathBuf,
    options: SqliteOptions,
    /// Started on the first watch: stores nobody watches need no thread.
    poller: std::sync::Once,
    /// Opened read-only on a file whose expiries belong to another boot (see
    /// [`SqliteStore::open_read_only`]).
    foreign_boot: bool,
    /// Opened read-only on a file from before incarnations (schema 2 or 3).
    legacy_leases: bool,
    /// The store this process opened, checked in every transaction (`None` read-only).
    identity: Option<StoreIdentity>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.file.path).finish_non_exhaustive()
    }
}

/// SQLite's error, with its kind: a lock another connection holds past the busy timeout is
/// busy, a damaged file or one that is not a database corrupt, a file that cannot be opened
/// (or a full disk) unreachable.
fn store_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let kind = match &err {
        // Writing a file that was renamed or deleted under this connection.
        rusqlite::Error::SqliteFailure(failure, _) if failure.extended_code == 1032 => StoreFailure::Replaced,
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreFailure::Busy,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreFailure::Corrupt,
            ErrorCode::CannotOpen | ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::PermissionDenied => {
                StoreFailure::Unreachable
            }
            _ => StoreFailure::Failed,
        },
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => StoreFailure::Corrupt,
        _ => StoreFailure::Failed,
    };
    StoreError::caused_by(kind, "SQLite", err)
}

impl From<rusqlite::Error> for LeaseError {
    fn from(err: rusqlite::Error) -> Self {
        LeaseError::Store(store_error(err))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        store_error(err)
    }
}

impl From<rusqlite::Error> for WriteError {
    fn from(err: rusqlite::Error) -> Self {
        WriteError::Store(store_error(err))
    }
}

fn ns(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)
}

fn ts(nanos: i64) -> Timestamp {
    Timestamp::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

fn unit_from_db(text: String) -> rusqlite::Result<UnitName> {
    UnitName::new(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn app_from_db(text: String) -> rusqlite::Result<AppName> {
    AppName::new(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

impl SqliteFile {
    /// See [`SqliteStore::open_with`].
    ///
    fn open_with(path: &Path, clock: Arc<dyn Clock>, options: SqliteOptions) -> Result<Self, OpenError> {
        let boot_id = current_boot_id(&options)?;
        let sqlite = |source| OpenError::Sqlite { path: path.to_owned(), source };
        let created = create_private(path).map_err(|source| OpenError::File { path: path.to_owned(), source })?;
        if created {
            if options.new_store == NewStore::Refuse {
                let _ = std::fs::remove_file(path);
                return Err(OpenError::Lost { path: path.to_owned() });
            }
            // A store created after a loss must not take over the lost file's journal (its
            // agents may still have it open: they keep theirs, the new store gets its own).
            // Only then: a racing opener of a fresh file may have made the journal already.
            let after_loss = matches!(options.new_store, NewStore::CreateAfterLoss { .. });
            for suffix in ["-wal", "-shm"].into_iter().filter(|_| after_loss) {
                let _ = std::fs::remove_file(beside(path, suffix));
            }
        }
        // SQLite says "unable to open database file" for any reason: the OS says which.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| OpenError::File { path: path.to_owned(), source })?;
        let mut conn = open_connection(path, &options).map_err(sqlite)?;
        // Until the file is known to be the store's own, closing must not checkpoint: the
        // write-ahead log may belong to another file (see `identity.rs`).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(sqlite)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite)?;
        tx.execute_batch(SCHEMA).map_err(sqlite)?;
        tx.execute_batch(history::SCHEMA).map_err(sqlite)?;
        tx.execute_batch(unit_data::SCHEMA).map_err(sqlite)?;
        let found: Option<i64> =
            tx.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).optional().map_err(sqlite)?;
        let mut found = found;
        if found == Some(1) {
            tx.execute_batch(
                "ALTER TABLE leases ADD COLUMN reserved_for TEXT;
                 ALTER TABLE leases ADD COLUMN reserved_until_ns INTEGER NOT NULL DEFAULT 0;
                 UPDATE meta SET value = 2 WHERE key = 'schema';",
            )
            .map_err(sqlite)?;
            found = Some(2);
        }
        if found == Some(2) {
            // The history's table was created above; it starts empty.
            tx.execute_batch("UPDATE meta SET value = 3 WHERE key = 'schema';").map_err(sqlite)?;
            found = Some(3);
        }
        if found == Some(3) {
            // Leases held before read as held by no incarnation: nobody extends them, they
            // run out.
            tx.execute_batch(
                "ALTER TABLE leases ADD COLUMN incarnation TEXT;
                 ALTER TABLE leases ADD COLUMN origin TEXT;
                 UPDATE meta SET value = 4 WHERE key = 'schema';",
            )
            .map_err(sqlite)?;
            found = Some(4);
        }
        match found {
            Some(SCHEMA_VERSION) => {}
            Some(found) => return Err(OpenError::Schema { path: path.to_owned(), found }),
            None => {
                tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?1)", [SCHEMA_VERSION])
                    .map_err(sqlite)?;
                if let NewStore::CreateAfterLoss { wait } = options.new_store {
                    identity::grant_nothing_before(&tx, clock.now() + wait).map_err(sqlite)?;
                }
            }
        }
        let identity = StoreIdentity::read(&tx, path, options.accept_moved, clock.now())?;
        tx.commit().map_err(sqlite)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false).map_err(sqlite)?;
        let machine = current_machine_id(&options);
        let accept_other = options.accept_moved.is_some();
        let boot = Boot { id: &boot_id, machine: &machine, accept_other, keep_wait: identity.adopted_copy() };
        let other = adopt_boot(&mut conn, &boot, clock.now(), clock.wall_now()).map_err(sqlite)?;
        if let Some(recorded) = other {
            return Err(OpenError::OtherMachine { path: path.to_owned(), recorded, ours: machine });
        }
        let shared = Arc::new(Shared { conn: Mutex::new(conn), watchers: Watchers::default() });
        Ok(Self {
            clock,
            shared,
            path: path.to_owned(),
            options,
            poller: std::sync::Once::new(),
            foreign_boot: false,
            legacy_leases: false,
            identity: Some(identity),
        })
    }

    /// See [`SqliteStore::open_read_only`].
    fn open_read_only(path: &Path) -> Result<Self, OpenError> {
        let options = SqliteOptions::default();
        let boot_id = current_boot_id(&options)?;
        let sqlite = |source| OpenError::Sqlite { path: path.to_owned(), source };
        let missing = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
        if missing {
            return Err(OpenError::Empty { path: path.to_owned() });
        }
        let mut legacy_leases = false;
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        conn.busy_timeout(options.busy_timeout).map_err(sqlite)?;
        let schema: Option<i64> = match conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
        {
            Ok(version) => Some(version),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(rusqlite::Error::SqliteFailure(_, Some(message))) if message.contains("no such table") => None,
            Err(err) => return Err(sqlite(err)),
        };
        match schema {
            Some(SCHEMA_VERSION) => {}
            // A file from before the history reads with none, and from before incarnations
            // with no incarnations; `status` only reads.
            Some(2 | 3) => legacy_leases = true,
            Some(found) => return Err(OpenError::Schema { path: path.to_owned(), found }),
            None => return Err(OpenError::Empty { path: path.to_owned() }),
        }
        let recorded: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'boot_id'", [], |r| r.get(0))
            .optional()
            .map_err(sqlite)?;
        let shared = Arc::new(Shared { conn: Mutex::new(conn), watchers: Watchers::default() });
        Ok(Self {
            clock: Arc::new(MonotonicClock),
            shared,
            path: path.to_owned(),
            options,
            poller: std::sync::Once::new(),
            foreign_boot: recorded.as_deref() != Some(boot_id.as_str()),
            legacy_leases,
            identity: None,
        })
    }

    /// Starts watching for other processes' commits, once.
    fn ensure_poller(&self) {
        self.poller.call_once(|| {
            let started = open_connection(&self.path, &self.options)
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|conn| {
                    let signal = CommitSignal::watch(&self.path);
                    start_poller(conn, signal, self.options.poll_interval, Arc::downgrade(&self.shared))
                });
            if let Err(err) = started {
                tracing::warn!(path = %self.path.display(), "other processes' changes will go unnoticed: {err}");
            }
        });
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.shared.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one transaction, committed only if `f` succeeds (rolled back otherwise),
    /// after checking that the file is still the store this process opened; a write
    /// transaction raises the store's generation.
    fn transaction<T, E: From<rusqlite::Error> + From<StoreError>>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(behavior)?;
        let write = matches!(behavior, TransactionBehavior::Immediate);
        let checked = self
            .identity
            .as_ref()
            .map(|identity| identity.check(&tx).map(|generation| (identity, generation)))
            .transpose()?;
        let value = f(&tx)?;
        let raised = match checked {
            Some((identity, generation)) if write => Some((identity, identity.raise(&tx, generation)?)),
            _ => None,
        };
        tx.commit()?;
        if let Some((identity, generation)) = raised {
            identity.committed(generation);
        }
        Ok(value)
    }

    /// A `BEGIN IMMEDIATE` transaction: it takes the write lock first, so its reads and
    /// writes are one atomic decision across threads and processes.
    fn write_tx<T, E: From<rusqlite::Error> + From<StoreError>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(TransactionBehavior::Immediate, f)
    }

    /// Runs the pin statement `sql` for (`app`, `entity`), announcing a change if it made one.
    fn change_pin(&self, app: &AppName, entity: &str, sql: &str) -> Result<(), LeaseError> {
        validate_entity(entity)?;
        let changed = self.write_tx(|tx| {
            let changed = tx.prepare_cached(sql)?.execute([app.as_str(), entity])? > 0;
            if changed {
                bump_lease_generation(tx)?;
            }
            Ok::<_, LeaseError>(changed)
        })?;
        if changed {
            self.shared.watchers.leases_changed(app);
        }
        Ok(())
    }

    /// A read transaction: it sees a single committed state.
    fn read_tx<T, E: From<rusqlite::Error> + From<StoreError>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(TransactionBehavior::Deferred, f)
    }
}

fn open_connection(path: &Path, options: &SqliteOptions) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(options.busy_timeout)?;
    use_wal(&conn, options.busy_timeout)?;
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(conn)
}

/// Switches the file to WAL unless it already is. Changing the journal mode needs the
/// exclusive lock and SQLite does not wait for it (no busy handler), so several processes
/// opening a new file at once retry, with a backoff, for up to `patience`.
fn use_wal(conn: &Connection, patience: Duration) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let result = conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)).and_then(|mode| {
            if mode.eq_ignore_ascii_case("wal") { Ok(()) } else { conn.pragma_update(None, "journal_mode", "WAL") }
        });
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    && started.elapsed() < patience =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Makes the file's expiries mean something on this boot: after a reboot, every held lease
/// runs for its full duration from now.
/// The machine's id (`/etc/machine-id`), empty if it cannot be read.
fn current_machine_id(options: &SqliteOptions) -> String {
    options.machine_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/machine-id").map(|id| id.trim().to_owned()).unwrap_or_default()
    })
}

/// The boot and machine a store is opened on.
struct Boot<'a> {
    id: &'a str,
    machine: &'a str,
    /// Open a file another machine used last.
    accept_other: bool,
    /// Keep the wait before new tenures: this open set it (a copy adopted), on this boot.
    keep_wait: bool,
}

/// Makes the file's expiries mean something on this boot (see `adopt_boot`'s callers), and
/// records this machine: `Ok(Some(recorded))` if the file was last used by another machine
/// (and `accept_other` is not set), changing nothing.
fn adopt_boot(
    conn: &mut Connection,
    boot: &Boot<'_>,
    now: Timestamp,
    wall_now: std::time::SystemTime,
) -> rusqlite::Result<Option<String>> {
    let Boot { id: boot_id, machine, accept_other, keep_wait } = *boot;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let recorded_machine: Option<String> =
        tx.query_row("SELECT value FROM meta WHERE key = 'machine_id'", [], |r| r.get(0)).optional()?;
    if !machine.is_empty() && recorded_machine.as_deref() != Some(machine) {
        if let Some(recorded) = recorded_machine.filter(|m| !m.is_empty() && !accept_other) {
            return Ok(Some(recorded));
        }
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('machine_id', ?1)", [machine])?;
    }
    let recorded: Option<String> =
        tx.query_row("SELECT value FROM meta WHERE key = 'boot_id'", [], |r| r.get(0)).optional()?;
    if recorded.as_deref() != Some(boot_id) {
        if recorded.is_some() {
            // Readings of another boot's clock; nobody of that boot runs now.
            if !keep_wait {
                identity::forget_grants_from(&tx)?;
            }
            // A directed handover asked for before the reboot is not this boot's to honour.
            tx.execute("UPDATE leases SET reserved_for = NULL, reserved_until_ns = 0", [])?;
        }
        history::end_at_reboot(&tx, crate::leadership::history::unix_nanos(wall_now))?;
        tx.execute("UPDATE leases SET expires_ns = ?1 + duration_ns WHERE holder IS NOT NULL", [ns(now)])?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('boot_id', ?1)", [boot_id])?;
    }
    tx.commit()?;
    Ok(None)
}

impl SqliteFile {
    /// `app`'s lease record and whether it is pinned (a file from before incarnations, opened
    /// read-only, has no incarnation columns).
    fn read_lease(&self, tx: &Transaction<'_>, app: &AppName) -> rusqlite::Result<(Option<LeaseRecord>, bool)> {
        let sql = if self.legacy_leases {
            "SELECT holder, term, expires_ns, reserved_for, reserved_until_ns, NULL, NULL FROM leases WHERE app = ?1"
        } else {
            "SELECT holder, term, expires_ns, reserved_for, reserved_until_ns, incarnation, origin FROM leases WHERE app = ?1"
        };
        let record = tx
            .prepare_cached(sql)?
            .query_row([app.as_str()], |r| {
                Ok((
                    (r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?),
                    (r.get::<_, Option<String>>(3)?, r.get::<_, i64>(4)?),
                    (r.get::<_, Option<String>>(5)?, r.get::<_, Option<String>>(6)?),
                ))
            })
            .optional()?;
        let record = match record {
            Some(((holder, term, expires), (reserved_for, reserved_until), (incarnation, origin))) => {
                Some(LeaseRecord {
                    holder: holder.map(unit_from_db).transpose()?,
                    incarnation: incarnation
                        .map(|text| {
                            IncarnationId::parse(&text)
                                .ok_or_else(|| corrupt_column("incarnation", "not an incarnation id"))
                        })
                        .transpose()?,
                    origin: origin
                        .map(|text| serde_json::from_str(&text).map(Arc::new).map_err(|e| corrupt_column("origin", e)))
                        .transpose()?,
                    term: u64::try_from(term).unwrap_or(0),
                    expires: ts(expires),
                    reserved: reserved_for
                        .map(unit_from_db)
                        .transpose()?
                        .map(|unit| Reservation { unit, until: ts(reserved_until) }),
                })
            }
            None => None,
        };
        let pinned = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM pins WHERE app = ?1)")?
            .query_row([app.as_str()], |r| r.get(0))?;
        Ok((record, pinned))
    }
}

/// A column whose value this program cannot read.
fn corrupt_column(column: &str, what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("leases.{column}: {what}").into())
}

fn write_lease(tx: &Transaction<'_>, app: &AppName, record: &LeaseRecord, duration: Duration) -> rusqlite::Result<()> {
    let duration_ns = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
    let origin = record.origin.as_ref().map(|o| serde_json::to_string(o.as_ref()).unwrap_or_default());
    tx.prepare_cached(
        "INSERT INTO leases (app, holder, term, expires_ns, duration_ns, reserved_for, reserved_until_ns, incarnation, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (app) DO UPDATE SET holder = ?2, term = ?3, expires_ns = ?4,
             duration_ns = CASE WHEN ?5 > 0 THEN ?5 ELSE duration_ns END,
             reserved_for = ?6, reserved_until_ns = ?7, incarnation = ?8, origin = ?9",
    )?
    .execute(params![
        app.as_str(),
        record.holder.as_ref().map(UnitName::as_str),
        i64::try_from(record.term).unwrap_or(i64::MAX),
        ns(record.expires),
        duration_ns,
        record.reserved.as_ref().map(|r| r.unit.as_str()),
        record.reserved.as_ref().map_or(0, |r| ns(r.until)),
        record.incarnation.map(|id| id.to_string()),
        origin,
    ])?;
    Ok(())
}

fn bump_lease_generation(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('lease_generation', 1)
         ON CONFLICT (key) DO UPDATE SET value = value + 1",
    )?
    .execute([])?;
    Ok(())
}

fn read_bucket(tx: &Transaction<'_>, app: &AppName) -> rusqlite::Result<SettingsSnapshot> {
    let version: i64 = tx
        .prepare_cached("SELECT version FROM settings_versions WHERE app = ?1")?
        .query_row([app.as_str()], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut stmt = tx.prepare_cached("SELECT key, value FROM settings WHERE app = ?1")?;
    let values = stmt
        .query_map([app.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Settings>>()?;
    Ok(SettingsSnapshot { version: u64::try_from(version).unwrap_or(0), values: Arc::new(values) })
}

/// Leases, pins and settings in a SQLite file.
///
/// Every operation runs on tokio's blocking pool (inline when called outside a tokio
/// runtime), so an `fsync` or a wait for another process's write lock never holds an async
/// worker: the renewals of other units go on meanwhile. SQLite's write lock orders the
/// writers, so a renewal waits for at most the one write holding it.
pub struct SqliteStore {
    file: Arc<SqliteFile>,
}

/// An error for a blocking call that could not finish (its thread panicked or the runtime
/// is shutting down): nothing is known to have been decided.
trait Unfinished {
    fn unfinished(reason: String) -> Self;
}

impl Unfinished for LeaseError {
    fn unfinished(reason: String) -> Self {
        LeaseError::Store(StoreError::failed(reason))
    }
}

impl Unfinished for StoreError {
    fn unfinished(reason: String) -> Self {
        StoreError::failed(reason)
    }
}

impl Unfinished for WriteError {
    fn unfinished(reason: String) -> Self {
        WriteError::Store(StoreError::failed(reason))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` on the machine's monotonic clock.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_with(path, Arc::new(MonotonicClock), SqliteOptions::default())
    }

    /// Opens the store at `path` judging expiry by `clock`.
    ///
    /// Safe when several processes create and open a new file at once: the file is created
    /// 0600 (leader settings hold secrets; SQLite gives its WAL files the same mode), the
    /// switch to WAL is retried while another process holds the lock, and the schema is
    /// created or migrated in one `BEGIN IMMEDIATE` transaction.
    pub fn open_with(path: &Path, clock: Arc<dyn Clock>, options: SqliteOptions) -> Result<Self, OpenError> {
        Ok(Self { file: Arc::new(SqliteFile::open_with(path, clock, options)?) })
    }

    /// Opens an existing store for reading only, changing nothing in it (for `status`): no
    /// schema is created, no boot is adopted. A file last used in another boot is read as
    /// [`Self::open`] would leave it: every held lease runs for its full duration from now.
    /// Writes through this store fail.
    pub fn open_read_only(path: &Path) -> Result<Self, OpenError> {
        Ok(Self { file: Arc::new(SqliteFile::open_read_only(path)?) })
    }

    /// The store's id, made when it was created (`None` opened read-only).
    pub fn store_id(&self) -> Option<&str> {
        self.file.identity.as_ref().map(StoreIdentity::id)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Runs `op` on the file off the async workers.
    async fn blocking<T, E>(&self, op: impl FnOnce(&SqliteFile) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: Unfinished + Send + 'static,
    {
        let file = self.file.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(tokio) => tokio
                .spawn_blocking(move || op(&file))
                .await
                .unwrap_or_else(|err| Err(E::unfinished(format!("the store call did not finish: {err}")))),
            Err(_) => op(&file),
        }
    }
}

#[async_trait::async_trait]
impl LeadershipStore for SqliteStore {
    fn clock(&self) -> &Arc<dyn Clock> {
        &self.file.clock
    }

    async fn claim(&self, claimant: &Claimant, duration: Duration) -> Result<Claim, LeaseError> {
        let claimant = claimant.clone();
        self.blocking(move |file| file.claim(&claimant, duration)).await
    }

    async fn revoke(&self, claimant: &Claimant, why: Release) -> Result<(), LeaseError> {
        let claimant = claimant.clone();
        self.blocking(move |file| file.revoke(&claimant, why)).await
    }

    async fn history(&self, app: Option<&AppName>, limit: usize) -> Result<Vec<Tenure>, LeaseError> {
        let app = app.cloned();
        self.blocking(move |file| history::read(&file.conn(), app.as_ref(), limit)).await
    }

    async fn mark_lost_renewals(&self, unit: &UnitName, term: u64) -> Result<super::LostRenewals, LeaseError> {
        let unit = unit.clone();
        self.blocking(move |file| {
            file.write_tx(|tx| history::mark_lost_renewals(tx, &unit, term).map_err(LeaseError::from))
        })
        .await
    }

    async fn reserve(&self, unit: &UnitName, duration: Duration) -> Result<(), LeaseError> {
        let unit = unit.clone();
        self.blocking(move |file| file.reserve(&unit, duration)).await
    }

    async fn reservation(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError> {
        let app = app.clone();
        self.blocking(move |file| file.reservation(&app)).await
    }

    async fn pin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        let (app, entity) = (app.clone(), entity.to_owned());
        self.blocking(move |file| file.pin(&app, &entity)).await
    }

    async fn unpin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        let (app, entity) = (app.clone(), entity.to_owned());
        self.blocking(move |file| file.unpin(&app, &entity)).await
    }

    async fn pins(&self) -> Result<BTreeMap<AppName, Vec<String>>, LeaseError> {
        self.blocking(SqliteFile::pins).await
    }

    async fn lease(&self, app: &AppName) -> Result<Option<Lease>, LeaseError> {
        let app = app.clone();
        self.blocking(move |file| file.lease(&app)).await
    }

    async fn last_term(&self, app: &AppName) -> Result<u64, LeaseError> {
        let app = app.clone();
        self.blocking(move |file| file.last_term(&app)).await
    }

    async fn leaders(&self) -> Result<BTreeMap<AppName, UnitName>, LeaseError> {
        self.blocking(SqliteFile::leaders).await
    }

    async fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, StoreError> {
        let app = app.clone();
        self.blocking(move |file| file.read_settings(&app)).await
    }

    async fn write_settings_by(
        &self,
        writer: &Claimant,
        term: u64,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<SettingsSnapshot, WriteError> {
        let (writer, group) = (writer.clone(), group.to_vec());
        self.blocking(move |file| file.write_settings_by(&writer, term, &group, apply_by)).await
    }

    fn watch_settings(&self, app: &AppName) -> watch::Receiver<u64> {
        self.file.watch_settings(app)
    }

    fn watch_leases(&self, app: &AppName) -> watch::Receiver<u64> {
        self.file.watch_leases(app)
    }
}

/// The blocking operations, one per method of [`LeadershipStore`].
impl SqliteFile {
    fn claim(&self, claimant: &Claimant, duration: Duration) -> Result<Claim, LeaseError> {
        super::validate_duration(duration)?;
        let start = self.clock.now();
        let unit = claimant.unit();
        let (claim, new_holder) = self.write_tx(|tx| {
            let (record, pinned) = self.read_lease(tx, unit.app())?;
            let now = self.clock.now();
            let grants_from = identity::grants_from(tx, now)?;
            let (claim, new) = rules::claim(record.as_ref(), pinned, claimant, duration, (start, now), grants_from)?;
            let new_holder = record.as_ref().is_none_or(|r| r.term != new.term);
            write_lease(tx, unit.app(), &new, duration)?;
            if let Some(grant) = crate::leadership::history::on_grant(record.as_ref(), &new, self.clock.as_ref()) {
                history::record_grant(tx, &grant)?;
            }
            if new_holder {
                bump_lease_generation(tx)?;
            }
            Ok::<_, LeaseError>((claim, new_holder))
        })?;
        if new_holder {
            self.shared.watchers.leases_changed(unit.app());
        }
        Ok(claim)
    }

    fn revoke(&self, claimant: &Claimant, why: Release) -> Result<(), LeaseError> {
        let unit = claimant.unit();
        let changed = self.write_tx(|tx| {
            let (record, pinned) = self.read_lease(tx, unit.app())?;
            let Some(new) = rules::revoke(record.as_ref(), pinned, claimant, self.clock.now())? else {
                return Ok::<_, LeaseError>(false);
            };
            write_lease(tx, unit.app(), &new, Duration::ZERO)?;
            let at = crate::leadership::history::unix_nanos(self.clock.wall_now());
            history::record_revoke(tx, unit, new.term, at, why)?;
            bump_lease_generation(tx)?;
            Ok(true)
        })?;
        if changed {
            self.shared.watchers.leases_changed(unit.app());
        }
        Ok(())
    }

    fn reserve(&self, unit: &UnitName, duration: Duration) -> Result<(), LeaseError> {
        super::validate_duration(duration)?;
        let until = self.clock.now() + duration;
        self.write_tx(|tx| {
            let (record, _) = self.read_lease(tx, unit.app())?;
            write_lease(tx, unit.app(), &rules::reserve(record.as_ref(), unit, until), Duration::ZERO)?;
            bump_lease_generation(tx)?;
            Ok::<_, LeaseError>(())
        })?;
        self.shared.watchers.leases_changed(unit.app());
        Ok(())
    }

    fn reservation(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError> {
        let now = self.clock.now();
        self.read_tx(|tx| {
            let (record, _) = self.read_lease(tx, app)?;
            Ok(record.and_then(|r| r.reserved).filter(|r| r.until > now).map(|r| r.unit))
        })
    }

    fn pin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        self.change_pin(app, entity, "INSERT OR IGNORE INTO pins (app, entity) VALUES (?1, ?2)")
    }

    fn unpin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        self.change_pin(app, entity, "DELETE FROM pins WHERE app = ?1 AND entity = ?2")
    }

    fn pins(&self) -> Result<BTreeMap<AppName, Vec<String>>, LeaseError> {
        self.read_tx(|tx| {
            let mut stmt = tx.prepare_cached("SELECT app, entity FROM pins ORDER BY app, entity")?;
            let rows = stmt.query_map([], |r| Ok((app_from_db(r.get(0)?)?, r.get::<_, String>(1)?)))?;
            let mut pins: BTreeMap<AppName, Vec<String>> = BTreeMap::new();
            for row in rows {
                let (app, entity) = row?;
                pins.entry(app).or_default().push(entity);
            }
            Ok(pins)
        })
    }

    fn lease(&self, app: &AppName) -> Result<Option<Lease>, LeaseError> {
        let now = self.clock.now();
        self.read_tx(|tx| {
            let (mut record, pinned) = self.read_lease(tx, app)?;
            if self.foreign_boot
                && let Some(record) = record.as_mut().filter(|r| r.holder.is_some())
            {
                // As the next writer will adopt it: a full duration from now.
                let duration: i64 = tx
                    .prepare_cached("SELECT duration_ns FROM leases WHERE app = ?1")?
                    .query_row([app.as_str()], |r| r.get(0))?;
                record.expires = now + Duration::from_nanos(u64::try_from(duration).unwrap_or(0));
            }
            Ok(record.and_then(|r| r.live(pinned, now)))
        })
    }

    fn last_term(&self, app: &AppName) -> Result<u64, LeaseError> {
        self.read_tx(|tx| {
            let term: Option<i64> = tx
                .prepare_cached("SELECT term FROM leases WHERE app = ?1")?
                .query_row([app.as_str()], |r| r.get(0))
                .optional()?;
            Ok(term.map_or(0, |t| u64::try_from(t).unwrap_or(0)))
        })
    }

    fn leaders(&self) -> Result<BTreeMap<AppName, UnitName>, LeaseError> {
        // Read-only on another boot's file, every held lease still runs (see `lease`).
        let now = if self.foreign_boot { i64::MIN } else { ns(self.clock.now()) };
        self.read_tx(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT app, holder FROM leases WHERE holder IS NOT NULL
                 AND (expires_ns > ?1 OR EXISTS (SELECT 1 FROM pins WHERE pins.app = leases.app))",
            )?;
            let rows = stmt.query_map([now], |r| Ok((app_from_db(r.get(0)?)?, unit_from_db(r.get(1)?)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, StoreError> {
        self.read_tx(|tx| Ok(read_bucket(tx, app)?))
    }

    fn write_settings_by(
        &self,
        writer: &Claimant,
        term: u64,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<SettingsSnapshot, WriteError> {
        let app = writer.unit().app();
        let (snapshot, changed) = self.write_tx(|tx| {
            // Decided with the write lock held: waiting for it may have taken a while.
            super::check_apply_by(apply_by)?;
            let (record, pinned) = self.read_lease(tx, app)?;
            rules::check_fence(record.as_ref(), pinned, writer, term, self.clock.now())?;
            let current = read_bucket(tx, app)?;
            let write = SettingsWrite::validate(group, &current.values)?;
            if write.is_noop_on(&current.values) {
                return Ok::<_, WriteError>((current, false));
            }
            for (key, value) in write.changes() {
                match value {
                    Some(value) => tx
                        .prepare_cached("INSERT OR REPLACE INTO settings (app, key, value) VALUES (?1, ?2, ?3)")?
                        .execute([app.as_str(), key, value])?,
                    None => tx
                        .prepare_cached("DELETE FROM settings WHERE app = ?1 AND key = ?2")?
                        .execute([app.as_str(), key])?,
                };
            }
            let version = current.version + 1;
            tx.prepare_cached("INSERT OR REPLACE INTO settings_versions (app, version) VALUES (?1, ?2)")?
                .execute(params![app.as_str(), i64::try_from(version).unwrap_or(i64::MAX)])?;
            let mut values = (*current.values).clone();
            write.apply_to(&mut values);
            Ok((SettingsSnapshot { version, values: Arc::new(values) }, true))
        })?;
        if changed {
            self.shared.watchers.settings_changed(app, snapshot.version);
        }
        Ok(snapshot)
    }

    fn watch_settings(&self, app: &AppName) -> watch::Receiver<u64> {
        self.ensure_poller();
        self.shared.watchers.settings(app, || self.read_settings(app).map_or(0, |s| s.version))
    }

    fn watch_leases(&self, app: &AppName) -> watch::Receiver<u64> {
        self.ensure_poller();
        self.shared.watchers.leases(app)
    }
}

/// Wakes the poller as soon as a file next to the database changes (every commit writes
/// the WAL), so that other processes' commits are seen at once rather than within a poll
/// interval; the interval stays the longest wait, and the only one where inotify is missing.
struct CommitSignal {
    inotify: Option<rustix::fd::OwnedFd>,
}

impl CommitSignal {
    fn watch(db: &Path) -> Self {
        use rustix::fs::inotify;
        let dir = match db.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let inotify = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok().filter(|fd| {
            let flags = inotify::WatchFlags::MODIFY | inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO;
            inotify::add_watch(fd, &dir, flags).is_ok()
        });
        Self { inotify }
    }

    /// Returns when the directory changed or `interval` passed.
    fn wait(&self, interval: Duration) {
        let Some(fd) = &self.inotify else { return std::thread::sleep(interval) };
        let timeout = rustix::event::Timespec {
            tv_sec: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(interval.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
            return std::thread::sleep(interval);
        }
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut events = rustix::fs::inotify::Reader::new(fd, &mut buf);
        // Non-blocking: drains what is queued, then stops at EAGAIN.
        while events.next().is_ok() {}
    }
}

/// Watches the file for other processes' commits and tells this process's watchers.
/// The thread ends within one interval of the store being dropped.
fn start_poller(
    conn: Connection,
    signal: CommitSignal,
    interval: Duration,
    shared: Weak<Shared>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("sqlite-store-poller".into()).spawn(move || {
        let mut last_data_version: i64 = -1;
        let mut last_generation: i64 = 0;
        loop {
            signal.wait(interval);
            let Some(shared) = shared.upgrade() else { return };
            let Ok(data_version) = conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)) else {
                continue;
            };
            if data_version == last_data_version {
                continue;
            }
            last_data_version = data_version;
            let generation = conn
                .query_row("SELECT value FROM meta WHERE key = 'lease_generation'", [], |r| r.get::<_, i64>(0))
                .unwrap_or(0);
            if generation != last_generation {
                last_generation = generation;
                shared.watchers.all_leases_changed();
            }
            for app in shared.watchers.watched_apps() {
                let version = conn
                    .query_row("SELECT version FROM settings_versions WHERE app = ?1", [app.as_str()], |r| {
                        r.get::<_, i64>(0)
                    })
                    .unwrap_or(0);
                shared.watchers.settings_changed(&app, u64::try_from(version).unwrap_or(0));
            }
            for app in shared.watchers.watched_unit_data() {
                shared.watchers.unit_data_changed(&app, unit_data::current_revision(&conn, &app));
            }
        }
    })?;
    Ok(())
}
