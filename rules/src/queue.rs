//! The hook queue of one unit: which hook runs next, as a pure state machine.
//!
//! It is told what happened (leadership gained at a term, lost, settings changed, stop
//! requested, a hook finished) and answers what to run next. Guarantees:
//! - `install` runs first; nothing else runs until it has succeeded (only `stop` may
//!   come first, and then nothing follows).
//! - `leader-deposed` runs as soon as the unit loses leadership it had, before anything
//!   else; `stop` follows it on a graceful stop; nothing leadership-related runs after a
//!   stop is requested.
//! - `leader-elected` runs once per tenure (term) that this unit has not yet been told of
//!   (it survives restarts through [`LocalState`]); `leader-settings-changed` runs when the
//!   unit becomes a minion and after settings change, any burst making one hook.
//! - `unit-data-changed` runs only on the leader, after `leader-elected`, when told that
//!   other units' data changed during its tenure ([`HookQueue::on_unit_data`]), any burst
//!   making one hook; a new tenure forgets what was announced before (its `leader-elected`
//!   sees everything). Which units changed is the caller's to keep.
//! - Every leadership hook carries the term it was queued under; it is dropped, not run,
//!   if that term is stale when it would start.
//! - `update-status` runs on every unit once installed, when its period comes
//!   ([`HookQueue::on_update_status`]), after everything else that is queued; periods that
//!   pass while it waits or runs make one hook; a failed one is not retried (the next period
//!   runs it again), and none runs once a stop is requested.
//! - A failed hook stays queued and is retried after a capped exponential backoff; other
//!   queued events are kept meanwhile. During a stop, nothing is retried.

use std::time::Duration;

use crate::hooks::HookKind;
use crate::time::Timestamp;

/// How often `update-status` runs on each unit unless configured otherwise: Juju's
/// default, 5 minutes.
pub const DEFAULT_UPDATE_STATUS_INTERVAL: Duration = Duration::from_secs(300);

/// What a unit remembers across restarts of its agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LocalState {
    /// `install` has succeeded.
    pub installed: bool,
    /// The last term this unit ran `leader-elected` for successfully.
    pub last_elected_term: Option<u64>,
    /// The settings version the last successful `leader-settings-changed` saw.
    pub settings_version_seen: Option<u64>,
}

/// Retry timing for failed hooks: a first delay of at least [`Backoff::MIN_BASE`] (a
/// failing hook never retries in a loop), doubling up to a cap no shorter than it. Only
/// [`Backoff::new`] makes one, so every path gets the rule checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(1), cap: Duration::from_secs(60) }
    }
}

/// Why a retry timing was refused: see [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBackoff {
    /// The first delay asked for.
    pub base: Duration,
    /// The cap asked for.
    pub cap: Duration,
}

impl std::fmt::Display for InvalidBackoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hook retry backoff {:?} up to {:?}: the first delay must be at least {:?} and the cap no shorter than it",
            self.base,
            self.cap,
            Backoff::MIN_BASE
        )
    }
}

impl std::error::Error for InvalidBackoff {}

impl Backoff {
    /// The shortest first delay accepted.
    pub const MIN_BASE: Duration = Duration::from_millis(10);

    /// Retries after `base`, doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Result<Self, InvalidBackoff> {
        if base < Self::MIN_BASE || cap < base {
            return Err(InvalidBackoff { base, cap });
        }
        Ok(Self { base, cap })
    }

    /// The delay before the first retry.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay between retries.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The delay before retry number `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        crate::time::backoff(self.base, self.cap, attempt)
    }
}

/// A hook to run now, with the term it was queued under (for leadership hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedHook {
    /// The hook.
    pub hook: HookKind,
    /// The term it belongs to: the tenure gained (`leader-elected`) or lost (`leader-deposed`).
    pub term: Option<u64>,
}

/// What the queue says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run this hook, then report it with [`HookQueue::finished`].
    Run(QueuedHook),
    /// A failed hook is waiting for its retry at this instant.
    WaitUntil(Timestamp),
    /// Nothing to do until something happens.
    Idle,
    /// The stop sequence is complete: the unit may give up leadership and exit.
    Stopped,
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    hook: HookKind,
    attempts: u32,
    not_before: Timestamp,
}

/// One unit's queue. See the module docs.
#[derive(Debug)]
pub struct HookQueue {
    local: LocalState,
    backoff: Backoff,
    /// The tenure the unit holds now, as last told.
    leader: Option<u64>,
    /// Told at least once whether the unit leads.
    role_known: bool,
    elected: Option<u64>,
    deposed: Option<u64>,
    settings: bool,
    /// Other units' data changed during the current tenure, unannounced.
    unit_data: bool,
    /// An `update-status` period came and its hook has not run yet.
    update_status: bool,
    stop_requested: bool,
    stop_done: bool,
    retry: Option<Retry>,
    /// The settings version announced most recently.
    settings_version: Option<u64>,
    /// Hooks dropped as stale, for reporting.
    dropped: Vec<QueuedHook>,
}

impl HookQueue {
    /// A queue for a unit that remembers `local`.
    pub fn new(local: LocalState, backoff: Backoff) -> Self {
        Self {
            local,
            backoff,
            leader: None,
            role_known: false,
            elected: None,
            deposed: None,
            settings: false,
            unit_data: false,
            update_status: false,
            stop_requested: false,
            stop_done: false,
            retry: None,
            settings_version: None,
            dropped: Vec::new(),
        }
    }

    /// What the unit remembers now; persist it after every hook.
    pub fn local_state(&self) -> &LocalState {
        &self.local
    }

    /// The unit holds leadership at `term`.
    pub fn on_leader(&mut self, term: u64) {
        if self.leader == Some(term) {
            return;
        }
        // Back in the lead before an older tenure's deposed hook ran: that hook is stale.
        if let Some(old) = self.deposed.take_if(|old| *old < term) {
            self.dropped.push(QueuedHook { hook: HookKind::LeaderDeposed, term: Some(old) });
        }
        self.leader = Some(term);
        self.role_known = true;
        self.settings = false;
        if self.local.last_elected_term != Some(term) {
            self.elected = Some(term);
            // `leader-elected` sees every unit's data: nothing before it is owed.
            self.unit_data = false;
        }
    }

    /// Other units' data or membership changed: the leader hears of it in one
    /// `unit-data-changed`, however many changes come before it runs. Ignored unless the
    /// unit leads.
    pub fn on_unit_data(&mut self) {
        if self.leader.is_some() {
            self.unit_data = true;
        }
    }

    /// True while a `unit-data-changed` is owed.
    pub fn unit_data_pending(&self) -> bool {
        self.unit_data
    }

    /// The unit does not hold leadership (or cannot guarantee it any more).
    pub fn on_minion(&mut self) {
        let was_known = self.role_known;
        self.role_known = true;
        self.unit_data = false;
        if let Some(term) = self.leader.take() {
            if self.elected.take().is_some() {
                self.dropped.push(QueuedHook { hook: HookKind::LeaderElected, term: Some(term) });
            }
            self.deposed = Some(term);
            self.settings = true;
        } else if !was_known {
            // First news after (re)start: tell the minion unless it saw these settings before.
            self.settings =
                self.settings_version.is_none() || self.settings_version != self.local.settings_version_seen;
        }
    }

    /// An `update-status` period came: one hook runs once nothing else is queued, however
    /// many periods come before it starts.
    pub fn on_update_status(&mut self) {
        self.update_status = true;
    }

    /// The leader settings reached `version`.
    pub fn on_settings(&mut self, version: u64) {
        let changed = self.settings_version.is_some_and(|v| v != version);
        self.settings_version = Some(version);
        if self.leader.is_none() && self.role_known && changed {
            self.settings = true;
        }
    }

    /// A graceful stop was requested: if leader, the caller also stops claiming and calls
    /// [`Self::on_minion`], so `leader-deposed` runs before `stop`.
    pub fn on_stop(&mut self) {
        self.stop_requested = true;
    }

    /// True while a `leader-deposed` is owed (the unit lost leadership it was told of).
    pub fn deposed_pending(&self) -> bool {
        self.deposed.is_some()
    }

    /// Hooks dropped as stale since the last call.
    pub fn take_dropped(&mut self) -> Vec<QueuedHook> {
        std::mem::take(&mut self.dropped)
    }

    /// What to do at `now`, given the term this unit can still prove it holds.
    pub fn next(&mut self, now: Timestamp, held_term: Option<u64>) -> Next {
        if self.stop_done {
            return Next::Stopped;
        }
        let candidate = if !self.local.installed {
            if self.stop_requested {
                self.stop_done = true;
                return Next::Stopped;
            }
            Some(QueuedHook { hook: HookKind::Install, term: None })
        } else if let Some(term) = self.deposed {
            Some(QueuedHook { hook: HookKind::LeaderDeposed, term: Some(term) })
        } else if self.stop_requested {
            Some(QueuedHook { hook: HookKind::Stop, term: None })
        } else if let Some(term) = self.elected {
            if held_term != Some(term) {
                self.elected = None;
                self.dropped.push(QueuedHook { hook: HookKind::LeaderElected, term: Some(term) });
                return self.next(now, held_term);
            }
            Some(QueuedHook { hook: HookKind::LeaderElected, term: Some(term) })
        } else if let Some(term) = self.leader.filter(|_| self.unit_data) {
            if held_term != Some(term) {
                self.unit_data = false;
                self.dropped.push(QueuedHook { hook: HookKind::UnitDataChanged, term: Some(term) });
                return self.next(now, held_term);
            }
            Some(QueuedHook { hook: HookKind::UnitDataChanged, term: Some(term) })
        } else if self.settings && self.leader.is_none() && self.role_known {
            Some(QueuedHook { hook: HookKind::LeaderSettingsChanged, term: None })
        } else if self.update_status {
            Some(QueuedHook { hook: HookKind::UpdateStatus, term: None })
        } else {
            None
        };
        let Some(queued) = candidate else { return Next::Idle };
        match self.retry {
            Some(retry) if retry.hook == queued.hook && now < retry.not_before && !self.stop_requested => {
                Next::WaitUntil(retry.not_before)
            }
            _ => {
                // The hook covers everything announced so far; later news queues it again.
                match queued.hook {
                    HookKind::LeaderSettingsChanged => self.settings = false,
                    // `leader-elected` sees every unit's data as of its start.
                    HookKind::LeaderElected => {
                        self.elected = None;
                        self.unit_data = false;
                    }
                    HookKind::UnitDataChanged => self.unit_data = false,
                    HookKind::UpdateStatus => self.update_status = false,
                    HookKind::LeaderDeposed => self.deposed = None,
                    HookKind::Install | HookKind::Stop => {}
                }
                Next::Run(queued)
            }
        }
    }

    /// Reports how the hook [`Self::next`] returned went. `settings_version` is the version
    /// announced when the hook started (what a `leader-settings-changed` saw).
    pub fn finished(&mut self, queued: QueuedHook, ok: bool, now: Timestamp, settings_version: Option<u64>) {
        // The next period is an `update-status`'s retry.
        if ok || self.stop_requested || queued.hook == HookKind::UpdateStatus {
            if self.retry.is_some_and(|r| r.hook == queued.hook) {
                self.retry = None;
            }
        } else {
            let attempts = self.retry.filter(|r| r.hook == queued.hook).map_or(1, |r| r.attempts + 1);
            self.retry = Some(Retry { hook: queued.hook, attempts, not_before: now + self.backoff.delay(attempts) });
            match queued.hook {
                HookKind::LeaderSettingsChanged => self.settings = true,
                HookKind::LeaderElected => self.elected = self.elected.or(queued.term),
                HookKind::LeaderDeposed => self.deposed = self.deposed.or(queued.term),
                // Retried only within the tenure it was for.
                HookKind::UnitDataChanged => self.unit_data |= self.leader.is_some() && self.leader == queued.term,
                // Not retried: handled above.
                HookKind::UpdateStatus | HookKind::Install | HookKind::Stop => {}
            }
            return;
        }
        match queued.hook {
            HookKind::Install if ok => self.local.installed = true,
            HookKind::LeaderElected if ok => self.local.last_elected_term = queued.term,
            HookKind::LeaderSettingsChanged if ok => self.local.settings_version_seen = settings_version,
            HookKind::Stop => self.stop_done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HookKind::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_nanos(s * 1_000_000_000)
    }

    fn run(q: &mut HookQueue, now: Timestamp, held: Option<u64>, ok: bool, version: Option<u64>) -> Option<HookKind> {
        match q.next(now, held) {
            Next::Run(h) => {
                q.finished(h, ok, now, version);
                Some(h.hook)
            }
            _ => None,
        }
    }

    fn drain(q: &mut HookQueue, now: Timestamp, held: Option<u64>) -> Vec<HookKind> {
        std::iter::from_fn(|| run(q, now, held, true, Some(0))).take(20).collect()
    }

    #[test]
    fn fresh_leader_and_minion() {
        let mut leader = HookQueue::new(LocalState::default(), Backoff::default());
        leader.on_settings(0);
        leader.on_leader(1);
        assert_eq!(drain(&mut leader, at(0), Some(1)), [Install, LeaderElected]);
        let mut minion = HookQueue::new(LocalState::default(), Backoff::default());
        minion.on_settings(0);
        minion.on_minion();
        assert_eq!(drain(&mut minion, at(0), None), [Install, LeaderSettingsChanged]);
        // Settings changes: one hook per burst, none for the leader.
        minion.on_settings(1);
        minion.on_settings(2);
        leader.on_settings(2);
        assert_eq!(drain(&mut minion, at(0), None), [LeaderSettingsChanged]);
        assert_eq!(drain(&mut leader, at(0), Some(1)), []);
    }

    #[test]
    fn update_status_comes_last_coalesces_and_is_not_retried() {
        let mut q = HookQueue::new(LocalState::default(), Backoff::default());
        q.on_settings(0);
        q.on_update_status(); // before install: waits for it
        q.on_minion();
        assert_eq!(drain(&mut q, at(0), None), [Install, LeaderSettingsChanged, UpdateStatus]);
        // Periods that pass before it starts make one hook; news queued meanwhile goes first.
        q.on_update_status();
        q.on_update_status();
        q.on_settings(1);
        assert_eq!(drain(&mut q, at(1), None), [LeaderSettingsChanged, UpdateStatus]);
        // A period that comes while it runs makes one more; a failure waits for the next period.
        q.on_update_status();
        let Next::Run(running) = q.next(at(2), None) else { panic!() };
        q.on_update_status();
        q.finished(running, false, at(2), Some(1));
        assert_eq!(drain(&mut q, at(2), None), [UpdateStatus], "the period that came meanwhile, no retry");
        assert_eq!(run(&mut q, at(3), None, false, Some(1)), None, "nothing owed after a failure");
        // Not during a stop.
        q.on_update_status();
        q.on_stop();
        assert_eq!(drain(&mut q, at(4), None), [Stop]);
    }

    #[test]
    fn nothing_before_install_and_a_change_during_a_hook_queues_one_more() {
        let mut q = HookQueue::new(LocalState::default(), Backoff::default());
        q.on_settings(0);
        q.on_minion();
        assert_eq!(q.next(at(0), None), Next::Run(QueuedHook { hook: Install, term: None }));
        q.on_settings(1); // during install
        q.finished(QueuedHook { hook: Install, term: None }, true, at(0), Some(0));
        let Next::Run(lsc) = q.next(at(0), None) else { panic!() };
        q.on_settings(2);
        q.on_settings(3);
        q.finished(lsc, true, at(0), Some(1));
        assert_eq!(drain(&mut q, at(0), None), [LeaderSettingsChanged]);
        assert_eq!(q.local_state().settings_version_seen, Some(0));
    }

    #[test]
    fn deposed_runs_first_and_stale_elected_is_dropped() {
        let mut q = HookQueue::new(LocalState { installed: true, ..LocalState::default() }, Backoff::default());
        q.on_settings(0);
        q.on_leader(1);
        // Lost before leader-elected could start: dropped, and deposed runs instead.
        q.on_minion();
        assert_eq!(drain(&mut q, at(0), None), [LeaderDeposed, LeaderSettingsChanged]);
        assert_eq!(q.take_dropped(), [QueuedHook { hook: LeaderElected, term: Some(1) }]);
        // Elected at term 2, but the tracker no longer holds term 2 when the hook would start.
        q.on_leader(2);
        assert_eq!(drain(&mut q, at(0), None), []);
        assert_eq!(q.take_dropped(), [QueuedHook { hook: LeaderElected, term: Some(2) }]);
    }

    #[test]
    fn graceful_stop_runs_deposed_then_stop() {
        let mut q = HookQueue::new(LocalState::default(), Backoff::default());
        q.on_settings(0);
        q.on_leader(3);
        assert_eq!(drain(&mut q, at(0), Some(3)), [Install, LeaderElected]);
        q.on_stop();
        q.on_minion();
        assert_eq!(drain(&mut q, at(0), None), [LeaderDeposed, Stop]);
        assert_eq!(q.next(at(0), None), Next::Stopped);
    }

    #[test]
    fn failed_hooks_retry_with_capped_backoff() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4)).unwrap();
        assert!(
            Backoff::new(Duration::ZERO, Duration::from_secs(4)).is_err(),
            "a zero first delay would retry in a loop"
        );
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err(), "a cap below the first delay");
        let mut q = HookQueue::new(LocalState::default(), backoff);
        q.on_settings(0);
        q.on_minion();
        let mut now = at(100);
        let mut waits = Vec::new();
        for _ in 0..5 {
            assert_eq!(run(&mut q, now, None, false, None), Some(Install));
            let Next::WaitUntil(until) = q.next(now, None) else { panic!("backing off") };
            waits.push(until.saturating_since(now).as_secs());
            now = until;
        }
        assert_eq!(waits, [1, 2, 4, 4, 4]);
        q.on_settings(1); // queued events are kept meanwhile
        assert_eq!(drain(&mut q, now, None), [Install, LeaderSettingsChanged]);
    }

    #[test]
    fn unit_data_changes_reach_only_the_leader_once_per_burst_after_elected() {
        let mut q = HookQueue::new(LocalState::default(), Backoff::default());
        q.on_settings(0);
        q.on_minion();
        q.on_unit_data();
        assert_eq!(drain(&mut q, at(0), None), [Install, LeaderSettingsChanged], "never on a minion");
        q.on_unit_data(); // before the tenure, and before leader-elected starts: it sees them
        q.on_leader(1);
        q.on_unit_data();
        assert_eq!(drain(&mut q, at(0), Some(1)), [LeaderElected]);
        let mut q = HookQueue::new(LocalState { installed: true, ..LocalState::default() }, Backoff::default());
        q.on_settings(0);
        q.on_leader(2);
        let Next::Run(elected) = q.next(at(0), Some(2)) else { panic!() };
        q.on_unit_data(); // during leader-elected: announced after it
        q.finished(elected, true, at(0), Some(0));
        q.on_unit_data();
        q.on_unit_data();
        assert_eq!(drain(&mut q, at(0), Some(2)), [UnitDataChanged], "a burst is one hook");
        // A failed one is retried; a lost tenure drops it.
        q.on_unit_data();
        assert_eq!(run(&mut q, at(0), Some(2), false, None), Some(UnitDataChanged));
        assert!(q.unit_data_pending());
        q.on_minion();
        assert!(!q.unit_data_pending());
        assert_eq!(drain(&mut q, at(100), None), [LeaderDeposed, LeaderSettingsChanged]);
        // Stale when it would start: dropped.
        q.on_leader(3);
        assert_eq!(drain(&mut q, at(100), Some(3)), [LeaderElected]);
        q.on_unit_data();
        assert_eq!(drain(&mut q, at(100), None), []);
        assert_eq!(q.take_dropped(), [QueuedHook { hook: UnitDataChanged, term: Some(3) }]);
    }

    #[test]
    fn a_restart_remembers() {
        let local = LocalState { installed: true, last_elected_term: Some(4), settings_version_seen: Some(7) };
        // Still leader at the same term: no second install or leader-elected.
        let mut q = HookQueue::new(local.clone(), Backoff::default());
        q.on_settings(7);
        q.on_leader(4);
        assert_eq!(drain(&mut q, at(0), Some(4)), []);
        // A minion whose settings did not change while it was down: nothing.
        let mut q = HookQueue::new(local.clone(), Backoff::default());
        q.on_settings(7);
        q.on_minion();
        assert_eq!(drain(&mut q, at(0), None), []);
        // ...and one whose settings changed: one leader-settings-changed.
        let mut q = HookQueue::new(local, Backoff::default());
        q.on_settings(9);
        q.on_minion();
        assert_eq!(drain(&mut q, at(0), None), [LeaderSettingsChanged]);
    }
}
