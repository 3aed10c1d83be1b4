//! The cold start of a large application: what `charm-host run --units 10000` does (a host
//! with an in-memory store, the charm from the compiled-code cache, every unit started at
//! once), timed until every unit reports `active` and exactly one leads, with the process's
//! peak resident memory then. Measured in a process of its own, so the peak is this start's.
//!
//! The target is derived from hook dispatch measured in the same process afterwards: each
//! unit runs two hooks to get there (install, then leader-elected or leader-settings-changed),
//! so the hooks alone take `2 x units x dispatch / cores`; the start may take three times that
//! (the hooks are not trivial ones, and every unit also claims, records its state and is
//! scheduled).
//!
//! Beside it, the floor the filesystem sets: the same directories and record files each unit
//! has by then (its directory and data directory, its local state, two status records),
//! made by a bare loop on every core, in the same state directory after the start (so both
//! meet the same recently freed inodes, which make ext4's allocations slow). The loop does
//! not fsync: the agents' fsyncs overlap on blocking threads, a loop's would queue.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::{LocalState, RecordWriter};
use crate::events::{Event, EventKind, EventSink, WorkloadStatus};
use crate::leadership::MemoryStore;
use crate::names::{AppName, UnitName};
use crate::state_dir::{StateDir, create_private_dirs};
use crate::unit::UnitStatus;

use super::calls::HookBench;
use super::{Figure, fixture, percentile};

/// Watches every unit's workload status and the number of leaders, and notes the instant
/// the application first had all units active and one leader.
struct Settled {
    units: usize,
    active: Flags,
    leading: Flags,
    at: Mutex<Option<Instant>>,
}

/// One flag per unit, and how many are set.
struct Flags {
    flags: Vec<AtomicU8>,
    set: AtomicUsize,
}

impl Flags {
    fn new(units: usize) -> Self {
        Self { flags: (0..units).map(|_| AtomicU8::new(0)).collect(), set: AtomicUsize::new(0) }
    }

    fn set(&self, unit: &UnitName, on: bool) {
        let Some(flag) = usize::try_from(unit.number()).ok().and_then(|n| self.flags.get(n)) else { return };
        let now = u8::from(on);
        match flag.swap(now, Ordering::AcqRel).cmp(&now) {
            std::cmp::Ordering::Less => self.set.fetch_add(1, Ordering::AcqRel),
            std::cmp::Ordering::Greater => self.set.fetch_sub(1, Ordering::AcqRel),
            std::cmp::Ordering::Equal => 0,
        };
    }

    fn count(&self) -> usize {
        self.set.load(Ordering::Acquire)
    }
}

impl Settled {
    fn new(units: usize) -> Self {
        Self { units, active: Flags::new(units), leading: Flags::new(units), at: Mutex::new(None) }
    }

    fn at(&self) -> Option<Instant> {
        self.at.lock().ok().and_then(|at| *at)
    }
}

impl EventSink for Settled {
    fn emit(&self, event: Event) {
        match event.kind {
            EventKind::Status { status, .. } => self.active.set(&event.unit, status == WorkloadStatus::Active),
            EventKind::Leadership(change) => self.leading.set(&event.unit, change.leads()),
            _ => return,
        }
        if self.active.count() == self.units
            && self.leading.count() == 1
            && let Ok(mut at) = self.at.lock()
        {
            at.get_or_insert_with(Instant::now);
        }
    }
}

/// Makes the directories and record files `units` units have once active (see the module
/// docs) under `state`, on `threads` threads, and returns how long that took.
fn files_alone(state: &StateDir, units: u32, threads: u32) -> anyhow::Result<Duration> {
    let app = AppName::new("floor")?;
    let threads = threads.max(1);
    // The records as an active unit has them.
    let local = LocalState { installed: true, settings_version_seen: Some(1), ..LocalState::default() };
    let active = UnitStatus {
        workload: WorkloadStatus::Active,
        message: "member of cluster-0123abcd".into(),
        ..UnitStatus::default()
    };
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                let (app, local, active) = (&app, &local, &active);
                scope.spawn(move || -> anyhow::Result<()> {
                    for number in (first..units).step_by(threads as usize) {
                        let unit = UnitName::from_parts(app.clone(), number);
                        create_private_dirs(&state.data_dir(&unit))?;
                        RecordWriter::open(&state.agent_state(&unit))?.write(local, false)?;
                        let mut status = RecordWriter::open(&state.status_file(&unit))?;
                        status.write(active, false)?;
                        status.write(active, false)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().map_err(|_| anyhow::anyhow!("a floor thread panicked"))?)
    })?;
    Ok(start.elapsed())
}

/// This process's peak resident set so far, in KiB (`VmHWM`).
fn peak_rss_kib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}

pub fn figures(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let units: u32 = if quick { 1000 } else { 10_000 };
    let wasm = fixture("example-charms/shared-settings")?;
    let cache = tempfile::tempdir()?;
    // The charm is in the compiled-code cache, as it is for every run after the first; it
    // is compiled by another process, so that the compiler's memory is not in this peak.
    let warm = std::process::Command::new(std::env::current_exe()?)
        .args(["run", "--units", "1", "--for", "0s", "--json", "--cache-dir"])
        .arg(cache.path())
        .arg(&wasm)
        .stdout(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(warm.status.success(), "could not compile the charm: {}", String::from_utf8_lossy(&warm.stderr));
    let state = tempfile::tempdir()?;
    let settled = Arc::new(Settled::new(units as usize));
    // `run`'s runtime.
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().event_interval(7).build()?;
    let (elapsed, peak) = tokio.block_on(async {
        let start = Instant::now();
        let host = crate::Host::builder()
            .state_dir(state.path())
            .store(Arc::new(MemoryStore::new()))
            .cache_dir(Some(cache.path().to_owned()))
            .event_sink(settled.clone())
            .build()
            .await?;
        let charm = host.load_charm(&wasm)?;
        anyhow::ensure!(charm.from_cache(), "the charm was not in the compiled-code cache");
        let _application = host.start_application(AppName::new("crowd")?, &charm, units).await?;
        let limit = Duration::from_secs(600);
        while settled.at().is_none() {
            anyhow::ensure!(
                start.elapsed() < limit,
                "{units} units were not all active with one leader after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let at = settled.at().unwrap_or_else(Instant::now);
        Ok::<_, anyhow::Error>((at - start, peak_rss_kib()?))
    })?;
    drop(tokio);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let files = files_alone(&StateDir::new(state.path().join("floor")), units, cores)?;

    let mut dispatch = HookBench::new()?.dispatch(if quick { 300 } else { 3000 })?;
    let dispatch = percentile(&mut dispatch, 0.5);
    let hooks_alone = dispatch.saturating_mul(2 * units) / cores.max(1);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (time, target) = (ms(elapsed), ms(hooks_alone.saturating_mul(3)));
    let mib = peak / 1024.0;
    // What the idle units keep (the memory section's target per unit) plus the runtime's
    // pooled instances and the charm.
    let peak_target = f64::from(units) * 64.0 / 1024.0 + 128.0;
    Ok(vec![
        Figure::new(format!("cold start: {units} units to all active with one leader"), time, "ms")
            .against(ms(hooks_alone))
            .target(format!("<= 3x 2 hooks x units x dispatch / {cores} cores ({target:.0} ms)"), time <= target),
        Figure::new(
            format!("cold start: their directories and records alone (a bare loop on {cores} cores, no fsync)"),
            ms(files),
            "ms",
        ),
        Figure::new(format!("cold start: peak resident memory, {units} units"), mib, "MiB")
            .target(format!("<= 64 KiB x units + 128 MiB ({peak_target:.0} MiB)"), mib <= peak_target),
    ])
}
