//! What a running unit reports to whoever embeds the host: hooks run, leadership changes,
//! log lines, status changes and crashes, each with when it happened and the unit's term.
//!
//! Invariants: events of one unit are emitted in the order they happened, each stamped by
//! the unit's reporter (one place) with its store clock's wall time and the term the unit
//! leads at; a sink must not block for long, since it is called from the unit's own task.

use std::time::{Duration, SystemTime};

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

/// Something that happened to a unit: when, to which unit, under which term, and what.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// When it happened: the wall clock (virtual in a `TestApp`), as the unit's store clock
    /// sees it ([`crate::leadership::Clock::wall_time`]).
    pub at: SystemTime,
    /// The unit.
    pub unit: UnitName,
    /// The term of the tenure the unit held when it happened; `None` while it does not lead.
    /// A [`EventKind::Leadership`] loss carries the term given up.
    pub term: Option<u64>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a unit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// A hook started (in its fresh sandbox); [`EventKind::Hook`] follows when it ends.
    HookStarted {
        /// The hook.
        hook: HookKind,
    },
    /// A hook finished.
    Hook {
        /// The hook.
        hook: HookKind,
        /// Ok, or why it failed.
        result: Result<(), HookError>,
        /// How long it took.
        elapsed: Duration,
    },
    /// The unit's role: it became leader, stopped being leader, or is a minion that lost
    /// nothing (see [`LeadershipChange`]).
    Leadership(LeadershipChange),
    /// The charm logged a line, or wrote one to stdout (info) or stderr (warning).
    Log {
        /// Its severity.
        level: LogLevel,
        /// The line, without its newline.
        message: String,
    },
    /// The charm set its workload status.
    Status {
        /// The new status.
        status: WorkloadStatus,
        /// The new message.
        message: String,
    },
    /// The unit's agent was killed, as a crash would (`run --kill`,
    /// `ApplicationHandle::kill_unit`): no hook ran, its lease is left to expire and its
    /// services died with it.
    Crashed,
}

/// How a unit's leadership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadershipChange {
    /// It became leader; the event's term is the new tenure's.
    Elected,
    /// It stopped being leader; the event's term is the tenure given up.
    Deposed,
    /// It is a minion and gave nothing up: its first role since its agent started (a unit
    /// that led before its agent restarted is `Deposed` only if this agent led). The
    /// event's term is `None`.
    Minion,
}

impl LeadershipChange {
    /// Whether the unit leads after the change.
    pub fn leads(self) -> bool {
        self == LeadershipChange::Elected
    }

    /// The change as JSON Lines spell it: `elected`, `deposed` or `minion`.
    pub fn name(self) -> &'static str {
        match self {
            LeadershipChange::Elected => "elected",
            LeadershipChange::Deposed => "deposed",
            LeadershipChange::Minion => "minion",
        }
    }
}

impl Event {
    /// An event about `unit` at `at`.
    pub(crate) fn new(at: SystemTime, unit: UnitName, term: Option<u64>, kind: EventKind) -> Self {
        Self { at, unit, term, kind }
    }

    /// The unit the event is about.
    pub fn unit(&self) -> &UnitName {
        &self.unit
    }

    /// [`Self::at`] in RFC 3339, UTC, to the millisecond: `2026-12-02T18:14:40.123Z`.
    pub fn at_rfc3339(&self) -> String {
        humantime::format_rfc3339_millis(self.at).to_string()
    }

    /// The event as one JSON object, as `charm-host run --json` prints it (one per line):
    /// `type` is `hook-started`, `hook`, `leadership`, `log`, `workload-status` or `crashed`;
    /// every object has `at` (RFC 3339, UTC), `unit` and `term` (`null` while the unit does
    /// not lead).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let mut value = match &self.kind {
            EventKind::HookStarted { hook } => json!({"type": "hook-started", "hook": hook.name()}),
            EventKind::Hook { hook, result, elapsed } => {
                let ms = (elapsed.as_secs_f64() * 1e5).round() / 1e2;
                match result {
                    Ok(()) => json!({"type": "hook", "hook": hook.name(), "outcome": "ok", "ms": ms}),
                    Err(err) => {
                        json!({"type": "hook", "hook": hook.name(), "outcome": "error", "error": err.to_string(), "ms": ms})
                    }
                }
            }
            EventKind::Leadership(change) => {
                json!({"type": "leadership", "leader": change.leads(), "change": change.name()})
            }
            EventKind::Log { level, message } => json!({"type": "log", "level": level.name(), "message": message}),
            EventKind::Status { status, message } => {
                json!({"type": "workload-status", "status": status.name(), "message": message})
            }
            EventKind::Crashed => json!({"type": "crashed"}),
        };
        if let Some(object) = value.as_object_mut() {
            object.insert("at".into(), json!(self.at_rfc3339()));
            object.insert("unit".into(), json!(self.unit.as_str()));
            object.insert("term".into(), json!(self.term));
        }
        value
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
        let Event { unit, term, kind, .. } = event;
        match kind {
            EventKind::HookStarted { hook } => tracing::debug!(%unit, %hook, ?term, "hook started"),
            EventKind::Hook { hook, result: Ok(()), elapsed } => {
                tracing::info!(%unit, %hook, ?term, ?elapsed, "hook ok")
            }
            EventKind::Hook { hook, result: Err(err), elapsed } => {
                tracing::warn!(%unit, %hook, ?term, ?elapsed, error = %err, "hook failed")
            }
            EventKind::Leadership(change) => tracing::info!(%unit, change = change.name(), ?term, "leadership"),
            EventKind::Log { level, message } => tracing::info!(%unit, level = level.name(), "{message}"),
            EventKind::Status { status, message } => tracing::info!(%unit, status = status.name(), "{message}"),
            EventKind::Crashed => tracing::warn!(%unit, ?term, "agent killed"),
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
