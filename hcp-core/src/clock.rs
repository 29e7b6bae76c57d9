//! Time as the engine reads it: the system clock by default, a [`ManualClock`] in tests, so a
//! test of a deadline moves time forward instead of sleeping past it.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Tells the engine what time it is (job deadlines, timestamps, retry times, leases).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Returns the current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock; the engine's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
///
/// # Behavior
/// It stands still at its start; [`ManualClock::advance`] moves it forward. Timers the engine
/// waits on (a running call's timeout, a retry's backoff) still run on tokio's time; what moves
/// with this clock is every comparison with a stored time: whether a queued job is past its
/// deadline, when a retry is due, when a lease lapses.
#[derive(Debug)]
pub struct ManualClock {
    at: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// Starts at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock { at: Mutex::new(at) }
    }

    /// Starts at the system's current time.
    pub fn starting_now() -> Self {
        ManualClock::new(Utc::now())
    }

    /// Moves the clock forward by `by` (saturating at the calendar's end).
    pub fn advance(&self, by: Duration) {
        let mut at = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *at = chrono::Duration::from_std(by)
            .ok()
            .and_then(|d| at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = Utc::now();
        let c = ManualClock::new(start);
        assert_eq!(c.now(), start);
        c.advance(Duration::from_secs(3));
        assert_eq!(c.now(), start + chrono::Duration::seconds(3));
        c.advance(Duration::MAX);
        assert_eq!(c.now(), DateTime::<Utc>::MAX_UTC);
    }
}
