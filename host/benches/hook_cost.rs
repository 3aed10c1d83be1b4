//! Prints what a hook costs: dispatch (fresh store + instantiate + trivial hook + drop)
//! against spawning a native process per hook, the per-call cost of `is-leader` and
//! `leader-get` from a guest, and a charm's cold compile against a cached load.
//! Figures, not assertions: run with `cargo bench -p charm-host --bench hook_cost`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use charm_host::charm_build::build_charm;
use charm_host::events::RecordingSink;
use charm_host::hooks::HookKind;
use charm_host::leadership::{LeadershipStore, MemoryStore};
use charm_host::names::UnitName;
use charm_host::runtime::{Charm, HookRuntime, RuntimeConfig};
use charm_host::tracker::LeadershipTracker;
use charm_host::unit::Unit;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn samples(n: usize, mut f: impl FnMut() -> Duration) -> Vec<Duration> {
    let mut all: Vec<Duration> = (0..n).map(|_| f()).collect();
    all.sort();
    all
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 200 } else { 5000 };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let shared = build_charm(&root.join("example-charms/shared-settings"))?;
    let probe = build_charm(&root.join("tests/charms/probe"))?;
    let cache = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let runtime = |cache: Option<PathBuf>| {
        HookRuntime::new(RuntimeConfig { cache_dir: cache, ..RuntimeConfig::default() }).map(Arc::new)
    };
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    // Cold compile vs cached load.
    let cold = samples(3, || runtime(Some(cache.path().join(format!("{:?}", Instant::now())))).unwrap().load_charm(&shared).unwrap().load_time());
    let _ = runtime(Some(cache.path().to_owned()))?.load_charm(&shared)?;
    let warm = samples(if quick { 5 } else { 20 }, || {
        let charm = runtime(Some(cache.path().to_owned())).unwrap().load_charm(&shared).unwrap();
        assert!(charm.from_cache());
        charm.load_time()
    });

    let rt = runtime(None)?;
    let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
    let unit = |name: &str| {
        let name = UnitName::new(name).unwrap();
        let tracker = LeadershipTracker::new(name.clone(), store.clone(), Duration::from_secs(30));
        Arc::new(Unit::new(name.clone(), data.path().join(name.as_str().replace('/', "-")), tracker, Arc::new(RecordingSink::new())).unwrap())
    };
    let leader = unit("bench/0");
    leader.tracker().refresh();
    let shared_charm = rt.load_charm(&shared)?;
    let probe_charm = rt.load_charm(&probe)?;

    // Hook dispatch: shared-settings' `stop` is the SDK's default no-op.
    let run = |charm: &Charm, hook| {
        let start = Instant::now();
        let outcome = tokio.block_on(rt.run_hook_quietly(charm, &leader, hook));
        assert_eq!(outcome.result, Ok(()));
        start.elapsed()
    };
    for _ in 0..50 {
        run(&shared_charm, HookKind::Stop);
    }
    let dispatch = samples(n, || run(&shared_charm, HookKind::Stop));
    let spawn = samples(n.min(1000), || {
        let start = Instant::now();
        std::process::Command::new("/bin/true").status().unwrap();
        start.elapsed()
    });

    // Per-call costs: a hook making `calls` calls minus one making none, divided by `calls`.
    let calls = if quick { 10_000 } else { 200_000 };
    store.write_settings(leader.name(), leader.tracker().held_term().unwrap(), &[("key".into(), "value".into())])?;
    let per_call = |command: &str| {
        let script = |count: u32| format!("{command}").replace("{n}", &count.to_string());
        let time = |count: u32| {
            std::fs::write(leader.data_dir().join("script"), script(count)).unwrap();
            samples(5, || run(&probe_charm, HookKind::Install))[2]
        };
        let (none, many) = (time(0), time(calls));
        many.saturating_sub(none).as_secs_f64() * 1e9 / calls as f64
    };
    let is_leader_ns = per_call("call-is-leader {n}");
    let leader_get_ns = per_call("call-get {n} key");

    println!("figure                                   value");
    println!("hook dispatch p50 / p99                  {:.1} µs / {:.1} µs", micros(percentile(&dispatch, 0.5)), micros(percentile(&dispatch, 0.99)));
    println!("baseline: spawn /bin/true p50 / p99      {:.1} µs / {:.1} µs", micros(percentile(&spawn, 0.5)), micros(percentile(&spawn, 0.99)));
    println!("  ratio (spawn p50 / dispatch p50)       {:.1}x", percentile(&spawn, 0.5).as_secs_f64() / percentile(&dispatch, 0.5).as_secs_f64());
    println!("is-leader per call from a guest          {is_leader_ns:.0} ns");
    println!("leader-get per call from a guest         {leader_get_ns:.0} ns");
    println!("shared-settings cold compile (median)    {:.1} ms", percentile(&cold, 0.5).as_secs_f64() * 1e3);
    println!("shared-settings cached load (median)     {:.2} ms", percentile(&warm, 0.5).as_secs_f64() * 1e3);
    Ok(())
}
