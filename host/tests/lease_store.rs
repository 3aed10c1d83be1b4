//! Every lease-engine case, run against both embedded stores on a manual clock (no test
//! sleeps to let a lease expire), and each case that needs no clock movement against a real
//! etcd too (`etcd_store.rs` has the etcd cases with real expiry).

use std::sync::Arc;
use std::time::Duration;

#[path = "../../tests/support/etcd.rs"]
mod etcd;
mod support;

use support::{app_name as app, claimant, group, other_incarnation, unit_name as unit};

use charm_host::leadership::etcd::{EtcdOptions, EtcdStore};
use charm_host::leadership::sqlite::SqliteOptions;
use charm_host::leadership::{
    Clock, HISTORY_LIMIT, LeadershipStore, LeadershipToken, LeaseError, LostRenewals, ManualClock, MemoryStore,
    Release, SqliteStore, StoreFailure, TenureEnd, UnitDataChanges, UnitWriteError, WriteError, wait_until_released,
};
use charm_host::names::UnitName;

const SECOND: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(10);

/// A store under test, with its clock and whatever keeps it alive.
struct Subject {
    store: Arc<dyn LeadershipStore>,
    /// The clock the store judges expiry by; an etcd store's is the server's, so cases that
    /// move this clock do not run on etcd.
    clock: Arc<ManualClock>,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<etcd::EtcdCluster>,
}

fn memory() -> Subject {
    let clock = Arc::new(ManualClock::default());
    Subject { store: Arc::new(MemoryStore::with_clock(clock.clone())), clock, _dir: None, _etcd: None }
}

fn sqlite_options(boot: &str) -> SqliteOptions {
    SqliteOptions { boot_id: Some(boot.into()), poll_interval: Duration::from_millis(5), ..SqliteOptions::default() }
}

fn sqlite() -> Subject {
    let clock = Arc::new(ManualClock::default());
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(&dir.path().join("state.db"), clock.clone(), sqlite_options("boot-1")).unwrap();
    Subject { store: Arc::new(store), clock, _dir: Some(dir), _etcd: None }
}

async fn real_etcd() -> Subject {
    let cluster = etcd::EtcdCluster::start(1);
    let store =
        EtcdStore::connect(&support::unused_prefix(EtcdOptions::from_url(&cluster.url()).unwrap())).await.unwrap();
    Subject { store: Arc::new(store), clock: Arc::new(ManualClock::default()), _dir: None, _etcd: Some(cluster) }
}

/// Generates one test per store for each case function.
macro_rules! for_each_store {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $( #[tokio::test] async fn $case() { crate::$case(crate::memory()).await } )*
        }
        mod sqlite_store {
            $( #[tokio::test] async fn $case() { crate::$case(crate::sqlite()).await } )*
        }
    };
}

/// Generates one test per store, etcd included, for each case that needs no clock movement.
macro_rules! for_each_store_and_etcd {
    ($($case:ident),* $(,)?) => {
        mod any_store {
            for_each_store!($($case),*);
            mod etcd_store {
                $( #[tokio::test] async fn $case() { crate::$case(crate::real_etcd().await).await } )*
            }
        }
    };
}

for_each_store_and_etcd!(
    another_incarnation_of_a_unit_is_kept_out,
    revoke_by_holder_other_and_nobody,
    a_cancelled_wait_ends_at_once,
    bad_arguments_get_clear_errors,
    watchers_hear_of_changes,
    the_history_records_each_tenure_and_how_it_ended,
    the_history_keeps_the_latest_tenures,
    unit_data_is_written_only_by_the_incarnation_that_joined_last,
    the_unit_data_feed_names_only_what_changed,
);

for_each_store!(
    claim_extend_and_deny,
    expiry_is_exact,
    pins_stop_expiry_until_the_last_unpin,
    pins_and_leaders_are_listed,
    waiters_are_released_on_expiry_and_on_revoke,
    tokens_fail_once_the_lease_moves,
    writes_are_fenced_by_term,
    a_reservation_directs_the_next_grant,
    an_expired_tenure_ends_at_its_expiry,
    another_incarnation_waits_the_tenure_out,
);

/// Each tenure's (term, unit, how it ended), newest first.
async fn ends(s: &Subject, app_name: &str) -> Vec<(u64, String, Option<TenureEnd>)> {
    let history = s.store.history(Some(&app(app_name)), 100).await.unwrap();
    history.iter().map(|t| (t.term, t.unit.to_string(), t.how)).collect()
}

async fn the_history_records_each_tenure_and_how_it_ended(s: Subject) {
    assert_eq!(s.store.history(None, 10).await.unwrap(), [], "nothing yet");
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    s.store.revoke(&claimant("a/0"), Release::StepDown).await.unwrap();
    s.store.claim(&claimant("a/1"), LEASE).await.unwrap();
    s.store.revoke(&claimant("a/1"), Release::Handover).await.unwrap();
    s.store.revoke(&claimant("a/1"), Release::Stop).await.unwrap(); // nothing held: no change
    s.store.claim(&claimant("a/2"), LEASE).await.unwrap();
    s.store.claim(&claimant("b/0"), LEASE).await.unwrap();
    let expected = [
        (3, "a/2".to_owned(), None),
        (2, "a/1".into(), Some(TenureEnd::Handover)),
        (1, "a/0".into(), Some(TenureEnd::StepDown)),
    ];
    assert_eq!(ends(&s, "a").await, expected, "an extension is no new tenure");
    // Times run forward: each tenure ends no earlier than it started, and before the next.
    let history = s.store.history(Some(&app("a")), 100).await.unwrap();
    for pair in history.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        let ended = older.ended.expect("the older tenure ended");
        assert!(older.started <= ended && ended <= newer.started, "{history:?}");
    }
    // Lost renewals rewrite only an expiry.
    assert_eq!(
        s.store.mark_lost_renewals(&unit("a/0"), 1).await.unwrap(),
        LostRenewals::NotApplicable,
        "it stepped down"
    );
    assert_eq!(s.store.mark_lost_renewals(&unit("a/2"), 3).await.unwrap(), LostRenewals::StillOpen);
    assert_eq!(
        s.store.mark_lost_renewals(&unit("a/0"), 3).await.unwrap(),
        LostRenewals::NotApplicable,
        "not its tenure"
    );
    assert_eq!(ends(&s, "a").await, expected);
    // Every application, newest first in each, at most the limit of each.
    let latest: Vec<_> =
        s.store.history(None, 1).await.unwrap().into_iter().map(|t| (t.unit.to_string(), t.term)).collect();
    assert_eq!(latest, [("a/2".to_owned(), 3), ("b/0".to_owned(), 1)]);
    s.store.revoke(&claimant("a/2"), Release::Stop).await.unwrap();
    assert_eq!(ends(&s, "a").await[0], (3, "a/2".to_owned(), Some(TenureEnd::Stop)));
}

async fn the_history_keeps_the_latest_tenures(s: Subject) {
    let extra = 3;
    for n in 0..HISTORY_LIMIT + extra {
        let unit = claimant(&format!("a/{}", n % 2));
        s.store.claim(&unit, LEASE).await.unwrap();
        s.store.revoke(&unit, Release::StepDown).await.unwrap();
    }
    let history = s.store.history(Some(&app("a")), usize::MAX).await.unwrap();
    assert_eq!(history.len() as u64, HISTORY_LIMIT, "bounded");
    assert_eq!((history[0].term, history.last().unwrap().term), (HISTORY_LIMIT + extra, extra + 1), "the latest kept");
    assert!(history.iter().all(|t| t.how == Some(TenureEnd::StepDown)), "ends kept with their tenures");
}

async fn an_expired_tenure_ends_at_its_expiry(s: Subject) {
    let claim = s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    let expires = s.store.lease(&app("a")).await.unwrap().unwrap().expires;
    assert!(expires >= claim.valid_until);
    s.clock.advance(LEASE + SECOND);
    s.store.claim(&claimant("a/1"), LEASE).await.unwrap();
    let history = s.store.history(Some(&app("a")), 10).await.unwrap();
    assert_eq!(history[1].how, Some(TenureEnd::Expired));
    assert_eq!(history[1].ended, Some(s.clock.wall_time(expires)), "at its expiry, on the wall");
    assert_eq!(history[0].started, s.clock.wall_time(s.clock.now()));
    assert_eq!(
        history[0].started.duration_since(history[1].ended.unwrap()).unwrap(),
        SECOND,
        "the gap without a leader"
    );
    assert_eq!(s.store.mark_lost_renewals(&unit("a/1"), 1).await.unwrap(), LostRenewals::NotApplicable);
    assert_eq!(ends(&s, "a").await[1].2, Some(TenureEnd::Expired), "only its holder says why");
    assert_eq!(s.store.mark_lost_renewals(&unit("a/0"), 1).await.unwrap(), LostRenewals::Marked);
    assert_eq!(ends(&s, "a").await[1].2, Some(TenureEnd::LostRenewals));
    // The same unit after its own expiry: a new tenure, the old one expired.
    s.clock.advance(LEASE + SECOND);
    s.store.claim(&claimant("a/1"), LEASE).await.unwrap();
    assert_eq!(
        ends(&s, "a").await[..2],
        [(3, "a/1".to_owned(), None), (2, "a/1".to_owned(), Some(TenureEnd::Expired))]
    );
}

async fn a_reservation_directs_the_next_grant(s: Subject) {
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    s.store.reserve(&unit("a/2"), 2 * LEASE).await.unwrap();
    assert_eq!(s.store.claim(&claimant("a/0"), LEASE).await.unwrap().term, 1, "the holder keeps extending");
    s.store.revoke(&claimant("a/0"), Release::StepDown).await.unwrap();
    match s.store.claim(&claimant("a/1"), LEASE).await {
        Err(LeaseError::Reserved { unit: reserved, .. }) => assert_eq!(reserved, unit("a/2")),
        other => panic!("a free lease reserved for a/2 went to a/1: {other:?}"),
    }
    assert!(
        matches!(s.store.claim(&claimant("a/0"), LEASE).await, Err(LeaseError::Reserved { .. })),
        "nor back to a/0"
    );
    assert_eq!(s.store.claim(&claimant("a/2"), LEASE).await.unwrap().term, 2);
    s.store.revoke(&claimant("a/2"), Release::StepDown).await.unwrap();
    assert_eq!(s.store.claim(&claimant("a/1"), LEASE).await.unwrap().term, 3, "granted once, the reservation is spent");
    // An unused reservation lapses.
    s.store.revoke(&claimant("a/1"), Release::StepDown).await.unwrap();
    s.store.reserve(&unit("a/2"), LEASE).await.unwrap();
    s.clock.advance(LEASE);
    assert_eq!(s.store.claim(&claimant("a/1"), LEASE).await.unwrap().term, 4);
    assert!(matches!(s.store.reserve(&unit("a/2"), Duration::ZERO).await, Err(LeaseError::InvalidDuration(_))));
}

async fn claim_extend_and_deny(s: Subject) {
    let start = s.clock.now();
    let claim = s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    assert_eq!(claim.term, 1);
    assert_eq!(claim.valid_until, start + LEASE, "valid from the start of the call");
    match s.store.claim(&claimant("a/1"), LEASE).await {
        Err(LeaseError::Denied { holder, .. }) => assert_eq!(holder, unit("a/0")),
        other => panic!("expected a denial, got {other:?}"),
    }
    s.clock.advance(5 * SECOND);
    let extended = s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    assert_eq!(extended.term, 1, "an extension keeps the term");
    assert_eq!(s.store.lease(&app("a")).await.unwrap().unwrap().expires, start + 15 * SECOND);
    // A shorter extension never shortens what was promised.
    s.store.claim(&claimant("a/0"), SECOND).await.unwrap();
    assert_eq!(s.store.lease(&app("a")).await.unwrap().unwrap().expires, start + 15 * SECOND);
    // Applications are independent.
    assert_eq!(s.store.claim(&claimant("b/7"), LEASE).await.unwrap().term, 1);
}

async fn expiry_is_exact(s: Subject) {
    let claim = s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    s.clock.advance(LEASE - Duration::from_nanos(1));
    assert!(
        matches!(s.store.claim(&claimant("a/1"), LEASE).await, Err(LeaseError::Denied { .. })),
        "1 ns before expiry"
    );
    assert!(s.store.lease(&app("a")).await.unwrap().is_some());
    s.clock.advance(Duration::from_nanos(1));
    assert_eq!(s.clock.now(), claim.valid_until);
    assert!(s.store.lease(&app("a")).await.unwrap().is_none(), "expired at exactly valid_until");
    let next = s.store.claim(&claimant("a/1"), LEASE).await.unwrap();
    assert_eq!(next.term, 2, "a new holder gets a higher term");
    // The old holder coming back is a new tenure too.
    s.clock.advance(LEASE);
    assert_eq!(s.store.claim(&claimant("a/0"), LEASE).await.unwrap().term, 3);
}

/// The same unit started a second time (elsewhere, or again in this process): its other
/// incarnation neither extends, writes under nor gives up the tenure of the first.
async fn another_incarnation_of_a_unit_is_kept_out(s: Subject) {
    let first = claimant("a/0");
    let second = other_incarnation("a/0");
    let term = s.store.claim(&first, LEASE).await.unwrap().term;
    match s.store.claim(&second, LEASE).await {
        Err(LeaseError::OtherIncarnation { unit: held_by, holder, origin }) => {
            assert_eq!((held_by, holder), (unit("a/0"), Some(first.id())));
            assert_eq!(origin.as_deref(), Some(&first.incarnation().origin), "it says where the holder runs");
        }
        other => panic!("a second incarnation of a/0 was not refused: {other:?}"),
    }
    let lease = s.store.lease(&app("a")).await.unwrap().unwrap();
    assert_eq!((lease.holder, lease.term, lease.incarnation), (unit("a/0"), term, Some(first.id())));
    assert!(
        matches!(s.store.write_settings(&second, term, &group(&[("k", "v")])).await, Err(WriteError::NotLeader { .. })),
        "the same unit and term, but not the incarnation that holds it: fenced"
    );
    assert!(matches!(s.store.revoke(&second, Release::StepDown).await, Err(LeaseError::NotHeld { .. })));
    assert_eq!(s.store.claim(&first, LEASE).await.unwrap().term, term, "the holder still extends");
    s.store.write_settings(&first, term, &group(&[("k", "v")])).await.unwrap();
    s.store.revoke(&first, Release::Stop).await.unwrap();
    let next = s.store.claim(&second, LEASE).await.unwrap();
    assert_eq!(next.term, term + 1, "once given up, a new tenure for the other incarnation");
    assert!(
        matches!(s.store.claim(&first, LEASE).await, Err(LeaseError::OtherIncarnation { .. })),
        "and now the first waits"
    );
    assert!(matches!(
        s.store.write_settings(&first, term, &group(&[("k", "w")])).await,
        Err(WriteError::NotLeader { .. })
    ));
    assert_eq!(s.store.read_settings(&app("a")).await.unwrap().values.get("k").map(String::as_str), Some("v"));
}

/// A new incarnation that finds its unit's tenure held by another waits until it runs out,
/// like any other unit: no shortcut for the same name.
async fn another_incarnation_waits_the_tenure_out(s: Subject) {
    let first = claimant("a/0");
    let second = other_incarnation("a/0");
    let claim = s.store.claim(&first, LEASE).await.unwrap();
    s.clock.advance(LEASE - SECOND);
    assert!(
        matches!(s.store.claim(&second, LEASE).await, Err(LeaseError::OtherIncarnation { .. })),
        "a second before expiry"
    );
    s.clock.advance(SECOND);
    assert!(s.clock.now() >= claim.valid_until);
    let next = s.store.claim(&second, LEASE).await.unwrap();
    assert_eq!(next.term, claim.term + 1, "a new tenure, not the old one extended");
    assert_eq!(ends(&s, "a").await[1].2, Some(TenureEnd::Expired));
}

async fn revoke_by_holder_other_and_nobody(s: Subject) {
    s.store.revoke(&claimant("a/0"), Release::StepDown).await.unwrap(); // no lease at all: ok
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    match s.store.revoke(&claimant("a/1"), Release::StepDown).await {
        Err(LeaseError::NotHeld { unit: u, .. }) => assert_eq!(u, unit("a/1")),
        other => panic!("another unit's revoke must fail: {other:?}"),
    }
    assert!(s.store.lease(&app("a")).await.unwrap().is_some(), "a failed revoke changes nothing");
    s.store.revoke(&claimant("a/0"), Release::StepDown).await.unwrap();
    assert!(s.store.lease(&app("a")).await.unwrap().is_none());
    s.store.revoke(&claimant("a/0"), Release::StepDown).await.unwrap(); // again: nobody holds it, ok
    assert_eq!(s.store.claim(&claimant("a/1"), LEASE).await.unwrap().term, 2, "granted at once, next term");
}

async fn pins_stop_expiry_until_the_last_unpin(s: Subject) {
    for order in [["upgrade", "backup"], ["backup", "upgrade"]] {
        let holder = claimant("a/0");
        s.store.claim(&holder, LEASE).await.unwrap();
        s.store.pin(&app("a"), "upgrade").await.unwrap();
        s.store.pin(&app("a"), "backup").await.unwrap();
        s.store.pin(&app("a"), "backup").await.unwrap(); // idempotent
        s.clock.advance(Duration::from_secs(3600));
        assert!(
            matches!(s.store.claim(&claimant("a/1"), LEASE).await, Err(LeaseError::Denied { .. })),
            "pinned: no expiry"
        );
        assert!(s.store.lease(&app("a")).await.unwrap().unwrap().pinned);
        s.store.unpin(&app("a"), order[0]).await.unwrap();
        assert!(s.store.lease(&app("a")).await.unwrap().is_some(), "one pin left");
        s.store.unpin(&app("a"), order[1]).await.unwrap();
        s.store.unpin(&app("a"), order[1]).await.unwrap(); // idempotent
        assert!(s.store.lease(&app("a")).await.unwrap().is_none(), "expiry resumes after the last unpin");
        s.store.claim(&claimant("a/1"), LEASE).await.unwrap();
        s.store.revoke(&claimant("a/1"), Release::StepDown).await.unwrap();
    }
}

async fn pins_and_leaders_are_listed(s: Subject) {
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    s.store.claim(&claimant("b/3"), 2 * LEASE).await.unwrap();
    s.store.pin(&app("b"), "upgrade").await.unwrap();
    s.store.pin(&app("c"), "z").await.unwrap();
    s.store.pin(&app("c"), "a").await.unwrap();
    let leaders = s.store.leaders().await.unwrap();
    assert_eq!(leaders.get(&app("a")), Some(&unit("a/0")));
    assert_eq!(leaders.get(&app("b")), Some(&unit("b/3")));
    assert_eq!(leaders.len(), 2);
    let pins = s.store.pins().await.unwrap();
    assert_eq!(pins[&app("b")], ["upgrade"]);
    assert_eq!(pins[&app("c")], ["a", "z"]);
    s.clock.advance(3 * LEASE);
    let leaders = s.store.leaders().await.unwrap();
    assert_eq!(leaders.keys().collect::<Vec<_>>(), [&app("b")], "a expired, b is pinned");
}

/// Waits (real time, up to 20 s) until at least `started` sleeps were ever started on
/// `clock` and `pending` of them are pending: the sleepers are blocked where expected.
async fn asleep(clock: &ManualClock, started: u64, pending: usize) {
    for _ in 0..4000 {
        if clock.sleeps_started() >= started && clock.sleepers() >= pending {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("sleepers never blocked: {} started, {} pending", clock.sleeps_started(), clock.sleepers());
}

async fn waiters_are_released_on_expiry_and_on_revoke(s: Subject) {
    let waiters = |n: usize| {
        (0..n)
            .map(|_| {
                let store = s.store.clone();
                tokio::spawn(
                    async move { wait_until_released(store.as_ref(), &app("a"), std::future::pending()).await },
                )
            })
            .collect::<Vec<_>>()
    };
    // No leader: the wait ends at once.
    wait_until_released(s.store.as_ref(), &app("a"), std::future::pending()).await.unwrap();

    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    let started = s.clock.sleeps_started();
    let on_expiry = waiters(3);
    // Each waiter read the lease and went to sleep until its expiry.
    asleep(&s.clock, started + 3, 3).await;
    assert!(on_expiry.iter().all(|w| !w.is_finished()));
    let started = s.clock.sleeps_started();
    s.clock.advance(LEASE / 2);
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap(); // extended: waiters keep waiting
    s.clock.advance(LEASE / 2);
    // Each waiter read the extended lease and slept again: woken by the store's notice of
    // the extension (where it gives one) or at the old expiry, whichever came first.
    asleep(&s.clock, started + 3, 3).await;
    assert!(on_expiry.iter().all(|w| !w.is_finished()), "an extension keeps waiters waiting");
    s.clock.advance(LEASE);
    for waiter in on_expiry {
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    }

    s.store.claim(&claimant("a/1"), LEASE).await.unwrap();
    let started = s.clock.sleeps_started();
    let on_revoke = waiters(3);
    asleep(&s.clock, started + 3, 3).await;
    s.store.revoke(&claimant("a/1"), Release::StepDown).await.unwrap();
    for waiter in on_revoke {
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    }
}

async fn a_cancelled_wait_ends_at_once(s: Subject) {
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let store = s.store.clone();
    let waiter = tokio::spawn(async move {
        wait_until_released(store.as_ref(), &app("a"), async {
            let _ = cancelled.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    cancel.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert_eq!(result, Err(LeaseError::Cancelled));
    assert!(s.store.lease(&app("a")).await.unwrap().is_some(), "cancelling changes nothing");
}

async fn tokens_fail_once_the_lease_moves(s: Subject) {
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    let token = LeadershipToken::new(s.store.clone(), unit("a/0")).await.unwrap();
    let minion_token = LeadershipToken::new(s.store.clone(), unit("a/1")).await.unwrap();
    assert_eq!(token.term(), Some(1));
    token.check().await.unwrap();
    assert!(minion_token.check().await.is_err());
    s.clock.advance(LEASE);
    assert!(token.check().await.is_err(), "expired");
    s.store.claim(&claimant("a/1"), LEASE).await.unwrap();
    assert!(token.check().await.is_err(), "moved");
    s.store.revoke(&claimant("a/1"), Release::StepDown).await.unwrap();
    s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    assert!(token.check().await.is_err(), "back with the same unit, but a later term");
}

async fn writes_are_fenced_by_term(s: Subject) {
    let old = s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    let snap = s.store.write_settings(&claimant("a/0"), old.term, &group(&[("k", "1"), ("j", "x")])).await.unwrap();
    assert_eq!(snap.version, 1);
    s.clock.advance(LEASE);
    let expired = s.store.write_settings(&claimant("a/0"), old.term, &group(&[("k", "2")])).await;
    assert!(matches!(expired, Err(WriteError::NotLeader { .. })), "an expired term may not write");
    let new = s.store.claim(&claimant("a/1"), LEASE).await.unwrap();
    let stale = s.store.write_settings(&claimant("a/0"), old.term, &group(&[("k", "2")])).await;
    assert!(matches!(stale, Err(WriteError::NotLeader { term: 1, .. })), "stale term");
    let wrong_unit = s.store.write_settings(&claimant("a/0"), new.term, &group(&[("k", "2")])).await;
    assert!(matches!(wrong_unit, Err(WriteError::NotLeader { .. })), "current term, wrong unit");
    let snap = s.store.write_settings(&claimant("a/1"), new.term, &group(&[("k", "2"), ("j", "")])).await.unwrap();
    assert_eq!(snap.version, 2);
    assert_eq!(*snap.values, [("k".to_string(), "2".to_string())].into());
    let noop = s.store.write_settings(&claimant("a/1"), new.term, &group(&[("k", "2")])).await.unwrap();
    assert_eq!(noop.version, 2, "a write that changes nothing keeps the version");
    let invalid = s.store.write_settings(&claimant("a/1"), new.term, &group(&[("k", "3"), ("bad key", "v")])).await;
    assert!(matches!(invalid, Err(WriteError::Invalid(_))));
    assert_eq!(s.store.read_settings(&app("a")).await.unwrap(), snap, "nothing of an invalid group is written");
}

async fn bad_arguments_get_clear_errors(s: Subject) {
    for bad in [Duration::ZERO, Duration::from_millis(999), Duration::from_secs(301)] {
        let err = s.store.claim(&claimant("a/0"), bad).await.unwrap_err();
        assert_eq!(err, LeaseError::InvalidDuration(bad));
        assert!(err.to_string().contains("1s to 5min"));
    }
    assert!(s.store.claim(&claimant("a/0"), Duration::from_secs(300)).await.is_ok());
    for bad in ["", "tab\there", &"e".repeat(257)] {
        assert!(matches!(s.store.pin(&app("a"), bad).await, Err(LeaseError::InvalidEntity(_))));
        assert!(matches!(s.store.unpin(&app("a"), bad).await, Err(LeaseError::InvalidEntity(_))));
    }
    let err = UnitName::new("a/x").unwrap_err().to_string();
    assert!(err.contains("application/number"), "{err}");
}

async fn watchers_hear_of_changes(s: Subject) {
    let mut leases = s.store.watch_leases(&app("a"));
    let mut settings = s.store.watch_settings(&app("a"));
    let claim = s.store.claim(&claimant("a/0"), LEASE).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), leases.changed()).await.unwrap().unwrap();
    s.store.write_settings(&claimant("a/0"), claim.term, &group(&[("k", "v")])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), settings.changed()).await.unwrap().unwrap();
    assert_eq!(*settings.borrow_and_update(), 1);
}

// Unit data and membership (see `leadership::unit_data`).

async fn unit_data_is_written_only_by_the_incarnation_that_joined_last(s: Subject) {
    let (first, second) = (other_incarnation("u/0"), other_incarnation("u/0"));
    let refused = s.store.write_unit_data(&first, &group(&[("k", "v")]), None).await;
    assert!(matches!(refused, Err(UnitWriteError::NotMember { .. })), "{refused:?}");
    assert_eq!(s.store.read_unit_data(&unit("u/0")).await.unwrap(), None);
    assert_eq!(s.store.join_unit(&first).await.unwrap().version, 0);
    let data = s.store.write_unit_data(&first, &group(&[("addr", "10.0.0.1"), ("port", "80")]), None).await.unwrap();
    assert_eq!((data.version, data.values.len()), (1, 2));
    // A later start of the unit (or a copy on a cloned machine) joins: it keeps the data,
    // and from then on the first incarnation's writes are refused.
    assert_eq!(s.store.join_unit(&second).await.unwrap(), data);
    let stale = s.store.write_unit_data(&first, &group(&[("addr", "stale")]), None).await.unwrap_err();
    assert!(matches!(stale, UnitWriteError::OtherIncarnation { .. }), "{stale:?}");
    assert!(stale.to_string().contains("later start"), "{stale}");
    let data = s.store.write_unit_data(&second, &group(&[("addr", "10.0.0.2"), ("port", "")]), None).await.unwrap();
    assert_eq!(data.version, 2);
    assert_eq!(*data.values, [("addr".to_string(), "10.0.0.2".to_string())].into());
    let noop = s.store.write_unit_data(&second, &group(&[("addr", "10.0.0.2")]), None).await.unwrap();
    assert_eq!(noop.version, 2, "a write that changes nothing keeps the version");
    let invalid = s.store.write_unit_data(&second, &group(&[("k", "1"), ("bad key", "v")]), None).await;
    assert!(matches!(invalid, Err(UnitWriteError::Invalid(_))), "{invalid:?}");
    let past = charm_host::leadership::MonotonicClock.now();
    let late = s.store.write_unit_data(&second, &group(&[("k", "1")]), Some(past)).await;
    assert!(matches!(late, Err(UnitWriteError::TooLate)), "{late:?}");
    assert_eq!(s.store.read_unit_data(&unit("u/0")).await.unwrap(), Some(data), "nothing refused was written");
    // Removed: the data goes, and no incarnation writes until one joins again.
    assert!(s.store.remove_unit(&unit("u/0")).await.unwrap());
    assert!(!s.store.remove_unit(&unit("u/0")).await.unwrap(), "removing a non-member changes nothing");
    assert_eq!(s.store.read_unit_data(&unit("u/0")).await.unwrap(), None);
    let removed = s.store.write_unit_data(&second, &group(&[("k", "1")]), None).await;
    assert!(matches!(removed, Err(UnitWriteError::NotMember { .. })), "{removed:?}");
    assert_eq!(s.store.join_unit(&second).await.unwrap().version, 0, "joined again, with no data");
}

/// Asks for `app`'s changes after `since` until `done` accepts them, waking on the store's
/// unit-data watch (an etcd store answers from a mirror its watch keeps).
async fn changes_once(
    s: &Subject,
    watch: &mut tokio::sync::watch::Receiver<u64>,
    since: u64,
    done: impl Fn(&UnitDataChanges) -> bool,
) -> UnitDataChanges {
    let app = app("u");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            watch.borrow_and_update();
            let changes = s.store.unit_data_since(&app, since).await.unwrap();
            if done(&changes) {
                return changes;
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("the change was announced")
}

fn names(changes: &UnitDataChanges) -> Vec<(String, bool)> {
    changes.units.iter().map(|(unit, data)| (unit.to_string(), data.is_some())).collect()
}

async fn the_unit_data_feed_names_only_what_changed(s: Subject) {
    let mut watch = s.store.watch_unit_data(&app("u"));
    let units: Vec<_> = (0..3).map(|n| other_incarnation(&format!("u/{n}"))).collect();
    for unit in &units {
        s.store.join_unit(unit).await.unwrap();
    }
    s.store.join_unit(&other_incarnation("other/0")).await.unwrap();
    let all = changes_once(&s, &mut watch, 0, |c| c.units.len() == 3).await;
    assert!(all.full, "a reader from nothing gets every member");
    assert_eq!(names(&all), [("u/0".into(), true), ("u/1".into(), true), ("u/2".into(), true)]);
    s.store.write_unit_data(&units[1], &group(&[("addr", "x")]), None).await.unwrap();
    let one = changes_once(&s, &mut watch, all.revision, |c| !c.units.is_empty()).await;
    assert!(!one.full && one.revision > all.revision, "{one:?}");
    assert_eq!(names(&one), [("u/1".into(), true)], "only the unit that wrote");
    assert_eq!(one.units[0].1.as_ref().unwrap().values.get("addr").map(String::as_str), Some("x"));
    // A rejoin by a later start changes no data: nothing to announce.
    s.store.join_unit(&other_incarnation("u/0")).await.unwrap();
    s.store.remove_unit(&unit("u/2")).await.unwrap();
    let removed = changes_once(&s, &mut watch, one.revision, |c| !c.units.is_empty()).await;
    assert_eq!(names(&removed), [("u/2".into(), false)], "a removed unit is named, with no data");
    let all = s.store.unit_data_since(&app("u"), 0).await.unwrap();
    assert_eq!(names(&all), [("u/0".into(), true), ("u/1".into(), true)], "members only");
}

// SQLite only: what survives a restart of the process or of the machine.

#[tokio::test]
async fn sqlite_keeps_terms_leases_and_settings_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = Arc::new(ManualClock::default());
    let open = |boot: &str| -> Arc<dyn LeadershipStore> {
        Arc::new(SqliteStore::open_with(&path, clock.clone(), sqlite_options(boot)).unwrap())
    };
    let store = open("boot-1");
    let claim = store.claim(&claimant("a/0"), LEASE).await.unwrap();
    store.write_settings(&claimant("a/0"), claim.term, &group(&[("k", "v")])).await.unwrap();
    drop(store);

    // Same boot: the holder may still believe in its lease, so nobody else gets it.
    let store = open("boot-1");
    assert!(matches!(store.claim(&claimant("a/1"), LEASE).await, Err(LeaseError::Denied { .. })));
    assert_eq!(store.read_settings(&app("a")).await.unwrap().values.get("k").map(String::as_str), Some("v"));
    clock.advance(LEASE);
    assert_eq!(store.claim(&claimant("a/1"), LEASE).await.unwrap().term, 2);
    store.reserve(&unit("a/2"), 10 * LEASE).await.unwrap();
    drop(store);

    // A reboot: readings of the old boot's clock mean nothing, so the lease is kept for a
    // full duration from now (here the manual clock even stands still).
    let store = open("boot-2");
    assert_eq!(store.reservation(&app("a")).await.unwrap(), None, "a reservation does not outlive a reboot");
    assert!(matches!(store.claim(&claimant("a/0"), LEASE).await, Err(LeaseError::Denied { .. })));
    // Its holder died with the old boot: the history ends its tenure when the reboot is
    // seen, not when the lease kept for safety runs out.
    let rebooted_at = clock.wall_time(clock.now());
    let history = store.history(Some(&app("a")), 10).await.unwrap();
    assert_eq!((history[0].term, history[0].how, history[0].ended), (2, Some(TenureEnd::Expired), Some(rebooted_at)));
    clock.advance(LEASE - Duration::from_nanos(1));
    assert!(store.lease(&app("a")).await.unwrap().is_some());
    clock.advance(Duration::from_nanos(1));
    assert_eq!(store.claim(&claimant("a/0"), LEASE).await.unwrap().term, 3, "terms keep rising across restarts");
    assert_eq!(store.read_settings(&app("a")).await.unwrap().version, 1);
}

#[tokio::test]
async fn sqlite_failures_say_what_kind_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let options = SqliteOptions { busy_timeout: Duration::from_millis(50), ..sqlite_options("boot-1") };
    let store = SqliteStore::open_with(&path, Arc::new(ManualClock::default()), options).unwrap();
    // Another process holds the write lock past the busy timeout: busy, and nothing lost.
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let lock = other.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).unwrap();
    match store.claim(&claimant("a/0"), LEASE).await {
        Err(LeaseError::Store(err)) => {
            assert_eq!(err.kind(), StoreFailure::Busy, "{err}");
            assert!(err.cause().is_some_and(|c| c.is::<rusqlite::Error>()), "the cause is kept: {err}");
        }
        other => panic!("expected a busy store, got {other:?}"),
    }
    drop(lock);
    assert_eq!(store.claim(&claimant("a/0"), LEASE).await.unwrap().term, 1, "claims once the lock is free");
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'", []).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

#[tokio::test]
async fn sqlite_upgrades_a_version_1_file_keeping_its_leases_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = Arc::new(ManualClock::default());
    let store = SqliteStore::open_with(&path, clock.clone(), sqlite_options("boot-1")).unwrap();
    let claim = store.claim(&claimant("a/0"), LEASE).await.unwrap();
    store.write_settings(&claimant("a/0"), claim.term, &group(&[("k", "v")])).await.unwrap();
    drop(store);
    // Turn the file back into version 1, which had no reservations, no history and no
    // incarnations.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE tenures;
         ALTER TABLE leases DROP COLUMN reserved_for;
         ALTER TABLE leases DROP COLUMN reserved_until_ns;
         ALTER TABLE leases DROP COLUMN incarnation;
         ALTER TABLE leases DROP COLUMN origin;
         UPDATE meta SET value = 1 WHERE key = 'schema';",
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open_with(&path, clock.clone(), sqlite_options("boot-1")).unwrap();
    let lease = store.lease(&app("a")).await.unwrap().unwrap();
    assert_eq!(
        (lease.term, lease.incarnation),
        (claim.term, None),
        "the lease survives the upgrade, of no incarnation"
    );
    assert_eq!(store.read_settings(&app("a")).await.unwrap().values.get("k").map(String::as_str), Some("v"));
    // Which agent held it is not known: no incarnation extends or gives it up; it runs out.
    assert!(matches!(
        store.claim(&claimant("a/0"), LEASE).await,
        Err(LeaseError::OtherIncarnation { holder: None, .. })
    ));
    assert!(matches!(store.revoke(&claimant("a/0"), Release::StepDown).await, Err(LeaseError::NotHeld { .. })));
    store.reserve(&unit("a/2"), 2 * LEASE).await.unwrap();
    clock.advance(LEASE);
    assert!(
        matches!(store.claim(&claimant("a/1"), LEASE).await, Err(LeaseError::Reserved { .. })),
        "reservations work after it"
    );
    store.claim(&claimant("a/2"), LEASE).await.unwrap();
    let history: Vec<_> =
        store.history(None, 10).await.unwrap().into_iter().map(|t| (t.unit.to_string(), t.term)).collect();
    assert_eq!(history, [("a/2".to_owned(), 2)], "the history starts with the upgrade");
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 4);
}

/// Whether `result` failed because the store is no longer the one opened.
fn replaced<T: std::fmt::Debug>(result: Result<T, LeaseError>) -> bool {
    matches!(&result, Err(LeaseError::Store(e)) if e.kind() == StoreFailure::Replaced)
}

/// A SQLite file deleted, renamed over, or overwritten in place with an older copy under a
/// process that has it open: its next decision says so, and decides nothing.
#[tokio::test]
async fn sqlite_refuses_to_decide_on_a_file_deleted_replaced_or_rolled_back() {
    let clock = Arc::new(ManualClock::default());
    let open = |path: &std::path::Path| SqliteStore::open_with(path, clock.clone(), sqlite_options("boot-1")).unwrap();
    // Deleted: the process keeps the unlinked file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    store.claim(&claimant("a/0"), LEASE).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(replaced(store.claim(&claimant("a/0"), LEASE).await), "a renewal on a deleted file");
    assert!(replaced(store.lease(&app("a")).await), "a read too");
    // Another file renamed over it (an old copy put back with `mv`).
    let path = dir.path().join("state2.db");
    let store = open(&path);
    store.claim(&claimant("a/0"), LEASE).await.unwrap();
    std::fs::copy(&path, dir.path().join("copy.db")).unwrap();
    std::fs::rename(dir.path().join("copy.db"), &path).unwrap();
    assert!(replaced(store.claim(&claimant("a/0"), LEASE).await), "a file renamed over it");
    // An older copy written over it in place (`cp`: the same inode), once checkpointed.
    let path = dir.path().join("state3.db");
    let store = open(&path);
    store.claim(&claimant("a/0"), LEASE).await.unwrap();
    let checkpoint = |path: &std::path::Path| {
        rusqlite::Connection::open(path).unwrap().query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap()
    };
    checkpoint(&path);
    let old = std::fs::read(&path).unwrap();
    for _ in 0..3 {
        store.claim(&claimant("a/0"), LEASE).await.unwrap();
    }
    checkpoint(&path);
    std::fs::write(&path, &old).unwrap();
    assert!(replaced(store.claim(&claimant("a/0"), LEASE).await), "a file gone back in time");
    let lost = store.write_settings(&claimant("a/0"), 1, &group(&[("k", "v")])).await;
    assert!(matches!(&lost, Err(WriteError::Store(e)) if e.kind() == StoreFailure::Replaced), "{lost:?}");
}

/// Where units ran, a missing store is not made anew unless accepted, and then it grants
/// nothing until every lease of the lost store ran out.
#[tokio::test]
async fn sqlite_creates_a_store_after_a_loss_only_when_told_and_then_waits() {
    use charm_host::leadership::sqlite::{NewStore, OpenError};
    let clock = Arc::new(ManualClock::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let options = |new_store| SqliteOptions { new_store, ..sqlite_options("boot-1") };
    let refused = SqliteStore::open_with(&path, clock.clone(), options(NewStore::Refuse)).unwrap_err();
    assert!(matches!(refused, OpenError::Lost { .. }), "{refused}");
    assert!(!path.exists(), "nothing was created");
    let wait = 2 * LEASE;
    let store = SqliteStore::open_with(&path, clock.clone(), options(NewStore::CreateAfterLoss { wait })).unwrap();
    match store.claim(&claimant("a/0"), LEASE).await {
        Err(LeaseError::NewStore { left, .. }) => assert_eq!(left, wait),
        other => panic!("a new store after a loss granted at once: {other:?}"),
    }
    clock.advance(wait - SECOND);
    assert!(matches!(store.claim(&claimant("a/0"), LEASE).await, Err(LeaseError::NewStore { .. })));
    clock.advance(SECOND);
    assert_eq!(store.claim(&claimant("a/0"), LEASE).await.unwrap().term, 1);
    // Opened again (by another agent), it is the same store: no new wait, the same id.
    let again = SqliteStore::open_with(&path, clock.clone(), options(NewStore::Refuse)).unwrap();
    assert_eq!(again.store_id(), store.store_id());
    assert!(store.store_id().is_some_and(|id| id.len() == 32));
}

/// An agent still holding a deleted SQLite file must not, as it goes, destroy the journal of
/// the store made in its place: SQLite deletes `-wal` by path when the last connection to a
/// file closes, but not for a file that was moved or deleted, and the new store has a journal
/// of its own. What the new store committed survives the old one's exit.
#[tokio::test]
async fn a_lost_sqlite_store_going_away_leaves_the_new_stores_journal_alone() {
    use charm_host::leadership::sqlite::NewStore;
    let clock = Arc::new(ManualClock::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let old = SqliteStore::open_with(&path, clock.clone(), sqlite_options("boot-1")).unwrap();
    old.claim(&claimant("a/0"), LEASE).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    let options = SqliteOptions { new_store: NewStore::CreateAfterLoss { wait: LEASE }, ..sqlite_options("boot-1") };
    let new = SqliteStore::open_with(&path, clock.clone(), options).unwrap();
    clock.advance(LEASE);
    let term = new.claim(&claimant("a/1"), LEASE).await.unwrap().term;
    new.write_settings(&claimant("a/1"), term, &group(&[("k", "new")])).await.unwrap();
    assert!(replaced(old.claim(&claimant("a/0"), LEASE).await), "the old agent finds out");
    drop(old);
    // Another agent opens the new store while its first agent still runs.
    let reopened = SqliteStore::open_with(&path, clock.clone(), sqlite_options("boot-1")).unwrap();
    assert_eq!(reopened.read_settings(&app("a")).await.unwrap().values.get("k").map(String::as_str), Some("new"));
    assert_eq!(reopened.last_term(&app("a")).await.unwrap(), term);
    drop(new);
}

/// A state directory belongs to one machine: a file last used by another machine (shared
/// storage, a disk moved under running agents) is refused, unless accepted as moved for good.
#[tokio::test]
async fn sqlite_refuses_a_file_another_machine_used() {
    use charm_host::leadership::sqlite::OpenError;
    let clock = Arc::new(ManualClock::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let on = |machine: &str, accept: bool| SqliteOptions {
        machine_id: Some(machine.into()),
        accept_moved: accept.then_some(LEASE),
        ..sqlite_options("boot-1")
    };
    let first = SqliteStore::open_with(&path, clock.clone(), on("machine-a", false)).unwrap();
    first.claim(&claimant("a/0"), LEASE).await.unwrap();
    drop(first);
    match SqliteStore::open_with(&path, clock.clone(), on("machine-b", false)) {
        Err(err @ OpenError::OtherMachine { .. }) => assert!(err.to_string().contains("machine-a"), "{err}"),
        other => panic!("another machine's file was opened: {other:?}"),
    }
    let moved = SqliteStore::open_with(&path, clock.clone(), on("machine-b", true)).unwrap();
    assert!(moved.lease(&app("a")).await.unwrap().is_some(), "accepted: the same store");
    drop(moved);
    assert!(SqliteStore::open_with(&path, clock.clone(), on("machine-b", false)).is_ok(), "now this machine's");
}

/// A copy of the store's file put in its place (a restored backup) is refused: agents of
/// the original may still run, counting on leases the copy does not show. A rename keeps
/// the file. Accepted, the copy is adopted and grants no new tenure for the wait given, and
/// is refused even then while a write-ahead log (most likely the original's) lies beside it.
#[tokio::test]
async fn sqlite_refuses_a_copy_of_its_file_unless_accepted() {
    use charm_host::leadership::sqlite::OpenError;
    let clock = Arc::new(ManualClock::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let open = |accept: Option<Duration>| {
        SqliteStore::open_with(&path, clock.clone(), SqliteOptions { accept_moved: accept, ..sqlite_options("boot-1") })
    };
    let first = open(None).unwrap();
    first.claim(&claimant("a/0"), LEASE).await.unwrap();
    drop(first);
    let aside = dir.path().join("aside.db");
    std::fs::rename(&path, &aside).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    drop(open(None).expect("renamed away and back: the same file"));

    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    match open(None) {
        Err(err @ OpenError::Copy { .. }) => assert!(err.to_string().contains("--accept-new-store"), "{err}"),
        other => panic!("a copy was opened as the store: {other:?}"),
    }
    let log = dir.path().join("state.db-wal");
    std::fs::write(&log, b"the original's log").unwrap();
    match open(Some(2 * LEASE)) {
        Err(err @ OpenError::CopyBesideLog { .. }) => assert!(err.to_string().contains("state.db-wal"), "{err}"),
        other => panic!("a copy beside a write-ahead log was adopted: {other:?}"),
    }
    std::fs::remove_file(&log).unwrap();
    let adopted = open(Some(2 * LEASE)).unwrap();
    assert_eq!(adopted.lease(&app("a")).await.unwrap().map(|l| l.holder), Some(unit("a/0")), "what the copy held");
    clock.advance(LEASE + Duration::from_secs(1));
    match adopted.claim(&claimant("a/1"), LEASE).await {
        Err(LeaseError::NewStore { .. }) => {}
        other => panic!("an adopted copy granted a tenure before its wait ended: {other:?}"),
    }
    clock.advance(LEASE);
    adopted.claim(&claimant("a/1"), LEASE).await.expect("granted once the wait is over");
    drop(adopted);
    drop(open(None).expect("adopted: now the store's own file"));
}
