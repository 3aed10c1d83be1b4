//! Leadership hooks first: who gets an instance slot, and who gives way on the processors.
//!
//! A change of leader settings sets off a hook on every minion at once; a burst of unit data
//! sets off the leader's `unit-data-changed`, whose write sets off every minion again. On a
//! machine with few cores, a leader hook that shares the processors with dozens of running
//! minion hooks runs dozens of times slower, and the application waits for it (and a
//! `leader-deposed` would be held up behind them). So:
//! - **A reserved slot.** Hooks that carry a unit's leadership (`leader-elected`,
//!   `unit-data-changed`, `leader-deposed`) may also take one of a few slots no other hook
//!   takes, so they never queue behind minion hooks for an instance.
//! - **Others give way.** While a leadership hook runs, any other hook waits before it starts
//!   and pauses at its next epoch tick, until no leadership hook runs.
//! - **Bounded.** Giving way costs a hook at most [`GIVE_WAY_BUDGET`] of waiting over its
//!   whole life (then it runs regardless), so leaders that keep running hooks cannot starve
//!   their minions; and a leadership hook that waits for a slot makes nobody give way (no
//!   hook waits for one that waits for it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::hooks::HookKind;

/// The most a hook waits, over its whole life, for leadership hooks to finish.
pub(crate) const GIVE_WAY_BUDGET: Duration = Duration::from_millis(200);

/// Whether `hook` carries its unit's leadership (and goes first).
pub(crate) fn leads(hook: HookKind) -> bool {
    matches!(hook, HookKind::LeaderElected | HookKind::UnitDataChanged | HookKind::LeaderDeposed)
}

/// The instance slots of a runtime and the leadership lane.
#[derive(Debug)]
pub(crate) struct HookSlots {
    total: usize,
    general: Semaphore,
    reserved: Semaphore,
    lane: Arc<Lane>,
}

/// How many leadership hooks run, how many other hooks wait for them before they take a
/// slot, and a signal when no leadership hook runs.
#[derive(Debug, Default)]
pub(crate) struct Lane {
    running: AtomicUsize,
    waiting: AtomicUsize,
    clear: Notify,
}

/// A slot held by a running hook; a leadership hook's also counts it in the lane.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    lane: Option<&'a Lane>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.lane
            && lane.running.fetch_sub(1, Ordering::SeqCst) == 1
        {
            lane.clear.notify_waiters();
        }
    }
}

/// The runtime is shutting down: no slot will be given.
#[derive(Debug)]
pub(crate) struct Closed;

impl HookSlots {
    /// `total` slots, an eighth of them (at least one, when there are two or more) reserved
    /// for leadership hooks.
    pub fn new(total: usize) -> Self {
        let reserved = if total >= 2 { (total / 8).max(1) } else { 0 };
        Self {
            total,
            general: Semaphore::new(total - reserved),
            reserved: Semaphore::new(reserved),
            lane: Arc::default(),
        }
    }

    /// How many hooks have started: they hold a slot, or wait for leadership hooks to
    /// finish before they take one (a test harness that waits for hooks counts both).
    pub fn in_use(&self) -> usize {
        let held = self.total.saturating_sub(self.general.available_permits() + self.reserved.available_permits());
        held + self.lane.waiting.load(Ordering::SeqCst)
    }

    /// The lane, for the hook's epoch callback.
    pub fn lane(&self) -> &Arc<Lane> {
        &self.lane
    }

    /// A slot for a hook of kind `hook`: a leadership hook takes a reserved one if it can;
    /// another hook first gives way (within `budget`) to running leadership hooks.
    pub async fn acquire(&self, hook: HookKind, budget: &GiveWay) -> Result<Slot<'_>, Closed> {
        if leads(hook) {
            let permit = tokio::select! {
                biased;
                permit = self.reserved.acquire(), if self.reserved.available_permits() > 0 => permit,
                permit = self.general.acquire() => permit,
            }
            .map_err(|_| Closed)?;
            self.lane.running.fetch_add(1, Ordering::SeqCst);
            return Ok(Slot { _permit: permit, lane: Some(&self.lane) });
        }
        {
            // Counted while it waits, however the wait ends (a dropped request included).
            struct Waiting<'a>(&'a AtomicUsize);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            self.lane.waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(&self.lane.waiting);
            self.lane.give_way(budget).await;
        }
        let permit = self.general.acquire().await.map_err(|_| Closed)?;
        Ok(Slot { _permit: permit, lane: None })
    }
}

impl Lane {
    /// True while a leadership hook runs.
    pub fn busy(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0
    }

    /// Waits until no leadership hook runs, or `budget` is spent.
    pub async fn give_way(&self, budget: &GiveWay) {
        let Some(left) = budget.left() else { return };
        let start = Instant::now();
        let _ = tokio::time::timeout(left, async {
            loop {
                // Registered before the check: a notification in between is not lost.
                let cleared = self.clear.notified();
                if !self.busy() {
                    return;
                }
                cleared.await;
            }
        })
        .await;
        budget.spend(start.elapsed());
    }
}

/// What is left of one hook's budget for giving way ([`GIVE_WAY_BUDGET`]). Cheap to clone:
/// the hook's epoch callback and its slot request share it.
#[derive(Debug, Clone)]
pub(crate) struct GiveWay {
    spent_ns: Arc<AtomicU64>,
}

impl Default for GiveWay {
    fn default() -> Self {
        Self { spent_ns: Arc::new(AtomicU64::new(0)) }
    }
}

impl GiveWay {
    fn left(&self) -> Option<Duration> {
        let spent = Duration::from_nanos(self.spent_ns.load(Ordering::Relaxed));
        GIVE_WAY_BUDGET.checked_sub(spent).filter(|left| !left.is_zero())
    }

    fn spend(&self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.spent_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Whether this hook should pause now: a leadership hook runs and budget is left.
    pub fn should_pause(&self, lane: &Lane) -> bool {
        lane.busy() && self.left().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_leadership_hook_takes_a_reserved_slot_and_others_give_way_until_it_ends() {
        let slots = HookSlots::new(8);
        // Every general slot taken by minion hooks.
        let mut minions = Vec::new();
        for _ in 0..7 {
            minions.push(slots.acquire(HookKind::LeaderSettingsChanged, &GiveWay::default()).await.unwrap());
        }
        let leader = slots.acquire(HookKind::UnitDataChanged, &GiveWay::default()).await.unwrap();
        assert_eq!(slots.in_use(), 8, "the leader's hook did not queue behind the minions'");
        assert!(slots.lane().busy());
        drop(minions.pop());
        // A new minion hook waits for the leader's hook to end (well within its budget).
        let budget = GiveWay::default();
        let waiting = slots.acquire(HookKind::LeaderSettingsChanged, &budget);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut waiting).await.is_err(), "it gave way");
        assert_eq!(slots.in_use(), 8, "seven held and one waiting to start count as started");
        drop(leader);
        assert!(!slots.lane().busy());
        let slot = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("it went on").unwrap();
        assert_eq!(slots.in_use(), 7);
        drop(slot);
        // A request dropped while it gives way is no longer counted.
        let leader = slots.acquire(HookKind::LeaderDeposed, &GiveWay::default()).await.unwrap();
        let stop_budget = GiveWay::default();
        let dropped = slots.acquire(HookKind::Stop, &stop_budget);
        assert!(tokio::time::timeout(Duration::from_millis(20), dropped).await.is_err());
        assert_eq!(slots.in_use(), 7, "six minions and the leader");
        drop(leader);
        assert!(budget.left().is_some_and(|left| left < GIVE_WAY_BUDGET), "it spent some of its budget");
    }

    #[tokio::test]
    async fn giving_way_is_bounded_by_the_budget() {
        let slots = HookSlots::new(4);
        let _leader = slots.acquire(HookKind::LeaderElected, &GiveWay::default()).await.unwrap();
        let budget = GiveWay::default();
        let start = Instant::now();
        let _minion = slots.acquire(HookKind::Install, &budget).await.unwrap();
        assert!(start.elapsed() >= GIVE_WAY_BUDGET, "it waited its budget");
        assert!(!budget.should_pause(slots.lane()), "and pauses no more, the leader still running");
        let start = Instant::now();
        let _another = slots.acquire(HookKind::Install, &budget).await.unwrap();
        assert!(start.elapsed() < GIVE_WAY_BUDGET, "a spent budget waits no more");
    }

    #[test]
    fn one_slot_reserves_none() {
        let slots = HookSlots::new(1);
        assert_eq!(slots.reserved.available_permits(), 0);
        assert_eq!(slots.general.available_permits(), 1);
    }
}
