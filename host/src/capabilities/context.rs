//! `juju:charm/context`: who the hook runs for, logging, and workload status.
//!
//! Invariants: the answers never change within a hook; a log line or status reaches the
//! unit's event sink before the call returns.

use std::sync::Arc;

use crate::events::{LogLevel, WorkloadStatus};
use crate::hooks::HookKind;
use crate::reporter::UnitReporter;
use crate::runtime::bindings::context::{self, Host};

use super::CallRecorder;

/// What `juju:charm/context` sees: the hook it runs and where the unit reports.
pub(crate) struct ContextView {
    pub(crate) reporter: Arc<UnitReporter>,
    pub(crate) hook: HookKind,
    pub(crate) calls: CallRecorder,
}

impl Host for ContextView {
    fn unit_name(&mut self) -> String {
        let name = self.reporter.name().to_string();
        self.calls.note(|| "unit-name".into(), &name);
        name
    }

    fn application_name(&mut self) -> String {
        let app = self.reporter.name().app().to_string();
        self.calls.note(|| "application-name".into(), &app);
        app
    }

    fn hook_name(&mut self) -> String {
        let hook = self.hook.name().to_owned();
        self.calls.note(|| "hook-name".into(), &hook);
        hook
    }

    fn log(&mut self, level: context::LogLevel, message: String) {
        let level = match level {
            context::LogLevel::Debug => LogLevel::Debug,
            context::LogLevel::Info => LogLevel::Info,
            context::LogLevel::Warning => LogLevel::Warning,
            context::LogLevel::Error => LogLevel::Error,
        };
        self.calls.note(|| format!("log {} {message:?}", level.name()), &());
        self.reporter.log(level, message);
    }

    fn status_set(&mut self, status: context::WorkloadStatus, message: String) {
        let status = match status {
            context::WorkloadStatus::Maintenance => WorkloadStatus::Maintenance,
            context::WorkloadStatus::Waiting => WorkloadStatus::Waiting,
            context::WorkloadStatus::Blocked => WorkloadStatus::Blocked,
            context::WorkloadStatus::Active => WorkloadStatus::Active,
        };
        self.calls.note(|| format!("status-set {} {message:?}", status.name()), &());
        self.reporter.set_workload_status(status, message);
    }
}
