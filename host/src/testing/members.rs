//! The application's members as a test changes them: units that join and leave, and each
//! unit's own data (what the leader gathers), written and read as operators do.

use std::sync::Arc;

use super::{TestApp, TestAppError, TestUnit, WALL_CLOCK_START};
use crate::names::UnitName;
use crate::runtime::GuestEnvironment;
use crate::settings::Settings;

impl TestApp {
    /// A new unit joins the application (the next unit number): its agent starts, it
    /// installs, and the leader hears of it. Returns its index.
    pub fn add_unit(&mut self) -> Result<usize, TestAppError> {
        self.settle();
        let number = self.units.iter().map(|u| u.name.number()).max().map_or(0, |n| n.saturating_add(1));
        let name = UnitName::from_parts(self.setup.app.clone(), number);
        let seed = crate::runtime::guest_seed(self.setup.seed, u64::from(number));
        let guest = GuestEnvironment::new(self.world.clock.clone(), WALL_CLOCK_START, seed);
        let view = Arc::new(super::UnitStore::new(self.world.store.clone(), self.world.ledger.clone()));
        let index = self.units.len();
        self.units.push(TestUnit { name, view, guest, calls: Arc::default(), agent: None, last: None, machine: None });
        self.start_agent(index)?;
        self.settle();
        Ok(index)
    }

    /// Unit `i` leaves the application for good, as an operator's `charm-host remove-unit`
    /// after stopping its agent: it stops gracefully (if it runs), then its membership and
    /// data are removed in one step, and the leader hears of it.
    pub fn remove_unit(&mut self, i: usize) -> Result<(), TestAppError> {
        if self.unit(i)?.agent.is_some() {
            self.stop(i)?;
        }
        let (store, name) = (self.world.store.clone(), self.unit(i)?.name.clone());
        let removed = self.world.runtime.block_on(async move { store.remove_unit(&name).await });
        match removed {
            Ok(true) => {}
            Ok(false) => return Err(TestAppError::Step(format!("{} is not a member", self.units[i].name))),
            Err(e) => return Err(TestAppError::Step(e.to_string())),
        }
        self.settle();
        Ok(())
    }

    /// Writes a group of unit `i`'s own data through its hook tools, as an operator's
    /// `charm-host unit-set` does (its charm's own `unit-set` is the usual way).
    pub fn set_unit_data<K: Into<String>, V: Into<String>>(
        &mut self,
        i: usize,
        group: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), TestAppError> {
        self.settle();
        let group: Vec<(String, String)> = group.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let unit = self.running(i)?.unit().clone();
        self.world
            .runtime
            .block_on(async move { unit.unit_data().set_by(&group, None).await })
            .map_err(|e| TestAppError::Step(e.to_string()))?;
        self.settle();
        Ok(())
    }

    /// Unit `i`'s data as the store has it now; `None` if it is not a member.
    pub fn unit_data(&self, i: usize) -> Option<Settings> {
        let (store, name) = (self.world.store.clone(), self.units.get(i)?.name.clone());
        let data = self.world.runtime.block_on(async move { store.read_unit_data(&name).await }).ok().flatten()?;
        Some((*data.values).clone())
    }

    /// The application's members as the store knows them now (joined, not removed).
    pub fn members(&self) -> Vec<UnitName> {
        let (store, app) = (self.world.store.clone(), self.setup.app.clone());
        let changes = self.world.runtime.block_on(async move { store.unit_data_since(&app, 0).await });
        changes.map(|c| c.units.into_iter().map(|(unit, _)| unit).collect()).unwrap_or_default()
    }
}
