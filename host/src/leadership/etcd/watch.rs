//! The watch of a store: one stream for the whole process, on which every application the
//! process follows has a watch of each of its lease, released, reservation, pins and
//! settings keys. An application is followed from the first time a unit of this process
//! claims its lease, waits on it, or subscribes to its settings (or a caller waits on its
//! lease changes), so a process hears of exactly the applications it hosts or asks about:
//! another application's renewals never reach it, however many share the prefix (see
//! `docs/scaling.md`). (A leader's unit-data mirror has a watch of its own: `unit_data.rs`.)
//!
//! Invariants:
//! - An application's keys are read at one revision before they are watched from the next,
//!   and each key resumes from the revision after its last event handled, so a broken
//!   stream (a member lost, a failover) loses no event.
//! - When a watched revision was compacted, every followed application is read afresh and
//!   a change announced, so nothing waits forever on a change it missed.
//! - The stream is reopened with a backoff; the task ends when the store is dropped (which
//!   aborts it).
//! - Bounded: one stream; five watches per followed application; each application is
//!   asked for once (a set remembers which), so the queue of applications holds at most one
//!   entry per application, and the queue of watch requests five.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, TxnOp, WatchOptions, WatchResponseStream};
use tokio::sync::mpsc;

use super::keys::{self, Kind, Layout};
use crate::leadership::watchers::Watchers;
use crate::leadership::{Clock, StoreError, Timestamp};
use crate::names::AppName;

/// The keys of one application that are watched, in the order of a followed application's
/// next revisions.
const WATCHED: [Kind; 5] = [Kind::Lease, Kind::Released, Kind::Reserved, Kind::Pins, Kind::Settings];

/// How long a read of an application's keys (when it is first followed, or after a
/// compaction) may take.
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// How long a stream may stay silent before it is asked for a progress report, and then
/// before it is taken for dead.
const SILENCE: Duration = Duration::from_secs(10);

/// How soon an application whose keys could not be read is tried again.
const READ_AGAIN: Duration = Duration::from_secs(1);

/// Raises the version recorded for `app` (versions never go down).
pub(super) fn raise_version(seen: &Mutex<Seen>, app: &AppName, version: u64) {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let entry = seen.versions.entry(app.clone()).or_insert(0);
    *entry = (*entry).max(version);
}

/// What the watch keeps of the store: each application's settings version, and of each
/// followed application whether it has a lease key (held, or pinned) and when its last
/// tenure was last seen standing. Hints only (decisions read the store), except
/// [`Seen::tenures`], which bounds how long the holder of a tenure that ended behind its
/// back may still count on it.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub versions: BTreeMap<AppName, u64>,
    pub held: BTreeSet<AppName>,
    /// Each lease key as last seen (value, revisions, etcd lease): what a minion's wait
    /// looks at instead of the store (see [`Seen::live`]).
    pub leases: BTreeMap<AppName, super::Read>,
    /// The revision of this process's own last change of each lease key, put into
    /// [`Seen::leases`] when it was made: the watch's older events of the key are not.
    pub lease_floors: BTreeMap<AppName, i64>,
    /// The applications whose keys are watched on a running stream (from when their watches
    /// were sent until it breaks): every change of their lease, pins or reservation key
    /// reaches [`Seen`] a watch's delay after it was made.
    pub live: BTreeSet<AppName>,
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
    /// renewal), or found it present or gone when it read the store: later than every put
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

/// Reads every application's settings version (keys only: a settings key's put count is
/// its version, see `keys`), so that a subscriber starts from the version it can see.
pub(super) async fn read_versions(
    client: &mut Client,
    layout: &Layout,
    seen: &Mutex<Seen>,
    deadline: Duration,
) -> Result<(), StoreError> {
    let options = GetOptions::new().with_prefix().with_keys_only();
    let got = super::within(deadline, client.get(layout.range(Kind::Settings), Some(options)))
        .await?
        .map_err(super::etcd_failed)?;
    for kv in got.kvs() {
        if let Some((Kind::Settings, app)) = layout.parse(kv.key()) {
            raise_version(seen, &app, u64::try_from(kv.version()).unwrap_or(0));
        }
    }
    Ok(())
}

/// Reads `app`'s lease, term, released, reservation, pins and settings keys at one
/// revision into `seen`; returns that revision.
async fn read_app(
    client: &mut Client,
    layout: &Layout,
    app: &AppName,
    seen: &Mutex<Seen>,
    clock: &dyn Clock,
) -> Result<i64, StoreError> {
    let kinds = [Kind::Lease, Kind::Term, Kind::Released, Kind::Reserved, Kind::Pins];
    let mut reads: Vec<TxnOp> = kinds.iter().map(|kind| TxnOp::get(layout.key(*kind, app), None)).collect();
    reads.push(TxnOp::get(layout.key(Kind::Settings, app), Some(GetOptions::new().with_keys_only())));
    let got = super::within(READ_DEADLINE, client.txn(etcd_client::Txn::new().and_then(reads)))
        .await?
        .map_err(super::etcd_failed)?;
    // After the answer: the tenure read (standing, or gone) was last put before this.
    let at = clock.now();
    let revision = got.header().map_or(0, |h| h.revision());
    let answers = got.op_responses();
    let found: Vec<Option<&etcd_client::KeyValue>> = answers
        .iter()
        .map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get.kvs().first(),
            _ => None,
        })
        .collect();
    let found = |kind: Kind| kinds.iter().position(|k| *k == kind).and_then(|i| found.get(i).copied().flatten());
    let mut kept = seen.lock().unwrap_or_else(|p| p.into_inner());
    // This process's own later change of the lease key is newer than this reading.
    let newer = kept.lease_floors.get(app).is_none_or(|floor| revision >= *floor);
    match found(Kind::Lease) {
        Some(kv) => {
            if newer {
                kept.leases.insert(app.clone(), super::Read::of(kv));
            }
            if let Ok(value) = keys::decode::<keys::LeaseValue>(kv.key(), kv.value()) {
                kept.tenures.insert(app.clone(), SeenTenure { term: value.term, at, ended: false });
            }
            kept.held.insert(app.clone());
        }
        None => {
            if newer {
                kept.leases.remove(app);
            }
            match found(Kind::Term).and_then(|kv| keys::TermValue::decode(kv.key(), kv.value()).ok()) {
                Some(last) => kept.tenures.insert(app.clone(), SeenTenure { term: last.term, at, ended: true }),
                None => kept.tenures.remove(app),
            };
            kept.held.remove(app);
        }
    }
    for kind in [Kind::Term, Kind::Released, Kind::Reserved, Kind::Pins] {
        let Some(slot) = mirrored(kind) else { continue };
        match found(kind) {
            Some(kv) => kept.keys.insert((app.clone(), slot), (kv.mod_revision(), kv.value().to_vec())),
            None => kept.keys.remove(&(app.clone(), slot)),
        };
    }
    let settings = answers.get(kinds.len()).and_then(|op| match op {
        etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| u64::try_from(kv.version()).unwrap_or(0)),
        _ => None,
    });
    drop(kept);
    if let Some(version) = settings {
        raise_version(seen, app, version);
    }
    Ok(revision)
}

/// What the watch needs of its store.
pub(super) struct Context {
    pub client: Client,
    pub layout: Layout,
    pub watchers: Arc<Watchers>,
    pub seen: Arc<Mutex<Seen>>,
    pub clock: Arc<dyn Clock>,
}

/// The applications this process follows, and the task that watches them.
pub(super) struct Follower {
    followed: Mutex<BTreeSet<AppName>>,
    requests: mpsc::UnboundedSender<AppName>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts the watch task (on the current tokio runtime), following nothing yet.
    pub fn start(context: Context) -> Self {
        let (requests, asked) = mpsc::unbounded_channel();
        let watching = Watching { context, asked, next: BTreeMap::new(), unread: Vec::new(), read_again_at: None };
        Self { followed: Mutex::new(BTreeSet::new()), requests, task: tokio::spawn(watching.run()) }
    }

    /// Follows `app` from now on (nothing if it already is): its keys are read, then
    /// watched, in the background.
    pub fn follow(&self, app: &AppName) {
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        if followed.insert(app.clone()) {
            // Fails only once the task ended, which it does only when the store is dropped.
            let _ = self.requests.send(app.clone());
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a stream stopped being followed.
#[derive(Debug)]
enum Ended {
    /// The store was dropped: the task ends.
    Closed,
    /// The stream broke or the server cancelled a watch: resume from the next revisions.
    Broken,
    /// A watched revision was compacted away: read everything afresh, then resume.
    Compacted,
    /// The stream answered nothing, not even a progress request.
    Silent,
}

/// An open stream: its answers, read by the watch task, and a task of its own that sends
/// the watch requests, so that reading never waits behind sending (etcd stops reading
/// requests while its answers go unread) and sending never waits behind reading.
struct Open {
    responses: WatchResponseStream,
    requests: mpsc::UnboundedSender<Request>,
    sending: tokio::task::JoinHandle<()>,
}

/// A request on an open stream.
enum Request {
    Watch(String, WatchOptions),
    /// Asks the server to answer at once (a progress report): a stream that stays silent
    /// after it is taken for dead.
    Progress,
}

impl Open {
    fn new(mut sender: etcd_client::WatchRequestSender, responses: WatchResponseStream) -> Self {
        let (requests, mut queued) = mpsc::unbounded_channel::<Request>();
        let sending = tokio::spawn(async move {
            while let Some(request) = queued.recv().await {
                let sent = match request {
                    Request::Watch(key, options) => sender.watch(key, Some(options)).await,
                    Request::Progress => sender.request_progress().await,
                };
                if let Err(err) = sent {
                    // The stream is gone; its reader sees it end.
                    tracing::debug!("etcd watch could not send a request: {err}");
                    return;
                }
            }
        });
        Self { responses, requests, sending }
    }

    /// Queues a watch (sent in order; nothing if the stream is gone).
    fn send(&self, (key, options): (String, WatchOptions)) {
        let _ = self.requests.send(Request::Watch(key, options));
    }

    /// Queues a progress request.
    fn ask_progress(&self) {
        let _ = self.requests.send(Request::Progress);
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.sending.abort();
    }
}

/// What woke the watch task.
enum Woke {
    Asked(Option<AppName>),
    ReadAgain,
    /// Nothing heard for [`SILENCE`].
    Silence,
    Message(Result<Option<etcd_client::WatchResponse>, etcd_client::Error>),
}

/// The watch task's state.
struct Watching {
    context: Context,
    asked: mpsc::UnboundedReceiver<AppName>,
    /// Each followed application's next revision to watch of each of its [`WATCHED`] keys
    /// (the one after its last event handled).
    next: BTreeMap<AppName, [i64; WATCHED.len()]>,
    /// Applications asked for whose keys could not be read yet.
    unread: Vec<AppName>,
    /// When to try them again (a fixed instant: events arriving meanwhile do not put it off).
    read_again_at: Option<tokio::time::Instant>,
}

impl Watching {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            if failures > 0 {
                let pause = crate::timing::backoff(Duration::from_millis(100), Duration::from_secs(5), failures);
                tokio::time::sleep(pause).await;
            }
            if self.next.is_empty() && self.unread.is_empty() {
                match self.asked.recv().await {
                    Some(app) => self.unread.push(app),
                    None => return,
                }
            }
            self.read_unread().await;
            let Some(mut stream) = self.open().await else {
                failures = failures.saturating_add(1);
                continue;
            };
            let ended = self.follow(&mut stream, &mut failures).await;
            tracing::debug!(applications = self.next.len(), "etcd watch stream ended: {ended:?}");
            self.seen().live.clear();
            match ended {
                Ended::Closed => return,
                Ended::Broken | Ended::Silent => {}
                Ended::Compacted => {
                    let apps: Vec<AppName> = self.next.keys().cloned().collect();
                    for app in apps {
                        if self.read(&app).await.is_err() {
                            tracing::debug!(%app, "etcd watch could not read again after a compaction");
                        }
                    }
                    self.context.watchers.all_leases_changed();
                }
            }
            failures = failures.saturating_add(1);
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.context.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `app`'s keys and sets its watches to start after that revision; announces
    /// what the reading may have changed.
    async fn read(&mut self, app: &AppName) -> Result<(), StoreError> {
        let context = &self.context;
        let mut client = context.client.clone();
        let revision = read_app(&mut client, &context.layout, app, &context.seen, context.clock.as_ref()).await?;
        self.next.insert(app.clone(), [revision.saturating_add(1); WATCHED.len()]);
        let version = self.seen().versions.get(app).copied();
        if let Some(version) = version {
            self.context.watchers.settings_changed(app, version);
        }
        self.context.watchers.leases_changed(app);
        Ok(())
    }

    /// Reads the applications asked for and not read yet, until one fails: that one and the
    /// rest stay unread, to be tried again [`READ_AGAIN`] later. Returns those read.
    async fn read_unread(&mut self) -> Vec<AppName> {
        let mut read = Vec::new();
        let mut unread = std::mem::take(&mut self.unread).into_iter();
        while let Some(app) = unread.next() {
            if let Err(err) = self.read(&app).await {
                tracing::debug!(%app, "etcd watch could not read the application's keys (trying again): {err}");
                self.unread.push(app);
                self.unread.extend(unread);
                self.read_again_at = Some(tokio::time::Instant::now() + READ_AGAIN);
                return read;
            }
            read.push(app);
        }
        self.read_again_at = None;
        read
    }

    /// The watches of `app`'s keys, each from its next revision.
    fn watches_of(&self, app: &AppName) -> Vec<(String, WatchOptions)> {
        let next = self.next.get(app).copied().unwrap_or_default();
        WATCHED
            .iter()
            .zip(next)
            .map(|(kind, from)| (self.context.layout.key(*kind, app), WatchOptions::new().with_start_revision(from)))
            .collect()
    }

    /// Opens a stream with the watches of every followed application; `None` if there is
    /// none or the stream could not be opened.
    async fn open(&self) -> Option<Open> {
        let apps: Vec<AppName> = self.next.keys().cloned().collect();
        let mut watches = apps.iter().flat_map(|app| self.watches_of(app));
        let (key, options) = watches.next()?;
        let mut client = self.context.client.clone();
        let opened = super::within(READ_DEADLINE, client.watch(key, Some(options))).await;
        let (sender, responses) = match opened.and_then(|answer| answer.map_err(super::etcd_failed)) {
            Ok(stream) => stream.split(),
            Err(err) => {
                tracing::debug!("etcd watch could not start: {err}");
                return None;
            }
        };
        tracing::debug!(applications = apps.len(), "etcd watch stream open");
        let open = Open::new(sender, responses);
        for watch in watches {
            open.send(watch);
        }
        self.seen().live.extend(apps);
        Some(open)
    }

    /// Adds the watches of the applications read since the stream opened.
    fn add(&self, open: &Open, apps: Vec<AppName>) {
        for app in apps {
            for watch in self.watches_of(&app) {
                open.send(watch);
            }
            self.seen().live.insert(app);
        }
    }

    /// Handles the stream's events, and the applications asked for meanwhile, until it ends
    /// (or stays silent [`SILENCE`] after a progress request: a stream that hangs is
    /// reopened, not waited on forever).
    async fn follow(&mut self, open: &mut Open, failures: &mut u32) -> Ended {
        let mut heard_at = tokio::time::Instant::now();
        let mut asked_progress = false;
        loop {
            let quiet_until = heard_at + SILENCE;
            let read_again_at = self.read_again_at;
            let read_again = async move {
                match read_again_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                asked = self.asked.recv() => Woke::Asked(asked),
                () = read_again => Woke::ReadAgain,
                message = open.responses.message() => Woke::Message(message),
                () = tokio::time::sleep_until(quiet_until) => Woke::Silence,
            };
            let apps = match woke {
                Woke::Asked(None) => return Ended::Closed,
                Woke::Asked(Some(app)) => {
                    self.unread.push(app);
                    self.read_unread().await
                }
                Woke::ReadAgain => self.read_unread().await,
                Woke::Silence if asked_progress => return Ended::Silent,
                Woke::Silence => {
                    open.ask_progress();
                    asked_progress = true;
                    heard_at = tokio::time::Instant::now();
                    continue;
                }
                Woke::Message(Ok(Some(response))) => {
                    *failures = 0;
                    heard_at = tokio::time::Instant::now();
                    asked_progress = false;
                    if response.compact_revision() > 0 {
                        return Ended::Compacted;
                    }
                    for event in response.events() {
                        self.handle(event);
                    }
                    if response.canceled() {
                        return Ended::Broken;
                    }
                    continue;
                }
                Woke::Message(Ok(None) | Err(_)) => return Ended::Broken,
            };
            self.add(open, apps);
        }
    }

    /// Takes one event into [`Seen`] and wakes whoever it concerns.
    fn handle(&mut self, event: &etcd_client::Event) {
        let Some(kv) = event.kv() else { return };
        let Some((kind, app)) = self.context.layout.parse(kv.key()) else { return };
        if let (Some(next), Some(slot)) = (self.next.get_mut(&app), WATCHED.iter().position(|k| *k == kind)) {
            next[slot] = next[slot].max(kv.mod_revision().saturating_add(1));
        }
        let watchers = &self.context.watchers;
        match kind {
            Kind::Lease => {
                let at = self.context.clock.now();
                let mut seen = self.seen();
                // A renewal puts the key again unchanged: the lease did not change hands, so
                // nobody is woken (only when it was last seen standing).
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
                        // A new tenure's key and its term key were put by one transaction:
                        // the term key's mod revision is the key's.
                        if kv.version() == 1
                            && let (Ok(_), Some(slot)) = (value.holder(kv.key()), mirrored(Kind::Term))
                        {
                            let term = keys::encode(&keys::TermValue::of_lease(&value));
                            seen.keys.insert((app.clone(), slot), (kv.mod_revision(), term));
                        }
                        seen.tenures.insert(app.clone(), SeenTenure { term: value.term, at, ended: false });
                    }
                    seen.held.insert(app.clone());
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
                    watchers.leases_changed(&app);
                }
            }
            Kind::Pins | Kind::Reserved | Kind::Released => {
                if let Some(slot) = mirrored(kind) {
                    let mut seen = self.seen();
                    if event.event_type() == EventType::Put {
                        seen.keys.insert((app.clone(), slot), (kv.mod_revision(), kv.value().to_vec()));
                    } else {
                        seen.keys.remove(&(app.clone(), slot));
                    }
                }
                watchers.leases_changed(&app);
            }
            Kind::Settings if event.event_type() == EventType::Put => {
                let version = u64::try_from(kv.version()).unwrap_or(0);
                raise_version(&self.context.seen, &app, version);
                watchers.settings_changed(&app, version);
            }
            Kind::Settings | Kind::Term => {}
        }
    }
}
