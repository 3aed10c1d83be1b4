//! The model: its state, its steps, its properties.
//!
//! One application, one store, a few agent incarnations. Every step is one atomic event:
//! a tick of real time, an agent sending a request, the store deciding one, the network
//! losing or delivering one, a client using an answer, a crash, an operator's action. The
//! checker interleaves them in every order.
//!
//! Time is kept *relative*: every deadline is stored as the ticks left until it (0: past),
//! every instant in the past as its age, capped where larger ages mean nothing more. So a
//! state does not say what time it is, two states that differ only in the clock are one,
//! and the check covers runs of any length: its bounds are on terms and settings versions
//! ([`MAX_TERM`], [`MAX_VERSION`]), not on time.

use std::fmt;

use stateright::{Model, Property};

/// Real time, in ticks.
pub type Time = u8;

/// How long the store keeps a lease after deciding a claim (the claim duration).
pub const LEASE: Time = 4;
/// The guarantee window on the agent's clock; the agent counts on its claim for this long
/// after it *sent* it.
pub const WINDOW: Time = 2;
/// The longest the window can last in real time, on a clock running slow within the
/// drift bound. It must not exceed [`LEASE`] (measured by the store from a later instant):
/// that is the protocol's whole argument for "at most one leader". The model takes the
/// tightest case the argument allows, so that any rule a tick weaker shows.
pub const WINDOW_MAX: Time = LEASE;
/// How long a `true` answer given to a client holds at most, with
/// [`Safeguard::ReleaseWaitsForAnswers`] (a tick is longer than the product's hold: the
/// model's is the worse case).
pub const ANSWER_HOLD: Time = 1;
/// How late etcd's server may end an expired lease.
pub const ETCD_SLACK: Time = 2;
/// Terms granted at most (states past it are not explored).
pub const MAX_TERM: u8 = 3;
/// Settings versions written at most (states past it are not explored).
pub const MAX_VERSION: u8 = 2;

/// A safeguard of the protocol; taking one away must open the hole it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Safeguard {
    /// The store checks the claimant's incarnation, not only its unit name, in every
    /// renewal, fenced write and revoke (a clone never extends the original's tenure).
    Incarnations,
    /// Every decision checks that the store is the one the agent opened and not behind
    /// what it saw; a new or restored store grants nothing for one claim duration.
    StoreIdentity,
    /// A claim's answer that arrives after its guarantee lapsed counts for nothing (no
    /// leader-elected, no services).
    LateClaimsIgnored,
    /// An `is-leader` answer carries the instant it holds until; the client prints `True`
    /// only before it.
    AnswersCarryDeadline,
    /// A tenure the agent was deposed from is never resumed: the store's extension of it is
    /// given up, and leading again is a new term with leader-elected.
    FreshTermAfterDepose,
    /// A `true` answer given to a client holds for at most [`ANSWER_HOLD`], and a graceful
    /// release (step-down, handover, stop) sends its revoke only once every such answer has
    /// run out.
    ReleaseWaitsForAnswers,
    /// A leader-only service dies with its agent (a parent-death signal): a crash leaves no
    /// orphan running beside the successor's copy.
    ServicesDieWithAgent,
}

impl Safeguard {
    /// Every safeguard.
    pub const ALL: [Safeguard; 7] = [
        Safeguard::Incarnations,
        Safeguard::StoreIdentity,
        Safeguard::LateClaimsIgnored,
        Safeguard::AnswersCarryDeadline,
        Safeguard::FreshTermAfterDepose,
        Safeguard::ReleaseWaitsForAnswers,
        Safeguard::ServicesDieWithAgent,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Which safeguards the modelled protocol has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protocol {
    safeguards: u8,
}

impl Protocol {
    /// The protocol as `charm-host` runs it now: every safeguard.
    pub fn current() -> Self {
        Self { safeguards: Safeguard::ALL.iter().fold(0, |bits, s| bits | s.bit()) }
    }

    /// The protocol before incarnations and store identity (and the fixes that came with
    /// them): no safeguard.
    pub fn before_incarnations() -> Self {
        Self { safeguards: 0 }
    }

    /// This protocol without one safeguard.
    pub fn without(self, safeguard: Safeguard) -> Self {
        Self { safeguards: self.safeguards & !safeguard.bit() }
    }

    /// Whether it has `safeguard`.
    pub fn has(self, safeguard: Safeguard) -> bool {
        self.safeguards & safeguard.bit() != 0
    }
}

/// A lease rule broken on purpose: the checker must catch each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// A fenced write is applied without checking that its term holds the lease.
    UnfencedWrite,
    /// A lease is taken as expired one tick before its expiry.
    ExpiryOneTickEarly,
    /// A new tenure keeps the previous term instead of a higher one.
    TermNotRaised,
    /// A claim extends the lease whoever holds it.
    ExtendForAnyUnit,
    /// A revoke ends the tenure whoever asks.
    RevokeByAnyone,
}

impl Mutation {
    /// Every mutation.
    pub const ALL: [Mutation; 5] = [
        Mutation::UnfencedWrite,
        Mutation::ExpiryOneTickEarly,
        Mutation::TermNotRaised,
        Mutation::ExtendForAnyUnit,
        Mutation::RevokeByAnyone,
    ];
}

/// A third incarnation, besides `a/0` on machine 0 and `a/1` on machine 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Third {
    /// `a/0` started again on machine 2 while the first runs (a cloned VM, a second
    /// state directory): no proof that the first is gone.
    Clone,
    /// `a/0` restarted on machine 0 after it crashed: its lock is free, the same boot, so
    /// it may end its predecessor's tenure at once.
    Restart,
    /// `a/2` joining on machine 2 (after a store fault: it opens the store as it finds it).
    Newcomer,
}

/// What the operator does to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreFault {
    /// The store is wiped (or deleted) and a new one made in its place.
    Wipe,
    /// A copy is taken, and put back later in place of the store (a new file, or a
    /// restored etcd cluster: its identity differs from the running agents' view). (A copy
    /// written over a live SQLite file in place keeps the file's identity and is found only
    /// by its generation going back, once SQLite reads it: not modelled; the README says
    /// so.)
    RollBack,
}

/// The bounds of one check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scenario {
    /// A name for reports.
    pub name: &'static str,
    /// Also `a/1` on machine 1, besides `a/0` on machine 0.
    pub minion: bool,
    /// A third incarnation.
    pub third: Option<Third>,
    /// What the operator does to the store, at most once.
    pub fault: Option<StoreFault>,
    /// Requests and replies may be lost.
    pub lossy: bool,
    /// `a/0` may crash.
    pub crash: bool,
    /// Hook-tool clients ask `is-leader`.
    pub clients: bool,
    /// Leaders write settings.
    pub writes: bool,
    /// Fair schedules: nothing is lost, every request is decided and answered within its
    /// tick, and every agent claims when it may (for liveness).
    pub fair: bool,
    /// The operator pins and unpins the lease and directs handovers.
    pub operator: bool,
    /// etcd's rules: the server ends an expired lease when its sweep comes round (up to
    /// [`ETCD_SLACK`] ticks late), and an etcd leader change gives every lease a whole TTL
    /// again (once per run).
    pub etcd: bool,
    /// In fair schedules, the ticks after a crash by which a unit must lead again
    /// ([`RECOVERY`]; a test sets one less to show the bound is tight).
    pub recovery: Time,
}

impl Scenario {
    /// Two units, lossy network, writes, a step-down now and then.
    pub fn base(name: &'static str) -> Self {
        Self {
            name,
            minion: true,
            third: None,
            fault: None,
            lossy: true,
            crash: false,
            clients: false,
            writes: true,
            fair: false,
            operator: false,
            etcd: false,
            recovery: RECOVERY,
        }
    }

    /// Fair schedules with a crash, for liveness.
    pub fn fair(name: &'static str) -> Self {
        Self {
            name,
            minion: true,
            third: None,
            fault: None,
            lossy: false,
            crash: true,
            clients: false,
            writes: false,
            fair: true,
            operator: false,
            etcd: false,
            recovery: RECOVERY,
        }
    }
}

/// The lease record and settings of the one application, and the store's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Store {
    /// Which store this is: a wipe makes a new one, a copy put back is another file.
    pub id: u8,
    /// The holder: its unit and its incarnation.
    pub holder: Option<(u8, u8)>,
    /// The holder's term.
    pub term: u8,
    /// Ticks until the lease expires on the store's clock (0: expired).
    pub left: Time,
    /// The last term granted.
    pub last_term: u8,
    /// The settings version.
    pub version: u8,
    /// Ticks before a new tenure may be granted (a store made or restored under running
    /// agents waits one claim duration).
    pub wait: Time,
    /// etcd: ticks the expired lease has waited for the server's sweep.
    pub overdue: Time,
    /// Pinned (by the operator, during an upgrade): the lease does not expire.
    pub pinned: bool,
    /// A directed handover: a free lease goes to this unit only, for the ticks left.
    pub reserved: Option<(u8, Time)>,
}

impl Store {
    fn new(id: u8, wait: Time) -> Self {
        Self {
            id,
            holder: None,
            term: 0,
            left: 0,
            last_term: 0,
            version: 0,
            wait,
            overdue: 0,
            pinned: false,
            reserved: None,
        }
    }
}

/// An agent's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Life {
    /// Not started yet (the third incarnation).
    NotStarted,
    /// Running.
    Running,
    /// Killed (SIGKILL): its leader-only services may survive it.
    Crashed,
    /// Gave up for good: its store was replaced.
    Stopped,
}

/// A request on its way to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// A claim (first or renewal), sent `age` ticks ago (capped at [`WINDOW_MAX`]: an
    /// older claim gives no guarantee any more).
    Claim { age: Time },
    /// A fenced settings write under `term`.
    Write { term: u8 },
    /// A revoke of the tenure of `term`.
    Revoke { term: u8 },
}

/// The store's answer on its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The claim sent `age` ticks ago holds the lease at `term`.
    Granted { term: u8, age: Time },
    /// Refused: another holds it, or a new store grants nothing yet.
    Denied,
    /// The write is applied: the settings are at `version`.
    Written { version: u8 },
    /// The write was refused by the fence.
    Fenced,
    /// The revoke is done (or there was nothing to revoke).
    Revoked,
    /// The store is not the one the agent opened.
    Replaced,
}

/// An agent's belief that it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Belief {
    /// Of the tenure of this term.
    pub term: u8,
    /// Ticks of real time it still counts on it.
    pub left: Time,
}

/// One agent incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Agent {
    /// Its unit's number (`a/N`).
    pub unit: u8,
    /// Its machine.
    pub machine: u8,
    /// Its life.
    pub life: Life,
    /// The store it opened.
    pub store_id: u8,
    /// It believes it leads.
    pub belief: Option<Belief>,
    /// The last term it ran leader-elected for (0: none).
    pub elected: u8,
    /// The last term it ran leader-deposed for (0: none).
    pub deposed: u8,
    /// Its leader-only services run.
    pub services: bool,
    /// Its request in flight.
    pub request: Option<Request>,
    /// The reply in flight to it.
    pub reply: Option<Reply>,
    /// An `is-leader` answer on its way to a client: (leader, ticks it holds for).
    pub answer: Option<(bool, Time)>,
    /// The newest settings version it was told is written.
    pub acked: u8,
    /// Ticks until every `true` answer it gave has run out.
    pub answered: Time,
    /// In fair schedules, it claimed this tick already (an agent retries once per renewal
    /// interval, not in a loop).
    pub claimed: bool,
}

impl Agent {
    fn new(unit: u8, machine: u8, life: Life) -> Self {
        Self {
            unit,
            machine,
            life,
            store_id: 0,
            belief: None,
            elected: 0,
            deposed: 0,
            services: false,
            request: None,
            reply: None,
            answer: None,
            acked: 0,
            answered: 0,
            claimed: false,
        }
    }

    /// Whether it believes it leads, now.
    pub fn leads(&self) -> bool {
        self.life == Life::Running && self.belief.is_some_and(|b| b.left > 0)
    }

    fn idle(&self) -> bool {
        self.life == Life::Running && self.request.is_none() && self.reply.is_none()
    }

    /// Runs leader-deposed for its tenure, if it has one: its services stop.
    fn depose(&mut self) {
        if let Some(belief) = self.belief.take() {
            self.deposed = belief.term;
        }
        self.services = false;
    }
}

/// Facts about the whole run, kept for the properties (not part of the protocol).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ghost {
    /// The highest term the current store granted.
    pub granted: u8,
    /// The highest term a fenced write was applied under.
    pub written: u8,
    /// A write was applied under a term older than one already written under.
    pub stale_write: bool,
    /// A store granted a new tenure a term not above one it granted before, or an agent
    /// came to believe a term below one it believed before.
    pub term_went_back: bool,
    /// An agent went on deciding on a store that lacks a write it was told of.
    pub lost_write: bool,
    /// Ticks since `a/0` crashed (capped past the liveness bound).
    pub since_crash: Option<Time>,
    /// The operator's fault happened.
    pub faulted: bool,
    /// etcd changed leaders.
    pub etcd_leader_changed: bool,
}

/// The whole system at one instant (which instant is not part of it: see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// The store.
    pub store: Store,
    /// The operator's copy of it.
    pub copy: Option<Store>,
    /// The agents, by incarnation.
    pub agents: Vec<Agent>,
    /// Agents whose `True` a client acts on at this instant (a bit each).
    pub using: u8,
    /// Facts for the properties.
    pub ghost: Ghost,
}

/// One step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Real time passes one tick; agents whose guarantee ended run leader-deposed.
    Tick,
    /// The agent sends a claim.
    Claim(usize),
    /// The leader sends a fenced write.
    Write(usize),
    /// The leader steps down: leader-deposed, services stopped, then the revoke is sent.
    StepDown(usize),
    /// The store decides the agent's request.
    Apply(usize),
    /// The network loses the agent's request.
    LoseRequest(usize),
    /// The network loses the reply to the agent (or it gave up waiting).
    LoseReply(usize),
    /// The reply reaches the agent; its guarantee window lasts this long in real time.
    Deliver(usize, Time),
    /// A client asks the agent `is-leader`.
    Ask(usize),
    /// The answer reaches the client, which acts on it.
    Use(usize),
    /// The agent is killed.
    Crash(usize),
    /// The third incarnation starts.
    Start(usize),
    /// The operator wipes the store.
    Wipe,
    /// The operator takes a copy of the store.
    TakeCopy,
    /// The operator puts the copy back.
    PutBack,
    /// etcd's server ends the expired lease.
    Sweep,
    /// etcd elects a new leader, which gives every lease a whole TTL.
    EtcdLeaderChange,
    /// The operator pins the lease (an upgrade).
    Pin,
    /// The operator removes the pin.
    Unpin,
    /// The operator directs the leadership to a unit (`elect`): a reservation for it.
    Elect(u8),
}

/// The protocol under `scenario`'s bounds, possibly with a broken lease rule.
#[derive(Clone, Debug)]
pub struct LeadershipModel {
    /// The protocol.
    pub protocol: Protocol,
    /// The bounds.
    pub scenario: Scenario,
    /// A lease rule broken on purpose.
    pub mutation: Option<Mutation>,
}

/// The properties' names, each after the guarantee it checks.
pub const PROPERTIES: [&str; 7] = [
    AT_MOST_ONE_LEADER,
    TERMS_ONLY_GO_UP,
    WRITES_ARE_FENCED,
    DEPOSED_BEFORE_ANOTHER_LEADS,
    NO_ACKNOWLEDGED_WRITE_LOST,
    DEPOSED_TENURE_NEVER_RESUMED,
    LEADS_AGAIN_AFTER_A_CRASH,
];

/// At most one incarnation believes it leads, or has a client acting on its `True`, at any
/// instant of real time.
pub const AT_MOST_ONE_LEADER: &str = "at most one leader at any instant";
/// A store grants each new tenure a term above every earlier one; no agent's term goes back.
pub const TERMS_ONLY_GO_UP: &str = "terms only go up";
/// No fenced write is applied under a term after a later term's write.
pub const WRITES_ARE_FENCED: &str = "writes are fenced";
/// Leader-only services never run on two incarnations at once: a tenure's leader-deposed
/// (and its services' stop) comes before any other unit leads.
pub const DEPOSED_BEFORE_ANOTHER_LEADS: &str = "leader-deposed before another leads";
/// An agent never goes on deciding on a store that lacks a write it was told is written.
pub const NO_ACKNOWLEDGED_WRITE_LOST: &str = "no acknowledged write silently lost";
/// An agent never believes again in a tenure it ran leader-deposed for.
pub const DEPOSED_TENURE_NEVER_RESUMED: &str = "a deposed tenure is never resumed";
/// In fair schedules, after a crash some unit leads again within a lease ([`RECOVERY`]).
pub const LEADS_AGAIN_AFTER_A_CRASH: &str = "a unit leads again after a crash";

/// Ticks after a crash by which, in fair schedules, a unit leads again: the dead holder
/// renewed at most just before it died, its lease runs out a lease later, and a waiting
/// unit claims in that same tick (its renewal interval is shorter than a tick here).
pub const RECOVERY: Time = LEASE;

impl LeadershipModel {
    /// The protocol as it runs, under `scenario`.
    pub fn new(protocol: Protocol, scenario: Scenario) -> Self {
        Self { protocol, scenario, mutation: None }
    }

    /// The same with `mutation`.
    pub fn with_mutation(mut self, mutation: Mutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    fn has(&self, safeguard: Safeguard) -> bool {
        self.protocol.has(safeguard)
    }

    fn mutated(&self, mutation: Mutation) -> bool {
        self.mutation == Some(mutation)
    }

    fn third(&self) -> Option<Agent> {
        self.scenario.third.map(|third| match third {
            Third::Clone => Agent::new(0, 2, Life::NotStarted),
            Third::Restart => Agent::new(0, 0, Life::NotStarted),
            Third::Newcomer => Agent::new(2, 2, Life::NotStarted),
        })
    }

    /// Whether the lease is live, by the store's rules (on etcd: until the server's sweep;
    /// pinned: until unpinned).
    fn live(&self, store: &Store) -> bool {
        let early = Time::from(self.mutated(Mutation::ExpiryOneTickEarly));
        store.holder.is_some() && (store.left > early || self.scenario.etcd || store.pinned)
    }

    /// Whether the lease is held by agent `i`, as the store tells holders apart.
    fn held_by(&self, state: &State, i: usize) -> bool {
        let agent = &state.agents[i];
        match state.store.holder {
            Some((unit, incarnation)) if unit == agent.unit => {
                !self.has(Safeguard::Incarnations) || incarnation == i as u8
            }
            _ => false,
        }
    }

    /// The proof a restarted incarnation has that the holder (its own unit's predecessor on
    /// the same machine, which crashed: its lock is free) is gone.
    fn predecessor_gone(&self, state: &State, i: usize) -> bool {
        let Some((unit, incarnation)) = state.store.holder else { return false };
        let agent = &state.agents[i];
        let holder = &state.agents[usize::from(incarnation)];
        unit == agent.unit
            && usize::from(incarnation) != i
            && holder.machine == agent.machine
            && holder.life == Life::Crashed
    }

    /// The store decides agent `i`'s request, in one atomic step.
    fn apply(&self, state: &mut State, i: usize, request: Request) -> Reply {
        let agent = &state.agents[i];
        if self.has(Safeguard::StoreIdentity) && agent.store_id != state.store.id {
            return Reply::Replaced;
        }
        if state.store.version < agent.acked {
            // It goes on deciding on a store that lacks what it was told is written.
            state.ghost.lost_write = true;
        }
        let live = self.live(&state.store);
        let mine = live && (self.held_by(state, i) || self.mutated(Mutation::ExtendForAnyUnit));
        let holder = Some((state.agents[i].unit, i as u8));
        match request {
            Request::Claim { age } if mine => {
                state.store.left = state.store.left.max(LEASE);
                state.store.holder = holder;
                Reply::Granted { term: state.store.term, age }
            }
            Request::Claim { .. }
                if live && !(self.has(Safeguard::Incarnations) && self.predecessor_gone(state, i)) =>
            {
                Reply::Denied
            }
            Request::Claim { .. } if state.store.wait > 0 => Reply::Denied,
            Request::Claim { .. } if state.store.reserved.is_some_and(|(unit, _)| unit != state.agents[i].unit) => {
                Reply::Denied
            }
            Request::Claim { age } => {
                let store = &mut state.store;
                let term =
                    if self.mutated(Mutation::TermNotRaised) { store.last_term.max(1) } else { store.last_term + 1 };
                if term <= state.ghost.granted {
                    state.ghost.term_went_back = true;
                }
                state.ghost.granted = state.ghost.granted.max(term);
                *store = Store { holder, term, left: LEASE, last_term: term, reserved: None, ..store.clone() };
                Reply::Granted { term, age }
            }
            Request::Write { term } => {
                let fenced = mine && state.store.term == term;
                if !(fenced || self.mutated(Mutation::UnfencedWrite)) {
                    return Reply::Fenced;
                }
                if term < state.ghost.written {
                    state.ghost.stale_write = true;
                }
                state.ghost.written = state.ghost.written.max(term);
                state.store.version += 1;
                Reply::Written { version: state.store.version }
            }
            Request::Revoke { term } => {
                if (mine && state.store.term == term) || self.mutated(Mutation::RevokeByAnyone) {
                    state.store.holder = None;
                }
                Reply::Revoked
            }
        }
    }

    /// Agent `i` hears `reply`, its window lasting `window` ticks of real time.
    fn deliver(&self, state: &mut State, i: usize, reply: Reply, window: Time) {
        let agent = &mut state.agents[i];
        match reply {
            Reply::Granted { term, age } => {
                // Counted from before the claim was sent.
                let left = window.saturating_sub(age);
                if left == 0 && self.has(Safeguard::LateClaimsIgnored) {
                    return;
                }
                if term == agent.deposed && self.has(Safeguard::FreshTermAfterDepose) {
                    // The store extended a tenure this agent was deposed from: give it up.
                    agent.request = Some(Request::Revoke { term });
                    return;
                }
                if agent.belief.is_some_and(|b| b.term != term) {
                    agent.depose();
                }
                if term < agent.elected.max(agent.deposed) {
                    state.ghost.term_went_back = true;
                }
                let left = agent.belief.map_or(left, |b| b.left.max(left));
                agent.belief = Some(Belief { term, left });
                if agent.elected != term && agent.deposed != term {
                    // A new tenure: leader-elected runs, the services start.
                    agent.elected = term;
                    agent.services = true;
                }
            }
            Reply::Denied => agent.depose(),
            Reply::Fenced | Reply::Revoked => {}
            Reply::Written { version } => agent.acked = agent.acked.max(version),
            Reply::Replaced => {
                agent.depose();
                agent.life = Life::Stopped;
            }
        }
    }

    /// In fair schedules, the steps that must happen before time may pass.
    fn urgent(&self, state: &State, actions: &mut Vec<Action>) {
        for (i, agent) in state.agents.iter().enumerate() {
            if agent.life == Life::Running && agent.reply.is_some() {
                actions.push(Action::Deliver(i, WINDOW));
            } else if agent.request.is_some() && agent.life != Life::NotStarted {
                actions.push(Action::Apply(i));
            } else if agent.idle() && !agent.claimed && agent.belief.is_none_or(|b| b.left <= 1) {
                actions.push(Action::Claim(i));
            }
        }
        if self.scenario.etcd && state.store.holder.is_some() && state.store.left == 0 && !state.store.pinned {
            actions.push(Action::Sweep);
        }
    }

    /// Real time passes one tick.
    fn tick(&self, state: &mut State) {
        state.using = 0;
        let store = &mut state.store;
        if self.scenario.etcd && store.holder.is_some() && store.left == 0 && !store.pinned {
            store.overdue += 1;
        }
        store.reserved = store.reserved.and_then(|(unit, left)| (left > 1).then(|| (unit, left - 1)));
        store.left = store.left.saturating_sub(1);
        store.wait = store.wait.saturating_sub(1);
        if let Some(copy) = state.copy.as_mut() {
            // A copy's expiries are readings of the same clock.
            copy.left = copy.left.saturating_sub(1);
            copy.wait = copy.wait.saturating_sub(1);
        }
        state.ghost.since_crash = state.ghost.since_crash.map(|t| (t + 1).min(self.scenario.recovery));
        for agent in &mut state.agents {
            if let Some(Request::Claim { age }) = agent.request.as_mut() {
                *age = (*age + 1).min(WINDOW_MAX);
            }
            if let Some(Reply::Granted { age, .. }) = agent.reply.as_mut() {
                *age = (*age + 1).min(WINDOW_MAX);
            }
            if let Some((_, left)) = agent.answer.as_mut() {
                *left = left.saturating_sub(1);
            }
            agent.answered = agent.answered.saturating_sub(1);
            agent.claimed = false;
            if let Some(belief) = agent.belief.as_mut() {
                belief.left = belief.left.saturating_sub(1);
            }
            // At the end of its guarantee, an agent runs leader-deposed.
            if agent.life == Life::Running && agent.belief.is_some_and(|b| b.left == 0) {
                agent.depose();
            }
        }
    }
}

impl Model for LeadershipModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let minion = Agent::new(1, 1, if self.scenario.minion { Life::Running } else { Life::NotStarted });
        let mut agents = vec![Agent::new(0, 0, Life::Running), minion];
        agents.extend(self.third());
        vec![State { store: Store::new(0, 0), copy: None, agents, using: 0, ghost: Ghost::default() }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let scenario = &self.scenario;
        if scenario.fair {
            self.urgent(state, actions);
            if !actions.is_empty() {
                return;
            }
        }
        let sweep_due = scenario.etcd && state.store.holder.is_some() && state.store.left == 0 && !state.store.pinned;
        if sweep_due {
            actions.push(Action::Sweep);
        }
        // The sweep comes round within its slack: time does not pass beyond it.
        if !(sweep_due && state.store.overdue >= ETCD_SLACK) {
            actions.push(Action::Tick);
        }
        if scenario.etcd && !state.ghost.etcd_leader_changed {
            actions.push(Action::EtcdLeaderChange);
        }
        if scenario.operator {
            actions.push(if state.store.pinned { Action::Unpin } else { Action::Pin });
            if state.store.reserved.is_none() {
                actions.extend(state.agents.iter().filter(|a| a.life == Life::Running).map(|a| Action::Elect(a.unit)));
            }
        }
        for (i, agent) in state.agents.iter().enumerate() {
            if agent.idle() && !scenario.fair {
                actions.push(Action::Claim(i));
                if agent.leads() {
                    if scenario.writes {
                        actions.push(Action::Write(i));
                    }
                    actions.push(Action::StepDown(i));
                }
            }
            // A release holds its revoke back until its answers have run out.
            let held_back = matches!(agent.request, Some(Request::Revoke { .. }))
                && agent.life == Life::Running
                && agent.answered > 0
                && self.has(Safeguard::ReleaseWaitsForAnswers);
            if agent.request.is_some() && agent.life != Life::NotStarted && !scenario.fair && !held_back {
                actions.push(Action::Apply(i));
                if scenario.lossy {
                    actions.push(Action::LoseRequest(i));
                }
            }
            if agent.reply.is_some() && !scenario.fair {
                if agent.life == Life::Running {
                    // The longest window drift allows: a belief that lasts longer is the
                    // worst case for every safety property.
                    actions.push(Action::Deliver(i, WINDOW_MAX));
                }
                if scenario.lossy {
                    actions.push(Action::LoseReply(i));
                }
            }
            if scenario.clients && agent.life == Life::Running && agent.answer.is_none() {
                actions.push(Action::Ask(i));
            }
            if agent.answer.is_some() {
                actions.push(Action::Use(i));
            }
            if i == 0 && scenario.crash && agent.life == Life::Running && state.ghost.since_crash.is_none() {
                actions.push(Action::Crash(i));
            }
            if agent.life == Life::NotStarted && i == 2 {
                let may_start = match scenario.third {
                    Some(Third::Restart) => state.agents[0].life == Life::Crashed,
                    Some(Third::Newcomer) => scenario.fault.is_none() || state.ghost.faulted,
                    _ => true,
                };
                if may_start {
                    actions.push(Action::Start(i));
                }
            }
        }
        match scenario.fault {
            Some(StoreFault::Wipe) if !state.ghost.faulted => actions.push(Action::Wipe),
            Some(StoreFault::RollBack) if !state.ghost.faulted => {
                actions.push(if state.copy.is_none() { Action::TakeCopy } else { Action::PutBack });
            }
            _ => {}
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Tick => self.tick(&mut state),
            Action::Claim(i) => {
                state.agents[i].request = Some(Request::Claim { age: 0 });
                state.agents[i].claimed = self.scenario.fair;
            }
            Action::Write(i) => {
                let term = state.agents[i].belief?.term;
                state.agents[i].request = Some(Request::Write { term });
            }
            Action::StepDown(i) => {
                let agent = &mut state.agents[i];
                let term = agent.belief?.term;
                agent.depose();
                agent.request = Some(Request::Revoke { term });
            }
            Action::Apply(i) => {
                let request = state.agents[i].request.take()?;
                let reply = self.apply(&mut state, i, request);
                if state.agents[i].life == Life::Running {
                    state.agents[i].reply = Some(reply);
                }
            }
            Action::LoseRequest(i) => state.agents[i].request = None,
            Action::LoseReply(i) => state.agents[i].reply = None,
            Action::Deliver(i, window) => {
                let reply = state.agents[i].reply.take()?;
                self.deliver(&mut state, i, reply, window);
            }
            Action::Ask(i) => {
                let agent = &mut state.agents[i];
                let mut left = agent.belief.map_or(0, |b| b.left);
                if self.has(Safeguard::ReleaseWaitsForAnswers) {
                    left = left.min(ANSWER_HOLD);
                    agent.answered = agent.answered.max(left);
                }
                agent.answer = Some((agent.leads(), left));
            }
            Action::Use(i) => {
                let (leader, left) = state.agents[i].answer.take()?;
                if leader && (left > 0 || !self.has(Safeguard::AnswersCarryDeadline)) {
                    state.using |= 1 << i;
                }
            }
            Action::Crash(i) => {
                let agent = &mut state.agents[i];
                agent.life = Life::Crashed;
                // Nothing of it believes anything any more; its services die with it, or
                // run on, orphaned.
                agent.belief = None;
                agent.services &= !self.has(Safeguard::ServicesDieWithAgent);
                agent.reply = None;
                agent.answer = None;
                state.ghost.since_crash = Some(0);
            }
            Action::Start(i) => {
                state.agents[i].life = Life::Running;
                state.agents[i].store_id = state.store.id;
            }
            Action::Wipe => {
                let wait = if self.has(Safeguard::StoreIdentity) { LEASE } else { 0 };
                state.store = Store::new(state.store.id + 1, wait);
                // Terms start again on a new store (the README says so).
                state.ghost = Ghost { granted: 0, written: 0, faulted: true, ..state.ghost };
            }
            Action::TakeCopy => state.copy = Some(state.store.clone()),
            Action::PutBack => {
                let mut copy = state.copy.take()?;
                // Another file (or a restored cluster): another identity; a copy adopted,
                // or a restored cluster's prefix, grants nothing for a claim duration.
                copy.id = state.store.id + 1;
                if self.has(Safeguard::StoreIdentity) {
                    copy.wait = LEASE;
                }
                state.ghost = Ghost { granted: copy.last_term, written: 0, faulted: true, ..state.ghost };
                state.store = copy;
            }
            Action::Sweep => {
                state.store.holder = None;
                state.store.overdue = 0;
            }
            Action::Pin => {
                let store = &mut state.store;
                // etcd: a pin cannot revive a lease the server ended (or that ran out).
                if !(self.scenario.etcd && store.left == 0) {
                    store.pinned = true;
                }
            }
            Action::Unpin => {
                let store = &mut state.store;
                store.pinned = false;
                if self.scenario.etcd && store.holder.is_some() {
                    // etcd: the last unpin gives the lease a whole TTL.
                    store.left = LEASE;
                    store.overdue = 0;
                }
            }
            Action::Elect(unit) => state.store.reserved = Some((unit, LEASE)),
            Action::EtcdLeaderChange => {
                if state.store.holder.is_some() {
                    state.store.left = LEASE;
                    state.store.overdue = 0;
                }
                state.ghost.etcd_leader_changed = true;
            }
        }
        Some(state)
    }

    fn within_boundary(&self, state: &State) -> bool {
        state.store.last_term <= MAX_TERM && state.store.version <= MAX_VERSION
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(AT_MOST_ONE_LEADER, |_, s: &State| {
                s.agents.iter().enumerate().filter(|(i, a)| a.leads() || s.using & (1 << i) != 0).count() <= 1
            }),
            Property::always(TERMS_ONLY_GO_UP, |_, s: &State| !s.ghost.term_went_back),
            Property::always(WRITES_ARE_FENCED, |_, s: &State| !s.ghost.stale_write),
            Property::always(DEPOSED_BEFORE_ANOTHER_LEADS, |_, s: &State| {
                s.agents.iter().filter(|a| a.services).count() <= 1
            }),
            Property::always(NO_ACKNOWLEDGED_WRITE_LOST, |_, s: &State| !s.ghost.lost_write),
            Property::always(DEPOSED_TENURE_NEVER_RESUMED, |_, s: &State| {
                s.agents.iter().all(|a| a.belief.is_none_or(|b| b.term != a.deposed))
            }),
            Property::always(LEADS_AGAIN_AFTER_A_CRASH, |m: &LeadershipModel, s: &State| {
                let overdue = m.scenario.fair && !s.ghost.faulted && s.ghost.since_crash == Some(m.scenario.recovery);
                if !overdue || s.agents.iter().any(Agent::leads) {
                    return true;
                }
                // Judged once the tick's steps are done (a grant is heard within its tick).
                let mut pending = Vec::new();
                m.urgent(s, &mut pending);
                !pending.is_empty()
            }),
        ]
    }

    fn format_action(&self, action: &Action) -> String {
        action.to_string()
    }
}

/// One step in words, for timelines.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = match *self {
            Action::Tick => "time passes one tick".into(),
            Action::Claim(i) => format!("{} sends a claim", who(i)),
            Action::Write(i) => format!("{} sends a fenced leader-set", who(i)),
            Action::StepDown(i) => format!("{} steps down: leader-deposed, services stopped, revoke sent", who(i)),
            Action::Apply(i) => format!("the store decides {}'s request", who(i)),
            Action::LoseRequest(i) => format!("the network loses {}'s request", who(i)),
            Action::LoseReply(i) => format!("the reply to {} is lost (or it gave up waiting)", who(i)),
            Action::Deliver(i, window) => {
                format!("{} hears the store's reply (its window lasts {window} ticks of real time)", who(i))
            }
            Action::Ask(i) => format!("a client asks {} is-leader", who(i)),
            Action::Use(i) => format!("{}'s answer reaches the client, which acts on it", who(i)),
            Action::Crash(i) => format!("{} is killed (SIGKILL)", who(i)),
            Action::Start(i) => format!("{} starts", who(i)),
            Action::Wipe => "the operator wipes the store; a new one is made".into(),
            Action::TakeCopy => "the operator takes a copy of the store".into(),
            Action::PutBack => "the operator puts the copy back".into(),
            Action::Sweep => "etcd's server ends the expired lease".into(),
            Action::EtcdLeaderChange => "etcd elects a new leader: every lease gets a whole TTL again".into(),
            Action::Pin => "the operator pins the lease".into(),
            Action::Unpin => "the operator unpins the lease".into(),
            Action::Elect(unit) => format!("the operator elects a/{unit}: the lease is reserved for it"),
        };
        f.write_str(&words)
    }
}

/// Incarnation `i`'s name in a timeline.
fn who(i: usize) -> String {
    format!("#{i}")
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(third) = self.third {
            write!(f, "; third incarnation: {third:?}")?;
        }
        if let Some(fault) = self.fault {
            write!(f, "; store fault: {fault:?}")?;
        }
        for (on, what) in [
            (self.lossy, "lossy"),
            (self.crash, "crash"),
            (self.clients, "clients"),
            (self.writes, "writes"),
            (self.fair, "fair"),
        ] {
            if on {
                write!(f, "; {what}")?;
            }
        }
        Ok(())
    }
}
