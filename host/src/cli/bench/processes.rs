//! Handovers between `charm-host agent` processes: graceful (SIGTERM of the leader) and
//! after a crash (SIGKILL), on etcd (each agent with its own state directory, as on separate
//! machines) and on one machine's SQLite file. Gaps are read off the agents' tenure records
//! (the successor's start minus the old leader's end), on the clock the store uses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::leadership::{BootClock, Clock, MonotonicClock, Timestamp};
use crate::tenure_record::{self, Belief};

use super::etcd::server::EtcdCluster;
use super::{Figure, fixture, median};

const WINDOW: Duration = Duration::from_secs(1);

/// Two agents of one application, killed when dropped.
struct Pair {
    children: Vec<Child>,
    records: Vec<PathBuf>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The tenures `path` records so far (a record being written reads as what it has).
fn tenures(path: &Path) -> Vec<Belief> {
    tenure_record::read(path).unwrap_or_default()
}

impl Pair {
    /// Starts `bench/0`, waits until it leads, then starts `bench/1`.
    fn start(wasm: &Path, cache: &Path, store: Option<&str>) -> anyhow::Result<Self> {
        let shared = tempfile::tempdir()?;
        let mut pair = Self { children: Vec::new(), records: Vec::new(), _dirs: Vec::new() };
        for n in 0..2 {
            // On etcd each agent has a state directory of its own; on SQLite they share one.
            let state = match store {
                Some(_) => {
                    let own = tempfile::tempdir()?;
                    let path = own.path().to_owned();
                    pair._dirs.push(own);
                    path
                }
                None => shared.path().to_owned(),
            };
            let mut command = Command::new(std::env::current_exe()?);
            command.arg("agent").arg(wasm).args(["--unit", &format!("bench/{n}"), "--json"]);
            command.arg("--state").arg(&state).arg("--cache-dir").arg(cache);
            command.args(["--guarantee-window", &format!("{}s", WINDOW.as_secs())]);
            if let Some(url) = store {
                command.args(["--store", url]);
            }
            pair.children.push(command.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?);
            pair.records.push(state.join(format!("units/bench-{n}/tenures.jsonl")));
            if n == 0 {
                pair.wait(|p| !tenures(&p.records[0]).is_empty(), "bench/0 to lead")?;
            }
        }
        pair._dirs.push(shared);
        // The minion is up once its record file could exist; give it its first claim.
        std::thread::sleep(WINDOW / 2);
        Ok(pair)
    }

    fn wait(&self, done: impl Fn(&Self) -> bool, what: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        while !done(self) {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    fn signal(&self, n: usize, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.children[n].id().to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }
}

/// The gap of one handover: from the leader's end (graceful) or from the kill (crash) to
/// the successor's start.
fn handover(
    wasm: &Path,
    cache: &Path,
    store: Option<&str>,
    clock: &dyn Clock,
    signal: &str,
) -> anyhow::Result<Duration> {
    let pair = Pair::start(wasm, cache, store)?;
    let killed_at = clock.now();
    pair.signal(0, signal)?;
    pair.wait(|p| !tenures(&p.records[1]).is_empty(), "bench/1 to lead")?;
    let from = tenures(&pair.records[1]).first().ok_or_else(|| anyhow::anyhow!("no start recorded"))?.from_ns;
    let since = if signal == "TERM" {
        let ended = tenures(&pair.records[0]).iter().rev().find_map(|t| t.ended_ns);
        ended.ok_or_else(|| anyhow::anyhow!("a graceful stop recorded no end"))?
    } else {
        killed_at.as_nanos()
    };
    Ok(Timestamp::from_nanos(from).saturating_since(Timestamp::from_nanos(since)))
}

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let wasm = fixture("example-charms/shared-settings")?;
    let cache = tempfile::tempdir()?;
    let cluster = EtcdCluster::start_durable(1);
    let url = cluster.url();
    let rounds = if quick { 2 } else { 7 };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let lease = ms(WINDOW * 2);
    let mut figures = Vec::new();
    for (store, clock, name) in [
        (Some(url.as_str()), &BootClock as &dyn Clock, "etcd, agents on separate state directories"),
        (None, &MonotonicClock as &dyn Clock, "SQLite, agents on one state directory"),
    ] {
        let mut graceful = (0..rounds)
            .map(|_| handover(&wasm, cache.path(), store, clock, "TERM"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let value = ms(median(&mut graceful));
        figures.push(
            Figure::new(format!("graceful handover between agent processes ({name}): leaderless gap"), value, "ms")
                .against(lease)
                .target("a few ms (<= 10 ms)", value <= 10.0),
        );
        let mut crash = (0..rounds.min(3))
            .map(|_| handover(&wasm, cache.path(), store, clock, "KILL"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let value = ms(median(&mut crash));
        figures.push(
            Figure::new(
                format!(
                    "crash handover between agent processes ({name}): SIGKILL to successor leading, lease {lease:.0} ms"
                ),
                value,
                "ms",
            )
            .target("<= lease + 1 s", value <= lease + 1000.0),
        );
    }
    Ok(figures)
}
