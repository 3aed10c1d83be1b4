//! Rolling configuration gathered from every unit, without a peer relation: each unit
//! publishes its (made-up) scrape addresses in its own unit data; the leader builds one
//! targets list from every member's and shares it through leader settings; every unit
//! renders it into `targets.json` (Prometheus `file_sd` format) in its data directory and
//! acknowledges the version it applied in its unit data; the leader reports when every
//! current member has applied the latest version.
//!
//! - `install`: publish this unit's addresses; render the targets if there are any.
//! - `leader-elected`: build the targets from every member's addresses (it sees all of
//!   them), render, and report progress.
//! - `unit-data-changed` (leader only; one hook for a burst): build again (a unit joined,
//!   left or changed its addresses) and report progress (a unit acknowledged).
//! - `leader-settings-changed`: render the new targets and acknowledge their version.

use std::collections::BTreeMap;

use charm_sdk::{Charm, Error, LogLevel, Result, WorkloadStatus};

/// Unit data: this unit's addresses, comma-separated.
pub const ADDRESSES: &str = "addresses";
/// Unit data: the targets version this unit rendered.
pub const APPLIED: &str = "applied-version";
/// Leader setting: every target, one `ADDRESS UNIT` line each, sorted.
pub const TARGETS: &str = "targets";
/// Leader setting: the targets' version, one more at each change.
pub const VERSION: &str = "targets-version";
/// The file every unit renders, in its data directory.
pub const TARGETS_FILE: &str = "targets.json";

/// The made-up addresses of unit `number`: one on each of two networks.
pub fn addresses_of(number: u32) -> String {
    let (high, low) = (number / 256, number % 256);
    format!("10.1.{high}.{low}:9100,10.2.{high}.{low}:9100")
}

/// The targets and their version, as the leader shares them.
struct Targets {
    version: u64,
    /// Target address to the unit it scrapes.
    lines: BTreeMap<String, String>,
}

impl Targets {
    /// The targets in this hook's view of the leader settings (`None`: none yet).
    fn read() -> Result<Option<Self>> {
        let (Some(text), Some(version)) = (charm_sdk::leader_get(TARGETS)?, charm_sdk::leader_get(VERSION)?) else {
            return Ok(None);
        };
        let version = version.parse().map_err(|_| Error::Failed(format!("{VERSION} is not a number: {version:?}")))?;
        let lines = text
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(address, unit)| (address.to_owned(), unit.to_owned()))
            .collect();
        Ok(Some(Self { version, lines }))
    }

    fn text(lines: &BTreeMap<String, String>) -> String {
        lines.iter().map(|(address, unit)| format!("{address} {unit}")).collect::<Vec<_>>().join("\n")
    }
}

/// The leader's half: the targets from every member's addresses; when they differ from
/// the shared ones, rendered here first, then shared with a new version in one group
/// (returned: they are rendered).
fn build_targets() -> Result<Option<Targets>> {
    let mut lines = BTreeMap::new();
    for unit in charm_sdk::units()? {
        let addresses = charm_sdk::unit_get(&unit, ADDRESSES)?.unwrap_or_default();
        for address in addresses.split(',').filter(|a| !a.is_empty()) {
            lines.insert(address.to_owned(), unit.clone());
        }
    }
    let current = Targets::read()?;
    if current.as_ref().is_some_and(|c| c.lines == lines) {
        return Ok(None);
    }
    let targets = Targets { version: current.map_or(1, |c| c.version + 1), lines };
    // The leader's own file first: once the targets are shared, every minion renders
    // them at once and the leader's hook would wait its turn for the processors. If the
    // write below fails (leadership lost), the hook fails and the file is rendered again.
    render(&targets)?;
    charm_sdk::leader_set([(TARGETS, Targets::text(&targets.lines)), (VERSION, targets.version.to_string())])?;
    charm_sdk::log(LogLevel::Info, &format!("targets version {}: {} targets", targets.version, targets.lines.len()));
    Ok(Some(targets))
}

/// Writes `targets` to this unit's targets file, one group per unit.
fn render(targets: &Targets) -> Result<()> {
    let mut by_unit: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (address, unit) in &targets.lines {
        by_unit.entry(unit).or_default().push(address);
    }
    let groups: Vec<serde_json::Value> = by_unit
        .iter()
        .map(|(unit, addresses)| serde_json::json!({"targets": addresses, "labels": {"juju_unit": unit}}))
        .collect();
    let file = charm_sdk::data_dir().join(TARGETS_FILE);
    let text = serde_json::to_string_pretty(&groups).map_err(|e| Error::Failed(e.to_string()))?;
    std::fs::write(&file, text).map_err(|e| Error::Failed(format!("cannot write {}: {e}", file.display())))
}

/// Every unit's half: render the shared targets and acknowledge their version.
fn render_and_acknowledge() -> Result<()> {
    let Some(targets) = Targets::read()? else {
        charm_sdk::status_set(WorkloadStatus::Waiting, "waiting for the leader's targets");
        return Ok(());
    };
    render(&targets)?;
    acknowledge(&targets)
}

/// Says which version this unit rendered: in its unit data, and in its status.
fn acknowledge(targets: &Targets) -> Result<()> {
    charm_sdk::unit_set([(APPLIED, targets.version.to_string())])?;
    charm_sdk::status_set(WorkloadStatus::Active, &format!("{} targets", targets.lines.len()));
    Ok(())
}

/// The leader's report: how many current members applied the latest version.
fn report_progress() -> Result<()> {
    let Some(targets) = Targets::read()? else { return Ok(()) };
    let units = charm_sdk::units()?;
    let version = targets.version.to_string();
    let mut applied = 0;
    for unit in &units {
        if charm_sdk::unit_get(unit, APPLIED)?.as_deref() == Some(version.as_str()) {
            applied += 1;
        }
    }
    let (count, total) = (targets.lines.len(), units.len());
    if applied == total {
        charm_sdk::status_set(
            WorkloadStatus::Active,
            &format!("{count} targets; all {total} units applied version {version}"),
        );
        charm_sdk::log(LogLevel::Info, &format!("every unit applied targets version {version}"));
    } else {
        let message = format!("{count} targets; {applied} of {total} units applied version {version}");
        charm_sdk::status_set(WorkloadStatus::Active, &message);
    }
    Ok(())
}

/// The leader's work after it hears of anything: build, render its own, report.
fn lead() -> Result<()> {
    if !charm_sdk::is_leader()? {
        return Ok(());
    }
    match build_targets()? {
        Some(shared) => acknowledge(&shared)?,
        None => render_and_acknowledge()?,
    }
    report_progress()
}

/// This unit's number, from its name.
fn unit_number() -> u32 {
    charm_sdk::unit_name().rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The charm.
pub struct PeerConfigCharm;

impl Charm for PeerConfigCharm {
    fn install() -> Result<()> {
        charm_sdk::unit_set([(ADDRESSES, addresses_of(unit_number()))])?;
        render_and_acknowledge()
    }

    fn leader_elected() -> Result<()> {
        lead()
    }

    fn unit_data_changed(changed: Vec<String>) -> Result<()> {
        charm_sdk::log(LogLevel::Debug, &format!("changed: {}", changed.join(" ")));
        lead()
    }

    fn leader_settings_changed() -> Result<()> {
        render_and_acknowledge()
    }
}

charm_sdk::export_charm!(PeerConfigCharm);

#[cfg(test)]
mod tests;
