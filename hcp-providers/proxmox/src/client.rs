//! The wire protocol: HTTPS requests to `/api2/json` with an API token or a login ticket, TLS
//! checked against the system roots, a CA file or a pinned certificate fingerprint, and PVE tasks
//! (UPIDs) followed to their end.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hcp_core::{Error, ErrorKind, OpContext, Result, SecretString};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{Connection, Credentials};
use crate::error::{parse_error, task_error};

/// Most task log lines read per request.
const LOG_PAGE: u32 = 500;

/// The header PVE wants on writes made with a ticket.
const CSRF: HeaderName = HeaderName::from_static("csrfpreventiontoken");

/// A client of one PVE cluster's API.
pub(crate) struct Client {
    http: reqwest::Client,
    api: String,
    nodes: Vec<String>,
    auth: Auth,
}

/// How requests are authenticated.
enum Auth {
    /// The API token's `Authorization` header, sent on every request.
    Token(HeaderValue),
    /// A password login: tickets asked for and renewed as they age.
    Ticket(Login),
}

/// A password login and its current ticket.
struct Login {
    username: String,
    password: SecretString,
    renew: Duration,
    session: tokio::sync::Mutex<Option<Session>>,
    logins: AtomicU64,
}

/// A login ticket and its CSRF token.
#[derive(Clone)]
struct Session {
    /// The `PVEAuthCookie` cookie (`PVEAuthCookie=PVE:user@realm:...`).
    cookie: HeaderValue,
    csrf: HeaderValue,
    at: Instant,
    generation: u64,
}

/// An answer of the API: its data, or PVE's refusal with its HTTP status.
enum Answer {
    Data(Value),
    Refused(u16, Error),
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
        let auth = match &conn.credentials {
            Credentials::Token { token_id, secret } => {
                let mut header =
                    HeaderValue::from_str(&format!("PVEAPIToken={token_id}={}", secret.expose()))
                        .map_err(|_| {
                        Error::invalid("token_id", "holds characters an HTTP header cannot carry")
                    })?;
                header.set_sensitive(true);
                Auth::Token(header)
            }
            Credentials::Password { username, password } => Auth::Ticket(Login {
                username: username.clone(),
                password: password.clone(),
                renew: conn.ticket_renew,
                session: tokio::sync::Mutex::new(None),
                logins: AtomicU64::new(0),
            }),
        };
        let builder = reqwest::Client::builder()
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
            auth,
        })
    }

    /// Returns how many password logins this client made (0 with an API token).
    pub(crate) fn logins(&self) -> u64 {
        match &self.auth {
            Auth::Token(_) => 0,
            Auth::Ticket(l) => l.logins.load(Ordering::SeqCst),
        }
    }

    /// Returns the current ticket, logging in when there is none, when it is older than
    /// `ticket_renew`, or when it is the one of generation `refused` (PVE refused it with 401).
    /// `None` with an API token.
    async fn session(&self, refused: Option<u64>) -> Result<Option<Session>> {
        let Auth::Ticket(login) = &self.auth else {
            return Ok(None);
        };
        let mut current = login.session.lock().await;
        if let Some(s) = current.as_ref()
            && s.at.elapsed() < login.renew
            && Some(s.generation) != refused
        {
            return Ok(Some(s.clone()));
        }
        let generation = current.as_ref().map_or(0, |s| s.generation + 1);
        let session = self.login(login, generation).await?;
        *current = Some(session.clone());
        Ok(Some(session))
    }

    /// Trades the password for a ticket (`POST /access/ticket`).
    async fn login(&self, login: &Login, generation: u64) -> Result<Session> {
        let at = Instant::now();
        let form = [
            ("username", login.username.as_str()),
            ("password", login.password.expose()),
        ];
        let resp = self
            .http
            .post(format!("{}/access/ticket", self.api))
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| transport_error(&e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let message = json
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or(""))
                .trim()
                .to_string();
            let e = parse_error(status.as_u16(), &message, None, &self.nodes);
            if matches!(status.as_u16(), 401 | 403) {
                // Tenants may read the message: the user stays in the context.
                return Err(Error::new(
                    ErrorKind::ProviderUnavailable,
                    "Proxmox VE refused HCP's password login; check username and password_file",
                )
                .with_context("user", &login.username)
                .with_context("pve_status", status.as_u16())
                .with_context("pve_message", message));
            }
            return Err(e.with_context("pve_path", "/access/ticket"));
        }
        let data = json.as_ref().and_then(|v| v.get("data"));
        let text = |k: &str| data.and_then(|d| d.get(k)).and_then(Value::as_str);
        if data.and_then(|d| d.get("NeedTFA")).is_some() {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                "HCP's Proxmox VE user needs a second factor to log in; use an API token",
            )
            .with_context("user", &login.username));
        }
        let (Some(ticket), Some(csrf)) = (text("ticket"), text("CSRFPreventionToken")) else {
            return Err(Error::new(
                ErrorKind::ProviderError,
                "the Proxmox VE API answered a login without a ticket",
            ));
        };
        let unusable = || {
            Error::new(
                ErrorKind::ProviderError,
                "the Proxmox VE login ticket is not a header value",
            )
        };
        let mut cookie =
            HeaderValue::from_str(&format!("PVEAuthCookie={ticket}")).map_err(|_| unusable())?;
        cookie.set_sensitive(true);
        let mut csrf = HeaderValue::from_str(csrf).map_err(|_| unusable())?;
        csrf.set_sensitive(true);
        login.logins.fetch_add(1, Ordering::SeqCst);
        tracing::info!(user = %login.username, "logged in to the Proxmox VE API");
        Ok(Session {
            cookie,
            csrf,
            at,
            generation,
        })
    }

    /// Returns the headers that authenticate a request made with `session` (the API token when
    /// there is none); `write` adds the CSRF token a ticket needs on writes.
    fn auth_headers(&self, session: Option<&Session>, write: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        match (&self.auth, session) {
            (Auth::Token(h), _) => {
                headers.insert(AUTHORIZATION, h.clone());
            }
            (Auth::Ticket(_), Some(s)) => {
                headers.insert(COOKIE, s.cookie.clone());
                if write {
                    headers.insert(CSRF, s.csrf.clone());
                }
            }
            (Auth::Ticket(_), None) => {}
        }
        headers
    }

    /// Returns the header that authenticates a WebSocket (console) upgrade request: the API
    /// token, or the current ticket's cookie.
    ///
    /// # Errors
    /// A failed login.
    pub(crate) async fn upgrade_header(&self) -> Result<(String, String)> {
        let session = self.session(None).await?;
        let headers = self.auth_headers(session.as_ref(), false);
        let (name, value) = headers
            .iter()
            .next()
            .ok_or_else(|| Error::internal("no credentials for the console upstream"))?;
        let value = value
            .to_str()
            .map_err(|_| Error::internal("a credential that is not text"))?;
        Ok((name.as_str().to_string(), value.to_string()))
    }

    /// Sends one request; `params` go in the query (GET, DELETE) or as a form (POST, PUT).
    /// Returns the answer's `data`. With a password login, a ticket PVE refuses (401) is
    /// renewed once and the request sent again.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Value> {
        let session = self.session(None).await?;
        match (
            self.send(&method, path, params, session.as_ref()).await?,
            session,
        ) {
            (Answer::Data(v), _) => Ok(v),
            (Answer::Refused(401, _), Some(s)) => {
                tracing::info!("Proxmox VE refused the login ticket; logging in again");
                let renewed = self.session(Some(s.generation)).await?;
                match self.send(&method, path, params, renewed.as_ref()).await? {
                    Answer::Data(v) => Ok(v),
                    Answer::Refused(_, e) => Err(e),
                }
            }
            (Answer::Refused(_, e), _) => Err(e),
        }
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        params: &[(&str, String)],
        session: Option<&Session>,
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.api);
        let read = method == Method::GET || method == Method::DELETE;
        let write = method != Method::GET && method != Method::HEAD;
        let mut req = self
            .http
            .request(method.clone(), &url)
            .headers(self.auth_headers(session, write));
        req = if read {
            req.query(params)
        } else {
            req.form(params)
        };
        let resp = req.send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| transport_error(&e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return Ok(Answer::Data(
                json.and_then(|mut v| v.get_mut("data").map(Value::take))
                    .unwrap_or(Value::Null),
            ));
        }
        let message = json
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        let errors = json.as_ref().and_then(|v| v.get("errors"));
        Ok(Answer::Refused(
            status.as_u16(),
            parse_error(status.as_u16(), &message, errors, &self.nodes)
                .with_context("pve_path", path),
        ))
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
        let session = self.session(None).await?;
        let mut guard = StopOnDrop {
            http: self.http.clone(),
            url: format!("{}{base}", self.api),
            headers: self.auth_headers(session.as_ref(), true),
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
    headers: HeaderMap,
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
            let headers = std::mem::take(&mut self.headers);
            rt.spawn(async move {
                if let Err(e) = http.delete(&url).headers(headers).send().await {
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
