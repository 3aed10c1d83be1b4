//! TestApp: the real shared-settings component on three agents in virtual time.

use std::time::Duration;

use charm_host::EventKind;
use charm_host::HookKind::*;
use charm_host::events::WorkloadStatus;
use charm_host::leadership::TenureEnd;
use charm_host::testing::TestApp;

fn shared_settings() -> TestApp {
    let charm = concat!(env!("CARGO_MANIFEST_DIR"), "/../example-charms/shared-settings");
    TestApp::builder(charm).app_name("db").units(3).build().expect("the charm builds and loads")
}

/// When each hook of the app ran, in milliseconds of virtual time.
fn hook_times_ms(app: &TestApp) -> Vec<u128> {
    let hooks = app.timeline().into_iter().filter(|e| matches!(e.event.kind, EventKind::Hook { .. }));
    hooks.map(|e| e.at.as_millis()).collect()
}

#[test]
fn nothing_runs_until_the_first_step() {
    let mut app = shared_settings();
    assert!(app.timeline().is_empty());
    app.settle();
    let leader = app.leader().expect("one unit claimed the lease");
    assert_eq!(app.hooks(leader), [Install, LeaderElected]);
    for minion in (0..3).filter(|&i| i != leader) {
        assert_eq!(app.hooks(minion)[0], Install);
        assert_eq!(app.statuses(minion).last().map(|(s, _)| *s), Some(WorkloadStatus::Active), "unit {minion}");
    }
    assert_eq!(app.elapsed(), Duration::ZERO, "settling does not move the clock");
}

#[test]
fn the_leader_crashes_and_the_successor_keeps_the_settings_across_two_expiries() {
    let mut app = shared_settings();
    app.settle();
    let first = app.leader().unwrap();
    let settings = app.settings();
    assert_eq!(settings.len(), 2);

    app.crash(first).unwrap();
    app.advance(Duration::from_secs(120));
    let second = app.leader().expect("a successor after the lease expired");
    assert_ne!(second, first);
    assert_eq!(app.hooks(second).last(), Some(&LeaderElected));

    app.crash(second).unwrap();
    app.advance(Duration::from_secs(120));
    let third = app.leader().expect("a third leader");
    assert!(third != first && third != second);
    assert_eq!(app.settings(), settings, "nobody rewrote the settings");
    assert!(app.acknowledged_writes().len() == 1, "{:?}", app.acknowledged_writes());
    // The history tells both crashes apart from the tenure still running; the timeline has
    // each crash, with the term the unit held.
    let history: Vec<_> = app.history().iter().map(|t| (t.unit.number() as usize, t.term, t.how)).collect();
    assert_eq!(
        history,
        [(third, 3, None), (second, 2, Some(TenureEnd::Expired)), (first, 1, Some(TenureEnd::Expired))]
    );
    let crashes: Vec<_> = app
        .timeline()
        .iter()
        .filter(|e| e.event.kind == EventKind::Crashed)
        .map(|e| (e.event.unit.number() as usize, e.event.term))
        .collect();
    assert_eq!(crashes, [(first, Some(1)), (second, Some(2))]);
    assert!(app.elapsed() >= Duration::from_secs(240));

    // The crashed units come back as minions and keep their cluster.
    app.restart(first).unwrap();
    assert!(!app.believes_it_leads(first));
    assert!(app.statuses(first).last().is_some_and(|(s, _)| *s == WorkloadStatus::Active));
}

#[test]
fn renewals_keep_a_leader_through_an_hour() {
    let mut app = shared_settings();
    app.settle();
    let leader = app.leader().unwrap();
    let term = app.term();
    app.advance(Duration::from_secs(3600));
    assert_eq!(app.leader(), Some(leader));
    assert_eq!(app.term(), term, "one tenure, renewed");
    let (periodic, news): (Vec<_>, Vec<_>) = app.hooks(leader).into_iter().partition(|h| *h == UpdateStatus);
    assert_eq!(news, [Install, LeaderElected], "no other hook ran without news");
    assert_eq!(periodic.len(), 12, "update-status every 5 minutes of the hour");
}

#[test]
fn a_partitioned_leader_is_deposed_before_its_successor_is_elected() {
    let mut app = shared_settings();
    app.settle();
    let first = app.leader().unwrap();
    app.partition(first).unwrap();
    app.advance(Duration::from_secs(90));
    let second = app.leader().expect("a successor");
    assert_ne!(second, first);
    app.assert_finished_before_started(first, LeaderDeposed, second, LeaderElected);
    app.heal(first).unwrap();
    app.advance(Duration::from_secs(5));
    assert_eq!(app.leader(), Some(second));
    assert!(!app.believes_it_leads(first));
    // Back in reach of the store (at its next claim, within a renew interval), the old
    // leader said why its tenure ran out.
    app.advance(Duration::from_secs(10));
    let history: Vec<_> = app.history().iter().map(|t| (t.unit.number() as usize, t.how)).collect();
    assert_eq!(history, [(second, None), (first, Some(TenureEnd::LostRenewals))]);
}

#[test]
fn directed_handover_and_step_down() {
    let mut app = shared_settings();
    app.settle();
    let first = app.leader().unwrap();
    let target = (first + 1) % 3;
    let term = app.elect(target).unwrap();
    assert_eq!(app.leader(), Some(target));
    assert!(term > 1);
    assert_eq!(app.hooks(first)[2], LeaderDeposed);
    app.assert_finished_before_started(first, LeaderDeposed, target, LeaderElected);
    app.step_down().unwrap();
    let next = app.leader().expect("another unit leads at once");
    assert_ne!(next, target);
    assert_eq!(app.elapsed(), Duration::ZERO, "no expiry was waited for");
    let history = app.history();
    let ends: Vec<_> = history.iter().map(|t| (t.unit.number() as usize, t.how)).collect();
    assert_eq!(ends, [(next, None), (target, Some(TenureEnd::StepDown)), (first, Some(TenureEnd::Handover))]);
    assert!(
        history.windows(2).all(|w| w[1].ended.is_some_and(|ended| ended <= w[0].started)),
        "one leader at a time: {history:?}"
    );
}

#[test]
fn the_timeline_is_json_lines_with_virtual_time() {
    let mut app = shared_settings();
    app.settle();
    app.advance(Duration::from_secs(1));
    app.set_settings([("extra", "1")]).unwrap();
    let lines: Vec<serde_json::Value> =
        app.timeline_json().lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert!(lines.iter().any(|l| l["type"] == "hook" && l["hook"] == "leader-elected" && l["at_ms"] == 0));
    assert!(lines.iter().any(|l| l["type"] == "hook" && l["hook"] == "leader-settings-changed" && l["at_ms"] == 1000));
    // Each event has its wall time (virtual: from 2026-01-01T00:00:00Z) and the unit's term.
    let elected = lines.iter().find(|l| l["type"] == "hook" && l["hook"] == "leader-elected").unwrap();
    assert_eq!(
        (&elected["at"], &elected["term"]),
        (&serde_json::json!("2026-01-01T00:00:00.000Z"), &serde_json::json!(1))
    );
    let changed = lines.iter().find(|l| l["hook"] == "leader-settings-changed" && l["at_ms"] == 1000).unwrap();
    assert_eq!(
        (&changed["at"], &changed["term"]),
        (&serde_json::json!("2026-01-01T00:00:01.000Z"), &serde_json::Value::Null),
        "a minion"
    );
    assert_eq!(app.settings()["extra"], "1");
}

/// The probe charm, with `script` in every unit's data directory.
fn probe(units: u32, seed: u64, script: &str) -> TestApp {
    let charm = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/charms/probe");
    let app = TestApp::builder(charm).units(units).seed(seed).build().expect("the probe builds and loads");
    for i in 0..app.len() {
        std::fs::create_dir_all(app.data_dir(i)).unwrap();
        std::fs::write(app.data_dir(i).join("script"), script).unwrap();
    }
    app
}

fn results(app: &TestApp, i: usize) -> Vec<String> {
    std::fs::read_to_string(app.data_dir(i).join("results")).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn guests_read_virtual_clocks_and_seeded_randomness() {
    let mut app = probe(1, 7, "time\nrandom");
    app.settle();
    app.advance(Duration::from_secs(3600));
    app.step_down().unwrap(); // the only unit: deposed now, elected again after the hold-off
    app.settle();
    let lines = results(&app, 0);
    let start = charm_host::testing::WALL_CLOCK_START.as_secs();
    assert_eq!(lines[0], format!("time -> {start}"), "{lines:?}");
    let later: Vec<_> = lines.iter().filter(|l| l.starts_with("time -> ")).skip(2).collect();
    assert!(later.iter().all(|l| **l == format!("time -> {}", start + 3600)), "{lines:?}");

    let mut again = probe(1, 7, "time\nrandom");
    again.settle();
    assert_eq!(results(&again, 0)[..2], lines[..2], "the same seed, the same bytes");
    let mut other = probe(1, 8, "time\nrandom");
    other.settle();
    assert_ne!(results(&other, 0)[1], lines[1], "another seed, other bytes");

    // Every hook of every unit draws its own bytes.
    let mut two = probe(2, 7, "random");
    two.settle();
    two.step_down().unwrap();
    let mut draws: Vec<String> = (0..2).flat_map(|i| results(&two, i)).collect();
    let count = draws.len();
    assert!(count >= 5, "{draws:?}");
    draws.sort();
    draws.dedup();
    assert_eq!(draws.len(), count, "no two hooks drew the same bytes");
}

#[test]
fn a_backoff_that_would_retry_in_a_loop_is_refused() {
    let charm = concat!(env!("CARGO_MANIFEST_DIR"), "/../example-charms/shared-settings");
    let Err(err) = TestApp::builder(charm).hook_backoff(Duration::ZERO, Duration::from_secs(1)).build() else {
        panic!("a zero first delay was accepted")
    };
    assert!(err.to_string().contains("the first delay must be at least"), "{err}");
}

#[test]
fn a_failing_hook_is_retried_after_1_s_then_2_s_of_virtual_time() {
    let mut app = probe(1, 0, "fail boom");
    app.settle();
    assert_eq!(app.hooks(0), [Install]);
    app.advance(Duration::from_millis(999));
    assert_eq!(app.hooks(0).len(), 1);
    app.advance(Duration::from_millis(1));
    assert_eq!(app.hooks(0).len(), 2, "retried after 1 s");
    app.advance(Duration::from_millis(1999));
    assert_eq!(app.hooks(0).len(), 2);
    app.advance(Duration::from_millis(1));
    assert_eq!(app.hooks(0).len(), 3, "then after 2 s");
    let at = hook_times_ms(&app);
    assert_eq!(at, [0, 1000, 3000]);
}

#[test]
#[should_panic(expected = "invariant violated")]
fn a_user_invariant_fails_the_step_that_breaks_it() {
    let mut app = shared_settings();
    app.invariant("nobody leads", |app| match app.leader() {
        Some(i) => Err(format!("unit {i} leads")),
        None => Ok(()),
    });
    app.settle();
}

#[test]
fn random_schedules_keep_the_invariants() {
    let charm = concat!(env!("CARGO_MANIFEST_DIR"), "/../example-charms/shared-settings");
    let steps = TestApp::builder(charm).units(3).explore(6, 40, |_| Ok(()));
    assert_eq!(steps, 6 * 40);
}

#[test]
fn a_failing_exploration_names_its_seed_and_the_replay_command() {
    let charm = concat!(env!("CARGO_MANIFEST_DIR"), "/../example-charms/shared-settings");
    let builder = TestApp::builder(charm).units(3);
    let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.explore(50, 40, |app| if app.term().unwrap_or(0) >= 3 { Err("a third term".into()) } else { Ok(()) })
    }))
    .expect_err("some schedule reaches a third term");
    let message = failure.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("exploration failed with seed"), "{message}");
    assert!(message.contains("a third term"), "{message}");
    assert!(message.contains("replay: CHARM_TEST_SEED="), "{message}");
    assert!(message.contains("--exact a_failing_exploration_names_its_seed_and_the_replay_command"), "{message}");
    // The seed printed replays the same failure.
    let seed: u64 =
        message.split("seed ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).unwrap();
    let steps = charm_host::testing::explore::schedule(seed, 3, 40);
    let mut app = builder.clone().build().unwrap();
    let failed_at = steps.iter().position(|step| {
        let _ = app.apply(*step);
        app.term().unwrap_or(0) >= 3
    });
    assert!(failed_at.is_some(), "seed {seed} replays to a third term");
}

#[test]
#[should_panic(expected = "to finish before")]
fn the_order_assertion_fails_on_the_wrong_order() {
    let mut app = shared_settings();
    app.settle();
    let first = app.leader().unwrap();
    let target = (first + 1) % 3;
    app.elect(target).unwrap();
    app.assert_finished_before_started(target, LeaderElected, first, LeaderDeposed);
}

#[test]
fn a_hook_that_sleeps_past_its_deadline_overruns_it_in_virtual_time() {
    let charm = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/charms/probe");
    let mut app = TestApp::builder(charm).units(1).hook_deadline(Duration::from_secs(60)).build().unwrap();
    std::fs::create_dir_all(app.data_dir(0)).unwrap();
    std::fs::write(app.data_dir(0).join("script-install"), "sleep 90000\ntime").unwrap();
    app.settle();
    assert!(app.hooks(0).is_empty(), "install sleeps in virtual time: {:?}", app.hooks(0));
    app.advance(Duration::from_secs(59));
    assert!(app.hooks(0).is_empty());
    app.advance(Duration::from_secs(1));
    let results = app.hook_results(0);
    assert!(matches!(results.as_slice(), [(Install, Err(charm_host::hooks::HookError::Deadline(_)))]), "{results:?}");
    // Retried after 1 s; a sleep shorter than the deadline ends when the clock passes it.
    std::fs::write(app.data_dir(0).join("script-install"), "sleep 30000\ntime").unwrap();
    app.advance(Duration::from_secs(1));
    assert_eq!(app.hook_results(0).len(), 1, "the retry sleeps");
    app.advance(Duration::from_secs(30));
    assert!(matches!(app.hook_results(0).get(1), Some((Install, Ok(())))), "{:?}", app.hook_results(0));
    let at = hook_times_ms(&app);
    assert_eq!(at[..2], [60_000, 91_000], "the deadline at 60 s; the retry from 61 s slept 30 s");
    let line = results_line(&app, "time -> ");
    assert_eq!(line, format!("time -> {}", charm_host::testing::WALL_CLOCK_START.as_secs() + 91));
}

fn results_line(app: &TestApp, prefix: &str) -> String {
    results(app, 0).into_iter().find(|l| l.starts_with(prefix)).unwrap_or_default()
}

#[test]
fn every_host_call_is_recorded_with_its_answer() {
    let mut app = shared_settings();
    app.settle();
    let leader = app.leader().unwrap();
    let calls = app.calls(leader);
    let elected: Vec<(String, String)> =
        calls.iter().filter(|c| c.hook == LeaderElected).map(|c| (c.call.clone(), c.answer.clone())).collect();
    assert_eq!(elected[0], ("is-leader".to_owned(), "Ok(true)".to_owned()), "{elected:?}");
    // The leader already wrote the settings in its install (it led from the start).
    let writes: Vec<_> = calls.iter().filter(|c| c.call.starts_with("leader-set ")).collect();
    assert_eq!(writes.len(), 1, "{calls:?}");
    assert_eq!((writes[0].hook, writes[0].answer.as_str()), (Install, "Ok(())"));
    assert!(writes[0].call.starts_with("leader-set [(\"cluster-id\""), "{:?}", writes[0]);
    let minion = (leader + 1) % 3;
    let minion_calls = app.calls(minion);
    assert!(minion_calls.iter().any(|c| c.call == "is-leader" && c.answer == "Ok(false)"), "{minion_calls:?}");
    assert!(minion_calls.iter().any(|c| c.call.starts_with("status-set active")), "{minion_calls:?}");
}

/// "My unit was cloned": a copy of the leader's unit started on another machine is another
/// incarnation of it. It never leads while the first one's tenure lasts (the invariants,
/// checked at every step, include one leader at a time across both copies), and leads at a
/// new term only once the first one crashed and its lease ran out.
#[test]
fn a_copy_of_the_leaders_unit_started_elsewhere_waits_for_its_tenure_to_end() {
    let mut app = shared_settings();
    app.settle();
    let first = app.leader().unwrap();
    let copy = app.start_copy(first).unwrap();
    app.advance(Duration::from_secs(120));
    assert_eq!(app.leader(), Some(first), "the first one keeps renewing its tenure");
    assert!(!app.believes_it_leads(copy));
    let waiting = app.status(copy).and_then(|s| s.leadership_wait).unwrap_or_default();
    assert!(waiting.contains("is also running elsewhere"), "the copy says why it waits: {waiting:?}");
    let settings = app.settings();
    app.crash(first).unwrap();
    app.advance(Duration::from_secs(120));
    let next = app.leader().expect("a leader after the lease ran out");
    assert_ne!(next, first);
    assert_eq!(app.term(), Some(2), "a new tenure");
    assert_eq!(app.settings(), settings, "the settings survive");
}

/// A unit's agent that crashed and starts again on its own machine (the same state
/// directory) is a new incarnation that can prove the old one gone: it leads again at
/// once, at a new term, instead of waiting for its old lease.
#[test]
fn a_crashed_leader_restarted_on_its_machine_takes_over_at_once_at_a_new_term() {
    let mut app = shared_settings();
    app.settle();
    let first = app.leader().unwrap();
    let crashed_at = app.elapsed();
    app.crash(first).unwrap();
    app.restart(first).unwrap();
    assert_eq!(app.leader(), Some(first));
    assert_eq!(app.term(), Some(2));
    assert_eq!(app.elapsed(), crashed_at, "no wait for the old lease");
    assert_eq!(app.history()[1].how, Some(TenureEnd::Restarted));
    assert_eq!(app.hooks(first).iter().filter(|h| **h == LeaderElected).count(), 2, "leader-elected again");
}
