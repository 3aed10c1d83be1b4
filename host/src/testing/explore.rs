//! Seeded exploration: random schedules of steps on a [`TestApp`], the invariants checked
//! after each, and a failing seed reported with the command that replays it.
//!
//! Invariants: a schedule is a pure function of (seed, units, length), so a seed replays
//! the same steps; a step the application refuses at that point (electing a crashed unit,
//! stopping a stopped one) is part of the schedule and simply refused again on replay.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{TestApp, TestAppBuilder, TestAppError};

/// The environment variable that makes [`TestAppBuilder::explore`] replay one seed.
pub const SEED_VARIABLE: &str = "CHARM_TEST_SEED";

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// [`TestApp::settle`].
    Settle,
    /// [`TestApp::advance`].
    Advance(Duration),
    /// [`TestApp::elect`].
    Elect(usize),
    /// [`TestApp::step_down`].
    StepDown,
    /// [`TestApp::stop`].
    Stop(usize),
    /// [`TestApp::crash`].
    Crash(usize),
    /// [`TestApp::restart`].
    Restart(usize),
    /// [`TestApp::partition`].
    Partition(usize),
    /// [`TestApp::heal`].
    Heal(usize),
}

/// `length` random steps for an application of `units` units, from `seed`. Time moves in
/// steps of up to a minute, so schedules cross renewals, guarantee deadlines and expiries.
pub fn schedule(seed: u64, units: usize, length: usize) -> Vec<Step> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let units = units.max(1);
    (0..length)
        .map(|_| {
            let unit = rng.random_range(0..units);
            match rng.random_range(0..20) {
                0..=5 => Step::Advance(Duration::from_millis(rng.random_range(100..60_000))),
                6..=7 => Step::Elect(unit),
                8 => Step::StepDown,
                9 => Step::Stop(unit),
                10..=11 => Step::Crash(unit),
                12..=14 => Step::Restart(unit),
                15..=16 => Step::Partition(unit),
                17..=18 => Step::Heal(unit),
                _ => Step::Settle,
            }
        })
        .collect()
}

impl TestApp {
    /// Takes `step`; a step the application cannot take now is refused with an error.
    pub fn apply(&mut self, step: Step) -> Result<(), TestAppError> {
        match step {
            Step::Settle => self.settle(),
            Step::Advance(by) => self.advance(by),
            Step::Elect(i) => return self.elect(i).map(|_| ()),
            Step::StepDown => return self.step_down(),
            Step::Stop(i) => return self.stop(i),
            Step::Crash(i) => return self.crash(i),
            Step::Restart(i) => return self.restart(i),
            Step::Partition(i) => return self.partition(i),
            Step::Heal(i) => return self.heal(i),
        }
        Ok(())
    }
}

impl TestAppBuilder {
    /// Runs `seeds` random schedules of `length` steps (seeds `0..seeds`, or only the seed
    /// in `CHARM_TEST_SEED` when it is set), each on a fresh application built by this
    /// builder, with the invariants (and `check`, a test's own, after every step) checked
    /// throughout. Returns the number of steps taken.
    ///
    /// # Panics
    /// On the first violation, with the seed, the schedule up to the failing step, the
    /// failure, and the command that replays that seed.
    pub fn explore(&self, seeds: u64, length: usize, check: impl Fn(&TestApp) -> Result<(), String>) -> usize {
        let replay = std::env::var(SEED_VARIABLE).ok().and_then(|s| s.parse::<u64>().ok());
        let seeds: Vec<u64> = match replay {
            Some(seed) => vec![seed],
            None => (0..seeds).collect(),
        };
        let mut taken = 0;
        for seed in seeds {
            let steps = schedule(seed, self.units as usize, length);
            let mut done = Vec::new();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut app = match self.clone().build() {
                    Ok(app) => app,
                    Err(e) => return Err(format!("cannot build the application: {e}")),
                };
                for step in &steps {
                    done.push(*step);
                    let _refused = app.apply(*step);
                    check(&app)?;
                }
                Ok(())
            }));
            let failure = match outcome {
                Ok(Ok(())) => {
                    taken += steps.len();
                    continue;
                }
                Ok(Err(why)) => why,
                Err(panic) => panic_message(panic.as_ref()),
            };
            panic!("{}", report(seed, &done, &failure));
        }
        taken
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".into())
}

fn report(seed: u64, steps: &[Step], failure: &str) -> String {
    let test = std::thread::current().name().unwrap_or("TEST_NAME").to_owned();
    let steps: Vec<String> = steps.iter().enumerate().map(|(n, s)| format!("  {:>3}. {s:?}", n + 1)).collect();
    format!(
        "exploration failed with seed {seed} at step {}:\n{failure}\nsteps:\n{}\nreplay: {SEED_VARIABLE}={seed} cargo test -- --exact {test}",
        steps.len(),
        steps.join("\n")
    )
}
