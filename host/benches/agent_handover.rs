//! Prints unit-agent figures: graceful (stop, step-down) and directed (elect) handover
//! times against a lease-expiry handover measured in the same run, and the fan-out time
//! from a leader's settings write until every minion has finished its
//! `leader-settings-changed`, for 10, 100 and 1000 units in one process.
//! Figures, not assertions: `cargo bench -p charm-host --bench agent_handover [-- --quick]`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use charm_host::agent::{AgentCommand, Backoff};
use charm_host::application::{Application, ApplicationConfig, RunningApplication};
use charm_host::charm_build::build_charm;
use charm_host::events::{Event, EventSink};
use charm_host::hooks::HookKind;
use charm_host::leadership::{LeadershipStore, MemoryStore};
use charm_host::names::{AppName, UnitName};
use charm_host::runtime::{Charm, HookRuntime, RuntimeConfig};
use charm_host::state_dir::StateDir;

/// Records when each hook *started* (finish time minus its duration).
#[derive(Default)]
struct HookStarts {
    starts: Mutex<Vec<(UnitName, HookKind, Instant)>>,
}

impl EventSink for HookStarts {
    fn emit(&self, event: Event) {
        if let Event::Hook { unit, hook, elapsed, .. } = event
            && let Ok(mut starts) = self.starts.lock()
        {
            starts.push((unit, hook, Instant::now() - elapsed));
        }
    }
}

impl HookStarts {
    fn first_after(&self, hook: HookKind, after: Instant) -> Option<(UnitName, Instant)> {
        let starts = self.starts.lock().ok()?;
        starts.iter().find(|(_, h, t)| *h == hook && *t >= after).map(|(u, _, t)| (u.clone(), *t))
    }

    fn count_after(&self, hook: HookKind, after: Instant) -> usize {
        self.starts.lock().map(|s| s.iter().filter(|(_, h, t)| *h == hook && *t >= after).count()).unwrap_or(0)
    }
}

struct Setup {
    runtime: Arc<HookRuntime>,
    charm: Charm,
}

fn application(setup: &Setup, units: u32, window: Duration, dir: &Path) -> (Application, Arc<HookStarts>, Arc<dyn LeadershipStore>) {
    let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
    let events = Arc::new(HookStarts::default());
    let config = ApplicationConfig {
        app: AppName::new("bench").unwrap(),
        units,
        guarantee_window: window,
        state_dir: StateDir::new(dir),
        backoff: Backoff::default(),
        services: Default::default(),
    };
    let app = Application::new(setup.runtime.clone(), setup.charm.clone(), store.clone(), events.clone(), &config).unwrap();
    (app, events, store)
}

async fn wait_for(mut done: impl FnMut() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    false
}

/// Starts a 3-unit application, waits until it settles, and returns it with its leader.
async fn settled(setup: &Setup, window: Duration, dir: &Path) -> (Application, RunningApplication, Arc<HookStarts>, Arc<dyn LeadershipStore>, UnitName) {
    let (app, events, store) = application(setup, 3, window, dir);
    let running = app.start();
    let name = AppName::new("bench").unwrap();
    let epoch = Instant::now() - Duration::from_secs(3600);
    wait_for(|| events.count_after(HookKind::LeaderSettingsChanged, epoch) >= 2, Duration::from_secs(30)).await;
    let leader = store.lease(&name).unwrap().unwrap().holder;
    (app, running, events, store, leader)
}

/// Time from `act` until another unit's `leader-elected` starts.
async fn handover(setup: &Setup, window: Duration, act: &str) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (_app, mut running, events, store, leader) = settled(setup, window, dir.path()).await;
    let start = Instant::now();
    match act {
        "stop" => running.stop_unit(&leader).await.unwrap(),
        "step-down" => running.command(&leader, AgentCommand::StepDown).await.unwrap(),
        "elect" => {
            let target = UnitName::from_parts(leader.app().clone(), (leader.number() + 1) % 3);
            store.reserve(&target, Duration::from_secs(60)).unwrap();
            running.command(&leader, AgentCommand::StepDown).await.unwrap();
        }
        _ => running.kill(&leader).unwrap(),
    }
    wait_for(|| events.first_after(HookKind::LeaderElected, start).is_some(), Duration::from_secs(60)).await;
    let (_, elected) = events.first_after(HookKind::LeaderElected, start).expect("a successor");
    running.stop().await;
    elected - start
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let wasm = build_charm(&root.join("example-charms/shared-settings")).unwrap();
    let runtime = Arc::new(HookRuntime::new(RuntimeConfig { max_concurrent_hooks: 64, ..RuntimeConfig::default() }).unwrap());
    let charm = runtime.load_charm(&wasm).unwrap();
    let setup = Setup { runtime, charm };
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let rounds = if quick { 3 } else { 9 };
    tokio.block_on(async {
        let window = Duration::from_secs(1);
        let mut rows = Vec::new();
        for act in ["stop", "step-down", "elect"] {
            let mut samples = Vec::new();
            for _ in 0..rounds {
                samples.push(handover(&setup, window, act).await);
            }
            rows.push((act, median(samples)));
        }
        let expiry = median(vec![handover(&setup, window, "kill").await]);
        println!("{:<60} {:>12}", "figure", "median");
        for (act, time) in &rows {
            println!("{:<60} {:>9.2} ms   ({:.0}x faster than expiry)", format!("handover after {act} (-> successor's leader-elected starts)"), time.as_secs_f64() * 1e3, expiry.as_secs_f64() / time.as_secs_f64());
        }
        println!("{:<60} {:>9.2} ms", "baseline: handover by lease expiry (leader killed, 1 s window)", expiry.as_secs_f64() * 1e3);

        for units in [10u32, 100, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let (app, events, store) = application(&setup, units, Duration::from_secs(30), dir.path());
            let running = app.start();
            let name = AppName::new("bench").unwrap();
            let epoch = Instant::now() - Duration::from_secs(3600);
            let settled = wait_for(|| events.count_after(HookKind::LeaderSettingsChanged, epoch) >= units as usize - 1, Duration::from_secs(120)).await;
            assert!(settled, "{units} units did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let leader = store.lease(&name).unwrap().unwrap();
            let start = Instant::now();
            store.write_settings(&leader.holder, leader.term, &[("fan-out".into(), "1".into())]).unwrap();
            let done = wait_for(|| events.count_after(HookKind::LeaderSettingsChanged, start) >= units as usize - 1, Duration::from_secs(120)).await;
            let elapsed = start.elapsed();
            assert!(done, "fan-out to {units} units did not finish");
            println!("{:<60} {:>9.2} ms", format!("fan-out: leader-set -> all {} minions ran leader-settings-changed", units - 1), elapsed.as_secs_f64() * 1e3);
            running.stop().await;
        }
    });
}
