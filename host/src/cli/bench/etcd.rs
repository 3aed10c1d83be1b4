//! The etcd store on a local single-member etcd (started here, from the vendored binary):
//! claim, extension and fenced-write latency, each next to the bare etcd-client requests it
//! needs at least, measured in the same run (a guarded transaction; for an extension, a
//! keep-alive and then a guarded transaction: the put that proves the key still stands),
//! and the renewal traffic of one held lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::leadership::etcd::{EtcdOptions, EtcdStore};
use crate::leadership::{Claimant, LeadershipStore as _};
use crate::names::{AppName, UnitName};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{Figure, median};

#[path = "../../../../tests/support/etcd.rs"]
pub(super) mod server;

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let cluster = server::EtcdCluster::start_durable(1);
    let n = if quick { 50 } else { 500 };
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async {
        let mut options = EtcdOptions::from_url(&cluster.url())?;
        options.unused_prefix = true; // a cluster the bench just started
        let store = Arc::new(EtcdStore::connect(&options).await?);
        let endpoint = format!("127.0.0.1:{}", cluster.members[0].client_port);
        let mut client = etcd_client::Client::connect([endpoint], None).await?;
        // The baseline: one guarded put in a transaction, as a fenced write is at best.
        let mut bare = Vec::new();
        let mut bare_at_rest = Vec::new();
        for i in 0..2 * n {
            let txn = Txn::new()
                .when([Compare::mod_revision("/bench/k", CompareOp::Greater, -1)])
                .and_then([TxnOp::put("/bench/k", i.to_string(), None)]);
            // Half of them after a pause, as the claims of new tenures are measured.
            if i % 2 == 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let start = Instant::now();
            client.txn(txn).await?;
            if i % 2 == 1 { bare_at_rest.push(start.elapsed()) } else { bare.push(start.elapsed()) }
        }
        let bare = median(&mut bare);
        let bare_at_rest = median(&mut bare_at_rest);
        // The baseline of an extension: a keep-alive, then a guarded put.
        let lease = client.lease_grant(60, None).await?.id();
        let mut bare_renewals = Vec::new();
        for i in 0..n {
            let start = Instant::now();
            bare_renewal(&mut client, lease, i).await?;
            bare_renewals.push(start.elapsed());
        }
        let bare_renewal_p50 = median(&mut bare_renewals);
        // New tenures are rare (a handover), so each is measured with the store at rest: the
        // etcd lease the store grants ahead for the next one has had time to arrive.
        let mut grants = Vec::new();
        for i in 0..n {
            let unit = Claimant::fresh(UnitName::from_parts(AppName::new(&format!("grant{i}"))?, 0));
            tokio::time::sleep(Duration::from_millis(20)).await;
            let start = Instant::now();
            store.claim(&unit, Duration::from_secs(60)).await?;
            grants.push(start.elapsed());
        }
        let writer = Claimant::fresh(UnitName::new("writer/0")?);
        let term = store.claim(&writer, Duration::from_secs(60)).await?.term;
        let mut extensions = Vec::new();
        let mut writes = Vec::new();
        for i in 0..n {
            let start = Instant::now();
            store.claim(&writer, Duration::from_secs(60)).await?;
            extensions.push(start.elapsed());
            let start = Instant::now();
            store.write_settings(&writer, term, &[("key".into(), i.to_string())]).await?;
            writes.push(start.elapsed());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut figures = Vec::new();
        for (name, mut samples, baseline, bare_name) in [
            ("claim of a free lease (store at rest)", grants, bare_at_rest, "txn"),
            ("extension", extensions, bare_renewal_p50, "keep-alive + txn"),
            ("fenced write", writes, bare, "txn"),
        ] {
            let (value, baseline) = (ms(median(&mut samples)), ms(baseline));
            figures.push(
                Figure::new(
                    format!("etcd store: {name}, p50 (against a bare etcd-client {bare_name}, same conditions)"),
                    value,
                    "ms",
                )
                .against(baseline)
                .target(format!("<= 1.3x the bare {bare_name}"), value <= 1.3 * baseline),
            );
        }
        let run_for = if quick { Duration::from_millis(500) } else { Duration::from_secs(2) };
        figures.extend(throughput(&store, &client, lease, run_for).await?);
        figures.push(renewal_traffic(&store, &cluster, if quick { 2 } else { 6 }).await?);
        Ok(figures)
    })
}

/// A keep-alive of `lease`, then a guarded put: what a renewal needs at least.
async fn bare_renewal(client: &mut etcd_client::Client, lease: i64, i: u64) -> anyhow::Result<()> {
    client.lease_keep_alive(lease).await?;
    let key = format!("/bench/renewed{}", i % 32);
    let txn = Txn::new().when([Compare::mod_revision(key.as_str(), CompareOp::Greater, -1)]).and_then([TxnOp::put(
        key.as_str(),
        "",
        None,
    )]);
    client.txn(txn).await?;
    Ok(())
}

/// Operations per second of 32 concurrent callers (each its own application) for `run_for`:
/// extensions and fenced writes, against the bare requests each needs by as many callers.
async fn throughput(
    store: &Arc<EtcdStore>,
    client: &etcd_client::Client,
    lease: i64,
    run_for: Duration,
) -> anyhow::Result<Vec<Figure>> {
    const CALLERS: u32 = 32;
    let mut leaders = Vec::new();
    for i in 0..CALLERS {
        let unit = Claimant::fresh(UnitName::from_parts(AppName::new(&format!("busy{i}"))?, 0));
        let term = store.claim(&unit, Duration::from_secs(60)).await?.term;
        leaders.push((unit, term));
    }
    let mut rates = Vec::new();
    for kind in ["bare", "bare renewals", "extensions", "fenced writes"] {
        let until = Instant::now() + run_for;
        let start = Instant::now();
        let mut callers = tokio::task::JoinSet::new();
        for (i, (unit, term)) in leaders.iter().cloned().enumerate() {
            let (store, mut client) = (store.clone(), client.clone());
            callers.spawn(async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    match kind {
                        "bare" => {
                            let key = format!("/bench/busy{i}");
                            let txn = Txn::new()
                                .when([Compare::mod_revision(key.as_str(), CompareOp::Greater, -1)])
                                .and_then([TxnOp::put(key.as_str(), done.to_string(), None)]);
                            client.txn(txn).await?;
                        }
                        "bare renewals" => bare_renewal(&mut client, lease, i as u64).await?,
                        "extensions" => {
                            store.claim(&unit, Duration::from_secs(60)).await?;
                        }
                        _ => {
                            store.write_settings(&unit, term, &[("key".into(), done.to_string())]).await?;
                        }
                    }
                    done += 1;
                }
                anyhow::Ok(done)
            });
        }
        let mut total = 0;
        while let Some(done) = callers.join_next().await {
            total += done??;
        }
        rates.push(total as f64 / start.elapsed().as_secs_f64());
    }
    Ok([("extensions", rates[2], rates[1], "keep-alives + txns"), ("fenced writes", rates[3], rates[0], "txns")]
        .into_iter()
        .map(|(name, value, bare, bare_name)| {
            Figure::new(
                format!(
                    "etcd store: {name} by {CALLERS} concurrent units (against bare {bare_name} by as many callers)"
                ),
                value,
                "ops/s",
            )
            .against(bare)
            .target(format!(">= 0.77x the bare {bare_name}' rate"), value >= bare / 1.3)
        })
        .collect())
}

/// Requests per second the server handles for one unit renewing its lease as an agent does
/// (every renew interval, here half of a 2 s window), read off etcd's own metrics.
async fn renewal_traffic(store: &EtcdStore, cluster: &server::EtcdCluster, seconds: u64) -> anyhow::Result<Figure> {
    let unit = Claimant::fresh(UnitName::new("renewer/0")?);
    let window = Duration::from_secs(2);
    store.claim(&unit, window * 2).await?;
    // Past the claim's own traffic (the spare lease it grants for the next new tenure).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cluster.handled_requests(0)?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(window / 2).await;
        store.claim(&unit, window * 2).await?;
    }
    let handled = cluster.handled_requests(0)?.saturating_sub(before);
    let per_second = handled as f64 / start.elapsed().as_secs_f64();
    Ok(Figure::new(
        "etcd store: renewal traffic of one held lease (2 s window, renewed every 1 s)",
        per_second,
        "requests/s",
    ))
}
