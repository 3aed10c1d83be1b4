//! The leadership protocol of `charm-host` as a model, checked exhaustively.
//!
//! The host's tests and its seeded simulator try the faults somebody listed. This crate
//! states the protocol as it runs across processes (agents, the store, hook-tool clients,
//! the operator) as a [`stateright`] model, and its checker visits *every* interleaving of
//! their steps within small bounds, so it finds the faults nobody listed. It is its own
//! crate: the product does not depend on it, and it depends on nothing of the product.
//!
//! Why stateright: it is the Rust model checker the field uses (exhaustive breadth-first
//! search with counterexample paths, `always`/`eventually` properties), and a model in
//! Rust reads like the code it describes. TLA+ would need its own toolchain in CI.
//!
//! # What is modelled ([`model`])
//! - **Agents**, each an *incarnation* of a unit (two may share a unit name: a clone, or a
//!   restart), on a machine. An agent claims (a first claim or a renewal), writes leader
//!   settings fenced by its term, steps down (leader-deposed, services stopped, then the
//!   revoke), and runs leader-elected and starts its leader-only services when a new tenure
//!   is granted. Its guarantee is measured from *before* it sent the claim, for a window
//!   whose length in real time is anything within the clock-drift bound; at its end it runs
//!   leader-deposed and stops its services. It may crash at any point (its leader-only
//!   services die with it, by a parent-death signal), and a third incarnation may be
//!   started: a clone elsewhere, or the crashed unit restarted on its machine.
//! - **The store**, one application's lease record: holder (unit and incarnation), term,
//!   expiry on the store's clock, the last term granted, the settings version, the store's
//!   identity. Each request is decided in one atomic step, the rules of
//!   `host/src/leadership/rules.rs`; on etcd's rules ([`Scenario::etcd`]) the server ends
//!   an expired lease when its sweep comes round, and a leader change of etcd gives every
//!   lease a whole TTL again.
//! - **The network**: a request may be lost, delayed (time passes while it is in flight),
//!   or applied with its reply lost; a reply may arrive after its guarantee has lapsed.
//! - **Hook-tool clients** asking `is-leader`: the answer is computed at one instant and
//!   used at a later one (a process paused between the two).
//! - **The operator**: the lease pinned and unpinned, the leadership directed to a unit
//!   (`elect`: a reservation), the store wiped, or a copy taken and put back later (rolled
//!   back).
//!
//! # Properties ([`model::PROPERTIES`])
//! Each is named after the guarantee it checks (`host/src/leadership/mod.rs`,
//! `host/src/tracker.rs`, the README's safety section): at most one leader at any instant
//! (beliefs *and* answers in use); terms only go up; writes are fenced; leader-deposed
//! before another leads (leader-only services never on two units); no acknowledged write
//! silently lost; a deposed tenure is never resumed; and, in the fair schedules
//! ([`Scenario::fair`]), a unit leads again within a lease after a crash.
//!
//! # Bounds
//! Time is counted in ticks and kept relative (every deadline as the ticks left to it), so
//! the check covers runs of any length. A lease lasts 4 ticks; the guarantee window 2 on
//! the agent's clock and, with drift, up to the whole lease in real time: the tightest
//! margin the protocol's argument allows, so a rule one tick weaker shows. Terms up to
//! [`model::MAX_TERM`], settings versions up to [`model::MAX_VERSION`], three incarnations,
//! one store fault. Why that suffices: every rule compares a deadline with now or a term
//! with a term, so what matters is the order of events against the few deadlines alive at
//! once (a lease and a window), and three terms cover a tenure, its successor and the one
//! after (the fencing and resume cases need two tenures of one unit around another's);
//! the protocol treats units symmetrically, so three incarnations (two of one unit, one of
//! another) reach every pairing the rules distinguish. See [`Scenario`].
//!
//! # Known holes, as models ([`Protocol`])
//! The protocol before incarnations and store identity is [`Protocol::before_incarnations`];
//! each safeguard can also be taken away alone ([`Protocol::without`]). The checker must find
//! a counterexample for each hole that safeguard closes, and for each of the seeded
//! lease-rule [`Mutation`]s: a check that cannot fail would not.

pub mod model;
pub mod timeline;

pub use model::{Action, LeadershipModel, Mutation, Protocol, Safeguard, Scenario, State, StoreFault, Third};
