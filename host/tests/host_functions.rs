//! Semantics of the leadership host functions, driven through the real probe charm.

mod support;

use charm_host::hooks::{HookCall, HookKind};
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

/// Unit data through the component: a unit writes only its own; a minion reads only its
/// own; the leader reads every member's from one snapshot (taken at its first read, plus
/// its own writes), and a `unit-data-changed` gets the units it announces.
#[tokio::test]
async fn unit_data_is_written_by_each_unit_and_read_by_the_leader() {
    let f = Fixture::new();
    let leader = f.unit("app/0");
    let minion = f.unit("app/1");
    for unit in [&leader, &minion] {
        unit.unit().unit_data().join().await.unwrap();
    }
    leader.tracker.refresh().await;
    minion.tracker.refresh().await;

    script(&minion, &["unit-set address=10.0.0.1", "unit-get app/1 address", "unit-get app/0 address", "units"]);
    f.run(&minion, HookKind::Install).await.result.unwrap();
    assert_eq!(results(&minion), ["Ok(())", "Ok(Some(\"10.0.0.1\"))", "Err(NotLeader)", "Err(NotLeader)"]);

    script(
        &leader,
        &[
            "units",
            "unit-get app/1 address",
            "pause",
            "unit-get app/1 address",
            "unit-set a=1",
            "unit-get-all app/0",
            "unit-get app/9 k",
            "unit-get other/0 k",
        ],
    );
    let hook = f.spawn(&leader, HookKind::LeaderElected);
    wait_paused(&leader).await;
    script(&minion, &["unit-set address=10.0.0.2"]);
    f.run(&minion, HookKind::LeaderSettingsChanged).await.result.unwrap();
    resume(&leader).await;
    assert_eq!(hook.await.unwrap().result, Ok(()));
    let seen = results(&leader);
    assert_eq!(
        seen[..7],
        [
            "Ok([\"app/0\", \"app/1\"])",
            "Ok(Some(\"10.0.0.1\"))",
            "resumed",
            "Ok(Some(\"10.0.0.1\"))", // the hook's snapshot, not the later write
            "Ok(())",
            "Ok({\"a\": \"1\"})",
            "Ok(None)",
        ],
        "{seen:?}"
    );
    assert!(seen[7].starts_with("Err(Invalid("), "another application's unit: {}", seen[7]);

    // The leader's mirror names the minion's change; the hook gets it as its argument.
    leader.unit().unit_data().refresh().await.unwrap();
    let changed = leader.unit().unit_data().take_pending();
    assert_eq!(changed.iter().map(ToString::to_string).collect::<Vec<_>>(), ["app/1"]);
    script(&leader, &["changed", "unit-get app/1 address"]);
    f.run(&leader, HookCall::unit_data_changed(changed)).await.result.unwrap();
    assert_eq!(results(&leader), ["[\"app/1\"]", "Ok(Some(\"10.0.0.2\"))"]);
}

/// A unit's data belongs to the incarnation that joined last: a stale copy's `unit-set`
/// fails as `stale`, and so does a removed unit's.
#[tokio::test]
async fn a_stale_or_removed_units_unit_set_fails_as_stale() {
    let f = Fixture::new();
    let unit = f.unit("app/0");
    unit.unit().unit_data().join().await.unwrap();
    let later = charm_host::leadership::Claimant::fresh(unit_name("app/0"));
    f.store.join_unit(&later).await.unwrap();
    script(&unit, &["unit-set k=v"]);
    f.run(&unit, HookKind::Install).await.result.unwrap();
    let result = results(&unit).join("");
    assert!(result.starts_with("Err(Stale(") && result.contains("later start"), "{result}");
    f.store.remove_unit(&unit_name("app/0")).await.unwrap();
    script(&unit, &["unit-set k=v"]);
    f.run(&unit, HookKind::Install).await.result.unwrap();
    let result = results(&unit).join("");
    assert!(result.starts_with("Err(Stale(") && result.contains("not a member"), "{result}");
}
