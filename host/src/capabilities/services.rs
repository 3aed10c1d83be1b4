//! `juju:charm/services`: start, stop and inspect the services the operator configured.
//!
//! Invariants: a charm can name only configured services; a leader-only service starts only
//! while the unit's tracker guarantees leadership at the moment of the call; stopping returns
//! at once (SIGTERM now, SIGKILL after the grace period).

use crate::runtime::HookState;
use crate::runtime::bindings::services::{Host, ServiceError, ServiceStatus};
use crate::services::ServiceError as SupervisorError;

fn convert(err: SupervisorError) -> ServiceError {
    match err {
        SupervisorError::Unknown(name) => ServiceError::UnknownService(name),
        SupervisorError::NotLeader => ServiceError::NotLeader,
        SupervisorError::Failed(reason) => ServiceError::Failed(reason),
    }
}

impl Host for HookState {
    fn start(&mut self, name: String) -> Result<(), ServiceError> {
        let tracker = self.unit.tracker();
        self.unit.services().start(&name, || tracker.is_leader() == Ok(true)).map_err(convert)
    }

    fn stop(&mut self, name: String) -> Result<(), ServiceError> {
        self.unit.services().request_stop(&name).map_err(convert)
    }

    fn status(&mut self, name: String) -> Result<ServiceStatus, ServiceError> {
        let status = self.unit.services().status(&name).map_err(convert)?;
        Ok(ServiceStatus { name: status.name, running: status.running, pid: status.pid, leader_only: status.leader_only })
    }
}
