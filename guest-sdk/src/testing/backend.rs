//! The native answer to the SDK's host calls: the test unit whose hook runs on this thread.
//!
//! Invariants: a unit is installed only for the duration of one hook ([`Installed`] removes
//! it when the hook returns or panics); one hook runs per thread at a time; outside a hook,
//! a call that returns a `Result` fails with [`OUTSIDE_A_HOOK`] and one that cannot fail
//! panics with it, never with wit-bindgen's bare import stub.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use super::world::UnitState;
use crate::bindings::juju::charm::services::ServiceStatus;
use crate::{Error, LogLevel, Result, WorkloadStatus};

/// Why an SDK call has no answer.
pub(crate) const OUTSIDE_A_HOOK: &str = "charm_sdk was called outside a hook: natively (in `cargo test`), the \
     SDK answers only inside a hook that charm_sdk::testing runs (Unit::run, App::settle); \
     a component built with `cargo build --target wasm32-wasip2` gets its answers from the host";

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<UnitState>>>> = const { RefCell::new(None) };
}

/// The unit installed for one hook; dropping it uninstalls the unit.
pub(crate) struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

/// Makes `unit` answer this thread's SDK calls until the guard is dropped.
pub(crate) fn install(unit: Rc<RefCell<UnitState>>) -> Installed {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        if current.is_some() {
            panic!("charm_sdk::testing: a hook ran another test hook; run hooks one after the other");
        }
        *current = Some(unit);
    });
    Installed(())
}

fn with<T>(f: impl FnOnce(&mut UnitState) -> T) -> Option<T> {
    let unit = CURRENT.with(|current| current.borrow().clone())?;
    let mut unit = unit.borrow_mut();
    Some(f(&mut unit))
}

fn fallible<T>(f: impl FnOnce(&mut UnitState) -> Result<T>) -> Result<T> {
    with(f).unwrap_or_else(|| Err(Error::Failed(OUTSIDE_A_HOOK.to_owned())))
}

fn infallible<T>(f: impl FnOnce(&mut UnitState) -> T) -> T {
    with(f).unwrap_or_else(|| panic!("{OUTSIDE_A_HOOK}"))
}

pub(crate) fn unit_name() -> String {
    infallible(UnitState::unit_name)
}

pub(crate) fn application_name() -> String {
    infallible(UnitState::application_name)
}

pub(crate) fn hook_name() -> String {
    infallible(UnitState::hook_name)
}

pub(crate) fn log(level: LogLevel, message: &str) {
    infallible(|unit| unit.log(level, message));
}

pub(crate) fn status_set(status: WorkloadStatus, message: &str) {
    infallible(|unit| unit.status_set(status, message));
}

pub(crate) fn is_leader() -> Result<bool> {
    fallible(UnitState::is_leader)
}

pub(crate) fn leader_term() -> Result<Option<u64>> {
    fallible(UnitState::leader_term)
}

pub(crate) fn leader_get(key: &str) -> Result<Option<String>> {
    fallible(|unit| unit.leader_get(key))
}

pub(crate) fn leader_get_all() -> Result<Vec<(String, String)>> {
    fallible(UnitState::leader_get_all)
}

pub(crate) fn leader_set(group: &[(String, String)]) -> Result<()> {
    fallible(|unit| unit.leader_set(group))
}

pub(crate) fn unit_set(group: &[(String, String)]) -> Result<()> {
    fallible(|unit| unit.unit_set(group))
}

pub(crate) fn unit_get(of: &str, key: &str) -> Result<Option<String>> {
    fallible(|unit| unit.unit_get(of, key))
}

pub(crate) fn unit_get_all(of: &str) -> Result<Vec<(String, String)>> {
    fallible(|unit| unit.unit_get_all(of))
}

pub(crate) fn units() -> Result<Vec<String>> {
    fallible(UnitState::units)
}

pub(crate) fn service_start(name: &str) -> Result<()> {
    fallible(|unit| unit.service_start(name))
}

pub(crate) fn service_stop(name: &str) -> Result<()> {
    fallible(|unit| unit.service_stop(name))
}

pub(crate) fn service_status(name: &str) -> Result<ServiceStatus> {
    fallible(|unit| unit.service_status(name))
}

pub(crate) fn random_fill(buf: &mut [u8]) -> Result<()> {
    fallible(|unit| {
        unit.random_fill(buf);
        Ok(())
    })
}

pub(crate) fn data_dir() -> PathBuf {
    infallible(|unit| unit.data_dir.path().to_owned())
}
