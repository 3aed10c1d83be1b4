//! Which of the configured endpoints an [`EtcdStore`](super::EtcdStore)'s client sends
//! requests to: the members that accept connections.
//!
//! etcd-client balances requests over its endpoints and connects to each lazily, so it
//! sends requests to a member it cannot reach: with one member of three down, the connect
//! and about a third of all calls would fail (etcd-client issue 39). So the connect probes
//! every endpoint (a TCP connection within the connect timeout) and gives the client only
//! those that answer, and a watchdog probes them again (soon after a call fails as
//! unreachable, every [`RECHECK_SET_ASIDE`] while one is set aside, else every
//! [`RECHECK`]): an endpoint that stops answering is set aside, and taken back once it
//! answers again.
//!
//! Invariants: the client always has an endpoint (one is added before any is removed,
//! and a round in which none answers changes nothing: calls then fail as unreachable and
//! their callers retry); probes are bounded (one round at a time, each probe within the
//! connect timeout, rounds at least [`MIN_GAP`] apart).
//!
//! Not detected: a member that accepts connections but does not answer (frozen, or cut
//! from its peers behind a live socket); calls to it time out at the request timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::Notify;

/// How often endpoints are probed while all answer.
const RECHECK: Duration = Duration::from_secs(10);

/// How often they are probed while one is set aside.
const RECHECK_SET_ASIDE: Duration = Duration::from_secs(1);

/// The least time between two probe rounds.
const MIN_GAP: Duration = Duration::from_millis(200);

/// The endpoints among `all` that accept a connection within `timeout` (probed at once).
pub(super) async fn answering(all: &[String], timeout: Duration) -> Vec<String> {
    let mut probes = tokio::task::JoinSet::new();
    for endpoint in all {
        let endpoint = endpoint.clone();
        probes.spawn(async move {
            let answered = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint.as_str())).await;
            matches!(answered, Ok(Ok(_))).then_some(endpoint)
        });
    }
    let mut up = BTreeSet::new();
    while let Some(probe) = probes.join_next().await {
        if let Ok(Some(endpoint)) = probe {
            up.insert(endpoint);
        }
    }
    // In the order given.
    all.iter().filter(|endpoint| up.contains(*endpoint)).cloned().collect()
}

/// The watchdog of a client's endpoints; stops when dropped.
pub(super) struct Watchdog {
    suspect: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watchdog {
    /// Watches `client`, made with the endpoints `in_use` out of `all`; `tls` says how the
    /// client named them (`https://` or `http://`).
    pub(super) fn start(client: Client, all: Vec<String>, in_use: Vec<String>, tls: bool, timeout: Duration) -> Self {
        let suspect = Arc::new(Notify::new());
        let scheme = if tls { "https://" } else { "http://" };
        let task =
            tokio::spawn(keep_answering(client, all, in_use.into_iter().collect(), scheme, suspect.clone(), timeout));
        Self { suspect, task }
    }

    /// A call failed as unreachable: probe soon.
    pub(super) fn suspect(&self) {
        self.suspect.notify_one();
    }
}

async fn keep_answering(
    client: Client,
    all: Vec<String>,
    mut in_use: BTreeSet<String>,
    scheme: &'static str,
    suspect: Arc<Notify>,
    timeout: Duration,
) {
    loop {
        let wait = if in_use.len() < all.len() { RECHECK_SET_ASIDE } else { RECHECK };
        tokio::select! {
            () = suspect.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        let up = answering(&all, timeout).await;
        if !up.is_empty() {
            let back: Vec<String> = up.iter().filter(|e| !in_use.contains(*e)).cloned().collect();
            for endpoint in back {
                if client.add_endpoint(&endpoint).await.is_ok() {
                    tracing::info!(%endpoint, "etcd member answers again: calls go to it again");
                    in_use.insert(endpoint.clone());
                }
            }
            let down: Vec<String> = in_use.iter().filter(|e| !up.contains(*e)).cloned().collect();
            for endpoint in down {
                if client.remove_endpoint(format!("{scheme}{endpoint}")).await.is_ok() {
                    tracing::warn!(%endpoint, "etcd member does not answer: calls go to the others until it does");
                    in_use.remove(&endpoint);
                }
            }
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}
