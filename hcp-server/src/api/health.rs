//! Health, readiness and metrics.

use poem_openapi::payload::PlainText;
use poem_openapi::{ApiResponse, OpenApi};

use super::security::ApiAuth;
use super::{ApiTags, State};
use crate::dto::HealthDto;
use crate::json::JsonBody;

pub(crate) struct HealthApi {
    pub(crate) state: State,
}

/// The answer of `/readyz`.
#[derive(Debug, ApiResponse)]
pub(crate) enum ReadyResponse {
    /// Ready: the first inventory has loaded and at least one provider answers.
    #[oai(status = 200)]
    Ready(JsonBody<HealthDto>),
    /// Not ready yet; `reason` says why.
    #[oai(status = 503)]
    NotReady(JsonBody<HealthDto>),
}

/// The answer of `/metrics`.
#[derive(Debug, ApiResponse)]
pub(crate) enum MetricsResponse {
    /// Prometheus text format 0.0.4.
    #[oai(
        status = 200,
        content_type = "text/plain; version=0.0.4; charset=utf-8"
    )]
    Ok(PlainText<String>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is alive
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self, _auth: ApiAuth) -> JsonBody<HealthDto> {
        JsonBody::new(&HealthDto {
            status: "ok".into(),
            reason: None,
        })
    }

    /// Readiness: the first inventory has loaded and at least one provider answers
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, _auth: ApiAuth) -> ReadyResponse {
        match self.state.ready() {
            Ok(()) => ReadyResponse::Ready(JsonBody::new(&HealthDto {
                status: "ok".into(),
                reason: None,
            })),
            Err(reason) => ReadyResponse::NotReady(JsonBody::new(&HealthDto {
                status: "unavailable".into(),
                reason: Some(reason),
            })),
        }
    }

    /// Prometheus metrics
    ///
    /// Request count and latency by route and status, jobs by operation and final state, job
    /// duration, queue depth, provider call latency and errors by provider, and the process's
    /// CPU time, memory, file descriptors and threads (`process_*`).
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, _auth: ApiAuth) -> MetricsResponse {
        let ready = self.state.ready().is_ok();
        MetricsResponse::Ok(PlainText(
            self.state.metrics.render(&self.state.engine, ready),
        ))
    }
}
