//! Handover times (graceful, directed) against a lease-expiry handover, and the fan-out of
//! a settings change to 10, 100 and 1000 units in one process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::{AgentCommand, UnitSetup};
use crate::application::{Application, ApplicationConfig, RunningApplication};
use crate::events::{Event, EventKind, EventSink};
use crate::hooks::HookKind;
use crate::leadership::{LeadershipStore, MemoryStore};
use crate::names::{AppName, UnitName};
use crate::runtime::{Charm, HookRuntime, RuntimeConfig};
use crate::state_dir::StateDir;
use crate::timing::GuaranteeWindow;

use super::{Figure, fixture, median};

/// Records when hooks *started* (their finish minus their duration): the first
/// `leader-elected` and the number of `leader-settings-changed` that started after a mark.
/// Cheap to ask, so that polling it does not slow the hooks being measured.
struct HookStarts {
    mark: Mutex<Instant>,
    first_elected: Mutex<Option<Instant>>,
    settings_changed: std::sync::atomic::AtomicUsize,
}

impl Default for HookStarts {
    fn default() -> Self {
        Self { mark: Mutex::new(Instant::now()), first_elected: Mutex::new(None), settings_changed: Default::default() }
    }
}

impl EventSink for HookStarts {
    fn emit(&self, event: Event) {
        let EventKind::Hook { hook, elapsed, .. } = event.kind else { return };
        let started = Instant::now() - elapsed;
        if self.mark.lock().is_ok_and(|mark| started < *mark) {
            return;
        }
        match hook {
            HookKind::LeaderElected => {
                if let Ok(mut first) = self.first_elected.lock() {
                    first.get_or_insert(started);
                }
            }
            HookKind::LeaderSettingsChanged => {
                self.settings_changed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

impl HookStarts {
    /// Counts only hooks that start from now on.
    fn set_mark(&self) -> Instant {
        let now = Instant::now();
        if let Ok(mut mark) = self.mark.lock() {
            *mark = now;
        }
        if let Ok(mut first) = self.first_elected.lock() {
            *first = None;
        }
        self.settings_changed.store(0, std::sync::atomic::Ordering::Relaxed);
        now
    }

    fn first_elected(&self) -> Option<Instant> {
        self.first_elected.lock().ok().and_then(|f| *f)
    }

    fn settings_changed(&self) -> usize {
        self.settings_changed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Bench {
    runtime: Arc<HookRuntime>,
    charm: Charm,
    app: AppName,
}

impl Bench {
    async fn start(
        &self,
        units: u32,
        window: Duration,
        dir: &std::path::Path,
    ) -> anyhow::Result<(Application, RunningApplication, Arc<HookStarts>, Arc<dyn LeadershipStore>)> {
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
        let events = Arc::new(HookStarts::default());
        let config = ApplicationConfig::new(self.app.clone(), units, StateDir::new(dir))
            .with_setup(UnitSetup::default().with_window(GuaranteeWindow::new(window)?));
        let app =
            Application::new(self.runtime.clone(), self.charm.clone(), store.clone(), events.clone(), &config).await?;
        let running = app.start()?;
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
    let (_app, mut running, events, store) = bench.start(3, window, dir.path()).await?;
    wait_for(|| events.settings_changed() >= 2, Duration::from_secs(60)).await?;
    let leader = store.lease(&bench.app).await?.ok_or_else(|| anyhow::anyhow!("no leader"))?.holder;
    let start = events.set_mark();
    match action {
        "stop" => running.stop_unit(&leader).await?,
        "step-down" => running.command(&leader, AgentCommand::StepDown).await?,
        // The leader's agent steps down for the unit the lease is reserved for.
        "elect" => {
            let successor = UnitName::from_parts(bench.app.clone(), (leader.number() + 1) % 3);
            crate::handover::request(store.as_ref(), &successor, Duration::from_secs(60)).await?;
        }
        _ => running.kill(&leader)?,
    }
    wait_for(|| events.first_elected().is_some(), Duration::from_secs(60)).await?;
    let elected = events.first_elected().unwrap_or(start);
    running.stop().await;
    Ok(elected - start)
}

/// Median time, over `rounds` writes, from a leader's settings write until every minion
/// has finished its hook.
async fn fan_out(bench: &Bench, units: u32, rounds: u32) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let (app, mut running, events, store) = bench.start(units, Duration::from_secs(30), dir.path()).await?;
    let minions = units as usize - 1;
    wait_for(|| events.settings_changed() >= minions, Duration::from_secs(300)).await?;
    let lease = store.lease(&bench.app).await?.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    // Written as the leader's agent: the store fences by its incarnation.
    let leader =
        app.units().iter().find(|u| *u.name() == lease.holder).ok_or_else(|| anyhow::anyhow!("no leading unit"))?;
    let writer = leader.leadership().claimant().clone();
    let mut samples = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = events.set_mark();
        store.write_settings(&writer, lease.term, &[("fan-out".into(), round.to_string())]).await?;
        wait_for(|| events.settings_changed() >= minions, Duration::from_secs(300)).await?;
        samples.push(start.elapsed());
    }
    running.stop().await;
    Ok(median(&mut samples))
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
            let time = ms(fan_out(&bench, units, if quick { 3 } else { 7 }).await?);
            let figure = Figure::new(
                format!("fan-out: leader-set -> {} minions ran leader-settings-changed", units - 1),
                time,
                "ms",
            );
            figures.push(if units == 1000 { figure.target("<= 20 ms", time <= 20.0) } else { figure });
        }
        Ok(figures)
    })
}
