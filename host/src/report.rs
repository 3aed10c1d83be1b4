//! What an operator sees of an application: its leader and term, pins, leader settings and
//! each unit's agent, status, last hook, errors and services. One type, one schema: `charm-host
//! status --json` prints a [`StoreReport`], `charm-host run --json` ends with an
//! [`ApplicationReport`] tagged `"type": "status"`, and both print the same table.
//!
//! Invariants: a report is read from the store at one moment per application (lease, pins,
//! settings), and a unit whose agent is down shows no running service (its services died
//! with it, whatever its last recorded status said).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::events::WorkloadStatus;
use crate::hooks::HookKind;
use crate::leadership::{LeadershipStore, LeaseError, StoreError, Tenure};
use crate::names::{AppName, UnitName};
use crate::services::ServiceStatus;
use crate::settings::Settings;
use crate::unit::UnitStatus;

/// Every application of a store, as `charm-host status --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReport {
    /// Which store: a SQLite file or etcd endpoints and prefix.
    pub store: String,
    /// Each application, by name.
    pub applications: Vec<ApplicationReport>,
}

/// One application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationReport {
    /// Its name.
    pub application: AppName,
    /// The unit holding its lease, if any.
    pub leader: Option<UnitName>,
    /// The leader's term.
    pub term: Option<u64>,
    /// The latest tenure in the store's history: the leader's, since when it leads, or the
    /// last one's, how and when it ended.
    #[serde(default)]
    pub latest_tenure: Option<Tenure>,
    /// What pins its lease.
    pub pins: Vec<String>,
    /// The version of its leader settings.
    pub settings_version: u64,
    /// Its leader settings.
    pub settings: Settings,
    /// Its members as the store knows them (joined, not removed), on any machine; empty
    /// when the store has no unit data to read (a file from before it).
    #[serde(default)]
    pub members: Vec<UnitName>,
    /// Its units.
    pub units: Vec<UnitReport>,
}

/// Whether a unit's agent runs, or how it ended where that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AgentState {
    /// It answers.
    Running,
    /// It does not answer (stopped or crashed): its recorded status may be stale.
    Down,
    /// It was stopped gracefully in this process (deposed if it led, `stop`, revoke).
    Stopped,
    /// It was killed in this process, as a crash would end it: its lease was left to expire.
    Crashed,
}

impl AgentState {
    /// Lowercase name, e.g. `running`.
    pub fn name(self) -> &'static str {
        match self {
            AgentState::Running => "running",
            AgentState::Down => "down",
            AgentState::Stopped => "stopped",
            AgentState::Crashed => "crashed",
        }
    }
}

/// One unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitReport {
    /// Its name.
    pub unit: UnitName,
    /// Whether its agent runs.
    pub agent: AgentState,
    /// Whether it holds the lease.
    pub leader: bool,
    /// The workload status its charm last set (none recorded yet: `None`).
    pub status: Option<WorkloadStatus>,
    /// The message its charm last set.
    pub message: Option<String>,
    /// The last hook that ran.
    pub last_hook: Option<HookKind>,
    /// Why the last hook failed, if it did.
    pub error: Option<String>,
    /// Why it cannot verify its leadership, while its agent runs.
    pub leadership_error: Option<String>,
    /// Why it waits although it could lead (another incarnation of it holds the lease),
    /// while its agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leadership_wait: Option<String>,
    /// Its services.
    pub services: Vec<ServiceStatus>,
    /// Whether it is a member of its application (false: removed, its data deleted).
    #[serde(default = "member_by_default")]
    pub member: bool,
}

fn member_by_default() -> bool {
    true
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The lease or pins could not be read.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The settings could not be read.
    #[error("cannot read the leader settings: {0}")]
    Settings(#[from] StoreError),
}

impl UnitReport {
    /// A unit as its last recorded status (if any) says, its agent `agent`.
    pub fn new(unit: UnitName, status: Option<UnitStatus>, agent: AgentState) -> Self {
        let up = agent == AgentState::Running;
        let mut services = status.as_ref().map(|s| s.services.clone()).unwrap_or_default();
        if !up {
            for service in &mut services {
                service.running = false;
                service.pid = None;
            }
        }
        Self {
            unit,
            agent,
            leader: false,
            status: status.as_ref().map(|s| s.workload),
            message: status.as_ref().map(|s| s.message.clone()),
            last_hook: status.as_ref().and_then(|s| s.last_hook),
            error: status.as_ref().and_then(|s| s.last_error.clone()),
            leadership_wait: status.as_ref().and_then(|s| s.leadership_wait.clone()).filter(|_| up),
            leadership_error: status.and_then(|s| s.leadership_error).filter(|_| up),
            services,
            member: true,
        }
    }
}

impl ApplicationReport {
    /// Reads `app`'s lease, pins and settings from `store`, around `units`.
    pub async fn collect(
        app: &AppName,
        store: &dyn LeadershipStore,
        mut units: Vec<UnitReport>,
    ) -> Result<Self, ReportError> {
        let lease = store.lease(app).await?;
        let pins = store.pins().await?.remove(app).unwrap_or_default();
        let settings = store.read_settings(app).await?;
        // The history explains the lease; a history that cannot be read does not hide it.
        let latest_tenure = match store.history(Some(app), 1).await {
            Ok(mut latest) => latest.pop(),
            Err(err) => {
                tracing::warn!(%app, "cannot read the leadership history: {err}");
                None
            }
        };
        // Membership explains the units; one that cannot be read does not hide the rest.
        let members: Vec<UnitName> = match store.unit_data_since(app, 0).await {
            Ok(changes) => changes.units.into_iter().map(|(unit, _)| unit).collect(),
            Err(err) => {
                tracing::warn!(%app, "cannot read the application's members: {err}");
                Vec::new()
            }
        };
        for unit in &mut units {
            unit.leader = lease.as_ref().is_some_and(|l| l.holder == unit.unit);
            unit.member = members.is_empty() || members.contains(&unit.unit);
        }
        Ok(Self {
            application: app.clone(),
            leader: lease.as_ref().map(|l| l.holder.clone()),
            term: lease.map(|l| l.term),
            latest_tenure,
            pins,
            settings_version: settings.version,
            settings: (*settings.values).clone(),
            members,
            units,
        })
    }

    /// The `run --json` line: `{"type": "status", ...}` and this report's fields, in order.
    pub fn to_json_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            r#type: &'static str,
            #[serde(flatten)]
            report: &'a ApplicationReport,
        }
        // Plain data with string keys: serialising it cannot fail.
        serde_json::to_string(&Line { r#type: "status", report: self }).unwrap_or_default()
    }

    /// The table `status` and `run` print: a line for the application, one per unit, then
    /// the settings. Text from charms has its control characters escaped.
    pub fn to_table(&self) -> String {
        let shown = |text: Option<&str>| text.map_or_else(|| "-".to_owned(), |t| for_terminal(t).into_owned());
        let pins = if self.pins.is_empty() {
            "none".to_owned()
        } else {
            self.pins.iter().map(|p| for_terminal(p)).collect::<Vec<_>>().join(", ")
        };
        let time = |at| humantime::format_rfc3339_millis(at).to_string();
        let leader = match (&self.leader, self.term, &self.latest_tenure) {
            (Some(leader), Some(term), Some(t)) if t.term == term => {
                format!("{leader} (term {term}, since {})", time(t.started))
            }
            (Some(leader), term, _) => {
                format!("{leader} (term {})", term.map_or_else(|| "-".to_owned(), |t| t.to_string()))
            }
            (None, _, Some(Tenure { unit, term, ended: Some(ended), how: Some(how), .. })) => {
                format!("- (last: {unit}, term {term}, ended {} by {})", time(*ended), how.name())
            }
            (None, _, _) => "- (term -)".to_owned(),
        };
        let mut out = format!(
            "application {}: leader {leader}, pins: {pins}, members: {}\n",
            self.application,
            self.members.len()
        );
        let width = self.units.iter().map(|u| u.unit.as_str().len()).max().unwrap_or(0).max(16);
        let _ = writeln!(
            out,
            "  {:<width$} {:<8} {:<7} {:<12} {:<26} MESSAGE",
            "UNIT", "AGENT", "LEADER", "STATUS", "LAST HOOK"
        );
        for unit in &self.units {
            let mut notes = String::new();
            if !unit.member {
                notes.push_str(" [removed: not a member]");
            }
            if let Some(error) = &unit.error {
                let _ = write!(notes, " [failed: {}]", for_terminal(error));
            }
            if let Some(error) = &unit.leadership_error {
                let _ = write!(notes, " [leadership unknown: {}]", for_terminal(error));
            }
            if let Some(wait) = &unit.leadership_wait {
                let _ = write!(notes, " [{}]", for_terminal(wait));
            }
            for service in &unit.services {
                let _ = match (service.running, service.pid) {
                    (true, Some(pid)) => write!(notes, " [{} running, pid {pid}]", for_terminal(&service.name)),
                    _ => write!(notes, " [{} stopped]", for_terminal(&service.name)),
                };
            }
            let _ = writeln!(
                out,
                "  {:<width$} {:<8} {:<7} {:<12} {:<26} {}{notes}",
                unit.unit.as_str(),
                unit.agent.name(),
                if unit.leader { "*" } else { "" },
                unit.status.map_or("-", |s| s.name()),
                unit.last_hook.map_or("-", |h| h.name()),
                shown(unit.message.as_deref()),
            );
        }
        let _ = writeln!(out, "  settings (version {}):", self.settings_version);
        for (key, value) in &self.settings {
            let _ = writeln!(out, "    {} = {}", for_terminal(key), for_terminal(value));
        }
        out
    }
}

/// `text` with its control characters (escape sequences, newlines, ...) shown escaped, so
/// that printing it cannot drive the terminal.
pub(crate) fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ApplicationReport {
        let status = UnitStatus {
            workload: WorkloadStatus::Active,
            message: "up\u{1b}[2J".into(),
            last_hook: Some(HookKind::LeaderElected),
            services: vec![ServiceStatus { name: "db".into(), running: true, pid: Some(7), leader_only: true }],
            ..UnitStatus::default()
        };
        let unit = |n: &str| UnitName::new(n).unwrap();
        ApplicationReport {
            application: AppName::new("app").unwrap(),
            leader: Some(unit("app/0")),
            term: Some(3),
            latest_tenure: Some(Tenure::started(unit("app/0"), 3, std::time::UNIX_EPOCH)),
            pins: vec![],
            settings_version: 2,
            settings: Settings::from([("k".to_owned(), "v".to_owned())]),
            members: vec![unit("app/0")],
            units: vec![
                UnitReport {
                    leader: true,
                    ..UnitReport::new(unit("app/0"), Some(status.clone()), AgentState::Running)
                },
                UnitReport { member: false, ..UnitReport::new(unit("app/1"), Some(status), AgentState::Down) },
            ],
        }
    }

    #[test]
    fn run_and_status_print_one_schema() {
        let report = report();
        let line: serde_json::Value = serde_json::from_str(&report.to_json_line()).unwrap();
        assert_eq!(line["type"], "status");
        let mut fields = line.as_object().unwrap().clone();
        fields.remove("type");
        let store = StoreReport { store: "memory".into(), applications: vec![report.clone()] };
        let status: serde_json::Value = serde_json::to_value(&store).unwrap();
        assert_eq!(serde_json::Value::Object(fields), status["applications"][0], "the same fields, the same values");
        let back: StoreReport = serde_json::from_value(status).unwrap();
        assert_eq!(back, store, "it reads back");
    }

    #[test]
    fn a_down_agent_runs_no_service_and_the_table_escapes_charm_text() {
        let report = report();
        assert!(report.units[0].services[0].running);
        assert!(!report.units[1].services[0].running && report.units[1].services[0].pid.is_none());
        let table = report.to_table();
        assert!(!table.contains('\u{1b}'), "{table}");
        assert!(table.contains("[db running, pid 7]") && table.contains("[db stopped]"), "{table}");
        assert!(table.contains("leader app/0 (term 3, since 1970-01-01T00:00:00.000Z)"), "{table}");
        assert!(table.contains("members: 1") && table.contains("[removed: not a member]"), "{table}");
    }
}
