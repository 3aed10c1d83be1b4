//! The role source of one unit: the one owner of its [`LeadershipTracker`]. It alone claims,
//! renews, gives up and revokes, and it publishes the unit's [`Role`] for the hook driver
//! to act on. The driver never changes the tracker: it asks ([`RoleSource::step_down`],
//! [`RoleSource::stop`], [`RoleSource::deposed`]) and reads the roles that follow.
//!
//! Invariants (timing on the store's clock; see the [agent](super) docs for the figures):
//! - A role is published only after the tracker holds what it says, and a loss of
//!   leadership is published only after the guarantee is given up and the leader-only
//!   services are stopped, always before the lease can pass to another unit.
//! - A request is answered only once its effect is published: when
//!   [`RoleSource::step_down`] or [`RoleSource::stop`] returns, the role says `Minion` (if
//!   the unit led) and no claim is made before the hold-off ends, so the driver never acts
//!   on a stale role.
//! - A step-down holds claims off for one claim duration (ended early by a reservation of
//!   the lease for this unit, `elect`); a stop, for good.
//! - A lease given up by request is revoked only after `leader-deposed` has run
//!   ([`RoleSource::deposed`]), or when the role source finishes.
//! - A reservation of the lease for another unit while this one leads is a directed
//!   handover wherever it was asked for: the role source steps down for it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::AbortOnDropHandle;

use crate::events::LogLevel;
use crate::leadership::{Clock, LeaseError, LostRenewals, Release, Timestamp};
use crate::metrics::Metrics;
use crate::reporter::UnitReporter;
use crate::services::ServiceSupervisor;
use crate::timing;
use crate::tracker::{LeadershipTracker, Refresh};

/// What the role source says the unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Not known yet (no claim has been answered).
    Unknown,
    /// The unit holds leadership at this term, with its guarantee.
    Leader(u64),
    /// The unit does not lead, or can no longer guarantee that it does.
    Minion,
}

/// Why leadership is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GiveUp {
    StepDown,
    /// A step-down for the unit the lease is reserved for.
    Handover,
    Stop,
}

impl GiveUp {
    /// How the tenure ends in the history.
    fn release(self) -> Release {
        match self {
            GiveUp::StepDown => Release::StepDown,
            GiveUp::Handover => Release::Handover,
            GiveUp::Stop => Release::Stop,
        }
    }
}

enum Request {
    GiveUp { why: GiveUp, reply: oneshot::Sender<()> },
    Deposed { reply: oneshot::Sender<()> },
}

/// The driver's side of a unit's role source: the roles it publishes, the health of its
/// claims, and the requests the driver may make.
pub(super) struct RoleSource {
    /// The unit's role, as last published.
    pub(super) roles: watch::Receiver<Role>,
    /// Why claims fail, or why the unit waits for another incarnation of itself, while it
    /// does.
    pub(super) health: watch::Receiver<Option<String>>,
    requests: mpsc::Sender<Request>,
    /// Aborted when dropped: a driver that is dropped (a crash of the unit) takes its role
    /// source with it, without a revoke.
    task: AbortOnDropHandle<()>,
}

impl RoleSource {
    /// Starts claiming with `tracker` (which this owns from now on) for the unit whose
    /// `services` and `reporter` these are, measuring each claim in `metrics` if given.
    pub(super) fn start(
        tracker: LeadershipTracker,
        services: Arc<ServiceSupervisor>,
        reporter: Arc<UnitReporter>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let (roles_tx, roles) = watch::channel(Role::Unknown);
        let (health_tx, health) = watch::channel(None);
        let (requests, requests_rx) = mpsc::channel(4);
        let claims = ClaimLoop {
            clock: tracker.handle().clock().clone(),
            leases: tracker.watch_leases(),
            leases_open: true,
            tracker,
            services,
            reporter,
            metrics,
            roles: roles_tx,
            health: health_tx,
            requests: requests_rx,
            hold_off: None,
            revoke_after_deposed: None,
            lost_term: None,
            failures: 0,
        };
        Self { roles, health, requests, task: AbortOnDropHandle::new(tokio::spawn(claims.run())) }
    }

    /// Gives up leadership if the unit leads, and makes no claim for one claim duration
    /// (or until the lease is reserved for this unit). Returns once that is published.
    pub(super) async fn step_down(&self) {
        self.give_up(GiveUp::StepDown).await;
    }

    /// Gives up leadership if the unit leads, and never claims again. Returns once that is
    /// published.
    pub(super) async fn stop(&self) {
        self.give_up(GiveUp::Stop).await;
    }

    /// A lease given up this way is revoked after [`Self::deposed`].
    async fn give_up(&self, why: GiveUp) {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::GiveUp { why, reply }).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// Tells the role source that `leader-deposed` has run, or that none is owed: a lease
    /// given up by request is revoked now. Returns once it is.
    pub(super) async fn deposed(&self) {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Deposed { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// Ends the role source: it finishes any claim in flight, then gives up the lease.
    pub(super) async fn finish(self) {
        let Self { requests, mut task, .. } = self;
        drop(requests);
        let _ = (&mut task).await;
    }
}

/// Why claims are held off, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HoldOff {
    /// `None`: for good (a stop).
    until: Option<Timestamp>,
    /// A step-down's hold-off ends early when the lease is reserved for this unit (`elect`).
    ends_on_reservation: bool,
}

/// What ended a wait.
enum Wake {
    Time,
    Request(Option<Request>),
    Leases,
}

struct ClaimLoop {
    /// The unit's tracker: owned here alone (what the loop reads of the claim, through
    /// its handle).
    tracker: LeadershipTracker,
    services: Arc<ServiceSupervisor>,
    reporter: Arc<UnitReporter>,
    /// Where each claim is measured, if anywhere.
    metrics: Option<Arc<Metrics>>,
    clock: Arc<dyn Clock>,
    roles: watch::Sender<Role>,
    health: watch::Sender<Option<String>>,
    requests: mpsc::Receiver<Request>,
    leases: watch::Receiver<u64>,
    leases_open: bool,
    hold_off: Option<HoldOff>,
    /// A lease given up by request, revoked (so) after `leader-deposed`.
    revoke_after_deposed: Option<Release>,
    /// A tenure lost because renewals failed, to tell the history once the store answers.
    lost_term: Option<u64>,
    failures: u32,
}

impl ClaimLoop {
    async fn run(mut self) {
        let window = self.tracker.handle().window();
        let retry_interval = timing::claim_retry_interval(window);
        loop {
            if let Some(hold_off) = self.hold_off {
                if hold_off.until.is_some_and(|t| self.clock.now() >= t) {
                    self.hold_off = None;
                    continue;
                }
                self.leases.borrow_and_update();
                match self.wait(hold_off.until, hold_off.ends_on_reservation).await {
                    Wake::Request(None) => break,
                    Wake::Request(Some(request)) => self.handle(request).await,
                    Wake::Time => self.hold_off = None,
                    Wake::Leases => {
                        if self.tracker.reserved_for().await.as_ref() == Some(self.tracker.handle().unit()) {
                            self.hold_off = None;
                        }
                    }
                }
                continue;
            }
            let refresh = self.claim().await;
            let leadership = self.tracker.handle();
            let waiting = leadership.waiting_for();
            let changed = self.health.send_if_modified(|health| {
                let now = leadership.store_error().or_else(|| waiting.clone());
                std::mem::replace(health, now.clone()) != now
            });
            if changed && let Some(waiting) = waiting {
                self.reporter.log(LogLevel::Warning, waiting);
            }
            if refresh == Refresh::StoreLost {
                // The store is gone (deleted, replaced, put back to an older copy): the tracker
                // gave up the claim already; the role follows at once (`leader-deposed` for a
                // leader), and nothing more is claimed from a store that is not this one.
                if let Role::Leader(term) = *self.roles.borrow() {
                    self.lost_term = Some(term);
                }
                self.reporter.log(LogLevel::Error, self.tracker.handle().store_error().unwrap_or_default());
                self.publish(Role::Minion).await;
                self.hold_off = Some(HoldOff { until: None, ends_on_reservation: false });
                continue;
            }
            self.failures = if refresh == Refresh::Failed { self.failures.saturating_add(1) } else { 0 };
            match (*self.roles.borrow(), refresh) {
                // The lease ran out under a unit that still ran (its renewals came too late):
                // another unit holds it now, or this one again at a new term.
                (Role::Leader(term), Refresh::Minion) => self.lost_term = Some(term),
                (Role::Leader(term), Refresh::Leader { term: now, .. }) if now != term => self.lost_term = Some(term),
                _ => {}
            }
            let role = match refresh {
                Refresh::Leader { term, .. } => Role::Leader(term),
                Refresh::Minion => Role::Minion,
                Refresh::StoreLost => Role::Minion,
                Refresh::Failed => match *self.roles.borrow() {
                    Role::Leader(term) if self.tracker.handle().guarantee_deadline().is_some_and(|d| self.clock.now() < d) => Role::Leader(term),
                    _ => Role::Minion,
                },
            };
            self.publish(role).await;
            if refresh != Refresh::Failed {
                self.report_lost_renewals(retry_interval).await;
            }
            let ended = match role {
                Role::Leader(_) => self.lead(refresh, retry_interval).await,
                Role::Minion | Role::Unknown => self.follow(retry_interval).await,
            };
            if ended {
                break;
            }
        }
        // The driver is done (after the stop's hooks): give up for good.
        self.release(self.revoke_after_deposed.unwrap_or(Release::Stop)).await;
    }

    /// Claims or renews once (given up at the guarantee deadline), measured if the agent
    /// runs with metrics.
    async fn claim(&self) -> Refresh {
        let Some(metrics) = &self.metrics else { return self.tracker.refresh_in_time().await };
        let renewal = self.tracker.handle().guarantee_deadline().is_some();
        let started = std::time::Instant::now();
        let refresh = self.tracker.refresh_in_time().await;
        let failed = matches!(refresh, Refresh::Failed | Refresh::StoreLost);
        metrics.observe_claim(self.tracker.handle().unit(), renewal, failed, started.elapsed());
        refresh
    }

    /// Tells the history that the tenure lost to failed renewals was lost so, within
    /// `within` (the claim loop waits no longer). Tried again at the next answered claim
    /// while that tenure is still open in the store or the store fails.
    async fn report_lost_renewals(&mut self, within: std::time::Duration) {
        let Some(term) = self.lost_term else { return };
        let deadline = self.clock.sleep_until(self.clock.now() + within);
        let marked = tokio::select! {
            marked = self.tracker.mark_lost_renewals(term) => marked,
            () = deadline => return,
        };
        match marked {
            Ok(LostRenewals::StillOpen) => {}
            Ok(_) => self.lost_term = None,
            Err(err) => tracing::debug!(unit = %self.tracker.handle().unit(), term, "cannot record the lost renewals yet: {err}"),
        }
    }

    /// Waits until the next renewal while leading, stepping down for a reservation of
    /// another unit; deposes the unit at its guarantee deadline if renewals failed until
    /// then. True if the driver is gone.
    async fn lead(&mut self, refresh: Refresh, retry_interval: std::time::Duration) -> bool {
        let Some(deadline) = self.tracker.handle().guarantee_deadline() else { return false };
        let next_try = if refresh == Refresh::Failed { retry_interval } else { self.tracker.handle().renew_interval() };
        let wake = (self.clock.now() + next_try).min(deadline);
        loop {
            match self.wait(Some(wake), true).await {
                Wake::Request(None) => return true,
                Wake::Request(Some(request)) => {
                    self.handle(request).await;
                    if self.hold_off.is_some() {
                        return false;
                    }
                }
                Wake::Time => break,
                Wake::Leases => {
                    if self.tracker.reserved_for().await.is_some_and(|other| other != *self.tracker.handle().unit()) {
                        self.reporter.log(LogLevel::Info, "the lease is reserved for another unit: stepping down for it".into());
                        self.give_up(GiveUp::Handover).await;
                        return false;
                    }
                }
            }
        }
        if self.clock.now() >= deadline {
            // Could not renew in time: depose now, while the lease still keeps everyone
            // else out, and do not claim again until it has run out.
            if let Some(claim) = self.tracker.abandon() {
                self.hold_off = Some(HoldOff { until: Some(claim.valid_until), ends_on_reservation: false });
                self.lost_term = Some(claim.term);
            }
            self.publish(Role::Minion).await;
        }
        false
    }

    /// Waits while another unit leads (or the store fails) until a claim is worth trying.
    /// True if the driver is gone.
    async fn follow(&mut self, retry_interval: std::time::Duration) -> bool {
        // A failing store is retried with a backoff, never in a loop: waiting for a
        // release would end at once when nobody holds the lease.
        if self.failures > 0 {
            let delay = timing::backoff(retry_interval, self.tracker.handle().renew_interval(), self.failures);
            return self.pause(self.clock.now() + delay, false).await;
        }
        // A refusal no release ends (a store too new to grant): wait until it may grant.
        if let Some(at) = self.tracker.handle().retry_at() {
            return self.pause(at.max(self.clock.now() + retry_interval), false).await;
        }
        // While the lease is reserved for another unit, this unit's claims are refused until
        // that unit claims it (a change of the lease) or the reservation ends (unannounced):
        // wait for either, instead of claiming again at once, in a loop. (Marked seen first,
        // so a change during the look at the reservation still ends the wait.)
        self.leases.borrow_and_update();
        if self.tracker.reserved_for().await.is_some_and(|other| other != *self.tracker.handle().unit()) {
            return self.pause(self.clock.now() + retry_interval, true).await;
        }
        let retry = self.clock.sleep_until(self.clock.now() + self.tracker.handle().renew_interval());
        let released = tokio::select! {
            request = self.requests.recv() => match request {
                None => return true,
                Some(request) => {
                    self.handle(request).await;
                    return false;
                }
            },
            released = self.tracker.wait_until_released(retry) => released,
        };
        if let Err(err) = released
            && err != LeaseError::Cancelled
        {
            self.reporter.log(LogLevel::Warning, format!("cannot watch the lease: {err}"));
            return self.pause(self.clock.now() + retry_interval, false).await;
        }
        false
    }

    /// Waits until `until` (forever without one), a request, or (with `leases`) a change of
    /// any lease.
    async fn wait(&mut self, until: Option<Timestamp>, leases: bool) -> Wake {
        let sleep = async {
            match until {
                Some(at) => self.clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            request = self.requests.recv() => Wake::Request(request),
            () = sleep => Wake::Time,
            changed = self.leases.changed(), if leases && self.leases_open => {
                self.leases_open = changed.is_ok();
                Wake::Leases
            }
        }
    }

    /// Waits as [`Self::wait`] does (until `until`, or a change of any lease with
    /// `leases`), handling a request that ends the wait. True if the driver is gone.
    async fn pause(&mut self, until: Timestamp, leases: bool) -> bool {
        match self.wait(Some(until), leases).await {
            Wake::Request(None) => true,
            Wake::Request(Some(request)) => {
                self.handle(request).await;
                false
            }
            Wake::Time | Wake::Leases => false,
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::GiveUp { why, reply } => {
                self.give_up(why).await;
                let _ = reply.send(());
            }
            Request::Deposed { reply } => {
                if let Some(why) = self.revoke_after_deposed.take() {
                    self.release(why).await;
                }
                let _ = reply.send(());
            }
        }
    }

    /// Gives up the guarantee (if held) and holds claims off (a step-down of a minion does
    /// nothing); a stop's hold-off (for good) is never shortened by a later step-down. If
    /// the unit was leading, its lease is revoked after `leader-deposed`. The role published
    /// is the tracker's state here: requests are handled between claims.
    async fn give_up(&mut self, why: GiveUp) {
        let leading = matches!(*self.roles.borrow(), Role::Leader(_));
        let hold_off = match why {
            GiveUp::StepDown | GiveUp::Handover if !leading => return,
            GiveUp::StepDown | GiveUp::Handover => {
                HoldOff { until: Some(self.clock.now() + self.tracker.handle().claim_duration()), ends_on_reservation: true }
            }
            GiveUp::Stop => HoldOff { until: None, ends_on_reservation: false },
        };
        if self.hold_off.is_none_or(|current| current.until.is_some()) {
            self.hold_off = Some(hold_off);
        }
        self.tracker.abandon();
        self.publish(Role::Minion).await;
        if leading {
            self.revoke_after_deposed = Some(why.release());
        }
    }

    /// Publishes `role`; on losing leadership, first stops the leader-only services. The
    /// event goes out first (the guarantee is already given up, so the services' last
    /// lines carry no term) and the role after, so it precedes every hook the role causes.
    async fn publish(&self, role: Role) {
        let current = *self.roles.borrow();
        if current == role {
            return;
        }
        self.reporter.report_leadership(match role {
            Role::Leader(term) => Some(term),
            _ => None,
        });
        if matches!(current, Role::Leader(_)) && !matches!(role, Role::Leader(_)) {
            self.services.stop_leader_only(timing::leader_services_stop(self.tracker.handle().window())).await;
        }
        self.roles.send_replace(role);
    }

    async fn release(&self, why: Release) {
        if let Err(err) = self.tracker.release(why).await {
            self.reporter.log(LogLevel::Warning, format!("could not give up leadership: {err}"));
        }
    }
}
