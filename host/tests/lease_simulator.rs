//! The seeded fault simulator against every store: the embedded ones on a manual clock, and
//! etcd (a real server this test starts) in real time with etcd's rules, a reduced run.
//! `LEASE_SIM_SCHEDULES` sets how many schedules each store runs (default 2000 in memory,
//! 500 on SQLite, 3 on etcd; raise it for a soak) and `LEASE_SIM_SEED` the first seed. A
//! failure prints its seed.

#[path = "../../tests/support/etcd.rs"]
mod etcd;
#[path = "support/sqlite_copy.rs"]
mod sqlite_copy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use charm_host::leadership::etcd::{EtcdOptions, EtcdStore};
use charm_host::leadership::simulation::{
    SimConfig, SimStats, StoreCopies, run_schedule, run_schedule_with_rollbacks, run_schedule_with_wipes,
};
use charm_host::leadership::sqlite::{Durability, NewStore, SqliteOptions};
use charm_host::leadership::{LeadershipStore, ManualClock, MemoryStore, SqliteStore};
use sqlite_copy::SqliteCopy;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")))
}

fn schedules(default: u64) -> (u64, u64) {
    (env_u64("LEASE_SIM_SEED").unwrap_or(1), env_u64("LEASE_SIM_SCHEDULES").unwrap_or(default))
}

/// A simulated unit's SQLite store: a process restart, which NORMAL already survives, is
/// all a reopening models (FULL's fsyncs would only slow the simulator down).
fn sim_options() -> SqliteOptions {
    SqliteOptions { durability: Durability::Normal, boot_id: Some("sim".into()), ..SqliteOptions::default() }
}

fn report(store: &str, count: u64, stats: SimStats, elapsed: Duration) {
    eprintln!(
        "{store}: {count} schedules in {elapsed:.2?} ({:.0} schedules/s): {stats:?}",
        count as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn memory_store_survives_random_schedules() {
    let (first, count) = schedules(2000);
    let config = SimConfig::default();
    let start = Instant::now();
    let mut total = SimStats::default();
    for seed in first..first + count {
        let mut store: Option<Arc<dyn LeadershipStore>> = None;
        // The memory store outlives the simulated unit processes: reopening returns it.
        let mut open = |clock: &Arc<ManualClock>| {
            store.get_or_insert_with(|| Arc::new(MemoryStore::with_clock(clock.clone()))).clone()
        };
        total += run_schedule(seed, &config, &mut open).await.unwrap_or_else(|failure| {
            panic!("{failure}\nreplay: LEASE_SIM_SEED={seed} LEASE_SIM_SCHEDULES=1 cargo test --test lease_simulator memory")
        });
    }
    report("memory", count, total, start.elapsed());
    assert!(total.grants > 0 && total.denials > 0 && total.writes_applied > 0 && total.writes_fenced > 0);
}

/// The SQLite file deleted under the running units now and then, and a new one made in its
/// place (as `--accept-new-store` does): claims the lost file granted stand until they run
/// out, and the new store grants nothing before, so no two units ever believe they lead.
#[tokio::test]
async fn sqlite_store_survives_losing_its_file_under_running_units() {
    let (first, count) = schedules(300);
    let config = SimConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut total = SimStats::default();
    for seed in first..first + count {
        let path = dir.path().join(format!("wiped-{seed}.db"));
        let options = sim_options();
        let mut open = |clock: &Arc<ManualClock>| -> Arc<dyn LeadershipStore> {
            Arc::new(SqliteStore::open_with(&path, clock.clone(), options.clone()).expect("open the store"))
        };
        let mut wipe = |clock: &Arc<ManualClock>, wait: Duration| -> Arc<dyn LeadershipStore> {
            std::fs::remove_file(&path).expect("delete the store");
            let options = SqliteOptions { new_store: NewStore::CreateAfterLoss { wait }, ..options.clone() };
            Arc::new(SqliteStore::open_with(&path, clock.clone(), options).expect("make a new store"))
        };
        total += run_schedule_with_wipes(seed, &config, &mut open, &mut wipe).await.unwrap_or_else(|failure| {
            panic!("{failure}\nreplay: LEASE_SIM_SEED={seed} LEASE_SIM_SCHEDULES=1 cargo test --test lease_simulator losing")
        });
        let _ = std::fs::remove_file(&path);
    }
    report("sqlite, lost under the units", count, total, start.elapsed());
    assert!(total.wipes > 0 && total.grants > 0 && total.denials > 0);
}

impl StoreCopies for SqliteCopy {
    fn take(&mut self) -> Result<(), String> {
        SqliteCopy::take(self)
    }

    fn put_back(&mut self) -> Result<(), String> {
        SqliteCopy::put_back(self)
    }

    fn open_put_back(&mut self, clock: &Arc<ManualClock>, wait: Duration) -> Result<Arc<dyn LeadershipStore>, String> {
        Ok(Arc::new(self.adopt(clock, wait)?))
    }
}

/// An older copy of the SQLite file put back under the running units now and then: nothing
/// is decided on it by a unit that saw more, it is refused as a copy when units are
/// restarted on it, and once accepted they find exactly what the copy held, and no unit
/// leads before every claim of the old file has run out.
#[tokio::test]
async fn sqlite_store_put_back_to_an_older_copy_under_running_units() {
    let (first, count) = schedules(300);
    let config = SimConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut total = SimStats::default();
    for seed in first..first + count {
        let path = dir.path().join(format!("rolled-{seed}.db"));
        let options = sim_options();
        let mut open = |clock: &Arc<ManualClock>| -> Arc<dyn LeadershipStore> {
            Arc::new(SqliteStore::open_with(&path, clock.clone(), options.clone()).expect("open the store"))
        };
        let copy = dir.path().join(format!("copy-{seed}.db"));
        let mut copies = SqliteCopy { path: path.clone(), copy, options: options.clone() };
        total += run_schedule_with_rollbacks(seed, &config, &mut open, &mut copies).await.unwrap_or_else(|failure| {
            panic!("{failure}\nreplay: LEASE_SIM_SEED={seed} LEASE_SIM_SCHEDULES=1 cargo test --test lease_simulator older_copy")
        });
    }
    report("sqlite, older copies put back", count, total, start.elapsed());
    assert!(total.rollbacks > 0 && total.grants > 0 && total.writes_applied > 0);
}

#[tokio::test]
async fn sqlite_store_survives_random_schedules_and_reopenings() {
    let (first, count) = schedules(500);
    let config = SimConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut total = SimStats::default();
    for seed in first..first + count {
        let path = dir.path().join(format!("sim-{seed}.db"));
        let options = sim_options();
        let mut open = |clock: &Arc<ManualClock>| -> Arc<dyn LeadershipStore> {
            Arc::new(SqliteStore::open_with(&path, clock.clone(), options.clone()).expect("open the store"))
        };
        total += run_schedule(seed, &config, &mut open).await.unwrap_or_else(|failure| {
            panic!("{failure}\nreplay: LEASE_SIM_SEED={seed} LEASE_SIM_SCHEDULES=1 cargo test --test lease_simulator sqlite")
        });
        let _ = std::fs::remove_file(&path);
    }
    report("sqlite", count, total, start.elapsed());
    assert!(total.reopenings > 0 && total.writes_fenced > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_survives_real_time_schedules() {
    let (first, count) = schedules(3);
    let cluster = etcd::EtcdCluster::start(1);
    let config = SimConfig::real_time_etcd(40);
    let start = Instant::now();
    let mut total = SimStats::default();
    for seed in first..first + count {
        // A prefix of its own per schedule: each starts from an empty store.
        // A prefix of a cluster this test started: no agent ever used it.
        let mut options = EtcdOptions::from_url(&cluster.url_with_prefix(&format!("sim-{seed}"))).unwrap();
        options.unused_prefix = true;
        let store: Arc<dyn LeadershipStore> = Arc::new(EtcdStore::connect(&options).await.unwrap());
        let mut open = |_: &Arc<ManualClock>| store.clone();
        total += run_schedule(seed, &config, &mut open).await.unwrap_or_else(|failure| {
            panic!(
                "{failure}\nreplay: LEASE_SIM_SEED={seed} LEASE_SIM_SCHEDULES=1 cargo test --test lease_simulator etcd"
            )
        });
    }
    report("etcd", count, total, start.elapsed());
    assert!(total.grants > 0 && total.writes_applied > 0, "the run did something: {total:?}");
}
