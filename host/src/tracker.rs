//! Per-unit leadership tracker: claims and renews the lease, and answers `is-leader`.
//!
//! Guarantees: [`LeadershipTracker::is_leader`] is true only while this unit holds a claim
//! that is valid for at least the guarantee window from the moment of the call; the claim's
//! validity is measured from a monotonic instant read *before* the engine was asked, so it
//! never overestimates. When renewals fail, the answer turns false (or `Unknown`, if the
//! store failed) no later than the window before the old claim runs out: fail safe.
//!
//! **One owner, enforced by types.** A [`LeadershipTracker`] is not `Clone`: the one value
//! is owned by the unit's claim loop (the agent's role source), and only it can claim,
//! renew, give up or revoke ([`LeadershipTracker::refresh`], [`LeadershipTracker::abandon`],
//! [`LeadershipTracker::release`]). Everything else (hook sandboxes, hook tools, status,
//! metrics) holds a [`LeadershipHandle`]: it answers `is-leader`, tells the held term, reads
//! the settings and writes them fenced by that term, and can change no claim. The one
//! power the owner hands out is an [`AbandonOnDrop`], for the unit's lock: whoever frees
//! the lock stops the unit answering as leader first.
//!
//! **One incarnation.** The tracker claims as its unit in one
//! [`Incarnation`](crate::leadership::Incarnation): it never extends, writes under or
//! revokes a tenure of another incarnation of its unit. It ends
//! such a tenure early only when the other incarnation's [`Origin`] proves it gone
//! ([`Origin::proves_gone`]: this tracker's origin names the state directory whose unit lock
//! its agent holds, and the other ran there, on this boot); otherwise it waits it out, and
//! says so ([`LeadershipTracker::waiting_for`]).
//!
//! **Answers given away are honoured.** A `true` answer handed to someone who uses it
//! later (a hook tool's client: [`LeadershipTracker::answer_until`]) holds for at most
//! [`ANSWER_HOLD`], and a release of the lease waits until every such answer has run out:
//! none is used after the lease could pass to another unit.
//!
//! Non-guarantees: the tracker does not tell *which* unit leads, and it does not wait for a
//! released lease; it learns of one on its next [`LeadershipTracker::refresh`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::leadership::{
    Claim, Claimant, Clock, LeaseError, LeadershipStore, LostRenewals, Origin, Release, StoreError,
    StoreFailure, Timestamp, WriteError,
};
use crate::names::UnitName;
use crate::settings::SettingsSnapshot;
use crate::tenure_record::TenureRecord;

/// Why `is-leader` cannot answer: the unit's leadership cannot be verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadershipUnknown {
    /// The last renewal failed and the guarantee could not be verified.
    #[error("leadership cannot be verified: {0}")]
    StoreFailed(String),
}

/// What a [`LeadershipTracker::refresh`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// This unit holds the lease at `term`.
    Leader {
        /// The tenure's term.
        term: u64,
        /// True if this refresh started the tenure (the previous state was not this term).
        new_term: bool,
    },
    /// Another unit holds the lease.
    Minion,
    /// The engine failed; the previous claim (if any) still counts until it runs out.
    Failed,
    /// The store is not the one this unit started with any more (deleted, replaced, or put
    /// back to an older copy: [`StoreFailure::Replaced`]): the claim was given up at once,
    /// and `is-leader` answers unknown from now on.
    StoreLost,
}

#[derive(Debug, Default)]
struct TrackerState {
    claim: Option<Claim>,
    last_error: Option<String>,
    /// Why the unit waits although it could otherwise lead: another incarnation of it holds
    /// the lease, or the store is too new to grant one yet.
    waiting_for: Option<String>,
    /// When a claim is worth trying again, for a refusal that a released lease does not end
    /// (a store too new to grant).
    retry_at: Option<Timestamp>,
    /// The store was lost: no claim counts any more.
    store_lost: bool,
    /// The term of a tenure this unit stopped counting on without giving it up (it could
    /// not renew in time): never resumed, even if the store still has it.
    abandoned: Option<u64>,
    /// The unit's lock was freed ([`AbandonOnDrop`]): no claim counts any more, even one
    /// the store answers after (a claim loop not yet stopped must not lead again).
    retired: bool,
}

/// How long a `true` answer given to a hook tool's client holds at most (see
/// [`LeadershipTracker::answer_until`]): a client that has not used it by then treats it as
/// unknown, and a graceful release waits at most this long for the answers it gave.
pub const ANSWER_HOLD: Duration = Duration::from_secs(1);

/// What a tracker and its handles share: the claim, its lock-free guarantee deadline, and
/// the answers given away.
struct Shared {
    claimant: Claimant,
    store: Arc<dyn LeadershipStore>,
    window: Duration,
    state: Mutex<TrackerState>,
    /// The guarantee deadline of the current claim in clock nanoseconds, 0 without one: a
    /// copy of what `state` implies, changed only under its lock, so that `is_leader`
    /// (called from hooks, possibly in tight loops) answers without taking the lock.
    guaranteed_until: AtomicU64,
    /// The latest instant (clock nanoseconds) a `true` answer given by
    /// [`LeadershipHandle::answer_until`] may still be used at: a release waits for it
    /// before the revoke.
    answered_until: AtomicU64,
    /// Where the tenures this unit believed in are recorded, if anywhere.
    record: Option<TenureRecord>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the claim (under the state lock) and its lock-free guarantee deadline. The
    /// record hears of a start before `is-leader` can say so, and of an end before anyone
    /// can act on it (the caller revokes after this returns).
    fn set_claim(&self, state: &mut TrackerState, claim: Option<Claim>) -> Option<Claim> {
        let window = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        let deadline = claim.map_or(0, |c| c.valid_until.as_nanos().saturating_sub(window).max(1));
        if let Some(record) = &self.record {
            let now = self.store.clock().now();
            let until = Timestamp::from_nanos(deadline);
            match (state.claim, claim) {
                (Some(old), Some(new)) if old.term == new.term => record.renewed(new.term, until),
                (old, new) => {
                    if let Some(old) = old {
                        record.ended(old.term, now);
                    }
                    if let Some(new) = new {
                        record.started(new.term, now, until);
                    }
                }
            }
        }
        // SeqCst: ordered against `answered_until` (see `answer_until` and `release`).
        self.guaranteed_until.store(deadline, Ordering::SeqCst);
        std::mem::replace(&mut state.claim, claim)
    }

    /// Stops answering as leader at once, without revoking the lease.
    fn abandon(&self) -> Option<Claim> {
        let mut state = self.lock();
        let had = self.set_claim(&mut state, None);
        if let Some(claim) = had {
            state.abandoned = Some(claim.term);
        }
        had
    }
}

/// Claims leadership for one unit and keeps track of the guarantee it holds: the one value
/// that can claim, renew, give up and revoke (see the module docs). Everything else gets a
/// [`LeadershipHandle`] from [`Self::handle`].
pub struct LeadershipTracker {
    handle: LeadershipHandle,
}

/// A unit's leadership as everything but its claim loop sees it: `is-leader`, the held
/// term, the settings, and writes fenced by that term. Cheap to clone; it cannot claim,
/// renew or give up (only the [`LeadershipTracker`] can).
#[derive(Clone)]
pub struct LeadershipHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LeadershipTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.handle.shared;
        f.debug_struct("LeadershipTracker").field("claimant", &shared.claimant).field("window", &shared.window).finish()
    }
}

impl std::fmt::Debug for LeadershipHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeadershipHandle").field("claimant", &self.shared.claimant).finish()
    }
}

/// Stops its unit answering as leader when dropped (see [`LeadershipTracker::abandon_on_drop`]).
pub struct AbandonOnDrop {
    shared: Arc<Shared>,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.shared.lock().retired = true;
        self.shared.abandon();
    }
}

impl std::fmt::Debug for AbandonOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbandonOnDrop").field("claimant", &self.shared.claimant).finish()
    }
}

impl LeadershipTracker {
    /// A tracker for `unit`, in a new incarnation of this process with no state directory
    /// (an agent's is made from its unit's lock: see [`crate::agent::spawn`]), promising
    /// `window` of leadership whenever it answers true.
    pub fn new(unit: UnitName, store: Arc<dyn LeadershipStore>, window: Duration) -> Self {
        Self::for_claimant(Claimant::fresh(unit), store, window)
    }

    /// A tracker claiming as `claimant` (the unit in one incarnation).
    pub fn for_claimant(claimant: Claimant, store: Arc<dyn LeadershipStore>, window: Duration) -> Self {
        Self::with_parts(claimant, store, window, None)
    }

    /// [`Self::for_claimant`], recording every tenure this unit believes in (see
    /// [`TenureRecord`]) when `record` is given.
    pub fn with_parts(
        claimant: Claimant,
        store: Arc<dyn LeadershipStore>,
        window: Duration,
        record: Option<TenureRecord>,
    ) -> Self {
        let shared = Shared {
            claimant,
            store,
            window,
            state: Mutex::new(TrackerState::default()),
            guaranteed_until: AtomicU64::new(0),
            answered_until: AtomicU64::new(0),
            record,
        };
        Self { handle: LeadershipHandle { shared: Arc::new(shared) } }
    }

    /// The read handle every other part of the unit gets.
    pub fn handle(&self) -> &LeadershipHandle {
        &self.handle
    }

    /// A guard that stops the unit answering as leader when it is dropped, for good (a claim
    /// answered later counts for nothing), for whatever must outlive no tenure of this
    /// tracker (the unit's lock: see [`crate::agent::AgentLock`]). The claim loop may still
    /// be running then (its task is aborted, not yet stopped).
    pub fn abandon_on_drop(&self) -> AbandonOnDrop {
        AbandonOnDrop { shared: self.shared().clone() }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// A receiver that sees a counter move each time the unit's application's lease changes
    /// hands, is pinned or reserved (see [`LeadershipStore::watch_leases`]).
    pub fn watch_leases(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared().store.watch_leases(self.handle.unit().app())
    }

    /// The unit the application's lease is reserved for, while the store says one is
    /// (`None` too when the store cannot say).
    pub async fn reserved_for(&self) -> Option<UnitName> {
        self.shared().store.lease_hint(self.handle.unit().app()).await.ok().and_then(|hint| hint.reserved_for)
    }

    /// Waits until nobody holds the application's lease, or `cancel` ends the wait
    /// ([`LeaseError::Cancelled`]); see [`crate::leadership::wait_until_released`].
    pub async fn wait_until_released(&self, cancel: impl Future<Output = ()>) -> Result<(), LeaseError> {
        crate::leadership::wait_until_released(self.shared().store.as_ref(), self.handle.unit().app(), cancel).await
    }

    /// Tells the store's history that this unit's tenure at `term` ended because its
    /// renewals failed (see [`LeadershipStore::mark_lost_renewals`]).
    pub async fn mark_lost_renewals(&self, term: u64) -> Result<LostRenewals, LeaseError> {
        self.shared().store.mark_lost_renewals(self.handle.unit(), term).await
    }

    /// Claims or renews the lease once and records the result.
    pub async fn refresh(&self) -> Refresh {
        let shared = self.shared();
        let claimant = &shared.claimant;
        let mut result = shared.store.claim(claimant, self.handle.claim_duration()).await;
        if let Err(LeaseError::OtherIncarnation { holder: Some(former), origin: Some(origin), .. }) = &result
            && origin.proves_gone(&claimant.incarnation().origin)
        {
            result = self.take_over(*former, (**origin).clone()).await;
        }
        let resumed = {
            let state = shared.lock();
            matches!(&result, Ok(claim) if state.claim.is_none() && state.abandoned == Some(claim.term))
        };
        if resumed {
            // The store extended a tenure this unit had stopped counting on (etcd gives every
            // lease its whole TTL again after a leader change): it is over for this unit, so
            // it ends now, in the history too, and leading again is a new term.
            let ended = shared.store.revoke(claimant, Release::LostRenewals).await;
            let mut state = shared.lock();
            state.last_error = None;
            if ended.is_ok() {
                state.abandoned = None;
            }
            return Refresh::Minion;
        }
        let mut state = shared.lock();
        if state.store_lost {
            return Refresh::StoreLost;
        }
        if state.retired {
            return Refresh::Minion;
        }
        state.waiting_for = match &result {
            Err(waiting @ (LeaseError::OtherIncarnation { .. } | LeaseError::NewStore { .. })) => {
                Some(waiting.to_string())
            }
            _ => None,
        };
        state.retry_at = match &result {
            Err(LeaseError::NewStore { left, .. }) => Some(shared.store.clock().now() + *left),
            _ => None,
        };
        match result {
            // Answered too late to guarantee anything (a slow store): it does not count, and
            // the claim it extended (if any) runs out as it would have.
            Ok(claim) if claim.valid_until.saturating_since(shared.store.clock().now()) <= shared.window => {
                shared.set_claim(&mut state, None);
                state.last_error = Some("the store answered the claim after its guarantee had already lapsed".into());
                Refresh::Failed
            }
            Ok(claim) => {
                let new_term = state.claim.is_none_or(|c| c.term != claim.term);
                shared.set_claim(&mut state, Some(claim));
                state.last_error = None;
                Refresh::Leader { term: claim.term, new_term }
            }
            Err(
                LeaseError::Denied { .. }
                | LeaseError::Reserved { .. }
                | LeaseError::OtherIncarnation { .. }
                | LeaseError::NewStore { .. },
            ) => {
                shared.set_claim(&mut state, None);
                state.last_error = None;
                Refresh::Minion
            }
            Err(LeaseError::Store(err)) if err.kind() == StoreFailure::Replaced => {
                // Whatever this unit held was decided on a store that is gone: not a moment
                // longer (a newcomer on the store now in its place may be granted the lease).
                shared.set_claim(&mut state, None);
                state.last_error = Some(err.to_string());
                state.store_lost = true;
                Refresh::StoreLost
            }
            Err(err) => {
                state.last_error = Some(err.to_string());
                Refresh::Failed
            }
        }
    }

    /// Ends the tenure of this unit's former incarnation `former` (at `origin`, which proves
    /// it gone: see [`Origin::proves_gone`]) and claims afresh: a new term.
    async fn take_over(&self, former: crate::leadership::IncarnationId, origin: Origin) -> Result<Claim, LeaseError> {
        let shared = self.shared();
        let previous = shared.claimant.former(former, origin);
        tracing::info!(
            unit = %shared.claimant.unit(),
            "the lease is held by this unit's previous agent ({}), which is gone: ending its tenure",
            previous.incarnation().origin
        );
        match shared.store.revoke(&previous, Release::Restarted).await {
            Ok(()) | Err(LeaseError::NotHeld { .. }) => {}
            Err(err) => return Err(err),
        }
        shared.store.claim(&shared.claimant, self.handle.claim_duration()).await
    }

    /// [`Self::refresh`], given up at the current guarantee deadline (if one is ahead) if
    /// the store has not answered by then: a leader whose renewal hangs deposes itself in
    /// time, while the lease still keeps everyone else out. The store may or may not have
    /// applied a claim given up this way; either way the unit no longer counts on it.
    pub async fn refresh_in_time(&self) -> Refresh {
        let clock = self.shared().store.clock().clone();
        let Some(deadline) = self.handle.guarantee_deadline().filter(|d| clock.now() < *d) else {
            return self.refresh().await;
        };
        tokio::select! {
            refresh = self.refresh() => refresh,
            () = clock.sleep_until(deadline) => {
                self.shared().lock().last_error = Some("the store did not answer before the guarantee deadline".into());
                Refresh::Failed
            }
        }
    }

    /// Stops answering as leader at once, without revoking the lease: the lease then keeps
    /// every other unit out until it expires. Returns the claim it had.
    pub fn abandon(&self) -> Option<Claim> {
        self.shared().abandon()
    }

    /// Gives up leadership now, if held, `why` (for the history): the guarantee ends before
    /// the lease is revoked, and the revoke waits until no `true` answer given to a client
    /// ([`LeadershipHandle::answer_until`]) can still be used (at most [`ANSWER_HOLD`]).
    pub async fn release(&self, why: Release) -> Result<(), LeaseError> {
        let shared = self.shared();
        shared.abandon();
        let answered = Timestamp::from_nanos(shared.answered_until.load(Ordering::SeqCst));
        if answered > shared.store.clock().now() {
            shared.store.clock().sleep_until(answered).await;
        }
        let released = match shared.store.revoke(&shared.claimant, why).await {
            Err(LeaseError::NotHeld { .. }) => Ok(()),
            other => other,
        };
        if released.is_ok() {
            shared.lock().abandoned = None;
        }
        released
    }
}

impl LeadershipHandle {
    /// The unit whose leadership this is.
    pub fn unit(&self) -> &UnitName {
        self.shared.claimant.unit()
    }

    /// The unit and incarnation its tracker claims as.
    pub fn claimant(&self) -> &Claimant {
        &self.shared.claimant
    }

    /// The store's clock, which every deadline of this unit's leadership is read on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.shared.store.clock()
    }

    /// The guarantee window.
    pub fn window(&self) -> Duration {
        self.shared.window
    }

    /// How long each claim asks for: twice the window, so a renewal every
    /// [`Self::renew_interval`] keeps the guarantee without a gap.
    pub fn claim_duration(&self) -> Duration {
        crate::timing::claim_duration(self.shared.window)
    }

    /// How often the claim loop renews.
    pub fn renew_interval(&self) -> Duration {
        crate::timing::renew_interval(self.shared.window)
    }

    /// Why the unit waits for a tenure of another incarnation of itself to end (or for a
    /// new store to grant), while it does (`None` otherwise): "db/0 is also running
    /// elsewhere (pid …), …".
    pub fn waiting_for(&self) -> Option<String> {
        self.shared.lock().waiting_for.clone()
    }

    /// When a claim is worth trying again after a refusal that no release of the lease
    /// ends (a store too new to grant), if the last claim was refused so.
    pub fn retry_at(&self) -> Option<Timestamp> {
        self.shared.lock().retry_at
    }

    /// Whether the store this unit started with was lost (see [`Refresh::StoreLost`]).
    pub fn store_lost(&self) -> bool {
        self.shared.lock().store_lost
    }

    /// True only if this unit holds leadership guaranteed for the whole window from now.
    pub fn is_leader(&self) -> Result<bool, LeadershipUnknown> {
        self.leader_until().map(|until| until.is_some())
    }

    /// [`Self::is_leader`] with the instant (store clock) until which a true answer holds:
    /// `Some(deadline)` while this unit leads with the window ahead, `None` while it does not.
    /// Read off one clock reading, so the answer and its deadline agree.
    pub fn leader_until(&self) -> Result<Option<Timestamp>, LeadershipUnknown> {
        // SeqCst: ordered against `answered_until` (see `answer_until` and `release`).
        let until = self.shared.guaranteed_until.load(Ordering::SeqCst);
        if until != 0 && self.clock().now().as_nanos() <= until {
            return Ok(Some(Timestamp::from_nanos(until)));
        }
        match &self.shared.lock().last_error {
            Some(err) => Err(LeadershipUnknown::StoreFailed(err.clone())),
            None => Ok(None),
        }
    }

    /// The term of this unit's tenure while [`Self::is_leader`] would answer true (`None`
    /// otherwise): a fencing token for the charm's own side effects. The guarantee is read
    /// off the clock again after the term, so the term is never given once it lapsed.
    pub fn leader_term(&self) -> Result<Option<u64>, LeadershipUnknown> {
        if self.leader_until()?.is_none() {
            return Ok(None);
        }
        let term = self.shared.lock().claim.map(|claim| claim.term);
        Ok(term.filter(|_| matches!(self.leader_until(), Ok(Some(_)))))
    }

    /// Why the last claim failed, while the store keeps failing (`None` once a claim succeeds).
    pub fn store_error(&self) -> Option<String> {
        self.shared.lock().last_error.clone()
    }

    /// The term of the claim this unit holds now, if it still holds one (however little of
    /// it is left): writes fenced by this term are refused by the engine once it lapses.
    pub fn held_term(&self) -> Option<u64> {
        let now = self.clock().now();
        self.shared.lock().claim.filter(|c| c.valid_until > now).map(|c| c.term)
    }

    /// [`Self::leader_until`] for an answer given to someone else (a hook tool's client),
    /// who uses it later: a `true` answer holds for at most [`ANSWER_HOLD`], and a release
    /// of the lease ([`LeadershipTracker::release`]) waits until every such answer has run
    /// out, so that none is used after the lease could pass to another unit.
    pub fn answer_until(&self) -> Result<Option<Timestamp>, LeadershipUnknown> {
        let hold = self.clock().now() + ANSWER_HOLD;
        // Recorded before the claim is read, and `release` clears the claim before it reads
        // this (all SeqCst): either this answer sees no claim, or the release sees the answer.
        self.shared.answered_until.fetch_max(hold.as_nanos(), Ordering::SeqCst);
        Ok(self.leader_until()?.map(|until| until.min(hold)))
    }

    /// The instant after which this unit can no longer guarantee the window: the end of
    /// its claim minus the window. `None` without a claim.
    pub fn guarantee_deadline(&self) -> Option<Timestamp> {
        let deadline = self.shared.guaranteed_until.load(Ordering::Acquire);
        (deadline != 0).then(|| Timestamp::from_nanos(deadline))
    }

    /// A new access to the unit's data, with a mirror of its own, in this unit's
    /// incarnation: the unit makes one ([`crate::unit::Unit::unit_data`]).
    pub(crate) fn open_unit_data(&self) -> crate::unit_data::UnitDataHandle {
        crate::unit_data::UnitDataHandle::new(self.shared.claimant.clone(), self.shared.store.clone())
    }

    /// The application's leader settings as the store has them now.
    pub async fn read_settings(&self) -> Result<SettingsSnapshot, StoreError> {
        self.shared.store.read_settings(self.unit().app()).await
    }

    /// A receiver that sees the application's settings version each time it changes.
    pub fn watch_settings(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.store.watch_settings(self.unit().app())
    }

    /// The highest term ever granted for the application (see
    /// [`LeadershipStore::last_term`]).
    pub async fn last_term(&self) -> Result<u64, LeaseError> {
        self.shared.store.last_term(self.unit().app()).await
    }

    /// Writes a group of leader settings under the term this unit holds (the store refuses
    /// it once that term has lost the lease); an empty group from the leader writes nothing.
    /// A caller who stops waiting at `apply_by` (machine monotonic clock) gets the write
    /// applied only if the store decides it before then. Without a held term:
    /// [`WriteError::NotLeader`] with term 0 (no real term is 0).
    pub async fn leader_set_by(&self, group: &[(String, String)], apply_by: Option<Timestamp>) -> Result<(), WriteError> {
        let unit = self.unit();
        let not_leader = || WriteError::NotLeader { app: unit.app().clone(), unit: unit.clone(), term: 0 };
        let term = self.held_term().ok_or_else(not_leader)?;
        if !group.is_empty() {
            self.shared.store.write_settings_by(&self.shared.claimant, term, group, apply_by).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leadership::{Clock, ManualClock, MemoryStore};

    /// A `true` answer handed to a client is still usable for up to [`ANSWER_HOLD`]: a
    /// step-down must not let the lease pass before it has run out (found by the model
    /// checker: the client of an answer given just before a step-down acted on `True` while
    /// the successor already led).
    #[tokio::test]
    async fn a_release_waits_until_the_answers_it_gave_have_run_out() {
        let clock = Arc::new(ManualClock::default());
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::with_clock(clock.clone()));
        let window = Duration::from_secs(30);
        let leader = Arc::new(LeadershipTracker::new(UnitName::new("app/0").unwrap(), store.clone(), window));
        let successor = LeadershipTracker::new(UnitName::new("app/1").unwrap(), store, window);
        assert!(matches!(leader.refresh().await, Refresh::Leader { .. }));
        let until = leader.handle().answer_until().unwrap().expect("the leader answers true");
        assert_eq!(until, clock.now() + ANSWER_HOLD, "a true answer holds for ANSWER_HOLD at most");
        let release = tokio::spawn({
            let leader = leader.clone();
            async move { leader.release(Release::StepDown).await }
        });
        while clock.sleepers() == 0 && !release.is_finished() {
            tokio::task::yield_now().await;
        }
        assert_eq!(leader.handle().answer_until().unwrap(), None, "given up at once: no new true answer");
        assert_eq!(successor.refresh().await, Refresh::Minion, "the lease has not passed while the answer holds");
        clock.advance_to(until);
        release.await.unwrap().unwrap();
        assert!(matches!(successor.refresh().await, Refresh::Leader { .. }), "then it passes");
    }

    /// The unit's lock is freed while its claim loop still runs (its task aborted, not yet
    /// stopped, with a first claim in flight): whatever the store answers then, the unit
    /// does not lead, so nothing of it leads once the lock is free.
    #[tokio::test]
    async fn a_claim_answered_after_the_lock_was_freed_counts_for_nothing() {
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
        let tracker = LeadershipTracker::new(UnitName::new("app/0").unwrap(), store, Duration::from_secs(30));
        drop(tracker.abandon_on_drop());
        assert_eq!(tracker.refresh().await, Refresh::Minion, "the claim was answered after the lock was freed");
        assert_eq!(tracker.handle().is_leader(), Ok(false));
        assert_eq!(tracker.handle().held_term(), None);
    }

    #[tokio::test]
    async fn leader_and_minion() {
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::new());
        let window = Duration::from_secs(30);
        let a = LeadershipTracker::new(UnitName::new("app/0").unwrap(), store.clone(), window);
        let b = LeadershipTracker::new(UnitName::new("app/1").unwrap(), store, window);
        assert_eq!(a.handle().is_leader(), Ok(false), "nothing claimed yet");
        assert!(matches!(a.refresh().await, Refresh::Leader { new_term: true, .. }));
        assert!(matches!(a.refresh().await, Refresh::Leader { new_term: false, .. }));
        assert_eq!(b.refresh().await, Refresh::Minion);
        assert_eq!(a.handle().is_leader(), Ok(true));
        assert_eq!(b.handle().is_leader(), Ok(false));
        assert!(a.handle().held_term().is_some());
        a.release(Release::StepDown).await.unwrap();
        assert_eq!(a.handle().is_leader(), Ok(false));
        assert!(matches!(b.refresh().await, Refresh::Leader { new_term: true, term: 2 }));
    }
}
