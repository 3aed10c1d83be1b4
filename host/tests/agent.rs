//! Unit agents on a manual clock: deposition before succession, restarts, step-down.

mod support;

use std::sync::Arc;
use std::time::Duration;

use charm_host::agent::{self, AgentCommand, AgentConfig, Backoff, RunningAgent, SpawnError, UnitSetup, UnitSpec};
use charm_host::events::{Event, EventKind, RecordingSink};
use charm_host::hooks::HookKind;
use charm_host::leadership::{Clock, LeadershipStore, ManualClock, MemoryStore, Release};
use charm_host::names::UnitName;
use charm_host::runtime::{Charm, HookRuntime};
use charm_host::state_dir::StateDir;
use charm_host::timing::{GuaranteeWindow, StopGrace};
use support::*;

const WINDOW: Duration = Duration::from_secs(10);

struct Agents {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Arc<dyn LeadershipStore>,
    events: Arc<RecordingSink>,
    runtime: Arc<HookRuntime>,
    charm: Charm,
}

impl Agents {
    fn new(wrap: impl FnOnce(Arc<dyn LeadershipStore>) -> Arc<dyn LeadershipStore>) -> Self {
        let clock = Arc::new(ManualClock::default());
        let store = wrap(Arc::new(MemoryStore::with_clock(clock.clone())));
        let runtime = runtime(None);
        let charm = probe(&runtime);
        Self { dir: tempfile::tempdir().unwrap(), clock, store, events: Arc::new(RecordingSink::new()), runtime, charm }
    }

    /// `app/0` (claimed for it first, so it leads) to `app/{count-1}`, each started and past
    /// its first two hooks.
    async fn start_settled(&self, count: u32) -> Vec<RunningAgent> {
        self.store.claim(&claimant("app/0"), Duration::from_secs(20)).await.unwrap();
        let mut units = Vec::new();
        for n in 0..count {
            units.push(self.start(&format!("app/{n}")).await);
        }
        for n in 0..count {
            self.settle(&format!("app/{n}"), 2).await;
        }
        units
    }

    /// Agents on a store whose faults the test injects.
    fn faulty() -> (Self, Arc<FaultyStore>) {
        let faulty = std::sync::Mutex::new(None);
        let agents = Self::new(|inner| {
            let store = FaultyStore::new(inner);
            *faulty.lock().unwrap_or_else(|p| p.into_inner()) = Some(store.clone());
            store
        });
        let faulty = faulty.into_inner().unwrap_or_else(|p| p.into_inner()).expect("the store was wrapped");
        (agents, faulty)
    }

    async fn start(&self, name: &str) -> RunningAgent {
        self.start_on(name, self.runtime.clone(), self.charm.clone()).await
    }

    /// Starts `name` on `runtime` (for limits other than the test runtime's).
    async fn start_on(&self, name: &str, runtime: Arc<HookRuntime>, charm: Charm) -> RunningAgent {
        self.try_start_on(name, runtime, charm).await.unwrap()
    }

    /// Prepares and starts `name`'s agent: the unit's lock, as every agent holds it, and the
    /// test's one agent of the unit (the incarnation `claimant` names: a restart here is the
    /// same agent coming back).
    async fn try_start_on(
        &self,
        name: &str,
        runtime: Arc<HookRuntime>,
        charm: Charm,
    ) -> Result<RunningAgent, SpawnError> {
        let name = UnitName::new(name).unwrap();
        let config = AgentConfig::default()
            .with_backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(4)).unwrap())
            .with_stop_grace(StopGrace::new(Duration::from_secs(1)).unwrap());
        let spec = UnitSpec::new(name.clone(), StateDir::new(self.dir.path()), self.store.clone(), self.events.clone())
            .with_setup(UnitSetup::default().with_window(GuaranteeWindow::new(WINDOW).unwrap()).with_agent(config))
            .claiming_as(claimant(name.as_str()));
        Ok(spec.prepare().await?.start(runtime, charm))
    }

    /// The hooks that finished, as (unit, hook), in order.
    fn hooks(&self) -> Vec<(String, HookKind)> {
        self.events
            .events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Hook { hook, .. } => Some((e.unit.to_string(), hook)),
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

    /// Waits (real time, up to 10 s) until `unit`'s state record says it saw settings
    /// `version`.
    async fn wait_recorded_version(&self, unit: &str, version: u64) {
        let path = StateDir::new(self.dir.path()).agent_state(&UnitName::new(unit).unwrap());
        for _ in 0..2000 {
            let recorded =
                agent::load_json::<agent::LocalState>(&path).ok().flatten().and_then(|s| s.settings_version_seen);
            if recorded >= Some(version) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{unit} never recorded settings version {version}");
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
    agents.store.claim(&claimant("app/0"), Duration::from_secs(20)).await.unwrap();
    let leader = agents.start("app/0").await;
    let minion = agents.start("app/1").await;
    agents.settle("app/0", 2).await;
    agents.settle("app/1", 2).await;
    assert_eq!(agents.hooks_of("app/0"), [Install, LeaderElected]);
    assert_eq!(agents.hooks_of("app/1"), [Install, LeaderSettingsChanged]);
    for running in [minion, leader] {
        running.stop().await.unwrap();
    }
    assert_eq!(agents.hooks_of("app/0"), [Install, LeaderElected, LeaderDeposed, Stop]);
    assert_eq!(agents.hooks_of("app/1")[2..], [Stop], "a minion's stop: no deposed");
    assert!(agents.store.lease(&UnitName::new("app/0").unwrap().app().clone()).await.unwrap().is_none(), "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_is_deposed_before_its_successor_is_elected() {
    let (agents, faulty) = Agents::faulty();
    let app0 = UnitName::new("app/0").unwrap();
    agents.store.claim(&claimant("app/0"), Duration::from_secs(20)).await.unwrap();
    let _leader = agents.start("app/0").await;
    let _minion = agents.start("app/1").await;
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
    let order: Vec<_> =
        agents.hooks().into_iter().filter(|(_, h)| matches!(h, LeaderDeposed | LeaderElected)).collect();
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
    agents.store.claim(&claimant("app/0"), Duration::from_secs(20)).await.unwrap();
    let leader = agents.start("app/0").await;
    let _minion = agents.start("app/1").await;
    agents.settle("app/0", 2).await;
    agents.settle("app/1", 2).await;
    leader.commands().send(AgentCommand::StepDown).await.unwrap();
    // No clock movement needed: the revoke wakes app/1's wait at once.
    agents.settle("app/1", 3).await;
    assert_eq!(agents.hooks_of("app/1")[2], LeaderElected);
    assert_eq!(agents.hooks_of("app/0")[2], LeaderDeposed);
    let app = UnitName::new("app/1").unwrap().app().clone();
    assert_eq!(agents.store.lease(&app).await.unwrap().unwrap().holder.as_str(), "app/1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_remember_install_leadership_and_settings_seen() {
    let agents = Agents::new(|s| s);
    let term = agents.store.claim(&claimant("app/0"), Duration::from_secs(20)).await.unwrap().term;
    let leader = agents.start("app/0").await;
    let minion = agents.start("app/1").await;
    agents.settle("app/0", 2).await;
    agents.settle("app/1", 2).await;
    // The settings version a minion saw is written behind: let its record land first.
    agents.clock.advance(Duration::from_secs(1));
    agents.wait_recorded_version("app/1", 0).await;
    // Crash both agents (no stop sequence, the lease is left in place).
    leader.kill_and_wait().await;
    minion.kill_and_wait().await;

    // The leader is still leader at the same term: no second install or leader-elected;
    // the minion saw these settings already: nothing.
    let leader = agents.start("app/0").await;
    let minion = agents.start("app/1").await;
    // Once each restarted agent has settled, whatever its restart queued has run.
    wait_settled(leader.unit(), 0).await;
    wait_settled(minion.unit(), 0).await;
    assert_eq!(agents.hooks_of("app/0"), [Install, LeaderElected]);
    assert_eq!(agents.hooks_of("app/1"), [Install, LeaderSettingsChanged]);

    // Settings change while the minion is down: one leader-settings-changed on restart.
    minion.kill_and_wait().await;
    agents.store.write_settings(&claimant("app/0"), term, &[("k".into(), "v".into())]).await.unwrap();
    let _minion = agents.start("app/1").await;
    agents.settle("app/1", 3).await;
    assert_eq!(agents.hooks_of("app/1"), [Install, LeaderSettingsChanged, LeaderSettingsChanged]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_is_retried_with_backoff_and_shows_its_error() {
    let agents = Agents::new(|s| s);
    // The script is in place before the agent starts: its install must fail.
    let data = StateDir::new(agents.dir.path()).data_dir(&unit_name("app/0"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("script"), "fail not yet").unwrap();
    let running = agents.start("app/0").await;
    agents.settle("app/0", 1).await;
    assert_eq!(running.unit().status().last_error.as_deref(), Some("not yet"));
    // Settled after the failure: the retry waits, it did not run at once.
    wait_settled(running.unit(), 0).await;
    assert_eq!(agents.hooks_of("app/0"), [Install]);
    agents.advance(Duration::from_millis(900), Duration::from_millis(300)).await;
    assert_eq!(agents.hooks_of("app/0"), [Install], "not before the first backoff of 1 s");
    agents.advance(Duration::from_millis(100), Duration::from_millis(100)).await;
    agents.settle("app/0", 2).await;
    assert_eq!(agents.hooks_of("app/0"), [Install, Install]);
    script(running.unit(), &[]);
    agents.advance(Duration::from_secs(2), Duration::from_millis(500)).await;
    agents.settle("app/0", 4).await;
    assert_eq!(agents.hooks_of("app/0")[..4], [Install, Install, Install, LeaderElected]);
    assert_eq!(running.unit().status().last_error, None, "the error clears once it succeeds");
}

/// Waits (real time, up to 20 s) until `check` holds.
async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..4000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

/// A store whose claims fail, with nobody holding the lease: the claim loop must back off
/// instead of claiming in a loop, and say why in the status and `is-leader`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_retried_with_backoff_and_shows_in_the_status() {
    let (agents, faulty) = Agents::faulty();
    let app0 = UnitName::new("app/0").unwrap();
    faulty.fail_claims_of(&app0);
    let running = agents.start("app/0").await;
    wait_for("the failure shows in the status", async || running.unit().status().leadership_error.is_some()).await;
    assert!(running.unit().status().leadership_error.unwrap().contains("injected failure"));
    assert!(running.unit().leadership().is_leader().is_err(), "is-leader is unknown, not false");
    agents.settle("app/0", 2).await;
    assert_eq!(agents.hooks_of("app/0"), [Install, LeaderSettingsChanged], "a unit that cannot claim acts as a minion");

    // Ten windows of store time: a loop would claim thousands of times (it did, at 100 %
    // CPU); the backoff (a tenth of a window doubling to half a window) makes about 22.
    let before = faulty.claims();
    agents.advance(10 * WINDOW, WINDOW / 10).await;
    let retries = faulty.claims() - before;
    assert!(retries <= 40, "{retries} claims in ten windows: not backing off");
    assert!(retries >= 1, "it keeps retrying");

    faulty.heal();
    for _ in 0..100 {
        if agents.hooks_of("app/0").contains(&LeaderElected) {
            break;
        }
        agents.advance(WINDOW / 2, WINDOW / 10).await;
    }
    agents.settle("app/0", 3).await;
    assert_eq!(agents.hooks_of("app/0")[2..], [LeaderElected], "leads once the store works again");
    assert_eq!(running.unit().status().leadership_error, None);
    assert_eq!(running.unit().leadership().is_leader(), Ok(true));
}

/// A leader whose renewal never gets an answer (lost in a partition) deposes itself at its
/// guarantee deadline: `leader-deposed` runs while its lease still keeps everyone else out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewal_hangs_deposes_itself_at_its_guarantee_deadline() {
    let (agents, faulty) = Agents::faulty();
    let app0 = UnitName::new("app/0").unwrap();
    let running = agents.start_settled(1).await;
    wait_for("app/0 holds its claim", async || running[0].unit().leadership().held_term().is_some()).await;
    let lease = agents.store.lease(app0.app()).await.unwrap().expect("app/0 leads");
    faulty.hang_claims_of(&app0);
    let deposed = async || agents.hooks_of("app/0").contains(&LeaderDeposed);
    for _ in 0..200 {
        if deposed().await {
            break;
        }
        agents.advance(WINDOW / 10, WINDOW / 10).await;
    }
    assert!(deposed().await, "a hung renewal must not keep the unit leading: {:?}", agents.hooks_of("app/0"));
    assert!(agents.clock.now() < lease.expires, "deposed before the lease it held could pass");
    agents.advance(WINDOW / 10, WINDOW / 10).await;
    assert!(running[0].unit().leadership().is_leader().is_err(), "past its deadline, is-leader says unknown");
}

/// The `leadership` events of every unit, as (unit, leader), in the order emitted, with the
/// hook events, as one stream.
fn leadership_stream(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Leadership(change) => Some((e.unit.to_string(), format!("leader={}", change.leads()))),
            EventKind::Hook { hook, .. } => Some((e.unit.to_string(), hook.to_string())),
            _ => None,
        })
        .collect()
}

/// Across repeated step-downs, the event stream never shows two leaders: the old leader's
/// `leader=false` comes before its `leader-deposed` and before the successor's `leader=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_never_shows_two_leaders_across_handovers() {
    let agents = Agents::new(|s| s);
    let app0 = UnitName::new("app/0").unwrap();
    // A unit that stepped down is held off for a claim duration, so with five units four
    // step-downs in a row need no clock movement (advancing it races the renewals).
    let units = agents.start_settled(5).await;
    let app = app0.app().clone();
    for round in 0..4 {
        let leader = agents.store.lease(&app).await.unwrap().expect("a leader").holder;
        let running = units.iter().find(|r| *r.unit().name() == leader).unwrap();
        wait_for("the leader's tracker holds the claim", async || running.unit().leadership().held_term().is_some())
            .await;
        let deposed_before = agents.hooks_of(leader.as_str()).iter().filter(|h| **h == LeaderDeposed).count();
        running.commands().send(AgentCommand::StepDown).await.unwrap();
        let handed_over = async || {
            agents.store.lease(&app).await.unwrap().is_some_and(|l| l.holder != leader)
                && agents.hooks_of(leader.as_str()).iter().filter(|h| **h == LeaderDeposed).count() > deposed_before
        };
        for _ in 0..4000 {
            if handed_over().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            handed_over().await,
            "round {round}: no handover from {leader}: lease {:?}, clock {:?}, events {:#?}",
            agents.store.lease(&app).await.unwrap(),
            agents.clock.now(),
            leadership_stream(&agents.events.events())
        );
        wait_for("the successor's leader-elected", async || {
            agents.hooks().iter().filter(|(_, h)| *h == LeaderElected).count() > round + 1
        })
        .await;
    }
    let stream = leadership_stream(&agents.events.events());
    let mut leaders: Vec<String> = Vec::new();
    for (i, (unit, what)) in stream.iter().enumerate() {
        match what.as_str() {
            "leader=true" => {
                assert!(leaders.is_empty(), "{unit} leads while {leaders:?} still does, at {i}: {stream:#?}");
                leaders.push(unit.clone());
            }
            "leader=false" => leaders.retain(|l| l != unit),
            "leader-deposed" => {
                assert!(!leaders.contains(unit), "{unit} ran leader-deposed before leader=false: {stream:#?}")
            }
            _ => {}
        }
    }
}

/// A hook that never ends does not hold up a stop: it is interrupted after the stop grace,
/// and the stop's own hooks get no more than the grace each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_interrupts_a_runaway_hook_after_the_stop_grace() {
    let agents = Agents::new(|s| s);
    let patient = Arc::new(
        HookRuntime::new(
            charm_host::RuntimeConfig::default()
                .with_hook_deadline(Duration::from_secs(3600))
                .with_memory_cap(16 * 1024 * 1024)
                .with_max_concurrent_hooks(4)
                .with_cache_dir(None),
        )
        .unwrap(),
    );
    let app0 = UnitName::new("app/0").unwrap();
    agents.store.claim(&claimant("app/0"), Duration::from_secs(20)).await.unwrap();
    let base = StateDir::new(agents.dir.path()).data_dir(&unit_name("app/0"));
    std::fs::create_dir_all(&base).unwrap();
    for hook in ["leader-elected", "leader-deposed", "stop"] {
        std::fs::write(base.join(format!("script-{hook}")), "spin").unwrap();
    }
    let charm = probe(&patient);
    let running = agents.start_on("app/0", patient, charm).await;
    wait_for("leader-elected is running", async || agents.hooks_of("app/0") == [Install]).await;
    running.commands().send(AgentCommand::Stop).await.unwrap();
    // Without the grace this would wait for the hour-long deadline.
    tokio::time::timeout(Duration::from_secs(120), running.wait()).await.expect("the stop is bounded").unwrap();
    let results: Vec<(HookKind, Result<(), charm_host::hooks::HookError>)> = agents
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Hook { hook, result, .. } => Some((hook, result)),
            _ => None,
        })
        .collect();
    use charm_host::hooks::HookError::{Deadline, Interrupted};
    let grace = Duration::from_secs(1);
    assert_eq!(
        results,
        [
            (Install, Ok(())),
            (LeaderElected, Err(Interrupted(grace))),
            (LeaderDeposed, Err(Deadline(grace))),
            (Stop, Err(Deadline(grace)))
        ]
    );
    assert!(agents.store.lease(app0.app()).await.unwrap().is_none(), "leadership was given up");
}

/// An agent whose local state remembers a higher term than the store offers refuses to
/// start (the store was lost), unless told to accept the new store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_a_store_that_forgot_its_terms() {
    let agents = Agents::new(|s| s);
    let app0 = UnitName::new("app/0").unwrap();
    for _ in 0..3 {
        agents.store.claim(&claimant("app/0"), Duration::from_secs(20)).await.unwrap();
        agents.store.revoke(&claimant("app/0"), Release::StepDown).await.unwrap();
    }
    let first = agents.start("app/0").await;
    agents.settle("app/0", 2).await;
    first.stop().await.unwrap();

    // The same unit directory on a new, empty store.
    let fresh = Agents { dir: agents.dir, ..Agents::new(|s| s) };
    let refused = fresh.try_start_on("app/0", fresh.runtime.clone(), fresh.charm.clone()).await;
    match refused {
        Err(SpawnError::Agent { source, .. })
            if matches!(*source, agent::AgentError::StoreBehind { what: "term", remembered: 4, found: 0, .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(fresh.hooks().is_empty(), "nothing ran");
    assert_eq!(fresh.store.last_term(app0.app()).await.unwrap(), 0, "nothing was claimed");
}

/// A directed handover to a unit that stepped down a moment ago: the reservation ends its
/// hold-off, so it leads at once instead of after a claim duration without a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_ends_the_hold_off_of_a_unit_that_stepped_down() {
    let agents = Agents::new(|s| s);
    let app0 = UnitName::new("app/0").unwrap();
    let units = agents.start_settled(3).await;
    let app = app0.app().clone();
    wait_for("app/0 holds its claim", async || units[0].unit().leadership().held_term().is_some()).await;
    units[0].commands().send(AgentCommand::StepDown).await.unwrap();
    wait_for("a successor", async || agents.store.lease(&app).await.unwrap().is_some_and(|l| l.holder != app0)).await;
    let successor = agents.store.lease(&app).await.unwrap().unwrap().holder;
    let running = units.iter().find(|r| *r.unit().name() == successor).unwrap();
    wait_for("the successor holds its claim", async || running.unit().leadership().held_term().is_some()).await;
    // elect app/0: reserve, then the leader steps down. No clock movement.
    agents.store.reserve(&app0, Duration::from_secs(60)).await.unwrap();
    running.commands().send(AgentCommand::StepDown).await.unwrap();
    wait_for("app/0 leads again", async || agents.store.lease(&app).await.unwrap().is_some_and(|l| l.holder == app0))
        .await;
    wait_for("its leader-elected", async || {
        agents.hooks_of("app/0").iter().filter(|h| **h == LeaderElected).count() == 2
    })
    .await;
}

/// A store that does not answer an agent's checks at start is asked again (with a backoff,
/// on the store's clock) instead of the agent failing to start; past the patience, the
/// start fails and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_answer_at_start_is_asked_again() {
    let (agents, faulty) = Agents::faulty();
    let asked_again = |agents: &Agents| {
        agents
            .events
            .events()
            .into_iter()
            .filter(
                |e| matches!(&e.kind, EventKind::Log { message, .. } if message.contains("did not answer at start")),
            )
            .count()
    };
    faulty.failing_reads.store(2, std::sync::atomic::Ordering::SeqCst);
    let starting = {
        let (runtime, charm) = (agents.runtime.clone(), agents.charm.clone());
        let agents = &agents;
        async move { agents.try_start_on("app/0", runtime, charm).await }
    };
    let advancing = async {
        for retries in 1..=2 {
            wait_for("the agent to ask again", async || asked_again(&agents) >= retries).await;
            agents.clock.advance(Duration::from_secs(5));
        }
    };
    let (started, ()) = tokio::join!(starting, advancing);
    let running = started.expect("started once the store answered");
    agents.settle("app/0", 1).await;
    assert_eq!(agents.hooks_of("app/0")[0], Install);
    running.stop().await.unwrap();

    // A store that never answers: the start gives up after the patience, saying why.
    faulty.failing_reads.store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
    let before = asked_again(&agents);
    let starting = agents.try_start_on("app/1", agents.runtime.clone(), agents.charm.clone());
    let advancing = async {
        wait_for("the agent to ask again", async || asked_again(&agents) > before).await;
        // Past the agent's patience at start (`STORE_PATIENCE_AT_START`, 30 s).
        agents.clock.advance(Duration::from_secs(30));
    };
    let (refused, ()) = tokio::join!(starting, advancing);
    match refused {
        Err(SpawnError::Agent { source, .. }) => {
            assert!(source.to_string().contains("cannot read the leadership store at start"), "{source}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}
