//! The etcd store's unit data and membership (see
//! [`unit_data`](crate::leadership::unit_data)).
//!
//! | key               | value                                         | etcd lease |
//! |-------------------|-----------------------------------------------|------------|
//! | `P/units/APP/N`   | `{"version":N,"values":{K:V,...}}`: the data | none       |
//! | `P/writers/APP/N` | `{"id":HEX,"origin":{...}}`: the incarnation that joined last | none |
//!
//! A unit is a member while its data key exists; removing it deletes both keys in one
//! transaction. A join puts the writer key (and an empty data key for a new member) guarded
//! by the data key's mod revision; a write puts the data key guarded by both keys' mod
//! revisions as read when the writer was checked, so a join or a write in between fails
//! the guard and the write is decided again on a fresh read. The writer is a key of its
//! own so that a join changes no data: the application's unit-data revision is etcd's
//! revision of the latest change under `P/units/APP/`.
//!
//! **Reading only what changed.** An application whose unit data this process watches has
//! a mirror: its keys listed once at a revision, then kept by a watch of that prefix from
//! the next revision (resumed after a broken stream, listed again after compaction). The
//! watch delivers each change with its value, so a change costs the server one event and
//! the reader one bag, whatever the number of units; [`UnitDataStore::unit_data_since`]
//! answers from the mirror ([`UnitBook`]). Without a mirror it lists the prefix (a full
//! answer). The mirror trails the server by the watch's delay: a change is announced once
//! it is in the mirror, never before. A mirror lives while someone holds a receiver of
//! [`UnitDataStore::watch_unit_data`] (only a leader's agent does): the first event after
//! the last one is dropped ends it and its watch, both decided under the lock of the
//! mirrors, so a process that stopped leading is not woken again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};

use super::keys::{self, Layout, SettingsValue};
use super::{EtcdStore, Read, within};
use crate::leadership::unit_data::{
    self, Member, Owner, UnitBook, UnitData, UnitDataChanges, UnitDataStore, UnitWriteError,
};
use crate::leadership::watchers::Watchers;
use crate::leadership::{Claimant, Clock as _, IncarnationId, Origin, StoreError, StoreFailure, Timestamp};
use crate::names::{AppName, UnitName};

/// The value of a writer key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WriterValue {
    id: IncarnationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<Origin>,
}

impl WriterValue {
    fn owner(&self) -> Owner {
        Owner { id: self.id, origin: self.origin.clone().map(Arc::new) }
    }
}

fn data_of(value: SettingsValue) -> UnitData {
    UnitData { version: value.version, values: Arc::new(value.values) }
}

fn member_of(key: &[u8], value: &[u8]) -> Result<Member, StoreError> {
    Ok(Member { owner: None, data: data_of(keys::decode(key, value)?) })
}

fn writer_key(layout: &Layout, unit: &UnitName) -> String {
    format!("{}/writers/{}/{}", layout.prefix(), unit.app(), unit.number())
}

fn units_range(layout: &Layout, app: &AppName) -> String {
    format!("{}/units/{app}/", layout.prefix())
}

fn unit_key(layout: &Layout, unit: &UnitName) -> String {
    format!("{}{}", units_range(layout, unit.app()), unit.number())
}

/// The unit a key of `app`'s range names.
fn parse_unit(layout: &Layout, app: &AppName, key: &[u8]) -> Result<UnitName, StoreError> {
    let range = units_range(layout, app);
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix(&range))
        .and_then(|number| format!("{app}/{number}").parse().ok())
        .ok_or_else(|| keys::corrupt(key, "not a unit key"))
}

fn revision_u64(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

/// The mirror of each application this process watches.
pub(super) type Mirrors = Arc<Mutex<BTreeMap<AppName, Mirror>>>;

/// A watched application's mirror and the task that keeps it.
pub(super) struct Mirror {
    book: Arc<Mutex<Option<UnitBook>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lists `app`'s units at one revision.
async fn list(
    client: &mut Client,
    layout: &Layout,
    app: &AppName,
    deadline: Duration,
) -> Result<(UnitBook, etcd_client::GetResponse), StoreError> {
    let options = GetOptions::new().with_prefix();
    let got =
        within(deadline, client.get(units_range(layout, app), Some(options))).await?.map_err(super::etcd_failed)?;
    let mut members = BTreeMap::new();
    for kv in got.kvs() {
        members.insert(parse_unit(layout, app, kv.key())?, member_of(kv.key(), kv.value())?);
    }
    let revision = revision_u64(got.header().map_or(0, |h| h.revision()));
    Ok((UnitBook::listed(members, revision), got))
}

/// Keeps `book` equal to `app`'s units for as long as the store lives: lists them, then
/// applies the watch's events, telling `watchers` of each revision once it is applied.
async fn keep_mirror(
    client: Client,
    layout: Layout,
    app: AppName,
    book: Arc<Mutex<Option<UnitBook>>>,
    (watchers, mirrors): (Arc<Watchers>, Weak<Mutex<BTreeMap<AppName, Mirror>>>),
    deadline: Duration,
) {
    // Ends the mirror if nobody watches any more (decided under the mirrors' lock, which a
    // new watcher subscribes under): true if it ended.
    let unwatched = || {
        let Some(mirrors) = mirrors.upgrade() else { return true };
        let mut mirrors = mirrors.lock().unwrap_or_else(|p| p.into_inner());
        if watchers.unit_data_watched(&app) {
            return false;
        }
        // Dropping it aborts this task's handle; the task returns at once anyway.
        mirrors.remove(&app);
        true
    };
    let mut failures: u32 = 0;
    let mut from: Option<i64> = None;
    loop {
        if failures > 0 {
            let pause = crate::timing::backoff(Duration::from_millis(100), Duration::from_secs(5), failures);
            tokio::time::sleep(pause).await;
        }
        let mut watching = client.clone();
        let start = match from {
            Some(start) => start,
            None => match list(&mut watching, &layout, &app, deadline).await {
                Ok((listed, _)) => {
                    let revision = listed.revision();
                    *book.lock().unwrap_or_else(|p| p.into_inner()) = Some(listed);
                    watchers.unit_data_changed(&app, revision);
                    i64::try_from(revision).unwrap_or(i64::MAX).saturating_add(1)
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(%app, "etcd could not list unit data: {err}");
                    continue;
                }
            },
        };
        from = Some(start);
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = match watching.watch(units_range(&layout, &app), Some(options)).await {
            Ok(stream) => stream,
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::debug!(%app, "etcd unit-data watch could not start: {err}");
                continue;
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) => break,
            };
            failures = 0;
            if response.compact_revision() > 0 {
                // Events were compacted away: list again (readers then get a full answer).
                from = None;
                break;
            }
            let mut applied = None;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(unit) = parse_unit(&layout, &app, kv.key()) else { continue };
                let member = match event.event_type() {
                    EventType::Put => match member_of(kv.key(), kv.value()) {
                        Ok(member) => Some(member),
                        Err(err) => {
                            tracing::warn!(%unit, "unreadable unit data ignored: {err}");
                            continue;
                        }
                    },
                    EventType::Delete => None,
                };
                let revision = revision_u64(kv.mod_revision());
                if let Some(book) = book.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    book.record(&unit, member, revision);
                }
                from = Some(from.unwrap_or(0).max(kv.mod_revision().saturating_add(1)));
                applied = Some(revision);
            }
            if let Some(revision) = applied {
                watchers.unit_data_changed(&app, revision);
            }
            if unwatched() {
                return;
            }
            if response.canceled() {
                break;
            }
        }
        failures = failures.saturating_add(1);
    }
}

/// A unit's keys as read at one revision.
struct UnitKeys {
    data_key: String,
    writer_key: String,
    data: Read,
    writer: Read,
}

impl UnitKeys {
    fn value(&self) -> Result<Option<SettingsValue>, StoreError> {
        self.data.value.as_deref().map(|v| keys::decode(self.data_key.as_bytes(), v)).transpose()
    }

    /// The writer, if the unit is a member.
    fn owner(&self) -> Result<Option<Owner>, StoreError> {
        if self.data.value.is_none() {
            return Ok(None);
        }
        let Some(writer) = self.writer.value.as_deref() else {
            return Err(keys::corrupt(self.writer_key.as_bytes(), "missing: a member has a writer"));
        };
        Ok(Some(keys::decode::<WriterValue>(self.writer_key.as_bytes(), writer)?.owner()))
    }

    /// Guards that both keys are still as read.
    fn unchanged(&self) -> [Compare; 2] {
        [
            Compare::mod_revision(self.data_key.as_str(), CompareOp::Equal, self.data.mod_revision),
            Compare::mod_revision(self.writer_key.as_str(), CompareOp::Equal, self.writer.mod_revision),
        ]
    }
}

impl EtcdStore {
    /// `unit`'s keys as read now (linearizable).
    async fn read_unit(&self, unit: &UnitName) -> Result<UnitKeys, StoreError> {
        let (data_key, writer_key) = (unit_key(&self.layout, unit), writer_key(&self.layout, unit));
        let reads = self.read(&[data_key.clone(), writer_key.clone()]).await?;
        let [data, writer] =
            <[Read; 2]>::try_from(reads).map_err(|_| StoreError::failed("etcd answered a read oddly"))?;
        Ok(UnitKeys { data_key, writer_key, data, writer })
    }

    /// Sends `txn`: whether its guard held. Not sent once `apply_by` has passed, and
    /// cancelled then if unanswered (its outcome is then unknown).
    async fn send_unit_txn(&self, txn: etcd_client::Txn, apply_by: Option<Timestamp>) -> Result<bool, UnitWriteError> {
        crate::leadership::check_apply_by(apply_by).map_err(|_| UnitWriteError::TooLate)?;
        let sent = match apply_by {
            Some(by) => {
                let left = by.saturating_since(crate::leadership::MonotonicClock.now());
                match tokio::time::timeout(left, self.txn(txn)).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(UnitWriteError::OutcomeUnknown(
                            "the store did not answer before the caller gave up".into(),
                        ));
                    }
                }
            }
            None => self.txn(txn).await,
        };
        let response = sent.map_err(|err| match err.kind() {
            StoreFailure::Unreachable => UnitWriteError::OutcomeUnknown(err.to_string()),
            _ => UnitWriteError::Store(err),
        })?;
        Ok(response.succeeded())
    }

    fn busy(unit: &UnitName) -> StoreError {
        StoreError::busy(format!("the data of {unit} kept changing; try again"))
    }
}

#[async_trait::async_trait]
impl UnitDataStore for EtcdStore {
    async fn join_unit(&self, claimant: &Claimant) -> Result<UnitData, StoreError> {
        let unit = claimant.unit();
        let writer = WriterValue { id: claimant.id(), origin: Some(claimant.incarnation().origin.clone()) };
        for _ in 0..super::CONTENTION_RETRIES {
            let keys = self.read_unit(unit).await?;
            let current = keys.value()?;
            let mut puts = vec![TxnOp::put(keys.writer_key.as_str(), keys::encode(&writer), None)];
            if current.is_none() {
                puts.push(TxnOp::put(keys.data_key.as_str(), keys::encode(&SettingsValue::default()), None));
            }
            let txn = self
                .when([Compare::mod_revision(keys.data_key.as_str(), CompareOp::Equal, keys.data.mod_revision)])
                .and_then(puts);
            match self.send_unit_txn(txn, None).await {
                Ok(true) => return Ok(data_of(current.unwrap_or_default())),
                Ok(false) => continue,
                Err(UnitWriteError::Store(err)) => return Err(err),
                Err(other) => return Err(StoreError::unreachable(other.to_string())),
            }
        }
        Err(Self::busy(unit))
    }

    async fn write_unit_data(
        &self,
        writer: &Claimant,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<UnitData, UnitWriteError> {
        let unit = writer.unit();
        for _ in 0..super::CONTENTION_RETRIES {
            crate::leadership::check_apply_by(apply_by).map_err(|_| UnitWriteError::TooLate)?;
            let keys = self.read_unit(unit).await?;
            unit_data::check_writer(keys.owner()?.as_ref(), writer)?;
            let current = data_of(keys.value()?.unwrap_or_default());
            let Some(next) = unit_data::apply_group(&current, group)? else { return Ok(current) };
            let value = SettingsValue { version: next.version, values: (*next.values).clone() };
            let txn =
                self.when(keys.unchanged()).and_then([TxnOp::put(keys.data_key.as_str(), keys::encode(&value), None)]);
            if self.send_unit_txn(txn, apply_by).await? {
                return Ok(next);
            }
        }
        Err(UnitWriteError::Store(Self::busy(unit)))
    }

    async fn read_unit_data(&self, unit: &UnitName) -> Result<Option<UnitData>, StoreError> {
        Ok(self.read_unit(unit).await?.value()?.map(data_of))
    }

    async fn unit_data_since(&self, app: &AppName, since: u64) -> Result<UnitDataChanges, StoreError> {
        let mirrored = {
            let mirrors = self.unit_mirrors.lock().unwrap_or_else(|p| p.into_inner());
            mirrors
                .get(app)
                .and_then(|m| m.book.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|b| b.since(since)))
        };
        match mirrored {
            Some(changes) => Ok(changes),
            None => {
                let floor = self.identity.floor();
                let mut client = self.client.clone();
                let (listed, got) = list(&mut client, &self.layout, app, self.request_timeout).await?;
                self.identity.check_header(got.header(), floor)?;
                Ok(listed.since(0))
            }
        }
    }

    async fn remove_unit(&self, unit: &UnitName) -> Result<bool, StoreError> {
        let (data_key, writer_key) = (unit_key(&self.layout, unit), writer_key(&self.layout, unit));
        let deletes = [TxnOp::delete(data_key.as_str(), None), TxnOp::delete(writer_key.as_str(), None)];
        let response = self.txn(self.when([]).and_then(deletes)).await?;
        let deleted = response.op_responses().into_iter().next();
        Ok(matches!(deleted, Some(etcd_client::TxnOpResponse::Delete(d)) if d.deleted() > 0))
    }

    fn watch_unit_data(&self, app: &AppName) -> tokio::sync::watch::Receiver<u64> {
        let mut mirrors = self.unit_mirrors.lock().unwrap_or_else(|p| p.into_inner());
        if !mirrors.contains_key(app) {
            match tokio::runtime::Handle::try_current() {
                Ok(tokio) => {
                    let book = Arc::new(Mutex::new(None));
                    let keep = keep_mirror(
                        self.client.clone(),
                        self.layout.clone(),
                        app.clone(),
                        book.clone(),
                        (self.watchers.clone(), Arc::downgrade(&self.unit_mirrors)),
                        self.request_timeout,
                    );
                    mirrors.insert(app.clone(), Mirror { book, task: tokio.spawn(keep) });
                }
                Err(_) => {
                    tracing::warn!(%app, "watch_unit_data outside a tokio runtime: unit-data changes go unnoticed")
                }
            }
        }
        let current = mirrors
            .get(app)
            .and_then(|m| m.book.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(UnitBook::revision))
            .unwrap_or(0);
        // Subscribed under the mirrors' lock: the mirror cannot end in between.
        let receiver = self.watchers.unit_data(app, || current);
        drop(mirrors);
        receiver
    }
}
