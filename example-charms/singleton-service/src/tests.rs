//! The charm's own tests, natively with `cargo test` (see docs/testing.md).

use charm_sdk::WorkloadStatus;
use charm_sdk::testing::{App, CallKind, Change, Hook, Unit};

use super::{SERVICE, SingletonService};

fn running(unit: &Unit) -> bool {
    unit.service(SERVICE).is_some_and(|s| s.running)
}

#[test]
fn the_leader_starts_the_service_and_says_so() {
    let unit = Unit::new("solo/0").with_service(SERVICE, true).leader();
    let run = unit.run::<SingletonService>(Hook::LeaderElected);
    assert_eq!(run.result, Ok(()));
    let pid = unit.service(SERVICE).and_then(|s| s.pid).expect("running");
    assert_eq!(unit.status(), Some((WorkloadStatus::Active, format!("{SERVICE} running (pid {pid})"))));
}

#[test]
fn an_unconfigured_service_blocks_the_unit_without_failing() {
    let unit = Unit::new("solo/0").leader();
    let run = unit.run::<SingletonService>(Hook::LeaderElected);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.status().map(|(s, _)| s), Some(WorkloadStatus::Blocked));
}

#[test]
fn leadership_lost_before_the_start_leaves_the_unit_on_standby() {
    let unit = Unit::new("solo/0").with_service(SERVICE, true).leader();
    unit.before(CallKind::ServiceStart, Change::LoseLeadership);
    let run = unit.run::<SingletonService>(Hook::LeaderElected);
    assert_eq!(run.result, Ok(()));
    assert!(!running(&unit));
    assert_eq!(unit.status(), Some((WorkloadStatus::Active, format!("standby: {SERVICE} runs on the leader"))));
}

#[test]
fn the_service_follows_the_leader_and_never_runs_twice() {
    let mut app = App::<SingletonService>::new("solo", 3).with_service(SERVICE, true);
    for step in 0..12 {
        match step % 3 {
            0 => app.elect((step / 3) % 3),
            1 => app.depose(),
            _ => app.elect((step + 1) % 3),
        }
        app.settle();
        let where_running: Vec<usize> = (0..3).filter(|&i| running(app.unit(i))).collect();
        assert_eq!(where_running, app.leader().into_iter().collect::<Vec<_>>(), "step {step}");
    }
    // A graceful stop of the leader: deposed, then stop; the service is down.
    let leader = app.leader().expect("a leader");
    app.stop(leader);
    app.settle();
    assert_eq!(app.hooks(leader).last(), Some(&Hook::Stop));
    assert!(!running(app.unit(leader)));
}

/// The real component on the host's agents, in virtual time.
mod on_the_host {
    use std::time::Duration;

    use charm_host::events::WorkloadStatus;
    use charm_host::testing::TestApp;

    use super::SERVICE;

    fn app(units: u32) -> charm_host::testing::TestAppBuilder {
        TestApp::builder(env!("CARGO_MANIFEST_DIR")).app_name("solo").units(units)
    }

    fn running(app: &TestApp, i: usize) -> bool {
        app.service(i, SERVICE).is_some_and(|s| s.running)
    }

    #[test]
    fn the_service_follows_the_leader_through_handover_crash_and_partition() {
        let mut app = app(3).service(SERVICE, true).build().unwrap();
        app.settle();
        let first = app.leader().unwrap();
        assert!(running(&app, first));
        let pid = app.service(first, SERVICE).and_then(|s| s.pid).unwrap();
        let running_status = (WorkloadStatus::Active, format!("{SERVICE} running (pid {pid})"));
        assert_eq!(app.statuses(first).last(), Some(&running_status));

        // A directed handover: the old leader's service stops before the new one's starts.
        let second = (first + 1) % 3;
        app.elect(second).unwrap();
        assert!(!running(&app, first) && running(&app, second));

        // A crash: the service dies with its agent; the next leader starts its own after
        // the lease has expired.
        app.crash(second).unwrap();
        app.advance(Duration::from_secs(120));
        let third = app.leader().unwrap();
        assert_ne!(third, second);
        assert!(running(&app, third));

        // A partition: the leader stops its service before its guarantee lapses.
        app.partition(third).unwrap();
        app.advance(Duration::from_secs(120));
        assert!(!running(&app, third));
        assert!((0..3).filter(|&i| running(&app, i)).count() == 1, "the singleton moved");
    }

    #[test]
    fn random_schedules_never_run_the_singleton_twice() {
        // The invariant "a leader-only service runs on at most one unit" is checked after
        // every step of every schedule.
        app(3).service(SERVICE, true).explore(6, 30, |_| Ok(()));
    }

    #[test]
    fn without_the_operators_service_the_leader_is_blocked_and_nothing_retries() {
        let mut app = app(2).build().unwrap();
        app.settle();
        let first = app.leader().unwrap();
        assert_eq!(app.statuses(first).last().map(|(s, _)| *s), Some(WorkloadStatus::Blocked));
        app.step_down().unwrap();
        let second = app.leader().unwrap();
        assert_ne!(second, first);
        assert_eq!(app.statuses(second).last().map(|(s, _)| *s), Some(WorkloadStatus::Blocked));
        for i in 0..2 {
            assert!(app.hook_results(i).iter().all(|(_, result)| result.is_ok()), "{:?}", app.hook_results(i));
        }
    }
}
