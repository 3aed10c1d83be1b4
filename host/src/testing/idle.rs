//! A tokio runtime that can tell when it has nothing left to do.
//!
//! Owns a multi-threaded runtime with one worker (the host requires the multi-threaded
//! flavour; one worker keeps a test's interleavings close to repeatable) and what its
//! worker's park and unpark callbacks report.
//!
//! Invariant: [`IdleRuntime::wait_idle`] returns only when the worker has parked (found no
//! task to run) with nothing in the runtime's injection queue, no unpark happened while it
//! looked, and the caller's `busy` check says nothing is in flight off the worker (a hook
//! waiting for a guest's real-time sleep, or for a file operation on tokio's blocking pool,
//! leaves the worker parked meanwhile: the caller counts running hooks). Work only arrives from the test's own calls (queued before
//! the wait begins), from work in flight, or from a timer of the virtual clock, which moves
//! only when the test moves it; so once idle, it stays idle until the test acts. (A
//! real-time tokio timer, like the host's hook deadline and stop grace, is work in flight
//! only while a hook runs.)

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a wait goes before it looks again (and at the time it has taken).
const IDLE_RECHECK: Duration = Duration::from_millis(5);

/// Whether the worker is parked, and how often it woke, under one lock.
#[derive(Debug, Default)]
struct Parking {
    state: Mutex<ParkState>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ParkState {
    parked: bool,
    unparks: u64,
}

impl Parking {
    fn set(&self, parked: bool) {
        let mut state = self.lock();
        state.parked = parked;
        if !parked {
            state.unparks = state.unparks.wrapping_add(1);
        }
        drop(state);
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ParkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct IdleRuntime {
    runtime: tokio::runtime::Runtime,
    parking: Arc<Parking>,
}

impl IdleRuntime {
    pub(crate) fn new() -> std::io::Result<Self> {
        let parking = Arc::new(Parking::default());
        let (on_park, on_unpark) = (parking.clone(), parking.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-app")
            .enable_all()
            .on_thread_park(move || on_park.set(true))
            .on_thread_unpark(move || on_unpark.set(false))
            .build()?;
        Ok(Self { runtime, parking })
    }

    /// Runs `future` to its end (on the calling thread; the tasks it spawns run on the
    /// worker).
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The runtime's handle, to spawn tasks on its worker.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Blocks until the worker is idle and `busy` is false (see the module docs).
    ///
    /// # Panics
    /// If that takes longer than `patience` (real time): something keeps the worker busy
    /// at one instant of the virtual clock, a loop that would otherwise hang the test.
    pub(crate) fn wait_idle(&self, busy: impl Fn() -> bool, patience: Duration) -> Result<(), Duration> {
        let started = Instant::now();
        loop {
            let waited = started.elapsed();
            if waited > patience {
                return Err(waited);
            }
            let state = self.parking.lock();
            let (state, _) = match self.parking.changed.wait_timeout_while(state, IDLE_RECHECK, |s| !s.parked) {
                Ok(woken) => woken,
                Err(poisoned) => poisoned.into_inner(),
            };
            let seen = *state;
            if !seen.parked {
                continue;
            }
            if busy() {
                // In flight off the worker: its end wakes the worker. The timeout only
                // bounds a wake missed between the check and the wait.
                let _ = self.parking.changed.wait_timeout_while(state, IDLE_RECHECK, |s| *s == seen);
                continue;
            }
            drop(state);
            if self.runtime.handle().metrics().global_queue_depth() > 0 {
                // Queued from outside the worker: it wakes for it.
                std::thread::yield_now();
                continue;
            }
            std::thread::yield_now();
            if *self.parking.lock() == seen && self.runtime.handle().metrics().global_queue_depth() == 0 && !busy() {
                return Ok(());
            }
        }
    }
}
