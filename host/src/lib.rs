//! `charm-host`: runs WebAssembly charms and gives their units Juju-style application
//! leadership.
//!
//! Data flows one way:
//!
//! ```text
//! LeadershipStore ──► LeadershipTracker ──► unit task (hook order) ──► HookRuntime
//!  (leases, terms,      (claims, renews,      (install, leader-elected,   (fresh sandbox
//!   fenced settings)     is-leader)            leader-settings-changed)    per hook)
//!        ▲                                                                     │
//!        └───────────── capabilities: is-leader, leader-get, leader-set ◄──────┘
//! ```
//!
//! - [`leadership`]: the store boundary and its in-memory, SQLite and etcd stores.
//! - [`tracker`]: per-unit claims and the `is-leader` guarantee; [`tenure_record`]: what a
//!   unit believed, and when.
//! - [`application`]: runs the units of one application and decides when hooks run.
//! - [`runtime`]: loads charms and runs each hook in its own store and instance.
//! - [`settings`], [`names`], [`hooks`], [`events`], [`unit`]: the shared vocabulary.
//! - [`charm_build`]: builds a charm crate for `wasm32-wasip2`.

mod embedding;
pub mod handover;
pub mod agent;
pub mod application;
mod capabilities;
pub mod charm_build;
pub mod events;
pub mod hook_tools;
pub mod hooks;
pub mod leadership;
pub mod names;
pub mod runtime;
pub mod services;
pub mod settings;
pub mod state_dir;
pub mod tenure_record;
pub mod timing;
pub mod tracker;
pub mod unit;

pub use embedding::{AgentHandle, ApplicationHandle, DEFAULT_EVENT_CAPACITY, EventStream, Host, HostBuilder, HostError};
pub use events::{Event, EventSink};
pub use hook_tools::UnitTools;
pub use hooks::HookKind;
pub use names::{AppName, UnitName};
pub use runtime::Charm;
