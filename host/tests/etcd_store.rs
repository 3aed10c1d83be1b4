//! `EtcdStore` against real etcd processes this test starts: the lease cases that need time
//! to pass, with real server-side expiry of 1 s leases, and what survives a restart of etcd.
//! (The cases that need no clock run on etcd in `lease_store.rs`.)
//!
//! Time: each case waits for the server to expire a lease, polling the store; no assertion
//! is about how long anything took, only about order (before expiry, after expiry).

#[path = "../../tests/support/etcd.rs"]
mod etcd;
mod support;

use support::{app_name as app, claimant, group, other_incarnation, unit_name as unit};

use std::sync::Arc;
use std::time::Duration;

use charm_host::leadership::etcd::{ConnectError, EtcdOptions, EtcdStore, EtcdTls};
use charm_host::leadership::{
    LeadershipStore, LeadershipToken, LeaseError, Release, StoreFailure, TenureEnd, UnitDataStore, WriteError,
    wait_until_released,
};
use charm_host::names::AppName;
use etcd::EtcdCluster;

const SHORT: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(60);

async fn connect(cluster: &EtcdCluster) -> Arc<EtcdStore> {
    Arc::new(EtcdStore::connect(&support::unused_prefix(EtcdOptions::from_url(&cluster.url()).unwrap())).await.unwrap())
}

/// Polls (up to 20 s) until `app` has no leader: the server expired or revoked it.
async fn until_free(store: &EtcdStore, app: &AppName) {
    for _ in 0..2000 {
        if store.lease(app).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the lease of {app} never expired");
}

#[tokio::test]
async fn the_server_expires_a_lease_and_the_next_holder_gets_a_higher_term() {
    let cluster = EtcdCluster::start(1);
    let store = connect(&cluster).await;
    let before = store.clock().now();
    let claim = store.claim(&claimant("a/0"), SHORT).await.unwrap();
    let after = store.clock().now();
    assert_eq!(claim.term, 1);
    assert!(
        claim.valid_until >= before + SHORT && claim.valid_until <= after + SHORT,
        "valid from the start of the call"
    );
    assert!(matches!(store.claim(&claimant("a/1"), SHORT).await, Err(LeaseError::Denied { .. })));
    let extended = store.claim(&claimant("a/0"), SHORT).await.unwrap();
    assert_eq!(extended.term, 1, "an extension keeps the term");
    until_free(&store, &app("a")).await;
    assert!(store.clock().now() >= extended.valid_until, "never expired before the holder's guarantee ended");
    assert_eq!(store.claim(&claimant("a/1"), SHORT).await.unwrap().term, 2);
    // The history says the first tenure ran out, before the second began.
    let history = store.history(Some(&app("a")), 10).await.unwrap();
    let ends: Vec<_> = history.iter().map(|t| (t.term, t.unit.to_string(), t.how)).collect();
    assert_eq!(ends, [(2, "a/1".into(), None), (1, "a/0".into(), Some(TenureEnd::Expired))]);
    assert!(history[1].ended.is_some_and(|ended| ended <= history[0].started), "{history:?}");
    assert_eq!(store.mark_lost_renewals(&unit("a/0"), 1).await.unwrap(), charm_host::leadership::LostRenewals::Marked);
    assert_eq!(store.history(Some(&app("a")), 1).await.unwrap().len(), 1, "at most the limit");
    let how = store.history(Some(&app("a")), 10).await.unwrap()[1].how;
    assert_eq!(how, Some(TenureEnd::LostRenewals), "its holder said its renewals failed");
    // A longer duration moves the tenure to a new etcd lease, same term.
    assert_eq!(store.claim(&claimant("a/1"), LONG).await.unwrap().term, 2);
    tokio::time::sleep(2 * SHORT).await;
    assert_eq!(store.lease(&app("a")).await.unwrap().map(|l| l.term), Some(2), "held on the longer lease");
    // A shorter one never shortens what the longer claim promised: neither through this
    // store, which renews the lease it remembers, nor through one that reads the tenure first.
    let promised = store.claim(&claimant("a/1"), SHORT).await.unwrap();
    assert!(promised.valid_until >= store.clock().now() + (LONG - SHORT), "the promise stays the longer one");
    let reading = connect(&cluster).await;
    let promised = reading.claim(&claimant("a/1"), SHORT).await.unwrap();
    assert!(
        promised.valid_until >= store.clock().now() + (LONG - SHORT),
        "read first, the promise stays the longer one"
    );
    tokio::time::sleep(3 * SHORT).await;
    assert_eq!(store.lease(&app("a")).await.unwrap().map(|l| l.term), Some(2), "still held after the short duration");
}

#[tokio::test]
async fn writes_are_fenced_by_the_tenure_that_wrote() {
    let cluster = EtcdCluster::start(1);
    let store = connect(&cluster).await;
    let old = store.claim(&claimant("a/0"), SHORT).await.unwrap();
    let written = store.write_settings(&claimant("a/0"), old.term, &group(&[("k", "1"), ("j", "x")])).await.unwrap();
    assert_eq!(written.version, 1);
    until_free(&store, &app("a")).await;
    let expired = store.write_settings(&claimant("a/0"), old.term, &group(&[("k", "2")])).await;
    assert!(matches!(expired, Err(WriteError::NotLeader { .. })), "an expired tenure may not write: {expired:?}");
    let new = store.claim(&claimant("a/1"), LONG).await.unwrap();
    let stale = store.write_settings(&claimant("a/0"), old.term, &group(&[("k", "2")])).await;
    assert!(matches!(stale, Err(WriteError::NotLeader { term: 1, .. })));
    let wrong_unit = store.write_settings(&claimant("a/0"), new.term, &group(&[("k", "2")])).await;
    assert!(matches!(wrong_unit, Err(WriteError::NotLeader { .. })));
    let snap = store.write_settings(&claimant("a/1"), new.term, &group(&[("k", "2"), ("j", "")])).await.unwrap();
    assert_eq!((snap.version, (*snap.values).clone()), (2, [("k".to_string(), "2".to_string())].into()));
    let noop = store.write_settings(&claimant("a/1"), new.term, &group(&[("k", "2")])).await.unwrap();
    assert_eq!(noop.version, 2, "a write that changes nothing keeps the version");
    let invalid = store.write_settings(&claimant("a/1"), new.term, &group(&[("k", "3"), ("bad key", "v")])).await;
    assert!(matches!(invalid, Err(WriteError::Invalid(_))));
    assert_eq!(store.read_settings(&app("a")).await.unwrap(), snap, "nothing of an invalid group is written");
}

#[tokio::test]
async fn a_reservation_directs_the_next_grant_until_it_lapses() {
    let cluster = EtcdCluster::start(1);
    let store = connect(&cluster).await;
    store.claim(&claimant("a/0"), LONG).await.unwrap();
    store.reserve(&unit("a/2"), LONG).await.unwrap();
    assert_eq!(store.reservation(&app("a")).await.unwrap(), Some(unit("a/2")));
    store.revoke(&claimant("a/0"), Release::StepDown).await.unwrap();
    assert!(matches!(store.claim(&claimant("a/1"), LONG).await, Err(LeaseError::Reserved { .. })));
    assert_eq!(store.claim(&claimant("a/2"), LONG).await.unwrap().term, 2);
    assert_eq!(store.reservation(&app("a")).await.unwrap(), None, "granted once, the reservation is spent");
    store.revoke(&claimant("a/2"), Release::StepDown).await.unwrap();
    store.reserve(&unit("a/2"), SHORT).await.unwrap();
    assert!(matches!(store.claim(&claimant("a/1"), LONG).await, Err(LeaseError::Reserved { .. })));
    for _ in 0..2000 {
        if store.reservation(&app("a")).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.claim(&claimant("a/1"), LONG).await.unwrap().term, 3, "an unused reservation lapses");
}

#[tokio::test]
async fn a_pin_stops_expiry_and_the_last_unpin_gives_a_fresh_ttl() {
    let cluster = EtcdCluster::start(1);
    let store = connect(&cluster).await;
    store.claim(&claimant("a/0"), SHORT).await.unwrap();
    store.pin(&app("a"), "upgrade").await.unwrap();
    store.pin(&app("a"), "backup").await.unwrap();
    store.pin(&app("a"), "backup").await.unwrap();
    assert_eq!(store.pins().await.unwrap()[&app("a")], ["backup", "upgrade"]);
    tokio::time::sleep(3 * SHORT).await;
    assert!(matches!(store.claim(&claimant("a/1"), SHORT).await, Err(LeaseError::Denied { .. })), "pinned: no expiry");
    assert!(store.lease(&app("a")).await.unwrap().unwrap().pinned);
    assert_eq!(store.claim(&claimant("a/0"), SHORT).await.unwrap().term, 1, "the holder extends while pinned");
    store.unpin(&app("a"), "upgrade").await.unwrap();
    tokio::time::sleep(2 * SHORT).await;
    assert!(store.lease(&app("a")).await.unwrap().is_some(), "one pin left");
    let unpinned = store.clock().now();
    store.unpin(&app("a"), "backup").await.unwrap();
    store.unpin(&app("a"), "backup").await.unwrap();
    assert!(store.pins().await.unwrap().is_empty());
    until_free(&store, &app("a")).await;
    assert!(store.clock().now() >= unpinned + SHORT, "expiry resumes a whole TTL after the last unpin");
    assert_eq!(store.claim(&claimant("a/1"), SHORT).await.unwrap().term, 2);
}

#[tokio::test]
async fn waiters_and_tokens_see_a_lease_expire() {
    let cluster = EtcdCluster::start(1);
    let store = connect(&cluster).await;
    let claim = store.claim(&claimant("a/0"), SHORT).await.unwrap();
    let token = LeadershipToken::new(store.clone(), unit("a/0")).await.unwrap();
    token.check().await.unwrap();
    let waiting = store.clone();
    let waiter =
        tokio::spawn(async move { wait_until_released(waiting.as_ref(), &app("a"), std::future::pending()).await });
    tokio::time::timeout(Duration::from_secs(20), waiter).await.unwrap().unwrap().unwrap();
    assert!(store.clock().now() >= claim.valid_until, "released only after the guarantee");
    assert!(token.check().await.is_err(), "expired");
}

#[tokio::test]
async fn terms_and_settings_survive_a_restart_of_etcd() {
    let mut cluster = EtcdCluster::start(1);
    {
        let store = connect(&cluster).await;
        let claim = store.claim(&claimant("a/0"), LONG).await.unwrap();
        store.write_settings(&claimant("a/0"), claim.term, &group(&[("k", "v")])).await.unwrap();
        store.revoke(&claimant("a/0"), Release::StepDown).await.unwrap();
        assert_eq!(store.claim(&claimant("a/1"), LONG).await.unwrap().term, 2);
        store.revoke(&claimant("a/1"), Release::StepDown).await.unwrap();
    }
    cluster.restart(0);
    cluster.wait_healthy();
    let store = connect(&cluster).await;
    assert_eq!(store.last_term(&app("a")).await.unwrap(), 2);
    assert_eq!(store.claim(&claimant("a/0"), LONG).await.unwrap().term, 3, "terms only go up across a restart");
    let settings = store.read_settings(&app("a")).await.unwrap();
    assert_eq!((settings.version, settings.values.get("k").cloned()), (1, Some("v".to_string())));
    // The watch sees the store's versions from connect on.
    assert_eq!(*store.watch_settings(&app("a")).borrow(), 1);
}

#[tokio::test]
async fn a_dead_etcd_makes_calls_fail_within_the_request_timeout() {
    let mut cluster = EtcdCluster::start(1);
    let mut options = support::unused_prefix(EtcdOptions::from_url(&cluster.url()).unwrap());
    options.request_timeout = Duration::from_millis(500);
    let store = EtcdStore::connect(&options).await.unwrap();
    let claim = store.claim(&claimant("a/0"), LONG).await.unwrap();
    cluster.kill(0);
    let started = std::time::Instant::now();
    let renewal = store.claim(&claimant("a/0"), LONG).await;
    assert!(matches!(&renewal, Err(LeaseError::Store(e)) if e.kind() == StoreFailure::Unreachable), "{renewal:?}");
    let write = store.write_settings(&claimant("a/0"), claim.term, &group(&[("k", "v")])).await;
    assert!(matches!(&write, Err(WriteError::Store(e)) if e.kind() == StoreFailure::Unreachable), "{write:?}");
    // Bounded, not hung: generous for a loaded machine, far below any guarantee window.
    assert!(started.elapsed() < Duration::from_secs(20), "store calls hung for {:?}", started.elapsed());
}

#[tokio::test]
async fn bad_connections_get_clear_errors() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut options = support::unused_prefix(EtcdOptions::from_url(&format!("etcd://127.0.0.1:{port}")).unwrap());
    options.connect_timeout = Duration::from_millis(500);
    options.request_timeout = Duration::from_millis(500);
    match EtcdStore::connect(&options).await {
        Err(err @ ConnectError::Unreachable { .. }) => assert!(err.to_string().contains(&port.to_string()), "{err}"),
        other => panic!("expected unreachable, got {other:?}"),
    }

    let cluster = EtcdCluster::start(1);
    // A prefix holding someone else's keys is refused, and left as it was.
    let mut options = support::unused_prefix(EtcdOptions::from_url(&cluster.url_with_prefix("theirs")).unwrap());
    let mut client = etcd_client_for(&cluster).await;
    client.put("/theirs/config", "x", None).await.unwrap();
    match EtcdStore::connect(&options).await {
        Err(err @ ConnectError::Prefix { .. }) => assert!(err.to_string().contains("/theirs"), "{err}"),
        other => panic!("expected a prefix error, got {other:?}"),
    }
    assert_eq!(client.get("/theirs/meta", None).await.unwrap().kvs().len(), 0, "nothing written");

    // A store inside another store's prefix is refused: the outer one would read its keys.
    let outer = support::unused_prefix(EtcdOptions::from_url(&cluster.url_with_prefix("p9")).unwrap());
    EtcdStore::connect(&outer).await.unwrap();
    let nested = support::unused_prefix(EtcdOptions::from_url(&cluster.url_with_prefix("p9/lease")).unwrap());
    match EtcdStore::connect(&nested).await {
        Err(err @ ConnectError::Prefix { .. }) => {
            assert!(err.to_string().contains("inside the charm-host store at /p9"), "{err}")
        }
        other => panic!("expected a prefix error, got {other:?}"),
    }
    assert_eq!(client.get("/p9/lease/meta", None).await.unwrap().kvs().len(), 0, "nothing written");

    // A CA file that is not a certificate.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    options.tls = Some(EtcdTls::new(Some(bad.clone()), None));
    match EtcdStore::connect(&options).await {
        Err(err @ ConnectError::Tls { .. }) => assert!(err.to_string().contains("ca.pem"), "{err}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    options.tls = Some(EtcdTls::new(Some(dir.path().join("missing.pem")), None));
    assert!(matches!(EtcdStore::connect(&options).await, Err(ConnectError::Tls { .. })));
}

async fn etcd_client_for(cluster: &EtcdCluster) -> etcd_client::Client {
    let endpoint = format!("127.0.0.1:{}", cluster.members[0].client_port);
    etcd_client::Client::connect([endpoint], None).await.unwrap()
}

#[tokio::test]
async fn writes_from_two_processes_never_lose_each_other() {
    // Two stores stand for two agents' processes; each remembers the bucket as it last
    // wrote it, and that memory is stale once the other writes.
    let cluster = EtcdCluster::start(1);
    let (a, b) = (connect(&cluster).await, connect(&cluster).await);
    let first = a.claim(&claimant("a/0"), LONG).await.unwrap();
    a.write_settings(&claimant("a/0"), first.term, &group(&[("from-a", "1")])).await.unwrap();
    a.revoke(&claimant("a/0"), Release::StepDown).await.unwrap();
    let second = b.claim(&claimant("a/1"), LONG).await.unwrap();
    b.write_settings(&claimant("a/1"), second.term, &group(&[("from-b", "2")])).await.unwrap();
    b.revoke(&claimant("a/1"), Release::StepDown).await.unwrap();
    let third = a.claim(&claimant("a/0"), LONG).await.unwrap();
    let after = a.write_settings(&claimant("a/0"), third.term, &group(&[("from-a", "3")])).await.unwrap();
    assert_eq!(after.version, 3);
    assert_eq!(after.values.get("from-b").map(String::as_str), Some("2"), "b's write survives a's stale memory");
    assert_eq!(b.read_settings(&app("a")).await.unwrap(), after);
    // A write under the first, long gone tenure is refused even though a remembered it.
    let stale = a.write_settings(&claimant("a/0"), first.term, &group(&[("late", "x")])).await;
    assert!(matches!(stale, Err(WriteError::NotLeader { .. })), "{stale:?}");
}

#[tokio::test]
async fn tls_with_a_client_certificate_and_then_a_user_and_password() {
    let certs = etcd::TestCertificates::generate();
    let cluster = EtcdCluster::start_tls(&certs);
    let mut options = support::unused_prefix(EtcdOptions::from_url(&cluster.url()).unwrap());
    options.connect_timeout = Duration::from_secs(1);
    options.request_timeout = Duration::from_secs(1);
    assert!(
        matches!(EtcdStore::connect(&options).await, Err(ConnectError::Unreachable { .. })),
        "plain text is refused"
    );
    // The server's certificate is checked against the CA given, not the system's roots.
    options.tls = Some(EtcdTls::new(None, Some((certs.path("client.pem"), certs.path("client.key")))));
    assert!(
        matches!(EtcdStore::connect(&options).await, Err(ConnectError::Unreachable { .. })),
        "an unknown CA is refused"
    );
    options.tls = Some(EtcdTls::new(Some(certs.path("ca.pem")), None));
    assert!(EtcdStore::connect(&options).await.is_err(), "the server asks for a client certificate");
    options.tls =
        Some(EtcdTls::new(Some(certs.path("ca.pem")), Some((certs.path("client.pem"), certs.path("client.key")))));
    let store = EtcdStore::connect(&options).await.unwrap();
    assert_eq!(store.claim(&claimant("a/0"), LONG).await.unwrap().term, 1);

    // Authentication on: a user is needed, and its password checked.
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(certs.path("ca.pem")).unwrap()))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(certs.path("client.pem")).unwrap(),
            std::fs::read(certs.path("client.key")).unwrap(),
        ));
    let endpoint = format!("127.0.0.1:{}", cluster.members[0].client_port);
    let mut admin =
        etcd_client::Client::connect([endpoint], Some(etcd_client::ConnectOptions::new().with_tls(tls))).await.unwrap();
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    drop(store);
    options.user = Some(("root".into(), "wrong".into()));
    assert!(EtcdStore::connect(&options).await.is_err(), "a wrong password is refused");
    options.user = Some(("root".into(), "s3cret".into()));
    let store = EtcdStore::connect(&options).await.unwrap();
    assert_eq!(store.last_term(&app("a")).await.unwrap(), 1);
}

#[tokio::test]
async fn another_process_hears_of_settings_and_lease_changes_through_the_watch() {
    let cluster = EtcdCluster::start(1);
    let (writer, watcher) = (connect(&cluster).await, connect(&cluster).await);
    let mut settings = watcher.watch_settings(&app("a"));
    let mut leases = watcher.watch_leases(&app("a"));
    let claim = writer.claim(&claimant("a/0"), LONG).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), leases.changed()).await.unwrap().unwrap();
    writer.write_settings(&claimant("a/0"), claim.term, &group(&[("k", "1")])).await.unwrap();
    writer.write_settings(&claimant("a/0"), claim.term, &group(&[("k", "2")])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), settings.wait_for(|v| *v == 2)).await.unwrap().unwrap();
    // Another application's writes are not this watcher's business, and its watch still works.
    let other = writer.claim(&claimant("b/0"), LONG).await.unwrap();
    writer.write_settings(&claimant("b/0"), other.term, &group(&[("k", "1")])).await.unwrap();
    writer.write_settings(&claimant("a/0"), claim.term, &group(&[("k", "3")])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), settings.wait_for(|v| *v == 3)).await.unwrap().unwrap();
    // A watcher that subscribes later starts from the version it can see.
    let late = connect(&cluster).await;
    assert_eq!(*late.watch_settings(&app("a")).borrow(), 3);
}

/// Revokes the etcd lease `app`'s lease key is bound to, as a replaced etcd leader does
/// after a pause (its revoke of a lease it thinks expired is forwarded and applied).
async fn revoke_behind_the_holders_back(cluster: &EtcdCluster, app: &str) {
    let mut client = etcd_client_for(cluster).await;
    let got = client.get(format!("/test/lease/{app}"), None).await.unwrap();
    let id = got.kvs().first().map(|kv| kv.lease()).expect("a lease key");
    client.lease_revoke(id).await.unwrap();
}

#[tokio::test]
async fn a_lease_revoked_behind_its_holders_back_keeps_others_out_until_the_holder_stops_counting_on_it() {
    const TTL: Duration = Duration::from_secs(4);
    let cluster = EtcdCluster::start(1);
    let (holding, claiming) = (connect(&cluster).await, connect(&cluster).await);
    holding.claim(&claimant("r/0"), TTL).await.unwrap();
    let counted_on = holding.claim(&claimant("r/0"), TTL).await.unwrap().valid_until;
    revoke_behind_the_holders_back(&cluster, "r").await;
    // The key is gone, but the other process does not take the lease (nor report it free)
    // while the holder may still count on its last renewal.
    assert!(
        matches!(claiming.claim(&claimant("r/1"), TTL).await, Err(LeaseError::Denied { holder, .. }) if holder == unit("r/0"))
    );
    let lease = claiming.lease(&app("r")).await.unwrap().expect("still reported held");
    assert_eq!((lease.holder, lease.term), (unit("r/0"), 1));
    wait_until_released(claiming.as_ref(), &app("r"), std::future::pending()).await.unwrap();
    let claim = claiming.claim(&claimant("r/1"), TTL).await.unwrap();
    assert!(claiming.clock().now() >= counted_on, "granted only once the holder's guarantee ran out");
    assert_eq!(claim.term, 2);
    // Nor does the holder keep counting on it: its next renewal finds the tenure gone.
    assert!(matches!(holding.claim(&claimant("r/0"), TTL).await, Err(LeaseError::Denied { .. })));

    // The holder itself may claim again at once: nobody else counted on the tenure. Another
    // incarnation of the same unit (started elsewhere) may not: the holder still counts on it.
    holding.claim(&claimant("s/0"), TTL).await.unwrap();
    revoke_behind_the_holders_back(&cluster, "s").await;
    assert!(matches!(
        claiming.claim(&other_incarnation("s/0"), TTL).await,
        Err(LeaseError::OtherIncarnation { holder: Some(holder), .. }) if holder == claimant("s/0").id()
    ));
    let counted_on_s = holding.claim(&claimant("s/0"), TTL).await.unwrap();
    assert_eq!(counted_on_s.term, 2);
    let counted_on_s = counted_on_s.valid_until;
    assert!(matches!(claiming.claim(&claimant("s/1"), TTL).await, Err(LeaseError::Denied { .. })));

    // A tenure given up by its holder passes at once: as soon as the claiming process's
    // watch has delivered the release (a copy a moment behind refuses as the old holder's,
    // and a waiting minion is woken by the release), not a TTL later.
    let mut changes = claiming.watch_leases(&app("s"));
    holding.revoke(&claimant("s/0"), Release::StepDown).await.unwrap();
    let released = async {
        while claiming.lease_hint(&app("s")).await.unwrap().lease.is_some() {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), released).await.expect("the watch delivers the release");
    assert!(claiming.clock().now() < counted_on_s, "seen free before the holder's last renewal ran out");
    assert_eq!(claiming.claim(&claimant("s/1"), TTL).await.unwrap().term, 3, "no wait after a release");
}

/// A leader's process reads only what changed, from a mirror its watch keeps; a process
/// that stops watching (it no longer leads) ends its mirror at the next change, and is then
/// answered from a listing of the store: never from a stale mirror.
#[tokio::test]
async fn the_unit_data_mirror_lives_only_while_someone_watches() {
    let cluster = EtcdCluster::start(1);
    let writer = connect(&cluster).await;
    let reader = EtcdStore::connect(&EtcdOptions::from_url(&cluster.url()).unwrap()).await.unwrap();
    let unit0 = other_incarnation("u/0");
    writer.join_unit(&unit0).await.unwrap();
    let mut watch = reader.watch_unit_data(&app("u"));
    let first = *tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|r| *r > 0)).await.unwrap().unwrap();
    let listed = reader.unit_data_since(&app("u"), 0).await.unwrap();
    assert_eq!(listed.units.len(), 1, "listed at revision {first}");
    writer.write_unit_data(&unit0, &group(&[("k", "1")]), None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), watch.changed()).await.unwrap().unwrap();
    let changes = reader.unit_data_since(&app("u"), listed.revision).await.unwrap();
    assert!(!changes.full && changes.units.len() == 1, "from the mirror: only what changed ({changes:?})");
    drop(watch);
    // The next change ends the mirror; until the reader has seen it end, answers still
    // come from it (and stay right).
    writer.write_unit_data(&unit0, &group(&[("k", "2")]), None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = reader.unit_data_since(&app("u"), changes.revision).await.unwrap();
        if answer.full {
            assert_eq!(answer.units[0].1.as_ref().unwrap().values.get("k").map(String::as_str), Some("2"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the mirror outlived its last watcher");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn renewals_of_a_held_lease_reuse_one_keep_alive_stream() {
    let cluster = EtcdCluster::start(1);
    let store = connect(&cluster).await;
    let unit = claimant("renewing/0");
    let keep_alive = |metric: &str| cluster.metric(0, metric, "grpc_method=\"LeaseKeepAlive\"").unwrap();
    store.claim(&unit, Duration::from_secs(10)).await.unwrap();
    let (streams, renewals) = (keep_alive("grpc_server_started_total"), keep_alive("grpc_server_msg_received_total"));
    for _ in 0..20 {
        store.claim(&unit, Duration::from_secs(10)).await.unwrap();
    }
    let opened = keep_alive("grpc_server_started_total") - streams;
    let sent = keep_alive("grpc_server_msg_received_total") - renewals;
    assert_eq!(sent, 20.0, "one keep-alive message per extension");
    assert_eq!(opened, 1.0, "the extensions opened {opened} keep-alive streams; one serves them all");
    // Given up: the stream goes with its lease, and the next tenure renews on a new one.
    store.revoke(&unit, Release::StepDown).await.unwrap();
    store.claim(&unit, Duration::from_secs(10)).await.unwrap();
    store.claim(&unit, Duration::from_secs(10)).await.unwrap();
    assert_eq!(keep_alive("grpc_server_started_total") - streams, 2.0);
}

/// Claims and extensions until `n` succeed one after another. A member lost while
/// connected may fail a few calls until one of them makes the store set it aside; panics
/// past 4 failures.
async fn a_run_of_successes(store: &EtcdStore, unit: &charm_host::leadership::Claimant, n: usize) {
    let mut run = 0;
    let mut failures = Vec::new();
    while run < n {
        match store.claim(unit, Duration::from_secs(10)).await {
            Ok(_) => run += 1,
            Err(err) => {
                run = 0;
                failures.push(err.to_string());
                assert!(failures.len() <= 4, "calls keep failing: {failures:?}");
            }
        }
    }
}

#[tokio::test]
async fn one_member_of_three_down_costs_no_call_once_noticed() {
    let mut cluster = EtcdCluster::start(3);
    // Down before the store connects: the connect and every call succeed.
    cluster.kill(2);
    cluster.wait_healthy(); // the others have a leader
    let store = connect(&cluster).await;
    a_run_of_successes(&store, &claimant("down-a/0"), 30).await;
    // Back, then another member lost while connected: once a call fails, the member is
    // set aside and the calls after succeed.
    cluster.restart(2);
    cluster.wait_healthy();
    cluster.kill(1);
    a_run_of_successes(&store, &claimant("down-b/0"), 30).await;
}

#[tokio::test]
async fn a_minion_waits_on_the_watch_and_claims_once_the_crashed_holders_lease_expired() {
    let cluster = EtcdCluster::start(1);
    let (holder_store, minion_store) = (connect(&cluster).await, connect(&cluster).await);
    let app = app("crashed");
    let mut changes = minion_store.watch_leases(&app);
    holder_store.claim(&claimant("crashed/0"), Duration::from_secs(3)).await.unwrap();
    // The holder stops renewing, as a crashed one does. Once the minion's watch has seen
    // the grant, its hint answers from the watch (no request) and its claims are refused
    // until the lease expired.
    let holder_seen = async {
        while minion_store.lease_hint(&app).await.unwrap().lease.map(|l| l.holder) != Some(unit("crashed/0")) {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), holder_seen).await.expect("the watch delivers the grant");
    let minion = claimant("crashed/1");
    let requests = || cluster.metric(0, "grpc_server_msg_received_total", "grpc_method=\"Txn\"").unwrap();
    let before = requests();
    for _ in 0..20 {
        assert!(matches!(minion_store.claim(&minion, SHORT).await, Err(LeaseError::Denied { .. })));
    }
    // (Both stores' own background work may send a transaction meanwhile; 20 reads may not.)
    let sent = requests() - before;
    assert!(sent < 5.0, "refusals the watch can give cost no request: {sent} transactions for 20");
    wait_until_released(minion_store.as_ref(), &app, std::future::pending()).await.unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match minion_store.claim(&minion, SHORT).await {
                Ok(claim) => return claim,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the minion claims the expired lease");
    assert_eq!(claimed.term, 2);
}

/// Polls (up to 20 s) until member 0's gauge `name` reads `want`.
async fn until_gauge(cluster: &EtcdCluster, name: &str, want: f64) {
    let mut last = 0.0;
    for _ in 0..400 {
        last = cluster.metric(0, name, "").unwrap();
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} stayed at {last}, not {want}");
}

#[tokio::test]
async fn a_process_watches_only_the_applications_it_follows_on_one_stream() {
    let cluster = EtcdCluster::start(1);
    let (holder, follower) = (connect(&cluster).await, connect(&cluster).await);
    // The follower follows `a` (as a waiting minion does), then `b` (its settings) while
    // its stream is already open; the holder holds `c`.
    let mut leases = follower.watch_leases(&app("a"));
    until_gauge(&cluster, "etcd_debugging_mvcc_watcher_total", 5.0).await;
    let mut settings = follower.watch_settings(&app("b"));
    let c = holder.claim(&claimant("c/0"), LONG).await.unwrap();
    // One stream per process, five keys per followed application.
    until_gauge(&cluster, "etcd_debugging_mvcc_watcher_total", 15.0).await;
    assert_eq!(cluster.metric(0, "etcd_debugging_mvcc_watch_stream_total", "").unwrap(), 2.0);
    // `c`'s renewals reach its holder's watch only: none is sent to the follower.
    let events = || cluster.metric(0, "etcd_debugging_mvcc_events_total", "").unwrap();
    let before = events();
    const RENEWALS: u32 = 20;
    for _ in 0..RENEWALS {
        assert_eq!(holder.claim(&claimant("c/0"), LONG).await.unwrap().term, c.term);
    }
    let sent = events() - before;
    assert!(
        sent >= f64::from(RENEWALS) && sent < 1.5 * f64::from(RENEWALS),
        "{sent} events sent for {RENEWALS} renewals: the follower was sent another application's"
    );
    // What the follower follows still reaches it, on either application.
    leases.borrow_and_update();
    let a = holder.claim(&claimant("a/0"), LONG).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), leases.changed()).await.unwrap().unwrap();
    let holder_seen = async {
        while follower.lease_hint(&app("a")).await.unwrap().lease.map(|l| l.holder) != Some(unit("a/0")) {
            leases.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), holder_seen).await.expect("the watch delivers a's grant");
    let b = holder.claim(&claimant("b/0"), LONG).await.unwrap();
    holder.write_settings(&claimant("b/0"), b.term, &group(&[("k", "1")])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), settings.wait_for(|v| *v == 1)).await.unwrap().unwrap();
    assert!(matches!(follower.claim(&claimant("a/1"), LONG).await, Err(LeaseError::Denied { .. })));
    assert_eq!(a.term, 1);
}

#[tokio::test]
async fn a_process_following_many_applications_hears_every_ones_settings() {
    let cluster = EtcdCluster::start(1);
    let (writer, follower) = (connect(&cluster).await, connect(&cluster).await);
    const APPS: usize = 100;
    let apps: Vec<AppName> = (0..APPS).map(|n| app(&format!("many-{n}"))).collect();
    let mut receivers = Vec::new();
    for app in &apps {
        // As a process of minions does: a settings subscription and a lease wait per application.
        receivers.push(follower.watch_settings(app));
        let _ = follower.lease_hint(app).await.unwrap();
    }
    let mut terms = Vec::new();
    for app in &apps {
        terms.push(writer.claim(&claimant(&format!("{app}/0")), LONG).await.unwrap().term);
    }
    for (app, term) in apps.iter().zip(&terms) {
        writer.write_settings(&claimant(&format!("{app}/0")), *term, &group(&[("k", "1")])).await.unwrap();
    }
    for (app, receiver) in apps.iter().zip(&mut receivers) {
        tokio::time::timeout(Duration::from_secs(20), receiver.wait_for(|v| *v == 1))
            .await
            .unwrap_or_else(|_| panic!("{app}'s write never reached the follower"))
            .unwrap();
    }
}
