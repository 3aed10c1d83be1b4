//! Renewal latency of idle leaders while one leader runs a `leader-set` storm, on SQLite
//! with `synchronous=FULL` (an fsync per commit), against the same figure with no storm in
//! the same run: a slow store call must hold only the hook that made it, never the renewals
//! of other units on the same runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::agent::{UnitSetup, UnitSpec};
use crate::events::RecordingSink;
use crate::hooks::HookKind;
use crate::leadership::sqlite::{Durability, SqliteOptions};
use crate::leadership::{LeadershipStore, MonotonicClock, SqliteStore};
use crate::names::{AppName, UnitName};
use crate::runtime::{HookRuntime, RuntimeConfig};
use crate::state_dir::StateDir;
use crate::timing::GuaranteeWindow;
use crate::tracker::{LeadershipTracker, Refresh};

use super::{Figure, fixture, percentile};

/// Idle leaders renewing, one per application.
const IDLE_LEADERS: u32 = 20;
/// How often each idle leader renews while measured (far more often than a real one, to
/// gather samples quickly).
const RENEW_EVERY: Duration = Duration::from_millis(10);
/// `leader-set` calls per storm hook.
const SETS_PER_HOOK: u32 = 50;

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let probe = fixture("tests/charms/probe")?;
    let runtime = Arc::new(HookRuntime::new(RuntimeConfig { cache_dir: None, ..RuntimeConfig::default() })?);
    let charm = runtime.load_charm(&probe)?;
    let dir = tempfile::tempdir()?;
    let options = SqliteOptions { durability: Durability::Full, ..SqliteOptions::default() };
    let store: Arc<dyn LeadershipStore> =
        Arc::new(SqliteStore::open_with(&dir.path().join("state.db"), Arc::new(MonotonicClock), options)?);
    let measure_for = if quick { Duration::from_millis(500) } else { Duration::from_secs(3) };
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async {
        let window = Duration::from_secs(30);
        let mut idle = Vec::new();
        for a in 0..IDLE_LEADERS {
            let unit = UnitName::from_parts(AppName::new(&format!("idle{a}"))?, 0);
            let tracker = Arc::new(LeadershipTracker::new(unit, store.clone(), window));
            anyhow::ensure!(matches!(tracker.refresh().await, Refresh::Leader { .. }), "an idle unit did not lead");
            idle.push(tracker);
        }
        let name = UnitName::new("storm/0")?;
        let events = Arc::new(RecordingSink::new());
        let storm_unit = UnitSpec::new(name, StateDir::new(dir.path()), store.clone(), events).with_setup(UnitSetup::default().with_window(GuaranteeWindow::new(window)?))
            .bare()?;
        anyhow::ensure!(matches!(storm_unit.tracker.refresh().await, Refresh::Leader { .. }), "the storm unit did not lead");
        let stormer = Arc::new(storm_unit.sandbox);
        let script: String = (0..SETS_PER_HOOK).map(|i| format!("set key{}=value{i}\n", i % 8)).collect();
        std::fs::write(stormer.unit().data_dir().join("script"), script)?;

        let quiet = renewal_latencies(&idle, measure_for).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let hooks = Arc::new(AtomicU64::new(0));
        let storm = tokio::spawn({
            let (stop, hooks, runtime, charm, stormer) = (stop.clone(), hooks.clone(), runtime.clone(), charm.clone(), stormer.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(stormer.unit().data_dir().join("results"));
                    runtime.run_hook_quietly(&charm, &stormer, HookKind::LeaderElected).await.result?;
                    hooks.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }
        });
        let storm_start = Instant::now();
        let stormy = renewal_latencies(&idle, measure_for).await?;
        let storm_time = storm_start.elapsed();
        stop.store(true, Ordering::Relaxed);
        storm.await??;
        let sets = hooks.load(Ordering::Relaxed) * u64::from(SETS_PER_HOOK);
        anyhow::ensure!(sets > 0, "the storm wrote nothing");
        let sets_per_s = sets as f64 / storm_time.as_secs_f64();
        let (mut quiet, mut stormy) = (quiet, stormy);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (quiet99, stormy99) = (ms(percentile(&mut quiet, 0.99)), ms(percentile(&mut stormy, 0.99)));
        Ok(vec![
            Figure::new(
                format!("renewal p99 of {IDLE_LEADERS} idle leaders, SQLite synchronous=FULL, during a leader-set storm ({sets_per_s:.0} sets/s)"),
                stormy99,
                "ms",
            )
            .against(quiet99)
            .target("<= 3x the p99 with no storm", stormy99 <= 3.0 * quiet99),
        ])
    })
}

/// Every idle leader renews every [`RENEW_EVERY`] for `how_long`; the latency of each renewal.
async fn renewal_latencies(idle: &[Arc<LeadershipTracker>], how_long: Duration) -> anyhow::Result<Vec<Duration>> {
    let until = Instant::now() + how_long;
    let tasks: Vec<_> = idle
        .iter()
        .map(|tracker| {
            let tracker = tracker.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut tick = tokio::time::interval(RENEW_EVERY);
                while Instant::now() < until {
                    tick.tick().await;
                    let start = Instant::now();
                    let refresh = tracker.refresh().await;
                    latencies.push(start.elapsed());
                    anyhow::ensure!(
                        matches!(refresh, Refresh::Leader { .. }),
                        "an idle leader lost its lease: {refresh:?}"
                    );
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}
