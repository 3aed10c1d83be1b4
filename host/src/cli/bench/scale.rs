//! Many applications on one etcd cluster, and handover distributions.
//!
//! A local three-member etcd (loopback, fsync on) carries 100 applications of 10 units
//! (`--quick`: 4 of 2), hosted by 5 `charm-host run` processes, each with its own state
//! directory and its share of every application's units (`--first-unit`), as on separate
//! machines. Measured: the time from the start to one leader in every application; the
//! steady state (the messages etcd's gRPC servers received per second, every method and
//! member, in total and per leader; how many watch events etcd sends per put, against the
//! processes that host each application, and the watch streams open; the CPU etcd and the
//! agents use; etcd's resident memory and database size; the agents' resident memory and
//! open file descriptors per unit); a `leader-set` in every application at once (through
//! each leader's hook-tool socket) until every minion has run `leader-settings-changed`.
//!
//! Then handover distributions (p50, p99 and max; at least 50 samples each, 1 or more with
//! `--quick`): a SIGKILL of a process (against the lease, which its successors must wait
//! out), a SIGTERM of one (a graceful stop), and a directed handover (a reservation for a
//! minion, in every application at once). On SQLite (two processes on one machine's state
//! directory, 50 applications of 2 units), on a quiet etcd (the same, on its own prefix), on
//! the loaded cluster above, and on it with one member down. Every time is read off the
//! processes' JSON event streams on this process's clock: from the signal or request to the
//! successor's `leadership` event.
//!
//! `CHARM_HOST_BENCH_SCALE=APPSxUNITS` (e.g. `300x10`) changes the size of the loaded
//! cluster, to find where this machine stops: a step that fails at such a size ends the
//! section with a row saying where and why (with the failing processes' stderr), after the
//! figures measured until then. A process of the fleet that ended fails the section.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::leadership::LeadershipStore;
use crate::leadership::etcd::{EtcdOptions, EtcdStore};
use crate::names::{AppName, UnitName};
use crate::state_dir::StateDir;

use super::etcd::server::EtcdCluster;
use super::{Figure, fixture, percentile};

/// The agents' guarantee window: a claim lasts twice this.
const WINDOW: Duration = Duration::from_secs(2);

/// How long any one wait of this section may take before it fails.
const PATIENCE: Duration = Duration::from_secs(180);

/// Something a process printed, when this process read it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    unit: UnitName,
    what: What,
}

#[derive(Debug, Clone, PartialEq)]
enum What {
    Leader(bool),
    /// A hook ended (well or not).
    Hook(String),
    /// Anything else (a hook started, a log line, a status).
    Other,
}

/// One `charm-host run` process and what it hosts.
struct Agents {
    child: Option<Child>,
    state: PathBuf,
    first: u32,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Several `run` processes hosting `units` units of each of `apps`, over one store.
struct Fleet {
    wasm: PathBuf,
    cache: PathBuf,
    /// The etcd URL, or `None` for SQLite in the shared state directory.
    store: Option<String>,
    apps: Vec<AppName>,
    per_process: u32,
    processes: Vec<Agents>,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Fleet {
    /// Starts `processes` processes hosting `units` units (split evenly) of each of `apps`
    /// applications named `bench-N`.
    fn start(
        wasm: &Path,
        cache: &Path,
        store: Option<String>,
        (apps, units, processes): (u32, u32, u32),
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            processes > 0 && units % processes == 0,
            "{units} units do not split over {processes} processes"
        );
        let shared = tempfile::tempdir()?;
        let mut fleet = Self {
            wasm: wasm.to_owned(),
            cache: cache.to_owned(),
            store,
            apps: (0..apps).map(|n| AppName::new(&format!("bench-{n}"))).collect::<Result<_, _>>()?,
            per_process: units / processes,
            processes: Vec::new(),
            seen: Arc::default(),
            _dirs: Vec::new(),
        };
        for p in 0..processes {
            let state = match fleet.store {
                Some(_) => {
                    let own = tempfile::tempdir()?;
                    let path = own.path().to_owned();
                    fleet._dirs.push(own);
                    path
                }
                None => shared.path().to_owned(),
            };
            fleet.processes.push(Agents { child: None, state, first: p * fleet.per_process, reader: None });
            fleet.spawn(p as usize)?;
        }
        fleet._dirs.push(shared);
        Ok(fleet)
    }

    /// Starts process `p` (again).
    fn spawn(&mut self, p: usize) -> anyhow::Result<()> {
        let process = &mut self.processes[p];
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("run").arg(&self.wasm).args(["--app", "bench", "--json"]);
        command.args(["--apps", &self.apps.len().to_string(), "--units", &self.per_process.to_string()]);
        command.args(["--first-unit", &process.first.to_string()]);
        command.args(["--guarantee-window", &format!("{}s", WINDOW.as_secs())]);
        command.arg("--state").arg(&process.state).arg("--cache-dir").arg(&self.cache);
        if let Some(url) = &self.store {
            command.args(["--store", url]);
        }
        let log = std::fs::File::create(process.state.join(format!("run-{p}.log")))?;
        let mut child = command.stdout(Stdio::piped()).stderr(log).spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let seen = self.seen.clone();
        process.reader = Some(std::thread::spawn(move || read_events(stdout, &seen)));
        process.child = Some(child);
        Ok(())
    }

    /// Sends `signal` to process `p` and, for KILL and TERM, waits until it has ended.
    fn signal(&mut self, p: usize, signal: &str) -> anyhow::Result<()> {
        let process = &mut self.processes[p];
        let mut child = process.child.take().ok_or_else(|| anyhow::anyhow!("process {p} does not run"))?;
        let status = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -s {signal} failed");
        child.wait()?;
        if let Some(reader) = process.reader.take() {
            let _ = reader.join();
        }
        Ok(())
    }

    /// The process that hosts `unit`.
    fn host_of(&self, unit: &UnitName) -> usize {
        (unit.number() / self.per_process) as usize
    }

    /// Every unit's name.
    fn units(&self) -> Vec<UnitName> {
        let count = self.per_process * self.processes.len() as u32;
        self.apps.iter().flat_map(|app| (0..count).map(|n| UnitName::from_parts(app.clone(), n))).collect()
    }

    /// Each application's leader as the events tell.
    fn leaders(&self) -> BTreeMap<AppName, UnitName> {
        leaders_in(&self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until `done` holds for the events so far.
    fn wait(&self, what: &str, mut done: impl FnMut(&[Seen]) -> bool) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if done(&self.seen.lock().unwrap_or_else(|p| p.into_inner())) {
                return Ok(());
            }
            anyhow::ensure!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until every application has its first leader; returns when the last one was
    /// seen.
    fn wait_for_first_leaders(&self) -> anyhow::Result<Instant> {
        let mut last = Instant::now();
        self.wait("one leader in every application", |seen| {
            let mut led = BTreeSet::new();
            for s in seen {
                if s.what == What::Leader(true) && led.insert(s.unit.app().clone()) {
                    last = s.at;
                }
            }
            led.len() == self.apps.len()
        })?;
        Ok(last)
    }

    /// Waits until every application has a leader now.
    fn wait_for_leaders(&self) -> anyhow::Result<()> {
        self.wait("a leader in every application", |seen| leaders_in(seen).len() == self.apps.len())
    }

    /// Waits until each of `units` printed something after `after` (it runs again).
    fn wait_until_up(&self, units: &[UnitName], after: Instant) -> anyhow::Result<()> {
        self.wait("restarted units to run", |seen| {
            let up: BTreeSet<&UnitName> = seen.iter().filter(|s| s.at > after).map(|s| &s.unit).collect();
            units.iter().all(|unit| up.contains(unit))
        })
    }

    /// For each application in `since`, the time from its instant there until a unit for
    /// which `successor` holds announced it leads.
    fn successions(
        &self,
        since: &BTreeMap<AppName, Instant>,
        successor: impl Fn(&UnitName) -> bool,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut times = BTreeMap::new();
        self.wait("the successors", |seen| {
            for s in seen.iter().filter(|s| s.what == What::Leader(true)) {
                let Some(&from) = since.get(s.unit.app()) else { continue };
                if s.at > from && successor(&s.unit) {
                    times.entry(s.unit.app().clone()).or_insert(s.at - from);
                }
            }
            times.len() == since.len()
        })?;
        Ok(times.into_values().collect())
    }

    /// The running process that hosts the most leaders, with its leaders' applications.
    fn busiest(&self) -> (usize, BTreeSet<AppName>) {
        let mut by_process: BTreeMap<usize, BTreeSet<AppName>> = BTreeMap::new();
        for (app, leader) in self.leaders() {
            by_process.entry(self.host_of(&leader)).or_default().insert(app);
        }
        by_process.into_iter().max_by_key(|(_, apps)| apps.len()).unwrap_or_default()
    }

    /// Ends the busiest process with `signal` (KILL or TERM) and returns how long each of
    /// its applications took to have a leader elsewhere; then starts it again and waits
    /// until its units run and have made their first claim.
    fn stop_busiest(&mut self, signal: &str) -> anyhow::Result<Vec<Duration>> {
        let (p, apps) = self.busiest();
        let since = Instant::now();
        self.signal(p, signal)?;
        let per_process = self.per_process;
        let since = apps.into_iter().map(|app| (app, since)).collect();
        let times = self.successions(&since, |unit| (unit.number() / per_process) as usize != p)?;
        let restarted = Instant::now();
        self.spawn(p)?;
        let units: Vec<UnitName> = self.units().into_iter().filter(|unit| self.host_of(unit) == p).collect();
        self.wait_until_up(&units, restarted)
            .map_err(|e| e.context(format!("process {p} started again; {}", self.log_tail(p, 200))))?;
        std::thread::sleep(WINDOW);
        Ok(times)
    }

    /// A directed handover in every application, requested one after another, each to a
    /// minion in another process than its leader's; how long each took from its request
    /// until its target announced it leads.
    async fn direct_everywhere(&self, store: &dyn LeadershipStore) -> anyhow::Result<Vec<Duration>> {
        let count = self.per_process * self.processes.len() as u32;
        let mut since = BTreeMap::new();
        let mut targets = BTreeSet::new();
        for (app, leader) in self.leaders() {
            let number = (leader.number() + self.per_process) % count;
            let target = UnitName::from_parts(app.clone(), number);
            since.insert(app, Instant::now());
            crate::handover::request(store, &target, crate::timing::DEFAULT_RESERVATION).await?;
            targets.insert(target);
        }
        self.successions(&since, |unit| targets.contains(unit))
    }

    /// A `leader-set` through every application's leader's hook tools at once; the time
    /// until the last call answered, and until every minion had run
    /// `leader-settings-changed`.
    async fn leader_set_everywhere(&self, round: u32) -> anyhow::Result<(Duration, Duration)> {
        let leaders = self.leaders();
        anyhow::ensure!(leaders.len() == self.apps.len(), "not every application has a leader");
        let since = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for leader in leaders.values() {
            let socket = StateDir::new(&self.processes[self.host_of(leader)].state).socket(leader);
            let request = crate::hook_tools::ToolRequest::LeaderSet {
                settings: vec![("bench-round".to_owned(), round.to_string())],
            };
            calls.spawn(async move { crate::hook_tools::call(&socket, &request, Duration::from_secs(30)).await });
        }
        while let Some(answer) = calls.join_next().await {
            if let crate::hook_tools::ToolResponse::Error { kind, message } = answer?? {
                anyhow::bail!("leader-set failed: {kind:?}: {message}")
            }
        }
        let answered = since.elapsed();
        let minions: BTreeSet<UnitName> =
            self.units().into_iter().filter(|unit| leaders.get(unit.app()) != Some(unit)).collect();
        let mut last = since;
        let (mut missing, mut undone) = (Vec::new(), 0);
        let waited = self.wait("every minion's leader-settings-changed", |seen| {
            let mut done = BTreeSet::new();
            for s in seen.iter().filter(|s| s.at > since && s.what == What::Hook("leader-settings-changed".into())) {
                if minions.contains(&s.unit) && done.insert(&s.unit) {
                    last = last.max(s.at);
                }
            }
            undone = minions.len() - done.len();
            missing = minions.iter().filter(|unit| !done.contains(unit)).take(10).cloned().collect();
            done.len() == minions.len()
        });
        waited.with_context(|| {
            let logs: BTreeSet<usize> = missing.iter().map(|unit| self.host_of(unit)).collect();
            let logs: Vec<String> = logs.into_iter().map(|p| self.log_tail(p, 40)).collect();
            format!("{undone} of {} minions never ran it, among them {missing:?}\n{}", minions.len(), logs.join("\n"))
        })?;
        Ok((answered, last - since))
    }

    /// Fails, with its stderr, if a process has ended (figures of a partial fleet mislead).
    fn all_running(&mut self) -> anyhow::Result<()> {
        for p in 0..self.processes.len() {
            let ended = match self.processes[p].child.as_mut() {
                Some(child) => child.try_wait()?,
                None => continue,
            };
            if let Some(status) = ended {
                anyhow::bail!("process {p} ended ({status}); {}", self.log_tail(p, 20));
            }
        }
        Ok(())
    }

    /// The last `lines` lines process `p` wrote to its stderr.
    fn log_tail(&self, p: usize, lines: usize) -> String {
        let log = std::fs::read_to_string(self.processes[p].state.join(format!("run-{p}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("process {p}'s stderr ends:\n{}", tail.join("\n"))
    }

    /// The resident memory of every running process, in KiB.
    fn rss_kib(&self) -> u64 {
        self.processes.iter().filter_map(|p| p.child.as_ref()).filter_map(|c| rss_kib(c.id())).sum()
    }

    /// The open file descriptors of every running process.
    fn open_files(&self) -> usize {
        let count = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        self.processes.iter().filter_map(|p| p.child.as_ref()).map(|c| count(c.id())).sum()
    }
}

/// Each application's leader as `seen` tells: the last `leader: true` not followed by that
/// unit's `leader: false`.
fn leaders_in(seen: &[Seen]) -> BTreeMap<AppName, UnitName> {
    let mut leaders = BTreeMap::new();
    for seen in seen {
        match seen.what {
            What::Leader(true) => {
                leaders.insert(seen.unit.app().clone(), seen.unit.clone());
            }
            What::Leader(false) if leaders.get(seen.unit.app()) == Some(&seen.unit) => {
                leaders.remove(seen.unit.app());
            }
            _ => {}
        }
    }
    leaders
}

/// Reads a process's JSON event lines into `seen` until it ends.
fn read_events(stdout: std::process::ChildStdout, seen: &Mutex<Vec<Seen>>) {
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        let at = Instant::now();
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let Some(unit) = event["unit"].as_str().and_then(|u| UnitName::new(u).ok()) else { continue };
        let what = match event["type"].as_str() {
            Some("leadership") => What::Leader(event["leader"] == true),
            Some("hook") => What::Hook(event["hook"].as_str().unwrap_or_default().to_owned()),
            _ => What::Other,
        };
        seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen { at, unit, what });
    }
}

/// The CPU time (user and system) `pids` have used so far, in seconds (those that ended
/// count nothing).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let used = |pid: &u32| -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let (user, system): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
        Some((user + system) / ticks)
    };
    pids.iter().filter_map(used).sum()
}

/// A process's resident memory in KiB (`VmRSS`), if it runs.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The sum of metric `name` (all series) over the running members of `cluster`.
fn cluster_metric(cluster: &EtcdCluster, name: &str, labels: &str) -> f64 {
    (0..cluster.members.len())
        .filter(|&i| cluster.pid(i).is_some())
        .filter_map(|i| cluster.metric(i, name, labels).ok())
        .sum()
}

/// Messages etcd's gRPC servers received, by method, over every running member.
fn messages_by_method(cluster: &EtcdCluster) -> BTreeMap<String, f64> {
    let mut methods = BTreeMap::new();
    for i in (0..cluster.members.len()).filter(|&i| cluster.pid(i).is_some()) {
        let Ok(text) = cluster.metrics_text(i) else { continue };
        for line in text.lines().filter(|l| l.starts_with("grpc_server_msg_received_total{")) {
            let method = line.split("grpc_method=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("?");
            let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *methods.entry(method.to_owned()).or_insert(0.0) += value;
        }
    }
    methods
}

/// The size of the loaded cluster: 100 x 10 (quick: 4 x 2), or `CHARM_HOST_BENCH_SCALE`.
fn size(quick: bool) -> anyhow::Result<(u32, u32)> {
    match std::env::var("CHARM_HOST_BENCH_SCALE") {
        Ok(size) => {
            let (apps, units) = size
                .split_once('x')
                .and_then(|(a, u)| Some((a.parse().ok()?, u.parse().ok()?)))
                .ok_or_else(|| anyhow::anyhow!("CHARM_HOST_BENCH_SCALE={size}: expected APPSxUNITS, e.g. 300x10"))?;
            // As `run --apps` and `--units` allow; a handover needs a second unit.
            anyhow::ensure!(
                (1..=10_000).contains(&apps) && (2..=100_000).contains(&units),
                "CHARM_HOST_BENCH_SCALE={size}: 1 to 10,000 applications of 2 to 100,000 units"
            );
            Ok((apps, units))
        }
        Err(_) if quick => Ok((4, 2)),
        Err(_) => Ok((100, 10)),
    }
}

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let (apps, units) = size(quick)?;
    let wasm = fixture("example-charms/shared-settings")?;
    let cache = tempfile::tempdir()?;
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut figures = Vec::new();
    let small = if quick { (2, 2, 2) } else { (50, 2, 2) };
    let wanted = if quick { 1 } else { 50 };

    // SQLite: two processes on one state directory.
    let mut fleet = Fleet::start(&wasm, cache.path(), None, small)?;
    fleet.wait_for_first_leaders()?;
    let sqlite = crate::leadership::SqliteStore::open(&StateDir::new(&fleet.processes[0].state).store())?;
    figures.extend(handovers(&tokio, &mut fleet, &sqlite, "SQLite", wanted)?);
    drop(fleet);

    let mut cluster = EtcdCluster::start_durable(3);
    // A quiet etcd: the same small fleet.
    let url = cluster.url_with_prefix("quiet");
    let mut fleet = Fleet::start(&wasm, cache.path(), Some(url.clone()), small)?;
    fleet.wait_for_first_leaders()?;
    let store = connect(&tokio, url)?;
    figures.extend(handovers(&tokio, &mut fleet, &store, "etcd, quiet", wanted)?);
    drop((fleet, store));

    // The loaded cluster. At a size of its own (finding where this machine stops), a step
    // that fails ends the section with a row saying where and why, after what it measured.
    let processes = [5, 2, 1].into_iter().find(|p| units % p == 0).unwrap_or(1);
    let label = format!("{apps} apps x {units} units in {processes} processes, 3-member etcd");
    let custom = std::env::var_os("CHARM_HOST_BENCH_SCALE").is_some();
    match loaded(
        &tokio,
        &mut cluster,
        (&wasm, cache.path()),
        (apps, units, processes),
        &label,
        (quick, wanted),
        &mut figures,
    ) {
        Err(err) if custom => {
            figures.push(Figure::skipped(format!("scale ({label}): the rest"), format!("stopped: {err:#}")))
        }
        done => done?,
    }
    Ok(figures)
}

/// A store on `url`, connected on `tokio`.
fn connect(tokio: &tokio::runtime::Runtime, url: String) -> anyhow::Result<EtcdStore> {
    tokio.block_on(async move { anyhow::Ok(EtcdStore::connect(&EtcdOptions::from_url(&url)?).await?) })
}

/// The loaded cluster's figures, pushed onto `figures` as they are measured.
fn loaded(
    tokio: &tokio::runtime::Runtime,
    cluster: &mut EtcdCluster,
    (wasm, cache): (&Path, &Path),
    (apps, units, processes): (u32, u32, u32),
    label: &str,
    (quick, wanted): (bool, usize),
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let url = cluster.url_with_prefix("scale");
    let started = Instant::now();
    let mut fleet = Fleet::start(wasm, cache, Some(url.clone()), (apps, units, processes))?;
    let all_led = fleet.wait_for_first_leaders()? - started;
    fleet.all_running()?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    figures.push(
        Figure::new(format!("scale ({label}): start to one leader in every application"), ms(all_led), "ms")
            .against(ms(crate::timing::claim_duration(WINDOW)))
            .target(
                "<= the new store's wait (a claim) + 2 s",
                ms(all_led) <= ms(crate::timing::claim_duration(WINDOW)) + 2000.0,
            ),
    );
    let store = connect(tokio, url)?;
    let total = u64::from(apps) * u64::from(units);
    figures.extend(steady_state(cluster, &fleet, label, total, quick)?);
    let (answered, applied) = tokio.block_on(fleet.leader_set_everywhere(1))?;
    figures.push(
        Figure::new(
            format!("scale ({label}): leader-set in every application at once, until every minion ran leader-settings-changed"),
            ms(applied),
            "ms",
        )
        .against(ms(answered)),
    );
    figures.extend(handovers(tokio, &mut fleet, &store, &format!("etcd, loaded by {total} units"), wanted)?);
    // One member down (not the one this bench's store happens to use: any of three).
    cluster.kill(2);
    figures.extend(handovers(tokio, &mut fleet, &store, "etcd, loaded, one member of 3 down", wanted)?);
    drop((fleet, store));
    Ok(())
}

/// etcd's count of watch events it sent, of puts it applied, and its open watch streams and
/// watches (gauges).
const EVENTS: &str = "etcd_debugging_mvcc_events_total";
const PUTS: &str = "etcd_mvcc_put_total";
const STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// Traffic, memory and database size while nothing happens but renewals.
fn steady_state(
    cluster: &EtcdCluster,
    fleet: &Fleet,
    label: &str,
    units: u64,
    quick: bool,
) -> anyhow::Result<Vec<Figure>> {
    // Past the start's hooks and claims: a few renewal intervals.
    std::thread::sleep(WINDOW * 2);
    let span = if quick { Duration::from_secs(2) } else { Duration::from_secs(10) };
    let before = messages_by_method(cluster);
    let (events_before, puts_before) = (cluster_metric(cluster, EVENTS, ""), cluster.metric(0, PUTS, "")?);
    let etcd_pids: Vec<u32> = (0..cluster.members.len()).filter_map(|i| cluster.pid(i)).collect();
    let agent_pids: Vec<u32> = fleet.processes.iter().filter_map(|p| p.child.as_ref()).map(Child::id).collect();
    let (etcd_cpu_before, agents_cpu_before) = (cpu_seconds(&etcd_pids), cpu_seconds(&agent_pids));
    let start = Instant::now();
    std::thread::sleep(span);
    let after = messages_by_method(cluster);
    let (events_after, puts_after) = (cluster_metric(cluster, EVENTS, ""), cluster.metric(0, PUTS, "")?);
    let seconds = start.elapsed().as_secs_f64();
    let etcd_cpu = (cpu_seconds(&etcd_pids) - etcd_cpu_before) / seconds;
    let agents_cpu = (cpu_seconds(&agent_pids) - agents_cpu_before) / seconds;
    // Every member applies every put; each sends events to its own watchers.
    let per_put = (events_after - events_before) / (puts_after - puts_before).max(1.0);
    let hosts = fleet.processes.len() as f64;
    let (streams, watchers) = (cluster_metric(cluster, STREAMS, ""), cluster_metric(cluster, WATCHERS, ""));
    let rate: BTreeMap<&str, f64> = after
        .iter()
        .map(|(method, n)| (method.as_str(), (n - before.get(method).copied().unwrap_or(0.0)) / seconds))
        .filter(|(_, rate)| *rate > 0.0)
        .collect();
    let total: f64 = rate.values().sum();
    let leaders = fleet.apps.len() as f64;
    let renewal = 2.0 / crate::timing::renew_interval(WINDOW).as_secs_f64();
    let by_method = rate.iter().map(|(method, rate)| format!("{method} {rate:.0}")).collect::<Vec<_>>().join(", ");
    let etcd_rss: u64 = (0..cluster.members.len()).filter_map(|i| cluster.pid(i)).filter_map(rss_kib).sum();
    let db = cluster_metric(cluster, "etcd_mvcc_db_total_size_in_bytes", "") / cluster.members.len() as f64;
    let agents = fleet.rss_kib() as f64;
    let descriptors = fleet.open_files() as f64;
    Ok(vec![
        Figure::new(format!("scale ({label}): etcd requests/s at rest, total ({by_method})"), total, "msgs/s"),
        Figure::new(
            format!("scale ({label}): etcd requests/s at rest per leader (against a renewal's keep-alive + txn per interval)"),
            total / leaders,
            "msgs/s",
        )
        .against(renewal)
        .target("<= 1.1x: renewals only, by leaders", total / leaders <= 1.1 * renewal),
        Figure::new(
            format!("scale ({label}): watch events sent per put at rest (against the processes hosting each application)"),
            per_put,
            "events",
        )
        .against(hosts)
        .target("<= 1.1x: a renewal reaches only its application's processes", per_put <= 1.1 * hosts),
        Figure::new(
            format!("scale ({label}): watch streams open ({watchers:.0} watches; against the processes)"),
            streams,
            "streams",
        )
        .against(hosts),
        Figure::new(format!("scale ({label}): CPU at rest, etcd's 3 members (cores)"), etcd_cpu, "cores"),
        Figure::new(format!("scale ({label}): CPU at rest, the agents (cores)"), agents_cpu, "cores"),
        Figure::new(format!("scale ({label}): etcd resident memory, 3 members"), etcd_rss as f64 / 1024.0, "MiB"),
        Figure::new(format!("scale ({label}): etcd database size (per member)"), db / 1024.0 / 1024.0, "MiB"),
        Figure::new(format!("scale ({label}): agents' resident memory per unit"), agents / units as f64, "KiB"),
        Figure::new(format!("scale ({label}): agents' open file descriptors per unit"), descriptors / units as f64, "fds"),
    ])
}

/// Crash, graceful and directed handovers on `fleet` until each has `wanted` samples.
fn handovers(
    tokio: &tokio::runtime::Runtime,
    fleet: &mut Fleet,
    store: &dyn LeadershipStore,
    condition: &str,
    wanted: usize,
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let lease = crate::timing::claim_duration(WINDOW);
    for kind in ["crash (SIGKILL)", "graceful (SIGTERM)", "directed"] {
        let mut samples = Vec::new();
        while samples.len() < wanted {
            fleet.wait_for_leaders()?;
            let round = match kind {
                "crash (SIGKILL)" => fleet.stop_busiest("KILL"),
                "graceful (SIGTERM)" => fleet.stop_busiest("TERM"),
                _ => tokio.block_on(fleet.direct_everywhere(store)),
            };
            samples.extend(round.with_context(|| format!("handovers on {condition}: {kind}"))?);
        }
        figures.extend(distribution(&format!("handover, {condition}: {kind}"), &mut samples, kind, lease));
        tracing::info!("{condition}: {kind}: {} samples", samples.len());
    }
    Ok(figures)
}

/// p50, p99 and max of `samples`; a crash's against the lease its successor waits out.
fn distribution(name: &str, samples: &mut [Duration], kind: &str, lease: Duration) -> Vec<Figure> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = samples.len();
    let (p50, p99, max) = (percentile(samples, 0.5), percentile(samples, 0.99), percentile(samples, 1.0));
    [("p50", p50), ("p99", p99), ("max", max)]
        .into_iter()
        .map(|(which, value)| {
            let figure = Figure::new(format!("{name}, {which} of {n}"), ms(value), "ms");
            if kind.starts_with("crash") {
                let target = ms(lease) + 1000.0;
                figure.against(ms(lease)).target("<= the lease + 1 s", ms(value) <= target)
            } else {
                figure
            }
        })
        .collect()
}
