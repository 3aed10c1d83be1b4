//! What a running unit reports to whoever embeds the host: hooks run, leadership changes,
//! log lines and status changes.
//!
//! Invariants: events of one unit are emitted in the order they happened; a sink must not
//! block for long, since it is called from the unit's own task.

use std::time::Duration;

use crate::hooks::{HookError, HookKind};
use crate::names::UnitName;

/// Severity of a log line, as a charm gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warning,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// Lowercase name, e.g. `warning`.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }
}

/// The workload status a charm reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadStatus {
    /// The unit is being set up.
    Maintenance,
    /// The unit waits for something outside itself (e.g. the leader's settings).
    Waiting,
    /// The unit needs an operator.
    Blocked,
    /// The unit works.
    Active,
}

impl WorkloadStatus {
    /// Lowercase name, e.g. `active`.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadStatus::Maintenance => "maintenance",
            WorkloadStatus::Waiting => "waiting",
            WorkloadStatus::Blocked => "blocked",
            WorkloadStatus::Active => "active",
        }
    }
}

/// Something that happened to a unit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A hook started (in its fresh sandbox); [`Event::Hook`] follows when it ends.
    HookStarted {
        /// The unit.
        unit: UnitName,
        /// The hook.
        hook: HookKind,
    },
    /// A hook finished.
    Hook {
        /// The unit.
        unit: UnitName,
        /// The hook.
        hook: HookKind,
        /// Ok, or why it failed.
        result: Result<(), HookError>,
        /// How long it took.
        elapsed: Duration,
    },
    /// The unit became leader (`leader: true`, with its term) or stopped being leader.
    Leadership {
        /// The unit.
        unit: UnitName,
        /// Whether it now holds leadership.
        leader: bool,
        /// The term of the new tenure, when `leader` is true.
        term: Option<u64>,
    },
    /// The charm logged a line, or wrote one to stdout (info) or stderr (warning).
    Log {
        /// The unit.
        unit: UnitName,
        /// Its severity.
        level: LogLevel,
        /// The line, without its newline.
        message: String,
    },
    /// The charm set its workload status.
    Status {
        /// The unit.
        unit: UnitName,
        /// The new status.
        status: WorkloadStatus,
        /// The new message.
        message: String,
    },
}

impl Event {
    /// The unit the event is about.
    pub fn unit(&self) -> &UnitName {
        match self {
            Event::HookStarted { unit, .. }
            | Event::Hook { unit, .. }
            | Event::Leadership { unit, .. }
            | Event::Log { unit, .. }
            | Event::Status { unit, .. } => unit,
        }
    }

    /// The event as one JSON object, as `charm-host run --json` prints it (one per line):
    /// `type` is `hook-started`, `hook`, `leadership`, `log` or `workload-status`, and `unit`
    /// names the unit.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Event::HookStarted { unit, hook } => json!({"type": "hook-started", "unit": unit.as_str(), "hook": hook.name()}),
            Event::Hook { unit, hook, result, elapsed } => {
                let ms = (elapsed.as_secs_f64() * 1e5).round() / 1e2;
                match result {
                    Ok(()) => json!({"type": "hook", "unit": unit.as_str(), "hook": hook.name(), "outcome": "ok", "ms": ms}),
                    Err(err) => json!({"type": "hook", "unit": unit.as_str(), "hook": hook.name(), "outcome": "error",
                        "error": err.to_string(), "ms": ms}),
                }
            }
            Event::Leadership { unit, leader, term } => {
                json!({"type": "leadership", "unit": unit.as_str(), "leader": leader, "term": term})
            }
            Event::Log { unit, level, message } => {
                json!({"type": "log", "unit": unit.as_str(), "level": level.name(), "message": message})
            }
            Event::Status { unit, status, message } => {
                json!({"type": "workload-status", "unit": unit.as_str(), "status": status.name(), "message": message})
            }
        }
    }
}

/// Receives the events of every unit it is given to.
pub trait EventSink: Send + Sync + 'static {
    /// Called once for each event.
    fn emit(&self, event: Event);
}

/// A sink that forwards events to `tracing`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn emit(&self, event: Event) {
        match event {
            Event::HookStarted { unit, hook } => tracing::debug!(%unit, %hook, "hook started"),
            Event::Hook { unit, hook, result: Ok(()), elapsed } => {
                tracing::info!(%unit, %hook, ?elapsed, "hook ok")
            }
            Event::Hook { unit, hook, result: Err(err), elapsed } => {
                tracing::warn!(%unit, %hook, ?elapsed, error = %err, "hook failed")
            }
            Event::Leadership { unit, leader, term } => tracing::info!(%unit, leader, ?term, "leadership"),
            Event::Log { unit, level, message } => tracing::info!(%unit, level = level.name(), "{message}"),
            Event::Status { unit, status, message } => {
                tracing::info!(%unit, status = status.name(), "{message}")
            }
        }
    }
}

/// A sink that keeps every event in memory, for tests and tools that inspect a run.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: std::sync::Mutex<Vec<Event>>,
}

impl RecordingSink {
    /// A sink with no events yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventSink for RecordingSink {
    fn emit(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
}
