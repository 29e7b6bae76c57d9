//! The outer layer every request passes: request id, colon-verb routing, authentication and
//! role checks, the body limit, the request timeout, problem bodies for every failure, the access
//! log (method, path and status: never headers, query strings or bodies) and the HTTP metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hcp_core::ErrorKind;
use poem::http::{HeaderValue, StatusCode, Uri};
use poem::middleware::CatchPanic;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get};
use poem_openapi::OperationId;
use tracing::Instrument;

use crate::ServeOptions;
use crate::api::{
    self, AppState, COLON_VERBS, JOB_COLON_VERBS, OPS_PREFIX, OPS_VM_COLON_VERBS,
    OPS_VMS_COLLECTION_VERBS, SNAPSHOT_COLON_VERBS, TENANT_PREFIX, VERB_MARKER,
};
use crate::auth::{Auth, login};
use crate::console::ConsoleProxy;
use crate::error::{CODE_REQUEST_TIMEOUT, CODE_ROUTE_NOT_FOUND, Problem, problem_from_poem};
use crate::limits::{PageLimits, read_limited};
use crate::metrics::Metrics;
use crate::ratelimit::{Budget, Limiter};

/// The request id header, read from the client when it is sane and always answered.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The id of the request being served, for problem bodies.
    pub(crate) static REQUEST_ID: String;
}

/// Builds the whole service.
pub(crate) fn app(
    engine: hcp_core::Engine,
    options: &ServeOptions,
    metrics: Arc<Metrics>,
    consoles: Arc<ConsoleProxy>,
) -> impl Endpoint + 'static {
    let state = Arc::new(AppState {
        consoles,
        engine,
        pages: PageLimits {
            default: options.page_default,
            max: options.page_max,
        },
        metrics: metrics.clone(),
    });
    let service = api::service(&state);
    let internal = service.spec();
    let (public, routes) = api::publish(
        &internal,
        options.auth.enabled(),
        &options.auth.public_routes,
    );
    let docs = service.swagger_ui_html().replacen(&internal, &public, 1);
    let spec = public.clone();
    let auth = Arc::new(Auth::new(&options.auth));
    let (a1, a2, a3, a4) = (auth.clone(), auth.clone(), auth.clone(), auth.clone());
    let logout = move |req: Request| {
        let a = a3.clone();
        async move { login::logout(&a, &req).await }
    };
    let inner = Route::new()
        .at(
            "/oidc/login",
            get(poem::endpoint::make(move |req: Request| {
                let a = a1.clone();
                async move { login::login(&a, &req).await }
            })),
        )
        .at(
            "/oidc/callback",
            get(poem::endpoint::make(move |req: Request| {
                let a = a2.clone();
                async move { login::callback(&a, &req).await }
            })),
        )
        .at(
            "/oidc/logout",
            get(poem::endpoint::make(logout.clone())).post(poem::endpoint::make(logout)),
        )
        .at(
            "/oidc/session",
            get(poem::endpoint::make(move |req: Request| {
                let a = a4.clone();
                async move { login::session(&a, &req).await }
            })),
        )
        .at(
            "/ui",
            poem::endpoint::make_sync(|req: Request| crate::ui::serve(&req)),
        )
        .at(
            "/ui/*path",
            poem::endpoint::make_sync(|req: Request| crate::ui::serve(&req)),
        )
        .at(
            "/openapi.json",
            get(poem::endpoint::make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            })),
        )
        .at(
            "/docs",
            get(poem::endpoint::make_sync(move |_| Html(docs.clone()))),
        )
        .nest("/", service)
        .boxed();
    Outer::new(
        Guarded {
            inner,
            auth,
            limiter: options
                .rate_limit
                .effective(&options.listen)
                .map(|r| Arc::new(Limiter::new(r))),
            body_limit: options.body_limit,
            timeout: options.request_timeout,
            worker_only: options.role == crate::Role::Worker,
        },
        metrics,
        routes,
    )
}

/// The request id, the access log and the HTTP metrics around [`Guarded`].
///
/// Not poem's `RequestId` middleware: it would echo any incoming `X-Request-Id` unchecked (any
/// length, any bytes into the log and the response), while this keeps a client's id only when
/// it is a short `[A-Za-z0-9_-]` word, and also hands the id to problem bodies
/// ([`REQUEST_ID`]).
struct Outer {
    guarded: poem::endpoint::BoxEndpoint<'static>,
    metrics: Arc<Metrics>,
    routes: HashMap<String, String>,
}

impl Outer {
    /// Wraps `guarded` in poem's `CatchPanic`: a panic anywhere in a request is answered `500`
    /// with a problem body and touches nothing another request uses (the service's shared state
    /// is poison-tolerant and changed only by checked steps), so the next request is served as
    /// usual.
    fn new(guarded: Guarded, metrics: Arc<Metrics>, routes: HashMap<String, String>) -> Outer {
        Outer {
            guarded: guarded
                .with(CatchPanic::new().with_handler(panic_response))
                .boxed(),
            metrics,
            routes,
        }
    }
}

/// Answers a request whose handling panicked; the panic's text goes to the log only.
fn panic_response(panic: Box<dyn std::any::Any + Send>) -> Response {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    tracing::error!(panic = text, "a request handler panicked; answered 500");
    Problem::transport(
        ErrorKind::Internal,
        ErrorKind::Internal.code(),
        "internal error: the server failed unexpectedly while handling this request; operators \
         find the details in the server log under its request id",
        None,
    )
    .into_response()
}

/// Everything between the request id and the routes: the `/` redirects, colon-verb routing,
/// authentication, the body limit and the request timeout.
///
/// The body limit is [`read_limited`], not poem's `SizeLimit`: that one only compares
/// `Content-Length` (it refuses a chunked body without one as `411` and cannot bound it), while
/// `read_limited` counts the bytes as they arrive. The timeout is `tokio::time::timeout`: poem
/// has no timeout middleware (tower-http's would need poem's tower compatibility layer and
/// answers a bare 408), and this one answers the `REQUEST_TIMEOUT` problem body.
struct Guarded {
    inner: poem::endpoint::BoxEndpoint<'static>,
    auth: Arc<Auth>,
    limiter: Option<Arc<Limiter>>,
    body_limit: usize,
    timeout: Duration,
    /// A worker replica answers the probes and metrics only.
    worker_only: bool,
}

impl Endpoint for Guarded {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        Ok(self.handle(req).await)
    }
}

impl Endpoint for Outer {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_string);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let span = tracing::info_span!("request", request_id = %request_id, method = %method, path = %path);
        let id = request_id.clone();
        let mut resp = REQUEST_ID
            .scope(id, self.guarded.call(req).instrument(span.clone()))
            .await
            .unwrap_or_else(problem_from_poem);
        let status = resp.status().as_u16();
        let route = match resp.data::<OperationId>() {
            Some(op) => self.routes.get(op.0).map_or(op.0, String::as_str),
            None => match path.as_str() {
                "/openapi.json" | "/docs" | "/oidc/login" | "/oidc/callback" | "/oidc/logout"
                | "/oidc/session" => path.as_str(),
                p if p == "/ui" || p.starts_with("/ui/") => "/ui",
                _ => "unmatched",
            },
        };
        let elapsed = started.elapsed();
        self.metrics.http_request(route, &method, status, elapsed);
        let _enter = span.enter();
        tracing::info!(
            target: "hcp::access",
            route,
            status,
            latency_us = elapsed.as_micros() as u64,
            "{method} {path} {status}"
        );
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        Ok(resp)
    }
}

impl Guarded {
    async fn handle(&self, mut req: Request) -> Response {
        if self.worker_only && !is_probe(req.uri().path()) {
            return Problem::transport(
                ErrorKind::NotFound,
                CODE_ROUTE_NOT_FOUND,
                "this replica runs jobs only (hcp serve --role worker) and serves /healthz, /readyz and /metrics; send API requests to a replica of role api or all",
                None,
            )
            .into_response();
        }
        // The root leads to the web UI and `/docs/` to the API documentation; a redirect reveals
        // nothing, so it needs no login. Relative, so it also works behind a proxy that adds a path prefix.
        if matches!(
            *req.method(),
            poem::http::Method::GET | poem::http::Method::HEAD
        ) {
            let to = match req.uri().path() {
                "/" => Some("ui/"),
                "/docs/" => Some("../docs"),
                _ => None,
            };
            if let Some(to) = to {
                return Response::builder()
                    .status(StatusCode::FOUND)
                    .header(poem::http::header::LOCATION, to)
                    .finish();
            }
        }
        match route_colon_verb(req.uri()) {
            Ok(Some(uri)) => *req.uri_mut() = uri,
            Ok(None) => {}
            Err(()) => return problem_from_poem(poem::Error::from_status(StatusCode::NOT_FOUND)),
        }
        if let Err(refusal) = self.auth.check(&mut req).await {
            return refusal.into_response();
        }
        if let Some(limiter) = &self.limiter
            && let Some(who) = budget_of(&req)
            && let Some(resp) = limiter.refusal(&who)
        {
            return resp;
        }
        if let Err(resp) = read_limited(&mut req, self.body_limit).await {
            return resp;
        }
        match tokio::time::timeout(self.timeout, self.inner.call(req)).await {
            Ok(Ok(resp)) => resp.into_response(),
            Ok(Err(err)) => {
                let op = err.data::<OperationId>().copied();
                let mut resp = problem_from_poem(err);
                if let Some(op) = op {
                    resp.set_data(op);
                }
                resp
            }
            Err(_) => Problem::transport(
                ErrorKind::Timeout,
                CODE_REQUEST_TIMEOUT,
                format!(
                    "the request did not finish within {:?}; a job it started goes on",
                    self.timeout
                ),
                None,
            )
            .into_response(),
        }
    }
}

/// Returns true for the probes and metrics: never rate limited, and all a worker replica
/// serves.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Returns whose request budget `req` spends: its caller's, else its client address's; `None`
/// for the probes (health, readiness, metrics), which are never limited.
fn budget_of(req: &Request) -> Option<Budget> {
    if is_probe(req.uri().path()) {
        return None;
    }
    match req.extensions().get::<crate::auth::Caller>() {
        Some(c) => Some(Budget::Subject(c.subject.clone())),
        None => req
            .remote_addr()
            .as_socket_addr()
            .map(|a| Budget::Address(a.ip())),
    }
}

/// Routes `.../vms/{vmId}:<verb>` to its internal path `.../vms/{vmId}/@<verb>` (and
/// `.../snapshots/{snapshotId}:revert` and `.../projects/{projectId}/jobs/{jobId}:cancel`
/// likewise).
///
/// Returns `Ok(None)` for every other path, and `Err(())` for a path that names the internal
/// form directly (which must stay unreachable).
fn route_colon_verb(uri: &Uri) -> Result<Option<Uri>, ()> {
    let path = uri.path();
    if path.contains(VERB_MARKER) {
        return Err(());
    }
    let ops = path.starts_with(OPS_PREFIX);
    if !path.starts_with(TENANT_PREFIX) && !ops {
        return Ok(None);
    }
    let Some((head, last)) = path.rsplit_once('/') else {
        return Ok(None);
    };
    let split_verb = |last: &'_ str| -> Option<(String, String)> {
        if let Some((id, verb)) = last.rsplit_once(':') {
            Some((id.to_string(), verb.to_string()))
        } else {
            let pos = last.to_ascii_lowercase().rfind("%3a")?;
            Some((last[..pos].to_string(), last[pos + 3..].to_string()))
        }
    };
    if ops && head == OPS_PREFIX {
        // A verb on the VM collection: `/api/hcp/ops/v1/vms:adopt`.
        return match split_verb(last) {
            Some((coll, verb)) if coll == "vms" => {
                if !OPS_VMS_COLLECTION_VERBS.contains(&verb.as_str()) {
                    return Err(());
                }
                let mut new = format!("{head}/vms{VERB_MARKER}{verb}");
                if let Some(q) = uri.query() {
                    new.push('?');
                    new.push_str(q);
                }
                Ok(new.parse().ok())
            }
            _ => Ok(None),
        };
    }
    let verbs: &[&str] = if ops {
        match head.strip_prefix(OPS_PREFIX) {
            Some("/vms") => &OPS_VM_COLON_VERBS,
            _ => return Ok(None),
        }
    } else if head.ends_with("/snapshots") && head.contains("/vms/") {
        &SNAPSHOT_COLON_VERBS
    } else if head.ends_with("/vms") || head.contains("/vms/") {
        &COLON_VERBS
    } else if head.ends_with("/jobs") && head.contains("/projects/") {
        &JOB_COLON_VERBS
    } else {
        return Ok(None);
    };
    let Some((id, verb)) = split_verb(last) else {
        return Ok(None);
    };
    if id.is_empty() {
        return Ok(None);
    }
    if !verbs.contains(&verb.as_str()) {
        // VM and job ids never hold a colon: this is an unknown verb.
        return Err(());
    }
    let mut new = format!("{head}/{id}{VERB_MARKER}{verb}");
    if let Some(q) = uri.query() {
        new.push('?');
        new.push_str(q);
    }
    Ok(new.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_next_request_works() {
        let inner = Route::new()
            .at(
                "/boom",
                get(poem::endpoint::make_sync(|_| -> &'static str {
                    panic!("a handler bug")
                })),
            )
            .at("/fine", get(poem::endpoint::make_sync(|_| "fine")))
            .boxed();
        let outer = Outer::new(
            Guarded {
                inner,
                auth: Arc::new(Auth::new(&crate::auth::AuthSettings::default())),
                limiter: None,
                body_limit: 1024,
                timeout: Duration::from_secs(60),
                worker_only: false,
            },
            Metrics::global(),
            HashMap::new(),
        );
        let resp = outer
            .call(Request::builder().uri(Uri::from_static("/boom")).finish())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().contains_key(REQUEST_ID_HEADER));
        let body: serde_json::Value =
            serde_json::from_slice(&resp.into_body().into_vec().await.unwrap()).unwrap();
        assert_eq!(body["status"], 500);
        assert_eq!(body["code"], "INTERNAL");
        assert!(
            !body["detail"].as_str().unwrap().contains("a handler bug"),
            "the panic's text stays in the log: {body}"
        );
        for _ in 0..2 {
            let resp = outer
                .call(Request::builder().uri(Uri::from_static("/fine")).finish())
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.into_body().into_string().await.unwrap(), "fine");
        }
    }

    fn route(p: &str) -> Result<Option<String>, ()> {
        route_colon_verb(&p.parse().unwrap()).map(|u| u.map(|u| u.to_string()))
    }

    #[test]
    fn the_ops_migrate_verb_routes_to_its_internal_path() {
        let base = "/api/hcp/ops/v1/vms";
        assert_eq!(
            route(&format!("{base}/vm-1:migrate")).unwrap().unwrap(),
            format!("{base}/vm-1/@migrate")
        );
        assert!(route(&format!("{base}/vm-1:start")).is_err());
        assert!(route(&format!("{base}/vm-1/@migrate")).is_err());
        assert_eq!(route(&format!("{base}/vm-1")).unwrap(), None);
        assert_eq!(route("/api/hcp/ops/v1/jobs/job-1:migrate").unwrap(), None);
        assert_eq!(
            route(&format!("{base}/vm-1:release")).unwrap().unwrap(),
            format!("{base}/vm-1/@release")
        );
        // The collection verb.
        assert_eq!(
            route(&format!("{base}:adopt")).unwrap().unwrap(),
            format!("{base}/@adopt")
        );
        assert_eq!(
            route(&format!("{base}%3Aadopt")).unwrap().unwrap(),
            format!("{base}/@adopt")
        );
        assert!(route(&format!("{base}:migrate")).is_err());
        // Tenants have no adopt verb.
        assert!(!matches!(
            route("/api/hcp/tenant/v1/projects/demo/vms:adopt"),
            Ok(Some(_))
        ));
        // Tenants have no migrate verb.
        assert!(route("/api/hcp/tenant/v1/projects/demo/vms/vm-1:migrate").is_err());
    }

    #[test]
    fn colon_verbs_route_to_internal_paths() {
        let base = "/api/hcp/tenant/v1/projects/demo/vms";
        assert_eq!(
            route(&format!("{base}/vm-1:start")).unwrap().unwrap(),
            format!("{base}/vm-1/@start")
        );
        assert_eq!(
            route(&format!("{base}/vm-1:stop?force=true"))
                .unwrap()
                .unwrap(),
            format!("{base}/vm-1/@stop?force=true")
        );
        assert_eq!(
            route(&format!("{base}/vm-1%3Areboot")).unwrap().unwrap(),
            format!("{base}/vm-1/@reboot")
        );
        assert!(route(&format!("{base}/vm-1:explode")).is_err());
        assert_eq!(route(&format!("{base}/vm-1")).unwrap(), None);
        assert_eq!(route("/api/v1/vms/x:start").unwrap(), None);
        assert!(route(&format!("{base}/vm-1/@start")).is_err());
        let jobs = "/api/hcp/tenant/v1/projects/demo/jobs";
        assert_eq!(
            route(&format!("{jobs}/job-1:cancel")).unwrap().unwrap(),
            format!("{jobs}/job-1/@cancel")
        );
        assert!(route(&format!("{jobs}/job-1:start")).is_err());
        assert!(route(&format!("{base}/vm-1:cancel")).is_err());
        assert_eq!(route("/api/hcp/tenant/v1/jobs/job-1:cancel").unwrap(), None);
    }
}
