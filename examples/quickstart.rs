//! Quickstart: HCP as a Rust library. Builds an engine over the embedded simulator, creates two
//! VMs, follows a job's log, stops one, lists the project, and cleans up.
//!
//! Run: `cargo run -p hcp-examples --example quickstart`

use hcp_core::store::{PageRequest, Scope};
use hcp_core::{Engine, JobState, JobUpdate, Principal, RequestContext, VmSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The simulator's demo catalog: project `demo`, zones `zone-a` and `zone-b`.
    let config = hcp_provider_sim::demo_config();
    let engine = hcp_provider_sim::register(Engine::builder(config))
        .build()
        .await?;
    let ctx = RequestContext::new("demo", Principal::new("quickstart"));

    // Every change is an asynchronous job: submit, then follow it.
    let web = engine
        .create_vm(
            &ctx,
            VmSpec::new("web-1", "ubuntu-24.04", "small").with_tag("tier", "web"),
        )
        .await?;
    let mut watch = engine.watch_job(&ctx.scope(), &web.job_id).await?;
    while let Some(update) = watch.next().await {
        match update {
            JobUpdate::Log(line) => println!("  [{}] {}", line.seq, line.message),
            JobUpdate::Status {
                state, progress, ..
            } => println!("  status {state} {progress}%"),
            JobUpdate::End(job) => println!("job {} ended {}", job.id, job.state),
        }
    }

    // Idempotency: the same key and request return the same job, with no second VM.
    let keyed = ctx.clone().with_idempotency_key(Some("db-1-create".into()));
    let db = engine
        .create_vm(&keyed, VmSpec::new("db-1", "ubuntu-24.04", "medium"))
        .await?;
    let again = engine
        .create_vm(&keyed, VmSpec::new("db-1", "ubuntu-24.04", "medium"))
        .await?;
    assert!(again.replayed && again.job_id == db.job_id);
    engine.wait_job(&ctx.scope(), &db.job_id, None).await?;

    // Capabilities are negotiated before any job exists: zone-b has no cloud-init.
    let refused = engine
        .create_vm(
            &ctx,
            VmSpec::new("cloudy", "ubuntu-24.04", "small")
                .with_zone("zone-b")
                .with_user_data("#cloud-config\n"),
        )
        .await
        .expect_err("zone-b has no cloud_init");
    println!("refused: {} ({})", refused.code(), refused.message());

    let stop = engine.stop_vm(&ctx, &db.vm_id, false).await?;
    engine.wait_job(&ctx.scope(), &stop.job_id, None).await?;
    for vm in engine
        .list_vms(&ctx.scope(), &PageRequest::all())
        .await?
        .items
    {
        let v = vm.tenant_view();
        println!(
            "{:<8} {:<8} {:<8} {} vCPU {} MiB in {}",
            v.name, v.state, v.power, v.resources.vcpus, v.resources.memory_mib, v.zone
        );
    }

    // Clean up: delete both (force powers a running VM off first).
    for id in [&web.vm_id, &db.vm_id] {
        let d = engine.delete_vm(&ctx, id, true).await?;
        let job = engine.wait_job(&ctx.scope(), &d.job_id, None).await?;
        assert_eq!(job.state, JobState::Succeeded);
    }
    assert!(
        engine
            .list_vms(&Scope::All, &PageRequest::all())
            .await?
            .items
            .is_empty()
    );
    println!("done");
    Ok(())
}
