//! Host memory per idle unit: the resident-set growth of this process per unit, once a
//! crowd of units has installed and settled. A first crowd warms the runtime up (its pooled
//! instance slots stay resident once used), so the figure counts what each unit keeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::application::{Application, ApplicationConfig};
use crate::events::{Event, EventKind, EventSink};
use crate::leadership::{LeadershipStore, MemoryStore};
use crate::names::AppName;
use crate::runtime::{HookRuntime, RuntimeConfig};
use crate::state_dir::StateDir;

use super::{Figure, fixture};

/// Counts finished hooks.
#[derive(Default)]
struct HookCount(std::sync::atomic::AtomicUsize);

impl EventSink for HookCount {
    fn emit(&self, event: Event) {
        if matches!(event.kind, EventKind::Hook { .. }) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// This process's resident set, in KiB.
fn rss_kib() -> anyhow::Result<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: f64 =
        statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).ok_or_else(|| anyhow::anyhow!("bad statm"))?;
    Ok(pages * rustix::param::page_size() as f64 / 1024.0)
}

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let wasm = fixture("example-charms/shared-settings")?;
    let runtime = Arc::new(HookRuntime::new(RuntimeConfig { cache_dir: None, ..RuntimeConfig::default() })?);
    let charm = runtime.load_charm(&wasm)?;
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut figures = Vec::new();
    let warm_up = RuntimeConfig::default().max_concurrent_hooks * 2;
    for (index, units) in
        [warm_up].into_iter().chain(if quick { vec![100u32, 1000] } else { vec![1000, 10_000] }).enumerate()
    {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
        let hooks = Arc::new(HookCount::default());
        let config = ApplicationConfig::new(AppName::new("crowd")?, units, StateDir::new(dir.path()));
        let per_unit = tokio.block_on(async {
            let before = rss_kib()?;
            let app = Application::new(runtime.clone(), charm.clone(), store, hooks.clone(), &config).await?;
            let mut running = app.start()?;
            // Every unit runs install and one leadership hook; then it idles.
            let start = Instant::now();
            while hooks.0.load(std::sync::atomic::Ordering::Relaxed) < 2 * units as usize {
                anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "{units} units did not settle");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = rss_kib()?;
            running.stop().await;
            drop(app);
            Ok::<_, anyhow::Error>((after - before) / f64::from(units))
        })?;
        if index > 0 {
            figures.push(
                Figure::new(format!("host memory per idle unit, {units} units"), per_unit, "KiB")
                    .target("<= 64 KiB", per_unit <= 64.0),
            );
        }
    }
    Ok(figures)
}
