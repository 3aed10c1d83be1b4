//! Unit agents on a manual clock: deposition before succession, restarts, step-down.

mod support;

use std::sync::Arc;
use std::time::Duration;

use charm_host::agent::{self, AgentCommand, AgentConfig, Backoff};
use charm_host::events::{Event, RecordingSink};
use charm_host::hooks::HookKind;
use charm_host::leadership::{Clock, LeadershipStore, ManualClock, MemoryStore};
use charm_host::names::UnitName;
use charm_host::runtime::{Charm, HookRuntime};
use charm_host::tracker::LeadershipTracker;
use charm_host::unit::Unit;
use support::*;
use tokio::sync::mpsc;

const WINDOW: Duration = Duration::from_secs(10);

struct Agents {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Arc<dyn LeadershipStore>,
    events: Arc<RecordingSink>,
    runtime: Arc<HookRuntime>,
    charm: Charm,
}

struct Running {
    unit: Arc<Unit>,
    commands: mpsc::Sender<AgentCommand>,
    task: tokio::task::JoinHandle<Result<(), agent::LocalStateError>>,
}

impl Agents {
    fn new(wrap: impl FnOnce(Arc<dyn LeadershipStore>) -> Arc<dyn LeadershipStore>) -> Self {
        let clock = Arc::new(ManualClock::default());
        let store = wrap(Arc::new(MemoryStore::with_clock(clock.clone())));
        let runtime = runtime(None);
        let charm = probe(&runtime);
        Self { dir: tempfile::tempdir().unwrap(), clock, store, events: Arc::new(RecordingSink::new()), runtime, charm }
    }

    fn start(&self, name: &str) -> Running {
        let name = UnitName::new(name).unwrap();
        let tracker = LeadershipTracker::new(name.clone(), self.store.clone(), WINDOW);
        let base = self.dir.path().join(name.as_str().replace('/', "-"));
        let unit = Arc::new(Unit::new(name, base.join("data"), tracker, self.events.clone()).unwrap());
        let config = AgentConfig {
            backoff: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(4) },
            state_file: Some(base.join("agent.json")),
            status_file: None,
        };
        let (commands, receiver) = mpsc::channel(4);
        let task = tokio::spawn(agent::run_unit(self.runtime.clone(), self.charm.clone(), unit.clone(), config, receiver));
        Running { unit, commands, task }
    }

    /// The hooks that finished, as (unit, hook), in order.
    fn hooks(&self) -> Vec<(String, HookKind)> {
        self.events
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Hook { unit, hook, .. } => Some((unit.to_string(), hook)),
                _ => None,
            })
            .collect()
    }

    fn hooks_of(&self, unit: &str) -> Vec<HookKind> {
        self.hooks().into_iter().filter(|(u, _)| u == unit).map(|(_, h)| h).collect()
    }

    /// Waits (real time, up to 10 s) until `unit` has finished `count` hooks.
    async fn settle(&self, unit: &str, count: usize) {
        for _ in 0..2000 {
            if self.hooks_of(unit).len() >= count {
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{unit} ran only {:?}", self.hooks_of(unit));
    }

    /// Advances the manual clock in steps, letting the agents react after each.
    async fn advance(&self, total: Duration, step: Duration) {
        let mut done = Duration::ZERO;
        while done < total {
            let by = step.min(total - done);
            self.clock.advance(by);
            done += by;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

use HookKind::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_two_unit_application_runs_hooks_in_order() {
    let agents = Agents::new(|s| s);
    agents.store.claim(&UnitName::new("app/0").unwrap(), Duration::from_secs(20)).unwrap();
    let leader = agents.start("app/0");
    let minion = agents.start("app/1");
    agents.settle("app/0", 2).await;
    agents.settle("app/1", 2).await;
    assert_eq!(agents.hooks_of("app/0"), [Install, LeaderElected]);
    assert_eq!(agents.hooks_of("app/1"), [Install, LeaderSettingsChanged]);
    for running in [minion, leader] {
        running.commands.send(AgentCommand::Stop).await.unwrap();
        running.task.await.unwrap().unwrap();
    }
    assert_eq!(agents.hooks_of("app/0"), [Install, LeaderElected, LeaderDeposed, Stop]);
    assert_eq!(agents.hooks_of("app/1")[2..], [Stop], "a minion's stop: no deposed");
    assert!(agents.store.lease(&UnitName::new("app/0").unwrap().app().clone()).unwrap().is_none(), "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_is_deposed_before_its_successor_is_elected() {
    let faulty = std::sync::Mutex::new(None);
    let agents = Agents::new(|inner| {
        let store = FaultyStore::new(inner);
        *faulty.lock().unwrap() = Some(store.clone());
        store
    });
    let faulty = faulty.into_inner().unwrap().unwrap();
    let app0 = UnitName::new("app/0").unwrap();
    agents.store.claim(&app0, Duration::from_secs(20)).unwrap();
    let _leader = agents.start("app/0");
    let _minion = agents.start("app/1");
    agents.settle("app/0", 2).await;
    agents.settle("app/1", 2).await;
    let claimed_at = agents.clock.now();

    faulty.fail_claims_of(&app0);
    // Renewals fail; at the guarantee deadline (claim end minus the window) app/0 deposes
    // itself, while its lease keeps app/1 out for one more window.
    agents.advance(WINDOW - Duration::from_millis(500), Duration::from_millis(500)).await;
    assert_eq!(agents.hooks_of("app/0").len(), 2, "still guaranteed: no deposed yet");
    agents.advance(Duration::from_millis(500), Duration::from_millis(500)).await;
    agents.settle("app/0", 3).await;
    assert_eq!(agents.hooks_of("app/0")[2], LeaderDeposed);
    assert_eq!(agents.hooks_of("app/1").len(), 2, "no successor while the old lease lasts");
    assert!(agents.clock.now().saturating_since(claimed_at) < 2 * WINDOW);

    agents.advance(WINDOW, Duration::from_secs(1)).await;
    agents.settle("app/1", 3).await;
    let order: Vec<_> = agents.hooks().into_iter().filter(|(_, h)| matches!(h, LeaderDeposed | LeaderElected)).collect();
    assert_eq!(
        order,
        [("app/0".into(), LeaderElected), ("app/0".into(), LeaderDeposed), ("app/1".into(), LeaderElected)],
        "deposed runs before the successor's elected"
    );
    assert_eq!(agents.hooks_of("app/0")[3], LeaderSettingsChanged, "a deposed leader becomes a minion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_hands_over_at_once() {
    let agents = Agents::new(|s| s);
    agents.store.claim(&UnitName::new("app/0").unwrap(), Duration::from_secs(20)).unwrap();
    let leader = agents.start("app/0");
    let _minion = agents.start("app/1");
    agents.settle("app/0", 2).await;
    agents.settle("app/1", 2).await;
    leader.commands.send(AgentCommand::StepDown).await.unwrap();
    // No clock movement needed: the revoke wakes app/1's wait at once.
    agents.settle("app/1", 3).await;
    assert_eq!(agents.hooks_of("app/1")[2], LeaderElected);
    assert_eq!(agents.hooks_of("app/0")[2], LeaderDeposed);
    let app = UnitName::new("app/1").unwrap().app().clone();
    assert_eq!(agents.store.lease(&app).unwrap().unwrap().holder.as_str(), "app/1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_remember_install_leadership_and_settings_seen() {
    let agents = Agents::new(|s| s);
    let app0 = UnitName::new("app/0").unwrap();
    let term = agents.store.claim(&app0, Duration::from_secs(20)).unwrap().term;
    let leader = agents.start("app/0");
    let minion = agents.start("app/1");
    agents.settle("app/0", 2).await;
    agents.settle("app/1", 2).await;
    // Crash both agents (no stop sequence, the lease is left in place).
    leader.task.abort();
    minion.task.abort();
    let _ = leader.task.await;
    let _ = minion.task.await;

    // The leader is still leader at the same term: no second install or leader-elected;
    // the minion saw these settings already: nothing.
    let _leader = agents.start("app/0");
    let minion = agents.start("app/1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agents.hooks_of("app/0"), [Install, LeaderElected]);
    assert_eq!(agents.hooks_of("app/1"), [Install, LeaderSettingsChanged]);

    // Settings change while the minion is down: one leader-settings-changed on restart.
    minion.task.abort();
    let _ = minion.task.await;
    agents.store.write_settings(&app0, term, &[("k".into(), "v".into())]).unwrap();
    let _minion = agents.start("app/1");
    agents.settle("app/1", 3).await;
    assert_eq!(agents.hooks_of("app/1"), [Install, LeaderSettingsChanged, LeaderSettingsChanged]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_is_retried_with_backoff_and_shows_its_error() {
    let agents = Agents::new(|s| s);
    let running = agents.start("app/0");
    script(&running.unit, &["fail not yet"]);
    agents.settle("app/0", 1).await;
    assert_eq!(running.unit.status().last_error.as_deref(), Some("not yet"));
    agents.advance(Duration::from_millis(900), Duration::from_millis(300)).await;
    assert_eq!(agents.hooks_of("app/0"), [Install], "not before the first backoff of 1 s");
    agents.advance(Duration::from_millis(100), Duration::from_millis(100)).await;
    agents.settle("app/0", 2).await;
    assert_eq!(agents.hooks_of("app/0"), [Install, Install]);
    script(&running.unit, &[]);
    agents.advance(Duration::from_secs(2), Duration::from_millis(500)).await;
    agents.settle("app/0", 4).await;
    assert_eq!(agents.hooks_of("app/0")[..4], [Install, Install, Install, LeaderElected]);
    assert_eq!(running.unit.status().last_error, None, "the error clears once it succeeds");
}
