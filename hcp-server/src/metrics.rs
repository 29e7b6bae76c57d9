//! Prometheus metrics: HTTP requests by route and status, jobs by operation and final state, job
//! duration, queue depth, provider call latency and errors, and the process's CPU, memory, file
//! descriptors and threads. Metric names live in [`names`]; label names come from
//! [`hcp_core::observe::fields`] plus the HTTP ones here. `prometheus-client` keeps the registry
//! and writes the Prometheus text format (0.0.4); `metrics-process` reads the process figures
//! (on Linux from `/proc`) at each scrape.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hcp_core::observe::fields;
use hcp_core::{Engine, ErrorKind, JobState, Observer, Operation};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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
    /// Counter: user and system CPU time of the process in seconds.
    pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
    /// Gauge: open file descriptors of the process.
    pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
    /// Gauge: the process's limit of open file descriptors.
    pub const PROCESS_MAX_FDS: &str = "process_max_fds";
    /// Gauge: virtual memory size of the process in bytes.
    pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
    /// Gauge: the process's limit of virtual memory in bytes.
    pub const PROCESS_VIRTUAL_MEMORY_MAX_BYTES: &str = "process_virtual_memory_max_bytes";
    /// Gauge: resident memory size of the process in bytes.
    pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
    /// Gauge: start time of the process since the Unix epoch in seconds.
    pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
    /// Gauge: OS threads of the process.
    pub const PROCESS_THREADS: &str = "process_threads";
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

/// Makes the histograms of one family, with that family's buckets.
#[derive(Debug, Clone, Copy)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// Labels of the HTTP metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

impl EncodeLabelSet for HttpLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> fmt::Result {
        (labels::ROUTE, self.route.as_str()).encode(e.encode_label())?;
        (labels::METHOD, self.method).encode(e.encode_label())?;
        (labels::STATUS, self.status).encode(e.encode_label())
    }
}

/// Labels of the job metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct JobLabels {
    operation: Operation,
    state: &'static str,
}

impl EncodeLabelSet for JobLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> fmt::Result {
        (fields::OPERATION, self.operation.as_str()).encode(e.encode_label())?;
        (fields::STATE, self.state).encode(e.encode_label())
    }
}

/// Labels of the provider call metrics; `error_kind` only on errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CallLabels {
    provider: String,
    operation: Operation,
    error_kind: Option<&'static str>,
}

impl EncodeLabelSet for CallLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> fmt::Result {
        (fields::PROVIDER, self.provider.as_str()).encode(e.encode_label())?;
        (fields::OPERATION, self.operation.as_str()).encode(e.encode_label())?;
        if let Some(kind) = self.error_kind {
            (fields::ERROR_KIND, kind).encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// Registers a counter under its exposition name (the encoder appends `_total`).
fn counter_name(name: &'static str) -> &'static str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// The service's metrics registry. It is also the engine's [`Observer`].
pub struct Metrics {
    registry: Mutex<Registry>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<HttpLabels, Histogram, Buckets>,
    jobs_finished: Family<JobLabels, Counter>,
    job_duration: Family<JobLabels, Histogram, Buckets>,
    jobs_pending: Gauge,
    jobs_running: Gauge,
    provider_calls: Family<CallLabels, Histogram, Buckets>,
    provider_errors: Family<CallLabels, Counter>,
    ready: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(Buckets(HTTP_BUCKETS)),
            jobs_finished: Family::default(),
            job_duration: Family::new_with_constructor(Buckets(JOB_BUCKETS)),
            jobs_pending: Gauge::default(),
            jobs_running: Gauge::default(),
            provider_calls: Family::new_with_constructor(Buckets(PROVIDER_BUCKETS)),
            provider_errors: Family::default(),
            ready: Gauge::default(),
        };
        {
            let mut r = lock(&m.registry);
            r.register(
                counter_name(names::HTTP_REQUESTS_TOTAL),
                "HTTP requests by route, method and status",
                m.http_requests.clone(),
            );
            r.register(
                names::HTTP_REQUEST_DURATION,
                "HTTP request latency in seconds",
                m.http_duration.clone(),
            );
            r.register(
                counter_name(names::JOBS_FINISHED_TOTAL),
                "Finished jobs by operation and final state",
                m.jobs_finished.clone(),
            );
            r.register(
                names::JOB_DURATION,
                "Job duration in seconds, first start to end",
                m.job_duration.clone(),
            );
            r.register(
                names::JOBS_PENDING,
                "Jobs accepted and not yet running (queue depth)",
                m.jobs_pending.clone(),
            );
            r.register(
                names::JOBS_RUNNING,
                "Jobs running now",
                m.jobs_running.clone(),
            );
            r.register(
                names::PROVIDER_CALL_DURATION,
                "Provider call latency in seconds",
                m.provider_calls.clone(),
            );
            r.register(
                counter_name(names::PROVIDER_CALL_ERRORS_TOTAL),
                "Failed provider calls",
                m.provider_errors.clone(),
            );
            r.register(names::READY, "1 when the service is ready", m.ready.clone());
            r.register_collector(Box::new(ProcessCollector));
        }
        m
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let labels = HttpLabels {
            route: route.to_string(),
            method: method_name(method),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Renders every metric as Prometheus text (format 0.0.4, [`CONTENT_TYPE`]), with the
    /// engine's queue depth, readiness and the process figures read now.
    pub fn render(&self, engine: &Engine, ready: bool) -> String {
        let stats = engine.stats();
        self.encode(stats.pending, stats.running, ready)
    }

    fn encode(&self, pending: usize, running: usize, ready: bool) -> String {
        self.jobs_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.jobs_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        self.ready.set(i64::from(ready));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail; a metric that could not encode would be a bug.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &lock(&self.registry))
        {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// Reads the process's CPU time, memory, file descriptors and threads at each scrape
/// (`metrics-process`: `/proc/self` on Linux; a figure the platform does not give is left out).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let p = metrics_process::collector::collect();
        if let Some(v) = p.cpu_seconds_total {
            let c = ConstCounter::new(v);
            c.encode(e.encode_descriptor(
                counter_name(names::PROCESS_CPU_SECONDS_TOTAL),
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            (
                names::PROCESS_OPEN_FDS,
                "Number of open file descriptors",
                p.open_fds,
            ),
            (
                names::PROCESS_MAX_FDS,
                "Maximum number of open file descriptors (0: unlimited)",
                p.max_fds,
            ),
            (
                names::PROCESS_VIRTUAL_MEMORY_BYTES,
                "Virtual memory size in bytes",
                p.virtual_memory_bytes,
            ),
            (
                names::PROCESS_VIRTUAL_MEMORY_MAX_BYTES,
                "Maximum amount of virtual memory available in bytes (0: unlimited)",
                p.virtual_memory_max_bytes,
            ),
            (
                names::PROCESS_RESIDENT_MEMORY_BYTES,
                "Resident memory size in bytes",
                p.resident_memory_bytes,
            ),
            (
                names::PROCESS_START_TIME_SECONDS,
                "Start time of the process since the Unix epoch in seconds",
                p.start_time_seconds,
            ),
            (
                names::PROCESS_THREADS,
                "Number of OS threads in the process",
                p.threads,
            ),
        ] {
            if let Some(v) = value {
                let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
                g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
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
        let mut labels = CallLabels {
            provider: provider.to_string(),
            operation,
            error_kind: None,
        };
        self.provider_calls
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            labels.error_kind = Some(kind.as_str());
            self.provider_errors.get_or_create(&labels).inc();
        }
    }

    fn job_finished(&self, operation: Operation, state: JobState, elapsed: Duration) {
        let labels = JobLabels {
            operation,
            state: state.as_str(),
        };
        self.jobs_finished.get_or_create(&labels).inc();
        self.job_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_their_names_labels_and_cumulative_buckets() {
        let m = Metrics::default();
        let get = poem::http::Method::GET;
        m.http_request("/a\"b", &get, 200, Duration::from_millis(2));
        m.http_request("/a\"b", &get, 200, Duration::from_secs(20));
        m.provider_call("sim", Operation::CreateVm, Duration::from_millis(3), None);
        m.provider_call(
            "sim",
            Operation::CreateVm,
            Duration::from_millis(3),
            Some(ErrorKind::Conflict),
        );
        m.job_finished(
            Operation::CreateVm,
            JobState::Succeeded,
            Duration::from_secs(2),
        );
        let out = m.encode(0, 0, true);
        for needle in [
            "# TYPE hcp_http_requests_total counter",
            "hcp_http_requests_total{route=\"/a\\\"b\",method=\"GET\",status=\"200\"} 2",
            "hcp_http_request_duration_seconds_bucket{route=\"/a\\\"b\",method=\"GET\",status=\"200\",le=\"0.0025\"} 1",
            "hcp_http_request_duration_seconds_bucket{route=\"/a\\\"b\",method=\"GET\",status=\"200\",le=\"+Inf\"} 2",
            "hcp_http_request_duration_seconds_count{route=\"/a\\\"b\",method=\"GET\",status=\"200\"} 2",
            "# TYPE hcp_jobs_finished_total counter",
            "hcp_jobs_finished_total{operation=\"create_vm\",state=\"SUCCEEDED\"} 1",
            "hcp_job_duration_seconds_count{operation=\"create_vm\",state=\"SUCCEEDED\"} 1",
            "hcp_provider_call_duration_seconds_count{provider=\"sim\",operation=\"create_vm\"} 2",
            "hcp_provider_call_errors_total{provider=\"sim\",operation=\"create_vm\",error_kind=\"conflict\"} 1",
            "hcp_jobs_pending 0",
            "hcp_jobs_running 0",
            "hcp_ready 1",
        ] {
            assert!(out.contains(needle), "missing {needle} in\n{out}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_read_at_each_scrape() {
        let out = Metrics::default().encode(3, 1, false);
        assert!(out.contains("hcp_ready 0"), "{out}");
        assert!(out.contains("hcp_jobs_pending 3"), "{out}");
        for name in [
            "# TYPE process_cpu_seconds_total counter",
            names::PROCESS_OPEN_FDS,
            names::PROCESS_MAX_FDS,
            names::PROCESS_VIRTUAL_MEMORY_BYTES,
            names::PROCESS_RESIDENT_MEMORY_BYTES,
            names::PROCESS_START_TIME_SECONDS,
            names::PROCESS_THREADS,
        ] {
            assert!(out.contains(name), "missing {name} in\n{out}");
        }
        let rss: i64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .expect("a resident memory figure");
        assert!(rss > 1_000_000, "{rss}");
    }
}
