//! The record of a unit's host calls, kept only when a test asks for it (`TestApp`).
//!
//! Invariants: a call is recorded after it is answered, with that answer, in the order the
//! hook made it; a unit without a log pays one branch per call and records nothing.

use std::sync::{Arc, Mutex};

use crate::hooks::HookKind;

/// One host call a hook made, with its answer, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCall {
    /// The hook that made it.
    pub hook: HookKind,
    /// The call and its arguments, e.g. `leader-get "k"`.
    pub call: String,
    /// What it answered, e.g. `Ok(Some("v"))`.
    pub answer: String,
}

/// Every host call of one unit's hooks, in order.
#[derive(Debug, Default)]
pub struct HostCallLog {
    calls: Mutex<Vec<HostCall>>,
}

impl HostCallLog {
    /// A copy of every call so far (what `TestApp::calls` reads).
    #[cfg(feature = "testing")]
    pub fn calls(&self) -> Vec<HostCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn push(&self, call: HostCall) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

/// What a capability view needs to record its calls: the hook, and the unit's log if any.
#[derive(Debug, Clone)]
pub(crate) struct CallRecorder {
    pub(crate) hook: HookKind,
    pub(crate) log: Option<Arc<HostCallLog>>,
}

impl CallRecorder {
    /// Records `call` with `answer` (both formatted only when there is a log).
    #[inline]
    pub(crate) fn note<T: std::fmt::Debug>(&self, call: impl FnOnce() -> String, answer: &T) {
        if let Some(log) = &self.log {
            log.push(HostCall { hook: self.hook, call: call(), answer: format!("{answer:?}") });
        }
    }
}
