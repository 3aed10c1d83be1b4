//! `wasi:clocks/monotonic-clock` for every hook: the host's own answer where the unit has a
//! [`GuestEnvironment`] (a test in virtual time), wasmtime-wasi's otherwise.
//!
//! Invariants: without a guest environment every call goes to wasmtime-wasi's
//! implementation unchanged. With one, `now` reads the environment's clock and a
//! subscription (what a guest's sleep waits on) is a sleep on that clock: it ends only when
//! the clock reaches its instant, and while it waits the environment counts it
//! ([`GuestEnvironment::waiting_on_clock`]), so a test knows the hook waits for time, not
//! for work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Duration as WasiDuration, Instant};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::GuestEnvironment;
use super::sandbox::HookState;
use crate::leadership::{Clock, Timestamp};

/// The linker's view for the monotonic clock: the whole hook state (the clock needs the
/// WASI context, its resource table and the guest environment).
pub(crate) struct GuestClock;

impl HasData for GuestClock {
    type Data<'a> = &'a mut HookState;
}

/// Shadows wasmtime-wasi's monotonic clock in `linker` with [`GuestClock`]'s.
pub(crate) fn add_to_linker(linker: &mut wasmtime::component::Linker<HookState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = monotonic_clock::add_to_linker::<HookState, GuestClock>(linker, |state| state);
    linker.allow_shadowing(false);
    added
}

impl monotonic_clock::Host for &mut HookState {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        match self.guest_environment() {
            Some(environment) => Ok(environment.clock().now().as_nanos()),
            None => self.wasi_clocks().now(),
        }
    }

    fn resolution(&mut self) -> wasmtime::Result<Instant> {
        match self.guest_environment() {
            Some(_) => Ok(1),
            None => self.wasi_clocks().resolution(),
        }
    }

    fn subscribe_instant(&mut self, when: Instant) -> wasmtime::Result<Resource<DynPollable>> {
        match self.guest_environment().cloned() {
            Some(environment) => self.subscribe_to(&environment, Timestamp::from_nanos(when)),
            None => self.wasi_clocks().subscribe_instant(when),
        }
    }

    fn subscribe_duration(&mut self, duration: WasiDuration) -> wasmtime::Result<Resource<DynPollable>> {
        match self.guest_environment().cloned() {
            Some(environment) => {
                let at = environment.clock().now() + std::time::Duration::from_nanos(duration);
                self.subscribe_to(&environment, at)
            }
            None => self.wasi_clocks().subscribe_duration(duration),
        }
    }
}

impl HookState {
    /// wasmtime-wasi's clocks of this hook.
    fn wasi_clocks(&mut self) -> WasiClocksCtxView<'_> {
        let (ctx, table) = self.wasi_and_table();
        WasiClocksCtxView { ctx: ctx.clocks(), table }
    }

    fn subscribe_to(&mut self, environment: &GuestEnvironment, at: Timestamp) -> wasmtime::Result<Resource<DynPollable>> {
        let deadline = ClockDeadline { clock: environment.clock().clone(), at, waiting: environment.waits().clone() };
        let (_, table) = self.wasi_and_table();
        let resource = table.push(deadline)?;
        subscribe(table, resource)
    }
}

/// A guest's wait for an instant of the environment's clock.
struct ClockDeadline {
    clock: Arc<dyn Clock>,
    at: Timestamp,
    waiting: Arc<AtomicUsize>,
}

/// Counts one wait on the clock for as long as it lasts (also when it is dropped unfinished).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Pollable for ClockDeadline {
    async fn ready(&mut self) {
        if self.clock.now() >= self.at {
            // Due already: yield once, as wasmtime-wasi does for a past deadline, so a guest
            // polling in a loop lets other tasks run.
            tokio::task::yield_now().await;
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(self.waiting.clone());
        self.clock.sleep_until(self.at).await;
    }
}
