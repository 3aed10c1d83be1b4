//! Hook dispatch against a process spawn, host-call costs against an empty host call,
//! and a charm's cached start against its cold compile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::RecordingSink;
use crate::hooks::HookKind;
use crate::leadership::{LeadershipStore, MemoryStore};
use crate::names::UnitName;
use crate::runtime::{Charm, HookRuntime, RuntimeConfig};
use crate::tracker::LeadershipTracker;
use crate::unit::Unit;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{Figure, fixture, median, percentile};

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let shared = fixture("example-charms/shared-settings")?;
    let probe = fixture("tests/charms/probe")?;
    let empty = fixture("tests/charms/empty-call")?;
    let data = tempfile::tempdir()?;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let runtime = HookRuntime::new(RuntimeConfig { cache_dir: None, ..RuntimeConfig::default() })?;
    let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
    let name = UnitName::new("bench/0")?;
    let tracker = LeadershipTracker::new(name.clone(), store.clone(), Duration::from_secs(30));
    let unit = Arc::new(Unit::new(name.clone(), data.path().join("bench-0"), tracker, Arc::new(RecordingSink::new()))?);
    tokio.block_on(unit.tracker().refresh());
    let term = unit.tracker().held_term().ok_or_else(|| anyhow::anyhow!("the bench unit did not become leader"))?;
    tokio.block_on(store.write_settings(&name, term, &[("key".into(), "value".into())]))?;

    let run = |charm: &Charm, hook| -> anyhow::Result<Duration> {
        let start = Instant::now();
        let outcome = tokio.block_on(runtime.run_hook_quietly(charm, &unit, hook));
        let elapsed = start.elapsed();
        outcome.result.map_err(|e| anyhow::anyhow!("{hook} failed: {e}"))?;
        Ok(elapsed)
    };

    // Dispatch: shared-settings' `stop` is the SDK's default, a no-op.
    let shared_charm = runtime.load_charm(&shared)?;
    let n = if quick { 300 } else { 5000 };
    for _ in 0..50 {
        run(&shared_charm, HookKind::Stop)?;
    }
    let mut dispatch = (0..n).map(|_| run(&shared_charm, HookKind::Stop)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut spawn = (0..n.min(1000))
        .map(|_| {
            let start = Instant::now();
            std::process::Command::new("/bin/true").status()?;
            Ok(start.elapsed())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (p50, p99) = (us(percentile(&mut dispatch, 0.5)), us(percentile(&mut dispatch, 0.99)));
    let (spawn50, spawn99) = (us(percentile(&mut spawn, 0.5)), us(percentile(&mut spawn, 0.99)));
    let mut figures = vec![
        Figure::new("hook dispatch p50 (fresh store + instance + trivial hook)", p50, "us")
            .against(spawn50)
            .target(">= 50x spawn, <= 20 us", spawn50 / p50 >= 50.0 && p50 <= 20.0),
        Figure::new("hook dispatch p99", p99, "us").against(spawn99),
    ];

    // Host calls: a hook making `calls` calls minus one making none, per call.
    let probe_charm = runtime.load_charm(&probe)?;
    let calls: u32 = if quick { 20_000 } else { 500_000 };
    let per_call = |command: &str| -> anyhow::Result<f64> {
        let time = |count: u32| -> anyhow::Result<Duration> {
            std::fs::write(unit.data_dir().join("script"), command.replace("{n}", &count.to_string()))?;
            let mut samples = (0..5).map(|_| run(&probe_charm, HookKind::Install)).collect::<anyhow::Result<Vec<_>>>()?;
            Ok(median(&mut samples))
        };
        let (none, many) = (time(0)?, time(calls)?);
        Ok(many.saturating_sub(none).as_secs_f64() * 1e9 / f64::from(calls))
    };
    let is_leader = per_call("call-is-leader {n}")?;
    let leader_get = per_call("call-get {n} key")?;
    let leader_get_absent = per_call("call-get {n} absent")?;
    let empty_call = empty_host_call(&runtime, &empty, calls, &tokio)?;
    figures.push(Figure::new("is-leader from a guest, per call", is_leader, "ns").against(empty_call).target("<= 150 ns", is_leader <= 150.0));
    figures.push(Figure::new("leader-get from a guest, per call", leader_get, "ns").against(empty_call).target("<= 150 ns", leader_get <= 150.0));
    // The part of leader-get that returns no string: the rest is the copy into guest memory.
    figures.push(Figure::new("leader-get of an absent key (no string returned), per call", leader_get_absent, "ns").against(empty_call));

    // A charm's start: cached compiled code against a cold compile.
    let cache = tempfile::tempdir()?;
    let cached_runtime = |dir: &std::path::Path| HookRuntime::new(RuntimeConfig { cache_dir: Some(dir.to_owned()), ..RuntimeConfig::default() });
    let mut cold = Vec::new();
    for i in 0..3 {
        cold.push(cached_runtime(&cache.path().join(format!("cold-{i}")))?.load_charm(&shared)?.load_time());
    }
    let warm_runtime = cached_runtime(cache.path())?;
    warm_runtime.load_charm(&shared)?;
    let mut warm = (0..if quick { 5 } else { 20 })
        .map(|_| {
            let charm = cached_runtime(cache.path())?.load_charm(&shared)?;
            anyhow::ensure!(charm.from_cache(), "the compiled charm was not cached");
            Ok(charm.load_time())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (warm, cold) = (ms(median(&mut warm)), ms(median(&mut cold)));
    figures.push(Figure::new("charm start from the compiled-code cache", warm, "ms").against(cold).target("<= 5 ms", warm <= 5.0));
    Ok(figures)
}

struct EmptyState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for EmptyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The cost of one guest call to a host function that does nothing, on the same engine.
fn empty_host_call(runtime: &HookRuntime, wasm: &std::path::Path, calls: u32, tokio: &tokio::runtime::Runtime) -> anyhow::Result<f64> {
    let engine = runtime.engine();
    let component = Component::from_file(engine, wasm).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut linker: Linker<EmptyState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
    linker
        .instance("bench:empty/host@0.1.0")
        .and_then(|mut host| host.func_wrap("noop", |_, (): ()| Ok(())))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pre = linker.instantiate_pre(&component).map_err(|e| anyhow::anyhow!("{e}"))?;
    let time = |count: u32| -> anyhow::Result<Duration> {
        let mut samples = Vec::new();
        for _ in 0..5 {
            let mut store = Store::new(engine, EmptyState { wasi: WasiCtx::builder().build(), table: ResourceTable::new() });
            store.epoch_deadline_async_yield_and_update(1);
            let start = Instant::now();
            tokio.block_on(async {
                let instance = pre.instantiate_async(&mut store).await?;
                let run = instance.get_typed_func::<(u32,), ()>(&mut store, "run")?;
                run.call_async(&mut store, (count,)).await
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            samples.push(start.elapsed());
        }
        Ok(median(&mut samples))
    };
    let (none, many) = (time(0)?, time(calls)?);
    Ok(many.saturating_sub(none).as_secs_f64() * 1e9 / f64::from(calls))
}
