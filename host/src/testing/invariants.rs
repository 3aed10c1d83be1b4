//! The invariants a [`TestApp`] checks after every step.
//!
//! - **One leader**: at most one unit's tracker vouches for leadership (`is-leader` true),
//!   copies of a unit started elsewhere counted apart. (A crashed agent's process is gone:
//!   it vouches for nothing, and its lease is left to expire.)
//! - **Terms only rise**: the lease's term is never lower than one seen before.
//! - **No stale-term write**: every write the store acknowledged was made by the unit that
//!   held the lease, under that lease's term, just before it (a second look at the store's
//!   own fence, from outside it).
//! - **No acknowledged write lost**: the settings are exactly what applying every
//!   acknowledged write in order makes, and their versions rise one by one.
//! - **One singleton**: a leader-only service runs on at most one unit.

use crate::settings::{Settings, SettingsWrite};

use super::TestApp;

/// What the checks remember between steps.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    highest_term: u64,
    writes_seen: usize,
    expected: Settings,
    last_version: Option<u64>,
}

impl Checks {
    /// Every violation now, described.
    pub(crate) fn check(&mut self, app: &TestApp) -> Vec<String> {
        let mut failures = Vec::new();
        let vouching: Vec<String> =
            (0..app.len()).filter(|&i| app.believes_it_leads(i)).map(|i| app.units[i].name.to_string()).collect();
        if vouching.len() > 1 {
            failures.push(format!("one leader: {} all vouch for leadership", vouching.join(", ")));
        }
        for service in app.setup.unit.services.services().iter().filter(|s| s.leader_only) {
            let running: Vec<String> = (0..app.len())
                .filter(|&i| app.service(i, &service.name).is_some_and(|s| s.running))
                .map(|i| app.units[i].name.to_string())
                .collect();
            if running.len() > 1 {
                failures.push(format!("one singleton: leader-only {} runs on {}", service.name, running.join(", ")));
            }
        }
        if let Some(term) = app.term() {
            if term < self.highest_term {
                failures.push(format!("terms only rise: the lease's term is {term} after {}", self.highest_term));
            }
            self.highest_term = self.highest_term.max(term);
        }
        // Only the writes since the last step: each is checked once, as it is applied.
        let writes = app.world.ledger.writes_since(self.writes_seen);
        for write in &writes {
            let fenced = write.lease_before.as_ref().is_some_and(|l| l.holder == write.writer && l.term == write.term);
            if !fenced {
                failures.push(format!(
                    "no stale-term write: {} wrote under term {} while the lease was {:?}",
                    write.writer, write.term, write.lease_before
                ));
            }
            match SettingsWrite::validate(&write.group, &self.expected) {
                Ok(valid) if !valid.is_noop_on(&self.expected) => {
                    valid.apply_to(&mut self.expected);
                    let expected_version = self.last_version.map_or(write.version, |v| v + 1);
                    if write.version != expected_version {
                        failures.push(format!(
                            "versions rise one by one: a write made version {} after {:?}",
                            write.version, self.last_version
                        ));
                    }
                    self.last_version = Some(write.version);
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("the store acknowledged an invalid write ({e}): {:?}", write.group)),
            }
        }
        self.writes_seen += writes.len();
        let settings = app.settings();
        if settings != self.expected {
            failures.push(format!(
                "no acknowledged write lost: the settings are {settings:?}, the acknowledged writes made {:?}",
                self.expected
            ));
        }
        failures
    }
}
