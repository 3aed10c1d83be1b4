//! Instants on a monotonic timeline, and the retry backoff both sides use.
//!
//! Invariants: a [`Timestamp`] is nanoseconds since a clock's origin and adding a duration
//! saturates instead of overflowing; [`backoff`] never exceeds its cap (or its base, if the
//! cap is smaller) and never overflows, whatever the attempt number.

use std::time::Duration;

/// An instant on a clock's timeline, in nanoseconds since the clock's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is; zero if it is not after.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX)))
    }
}

/// The delay before retry number `attempt` (1 for the first): `base`, doubling each
/// attempt, at most `cap` (or `base` if that is larger).
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap.max(base))
}
