//! A seeded fault simulator for [`LeadershipStore`] implementations, with a checker.
//!
//! A schedule is a random but reproducible (by seed) sequence of claims, renewals,
//! revokes, reservations, pins, fenced writes, clock advances (some to an exact expiry, some far past
//! every expiry), unit pauses
//! longer than a lease, unit restarts (each a new incarnation), a unit started a second
//! time elsewhere while it runs (a clone: the same unit name in another incarnation), and
//! store reopenings, and (with [`run_schedule_with_wipes`]) the store lost under the running
//! units and a new one made in its place, or (with [`run_schedule_with_rollbacks`]) an older
//! copy of it put back under them, over several applications and units. Each
//! simulated agent keeps what a tracker would: its incarnation and its last granted claim,
//! which a lost store does not take away (its agent counts on it until it runs out).
//!
//! After every step the checker asserts:
//! - **at most one holder**: no two agents of an application (two incarnations of one unit
//!   included, and claims granted by a store since lost) believe, at the same instant, that
//!   they hold a valid claim; and the store's view of every lease matches a reference model
//!   written independently of the stores;
//! - **terms strictly increase**: a new tenure's term is above every earlier one, an
//!   extension keeps it;
//! - **no stale write**: a fenced write is applied exactly when the model says the writer's
//!   term holds the lease;
//! - **no lost write**: the store's bucket and version equal the model's, across reopenings;
//! - **a true history** (at each listing): the store's tenures are the model's grants, newest
//!   first, each ended before the next began, a revoked one as given up and one a later
//!   grant replaced without a revoke as expired;
//! - **an older copy is never decided on by a unit that saw more** (rollbacks): once a copy
//!   taken earlier is put back after the store moved on, every claim, renewal, revoke, fenced
//!   write and read through the running units' store is refused as
//!   [`StoreFailure::Replaced`](super::StoreFailure::Replaced); the units give their claims up
//!   (as the tracker does) and are restarted on the copy, which must then hold exactly what the
//!   model held when the copy was taken, and go on from there.
//!
//! A failure names its seed, so `run_schedule` with that seed replays it step by step.
//!
//! Two timings ([`SimTiming`]). On a **manual clock** the store shares, time jumps and expiry
//! is exact: the embedded stores. On **the store's own clock** (etcd: the server decides
//! expiry), advances are real sleeps and a lease ends somewhere between its holder's
//! guarantee and that plus a slack; in that window the model accepts either answer and
//! follows the store, and everything else is checked as strictly. [`StoreRules`] names the
//! rules where etcd differs: a pin cannot revive an expired lease, and removing the last pin
//! restarts the lease's whole TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{Claim, Claimant, Clock, IncarnationId, LeadershipStore, LeaseError, ManualClock, Timestamp, WriteError};
use crate::names::{AppName, UnitName};
use crate::settings::Settings;

/// How a schedule's time passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimTiming {
    /// On a manual clock the store judges expiry by: advances are instant, expiry exact.
    Manual,
    /// On the store's own clock: advances sleep (at most `max_advance` each), and a lease
    /// ends between its promised end and that plus `slack` (the server's expiry sweep).
    Real {
        /// How late after a lease's promised end the server may still hold it.
        slack: Duration,
        /// The longest single advance.
        max_advance: Duration,
    },
}

/// The store rules where stores legitimately differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRules {
    /// Memory and SQLite: a pin keeps even an expired tenure alive until the last unpin,
    /// which restores its old expiry.
    Embedded,
    /// etcd: a pin keeps a live tenure alive (an expired one is gone); the last unpin starts
    /// a whole TTL from then.
    Etcd,
}

/// The shape of the schedules to run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Applications per schedule.
    pub apps: u32,
    /// Units per application.
    pub units_per_app: u32,
    /// Steps per schedule.
    pub steps: u32,
    /// Lease and reservation durations to pick from, in seconds.
    pub durations_s: Vec<u64>,
    /// How time passes.
    pub timing: SimTiming,
    /// Which rules the model follows.
    pub rules: StoreRules,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            apps: 2,
            units_per_app: 3,
            steps: 200,
            durations_s: vec![1, 5, 10, 30, 60],
            timing: SimTiming::Manual,
            rules: StoreRules::Embedded,
        }
    }
}

impl SimConfig {
    /// A short run for a store on a real clock with etcd's rules (durations of 1-2 s).
    pub fn real_time_etcd(steps: u32) -> Self {
        Self {
            apps: 1,
            units_per_app: 3,
            steps,
            durations_s: vec![1, 2],
            timing: SimTiming::Real { slack: Duration::from_secs(2), max_advance: Duration::from_millis(1500) },
            rules: StoreRules::Etcd,
        }
    }
}

/// What a schedule did, for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Claims granted to a new holder.
    pub grants: u64,
    /// Claims that extended a lease.
    pub extensions: u64,
    /// Claims denied.
    pub denials: u64,
    /// Fenced writes applied.
    pub writes_applied: u64,
    /// Fenced writes refused for a stale or absent term.
    pub writes_fenced: u64,
    /// Store reopenings.
    pub reopenings: u64,
    /// Stores lost under the units (and made anew).
    pub wipes: u64,
    /// Older copies put back under the units.
    pub rollbacks: u64,
}

impl std::ops::AddAssign for SimStats {
    fn add_assign(&mut self, o: Self) {
        self.grants += o.grants;
        self.extensions += o.extensions;
        self.denials += o.denials;
        self.writes_applied += o.writes_applied;
        self.writes_fenced += o.writes_fenced;
        self.reopenings += o.reopenings;
        self.wipes += o.wipes;
        self.rollbacks += o.rollbacks;
    }
}

/// A schedule that broke an invariant.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The schedule's seed: run it again to replay.
    pub seed: u64,
    /// The step at which the checker failed.
    pub step: u32,
    /// What was violated.
    pub message: String,
    /// The last steps before the failure.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule with seed {} failed at step {}: {}", self.seed, self.step, self.message)?;
        writeln!(f, "last steps:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// Opens the store under test on the given clock. Called once at the start of a schedule
/// and again at every simulated reopening; a persistent store must come back with every
/// acknowledged change (an in-memory one may hand out the same instance again). A store
/// on its own clock ignores the manual one.
pub type OpenStore<'a> = dyn FnMut(&Arc<ManualClock>) -> Arc<dyn LeadershipStore> + 'a;

/// Loses the store under the running units (deleted, or wiped) and makes a new one in its
/// place that grants no tenure for the given wait: what an agent's store does after a loss
/// (see the SQLite store's `NewStore::CreateAfterLoss`).
pub type WipeStore<'a> = dyn FnMut(&Arc<ManualClock>, Duration) -> Arc<dyn LeadershipStore> + 'a;

/// An operator's copies of the store: taken now and then while the units run, and put back
/// in place of the store (`cp state.db backup`, later `mv backup state.db` or `cp backup
/// state.db`) under them.
pub trait StoreCopies {
    /// Takes a copy of the store as it is now, in place of any earlier copy.
    fn take(&mut self) -> Result<(), String>;
    /// Puts the last copy back in place of the store; the copy is kept.
    fn put_back(&mut self) -> Result<(), String>;
    /// Opens the store put back, for units restarted on it once the old ones are gone (as
    /// an operator does, accepting the copy): it must grant no new tenure for `wait`.
    fn open_put_back(&mut self, clock: &Arc<ManualClock>, wait: Duration) -> Result<Arc<dyn LeadershipStore>, String>;
}

const KEYS: [&str; 4] = ["a", "b", "c", "d"];
const ENTITIES: [&str; 2] = ["upgrade", "backup"];
const TRACE_LEN: usize = 40;

/// When a lease (or reservation) ends: surely not before `lo`, surely by `hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ends {
    lo: Timestamp,
    hi: Timestamp,
}

/// What the model can say of something that expires, over an interval of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alive {
    Yes,
    No,
    /// In its expiry window: the store may answer either way.
    Unsure,
}

impl Ends {
    /// Alive throughout `[from, to]`, gone throughout it, or unsure.
    fn over(self, from: Timestamp, to: Timestamp) -> Alive {
        if to < self.lo {
            Alive::Yes
        } else if from >= self.hi {
            Alive::No
        } else {
            Alive::Unsure
        }
    }
}

/// The model's tenure of one application.
#[derive(Debug, Clone)]
struct Tenure {
    unit: UnitName,
    /// The incarnation it was granted to.
    incarnation: IncarnationId,
    term: u64,
    ends: Ends,
    /// The TTL the store's lease runs with (etcd: restarted whole by the last unpin).
    ttl: Duration,
}

/// The reference model of one application.
#[derive(Debug, Default, Clone)]
struct ModelApp {
    holder: Option<Tenure>,
    reserved: Option<(UnitName, Ends)>,
    last_term: u64,
    pins: BTreeSet<String>,
    settings: Settings,
    version: u64,
    /// Every tenure granted, oldest first: its term, its unit, and whether its holder gave
    /// it up (`None`: a revoke the store may have found already expired).
    granted: Vec<(u64, UnitName, Option<bool>)>,
}

impl ModelApp {
    /// Whether the tenure holds over `[from, to]`; pinned tenures do not expire.
    fn holds(&self, from: Timestamp, to: Timestamp) -> Option<(&Tenure, Alive)> {
        let tenure = self.holder.as_ref()?;
        let alive = if self.pins.is_empty() { tenure.ends.over(from, to) } else { Alive::Yes };
        Some((tenure, alive))
    }

    /// The tenure surely live over `[from, to]`, `Err` if the model cannot tell.
    fn live(&self, from: Timestamp, to: Timestamp) -> Result<Option<&Tenure>, ()> {
        match self.holds(from, to) {
            None | Some((_, Alive::No)) => Ok(None),
            Some((tenure, Alive::Yes)) => Ok(Some(tenure)),
            Some((_, Alive::Unsure)) => Err(()),
        }
    }

    fn reservation(&self, from: Timestamp, to: Timestamp) -> Option<(&UnitName, Alive)> {
        let (unit, ends) = self.reserved.as_ref()?;
        Some((unit, ends.over(from, to)))
    }
}

struct SimUnit {
    name: UnitName,
    /// Its current incarnation (a restart makes a new one).
    claimant: Claimant,
    belief: Option<Claim>,
    /// Which store (counted in wipes) granted its belief.
    belief_store: u32,
    paused_until_step: u32,
}

struct Sim<'a> {
    rng: Xoshiro256PlusPlus,
    clock: Arc<ManualClock>,
    config: SimConfig,
    store: Arc<dyn LeadershipStore>,
    open: &'a mut OpenStore<'a>,
    wipe: Option<&'a mut WipeStore<'a>>,
    /// How many times the store was lost, and when the current one may first grant.
    wipes: u32,
    grants_from: Timestamp,
    copies: Option<&'a mut dyn StoreCopies>,
    /// The model as it was when the last copy was taken, and the progress count then.
    copy: Option<(BTreeMap<AppName, ModelApp>, u64)>,
    /// Changes the store surely wrote (grants, extensions, applied writes) so far.
    progress: u64,
    apps: BTreeMap<AppName, ModelApp>,
    units: Vec<SimUnit>,
    trace: Vec<String>,
    stats: SimStats,
    step: u32,
}

/// Runs one schedule against the store `open` returns; see the module docs.
pub async fn run_schedule<'a>(
    seed: u64,
    config: &SimConfig,
    open: &'a mut OpenStore<'a>,
) -> Result<SimStats, SimFailure> {
    run(seed, config, open, Faults { wipe: None, copies: None }).await
}

/// [`run_schedule`], with the store also lost under the units now and then: `wipe` makes the
/// new one.
pub async fn run_schedule_with_wipes<'a>(
    seed: u64,
    config: &SimConfig,
    open: &'a mut OpenStore<'a>,
    wipe: &'a mut WipeStore<'a>,
) -> Result<SimStats, SimFailure> {
    run(seed, config, open, Faults { wipe: Some(wipe), copies: None }).await
}

/// [`run_schedule`], with copies of the store taken now and then and put back under the
/// units; `open` must open what was put back.
pub async fn run_schedule_with_rollbacks<'a>(
    seed: u64,
    config: &SimConfig,
    open: &'a mut OpenStore<'a>,
    copies: &'a mut dyn StoreCopies,
) -> Result<SimStats, SimFailure> {
    run(seed, config, open, Faults { wipe: None, copies: Some(copies) }).await
}

/// The faults a schedule may inject beyond those every store gets.
struct Faults<'a> {
    wipe: Option<&'a mut WipeStore<'a>>,
    copies: Option<&'a mut dyn StoreCopies>,
}

async fn run<'a>(
    seed: u64,
    config: &SimConfig,
    open: &'a mut OpenStore<'a>,
    faults: Faults<'a>,
) -> Result<SimStats, SimFailure> {
    let clock = Arc::new(ManualClock::default());
    let store = open(&clock);
    let mut apps = BTreeMap::new();
    let mut units = Vec::new();
    for a in 0..config.apps {
        let app = AppName::new(&format!("app{a}")).map_err(|e| failure(seed, 0, e.to_string(), &[]))?;
        for n in 0..config.units_per_app {
            let name = UnitName::from_parts(app.clone(), n);
            units.push(SimUnit {
                claimant: Claimant::fresh(name.clone()),
                name,
                belief: None,
                belief_store: 0,
                paused_until_step: 0,
            });
        }
        apps.insert(app, ModelApp::default());
    }
    if config.durations_s.is_empty() {
        return Err(failure(seed, 0, "no durations to pick from".into(), &[]));
    }
    let mut sim = Sim {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        clock,
        config: config.clone(),
        store,
        open,
        wipe: faults.wipe,
        wipes: 0,
        grants_from: Timestamp::from_nanos(0),
        copies: faults.copies,
        copy: None,
        progress: 0,
        apps,
        units,
        trace: Vec::new(),
        stats: SimStats::default(),
        step: 0,
    };
    for step in 0..config.steps {
        sim.step = step;
        let result = match sim.act().await {
            Ok(()) => sim.check().await,
            Err(message) => Err(message),
        };
        result.map_err(|message| failure(seed, step, message, &sim.trace))?;
    }
    Ok(sim.stats)
}

fn failure(seed: u64, step: u32, message: String, trace: &[String]) -> SimFailure {
    SimFailure { seed, step, message, trace: trace.to_vec() }
}

impl Sim<'_> {
    /// The instant by the clock that decides expiry.
    fn now(&self) -> Timestamp {
        match self.config.timing {
            SimTiming::Manual => self.clock.now(),
            SimTiming::Real { .. } => self.store.clock().now(),
        }
    }

    fn slack(&self) -> Duration {
        match self.config.timing {
            SimTiming::Manual => Duration::ZERO,
            SimTiming::Real { slack, .. } => slack,
        }
    }

    /// When something started in `[before, after]` and lasting `duration` ends.
    fn ends(&self, before: Timestamp, after: Timestamp, duration: Duration) -> Ends {
        Ends { lo: before + duration, hi: after + duration + self.slack() }
    }

    /// Lets `by` pass: at once on a manual clock, asleep (bounded) on a real one.
    async fn advance(&mut self, by: Duration) {
        match self.config.timing {
            SimTiming::Manual => self.clock.advance(by),
            SimTiming::Real { max_advance, .. } => tokio::time::sleep(by.min(max_advance)).await,
        }
    }

    fn duration(&mut self) -> Duration {
        let choices = &self.config.durations_s;
        Duration::from_secs(choices[self.rng.random_range(0..choices.len())])
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.remove(0);
        }
        let ms = self.now().as_nanos() / 1_000_000;
        self.trace.push(format!("[{}] t={ms}ms {line}", self.step));
    }

    fn pick_active_unit(&mut self) -> Option<usize> {
        let active: Vec<usize> =
            (0..self.units.len()).filter(|&i| self.units[i].paused_until_step <= self.step).collect();
        (!active.is_empty()).then(|| active[self.rng.random_range(0..active.len())])
    }

    async fn act(&mut self) -> Result<(), String> {
        let roll = self.rng.random_range(0..100u32);
        match roll {
            0..30 => self.claim().await,
            30..40 => self.revoke().await,
            40..60 => self.write().await,
            70..75 => {
                // To the exact instant some unit's claim runs out: the expiry boundary.
                let now = self.now();
                let ends: Vec<_> =
                    self.units.iter().filter_map(|u| u.belief).map(|c| c.valid_until).filter(|&t| t > now).collect();
                if !ends.is_empty() {
                    let end = ends[self.rng.random_range(0..ends.len())];
                    self.advance(end.saturating_since(now)).await;
                    self.note("advance to an expiry".into());
                }
                Ok(())
            }
            60..70 => {
                let ms = self.rng.random_range(0..3000u64);
                self.advance(Duration::from_millis(ms)).await;
                self.note(format!("advance {ms}ms"));
                Ok(())
            }
            75..78 => {
                self.advance(Duration::from_secs(600)).await;
                self.note("jump 10min (or as far as a real clock may)".into());
                Ok(())
            }
            78..82 => self.pin_or_unpin().await,
            82..85 => self.reserve().await,
            85..90 => {
                if let Some(i) = self.pick_active_unit() {
                    let steps = self.rng.random_range(5..60u32);
                    self.units[i].paused_until_step = self.step + steps;
                    self.note(format!("pause {} for {steps} steps", self.units[i].name));
                }
                Ok(())
            }
            90..93 => {
                let i = self.rng.random_range(0..self.units.len());
                self.units[i].belief = None;
                self.units[i].paused_until_step = 0;
                self.units[i].claimant = Claimant::fresh(self.units[i].name.clone());
                self.note(format!("restart {} as {}", self.units[i].name, self.units[i].claimant.id().short()));
                Ok(())
            }
            93..94 => {
                // The same unit started again elsewhere while it runs (a cloned VM): a second
                // agent of the unit, in its own incarnation, alongside the first.
                let limit = 2 * (self.config.apps * self.config.units_per_app) as usize;
                if self.units.len() < limit {
                    let name = self.units[self.rng.random_range(0..self.units.len())].name.clone();
                    let claimant = Claimant::fresh(name.clone());
                    self.note(format!("clone {name} as {}", claimant.id().short()));
                    self.units.push(SimUnit { name, claimant, belief: None, belief_store: 0, paused_until_step: 0 });
                }
                Ok(())
            }
            94..97 => {
                self.store = (self.open)(&self.clock);
                self.stats.reopenings += 1;
                self.note("reopen store".into());
                Ok(())
            }
            97 if self.wipe.is_some() => {
                self.lose_store();
                Ok(())
            }
            97..99 if self.copies.is_some() => self.take_or_put_back_copy().await,
            _ => self.check_listings().await,
        }
    }

    /// The store is lost under the units, and a new one made in its place, which grants
    /// nothing until every claim the lost one granted has run out: the units' beliefs stand
    /// (their agents count on them), the model starts over.
    fn lose_store(&mut self) {
        let Some(wipe) = self.wipe.as_mut() else { return };
        let longest = Duration::from_secs(self.config.durations_s.iter().copied().max().unwrap_or(0));
        self.store = wipe(&self.clock, longest);
        self.wipes += 1;
        self.grants_from = self.now() + longest;
        for model in self.apps.values_mut() {
            *model = ModelApp::default();
        }
        self.copy = None;
        self.stats.wipes += 1;
        self.note(format!("store lost; the new one grants from +{longest:?}"));
    }

    /// Takes a copy of the store, or puts the last one back under the units once the store
    /// has moved on past it (see the module docs).
    async fn take_or_put_back_copy(&mut self) -> Result<(), String> {
        let Some(copies) = self.copies.as_mut() else { return Ok(()) };
        let moved_on = self.copy.as_ref().is_some_and(|(_, progress)| *progress < self.progress);
        if !moved_on || self.rng.random_bool(0.3) {
            copies.take()?;
            self.copy = Some((self.apps.clone(), self.progress));
            self.note("copy the store".into());
            return Ok(());
        }
        copies.put_back()?;
        self.note("put the older copy back under the units".into());
        // Whatever a running unit asks of the store now, it is refused as replaced.
        let duration = self.duration();
        let apps: Vec<AppName> = self.apps.keys().cloned().collect();
        for i in 0..self.units.len() {
            let claimant = self.units[i].claimant.clone();
            let term = self.units[i].belief.map_or(1, |claim| claim.term);
            let claim = self.store.claim(&claimant, duration).await;
            let write = self.store.write_settings(&claimant, term, &[("a".into(), "rolled".into())]).await;
            let revoke = self.store.revoke(&claimant, super::Release::StepDown).await;
            let replaced = |e: Option<&super::StoreError>| e.is_some_and(|e| e.kind() == super::StoreFailure::Replaced);
            let claim_refused = replaced(match &claim {
                Err(LeaseError::Store(e)) => Some(e),
                _ => None,
            });
            let write_refused = replaced(match &write {
                Err(WriteError::Store(e)) => Some(e),
                _ => None,
            });
            let revoke_refused = replaced(match &revoke {
                Err(LeaseError::Store(e)) => Some(e),
                _ => None,
            });
            if !(claim_refused && write_refused && revoke_refused) {
                return Err(format!(
                    "{claimant} on the store an older copy was put back under: claim {claim:?}, write {:?}, revoke {revoke:?}",
                    write.map(|s| s.version)
                ));
            }
        }
        for app in &apps {
            let lease = self.store.lease(app).await;
            if !matches!(&lease, Err(LeaseError::Store(e)) if e.kind() == super::StoreFailure::Replaced) {
                return Err(format!(
                    "reading {app}'s lease from the store an older copy was put back under: {lease:?}"
                ));
            }
        }
        // The units gave their claims up (the tracker does, at once) and are restarted on the copy.
        for unit in &mut self.units {
            unit.belief = None;
            unit.paused_until_step = 0;
            unit.claimant = Claimant::fresh(unit.name.clone());
        }
        // Their old processes exit (closing the store they had) before the new ones open it;
        // the copy's leases may be older than what the old units counted on, so it grants
        // nothing until all of that has run out.
        self.store = Arc::new(super::MemoryStore::with_clock(self.clock.clone()));
        let longest = Duration::from_secs(self.config.durations_s.iter().copied().max().unwrap_or(0));
        let Some(copies) = self.copies.as_mut() else { return Ok(()) };
        self.store = copies.open_put_back(&self.clock, longest)?;
        self.grants_from = self.now() + longest;
        if let Some((apps, progress)) = &self.copy {
            self.apps = apps.clone();
            self.progress = *progress;
        }
        self.stats.rollbacks += 1;
        self.note("every unit gave up and was restarted on the copy".into());
        Ok(())
    }

    async fn claim(&mut self) -> Result<(), String> {
        let Some(i) = self.pick_active_unit() else { return Ok(()) };
        let duration = self.duration();
        let unit = self.units[i].name.clone();
        let claimant = self.units[i].claimant.clone();
        let before = self.now();
        let result = self.store.claim(&claimant, duration).await;
        let after = self.now();
        self.note(format!("claim {claimant} {duration:?} -> {result:?}"));
        let slack = self.slack();
        let (manual, rules) = (self.config.timing == SimTiming::Manual, self.config.rules);
        let model = self.apps.get_mut(unit.app()).ok_or("unknown app")?;
        let held = model.holds(before, after).map(|(t, alive)| (t.clone(), alive));
        let reserved = model.reservation(before, after).map(|(u, alive)| (u.clone(), alive));
        let (grants_from, store) = (self.grants_from, self.wipes);
        match (held, result) {
            (None | Some((_, Alive::No | Alive::Unsure)), Err(LeaseError::NewStore { .. })) if before < grants_from => {
                self.stats.denials += 1;
            }
            (Some((tenure, Alive::Yes | Alive::Unsure)), Err(LeaseError::Denied { holder, .. }))
                if tenure.unit != unit =>
            {
                if holder != tenure.unit {
                    return Err(format!("denial names {holder}, the model's holder is {}", tenure.unit));
                }
                self.stats.denials += 1;
            }
            (Some((tenure, Alive::Yes | Alive::Unsure)), Err(LeaseError::OtherIncarnation { holder, .. }))
                if tenure.unit == unit && tenure.incarnation != claimant.id() =>
            {
                if holder != Some(tenure.incarnation) {
                    return Err(format!(
                        "refusal names incarnation {holder:?}, the model's holder is {:?}",
                        tenure.incarnation
                    ));
                }
                self.stats.denials += 1;
            }
            (Some((tenure, Alive::Yes | Alive::Unsure)), Ok(claim))
                if tenure.unit == unit && tenure.incarnation == claimant.id() && claim.term == tenure.term =>
            {
                // An extension: it never shortens what was promised. etcd renews the
                // tenure's lease (whole TTL, at least the duration asked).
                let ttl = if rules == StoreRules::Etcd { duration.max(tenure.ttl) } else { duration };
                let promised = if manual { before + duration } else { before + duration.min(ttl) };
                if claim.valid_until < promised || claim.valid_until > after + ttl {
                    return Err(format!(
                        "extension valid until {:?}, expected {promised:?}..{:?}",
                        claim.valid_until,
                        after + ttl
                    ));
                }
                if let Some(held) = model.holder.as_mut() {
                    // The store's promise is the model's lower bound: a store that promised
                    // more than its lease holds is caught granting it to another too early.
                    held.ends =
                        Ends { lo: held.ends.lo.max(claim.valid_until), hi: held.ends.hi.max(after + ttl + slack) };
                    held.ttl = ttl;
                }
                self.units[i].belief = Some(claim);
                self.units[i].belief_store = store;
                self.stats.extensions += 1;
                self.progress += 1;
            }
            (None | Some((_, Alive::No | Alive::Unsure)), Err(LeaseError::Reserved { unit: reported, .. })) => {
                match reserved {
                    Some((reserved, Alive::Yes | Alive::Unsure)) if reserved == reported && reserved != unit => {
                        self.stats.denials += 1
                    }
                    other => {
                        return Err(format!("claim by {unit} refused as reserved for {reported}, model {other:?}"));
                    }
                }
            }
            (None | Some((_, Alive::No | Alive::Unsure)), Ok(claim)) => {
                if let Some((reserved, Alive::Yes)) = &reserved
                    && *reserved != unit
                {
                    return Err(format!("{unit} was granted a lease reserved for {reserved}"));
                }
                if claim.term <= model.last_term {
                    return Err(format!("new tenure of {unit} got term {} after term {}", claim.term, model.last_term));
                }
                if before < grants_from {
                    return Err(format!("{unit} was granted a tenure by a new store before every lost claim ran out"));
                }
                // On a real clock a store may promise a little less than asked (etcd counts a
                // lease granted ahead from its grant), never more than it can keep.
                let valid = if manual {
                    claim.valid_until == before + duration
                } else {
                    claim.valid_until >= before + duration.mul_f64(0.9) && claim.valid_until <= after + duration
                };
                if !valid {
                    return Err(format!(
                        "claim valid until {:?}, expected from {:?}",
                        claim.valid_until,
                        before + duration
                    ));
                }
                model.reserved = None;
                model.last_term = claim.term;
                let ends = Ends { lo: claim.valid_until, hi: after + duration + slack };
                model.holder = Some(Tenure {
                    unit: unit.clone(),
                    incarnation: claimant.id(),
                    term: claim.term,
                    ends,
                    ttl: duration,
                });
                model.granted.push((claim.term, unit.clone(), Some(false)));
                self.units[i].belief = Some(claim);
                self.units[i].belief_store = store;
                self.stats.grants += 1;
                self.progress += 1;
            }
            (expected, got) => return Err(format!("claim by {unit}: model holder {expected:?}, store said {got:?}")),
        }
        Ok(())
    }

    async fn revoke(&mut self) -> Result<(), String> {
        let Some(i) = self.pick_active_unit() else { return Ok(()) };
        let unit = self.units[i].name.clone();
        let claimant = self.units[i].claimant.clone();
        let before = self.now();
        let result = self.store.revoke(&claimant, super::Release::StepDown).await;
        let after = self.now();
        self.note(format!("revoke {claimant} -> {result:?}"));
        let model = self.apps.get_mut(unit.app()).ok_or("unknown app")?;
        let held = model.holds(before, after).map(|(t, alive)| ((t.unit.clone(), t.incarnation), alive));
        let unit = (unit, claimant.id());
        match (held, result) {
            (Some((holder, alive @ (Alive::Yes | Alive::Unsure))), Ok(())) if holder == unit => {
                model.holder = None;
                self.units[i].belief = None;
                if let Some(last) = model.granted.last_mut() {
                    last.2 = if alive == Alive::Yes { Some(true) } else { None };
                }
            }
            (Some((holder, Alive::Yes | Alive::Unsure)), Err(LeaseError::NotHeld { .. })) if holder != unit => {}
            (None | Some((_, Alive::No)), Ok(())) => self.units[i].belief = None,
            (Some((_, Alive::Unsure)), Ok(())) => {
                // The store had it expired already.
                model.holder = None;
                self.units[i].belief = None;
                if let Some(last) = model.granted.last_mut() {
                    last.2 = None;
                }
            }
            (expected, got) => {
                return Err(format!("revoke by {claimant}: model holder {expected:?}, store said {got:?}"));
            }
        }
        Ok(())
    }

    async fn write(&mut self) -> Result<(), String> {
        let Some(i) = self.pick_active_unit() else { return Ok(()) };
        let unit = self.units[i].name.clone();
        let model_term = self.apps.get(unit.app()).map_or(0, |m| m.last_term);
        // Write under the believed term, however stale; sometimes under a guessed one.
        let term = match self.units[i].belief {
            Some(claim) if self.rng.random_bool(0.9) => claim.term,
            _ => self.rng.random_range(0..=model_term + 1),
        };
        let mut group: Vec<(String, String)> = Vec::new();
        for key in KEYS {
            if self.rng.random_bool(0.4) {
                let value = if self.rng.random_bool(0.2) {
                    String::new()
                } else {
                    format!("v{}", self.rng.random_range(0..5u8))
                };
                group.push((key.to_owned(), value));
            }
        }
        let invalid = self.rng.random_bool(0.05);
        if invalid {
            group.push(("bad key".into(), "x".into()));
        }
        let before = self.now();
        let claimant = self.units[i].claimant.clone();
        let result = self.store.write_settings(&claimant, term, &group).await;
        let after = self.now();
        self.note(format!("write {claimant} term {term} {group:?} -> {:?}", result.as_ref().map(|s| s.version)));
        let model = self.apps.get_mut(unit.app()).ok_or("unknown app")?;
        let holds = match model.holds(before, after) {
            Some((t, alive)) if t.unit == unit && t.incarnation == claimant.id() && t.term == term => alive,
            _ => Alive::No,
        };
        match (holds, invalid, result) {
            (Alive::No | Alive::Unsure, _, Err(WriteError::NotLeader { .. })) => self.stats.writes_fenced += 1,
            (Alive::Yes | Alive::Unsure, true, Err(WriteError::Invalid(_))) => {}
            (Alive::Yes | Alive::Unsure, false, Ok(snapshot)) => {
                let mut after = model.settings.clone();
                for (key, value) in &group {
                    if value.is_empty() {
                        after.remove(key);
                    } else {
                        after.insert(key.clone(), value.clone());
                    }
                }
                if after != model.settings {
                    model.version += 1;
                    model.settings = after;
                }
                if snapshot.version != model.version || *snapshot.values != model.settings {
                    return Err(format!(
                        "write returned v{} {:?}, model has v{} {:?}",
                        snapshot.version, snapshot.values, model.version, model.settings
                    ));
                }
                self.stats.writes_applied += 1;
                self.progress += 1;
            }
            (holds, invalid, got) => {
                return Err(format!(
                    "write by {claimant} at term {term}: model says holds={holds:?} invalid={invalid}, store said {got:?}"
                ));
            }
        }
        Ok(())
    }

    async fn reserve(&mut self) -> Result<(), String> {
        let i = self.rng.random_range(0..self.units.len());
        let unit = self.units[i].name.clone();
        let duration = self.duration();
        let before = self.now();
        let result = self.store.reserve(&unit, duration).await;
        let after = self.now();
        self.note(format!("reserve for {unit} {duration:?} -> {result:?}"));
        result.map_err(|e| format!("reserve failed: {e}"))?;
        let ends = self.ends(before, after, duration);
        let model = self.apps.get_mut(unit.app()).ok_or("unknown app")?;
        model.reserved = Some((unit, ends));
        Ok(())
    }

    async fn pin_or_unpin(&mut self) -> Result<(), String> {
        let apps: Vec<AppName> = self.apps.keys().cloned().collect();
        let app = apps[self.rng.random_range(0..apps.len())].clone();
        let entity = ENTITIES[self.rng.random_range(0..ENTITIES.len())];
        let pin = self.rng.random_bool(0.5);
        let before = self.now();
        let result = if pin { self.store.pin(&app, entity).await } else { self.store.unpin(&app, entity).await };
        let after = self.now();
        self.note(format!("{} {app} {entity} -> {result:?}", if pin { "pin" } else { "unpin" }));
        result.map_err(|e| format!("pin/unpin failed: {e}"))?;
        let slack = self.slack();
        let rules = self.config.rules;
        let observed = if rules == StoreRules::Etcd && pin {
            Some(self.store.lease(&app).await.map_err(|e| e.to_string())?)
        } else {
            None
        };
        let model = self.apps.get_mut(&app).ok_or("unknown app")?;
        let was_pinned = !model.pins.is_empty();
        if pin {
            if let Some(observed) = observed
                && !was_pinned
            {
                // etcd: the pin kept the tenure if it was still live then, else it is gone.
                let alive = model.holds(before, after).map(|(t, alive)| (t.unit.clone(), t.term, alive));
                match (alive, observed) {
                    (Some((unit, term, Alive::Yes | Alive::Unsure)), Some(lease))
                        if lease.holder == unit && lease.term == term => {}
                    (Some((_, _, Alive::No | Alive::Unsure)), None) | (None, None) => model.holder = None,
                    (expected, got) => return Err(format!("after a pin of {app}: model {expected:?}, store {got:?}")),
                }
            }
            model.pins.insert(entity.to_owned());
        } else {
            model.pins.remove(entity);
            if rules == StoreRules::Etcd
                && was_pinned
                && model.pins.is_empty()
                && let Some(tenure) = model.holder.as_mut()
            {
                // etcd: the last unpin gives the tenure a whole TTL from now.
                tenure.ends = Ends { lo: before + tenure.ttl, hi: after + tenure.ttl + slack };
            }
        }
        Ok(())
    }

    async fn check_listings(&mut self) -> Result<(), String> {
        let before = self.now();
        let leaders = self.store.leaders().await.map_err(|e| e.to_string())?;
        let after = self.now();
        for (app, model) in &self.apps {
            let Ok(live) = model.live(before, after) else { continue };
            let expected = live.map(|t| &t.unit);
            if leaders.get(app) != expected {
                return Err(format!("leaders() says {:?} leads {app}, model {expected:?}", leaders.get(app)));
            }
        }
        if let Some(stray) = leaders.keys().find(|app| !self.apps.contains_key(*app)) {
            return Err(format!("leaders() lists {stray}, which no unit ever claimed"));
        }
        let pins = self.store.pins().await.map_err(|e| e.to_string())?;
        let expected: BTreeMap<AppName, Vec<String>> = self
            .apps
            .iter()
            .filter(|(_, m)| !m.pins.is_empty())
            .map(|(app, m)| (app.clone(), m.pins.iter().cloned().collect()))
            .collect();
        if pins != expected {
            return Err(format!("pins() = {pins:?}, model {expected:?}"));
        }
        self.check_history().await
    }

    /// The store's history of each application against the model's grants.
    async fn check_history(&self) -> Result<(), String> {
        for (app, model) in &self.apps {
            let history = self.store.history(Some(app), usize::MAX).await.map_err(|e| e.to_string())?;
            let kept = model.granted.len().min(super::HISTORY_LIMIT as usize);
            let listed: Vec<(u64, &UnitName)> = history.iter().map(|t| (t.term, &t.unit)).collect();
            let granted: Vec<(u64, &UnitName)> =
                model.granted.iter().rev().take(kept).map(|(term, unit, _)| (*term, unit)).collect();
            if listed != granted {
                return Err(format!("history of {app} lists {listed:?}, the model granted {granted:?}"));
            }
            for (index, (tenure, (_, _, revoked))) in history.iter().zip(model.granted.iter().rev()).enumerate() {
                let newest = index == 0;
                let fine = match (revoked, tenure.how) {
                    (Some(true), Some(super::TenureEnd::StepDown)) => true,
                    (Some(false), None) => newest,
                    (Some(false), Some(super::TenureEnd::Expired)) => !newest,
                    (None, Some(super::TenureEnd::StepDown | super::TenureEnd::Expired)) => true,
                    (None, None) => newest,
                    _ => false,
                };
                if !fine || tenure.how.is_some() != tenure.ended.is_some() {
                    return Err(format!(
                        "history of {app}: term {} ended {:?} ({revoked:?} in the model)",
                        tenure.term, tenure.how
                    ));
                }
            }
            for pair in history.windows(2) {
                if pair[1].ended.is_none_or(|ended| ended > pair[0].started || ended < pair[1].started) {
                    return Err(format!(
                        "history of {app}: term {} does not end between its start and term {}'s",
                        pair[1].term, pair[0].term
                    ));
                }
            }
        }
        Ok(())
    }

    /// The invariants of the module docs, at this instant.
    async fn check(&self) -> Result<(), String> {
        for (app, model) in &self.apps {
            let before = self.now();
            let believers: Vec<&SimUnit> = self
                .units
                .iter()
                .filter(|u| u.name.app() == app && u.belief.is_some_and(|c| c.valid_until > before))
                .collect();
            if believers.len() > 1 {
                let names: Vec<String> = believers.iter().map(|u| u.claimant.to_string()).collect();
                return Err(format!("two leaders of {app} at once: {names:?}"));
            }
            if let Some(believer) = believers.first().filter(|b| b.belief_store == self.wipes) {
                // A belief never outlasts the tenure it came from (a lost store's are beyond
                // the model: they only must not overlap).
                match model.holds(before, before) {
                    Some((tenure, Alive::Yes | Alive::Unsure))
                        if tenure.unit == believer.name && tenure.incarnation == believer.claimant.id() => {}
                    other => return Err(format!("{} believes it leads {app}, model {other:?}", believer.name)),
                }
            }
            let lease = self.store.lease(app).await.map_err(|e| e.to_string())?;
            let after = self.now();
            if let Ok(live) = model.live(before, after) {
                let store_view = lease.as_ref().map(|l| (&l.holder, l.term));
                let model_view = live.map(|t| (&t.unit, t.term));
                if store_view != model_view {
                    return Err(format!("store lease of {app} is {store_view:?}, model {model_view:?}"));
                }
            }
            let settings = self.store.read_settings(app).await.map_err(|e| e.to_string())?;
            if settings.version != model.version || *settings.values != model.settings {
                return Err(format!(
                    "store settings of {app} are v{} {:?}, model v{} {:?} (a lost or stray write)",
                    settings.version, settings.values, model.version, model.settings
                ));
            }
        }
        Ok(())
    }
}
