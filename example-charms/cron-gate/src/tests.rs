//! The charm's own tests, natively with `cargo test` (see docs/testing.md).

use charm_sdk::testing::{App, CallKind, Change, Hook, Unit};

use super::CronGate;

/// The `IS_LEADER` line of the unit's crontab.
fn is_leader_line(unit: &Unit) -> String {
    let path = unit.data_dir().join("etc/cron.d/web-maintenance");
    let crontab = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    crontab.lines().find(|l| l.starts_with("IS_LEADER=")).unwrap_or_default().to_owned()
}

#[test]
fn the_crontab_says_where_the_job_runs() {
    let leader = Unit::new("web/0").leader();
    assert_eq!(leader.run::<CronGate>(Hook::Install).result, Ok(()));
    assert_eq!(is_leader_line(&leader), "IS_LEADER=1");
    let minion = Unit::new("web/1");
    assert_eq!(minion.run::<CronGate>(Hook::Install).result, Ok(()));
    assert_eq!(is_leader_line(&minion), "IS_LEADER=0");
}

#[test]
fn an_unchanged_crontab_is_not_rewritten() {
    let unit = Unit::new("web/0").leader();
    assert_eq!(unit.run::<CronGate>(Hook::Install).logs.len(), 1);
    let again = unit.run::<CronGate>(Hook::LeaderElected);
    assert!(again.logs.is_empty(), "{:?}", again.logs);
    assert!(again.statuses.is_empty());
}

#[test]
fn leadership_that_cannot_be_verified_counts_as_not_leading() {
    let unit = Unit::new("web/1");
    unit.before(CallKind::IsLeader, Change::StoreUnreachable("connection refused".into()));
    assert_eq!(unit.run::<CronGate>(Hook::Install).result, Ok(()));
    assert_eq!(is_leader_line(&unit), "IS_LEADER=0");
}

#[test]
fn after_every_handover_exactly_one_crontab_runs_the_job() {
    let mut app = App::<CronGate>::new("web", 3);
    for leader in [0, 2, 1, 0] {
        app.elect(leader);
        app.settle();
        let lines: Vec<_> = (0..3).map(|i| is_leader_line(app.unit(i))).collect();
        let expected: Vec<_> = (0..3).map(|i| format!("IS_LEADER={}", u8::from(i == leader))).collect();
        assert_eq!(lines, expected, "leader {leader}");
    }
}
