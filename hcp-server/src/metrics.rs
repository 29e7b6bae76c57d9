//! Prometheus metrics: HTTP requests by route and status, jobs by operation and final state, job
//! duration, queue depth, provider call latency and errors. Metric names live in [`names`]; label
//! names come from [`hcp_core::observe::fields`] plus the HTTP ones here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hcp_core::observe::fields;
use hcp_core::{Engine, ErrorKind, JobState, Observer, Operation};

/// Every metric name the service exports, in one table.
pub mod names {
    /// Counter: HTTP requests by `route`, `method` and `status`.
    pub const HTTP_REQUESTS_TOTAL: &str = "hcp_http_requests_total";
    /// Histogram: HTTP request latency in seconds by `route`, `method` and `status`.
    pub const HTTP_REQUEST_DURATION: &str = "hcp_http_request_duration_seconds";
    /// Counter: finished jobs by `operation` and final `state`.
    pub const JOBS_FINISHED_TOTAL: &str = "hcp_jobs_finished_total";
    /// Histogram: job duration in seconds (first start to end) by `operation` and `state`.
    pub const JOB_DURATION: &str = "hcp_job_duration_seconds";
    /// Gauge: jobs accepted and not yet running (the queue depth).
    pub const JOBS_PENDING: &str = "hcp_jobs_pending";
    /// Gauge: jobs running now.
    pub const JOBS_RUNNING: &str = "hcp_jobs_running";
    /// Histogram: provider call latency in seconds by `provider` and `operation`.
    pub const PROVIDER_CALL_DURATION: &str = "hcp_provider_call_duration_seconds";
    /// Counter: failed provider calls by `provider`, `operation` and `error_kind`.
    pub const PROVIDER_CALL_ERRORS_TOTAL: &str = "hcp_provider_call_errors_total";
    /// Gauge: 1 when the service is ready (`/readyz` answers 200), else 0.
    pub const READY: &str = "hcp_ready";
}

/// Label names of the HTTP metrics.
pub mod labels {
    /// The route template (`/api/hcp/tenant/v1/projects/{projectId}/vms`), or `unmatched`.
    pub const ROUTE: &str = "route";
    /// The HTTP method.
    pub const METHOD: &str = "method";
    /// The HTTP status code.
    pub const STATUS: &str = "status";
}

const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
];
const PROVIDER_BUCKETS: &[f64] = &[0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

type HttpKey = (String, &'static str, u16);

/// The service's metrics registry. It is also the engine's [`Observer`].
#[derive(Debug, Default)]
pub struct Metrics {
    http: Mutex<BTreeMap<HttpKey, Histogram>>,
    jobs: Mutex<BTreeMap<(Operation, &'static str), Histogram>>,
    provider_calls: Mutex<BTreeMap<(String, Operation), Histogram>>,
    provider_errors: Mutex<BTreeMap<(String, Operation, &'static str), u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Returns the process-wide registry that [`crate::build_engine`] installs as the engine's
    /// observer and [`crate::app`] renders at `/metrics`.
    pub fn global() -> Arc<Metrics> {
        static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Metrics::default())).clone()
    }

    /// Records one HTTP request.
    pub fn http_request(
        &self,
        route: &str,
        method: &poem::http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        let method = method_name(method);
        let mut http = lock(&self.http);
        let key = (route.to_string(), method, status);
        http.entry(key)
            .or_insert_with(|| Histogram::new(HTTP_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// Renders every metric as Prometheus text (format 0.0.4), with the engine's queue depth and
    /// readiness read now.
    pub fn render(&self, engine: &Engine, ready: bool) -> String {
        let mut out = String::with_capacity(8192);
        let (route, method, status) = (labels::ROUTE, labels::METHOD, labels::STATUS);
        {
            let http = lock(&self.http);
            let _ = writeln!(
                out,
                "# HELP {} HTTP requests by route, method and status.",
                names::HTTP_REQUESTS_TOTAL
            );
            let _ = writeln!(out, "# TYPE {} counter", names::HTTP_REQUESTS_TOTAL);
            for ((r, m, s), h) in http.iter() {
                let _ = writeln!(
                    out,
                    "{}{{{route}=\"{}\",{method}=\"{m}\",{status}=\"{s}\"}} {}",
                    names::HTTP_REQUESTS_TOTAL,
                    escape(r),
                    h.count
                );
            }
            let _ = writeln!(
                out,
                "# HELP {} HTTP request latency in seconds.",
                names::HTTP_REQUEST_DURATION
            );
            let _ = writeln!(out, "# TYPE {} histogram", names::HTTP_REQUEST_DURATION);
            for ((r, m, s), h) in http.iter() {
                let l = format!(
                    "{route}=\"{}\",{method}=\"{m}\",{status}=\"{s}\"",
                    escape(r)
                );
                h.render(&mut out, names::HTTP_REQUEST_DURATION, &l);
            }
        }
        {
            let jobs = lock(&self.jobs);
            let (op, st) = (fields::OPERATION, fields::STATE);
            let _ = writeln!(
                out,
                "# HELP {} Finished jobs by operation and final state.",
                names::JOBS_FINISHED_TOTAL
            );
            let _ = writeln!(out, "# TYPE {} counter", names::JOBS_FINISHED_TOTAL);
            for ((o, s), h) in jobs.iter() {
                let _ = writeln!(
                    out,
                    "{}{{{op}=\"{o}\",{st}=\"{s}\"}} {}",
                    names::JOBS_FINISHED_TOTAL,
                    h.count
                );
            }
            let _ = writeln!(
                out,
                "# HELP {} Job duration in seconds, first start to end.",
                names::JOB_DURATION
            );
            let _ = writeln!(out, "# TYPE {} histogram", names::JOB_DURATION);
            for ((o, s), h) in jobs.iter() {
                h.render(
                    &mut out,
                    names::JOB_DURATION,
                    &format!("{op}=\"{o}\",{st}=\"{s}\""),
                );
            }
        }
        let stats = engine.stats();
        let _ = writeln!(
            out,
            "# HELP {} Jobs accepted and not yet running (queue depth).",
            names::JOBS_PENDING
        );
        let _ = writeln!(out, "# TYPE {} gauge", names::JOBS_PENDING);
        let _ = writeln!(out, "{} {}", names::JOBS_PENDING, stats.pending);
        let _ = writeln!(out, "# HELP {} Jobs running now.", names::JOBS_RUNNING);
        let _ = writeln!(out, "# TYPE {} gauge", names::JOBS_RUNNING);
        let _ = writeln!(out, "{} {}", names::JOBS_RUNNING, stats.running);
        {
            let calls = lock(&self.provider_calls);
            let (p, op) = (fields::PROVIDER, fields::OPERATION);
            let _ = writeln!(
                out,
                "# HELP {} Provider call latency in seconds.",
                names::PROVIDER_CALL_DURATION
            );
            let _ = writeln!(out, "# TYPE {} histogram", names::PROVIDER_CALL_DURATION);
            for ((prov, o), h) in calls.iter() {
                h.render(
                    &mut out,
                    names::PROVIDER_CALL_DURATION,
                    &format!("{p}=\"{}\",{op}=\"{o}\"", escape(prov)),
                );
            }
            let errors = lock(&self.provider_errors);
            let k = fields::ERROR_KIND;
            let _ = writeln!(
                out,
                "# HELP {} Failed provider calls.",
                names::PROVIDER_CALL_ERRORS_TOTAL
            );
            let _ = writeln!(out, "# TYPE {} counter", names::PROVIDER_CALL_ERRORS_TOTAL);
            for ((prov, o, kind), n) in errors.iter() {
                let _ = writeln!(
                    out,
                    "{}{{{p}=\"{}\",{op}=\"{o}\",{k}=\"{kind}\"}} {n}",
                    names::PROVIDER_CALL_ERRORS_TOTAL,
                    escape(prov)
                );
            }
        }
        let _ = writeln!(out, "# HELP {} 1 when the service is ready.", names::READY);
        let _ = writeln!(out, "# TYPE {} gauge", names::READY);
        let _ = writeln!(out, "{} {}", names::READY, u8::from(ready));
        out
    }
}

fn method_name(m: &poem::http::Method) -> &'static str {
    match *m {
        poem::http::Method::GET => "GET",
        poem::http::Method::POST => "POST",
        poem::http::Method::PUT => "PUT",
        poem::http::Method::DELETE => "DELETE",
        poem::http::Method::PATCH => "PATCH",
        poem::http::Method::HEAD => "HEAD",
        poem::http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Observer for Metrics {
    fn provider_call(
        &self,
        provider: &str,
        operation: Operation,
        elapsed: Duration,
        error: Option<ErrorKind>,
    ) {
        lock(&self.provider_calls)
            .entry((provider.to_string(), operation))
            .or_insert_with(|| Histogram::new(PROVIDER_BUCKETS))
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            *lock(&self.provider_errors)
                .entry((provider.to_string(), operation, kind.as_str()))
                .or_default() += 1;
        }
    }

    fn job_finished(&self, operation: Operation, state: JobState, elapsed: Duration) {
        lock(&self.jobs)
            .entry((operation, state.as_str()))
            .or_insert_with(|| Histogram::new(JOB_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(3.0);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1\"} 1"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"2\"} 2"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3"), "{out}");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
