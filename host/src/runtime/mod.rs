//! The wasm runtime: one engine and linker per host, one compiled [`Charm`] per charm, and
//! a fresh store and instance for every hook.
//!
//! Invariants:
//! - **Hook sandbox.** Every hook runs in a new `Store` with a new instance of the charm,
//!   built from a pre-linked [`wasmtime::component::InstancePre`]; nothing survives a hook
//!   but what it wrote to its data directory or through host functions.
//! - **Bounded.** A hook is stopped at its deadline (epoch interruption makes running wasm
//!   yield; a timeout drops the call), its memory cannot grow past the cap, and at most
//!   `max_concurrent_hooks` hooks hold a pooled instance slot at once; others wait.
//! - **Leadership hooks first** ([`lane`]): a few slots are kept for hooks that carry a
//!   unit's leadership, and other hooks give way to them (within a bounded budget), so a
//!   leader stays responsive however many minion hooks its writes set off.
//! - **Contained.** A guest error, trap, deadline or memory cap fails that hook only; the
//!   host and other units carry on. Drive hooks from a multi-threaded tokio runtime: a
//!   spinning guest yields at every epoch tick, but it still keeps its worker busy until its
//!   deadline.

pub(crate) mod bindings;
mod cache;
mod guest_clock;
mod guest_env;
mod lane;
mod loader;
mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::capabilities::{ContextView, LeadershipView, ServicesView};
use crate::hooks::{HookCall, HookError, HookKind, HookOutcome};

pub use cache::CompiledCache;
pub use guest_env::GuestEnvironment;
pub use loader::{Charm, LoadError};
pub(crate) use sandbox::HookState;
pub use sandbox::UnitSandbox;

/// The guest seed of unit `unit` of an application seeded with `seed`.
pub(crate) fn guest_seed(seed: u64, unit: u64) -> u64 {
    guest_env::mix(guest_env::mix(seed) ^ unit)
}

/// Bytes of each pooled memory and table slot that are reset in place on reuse instead of
/// being returned to the kernel with madvise. With `PAGEMAP_SCAN` (Linux 6.7+) only the
/// pages a hook touched are reset, so the next hook takes no page faults and no TLB
/// shootdown crosses the runtime's threads; a Rust guest's stack sits at the top of its
/// first megabyte, hence two. Without it the whole range is zeroed on every reuse, which
/// only pays for a small range.
fn keep_resident() -> usize {
    if PoolingAllocationConfig::is_pagemap_scan_available() { 2 << 20 } else { 256 << 10 }
}

/// Tick of the epoch clock: running wasm checks for its deadline this often.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits and places the runtime works with: the defaults, changed with the `with_`
/// methods.
///
/// ```
/// # use std::time::Duration;
/// let config = charm_host::RuntimeConfig::default().with_hook_deadline(Duration::from_secs(10)).with_cache_dir(None);
/// assert_eq!(config.memory_cap, charm_host::RuntimeConfig::DEFAULT_MEMORY_CAP);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// How long one hook may run before it is stopped.
    pub hook_deadline: Duration,
    /// Largest linear memory one hook instance may have, in bytes.
    pub memory_cap: usize,
    /// How many hooks may run at once; the pooling allocator is sized for this many.
    pub max_concurrent_hooks: u32,
    /// Where compiled charms are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            hook_deadline: crate::timing::DEFAULT_HOOK_DEADLINE,
            memory_cap: Self::DEFAULT_MEMORY_CAP,
            max_concurrent_hooks: Self::DEFAULT_MAX_CONCURRENT_HOOKS,
            cache_dir: CompiledCache::default_dir(),
        }
    }
}

impl RuntimeConfig {
    /// The default memory cap of one hook instance: 64 MiB.
    pub const DEFAULT_MEMORY_CAP: usize = 64 * 1024 * 1024;
    /// How many hooks may run at once by default.
    pub const DEFAULT_MAX_CONCURRENT_HOOKS: u32 = 64;

    /// With this hook deadline (see [`crate::timing::HOOK_DEADLINE`]).
    pub fn with_hook_deadline(mut self, deadline: Duration) -> Self {
        self.hook_deadline = deadline;
        self
    }

    /// With this memory cap per hook instance, in bytes.
    pub fn with_memory_cap(mut self, bytes: usize) -> Self {
        self.memory_cap = bytes;
        self
    }

    /// With room for this many hooks at once.
    pub fn with_max_concurrent_hooks(mut self, hooks: u32) -> Self {
        self.max_concurrent_hooks = hooks;
        self
    }

    /// With compiled charms cached in `dir` (`None`: compiled every time).
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }
}

/// Why the runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The configuration is unusable.
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// Wasmtime refused the engine or linker setup.
    #[error("could not set up the wasm engine: {0}")]
    Engine(String),
}

/// Compiles charms and runs their hooks.
pub struct HookRuntime {
    engine: Engine,
    linker: Linker<HookState>,
    config: RuntimeConfig,
    cache: Option<CompiledCache>,
    slots: lane::HookSlots,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for HookRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRuntime").field("config", &self.config).finish()
    }
}

impl HookRuntime {
    /// Builds the engine, the linker with every capability, and the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        if config.max_concurrent_hooks == 0 {
            return Err(RuntimeError::Config("max_concurrent_hooks must be at least 1".into()));
        }
        if config.memory_cap < 64 * 1024 {
            return Err(RuntimeError::Config("memory_cap must be at least one 64 KiB page".into()));
        }
        crate::timing::HOOK_DEADLINE.check(config.hook_deadline).map_err(|e| RuntimeError::Config(e.to_string()))?;
        let slots = config.max_concurrent_hooks;
        let keep_resident = keep_resident();
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_memory_size(config.memory_cap)
            .linear_memory_keep_resident(keep_resident)
            .table_keep_resident(keep_resident)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wasm_config = Config::new();
        wasm_config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm_config).map_err(|e| RuntimeError::Engine(e.to_string()))?;

        let mut linker: Linker<HookState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        // Its monotonic clock, in virtual time for units whose test decides it.
        guest_clock::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        // Each capability gets its own view of the unit, not the whole hook state.
        let engine_error = |e: wasmtime::Error| RuntimeError::Engine(e.to_string());
        bindings::context::add_to_linker::<_, HasSelf<ContextView>>(&mut linker, |state| &mut state.context)
            .map_err(engine_error)?;
        bindings::leadership::add_to_linker::<_, HasSelf<LeadershipView>>(&mut linker, |state| &mut state.leadership)
            .map_err(engine_error)?;
        bindings::services::add_to_linker::<_, HasSelf<ServicesView>>(&mut linker, |state| &mut state.services)
            .map_err(engine_error)?;

        let cache = config.cache_dir.clone().map(|dir| CompiledCache::new(dir, &engine));
        let ticker = EpochTicker::start(engine.clone());
        let slots = lane::HookSlots::new(slots as usize);
        Ok(Self { engine, linker, cache, slots, config, _ticker: ticker })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The wasmtime engine (for the bench's baseline host functions).
    #[cfg(feature = "bench")]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs `hook` of `charm` for `sandbox`'s unit in a fresh sandbox and returns its
    /// outcome. The hook's start is reported once it has an instance slot; recording its
    /// outcome is its caller's (the hook driver's).
    pub async fn run_hook(&self, charm: &Charm, sandbox: &UnitSandbox, hook: impl Into<HookCall>) -> HookOutcome {
        self.run_within(charm, sandbox, hook.into(), self.config.hook_deadline, true).await
    }

    /// [`Self::run_hook`], stopping the hook after `deadline` if that comes before the
    /// configured hook deadline (a stopping unit's hooks get only its stop grace).
    pub async fn run_hook_within(
        &self,
        charm: &Charm,
        sandbox: &UnitSandbox,
        hook: impl Into<HookCall>,
        deadline: Duration,
    ) -> HookOutcome {
        self.run_within(charm, sandbox, hook.into(), deadline, true).await
    }

    /// How many hooks run now (each holds one of the runtime's instance slots).
    pub fn hooks_running(&self) -> usize {
        self.slots.in_use()
    }

    /// Runs a hook like [`Self::run_hook`] with the configured deadline, reporting nothing.
    pub async fn run_hook_quietly(&self, charm: &Charm, sandbox: &UnitSandbox, hook: impl Into<HookCall>) -> HookOutcome {
        self.run_within(charm, sandbox, hook.into(), self.config.hook_deadline, false).await
    }

    /// Runs `hook` once it has an instance slot, reporting its start (`announce`) then.
    async fn run_within(
        &self,
        charm: &Charm,
        sandbox: &UnitSandbox,
        call: HookCall,
        deadline: Duration,
        announce: bool,
    ) -> HookOutcome {
        let hook = call.kind();
        let deadline = deadline.min(self.config.hook_deadline);
        let budget = lane::GiveWay::default();
        let Ok(_slot) = self.slots.acquire(hook, &budget).await else {
            let result = Err(HookError::Setup("the runtime is shutting down".into()));
            return HookOutcome { hook, result, elapsed: Duration::ZERO };
        };
        let unit = sandbox.unit();
        if announce {
            unit.reporter().hook_started(hook);
        }
        let start = Instant::now();
        // What the host logs while the hook runs (wasmtime, WASI, host functions) names it.
        let span = tracing::debug_span!("hook", unit = %unit.name(), hook = %hook);
        let result = tracing::Instrument::instrument(self.run_in_sandbox(charm, sandbox, &call, deadline, budget), span).await;
        HookOutcome { hook, result, elapsed: start.elapsed() }
    }

    async fn run_in_sandbox(
        &self,
        charm: &Charm,
        sandbox: &UnitSandbox,
        call: &HookCall,
        deadline: Duration,
        budget: lane::GiveWay,
    ) -> Result<(), HookError> {
        let hook = call.kind();
        let state = HookState::new(sandbox, hook, self.config.memory_cap)
            .map_err(|e| HookError::Setup(e.to_string()))?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state.limiter());
        // Yield at every epoch tick; a hook that does not carry leadership pauses instead
        // while one that does runs (see `lane`).
        store.epoch_deadline_async_yield_and_update(1);
        if !lane::leads(hook) {
            let lane = self.slots.lane().clone();
            store.epoch_deadline_callback(move |_| {
                if !budget.should_pause(&lane) {
                    return Ok(wasmtime::UpdateDeadline::Yield(1));
                }
                let (lane, budget) = (lane.clone(), budget.clone());
                Ok(wasmtime::UpdateDeadline::YieldCustom(1, Box::pin(async move { lane.give_way(&budget).await })))
            });
        }

        let call = async {
            let instance = charm
                .pre()
                .instantiate_async(&mut store)
                .await
                .map_err(|e| Failure::Setup(format!("{e:#}")))?;
            let hooks = instance.juju_charm_hooks();
            let result = match hook {
                HookKind::Install => hooks.call_install(&mut store).await,
                HookKind::LeaderElected => hooks.call_leader_elected(&mut store).await,
                HookKind::LeaderSettingsChanged => hooks.call_leader_settings_changed(&mut store).await,
                HookKind::LeaderDeposed => hooks.call_leader_deposed(&mut store).await,
                HookKind::UnitDataChanged => {
                    let changed: Vec<String> = call.changed().iter().map(|u| u.to_string()).collect();
                    hooks.call_unit_data_changed(&mut store, &changed).await
                }
                HookKind::UpdateStatus => hooks.call_update_status(&mut store).await,
                HookKind::Stop => hooks.call_stop(&mut store).await,
            };
            result.map_err(Failure::Wasm)
        };
        // The deadline in real time, and on the guest's clock when a test decides it (a hook
        // that sleeps past it in virtual time overruns it there).
        let virtual_deadline = async {
            match sandbox.guest_environment() {
                Some(environment) => {
                    let clock = environment.clock();
                    clock.sleep_until(clock.now() + deadline).await;
                }
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = tokio::time::timeout(deadline, call) => result.ok(),
            () = virtual_deadline => None,
        };
        let state = store.data();
        match result {
            None => Err(HookError::Deadline(deadline)),
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(message))) => Err(HookError::Charm(message)),
            Some(Err(Failure::Setup(message))) => Err(HookError::Setup(message)),
            Some(Err(Failure::Wasm(err))) => Err(state.explain_failure(&err)),
        }
    }
}

enum Failure {
    Setup(String),
    Wasm(wasmtime::Error),
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("could not start the epoch ticker: {e}; hooks will only stop at their deadline"));
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
