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
        system_now()
    }
}

/// Returns the system clock's time, as [`Utc::now`] does, at a fraction of its cost.
pub(crate) fn system_now() -> DateTime<Utc> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(from_unix)
        .unwrap_or_else(Utc::now)
}

thread_local! {
    /// The day (since the Unix epoch) this thread last read the clock on, and its date.
    static TODAY: std::cell::Cell<Option<(u64, chrono::NaiveDate)>> =
        const { std::cell::Cell::new(None) };
}

/// The instant `since` after the Unix epoch, as [`Utc::now`] makes it, without working out the
/// calendar date each time: the engine reads the clock a dozen times per job, and the date
/// changes once a day.
fn from_unix(since: Duration) -> Option<DateTime<Utc>> {
    const DAY: u64 = 86_400;
    let secs = since.as_secs();
    let day = secs / DAY;
    let of_day = u32::try_from(secs % DAY).ok()?;
    let date = match TODAY.with(std::cell::Cell::get) {
        Some((d, date)) if d == day => date,
        _ => {
            let start = i64::try_from(day.checked_mul(DAY)?).ok()?;
            let date = DateTime::from_timestamp(start, 0)?.date_naive();
            TODAY.with(|t| t.set(Some((day, date))));
            date
        }
    };
    let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(of_day, since.subsec_nanos())?;
    Some(date.and_time(time).and_utc())
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
    fn the_system_clock_reads_as_chrono_would() {
        // Within a day, across midnight, at leap-year edges, the epoch and far ahead.
        let secs = [
            0_i64,
            1,
            86_399,
            86_400,
            951_782_399,
            951_868_800,
            1_709_164_800,
            1_796_342_399,
            1_796_342_400,
            4_102_444_800,
            253_402_300_799,
        ];
        for s in secs {
            for nanos in [0, 1, 999_999_999] {
                let d = Duration::new(u64::try_from(s).unwrap(), nanos);
                assert_eq!(
                    from_unix(d),
                    DateTime::from_timestamp(s, nanos),
                    "{s}.{nanos}"
                );
            }
        }
        let before = Utc::now();
        let read = SystemClock.now();
        assert!(before <= read && read <= Utc::now());
    }

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
