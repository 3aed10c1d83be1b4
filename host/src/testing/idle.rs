//! A tokio runtime that can tell when it has nothing left to do.
//!
//! Owns a multi-threaded runtime with one worker (the host requires the multi-threaded
//! flavour; one worker keeps a test's interleavings close to repeatable) and what its
//! worker's park and unpark callbacks report.
//!
//! Invariant: [`IdleRuntime::wait_idle`] returns only when the worker has parked (found no
//! task to run) with nothing in the runtime's injection queue, no unpark happened while it
//! looked, and the caller's `busy` check says nothing is in flight off the worker (a hook
//! whose file I/O runs on tokio's blocking pool leaves the worker parked meanwhile: the
//! caller counts running hooks). Work only arrives from the test's own calls (queued before
//! the wait begins), from work in flight, or from a timer of the virtual clock, which moves
//! only when the test moves it; so once idle, it stays idle until the test acts. (A
//! real-time tokio timer, like the host's hook deadline and stop grace, is work in flight
//! only while a hook runs.)

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// How long a wait for work in flight goes before it looks again.
const BUSY_RECHECK: std::time::Duration = std::time::Duration::from_millis(5);

/// Whether the worker is parked, and how often it woke.
#[derive(Debug, Default)]
struct Parking {
    parked: Mutex<bool>,
    changed: Condvar,
    unparks: AtomicU64,
}

impl Parking {
    fn set(&self, parked: bool) {
        if !parked {
            self.unparks.fetch_add(1, Ordering::SeqCst);
        }
        *self.parked.lock().unwrap_or_else(|p| p.into_inner()) = parked;
        self.changed.notify_all();
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
    pub(crate) fn wait_idle(&self, busy: impl Fn() -> bool) {
        loop {
            let parked = self.parking.parked.lock().unwrap_or_else(|p| p.into_inner());
            let parked = match self.parking.changed.wait_while(parked, |parked| !*parked) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let unparks = self.parking.unparks.load(Ordering::SeqCst);
            if busy() {
                // In flight off the worker: its end wakes the worker. The timeout only
                // bounds a wake missed between the check and the wait.
                let _ = self.parking.changed.wait_timeout_while(parked, BUSY_RECHECK, |_| {
                    self.parking.unparks.load(Ordering::SeqCst) == unparks
                });
                continue;
            }
            drop(parked);
            if self.runtime.handle().metrics().global_queue_depth() > 0 {
                // Queued from outside the worker: it wakes for it.
                std::thread::yield_now();
                continue;
            }
            std::thread::yield_now();
            let still_parked = *self.parking.parked.lock().unwrap_or_else(|p| p.into_inner());
            if still_parked
                && self.parking.unparks.load(Ordering::SeqCst) == unparks
                && self.runtime.handle().metrics().global_queue_depth() == 0
                && !busy()
            {
                return;
            }
        }
    }
}
