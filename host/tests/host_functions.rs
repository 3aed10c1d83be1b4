//! Semantics of the leadership host functions, driven through the real probe charm.

mod support;

use charm_host::hooks::HookKind;
use charm_host::settings::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use support::*;

/// `is-leader`, and `leader-term` (the fencing token: the lease's term while `is-leader` is
/// true), answer the truth at the moment of each call: both change when leadership is given
/// up mid-hook; a minion gets false and no term.
#[tokio::test]
async fn is_leader_and_leader_term_reflect_the_tracker_at_each_call() {
    let f = Fixture::new();
    let leader = f.unit("app/0");
    let minion = f.unit("app/1");
    leader.tracker.refresh().await;
    minion.tracker.refresh().await;
    let term = f.store.lease(&app_name("app")).await.unwrap().expect("a lease").term;

    script(&leader, &["is-leader", "term", "pause", "is-leader", "term"]);
    script(&minion, &["is-leader", "term"]);
    let hook = f.spawn(&leader, HookKind::Install);
    wait_paused(&leader).await;
    leader.tracker.release(charm_host::leadership::Release::StepDown).await.unwrap(); // leadership lost mid-hook
    resume(&leader).await;
    assert_eq!(hook.await.unwrap().result, Ok(()));
    assert_eq!(
        results(&leader),
        ["Ok(true)".to_owned(), format!("Ok(Some({term}))"), "resumed".into(), "Ok(false)".into(), "Ok(None)".into()],
        "truth at the moment of each call"
    );

    f.run(&minion, HookKind::Install).await.result.unwrap();
    assert_eq!(results(&minion), ["Ok(false)", "Ok(None)"]);
}

#[tokio::test]
async fn reads_come_from_one_snapshot_plus_own_writes() {
    let f = Fixture::new();
    let leader = f.unit("app/0");
    let minion = f.unit("app/1");
    leader.tracker.refresh().await;

    script(&leader, &["set a=1 b=2"]);
    f.run(&leader, HookKind::LeaderElected).await.result.unwrap();

    // The minion takes its snapshot at its first read; the leader's later write is not seen.
    script(&minion, &["get a", "pause", "get a", "get-all"]);
    let hook = f.spawn(&minion, HookKind::LeaderSettingsChanged);
    wait_paused(&minion).await;
    script(&leader, &["set a=changed b="]);
    f.run(&leader, HookKind::LeaderElected).await.result.unwrap();
    resume(&minion).await;
    assert_eq!(hook.await.unwrap().result, Ok(()));
    assert_eq!(results(&minion), ["Ok(Some(\"1\"))", "resumed", "Ok(Some(\"1\"))", "a=1;b=2;"]);

    // A later hook sees the change.
    script(&minion, &["get-all"]);
    f.run(&minion, HookKind::LeaderSettingsChanged).await.result.unwrap();
    assert_eq!(results(&minion), ["a=changed;"]);

    // The leader sees its own writes on top of its snapshot.
    script(&leader, &["get-all", "set c=3 a=", "get-all", "get c"]);
    f.run(&leader, HookKind::LeaderElected).await.result.unwrap();
    assert_eq!(results(&leader), ["a=changed;", "Ok(())", "c=3;", "Ok(Some(\"3\"))"]);
}

#[tokio::test]
async fn leader_set_writes_through_before_returning() {
    let f = Fixture::new();
    let leader = f.unit("app/0");
    leader.tracker.refresh().await;
    let mut watch = f.store.watch_settings(leader.unit().name().app());

    script(&leader, &["set x=1 y=2", "pause", "fail the hook fails after writing"]);
    let hook = f.spawn(&leader, HookKind::Install);
    wait_paused(&leader).await;
    let stored = f.store.read_settings(leader.unit().name().app()).await.unwrap();
    assert_eq!(stored.values.get("x").map(String::as_str), Some("1"), "in the store mid-hook");
    assert!(watch.has_changed().unwrap(), "minions are notified mid-hook");
    watch.borrow_and_update();
    resume(&leader).await;
    let outcome = hook.await.unwrap();
    assert!(outcome.result.is_err());
    let stored = f.store.read_settings(leader.unit().name().app()).await.unwrap();
    assert_eq!(stored.values.len(), 2, "a failed hook keeps what leader-set wrote");

    // An empty group is a no-op for the leader; nothing changes and nobody is told.
    script(&leader, &["set-none"]);
    f.run(&leader, HookKind::Install).await.result.unwrap();
    assert_eq!(results(&leader), ["Ok(())"]);
    assert!(!watch.has_changed().unwrap());
}

#[tokio::test]
async fn only_the_leader_may_write() {
    let f = Fixture::new();
    let leader = f.unit("app/0");
    let minion = f.unit("app/1");
    leader.tracker.refresh().await;
    minion.tracker.refresh().await;
    script(&minion, &["set a=1", "set-none"]);
    f.run(&minion, HookKind::Install).await.result.unwrap();
    assert_eq!(results(&minion), ["Err(NotLeader)", "Err(NotLeader)"]);
    assert!(f.store.read_settings(minion.unit().name().app()).await.unwrap().values.is_empty());
}

#[tokio::test]
async fn invalid_groups_write_nothing() {
    let f = Fixture::new();
    let leader = f.unit("app/0");
    leader.tracker.refresh().await;
    let long_key = format!("set ok=1 {}=v", "k".repeat(MAX_KEY_BYTES + 1));
    let long_value = format!("set ok=1 big={}", "v".repeat(MAX_VALUE_BYTES + 1));
    let cases = [
        ("set ok=1 =v", "a key is empty"),
        (long_key.as_str(), "limit is 256"),
        ("set ok=1 a\u{1}b=v", "control character"),
        ("set ok=1 a\u{a0}b=v", "whitespace"),
        ("set ok=1 ok=2", "more than once"),
        (long_value.as_str(), "limit is 65536"),
    ];
    for (command, reason) in cases {
        script(&leader, &[command, "get-all"]);
        f.run(&leader, HookKind::Install).await.result.unwrap();
        let results = results(&leader);
        assert!(results[0].starts_with("Err(Invalid(") && results[0].contains(reason), "{command:.40}: {results:?}");
        assert_eq!(results[1], "", "the hook's view is unchanged");
        assert!(f.store.read_settings(leader.unit().name().app()).await.unwrap().values.is_empty(), "nothing written");
    }

    // A bucket that would exceed 1 MiB: sixteen 64 KiB values in one group.
    let value = "v".repeat(MAX_VALUE_BYTES);
    let group: Vec<String> = (0..16).map(|i| format!("k{i}={value}")).collect();
    let command = format!("set {}", group.join(" "));
    script(&leader, &[&command]);
    f.run(&leader, HookKind::Install).await.result.unwrap();
    assert!(results(&leader)[0].contains("limit is 1048576"), "{:.80}", results(&leader)[0]);
    assert!(f.store.read_settings(leader.unit().name().app()).await.unwrap().values.is_empty());
}
