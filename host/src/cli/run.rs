//! `charm-host run`: N units of each of one or more applications in this process (one per
//! charm, or `--apps N` per charm), sharing one leadership store (in memory, SQLite under
//! `--state`, or etcd with `--store`: one connection, one watch stream for all), until
//! `--for` elapses, Ctrl-C or SIGTERM; then every application stops at once and a status
//! table (or a JSON status line per application) shows how each unit ended. `--first-unit`
//! lets several runs share one application's units over one store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::charm_build::{CHARM_TARGET, Progress, build_charm};
use crate::events::EventSink;
use crate::leadership::{LeadershipStore, MemoryStore};
use crate::names::{AppName, UnitName};
use crate::runtime::RuntimeConfig;
use crate::state_dir::StateDir;
use crate::{ApplicationHandle, Host};
use anyhow::Context as _;

use super::output::{HumanLog, JsonLog};
use super::{RunArgs, RuntimeArgs, UnitAt, UsageError};

impl RuntimeArgs {
    /// Serves `host`'s metrics on `--metrics-addr`, if given, until the returned task is
    /// dropped; says where on stderr.
    pub async fn serve_metrics(&self, host: &Host) -> anyhow::Result<Option<crate::metrics::ServeTask>> {
        let Some(addr) = &self.metrics_addr else { return Ok(None) };
        let listener =
            tokio::net::TcpListener::bind(addr.as_str()).await.with_context(|| format!("--metrics-addr {addr}"))?;
        let bound = listener.local_addr().with_context(|| format!("--metrics-addr {addr}"))?;
        eprintln!("metrics: http://{bound}/metrics");
        Ok(Some(crate::metrics::ServeTask::spawn(listener, host.metrics().clone())))
    }

    /// What `agent` and `run` start from: the host with these flags' settings on
    /// `state_dir` and `store`, and its metrics served (if asked).
    pub async fn start_host(
        &self,
        state_dir: &Path,
        store: Arc<dyn LeadershipStore>,
        (services, grace): (Vec<crate::services::ServiceConfig>, std::time::Duration),
        events: Arc<dyn EventSink>,
    ) -> anyhow::Result<(Host, Option<crate::metrics::ServeTask>)> {
        let host = self
            .host_builder()
            .state_dir(state_dir)
            .store(store)
            .services(services, grace)
            .event_sink(events)
            .build()
            .await?;
        let metrics = self.serve_metrics(&host).await?;
        Ok((host, metrics))
    }

    /// A host builder with these flags' settings.
    pub fn host_builder(&self) -> crate::HostBuilder {
        let config = self.runtime_config();
        crate::Host::builder()
            .guarantee_window(self.guarantee_window)
            .hook_deadline(config.hook_deadline)
            .memory_cap(config.memory_cap)
            .cache_dir(config.cache_dir)
            .stop_grace(self.stop_grace)
            .update_status_interval(self.update_status_interval)
            .accept_new_store(self.accept_new_store)
    }

    /// The runtime configuration these flags describe.
    pub fn runtime_config(&self) -> RuntimeConfig {
        let defaults = RuntimeConfig::default();
        let cache_dir = if self.no_cache { None } else { self.cache_dir.clone().or(defaults.cache_dir.clone()) };
        defaults
            .with_hook_deadline(self.hook_deadline)
            .with_memory_cap(self.memory_cap_mib as usize * 1024 * 1024)
            .with_cache_dir(cache_dir)
    }
}

/// Resolves CHARM to a `.wasm` file, building a crate directory first.
pub fn charm_wasm(charm: &Path) -> anyhow::Result<PathBuf> {
    if charm.is_dir() {
        eprintln!("building {} for {CHARM_TARGET} (the first build also compiles its dependencies)", charm.display());
        let started = std::time::Instant::now();
        let wasm = build_charm(charm, Progress::Shown)?;
        eprintln!("built {} in {:.1} s: {}", charm.display(), started.elapsed().as_secs_f64(), wasm.display());
        Ok(wasm)
    } else if charm.exists() {
        Ok(charm.to_owned())
    } else {
        anyhow::bail!("{}: no such file or directory", charm.display())
    }
}

/// The name a charm's application gets when `--app` does not name it: the charm's file or
/// crate name.
fn derived_app_name(charm: &Path) -> anyhow::Result<AppName> {
    // `run .` is named after the directory, not `.`.
    let charm = charm.canonicalize().unwrap_or_else(|_| charm.to_owned());
    let stem = charm.file_stem().and_then(|s| s.to_str()).unwrap_or("app");
    let derived: String = stem.to_ascii_lowercase().replace('_', "-");
    AppName::new(&derived).or_else(|_| Ok(AppName::new("app")?))
}

/// The applications a run starts, each with the index of its charm in `charms`: one per
/// charm, or `--apps N` per charm (named `NAME-0` to `NAME-(N-1)`).
fn applications(args: &RunArgs) -> Result<Vec<(AppName, usize)>, UsageError> {
    if args.app.is_some() && args.charms.len() > 1 {
        return Err(UsageError(
            "--app names the application of one charm; with several, each is named after its charm".into(),
        ));
    }
    let mut apps: Vec<(AppName, usize)> = Vec::new();
    for (index, charm) in args.charms.iter().enumerate() {
        let base = match &args.app {
            Some(name) => AppName::new(name).map_err(|e| UsageError(format!("--app: {e}")))?,
            None => derived_app_name(charm).map_err(|e| UsageError(format!("{}: {e}", charm.display())))?,
        };
        for n in 0..args.apps {
            let app = if args.apps == 1 {
                base.clone()
            } else {
                AppName::new(&format!("{base}-{n}")).map_err(|e| UsageError(format!("--apps {}: {e}", args.apps)))?
            };
            if apps.iter().any(|(known, _)| *known == app) {
                return Err(UsageError(format!(
                    "two charms would run as application {app}: run them in separate runs, or rename one"
                )));
            }
            apps.push((app, index));
        }
    }
    Ok(apps)
}

/// Where a run keeps unit data: `dir`, or a temporary directory.
pub fn data_root(dir: Option<&Path>) -> anyhow::Result<DataRoot> {
    match dir {
        Some(dir) => {
            StateDir::new(dir).prepare()?;
            Ok(DataRoot::Kept(dir.to_owned()))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("charm-host-run-")
                .tempdir()
                .context("creating unit data directories")?;
            Ok(DataRoot::Temporary(tmp))
        }
    }
}

/// A run's store: etcd with `--store`, else SQLite in `--state DIR`, else memory.
async fn open_store(args: &RunArgs, data: &DataRoot) -> anyhow::Result<Arc<dyn LeadershipStore>> {
    if args.store.store.is_none() && args.state.is_none() {
        return Ok(Arc::new(MemoryStore::new()));
    }
    Ok(args
        .store
        .open(&StateDir::new(data.path()), args.runtime.guarantee_window, args.runtime.accept_new_store)
        .await?
        .store)
}

/// The state directory of a run.
pub enum DataRoot {
    /// Under `--state DIR`, kept.
    Kept(PathBuf),
    /// A temporary directory, removed on drop.
    Temporary(tempfile::TempDir),
}

impl DataRoot {
    pub fn path(&self) -> &Path {
        match self {
            DataRoot::Kept(path) => path,
            DataRoot::Temporary(dir) => dir.path(),
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let apps = applications(&args)?;
    let numbers = args.unit_numbers()?;
    let mut actions = args.scheduled_actions(&apps)?;
    actions.sort_by_key(|(at, _)| *at);
    let services = args.services.configs()?;
    let wasms = args.charms.iter().map(|charm| charm_wasm(charm)).collect::<anyhow::Result<Vec<_>>>()?;
    // What the start creates under --state is removed again if it fails.
    let units: Vec<UnitName> =
        apps.iter().flat_map(|(app, _)| numbers.clone().map(|n| UnitName::from_parts(app.clone(), n))).collect();
    let provisional = super::provisional::Provisional::before(args.state.as_deref(), &units);
    let data_root = data_root(args.state.as_deref())?;
    // Each unit's agent lock is taken as the application starts (`Host::start_units`), as
    // `charm-host agent` holds it: no agent may run one of these units meanwhile.
    let events: Arc<dyn EventSink> = if args.json { Arc::new(JsonLog::new()) } else { Arc::new(HumanLog::new()) };
    // Poll timers and I/O more often than tokio's default, so that a guest spinning until its
    // deadline (it yields at every epoch tick) delays its neighbours' timers as little as possible.
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().event_interval(7).build()?;
    let reports = tokio.block_on(async {
        let started = async {
            let store = open_store(&args, &data_root).await?;
            let (host, metrics) = args
                .runtime
                .start_host(data_root.path(), store, (services, args.services.service_grace), events)
                .await?;
            let mut charms = Vec::new();
            for wasm in &wasms {
                let charm = host.load_charm(wasm)?;
                if !args.json {
                    let source = if charm.from_cache() { "from cache" } else { "compiled" };
                    eprintln!("loaded {} ({source} in {:.1?})", wasm.display(), charm.load_time());
                }
                charms.push(charm);
            }
            if !args.json {
                let which = if numbers.start == 0 { String::new() } else { format!(" (from unit {})", numbers.start) };
                match apps.as_slice() {
                    [(app, _)] => eprintln!("starting {} units of {app}{which}", args.units),
                    _ => eprintln!("starting {} units of each of {} applications{which}", args.units, apps.len()),
                }
            }
            let start = tokio::time::Instant::now();
            let mut handles = Vec::new();
            for (app, charm) in &apps {
                handles.push(host.start_units(app.clone(), &charms[*charm], numbers.start, args.units).await?);
            }
            anyhow::Ok((host, metrics, handles, start))
        };
        let (host, _metrics, mut handles, start) = provisional.kept_if(started.await)?;
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        let until_end = async {
            match args.run_for {
                Some(duration) => tokio::time::sleep_until(start + duration).await,
                None => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = terminate.recv() => {}
                    }
                }
            }
        };
        tokio::pin!(until_end);
        for (at, action) in actions {
            tokio::select! {
                () = &mut until_end => break,
                () = tokio::time::sleep_until(start + at) => {}
            }
            if let Err(err) = perform(&mut handles, &host, action.clone()).await {
                eprintln!("{action:?} at {at:?}: {err}");
            }
        }
        until_end.await;
        // Every application stops at once; the final status is taken after the stop: it
        // shows how each unit ended.
        let mut stopping = tokio::task::JoinSet::new();
        for (order, handle) in handles.into_iter().enumerate() {
            stopping.spawn(async move { (order, handle.stop_and_report().await) });
        }
        let mut reports = Vec::new();
        while let Some(stopped) = stopping.join_next().await {
            let (order, report) = stopped.context("stopping an application")?;
            reports.push((order, report?));
        }
        reports.sort_by_key(|(order, _)| *order);
        anyhow::Ok(reports.into_iter().map(|(_, report)| report).collect::<Vec<_>>())
    })?;
    for report in reports {
        if args.json {
            outln!("{}", report.to_json_line());
        } else {
            out!("\n{}", report.to_table());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Something `--kill`, `--stop`, `--step-down` or `--elect` asks for during a run.
#[derive(Debug, Clone)]
pub enum RunAction {
    /// Crash the unit's agent: its lease must expire.
    Kill(UnitName),
    /// Stop the unit gracefully.
    Stop(UnitName),
    /// The current leader steps down.
    StepDown,
    /// Directed handover to the unit.
    Elect(UnitName),
}

impl RunArgs {
    /// The numbers of the units this run starts of each application.
    fn unit_numbers(&self) -> Result<std::ops::Range<u32>, UsageError> {
        match self.first_unit.checked_add(self.units) {
            Some(end) => Ok(self.first_unit..end),
            None => Err(UsageError(format!(
                "--first-unit {} --units {}: unit numbers go past {}",
                self.first_unit,
                self.units,
                u32::MAX
            ))),
        }
    }

    /// The actions the flags schedule, with their times from the start of the run.
    fn scheduled_actions(
        &self,
        apps: &[(AppName, usize)],
    ) -> Result<Vec<(std::time::Duration, RunAction)>, UsageError> {
        let numbers = self.unit_numbers()?;
        let mut actions = Vec::new();
        for (flag, list) in [("--kill", &self.kill), ("--stop", &self.stop), ("--elect", &self.elect)] {
            for UnitAt { unit, at } in list {
                if !apps.iter().any(|(app, _)| app == unit.app()) {
                    let names: Vec<&str> = apps.iter().map(|(app, _)| app.as_str()).take(5).collect();
                    let more = if apps.len() > names.len() { ", ..." } else { "" };
                    return Err(UsageError(format!(
                        "{flag} {unit}@{at:?}: {} is not an application of this run ({}{more})",
                        unit.app(),
                        names.join(", ")
                    )));
                }
                if !numbers.contains(&unit.number()) {
                    return Err(UsageError(format!(
                        "{flag} {unit}: this run has units {} to {} of {}",
                        numbers.start,
                        numbers.end - 1,
                        unit.app()
                    )));
                }
                actions.push((
                    *at,
                    match flag {
                        "--kill" => RunAction::Kill(unit.clone()),
                        "--stop" => RunAction::Stop(unit.clone()),
                        _ => RunAction::Elect(unit.clone()),
                    },
                ));
            }
        }
        actions.extend(self.step_down.iter().map(|at| (*at, RunAction::StepDown)));
        Ok(actions)
    }
}

async fn perform(handles: &mut [ApplicationHandle], host: &Host, action: RunAction) -> anyhow::Result<()> {
    fn of<'a>(handles: &'a mut [ApplicationHandle], unit: &UnitName) -> anyhow::Result<&'a mut ApplicationHandle> {
        handles
            .iter_mut()
            .find(|handle| handle.app() == unit.app())
            .with_context(|| format!("{unit} does not run here"))
    }
    match action {
        RunAction::Kill(unit) => of(handles, &unit)?.kill_unit(&unit)?,
        RunAction::Stop(unit) => of(handles, &unit)?.stop_unit(&unit).await?,
        RunAction::StepDown => {
            // Every application whose leader runs here; the others lead elsewhere.
            let mut failed = Vec::new();
            for handle in handles.iter() {
                let Some(lease) = handle.leader().await? else { continue };
                if handle.units().contains(&lease.holder)
                    && let Err(err) = handle.step_down().await
                {
                    failed.push(format!("{}: {err}", handle.app()));
                }
            }
            anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
        }
        RunAction::Elect(unit) => {
            // Not waited for: the run goes on while the leader steps down for the unit.
            crate::handover::request(host.store().as_ref(), &unit, crate::timing::DEFAULT_RESERVATION).await?;
        }
    }
    Ok(())
}
