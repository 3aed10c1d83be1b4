//! `juju:charm/services`: start, stop and inspect the services the operator configured.
//!
//! Invariants: a charm can name only configured services; a leader-only service starts only
//! while the unit's leadership is guaranteed leadership at the moment of the call; stopping returns
//! at once (SIGTERM now, SIGKILL after the grace period).

use std::sync::Arc;

use crate::runtime::bindings::services::{Host, ServiceError, ServiceStatus};
use crate::services::{ServiceError as SupervisorError, ServiceSupervisor};
use crate::tracker::LeadershipHandle;

use super::CallRecorder;

/// What `juju:charm/services` sees: the unit's supervisor, and its leadership to check
/// when a leader-only service is started.
pub(crate) struct ServicesView {
    pub(crate) supervisor: Arc<ServiceSupervisor>,
    pub(crate) leadership: LeadershipHandle,
    pub(crate) calls: CallRecorder,
}

fn convert(err: SupervisorError) -> ServiceError {
    match err {
        SupervisorError::Unknown(name) => ServiceError::UnknownService(name),
        SupervisorError::NotLeader => ServiceError::NotLeader,
        SupervisorError::Failed(reason) => ServiceError::Failed(reason),
    }
}

impl Host for ServicesView {
    fn start(&mut self, name: String) -> Result<(), ServiceError> {
        let leadership = &self.leadership;
        let answer = self.supervisor.start(&name, || leadership.is_leader() == Ok(true)).map_err(convert);
        self.calls.note(|| format!("services.start {name:?}"), &answer);
        answer
    }

    fn stop(&mut self, name: String) -> Result<(), ServiceError> {
        let answer = self.supervisor.request_stop(&name).map_err(convert);
        self.calls.note(|| format!("services.stop {name:?}"), &answer);
        answer
    }

    fn status(&mut self, name: String) -> Result<ServiceStatus, ServiceError> {
        let answer = self.supervisor.status(&name).map_err(convert).map(|status| ServiceStatus {
            name: status.name,
            running: status.running,
            pid: status.pid,
            leader_only: status.leader_only,
        });
        self.calls.note(|| format!("services.status {name:?}"), &answer);
        answer
    }
}
