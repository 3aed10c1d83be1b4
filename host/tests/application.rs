//! The order hooks run in, with the real probe charm and the in-memory store.

mod support;

use std::sync::Arc;
use std::time::Duration;

use charm_host::application::{Application, ApplicationConfig};
use charm_host::events::{EventKind, RecordingSink};
use charm_host::hooks::HookKind;
use charm_host::names::AppName;
use support::*;

fn hooks_of(events: &RecordingSink, unit: &str) -> Vec<HookKind> {
    events
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Hook { hook, .. } if e.unit.as_str() == unit => Some(hook),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changes_coalesce_into_one_more_minion_hook() {
    let Fixture { dir, store, events, runtime, charm } = Fixture::new();
    let config =
        ApplicationConfig::new(AppName::new("app").unwrap(), 2, charm_host::state_dir::StateDir::new(dir.path()))
            .with_setup(
                charm_host::agent::UnitSetup::default()
                    .with_window(charm_host::timing::GuaranteeWindow::new(Duration::from_secs(30)).unwrap()),
            );
    let app = Arc::new(Application::new(runtime, charm, store.clone(), events.clone(), &config).await.unwrap());
    // app/0 (its agent's incarnation) holds the lease before the units start, so it is the
    // leader; the test writes as that agent.
    let leader = app.units()[0].leadership().claimant().clone();
    let term = store.claim(&leader, Duration::from_secs(60)).await.unwrap().term;
    let minion = app.units()[1].clone();
    script(&minion, &["pause"]);
    let mut running = app.start().unwrap();

    wait_paused(&minion).await; // install
    resume(&minion).await;
    wait_paused(&minion).await; // first leader-settings-changed, as a new minion
    for i in 0..3 {
        store.write_settings(&leader, term, &[("n".into(), i.to_string())]).await.unwrap();
    }
    resume(&minion).await;
    wait_paused(&minion).await; // exactly one more, for the three writes
    let settled = *minion.settled().borrow();
    resume(&minion).await;
    // Settling without pausing again means no further hook was queued.
    wait_settled(&minion, settled).await;
    assert!(!minion.data_dir().join("paused").exists(), "no further hook");

    // A change while the minion is idle wakes it once too.
    store.write_settings(&leader, term, &[("n".into(), "idle".into())]).await.unwrap();
    wait_paused(&minion).await;
    let settled = *minion.settled().borrow();
    resume(&minion).await;
    wait_settled(&minion, settled).await;
    assert!(!minion.data_dir().join("paused").exists(), "no further hook");
    script(&minion, &[]);
    running.stop().await;

    use HookKind::*;
    assert_eq!(
        hooks_of(&events, "app/1"),
        [Install, LeaderSettingsChanged, LeaderSettingsChanged, LeaderSettingsChanged, Stop]
    );
    assert_eq!(
        hooks_of(&events, "app/0"),
        [Install, LeaderElected, LeaderDeposed, Stop],
        "the leader is not told of writes"
    );
}
