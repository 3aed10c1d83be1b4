//! The SQLite store's leadership history (see [`history`](crate::leadership::history)): the
//! `tenures` table, written inside the claim's and the revoke's transactions.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{app_from_db, unit_from_db};
use crate::leadership::history::{self, Grant, LostRenewals, Release, Tenure, TenureEnd};
use crate::leadership::{LeaseError, StoreError};
use crate::names::{AppName, UnitName};

/// The table (schema version 3).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenures (
    app TEXT NOT NULL,
    term INTEGER NOT NULL,
    unit TEXT NOT NULL,
    started_unix_ns INTEGER NOT NULL,
    ended_unix_ns INTEGER,
    how TEXT,
    PRIMARY KEY (app, term)
) WITHOUT ROWID;
";

fn term_db(term: u64) -> i64 {
    i64::try_from(term).unwrap_or(i64::MAX)
}

/// Records a grant in its transaction: the expired tenure's end, the new tenure, the pruning.
pub(super) fn record_grant(tx: &Transaction<'_>, grant: &Grant) -> rusqlite::Result<()> {
    let app = grant.started.app.as_str();
    if let Some((term, at)) = grant.expired {
        end(tx, app, term, history::unix_nanos(at), TenureEnd::Expired)?;
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO tenures (app, term, unit, started_unix_ns, ended_unix_ns, how) VALUES (?1, ?2, ?3, ?4, NULL, NULL)",
    )?
    .execute(params![app, term_db(grant.started.term), grant.started.unit.as_str(), history::unix_nanos(grant.started.started)])?;
    tx.prepare_cached("DELETE FROM tenures WHERE app = ?1 AND term < ?2")?
        .execute(params![app, term_db(grant.oldest_kept)])?;
    Ok(())
}

/// Ends `unit`'s tenure at `term`, given up `why` at `at_unix_ns`, in the revoke's transaction.
pub(super) fn record_revoke(
    tx: &Transaction<'_>,
    unit: &UnitName,
    term: u64,
    at_unix_ns: i64,
    why: Release,
) -> rusqlite::Result<()> {
    end(tx, unit.app().as_str(), term, at_unix_ns, why.into())
}

/// Ends an open tenure (an end is never rewritten), no earlier than its start.
fn end(tx: &Transaction<'_>, app: &str, term: u64, at_unix_ns: i64, how: TenureEnd) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE tenures SET ended_unix_ns = MAX(?3, started_unix_ns), how = ?4 WHERE app = ?1 AND term = ?2 AND how IS NULL",
    )?
    .execute(params![app, term_db(term), at_unix_ns, how.name()])?;
    Ok(())
}

/// See [`crate::leadership::LeadershipStore::mark_lost_renewals`].
pub(super) fn mark_lost_renewals(tx: &Transaction<'_>, unit: &UnitName, term: u64) -> rusqlite::Result<LostRenewals> {
    let key = params![unit.app().as_str(), term_db(term), unit.as_str()];
    let how: Option<Option<String>> = tx
        .prepare_cached("SELECT how FROM tenures WHERE app = ?1 AND term = ?2 AND unit = ?3")?
        .query_row(key, |r| r.get(0))
        .optional()?;
    match how {
        Some(None) => Ok(LostRenewals::StillOpen),
        Some(Some(how)) if how == TenureEnd::Expired.name() => {
            tx.prepare_cached("UPDATE tenures SET how = ?4 WHERE app = ?1 AND term = ?2 AND unit = ?3")?
                .execute(params![unit.app().as_str(), term_db(term), unit.as_str(), TenureEnd::LostRenewals.name()])?;
            Ok(LostRenewals::Marked)
        }
        _ => Ok(LostRenewals::NotApplicable),
    }
}

/// Ends every open tenure of a held lease as expired at `at_unix_ns`, when the file is
/// opened in a new boot: every process of the old boot is gone, so its holders are (the
/// lease itself still keeps everyone out for a full duration, as the module says).
pub(super) fn end_at_reboot(tx: &Transaction<'_>, at_unix_ns: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE tenures SET ended_unix_ns = MAX(?1, started_unix_ns), how = ?2
         WHERE how IS NULL AND EXISTS (SELECT 1 FROM leases WHERE leases.app = tenures.app
             AND leases.term = tenures.term AND leases.holder IS NOT NULL)",
        params![at_unix_ns, TenureEnd::Expired.name()],
    )?;
    Ok(())
}

/// The tenures of `app` (or every application), newest first in each, at most `limit` of
/// each; none in a file from before the history (schema 2, opened read-only).
pub(super) fn read(conn: &Connection, app: Option<&AppName>, limit: usize) -> Result<Vec<Tenure>, LeaseError> {
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tenures'", [], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let mut query = conn.prepare_cached(
        "SELECT app, term, unit, started_unix_ns, ended_unix_ns, how FROM (
             SELECT *, ROW_NUMBER() OVER (PARTITION BY app ORDER BY term DESC) AS age FROM tenures
             WHERE ?1 IS NULL OR app = ?1
         ) WHERE age <= ?2 ORDER BY app, term DESC",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = query.query_map(params![app.map(AppName::as_str), limit], |r| {
        Ok((
            app_from_db(r.get(0)?)?,
            r.get::<_, i64>(1)?,
            unit_from_db(r.get(2)?)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut tenures = Vec::new();
    for row in rows {
        let (app, term, unit, started, ended, how) = row?;
        let how = match how {
            None => None,
            Some(name) => Some(TenureEnd::from_name(&name).ok_or_else(|| {
                LeaseError::Store(StoreError::corrupt(format!(
                    "SQLite: tenure {app} term {term} ended in an unknown way: {name:?}"
                )))
            })?),
        };
        tenures.push(Tenure {
            app,
            unit,
            term: u64::try_from(term).unwrap_or(0),
            started: history::from_unix_nanos(started),
            ended: ended.map(history::from_unix_nanos),
            how,
        });
    }
    Ok(tenures)
}
