//! Which store an [`super::EtcdStore`] talks to, checked in every transaction.
//!
//! A prefix can be lost under running agents: wiped (a range delete), or the whole cluster
//! restored from an older snapshot (a new cluster id, revisions and terms rewound). Either
//! would let a newcomer be granted a lease an agent still counts on.
//!
//! Invariants:
//! - **An identity made at creation.** The first agent to use an empty prefix writes, in
//!   one transaction, the meta key, `P/id` (a random id, with the wall time it was made:
//!   for people) and `P/genesis`, bound to an etcd lease of [`GENESIS_TTL`]. A prefix from
//!   before identities gets its `P/id` when first connected to (no genesis: it is not new).
//! - **Every transaction checks it**: each carries a guard on `P/id`'s create revision as
//!   read at connect, so none applies on a wiped (and re-made) prefix; a transaction whose
//!   guard failed reads `P/id` again to tell that from an ordinary race. Every answer's
//!   header must come from the cluster this process connected to, at a revision no lower
//!   than the highest of the answers received before the request was sent (reads are
//!   linearizable; a restored snapshot makes a new cluster, and may rewind revisions). Any
//!   of these failing is [`StoreFailure::Replaced`].
//! - **A new store grants nothing at first.** A newcomer cannot tell a prefix never used
//!   from one wiped under running agents, who may count on their last renewal for one
//!   claim duration. So while `P/genesis` lives, a new tenure of claim duration `d` is
//!   granted only once the store is `d` old, its age read off the genesis lease's TTL (the
//!   server's clock, not a client's), rounded to the safe side. Options may say a prefix is
//!   known to be unused ([`super::EtcdOptions::unused_prefix`]), skipping the wait.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, ResponseHeader, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::keys::{self, Layout};
use super::{etcd_failed, within};
use crate::leadership::{Clock, IncarnationId, StoreError, StoreFailure, Timestamp};

/// How long a new store's genesis key lives: the longest claim any agent can make (twice
/// the longest guarantee window), so every lost lease has run out before it goes.
pub(super) const GENESIS_TTL: Duration = Duration::from_secs(300);

/// The value of `P/id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdValue {
    id: String,
    /// When it was made (wall clock, for people).
    created_unix_ns: i64,
}

/// Why a prefix cannot be used.
pub(super) enum PrefixProblem {
    /// It holds something else.
    Foreign(String),
    /// etcd failed.
    Failed(StoreError),
}

/// The store a connection found under its prefix, checked in every transaction.
#[derive(Debug)]
pub(super) struct StoreIdentity {
    id: String,
    id_key: String,
    /// `P/id`'s create revision: what every transaction's guard compares.
    created: i64,
    cluster_id: u64,
    /// The highest revision answered so far.
    revision: AtomicI64,
    /// Until when (this host's clock) a new tenure of duration `d` must wait: the store was
    /// born at `born`, and grants once it is `d` old (`None`: it is old, or known unused).
    born: Option<Timestamp>,
}

impl StoreIdentity {
    /// Makes sure the prefix is a charm-host store (marking an empty one as ours, with a new
    /// identity and genesis) and reads its identity. `unused`: the caller knows no agent
    /// ever used this prefix (no genesis wait).
    pub(super) async fn establish(
        client: &mut Client,
        layout: &Layout,
        deadline: Duration,
        clock: &dyn Clock,
        unused: bool,
    ) -> Result<Self, PrefixProblem> {
        let failed = |e: etcd_client::Error| PrefixProblem::Failed(etcd_failed(e));
        let meta = layout.meta();
        // A store inside another store's prefix would be read by it as its own keys.
        for outer in layout.enclosing() {
            let got = within(deadline, client.get(Layout::new(&outer).meta(), None))
                .await
                .map_err(PrefixProblem::Failed)?
                .map_err(failed)?;
            if !got.kvs().is_empty() {
                return Err(PrefixProblem::Foreign(format!(
                    "lies inside the charm-host store at {outer}: choose a prefix beside it"
                )));
            }
        }
        for _ in 0..4 {
            let txn = Txn::new()
                .when([Compare::create_revision(meta.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::get(
                    layout.all(),
                    Some(GetOptions::new().with_prefix().with_keys_only().with_limit(1)),
                )])
                .or_else([TxnOp::get(meta.as_str(), None)]);
            let response = within(deadline, client.txn(txn)).await.map_err(PrefixProblem::Failed)?.map_err(failed)?;
            let first = response.op_responses().into_iter().next();
            let Some(TxnOpResponse::Get(get)) = first else {
                return Err(PrefixProblem::Failed(StoreError::failed("etcd answered oddly")));
            };
            if response.succeeded() {
                // No meta key: an empty prefix becomes ours; one holding other data is refused.
                if !get.kvs().is_empty() {
                    return Err(PrefixProblem::Foreign(
                        "holds keys that are not a charm-host store's (no meta key)".into(),
                    ));
                }
                create(client, layout, deadline, unused).await?;
                continue;
            }
            let value = get.kvs().first().map(|kv| kv.value().to_vec()).unwrap_or_default();
            if value == keys::META_SCHEMA_1.as_bytes() {
                // From before incarnations: raised, so that agents of schema 1 refuse it.
                let raise = Txn::new()
                    .when([Compare::value(meta.as_str(), CompareOp::Equal, keys::META_SCHEMA_1)])
                    .and_then([TxnOp::put(meta.as_str(), keys::META, None)]);
                within(deadline, client.txn(raise)).await.map_err(PrefixProblem::Failed)?.map_err(failed)?;
                continue;
            }
            if value != keys::META.as_bytes() {
                return Err(PrefixProblem::Foreign(format!(
                    "holds a store this program cannot read (meta {})",
                    String::from_utf8_lossy(&value)
                )));
            }
            return Self::read(client, layout, deadline, clock).await;
        }
        Err(PrefixProblem::Failed(StoreError::busy("the prefix kept changing while this agent connected")))
    }

    /// Reads the identity of a charm-host prefix, giving one from before identities its id.
    async fn read(
        client: &mut Client,
        layout: &Layout,
        deadline: Duration,
        clock: &dyn Clock,
    ) -> Result<Self, PrefixProblem> {
        let failed = |e: etcd_client::Error| PrefixProblem::Failed(etcd_failed(e));
        let id_key = layout.id();
        let absent = Compare::create_revision(id_key.as_str(), CompareOp::Equal, 0);
        let put = TxnOp::put(id_key.as_str(), id_value(), None);
        within(deadline, client.txn(Txn::new().when([absent]).and_then([put])))
            .await
            .map_err(PrefixProblem::Failed)?
            .map_err(failed)?;
        let txn = Txn::new().and_then([TxnOp::get(id_key.as_str(), None), TxnOp::get(layout.genesis(), None)]);
        let response = within(deadline, client.txn(txn)).await.map_err(PrefixProblem::Failed)?.map_err(failed)?;
        let header = response.header().cloned();
        let mut gets = response.op_responses().into_iter().filter_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let (Some(id), Some(genesis)) = (gets.next(), gets.next()) else {
            return Err(PrefixProblem::Failed(StoreError::failed("etcd answered oddly")));
        };
        let Some(kv) = id.kvs().first() else {
            return Err(PrefixProblem::Failed(StoreError::busy("the store's id vanished")));
        };
        let value: IdValue = keys::decode(kv.key(), kv.value()).map_err(PrefixProblem::Failed)?;
        let born = match genesis.kvs().first().map(|kv| kv.lease()).filter(|lease| *lease != 0) {
            Some(lease) => born_at(client, lease, deadline, clock).await?,
            None => None,
        };
        let Some(header) = header else {
            return Err(PrefixProblem::Failed(StoreError::failed("etcd answered without a header")));
        };
        Ok(Self {
            id: value.id,
            id_key,
            created: kv.create_revision(),
            cluster_id: header.cluster_id(),
            revision: AtomicI64::new(header.revision()),
            born,
        })
    }

    /// The store's id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// `compares` with the guard that the store is still the one this process connected to.
    pub(super) fn guard(&self, compares: impl IntoIterator<Item = Compare>) -> Vec<Compare> {
        let mut all = vec![Compare::create_revision(self.id_key.as_str(), CompareOp::Equal, self.created)];
        all.extend(compares);
        all
    }

    /// The revision a request sent now must be answered at, at least: the highest of the
    /// answers received so far.
    pub(super) fn floor(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Checks an answer's header: this cluster, no revision below `floor` (what
    /// [`Self::floor`] said when the request was sent).
    pub(super) fn check_header(&self, header: Option<&ResponseHeader>, floor: i64) -> Result<(), StoreError> {
        let Some(header) = header else { return Ok(()) };
        if header.cluster_id() != self.cluster_id {
            return Err(replaced(format_args!(
                "answered from another cluster (id {:x}, this process connected to {:x}): restored from a snapshot?",
                header.cluster_id(),
                self.cluster_id
            )));
        }
        if header.revision() < floor {
            return Err(replaced(format_args!(
                "went back in time (revision {}, this process saw {floor}): restored from an older snapshot?",
                header.revision()
            )));
        }
        self.revision.fetch_max(header.revision(), Ordering::AcqRel);
        Ok(())
    }

    /// After a transaction whose guards failed: whether the store is still the one this
    /// process connected to (an ordinary race) or not.
    pub(super) async fn confirm(&self, client: &mut Client, deadline: Duration) -> Result<(), StoreError> {
        let floor = self.floor();
        let got = within(deadline, client.get(self.id_key.as_str(), None)).await?.map_err(etcd_failed)?;
        self.check_header(got.header(), floor)?;
        match got.kvs().first() {
            Some(kv) if kv.create_revision() == self.created => Ok(()),
            Some(kv) => {
                let found: Option<IdValue> = keys::decode(kv.key(), kv.value()).ok();
                let found = found.map_or_else(|| "unreadable".to_owned(), |v| v.id);
                Err(replaced(format_args!(
                    "holds another store now (id {found}; this process connected to {})",
                    self.id
                )))
            }
            None => Err(replaced("was wiped (its id key is gone)")),
        }
    }

    /// How long a new tenure of `duration` must still wait at `now` (a new store), if at all.
    pub(super) fn too_new(&self, duration: Duration, now: Timestamp) -> Option<Duration> {
        let grants_at = self.born? + duration;
        (now < grants_at).then(|| grants_at.saturating_since(now))
    }
}

/// A store failure saying the prefix is no longer the store this process connected to.
pub(super) fn replaced(what: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        StoreFailure::Replaced,
        format!("the etcd store {what}: nothing more is decided on it (restart the agents once it is restored)"),
    )
}

fn id_value() -> Vec<u8> {
    let created_unix_ns = crate::leadership::history::unix_nanos(std::time::SystemTime::now());
    keys::encode(&IdValue { id: IncarnationId::random().to_string(), created_unix_ns })
}

/// Makes an empty prefix a new store: meta, id and (unless `unused`) genesis, at once.
async fn create(client: &mut Client, layout: &Layout, deadline: Duration, unused: bool) -> Result<(), PrefixProblem> {
    let failed = |e: etcd_client::Error| PrefixProblem::Failed(etcd_failed(e));
    let meta = layout.meta();
    let mut ops = vec![TxnOp::put(meta.as_str(), keys::META, None), TxnOp::put(layout.id(), id_value(), None)];
    let mut genesis = None;
    if !unused {
        let ttl = i64::try_from(GENESIS_TTL.as_secs()).unwrap_or(i64::MAX);
        let granted =
            within(deadline, client.lease_grant(ttl, None)).await.map_err(PrefixProblem::Failed)?.map_err(failed)?;
        genesis = Some(granted.id());
        ops.push(TxnOp::put(layout.genesis(), "", Some(PutOptions::new().with_lease(granted.id()))));
    }
    let txn = Txn::new().when([Compare::create_revision(meta.as_str(), CompareOp::Equal, 0)]).and_then(ops);
    let made = within(deadline, client.txn(txn)).await.map_err(PrefixProblem::Failed)?.map_err(failed)?.succeeded();
    if let Some(lease) = genesis.filter(|_| !made) {
        // Another agent made the store first: its genesis counts.
        let _ = within(deadline, client.lease_revoke(lease)).await;
    }
    Ok(())
}

/// When (this host's clock) the store whose genesis lease is `lease` was born, at the
/// latest: its age read off the lease's TTL on the server, rounded down, counted back from
/// after the answer. `None` once the genesis lease is gone (the store is old).
async fn born_at(
    client: &mut Client,
    lease: i64,
    deadline: Duration,
    clock: &dyn Clock,
) -> Result<Option<Timestamp>, PrefixProblem> {
    let failed = |e: etcd_client::Error| PrefixProblem::Failed(etcd_failed(e));
    let answer = within(deadline, client.lease_time_to_live(lease, None))
        .await
        .map_err(PrefixProblem::Failed)?
        .map_err(failed)?;
    let after = clock.now();
    if answer.ttl() < 0 {
        return Ok(None);
    }
    // The remaining TTL is in whole seconds, rounded down: the age may be up to a second
    // less than granted minus remaining.
    let age = u64::try_from(answer.granted_ttl().saturating_sub(answer.ttl()).saturating_sub(1)).unwrap_or(0);
    Ok(Some(Timestamp::from_nanos(after.as_nanos().saturating_sub(age.saturating_mul(1_000_000_000)))))
}
