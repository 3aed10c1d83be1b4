//! How `charm-host` prints: a readable live log, JSON Lines, and the final status.
//!
//! Text for people goes through [`for_terminal`]: strings a charm controls (log lines,
//! status messages, errors, settings) could carry terminal escape sequences, so control
//! characters are shown escaped. JSON output keeps every string exact (JSON escapes them).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use crate::events::{Event, EventSink};
use crate::leadership::LeadershipStore;
use crate::names::AppName;
use crate::settings::Settings;
use crate::unit::Unit;
use serde_json::json;

/// `text` with its control characters (escape sequences, newlines, ...) shown escaped, so
/// that printing it cannot drive the terminal.
pub fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
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

/// Writes `text` to stdout; a closed pipe (`status | head`) ends the program quietly
/// instead of panicking, any other failure with an error.
pub fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {err}");
        std::process::exit(1);
    }
}

/// Prints each event as one readable line, with the time since start.
pub struct HumanLog {
    start: Instant,
}

impl HumanLog {
    pub fn new() -> Self {
        Self { start: Instant::now() }
    }
}

impl EventSink for HumanLog {
    fn emit(&self, event: Event) {
        let t = self.start.elapsed().as_secs_f64();
        let line = match event {
            Event::Hook { unit, hook, result, elapsed } => match result {
                Ok(()) => format!("{t:8.3}s {unit:<12} hook {hook} ok ({:.2} ms)", elapsed.as_secs_f64() * 1e3),
                Err(err) => format!(
                    "{t:8.3}s {unit:<12} hook {hook} FAILED ({:.2} ms): {}",
                    elapsed.as_secs_f64() * 1e3,
                    for_terminal(&err.to_string())
                ),
            },
            Event::Leadership { unit, leader: true, term } => {
                format!("{t:8.3}s {unit:<12} is now the leader (term {})", term.unwrap_or_default())
            }
            Event::Leadership { unit, leader: false, .. } => format!("{t:8.3}s {unit:<12} is a minion"),
            Event::Log { unit, level, message } => format!("{t:8.3}s {unit:<12} {}: {}", level.name(), for_terminal(&message)),
            Event::Status { unit, status, message } => {
                format!("{t:8.3}s {unit:<12} status {}: {}", status.name(), for_terminal(&message))
            }
        };
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

/// Prints each event as one JSON object per line.
pub struct JsonLog;

impl JsonLog {
    pub fn new() -> Self {
        Self
    }
}

impl EventSink for JsonLog {
    fn emit(&self, event: Event) {
        let value = match event {
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
        };
        let _ = writeln!(std::io::stdout().lock(), "{value}");
    }
}

/// The state of an application at the end of a run.
pub struct StatusReport {
    app: AppName,
    leader: Option<String>,
    term: Option<u64>,
    settings: Arc<Settings>,
    units: Vec<UnitRow>,
}

struct UnitRow {
    unit: String,
    leader: bool,
    status: &'static str,
    message: String,
    last_hook: Option<&'static str>,
    error: Option<String>,
}

impl StatusReport {
    /// Reads the leader, settings and every unit's status.
    pub async fn collect(app: &AppName, store: &dyn LeadershipStore, units: &[Arc<Unit>]) -> anyhow::Result<Self> {
        let lease = store.lease(app).await?;
        let leader = lease.as_ref().map(|l| l.holder.to_string());
        let term = lease.map(|l| l.term);
        let settings = store.read_settings(app).await?.values;
        let units = units
            .iter()
            .map(|unit| {
                let status = unit.status();
                UnitRow {
                    unit: unit.name().to_string(),
                    leader: leader.as_deref() == Some(unit.name().as_str()),
                    status: status.workload.name(),
                    message: status.message,
                    last_hook: status.last_hook.map(|h| h.name()),
                    error: status.last_error,
                }
            })
            .collect();
        Ok(Self { app: app.clone(), leader, term, settings, units })
    }

    /// One JSON object: `{"type":"status", "application", "leader", "term", "settings", "units"}`.
    pub fn to_json(&self) -> serde_json::Value {
        let units: Vec<_> = self
            .units
            .iter()
            .map(|u| {
                json!({"unit": u.unit, "leader": u.leader, "status": u.status, "message": u.message,
                    "last_hook": u.last_hook, "error": u.error})
            })
            .collect();
        json!({"type": "status", "application": self.app.as_str(), "leader": self.leader, "term": self.term,
            "settings": *self.settings, "units": units})
    }

    /// A table of units followed by the leader settings.
    pub fn to_table(&self) -> String {
        let width = self.units.iter().map(|u| u.unit.len()).max().unwrap_or(4).max(4);
        let mut out = format!("\n{:<width$}  LEADER  {:<12} MESSAGE\n", "UNIT", "STATUS");
        for u in &self.units {
            let message = match &u.error {
                Some(err) => format!("{} [{} failed: {}]", for_terminal(&u.message), u.last_hook.unwrap_or("hook"), for_terminal(err)),
                None => for_terminal(&u.message).into_owned(),
            };
            let leader = if u.leader { "*" } else { "" };
            out.push_str(&format!("{:<width$}  {leader:<6}  {:<12} {message}\n", u.unit, u.status));
        }
        if let Some(term) = self.term {
            out.push_str(&format!("\nLeader term: {term}\n"));
        }
        out.push_str(&format!("\nLeader settings of {} ({} keys):\n", self.app, self.settings.len()));
        for (key, value) in self.settings.iter() {
            out.push_str(&format!("  {} = {}\n", for_terminal(key), for_terminal(value)));
        }
        out
    }
}
