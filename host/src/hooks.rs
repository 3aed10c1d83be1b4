//! The hooks a charm can implement, and the outcome of running one.

use std::time::Duration;

pub use charm_rules::HookKind;

use crate::names::UnitName;

/// A hook to run, with its argument: the units a `unit-data-changed` announces. Every other
/// hook takes none, and converts from its [`HookKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    kind: HookKind,
    changed: Vec<UnitName>,
}

impl HookCall {
    /// `unit-data-changed`, announcing `changed`.
    pub fn unit_data_changed(changed: Vec<UnitName>) -> Self {
        Self { kind: HookKind::UnitDataChanged, changed }
    }

    /// Which hook.
    pub fn kind(&self) -> HookKind {
        self.kind
    }

    /// The units a `unit-data-changed` announces (none for any other hook).
    pub fn changed(&self) -> &[UnitName] {
        &self.changed
    }

    /// The announced units, taken back (a failed hook gives them back to be announced).
    pub fn into_changed(self) -> Vec<UnitName> {
        self.changed
    }
}

impl From<HookKind> for HookCall {
    fn from(kind: HookKind) -> Self {
        Self { kind, changed: Vec::new() }
    }
}

/// Why a hook failed. The host and every other unit are unaffected by any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The charm returned `Err(message)`.
    #[error("{0}")]
    Charm(String),
    /// The guest trapped: a panic, `unreachable`, an out-of-bounds access...
    #[error("trapped: {0}")]
    Trap(String),
    /// The hook ran past its deadline and was stopped.
    #[error("exceeded its deadline of {0:?} and was stopped")]
    Deadline(Duration),
    /// The agent was stopping, and the hook was still running when its stop grace ran out.
    #[error("interrupted: the unit was stopping and the hook ran past the stop grace of {0:?}")]
    Interrupted(Duration),
    /// The hook tried to grow its memory past the cap.
    #[error("exceeded its memory cap of {cap} bytes (asked for {requested})")]
    MemoryCap {
        /// The per-instance cap in bytes.
        cap: usize,
        /// The size the guest asked to grow to.
        requested: usize,
    },
    /// The sandbox could not be set up or the charm could not be instantiated.
    #[error("could not start the hook: {0}")]
    Setup(String),
}

/// What running one hook came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    /// The hook that ran.
    pub hook: HookKind,
    /// Ok, or why it failed.
    pub result: Result<(), HookError>,
    /// Wall time from sandbox creation to teardown.
    pub elapsed: Duration,
}
