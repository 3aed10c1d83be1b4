//! A seeded fault simulator for [`LeadershipStore`] implementations, with a checker.
//!
//! A schedule is a random but reproducible (by seed) sequence of claims, renewals,
//! revokes, reservations, pins, fenced writes, clock advances (some to an exact expiry, some far past
//! every expiry), unit pauses
//! longer than a lease, unit restarts, and store reopenings, over several applications and
//! units. Each simulated unit keeps what a tracker would: its last granted claim.
//!
//! After every step the checker asserts:
//! - **at most one holder**: no two units of an application believe, at the same instant,
//!   that they hold a valid claim; and the store's view of every lease matches a reference
//!   model written independently of the stores;
//! - **terms strictly increase**: a new tenure's term is above every earlier one, an
//!   extension keeps it;
//! - **no stale write**: a fenced write is applied exactly when the model says the writer's
//!   term holds the lease;
//! - **no lost write**: the store's bucket and version equal the model's, across reopenings.
//!
//! A failure names its seed, so `run_schedule` with that seed replays it step by step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{Claim, Clock, LeaseError, LeadershipStore, ManualClock, WriteError};
use crate::names::{AppName, UnitName};
use crate::settings::Settings;

/// The shape of the schedules to run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Applications per schedule.
    pub apps: u32,
    /// Units per application.
    pub units_per_app: u32,
    /// Steps per schedule.
    pub steps: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { apps: 2, units_per_app: 3, steps: 200 }
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
}

impl std::ops::AddAssign for SimStats {
    fn add_assign(&mut self, o: Self) {
        self.grants += o.grants;
        self.extensions += o.extensions;
        self.denials += o.denials;
        self.writes_applied += o.writes_applied;
        self.writes_fenced += o.writes_fenced;
        self.reopenings += o.reopenings;
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
/// acknowledged change (an in-memory one may hand out the same instance again).
pub type OpenStore<'a> = dyn FnMut(&Arc<ManualClock>) -> Arc<dyn LeadershipStore> + 'a;

const KEYS: [&str; 4] = ["a", "b", "c", "d"];
const ENTITIES: [&str; 2] = ["upgrade", "backup"];
const DURATIONS_S: [u64; 5] = [1, 5, 10, 30, 60];
const TRACE_LEN: usize = 40;

/// The reference model of one application.
#[derive(Debug, Default)]
struct ModelApp {
    holder: Option<(UnitName, u64, super::Timestamp)>,
    reserved: Option<(UnitName, super::Timestamp)>,
    last_term: u64,
    pins: BTreeSet<String>,
    settings: Settings,
    version: u64,
}

impl ModelApp {
    fn live_holder(&self, now: super::Timestamp) -> Option<(&UnitName, u64)> {
        let (unit, term, expires) = self.holder.as_ref()?;
        (!self.pins.is_empty() || *expires > now).then_some((unit, *term))
    }
}

struct SimUnit {
    name: UnitName,
    belief: Option<Claim>,
    paused_until_step: u32,
}

struct Sim<'a> {
    rng: Xoshiro256PlusPlus,
    clock: Arc<ManualClock>,
    store: Arc<dyn LeadershipStore>,
    open: &'a mut OpenStore<'a>,
    apps: BTreeMap<AppName, ModelApp>,
    units: Vec<SimUnit>,
    trace: Vec<String>,
    stats: SimStats,
    step: u32,
}

/// Runs one schedule against the store `open` returns; see the module docs.
pub async fn run_schedule<'a>(seed: u64, config: &SimConfig, open: &'a mut OpenStore<'a>) -> Result<SimStats, SimFailure> {
    let clock = Arc::new(ManualClock::default());
    let store = open(&clock);
    let mut apps = BTreeMap::new();
    let mut units = Vec::new();
    for a in 0..config.apps {
        let app = AppName::new(&format!("app{a}")).map_err(|e| failure(seed, 0, e.to_string(), &[]))?;
        for n in 0..config.units_per_app {
            units.push(SimUnit { name: UnitName::from_parts(app.clone(), n), belief: None, paused_until_step: 0 });
        }
        apps.insert(app, ModelApp::default());
    }
    let mut sim = Sim {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        clock,
        store,
        open,
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
    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.remove(0);
        }
        self.trace.push(format!("[{}] t={}ms {line}", self.step, self.clock.now().as_nanos() / 1_000_000));
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
                let now = self.clock.now();
                let ends: Vec<_> = self.units.iter().filter_map(|u| u.belief).map(|c| c.valid_until).filter(|&t| t > now).collect();
                if !ends.is_empty() {
                    let end = ends[self.rng.random_range(0..ends.len())];
                    self.clock.advance(end.saturating_since(now));
                    self.note("advance to an expiry".into());
                }
                Ok(())
            }
            60..70 => {
                let ms = self.rng.random_range(0..3000u64);
                self.clock.advance(Duration::from_millis(ms));
                self.note(format!("advance {ms}ms"));
                Ok(())
            }
            75..78 => {
                self.clock.advance(Duration::from_secs(600));
                self.note("jump 10min".into());
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
            90..94 => {
                let i = self.rng.random_range(0..self.units.len());
                self.units[i].belief = None;
                self.units[i].paused_until_step = 0;
                self.note(format!("restart {}", self.units[i].name));
                Ok(())
            }
            94..97 => {
                self.store = (self.open)(&self.clock);
                self.stats.reopenings += 1;
                self.note("reopen store".into());
                Ok(())
            }
            _ => self.check_listings().await,
        }
    }

    async fn claim(&mut self) -> Result<(), String> {
        let Some(i) = self.pick_active_unit() else { return Ok(()) };
        let duration = Duration::from_secs(DURATIONS_S[self.rng.random_range(0..DURATIONS_S.len())]);
        let unit = self.units[i].name.clone();
        let now = self.clock.now();
        let result = self.store.claim(&unit, duration).await;
        self.note(format!("claim {unit} {duration:?} -> {result:?}"));
        let model = self.apps.get_mut(unit.app()).ok_or("unknown app")?;
        match (model.live_holder(now).map(|(u, t)| (u.clone(), t)), result) {
            (Some((holder, _)), Err(LeaseError::Denied { holder: reported, .. })) if holder != unit => {
                if reported != holder {
                    return Err(format!("denial names {reported}, the model's holder is {holder}"));
                }
                self.stats.denials += 1;
            }
            (Some((holder, term)), Ok(claim)) if holder == unit => {
                if claim.term != term {
                    return Err(format!("extension of {unit} changed the term {term} -> {}", claim.term));
                }
                if let Some((_, _, expires)) = model.holder.as_mut() {
                    *expires = (*expires).max(now + duration);
                }
                self.units[i].belief = Some(claim);
                self.stats.extensions += 1;
            }
            (None, Err(LeaseError::Reserved { unit: reported, .. })) => {
                match model.reserved.as_ref().filter(|(_, until)| *until > now) {
                    Some((reserved, _)) if *reserved == reported && *reserved != unit => self.stats.denials += 1,
                    other => return Err(format!("claim by {unit} refused as reserved for {reported}, model {other:?}")),
                }
            }
            (None, Ok(claim)) => {
                if let Some((reserved, _)) = model.reserved.as_ref().filter(|(_, until)| *until > now)
                    && *reserved != unit
                {
                    return Err(format!("{unit} was granted a lease reserved for {reserved}"));
                }
                model.reserved = None;
                if claim.term <= model.last_term {
                    return Err(format!("new tenure of {unit} got term {} after term {}", claim.term, model.last_term));
                }
                if claim.valid_until != now + duration {
                    return Err(format!("claim valid until {:?}, expected {:?}", claim.valid_until, now + duration));
                }
                model.last_term = claim.term;
                model.holder = Some((unit.clone(), claim.term, now + duration));
                self.units[i].belief = Some(claim);
                self.stats.grants += 1;
            }
            (expected, got) => return Err(format!("claim by {unit}: model holder {expected:?}, store said {got:?}")),
        }
        Ok(())
    }

    async fn revoke(&mut self) -> Result<(), String> {
        let Some(i) = self.pick_active_unit() else { return Ok(()) };
        let unit = self.units[i].name.clone();
        let now = self.clock.now();
        let result = self.store.revoke(&unit).await;
        self.note(format!("revoke {unit} -> {result:?}"));
        let model = self.apps.get_mut(unit.app()).ok_or("unknown app")?;
        match (model.live_holder(now).map(|(u, _)| u.clone()), result) {
            (Some(holder), Ok(())) if holder == unit => {
                model.holder = None;
                self.units[i].belief = None;
            }
            (Some(holder), Err(LeaseError::NotHeld { .. })) if holder != unit => {}
            (None, Ok(())) => self.units[i].belief = None,
            (expected, got) => return Err(format!("revoke by {unit}: model holder {expected:?}, store said {got:?}")),
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
                let value = if self.rng.random_bool(0.2) { String::new() } else { format!("v{}", self.rng.random_range(0..5u8)) };
                group.push((key.to_owned(), value));
            }
        }
        let invalid = self.rng.random_bool(0.05);
        if invalid {
            group.push(("bad key".into(), "x".into()));
        }
        let now = self.clock.now();
        let result = self.store.write_settings(&unit, term, &group).await;
        self.note(format!("write {unit} term {term} {group:?} -> {:?}", result.as_ref().map(|s| s.version)));
        let model = self.apps.get_mut(unit.app()).ok_or("unknown app")?;
        let holds = model.live_holder(now).is_some_and(|(u, t)| u == &unit && t == term);
        match (holds, invalid, result) {
            (false, _, Err(WriteError::NotLeader { .. })) => self.stats.writes_fenced += 1,
            (true, true, Err(WriteError::Invalid(_))) => {}
            (true, false, Ok(snapshot)) => {
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
                    return Err(format!("write returned v{} {:?}, model has v{} {:?}",
                        snapshot.version, snapshot.values, model.version, model.settings));
                }
                self.stats.writes_applied += 1;
            }
            (holds, invalid, got) => {
                return Err(format!("write by {unit} at term {term}: model says holds={holds} invalid={invalid}, store said {got:?}"))
            }
        }
        Ok(())
    }

    async fn reserve(&mut self) -> Result<(), String> {
        let i = self.rng.random_range(0..self.units.len());
        let unit = self.units[i].name.clone();
        let duration = Duration::from_secs(DURATIONS_S[self.rng.random_range(0..DURATIONS_S.len())]);
        let result = self.store.reserve(&unit, duration).await;
        self.note(format!("reserve for {unit} {duration:?} -> {result:?}"));
        result.map_err(|e| format!("reserve failed: {e}"))?;
        let until = self.clock.now() + duration;
        let model = self.apps.get_mut(unit.app()).ok_or("unknown app")?;
        model.reserved = Some((unit, until));
        Ok(())
    }

    async fn pin_or_unpin(&mut self) -> Result<(), String> {
        let apps: Vec<AppName> = self.apps.keys().cloned().collect();
        let app = apps[self.rng.random_range(0..apps.len())].clone();
        let entity = ENTITIES[self.rng.random_range(0..ENTITIES.len())];
        let pin = self.rng.random_bool(0.5);
        let result = if pin { self.store.pin(&app, entity).await } else { self.store.unpin(&app, entity).await };
        self.note(format!("{} {app} {entity} -> {result:?}", if pin { "pin" } else { "unpin" }));
        result.map_err(|e| format!("pin/unpin failed: {e}"))?;
        let model = self.apps.get_mut(&app).ok_or("unknown app")?;
        if pin {
            model.pins.insert(entity.to_owned());
        } else {
            model.pins.remove(entity);
        }
        Ok(())
    }

    async fn check_listings(&mut self) -> Result<(), String> {
        let now = self.clock.now();
        let leaders = self.store.leaders().await.map_err(|e| e.to_string())?;
        let expected: BTreeMap<AppName, UnitName> = self
            .apps
            .iter()
            .filter_map(|(app, m)| Some((app.clone(), m.live_holder(now)?.0.clone())))
            .collect();
        if leaders != expected {
            return Err(format!("leaders() = {leaders:?}, model {expected:?}"));
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
        Ok(())
    }

    /// The invariants of the module docs, at this instant.
    async fn check(&self) -> Result<(), String> {
        let now = self.clock.now();
        for (app, model) in &self.apps {
            let believers: Vec<&UnitName> = self
                .units
                .iter()
                .filter(|u| u.name.app() == app && u.belief.is_some_and(|c| c.valid_until > now))
                .map(|u| &u.name)
                .collect();
            if believers.len() > 1 {
                return Err(format!("two leaders of {app} at once: {believers:?}"));
            }
            let live = model.live_holder(now);
            if let (Some(believer), Some((holder, _))) = (believers.first(), live)
                && *believer != holder
            {
                return Err(format!("{believer} believes it leads {app}, but {holder} holds the lease"));
            }
            let lease = self.store.lease(app).await.map_err(|e| e.to_string())?;
            let store_view = lease.as_ref().map(|l| (&l.holder, l.term));
            if store_view != live {
                return Err(format!("store lease of {app} is {store_view:?}, model {live:?}"));
            }
            let settings = self.store.read_settings(app).await.map_err(|e| e.to_string())?;
            if settings.version != model.version || *settings.values != model.settings {
                return Err(format!("store settings of {app} are v{} {:?}, model v{} {:?} (a lost or stray write)",
                    settings.version, settings.values, model.version, model.settings));
            }
        }
        Ok(())
    }
}
