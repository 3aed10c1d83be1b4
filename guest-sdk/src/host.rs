//! The seam between the SDK's public functions and whatever answers them.
//!
//! Invariant: every call a charm makes to its host goes through exactly one function of
//! this module, with the same signature on every target:
//! - in the component (`wasm32`), to the `juju:charm` imports the host provides;
//! - natively (a charm's own `cargo test`), to [`crate::testing`]'s backend, which answers
//!   for the unit whose hook runs on this thread, and fails with a message saying why when
//!   no hook runs (never wit-bindgen's bare import stub).

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::backend::*;
#[cfg(target_arch = "wasm32")]
pub(crate) use component::*;

#[cfg(target_arch = "wasm32")]
mod component {
    use std::path::PathBuf;

    use crate::bindings::juju::charm::{context, leadership, services};
    use crate::{Error, LogLevel, Result, WorkloadStatus};

    pub(crate) fn unit_name() -> String {
        context::unit_name()
    }

    pub(crate) fn application_name() -> String {
        context::application_name()
    }

    pub(crate) fn hook_name() -> String {
        context::hook_name()
    }

    pub(crate) fn log(level: LogLevel, message: &str) {
        context::log(level, message);
    }

    pub(crate) fn status_set(status: WorkloadStatus, message: &str) {
        context::status_set(status, message);
    }

    pub(crate) fn is_leader() -> Result<bool> {
        Ok(leadership::is_leader()?)
    }

    pub(crate) fn leader_term() -> Result<Option<u64>> {
        Ok(leadership::leader_term()?)
    }

    pub(crate) fn leader_get(key: &str) -> Result<Option<String>> {
        Ok(leadership::leader_get(key)?)
    }

    pub(crate) fn leader_get_all() -> Result<Vec<(String, String)>> {
        Ok(leadership::leader_get_all()?)
    }

    pub(crate) fn leader_set(group: &[(String, String)]) -> Result<()> {
        Ok(leadership::leader_set(group)?)
    }

    pub(crate) fn unit_set(group: &[(String, String)]) -> Result<()> {
        Ok(leadership::unit_set(group)?)
    }

    pub(crate) fn unit_get(unit: &str, key: &str) -> Result<Option<String>> {
        Ok(leadership::unit_get(unit, key)?)
    }

    pub(crate) fn unit_get_all(unit: &str) -> Result<Vec<(String, String)>> {
        Ok(leadership::unit_get_all(unit)?)
    }

    pub(crate) fn units() -> Result<Vec<String>> {
        Ok(leadership::units()?)
    }

    pub(crate) fn service_start(name: &str) -> Result<()> {
        Ok(services::start(name)?)
    }

    pub(crate) fn service_stop(name: &str) -> Result<()> {
        Ok(services::stop(name)?)
    }

    pub(crate) fn service_status(name: &str) -> Result<services::ServiceStatus> {
        Ok(services::status(name)?)
    }

    pub(crate) fn random_fill(buf: &mut [u8]) -> Result<()> {
        getrandom::fill(buf).map_err(|e| Error::Failed(format!("no randomness available: {e}")))
    }

    /// The host mounts the unit's data directory as the sandbox's only filesystem, at `/`.
    pub(crate) fn data_dir() -> PathBuf {
        PathBuf::from("/")
    }
}
