//! The embedding API as an embedder uses it: a `Host` from its builder, an application
//! started and commanded through its handle, events through a subscription.

mod support;

use std::time::Duration;

use charm_host::{AppName, Event, Host, HostError, HookKind, UnitName};

/// The position of the first event matching `wanted`, if any.
fn position(events: &[Event], wanted: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(wanted)
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_application_leads_hands_over_and_stops() {
    let host = Host::builder().guarantee_window(Duration::from_secs(2)).cache_dir(None).build().await.expect("host");
    let mut events = host.subscribe();
    let charm = host.load_charm(support::charm_wasm("tests/charms/probe")).expect("probe loads");
    let app = host.start_application(AppName::new("app").unwrap(), &charm, 3).await.expect("started");
    assert_eq!(app.units().len(), 3);
    let leader = app.wait_for_leader().await.expect("a leader");
    let tools = app.tools(&leader).expect("a unit of the app");
    // The leader's guarantee shows through its hook tools once its agent has it.
    while tools.is_leader() != Ok(true) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tools.leader_set(&[("k".into(), "v".into())]).await.expect("the leader writes");
    assert_eq!(app.tools(&leader).unwrap().leader_get("k").await.unwrap().as_deref(), Some("v"));

    let successor = UnitName::from_parts(app.app().clone(), (leader.number() + 1) % 3);
    let term = app.elect(&successor, Duration::from_secs(30)).await.expect("handover");
    assert_eq!(app.leader().await.unwrap().map(|l| (l.holder, l.term)), Some((successor.clone(), term)));
    let minion_tools = app.tools(&successor).unwrap();
    assert_eq!(minion_tools.leader_get("k").await.unwrap().as_deref(), Some("v"), "settings survive the handover");
    app.stop().await;
    drop(host);

    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        seen.push(event);
    }
    assert_eq!(events.missed(), 0);
    // The old leader's leader-deposed finished before the successor led.
    let deposed = position(&seen, |e| matches!(e, Event::Hook { unit, hook: HookKind::LeaderDeposed, .. } if *unit == leader))
        .expect("the old leader was deposed");
    let elected = position(&seen, |e| matches!(e, Event::Leadership { unit, leader: true, .. } if *unit == successor))
        .expect("the successor led");
    assert!(deposed < elected, "deposed at {deposed}, successor led at {elected}: {seen:#?}");
    let stops = seen.iter().filter(|e| matches!(e, Event::Hook { hook: HookKind::Stop, .. })).count();
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
