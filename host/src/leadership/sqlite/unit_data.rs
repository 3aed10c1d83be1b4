//! The SQLite store's unit data and membership (see
//! [`unit_data`](crate::leadership::unit_data)): the `units` and `unit_values` tables.
//!
//! Invariants: a unit's row stays after it is removed (`member = 0`, no writer, no values),
//! so a reader of the change feed hears of the removal; its `revision` is the application's
//! revision at its latest change, one above the highest before it (`MAX(revision)` over the
//! application's rows, found through the index), so the units changed after a revision are
//! one range of the index. The tables were added without a schema version: an agent from
//! before them ignores them (it has no unit data to write).

use std::sync::Arc;

use rusqlite::{OptionalExtension, Transaction, params};

use super::{SqliteFile, SqliteStore, Unfinished, store_error, unit_from_db};
use crate::leadership::unit_data::{self, Owner, UnitData, UnitDataChanges, UnitDataStore, UnitWriteError};
use crate::leadership::{Claimant, IncarnationId, StoreError, Timestamp};
use crate::names::{AppName, UnitName};
use crate::settings::Settings;

/// The tables, created on open.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS units (
    app TEXT NOT NULL,
    unit TEXT NOT NULL,
    member INTEGER NOT NULL,
    owner TEXT,
    origin TEXT,
    version INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (app, unit)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS units_by_revision ON units (app, revision);
CREATE TABLE IF NOT EXISTS unit_values (
    app TEXT NOT NULL, unit TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (app, unit, key)
) WITHOUT ROWID;
";

impl From<rusqlite::Error> for UnitWriteError {
    fn from(err: rusqlite::Error) -> Self {
        UnitWriteError::Store(store_error(err))
    }
}

impl Unfinished for UnitWriteError {
    fn unfinished(reason: String) -> Self {
        UnitWriteError::Store(StoreError::failed(reason))
    }
}

fn db_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn u64_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A unit's row: whether it is a member, who writes it, its version.
struct Row {
    member: bool,
    owner: Option<Owner>,
    version: u64,
}

fn read_row(tx: &Transaction<'_>, unit: &UnitName) -> rusqlite::Result<Option<Row>> {
    let row = tx
        .prepare_cached("SELECT member, owner, origin, version FROM units WHERE app = ?1 AND unit = ?2")?
        .query_row([unit.app().as_str(), unit.as_str()], |r| {
            Ok((r.get::<_, bool>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((member, owner, origin, version)) = row else { return Ok(None) };
    let owner = owner
        .map(|id| {
            let id = IncarnationId::parse(&id).ok_or_else(|| corrupt("units.owner", "not an incarnation id"))?;
            let origin = origin
                .map(|text| serde_json::from_str(&text).map(Arc::new).map_err(|e| corrupt("units.origin", e)))
                .transpose()?;
            Ok::<_, rusqlite::Error>(Owner { id, origin })
        })
        .transpose()?;
    Ok(Some(Row { member, owner, version: db_u64(version) }))
}

fn corrupt(column: &str, what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("{column}: {what}").into())
}

fn read_values(tx: &Transaction<'_>, unit: &UnitName) -> rusqlite::Result<Settings> {
    tx.prepare_cached("SELECT key, value FROM unit_values WHERE app = ?1 AND unit = ?2")?
        .query_map([unit.app().as_str(), unit.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

fn read_data(tx: &Transaction<'_>, unit: &UnitName, version: u64) -> rusqlite::Result<UnitData> {
    Ok(UnitData { version, values: Arc::new(read_values(tx, unit)?) })
}

/// The application's revision: the highest of its rows (0 without any).
fn revision(tx: &Transaction<'_>, app: &AppName) -> rusqlite::Result<u64> {
    let max: Option<i64> =
        tx.prepare_cached("SELECT MAX(revision) FROM units WHERE app = ?1")?.query_row([app.as_str()], |r| r.get(0))?;
    Ok(max.map_or(0, db_u64))
}

fn owner_columns(owner: &Owner) -> (String, Option<String>) {
    let origin = owner.origin.as_ref().map(|o| serde_json::to_string(o.as_ref()).unwrap_or_default());
    (owner.id.to_string(), origin)
}

/// The revision the store's file is at for `app`, read on the poller's own connection.
pub(super) fn current_revision(conn: &rusqlite::Connection, app: &AppName) -> u64 {
    conn.query_row("SELECT MAX(revision) FROM units WHERE app = ?1", [app.as_str()], |r| r.get::<_, Option<i64>>(0))
        .ok()
        .flatten()
        .map_or(0, db_u64)
}

impl SqliteFile {
    fn join_unit(&self, claimant: &Claimant) -> Result<(UnitData, Option<u64>), StoreError> {
        let unit = claimant.unit();
        let (id, origin) = owner_columns(&Owner::of(claimant));
        self.write_tx(|tx| match read_row(tx, unit)? {
            Some(row) if row.member => {
                tx.prepare_cached("UPDATE units SET owner = ?3, origin = ?4 WHERE app = ?1 AND unit = ?2")?
                    .execute(params![unit.app().as_str(), unit.as_str(), id, origin])?;
                Ok((read_data(tx, unit, row.version)?, None))
            }
            _ => {
                let revision = revision(tx, unit.app())?.saturating_add(1);
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO units (app, unit, member, owner, origin, version, revision)
                         VALUES (?1, ?2, 1, ?3, ?4, 0, ?5)",
                )?
                .execute(params![unit.app().as_str(), unit.as_str(), id, origin, u64_db(revision)])?;
                Ok((UnitData::default(), Some(revision)))
            }
        })
    }

    fn write_unit_data(
        &self,
        writer: &Claimant,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<(UnitData, Option<u64>), UnitWriteError> {
        let unit = writer.unit();
        self.write_tx(|tx| {
            // Decided with the write lock held: waiting for it may have taken a while.
            crate::leadership::check_apply_by(apply_by).map_err(|_| UnitWriteError::TooLate)?;
            let row = read_row(tx, unit)?.filter(|row| row.member);
            unit_data::check_writer(row.as_ref().and_then(|r| r.owner.as_ref()), writer)?;
            let version = row.map_or(0, |r| r.version);
            let current = read_data(tx, unit, version)?;
            let Some(next) = unit_data::apply_group(&current, group)? else { return Ok((current, None)) };
            for (key, value) in group {
                if value.is_empty() {
                    tx.prepare_cached("DELETE FROM unit_values WHERE app = ?1 AND unit = ?2 AND key = ?3")?
                        .execute([unit.app().as_str(), unit.as_str(), key])?;
                } else {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO unit_values (app, unit, key, value) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute([unit.app().as_str(), unit.as_str(), key, value])?;
                }
            }
            let revision = revision(tx, unit.app())?.saturating_add(1);
            tx.prepare_cached("UPDATE units SET version = ?3, revision = ?4 WHERE app = ?1 AND unit = ?2")?
                .execute(params![unit.app().as_str(), unit.as_str(), u64_db(next.version), u64_db(revision)])?;
            Ok((next, Some(revision)))
        })
    }

    fn read_unit_data(&self, unit: &UnitName) -> Result<Option<UnitData>, StoreError> {
        self.read_tx(|tx| match read_row(tx, unit)? {
            Some(row) if row.member => Ok(Some(read_data(tx, unit, row.version)?)),
            _ => Ok(None),
        })
    }

    fn unit_data_since(&self, app: &AppName, since: u64) -> Result<UnitDataChanges, StoreError> {
        self.read_tx(|tx| {
            let full = since == 0;
            // Found through the revision index, so only the changed rows are read (an
            // `ORDER BY unit` would make SQLite walk every row of the application by its
            // primary key instead); sorted here.
            let rows: Vec<(String, bool, i64)> = tx
                .prepare_cached(
                    "SELECT unit, member, version FROM units
                     WHERE app = ?1 AND revision > ?2 AND (member = 1 OR ?2 > 0)",
                )?
                .query_map(params![app.as_str(), u64_db(since)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut units = Vec::with_capacity(rows.len());
            for (unit, member, version) in rows {
                let unit = unit_from_db(unit)?;
                let data = if member { Some(read_data(tx, &unit, db_u64(version))?) } else { None };
                units.push((unit, data));
            }
            units.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(UnitDataChanges { revision: revision(tx, app)?, full, units })
        })
    }

    fn remove_unit(&self, unit: &UnitName) -> Result<Option<u64>, StoreError> {
        self.write_tx(|tx| {
            if !read_row(tx, unit)?.is_some_and(|row| row.member) {
                return Ok(None);
            }
            let revision = revision(tx, unit.app())?.saturating_add(1);
            tx.prepare_cached(
                "UPDATE units SET member = 0, owner = NULL, origin = NULL, version = 0, revision = ?3
                 WHERE app = ?1 AND unit = ?2",
            )?
            .execute(params![unit.app().as_str(), unit.as_str(), u64_db(revision)])?;
            tx.prepare_cached("DELETE FROM unit_values WHERE app = ?1 AND unit = ?2")?
                .execute([unit.app().as_str(), unit.as_str()])?;
            Ok(Some(revision))
        })
    }

    /// Tells this process's watchers of `app` that its unit data reached `revision`.
    fn announce(&self, app: &AppName, revision: Option<u64>) {
        if let Some(revision) = revision {
            self.shared.watchers.unit_data_changed(app, revision);
        }
    }
}

#[async_trait::async_trait]
impl UnitDataStore for SqliteStore {
    async fn join_unit(&self, claimant: &Claimant) -> Result<UnitData, StoreError> {
        let claimant = claimant.clone();
        self.blocking(move |file| {
            let (data, revision) = file.join_unit(&claimant)?;
            file.announce(claimant.unit().app(), revision);
            Ok(data)
        })
        .await
    }

    async fn write_unit_data(
        &self,
        writer: &Claimant,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<UnitData, UnitWriteError> {
        let (writer, group) = (writer.clone(), group.to_vec());
        self.blocking(move |file| {
            let (data, revision) = file.write_unit_data(&writer, &group, apply_by)?;
            file.announce(writer.unit().app(), revision);
            Ok(data)
        })
        .await
    }

    async fn read_unit_data(&self, unit: &UnitName) -> Result<Option<UnitData>, StoreError> {
        let unit = unit.clone();
        self.blocking(move |file| file.read_unit_data(&unit)).await
    }

    async fn unit_data_since(&self, app: &AppName, since: u64) -> Result<UnitDataChanges, StoreError> {
        let app = app.clone();
        self.blocking(move |file| file.unit_data_since(&app, since)).await
    }

    async fn remove_unit(&self, unit: &UnitName) -> Result<bool, StoreError> {
        let unit = unit.clone();
        self.blocking(move |file| {
            let revision = file.remove_unit(&unit)?;
            file.announce(unit.app(), revision);
            Ok(revision.is_some())
        })
        .await
    }

    fn watch_unit_data(&self, app: &AppName) -> tokio::sync::watch::Receiver<u64> {
        self.file.ensure_poller();
        let file = &self.file;
        file.shared
            .watchers
            .unit_data(app, || file.read_tx(|tx| revision(tx, app).map_err(StoreError::from)).unwrap_or(0))
    }
}
