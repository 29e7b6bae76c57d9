//! The wire: vim25 SOAP over HTTPS to vCenter's `/sdk`, TLS checked against the system roots, a
//! CA file or a pinned SHA-256 thumbprint; one session (the `vmware_soap_session` cookie) logged
//! in with the password from the secret file, logged in again when vCenter says
//! `NotAuthenticated`, logged out when the client is dropped; tasks and power states followed
//! with the property collector (`WaitForUpdatesEx`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hcp_core::{Error, ErrorKind, LogEntry, OpContext, Result, SecretString};
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderValue, SET_COOKIE};
use tokio::sync::{Mutex, OnceCell};

use crate::config::Connection;
use crate::error::{is_method_not_found, is_not_authenticated, parse_error};
use crate::soap::{self, MoRef, Node, ObjectContent, RetrieveResult, ServiceContent, TaskInfo};

/// The session cookie's name.
const SESSION_COOKIE: &str = "vmware_soap_session";
/// Longest single `WaitForUpdatesEx` wait.
const MAX_WAIT_SECS: u64 = 60;
/// Most idle property collectors kept for later watches.
const MAX_IDLE_COLLECTORS: usize = 32;

/// A logged-in session: its cookie and a generation that grows with every login.
#[derive(Clone)]
struct Session {
    generation: u64,
    cookie: SecretString,
}

/// A client of one vCenter.
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    username: String,
    password: SecretString,
    timeout: Duration,
    page_size: u32,
    content: OnceCell<ServiceContent>,
    session: RwLock<Option<Session>>,
    login_gate: Mutex<()>,
    logins: AtomicU64,
    names: RwLock<Vec<String>>,
    /// Property collectors without filters, with the session they belong to.
    collectors: std::sync::Mutex<Vec<(u64, MoRef)>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.logout_in_background();
    }
}

impl Client {
    /// Builds a client; no request is sent until the first call.
    pub(crate) fn new(conn: &Connection, timeout: Duration, page_size: u32) -> Result<Self> {
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(32);
        let tls = hcp_tls::client_config(&conn.trust).map_err(|m| Error::invalid("ca_file", m))?;
        let builder = builder.use_preconfigured_tls(tls);
        let http = builder
            .build()
            .map_err(|e| Error::internal(format!("HTTP client set-up: {e}")))?;
        Ok(Client {
            http,
            url: conn.url.clone(),
            username: conn.username.clone(),
            password: conn.password.clone(),
            timeout,
            page_size,
            content: OnceCell::new(),
            session: RwLock::new(None),
            login_gate: Mutex::new(()),
            logins: AtomicU64::new(0),
            names: RwLock::new(Vec::new()),
            collectors: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Sets the inventory names (hosts, datastores, clusters) kept out of tenants' messages.
    pub(crate) fn set_names(&self, names: Vec<String>) {
        if let Ok(mut n) = self.names.write() {
            *n = names;
        }
    }

    fn names(&self) -> Vec<String> {
        self.names.read().map(|n| n.clone()).unwrap_or_default()
    }

    /// Returns how many times the client has logged in.
    pub(crate) fn logins(&self) -> u64 {
        self.logins.load(Ordering::SeqCst)
    }

    /// Returns the service's entry points, read once.
    pub(crate) async fn content(&self) -> Result<&ServiceContent> {
        self.content
            .get_or_try_init(|| async {
                let body = soap::simple("RetrieveServiceContent", &ServiceContent::instance());
                let vals = self.send(&body, None, None).await?;
                vals.first()
                    .and_then(ServiceContent::from_node)
                    .ok_or_else(|| malformed("RetrieveServiceContent"))
            })
            .await
    }

    /// Sends one request body (without envelope) and returns its `returnval`s.
    async fn send(
        &self,
        body: &str,
        cookie: Option<&SecretString>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Node>> {
        let method = method_of(body);
        let mut req = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", format!("urn:vim25/{}", soap::API_VERSION))
            .body(soap::envelope(body));
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(c) = cookie {
            let mut v = HeaderValue::from_str(c.expose())
                .map_err(|_| Error::internal("the session cookie is not a header value"))?;
            v.set_sensitive(true);
            req = req.header(COOKIE, v);
        }
        let resp = req.send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let set_cookie = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session_cookie);
        let bytes = resp.bytes().await.map_err(|e| transport_error(&e))?;
        let decoded = soap::decode(&bytes).map_err(|why| {
            Error::new(
                ErrorKind::ProviderError,
                format!(
                    "vCenter sent a reply HCP cannot read (HTTP {})",
                    status.as_u16()
                ),
            )
            .with_detail(why)
            .with_context("vim_method", method)
        })?;
        match decoded {
            Ok(mut vals) => {
                if let Some(c) = set_cookie
                    && method == "Login"
                {
                    // The cookie rides back as a synthetic returnval the caller takes.
                    vals.push(Node {
                        name: "cookie".into(),
                        text: c,
                        ..Node::default()
                    });
                }
                Ok(vals)
            }
            Err(fault) => {
                Err(parse_error(&fault, &self.names()).with_context("vim_method", method))
            }
        }
    }

    /// Logs in unless another caller already replaced session `stale`.
    async fn login(&self, stale: Option<u64>) -> Result<Session> {
        let _gate = self.login_gate.lock().await;
        if let Some(current) = self.current()
            && Some(current.generation) != stale
        {
            return Ok(current);
        }
        let content = self.content().await?;
        let body = soap::login(
            &content.session_manager,
            &self.username,
            self.password.expose(),
        );
        let mut vals = self.send(&body, None, None).await?;
        let cookie = vals
            .pop()
            .filter(|n| n.name == "cookie")
            .map(|n| n.text)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ProviderUnavailable,
                    "vCenter accepted the login but sent no session cookie",
                )
            })?;
        let generation = self.logins.fetch_add(1, Ordering::SeqCst) + 1;
        let session = Session {
            generation,
            cookie: SecretString::new(cookie),
        };
        if let Ok(mut s) = self.session.write() {
            *s = Some(session.clone());
        }
        tracing::info!(url = %self.url, user = %self.username, "logged in to vCenter");
        Ok(session)
    }

    fn current(&self) -> Option<Session> {
        self.session.read().ok().and_then(|s| s.clone())
    }

    /// Returns the generation of the current session (logging in when there is none).
    pub(crate) async fn generation(&self) -> Result<u64> {
        match self.current() {
            Some(s) => Ok(s.generation),
            None => Ok(self.login(None).await?.generation),
        }
    }

    /// Calls a method in the session; a `NotAuthenticated` fault (an expired or terminated
    /// session) logs in again and repeats the call once.
    pub(crate) async fn call(&self, body: &str) -> Result<Vec<Node>> {
        self.call_with_timeout(body, None).await
    }

    async fn call_with_timeout(&self, body: &str, timeout: Option<Duration>) -> Result<Vec<Node>> {
        let session = match self.current() {
            Some(s) => s,
            None => self.login(None).await?,
        };
        match self.send(body, Some(&session.cookie), timeout).await {
            Err(e) if is_not_authenticated(&e) => {
                tracing::warn!(url = %self.url, "the vCenter session ended; logging in again");
                let fresh = self.login(Some(session.generation)).await?;
                self.send(body, Some(&fresh.cookie), timeout).await
            }
            other => other,
        }
    }

    /// Ends the session now.
    pub(crate) async fn logout(&self) -> Result<()> {
        let Some(session) = self.session.write().ok().and_then(|mut s| s.take()) else {
            return Ok(());
        };
        let content = self.content().await?;
        self.send(
            &soap::simple("Logout", &content.session_manager),
            Some(&session.cookie),
            None,
        )
        .await
        .map(|_| ())
    }

    fn logout_in_background(&self) {
        let Some(session) = self.session.write().ok().and_then(|mut s| s.take()) else {
            return;
        };
        let (Some(content), Ok(rt)) = (self.content.get(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let body = soap::envelope(&soap::simple("Logout", &content.session_manager));
        let req = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", format!("urn:vim25/{}", soap::API_VERSION))
            .header(COOKIE, session.cookie.expose().to_string())
            .body(body);
        rt.spawn(async move {
            if let Err(e) = req.send().await {
                tracing::debug!(error = %e.without_url(), "could not log out of vCenter");
            }
        });
    }

    /// Creates a container view of `types` over the whole inventory.
    pub(crate) async fn container_view(&self, types: &[&str]) -> Result<MoRef> {
        let c = self.content().await?;
        let vals = self
            .call(&soap::create_container_view(
                &c.view_manager,
                &c.root_folder,
                types,
            ))
            .await?;
        vals.first()
            .and_then(MoRef::from_node)
            .ok_or_else(|| malformed("CreateContainerView"))
    }

    /// Reads `props` of every object in `view`, page after page.
    pub(crate) async fn retrieve_view(
        &self,
        view: &MoRef,
        props: &[(&str, &[&str])],
    ) -> Result<Vec<ObjectContent>> {
        let pc = self.content().await?.property_collector.clone();
        let vals = self
            .call(&soap::retrieve_over_view(&pc, view, props, self.page_size))
            .await?;
        let first = RetrieveResult::from_returnvals(&vals);
        collect_pages(
            first,
            |body| async move {
                let vals = self.call(&body).await?;
                Ok(RetrieveResult::from_returnvals(&vals))
            },
            &pc,
        )
        .await
    }

    /// Reads `paths` of one object.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the object is gone.
    pub(crate) async fn retrieve_one(&self, obj: &MoRef, paths: &[&str]) -> Result<ObjectContent> {
        let pc = self.content().await?.property_collector.clone();
        let vals = self.call(&soap::retrieve_one(&pc, obj, paths)).await?;
        RetrieveResult::from_returnvals(&vals)
            .objects
            .into_iter()
            .next()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the VM no longer exists"))
    }

    /// Calls a `*_Task` method and follows the task to its end.
    ///
    /// # Errors
    /// The task's fault classified by [`parse_error`] (its message is vCenter's); a
    /// [`ErrorKind::Timeout`] when it runs past `timeout` (the task is then cancelled).
    pub(crate) async fn run_task(
        self: &Arc<Self>,
        body: &str,
        timeout: Duration,
        ctx: &OpContext,
    ) -> Result<TaskInfo> {
        let method = method_of(body).to_string();
        let vals = self.call(body).await?;
        let task = vals
            .first()
            .and_then(MoRef::from_node)
            .ok_or_else(|| malformed(&method))?;
        // A call dropped while it follows the task (a job timeout, a cancel) cancels the task.
        let mut guard = CancelOnDrop {
            client: self.clone(),
            task: Some(task.clone()),
        };
        let mut last_progress = None;
        let mut last_message = None;
        let ended = self
            .watch(&task, &["info"], timeout, |name, val| {
                if name != "info" {
                    return None;
                }
                let info = TaskInfo::from_node(val?);
                if let Some(p) = info.progress
                    && last_progress != Some(p)
                {
                    last_progress = Some(p);
                    ctx.progress(p);
                }
                if info.message.is_some() && info.message != last_message {
                    last_message.clone_from(&info.message);
                    // vCenter's task messages may name hosts and datastores.
                    ctx.log(
                        LogEntry::info("vCenter task progress")
                            .with_detail(info.message.clone().unwrap_or_default())
                            .operators_only(),
                    );
                }
                // A finished task is done whether or not it reported percentages on the way.
                if info.state == "success" && last_progress != Some(100) {
                    last_progress = Some(100);
                    ctx.progress(100);
                }
                info.done().then_some(info)
            })
            .await;
        guard.task = None;
        match ended? {
            Some(info) if info.state == "success" => Ok(info),
            Some(info) => {
                let fault = info.error.unwrap_or(soap::Fault {
                    kind: String::new(),
                    message: "the task failed".into(),
                    property: None,
                });
                Err(parse_error(&fault, &self.names())
                    .with_context("vim_method", &method)
                    .with_context("vim_task", &task.value))
            }
            None => {
                if let Err(e) = self.call(&soap::simple("CancelTask", &task)).await {
                    let note = if is_method_not_found(&e) {
                        "vCenter cannot cancel tasks (CancelTask is missing)"
                    } else {
                        "could not cancel the task"
                    };
                    ctx.log(LogEntry::warn(note).with_detail(e.operator_message()));
                }
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "a vCenter task ran longer than {}s and was cancelled",
                        timeout.as_secs()
                    ),
                )
                .with_context("vim_method", &method)
                .with_context("vim_task", &task.value))
            }
        }
    }

    /// Follows `paths` of `obj` with a property collector no other watch uses at the same time
    /// (an idle one of the session, or a new one) until `seen` returns a value, or `timeout`
    /// passes (`None`). Concurrent watches never share a collector, so none takes another's
    /// updates.
    pub(crate) async fn watch<T>(
        self: &Arc<Self>,
        obj: &MoRef,
        paths: &[&str],
        timeout: Duration,
        mut seen: impl FnMut(&str, Option<&Node>) -> Option<T>,
    ) -> Result<Option<T>> {
        let generation = self.generation().await?;
        // An idle collector may have ended with its session: then a fresh one.
        let pooled = match self.idle_collector(generation) {
            Some(pc) => match self.new_filter(&pc, obj, paths).await {
                Ok(filter) => Some((pc, filter)),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => {
                    self.destroy_collector(&pc).await;
                    return Err(e);
                }
            },
            None => None,
        };
        let (pc, filter) = match pooled {
            Some(found) => found,
            None => {
                let pc = self.new_collector().await?;
                match self.new_filter(&pc, obj, paths).await {
                    Ok(filter) => (pc, filter),
                    Err(e) => {
                        self.destroy_collector(&pc).await;
                        return Err(e);
                    }
                }
            }
        };
        let mut guard = CollectorGuard {
            client: self.clone(),
            pc: Some(pc.clone()),
        };
        let result = async {
            let deadline = Instant::now() + timeout;
            let mut version = String::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                let wait = left.as_secs().clamp(1, MAX_WAIT_SECS);
                let body = soap::wait_for_updates(&pc, &version, u32::try_from(wait).unwrap_or(1));
                let vals = self
                    .call_with_timeout(&body, Some(self.timeout + Duration::from_secs(wait)))
                    .await?;
                if let Some(update) = soap::UpdateSet::from_returnvals(&vals) {
                    version = update.version;
                    for (name, val) in &update.changes {
                        if let Some(t) = seen(name, val.as_ref()) {
                            return Ok(Some(t));
                        }
                    }
                }
            }
        }
        .await;
        if let Some(pc) = guard.pc.take() {
            // A collector whose filter is gone serves the next watch; any other is destroyed.
            let reusable = self
                .call(&soap::simple("DestroyPropertyFilter", &filter))
                .await
                .is_ok();
            if reusable {
                self.park_collector(generation, pc);
            } else {
                self.destroy_collector(&pc).await;
            }
        }
        result
    }

    /// Creates a property collector for one watch.
    async fn new_collector(&self) -> Result<MoRef> {
        let root_pc = self.content().await?.property_collector.clone();
        let vals = self
            .call(&soap::simple("CreatePropertyCollector", &root_pc))
            .await?;
        vals.first()
            .and_then(MoRef::from_node)
            .ok_or_else(|| malformed("CreatePropertyCollector"))
    }

    /// Adds a filter on `obj`'s `paths` to collector `pc`.
    async fn new_filter(&self, pc: &MoRef, obj: &MoRef, paths: &[&str]) -> Result<MoRef> {
        let vals = self.call(&soap::create_filter(pc, obj, paths)).await?;
        vals.first()
            .and_then(MoRef::from_node)
            .ok_or_else(|| malformed("CreateFilter"))
    }

    async fn destroy_collector(&self, pc: &MoRef) {
        if let Err(e) = self
            .call(&soap::simple("DestroyPropertyCollector", pc))
            .await
        {
            tracing::debug!(error = %e, "could not destroy a property collector");
        }
    }

    /// Takes an idle property collector of session `generation`.
    fn idle_collector(&self, generation: u64) -> Option<MoRef> {
        let mut idle = self.collectors.lock().ok()?;
        // Collectors of an ended session ended with it.
        idle.retain(|(g, _)| *g == generation);
        idle.pop().map(|(_, pc)| pc)
    }

    /// Keeps a property collector without filters for the next watch.
    fn park_collector(&self, generation: u64, pc: MoRef) {
        if let Ok(mut idle) = self.collectors.lock()
            && idle.len() < MAX_IDLE_COLLECTORS
        {
            idle.push((generation, pc));
        }
    }
}

/// Gathers the pages of a property read: `first`, then `ContinueRetrievePropertiesEx` (sent
/// through `next`) while a page carries a token.
pub(crate) async fn collect_pages<F, Fut>(
    first: RetrieveResult,
    mut next: F,
    pc: &MoRef,
) -> Result<Vec<ObjectContent>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<RetrieveResult>>,
{
    let mut page = first;
    let mut objects = std::mem::take(&mut page.objects);
    while let Some(token) = page.token.take() {
        page = next(soap::continue_retrieve(pc, &token)).await?;
        objects.append(&mut page.objects);
    }
    Ok(objects)
}

/// Cancels a task whose follower was dropped before it ended.
struct CancelOnDrop {
    client: Arc<Client>,
    task: Option<MoRef>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let (Some(task), Ok(rt)) = (self.task.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let client = self.client.clone();
        rt.spawn(async move {
            if let Err(e) = client.call(&soap::simple("CancelTask", &task)).await {
                tracing::warn!(task = %task.value, error = %e, "could not cancel an abandoned task");
            }
        });
    }
}

/// Destroys a property collector left behind when a watch is dropped mid-way.
struct CollectorGuard {
    client: Arc<Client>,
    pc: Option<MoRef>,
}

impl Drop for CollectorGuard {
    fn drop(&mut self) {
        let (Some(pc), Ok(rt)) = (self.pc.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let client = self.client.clone();
        rt.spawn(async move {
            let _ = client
                .call(&soap::simple("DestroyPropertyCollector", &pc))
                .await;
        });
    }
}

/// Returns the method name of a request body (`<Login xmlns=...>` → `Login`).
fn method_of(body: &str) -> &str {
    body.strip_prefix('<')
        .and_then(|b| b.split([' ', '>']).next())
        .unwrap_or("")
}

/// Returns `vmware_soap_session=…` from a `Set-Cookie` header.
fn session_cookie(header: &str) -> Option<String> {
    let pair = header.split(';').next()?.trim();
    let (name, value) = pair.split_once('=')?;
    (name == SESSION_COOKIE && !value.is_empty()).then(|| pair.to_string())
}

fn malformed(method: &str) -> Error {
    Error::new(
        ErrorKind::ProviderError,
        "vCenter sent a reply HCP cannot read",
    )
    .with_context("vim_method", method)
}

fn transport_error(e: &reqwest::Error) -> Error {
    let (kind, what) = if e.is_timeout() {
        (ErrorKind::Timeout, "did not answer in time")
    } else if e.is_connect() {
        (ErrorKind::ProviderUnavailable, "cannot be reached")
    } else {
        (ErrorKind::ProviderUnavailable, "broke the connection")
    };
    // The URL names vCenter's host: keep it out of the message, in the detail, with the causes
    // (a TLS refusal says why).
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    Error::new(kind, format!("vCenter {what}"))
        .with_detail(detail)
        .temporary()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_methods() {
        assert_eq!(
            session_cookie(r#"vmware_soap_session="abc"; Path=/; HttpOnly; Secure"#).as_deref(),
            Some(r#"vmware_soap_session="abc""#)
        );
        assert_eq!(session_cookie("other=1; Path=/"), None);
        assert_eq!(method_of(r#"<Login xmlns="urn:vim25"><x/>"#), "Login");
    }

    /// A recorded vCenter reply (the simulator ignores `maxObjects` and never pages).
    const PAGE_1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><token>1</token>
<objects><obj type="VirtualMachine">vm-101</obj><propSet><name>name</name><val xsi:type="xsd:string">web-1</val></propSet><propSet><name>runtime.powerState</name><val xsi:type="VirtualMachinePowerState">poweredOn</val></propSet></objects>
</returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;
    const PAGE_2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><ContinueRetrievePropertiesExResponse xmlns="urn:vim25"><returnval>
<objects><obj type="VirtualMachine">vm-102</obj><propSet><name>name</name><val xsi:type="xsd:string">web-2</val></propSet></objects>
</returnval></ContinueRetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;

    fn page(doc: &str) -> RetrieveResult {
        RetrieveResult::from_returnvals(&soap::decode(doc.as_bytes()).unwrap().unwrap())
    }

    #[tokio::test]
    async fn pages_follow_the_token() {
        let pc = MoRef::new("PropertyCollector", "propertyCollector");
        let first = page(PAGE_1);
        assert_eq!(first.token.as_deref(), Some("1"));
        let mut asked = Vec::new();
        let objects = collect_pages(
            first,
            |body| {
                asked.push(body.clone());
                async move { Ok(page(PAGE_2)) }
            },
            &pc,
        )
        .await
        .unwrap();
        assert_eq!(asked.len(), 1);
        let req = soap::xml::parse(soap::envelope(&asked[0]).as_bytes()).unwrap();
        let call = req.at(&["Body", "ContinueRetrievePropertiesEx"]).unwrap();
        assert_eq!(call.text_of("token"), Some("1"));
        let names: Vec<_> = objects.iter().map(|o| o.text("name").unwrap()).collect();
        assert_eq!(names, ["web-1", "web-2"]);
        assert_eq!(objects[0].text("runtime.powerState"), Some("poweredOn"));
        assert_eq!(objects[1].obj, MoRef::new("VirtualMachine", "vm-102"));
    }

    #[test]
    fn a_failed_task_carries_vcenters_fault() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>2</version>
<filterSet><filter type="PropertyFilter">f1</filter><objectSet><kind>modify</kind><obj type="Task">task-9</obj>
<changeSet><name>info</name><op>assign</op><val XMLSchema-instance:type="TaskInfo"><key>task-9</key><state>error</state>
<error><fault XMLSchema-instance:type="InsufficientMemoryResourcesFault"></fault><localizedMessage>Insufficient memory on host-12</localizedMessage></error>
<progress>40</progress></val></changeSet></objectSet></filterSet></returnval></WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>"#;
        let vals = soap::decode(doc.as_bytes()).unwrap().unwrap();
        let u = soap::UpdateSet::from_returnvals(&vals).unwrap();
        assert_eq!(u.version, "2");
        let info = TaskInfo::from_node(u.changes[0].1.as_ref().unwrap());
        assert!(info.done());
        assert_eq!(info.progress, Some(40));
        let fault = info.error.unwrap();
        assert_eq!(fault.kind, "InsufficientMemoryResourcesFault");
        let e = parse_error(&fault, &[]);
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(e.message(), "vCenter: Insufficient memory on id");
    }

    #[test]
    fn a_missing_cancel_task_is_recognised() {
        // The simulator's answer to CancelTask (recorded).
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>CancelTask</faultstring><detail><MethodNotFoundFault xmlns="urn:vim25" xsi:type="MethodNotFound"><receiver type="Task">task-9</receiver><method>CancelTask</method></MethodNotFoundFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let fault = soap::decode(doc.as_bytes()).unwrap().unwrap_err();
        assert!(is_method_not_found(&parse_error(&fault, &[])));
    }
}
