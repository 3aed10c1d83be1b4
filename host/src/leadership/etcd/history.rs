//! The etcd store's leadership history (see [`history`](crate::leadership::history)).
//!
//! | key                      | value                                              |
//! |--------------------------|----------------------------------------------------|
//! | `P/history/APP/TERM`     | `{"unit":UNIT,"started_unix_ns":T}`: put by the grant's transaction |
//! | `P/ended/APP/TERM`       | `{"ended_unix_ns":T,"how":HOW}`: put by the revoke's transaction, or by the next grant's for a tenure that ran out |
//!
//! `TERM` is zero-padded to 20 digits, so keys sort by term. Neither range is watched (both
//! sort before `P/lease/`). The grant of term `T` deletes both ranges below
//! [`history::oldest_kept`]`(T)` in its transaction. A tenure's end is a key of its own so
//! that the transactions that end a tenure need not read its start first.
//!
//! The end of a tenure that ran out is when this process saw its lease key deleted (the
//! server's expiry, as its watch delivered it), or else when it found the key gone.

use std::collections::BTreeMap;
use std::time::SystemTime;

use etcd_client::{DeleteOptions, GetOptions, SortOrder, SortTarget, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::keys::{self, Layout};
use crate::leadership::StoreError;
use crate::leadership::history::{self, LostRenewals, Release, Tenure, TenureEnd};
use crate::names::{AppName, UnitName};

#[derive(Debug, Serialize, Deserialize)]
struct Started {
    unit: String,
    started_unix_ns: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ended {
    ended_unix_ns: i64,
    how: String,
}

fn started_key(layout: &Layout, app: &AppName, term: u64) -> String {
    format!("{}/history/{app}/{term:020}", layout.prefix())
}

fn ended_key(layout: &Layout, app: &AppName, term: u64) -> String {
    format!("{}/ended/{app}/{term:020}", layout.prefix())
}

/// The range of `what` (`history` or `ended`) keys of `app`, or of every application.
fn range(layout: &Layout, what: &str, app: Option<&AppName>) -> String {
    match app {
        Some(app) => format!("{}/{what}/{app}/", layout.prefix()),
        None => format!("{}/{what}/", layout.prefix()),
    }
}

/// The operations a grant of `unit`'s tenure at `term` adds to its transaction, at wall
/// time `now`: the start, the end of the tenure before it if that one ran out
/// (`expired`: its term and end), and the pruning.
pub(super) fn on_grant(
    layout: &Layout,
    unit: &UnitName,
    term: u64,
    now: SystemTime,
    expired: Option<(u64, SystemTime)>,
) -> Vec<TxnOp> {
    let app = unit.app();
    let started = Started { unit: unit.to_string(), started_unix_ns: history::unix_nanos(now) };
    let mut ops = vec![TxnOp::put(started_key(layout, app, term), keys::encode(&started), None)];
    if let Some((previous, at)) = expired {
        ops.push(end(layout, app, previous, at, TenureEnd::Expired));
    }
    let oldest = history::oldest_kept(term);
    for (first, below) in [
        (started_key(layout, app, 0), started_key(layout, app, oldest)),
        (ended_key(layout, app, 0), ended_key(layout, app, oldest)),
    ] {
        ops.push(TxnOp::delete(first, Some(DeleteOptions::new().with_range(below))));
    }
    ops
}

/// The operation a revoke of `unit`'s tenure at `term`, `why`, adds to its transaction.
pub(super) fn on_revoke(layout: &Layout, unit: &UnitName, term: u64, now: SystemTime, why: Release) -> TxnOp {
    end(layout, unit.app(), term, now, why.into())
}

fn end(layout: &Layout, app: &AppName, term: u64, at: SystemTime, how: TenureEnd) -> TxnOp {
    let ended = Ended { ended_unix_ns: history::unix_nanos(at), how: how.name().to_owned() };
    TxnOp::put(ended_key(layout, app, term), keys::encode(&ended), None)
}

/// The reads of [`lost_renewals`]: the start and the end of `unit`'s tenure at `term`.
pub(super) fn tenure_keys(layout: &Layout, unit: &UnitName, term: u64) -> [String; 2] {
    [started_key(layout, unit.app(), term), ended_key(layout, unit.app(), term)]
}

/// What marking the tenure read as `[start, end]` (see [`tenure_keys`]) as lost by its
/// renewals takes: the put, if it was `unit`'s and ended as an expiry; else why not.
pub(super) fn lost_renewals(
    unit: &UnitName,
    start: Option<(&[u8], &[u8])>,
    ended: Option<(&[u8], &[u8])>,
) -> Result<Result<TxnOp, LostRenewals>, StoreError> {
    let Some((start_key, start)) = start else { return Ok(Err(LostRenewals::NotApplicable)) };
    let started: Started = keys::decode(start_key, start)?;
    if started.unit != unit.as_str() {
        return Ok(Err(LostRenewals::NotApplicable));
    }
    let Some((key, value)) = ended else { return Ok(Err(LostRenewals::StillOpen)) };
    let mut ended: Ended = keys::decode(key, value)?;
    if ended.how != TenureEnd::Expired.name() {
        return Ok(Err(LostRenewals::NotApplicable));
    }
    ended.how = TenureEnd::LostRenewals.name().to_owned();
    Ok(Ok(TxnOp::put(key.to_vec(), keys::encode(&ended), None)))
}

/// The two range reads of a history listing of `app` (or every application), to send in
/// one transaction so that both are read at one revision. For one application, only its
/// newest `limit` starts and ends: every tenure but the newest has ended, so those ends
/// cover those starts.
pub(super) fn reads(layout: &Layout, app: Option<&AppName>, limit: usize) -> [TxnOp; 2] {
    ["history", "ended"].map(|what| {
        let options = GetOptions::new().with_prefix();
        let options = match app {
            Some(_) => options
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
            None => options,
        };
        TxnOp::get(range(layout, what, app), Some(options))
    })
}

/// The tenures the answers to [`reads`] hold: newest first within each application
/// (applications by name), at most `limit` of each.
pub(super) fn tenures(layout: &Layout, answers: &[TxnOpResponse], limit: usize) -> Result<Vec<Tenure>, StoreError> {
    let [TxnOpResponse::Get(starts), TxnOpResponse::Get(ends)] = answers else {
        return Err(StoreError::failed("etcd answered a history read with something else"));
    };
    let parse = |what: &str, key: &[u8]| -> Result<(AppName, u64), StoreError> {
        let text = std::str::from_utf8(key).ok();
        let rest = text
            .and_then(|k| k.strip_prefix(layout.prefix()))
            .and_then(|k| k.strip_prefix('/'))
            .and_then(|k| k.strip_prefix(what));
        let parsed = rest
            .and_then(|k| k.strip_prefix('/'))
            .and_then(|k| k.split_once('/'))
            .and_then(|(app, term)| Some((AppName::new(app).ok()?, term.parse::<u64>().ok()?)));
        parsed.ok_or_else(|| keys::corrupt(key, "not a history key"))
    };
    let mut ended = BTreeMap::new();
    for kv in ends.kvs() {
        let value: Ended = keys::decode(kv.key(), kv.value())?;
        let how = TenureEnd::from_name(&value.how)
            .ok_or_else(|| keys::corrupt(kv.key(), format!("unknown end {:?}", value.how)))?;
        ended.insert(parse("ended", kv.key())?, (history::from_unix_nanos(value.ended_unix_ns), how));
    }
    let mut by_app: BTreeMap<AppName, Vec<Tenure>> = BTreeMap::new();
    let mut starts: Vec<&etcd_client::KeyValue> = starts.kvs().iter().collect();
    // Oldest first, however they were read.
    starts.sort_by(|a, b| a.key().cmp(b.key()));
    for kv in starts {
        let (app, term) = parse("history", kv.key())?;
        let value: Started = keys::decode(kv.key(), kv.value())?;
        let unit = UnitName::new(&value.unit).map_err(|e| keys::corrupt(kv.key(), e))?;
        let end = ended.get(&(app.clone(), term));
        let started = history::from_unix_nanos(value.started_unix_ns);
        let tenure = Tenure {
            app: app.clone(),
            unit,
            term,
            started,
            ended: end.map(|(at, _)| (*at).max(started)),
            how: end.map(|(_, how)| *how),
        };
        by_app.entry(app).or_default().push(tenure);
    }
    Ok(by_app.into_values().flat_map(|tenures| tenures.into_iter().rev().take(limit)).collect())
}
