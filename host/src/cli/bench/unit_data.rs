//! Unit data, minions to the leader: a burst of 999 minions publishing at once until the
//! leader's targets file lists them all (example-charms/peer-config, in one process), and
//! the cost of one change to the leader at 100, 1,000 and 10,000 units (memory, SQLite and
//! etcd stores), which must not grow with the number of units.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::{BareUnit, UnitSetup, UnitSpec};
use crate::application::{Application, ApplicationConfig};
use crate::events::{Event, EventKind, EventSink, RecordingSink};
use crate::hooks::{HookCall, HookKind};
use crate::leadership::etcd::{EtcdOptions, EtcdStore};
use crate::leadership::sqlite::{Durability, SqliteOptions};
use crate::leadership::{Claimant, LeadershipStore, MemoryStore, MonotonicClock, SqliteStore, UnitDataStore as _};
use crate::names::{AppName, UnitName};
use crate::runtime::{Charm, HookRuntime, RuntimeConfig};
use crate::state_dir::StateDir;
use crate::timing::GuaranteeWindow;

use super::etcd::server;
use super::{Figure, fixture, median};

/// Counts the leader's `unit-data-changed` hooks that started after a mark (counted as
/// they start: the one that writes the file is counted before the file is seen).
#[derive(Default)]
struct LeaderHooks {
    counting: std::sync::atomic::AtomicBool,
    leader: Mutex<Option<UnitName>>,
    unit_data_changed: AtomicUsize,
}

impl EventSink for LeaderHooks {
    fn emit(&self, event: Event) {
        let EventKind::HookStarted { hook: HookKind::UnitDataChanged } = event.kind else { return };
        let leader = self.leader.lock().is_ok_and(|l| l.as_ref() == Some(&event.unit));
        if self.counting.load(Ordering::SeqCst) && leader {
            self.unit_data_changed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// peer-config's keys (see example-charms/peer-config).
const ADDRESSES: &str = "addresses";
const APPLIED: &str = "applied-version";
const TARGETS: &str = "targets";
const VERSION: &str = "targets-version";

/// What a burst measured.
struct Burst {
    /// Until the leader's targets file listed every minion's new address.
    listed: Duration,
    /// Until the leader's settings (the targets shared with every unit) did.
    shared: Duration,
    /// The leader's `unit-data-changed` hooks meanwhile (the most of any round).
    hooks: usize,
    /// The publishes alone (the baseline).
    published: Duration,
}

/// 999 minions (or `units - 1`) publish new addresses at the same moment, `rounds` times
/// with the application quiet before each: the median of each time (see [`Burst`]), and
/// the most hooks one burst took.
async fn burst(runtime: Arc<HookRuntime>, charm: Charm, units: u32, rounds: u8) -> anyhow::Result<Burst> {
    let dir = tempfile::tempdir()?;
    let app = AppName::new("scrape")?;
    let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
    let events = Arc::new(LeaderHooks::default());
    let config = ApplicationConfig::new(app.clone(), units, StateDir::new(dir.path()))
        .with_setup(UnitSetup::default().with_window(GuaranteeWindow::new(Duration::from_secs(30))?));
    let application = Application::new(runtime.clone(), charm, store.clone(), events.clone(), &config).await?;
    let mut running = application.start()?;
    // Quiet: every member applied the latest targets, and no hook has run for a while.
    let quiet = async || -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut idle_since = None;
        loop {
            anyhow::ensure!(Instant::now() < deadline, "{units} peer-config units did not settle");
            let version = store.read_settings(&app).await?.values.get(VERSION).cloned();
            let members = store.unit_data_since(&app, 0).await?.units;
            let applied = version.is_some()
                && members.len() == units as usize
                && members.iter().all(|(_, d)| d.as_ref().and_then(|d| d.values.get(APPLIED).cloned()) == version);
            if applied && runtime.hooks_running() == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(200) {
                    return Ok(());
                }
            } else {
                idle_since = None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    quiet().await?;
    let leader = store.lease(&app).await?.ok_or_else(|| anyhow::anyhow!("no leader"))?.holder;
    *events.leader.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(leader.clone());
    let minions: Vec<_> = application.units().iter().filter(|u| *u.name() != leader).cloned().collect();
    let leader_dir = application.units().iter().find(|u| *u.name() == leader).map(|u| u.data_dir().to_owned());
    let leader_file = leader_dir.ok_or_else(|| anyhow::anyhow!("no leading unit"))?.join("targets.json");
    let (mut listed, mut shared, mut published, mut most_hooks) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for round in 1..=rounds {
        let prefix = format!("192.{round}.");
        let address = |unit: &UnitName| format!("{prefix}{}.{}:9100", unit.number() / 256, unit.number() % 256);
        events.unit_data_changed.store(0, Ordering::SeqCst);
        events.counting.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let publishes: Vec<_> = minions
            .iter()
            .map(|unit| {
                let (unit, address) = (unit.clone(), address(unit.name()));
                tokio::spawn(async move { unit.unit_data().set_by(&[(ADDRESSES.into(), address)], None).await })
            })
            .collect();
        for publish in publishes {
            publish.await??;
        }
        published.push(start.elapsed());
        let expected = minions.len();
        let (mut file_at, mut settings_at) = (None, None);
        while file_at.is_none() || settings_at.is_none() {
            if file_at.is_none() {
                let file = std::fs::read_to_string(&leader_file).unwrap_or_default();
                if file.matches(&prefix).count() == expected {
                    file_at = Some(start.elapsed());
                }
            }
            if settings_at.is_none() {
                let targets = store.read_settings(&app).await?.values.get(TARGETS).cloned().unwrap_or_default();
                if targets.matches(&prefix).count() == expected {
                    settings_at = Some(start.elapsed());
                }
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "the leader never listed every minion");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        events.counting.store(false, Ordering::SeqCst);
        most_hooks = most_hooks.max(events.unit_data_changed.load(Ordering::SeqCst));
        listed.extend(file_at);
        shared.extend(settings_at);
        quiet().await?;
    }
    running.stop().await;
    Ok(Burst {
        listed: median(&mut listed),
        shared: median(&mut shared),
        hooks: most_hooks,
        published: median(&mut published),
    })
}

/// A leader unit (bare: the bench runs its hooks) and `units - 1` other members, each with
/// an address, in `store`.
struct Members {
    leader: BareUnit,
    others: Vec<Claimant>,
    /// The leader's subscription: its mirror lives while it is held.
    watch: Mutex<tokio::sync::watch::Receiver<u64>>,
    store: Arc<dyn LeadershipStore>,
    _dir: tempfile::TempDir,
}

impl Members {
    async fn new(store: Arc<dyn LeadershipStore>, units: u32) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let app = AppName::new("bench")?;
        let name = UnitName::from_parts(app.clone(), 0);
        let leader = UnitSpec::new(name, StateDir::new(dir.path()), store.clone(), Arc::new(RecordingSink::new()));
        let leader = leader.bare()?;
        leader.unit().unit_data().join().await?;
        leader.tracker.refresh().await;
        anyhow::ensure!(leader.unit().leadership().held_term().is_some(), "the bench unit did not lead");
        let mut others = Vec::new();
        for n in 1..units {
            let claimant = Claimant::fresh(UnitName::from_parts(app.clone(), n));
            store.join_unit(&claimant).await?;
            store.write_unit_data(&claimant, &[(ADDRESSES.into(), format!("10.0.0.{n}"))], None).await?;
            others.push(claimant);
        }
        // The leader's mirror holds everyone; leader-elected would read them all.
        let watch = Mutex::new(leader.unit().unit_data().watch());
        leader.unit().unit_data().refresh().await?;
        leader.unit().unit_data().clear_pending();
        let members = Self { leader, others, watch, store, _dir: dir };
        probe_script(&members)?;
        Ok(members)
    }

    /// One change of one member's data (the `round`th): the leader's cost from hearing of
    /// it (its revision announced) to its `unit-data-changed` done.
    async fn one_change(
        &self,
        store: &Arc<dyn LeadershipStore>,
        runtime: &HookRuntime,
        charm: &Charm,
        round: usize,
    ) -> anyhow::Result<Duration> {
        let unit_data = self.leader.unit().unit_data();
        let writer = &self.others[round % self.others.len()];
        self.watch.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.borrow_and_update();
        store.write_unit_data(writer, &[(ADDRESSES.into(), format!("10.1.{round}.1"))], None).await?;
        let mut watch = self.watch.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        tokio::time::timeout(Duration::from_secs(30), watch.changed()).await??;
        let start = Instant::now();
        unit_data.refresh().await?;
        let changed = unit_data.take_pending();
        anyhow::ensure!(changed.len() == 1, "one change, announced once: {changed:?}");
        let call = HookCall::unit_data_changed(changed);
        let outcome = runtime.run_hook_quietly(charm, &self.leader.sandbox, call).await;
        let cost = start.elapsed();
        outcome.result.map_err(|e| anyhow::anyhow!("unit-data-changed failed: {e}"))?;
        Ok(cost)
    }
}

/// The probe's script for the leader's hook: what a leader does with one change, read
/// the changed unit's data (every round changes one unit, and reading any member's costs
/// the same, so the first other member stands for it). Nothing that lists every member.
fn probe_script(members: &Members) -> anyhow::Result<()> {
    let first = members.others.first().map(|c| c.unit().to_string()).unwrap_or_default();
    std::fs::write(members.leader.unit().data_dir().join("script"), format!("changed\nunit-get {first} {ADDRESSES}"))?;
    Ok(())
}

/// The median cost to the leader of one change, at each size of `sizes` on stores
/// `open` makes: the sizes' rounds interleaved, so that whatever drifts during the run
/// weighs on every size alike.
async fn leader_costs(
    sizes: &[u32],
    open: impl AsyncFn(u32) -> anyhow::Result<Arc<dyn LeadershipStore>>,
    runtime: &HookRuntime,
    charm: &Charm,
    rounds: usize,
) -> anyhow::Result<Vec<(u32, Duration)>> {
    let mut sets = Vec::new();
    for &n in sizes {
        sets.push((n, Members::new(open(n).await?, n).await?, Vec::new()));
    }
    for round in 0..rounds {
        for (_, members, samples) in &mut sets {
            samples.push(members.one_change(&members.store.clone(), runtime, charm, round).await?);
        }
    }
    Ok(sets.into_iter().map(|(n, _, mut samples)| (n, median(&mut samples))).collect())
}

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let runtime = Arc::new(HookRuntime::new(RuntimeConfig { cache_dir: None, ..RuntimeConfig::default() })?);
    let peer_config = runtime.load_charm(&fixture("example-charms/peer-config")?)?;
    let probe = runtime.load_charm(&fixture("tests/charms/probe")?)?;
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    tokio.block_on(async {
        let mut figures = Vec::new();
        let units = if quick { 100 } else { 1000 };
        let burst = burst(runtime.clone(), peer_config, units, if quick { 1 } else { 5 }).await?;
        let minions = units - 1;
        figures.push(
            Figure::new(
                format!("burst: {minions} minions unit-set at once -> the leader's file lists all"),
                ms(burst.listed),
                "ms",
            )
            .against(ms(burst.published))
            .target("< 50 ms", ms(burst.listed) < 50.0),
        );
        figures.push(
            Figure::new(
                "burst: ... -> the leader's settings (shared targets) list all".to_string(),
                ms(burst.shared),
                "ms",
            )
            .against(ms(burst.published)),
        );
        figures.push(
            Figure::new(
                format!("burst: the leader's unit-data-changed hooks for {minions} changes"),
                burst.hooks as f64,
                "hooks",
            )
            .target("<= 5 in every round", burst.hooks <= 5),
        );
        let cluster = server::EtcdCluster::start_durable(1);
        let processes = if quick { 5 } else { 50 };
        let (listed, requests) = burst_on_etcd(&fixture("example-charms/peer-config")?, &cluster, processes).await?;
        let minions = processes - 1;
        figures.push(Figure::new(
            format!("burst on etcd, {processes} agent processes: {minions} unit-set -> the leader's file lists all"),
            ms(listed),
            "ms",
        ));
        // Each minion's unit-set is a read and a guarded write (the baseline); the leader
        // hears through its watch and reads no unit's data from etcd. What else the count
        // holds is the minions' answer to the leader's writes on the way (each reads the
        // settings and writes its acknowledgement): a few per minion, whatever the number.
        figures.push(
            Figure::new(
                format!("burst on etcd: etcd requests until then, per minion ({processes} agents)"),
                requests / f64::from(minions),
                "requests",
            )
            .against(2.0),
        );
        let rounds = if quick { 20 } else { 200 };
        let all: &[u32] = if quick { &[100, 1000] } else { &[100, 1000, 10_000] };
        let stores: [(&str, &[u32]); 3] = [("memory", all), ("sqlite", all), ("etcd", &all[..2])];
        for (kind, sizes) in stores {
            let dirs = tempfile::tempdir()?;
            let open = async |n: u32| -> anyhow::Result<Arc<dyn LeadershipStore>> {
                let store: Arc<dyn LeadershipStore> = match kind {
                    "memory" => Arc::new(MemoryStore::new()),
                    "sqlite" => {
                        let options = SqliteOptions { durability: Durability::Normal, ..SqliteOptions::default() };
                        let path = dirs.path().join(format!("{n}.db"));
                        Arc::new(SqliteStore::open_with(&path, Arc::new(MonotonicClock), options)?)
                    }
                    // etcd: joining 10,000 units would be 40,000 round trips of set-up alone.
                    _ => {
                        let mut options = EtcdOptions::from_url(&cluster.url())?;
                        options.prefix = format!("/bench-unit-data-{n}");
                        options.unused_prefix = true;
                        Arc::new(EtcdStore::connect(&options).await?)
                    }
                };
                Ok(store)
            };
            let costs = leader_costs(sizes, open, &runtime, &probe, rounds).await?;
            let base = costs.first().map(|(_, cost)| us(*cost)).unwrap_or(f64::NAN);
            for (n, cost) in costs {
                let figure = Figure::new(
                    format!("one change among {n} units ({kind}): leader hears -> hook done"),
                    us(cost),
                    "us",
                );
                figures.push(if n == sizes[0] {
                    figure
                } else {
                    figure.against(base).target("<= 1.5x the 100-unit cost", us(cost) <= 1.5 * base)
                });
            }
        }
        Ok(figures)
    })
}

/// `charm-host agent` processes of peer-config on etcd, each on a state directory of its own
/// (as on separate machines), killed when dropped.
struct Agents {
    children: Vec<std::process::Child>,
    states: Vec<tempfile::TempDir>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every gRPC request etcd has answered, from its metrics on the client port.
fn etcd_requests(port: u16) -> anyhow::Result<f64> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let handled: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with("grpc_server_handled_total{") && !line.contains("grpc_method=\"Watch\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    anyhow::ensure!(!handled.is_empty(), "etcd's metrics have no grpc_server_handled_total");
    Ok(handled.iter().sum())
}

/// `units` agent processes on etcd; then every minion publishes through its hook tools at
/// once: the time until the leader's targets file lists them all, and the etcd requests
/// (all of them, the watch streams aside) meanwhile.
async fn burst_on_etcd(
    wasm: &std::path::Path,
    cluster: &server::EtcdCluster,
    units: u32,
) -> anyhow::Result<(Duration, f64)> {
    let cache = tempfile::tempdir()?;
    let url = cluster.url_with_prefix("bench-processes");
    let app = AppName::new("scrape")?;
    let mut agents = Agents { children: Vec::new(), states: Vec::new() };
    let store = EtcdStore::connect(&EtcdOptions::from_url(&url)?).await?;
    let members = async || -> anyhow::Result<usize> { Ok(store.unit_data_since(&app, 0).await?.units.len()) };
    for n in 0..units {
        let state = tempfile::tempdir()?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg("agent").arg(wasm).args(["--unit", &format!("scrape/{n}"), "--json", "--store", &url]);
        command.arg("--state").arg(state.path()).arg("--cache-dir").arg(cache.path());
        // A new prefix grants its first tenure after twice the window: keep that short.
        command.args(["--guarantee-window", "2s"]);
        let child = command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()?;
        agents.children.push(child);
        agents.states.push(state);
        if n == 0 {
            // The first one compiles the charm into the shared cache; the others load it.
            let deadline = Instant::now() + Duration::from_secs(300);
            while members().await? == 0 {
                anyhow::ensure!(Instant::now() < deadline, "the first agent on etcd never joined");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let quiet = async || -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if Instant::now() >= deadline {
                let members = store.unit_data_since(&app, 0).await?.units.len();
                anyhow::bail!("{units} agents on etcd did not settle ({members} joined)");
            }
            let version = store.read_settings(&app).await?.values.get(VERSION).cloned();
            let members = store.unit_data_since(&app, 0).await?.units;
            if version.is_some()
                && members.len() == units as usize
                && members.iter().all(|(_, d)| d.as_ref().and_then(|d| d.values.get(APPLIED).cloned()) == version)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    quiet().await?;
    // Let the last acknowledgements' hooks end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = store.lease(&app).await?.ok_or_else(|| anyhow::anyhow!("no leader"))?.holder;
    let leader_state = StateDir::new(agents.states[leader.number() as usize].path());
    let leader_file = leader_state.data_dir(&leader).join("targets.json");
    let port = cluster.members.first().map(|m| m.client_port).ok_or_else(|| anyhow::anyhow!("no etcd member"))?;
    let before = etcd_requests(port)?;
    let start = Instant::now();
    let publishes: Vec<_> = (0..units)
        .filter(|n| *n != leader.number())
        .map(|n| {
            let unit = UnitName::from_parts(app.clone(), n);
            let socket = StateDir::new(agents.states[n as usize].path()).socket(&unit);
            let settings = vec![(ADDRESSES.to_owned(), format!("192.9.{}.{}:9100", n / 256, n % 256))];
            tokio::spawn(async move {
                crate::hook_tools::call(
                    &socket,
                    &crate::hook_tools::ToolRequest::UnitSet { settings },
                    Duration::from_secs(30),
                )
                .await
            })
        })
        .collect();
    for publish in publishes {
        publish.await??;
    }
    let expected = units as usize - 1;
    loop {
        let file = std::fs::read_to_string(&leader_file).unwrap_or_default();
        if file.matches("192.9.").count() == expected {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "the leader never listed every minion");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let listed = start.elapsed();
    let requests = etcd_requests(port)? - before;
    drop(agents);
    Ok((listed, requests))
}
