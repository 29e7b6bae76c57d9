//! Printing: results to stdout as a table or JSON, errors to stderr.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use comfy_table::{ContentArrangement, Table, presets};
use hcp_core::{JobLogLine, LogLevel, TenantVm};
use serde::Serialize;

use crate::views::{Interrupted, JobFailed, JobView, Outcome};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts: one document per command (`job watch`: one object per line).
    Json,
}

/// Prints `value` as pretty JSON, or the text `table` renders.
///
/// # Errors
/// When stdout cannot be written (a closed pipe is not an error).
pub fn print<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)?,
        Format::Table => table(value),
    };
    line(&text)
}

/// Prints one line to stdout.
///
/// # Errors
/// When stdout cannot be written (a closed pipe is not an error: `hcp vm list | head` works).
pub fn line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{}", text.trim_end_matches('\n')).and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints one compact JSON document on its own line.
///
/// # Errors
/// When stdout cannot be written.
pub fn json_line<T: Serialize>(value: &T) -> anyhow::Result<()> {
    line(&serde_json::to_string(value)?)
}

/// Starts a borderless table with `header`, kubectl style.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// Renders `(key, value)` rows as two aligned columns.
pub fn details(rows: Vec<(&str, String)>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    for (k, v) in rows {
        t.add_row(vec![format!("{k}:"), v]);
    }
    trim(t)
}

/// Renders a table without the padding of its first column and trailing blanks.
pub fn trim(t: Table) -> String {
    t.lines()
        .map(|l| l.trim_end().strip_prefix(' ').unwrap_or(&l).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Formats a time as RFC 3339 in seconds, UTC.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Formats an optional time, `-` when absent.
pub fn opt_time(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), time)
}

/// Formats a job log line: time, level, text.
pub fn log_line(l: &JobLogLine) -> String {
    let level = match l.level {
        LogLevel::Info => "INFO ",
        LogLevel::Warn => "WARN ",
        LogLevel::Error => "ERROR",
    };
    format!("{} {level} {}", time(&l.at), l.message)
}

/// Renders VMs as a table, one row each.
pub fn vm_table(vms: &[TenantVm]) -> String {
    if vms.is_empty() {
        return "No VMs.".into();
    }
    let mut t = table(&[
        "ID", "NAME", "STATE", "POWER", "ZONE", "IMAGE", "FLAVOR", "VCPUS", "MEMORY", "DISK",
    ]);
    for vm in vms {
        t.add_row(vec![
            vm.id.to_string(),
            vm.name.clone(),
            vm.state.to_string(),
            vm.power.to_string(),
            vm.zone.clone(),
            vm.spec.image.clone(),
            vm.spec.flavor.clone().unwrap_or_else(|| "-".into()),
            vm.resources.vcpus.to_string(),
            format!("{} MiB", vm.resources.memory_mib),
            format!("{} GiB", vm.resources.disk_gib),
        ]);
    }
    trim(t)
}

/// Renders one VM's fields.
pub fn vm_details(vm: &TenantVm) -> String {
    let tags = if vm.spec.tags.is_empty() {
        "-".to_string()
    } else {
        vm.spec
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let networks = if vm.spec.networks.is_empty() {
        "-".to_string()
    } else {
        vm.spec
            .networks
            .iter()
            .map(|n| n.network.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        ("ID", vm.id.to_string()),
        ("Name", vm.name.clone()),
        ("Project", vm.project.to_string()),
        ("State", vm.state.to_string()),
        ("Power", vm.power.to_string()),
        ("Desired power", vm.desired_power.to_string()),
        ("Zone", vm.zone.clone()),
        ("Image", vm.spec.image.clone()),
        (
            "Flavor",
            vm.spec.flavor.clone().unwrap_or_else(|| "-".into()),
        ),
        ("vCPUs", vm.resources.vcpus.to_string()),
        ("Memory", format!("{} MiB", vm.resources.memory_mib)),
        ("Disk", format!("{} GiB", vm.resources.disk_gib)),
        ("Networks", networks),
        ("Tags", tags),
        (
            "User data",
            if vm.has_user_data { "yes" } else { "no" }.into(),
        ),
        ("Created", time(&vm.created_at)),
        ("Updated", time(&vm.updated_at)),
    ];
    if let Some(e) = &vm.last_error {
        rows.push(("Last error", format!("{} ({})", e.message, e.code)));
    }
    details(rows)
}

/// Renders jobs as a table, one row each.
pub fn job_table(jobs: &[JobView]) -> String {
    if jobs.is_empty() {
        return "No jobs.".into();
    }
    let mut t = table(&[
        "ID",
        "OPERATION",
        "VM",
        "STATE",
        "PROGRESS",
        "ATTEMPTS",
        "CREATED",
        "ERROR",
    ]);
    for j in jobs {
        t.add_row(vec![
            j.id.to_string(),
            j.operation.to_string(),
            j.vm_id.to_string(),
            j.state.to_string(),
            format!("{}%", j.progress),
            format!("{}/{}", j.attempts, j.max_attempts),
            time(&j.created_at),
            j.error
                .as_ref()
                .map_or_else(|| "-".into(), |e| e.code.clone()),
        ]);
    }
    trim(t)
}

/// Renders one job's fields.
pub fn job_details(j: &JobView) -> String {
    let mut rows = vec![
        ("ID", j.id.to_string()),
        ("Operation", j.operation.to_string()),
        ("VM", j.vm_id.to_string()),
        ("Project", j.project.to_string()),
        ("State", j.state.to_string()),
        ("Progress", format!("{}%", j.progress)),
        ("Attempts", format!("{}/{}", j.attempts, j.max_attempts)),
        ("Principal", j.principal.clone()),
        (
            "Idempotency key",
            j.idempotency_key.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Created", time(&j.created_at)),
        ("Started", opt_time(j.started_at.as_ref())),
        ("Finished", opt_time(j.finished_at.as_ref())),
    ];
    if let Some(r) = &j.pending_reason {
        rows.push(("Pending because", r.to_string()));
    }
    if let Some(e) = &j.error {
        rows.push(("Error", format!("{} ({})", e.message, e.code)));
    }
    details(rows)
}

/// Renders what a mutating command did: a summary line, then the VM. `waited` is false when
/// the command returned once the service accepted the job.
pub fn outcome(o: &Outcome, waited: bool) -> String {
    let mut text = format!(
        "{} {} {} (vm {})",
        o.job.operation, o.job_id, o.job.state, o.vm_id
    );
    if let Some(id) = &o.snapshot_id {
        text.push_str(&format!("\nsnapshot {id}"));
    }
    match o.memory_state_kept {
        Some(true) => text.push_str("\nmemory state kept: the VM runs on from the snapshot"),
        Some(false) => text.push_str(
            "\nmemory state not kept: the snapshot holds disks only; the VM ends stopped",
        ),
        None => {}
    }
    if o.replayed {
        text.push_str(&format!(
            "\nreplayed: idempotency key `{}` was used before; no new job ran",
            o.job.idempotency_key.as_deref().unwrap_or("")
        ));
    }
    if !waited {
        text.push_str(&format!(
            "\naccepted: the service runs the job; follow it with `hcp job watch {}`",
            o.job_id
        ));
    }
    if let Some(e) = &o.job.error {
        text.push_str(&format!("\nerror: {} ({})", e.message, e.code));
    }
    if let Some(vm) = &o.vm {
        text.push_str("\n\n");
        text.push_str(&vm_table(std::slice::from_ref(vm)));
    }
    text
}

/// Prints a failed command's error to stderr: one readable line, or a JSON object with
/// `code`, `kind`, `message` and `field` in JSON mode.
pub fn print_error(format: Format, error: &anyhow::Error) {
    let text = match format {
        Format::Table => format!("hcp: error: {}", human(error)),
        Format::Json => serde_json::json!({ "error": error_json(error) }).to_string(),
    };
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Context keys that a tenant may see (host and native ids are operator details).
const SHOWN_CONTEXT: [&str; 2] = ["where", "quota"];

fn human(error: &anyhow::Error) -> String {
    if let Some(e) = error.downcast_ref::<hcp_core::Error>() {
        let mut text = e.message().to_string();
        for (k, v) in e
            .context()
            .iter()
            .filter(|(k, _)| SHOWN_CONTEXT.contains(k))
        {
            text.push_str(&format!(" ({k}: {v})"));
        }
        text.push_str(&format!(" [{}]", e.code()));
        return text;
    }
    if let Some(f) = error.downcast_ref::<JobFailed>() {
        let code = f
            .job
            .error
            .as_ref()
            .map_or("JOB_FAILED", |e| e.code.as_str());
        return format!("{f} [{code}]");
    }
    format!("{error:#}")
}

fn error_json(error: &anyhow::Error) -> serde_json::Value {
    if let Some(e) = error.downcast_ref::<hcp_core::Error>() {
        return serde_json::json!({
            "code": e.code(),
            "kind": e.kind(),
            "message": e.message(),
            "field": e.field(),
        });
    }
    if let Some(f) = error.downcast_ref::<JobFailed>() {
        // Cancelled by the user's Ctrl-C: the interrupt's code, as the exit code says.
        let (code, kind) = if crate::progress::was_interrupted() {
            ("INTERRUPTED", "interrupted")
        } else {
            ("JOB_FAILED", "job_failed")
        };
        return serde_json::json!({
            "code": code,
            "kind": kind,
            "message": f.to_string(),
            "job": f.job,
        });
    }
    if let Some(i) = error.downcast_ref::<Interrupted>() {
        return serde_json::json!({
            "code": "INTERRUPTED",
            "kind": "interrupted",
            "message": i.to_string(),
            "job_id": i.job_id,
        });
    }
    serde_json::json!({ "code": "INTERNAL", "kind": "internal", "message": format!("{error:#}") })
}
