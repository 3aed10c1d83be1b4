//! `charm-host` runs WebAssembly charms and gives their units Juju-style application
//! leadership: at most one leader per application at any time, on one machine or many;
//! `is-leader` true only with the guarantee window ahead; leader settings written whole,
//! fenced by the writer's term; each unit's own data, gathered by the leader; hooks
//! (`install`, `leader-elected`, `leader-settings-changed`, `leader-deposed`,
//! `unit-data-changed`, `stop`) run at least once after the change they announce, each in
//! a fresh sandbox.
//!
//! # Embedding it
//!
//! A [`Host`] loads charms and starts applications (all units in this process) or single
//! unit agents (one per process, sharing a store with agents elsewhere):
//!
//! ```no_run
//! use std::time::Duration;
//! use charm_host::{AppName, EventKind, Host};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let host = Host::builder().guarantee_window(Duration::from_secs(5)).build().await?;
//!     let mut events = host.subscribe();
//!     let charm = host.load_charm("my-charm.wasm")?; // or a charm crate directory
//!     let app = host.start_application(AppName::new("db")?, &charm, 3).await?;
//!     println!("{} leads", app.wait_for_leader().await?);
//!     while let Some(event) = events.next().await {
//!         if let EventKind::Hook { hook, .. } = &event.kind {
//!             println!("{} {}: {hook} (term {:?})", event.at_rfc3339(), event.unit, event.term);
//!         }
//!         # break;
//!     }
//!     app.stop().await; // minions first, then the leader: deposed, stop, revoke
//!     Ok(())
//! }
//! ```
//!
//! `cargo run -p charm-host --example embedded` runs a complete one. Requirements:
//! - A multi-threaded tokio runtime (`#[tokio::main]` or `Builder::new_multi_thread`);
//!   [`HostBuilder::build`] says so with [`HostError::CurrentThreadRuntime`] otherwise.
//! - Stores: in memory (default), [SQLite](HostBuilder::sqlite_store) for the agents of
//!   one machine, [etcd](HostBuilder::etcd_store) across machines, or
//!   [your own](leadership::LeadershipStore).
//! - The library alone: `charm-host = { default-features = false }` leaves out the
//!   command line (`cli`); the benchmark is a separate binary (`bench`).
//! - Observing: [`ApplicationHandle::report`] is what `charm-host status` shows
//!   ([`report`]); store failures say their kind ([`leadership::StoreFailure`]: unreachable,
//!   busy, corrupt) and keep their cause.
//!
//! # How it is built
//!
//! Data flows one way:
//!
//! ```text
//! LeadershipStore ──► claim loop ──► hook driver ──► HookRuntime
//!  (leases, terms,     (owns the      (hook order:    (fresh sandbox
//!   fenced settings)    tracker)       install, ...)    per hook)
//!        ▲                                                 │
//!        └── capabilities: is-leader, leader-get, leader-set ◄┘
//!            unit-set, unit-get (the unit's read-only LeadershipHandle,
//!            and its UnitDataHandle)
//! ```
//!
//! One factory builds every unit (`agent::spawn`: spec, prepared agent, running agent),
//! for [`Host`], applications, `TestApp`, the bench and the tests. Modules import each
//! other one way, without a circle (checked by `cargo test -p charm-host --test imports`,
//! which prints the floors with `-- --nocapture`), from the ground up:
//!
//! ```text
//! vocabulary      names, hooks, settings, timing, events, state_dir
//! engine          leadership (stores, rules, clocks), handover
//! one unit        reporter → services, tenure_record → tracker → unit_data → unit
//! running hooks   runtime::bindings (the WIT contract) ← capabilities ← runtime
//! the agent       agent (spawn, role = claim loop, driver, records), metrics, report
//! hosting         application, hook_tools, testing → embedding → cli
//! ```
//!
//! - [`leadership`]: the store boundary and its in-memory, SQLite and etcd stores.
//! - [`handover`]: directed handover (reserve, then the leader steps down).
//! - [`report`]: the status of an application as operators see it (one schema for `status`
//!   and `run`).
//! - [`hook_tools`]: `is-leader`, `leader-get`, `leader-set` for scripts, over a socket
//!   (protocol, server, client).
//! - [`reporter`]: where a unit's status and events go.
//! - [`events`], [`hooks`], [`names`], [`settings`], [`services`], [`timing`]: the shared
//!   vocabulary and the rules every path checks.
//! - [`charm_build`]: builds a charm crate for `wasm32-wasip2`; [`state_dir`]: the layout of
//!   a state directory.
//! - `testing` (feature `testing`): `TestApp`, a charm's real component on N agents in
//!   virtual time, for charm authors' tests (see `docs/testing.md`).
//! - Internal (public with the `internals` feature, for this repository's tests): `agent`
//!   (the unit factory, role source, hook driver, hook queue, records), `application`,
//!   `tracker`, `unit`, `unit_data`, `tenure_record`, `runtime`, and the lease simulator.

#![warn(missing_docs)]

/// Declares a module that is internal to the crate, and public with the `internals`
/// feature (for this repository's tests and bench).
macro_rules! internal_mod {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$meta])*
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code, unreachable_pub)]
        pub(crate) mod $name;
    };
}

internal_mod!(agent);
internal_mod!(application);
mod capabilities;
pub mod charm_build;
#[cfg(feature = "cli")]
mod cli;
/// Command-line arguments that follow Juju's rules (feature `cli`).
#[cfg(feature = "cli")]
pub use cli::args as cli_args;
mod embedding;
pub mod events;
pub mod handover;
pub mod hook_tools;
pub mod hooks;
pub mod leadership;
pub mod metrics;
pub mod names;
pub mod report;
pub mod reporter;
internal_mod!(runtime);
pub mod services;
pub mod settings;
pub mod state_dir;
internal_mod!(tenure_record);
#[cfg(feature = "testing")]
pub mod testing;
pub mod timing;
internal_mod!(tracker);
internal_mod!(unit);
internal_mod!(unit_data);

pub use agent::{AgentCommand, AgentEnded, AgentError, SpawnError};
pub use application::ApplicationError;
pub use embedding::{
    AgentHandle, ApplicationHandle, DEFAULT_EVENT_CAPACITY, EventStream, Host, HostBuilder, HostError,
};
pub use events::{Event, EventKind, EventSink, LeadershipChange, LogLevel, WorkloadStatus};
pub use hook_tools::UnitTools;
pub use hooks::HookKind;
pub use names::{AppName, UnitName};
pub use runtime::{Charm, LoadError, RuntimeConfig, RuntimeError};
pub use services::ServiceStatus;
pub use timing::DEFAULT_GUARANTEE_WINDOW;
pub use tracker::LeadershipUnknown;
pub use unit::UnitStatus;

/// Runs the `charm-host` command with the process's arguments (feature `cli`).
#[cfg(feature = "cli")]
pub fn run_cli() -> std::process::ExitCode {
    cli::run()
}
