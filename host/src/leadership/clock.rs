//! The clock that decides lease expiry.
//!
//! Invariants: a [`Clock`] never goes backwards. [`MonotonicClock`] reads the system-wide
//! `CLOCK_MONOTONIC`, so every process on one machine reads the same timeline and a lease
//! expiry written by one process means the same instant to another (it restarts at boot;
//! stores that persist expiries must detect a reboot). [`ManualClock`] moves only when a
//! test advances it, and wakes every sleeper whose deadline it passes. [`BootClock`] also
//! counts time a machine spends suspended.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

pub use charm_rules::Timestamp;

/// A boxed future, as [`Clock::sleep_until`] returns.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source of monotonic time that leases are judged by.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
    /// Completes once [`Clock::now`] has reached `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;

    /// The wall-clock time of `at`, an instant of this clock: what events and the
    /// leadership history show. The machine's clocks map it through the realtime clock read
    /// now (so a wall-clock step moves it, never the lease decisions); a [`ManualClock`]
    /// through [`MANUAL_WALL_START`].
    fn wall_time(&self, at: Timestamp) -> SystemTime {
        let now = self.now();
        let wall = SystemTime::now();
        if at <= now {
            wall.checked_sub(now.saturating_since(at)).unwrap_or(UNIX_EPOCH).max(UNIX_EPOCH)
        } else {
            wall.checked_add(at.saturating_since(now)).unwrap_or(wall).max(UNIX_EPOCH)
        }
    }

    /// The wall-clock time now: [`Self::wall_time`] of [`Self::now`] (the machine's clocks
    /// read only the realtime clock for it).
    fn wall_now(&self) -> SystemTime {
        self.wall_time(self.now())
    }
}

/// The wall time a [`ManualClock`] reads at the instant it was created:
/// 2026-01-01T00:00:00Z, so that virtual runs print the same times every time.
pub const MANUAL_WALL_START: Duration = Duration::from_secs(1_767_225_600);

/// The machine's `CLOCK_MONOTONIC`, shared by every process on it.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn wall_now(&self) -> SystemTime {
        SystemTime::now().max(UNIX_EPOCH)
    }

    fn now(&self) -> Timestamp {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        Timestamp::from_nanos((ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64))
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let wait = deadline.saturating_since(self.now());
        Box::pin(tokio::time::sleep(wait))
    }
}

/// The machine's `CLOCK_BOOTTIME`: like [`MonotonicClock`], but it keeps counting while the
/// machine is suspended, so a holder that wakes from a suspend sees its guarantee gone
/// instead of believing it still leads. The clock of stores whose expiry another machine
/// decides (etcd): only this host's readings are compared with each other.
#[derive(Debug, Default, Clone, Copy)]
pub struct BootClock;

/// The longest a [`BootClock`] sleep waits before looking at the clock again: timers count
/// on `CLOCK_MONOTONIC`, which stops during a suspend, so a sleep across one would end late.
const BOOT_SLEEP_CHUNK: Duration = Duration::from_secs(1);

impl Clock for BootClock {
    fn wall_now(&self) -> SystemTime {
        SystemTime::now().max(UNIX_EPOCH)
    }

    fn now(&self) -> Timestamp {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Timestamp::from_nanos((ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64))
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let clock = *self;
        Box::pin(async move {
            loop {
                let wait = deadline.saturating_since(clock.now());
                if wait.is_zero() {
                    return;
                }
                tokio::time::sleep(wait.min(BOOT_SLEEP_CHUNK)).await;
            }
        })
    }
}

/// A clock that only moves when told to, for tests: no test sleeps to let a lease expire.
/// It knows the deadlines of its pending sleeps ([`Self::next_deadline`]), so a test can
/// move time from one to the next and let everything due at each run.
#[derive(Debug)]
pub struct ManualClock {
    /// Where it started: [`MANUAL_WALL_START`] on the wall.
    start: Timestamp,
    now: Mutex<Timestamp>,
    ticks: watch::Sender<Timestamp>,
    sleeps_started: std::sync::atomic::AtomicU64,
    /// Pending sleeps by deadline (how many wait for each).
    deadlines: Arc<Mutex<BTreeMap<Timestamp, usize>>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(Timestamp::from_nanos(1_000_000_000))
    }
}

/// A pending sleep's entry in [`ManualClock::deadlines`], removed when the sleep ends or is
/// dropped.
struct PendingDeadline {
    deadlines: Arc<Mutex<BTreeMap<Timestamp, usize>>>,
    at: Timestamp,
}

impl Drop for PendingDeadline {
    fn drop(&mut self) {
        let mut deadlines = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = deadlines.get_mut(&self.at) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                deadlines.remove(&self.at);
            }
        }
    }
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            start,
            now: Mutex::new(start),
            ticks: watch::channel(start).0,
            sleeps_started: Default::default(),
            deadlines: Default::default(),
        }
    }

    /// The earliest deadline a pending sleep waits for that has not come yet, if any:
    /// where time must move next for anything waiting on this clock to happen.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let now = self.now();
        let deadlines = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
        deadlines.range(now..).map(|(at, _)| *at).find(|at| *at > now)
    }

    /// Moves the clock forward to `at` (nothing if it is already there or past).
    pub fn advance_to(&self, at: Timestamp) {
        let by = at.saturating_since(self.now());
        if !by.is_zero() {
            self.advance(by);
        }
    }

    /// How many sleeps on this clock are pending now. With [`Self::sleeps_started`], tests
    /// wait for the event "every sleeper is blocked again" instead of sleeping for a while.
    pub fn sleepers(&self) -> usize {
        self.ticks.receiver_count()
    }

    /// How many sleeps were ever started on this clock.
    pub fn sleeps_started(&self) -> u64 {
        self.sleeps_started.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Moves the clock forward by `by` and wakes sleepers whose deadline has come.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = *now + by;
        self.ticks.send_replace(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wall_time(&self, at: Timestamp) -> SystemTime {
        UNIX_EPOCH + MANUAL_WALL_START + at.saturating_since(self.start)
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let mut ticks = self.ticks.subscribe();
        self.sleeps_started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.deadlines.lock().unwrap_or_else(|p| p.into_inner()).entry(deadline).or_default() += 1;
        let pending = PendingDeadline { deadlines: self.deadlines.clone(), at: deadline };
        Box::pin(async move {
            let _pending = pending;
            // The sender lives as long as the clock; if it is gone, nobody can advance it.
            let _ = ticks.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward() {
        let clock = MonotonicClock;
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now().saturating_since(a) >= Duration::from_millis(2));
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = std::sync::Arc::new(ManualClock::default());
        let deadline = clock.now() + Duration::from_secs(10);
        let sleeper = tokio::spawn(clock.sleep_until(deadline));
        clock.advance(Duration::from_secs(9));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        sleeper.await.unwrap();
    }

    #[tokio::test]
    async fn manual_clock_knows_the_next_deadline() {
        let clock = ManualClock::default();
        let start = clock.now();
        assert_eq!(clock.next_deadline(), None);
        let late = clock.sleep_until(start + Duration::from_secs(20));
        let early = clock.sleep_until(start + Duration::from_secs(5));
        assert_eq!(clock.next_deadline(), Some(start + Duration::from_secs(5)));
        drop(early);
        assert_eq!(clock.next_deadline(), Some(start + Duration::from_secs(20)));
        clock.advance_to(start + Duration::from_secs(20));
        late.await;
        assert_eq!(clock.next_deadline(), None, "an ended sleep is no longer pending");
    }
}
