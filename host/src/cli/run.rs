//! `charm-host run`: N units of one application in this process, sharing one in-memory
//! leadership store, until `--for` elapses or Ctrl-C; then every unit is stopped and a
//! status table (or a JSON status line) shows how each ended.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::charm_build::build_charm;
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
    /// `state_dir` and `store`, its metrics served (if asked), and the charm at `wasm` loaded.
    pub async fn start_host(
        &self,
        state_dir: &Path,
        store: Arc<dyn LeadershipStore>,
        (services, grace): (Vec<crate::services::ServiceConfig>, std::time::Duration),
        events: Arc<dyn EventSink>,
        wasm: &Path,
    ) -> anyhow::Result<(Host, Option<crate::metrics::ServeTask>, crate::Charm)> {
        let host = self
            .host_builder()
            .state_dir(state_dir)
            .store(store)
            .services(services, grace)
            .event_sink(events)
            .build()
            .await?;
        let metrics = self.serve_metrics(&host).await?;
        let charm = host.load_charm(wasm)?;
        Ok((host, metrics, charm))
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
        eprintln!("building {} for wasm32-wasip2...", charm.display());
        Ok(build_charm(charm)?)
    } else if charm.exists() {
        Ok(charm.to_owned())
    } else {
        anyhow::bail!("{}: no such file or directory", charm.display())
    }
}

/// The application name `--app` gives, or one derived from the charm's name.
fn app_name(given: Option<&str>, charm: &Path) -> anyhow::Result<AppName> {
    if let Some(name) = given {
        return Ok(AppName::new(name)?);
    }
    let stem = charm.file_stem().and_then(|s| s.to_str()).unwrap_or("app");
    let derived: String = stem.to_ascii_lowercase().replace('_', "-");
    AppName::new(&derived).or_else(|_| Ok(AppName::new("app")?))
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
    let app = app_name(args.app.as_deref(), &args.charm).map_err(|e| UsageError(format!("--app: {e}")))?;
    let mut actions = args.scheduled_actions(&app)?;
    actions.sort_by_key(|(at, _)| *at);
    let services = args.services.configs()?;
    let wasm = charm_wasm(&args.charm)?;
    // What the start creates under --state is removed again if it fails.
    let units: Vec<UnitName> = (0..args.units).map(|n| UnitName::from_parts(app.clone(), n)).collect();
    let provisional = super::provisional::Provisional::before(args.state.as_deref(), &units);
    let data_root = data_root(args.state.as_deref())?;
    // Each unit's agent lock is taken as the application starts (`Host::start_application`),
    // as `charm-host agent` holds it: no agent may run one of these units meanwhile.
    let events: Arc<dyn EventSink> = if args.json { Arc::new(JsonLog::new()) } else { Arc::new(HumanLog::new()) };
    // Poll timers and I/O more often than tokio's default, so that a guest spinning until its
    // deadline (it yields at every epoch tick) delays its neighbours' timers as little as possible.
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().event_interval(7).build()?;
    let report = tokio.block_on(async {
        let started = async {
            let store = open_store(&args, &data_root).await?;
            let (host, metrics, charm) = args
                .runtime
                .start_host(data_root.path(), store, (services, args.services.service_grace), events, &wasm)
                .await?;
            if !args.json {
                let source = if charm.from_cache() { "from cache" } else { "compiled" };
                eprintln!(
                    "loaded {} ({source} in {:.1?}); starting {} units of {app}",
                    wasm.display(),
                    charm.load_time(),
                    args.units
                );
            }
            let start = tokio::time::Instant::now();
            let application = host.start_application(app.clone(), &charm, args.units).await?;
            anyhow::Ok((host, metrics, application, start))
        };
        let (host, _metrics, mut application, start) = provisional.kept_if(started.await)?;
        let until_end = async {
            match args.run_for {
                Some(duration) => tokio::time::sleep_until(start + duration).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(until_end);
        for (at, action) in actions {
            tokio::select! {
                () = &mut until_end => break,
                () = tokio::time::sleep_until(start + at) => {}
            }
            if let Err(err) = perform(&mut application, &host, action.clone()).await {
                eprintln!("{action:?} at {at:?}: {err}");
            }
        }
        until_end.await;
        // The final status is taken after the stop: it shows how each unit ended.
        anyhow::Ok(application.stop_and_report().await?)
    })?;
    if args.json {
        outln!("{}", report.to_json_line());
    } else {
        out!("\n{}", report.to_table());
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
    /// The actions the flags schedule, with their times from the start of the run.
    fn scheduled_actions(&self, app: &AppName) -> Result<Vec<(std::time::Duration, RunAction)>, UsageError> {
        let mut actions = Vec::new();
        for (flag, list) in [("--kill", &self.kill), ("--stop", &self.stop), ("--elect", &self.elect)] {
            for UnitAt { unit, at } in list {
                if unit.app() != app {
                    return Err(UsageError(format!("{flag} {unit}@{at:?}: {unit} is not a unit of {app}")));
                }
                if unit.number() >= self.units {
                    return Err(UsageError(format!("{flag} {unit}: there are only {} units", self.units)));
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

async fn perform(application: &mut ApplicationHandle, host: &Host, action: RunAction) -> anyhow::Result<()> {
    match action {
        RunAction::Kill(unit) => application.kill_unit(&unit)?,
        RunAction::Stop(unit) => application.stop_unit(&unit).await?,
        RunAction::StepDown => {
            application.step_down().await?;
        }
        RunAction::Elect(unit) => {
            // Not waited for: the run goes on while the leader steps down for the unit.
            crate::handover::request(host.store().as_ref(), &unit, crate::timing::DEFAULT_RESERVATION).await?;
        }
    }
    Ok(())
}
