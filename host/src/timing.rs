//! Every duration an operator or an embedder can set, with the range it must lie in,
//! checked in one place: the CLI's argument parsers and the library's constructors call the
//! same [`DurationRange::check`], so a value out of range is refused at start, with the
//! accepted range, before anything is created on disk.
//!
//! Why these bounds:
//! - The guarantee window's claims last twice the window and must fit the store's lease
//!   range ([`crate::leadership::LEASE_DURATION_RANGE`], 1 s to 5 min).
//! - A hook deadline below 100 ms would fail every real hook; above an hour is a hang.
//! - Grace periods bound how long a stop can take whatever a guest or a service does.
//! - Times in a run (`--for`, `--kill UNIT@T`) are bounded so that adding them to a clock
//!   reading cannot overflow.

use std::time::Duration;

/// The range one kind of duration must lie in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// What the duration is, for messages (e.g. "the guarantee window").
    pub name: &'static str,
    /// The shortest accepted value.
    pub min: Duration,
    /// The longest accepted value.
    pub max: Duration,
}

/// A duration outside its [`DurationRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} must be between {} and {}, not {}", range.name, show(range.min), show(range.max), show(*value))]
pub struct InvalidDuration {
    /// The range it broke.
    pub range: DurationRange,
    /// The value given.
    pub value: Duration,
}

fn show(duration: Duration) -> String {
    if duration.is_zero() { "0s".into() } else { humantime::format_duration(duration).to_string() }
}

impl DurationRange {
    /// `value` if it lies in the range.
    pub fn check(&self, value: Duration) -> Result<Duration, InvalidDuration> {
        if (self.min..=self.max).contains(&value) { Ok(value) } else { Err(InvalidDuration { range: *self, value }) }
    }
}

const fn range(name: &'static str, min: Duration, max: Duration) -> DurationRange {
    DurationRange { name, min, max }
}

/// A duration checked against its range when it is made (the only way to make one), so
/// whatever takes one needs no check of its own: a setting is checked once, where its
/// configuration is built.
macro_rules! checked_duration {
    ($(#[$doc:meta])* $name:ident, $range:ident, $default:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Duration);

        impl $name {
            #[doc = concat!("`value`, if it lies in [`", stringify!($range), "`].")]
            pub fn new(value: Duration) -> Result<Self, InvalidDuration> {
                $range.check(value).map(Self)
            }

            /// The duration.
            pub fn get(self) -> Duration {
                self.0
            }
        }

        impl Default for $name {
            #[doc = concat!("[`", stringify!($default), "`].")]
            fn default() -> Self {
                Self($default)
            }
        }
    };
}

checked_duration!(
    /// A guarantee window, checked against [`GUARANTEE_WINDOW`].
    GuaranteeWindow,
    GUARANTEE_WINDOW,
    DEFAULT_GUARANTEE_WINDOW
);

checked_duration!(
    /// A stop grace, checked against [`STOP_GRACE`].
    StopGrace,
    STOP_GRACE,
    DEFAULT_STOP_GRACE
);

checked_duration!(
    /// An `update-status` period, checked against [`UPDATE_STATUS_INTERVAL`].
    UpdateStatusInterval,
    UPDATE_STATUS_INTERVAL,
    DEFAULT_UPDATE_STATUS_INTERVAL
);

/// How often `update-status` runs on each unit (`--update-status-interval`): from a second
/// (demos and tests) to a day.
pub const UPDATE_STATUS_INTERVAL: DurationRange =
    range("the update-status interval", Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// `is-leader` promises at least this much leadership ahead (`--guarantee-window`).
pub const GUARANTEE_WINDOW: DurationRange =
    range("the guarantee window", Duration::from_millis(500), Duration::from_secs(150));

/// How long one hook may run (`--hook-deadline`).
pub const HOOK_DEADLINE: DurationRange =
    range("the hook deadline", Duration::from_millis(100), Duration::from_secs(3600));

/// How long a hook already running when a stop is asked may go on before it is
/// interrupted; the stop sequence's own hooks get at most this much each (`--stop-grace`).
pub const STOP_GRACE: DurationRange = range("the stop grace", Duration::ZERO, Duration::from_secs(300));

/// How long a stopping service gets between SIGTERM and SIGKILL (`--service-grace`).
pub const SERVICE_GRACE: DurationRange = range("the service grace", Duration::ZERO, Duration::from_secs(300));

/// How long a hook tool waits for its agent (`--timeout`).
pub const TOOL_TIMEOUT: DurationRange = range("the tool timeout", Duration::from_millis(10), Duration::from_secs(3600));

// The defaults of the settings above, used by the library's configurations and by the CLI
// alike (each lies in its range: see the tests).

/// The default `update-status` period: Juju's, 5 minutes (one rule with the charm test
/// harness, from `charm-rules`).
pub const DEFAULT_UPDATE_STATUS_INTERVAL: Duration = charm_rules::queue::DEFAULT_UPDATE_STATUS_INTERVAL;

/// The default guarantee window.
pub const DEFAULT_GUARANTEE_WINDOW: Duration = Duration::from_secs(30);

/// The default hook deadline.
pub const DEFAULT_HOOK_DEADLINE: Duration = Duration::from_secs(60);

/// The default stop grace.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(3);

/// The default service grace.
pub const DEFAULT_SERVICE_GRACE: Duration = Duration::from_secs(5);

/// How long a hook tool (or `elect`, asking an agent) waits for its agent by default.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a directed handover's reservation lasts by default (and how long `elect`
/// waits for it).
pub const DEFAULT_RESERVATION: Duration = Duration::from_secs(60);

/// A time within a run (`--for`, and the times of `--kill`, `--stop`, `--elect`, `--step-down`).
pub const RUN_TIME: DurationRange = range("a time in a run", Duration::ZERO, Duration::from_secs(366 * 24 * 3600));

/// How long a directed handover's reservation lasts (`elect --within`): a lease duration.
pub const RESERVATION: DurationRange = range("the reservation", Duration::from_secs(1), Duration::from_secs(300));

// Leadership timing, every figure derived from the guarantee window W: a claim lasts 2W,
// so a renewal every W/2 keeps the guarantee without a gap, and a leader whose renewals
// fail is still covered for W after it stops answering as leader (its guarantee deadline).

/// How long each claim asks for: twice the window.
pub fn claim_duration(window: Duration) -> Duration {
    window.saturating_mul(2)
}

/// How often a leader renews (and a minion looks again): half the window.
pub fn renew_interval(window: Duration) -> Duration {
    window / 2
}

/// How soon a failed claim is first retried: a tenth of the window, within 100 ms to 5 s.
pub fn claim_retry_interval(window: Duration) -> Duration {
    (window / 10).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// The delay before retry number `attempt` (from 1) of a claim or a hook: `base` doubling up
/// to `cap` (never below `base`). One rule with the charm test harness (`charm-rules`).
pub use charm_rules::backoff;

/// How long leader-only services get to stop when the guarantee is given up: half the
/// window, so they are gone while the lease still keeps every other unit out.
pub fn leader_services_stop(window: Duration) -> Duration {
    window / 2
}

/// How long one request to a network store may take: a quarter of the window (half the
/// renew interval), so a hung renewal is retried before the guarantee runs out.
pub fn store_request_timeout(window: Duration) -> Duration {
    window / 4
}

/// The tokio instant `after` from now; a duration too long for the clock (an embedder's
/// unchecked value) is cut to a year instead of overflowing.
pub fn deadline_after(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Parses text such as `500ms`, `5s` or `2m` and checks it against `range`.
pub fn parse(text: &str, range: &DurationRange) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 500ms, 5s, 2m)"))?;
    range.check(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_lies_in_its_range() {
        for (range, default) in [
            (GUARANTEE_WINDOW, DEFAULT_GUARANTEE_WINDOW),
            (HOOK_DEADLINE, DEFAULT_HOOK_DEADLINE),
            (STOP_GRACE, DEFAULT_STOP_GRACE),
            (UPDATE_STATUS_INTERVAL, DEFAULT_UPDATE_STATUS_INTERVAL),
            (SERVICE_GRACE, DEFAULT_SERVICE_GRACE),
            (TOOL_TIMEOUT, DEFAULT_TOOL_TIMEOUT),
            (RESERVATION, DEFAULT_RESERVATION),
        ] {
            assert_eq!(range.check(default), Ok(default), "{}", range.name);
        }
    }

    #[test]
    fn ranges_refuse_what_the_engine_cannot_honour() {
        assert!(parse("200s", &GUARANTEE_WINDOW).unwrap_err().contains("between 500ms and 2m 30s"));
        assert!(parse("0s", &GUARANTEE_WINDOW).is_err());
        assert!(parse("1ns", &HOOK_DEADLINE).is_err());
        assert!(parse("99999999years", &RUN_TIME).is_err(), "huge times are refused, not overflowed");
        assert_eq!(parse("30s", &GUARANTEE_WINDOW), Ok(Duration::from_secs(30)));
        assert_eq!(parse("0s", &STOP_GRACE), Ok(Duration::ZERO));
        // Claims of twice any accepted window fit the store's lease range.
        let lease = crate::leadership::LEASE_DURATION_RANGE;
        assert!(lease.contains(&(GUARANTEE_WINDOW.min * 2)) && lease.contains(&(GUARANTEE_WINDOW.max * 2)));
        assert!(lease.contains(&RESERVATION.min) && lease.contains(&RESERVATION.max));
    }
}
