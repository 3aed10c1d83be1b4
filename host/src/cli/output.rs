//! How `charm-host` prints: a readable live log, JSON Lines, and the final status.
//!
//! Text for people goes through [`for_terminal`]: strings a charm controls (log lines,
//! status messages, errors, settings) could carry terminal escape sequences, so control
//! characters are shown escaped. JSON output keeps every string exact (JSON escapes them).

use std::io::Write;
use std::time::Instant;

use crate::events::{Event, EventKind, EventSink, LeadershipChange};

pub(crate) use crate::report::for_terminal;

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
        let unit = &event.unit;
        let line = match event.kind {
            // The live log shows hooks as they end, with how long they took.
            EventKind::HookStarted { .. } => return,
            EventKind::Hook { hook, result, elapsed } => match result {
                Ok(()) => format!("{t:8.3}s {unit:<12} hook {hook} ok ({:.2} ms)", elapsed.as_secs_f64() * 1e3),
                Err(err) => format!(
                    "{t:8.3}s {unit:<12} hook {hook} FAILED ({:.2} ms): {}",
                    elapsed.as_secs_f64() * 1e3,
                    for_terminal(&err.to_string())
                ),
            },
            EventKind::Leadership(LeadershipChange::Elected) => {
                format!("{t:8.3}s {unit:<12} is now the leader (term {})", event.term.unwrap_or_default())
            }
            EventKind::Leadership(LeadershipChange::Deposed) => {
                format!("{t:8.3}s {unit:<12} is a minion (gave up term {})", event.term.unwrap_or_default())
            }
            EventKind::Leadership(LeadershipChange::Minion) => format!("{t:8.3}s {unit:<12} is a minion"),
            EventKind::Log { level, message } => {
                format!("{t:8.3}s {unit:<12} {}: {}", level.name(), for_terminal(&message))
            }
            EventKind::Status { status, message } => {
                format!("{t:8.3}s {unit:<12} status {}: {}", status.name(), for_terminal(&message))
            }
            EventKind::Crashed => format!("{t:8.3}s {unit:<12} CRASHED (agent killed; its lease is left to expire)"),
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
        let _ = writeln!(std::io::stdout().lock(), "{}", event.to_json());
    }
}
