//! # charm-sdk: write leadership-aware charms in Rust
//!
//! A charm is a Rust `cdylib` crate built with `cargo build --target wasm32-wasip2`. It
//! depends on this crate alone, implements [`Charm`] (every hook defaults to doing
//! nothing) and exports it with [`export_charm!`]. The host runs each hook in a fresh
//! sandbox whose only filesystem is the unit's data directory, mounted at `/`.
//!
//! A complete charm:
//!
//! ```no_run
//! use charm_sdk::{Charm, Result, WorkloadStatus};
//!
//! struct Hello;
//!
//! impl Charm for Hello {
//!     fn leader_elected() -> Result<()> {
//!         if charm_sdk::leader_get("greeting")?.is_none() {
//!             charm_sdk::leader_set([("greeting", "hello from the leader")])?;
//!         }
//!         charm_sdk::status_set(WorkloadStatus::Active, "leading");
//!         Ok(())
//!     }
//!
//!     fn leader_settings_changed() -> Result<()> {
//!         let greeting = charm_sdk::leader_get("greeting")?.unwrap_or_default();
//!         charm_sdk::status_set(WorkloadStatus::Active, &greeting);
//!         Ok(())
//!     }
//! }
//!
//! charm_sdk::export_charm!(Hello);
//! ```
//!
//! What the host promises, in short: [`is_leader`] is true only while this unit is leader
//! and guaranteed to stay so for the guarantee window (30 s by default), evaluated at each
//! call; [`leader_get`] reads one snapshot for the whole hook, plus the leader's own
//! writes; [`leader_set`] writes a whole group atomically, leader only, and is durable
//! before it returns. Minions then get `leader-settings-changed`. [`leader_term`] is the
//! term of the unit's tenure while [`is_leader`] is true: a fencing token for writes to
//! systems outside the host.
//!
//! The other way, minions to the leader: every unit writes its own data with [`unit_set`];
//! the leader reads every unit's with [`unit_get`] and [`units`], and hears of changes in
//! [`Charm::unit_data_changed`], one hook for a burst, naming the units that changed.
//!
//! [`services`] starts and stops the long-running services the operator configured for the
//! unit, by name; a leader-only service runs only on the leader, and the host stops it
//! before the unit's leadership guarantee can lapse.
//!
//! [`data_dir`] is the unit's data directory, which persists between hooks.
//!
//! A charm tests itself with a plain `cargo test`, natively and without a host:
//! [`testing`] runs its hooks on test units and applications that follow the host's own
//! rules (see `docs/testing.md`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

extern crate self as charm_sdk;

pub use serde;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Bindings generated from the `juju:charm` WIT contract. Prefer the functions at the
/// crate root; these are here for what they do not cover.
pub mod bindings {
    wit_bindgen::generate!({
        world: "charm",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_charm_world",
        default_bindings_module: "charm_sdk::bindings",
        runtime_path: "charm_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

use bindings::juju::charm::{context, leadership};

/// The result of a hook or of an SDK call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a hook. A hook that returns `Err` fails with the error's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The call needs leadership and this unit is not the leader.
    NotLeader,
    /// Leadership could not be verified; act as a minion.
    Unknown(String),
    /// The host rejected the arguments (e.g. a key with `=`); nothing was written.
    Invalid(String),
    /// This copy of the unit may no longer write its data ([`unit_set`]): a later start of
    /// the unit took it over (the unit runs twice, or this copy is stale), or an operator
    /// removed the unit. Nothing was written.
    Stale(String),
    /// Settings the leader should provide are missing or not valid yet. The usual answer is
    /// to set a `waiting` status and succeed: `leader-settings-changed` follows once the
    /// leader writes them. See [`Error::is_waiting_for_leader`].
    WaitingForLeader(String),
    /// A typed setting could not be encoded or decoded.
    Encoding(String),
    /// A service call failed: unknown name, or the process could not be started.
    Service(String),
    /// The charm's own failure.
    Failed(String),
}

impl Error {
    /// A [`Error::WaitingForLeader`] with the given reason.
    pub fn waiting_for_leader(reason: impl Into<String>) -> Self {
        Error::WaitingForLeader(reason.into())
    }

    /// True for [`Error::WaitingForLeader`].
    pub fn is_waiting_for_leader(&self) -> bool {
        matches!(self, Error::WaitingForLeader(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotLeader => f.write_str("this unit is not the leader"),
            Error::Unknown(reason) => write!(f, "leadership cannot be verified: {reason}"),
            Error::Invalid(reason) => write!(f, "invalid arguments: {reason}"),
            Error::Stale(reason) => write!(f, "this unit may no longer write its data: {reason}"),
            Error::WaitingForLeader(reason) => write!(f, "waiting for the leader: {reason}"),
            Error::Encoding(reason) => write!(f, "cannot encode or decode a setting: {reason}"),
            Error::Service(reason) => write!(f, "service: {reason}"),
            Error::Failed(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for Error {}

impl From<leadership::LeadershipError> for Error {
    fn from(err: leadership::LeadershipError) -> Self {
        match err {
            leadership::LeadershipError::NotLeader => Error::NotLeader,
            leadership::LeadershipError::Unknown(reason) => Error::Unknown(reason),
            leadership::LeadershipError::Invalid(reason) => Error::Invalid(reason),
            leadership::LeadershipError::Stale(reason) => Error::Stale(reason),
        }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Failed(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Failed(message.to_owned())
    }
}

/// The hooks of a charm. Each runs in its own fresh instance; keep state in leader
/// settings or in files under `/`, not in statics.
pub trait Charm {
    /// Runs once, first, before any other hook of the unit.
    fn install() -> Result<()> {
        Ok(())
    }
    /// Runs at least once each time this unit becomes leader.
    fn leader_elected() -> Result<()> {
        Ok(())
    }
    /// Runs when this unit becomes a minion, and after the leader changes the settings.
    fn leader_settings_changed() -> Result<()> {
        Ok(())
    }
    /// Runs on a unit that was leader as soon as it can no longer guarantee leadership.
    fn leader_deposed() -> Result<()> {
        Ok(())
    }
    /// Runs on the leader only, at least once after other units' data or membership
    /// change, a burst making one hook: `changed` names every other unit whose data
    /// changed, or that joined or left, since the leader last ran this hook or
    /// `leader-elected` (which sees everything). Read them with [`unit_get`], and who is
    /// still a member with [`units`].
    fn unit_data_changed(changed: Vec<String>) -> Result<()> {
        let _ = changed;
        Ok(())
    }
    /// Runs on every unit, leader or not, once per period (5 minutes unless the operator
    /// sets another, `--update-status-interval`): check the workload and report it with
    /// [`status_set`]. It runs after any other queued hook; periods that pass meanwhile make
    /// one hook, and a failed one is not retried before the next period.
    fn update_status() -> Result<()> {
        Ok(())
    }
    /// Runs when the unit is being removed.
    fn stop() -> Result<()> {
        Ok(())
    }
}

/// Exports a type implementing [`Charm`] as the component's hooks. Use it once per crate.
#[macro_export]
macro_rules! export_charm {
    ($charm:ty) => {
        const _: () = {
            struct CharmSdkExport;
            impl $crate::bindings::exports::juju::charm::hooks::Guest for CharmSdkExport {
                fn install() -> ::core::result::Result<(), $crate::__String> {
                    $crate::__finish(<$charm as $crate::Charm>::install())
                }
                fn leader_elected() -> ::core::result::Result<(), $crate::__String> {
                    $crate::__finish(<$charm as $crate::Charm>::leader_elected())
                }
                fn leader_settings_changed() -> ::core::result::Result<(), $crate::__String> {
                    $crate::__finish(<$charm as $crate::Charm>::leader_settings_changed())
                }
                fn leader_deposed() -> ::core::result::Result<(), $crate::__String> {
                    $crate::__finish(<$charm as $crate::Charm>::leader_deposed())
                }
                fn unit_data_changed(
                    changed: $crate::__Vec<$crate::__String>,
                ) -> ::core::result::Result<(), $crate::__String> {
                    $crate::__finish(<$charm as $crate::Charm>::unit_data_changed(changed))
                }
                fn update_status() -> ::core::result::Result<(), $crate::__String> {
                    $crate::__finish(<$charm as $crate::Charm>::update_status())
                }
                fn stop() -> ::core::result::Result<(), $crate::__String> {
                    $crate::__finish(<$charm as $crate::Charm>::stop())
                }
            }
    $crate::bindings::__export_charm_world!(CharmSdkExport with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub type __String = String;

#[doc(hidden)]
pub type __Vec<T> = Vec<T>;

#[doc(hidden)]
pub fn __finish(result: Result<()>) -> std::result::Result<(), String> {
    result.map_err(|e| e.to_string())
}

/// True if this unit is leader and guaranteed to stay so for the guarantee window.
pub fn is_leader() -> Result<bool> {
    host::is_leader()
}

/// The term of this unit's tenure while [`is_leader`] would answer true (`None`
/// otherwise): a fencing token. Pass it with every write to an external system that must
/// refuse a deposed leader's late writes; that system keeps the highest term it has seen
/// and refuses any write carrying a lower one (terms only go up).
pub fn leader_term() -> Result<Option<u64>> {
    host::leader_term()
}

/// One leader setting from this hook's snapshot; `None` if the key is not set.
pub fn leader_get(key: &str) -> Result<Option<String>> {
    host::leader_get(key)
}

/// Every leader setting from this hook's snapshot.
pub fn leader_get_all() -> Result<BTreeMap<String, String>> {
    Ok(host::leader_get_all()?.into_iter().collect())
}

/// Writes a group of settings atomically (leader only). An empty value deletes its key.
/// Write settings that belong together in one call, so minions never see half of them.
pub fn leader_set<K, V>(settings: impl IntoIterator<Item = (K, V)>) -> Result<()>
where
    K: Into<String>,
    V: Into<String>,
{
    let group: Vec<(String, String)> = settings.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    host::leader_set(&group)
}

/// Reads a setting written by [`leader_set_json`] and decodes it as `T`.
pub fn leader_get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>> {
    leader_get(key)?
        .map(|text| serde_json::from_str(&text).map_err(|e| Error::Encoding(format!("{key}: {e}"))))
        .transpose()
}

/// Writes `value` as JSON under `key` (leader only), atomically like [`leader_set`]. To
/// write a JSON value with other keys in one group, encode it with [`to_json`]:
///
/// ```no_run
/// # fn demo() -> charm_sdk::Result<()> {
/// let targets = vec!["10.0.0.1:9100", "10.0.0.2:9100"];
/// charm_sdk::leader_set([("targets", charm_sdk::to_json("targets", &targets)?), ("revision", "7".into())])
/// # }
/// ```
pub fn leader_set_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<()> {
    leader_set([(key, to_json(key, value)?)])
}

/// `value` as the JSON text [`leader_set_json`] and [`unit_set_json`] write under `key`
/// (named in the error if it cannot be encoded), for a group that mixes it with other keys.
pub fn to_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Encoding(format!("{key}: {e}")))
}

/// Writes a group of this unit's own data atomically, with the rules of [`leader_set`]
/// (an empty value deletes its key); any unit, leader or not. The leader then hears of it
/// through [`Charm::unit_data_changed`]. Publish what the leader needs from this unit (its
/// address, what it applied) here instead of through a peer relation.
pub fn unit_set<K, V>(settings: impl IntoIterator<Item = (K, V)>) -> Result<()>
where
    K: Into<String>,
    V: Into<String>,
{
    let group: Vec<(String, String)> = settings.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    host::unit_set(&group)
}

/// One key of `unit`'s data from this hook's snapshot (`None` if unset, or if `unit` is
/// not a member). Every unit reads its own; only the leader reads other units'
/// ([`Error::NotLeader`] otherwise).
pub fn unit_get(unit: &str, key: &str) -> Result<Option<String>> {
    host::unit_get(unit, key)
}

/// All of `unit`'s data from this hook's snapshot (see [`unit_get`]).
pub fn unit_get_all(unit: &str) -> Result<BTreeMap<String, String>> {
    Ok(host::unit_get_all(unit)?.into_iter().collect())
}

/// The application's units as the host knows them now (joined, not removed), sorted;
/// leader only. What the leader waits on when it gathers every unit's acknowledgement.
pub fn units() -> Result<Vec<String>> {
    host::units()
}

/// Reads a value of `unit`'s data written by [`unit_set_json`] and decodes it as `T`.
pub fn unit_get_json<T: serde::de::DeserializeOwned>(unit: &str, key: &str) -> Result<Option<T>> {
    unit_get(unit, key)?
        .map(|text| serde_json::from_str(&text).map_err(|e| Error::Encoding(format!("{unit} {key}: {e}"))))
        .transpose()
}

/// Writes `value` as JSON under `key` of this unit's data, atomically like [`unit_set`].
pub fn unit_set_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<()> {
    unit_set([(key, to_json(key, value)?)])
}

/// Severity of a log line.
pub use context::LogLevel;
/// The workload status a unit reports.
pub use context::WorkloadStatus;

/// Writes a line to the unit's log.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Sets the unit's workload status; the last call of a hook wins.
pub fn status_set(status: WorkloadStatus, message: &str) {
    host::status_set(status, message);
}

/// This unit's name, e.g. `app/0`.
pub fn unit_name() -> String {
    host::unit_name()
}

/// This unit's application, e.g. `app`.
pub fn application_name() -> String {
    host::application_name()
}

/// The running hook's name, e.g. `leader-elected`.
pub fn hook_name() -> String {
    host::hook_name()
}

/// Services the operator configured for this unit, started and stopped by name. A
/// leader-only service starts only on the leader, and the host stops it by itself before
/// the unit's leadership guarantee can lapse.
pub mod services {
    use super::{Error, Result};
    use crate::bindings::juju::charm::services as wit;

    pub use wit::ServiceStatus;

    impl From<wit::ServiceError> for Error {
        fn from(err: wit::ServiceError) -> Self {
            match err {
                wit::ServiceError::UnknownService(name) => {
                    Error::Service(format!("no service named {name:?} is configured"))
                }
                wit::ServiceError::NotLeader => Error::NotLeader,
                wit::ServiceError::Failed(reason) => Error::Service(reason),
            }
        }
    }

    /// Starts the named service; starting a running one does nothing.
    pub fn start(name: &str) -> Result<()> {
        crate::host::service_start(name)
    }

    /// Asks the named service to stop (SIGTERM, then SIGKILL after the grace period).
    pub fn stop(name: &str) -> Result<()> {
        crate::host::service_stop(name)
    }

    /// The named service's status.
    pub fn status(name: &str) -> Result<ServiceStatus> {
        crate::host::service_status(name)
    }
}

/// `bytes` cryptographically secure random bytes, hex-encoded: for generated secrets and ids.
/// (In [`testing`], the bytes come from the test unit's seed instead: repeatable, not secret.)
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    host::random_fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The unit's data directory, which persists between its hooks: `/` in the component (the
/// host mounts the directory as the sandbox's only filesystem), and the test unit's own
/// temporary directory in [`testing`]. Build paths from it (`data_dir().join("etc")`)
/// rather than from `/`, so the charm's native tests stay inside their directory.
pub fn data_dir() -> PathBuf {
    host::data_dir()
}
