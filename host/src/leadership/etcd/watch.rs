//! The watches of a store: one of every application's lease, pins and reservation keys,
//! which tells this process's watchers of every lease change (grants, revokes, pins and
//! server-side expiry alike), and one per application whose settings this process watches
//! (so an agent hears only its own application's writes, however many share the store).
//!
//! Invariants: it resumes from the revision after the last event it handled, so a broken
//! stream (a member lost, a failover) loses no event; when that revision was compacted it
//! lists the versions again at a new revision and announces a lease change, so nothing
//! waits forever on a change it missed. It retries with a backoff and ends only when the
//! store is dropped (which aborts it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};

use super::keys::{self, Kind, Layout};
use crate::leadership::watchers::Watchers;
use crate::leadership::{Clock, StoreError, Timestamp};
use crate::names::AppName;

/// Raises the version recorded for `app` (versions never go down).
pub(super) fn raise_version(seen: &Mutex<Seen>, app: &AppName, version: u64) {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let entry = seen.versions.entry(app.clone()).or_insert(0);
    *entry = (*entry).max(version);
}

/// What the watch keeps of the store: each application's settings version, which
/// applications have a lease key (held, or pinned), and when each last tenure was last seen
/// standing. Hints only (decisions read the store), except [`Seen::tenures`], which bounds
/// how long the holder of a tenure that ended behind its back may still count on it.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub versions: BTreeMap<AppName, u64>,
    pub held: std::collections::BTreeSet<AppName>,
    /// Each lease key as last seen (value, revisions, etcd lease): what a minion's wait
    /// looks at instead of the store (see [`Seen::live`]).
    pub leases: BTreeMap<AppName, super::Read>,
    /// The revision of this process's own last change of each lease key, put into
    /// [`Seen::leases`] when it was made: the watch's older events of the key are not.
    pub lease_floors: BTreeMap<AppName, i64>,
    /// True while the lease watch's stream runs (from its start until it breaks): then
    /// every change of a lease, pins or reservation key reaches [`Seen`] a watch's delay
    /// after it was made.
    pub live: bool,
    /// The term, released, reservation and pins keys as last seen (mod revision, value):
    /// what a claim of a free lease guards its transaction with before reading anything.
    pub keys: BTreeMap<(AppName, u8), (i64, Vec<u8>)>,
    pub tenures: BTreeMap<AppName, SeenTenure>,
}

/// An application's latest tenure as this process saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SeenTenure {
    pub term: u64,
    /// The instant this process last saw its lease key put (granted, or proven standing by a
    /// renewal), or found it present or gone when it listed the store: later than every put
    /// of it it had seen.
    pub at: Timestamp,
    /// Whether the watch delivered the key's deletion: then `at` is after the last put of
    /// the tenure, the one its holder's last renewal made.
    pub ended: bool,
}

/// The kinds of key [`Seen::keys`] keeps.
pub(super) fn mirrored(kind: Kind) -> Option<u8> {
    match kind {
        Kind::Term => Some(0),
        Kind::Reserved => Some(1),
        Kind::Pins => Some(2),
        Kind::Released => Some(3),
        _ => None,
    }
}

/// Reads every application's settings version and which leases exist, at one revision;
/// returns that revision.
pub(super) async fn load(
    client: &mut Client,
    layout: &Layout,
    seen: &Mutex<Seen>,
    clock: &dyn Clock,
    deadline: Duration,
) -> Result<i64, StoreError> {
    let txn = etcd_client::Txn::new().and_then([
        // Keys only: a settings key's put count is its version (see `keys`).
        etcd_client::TxnOp::get(layout.range(Kind::Settings), Some(GetOptions::new().with_prefix().with_keys_only())),
        etcd_client::TxnOp::get(layout.range(Kind::Lease), Some(GetOptions::new().with_prefix())),
        etcd_client::TxnOp::get(layout.range(Kind::Term), Some(GetOptions::new().with_prefix())),
        etcd_client::TxnOp::get(layout.range(Kind::Released), Some(GetOptions::new().with_prefix())),
        etcd_client::TxnOp::get(layout.range(Kind::Reserved), Some(GetOptions::new().with_prefix())),
        etcd_client::TxnOp::get(layout.range(Kind::Pins), Some(GetOptions::new().with_prefix())),
    ]);
    let got = super::within(deadline, client.txn(txn)).await?.map_err(super::etcd_failed)?;
    // After the answer: every tenure listed (standing, or gone) was last put before this.
    let at = clock.now();
    let mut held = std::collections::BTreeSet::new();
    let mut leases = BTreeMap::new();
    let mut mirror = BTreeMap::new();
    let mut tenures = BTreeMap::new();
    for op in got.op_responses() {
        let etcd_client::TxnOpResponse::Get(get) = op else { continue };
        for kv in get.kvs() {
            match layout.parse(kv.key()) {
                Some((Kind::Settings, app)) => raise_version(seen, &app, u64::try_from(kv.version()).unwrap_or(0)),
                Some((Kind::Lease, app)) => {
                    if let Ok(value) = keys::decode::<keys::LeaseValue>(kv.key(), kv.value()) {
                        tenures.insert(app.clone(), SeenTenure { term: value.term, at, ended: false });
                    }
                    leases.insert(app.clone(), super::Read::of(kv));
                    held.insert(app);
                }
                Some((kind @ Kind::Term, app)) => {
                    // The lease keys were listed first (answers come in order): no lease key, gone.
                    if !held.contains(&app)
                        && let Ok(value) = keys::TermValue::decode(kv.key(), kv.value())
                    {
                        tenures.insert(app.clone(), SeenTenure { term: value.term, at, ended: true });
                    }
                    if let Some(slot) = mirrored(kind) {
                        mirror.insert((app, slot), (kv.mod_revision(), kv.value().to_vec()));
                    }
                }
                Some((kind, app)) => {
                    if let Some(slot) = mirrored(kind) {
                        mirror.insert((app, slot), (kv.mod_revision(), kv.value().to_vec()));
                    }
                }
                None => {}
            }
        }
    }
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.held = held;
    seen.leases = leases;
    seen.keys = mirror;
    seen.tenures = tenures;
    Ok(got.header().map_or(0, |h| h.revision()))
}

/// What one watch covers.
#[derive(Debug, Clone)]
pub(super) enum Watched {
    /// Every lease, pins and reservation key (and the meta key between them).
    Leases,
    /// One application's settings key.
    Settings(AppName),
}

impl Watched {
    fn options(&self, layout: &Layout, from: i64) -> (String, WatchOptions) {
        let options = WatchOptions::new().with_start_revision(from);
        match self {
            // `P/lease/` up to the end of the `P/reserved/` range: lease, meta, pins, reserved.
            Watched::Leases => {
                let mut end = layout.range(Kind::Reserved).into_bytes();
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                (layout.range(Kind::Lease), options.with_range(end))
            }
            Watched::Settings(app) => (layout.key(Kind::Settings, app), options),
        }
    }
}

/// Runs the watch of `what` from revision `from` for as long as the store lives.
pub(super) async fn run(
    client: Client,
    layout: Layout,
    what: Watched,
    watchers: Arc<Watchers>,
    seen: Arc<Mutex<Seen>>,
    clock: Arc<dyn Clock>,
    mut from: i64,
) {
    let mut failures: u32 = 0;
    loop {
        if failures > 0 {
            let pause = crate::timing::backoff(Duration::from_millis(100), Duration::from_secs(5), failures);
            tokio::time::sleep(pause).await;
        }
        let mut watching = client.clone();
        let (key, options) = what.options(&layout, from);
        let mut stream = match watching.watch(key, Some(options)).await {
            Ok(stream) => stream,
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::debug!("etcd watch could not start: {err}");
                continue;
            }
        };
        let leases = matches!(what, Watched::Leases);
        if leases {
            seen.lock().unwrap_or_else(|p| p.into_inner()).live = true;
        }
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) => break,
            };
            failures = 0;
            if response.compact_revision() > 0 {
                // Events were compacted away: read the state afresh and announce it.
                let mut reading = client.clone();
                match load(&mut reading, &layout, &seen, clock.as_ref(), Duration::from_secs(5)).await {
                    Ok(revision) => from = revision + 1,
                    Err(err) => tracing::debug!("etcd watch could not re-read after compaction: {err}"),
                }
                announce_all(&watchers, &seen);
                break;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                from = from.max(kv.mod_revision() + 1);
                match layout.parse(kv.key()) {
                    Some((Kind::Lease, app)) => {
                        let at = clock.now();
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        // A renewal puts the key again unchanged: the lease did not change
                        // hands, so nobody is woken (only when it was last seen standing).
                        let renewal = event.event_type() == EventType::Put
                            && seen.leases.get(&app).is_some_and(|known| {
                                known.create_revision == kv.create_revision()
                                    && known.lease == kv.lease()
                                    && known.value.as_deref() == Some(kv.value())
                            });
                        // Older than this process's own change of the key, already kept.
                        let newer = seen.lease_floors.get(&app).is_none_or(|floor| kv.mod_revision() > *floor);
                        if event.event_type() == EventType::Put {
                            if newer {
                                seen.leases.insert(app.clone(), super::Read::of(kv));
                            }
                            if let Ok(value) = keys::decode::<keys::LeaseValue>(kv.key(), kv.value()) {
                                // A new tenure's key and its term key were put by one
                                // transaction: the term key's mod revision is the key's.
                                if kv.version() == 1
                                    && let (Ok(_), Some(slot)) = (value.holder(kv.key()), mirrored(Kind::Term))
                                {
                                    let term = keys::encode(&keys::TermValue::of_lease(&value));
                                    seen.keys.insert((app.clone(), slot), (kv.mod_revision(), term));
                                }
                                seen.tenures.insert(app.clone(), SeenTenure { term: value.term, at, ended: false });
                            }
                            seen.held.insert(app);
                        } else {
                            if newer {
                                seen.leases.remove(&app);
                            }
                            if let Some(tenure) = seen.tenures.get_mut(&app) {
                                tenure.ended = true;
                            }
                            seen.held.remove(&app);
                        }
                        drop(seen);
                        if !renewal {
                            watchers.leases_changed();
                        }
                    }
                    Some((kind @ (Kind::Pins | Kind::Reserved | Kind::Released), app)) => {
                        if let Some(slot) = mirrored(kind) {
                            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                            if event.event_type() == EventType::Put {
                                seen.keys.insert((app, slot), (kv.mod_revision(), kv.value().to_vec()));
                            } else {
                                seen.keys.remove(&(app, slot));
                            }
                        }
                        watchers.leases_changed();
                    }
                    Some((Kind::Settings, app)) if event.event_type() == EventType::Put => {
                        let version = u64::try_from(kv.version()).unwrap_or(0);
                        raise_version(&seen, &app, version);
                        watchers.settings_changed(&app, version);
                    }
                    _ => {}
                }
            }
            if response.canceled() {
                break;
            }
        }
        // The stream ended (a member went away, or the server cancelled the watch): resume.
        if leases {
            seen.lock().unwrap_or_else(|p| p.into_inner()).live = false;
        }
        failures = failures.saturating_add(1);
    }
}

/// Tells every watcher to look again.
fn announce_all(watchers: &Watchers, seen: &Mutex<Seen>) {
    let known: Vec<(AppName, u64)> =
        seen.lock().unwrap_or_else(|p| p.into_inner()).versions.iter().map(|(a, v)| (a.clone(), *v)).collect();
    for (app, version) in known {
        watchers.settings_changed(&app, version);
    }
    watchers.leases_changed();
}
