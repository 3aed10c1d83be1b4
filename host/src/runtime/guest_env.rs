//! What a unit's sandboxes read for time and randomness when a test decides them instead
//! of the machine: the WASI wall and monotonic clocks follow a host [`Clock`] (a
//! [`ManualClock`](crate::leadership::ManualClock) in virtual time), and the WASI random
//! sources are seeded. Its file operations run on the hook's own thread (not tokio's
//! blocking pool), so a test that waits for its runtime to be idle sees them.
//!
//! Invariants: the guest's monotonic clock reads the host clock's instants, so it never
//! goes back, and its sleeps end when the host clock reaches them (see `guest_clock`); its wall clock is a fixed instant plus the time the host clock has moved
//! since the environment was made; every hook of the unit draws from its own seeded stream
//! (seed, hook number), so a replay with the same seed gives every hook the same bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};

use crate::leadership::{Clock, Timestamp};

/// A unit's guest clocks and seeded randomness; see the module docs.
#[derive(Clone)]
pub struct GuestEnvironment {
    clock: Arc<dyn Clock>,
    /// The host clock's instant when the environment was made.
    start: Timestamp,
    /// The wall time the guest reads at `start`, since the Unix epoch.
    wall_at_start: Duration,
    seed: u64,
    hooks: Arc<AtomicU64>,
    /// Guest waits on the clock in progress (see [`Self::waiting_on_clock`]).
    waits: Arc<AtomicUsize>,
}

impl std::fmt::Debug for GuestEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestEnvironment").field("wall_at_start", &self.wall_at_start).field("seed", &self.seed).finish()
    }
}

impl GuestEnvironment {
    /// Guest clocks that follow `clock`, the wall clock reading `wall_at_start` (since the
    /// Unix epoch) now, and randomness seeded with `seed`.
    pub fn new(clock: Arc<dyn Clock>, wall_at_start: Duration, seed: u64) -> Self {
        let start = clock.now();
        Self { clock, start, wall_at_start, seed, hooks: Arc::default(), waits: Arc::default() }
    }

    /// The clock its guests read and sleep on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// How many of its guests' waits on the clock (a sleep, a timeout) are in progress:
    /// a hook that only waits for the clock to move waits for the test, not for work.
    pub fn waiting_on_clock(&self) -> usize {
        self.waits.load(Ordering::SeqCst)
    }

    pub(crate) fn waits(&self) -> &Arc<AtomicUsize> {
        &self.waits
    }

    /// Gives the next hook's sandbox these clocks and its own seeded random streams.
    pub(crate) fn apply(&self, builder: &mut WasiCtxBuilder) {
        let hook = self.hooks.fetch_add(1, Ordering::SeqCst);
        let stream = mix(mix(self.seed) ^ hook);
        builder
            // File I/O on the calling thread, not tokio's blocking pool: a test's runtime
            // then sees a hook that reads a file as busy, not idle.
            .allow_blocking_current_thread(true)
            .monotonic_clock(GuestMonotonic { clock: self.clock.clone() })
            .wall_clock(GuestWall { clock: self.clock.clone(), start: self.start, wall_at_start: self.wall_at_start })
            .secure_random(Xoshiro256PlusPlus::seed_from_u64(stream))
            .insecure_random(Xoshiro256PlusPlus::seed_from_u64(stream.rotate_left(17)))
            .insecure_random_seed(u128::from(stream) << 64 | u128::from(stream.rotate_left(31)));
    }
}

struct GuestMonotonic {
    clock: Arc<dyn Clock>,
}

impl HostMonotonicClock for GuestMonotonic {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.clock.now().as_nanos()
    }
}

struct GuestWall {
    clock: Arc<dyn Clock>,
    start: Timestamp,
    wall_at_start: Duration,
}

impl HostWallClock for GuestWall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.wall_at_start.saturating_add(self.clock.now().saturating_since(self.start))
    }
}

/// SplitMix64's finaliser: distinct inputs give unrelated outputs, so (seed, hook) pairs do
/// not collide the way a plain XOR of them would.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
