//! The charm's own tests, natively with `cargo test` (see docs/testing.md).

use charm_sdk::testing::{App, CallKind, Change, Hook, Unit};
use charm_sdk::{Error, WorkloadStatus};

use super::{CLUSTER_ID, SECRET, SharedSettingsCharm as Charm};

fn member_of(status: Option<(WorkloadStatus, String)>) -> String {
    match status {
        Some((WorkloadStatus::Active, message)) => message.strip_prefix("member of ").unwrap_or_default().to_owned(),
        other => panic!("not an active member: {other:?}"),
    }
}

#[test]
fn the_leader_writes_both_settings_in_one_group_once() {
    let unit = Unit::new("db/0").leader();
    let run = unit.run::<Charm>(Hook::Install);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.writes.len(), 1, "one group");
    let keys: Vec<_> = run.writes[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, [CLUSTER_ID, SECRET]);
    let cluster = unit.settings()[CLUSTER_ID].clone();
    assert_eq!(member_of(unit.status()), cluster);
    // Elected again later: the settings exist, nothing is written.
    assert!(unit.run::<Charm>(Hook::LeaderElected).writes.is_empty());
    assert_eq!(unit.settings()[CLUSTER_ID], cluster);
}

#[test]
fn invalid_settings_are_replaced() {
    let unit = Unit::new("db/0").with_settings([(CLUSTER_ID, "garbage"), (SECRET, "short")]).leader();
    let run = unit.run::<Charm>(Hook::LeaderElected);
    assert_eq!(run.writes.len(), 1);
    assert!(unit.settings()[CLUSTER_ID].starts_with("cluster-"));
}

#[test]
fn a_minion_waits_for_the_leader_and_succeeds() {
    let unit = Unit::new("db/1");
    let run = unit.run::<Charm>(Hook::Install);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.status().map(|(s, _)| s), Some(WorkloadStatus::Waiting));
    assert!(run.writes.is_empty());
}

#[test]
fn leadership_lost_before_the_write_fails_the_hook_and_writes_nothing() {
    let unit = Unit::new("db/0").leader();
    unit.before(CallKind::LeaderSet, Change::LoseLeadership);
    let run = unit.run::<Charm>(Hook::LeaderElected);
    assert_eq!(run.result, Err(Error::NotLeader));
    assert!(unit.settings().is_empty());
    // Retried as a minion (the host retries a failed hook), it waits instead.
    assert_eq!(unit.run::<Charm>(Hook::LeaderElected).result, Ok(()));
    assert_eq!(unit.status().map(|(s, _)| s), Some(WorkloadStatus::Waiting));
}

#[test]
fn the_leader_crashes_and_the_successor_keeps_the_settings() {
    let mut app = App::<Charm>::new("db", 3);
    app.elect(0);
    app.settle();
    let settings = app.settings();
    let cluster = settings[CLUSTER_ID].clone();
    for i in 0..3 {
        assert_eq!(member_of(app.unit(i).status()), cluster, "unit {i}");
    }
    // Unit 0's leadership lapses (it runs leader-deposed); unit 2 is elected.
    app.depose();
    app.elect(2);
    let runs = app.settle();
    assert!(runs.iter().any(|(i, run)| *i == 2 && run.hook == Hook::LeaderElected));
    assert!(runs.iter().all(|(_, run)| run.writes.is_empty()), "nobody rewrote the settings");
    assert_eq!(app.settings(), settings);
    for i in 0..3 {
        assert_eq!(member_of(app.unit(i).status()), cluster, "unit {i}");
    }
}

#[test]
fn a_hundred_hooks_of_handovers_keep_one_cluster() {
    let mut app = App::<Charm>::new("db", 4).with_seed(42);
    let mut hooks = 0;
    let mut cluster = None;
    for round in 0..40 {
        app.elect(round % 4);
        hooks += app.settle().len();
        let now = app.settings()[CLUSTER_ID].clone();
        assert_eq!(cluster.get_or_insert_with(|| now.clone()), &now, "round {round}");
    }
    assert!(hooks >= 100, "{hooks} hooks");
    assert_eq!(app.history().iter().filter(|(_, run)| !run.writes.is_empty()).count(), 1, "written once");
}

/// The real component on the host's agents, in virtual time.
mod on_the_host {
    use std::time::Duration;

    use charm_host::HookKind;
    use charm_host::events::WorkloadStatus;
    use charm_host::testing::TestApp;

    use super::{CLUSTER_ID, SECRET};

    fn app() -> TestApp {
        TestApp::builder(env!("CARGO_MANIFEST_DIR")).app_name("db").units(3).build().expect("the charm builds")
    }

    #[test]
    fn the_leader_crashes_and_the_successor_keeps_the_settings() {
        let mut app = app();
        app.settle();
        let first = app.leader().expect("a leader");
        let settings = app.settings();
        assert!(settings[CLUSTER_ID].starts_with("cluster-") && settings[SECRET].len() == 32);

        app.crash(first).unwrap();
        app.advance(Duration::from_secs(120));
        let second = app.leader().expect("a successor once the lease expired");
        assert_ne!(second, first);
        assert_eq!(app.hooks(second).last(), Some(&HookKind::LeaderElected));
        assert_eq!(app.settings(), settings);
        assert_eq!(app.acknowledged_writes().len(), 1, "written once, by the first leader");
        let member = format!("member of {}", settings[CLUSTER_ID]);
        for i in (0..3).filter(|&i| i != first) {
            assert_eq!(app.statuses(i).last(), Some(&(WorkloadStatus::Active, member.clone())), "unit {i}");
        }
    }

    #[test]
    fn random_schedules_keep_one_cluster() {
        let builder = TestApp::builder(env!("CARGO_MANIFEST_DIR")).app_name("db").units(3);
        builder.explore(8, 30, |app| {
            let Some(cluster) = app.settings().get(CLUSTER_ID).cloned() else { return Ok(()) };
            let writes = app.acknowledged_writes();
            let first = writes.first().and_then(|w| w.group.iter().find(|(k, _)| k == CLUSTER_ID)).map(|(_, v)| v);
            match first {
                Some(first) if *first == cluster => Ok(()),
                other => Err(format!("the cluster is {cluster}, first written as {other:?} ({} writes)", writes.len())),
            }
        });
    }
}
