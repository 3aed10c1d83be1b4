//! The cron-gate example over a real 3-unit run with a leader stop and a leader crash: after
//! every hook, all crontab files are read; never do two live units say `IS_LEADER=1` at the
//! same time, and exactly one does once the new leader's hook has run.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use charm_host::application::{Application, ApplicationConfig};
use charm_host::events::{Event, EventKind, EventSink};
use charm_host::hooks::HookKind;
use charm_host::leadership::{LeadershipStore, MemoryStore};
use charm_host::names::{AppName, UnitName};
use charm_host::state_dir::StateDir;
use support::*;

/// Reads every live unit's crontab after each hook and records what it saw.
struct CrontabWatcher {
    state: StateDir,
    units: Vec<UnitName>,
    dead: Mutex<Vec<UnitName>>,
    violations: Mutex<Vec<String>>,
    leaders_seen: Mutex<Vec<(UnitName, HookKind, Vec<UnitName>)>>,
}

impl CrontabWatcher {
    fn leaders_in_files(&self) -> Vec<UnitName> {
        let dead = self.dead.lock().unwrap().clone();
        self.units
            .iter()
            .filter(|u| !dead.contains(u))
            .filter(|u| {
                let path = self.state.data_dir(u).join(format!("etc/cron.d/{}-maintenance", u.app()));
                std::fs::read_to_string(path).is_ok_and(|c| c.lines().any(|l| l == "IS_LEADER=1"))
            })
            .cloned()
            .collect()
    }
}

impl EventSink for CrontabWatcher {
    fn emit(&self, event: Event) {
        if let EventKind::Hook { hook, .. } = event.kind {
            let unit = &event.unit;
            let leaders = self.leaders_in_files();
            if leaders.len() > 1 {
                self.violations
                    .lock()
                    .unwrap()
                    .push(format!("after {hook} on {unit}: {leaders:?} all say IS_LEADER=1"));
            }
            self.leaders_seen.lock().unwrap().push((unit.clone(), hook, leaders));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_live_unit_runs_maintenance_through_a_stop_and_a_crash() {
    let runtime = runtime(None);
    let charm = runtime.load_charm(&charm_wasm("example-charms/cron-gate")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = AppName::new("web").unwrap();
    let units: Vec<UnitName> = (0..3).map(|n| UnitName::from_parts(app.clone(), n)).collect();
    let watcher = Arc::new(CrontabWatcher {
        state: StateDir::new(dir.path()),
        units: units.clone(),
        dead: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        leaders_seen: Mutex::new(Vec::new()),
    });
    let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
    let config = ApplicationConfig::new(app.clone(), 3, StateDir::new(dir.path())).with_setup(
        charm_host::agent::UnitSetup::default()
            .with_window(charm_host::timing::GuaranteeWindow::new(Duration::from_millis(500)).unwrap()),
    );
    let application = Application::new(runtime, charm, store.clone(), watcher.clone(), &config).await.unwrap();
    let mut running = application.start().unwrap();

    // Waits until a unit other than `dead` leads and exactly its file says IS_LEADER=1.
    let settle = |dead: Vec<UnitName>| {
        let (store, watcher, app) = (store.clone(), watcher.clone(), app.clone());
        async move {
            for _ in 0..3000 {
                let leader = store.lease(&app).await.unwrap().map(|l| l.holder).filter(|l| !dead.contains(l));
                if let Some(leader) = leader
                    && watcher.leaders_in_files() == [leader.clone()]
                {
                    return (Some(leader.clone()), vec![leader]);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (store.lease(&app).await.unwrap().map(|l| l.holder), watcher.leaders_in_files())
        }
    };
    let (first, files) = settle(vec![]).await;
    let first = first.expect("a leader");
    assert_eq!(files, std::slice::from_ref(&first), "exactly the leader's file says IS_LEADER=1");

    running.stop_unit(&first).await.unwrap();
    watcher.dead.lock().unwrap().push(first.clone());
    let (second, files) = settle(vec![first.clone()]).await;
    let second = second.expect("a successor after the stop");
    assert_ne!(second, first);
    assert_eq!(files, std::slice::from_ref(&second));

    running.kill(&second).unwrap();
    watcher.dead.lock().unwrap().push(second.clone());
    // The crashed leader's lease (1 s: twice the window) runs out first.
    let (third, files) = settle(vec![first.clone(), second.clone()]).await;
    let third = third.expect("a successor after the crash");
    assert!(third != first && third != second);
    assert_eq!(files, std::slice::from_ref(&third));
    running.stop().await;

    assert!(watcher.violations.lock().unwrap().is_empty(), "{:?}", watcher.violations.lock().unwrap());
    let seen = watcher.leaders_seen.lock().unwrap();
    assert!(
        seen.iter().any(|(u, h, _)| *u == first && *h == HookKind::LeaderDeposed),
        "the stopped leader was deposed"
    );
    let content =
        std::fs::read_to_string(StateDir::new(dir.path()).data_dir(&first).join("etc/cron.d/web-maintenance")).unwrap();
    assert!(
        content.contains("IS_LEADER=0\n") && content.contains("[ \"$IS_LEADER\" = 1 ] && /usr/local/bin/maintenance")
    );
}
