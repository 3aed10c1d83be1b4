//! A [`LeadershipStore`] on an etcd v3 cluster, for agents on several machines that share
//! nothing else. The server decides expiry; a client clock only ever makes a claimant wait
//! longer (see **Tenures that end behind their holder's back**).
//!
//! Which etcd primitive carries each guarantee (the key layout is in `keys.rs`):
//! - **At most one holder**: a tenure is the key `P/lease/APP`, bound to an etcd lease
//!   whose TTL is the claim's duration. A grant is one transaction whose guard is
//!   `create_revision(P/lease/APP) == 0` (nobody holds it); the server deletes the key when
//!   the etcd lease expires or is revoked, and only then can the next grant succeed. An
//!   extension is a keep-alive of the tenure's etcd lease followed by a transaction that
//!   puts the key again, unchanged, guarded by the tenure and its binding to that lease: it
//!   proves that the key still stood after the renewal.
//! - **Tenures that end behind their holder's back**: etcd's leader renews leases in memory,
//!   and a leader that was paused and replaced revokes the leases it thinks expired before
//!   it notices it was replaced (its "still active" shortcut skips the leadership check);
//!   the revoke is forwarded to the new leader and applied, so a key can vanish while its
//!   holder, renewing through the new leader, still counts on it (seen here with etcd 3.7.2).
//!   So a claimant does not take a lease whose last tenure ended without its holder giving
//!   it up until that tenure's TTL has passed since the last put of its key it saw, or since
//!   it found the key gone if it did not see every put: the holder counted on no renewal
//!   longer than that. A holder that gives its tenure up records the term in
//!   `P/released/APP` in the transaction that deletes the key, and its successor does not
//!   wait. Until then, [`EtcdStore::lease`] reports the old holder and claims are
//!   [`LeaseError::Denied`]; the old holder itself may claim again at once.
//! - **A claim holds from the start of the call**: the holder reads its own
//!   [`BootClock`] before sending the grant or keep-alive and promises itself `start + TTL`;
//!   the server's countdown starts later, when it receives the request. `CLOCK_BOOTTIME`
//!   keeps counting across a suspend, so a suspended holder wakes with no guarantee.
//! - **Terms only go up**: `P/term/APP` is raised in the grant's transaction (guarded by its
//!   mod revision) and never deleted; etcd keeps it across restarts of every member. It
//!   also names the tenure's holder and its longest TTL, for the rule above.
//! - **Reservations**: `P/reserved/APP` names the unit, bound to an etcd lease of the
//!   reservation's duration; a grant to anyone else is refused while it exists, and the
//!   grant to that unit deletes it in the same transaction.
//! - **Pins**: `P/pins/APP` lists the entities; pinning re-puts the lease key without an etcd
//!   lease (a plain put detaches it), so the server cannot expire it. **Different from the
//!   embedded stores:** removing the last pin binds the key to a fresh etcd lease of the
//!   tenure's TTL, so expiry resumes a full TTL after the unpin (the embedded stores keep
//!   the original expiry); and a pin cannot revive a lease that already expired, because its
//!   key is gone.
//! - **Fenced writes**: one transaction guarded by `create_revision(P/lease/APP)` as read
//!   with the holder and term (the same tenure still holds the lease) and by the settings
//!   key's mod revision (nothing else changed the bucket); it puts the whole bucket (with its
//!   version) as one key, so the group is applied whole or not at all. etcd acknowledges
//!   after the raft quorum has the entry on disk.
//! - **Reads** are linearizable (etcd's default; never `serializable`). Two answers come
//!   from the watch's copy instead, while the application's watches run, so that a waiting minion
//!   costs etcd nothing: [`LeadershipStore::lease_hint`] (when to look again) and the
//!   refusal of a claim of a lease the copy shows held by another unit. Neither grants
//!   anything: a lagging copy only delays a claim, which reads before it can succeed. A
//!   renewal (its key put again unchanged) wakes no lease watcher.
//! - **Endpoints**: calls go only to members that accept connections (`endpoints.rs`).
//! - **Unit data**: one key per member, written in transactions guarded by its mod
//!   revision, read through a watched mirror (see `unit_data.rs`).
//! - **Watches**: one stream per process, with a watch of each lease, released,
//!   reservation, pins and settings key of every application the process follows (from
//!   its first claim, wait or settings subscription: `watch.rs`), so another application's
//!   renewals never reach it; each key resumes from the last revision seen after a broken
//!   stream (member failover), and everything followed is read again after compaction.
//!
//! **Few round trips, in the common case.** An extension is one keep-alive of the tenure's
//! etcd lease (remembered from the grant), sent on that lease's stream (opened at its first
//! renewal and kept: `keep_alive.rs`), and one transaction. A fenced write is one transaction whose
//! guards use the tenure and bucket revisions this process last saw. A claim of a lease the
//! watch saw free is one transaction guarded by the term, reservation and pins revisions the
//! watch keeps, bound to a spare etcd lease granted ahead. Those are hints: a stale
//! one fails a guard (or a keep-alive), and the operation then reads and decides afresh.
//!
//! A failed or ambiguous request (a timeout after sending, a member lost mid-call) returns
//! [`LeaseError::Store`] or [`WriteError::Store`]: the caller does not know whether it was
//! applied, and every operation is safe to retry. A grant that was applied is found by the
//! next claim as this unit's own tenure and extended; an etcd lease granted for a
//! transaction that never applied expires on its own. A fenced write is not sent once its
//! `apply_by` deadline has passed, and its request is cancelled at that deadline; one the
//! server had already accepted may still be applied, a margin before the caller gives up.

mod connect;
mod endpoints;
mod history;
mod identity;
mod keep_alive;
mod keys;
mod unit_data;
mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch as channel;

use self::identity::{PrefixProblem, StoreIdentity};
use self::keys::{Kind, Layout, LeaseValue, SettingsValue, TermValue};
use super::watchers::Watchers;
use super::{
    BootClock, Claim, Claimant, Clock, IncarnationId, LeadershipStore, Lease, LeaseError, LeaseHint, Release,
    StoreError, StoreFailure, Tenure, Timestamp, WriteError, validate_duration, validate_entity,
};
use crate::names::{AppName, UnitName};
use crate::settings::{SettingsSnapshot, SettingsWrite};

pub use connect::{ConnectError, DEFAULT_PREFIX, EtcdOptions, EtcdTls, check_server_version};

/// How many times an operation re-reads and retries when its transaction's guard fails
/// because another writer got there first.
const CONTENTION_RETRIES: usize = 8;

/// Leases, pins and settings in an etcd cluster.
pub struct EtcdStore {
    client: Client,
    layout: Layout,
    clock: Arc<dyn Clock>,
    request_timeout: Duration,
    watchers: Arc<Watchers>,
    /// Settings versions and existing leases as last seen (read at connect, then kept by
    /// the watch).
    seen: Arc<Mutex<watch::Seen>>,
    server_version: String,
    endpoints: String,
    /// The applications this process follows, and the watch of their keys.
    follower: watch::Follower,
    hints: Mutex<Hints>,
    /// An etcd lease granted ahead for the next new tenure.
    spare: Arc<Mutex<Option<Spare>>>,
    /// The unit-data mirror of each application this process watches (aborted on drop).
    unit_mirrors: unit_data::Mirrors,
    /// The store found at connect, checked in every transaction.
    identity: StoreIdentity,
    /// The keep-alive stream of each etcd lease this process renews.
    keep_alives: keep_alive::KeepAlives,
    /// Sets aside endpoints that stop answering, and takes them back.
    watchdog: endpoints::Watchdog,
}

/// An etcd lease granted ahead of the next new tenure, so that claiming a free lease is one
/// transaction instead of a grant and then a transaction. Its TTL started counting when it
/// was granted, so a claim counts its validity from `start` (read before the grant was
/// asked) and takes it only while fresh: within [`SPARE_FRESH`] of its TTL.
#[derive(Debug, Clone, Copy)]
struct Spare {
    id: i64,
    /// The TTL asked for, and the one the server granted.
    asked: i64,
    ttl: i64,
    start: Timestamp,
}

/// The share of a spare lease's TTL it may have used and still serve a claim.
const SPARE_FRESH: u32 = 20;

/// What lets a fenced write go in one round trip; only ever a guess that a transaction's
/// guard checks.
#[derive(Debug, Default)]
struct Hints {
    /// Each incarnation's tenure as last granted or seen here.
    tenures: BTreeMap<(UnitName, IncarnationId), TenureHint>,
    /// Each bucket this process last wrote or read: its mod revision and contents.
    buckets: BTreeMap<AppName, (i64, SettingsValue)>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).field("prefix", &self.layout.prefix()).finish()
    }
}

/// A tenure as this process last saw it.
#[derive(Debug, Clone, Copy)]
struct TenureHint {
    term: u64,
    /// The create revision of its lease key: what a fenced write's guard compares.
    created: i64,
    /// The tenure's etcd lease and its TTL, when the key is bound to it: renewing that lease
    /// is an extension (see [`EtcdStore::claim`]).
    renew: Option<(i64, i64)>,
}

/// One key as read: absent keys have revisions 0.
#[derive(Debug, Clone, Default)]
struct Read {
    value: Option<Vec<u8>>,
    create_revision: i64,
    mod_revision: i64,
    lease: i64,
}

impl Read {
    fn of(kv: &etcd_client::KeyValue) -> Self {
        Read {
            value: Some(kv.value().to_vec()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

/// An application's lease state, read at one revision.
#[derive(Debug)]
struct AppLease {
    lease: Read,
    term: Read,
    released: Read,
    reserved: Read,
    pins: Read,
    /// An instant before the state was read, and one after (for a mirrored state: both
    /// when it was looked at).
    asked_at: Timestamp,
    read_at: Timestamp,
}

/// A lease whose key is gone but whose holder may still count on it: its tenure ended
/// without being given up (expired, or revoked behind its holder's back), and its last
/// renewal was seen less than its TTL ago.
#[derive(Debug, Clone)]
struct Vacancy {
    holder: UnitName,
    incarnation: Option<IncarnationId>,
    term: u64,
    /// When nobody can count on it any more (this host's clock).
    until: Timestamp,
}

/// The version of every member of the cluster `client` reaches, each asked on its own
/// client URL; a member that cannot be asked is left out, with a warning (a member down is
/// ordinary; the one answering was checked already).
async fn member_versions(
    client: &mut Client,
    options: &etcd_client::ConnectOptions,
    deadline: Duration,
) -> Vec<(String, String)> {
    let members = match within(deadline, client.member_list()).await {
        Ok(Ok(members)) => members,
        Ok(Err(err)) => {
            tracing::warn!("cannot list the etcd cluster's members to check their versions: {}", etcd_failed(err));
            return Vec::new();
        }
        Err(err) => {
            tracing::warn!("cannot list the etcd cluster's members to check their versions: {err}");
            return Vec::new();
        }
    };
    let mut versions = Vec::new();
    for member in members.members() {
        let name = if member.name().is_empty() { format!("{:x}", member.id()) } else { member.name().to_owned() };
        let Some(url) = member.client_urls().first() else { continue };
        let asked = async {
            let mut one = Client::connect([url.as_str()], Some(options.clone())).await?;
            one.status().await
        };
        match within(deadline, asked).await {
            Ok(Ok(status)) => versions.push((name, status.version().to_owned())),
            Ok(Err(err)) => {
                tracing::warn!(member = %name, "cannot ask an etcd member its version: {}", etcd_failed(err))
            }
            Err(err) => tracing::warn!(member = %name, "cannot ask an etcd member its version: {err}"),
        }
    }
    versions
}

/// Runs one etcd call within `deadline`; the outer error says it did not answer in time,
/// the inner result is etcd's own.
async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<Result<T, etcd_client::Error>, StoreError> {
    tokio::time::timeout(deadline, call)
        .await
        .map_err(|_| StoreError::unreachable(format!("etcd did not answer within {deadline:?}")))
}

/// True for etcd's answer about a lease it does not have (expired or revoked).
fn lease_not_found(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::NotFound)
}

/// Revokes an etcd lease that holds nothing any more, within `deadline`; a failure only
/// leaves it to expire by itself.
async fn revoke_quietly(mut client: Client, id: i64, deadline: Duration) {
    match within(deadline, client.lease_revoke(id)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) if lease_not_found(&err) => {}
        Ok(Err(err)) => tracing::debug!(
            lease = id,
            "could not revoke an unused etcd lease (it expires by itself): {}",
            etcd_failed(err)
        ),
        Err(err) => tracing::debug!(lease = id, "could not revoke an unused etcd lease (it expires by itself): {err}"),
    }
}

/// etcd's error, with its kind: a member that cannot be reached (a failed connection) or
/// timed out is unreachable, an exhausted quota busy, lost data corrupt, anything else a
/// failure.
fn etcd_failed(err: etcd_client::Error) -> StoreError {
    use tonic::Code;
    let kind = match &err {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => StoreFailure::Unreachable,
            // Made by the client from a failed connection (the server's own carry no source).
            Code::Unknown if std::error::Error::source(status).is_some() => StoreFailure::Unreachable,
            Code::ResourceExhausted => StoreFailure::Busy,
            Code::DataLoss => StoreFailure::Corrupt,
            _ => StoreFailure::Failed,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => StoreFailure::Unreachable,
        _ => StoreFailure::Failed,
    };
    let context = match &err {
        etcd_client::Error::GRpcStatus(status) => match std::error::Error::source(status) {
            Some(source) => format!("etcd: {} ({:?}): {source}", status.message(), status.code()),
            None => format!("etcd: {} ({:?})", status.message(), status.code()),
        },
        _ => "etcd".to_owned(),
    };
    match err {
        etcd_client::Error::GRpcStatus(_) => StoreError::new(kind, context),
        other => StoreError::caused_by(kind, &context, other),
    }
}

impl EtcdStore {
    /// Connects, checks the server's version and the prefix, and starts watching. Fails
    /// fast (within the connect and request timeouts) if no member answers or the cluster
    /// has no leader. Must be called inside a tokio runtime, which runs the watch.
    pub async fn connect(options: &EtcdOptions) -> Result<Self, ConnectError> {
        let endpoints = options.endpoint_list();
        let unreachable =
            |reason: StoreError| ConnectError::Unreachable { endpoints: endpoints.clone(), reason: reason.to_string() };
        let client_options = options.client_options()?;
        let deadline = options.connect_timeout + options.request_timeout;
        // Only the members that answer (else a call to a dead one fails: `endpoints.rs`);
        // all of them if none does, for the error that says so.
        let answering = match endpoints::answering(&options.endpoints, options.connect_timeout).await {
            none if none.is_empty() => options.endpoints.clone(),
            some => some,
        };
        let connected = within(deadline, Client::connect(&answering, Some(client_options.clone()))).await;
        let mut client = connected.map_err(unreachable)?.map_err(|err| unreachable(etcd_failed(err)))?;
        let status = within(deadline, client.status())
            .await
            .map_err(unreachable)?
            .map_err(|err| unreachable(etcd_failed(err)))?;
        let server_version = status.version().to_owned();
        // Every member, not only the one that answered: in a rolling upgrade (or with one
        // member left behind) the versions differ, and any member may serve a renewal.
        let mut versions = vec![(String::from("the member answering"), server_version.clone())];
        versions.extend(member_versions(&mut client, &client_options, deadline).await);
        for (member, version) in &versions {
            if let Err(problem) = check_server_version(version) {
                let problem = format!("{problem} (member {member})");
                if !options.allow_unsafe_server {
                    return Err(ConnectError::UnsafeServer(problem));
                }
                tracing::warn!("{problem}; connecting anyway, as asked");
            }
        }
        let layout = Layout::new(&options.prefix);
        let prefix_error = |reason: String| ConnectError::Prefix { prefix: options.prefix.clone(), reason };
        let clock: Arc<dyn Clock> = Arc::new(BootClock);
        let identity = StoreIdentity::establish(&mut client, &layout, deadline, clock.as_ref(), options.unused_prefix)
            .await
            .map_err(|e| match e {
                PrefixProblem::Foreign(reason) => prefix_error(reason),
                PrefixProblem::Failed(reason) => unreachable(reason),
            })?;
        let watchers = Arc::new(Watchers::default());
        let seen = Arc::new(Mutex::new(watch::Seen::default()));
        watch::read_versions(&mut client, &layout, &seen, deadline).await.map_err(unreachable)?;
        let follower = watch::Follower::start(watch::Context {
            client: client.clone(),
            layout: layout.clone(),
            watchers: watchers.clone(),
            seen: seen.clone(),
            clock: clock.clone(),
        });
        let client_for_watchdog = client.clone();
        Ok(Self {
            client,
            layout,
            clock,
            request_timeout: options.request_timeout,
            watchers,
            seen,
            server_version,
            endpoints,
            follower,
            hints: Mutex::new(Hints::default()),
            spare: Arc::new(Mutex::new(None)),
            unit_mirrors: unit_data::Mirrors::default(),
            identity,
            keep_alives: keep_alive::KeepAlives::default(),
            watchdog: endpoints::Watchdog::start(
                client_for_watchdog,
                options.endpoints.clone(),
                answering,
                options.tls.is_some(),
                options.connect_timeout,
            ),
        })
    }

    /// The store's id, made when it was created.
    pub fn store_id(&self) -> &str {
        self.identity.id()
    }

    /// The version the server reported at connect.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.layout.prefix()
    }

    /// Runs one request with the store's deadline.
    async fn request<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        let result = within(self.request_timeout, call).await.and_then(|answer| answer.map_err(etcd_failed));
        self.noticed(result)
    }

    /// `result`, after telling the endpoint watchdog of an unreachable member.
    fn noticed<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.as_ref().is_err_and(|err| err.kind() == StoreFailure::Unreachable) {
            self.watchdog.suspect();
        }
        result
    }

    /// Runs a transaction built with [`Self::when`] (its guards include the store's
    /// identity): an answer from another cluster or an older revision, or a failed guard
    /// that turns out to be the identity's, is [`StoreFailure::Replaced`].
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        let mut client = self.client.clone();
        let floor = self.identity.floor();
        let response = self.request(client.txn(txn)).await?;
        self.identity.check_header(response.header(), floor)?;
        if !response.succeeded() {
            self.identity.confirm(&mut client, self.request_timeout).await?;
        }
        Ok(response)
    }

    /// A transaction guarded by `compares` and by the store's identity.
    fn when(&self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        Txn::new().when(self.identity.guard(compares))
    }

    /// Reads `keys` in one transaction: one revision, linearizable.
    async fn read(&self, keys: &[String]) -> Result<Vec<Read>, StoreError> {
        let ops: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
        let response = self.txn(self.when([]).and_then(ops)).await?;
        let mut reads = Vec::new();
        for op in response.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                return Err(StoreError::failed("etcd answered a read with something else"));
            };
            reads.push(get.kvs().first().map_or_else(Read::default, Read::of));
        }
        if reads.len() != keys.len() {
            return Err(StoreError::failed("etcd answered a read with too few results"));
        }
        Ok(reads)
    }

    async fn read_lease_state(&self, app: &AppName) -> Result<AppLease, LeaseError> {
        let keys =
            [Kind::Lease, Kind::Term, Kind::Released, Kind::Reserved, Kind::Pins].map(|k| self.layout.key(k, app));
        let asked_at = self.clock.now();
        let mut reads = self.read(&keys).await.map_err(LeaseError::Store)?.into_iter();
        let read_at = self.clock.now();
        let mut next = || reads.next().unwrap_or_default();
        Ok(AppLease {
            lease: next(),
            term: next(),
            released: next(),
            reserved: next(),
            pins: next(),
            asked_at,
            read_at,
        })
    }

    fn lease_value(&self, app: &AppName, read: &Read) -> Result<Option<(LeaseValue, UnitName)>, StoreError> {
        let key = self.layout.key(Kind::Lease, app);
        let Some(value) = &read.value else { return Ok(None) };
        let lease: LeaseValue = keys::decode(key.as_bytes(), value)?;
        let holder = lease.holder(key.as_bytes())?;
        Ok(Some((lease, holder)))
    }

    fn pins_of(&self, app: &AppName, read: &Read) -> Result<Vec<String>, StoreError> {
        match &read.value {
            Some(value) => keys::decode(self.layout.key(Kind::Pins, app).as_bytes(), value),
            None => Ok(Vec::new()),
        }
    }

    /// Grants an etcd lease of `ttl` seconds: its id and the TTL the server chose.
    async fn grant(&self, ttl: i64) -> Result<(i64, i64), StoreError> {
        let mut client = self.client.clone();
        let granted = self.request(client.lease_grant(ttl, None)).await?;
        if !granted.error().is_empty() {
            return Err(StoreError::failed(format!("etcd refused a lease: {}", granted.error())));
        }
        Ok((granted.id(), granted.ttl()))
    }

    /// Revokes an etcd lease that holds nothing any more (cleanup: failures only wait for
    /// its TTL).
    async fn discard(&self, id: i64) {
        self.keep_alives.forget(id);
        revoke_quietly(self.client.clone(), id, self.request_timeout).await;
    }

    /// An etcd lease of `ttl` seconds for a new tenure, with the clock read before it was
    /// granted: the fresh spare if there is one, else one granted now.
    async fn lease_for_tenure(&self, ttl: i64) -> Result<(Timestamp, i64, i64), StoreError> {
        if let Some(spare) = self.take_spare(ttl) {
            return Ok((spare.start, spare.id, spare.ttl));
        }
        let start = self.clock.now();
        let (id, granted) = self.grant(ttl).await?;
        Ok((start, id, granted))
    }

    /// The lease state of `unit`'s application as the watch last saw it, if that says the
    /// lease is free and not reserved for another unit.
    fn mirrored_state(&self, unit: &UnitName) -> Option<AppLease> {
        let (_, mut state) = self.state_seen(unit.app());
        state.lease = Read::default();
        if state.reserved.value.as_ref().is_some_and(|r| r.as_slice() != unit.as_str().as_bytes()) {
            return None;
        }
        Some(state)
    }

    /// `app`'s lease state as the watch last saw it (the lease key, and the keys a claim
    /// guards with), and whether its watches run (else it may be far behind).
    fn state_seen(&self, app: &AppName) -> (bool, AppLease) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = |kind| {
            let slot = watch::mirrored(kind);
            slot.and_then(|slot| seen.keys.get(&(app.clone(), slot))).map_or_else(Read::default, |(revision, value)| {
                Read { value: Some(value.clone()), create_revision: 0, mod_revision: *revision, lease: 0 }
            })
        };
        let (term, released, reserved, pins) =
            (key(Kind::Term), key(Kind::Released), key(Kind::Reserved), key(Kind::Pins));
        let lease = seen.leases.get(app).cloned().unwrap_or_default();
        let now = self.clock.now();
        (seen.live.contains(app), AppLease { lease, term, released, reserved, pins, asked_at: now, read_at: now })
    }

    /// Puts this process's own change of `app`'s lease key (made at `revision`) into what
    /// the watch keeps, so that this process's next claim sees it without waiting for the
    /// watch to deliver it (the watch skips older events of the key).
    fn saw_own_change(&self, app: &AppName, revision: i64, key: Option<Read>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // (Not `held`: a claim that finds it stale reads the store instead of guarding a
        // grant with mirrored keys the change also moved.)
        match key {
            Some(key) => seen.leases.insert(app.clone(), key),
            None => seen.leases.remove(app),
        };
        let floor = seen.lease_floors.entry(app.clone()).or_insert(0);
        *floor = (*floor).max(revision);
    }

    /// The unit holding `app`'s lease as its running watch last saw it.
    fn holder_seen(&self, app: &AppName) -> Option<UnitName> {
        let (live, state) = self.state_seen(app);
        let (_, holder) = self.lease_value(app, &state.lease).ok().flatten()?;
        live.then_some(holder)
    }

    /// The unit a reservation key (as read) names.
    fn reserved_unit(&self, app: &AppName, read: &Read) -> Result<Option<UnitName>, LeaseError> {
        let Some(value) = &read.value else { return Ok(None) };
        Ok(Some(
            UnitName::new(&String::from_utf8_lossy(value))
                .map_err(|e| LeaseError::Store(keys::corrupt(self.layout.key(Kind::Reserved, app).as_bytes(), e)))?,
        ))
    }

    /// `app`'s lease in `state`. Its expiry is an estimate, not before the real one: with
    /// `ask_server`, the server's remaining TTL; else the TTL from the last put of the key
    /// the watch saw (a renewal's put follows its keep-alive).
    async fn lease_in(&self, app: &AppName, state: &AppLease, ask_server: bool) -> Result<Option<Lease>, LeaseError> {
        let Some((value, holder)) = self.lease_value(app, &state.lease).map_err(LeaseError::Store)? else {
            let vacancy = self.vacancy(app, state, None).map_err(LeaseError::Store)?;
            return Ok(vacancy.map(|v| Lease {
                holder: v.holder,
                term: v.term,
                expires: v.until,
                pinned: false,
                incarnation: v.incarnation,
                origin: None,
            }));
        };
        let pinned = !self.pins_of(app, &state.pins).map_err(LeaseError::Store)?.is_empty();
        let now = self.clock.now();
        let expires = if state.lease.lease == 0 {
            now + secs(value.ttl)
        } else if !ask_server {
            // The server expires a lease a little after its TTL (it checks twice a second):
            // while the key stands past the estimate, a little later.
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).tenures.get(app).copied();
            let last_put = seen.filter(|seen| seen.term == value.term && !seen.ended).map_or(now, |seen| seen.at);
            (last_put + secs(value.ttl)).max(now + Duration::from_millis(100))
        } else {
            // The server's remaining TTL (whole seconds, rounded down; -1 once it is gone) as
            // a reading of this host's clock, rounded up: an estimate for waiting and
            // display that is not before the real expiry. Nothing is decided by it.
            let mut client = self.client.clone();
            let left =
                self.request(client.lease_time_to_live(state.lease.lease, None)).await.map_err(LeaseError::Store)?;
            if left.ttl() < 0 {
                // Expired, its key not yet deleted: once it is, the vacancy rule holds others
                // out for the TTL from the last renewal seen; until the watch has seen the
                // deletion, from now.
                let expires = state.read_at + secs(value.ttl);
                let origin = value.origin.map(Arc::new);
                return Ok(Some(Lease {
                    holder,
                    term: value.term,
                    expires,
                    pinned,
                    incarnation: value.incarnation,
                    origin,
                }));
            }
            now + secs(left.ttl()) + Duration::from_secs(1)
        };
        let origin = value.origin.map(Arc::new);
        Ok(Some(Lease { holder, term: value.term, expires, pinned, incarnation: value.incarnation, origin }))
    }

    /// The spare lease, if it has `ttl` and is still fresh; a stale one is revoked.
    fn take_spare(&self, ttl: i64) -> Option<Spare> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        let fresh = self.clock.now().saturating_since(spare.start) < secs(spare.ttl) / SPARE_FRESH;
        if fresh && spare.asked == ttl {
            return Some(spare);
        }
        tokio::spawn(revoke_quietly(self.client.clone(), spare.id, self.request_timeout));
        None
    }

    /// Grants a spare lease of `ttl` in the background for the next new tenure.
    fn refill_spare(&self, ttl: i64) {
        let (mut client, slot, clock, timeout) =
            (self.client.clone(), self.spare.clone(), self.clock.clone(), self.request_timeout);
        tokio::spawn(async move {
            let start = clock.now();
            let Ok(Ok(granted)) = within(timeout, client.lease_grant(ttl, None)).await else { return };
            let spare = Spare { id: granted.id(), asked: ttl, ttl: granted.ttl(), start };
            let previous = slot.lock().unwrap_or_else(|p| p.into_inner()).replace(spare);
            if let Some(previous) = previous {
                revoke_quietly(client, previous.id, timeout).await;
            }
        });
    }

    /// Renews an etcd lease once, on its keep-alive stream: false if the server no longer
    /// has it.
    async fn keep_alive(&self, id: i64) -> Result<bool, StoreError> {
        let renewal = within(self.request_timeout, self.keep_alives.renew(&self.client, id)).await;
        let renewal = renewal.and_then(|answer| match answer {
            Ok(keep_alive::Renewal::Renewed) => Ok(true),
            Ok(keep_alive::Renewal::Gone) => Ok(false),
            Err(err) if lease_not_found(&err) => {
                self.keep_alives.forget(id);
                Ok(false)
            }
            Err(err) => Err(etcd_failed(err)),
        });
        self.noticed(renewal)
    }

    /// Grants `unit` a free lease; `Ok(None)` if the guard failed (someone changed the state).
    /// `granted` is an etcd lease already granted for it (with the clock read before asking),
    /// else one is granted now.
    async fn grant_tenure(
        &self,
        claimant: &Claimant,
        state: &AppLease,
        duration: Duration,
        granted: Option<(Timestamp, i64, i64)>,
    ) -> Result<Option<Claim>, LeaseError> {
        let unit = claimant.unit();
        let app = unit.app();
        let term = self.last_tenure(app, &state.term).map_err(LeaseError::Store)?.map_or(0, |last| last.term);
        let term = term
            .checked_add(1)
            .ok_or_else(|| LeaseError::Store(StoreError::failed("the term counter is exhausted")))?;
        let pinned = !self.pins_of(app, &state.pins).map_err(LeaseError::Store)?.is_empty();
        let (start, id, ttl) = match granted {
            Some(granted) => granted,
            None => self.lease_for_tenure(ttl_seconds(duration)).await.map_err(LeaseError::Store)?,
        };
        let (lease_key, term_key) = (self.layout.key(Kind::Lease, app), self.layout.key(Kind::Term, app));
        let reserved_key = self.layout.key(Kind::Reserved, app);
        let bound = if pinned { None } else { Some(PutOptions::new().with_lease(id)) };
        let expired = self.expired_tenure(app, state).map_err(LeaseError::Store)?;
        let mut ops = vec![
            TxnOp::put(
                lease_key.as_str(),
                keys::encode(&LeaseValue::new(claimant, term, ttl, if pinned { 0 } else { id })),
                bound,
            ),
            TxnOp::put(term_key.as_str(), keys::encode(&TermValue::new(claimant, term, ttl)), None),
            TxnOp::delete(reserved_key.as_str(), None),
        ];
        ops.extend(history::on_grant(&self.layout, unit, term, self.clock.wall_now(), expired));
        // The guards on the term and released keys (the tenure before, and how it ended) make
        // the history's account of it part of what the transaction checks.
        let txn = self
            .when([
                Compare::create_revision(lease_key.as_str(), CompareOp::Equal, 0),
                Compare::mod_revision(term_key.as_str(), CompareOp::Equal, state.term.mod_revision),
                Compare::mod_revision(
                    self.layout.key(Kind::Released, app),
                    CompareOp::Equal,
                    state.released.mod_revision,
                ),
                Compare::mod_revision(reserved_key.as_str(), CompareOp::Equal, state.reserved.mod_revision),
                Compare::mod_revision(self.layout.key(Kind::Pins, app), CompareOp::Equal, state.pins.mod_revision),
            ])
            .and_then(ops);
        let response = self.txn(txn).await.map_err(LeaseError::Store)?;
        let applied = response.succeeded();
        if !applied || pinned {
            self.discard(id).await;
        }
        if !applied {
            return Ok(None);
        }
        self.refill_spare(ttl_seconds(duration));
        // The key was created by this transaction: its create revision is the response's.
        let created = response.header().map_or(0, |h| h.revision());
        self.remember_tenure(claimant, TenureHint { term, created, renew: (!pinned).then_some((id, ttl)) });
        let value = keys::encode(&LeaseValue::new(claimant, term, ttl, if pinned { 0 } else { id }));
        let key = Read {
            value: Some(value),
            create_revision: created,
            mod_revision: created,
            lease: if pinned { 0 } else { id },
        };
        self.saw_own_change(app, created, Some(key));
        self.watchers.leases_changed(claimant.unit().app());
        let held_for = if pinned { duration } else { Duration::from_secs(u64::try_from(ttl).unwrap_or(0)) };
        Ok(Some(Claim { term, valid_until: start + held_for }))
    }

    /// Extends the claimant's own tenure; `Ok(None)` if it ended meanwhile (read again).
    async fn extend_tenure(
        &self,
        claimant: &Claimant,
        state: &AppLease,
        lease: &LeaseValue,
        duration: Duration,
    ) -> Result<Option<Claim>, LeaseError> {
        let unit = claimant.unit();
        let start = self.clock.now();
        let created = state.lease.create_revision;
        let renew = (state.lease.lease != 0).then_some((state.lease.lease, lease.ttl));
        self.remember_tenure(claimant, TenureHint { term: lease.term, created, renew });
        if state.lease.lease == 0 {
            // Pinned when read: nothing can expire the key until it is unpinned, after the
            // read, and the unpin gives it a whole TTL from then (and is a put of the key
            // that successors count from).
            return Ok(Some(Claim { term: lease.term, valid_until: state.asked_at + duration }));
        }
        let ttl = ttl_seconds(duration);
        if ttl <= lease.ttl {
            // A renewal restarts the etcd lease's whole TTL, which is at least what was asked:
            // a shorter extension never shortens what an earlier claim promised.
            return match self.renew(unit.app(), created, state.lease.lease).await.map_err(LeaseError::Store)? {
                true => Ok(Some(Claim { term: lease.term, valid_until: start + secs(lease.ttl) })),
                false => Ok(None),
            };
        }
        // Longer than the tenure's etcd lease: move the key to a new lease of the new TTL
        // within the same tenure (same create revision, same term), and record the longer
        // TTL with the term. The new lease outlives the old one, so no earlier promise is
        // shortened.
        let (id, granted) = self.grant(ttl).await.map_err(LeaseError::Store)?;
        let (lease_key, term_key) = (self.layout.key(Kind::Lease, unit.app()), self.layout.key(Kind::Term, unit.app()));
        let txn = self
            .when([
                Compare::create_revision(lease_key.as_str(), CompareOp::Equal, created),
                Compare::mod_revision(lease_key.as_str(), CompareOp::Equal, state.lease.mod_revision),
            ])
            .and_then([
                TxnOp::put(
                    lease_key.as_str(),
                    keys::encode(&LeaseValue::new(claimant, lease.term, granted, id)),
                    Some(PutOptions::new().with_lease(id)),
                ),
                TxnOp::put(term_key.as_str(), keys::encode(&TermValue::new(claimant, lease.term, granted)), None),
            ]);
        let applied = self.txn(txn).await.map_err(LeaseError::Store)?.succeeded();
        self.discard(if applied { state.lease.lease } else { id }).await;
        if applied {
            self.remember_tenure(claimant, TenureHint { term: lease.term, created, renew: Some((id, granted)) });
        }
        Ok(applied.then(|| Claim { term: lease.term, valid_until: start + secs(granted) }))
    }

    /// Renews the tenure's etcd lease `id`, then proves that its key still stood after the
    /// renewal: one transaction, guarded by the tenure (`created`) and the key's binding to
    /// `id`, puts the key again unchanged. False if either is gone.
    ///
    /// The keep-alive alone is not proof: etcd answers it from its leader's memory, and a
    /// leader that was paused (and replaced) answers, and revokes leases it thinks expired,
    /// before it notices that it was replaced; a revoke proposed so is forwarded to the new
    /// leader and applied, deleting a key whose holder still counts on it. The put is what
    /// successors count from instead (see [`Self::vacancy`]).
    async fn renew(&self, app: &AppName, created: i64, id: i64) -> Result<bool, StoreError> {
        if !self.keep_alive(id).await? {
            return Ok(false);
        }
        let key = self.layout.key(Kind::Lease, app);
        let txn = self
            .when([
                Compare::create_revision(key.as_str(), CompareOp::Equal, created),
                Compare::lease(key.as_str(), CompareOp::Equal, id),
            ])
            .and_then([TxnOp::put(
                key.as_str(),
                Vec::new(),
                Some(PutOptions::new().with_ignore_value().with_ignore_lease()),
            )]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// The last tenure granted for `app`, from its term key (`None` before the first).
    fn last_tenure(&self, app: &AppName, read: &Read) -> Result<Option<TermValue>, StoreError> {
        let Some(value) = &read.value else { return Ok(None) };
        TermValue::decode(self.layout.key(Kind::Term, app).as_bytes(), value).map(Some)
    }

    /// The tenure before a grant on `state` if it ran out (its holder never gave it up):
    /// its term and end, the instant this process saw its key deleted or else found it gone.
    fn expired_tenure(
        &self,
        app: &AppName,
        state: &AppLease,
    ) -> Result<Option<(u64, std::time::SystemTime)>, StoreError> {
        let Some(last) = self.last_tenure(app, &state.term)? else { return Ok(None) };
        if self.released_term(app, state)? >= last.term {
            return Ok(None);
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).tenures.get(app).copied();
        let at = match seen {
            Some(seen) if seen.term == last.term && seen.ended => seen.at.min(state.read_at),
            _ => state.read_at,
        };
        Ok(Some((last.term, self.clock.wall_time(at))))
    }

    /// The last term of `app` its holder gave up (0 if none).
    fn released_term(&self, app: &AppName, state: &AppLease) -> Result<u64, StoreError> {
        match &state.released.value {
            Some(value) => keys::decode_number(self.layout.key(Kind::Released, app).as_bytes(), value),
            None => Ok(0),
        }
    }

    /// Whether `state`, which has no lease key, still keeps `claimant` out: the last tenure
    /// ended without its holder giving it up (expired, or revoked behind its back), and its
    /// holder may still count on it. A holder counts on a renewal only once the key has been
    /// put after it ([`Self::renew`]), and for at most the tenure's TTL from before the
    /// renewal, so it can count on nothing past the TTL from any instant at which this
    /// process had seen the tenure's last put: the watch's last sighting, once it has seen
    /// the key deleted, and else the instant the state was read (the key gone by then). Its
    /// own holder (the same incarnation), and any unit after a term key from before this
    /// rule, are kept out by nothing.
    fn vacancy(
        &self,
        app: &AppName,
        state: &AppLease,
        claimant: Option<&Claimant>,
    ) -> Result<Option<Vacancy>, StoreError> {
        let Some(last) = self.last_tenure(app, &state.term)? else { return Ok(None) };
        let released = self.released_term(app, state)?;
        let (Some(holder), Some(ttl)) = (&last.holder, last.ttl) else { return Ok(None) };
        let own = |c: &Claimant| c.unit().as_str() == holder && last.incarnation == Some(c.id());
        if released >= last.term || claimant.is_some_and(own) {
            return Ok(None);
        }
        let holder =
            UnitName::new(holder).map_err(|e| keys::corrupt(self.layout.key(Kind::Term, app).as_bytes(), e))?;
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).tenures.get(app).copied();
        let since = match seen {
            // The watch has seen a later tenure since `state` was taken (a mirrored state the
            // watch moved past): `state` is stale, and the grant it would guard fails on the
            // term key; nothing to hold anyone out for.
            Some(seen) if seen.term > last.term => return Ok(None),
            Some(seen) if seen.term == last.term && seen.ended => seen.at.min(state.read_at),
            _ => state.read_at,
        };
        let until = since + secs(ttl);
        Ok((self.clock.now() < until).then_some(Vacancy {
            holder,
            incarnation: last.incarnation,
            term: last.term,
            until,
        }))
    }
}

/// Where the hints keep a claimant's tenure: its unit and incarnation.
fn hint_key(claimant: &Claimant) -> (UnitName, IncarnationId) {
    (claimant.unit().clone(), claimant.id())
}

/// A duration as whole etcd TTL seconds, rounded up (a claim never gets less than asked).
fn ttl_seconds(duration: Duration) -> i64 {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i64::try_from(whole).unwrap_or(i64::MAX)
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

#[async_trait::async_trait]
impl LeadershipStore for EtcdStore {
    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// An extension is a renewal of the tenure's etcd lease when this process knows it
    /// (`renew`): once the key is proven standing after the keep-alive, nobody else
    /// can hold the application until at least `start + TTL` (see the module's rule for
    /// tenures that end behind their holder's back).
    async fn claim(&self, claimant: &Claimant, duration: Duration) -> Result<Claim, LeaseError> {
        validate_duration(duration)?;
        let unit = claimant.unit();
        let app = unit.app();
        self.follower.follow(app);
        if let Some(TenureHint { term, created, renew: Some((lease, ttl)) }) = self.tenure_hint(claimant)
            && ttl_seconds(duration) <= ttl
        {
            let start = self.clock.now();
            if self.renew(app, created, lease).await.map_err(LeaseError::Store)? {
                return Ok(Claim { term, valid_until: start + secs(ttl) });
            }
            self.forget_tenure(claimant);
        }
        for attempt in 0..CONTENTION_RETRIES {
            // When the watch saw no lease key, the read and the grant a new tenure needs go
            // out together (the grant is wasted, and revoked, if the read finds a holder).
            let free = attempt == 0 && {
                let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.live.contains(app) && !seen.held.contains(app)
            };
            // Free, and grantable to this unit as far as the watch knows: the transaction's
            // guards alone check that, with no read first (a failed guard reads next time).
            let mirrored = if free { self.mirrored_state(unit) } else { None };
            let from_watch = mirrored.is_some();
            let ttl = ttl_seconds(duration);
            let (state, mut granted) = match (free, mirrored) {
                (_, Some(state)) => (state, Some(self.lease_for_tenure(ttl).await.map_err(LeaseError::Store)?)),
                (true, None) => {
                    let (state, granted) = tokio::join!(self.read_lease_state(app), self.lease_for_tenure(ttl));
                    let granted = granted.ok();
                    match state {
                        Ok(state) => (state, granted),
                        Err(err) => {
                            if let Some((_, id, _)) = granted {
                                self.discard(id).await;
                            }
                            return Err(err);
                        }
                    }
                }
                (false, None) => {
                    // Held by another unit as the running watch saw it: refused without a
                    // read, so a waiting minion's claims cost the store nothing. (A lagging
                    // watch only delays a claim; nothing is granted on its word.)
                    if let Some(holder) = self.holder_seen(app).filter(|holder| holder != unit) {
                        return Err(LeaseError::Denied { app: app.clone(), holder });
                    }
                    (self.read_lease_state(app).await?, None)
                }
            };
            let value = self.lease_value(app, &state.lease).map_err(LeaseError::Store);
            let reserved_for_another = match (&value, &state.reserved.value) {
                (Ok(None), Some(reserved)) if String::from_utf8_lossy(reserved) != unit.as_str() => {
                    Some(UnitName::new(&String::from_utf8_lossy(reserved)).map_err(|e| {
                        LeaseError::Store(keys::corrupt(self.layout.key(Kind::Reserved, app).as_bytes(), e))
                    }))
                }
                _ => None,
            };
            if let Some((_, id, _)) = granted.filter(|_| !matches!(value, Ok(None)) || reserved_for_another.is_some()) {
                self.discard(id).await;
                granted = None;
            }
            let claimed = match value? {
                Some((_, holder)) if holder != *unit => return Err(LeaseError::Denied { app: app.clone(), holder }),
                Some((lease, holder)) if !lease.held_by(claimant) => {
                    let origin = lease.origin.map(Arc::new);
                    return Err(LeaseError::OtherIncarnation { unit: holder, holder: lease.incarnation, origin });
                }
                Some((lease, _)) => self.extend_tenure(claimant, &state, &lease, duration).await?,
                None => {
                    if let Some(reserved) = reserved_for_another {
                        return Err(LeaseError::Reserved { app: app.clone(), unit: reserved? });
                    }
                    if let Some(vacancy) = self.vacancy(app, &state, Some(claimant)).map_err(LeaseError::Store)? {
                        if let Some((_, id, _)) = granted {
                            self.discard(id).await;
                        }
                        // The watch's copy may be between the events of one transaction
                        // (each key is its own watch: a revoke's deletion seen, its release
                        // not yet): a refusal is decided on a read, never on the copy.
                        if from_watch {
                            continue;
                        }
                        if vacancy.holder == *unit {
                            let (unit, holder) = (vacancy.holder, vacancy.incarnation);
                            return Err(LeaseError::OtherIncarnation { unit, holder, origin: None });
                        }
                        return Err(LeaseError::Denied { app: app.clone(), holder: vacancy.holder });
                    }
                    if let Some(left) = self.identity.too_new(duration, self.clock.now()) {
                        if let Some((_, id, _)) = granted {
                            self.discard(id).await;
                        }
                        return Err(LeaseError::NewStore { app: app.clone(), left });
                    }
                    self.grant_tenure(claimant, &state, duration, granted).await?
                }
            };
            if let Some(claim) = claimed {
                return Ok(claim);
            }
        }
        Err(LeaseError::Store(StoreError::busy(format!(
            "the lease of {app} kept changing while {unit} claimed it; try again"
        ))))
    }

    /// The holder gives its tenure up (having stopped counting on it): one transaction,
    /// guarded by the tenure, deletes the key and records the term as released, so that the
    /// next claimant need not wait for the holder's last renewal to run out (see
    /// `vacancy`); the tenure's etcd lease is revoked after.
    async fn revoke(&self, claimant: &Claimant, why: Release) -> Result<(), LeaseError> {
        let unit = claimant.unit();
        let app = unit.app();
        let (lease_key, released_key) = (self.layout.key(Kind::Lease, app), self.layout.key(Kind::Released, app));
        for _ in 0..CONTENTION_RETRIES {
            let state = self.read_lease_state(app).await?;
            match self.lease_value(app, &state.lease).map_err(LeaseError::Store)? {
                None => return Ok(()),
                Some((value, _)) if !value.held_by(claimant) => {
                    return Err(LeaseError::NotHeld { app: app.clone(), unit: unit.clone() });
                }
                Some((value, _)) => {
                    self.forget_tenure(claimant);
                    let txn = self
                        .when([Compare::create_revision(
                            lease_key.as_str(),
                            CompareOp::Equal,
                            state.lease.create_revision,
                        )])
                        .and_then([
                            TxnOp::delete(lease_key.as_str(), None),
                            TxnOp::put(released_key.as_str(), value.term.to_string(), None),
                            history::on_revoke(&self.layout, unit, value.term, self.clock.wall_now(), why),
                        ]);
                    let response = self.txn(txn).await.map_err(LeaseError::Store)?;
                    if response.succeeded() {
                        self.saw_own_change(app, response.header().map_or(0, |h| h.revision()), None);
                        // Bound to nothing now (a pinned key was detached from it).
                        let own = if state.lease.lease != 0 { state.lease.lease } else { value.lease };
                        if own != 0 {
                            self.discard(own).await;
                        }
                        self.watchers.leases_changed(app);
                        return Ok(());
                    }
                }
            }
        }
        Err(LeaseError::Store(StoreError::busy(format!(
            "the lease of {app} kept changing while {unit} gave it up; try again"
        ))))
    }

    async fn history(&self, app: Option<&AppName>, limit: usize) -> Result<Vec<Tenure>, LeaseError> {
        let response = self
            .txn(self.when([]).and_then(history::reads(&self.layout, app, limit)))
            .await
            .map_err(LeaseError::Store)?;
        history::tenures(&self.layout, response.op_responses().as_slice(), limit).map_err(LeaseError::Store)
    }

    /// One read of the tenure's start and end, then a transaction guarded by the end's mod
    /// revision (retried if another writer changed it meanwhile).
    async fn mark_lost_renewals(&self, unit: &UnitName, term: u64) -> Result<super::LostRenewals, LeaseError> {
        let keys = history::tenure_keys(&self.layout, unit, term);
        for _ in 0..CONTENTION_RETRIES {
            let [start, end] = <[Read; 2]>::try_from(self.read(&keys).await.map_err(LeaseError::Store)?)
                .map_err(|_| LeaseError::Store(StoreError::failed("etcd answered a read with too few results")))?;
            let started = start.value.as_deref().map(|value| (keys[0].as_bytes(), value));
            let ended = end.value.as_deref().map(|value| (keys[1].as_bytes(), value));
            let put = match history::lost_renewals(unit, started, ended).map_err(LeaseError::Store)? {
                Ok(put) => put,
                Err(nothing) => return Ok(nothing),
            };
            let txn = self
                .when([Compare::mod_revision(keys[1].as_str(), CompareOp::Equal, end.mod_revision)])
                .and_then([put]);
            if self.txn(txn).await.map_err(LeaseError::Store)?.succeeded() {
                return Ok(super::LostRenewals::Marked);
            }
        }
        Err(LeaseError::Store(StoreError::busy(format!("the history of {} kept changing; try again", unit.app()))))
    }

    async fn reserve(&self, unit: &UnitName, duration: Duration) -> Result<(), LeaseError> {
        validate_duration(duration)?;
        let (id, _) = self.grant(ttl_seconds(duration)).await.map_err(LeaseError::Store)?;
        let key = self.layout.key(Kind::Reserved, unit.app());
        let put = self.when([]).and_then([TxnOp::put(key, unit.as_str(), Some(PutOptions::new().with_lease(id)))]);
        self.txn(put).await.map_err(LeaseError::Store)?;
        Ok(())
    }

    async fn reservation(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError> {
        let read = self.read(&[self.layout.key(Kind::Reserved, app)]).await.map_err(LeaseError::Store)?;
        self.reserved_unit(app, &read.into_iter().next().unwrap_or_default())
    }

    async fn pin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        validate_entity(entity)?;
        self.change_pins(app, entity, true).await
    }

    async fn unpin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        validate_entity(entity)?;
        self.change_pins(app, entity, false).await
    }

    async fn pins(&self) -> Result<BTreeMap<AppName, Vec<String>>, LeaseError> {
        let mut pins = BTreeMap::new();
        for (app, read) in self.list(Kind::Pins).await.map_err(LeaseError::Store)? {
            let entities = self.pins_of(&app, &read).map_err(LeaseError::Store)?;
            if !entities.is_empty() {
                pins.insert(app, entities);
            }
        }
        Ok(pins)
    }

    /// A tenure that ended without being given up is reported held by its holder until
    /// nobody can claim it but that holder (see `vacancy`).
    async fn lease(&self, app: &AppName) -> Result<Option<Lease>, LeaseError> {
        let state = self.read_lease_state(app).await?;
        self.lease_in(app, &state, true).await
    }

    async fn lease_hint(&self, app: &AppName) -> Result<LeaseHint, LeaseError> {
        self.follower.follow(app);
        let (live, state) = self.state_seen(app);
        if !live {
            return Ok(LeaseHint { lease: self.lease(app).await?, reserved_for: self.reservation(app).await? });
        }
        let lease = self.lease_in(app, &state, false).await?;
        Ok(LeaseHint { lease, reserved_for: self.reserved_unit(app, &state.reserved)? })
    }

    async fn last_term(&self, app: &AppName) -> Result<u64, LeaseError> {
        let read = self.read(&[self.layout.key(Kind::Term, app)]).await.map_err(LeaseError::Store)?;
        let last = self.last_tenure(app, &read.into_iter().next().unwrap_or_default()).map_err(LeaseError::Store)?;
        Ok(last.map_or(0, |last| last.term))
    }

    async fn leaders(&self) -> Result<BTreeMap<AppName, UnitName>, LeaseError> {
        let mut leaders = BTreeMap::new();
        for (app, read) in self.list(Kind::Lease).await.map_err(LeaseError::Store)? {
            if let Some((_, holder)) = self.lease_value(&app, &read).map_err(LeaseError::Store)? {
                leaders.insert(app, holder);
            }
        }
        Ok(leaders)
    }

    async fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, StoreError> {
        let key = self.layout.key(Kind::Settings, app);
        let read = self.read(std::slice::from_ref(&key)).await?;
        let read = read.into_iter().next().unwrap_or_default();
        Ok(self.settings_value(&key, &read)?.into())
    }

    async fn write_settings_by(
        &self,
        writer: &Claimant,
        term: u64,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<SettingsSnapshot, WriteError> {
        let app = writer.unit().app();
        // One round trip when this process knows the writer's tenure and the bucket: the
        // guard proves both still hold, and a stale hint only fails it. Anything the hint
        // cannot decide for sure (an invalid or empty change) is decided on a fresh read.
        if let Some((created, (modified, bucket))) = self.write_hints(writer, term) {
            super::check_apply_by(apply_by)?;
            if let Ok(write) = SettingsWrite::validate(group, &bucket.values)
                && !write.is_noop_on(&bucket.values)
                && let Some(done) = self.send_write(app, &write, created, modified, bucket, apply_by).await?
            {
                return Ok(done);
            }
        }
        let not_leader = || WriteError::NotLeader { app: app.clone(), unit: writer.unit().clone(), term };
        let (lease_key, settings_key) = (self.layout.key(Kind::Lease, app), self.layout.key(Kind::Settings, app));
        for _ in 0..CONTENTION_RETRIES {
            super::check_apply_by(apply_by)?;
            let reads = self.read(&[lease_key.clone(), settings_key.clone()]).await.map_err(WriteError::Store)?;
            let [lease, settings] = <[Read; 2]>::try_from(reads)
                .map_err(|_| WriteError::Store(StoreError::failed("etcd answered oddly")))?;
            let renew = match self.lease_value(app, &lease).map_err(WriteError::Store)? {
                Some((value, _)) if value.held_by(writer) && value.term == term => {
                    (lease.lease != 0).then_some((lease.lease, value.ttl))
                }
                _ => return Err(not_leader()),
            };
            self.remember_tenure(writer, TenureHint { term, created: lease.create_revision, renew });
            let current = self.settings_value(&settings_key, &settings).map_err(WriteError::Store)?;
            let write = SettingsWrite::validate(group, &current.values)?;
            if write.is_noop_on(&current.values) {
                self.remember_bucket(app, settings.mod_revision, &current);
                return Ok(current.into());
            }
            if let Some(done) =
                self.send_write(app, &write, lease.create_revision, settings.mod_revision, current, apply_by).await?
            {
                return Ok(done);
            }
            // The lease or the bucket moved: read again (a lost lease then says so).
        }
        Err(WriteError::Store(StoreError::busy(format!(
            "the settings of {app} kept changing while {} wrote; try again",
            writer.unit()
        ))))
    }

    fn watch_settings(&self, app: &AppName) -> channel::Receiver<u64> {
        self.follower.follow(app);
        // Read inside the subscription, so a version the watch raises meanwhile is either
        // in it or announced to the new receiver.
        let current = || self.seen.lock().unwrap_or_else(|p| p.into_inner()).versions.get(app).copied().unwrap_or(0);
        self.watchers.settings(app, current)
    }

    fn watch_leases(&self, app: &AppName) -> channel::Receiver<u64> {
        self.follower.follow(app);
        self.watchers.leases(app)
    }
}

impl From<SettingsValue> for SettingsSnapshot {
    fn from(value: SettingsValue) -> Self {
        SettingsSnapshot { version: value.version, values: Arc::new(value.values) }
    }
}

impl EtcdStore {
    /// Applies `write` to `current` in one transaction guarded by the writer's tenure
    /// (`created`: its lease key's create revision) and the bucket's mod revision;
    /// `Ok(None)` if the guard failed. Not sent once `apply_by` has passed, and cancelled
    /// then if still unanswered.
    async fn send_write(
        &self,
        app: &AppName,
        write: &SettingsWrite,
        created: i64,
        modified: i64,
        current: SettingsValue,
        apply_by: Option<Timestamp>,
    ) -> Result<Option<SettingsSnapshot>, WriteError> {
        let (lease_key, settings_key) = (self.layout.key(Kind::Lease, app), self.layout.key(Kind::Settings, app));
        let mut next = SettingsValue { version: current.version + 1, values: current.values };
        write.apply_to(&mut next.values);
        let txn = self
            .when([
                Compare::create_revision(lease_key.as_str(), CompareOp::Equal, created),
                Compare::mod_revision(settings_key.as_str(), CompareOp::Equal, modified),
            ])
            .and_then([TxnOp::put(settings_key.as_str(), keys::encode(&next), None)]);
        super::check_apply_by(apply_by)?;
        let sent = match apply_by {
            Some(by) => {
                let left = by.saturating_since(super::MonotonicClock.now());
                match tokio::time::timeout(left, self.txn(txn)).await {
                    Ok(result) => result,
                    // Sent, but not answered by its deadline: the server may apply it yet.
                    Err(_) => {
                        return Err(WriteError::OutcomeUnknown(
                            "the store did not answer before the caller gave up".into(),
                        ));
                    }
                }
            }
            None => self.txn(txn).await,
        };
        let response = sent.map_err(|err| match err.kind() {
            StoreFailure::Unreachable => WriteError::OutcomeUnknown(err.to_string()),
            _ => WriteError::Store(err),
        })?;
        if !response.succeeded() {
            return Ok(None);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        self.remember_bucket(app, revision, &next);
        self.note_version(app, next.version);
        Ok(Some(next.into()))
    }

    /// The writer's tenure (create revision of its lease key) and the bucket (mod revision
    /// and contents) as this process last saw them, if it knows both.
    fn write_hints(&self, writer: &Claimant, term: u64) -> Option<(i64, (i64, SettingsValue))> {
        let hints = self.hints.lock().unwrap_or_else(|p| p.into_inner());
        let created = hints.tenures.get(&hint_key(writer)).filter(|t| t.term == term)?.created;
        Some((created, hints.buckets.get(writer.unit().app())?.clone()))
    }

    fn tenure_hint(&self, claimant: &Claimant) -> Option<TenureHint> {
        self.hints.lock().unwrap_or_else(|p| p.into_inner()).tenures.get(&hint_key(claimant)).copied()
    }

    fn remember_tenure(&self, claimant: &Claimant, hint: TenureHint) {
        self.hints.lock().unwrap_or_else(|p| p.into_inner()).tenures.insert(hint_key(claimant), hint);
    }

    fn forget_tenure(&self, claimant: &Claimant) {
        self.hints.lock().unwrap_or_else(|p| p.into_inner()).tenures.remove(&hint_key(claimant));
    }

    fn remember_bucket(&self, app: &AppName, modified: i64, bucket: &SettingsValue) {
        self.hints.lock().unwrap_or_else(|p| p.into_inner()).buckets.insert(app.clone(), (modified, bucket.clone()));
    }

    fn settings_value(&self, key: &str, read: &Read) -> Result<SettingsValue, StoreError> {
        match &read.value {
            Some(value) => keys::decode(key.as_bytes(), value),
            None => Ok(SettingsValue::default()),
        }
    }

    /// Records a settings version this process wrote and tells its watchers at once.
    fn note_version(&self, app: &AppName, version: u64) {
        watch::raise_version(&self.seen, app, version);
        self.watchers.settings_changed(app, version);
    }

    /// Every key of `kind`, with the application it belongs to.
    async fn list(&self, kind: Kind) -> Result<Vec<(AppName, Read)>, StoreError> {
        let mut client = self.client.clone();
        let floor = self.identity.floor();
        let got = self.request(client.get(self.layout.range(kind), Some(GetOptions::new().with_prefix()))).await?;
        self.identity.check_header(got.header(), floor)?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| {
                let (found, app) = self.layout.parse(kv.key())?;
                (found == kind).then(|| (app, Read::of(kv)))
            })
            .collect())
    }

    /// Adds (`pin`) or removes `entity`'s pin of `app`'s lease. The first pin detaches the
    /// lease key from its etcd lease; removing the last binds it to a fresh one.
    async fn change_pins(&self, app: &AppName, entity: &str, pin: bool) -> Result<(), LeaseError> {
        let (lease_key, pins_key) = (self.layout.key(Kind::Lease, app), self.layout.key(Kind::Pins, app));
        for _ in 0..CONTENTION_RETRIES {
            let state = self.read_lease_state(app).await?;
            let mut pins = self.pins_of(app, &state.pins).map_err(LeaseError::Store)?;
            let present = pins.iter().any(|p| p == entity);
            if present == pin {
                return Ok(());
            }
            if pin {
                pins.push(entity.to_owned());
                pins.sort();
            } else {
                pins.retain(|p| p != entity);
            }
            let mut ops = vec![if pins.is_empty() {
                TxnOp::delete(pins_key.as_str(), None)
            } else {
                TxnOp::put(pins_key.as_str(), keys::encode(&pins), None)
            }];
            let mut fresh = None;
            if let Some((value, _)) = self.lease_value(app, &state.lease).map_err(LeaseError::Store)? {
                if pin && state.lease.lease != 0 {
                    ops.push(TxnOp::put(lease_key.as_str(), keys::encode(&value), None));
                } else if !pin && pins.is_empty() && state.lease.lease == 0 {
                    // Back onto the tenure's own etcd lease while it lives (renewed now: a
                    // whole TTL from the unpin), so that its holder's renewals keep meaning
                    // what they meant; onto a fresh one if it is gone.
                    let own = value.lease != 0 && self.keep_alive(value.lease).await.map_err(LeaseError::Store)?;
                    let (id, value) = if own {
                        (value.lease, value)
                    } else {
                        let (id, _) = self.grant(value.ttl).await.map_err(LeaseError::Store)?;
                        fresh = Some(id);
                        (id, LeaseValue { lease: id, ..value })
                    };
                    ops.push(TxnOp::put(
                        lease_key.as_str(),
                        keys::encode(&value),
                        Some(PutOptions::new().with_lease(id)),
                    ));
                }
            }
            let txn = self
                .when([
                    Compare::mod_revision(pins_key.as_str(), CompareOp::Equal, state.pins.mod_revision),
                    Compare::mod_revision(lease_key.as_str(), CompareOp::Equal, state.lease.mod_revision),
                ])
                .and_then(ops);
            let applied = self.txn(txn).await.map_err(LeaseError::Store)?.succeeded();
            if applied {
                self.watchers.leases_changed(app);
                return Ok(());
            }
            if let Some(id) = fresh {
                self.discard(id).await;
            }
        }
        Err(LeaseError::Store(StoreError::busy(format!("the pins of {app} kept changing; try again"))))
    }
}
