//! The embedding API as an embedder uses it: a `Host` from its builder, an application
//! started and commanded through its handle, events through a subscription.

mod support;

use std::time::Duration;

use charm_host::{AppName, Event, EventKind, EventStream, HookKind, Host, HostError, LeadershipChange, UnitName};

/// The position of the first event matching `wanted`, if any.
fn position(events: &[Event], wanted: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(wanted)
}

/// Waits for the next event matching `wanted` (a minute at most: a guard against a hang,
/// not a timing assertion).
async fn wait_for_event(events: &mut EventStream, what: &str, wanted: impl Fn(&Event) -> bool) {
    let found = async {
        while let Some(event) = events.next().await {
            if wanted(&event) {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(Duration::from_secs(60), found).await {
        Ok(true) => {}
        Ok(false) => panic!("the events ended before {what}"),
        Err(_) => panic!("no event for {what} within a minute"),
    }
}

/// One line per event, for failure messages.
fn summary(events: &[Event]) -> String {
    let line = |e: &Event| {
        let (unit, term) = (&e.unit, e.term);
        match &e.kind {
            EventKind::Hook { hook, result, .. } => format!("{unit} hook {hook} {result:?}"),
            EventKind::Leadership(change) => format!("{unit} leader={} term={term:?}", change.leads()),
            EventKind::Log { message, .. } => format!("{unit} log {message}"),
            EventKind::Status { status, .. } => format!("{unit} status {status:?}"),
            other => format!("{unit} {other:?}"),
        }
    };
    events.iter().map(line).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_current_thread_runtime_is_refused_with_a_clear_error() {
    let err = Host::builder().build().await.expect_err("a current-thread runtime cannot run units");
    assert!(matches!(err, HostError::CurrentThreadRuntime), "{err}");
    assert!(err.to_string().contains("multi-threaded tokio runtime"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_settings_are_refused_at_build() {
    let err = Host::builder().guarantee_window(Duration::from_millis(1)).build().await.expect_err("too short");
    assert!(err.to_string().contains("the guarantee window must be between"), "{err}");
    let err = Host::builder().event_capacity(0).build().await.expect_err("no room for events");
    assert!(matches!(err, HostError::Invalid(_)), "{err}");
    // A failing hook must not retry in a loop.
    let err = Host::builder()
        .hook_backoff(Duration::ZERO, Duration::from_secs(1))
        .build()
        .await
        .expect_err("a zero first delay");
    assert!(matches!(&err, HostError::Invalid(m) if m.contains("the first delay must be at least 10ms")), "{err}");
    let host = Host::builder().hook_backoff(Duration::from_millis(10), Duration::from_millis(10)).build().await;
    assert!(host.is_ok(), "the shortest accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_application_leads_hands_over_and_stops() {
    let host = Host::builder().cache_dir(None).build().await.expect("host");
    let mut events = host.subscribe();
    let mut waits = host.subscribe();
    let charm = host.load_charm(support::charm_wasm("tests/charms/probe")).expect("probe loads");
    let app = host.start_application(AppName::new("app").unwrap(), &charm, 3).await.expect("started");
    assert_eq!(app.units().len(), 3);
    let leader = app.wait_for_leader().await.expect("a leader");
    // Told it leads (so it owes a leader-deposed when it gives up); its guarantee shows
    // through its hook tools.
    let elected =
        |e: &Event| e.unit == leader && matches!(e.kind, EventKind::Hook { hook: HookKind::LeaderElected, .. });
    wait_for_event(&mut waits, "the leader's leader-elected", elected).await;
    let tools = app.tools(&leader).expect("a unit of the app");
    assert_eq!(tools.is_leader(), Ok(true));
    tools.leader_set(&[("k".into(), "v".into())]).await.expect("the leader writes");
    assert_eq!(app.tools(&leader).unwrap().leader_get("k").await.unwrap().as_deref(), Some("v"));

    let successor = UnitName::from_parts(app.app().clone(), (leader.number() + 1) % 3);
    let term = app.elect(&successor, Duration::from_secs(30)).await.expect("handover");
    assert_eq!(app.leader().await.unwrap().map(|l| (l.holder, l.term)), Some((successor.clone(), term)));
    let minion_tools = app.tools(&successor).unwrap();
    assert_eq!(minion_tools.leader_get("k").await.unwrap().as_deref(), Some("v"), "settings survive the handover");
    // The report `charm-host status` prints: one leader, every agent running, the settings.
    let report = app.report().await.expect("a report");
    assert_eq!((report.leader.as_ref(), report.term), (Some(&successor), Some(term)));
    assert_eq!(report.units.iter().filter(|u| u.leader).map(|u| &u.unit).collect::<Vec<_>>(), [&successor]);
    assert!(report.units.iter().all(|u| u.agent == charm_host::report::AgentState::Running));
    assert_eq!(report.settings.get("k").map(String::as_str), Some("v"));
    app.stop().await;
    // The stream ends once nothing can emit any more: the host, and every unit (a unit's
    // tools keep it).
    drop((tools, minion_tools, host));

    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        seen.push(event);
    }
    assert_eq!(events.missed(), 0);
    // The old leader's leader-deposed finished before the successor led.
    let deposed = position(&seen, |e| {
        e.unit == leader && matches!(e.kind, EventKind::Hook { hook: HookKind::LeaderDeposed, .. })
    })
    .unwrap_or_else(|| panic!("the old leader {leader} was deposed: {}", summary(&seen)));
    let elected =
        position(&seen, |e| e.unit == successor && e.kind == EventKind::Leadership(LeadershipChange::Elected))
            .expect("the successor led");
    assert!(deposed < elected, "deposed at {deposed}, successor led at {elected}: {}", summary(&seen));
    let stops = seen.iter().filter(|e| matches!(e.kind, EventKind::Hook { hook: HookKind::Stop, .. })).count();
    assert_eq!(stops, 3, "every unit ran stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_misses_the_oldest_events_and_is_told() {
    let host = Host::builder().event_capacity(4).cache_dir(None).build().await.expect("host");
    let mut events = host.subscribe();
    let charm = host.load_charm(support::charm_wasm("tests/charms/probe")).expect("probe loads");
    let app = host.start_application(AppName::new("app").unwrap(), &charm, 3).await.expect("started");
    app.stop().await;
    drop(host);
    let mut kept = 0;
    while events.next().await.is_some() {
        kept += 1;
    }
    assert!(kept <= 4, "at most the capacity is kept: {kept}");
    assert!(events.missed() > 0, "the subscriber is told it missed events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_while_the_leader_installs_does_not_wait_for_its_lease_to_expire() {
    // A 30 s window: the leader's lease lasts 60 s, far longer than the handover may take.
    let host = Host::builder().cache_dir(None).build().await.expect("host");
    let mut events = host.subscribe();
    let state = charm_host::state_dir::StateDir::new(host.state_dir());
    let app_name = AppName::new("app").unwrap();
    let units: Vec<UnitName> = (0..3).map(|n| UnitName::from_parts(app_name.clone(), n)).collect();
    for unit in &units {
        // Every unit's install pauses until it is let go.
        let data = state.data_dir(unit);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("script"), "pause").unwrap();
    }
    // Nobody of the application may lead until every unit is inside its install: then the
    // leader's tenure begins and ends while its driver runs a hook, and never reaches it.
    let placeholder = charm_host::leadership::Claimant::fresh(UnitName::from_parts(app_name.clone(), 99));
    host.store().claim(&placeholder, Duration::from_secs(60)).await.unwrap();
    let charm = host.load_charm(support::charm_wasm("tests/charms/probe")).expect("probe loads");
    let app = host.start_application(app_name, &charm, 3).await.expect("started");
    for unit in &units {
        support::wait_paused_in(&state.data_dir(unit)).await;
    }
    host.store().revoke(&placeholder, charm_host::leadership::Release::StepDown).await.unwrap();
    let leader = app.wait_for_leader().await.expect("a leader");
    let successor = UnitName::from_parts(app.app().clone(), (leader.number() + 1) % 3);
    // The leader gives up for the successor while its install is still paused: no
    // leader-deposed is owed, and the lease must be released rather than left to expire.
    charm_host::handover::request(host.store().as_ref(), &successor, Duration::from_secs(30)).await.unwrap();
    let gave_up = |e: &Event| e.unit == leader && e.kind == EventKind::Leadership(LeadershipChange::Deposed);
    wait_for_event(&mut events, "the leader giving up", gave_up).await;
    for unit in &units {
        // Later hooks run straight through.
        std::fs::remove_file(state.data_dir(unit).join("script")).unwrap();
        support::resume_in(&state.data_dir(unit)).await;
    }
    let term = app
        .elect(&successor, Duration::from_secs(20))
        .await
        .expect("the successor leads well before the old lease expires");
    assert_eq!(term, 3, "the placeholder's term, the leader's, then the successor's");
    app.stop().await;
}

/// The same unit twice through the library: every path that starts a unit takes its lock,
/// so a second start of an application (or of one of its units as an agent) in the same
/// process is refused, saying so, while the first keeps leading alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_unit_started_twice_in_one_process_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let host = Host::builder().state_dir(state.path()).sqlite_store().build().await.unwrap();
    let charm = host.load_charm(support::charm_wasm("example-charms/shared-settings")).expect("charm loads");
    let app = AppName::new("dup").unwrap();
    let first = host.start_application(app.clone(), &charm, 1).await.expect("the first start");
    let leader = first.wait_for_leader().await.unwrap();
    for second in [
        host.start_application(app.clone(), &charm, 2).await.map(|_| ()),
        host.start_agent(UnitName::new("dup/0").unwrap(), &charm).await.map(|_| ()),
    ] {
        let err = second.expect_err("a second copy of dup/0 in the same process");
        assert!(err.to_string().contains("dup/0 already runs in this process"), "{err}");
    }
    // Nothing of the refused starts runs: one unit leads, at its first term.
    let lease = first.leader().await.unwrap().expect("still led");
    assert_eq!((lease.holder, lease.term), (leader, 1));
    // A second Host on the same state directory (as another process would be) is refused too.
    let other = Host::builder().state_dir(state.path()).sqlite_store().build().await.unwrap();
    let err = other.start_application(app.clone(), &charm, 1).await.map(|_| ()).expect_err("a second host");
    assert!(err.to_string().contains("dup/0 already runs"), "{err}");
    first.stop().await;
    // Once stopped, the unit can start again.
    let again = other.start_application(app, &charm, 1).await.expect("a start after the stop");
    again.stop().await;
}

/// What an embedder meets in a first afternoon: a step-down awaited to its successor, a
/// wait until the application has settled, events that tell a minion's start from a lost
/// tenure, errors that say what was being done, and one call that stops everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_waits_for_a_successor_settles_and_host_stop_stops_everything() {
    let host = Host::builder().guarantee_window(Duration::from_secs(2)).cache_dir(None).build().await.expect("host");
    let mut events = host.subscribe();
    let charm = host.load_charm(support::charm_wasm("example-charms/shared-settings")).expect("charm loads");
    let app = host.start_application(AppName::new("kv").unwrap(), &charm, 3).await.expect("started");
    let lone = host.start_application(AppName::new("lone").unwrap(), &charm, 1).await.expect("started");

    // Settled: one leads, and every unit ran its hooks (each shows the leader's cluster id).
    let leader = app.wait_settled(Duration::from_secs(60)).await.expect("settles");
    let cluster = app.tools(&leader).unwrap().leader_get("cluster-id").await.unwrap().expect("an id");
    for unit in app.units() {
        let status = app.status(&unit).unwrap();
        assert_eq!(status.workload, charm_host::WorkloadStatus::Active, "{unit}: {status:?}");
        assert_eq!(status.message, format!("member of {cluster}"), "{unit}");
    }

    // A step-down returns once a successor leads, at a later term.
    let before = app.leader().await.unwrap().expect("led");
    let (successor, term) = app.step_down_and_wait(Duration::from_secs(30)).await.expect("a successor");
    assert_ne!(successor, leader);
    assert!(term > before.term);
    assert_eq!(app.wait_for_leader().await.unwrap(), successor, "no stale leader right after");

    // Electing a unit no agent ever ran is refused, and reserves nothing.
    let stranger = UnitName::new("kv/7").unwrap();
    let err = host.elect(&stranger, Duration::from_secs(5)).await.expect_err("nobody runs kv/7");
    assert!(matches!(err, HostError::NotAMember { .. }), "{err}");
    assert!(err.to_string().contains("kv/7 is not a member of kv"), "{err}");
    assert_eq!(app.leader().await.unwrap().map(|l| l.holder), Some(successor.clone()));

    // One call stops every agent of the host, gracefully: the leases are given up.
    host.stop().await;
    for name in ["kv", "lone"] {
        assert_eq!(host.leader(&AppName::new(name).unwrap()).await.unwrap(), None, "{name}'s lease revoked");
    }
    let report = app.report().await.unwrap();
    assert!(report.units.iter().all(|u| u.agent != charm_host::report::AgentState::Running), "{report:?}");
    let err = app.step_down().await.expect_err("nobody leads");
    assert!(matches!(err, HostError::NoLeader { .. }), "{err}");
    assert_eq!(err.to_string(), "kv has no leader to step down");
    drop((app, lone, host));

    // The minions' first role reads as a minion, the step-down as a tenure given up.
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        seen.push(event);
    }
    let changes = |unit: &UnitName| -> Vec<(LeadershipChange, Option<u64>)> {
        seen.iter()
            .filter(|e| e.unit == *unit)
            .filter_map(|e| match e.kind {
                EventKind::Leadership(change) => Some((change, e.term)),
                _ => None,
            })
            .collect()
    };
    let first_of = |unit: &UnitName| changes(unit).first().copied();
    assert_eq!(first_of(&leader), Some((LeadershipChange::Elected, Some(before.term))), "{}", summary(&seen));
    assert!(changes(&leader).contains(&(LeadershipChange::Deposed, Some(before.term))), "{}", summary(&seen));
    let minion = app_units_other_than(&leader, &successor);
    assert_eq!(first_of(&minion), Some((LeadershipChange::Minion, None)), "{}", summary(&seen));
}

/// The third unit of `kv`: neither of the two given.
fn app_units_other_than(a: &UnitName, b: &UnitName) -> UnitName {
    (0..3).map(|n| UnitName::new(&format!("kv/{n}")).unwrap()).find(|u| u != a && u != b).expect("three units")
}

/// A minion whose agent restarts runs no hook (it saw the settings before): its workload
/// status is the one its charm set before the restart, not `maintenance` with no message.
/// And a state directory whose parent is missing is refused with what was being done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_minion_keeps_its_workload_status_and_a_missing_state_dir_is_named() {
    let state = tempfile::tempdir().unwrap();
    let missing = state.path().join("no/such/dir");
    let err = Host::builder().state_dir(&missing).build().await.expect_err("its parent is missing");
    let text = err.to_string();
    assert!(text.contains("cannot create the state directory") && text.contains("no/such/dir"), "{text}");

    let host = Host::builder().state_dir(state.path()).sqlite_store().build().await.unwrap();
    let charm = host.load_charm(support::charm_wasm("example-charms/shared-settings")).expect("charm loads");
    let app = host.start_application(AppName::new("kept").unwrap(), &charm, 2).await.expect("started");
    let leader = app.wait_settled(Duration::from_secs(60)).await.expect("settles");
    let minion = app.units().into_iter().find(|u| *u != leader).unwrap();
    let before = app.status(&minion).unwrap();
    assert_eq!(before.workload, charm_host::WorkloadStatus::Active, "{before:?}");
    let mut app = app;
    app.stop_unit(&minion).await.expect("the minion stops");

    // The leader goes on leading: the restarted minion is a minion again, with nothing new
    // to hear of, so no hook of it runs.
    let mut events = host.subscribe();
    let agent = host.start_agent(minion.clone(), &charm).await.expect("the minion again");
    wait_for_event(&mut events, "the minion's role", |e| {
        e.unit == minion && e.kind == EventKind::Leadership(LeadershipChange::Minion)
    })
    .await;
    let after = agent.status();
    assert_eq!((after.workload, &after.message), (before.workload, &before.message), "{after:?}");
    assert_eq!(app.leader().await.unwrap().map(|l| l.holder), Some(leader));
    host.stop().await;
    drop((agent, app));
}
