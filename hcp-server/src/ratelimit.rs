//! Per-principal request budgets: a token bucket per caller, answering `429` with `Retry-After`.
//!
//! # Behavior
//! - Each authenticated caller (by subject) has its own bucket of `burst` requests, refilled at
//!   `rate` requests a second (the generic cell rate algorithm of the `governor` crate, which is
//!   a token bucket without a timer task). A request that finds the bucket empty is answered
//!   `429 RATE_LIMITED` with `Retry-After` (whole seconds, at least 1) and reaches no handler;
//!   other callers are unaffected.
//! - Requests without a caller (the public routes, a refused login) are budgeted by the client's
//!   IP address instead. Health, readiness and metrics probes are never limited.
//! - Off by default while the service listens on loopback (development); on with
//!   [`RateLimit::DEFAULT`] otherwise. `HCP_RATE_LIMIT` sets it (`off`, `N/s`, `N/min`) and
//!   `HCP_RATE_BURST` the bucket size.
//! - Buckets of callers that have been idle long enough to be full again are dropped now and
//!   then, so memory stays bounded by the callers of the last moments.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hcp_core::{Error, ErrorKind, Result};
use poem::Response;
use poem::http::HeaderValue;

use crate::error::{CODE_RATE_LIMITED, Problem};

/// A request budget: `rate` requests a second on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The sustained rate, in requests per `per`.
    pub requests: NonZeroU32,
    /// The period `requests` are counted over (a second or a minute).
    pub per: Duration,
    /// The most requests a caller may send at once after being idle.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// The budget of a service listening beyond loopback when none is configured: 50 requests a
    /// second per caller, bursts of 100.
    pub const DEFAULT: RateLimit = RateLimit {
        requests: NonZeroU32::new(50).expect("non-zero"),
        per: Duration::from_secs(1),
        burst: NonZeroU32::new(100).expect("non-zero"),
    };

    /// Parses `HCP_RATE_LIMIT`'s value: `off`, or `N/s`, `N/min` (`N` from 1 to 1,000,000).
    /// Returns `None` for `off`. The burst is `burst` when given, else the requests of one
    /// period (at least 1).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `field` and the accepted forms.
    pub fn parse(field: &str, value: &str, burst: Option<&str>) -> Result<Option<RateLimit>> {
        let value = value.trim();
        let bad = || {
            Error::invalid(
                field,
                format!(
                    "`{}` is not a request budget: give `off`, `N/s` or `N/min` with N from 1 to \
                     1000000 (for example `50/s`)",
                    hcp_core::echo(value)
                ),
            )
        };
        if value.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (n, unit) = value.split_once('/').ok_or_else(bad)?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            _ => return Err(bad()),
        };
        // A count of requests: a whole number from 1 to 1,000,000.
        let count = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .and_then(NonZeroU32::new)
        };
        let requests = count(n).ok_or_else(bad)?;
        let burst = match burst {
            None => requests,
            Some(b) => count(b).ok_or_else(|| {
                Error::invalid(
                    "HCP_RATE_BURST",
                    format!(
                        "`{}` is not a burst size: give a whole number of requests from 1 to \
                             1000000",
                        hcp_core::echo(b)
                    ),
                )
            })?,
        };
        Ok(Some(RateLimit {
            requests,
            per,
            burst,
        }))
    }

    fn quota(&self) -> Quota {
        // One request's worth of refill: `per / requests`, never zero.
        let nanos = (self.per.as_nanos() / u128::from(self.requests.get())).max(1);
        let every = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Quota::with_period(every)
            .unwrap_or_else(|| Quota::per_second(self.requests))
            .allow_burst(self.burst)
    }
}

/// Whether requests are budgeted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimiting {
    /// Off on a loopback listen address, [`RateLimit::DEFAULT`] on any other (`HCP_RATE_LIMIT`
    /// unset).
    #[default]
    Automatic,
    /// Off (`HCP_RATE_LIMIT=off`).
    Off,
    /// This budget per caller.
    On(RateLimit),
}

impl RateLimiting {
    /// Returns the budget in force for a service listening on `listen`.
    pub fn effective(&self, listen: &std::net::SocketAddr) -> Option<RateLimit> {
        match self {
            RateLimiting::Automatic if listen.ip().is_loopback() => None,
            RateLimiting::Automatic => Some(RateLimit::DEFAULT),
            RateLimiting::Off => None,
            RateLimiting::On(r) => Some(*r),
        }
    }
}

/// Who a budget belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Budget {
    /// An authenticated caller.
    Subject(String),
    /// A request without a caller, by client address.
    Address(IpAddr),
}

/// The budgets of every caller.
pub(crate) struct Limiter {
    buckets: DefaultKeyedRateLimiter<Budget>,
    checks: AtomicU64,
}

/// How many checks pass between two sweeps of idle buckets.
const SWEEP_EVERY: u64 = 4096;

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Limiter {
        Limiter {
            buckets: RateLimiter::keyed(limit.quota()),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request from `who`'s bucket; returns the `429` to send instead when it is empty.
    pub(crate) fn refusal(&self, who: &Budget) -> Option<Response> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
            self.buckets.shrink_to_fit();
        }
        match self.buckets.check_key(who) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Some(too_many(wait))
            }
        }
    }
}

/// The `429` answer: a problem body and `Retry-After` in whole seconds (rounded up, at least 1).
fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut resp = Problem::transport(
        ErrorKind::QuotaExceeded,
        CODE_RATE_LIMITED,
        format!(
            "too many requests from this caller: its request budget refills in {secs} s; retry \
             after that (other callers are not affected)"
        ),
        None,
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut()
            .insert(poem::http::header::RETRY_AFTER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_bad_ones_name_the_variable() {
        assert_eq!(
            RateLimit::parse("HCP_RATE_LIMIT", "off", None).unwrap(),
            None
        );
        let r = RateLimit::parse("HCP_RATE_LIMIT", "20/s", None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.requests.get(), r.per, r.burst.get()),
            (20, Duration::from_secs(1), 20)
        );
        let r = RateLimit::parse("HCP_RATE_LIMIT", " 600/min ", Some("30"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.requests.get(), r.per, r.burst.get()),
            (600, Duration::from_secs(60), 30)
        );
        for bad in ["", "20", "0/s", "-1/s", "20/h", "99999999999/s", "x/s"] {
            let e = RateLimit::parse("HCP_RATE_LIMIT", bad, None).unwrap_err();
            assert_eq!(e.field(), Some("HCP_RATE_LIMIT"), "{bad}: {e}");
            assert!(e.to_string().contains("N/s"), "{bad}: {e}");
        }
        let e = RateLimit::parse("HCP_RATE_LIMIT", "5/s", Some("0")).unwrap_err();
        assert_eq!(e.field(), Some("HCP_RATE_BURST"), "{e}");
    }

    #[test]
    fn a_burst_over_the_budget_is_refused_with_retry_after_and_others_are_not() {
        let limiter = Limiter::new(RateLimit::parse("x", "1/min", Some("3")).unwrap().unwrap());
        let alice = Budget::Subject("alice".into());
        for _ in 0..3 {
            assert!(limiter.refusal(&alice).is_none());
        }
        let refused = limiter.refusal(&alice).expect("refused");
        assert_eq!(refused.status(), poem::http::StatusCode::TOO_MANY_REQUESTS);
        let after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&after), "{after}");
        assert!(limiter.refusal(&Budget::Subject("bob".into())).is_none());
        assert!(
            limiter
                .refusal(&Budget::Address("192.0.2.1".parse().unwrap()))
                .is_none()
        );
    }
}
