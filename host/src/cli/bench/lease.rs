//! Lease-engine throughput on each store, and the simulator's speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::leadership::simulation::{SimConfig, run_schedule};
use crate::leadership::sqlite::{Durability, SqliteOptions};
use crate::leadership::{Claimant, LeadershipStore, ManualClock, MemoryStore, MonotonicClock, Release, SqliteStore};
use crate::names::{AppName, UnitName};

use super::Figure;

const LEASE: Duration = Duration::from_secs(60);

/// Operations per second of `op` over `n` runs.
fn rate(n: u64, mut op: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    for i in 0..n {
        op(i)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// One grant (revoke + claim), one extend and one check per application, round-robin over
/// 100 applications: operations per second over the mix.
async fn claim_extend_check(store: &dyn LeadershipStore, n: u64) -> anyhow::Result<f64> {
    let apps: Vec<AppName> = (0..100).map(|i| AppName::new(&format!("app{i}"))).collect::<Result<_, _>>()?;
    let units: Vec<Claimant> = apps.iter().map(|a| Claimant::fresh(UnitName::from_parts(a.clone(), 0))).collect();
    let start = Instant::now();
    for i in 0..n as usize {
        let (app, unit) = (&apps[i % 100], &units[i % 100]);
        store.revoke(unit, Release::StepDown).await?;
        store.claim(unit, LEASE).await?;
        store.claim(unit, LEASE).await?;
        anyhow::ensure!(store.lease(app).await?.is_some(), "lost the lease");
    }
    Ok(4.0 * n as f64 / start.elapsed().as_secs_f64())
}

async fn fenced_writes(store: &dyn LeadershipStore, n: u64) -> anyhow::Result<f64> {
    let unit = Claimant::fresh(UnitName::new("writer/0")?);
    let term = store.claim(&unit, LEASE).await?.term;
    let start = Instant::now();
    for i in 0..n {
        store.write_settings(&unit, term, &[("key".into(), i.to_string())]).await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let scale = if quick { 1 } else { 10 };
    let dir = tempfile::tempdir()?;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let memory = tokio.block_on(claim_extend_check(&MemoryStore::new(), 50_000 * scale))?;
    let mut figures = vec![
        Figure::new("lease engine, memory: claim+extend+check", memory, "ops/s")
            .target(">= 1000000 ops/s", memory >= 1e6),
    ];
    for durability in [Durability::Full, Durability::Normal] {
        let options = SqliteOptions { durability, ..SqliteOptions::default() };
        let store =
            SqliteStore::open_with(&dir.path().join(format!("{durability:?}.db")), Arc::new(MonotonicClock), options)?;
        let n = if durability == Durability::Full { 100 * scale } else { 1000 * scale };
        let mix = tokio.block_on(claim_extend_check(&store, n))?;
        let writes = tokio.block_on(fenced_writes(&store, 4 * n))?;
        let name = if durability == Durability::Full { "synchronous=FULL, the default" } else { "synchronous=NORMAL" };
        figures.push(Figure::new(format!("lease engine, SQLite {name}: claim+extend+check"), mix, "ops/s"));
        figures.push(Figure::new(format!("lease engine, SQLite {name}: fenced writes"), writes, "ops/s"));
    }
    let config = SimConfig::default();
    let schedules = 100 * scale;
    let sim = rate(schedules, |seed| {
        let mut store: Option<Arc<dyn LeadershipStore>> = None;
        let mut open = |clock: &Arc<ManualClock>| {
            store.get_or_insert_with(|| Arc::new(MemoryStore::with_clock(clock.clone()))).clone()
        };
        tokio.block_on(run_schedule(seed, &config, &mut open)).map(|_| ()).map_err(anyhow::Error::from)
    })?;
    figures.push(Figure::new(format!("simulator, memory store ({}-step schedules)", config.steps), sim, "schedules/s"));
    Ok(figures)
}
