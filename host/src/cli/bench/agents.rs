//! Handover times (graceful, directed) against a lease-expiry handover, and the fan-out of
//! a settings change to 10, 100 and 1000 units in one process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use charm_host::agent::AgentCommand;
use charm_host::application::{Application, ApplicationConfig, RunningApplication};
use charm_host::events::{Event, EventSink};
use charm_host::hooks::HookKind;
use charm_host::leadership::{LeadershipStore, MemoryStore};
use charm_host::names::{AppName, UnitName};
use charm_host::runtime::{Charm, HookRuntime, RuntimeConfig};
use charm_host::state_dir::StateDir;

use super::{Figure, fixture, median};

/// Records when each hook *started* (its finish minus its duration).
#[derive(Default)]
struct HookStarts {
    starts: Mutex<Vec<(HookKind, Instant)>>,
}

impl EventSink for HookStarts {
    fn emit(&self, event: Event) {
        if let Event::Hook { hook, elapsed, .. } = event
            && let Ok(mut starts) = self.starts.lock()
        {
            starts.push((hook, Instant::now() - elapsed));
        }
    }
}

impl HookStarts {
    fn first_after(&self, hook: HookKind, after: Instant) -> Option<Instant> {
        let starts = self.starts.lock().ok()?;
        starts.iter().filter(|(h, t)| *h == hook && *t >= after).map(|(_, t)| *t).min()
    }

    fn count_after(&self, hook: HookKind, after: Instant) -> usize {
        self.starts.lock().map(|s| s.iter().filter(|(h, t)| *h == hook && *t >= after).count()).unwrap_or(0)
    }
}

struct Bench {
    runtime: Arc<HookRuntime>,
    charm: Charm,
    app: AppName,
}

impl Bench {
    fn start(&self, units: u32, window: Duration, dir: &std::path::Path) -> anyhow::Result<(Application, RunningApplication, Arc<HookStarts>, Arc<dyn LeadershipStore>)> {
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
        let events = Arc::new(HookStarts::default());
        let config = ApplicationConfig {
            app: self.app.clone(),
            units,
            guarantee_window: window,
            state_dir: StateDir::new(dir),
            backoff: Default::default(),
            services: Default::default(),
        };
        let app = Application::new(self.runtime.clone(), self.charm.clone(), store.clone(), events.clone(), &config)?;
        let running = app.start();
        Ok((app, running, events, store))
    }
}

async fn wait_for(mut done: impl FnMut() -> bool, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(start.elapsed() < limit, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// Time from the action until another unit's `leader-elected` starts, in a 3-unit app.
async fn handover(bench: &Bench, window: Duration, action: &str) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let (_app, mut running, events, store) = bench.start(3, window, dir.path())?;
    let epoch = Instant::now();
    wait_for(|| events.count_after(HookKind::LeaderSettingsChanged, epoch) >= 2, Duration::from_secs(60)).await?;
    let leader = store.lease(&bench.app)?.ok_or_else(|| anyhow::anyhow!("no leader"))?.holder;
    let start = Instant::now();
    match action {
        "stop" => running.stop_unit(&leader).await?,
        "step-down" => running.command(&leader, AgentCommand::StepDown).await?,
        "elect" => {
            store.reserve(&UnitName::from_parts(bench.app.clone(), (leader.number() + 1) % 3), Duration::from_secs(60))?;
            running.command(&leader, AgentCommand::StepDown).await?;
        }
        _ => running.kill(&leader)?,
    }
    wait_for(|| events.first_after(HookKind::LeaderElected, start).is_some(), Duration::from_secs(60)).await?;
    let elected = events.first_after(HookKind::LeaderElected, start).unwrap_or(start);
    running.stop().await;
    Ok(elected - start)
}

/// Time from a leader's settings write until every minion has finished its hook.
async fn fan_out(bench: &Bench, units: u32) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let (_app, running, events, store) = bench.start(units, Duration::from_secs(30), dir.path())?;
    let epoch = Instant::now();
    let minions = units as usize - 1;
    wait_for(|| events.count_after(HookKind::LeaderSettingsChanged, epoch) >= minions, Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lease = store.lease(&bench.app)?.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let start = Instant::now();
    store.write_settings(&lease.holder, lease.term, &[("fan-out".into(), "1".into())])?;
    let finished = || {
        let starts = events.starts.lock().map(|s| s.iter().filter(|(h, t)| *h == HookKind::LeaderSettingsChanged && *t >= start).count());
        starts.unwrap_or(0) >= minions
    };
    wait_for(finished, Duration::from_secs(300)).await?;
    let elapsed = start.elapsed();
    running.stop().await;
    Ok(elapsed)
}

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let wasm = fixture("example-charms/shared-settings")?;
    let runtime = Arc::new(HookRuntime::new(RuntimeConfig { cache_dir: None, ..RuntimeConfig::default() })?);
    let charm = runtime.load_charm(&wasm)?;
    let bench = Bench { runtime, charm, app: AppName::new("bench")? };
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async {
        let window = Duration::from_secs(1);
        let expiry = handover(&bench, window, "kill").await?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut figures = Vec::new();
        for action in ["stop", "step-down", "elect"] {
            let mut samples = Vec::new();
            for _ in 0..if quick { 3 } else { 9 } {
                samples.push(handover(&bench, window, action).await?);
            }
            let time = ms(median(&mut samples));
            let kind = if action == "elect" { "directed" } else { "graceful" };
            figures.push(
                Figure::new(format!("{kind} handover ({action} -> successor's leader-elected starts)"), time, "ms")
                    .against(ms(expiry))
                    .target("<= 10 ms", time <= 10.0),
            );
        }
        for units in if quick { vec![10, 100] } else { vec![10, 100, 1000] } {
            let time = ms(fan_out(&bench, units).await?);
            let figure = Figure::new(format!("fan-out: leader-set -> {} minions ran leader-settings-changed", units - 1), time, "ms");
            figures.push(if units == 1000 { figure.target("<= 100 ms", time <= 100.0) } else { figure });
        }
        Ok(figures)
    })
}
