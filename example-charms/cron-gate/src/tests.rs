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

#[test]
fn update_status_corrects_a_crontab_that_drifted() {
    let mut app = App::<CronGate>::new("web", 3);
    app.elect(0);
    app.settle();
    // An operator deletes the leader's file and turns the job on on a minion by hand.
    let crontab = |i: usize| app.unit(i).data_dir().join("etc/cron.d/web-maintenance");
    std::fs::remove_file(crontab(0)).unwrap();
    let edited = std::fs::read_to_string(crontab(1)).unwrap().replace("IS_LEADER=0", "IS_LEADER=1");
    std::fs::write(crontab(1), edited).unwrap();
    app.advance(std::time::Duration::from_secs(299));
    assert!(app.settle().is_empty(), "nothing before the period");
    app.advance(std::time::Duration::from_secs(1));
    let runs = app.settle();
    assert_eq!(runs.iter().filter(|(_, run)| run.hook == Hook::UpdateStatus).count(), 3, "one on every unit");
    let lines: Vec<_> = (0..3).map(|i| is_leader_line(app.unit(i))).collect();
    assert_eq!(lines, ["IS_LEADER=1", "IS_LEADER=0", "IS_LEADER=0"]);
}

/// The real component on the host's agents, in virtual time.
mod on_the_host {
    use std::time::Duration;

    use charm_host::testing::TestApp;

    fn is_leader_line(app: &TestApp, i: usize) -> String {
        let path = app.data_dir(i).join("etc/cron.d/web-maintenance");
        let crontab = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        crontab.lines().find(|l| l.starts_with("IS_LEADER=")).unwrap_or_default().to_owned()
    }

    #[test]
    fn a_crashed_leaders_crontab_is_corrected_when_it_restarts() {
        let mut app = TestApp::builder(env!("CARGO_MANIFEST_DIR")).app_name("web").units(3).build().unwrap();
        app.settle();
        let first = app.leader().unwrap();
        assert_eq!(is_leader_line(&app, first), "IS_LEADER=1");

        app.crash(first).unwrap();
        app.advance(Duration::from_secs(120));
        let second = app.leader().unwrap();
        assert_eq!(is_leader_line(&app, second), "IS_LEADER=1");
        // A dead agent runs no hook: its file still says 1 (see docs/cron-gate.md).
        assert_eq!(is_leader_line(&app, first), "IS_LEADER=1");

        app.restart(first).unwrap();
        assert_eq!(is_leader_line(&app, first), "IS_LEADER=0", "rewritten by the restarted minion");
        let leaders = (0..3).filter(|&i| is_leader_line(&app, i) == "IS_LEADER=1").count();
        assert_eq!(leaders, 1);
    }

    /// `update-status` every minute of virtual time, on every unit: a minion's file turned
    /// on by hand is turned off again within one period, and ten minutes make ten hooks on
    /// every unit.
    #[test]
    fn update_status_turns_off_a_job_turned_on_by_hand_within_one_period() {
        let mut app = TestApp::builder(env!("CARGO_MANIFEST_DIR"))
            .app_name("web")
            .units(3)
            .update_status_interval(Duration::from_secs(60))
            .build()
            .unwrap();
        app.settle();
        let leader = app.leader().unwrap();
        let minion = (leader + 1) % 3;
        let path = app.data_dir(minion).join("etc/cron.d/web-maintenance");
        let edited = std::fs::read_to_string(&path).unwrap().replace("IS_LEADER=0", "IS_LEADER=1");
        std::fs::write(&path, edited).unwrap();
        app.advance(Duration::from_secs(60));
        assert_eq!(is_leader_line(&app, minion), "IS_LEADER=0");
        assert_eq!(is_leader_line(&app, leader), "IS_LEADER=1");
        app.advance(Duration::from_secs(540));
        for i in 0..3 {
            let runs = app.hooks(i).iter().filter(|h| h.name() == "update-status").count();
            assert_eq!(runs, 10, "unit {i}: {:?}", app.hooks(i));
        }
    }
}
