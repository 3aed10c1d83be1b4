//! Shared set-up for the host's integration tests: building test charms once, a runtime
//! with test-sized limits, and units with scripts for the probe charm.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use charm_host::agent::{BareUnit, UnitSpec};
use charm_host::charm_build::build_charm;
use charm_host::events::RecordingSink;
use charm_host::hooks::{HookCall, HookOutcome};
use charm_host::leadership::{Claimant, LeadershipStore, MemoryStore};
use charm_host::names::UnitName;
use charm_host::runtime::{Charm, HookRuntime, RuntimeConfig};
use charm_host::state_dir::StateDir;
use charm_host::unit::Unit;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_owned()
}

/// Builds a charm crate (relative to the workspace root) once per test process.
pub fn charm_wasm(crate_dir: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(dir, _)| dir == crate_dir) {
        return path.clone();
    }
    let path = build_charm(&workspace().join(crate_dir), charm_host::charm_build::Progress::Quiet)
        .unwrap_or_else(|e| panic!("building {crate_dir}: {e}"));
    built.push((crate_dir.to_owned(), path.clone()));
    path
}

/// A runtime with a short deadline and a small memory cap, caching into `cache_dir`.
pub fn runtime(cache_dir: Option<PathBuf>) -> Arc<HookRuntime> {
    let config = RuntimeConfig::default()
        .with_hook_deadline(Duration::from_secs(2))
        .with_memory_cap(16 * 1024 * 1024)
        .with_max_concurrent_hooks(8)
        .with_cache_dir(cache_dir);
    Arc::new(HookRuntime::new(config).expect("runtime"))
}

/// The probe charm, loaded without a cache.
pub fn probe(runtime: &HookRuntime) -> Charm {
    runtime.load_charm(&charm_wasm("tests/charms/probe")).expect("probe loads")
}

/// A unit of `name` without an agent (the test claims with its tracker and runs its hooks),
/// its directories in the state directory `root`.
pub fn unit(root: &Path, name: &str, store: &Arc<dyn LeadershipStore>, events: &Arc<RecordingSink>) -> Arc<BareUnit> {
    let name = UnitName::new(name).expect("valid unit name");
    Arc::new(UnitSpec::new(name, StateDir::new(root), store.clone(), events.clone()).bare().expect("unit"))
}

/// Something that is (or has) a unit: the helpers below take either.
pub trait HasUnit {
    fn as_unit(&self) -> &Unit;
}

impl HasUnit for Unit {
    fn as_unit(&self) -> &Unit {
        self
    }
}

impl HasUnit for BareUnit {
    fn as_unit(&self) -> &Unit {
        self.unit()
    }
}

impl<T: HasUnit + ?Sized> HasUnit for Arc<T> {
    fn as_unit(&self) -> &Unit {
        (**self).as_unit()
    }
}

/// An in-memory store.
pub fn store() -> Arc<dyn LeadershipStore> {
    Arc::new(MemoryStore::new())
}

/// Writes the probe's script for the unit's next hook and clears old results.
pub fn script(unit: &impl HasUnit, lines: &[&str]) {
    let unit = unit.as_unit();
    std::fs::write(unit.data_dir().join("script"), lines.join("\n")).expect("write script");
    let _ = std::fs::remove_file(unit.data_dir().join("results"));
}

/// The probe's result lines (the part after ` -> `).
pub fn results(unit: &impl HasUnit) -> Vec<String> {
    let unit = unit.as_unit();
    std::fs::read_to_string(unit.data_dir().join("results"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_once(" -> ").map_or(l, |(_, r)| r).to_owned())
        .collect()
}

/// Waits (up to 10 s) for the probe to create `/paused`.
pub async fn wait_paused(unit: &impl HasUnit) {
    wait_paused_in(unit.as_unit().data_dir()).await
}

/// [`wait_paused`] for the probe whose data directory is `data_dir`.
pub async fn wait_paused_in(data_dir: &Path) {
    for _ in 0..5000 {
        if data_dir.join("paused").exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the probe in {} never paused", data_dir.display());
}

/// Lets a paused probe go on, and waits (up to 10 s) until it has.
pub async fn resume(unit: &impl HasUnit) {
    resume_in(unit.as_unit().data_dir()).await
}

/// [`resume`] for the probe whose data directory is `data_dir`.
pub async fn resume_in(data_dir: &Path) {
    std::fs::write(data_dir.join("resume"), b"").expect("write resume");
    for _ in 0..5000 {
        if !data_dir.join("resume").exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the probe in {} never resumed", data_dir.display());
}

/// A unit name that must be valid.
pub fn unit_name(name: &str) -> UnitName {
    UnitName::new(name).unwrap()
}

/// One agent of the unit `name` in this test process: the same incarnation every time it
/// is asked for by name (a test's `claimant("a/0")` twice is one agent claiming twice). A
/// second agent of the unit is [`other_incarnation`].
pub fn claimant(name: &str) -> Claimant {
    static AGENTS: OnceLock<Mutex<Vec<Claimant>>> = OnceLock::new();
    let mut agents = AGENTS.get_or_init(|| Mutex::new(Vec::new())).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(agent) = agents.iter().find(|c| c.unit().as_str() == name) {
        return agent.clone();
    }
    let agent = Claimant::fresh(unit_name(name));
    agents.push(agent.clone());
    agent
}

/// Another agent of the unit `name` (a new incarnation each call): the unit started again
/// elsewhere.
pub fn other_incarnation(name: &str) -> Claimant {
    Claimant::fresh(unit_name(name))
}

/// An application name that must be valid.
pub fn app_name(name: &str) -> charm_host::names::AppName {
    charm_host::names::AppName::new(name).unwrap()
}

/// A settings group from string pairs.
pub fn group(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// What most tests need: a temporary root for data directories, an in-memory store, a
/// recording sink, a test runtime and the probe charm.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn LeadershipStore>,
    pub events: Arc<RecordingSink>,
    pub runtime: Arc<HookRuntime>,
    pub charm: Charm,
}

impl Fixture {
    pub fn new() -> Self {
        let runtime = runtime(None);
        let charm = probe(&runtime);
        let dir = tempfile::tempdir().expect("tempdir");
        Self { dir, store: store(), events: Arc::new(RecordingSink::new()), runtime, charm }
    }

    /// A unit of this fixture's store, its directories under the fixture's root.
    pub fn unit(&self, name: &str) -> Arc<BareUnit> {
        unit(self.dir.path(), name, &self.store, &self.events)
    }

    /// Runs a hook of the probe to completion, and records its outcome as an agent does.
    pub async fn run(&self, unit: &Arc<BareUnit>, hook: impl Into<HookCall>) -> HookOutcome {
        run_recorded(&self.runtime, &self.charm, unit, hook.into()).await
    }

    /// Starts a hook of the probe in the background ([`Self::run`]).
    pub fn spawn(&self, unit: &Arc<BareUnit>, hook: impl Into<HookCall>) -> tokio::task::JoinHandle<HookOutcome> {
        let (runtime, charm, unit, hook) = (self.runtime.clone(), self.charm.clone(), unit.clone(), hook.into());
        tokio::spawn(async move { run_recorded(&runtime, &charm, &unit, hook).await })
    }
}

/// Runs `hook` of `charm` for `unit` and records its outcome in the unit's status and
/// events, as the unit's agent would.
async fn run_recorded(runtime: &HookRuntime, charm: &Charm, unit: &BareUnit, hook: HookCall) -> HookOutcome {
    let outcome = runtime.run_hook(charm, &unit.sandbox, hook).await;
    unit.unit().reporter().record_hook(&outcome);
    outcome
}

/// A store that passes everything through, except that claims by the units in `failing`
/// fail as if the store were unreachable.
pub struct FaultyStore {
    pub inner: Arc<dyn LeadershipStore>,
    pub failing: Mutex<Vec<UnitName>>,
    /// Units whose claims never get an answer (a request lost in a partition).
    pub hanging: Mutex<Vec<UnitName>>,
    /// Every claim asked of this store, failed or not.
    pub claims: std::sync::atomic::AtomicU64,
    /// How many of the next `last_term` reads fail as if the store were unreachable.
    pub failing_reads: std::sync::atomic::AtomicU32,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn LeadershipStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            failing: Mutex::new(Vec::new()),
            hanging: Mutex::new(Vec::new()),
            claims: Default::default(),
            failing_reads: Default::default(),
        })
    }

    /// Makes `unit`'s claims fail from now on.
    pub fn fail_claims_of(&self, unit: &UnitName) {
        self.failing.lock().unwrap().push(unit.clone());
    }

    /// Makes `unit`'s claims hang from now on.
    pub fn hang_claims_of(&self, unit: &UnitName) {
        self.hanging.lock().unwrap().push(unit.clone());
    }

    /// Makes every claim succeed again.
    pub fn heal(&self) {
        self.failing.lock().unwrap().clear();
        self.hanging.lock().unwrap().clear();
    }

    /// How many claims were asked so far.
    pub fn claims(&self) -> u64 {
        self.claims.load(std::sync::atomic::Ordering::SeqCst)
    }
}

use charm_host::leadership::{Claim, Clock, Lease, LeaseError, Release, StoreError, StoreFailure, Tenure, WriteError};
use charm_host::names::AppName;
use charm_host::settings::SettingsSnapshot;

#[charm_host::leadership::async_trait]
impl LeadershipStore for FaultyStore {
    fn clock(&self) -> &Arc<dyn Clock> {
        self.inner.clock()
    }
    async fn claim(&self, claimant: &Claimant, duration: Duration) -> Result<Claim, LeaseError> {
        self.claims.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let unit = claimant.unit();
        if self.failing.lock().unwrap().contains(unit) {
            return Err(LeaseError::Store(StoreError::new(StoreFailure::Unreachable, "injected failure")));
        }
        if self.hanging.lock().unwrap().contains(unit) {
            std::future::pending::<()>().await;
        }
        self.inner.claim(claimant, duration).await
    }
    async fn revoke(&self, unit: &Claimant, why: Release) -> Result<(), LeaseError> {
        self.inner.revoke(unit, why).await
    }
    async fn history(&self, app: Option<&AppName>, limit: usize) -> Result<Vec<Tenure>, LeaseError> {
        self.inner.history(app, limit).await
    }
    async fn mark_lost_renewals(
        &self,
        unit: &UnitName,
        term: u64,
    ) -> Result<charm_host::leadership::LostRenewals, LeaseError> {
        self.inner.mark_lost_renewals(unit, term).await
    }
    async fn reserve(&self, unit: &UnitName, duration: Duration) -> Result<(), LeaseError> {
        self.inner.reserve(unit, duration).await
    }
    async fn reservation(&self, app: &AppName) -> Result<Option<UnitName>, LeaseError> {
        self.inner.reservation(app).await
    }
    async fn pin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        self.inner.pin(app, entity).await
    }
    async fn unpin(&self, app: &AppName, entity: &str) -> Result<(), LeaseError> {
        self.inner.unpin(app, entity).await
    }
    async fn pins(&self) -> Result<std::collections::BTreeMap<AppName, Vec<String>>, LeaseError> {
        self.inner.pins().await
    }
    async fn lease(&self, app: &AppName) -> Result<Option<Lease>, LeaseError> {
        self.inner.lease(app).await
    }
    async fn last_term(&self, app: &AppName) -> Result<u64, LeaseError> {
        let fail = |n: u32| n.checked_sub(1);
        if self
            .failing_reads
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, fail)
            .is_ok()
        {
            return Err(LeaseError::Store(StoreError::new(StoreFailure::Unreachable, "injected failure")));
        }
        self.inner.last_term(app).await
    }
    async fn leaders(&self) -> Result<std::collections::BTreeMap<AppName, UnitName>, LeaseError> {
        self.inner.leaders().await
    }
    async fn read_settings(&self, app: &AppName) -> Result<SettingsSnapshot, charm_host::leadership::StoreError> {
        self.inner.read_settings(app).await
    }
    async fn write_settings_by(
        &self,
        writer: &Claimant,
        term: u64,
        group: &[(String, String)],
        apply_by: Option<charm_host::leadership::Timestamp>,
    ) -> Result<SettingsSnapshot, WriteError> {
        self.inner.write_settings_by(writer, term, group, apply_by).await
    }
    fn watch_settings(&self, app: &AppName) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch_settings(app)
    }
    fn watch_leases(&self, app: &AppName) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch_leases(app)
    }
}

use charm_host::leadership::{UnitData, UnitDataChanges, UnitDataStore, UnitWriteError};

/// Unit data passes through untouched.
#[charm_host::leadership::async_trait]
impl UnitDataStore for FaultyStore {
    async fn join_unit(&self, claimant: &Claimant) -> Result<UnitData, StoreError> {
        self.inner.join_unit(claimant).await
    }
    async fn write_unit_data(
        &self,
        writer: &Claimant,
        group: &[(String, String)],
        apply_by: Option<charm_host::leadership::Timestamp>,
    ) -> Result<UnitData, UnitWriteError> {
        self.inner.write_unit_data(writer, group, apply_by).await
    }
    async fn read_unit_data(&self, unit: &UnitName) -> Result<Option<UnitData>, StoreError> {
        self.inner.read_unit_data(unit).await
    }
    async fn unit_data_since(&self, app: &AppName, since: u64) -> Result<UnitDataChanges, StoreError> {
        self.inner.unit_data_since(app, since).await
    }
    async fn remove_unit(&self, unit: &UnitName) -> Result<bool, StoreError> {
        self.inner.remove_unit(unit).await
    }
    fn watch_unit_data(&self, app: &AppName) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch_unit_data(app)
    }
}

/// Waits (real time, up to 20 s) until `unit`'s agent has settled more than `after` times
/// (see [`Unit::settled`]).
pub async fn wait_settled(unit: &impl HasUnit, after: u64) {
    let unit = unit.as_unit();
    let mut settled = unit.settled();
    tokio::time::timeout(Duration::from_secs(20), settled.wait_for(|count| *count > after))
        .await
        .unwrap_or_else(|_| panic!("{} never settled", unit.name()))
        .unwrap();
}

/// `options` for a prefix of a cluster the test just started: no agent ever used it, so a
/// store created there grants at once (see `EtcdOptions::unused_prefix`).
pub fn unused_prefix(
    mut options: charm_host::leadership::etcd::EtcdOptions,
) -> charm_host::leadership::etcd::EtcdOptions {
    options.unused_prefix = true;
    options
}
