//! Renewals of the etcd leases this process holds: one keep-alive stream per etcd lease,
//! opened at its first renewal and kept open for the next ones, so that a held lease costs
//! etcd one message per renewal on a stream it already has (not a stream opened and closed
//! each time). Minions renew nothing, so they have no stream.
//!
//! Invariants:
//! - **An answer belongs to its own request.** etcd answers a stream's requests one at a
//!   time, in order. A stream is taken out of its slot while a renewal uses it and put back
//!   only after that renewal read its answer; a renewal that fails, or is cancelled at its
//!   deadline between sending and reading, drops the stream with it. So no renewal ever
//!   reads an answer to an earlier request (which would date the renewal before its
//!   caller's clock reading, and so promise too much).
//! - **Bounded**: a stream ends when etcd says its lease is gone, when the lease is
//!   revoked here ([`KeepAlives::forget`]), or once it has not been used for [`IDLE`]
//!   (longer than any claim: its lease has expired by then).
//!
//! etcd-client ties a keep-alive stream to one lease id, so leases do not share a stream;
//! every stream shares the store's one connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};

/// A stream unused for this long is closed (claims last at most 5 minutes).
const IDLE: Duration = Duration::from_secs(600);

/// The open keep-alive stream of each etcd lease this process renews.
#[derive(Default)]
pub(super) struct KeepAlives {
    slots: Mutex<BTreeMap<i64, Slot>>,
}

struct Slot {
    /// The stream, when no renewal is using it.
    stream: Arc<tokio::sync::Mutex<Option<Open>>>,
    used: Instant,
}

struct Open {
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
}

/// What a renewal found.
pub(super) enum Renewal {
    /// The server restarted the lease's TTL.
    Renewed,
    /// The server does not have the lease (expired or revoked).
    Gone,
}

impl KeepAlives {
    /// Renews etcd lease `id` once, on its stream (opened now if it has none, or if the one
    /// it had broke). Cancel-safe: see the module's invariants.
    pub(super) async fn renew(&self, client: &Client, id: i64) -> Result<Renewal, etcd_client::Error> {
        let slot = self.slot(id);
        let mut stream = slot.lock().await;
        if let Some(mut open) = stream.take() {
            match open.renew().await {
                Ok(Some(ttl)) if ttl > 0 => {
                    *stream = Some(open);
                    return Ok(Renewal::Renewed);
                }
                Ok(Some(_)) => {
                    self.forget(id);
                    return Ok(Renewal::Gone);
                }
                // The stream broke (a member lost, the connection replaced): a new one.
                Ok(None) | Err(_) => {}
            }
        }
        // Opening a stream sends the first renewal and reads its answer.
        let mut client = client.clone();
        match client.lease_keep_alive(id).await {
            Ok((keeper, answers)) => {
                *stream = Some(Open { keeper, answers });
                Ok(Renewal::Renewed)
            }
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => {
                self.forget(id);
                Ok(Renewal::Gone)
            }
            Err(err) => Err(err),
        }
    }

    /// Closes lease `id`'s stream (its lease was revoked or is gone).
    pub(super) fn forget(&self, id: i64) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Lease `id`'s slot, made if it has none; slots idle past [`IDLE`] are closed.
    fn slot(&self, id: i64) -> Arc<tokio::sync::Mutex<Option<Open>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !slots.contains_key(&id) {
            slots.retain(|_, slot| now.saturating_duration_since(slot.used) < IDLE);
        }
        let slot = slots.entry(id).or_insert_with(|| Slot { stream: Arc::default(), used: now });
        slot.used = now;
        slot.stream.clone()
    }
}

impl Open {
    /// One renewal on this stream: the TTL the server answered with (0 or less if it does
    /// not have the lease), or `None` if the stream ended.
    async fn renew(&mut self) -> Result<Option<i64>, etcd_client::Error> {
        self.keeper.keep_alive().await?;
        Ok(self.answers.message().await?.map(|answer| answer.ttl()))
    }
}
