//! The hooks a charm can implement, and the outcome of running one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One of the hooks of the `juju:charm/hooks` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    /// Runs once, first.
    Install,
    /// The unit has become leader.
    LeaderElected,
    /// The unit is a minion, or the leader changed the settings.
    LeaderSettingsChanged,
    /// The unit can no longer guarantee the leadership it had.
    LeaderDeposed,
    /// The unit is being removed.
    Stop,
}

impl HookKind {
    /// Every hook, in the order the WIT interface lists them.
    pub const ALL: [HookKind; 5] = [
        HookKind::Install,
        HookKind::LeaderElected,
        HookKind::LeaderSettingsChanged,
        HookKind::LeaderDeposed,
        HookKind::Stop,
    ];

    /// The hook's name as charms and logs spell it, e.g. `leader-elected`.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Install => "install",
            HookKind::LeaderElected => "leader-elected",
            HookKind::LeaderSettingsChanged => "leader-settings-changed",
            HookKind::LeaderDeposed => "leader-deposed",
            HookKind::Stop => "stop",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HookKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HookKind::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| format!("unknown hook {s:?}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for hook in HookKind::ALL {
            assert_eq!(hook.name().parse::<HookKind>().unwrap(), hook);
        }
        assert!("config-changed".parse::<HookKind>().is_err());
    }
}
