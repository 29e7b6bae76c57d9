//! The authorization matrix: every route of the served OpenAPI document, called by every kind of
//! caller, against a real OIDC provider (`oauth2-mock-server`, installed by
//! `scripts/oidc-peer.sh`) and the service (the real `hcp serve` binary when `HCP_SERVE_BIN` is
//! set, as `scripts/test.sh` does). The calls act on real objects (a VM and a job of project A),
//! so `404`, `403` and `200` mean what they say: another project's VM is `404`, never `403` or
//! `200`.
//!
//! A route in the document without a row here fails the test, and so does a row whose route
//! left the document: every new route must be classified.
//!
//! The service runs the documented Hyper-V setup (`OIDC_ROLE_NAME=vm-admin`) with the default
//! tenant and operator roles. The callers:
//! - no token;
//! - tenant A: the tenant role, project A;
//! - tenant B: the tenant role, project B;
//! - a tenant without project: the tenant role, no project;
//! - the Hyper-V role only (`vm-admin`, with project B in its token: the role, not the claim,
//!   decides);
//! - an operator.

mod common;
mod oidc;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use oidc::{AuthServer, CLIENT_ID, T};

/// Project A: tenant A's, and the default project of the Hyper-V routes.
const A: &str = "proj-alpha";
/// Project B: tenant B's (and named in the Hyper-V caller's token).
const B: &str = "proj-bravo";
/// A project nobody's token names and no request sends: it must never appear in an answer to
/// anyone but an operator.
const HIDDEN: &str = "proj-hidden";
/// Every configured project.
const PROJECTS: [&str; 3] = [A, B, HIDDEN];

const TENANT_ROLE: &str = "hcp-tenant";
const HYPERV_ROLE: &str = "vm-admin";
const OPERATOR_ROLE: &str = "hcp-operator";

/// The kinds of callers, in the order of a row's statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    NoToken,
    TenantA,
    TenantB,
    TenantNoProject,
    HyperV,
    Operator,
}

const CALLERS: [Who; 6] = [
    Who::NoToken,
    Who::TenantA,
    Who::TenantB,
    Who::TenantNoProject,
    Who::HyperV,
    Who::Operator,
];

impl Who {
    /// The projects the caller may see named.
    fn projects(self) -> &'static [&'static str] {
        match self {
            Who::TenantA => &[A],
            Who::TenantB => &[B],
            Who::NoToken | Who::TenantNoProject => &[],
            // Cross-project by design: their lists name every project.
            Who::HyperV | Who::Operator => &PROJECTS,
        }
    }
}

/// What a call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    /// Nothing of project A's, or only reads it: the shared VM and job of project A.
    Shared,
    /// A VM of project A made for this one call (the call may change or delete it).
    FreshVm,
    /// A new VM (a create request with a name of its own).
    NewVm,
}

/// One route: the expected status for each caller, in the order of [`CALLERS`].
struct Row {
    method: &'static str,
    path: &'static str,
    object: Object,
    expect: [u16; 6],
}

const fn row(method: &'static str, path: &'static str, object: Object, expect: [u16; 6]) -> Row {
    Row {
        method,
        path,
        object,
        expect,
    }
}

// Columns:            no token, tenant A, tenant B, no project, Hyper-V role, operator
/// Tenant routes on project A's objects: members and operators reach them; any other tenant
/// finds nothing (`404`); callers without the tenant role are refused (`403`).
const TENANT_READ: [u16; 6] = [401, 200, 404, 404, 403, 200];
const TENANT_ACT: [u16; 6] = [401, 202, 404, 404, 403, 202];
/// Ops routes: operators only.
const OPS: [u16; 6] = [401, 403, 403, 403, 403, 200];
/// Common routes: any valid token.
const ANY_TOKEN: [u16; 6] = [401, 200, 200, 200, 200, 200];
/// Public routes (`HCP_PUBLIC_ROUTES` default).
const PUBLIC: [u16; 6] = [200; 6];
/// The Hyper-V routes: the Hyper-V role only (the operator role is not it).
const HYPERV_READ: [u16; 6] = [401, 403, 403, 403, 200, 403];
const HYPERV_ACT: [u16; 6] = [401, 403, 403, 403, 202, 403];

use Object::{FreshVm, NewVm, Shared};

const MATRIX: &[Row] = &[
    // Tenant API.
    row(
        "get",
        "/api/hcp/tenant/v1/projects/{projectId}/vms",
        Shared,
        TENANT_READ,
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms",
        NewVm,
        TENANT_ACT,
    ),
    row(
        "get",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}",
        Shared,
        TENANT_READ,
    ),
    row(
        "delete",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}",
        FreshVm,
        TENANT_ACT,
    ),
    // Without If-Match: past the role and project checks, a member learns it needs the ETag.
    row(
        "patch",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}",
        Shared,
        [401, 428, 404, 404, 403, 428],
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:start",
        FreshVm,
        TENANT_ACT,
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:stop",
        FreshVm,
        TENANT_ACT,
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:reboot",
        FreshVm,
        TENANT_ACT,
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:console",
        Shared,
        TENANT_READ,
    ),
    row(
        "get",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}/snapshots",
        Shared,
        TENANT_READ,
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}/snapshots",
        FreshVm,
        TENANT_ACT,
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:plan",
        Shared,
        TENANT_READ,
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:resize",
        FreshVm,
        TENANT_ACT,
    ),
    // An unknown snapshot of a VM a member reaches is a 404 too.
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}/snapshots/{snapshotId}:revert",
        Shared,
        [401, 404, 404, 404, 403, 404],
    ),
    row(
        "delete",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}/snapshots/{snapshotId}",
        Shared,
        [401, 404, 404, 404, 403, 404],
    ),
    // Without a console token: past the role check, the missing `token` is a 400.
    row(
        "get",
        "/api/hcp/tenant/v1/console/ws",
        Shared,
        [401, 400, 400, 400, 403, 400],
    ),
    row("get", "/api/hcp/tenant/v1/vms/{vmId}", Shared, TENANT_READ),
    row(
        "get",
        "/api/hcp/tenant/v1/projects/{projectId}/events",
        Shared,
        TENANT_READ,
    ),
    // Who am I: any caller with the tenant or operator role, even without a project.
    row(
        "get",
        "/api/hcp/tenant/v1/me",
        Shared,
        [401, 200, 200, 200, 403, 200],
    ),
    // Jobs across the caller's projects: any tenant or operator (a caller without a project
    // gets an empty list).
    row(
        "get",
        "/api/hcp/tenant/v1/jobs",
        Shared,
        [401, 200, 200, 200, 403, 200],
    ),
    row(
        "get",
        "/api/hcp/tenant/v1/jobs/{jobId}",
        Shared,
        TENANT_READ,
    ),
    row(
        "get",
        "/api/hcp/tenant/v1/jobs/{jobId}/logs",
        Shared,
        TENANT_READ,
    ),
    row(
        "get",
        "/api/hcp/tenant/v1/projects/{projectId}/jobs",
        Shared,
        TENANT_READ,
    ),
    // The shared job has ended: a member reaches it and learns it cannot be cancelled (409).
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/jobs/{jobId}:cancel",
        Shared,
        [401, 409, 404, 404, 403, 409],
    ),
    // Server groups. The create makes a group of its own; the shared group has a member, so a
    // member's delete gets past the checks to learn it is not empty (409).
    row(
        "get",
        "/api/hcp/tenant/v1/projects/{projectId}/server-groups",
        Shared,
        TENANT_READ,
    ),
    row(
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/server-groups",
        Shared,
        [401, 201, 404, 404, 403, 201],
    ),
    row(
        "get",
        "/api/hcp/tenant/v1/projects/{projectId}/server-groups/{groupId}",
        Shared,
        TENANT_READ,
    ),
    row(
        "delete",
        "/api/hcp/tenant/v1/projects/{projectId}/server-groups/{groupId}",
        Shared,
        [401, 409, 404, 404, 403, 409],
    ),
    // Ops API.
    row("get", "/api/hcp/ops/v1/providers", Shared, OPS),
    row("get", "/api/hcp/ops/v1/hosts", Shared, OPS),
    row("get", "/api/hcp/ops/v1/vms", Shared, OPS),
    row("get", "/api/hcp/ops/v1/inventory", Shared, OPS),
    row("get", "/api/hcp/ops/v1/capabilities", Shared, OPS),
    row("post", "/api/hcp/ops/v1/reconcile", Shared, OPS),
    row("get", "/api/hcp/ops/v1/events", Shared, OPS),
    row("get", "/api/hcp/ops/v1/events/stream", Shared, OPS),
    row("get", "/api/hcp/ops/v1/jobs", Shared, OPS),
    row("get", "/api/hcp/ops/v1/jobs/{jobId}", Shared, OPS),
    row("get", "/api/hcp/ops/v1/jobs/{jobId}/logs", Shared, OPS),
    // Migration moves a tenant's VM: operators only, and never a tenant, not even the owner.
    row(
        "post",
        "/api/hcp/ops/v1/vms/{vmId}:migrate",
        FreshVm,
        [401, 403, 403, 403, 403, 202],
    ),
    // Adoption and release change who owns a VM: operators only. The adoption names a VM the
    // host does not have, so an operator's call gets as far as the host's inventory (404).
    row(
        "post",
        "/api/hcp/ops/v1/vms:adopt",
        Shared,
        [401, 403, 403, 403, 403, 404],
    ),
    row(
        "post",
        "/api/hcp/ops/v1/vms/{vmId}:release",
        FreshVm,
        [401, 403, 403, 403, 403, 202],
    ),
    // Common API.
    row("get", "/api/hcp/common/v1/catalog", Shared, ANY_TOKEN),
    row("get", "/api/hcp/common/v1/images", Shared, ANY_TOKEN),
    row("get", "/api/hcp/common/v1/flavors", Shared, ANY_TOKEN),
    row("get", "/api/hcp/common/v1/networks", Shared, ANY_TOKEN),
    row("get", "/api/hcp/common/v1/zones", Shared, ANY_TOKEN),
    row("get", "/api/hcp/common/v1/capabilities", Shared, ANY_TOKEN),
    row(
        "get",
        "/api/hcp/common/v1/zones/capabilities",
        Shared,
        ANY_TOKEN,
    ),
    row(
        "get",
        "/api/hcp/common/v1/zones/{zone}/capabilities",
        Shared,
        ANY_TOKEN,
    ),
    // The Hyper-V service's routes.
    row("get", "/api/v1/hosts", Shared, HYPERV_READ),
    row("get", "/api/v1/vms", Shared, HYPERV_READ),
    row("post", "/api/v1/vms/create", NewVm, HYPERV_ACT),
    row("post", "/api/v1/vms/delete", FreshVm, HYPERV_ACT),
    // Health.
    row("get", "/healthz", Shared, PUBLIC),
    row("get", "/readyz", Shared, PUBLIC),
    row("get", "/metrics", Shared, PUBLIC),
];

/// The hosts file: the demo's providers and catalog with three projects.
fn hosts_file() -> String {
    let demo = hcp_provider_sim::DEMO_HOSTS_FILE;
    let (head, tail) = demo
        .split_once("projects:\n")
        .expect("the demo lists projects");
    let (_, rest) = tail.split_once("catalog:").expect("the demo has a catalog");
    // Every zone takes snapshots, wherever the matrix's VMs land.
    let head = head.replace(
        "disable: [cloud_init, snapshot, gpu_passthrough]",
        "disable: [cloud_init, gpu_passthrough]",
    );
    format!("{head}projects:\n  - name: {A}\n  - name: {B}\n  - name: {HIDDEN}\ncatalog:{rest}")
}

/// The served document's operations: `(method, path)`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace"
            ) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

struct Fixture {
    s: AuthServer,
    tokens: BTreeMap<Who, String>,
    /// Project A's VM and its create job, read by every caller.
    vm: String,
    job: String,
    /// Project A's server group, with one member VM (made by the matrix test only).
    group: String,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(hosts_file(), &[]).await
    }

    async fn start_with(hosts: String, extra: &[(&str, &str)]) -> Fixture {
        let mut env = vec![("OIDC_ROLE_NAME", HYPERV_ROLE), ("HCP_DEFAULT_PROJECT", A)];
        env.extend_from_slice(extra);
        let s = AuthServer::start_with_hosts(hosts, &env).await;
        let mut tokens = BTreeMap::new();
        for (who, sub, roles, projects) in [
            (Who::TenantA, "alice", &[TENANT_ROLE][..], &[A][..]),
            (Who::TenantB, "bob", &[TENANT_ROLE][..], &[B][..]),
            (Who::TenantNoProject, "nina", &[TENANT_ROLE][..], &[][..]),
            (Who::HyperV, "hugo", &[HYPERV_ROLE][..], &[B][..]),
            (Who::Operator, "olga", &[OPERATOR_ROLE][..], &[][..]),
        ] {
            tokens.insert(who, s.idp.token(sub, roles, projects).await);
        }
        let mut f = Fixture {
            s,
            tokens,
            vm: String::new(),
            job: String::new(),
            group: String::new(),
        };
        let (vm, job) = f.vms(&["shared"]).await.remove(0);
        f.vm = vm;
        f.job = job;
        // A VM of project B, so a list that crosses projects names B to tenant A.
        let bob = f.token(Who::TenantB).unwrap();
        let resp = f.s.create(B, "bravo-vm", bob).await;
        assert_eq!(resp.status(), 202);
        let b: Value = resp.json().await.unwrap();
        f.wait(b["job_id"].as_str().unwrap()).await;
        f
    }

    /// Creates a soft anti-affinity server group of project A with one VM in it (as tenant A);
    /// returns the group's id.
    async fn grouped_vm(&self) -> String {
        let alice = self.token(Who::TenantA).unwrap();
        let resp = self
            .s
            .server
            .http
            .post(self.s.at(&format!("{T}/projects/{A}/server-groups")))
            .bearer_auth(alice)
            .json(&json!({"name": "matrix", "policy": "anti-affinity", "strength": "soft"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let g: Value = resp.json().await.unwrap();
        let group = g["id"].as_str().unwrap().to_string();
        let resp = self
            .s
            .server
            .http
            .post(self.s.at(&format!("{T}/projects/{A}/vms")))
            .bearer_auth(alice)
            .json(&json!({"name": "grouped", "image": "ubuntu-24.04", "flavor": "small", "server_group": group}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let b: Value = resp.json().await.unwrap();
        self.wait(b["job_id"].as_str().unwrap()).await;
        group
    }

    fn token(&self, who: Who) -> Option<&str> {
        self.tokens.get(&who).map(String::as_str)
    }

    /// Creates VMs of project A (as tenant A) and waits until they run; returns their ids and
    /// create jobs.
    async fn vms(&self, names: &[&str]) -> Vec<(String, String)> {
        let alice = self.token(Who::TenantA).unwrap();
        let mut out = Vec::new();
        for name in names {
            let resp = self.s.create(A, name, alice).await;
            assert_eq!(resp.status(), 202, "create {name}");
            let b: Value = resp.json().await.unwrap();
            out.push((
                b["vm_id"].as_str().unwrap().to_string(),
                b["job_id"].as_str().unwrap().to_string(),
            ));
        }
        for (_, job) in &out {
            self.wait(job).await;
        }
        out
    }

    async fn wait(&self, job: &str) {
        let olga = self.token(Who::Operator).unwrap();
        for _ in 0..800 {
            let j: Value = self
                .s
                .get(&format!("{T}/jobs/{job}"), olga)
                .await
                .json()
                .await
                .unwrap();
            match j["state"].as_str() {
                Some("SUCCEEDED") => return,
                Some("FAILED" | "CANCELLED") => panic!("job {job} ended {j}"),
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        panic!("job {job} did not end");
    }
}

/// What one call sent and got.
struct Call {
    status: u16,
    body: String,
    sent: String,
}

async fn call(f: &Fixture, row: &Row, who: Who, vm: &str, n: usize) -> Call {
    let mut path = row
        .path
        .replace("{projectId}", A)
        .replace("{vmId}", vm)
        .replace("{jobId}", &f.job)
        .replace("{snapshotId}", "snap-0")
        .replace("{groupId}", &f.group)
        .replace("{zone}", "zone-a");
    assert!(
        !path.contains('{'),
        "{} {}: a path parameter the matrix does not fill",
        row.method,
        row.path
    );
    let name = format!("m{n}-{}", format!("{who:?}").to_lowercase());
    let body = match (row.path, row.object) {
        ("/api/v1/vms/create", _) => {
            Some(json!({"name": name, "template": "ubuntu-24.04", "flavor": "small"}))
        }
        ("/api/v1/vms/delete", _) => Some(json!({"vm_id": vm, "force": true})),
        (_, Object::NewVm) => {
            Some(json!({"name": name, "image": "ubuntu-24.04", "flavor": "small"}))
        }
        _ if row.method == "patch" => Some(json!({"tags": {"matrix": "x"}})),
        (p, _) if p.ends_with(":plan") || p.ends_with(":resize") => Some(json!({"vcpus": 2})),
        (p, _) if p.ends_with(":migrate") => Some(json!({})),
        (p, _) if p.ends_with(":adopt") => {
            Some(json!({"project": A, "host": "sim-a1", "vm": "no-such-vm"}))
        }
        (p, _) if row.method == "post" && p.ends_with("/snapshots") => {
            Some(json!({"name": "matrix"}))
        }
        (p, _) if row.method == "post" && p.ends_with("/server-groups") => {
            Some(json!({"name": name, "policy": "anti-affinity"}))
        }
        _ => None,
    };
    if row.path.ends_with(":stop") || row.path.ends_with(":reboot") {
        // Quick and deterministic on the simulator.
        path.push_str(if row.path.ends_with(":stop") {
            "?force=true"
        } else {
            "?hard=true"
        });
    }
    let method = reqwest::Method::from_bytes(row.method.to_uppercase().as_bytes()).unwrap();
    let mut rb =
        f.s.server
            .http
            .request(method, f.s.at(&path))
            .timeout(Duration::from_secs(30));
    if let Some(t) = f.token(who) {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = &body {
        rb = rb.json(b);
    }
    let resp = rb.send().await.unwrap_or_else(|e| {
        panic!("{} {path} as {who:?}: {e}", row.method);
    });
    let status = resp.status().as_u16();
    let streaming = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    // Streams stay open: their status and headers are the answer.
    let text = if streaming {
        String::new()
    } else {
        resp.text().await.unwrap_or_default()
    };
    Call {
        status,
        body: text,
        sent: format!("{path} {}", body.map(|b| b.to_string()).unwrap_or_default()),
    }
}

#[tokio::test]
async fn every_route_answers_every_kind_of_caller_as_classified() {
    let mut f = Fixture::start().await;
    f.group = f.grouped_vm().await;
    let doc: Value =
        f.s.get("/openapi.json", f.token(Who::Operator).unwrap())
            .await
            .json()
            .await
            .expect("the OpenAPI document");
    let served = operations(&doc);
    let classified: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(classified.len(), MATRIX.len(), "a route has two rows");
    let unclassified: Vec<_> = served.difference(&classified).collect();
    assert!(
        unclassified.is_empty(),
        "routes in the OpenAPI document without a row in the authorization matrix (classify \
         who may call them): {unclassified:?}"
    );
    let gone: Vec<_> = classified.difference(&served).collect();
    assert!(
        gone.is_empty(),
        "rows of the authorization matrix whose route is not in the OpenAPI document: {gone:?}"
    );

    // One VM of project A for each call that may change or delete it.
    let fresh_calls: Vec<(usize, Who)> = MATRIX
        .iter()
        .enumerate()
        .filter(|(_, r)| r.object == Object::FreshVm)
        .flat_map(|(i, _)| CALLERS.map(|w| (i, w)))
        .collect();
    let names: Vec<String> = (0..fresh_calls.len())
        .map(|i| format!("fresh-{i}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fresh = f.vms(&names).await.into_iter();

    let mut failures = Vec::new();
    let mut leaks = Vec::new();
    let mut n = 0;
    for (i, row) in MATRIX.iter().enumerate() {
        for (col, who) in CALLERS.into_iter().enumerate() {
            n += 1;
            let vm = match row.object {
                Object::FreshVm => {
                    assert!(fresh_calls.contains(&(i, who)));
                    fresh.next().expect("a fresh VM").0
                }
                _ => f.vm.clone(),
            };
            let c = call(&f, row, who, &vm, n).await;
            let expected = row.expect[col];
            if c.status != expected {
                failures.push(format!(
                    "{} {} as {who:?}: expected {expected}, got {} {}",
                    row.method,
                    row.path,
                    c.status,
                    c.body.chars().take(300).collect::<String>()
                ));
            }
            // No answer names a project the caller is not in (unless the caller sent its name):
            // error bodies for everyone but operators, and every body for tenants.
            let checked = match who {
                Who::Operator => false,
                Who::HyperV => c.status >= 400,
                _ => true,
            };
            if checked {
                for p in PROJECTS {
                    if !who.projects().contains(&p) && !c.sent.contains(p) && c.body.contains(p) {
                        leaks.push(format!(
                            "{} {} as {who:?} ({}) names project {p}: {}",
                            row.method, row.path, c.status, c.body
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} calls answered otherwise than the matrix says:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    f.s.assert_no_token_logged();
}

#[tokio::test]
async fn the_hyperv_role_lists_every_project_and_tenants_never_reach_it() {
    let f = Fixture::start().await;
    // Every tenant, whatever its projects, is refused on every Hyper-V route.
    for who in [Who::TenantA, Who::TenantB, Who::TenantNoProject] {
        let t = f.token(who).unwrap();
        for path in ["/api/v1/vms", "/api/v1/hosts"] {
            let resp = f.s.get(path, t).await;
            assert_eq!(resp.status(), 403, "{path} as {who:?}");
            let text = resp.text().await.unwrap();
            assert!(
                !text.contains("bravo-vm") && !text.contains("sim-a"),
                "{text}"
            );
        }
    }
    // The Hyper-V role sees both projects' VMs: it is a cross-project role by design.
    let hugo = f.token(Who::HyperV).unwrap();
    let vms: Value = f.s.get("/api/v1/vms", hugo).await.json().await.unwrap();
    let projects: BTreeSet<&str> = vms
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["project"].as_str())
        .collect();
    assert_eq!(projects, BTreeSet::from([A, B]), "{vms}");
}

/// Reads every page of a Hyper-V list with `limit`, following `X-Next-Cursor` and checking that
/// `Link` names the same next page.
async fn pages(f: &Fixture, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let hugo = f.token(Who::HyperV).unwrap();
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut count = 0;
    loop {
        let mut url = format!("{path}?limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let resp = f.s.get(&url, hugo).await;
        assert_eq!(resp.status(), 200, "{url}");
        let next = resp
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let link = resp
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= limit, "{url}: {} items", page.len());
        count += 1;
        assert!(count < 100, "{path}: the pages never end");
        items.extend(page);
        match next {
            Some(c) => {
                assert_eq!(
                    link.as_deref(),
                    Some(format!("<{path}?limit={limit}&cursor={c}>; rel=\"next\"").as_str())
                );
                cursor = Some(c);
            }
            None => {
                assert!(link.is_none(), "{url}: a Link without a next cursor");
                return (items, count);
            }
        }
    }
}

/// Writes a simulator state file whose hosts already run VMs without HCP's mark, and returns
/// the hosts file that uses it.
fn hosts_with_strays(dir: &std::path::Path) -> String {
    use hcp_core::{PowerState, Resources};
    use hcp_provider_sim::{SimHost, SimState, SimVm};
    let size = Resources {
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 5,
    };
    let mut state = SimState {
        next_id: 1000,
        ..SimState::default()
    };
    for (host, zone, vcpus, memory, strays) in [
        ("sim-a1", "zone-a", 32, 131072, &["stray-1", "stray-2"][..]),
        ("sim-b1", "zone-b", 16, 65536, &["stray-3"][..]),
    ] {
        let mut h = SimHost::new(host, zone, vcpus, memory);
        for (i, name) in strays.iter().enumerate() {
            let mut vm = SimVm::new(*name, PowerState::Running, size, None);
            vm.native_id = format!("sim-9{i}{}", name.len());
            h.vms.insert(vm.native_id.clone(), Box::new(vm));
        }
        state.hosts.insert(host.to_string(), h);
    }
    let path = dir.join("sim.json");
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();
    hosts_file().replacen(
        "      seed: 42\n",
        &format!("      seed: 42\n      state_file: {}\n", path.display()),
        1,
    )
}

#[tokio::test]
async fn hyperv_lists_come_in_bounded_pages() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::start_with(hosts_with_strays(dir.path()), &[("HCP_PAGE_MAX", "2")]).await;
    f.vms(&["p-1", "p-2", "p-3", "p-4"]).await;
    let hugo = f.token(Who::HyperV).unwrap();
    // The default page is the server's largest (HCP_PAGE_MAX, 2 here), and so is a huge limit.
    for path in [
        "/api/v1/hosts",
        "/api/v1/vms",
        "/api/v1/vms?limit=4294967295",
    ] {
        let resp = f.s.get(path, hugo).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-next-cursor"), "{path}");
        let link = resp.headers()["link"].to_str().unwrap().to_string();
        assert!(link.contains("?limit=2&cursor="), "{path}: {link}");
        let page: Vec<Value> = resp.json().await.unwrap();
        assert_eq!(page.len(), 2, "{path}");
    }
    let (hosts, n) = pages(&f, "/api/v1/hosts", 2).await;
    assert_eq!((hosts.len(), n), (3, 2), "{hosts:?}");
    let names: BTreeSet<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["sim-a1", "sim-a2", "sim-b1"]));
    // HCP's six VMs (by id), then the three strays the inventory found (by host, native id).
    let (all_vms, n) = pages(&f, "/api/v1/vms", 1).await;
    assert_eq!((all_vms.len(), n), (9, 9), "{all_vms:?}");
    let ids: BTreeSet<&str> = all_vms[..6]
        .iter()
        .map(|v| v["vm_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "no VM twice: {all_vms:?}");
    let strays: Vec<&str> = all_vms[6..]
        .iter()
        .map(|v| {
            assert!(v["vm_id"].is_null(), "{v}");
            v["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(strays, ["stray-1", "stray-2", "stray-3"]);
    let (vms, n) = pages(&f, "/api/v1/vms", 2).await;
    assert_eq!((vms, n), (all_vms, 5));
    // A cursor of another list, or none at all, is a 400 naming it.
    let next_of_hosts = {
        let resp = f.s.get("/api/v1/hosts?limit=1", hugo).await;
        resp.headers()["x-next-cursor"]
            .to_str()
            .unwrap()
            .to_string()
    };
    for bad in [next_of_hosts.as_str(), "not-a-cursor", &"A".repeat(5000)] {
        let resp = f.s.get(&format!("/api/v1/vms?cursor={bad}"), hugo).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["field"], "cursor", "{p}");
    }
    // The typed client follows the pages.
    let client = hcp_client::Client::builder(&f.s.server.url)
        .token(Some(hugo))
        .build()
        .unwrap();
    assert_eq!(client.legacy_vms().await.unwrap().len(), 9);
    assert_eq!(client.legacy_hosts().await.unwrap().len(), 3);
}

#[tokio::test]
async fn an_unknown_default_project_is_not_found_without_naming_the_others() {
    // No HCP_DEFAULT_PROJECT: the Hyper-V routes act in `default`, which is not configured.
    let s = AuthServer::start_with_hosts(hosts_file(), &[("OIDC_ROLE_NAME", HYPERV_ROLE)]).await;
    let hugo = s.idp.token("hugo", &[HYPERV_ROLE], &[B]).await;
    let resp = s
        .server
        .http
        .post(s.at("/api/v1/vms/create"))
        .bearer_auth(&hugo)
        .json(&json!({"name": "x", "template": "ubuntu-24.04", "flavor": "small"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let text = resp.text().await.unwrap();
    let p: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(p["field"], "project", "{p}");
    for project in PROJECTS {
        assert!(!text.contains(project), "{text}");
    }
    // A tenant of a project that is not configured: 404, naming none of the configured ones.
    let ghost = s.idp.token("gus", &[TENANT_ROLE], &["proj-ghost"]).await;
    let resp = s.get(&format!("{T}/projects/proj-ghost/vms"), &ghost).await;
    assert_eq!(resp.status(), 404);
    let text = resp.text().await.unwrap();
    for project in PROJECTS {
        assert!(!text.contains(project), "{text}");
    }
}

/// Mints a token with `claims` over a valid tenant's.
async fn token_with(s: &AuthServer, claims: Value) -> String {
    let mut c = json!({"sub": "alice", "aud": CLIENT_ID, "roles": [TENANT_ROLE], "projects": [A]});
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    s.idp.mint(c, &[], json!({})).await
}

#[tokio::test]
async fn string_claims_are_refused_unless_configured() {
    let s = AuthServer::start_with_hosts(hosts_file(), &[]).await;
    let list = format!("{T}/projects/{A}/vms");
    let ops = "/api/hcp/ops/v1/providers";
    // The lenient reading of old: "x,hcp-operator" granted the operator role.
    for (claims, check) in [
        (
            json!({"roles": "x,hcp-operator"}),
            "`roles` claim is a string",
        ),
        (json!({"roles": "hcp-tenant"}), "`roles` claim is a string"),
        (json!({"projects": A}), "`projects` claim is a string"),
        (
            json!({"roles": ["hcp-tenant", 7]}),
            "`roles` claim must be a JSON array of strings",
        ),
        (
            json!({"roles": {"hcp-operator": true}}),
            "`roles` claim must be a JSON array",
        ),
    ] {
        let t = token_with(&s, claims.clone()).await;
        for path in [list.as_str(), ops] {
            let detail = oidc::assert_invalid(s.get(path, &t).await, &t, check).await;
            assert!(!detail.contains("hcp-operator\""), "{detail}");
        }
    }
    // Arrays work as always.
    let t = token_with(&s, json!({})).await;
    assert_eq!(s.get(&list, &t).await.status(), 200);
    assert_eq!(s.get(ops, &t).await.status(), 403);
    let _ = s.assert_no_token_logged();
}

#[tokio::test]
async fn configured_string_claims_are_read_the_configured_way() {
    let s = AuthServer::start_with_hosts(
        hosts_file(),
        &[
            ("OIDC_ROLES_CLAIM_STRING", "single"),
            ("OIDC_PROJECTS_CLAIM_STRING", "space"),
        ],
    )
    .await;
    let list = format!("{T}/projects/{A}/vms");
    let ops = "/api/hcp/ops/v1/providers";
    // `single`: the whole string is one role, so a smuggled separator grants nothing.
    let t = token_with(&s, json!({"roles": "x,hcp-operator"})).await;
    assert_eq!(s.get(ops, &t).await.status(), 403);
    assert_eq!(s.get(&list, &t).await.status(), 403);
    let t = token_with(&s, json!({"roles": "hcp-operator"})).await;
    assert_eq!(s.get(ops, &t).await.status(), 200);
    // `space`: projects separated by spaces.
    let t = token_with(&s, json!({"projects": format!("{B} {A}")})).await;
    assert_eq!(s.get(&list, &t).await.status(), 200);
    assert_eq!(
        s.get(&format!("{T}/projects/{B}/vms"), &t).await.status(),
        200
    );
    assert_eq!(
        s.get(&format!("{T}/projects/{HIDDEN}/vms"), &t)
            .await
            .status(),
        404
    );
    let t = token_with(&s, json!({"projects": format!("{A},{B}")})).await;
    assert_eq!(s.get(&list, &t).await.status(), 404);
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let s = AuthServer::start_with_hosts(hosts_file(), &[("OIDC_LEEWAY", "30s")]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let list = format!("{T}/projects/{A}/vms");
    // An hour ahead, with `nbf` now and `exp` two hours ahead: only `iat` is wrong.
    let t = token_with(
        &s,
        json!({"iat": now + 3600, "nbf": now - 5, "exp": now + 7200}),
    )
    .await;
    oidc::assert_invalid(s.get(&list, &t).await, &t, "issued in the future (`iat`)").await;
    let t = token_with(&s, json!({"iat": "yesterday"})).await;
    oidc::assert_invalid(s.get(&list, &t).await, &t, "`iat` claim is malformed").await;
    // Within the leeway, a clock a little ahead is tolerated.
    let t = token_with(&s, json!({"iat": now + 5})).await;
    assert_eq!(s.get(&list, &t).await.status(), 200);
    let _ = s.assert_no_token_logged();
}
