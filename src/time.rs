//! The crate's own clock value: an [`Instant`] the caller supplies.
//!
//! The core never reads a clock. Every input that depends on time takes a `now: Instant`; durations
//! are plain [`core::time::Duration`]. An `Instant` is an opaque count of microseconds since an
//! epoch of the caller's choosing (boot, process start, ...): only differences between instants
//! matter, so any monotonic source works.

use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point in time, in microseconds since an epoch the caller chooses.
///
/// ```
/// use core::time::Duration;
/// use tftp_proto::Instant;
///
/// let t0 = Instant::from_millis(1_000);
/// let t1 = t0 + Duration::from_millis(250);
/// assert_eq!(t1 - t0, Duration::from_millis(250));
/// assert_eq!(t0 - t1, Duration::ZERO); // saturates instead of panicking
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant { micros: 0 };
    /// The latest representable instant; adding to it saturates.
    pub const MAX: Instant = Instant { micros: u64::MAX };

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    /// An instant `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis.saturating_mul(1_000),
        }
    }

    /// An instant `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Instant {
            micros: secs.saturating_mul(1_000_000),
        }
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }

    /// Microseconds elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn micros_since(self, earlier: Instant) -> u64 {
        self.micros.saturating_sub(earlier.micros)
    }

    /// `self + micros` microseconds, saturating at [`Instant::MAX`].
    pub const fn add_micros(self, micros: u64) -> Instant {
        Instant {
            micros: self.micros.saturating_add(micros),
        }
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant {
            micros: self.micros.saturating_add(duration_micros(d)),
        }
    }
}

/// Whole microseconds of `d`, saturating; 64-bit arithmetic only (`Duration::as_micros` is
/// 128-bit, which is costly code on small MCUs).
pub(crate) const fn duration_micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(d.subsec_micros() as u64)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant {
            micros: self.micros.saturating_sub(duration_micros(d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::from_secs(1) - Instant::from_secs(2), Duration::ZERO);
        assert_eq!(Instant::from_secs(2).as_micros(), 2_000_000);
        assert_eq!(Instant::from_millis(3).as_micros(), 3_000);
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
    }
}
