//! The wire protocol: HTTPS requests to `/api2/json` with an API token, TLS checked against the
//! system roots, a CA file or a pinned certificate fingerprint, and PVE tasks (UPIDs) followed to
//! their end.

use std::fmt;
use std::time::{Duration, Instant};

use hcp_core::{Error, ErrorKind, OpContext, Result};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::Value;

use crate::config::Connection;
use crate::error::{parse_error, task_error};

/// Most task log lines read per request.
const LOG_PAGE: u32 = 500;

/// A client of one PVE cluster's API.
pub(crate) struct Client {
    http: reqwest::Client,
    api: String,
    nodes: Vec<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// The exit of a followed task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskEnd {
    /// PVE's exit status (`OK`, `WARNINGS: 1`).
    pub exitstatus: String,
}

impl Client {
    /// Builds a client; `nodes` are the node names kept out of error messages.
    pub(crate) fn new(conn: &Connection, timeout: Duration, nodes: Vec<String>) -> Result<Self> {
        let mut auth = HeaderValue::from_str(&conn.authorization()).map_err(|_| {
            Error::invalid("token_id", "holds characters an HTTP header cannot carry")
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(16);
        let tls = hcp_tls::client_config(&conn.trust).map_err(|m| Error::invalid("ca_file", m))?;
        let builder = builder.use_preconfigured_tls(tls);
        let http = builder
            .build()
            .map_err(|e| Error::internal(format!("HTTP client set-up: {e}")))?;
        Ok(Client {
            http,
            api: conn.api.clone(),
            nodes,
        })
    }

    /// Sends one request; `params` go in the query (GET, DELETE) or as a form (POST, PUT).
    /// Returns the answer's `data`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Value> {
        let url = format!("{}{path}", self.api);
        let mut req = self.http.request(method.clone(), &url);
        req = if method == Method::GET || method == Method::DELETE {
            req.query(params)
        } else {
            req.form(params)
        };
        let resp = req.send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| transport_error(&e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return Ok(json
                .and_then(|mut v| v.get_mut("data").map(Value::take))
                .unwrap_or(Value::Null));
        }
        let message = json
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        let errors = json.as_ref().and_then(|v| v.get("errors"));
        Err(parse_error(status.as_u16(), &message, errors, &self.nodes)
            .with_context("pve_path", path))
    }

    /// GETs `path`.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.call(Method::GET, path, query).await
    }

    /// Returns the `wss://` URL of API path `path` with `query`, for a WebSocket endpoint.
    pub(crate) fn websocket_url(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> std::result::Result<String, String> {
        let mut url =
            reqwest::Url::parse(&format!("{}{path}", self.api)).map_err(|e| e.to_string())?;
        url.query_pairs_mut().extend_pairs(query);
        let scheme = if url.scheme() == "http" { "ws" } else { "wss" };
        url.set_scheme(scheme)
            .map_err(|()| "cannot use a WebSocket scheme".to_string())?;
        Ok(url.into())
    }

    /// POSTs a form to `path`.
    pub(crate) async fn post(&self, path: &str, form: &[(&str, String)]) -> Result<Value> {
        self.call(Method::POST, path, form).await
    }

    /// PUTs a form to `path`.
    pub(crate) async fn put(&self, path: &str, form: &[(&str, String)]) -> Result<Value> {
        self.call(Method::PUT, path, form).await
    }

    /// DELETEs `path`.
    pub(crate) async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.call(Method::DELETE, path, query).await
    }

    /// Follows task `upid` on `node` to its end, copying its log lines into the job log as they
    /// appear. A task still running after `timeout` is stopped on the node and reported as a
    /// [`ErrorKind::Timeout`].
    ///
    /// # Errors
    /// The task's exit status classified by [`crate::error::parse_error`] when it is not `OK`
    /// (`WARNINGS: n` counts as success); request errors.
    ///
    /// # Cancel safety
    /// When the returned future is dropped before the task ends (a job timeout, a cancel), the
    /// task is stopped on the node in the background, not abandoned.
    pub(crate) async fn wait_task(
        &self,
        node: &str,
        upid: &str,
        timeout: Duration,
        poll: Duration,
        ctx: &OpContext,
    ) -> Result<TaskEnd> {
        let base = format!("/nodes/{node}/tasks/{}", encode_segment(upid));
        let mut guard = StopOnDrop {
            http: self.http.clone(),
            url: format!("{}{base}", self.api),
            armed: true,
        };
        let result = self.follow(node, upid, &base, timeout, poll, ctx).await;
        guard.armed = false;
        result
    }

    async fn follow(
        &self,
        node: &str,
        upid: &str,
        base: &str,
        timeout: Duration,
        poll: Duration,
        ctx: &OpContext,
    ) -> Result<TaskEnd> {
        let deadline = Instant::now() + timeout;
        let mut seen: u32 = 0;
        loop {
            let status = self.get(&format!("{base}/status"), &[]).await?;
            seen = self.copy_log(base, seen, ctx).await?;
            if status.get("status").and_then(Value::as_str) == Some("stopped") {
                // Lines written between the log read and the status read.
                self.copy_log(base, seen, ctx).await?;
                let exit = status
                    .get("exitstatus")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string();
                if exit == "OK" || exit.starts_with("WARNINGS") {
                    return Ok(TaskEnd { exitstatus: exit });
                }
                return Err(task_error(&exit, &self.nodes));
            }
            if Instant::now() >= deadline {
                let stopped = self.delete(base, &[]).await;
                if let Err(e) = &stopped {
                    tracing::warn!(node, error = %e, "could not stop a task past its timeout");
                }
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "a Proxmox VE task ran longer than {}s and was stopped",
                        timeout.as_secs()
                    ),
                )
                .with_context("node", node)
                .with_context("upid", upid));
            }
            tokio::time::sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    async fn copy_log(&self, base: &str, seen: u32, ctx: &OpContext) -> Result<u32> {
        let mut seen = seen;
        loop {
            let lines = self
                .get(
                    &format!("{base}/log"),
                    &[("start", seen.to_string()), ("limit", LOG_PAGE.to_string())],
                )
                .await?;
            let lines = lines.as_array().cloned().unwrap_or_default();
            let count = u32::try_from(lines.len()).unwrap_or(u32::MAX);
            for line in &lines {
                if let Some(t) = line.get("t").and_then(Value::as_str)
                    && t != "no content"
                {
                    // PVE's task log names storages, disks and VMIDs: operators read it whole;
                    // tenants see that the task is progressing.
                    ctx.log(
                        hcp_core::LogEntry::info("Proxmox VE task output")
                            .with_detail(t.to_string())
                            .operators_only(),
                    );
                }
            }
            seen = seen.saturating_add(count);
            if count < LOG_PAGE {
                return Ok(seen);
            }
        }
    }
}

/// Stops a followed task on the node when the call following it is dropped.
struct StopOnDrop {
    http: reqwest::Client,
    url: String,
    armed: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let http = self.http.clone();
            let url = std::mem::take(&mut self.url);
            rt.spawn(async move {
                if let Err(e) = http.delete(&url).send().await {
                    tracing::warn!(error = %e.without_url(), "could not stop an abandoned task");
                }
            });
        }
    }
}

/// Returns the UPID when `data` is one (a write that started a task).
pub(crate) fn as_upid(data: &Value) -> Option<&str> {
    data.as_str().filter(|s| s.starts_with("UPID:"))
}

fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'@') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn transport_error(e: &reqwest::Error) -> Error {
    let (kind, what) = if e.is_timeout() {
        (ErrorKind::Timeout, "did not answer in time")
    } else if e.is_connect() {
        (ErrorKind::ProviderUnavailable, "cannot be reached")
    } else {
        (ErrorKind::ProviderUnavailable, "broke the connection")
    };
    // The URL names the cluster's host: keep it out of the message, in the context.
    let detail = e.to_string();
    Error::new(kind, format!("the Proxmox VE API {what}"))
        .with_context("detail", detail)
        .temporary()
}
