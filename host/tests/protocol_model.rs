//! The real stores held to the protocol model (`model/`): seeded random walks of the model
//! drive a real store step by step (each agent incarnation a real `Claimant` with the store
//! handle it opened, time a manual clock, the operator's faults done to the real file), and
//! every decision the real store makes, and its lease after every step, is checked against
//! the model's. The real tracker is walked the same way (`tracker_walk`): what each
//! incarnation's tracker believes, and the terms it writes under, against the model's
//! agents. A divergence fails with its seed and the walk so far; a model that differs from
//! the real code in one rule (a lease rule, a safeguard) is told apart (two tests).
//!
//! On etcd (a real server this test starts) a tick is a second of real time, and the
//! server's sweep of an expired lease is taken into the model when the server makes it.
//!
//! `PROTOCOL_WALKS` sets how many walks each scenario runs (default 300 in memory, 60 on
//! SQLite, 2 on etcd; raise it for a soak), `PROTOCOL_SEED` the first seed.

#[path = "support/sqlite_copy.rs"]
mod sqlite_copy;

use std::sync::Arc;
use std::time::Duration;

use charm_host::leadership::sqlite::{Durability, NewStore, SqliteOptions};
use charm_host::leadership::{
    Claimant, Clock, LeadershipStore, LeaseError, ManualClock, MemoryStore, Release, SqliteStore, StoreFailure,
    WriteError,
};
use charm_host::names::{AppName, UnitName};
use leadership_model::model::{self, Action, Life, Reply, Request, State};
use leadership_model::{LeadershipModel, Mutation, Protocol, Scenario, StoreFault, Third};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use sqlite_copy::SqliteCopy;
use stateright::Model;

/// One tick of the model in real (manual) time.
const TICK: Duration = Duration::from_secs(1);
/// The model's lease in real time.
const LEASE: Duration = Duration::from_secs(model::LEASE as u64);
const STEPS: usize = 150;
/// Steps of a walk on etcd, where a tick is a second of real time.
const ETCD_STEPS: usize = 80;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")))
}

fn app() -> AppName {
    AppName::new("a").unwrap()
}

fn unit(number: u8) -> UnitName {
    UnitName::from_parts(app(), u32::from(number))
}

/// Where the real store lives, and what the operator can do to it.
trait Backend {
    /// Whether its leases expire on the server's own clock (etcd): time then passes for
    /// real, a tick a second.
    fn real_time(&self) -> bool {
        false
    }
    /// Opens the store as it is now (an agent starting).
    fn open(&mut self, clock: &Arc<ManualClock>) -> Arc<dyn LeadershipStore>;
    /// Wipes it and makes a new one that grants nothing for `wait`.
    fn wipe(&mut self, _clock: &Arc<ManualClock>, _wait: Duration) -> Arc<dyn LeadershipStore> {
        unimplemented!("this backend has no wipe")
    }
    /// Takes a copy.
    fn take_copy(&mut self) {
        unimplemented!("this backend has no copies")
    }
    /// Puts the copy back and opens it as an operator does (accepting it, with `wait`).
    fn put_back(&mut self, _clock: &Arc<ManualClock>, _wait: Duration) -> Arc<dyn LeadershipStore> {
        unimplemented!("this backend has no copies")
    }
}

/// One memory store for the whole walk.
struct Memory(Option<Arc<dyn LeadershipStore>>);

impl Backend for Memory {
    fn open(&mut self, clock: &Arc<ManualClock>) -> Arc<dyn LeadershipStore> {
        self.0.get_or_insert_with(|| Arc::new(MemoryStore::with_clock(clock.clone()))).clone()
    }
}

/// A prefix of a real etcd cluster, connected once.
struct Etcd(Arc<dyn LeadershipStore>);

impl Backend for Etcd {
    fn real_time(&self) -> bool {
        true
    }

    fn open(&mut self, _clock: &Arc<ManualClock>) -> Arc<dyn LeadershipStore> {
        self.0.clone()
    }
}

/// A SQLite file, wiped by deleting it, and copied and put back as an operator does
/// ([`SqliteCopy`]).
struct Sqlite(SqliteCopy);

impl Sqlite {
    fn new(dir: &std::path::Path, seed: u64) -> Self {
        let options =
            SqliteOptions { durability: Durability::Normal, boot_id: Some("model".into()), ..SqliteOptions::default() };
        Self(SqliteCopy {
            path: dir.join(format!("walk-{seed}.db")),
            copy: dir.join(format!("copy-{seed}.db")),
            options,
        })
    }
}

impl Backend for Sqlite {
    fn open(&mut self, clock: &Arc<ManualClock>) -> Arc<dyn LeadershipStore> {
        Arc::new(SqliteStore::open_with(&self.0.path, clock.clone(), self.0.options.clone()).expect("open the store"))
    }

    fn wipe(&mut self, clock: &Arc<ManualClock>, wait: Duration) -> Arc<dyn LeadershipStore> {
        std::fs::remove_file(&self.0.path).expect("delete the store");
        let options = SqliteOptions { new_store: NewStore::CreateAfterLoss { wait }, ..self.0.options.clone() };
        Arc::new(SqliteStore::open_with(&self.0.path, clock.clone(), options).expect("make a new store"))
    }

    fn take_copy(&mut self) {
        self.0.take().expect("copy the store");
    }

    fn put_back(&mut self, clock: &Arc<ManualClock>, wait: Duration) -> Arc<dyn LeadershipStore> {
        self.0.put_back().expect("put the copy back");
        Arc::new(self.0.adopt(clock, wait).expect("adopt the copy"))
    }
}

/// The real side of a walk: a store handle and a claimant per incarnation.
struct Real {
    clock: Arc<ManualClock>,
    backend: Box<dyn Backend>,
    /// What an agent starting now opens.
    current: Arc<dyn LeadershipStore>,
    stores: Vec<Option<Arc<dyn LeadershipStore>>>,
    claimants: Vec<Claimant>,
    /// Writes so far: each writes a value of its own, so each raises the version.
    writes: u64,
}

/// A real store's answer in the model's terms (the parts the model decides).
fn claim_reply(result: Result<charm_host::leadership::Claim, LeaseError>) -> Result<Reply, String> {
    match result {
        Ok(claim) => Ok(Reply::Granted { term: claim.term as u8, age: 0 }),
        Err(
            LeaseError::Denied { .. }
            | LeaseError::OtherIncarnation { .. }
            | LeaseError::NewStore { .. }
            | LeaseError::Reserved { .. },
        ) => Ok(Reply::Denied),
        Err(LeaseError::Store(err)) if err.kind() == StoreFailure::Replaced => Ok(Reply::Replaced),
        Err(other) => Err(format!("claim failed: {other}")),
    }
}

/// Whether two replies agree on what the store decided (a grant's age is the agent's).
fn same(model: Reply, real: Reply) -> bool {
    match (model, real) {
        (Reply::Granted { term: a, .. }, Reply::Granted { term: b, .. }) => a == b,
        (a, b) => a == b,
    }
}

impl Real {
    fn new(mut backend: Box<dyn Backend>, state: &State) -> Self {
        let clock = Arc::new(ManualClock::default());
        let current = backend.open(&clock);
        let stores = state.agents.iter().map(|a| (a.life == Life::Running).then(|| current.clone())).collect();
        let claimants = state.agents.iter().map(|a| Claimant::fresh(unit(a.unit))).collect();
        Self { clock, backend, current, stores, claimants, writes: 0 }
    }

    /// Does `action` to the real store; the store's decision, if it made one.
    async fn step(&mut self, before: &State, action: Action) -> Result<Option<Reply>, String> {
        let wait = LEASE;
        match action {
            Action::Tick if self.backend.real_time() => tokio::time::sleep(TICK).await,
            Action::Tick => self.clock.advance(TICK),
            Action::Start(i) => {
                self.stores[i] = Some(self.current.clone());
                self.claimants[i] = Claimant::fresh(unit(before.agents[i].unit));
            }
            Action::Wipe => self.current = self.backend.wipe(&self.clock, wait),
            Action::TakeCopy => self.backend.take_copy(),
            Action::PutBack => self.current = self.backend.put_back(&self.clock, wait),
            Action::Pin => self.current.pin(&app(), "upgrade").await.map_err(|e| format!("pin: {e}"))?,
            Action::Unpin => self.current.unpin(&app(), "upgrade").await.map_err(|e| format!("unpin: {e}"))?,
            Action::Elect(number) => {
                self.current.reserve(&unit(number), LEASE).await.map_err(|e| format!("reserve: {e}"))?
            }
            Action::Apply(i) => {
                let store = self.stores[i].clone().ok_or("an agent that never started sent a request")?;
                let claimant = &self.claimants[i];
                let reply = match before.agents[i].request.ok_or("no request to apply")? {
                    Request::Claim { .. } => claim_reply(store.claim(claimant, LEASE).await)?,
                    Request::Write { term } => {
                        self.writes += 1;
                        let value = format!("v{}", self.writes);
                        match store.write_settings(claimant, u64::from(term), &[("k".into(), value)]).await {
                            Ok(snapshot) => Reply::Written { version: snapshot.version as u8 },
                            Err(WriteError::NotLeader { .. }) => Reply::Fenced,
                            Err(WriteError::Store(err)) if err.kind() == StoreFailure::Replaced => Reply::Replaced,
                            Err(other) => return Err(format!("write failed: {other}")),
                        }
                    }
                    Request::Revoke { .. } => match store.revoke(claimant, Release::StepDown).await {
                        Ok(()) | Err(LeaseError::NotHeld { .. }) => Reply::Revoked,
                        Err(LeaseError::Store(err)) if err.kind() == StoreFailure::Replaced => Reply::Replaced,
                        Err(other) => return Err(format!("revoke failed: {other}")),
                    },
                };
                return Ok(Some(reply));
            }
            // The agents' and clients' own steps: nothing reaches the store.
            _ => {}
        }
        Ok(None)
    }

    /// The current store's live lease, in the model's terms: (unit, incarnation, term).
    async fn lease(&self) -> Result<Option<(u8, u8, u8)>, String> {
        let lease = self.current.lease(&app()).await.map_err(|e| format!("reading the lease: {e}"))?;
        // On etcd a lease lasts until the server ends it (the model's sweep), past its promise.
        let real_time = self.backend.real_time();
        let Some(lease) = lease.filter(|l| real_time || l.pinned || l.expires > self.clock.now()) else {
            return Ok(None);
        };
        let incarnation =
            self.claimants.iter().position(|c| Some(c.id()) == lease.incarnation).ok_or("a lease of no incarnation")?;
        Ok(Some((lease.holder.number() as u8, incarnation as u8, lease.term as u8)))
    }
}

/// The model's live lease: (unit, incarnation, term).
fn model_lease(model: &LeadershipModel, state: &State) -> Option<(u8, u8, u8)> {
    let store = &state.store;
    let live = store.left > 0 || store.pinned || model.scenario.etcd;
    store.holder.filter(|_| live).map(|(unit, incarnation)| (unit, incarnation, store.term))
}

/// What the walks did, so a test can tell they reached what it is about.
#[derive(Debug, Default)]
struct Seen {
    grants: u64,
    denials: u64,
    writes: u64,
    fenced: u64,
    replaced: u64,
    faults: u64,
}

impl Seen {
    fn count(&mut self, reply: Reply) {
        match reply {
            Reply::Granted { .. } => self.grants += 1,
            Reply::Denied => self.denials += 1,
            Reply::Written { .. } => self.writes += 1,
            Reply::Fenced => self.fenced += 1,
            Reply::Replaced => self.replaced += 1,
            Reply::Revoked => {}
        }
    }
}

async fn walk(model: &LeadershipModel, seed: u64, backend: Box<dyn Backend>, seen: &mut Seen) -> Result<(), String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut state = model.init_states().remove(0);
    let mut real = Real::new(backend, &state);
    let mut trail = Vec::new();
    let mut actions = Vec::new();
    let steps = if real.backend.real_time() { ETCD_STEPS } else { STEPS };
    for _ in 0..steps {
        actions.clear();
        model.actions(&state, &mut actions);
        // etcd's sweep is the server's to choose (below), and one member has no leader change.
        actions.retain(|a| !matches!(a, Action::Sweep | Action::EtcdLeaderChange));
        let action = actions[rng.random_range(0..actions.len())];
        let Some(mut next) = model.next_state(&state, action) else { continue };
        if !model.within_boundary(&next) {
            break;
        }
        trail.push(model.format_action(&action));
        let diverged =
            |what: String, trail: &[String]| format!("seed {seed}: {what}\nafter:\n  {}", trail.join("\n  "));
        let decided = real.step(&state, action).await.map_err(|e| diverged(e, &trail))?;
        if matches!(action, Action::Wipe | Action::PutBack) {
            seen.faults += 1;
        }
        if let Some(reply) = decided {
            seen.count(reply);
            if let Some(last) = trail.last_mut() {
                last.push_str(&format!(": {reply:?}"));
            }
        }
        if let (Some(real_reply), Action::Apply(i)) = (decided, action) {
            // The model keeps the reply only for a running agent; its decision is the same.
            let expected = next.agents[i].reply.or_else(|| decided_by_model(model, &state, i));
            if let Some(expected) = expected
                && !same(expected, real_reply)
            {
                // On etcd, the server may have ended the expired lease just before it decided.
                let swept =
                    model.next_state(&state, Action::Sweep).filter(|_| model.scenario.etcd && state.store.left == 0);
                let after_sweep = swept
                    .as_ref()
                    .and_then(|swept| Some((model.next_state(swept, action)?, decided_by_model(model, swept, i)?)));
                match after_sweep {
                    Some((swept_next, reply)) if same(reply, real_reply) => next = swept_next,
                    _ => {
                        return Err(diverged(
                            format!("the store answered {real_reply:?}, the model {expected:?}"),
                            &trail,
                        ));
                    }
                }
            }
        }
        let real_lease = real.lease().await.map_err(|e| diverged(e, &trail))?;
        if real_lease.is_none() && next.store.holder.is_some() && next.store.left == 0 && model.scenario.etcd {
            // The server ended the expired lease: the model's sweep, when it happened.
            next = model.next_state(&next, Action::Sweep).ok_or("the model refused the sweep")?;
            trail.push(model.format_action(&Action::Sweep));
        }
        let expected = model_lease(model, &next);
        if real_lease != expected {
            return Err(diverged(format!("the store's lease is {real_lease:?}, the model's {expected:?}"), &trail));
        }
        state = next;
    }
    Ok(())
}

/// The model's decision for agent `i`'s request, as if the agent were running.
fn decided_by_model(model: &LeadershipModel, state: &State, i: usize) -> Option<Reply> {
    let mut running = state.clone();
    running.agents[i].life = Life::Running;
    model.next_state(&running, Action::Apply(i))?.agents[i].reply
}

fn walks(default: u64) -> std::ops::Range<u64> {
    let first = env_u64("PROTOCOL_SEED").unwrap_or(1);
    first..first + env_u64("PROTOCOL_WALKS").unwrap_or(default)
}

fn scenario(name: &'static str, edit: impl FnOnce(&mut Scenario)) -> LeadershipModel {
    let mut scenario = Scenario::base(name);
    edit(&mut scenario);
    LeadershipModel::new(Protocol::current(), scenario)
}

fn report(outcome: Result<(), String>) {
    if let Err(divergence) = outcome {
        panic!("{divergence}\nreplay: PROTOCOL_SEED=<seed> PROTOCOL_WALKS=1 cargo test --test protocol_model");
    }
}

#[tokio::test]
async fn the_memory_store_follows_the_model() {
    let mut seen = Seen::default();
    let models = [
        scenario("two units", |_| {}),
        scenario("a clone", |s| s.third = Some(Third::Clone)),
        scenario("the operator pins and elects", |s| s.operator = true),
    ];
    for model in models {
        for seed in walks(300) {
            report(walk(&model, seed, Box::new(Memory(None)), &mut seen).await);
        }
    }
    eprintln!("{seen:?}");
    assert!(seen.grants > 0 && seen.denials > 0 && seen.writes > 0 && seen.fenced > 0, "{seen:?}");
}

/// The check can fail: against a model whose lease rule differs from the store's (a new
/// tenure keeps the old term), the walks find a step where they disagree.
#[tokio::test]
async fn a_store_that_differs_from_the_model_is_caught() {
    let model = scenario("two units", |_| {}).with_mutation(Mutation::TermNotRaised);
    let mut seen = Seen::default();
    for seed in walks(300) {
        if let Err(divergence) = walk(&model, seed, Box::new(Memory(None)), &mut seen).await {
            eprintln!("{divergence}");
            return;
        }
    }
    panic!("no walk told a store that raises terms from a model that does not");
}

#[tokio::test]
async fn the_sqlite_store_follows_the_model_through_wipes_and_rollbacks() {
    let dir = tempfile::tempdir().unwrap();
    let models = [
        scenario("two units", |_| {}),
        scenario("a clone", |s| s.third = Some(Third::Clone)),
        scenario("the operator pins and elects", |s| s.operator = true),
        scenario("wiped", |s| {
            s.fault = Some(StoreFault::Wipe);
            s.third = Some(Third::Newcomer);
        }),
        scenario("rolled back", |s| {
            s.fault = Some(StoreFault::RollBack);
            s.third = Some(Third::Newcomer);
        }),
    ];
    let mut seen = Seen::default();
    for (index, model) in models.iter().enumerate() {
        let dir = dir.path().join(index.to_string());
        std::fs::create_dir(&dir).unwrap();
        for seed in walks(60) {
            report(walk(model, seed, Box::new(Sqlite::new(&dir, seed)), &mut seen).await);
        }
    }
    eprintln!("{seen:?}");
    assert!(seen.grants > 0 && seen.writes > 0 && seen.faults > 0 && seen.replaced > 0, "{seen:?}");
}

/// The real tracker of each incarnation on one memory store, driven by a walk whose claims,
/// step-downs and writes are answered at once (the tracker's `refresh` is a claim and its
/// answer in one call): what each tracker believes, and the terms it writes under, must be
/// what the model's agents believe; the role source's part (giving up a claim at its
/// guarantee deadline) is done as the model's agents do it.
async fn tracker_walk(model: &LeadershipModel, seed: u64, seen: &mut Seen) -> Result<(), String> {
    use charm_host::tracker::{LeadershipTracker, Refresh};
    let window = TICK * u32::from(model::WINDOW);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut state = model.init_states().remove(0);
    let clock = Arc::new(ManualClock::default());
    let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::with_clock(clock.clone()));
    let tracker =
        |unit: u8| Some(LeadershipTracker::for_claimant(Claimant::fresh(self::unit(unit)), store.clone(), window));
    let mut trackers: Vec<Option<LeadershipTracker>> =
        state.agents.iter().map(|a| if a.life == Life::Running { tracker(a.unit) } else { None }).collect();
    let mut trail = Vec::new();
    let mut actions = Vec::new();
    for _ in 0..STEPS {
        actions.clear();
        model.actions(&state, &mut actions);
        let action = actions[rng.random_range(0..actions.len())];
        // The request and its answer at once, as `refresh`, `release` and `leader_set` do.
        let mut steps = vec![action];
        if let Action::Claim(i) | Action::StepDown(i) | Action::Write(i) = action {
            steps.extend([Action::Apply(i), Action::Deliver(i, model::WINDOW)]);
        }
        let mut next = state.clone();
        for step in &steps {
            next = model.next_state(&next, *step).ok_or("a step the model refused")?;
            // A reply that was a revoke of a resumed tenure: the tracker sends it at once too.
            if let (Action::Deliver(i, _), Some(Request::Revoke { .. })) =
                (step, next.agents.get(step_agent(*step)).and_then(|a| a.request))
            {
                next = model.next_state(&next, Action::Apply(*i)).ok_or("the revoke was refused")?;
                next = model.next_state(&next, Action::Deliver(*i, model::WINDOW)).unwrap_or(next);
            }
        }
        if !model.within_boundary(&next) {
            break;
        }
        trail.push(model.format_action(&action));
        let diverged =
            |what: String, trail: &[String]| format!("seed {seed}: {what}\nafter:\n  {}", trail.join("\n  "));
        match action {
            Action::Tick => {
                clock.advance(TICK);
                for (i, (before, after)) in state.agents.iter().zip(&next.agents).enumerate() {
                    // The role source gives the claim up at its guarantee deadline.
                    if before.belief.is_some()
                        && after.belief.is_none()
                        && after.life == Life::Running
                        && let Some(tracker) = &trackers[i]
                    {
                        tracker.abandon();
                    }
                }
            }
            Action::Claim(i) => {
                let tracker = trackers[i].as_ref().ok_or("no tracker")?;
                let refresh = tracker.refresh().await;
                let reply = match refresh {
                    Refresh::Leader { term, .. } => Reply::Granted { term: term as u8, age: 0 },
                    Refresh::Minion => Reply::Denied,
                    other => return Err(diverged(format!("refresh: {other:?}"), &trail)),
                };
                seen.count(reply);
            }
            Action::StepDown(i) => {
                let tracker = trackers[i].as_ref().ok_or("no tracker")?;
                tracker.release(Release::StepDown).await.map_err(|e| diverged(format!("release: {e}"), &trail))?;
            }
            Action::Write(i) => {
                let tracker = trackers[i].as_ref().ok_or("no tracker")?;
                let written = tracker.handle().leader_set_by(&[("k".into(), format!("v{}", trail.len()))], None).await;
                let expected = matches!(next.agents[i].acked, v if v > state.agents[i].acked);
                if written.is_ok() != expected {
                    return Err(diverged(format!("leader-set: {written:?}, the model wrote: {expected}"), &trail));
                }
                seen.count(if expected { Reply::Written { version: 0 } } else { Reply::Fenced });
            }
            Action::Crash(i) => trackers[i] = None,
            Action::Start(i) => trackers[i] = tracker(next.agents[i].unit),
            _ => {}
        }
        for (i, agent) in next.agents.iter().enumerate() {
            let Some(tracker) = &trackers[i] else { continue };
            let at_deadline = tracker.handle().guarantee_deadline().is_some_and(|d| d == clock.now());
            let leads = tracker.handle().is_leader() == Ok(true);
            if !at_deadline && leads != agent.leads() {
                return Err(diverged(
                    format!("#{i}: the tracker says leader={leads}, the model {}", agent.leads()),
                    &trail,
                ));
            }
            if agent.leads() && tracker.handle().held_term() != agent.belief.map(|b| u64::from(b.term)) {
                return Err(diverged(
                    format!("#{i}: the tracker holds {:?}, the model {:?}", tracker.handle().held_term(), agent.belief),
                    &trail,
                ));
            }
        }
        state = next;
    }
    Ok(())
}

fn step_agent(action: Action) -> usize {
    match action {
        Action::Deliver(i, _) | Action::Apply(i) | Action::Claim(i) => i,
        _ => usize::MAX,
    }
}

#[tokio::test]
async fn the_tracker_follows_the_model() {
    let mut seen = Seen::default();
    for model in [
        scenario("two units, no loss", |s| s.lossy = false),
        scenario("a clone, no loss", |s| {
            s.lossy = false;
            s.minion = false;
            s.third = Some(Third::Clone);
        }),
    ] {
        for seed in walks(300) {
            report(tracker_walk(&model, seed, &mut seen).await);
        }
    }
    eprintln!("{seen:?}");
    assert!(seen.grants > 0 && seen.denials > 0 && seen.writes > 0, "{seen:?}");
}

/// The walk tells the real tracker from one without a safeguard: against a model whose agents
/// resume a tenure they were deposed from, the real tracker (which gives it up) diverges.
#[tokio::test]
async fn the_tracker_gives_up_a_tenure_it_was_deposed_from() {
    let weakened = Protocol::current().without(leadership_model::Safeguard::FreshTermAfterDepose);
    let model = LeadershipModel::new(weakened, {
        let mut scenario = Scenario::base("two units, no loss");
        scenario.lossy = false;
        scenario
    });
    let mut seen = Seen::default();
    for seed in walks(300) {
        if let Err(divergence) = tracker_walk(&model, seed, &mut seen).await {
            eprintln!("{divergence}");
            return;
        }
    }
    panic!("no walk told the real tracker from one that resumes a deposed tenure");
}

#[path = "../../tests/support/etcd.rs"]
mod etcd;

/// etcd, in real time: the server's sweep of an expired lease is taken into the model when
/// the server makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_store_follows_the_model() {
    use charm_host::leadership::etcd::{EtcdOptions, EtcdStore};
    let cluster = etcd::EtcdCluster::start(1);
    let model = scenario("two units on etcd's rules, the operator pins and elects", |s| {
        s.etcd = true;
        s.operator = true;
    });
    let mut seen = Seen::default();
    for seed in walks(2) {
        let mut options = EtcdOptions::from_url(&cluster.url_with_prefix(&format!("walk-{seed}"))).unwrap();
        options.unused_prefix = true;
        let store: Arc<dyn LeadershipStore> = Arc::new(EtcdStore::connect(&options).await.unwrap());
        report(walk(&model, seed, Box::new(Etcd(store)), &mut seen).await);
    }
    eprintln!("{seen:?}");
    assert!(seen.grants > 0 && seen.writes > 0, "{seen:?}");
}
