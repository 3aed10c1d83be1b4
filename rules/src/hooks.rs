//! The hooks a charm can implement, by name.

use std::fmt;
use std::str::FromStr;

/// One of the hooks of the `juju:charm/hooks` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum HookKind {
    /// Runs once, first.
    Install,
    /// The unit has become leader.
    LeaderElected,
    /// The unit is a minion, or the leader changed the settings.
    LeaderSettingsChanged,
    /// The unit can no longer guarantee the leadership it had.
    LeaderDeposed,
    /// The leader hears that other units' data or membership changed.
    UnitDataChanged,
    /// Periodic, on every unit: a chance to check the workload and report its status.
    UpdateStatus,
    /// The unit is being removed.
    Stop,
}

impl HookKind {
    /// Every hook, in the order the WIT interface lists them.
    pub const ALL: [HookKind; 7] = [
        HookKind::Install,
        HookKind::LeaderElected,
        HookKind::LeaderSettingsChanged,
        HookKind::LeaderDeposed,
        HookKind::UnitDataChanged,
        HookKind::UpdateStatus,
        HookKind::Stop,
    ];

    /// The hook's name as charms and logs spell it, e.g. `leader-elected`.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Install => "install",
            HookKind::LeaderElected => "leader-elected",
            HookKind::LeaderSettingsChanged => "leader-settings-changed",
            HookKind::LeaderDeposed => "leader-deposed",
            HookKind::UnitDataChanged => "unit-data-changed",
            HookKind::UpdateStatus => "update-status",
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
        HookKind::ALL.into_iter().find(|h| h.name() == s).ok_or_else(|| format!("unknown hook {s:?}"))
    }
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
