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

/// The nanoseconds since midnight of `t`, or `None` within a leap second (which chrono writes
/// as a second's nanoseconds past 999,999,999). The callers pass the stored UTC time:
/// `DateTime`'s own accessors first work out the local time, which costs more than the sums.
fn nanos_of_day(t: &chrono::NaiveDateTime) -> Option<u64> {
    use chrono::Timelike;
    // The time's own seconds: `NaiveDateTime`'s work them out from hours, minutes and seconds.
    let time = t.time();
    let nanos = time.nanosecond();
    (nanos < 1_000_000_000)
        .then(|| u64::from(time.num_seconds_from_midnight()) * 1_000_000_000 + u64::from(nanos))
}

/// Returns `t` plus `by`, or `None` past the calendar's end, as `checked_add_signed` does;
/// without chrono's calendar arithmetic when the sum falls on `t`'s day (a lease, a job's
/// deadline: most of the engine's sums).
pub(crate) fn add(t: DateTime<Utc>, by: Duration) -> Option<DateTime<Utc>> {
    const SECOND: u64 = 1_000_000_000;
    let naive = t.naive_utc();
    if by.as_secs() < 86_400
        && let Some(start) = nanos_of_day(&naive)
        // Both under a day: no overflow.
        && let sum = start + by.as_secs() * SECOND + u64::from(by.subsec_nanos())
        && sum < 86_400 * SECOND
    {
        let secs = u32::try_from(sum / SECOND).ok()?;
        let nanos = u32::try_from(sum % SECOND).ok()?;
        let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)?;
        return Some(naive.date().and_time(time).and_utc());
    }
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
}

/// Returns how long after `earlier` `later` is, or `None` when it is before it, as
/// `(later - earlier).to_std()` does; without chrono's calendar arithmetic when both fall on
/// the same day.
pub(crate) fn since(later: DateTime<Utc>, earlier: DateTime<Utc>) -> Option<Duration> {
    let (l, e) = (later.naive_utc(), earlier.naive_utc());
    if l.date() == e.date()
        && let (Some(l), Some(e)) = (nanos_of_day(&l), nanos_of_day(&e))
    {
        return l.checked_sub(e).map(Duration::from_nanos);
    }
    (later - earlier).to_std().ok()
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
    fn sums_and_differences_match_chrono() {
        let starts = [
            0_i64,
            1,
            86_399,
            86_400,
            951_868_799,
            1_796_342_399,
            253_402_300_799,
        ];
        let nanos = [0_u32, 1, 999_999_999];
        let bys = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(999),
            Duration::from_secs(30),
            Duration::from_secs(86_399),
            Duration::from_secs(86_400),
            Duration::from_secs(3 * 86_400 + 7),
            Duration::from_secs(400 * 365 * 86_400),
            Duration::MAX,
        ];
        let chrono_add = |t: DateTime<Utc>, by: Duration| {
            chrono::Duration::from_std(by)
                .ok()
                .and_then(|d| t.checked_add_signed(d))
        };
        let mut times = Vec::new();
        for s in starts {
            for n in nanos {
                times.push(DateTime::from_timestamp(s, n).unwrap());
            }
        }
        // A leap second, as chrono writes it.
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        times.push(leap);
        for &t in &times {
            for by in bys {
                assert_eq!(add(t, by), chrono_add(t, by), "{t} + {by:?}");
            }
            for &u in &times {
                assert_eq!(since(u, t), (u - t).to_std().ok(), "{u} - {t}");
            }
        }
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
