//! Hook dispatch against a process spawn, host-call costs against their floor (host
//! functions of the same signatures that do nothing but answer, on the same engine), and a
//! charm's cached start against its cold compile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::{BareUnit, UnitSpec};
use crate::events::RecordingSink;
use crate::hooks::HookKind;
use crate::leadership::{LeadershipStore, MemoryStore};
use crate::names::UnitName;
use crate::runtime::{Charm, HookRuntime, RuntimeConfig};
use crate::state_dir::StateDir;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{Figure, fixture, median, percentile};

/// The one leader setting the host calls read, and what the floor's `get` answers.
const KEY: &str = "key";
const VALUE: &str = "value";

/// One leader unit whose hooks run quietly, one at a time, on a current-thread runtime:
/// what hook dispatch and host calls are measured on.
pub(super) struct HookBench {
    pub(super) tokio: tokio::runtime::Runtime,
    pub(super) runtime: HookRuntime,
    pub(super) unit: BareUnit,
    _data: tempfile::TempDir,
}

impl HookBench {
    /// A runtime and a unit leading its application, with the bench's one setting written.
    pub(super) fn new() -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let runtime = HookRuntime::new(RuntimeConfig { cache_dir: None, ..RuntimeConfig::default() })?;
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
        let name = UnitName::new("bench/0")?;
        let events = Arc::new(RecordingSink::new());
        let unit = UnitSpec::new(name, StateDir::new(data.path()), store.clone(), events).bare()?;
        tokio.block_on(unit.tracker.refresh());
        let leadership = unit.tracker.handle();
        let term = leadership.held_term().ok_or_else(|| anyhow::anyhow!("the bench unit did not become leader"))?;
        tokio.block_on(store.write_settings(leadership.claimant(), term, &[(KEY.into(), VALUE.into())]))?;
        Ok(Self { tokio, runtime, unit, _data: data })
    }

    /// Runs `hook` of `charm` once: how long until its outcome was known.
    pub(super) fn run(&self, charm: &Charm, hook: HookKind) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let outcome = self.tokio.block_on(self.runtime.run_hook_quietly(charm, &self.unit.sandbox, hook));
        let elapsed = start.elapsed();
        outcome.result.map_err(|e| anyhow::anyhow!("{hook} failed: {e}"))?;
        Ok(elapsed)
    }

    /// `n` dispatches of a trivial hook (shared-settings' `stop` is the SDK's default, a
    /// no-op), after 50 to warm up, one after another in one task as a unit's agent runs
    /// them.
    pub(super) fn dispatch(&self, n: usize) -> anyhow::Result<Vec<Duration>> {
        let charm = self.runtime.load_charm(&fixture("example-charms/shared-settings")?)?;
        self.tokio.block_on(async {
            let mut samples = Vec::with_capacity(n);
            for i in 0..n + 50 {
                let start = Instant::now();
                let outcome = self.runtime.run_hook_quietly(&charm, &self.unit.sandbox, HookKind::Stop).await;
                let elapsed = start.elapsed();
                outcome.result.map_err(|e| anyhow::anyhow!("stop failed: {e}"))?;
                if i >= 50 {
                    samples.push(elapsed);
                }
            }
            Ok(samples)
        })
    }
}

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let shared = fixture("example-charms/shared-settings")?;
    let probe = fixture("tests/charms/probe")?;
    let empty = fixture("tests/charms/empty-call")?;
    let bench = HookBench::new()?;
    let (tokio, runtime, unit) = (&bench.tokio, &bench.runtime, &bench.unit);

    let n = if quick { 300 } else { 5000 };
    let mut dispatch = bench.dispatch(n)?;
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
            .target("<= 0.02x spawn, <= 10 us", p50 / spawn50 <= 0.02 && p50 <= 10.0),
        Figure::new("hook dispatch p99", p99, "us").against(spawn99),
    ];
    figures.push(ops_hook_start(p50, quick)?);

    // Host calls: a hook making `calls` calls minus one making none, per call.
    let probe_charm = runtime.load_charm(&probe)?;
    let calls: u32 = if quick { 20_000 } else { 500_000 };
    let per_call = |command: &str| -> anyhow::Result<f64> {
        let time = |count: u32| -> anyhow::Result<Duration> {
            std::fs::write(unit.unit().data_dir().join("script"), command.replace("{n}", &count.to_string()))?;
            let mut samples =
                (0..5).map(|_| bench.run(&probe_charm, HookKind::Install)).collect::<anyhow::Result<Vec<_>>>()?;
            Ok(median(&mut samples))
        };
        let (none, many) = (time(0)?, time(calls)?);
        Ok(many.saturating_sub(none).as_secs_f64() * 1e9 / f64::from(calls))
    };
    let is_leader = per_call("call-is-leader {n}")?;
    let leader_get = per_call(&format!("call-get {{n}} {KEY}"))?;
    let leader_get_absent = per_call("call-get {n} absent")?;
    let floor = Floor::measure(runtime, &empty, calls, tokio)?;
    let within = |value: f64, floor: f64| value <= 1.3 * floor;
    figures.push(Figure::new("empty host call from a guest, func(), per call", floor.noop, "ns"));
    figures.push(
        Figure::new("is-leader from a guest, per call", is_leader, "ns")
            .against(floor.check)
            .target("<= 1.3x its floor", within(is_leader, floor.check)),
    );
    figures.push(
        Figure::new("leader-get from a guest, per call", leader_get, "ns")
            .against(floor.get)
            .target("<= 1.3x its floor", within(leader_get, floor.get)),
    );
    // No string to lower: against the empty call.
    figures.push(
        Figure::new("leader-get of an absent key (no string returned), per call", leader_get_absent, "ns")
            .against(floor.noop),
    );

    // A charm's start: cached compiled code against a cold compile.
    let cache = tempfile::tempdir()?;
    let cached_runtime = |dir: &std::path::Path| {
        HookRuntime::new(RuntimeConfig { cache_dir: Some(dir.to_owned()), ..RuntimeConfig::default() })
    };
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
    figures.push(
        Figure::new("charm start from the compiled-code cache", warm, "ms")
            .against(cold)
            .target("<= 5 ms", warm <= 5.0),
    );
    Ok(figures)
}

/// What users run today: an ops charm's hook is a fresh Python process that imports `ops`
/// before it does anything. Against hook dispatch (`dispatch_us`), where `python3` has the
/// `ops` package; a skipped row saying why where it does not.
fn ops_hook_start(dispatch_us: f64, quick: bool) -> anyhow::Result<Figure> {
    const NAME: &str = "hook dispatch p50, against an ops charm's hook start (python3 -c 'import ops')";
    let import_ops = || {
        std::process::Command::new("python3")
            .args(["-c", "import ops"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    match import_ops() {
        Ok(status) if status.success() => {}
        Ok(_) => return Ok(Figure::skipped(NAME, "python3 has no `ops` package (`pip install ops` to measure it)")),
        Err(e) => return Ok(Figure::skipped(NAME, format!("no python3 to run ({e})"))),
    }
    let mut samples = (0..if quick { 3 } else { 15 })
        .map(|_| {
            let start = Instant::now();
            let status = import_ops()?;
            anyhow::ensure!(status.success(), "python3 -c 'import ops' failed: {status}");
            Ok(start.elapsed())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Figure::new(NAME, dispatch_us, "us").against(median(&mut samples).as_secs_f64() * 1e6))
}

/// The floor fixture's bindings: host functions of the leadership functions' shapes.
mod floor {
    wasmtime::component::bindgen!({
        world: "empty-call",
        path: "../tests/charms/empty-call/wit",
        exports: { default: async },
    });
}

use floor::bench::empty::host::Failure;

/// The floor fixture's store: a bare WASI context and the string `get` answers with.
struct FloorState {
    wasi: WasiCtx,
    table: ResourceTable,
    value: String,
}

impl WasiView for FloorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl floor::bench::empty::host::Host for FloorState {
    fn noop(&mut self) {}

    fn check(&mut self) -> Result<bool, Failure> {
        Ok(true)
    }

    fn get(&mut self, key: String) -> Result<Option<String>, Failure> {
        drop(key);
        Ok(Some(self.value.clone()))
    }
}

/// What one guest call costs, in ns, to host functions that only answer: `noop: func()`,
/// `check` (is-leader's signature, answering `ok(true)`) and `get` (leader-get's, answering
/// a fresh string as long as the bench's setting).
struct Floor {
    noop: f64,
    check: f64,
    get: f64,
}

impl Floor {
    fn measure(
        runtime: &HookRuntime,
        wasm: &std::path::Path,
        calls: u32,
        tokio: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Self> {
        let engine = runtime.engine();
        let component = Component::from_file(engine, wasm).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut linker: Linker<FloorState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        floor::bench::empty::host::add_to_linker::<_, HasSelf<FloorState>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let pre = floor::EmptyCallPre::new(linker.instantiate_pre(&component).map_err(|e| anyhow::anyhow!("{e}"))?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Median of 5 fresh instances running `count` calls of `function`.
        let time = |function: &str, count: u32| -> anyhow::Result<Duration> {
            let mut samples = Vec::new();
            for _ in 0..5 {
                let state =
                    FloorState { wasi: WasiCtx::builder().build(), table: ResourceTable::new(), value: VALUE.into() };
                let mut store = Store::new(engine, state);
                store.epoch_deadline_async_yield_and_update(1);
                let start = Instant::now();
                let answered = tokio
                    .block_on(async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        match function {
                            "check" => instance.call_run_check(&mut store, count).await,
                            "get" => instance.call_run_get(&mut store, count, KEY).await,
                            _ => instance.call_run(&mut store, count).await.map(|()| count),
                        }
                    })
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                samples.push(start.elapsed());
                anyhow::ensure!(answered == count, "the floor's {function} answered {answered} of {count} calls");
            }
            Ok(median(&mut samples))
        };
        let per_call = |function: &str| -> anyhow::Result<f64> {
            let (none, many) = (time(function, 0)?, time(function, calls)?);
            Ok(many.saturating_sub(none).as_secs_f64() * 1e9 / f64::from(calls))
        };
        Ok(Self { noop: per_call("noop")?, check: per_call("check")?, get: per_call("get")? })
    }
}
