//! Prints lease-engine throughput: claim/extend/check in memory and on SQLite (both
//! durability settings), fenced writes on SQLite, and simulator schedules per second.
//! Figures, not assertions: `cargo bench -p charm-host --bench lease_engine [-- --quick]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use charm_host::leadership::simulation::{SimConfig, run_schedule};
use charm_host::leadership::sqlite::{Durability, SqliteOptions};
use charm_host::leadership::{LeadershipStore, ManualClock, MemoryStore, MonotonicClock, SqliteStore};
use charm_host::names::{AppName, UnitName};

const LEASE: Duration = Duration::from_secs(60);

/// Rate of `op` over `n` runs, per second.
fn rate(n: u64, mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        op(i);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// claim (a new grant), extend and check, over `apps` applications: ops per second.
fn claim_extend_check(store: &dyn LeadershipStore, n: u64) -> [f64; 3] {
    let apps: Vec<AppName> = (0..100).map(|i| AppName::new(&format!("app{i}")).unwrap()).collect();
    let units: Vec<UnitName> = apps.iter().map(|a| UnitName::from_parts(a.clone(), 0)).collect();
    let grant = rate(n, |i| {
        let unit = &units[(i % 100) as usize];
        store.revoke(unit).unwrap();
        store.claim(unit, LEASE).unwrap();
    });
    let extend = rate(n, |i| {
        store.claim(&units[(i % 100) as usize], LEASE).unwrap();
    });
    let check = rate(n, |i| {
        assert!(store.lease(&apps[(i % 100) as usize]).unwrap().is_some());
    });
    [grant, extend, check]
}

fn sqlite(dir: &std::path::Path, durability: Durability) -> SqliteStore {
    let options = SqliteOptions { durability, ..SqliteOptions::default() };
    let path = dir.join(format!("{durability:?}.db"));
    SqliteStore::open_with(&path, Arc::new(MonotonicClock), options).unwrap()
}

fn fenced_writes(store: &dyn LeadershipStore, n: u64) -> f64 {
    let unit = UnitName::new("writer/0").unwrap();
    let term = store.claim(&unit, LEASE).unwrap().term;
    rate(n, |i| {
        store.write_settings(&unit, term, &[("key".into(), i.to_string())]).unwrap();
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 10 };
    let dir = tempfile::tempdir().unwrap();
    println!("{:<52} {:>14}", "figure", "per second");
    let memory = MemoryStore::new();
    let [g, e, c] = claim_extend_check(&memory, 100_000 * scale);
    println!("{:<52} {g:>14.0}\n{:<52} {e:>14.0}\n{:<52} {c:>14.0}", "memory: grant (revoke + claim)", "memory: extend", "memory: check");
    println!("{:<52} {:>14.0}", "memory: claim+extend+check mix (one of each)", 3.0 / (1.0 / g + 1.0 / e + 1.0 / c));
    for durability in [Durability::Full, Durability::Normal] {
        let store = sqlite(dir.path(), durability);
        let n = if durability == Durability::Full { 300 * scale } else { 3_000 * scale };
        let [g, e, c] = claim_extend_check(&store, n);
        let name = format!("sqlite {durability:?}");
        println!("{:<52} {g:>14.0}\n{:<52} {e:>14.0}\n{:<52} {c:>14.0}", format!("{name}: grant (revoke + claim)"), format!("{name}: extend"), format!("{name}: check"));
        println!("{:<52} {:>14.0}", format!("{name}: claim+extend+check mix"), 3.0 / (1.0 / g + 1.0 / e + 1.0 / c));
        println!("{:<52} {:>14.0}", format!("{name}: fenced writes"), fenced_writes(&store, n));
    }
    let config = SimConfig::default();
    let schedules = 200 * scale;
    let sim_memory = rate(schedules, |seed| {
        let mut store: Option<Arc<dyn LeadershipStore>> = None;
        let mut open = |clock: &Arc<ManualClock>| store.get_or_insert_with(|| Arc::new(MemoryStore::with_clock(clock.clone()))).clone();
        run_schedule(seed, &config, &mut open).unwrap();
    });
    println!("{:<52} {sim_memory:>14.0}", format!("simulator schedules ({} steps), memory", config.steps));
    let sim_sqlite = rate(schedules / 4, |seed| {
        let path = dir.path().join(format!("sim-{seed}.db"));
        let options = SqliteOptions { durability: Durability::Normal, boot_id: Some("sim".into()), ..SqliteOptions::default() };
        let mut open = |clock: &Arc<ManualClock>| -> Arc<dyn LeadershipStore> {
            Arc::new(SqliteStore::open_with(&path, clock.clone(), options.clone()).unwrap())
        };
        run_schedule(seed, &config, &mut open).unwrap();
    });
    println!("{:<52} {sim_sqlite:>14.0}", format!("simulator schedules ({} steps), sqlite NORMAL", config.steps));
}
