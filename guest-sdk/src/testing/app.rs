//! An application of N test units that runs its hooks as the host would.
//!
//! Owns each unit's hook queue (the host's own `charm_rules::queue::HookQueue`), what each
//! queue was last told, a virtual clock for retry backoff and `update-status` periods, and
//! the history of hooks run.
//!
//! Invariants: nothing runs until [`App::settle`]; a queue hears of leadership, of the
//! settings version and (the leader's) of unit-data changes before each round of hooks and
//! after each hook (the queue's answer does not depend on the order); each round runs at
//! most one hook per unit,
//! units owing a `leader-deposed` first, so an old leader's deposed hook runs before a
//! new leader's elected one when both are due; time moves only by [`App::advance`].

use std::marker::PhantomData;
use std::time::Duration;

use charm_rules::Timestamp;
use charm_rules::queue::{Backoff, DEFAULT_UPDATE_STATUS_INTERVAL, HookQueue, LocalState, Next};
use charm_rules::settings::Settings;

use super::{Hook, HookRun, Unit, world};
use crate::Charm;

/// How many hooks one [`App::settle`] may run before it decides the charm never settles.
const MAX_HOOKS_PER_SETTLE: usize = 10_000;

/// One unit of the application and what its queue was told.
#[derive(Debug)]
struct Member {
    unit: Unit,
    queue: HookQueue,
    /// The role last told: `Some(Some(term))` leader, `Some(None)` minion.
    told_role: Option<Option<u64>>,
    told_version: Option<u64>,
    stopped: bool,
}

/// N units of one application running charm `C`: they share leadership and the leader
/// settings, and each runs its hooks through the host's own hook queue.
///
/// ```
/// use charm_sdk::testing::{App, Hook};
/// use charm_sdk::{Charm, Result};
///
/// struct Counter;
///
/// impl Charm for Counter {
///     fn leader_elected() -> Result<()> {
///         let n: u64 = charm_sdk::leader_get_json("elections")?.unwrap_or(0);
///         charm_sdk::leader_set_json("elections", &(n + 1))
///     }
/// }
///
/// let mut app = App::<Counter>::new("counter", 3);
/// app.elect(0);
/// app.settle();
/// app.elect(2); // unit 0's leadership passes to unit 2
/// app.settle();
/// assert_eq!(app.settings()["elections"], "2");
/// assert_eq!(app.hooks(0), [Hook::Install, Hook::LeaderElected, Hook::LeaderDeposed, Hook::LeaderSettingsChanged]);
/// // Unit 1 heard of the first write and of the second, in that order.
/// assert_eq!(app.hooks(1), [Hook::Install, Hook::LeaderSettingsChanged, Hook::LeaderSettingsChanged]);
/// ```
#[derive(Debug)]
pub struct App<C> {
    members: Vec<Member>,
    now: Timestamp,
    /// How often `update-status` comes, and when next.
    update_status_interval: Duration,
    next_update_status: Timestamp,
    history: Vec<(usize, HookRun)>,
    dropped: Vec<(usize, Hook, Option<u64>)>,
    charm: PhantomData<fn() -> C>,
}

impl<C: Charm> App<C> {
    /// `units` units, `app/0` to `app/{units - 1}`, none leading, with empty settings.
    ///
    /// # Panics
    /// If `app` is not a valid application name, with the host's reason.
    pub fn new(app: &str, units: usize) -> Self {
        let world = std::rc::Rc::new(std::cell::RefCell::new(world::World::default()));
        let members = (0..units)
            .map(|i| {
                let name = format!("{app}/{i}");
                let unit = Unit::in_world(&name, world.clone(), world::seed_for(&name));
                Member {
                    unit,
                    queue: HookQueue::new(LocalState::default(), Backoff::default()),
                    told_role: None,
                    told_version: None,
                    stopped: false,
                }
            })
            .collect();
        Self {
            members,
            now: Timestamp::default(),
            update_status_interval: DEFAULT_UPDATE_STATUS_INTERVAL,
            next_update_status: Timestamp::default() + DEFAULT_UPDATE_STATUS_INTERVAL,
            history: Vec::new(),
            dropped: Vec::new(),
            charm: PhantomData,
        }
    }

    /// The settings start as `settings` (validated as a `leader-set` would be).
    ///
    /// # Panics
    /// If the group is not valid, or the application has no units.
    pub fn with_settings<K: Into<String>, V: Into<String>>(self, settings: impl IntoIterator<Item = (K, V)>) -> Self {
        let first = self.unit(0).clone();
        let _ = first.with_settings(settings);
        self
    }

    /// Every unit has a configured service `name` (see [`Unit::with_service`]).
    pub fn with_service(self, name: &str, leader_only: bool) -> Self {
        for member in &self.members {
            let _ = member.unit.clone().with_service(name, leader_only);
        }
        self
    }

    /// Unit `i` draws `random_hex` from a stream seeded with `seed + i`.
    pub fn with_seed(self, seed: u64) -> Self {
        for (i, member) in self.members.iter().enumerate() {
            let _ = member.unit.clone().with_seed(seed.wrapping_add(i as u64));
        }
        self
    }

    /// `update-status` comes every `interval` of virtual time ([`Self::advance`]) instead of
    /// every 5 minutes, the first one `interval` after the start.
    ///
    /// # Panics
    /// If `interval` is zero.
    pub fn with_update_status_interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "charm_sdk::testing::App: an update-status interval must be longer than zero");
        self.update_status_interval = interval;
        self.next_update_status = self.now + interval;
        self
    }

    /// Unit `i`, to script changes on it or inspect it.
    ///
    /// # Panics
    /// If there is no unit `i`.
    pub fn unit(&self, i: usize) -> &Unit {
        match self.members.get(i) {
            Some(member) => &member.unit,
            None => panic!("charm_sdk::testing::App: no unit {i} (the application has {})", self.members.len()),
        }
    }

    /// The index of the unit that leads now.
    pub fn leader(&self) -> Option<usize> {
        self.members.first().and_then(|m| m.unit.world().borrow().leader)
    }

    /// The term of the current (or last) tenure; 0 before the first.
    pub fn term(&self) -> u64 {
        self.members.first().map_or(0, |m| m.unit.term())
    }

    /// The application's settings now.
    pub fn settings(&self) -> Settings {
        self.members.first().map(|m| m.unit.settings()).unwrap_or_default()
    }

    /// Unit `i` becomes leader at a new term; the previous leader, if any, loses
    /// leadership (as when its lease expired, or a handover was directed to `i`).
    pub fn elect(&mut self, i: usize) {
        self.unit(i).change(super::Change::GainLeadership);
    }

    /// The leader loses leadership and nobody leads until [`Self::elect`].
    pub fn depose(&mut self) {
        if let Some(leader) = self.leader() {
            self.unit(leader).change(super::Change::LoseLeadership);
        }
    }

    /// Unit `i` is stopped gracefully: a leader gives up leadership (`leader-deposed`
    /// runs), then `stop` runs, and nothing after it.
    pub fn stop(&mut self, i: usize) {
        if self.leader() == Some(i) {
            self.unit(i).change(super::Change::LoseLeadership);
        }
        if let Some(member) = self.members.get_mut(i) {
            member.queue.on_stop();
        }
    }

    /// Unit `i`'s agent dies (a crash, a SIGKILL): no hook runs on it, not even
    /// `leader-deposed`; if it led, nobody leads until [`Self::elect`] (on the host, until
    /// its lease expires), and its leader-only services die with it. Bring it back with
    /// [`Self::restart`].
    pub fn crash(&mut self, i: usize) {
        let world = self.unit(i).world();
        let mut world = world.borrow_mut();
        if world.leader == Some(i) {
            world.set_leader(None);
        }
        drop(world);
        if let Some(member) = self.members.get_mut(i) {
            member.stopped = true;
        }
    }

    /// Unit `i`'s agent starts again (after [`Self::crash`] or [`Self::stop`]), with what
    /// the unit remembered (installed, the last term it ran `leader-elected` for, the
    /// settings version it saw): a minion runs `leader-settings-changed` only if the
    /// settings changed meanwhile, as on the host.
    pub fn restart(&mut self, i: usize) {
        if let Some(member) = self.members.get_mut(i) {
            member.queue = HookQueue::new(member.queue.local_state().clone(), Backoff::default());
            member.told_role = None;
            member.told_version = None;
            member.stopped = false;
        }
    }

    /// An operator's `leader-set` through the leader's hook tools, now (validated as the
    /// host validates it): the minions hear of it, the leader does not.
    ///
    /// # Panics
    /// If nobody leads (the host's tool would refuse), or the group is not valid.
    pub fn set_settings<K: Into<String>, V: Into<String>>(&mut self, settings: impl IntoIterator<Item = (K, V)>) {
        assert!(self.leader().is_some(), "charm_sdk::testing::App::set_settings: nobody leads to write through");
        let group: Vec<(String, String)> = settings.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        if let Err(reason) = self.unit(0).world().borrow_mut().write(&group) {
            panic!("charm_sdk::testing::App::set_settings: {reason}");
        }
    }

    /// Unit `i` leaves the application for good (an operator's `remove-unit`): its data
    /// and membership go now (the leader hears of it), and it is stopped gracefully.
    pub fn remove_unit(&mut self, i: usize) {
        let name = self.unit(i).name();
        self.unit(i).world().borrow_mut().remove(&name);
        self.stop(i);
    }

    /// Unit `i`'s own data changes now, as its `unit-set` of `data` would (validated the
    /// same way): the leader hears of it.
    ///
    /// # Panics
    /// If unit `i` is not a member or the data is not valid.
    pub fn set_unit_data<K: Into<String>, V: Into<String>>(
        &mut self,
        i: usize,
        data: impl IntoIterator<Item = (K, V)>,
    ) {
        let group: Vec<(String, String)> = data.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let name = self.unit(i).name();
        if let Err(reason) = self.unit(i).world().borrow_mut().write_unit_data(&name, &group) {
            panic!("charm_sdk::testing::App::set_unit_data: {reason}");
        }
    }

    /// Moves the virtual clock on: failed hooks whose retry falls due run at the next
    /// [`Self::settle`] (the host's backoff: 1 s, then 2 s, 4 s, ... up to 60 s), and so
    /// does one `update-status` on every unit if one or more of its periods passed (every
    /// 5 minutes, or [`Self::with_update_status_interval`]).
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        if self.now >= self.next_update_status {
            self.update_status();
            let behind = self.now.saturating_since(self.next_update_status).as_nanos();
            let periods = behind / self.update_status_interval.as_nanos() + 1;
            let ahead = self.update_status_interval.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
            self.next_update_status = self.next_update_status + ahead;
        }
    }

    /// An `update-status` period comes now on every unit not stopped: each runs one
    /// `update-status` at the next [`Self::settle`], after anything else it has queued.
    pub fn update_status(&mut self) {
        for member in self.members.iter_mut().filter(|m| !m.stopped) {
            member.queue.on_update_status();
        }
    }

    /// Virtual time since the application was built.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_since(Timestamp::default())
    }

    /// Runs hooks until none can run without the clock moving, and returns them in the
    /// order they ran, each with its unit's index.
    ///
    /// # Panics
    /// If the charm keeps causing hooks: more than 10,000 in one call.
    pub fn settle(&mut self) -> Vec<(usize, HookRun)> {
        let start = self.history.len();
        loop {
            self.tell();
            let mut order: Vec<usize> = (0..self.members.len()).filter(|&i| !self.members[i].stopped).collect();
            order.sort_by_key(|&i| !self.members[i].queue.deposed_pending());
            let mut ran = false;
            for i in order {
                ran |= self.run_next(i);
                if self.history.len() - start > MAX_HOOKS_PER_SETTLE {
                    panic!("charm_sdk::testing::App::settle: more than {MAX_HOOKS_PER_SETTLE} hooks and still going");
                }
            }
            if !ran {
                break;
            }
        }
        self.history[start..].to_vec()
    }

    /// Every hook run so far, in order, each with its unit's index.
    pub fn history(&self) -> &[(usize, HookRun)] {
        &self.history
    }

    /// The hooks unit `i` has run so far, in order.
    pub fn hooks(&self, i: usize) -> Vec<Hook> {
        self.history.iter().filter(|(unit, _)| *unit == i).map(|(_, run)| run.hook).collect()
    }

    /// Leadership hooks the queues dropped unrun because their tenure was over when they
    /// would have started: (unit, hook, term).
    pub fn dropped(&self) -> &[(usize, Hook, Option<u64>)] {
        &self.dropped
    }

    /// Tells every queue the settings version and its unit's role, where they changed,
    /// and the leader's that other units' data changed.
    fn tell(&mut self) {
        let (leader, term, version, unit_data) = match self.members.first() {
            Some(first) => {
                let world = first.unit.world();
                let world = world.borrow();
                let leader_name = world.leader.and_then(|l| self.members.get(l)).map(|m| m.unit.name());
                let others_changed = world.pending.iter().any(|u| Some(u) != leader_name.as_ref());
                (world.leader, world.term, world.version, others_changed)
            }
            None => return,
        };
        for (i, member) in self.members.iter_mut().enumerate().filter(|(_, m)| !m.stopped) {
            if member.told_version != Some(version) {
                member.queue.on_settings(version);
                member.told_version = Some(version);
            }
            let role = (leader == Some(i)).then_some(term);
            if member.told_role != Some(role) {
                match role {
                    Some(term) => member.queue.on_leader(term),
                    None => member.queue.on_minion(),
                }
                member.told_role = Some(role);
            }
            if unit_data && role.is_some() {
                member.queue.on_unit_data();
            }
        }
    }

    /// Runs unit `i`'s next hook if one is due; true if it ran one.
    fn run_next(&mut self, i: usize) -> bool {
        self.tell();
        let held = self.leader().filter(|&leader| leader == i).map(|_| self.term());
        let now = self.now;
        let Some(member) = self.members.get_mut(i) else { return false };
        let next = member.queue.next(now, held);
        for dropped in member.queue.take_dropped() {
            self.dropped.push((i, dropped.hook, dropped.term));
        }
        match next {
            Next::Run(queued) => {
                let version = member.told_version;
                let run = member.unit.run::<C>(queued.hook);
                member.queue.finished(queued, run.result.is_ok(), now, version);
                self.history.push((i, run));
                true
            }
            Next::Stopped => {
                member.stopped = true;
                false
            }
            Next::Idle | Next::WaitUntil(_) => false,
        }
    }
}
