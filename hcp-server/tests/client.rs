//! `hcp-client` against the running service: every call, and remote errors decoded exactly like
//! embedded ones.

mod common;

use futures::StreamExt;
use hcp_client::LegacyCreateVm;
use hcp_core::store::{JobFilter, PageRequest};
use hcp_core::{
    ConsoleKind, DesiredState, ErrorKind, Job, JobAction, JobState, JobUpdate, PowerState, VmSpec,
};

/// The graceful timeout an operator sees on a stop job.
fn ops_stop_timeout(job: &Job) -> u64 {
    match job.action {
        JobAction::Stop {
            graceful_timeout_secs,
            ..
        } => graceful_timeout_secs,
        ref other => panic!("not a stop: {other:?}"),
    }
}

#[tokio::test]
async fn client_drives_a_vm_through_its_whole_life() {
    let s = common::start().await;
    let c = &s.client;
    assert!(c.healthz().await.unwrap());
    assert!(c.readyz().await.unwrap());
    let catalog = c.catalog().await.unwrap();
    assert!(catalog.image("ubuntu-24.04").is_some());
    assert_eq!(c.zones().await.unwrap().len(), 2);
    assert!(!c.capabilities(Some("zone-b")).await.unwrap().cloud_init);
    assert!(c.capabilities(Some("zone-a")).await.unwrap().cloud_init);

    let spec = VmSpec::new("life-1", "ubuntu-24.04", "small").with_tag("team", "core");
    let acc = c.create_vm("demo", &spec, Some("life-key")).await.unwrap();
    let mut updates = c.watch_job(&acc.job_id).await.unwrap();
    let mut lines = 0;
    let mut end = None;
    while let Some(u) = updates.next().await {
        match u.unwrap() {
            JobUpdate::Log(_) => lines += 1,
            JobUpdate::End(job) => end = Some(job),
            JobUpdate::Status { .. } => {}
        }
    }
    assert!(lines > 0);
    let end = end.expect("an end event");
    assert_eq!(end.state, JobState::Succeeded);
    assert_eq!(end.vm_id, acc.vm_id);
    assert!(end.host.is_empty(), "tenant jobs carry no host");

    let vm = c.get_vm("demo", &acc.vm_id).await.unwrap();
    assert_eq!(vm.state, DesiredState::Active);
    assert_eq!(vm.spec.tags.get("team").map(String::as_str), Some("core"));
    assert!(
        c.list_all_vms("demo")
            .await
            .unwrap()
            .iter()
            .any(|v| v.id == acc.vm_id)
    );
    assert!(!acc.replayed);
    let replay = c.create_vm("demo", &spec, Some("life-key")).await.unwrap();
    assert!(replay.replayed, "the service marks the replay");
    assert_eq!(
        (&replay.vm_id, &replay.job_id, &replay.resource_id),
        (&acc.vm_id, &acc.job_id, &acc.resource_id)
    );
    let submitted = hcp_core::Submitted::from(replay);
    assert!(submitted.replayed);
    assert_eq!(submitted.job_id, acc.job_id);

    let console = c
        .console("demo", &acc.vm_id, Some(ConsoleKind::Vnc))
        .await
        .unwrap();
    assert!(!console.url.is_empty());
    assert_eq!(console.kind, ConsoleKind::Vnc);

    let stop = c.stop_vm("demo", &acc.vm_id, false, None).await.unwrap();
    assert_eq!(
        c.wait_job(&stop.job_id, None).await.unwrap().state,
        JobState::Succeeded
    );
    assert_eq!(
        c.get_vm("demo", &acc.vm_id).await.unwrap().power,
        PowerState::Stopped
    );
    let start = c.start_vm("demo", &acc.vm_id, None).await.unwrap();
    assert_eq!(
        c.wait_job(&start.job_id, None).await.unwrap().state,
        JobState::Succeeded
    );
    let reboot = c.reboot_vm("demo", &acc.vm_id, true, None).await.unwrap();
    assert_eq!(
        c.wait_job(&reboot.job_id, None).await.unwrap().state,
        JobState::Succeeded
    );

    let jobs = c
        .list_jobs(
            "demo",
            &JobFilter {
                vm_id: Some(acc.vm_id.clone()),
                state: None,
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 4);
    // The jobs carry their actions, as the service sends them.
    let actions: Vec<Option<JobAction>> = jobs.items.iter().map(|j| j.action.clone()).collect();
    assert_eq!(
        actions,
        vec![
            Some(JobAction::Reboot { hard: true }),
            Some(JobAction::Start),
            Some(JobAction::Stop {
                force: false,
                graceful_timeout_secs: ops_stop_timeout(&c.ops_job(&stop.job_id).await.unwrap()),
            }),
            Some(JobAction::Create),
        ]
    );
    assert_eq!(
        c.get_job(&reboot.job_id).await.unwrap().action,
        Some(JobAction::Reboot { hard: true })
    );
    let ops_job = c.ops_job(&acc.job_id).await.unwrap();
    assert!(ops_job.host.starts_with("sim-"));
    let ops_vms = c
        .ops_vms(Some("demo"), &PageRequest::default())
        .await
        .unwrap();
    assert!(
        ops_vms
            .items
            .iter()
            .any(|v| v.id == acc.vm_id && v.binding.host.starts_with("sim-"))
    );
    assert_eq!(c.hosts().await.unwrap().len(), 3);
    assert!(c.providers().await.unwrap()[0].healthy);
    assert_eq!(c.provider_capabilities().await.unwrap().len(), 1);
    let report = c.reconcile().await.unwrap();
    assert_eq!(report.hosts_ok, 3);
    assert!(
        c.inventory_vms()
            .await
            .unwrap()
            .iter()
            .any(|v| v.vm_id.as_ref() == Some(&acc.vm_id))
    );
    let events = c.events(0, Some("demo"), 1000).await.unwrap();
    assert!(events.iter().any(|e| e.vm_id.as_ref() == Some(&acc.vm_id)));
    let mut live = c.subscribe_events(0, Some("demo")).await.unwrap();
    assert!(live.next().await.unwrap().is_ok());

    let del = c.delete_vm("demo", &acc.vm_id, true, None).await.unwrap();
    assert_eq!(
        c.wait_job(&del.job_id, None).await.unwrap().state,
        JobState::Succeeded
    );
    let gone = c.get_vm("demo", &acc.vm_id).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert!(
        c.metrics()
            .await
            .unwrap()
            .contains("hcp_jobs_finished_total")
    );
}

#[tokio::test]
async fn remote_errors_decode_like_embedded_ones() {
    let s = common::start().await;
    let c = &s.client;
    let e = c
        .create_vm(
            "demo",
            &VmSpec::new("Bad Name", "ubuntu-24.04", "small"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert_eq!(e.field(), Some("name"));
    assert_eq!(e.code(), "INVALID_SPEC");

    let e = c
        .create_vm(
            "demo",
            &VmSpec::new("ci", "ubuntu-24.04", "small")
                .with_zone("zone-b")
                .with_user_data("#cloud-config"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported);
    assert_eq!(e.code(), "FEATURE_NOT_SUPPORTED");

    c.create_vm(
        "demo",
        &VmSpec::new("k1", "ubuntu-24.04", "small"),
        Some("k"),
    )
    .await
    .unwrap();
    let e = c
        .create_vm(
            "demo",
            &VmSpec::new("k2", "ubuntu-24.04", "small"),
            Some("k"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.code(), hcp_core::CODE_IDEMPOTENCY_KEY_REUSED);

    let e = c.get_job(&"job-nope".into()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = c.capabilities(Some("zone-x")).await.unwrap_err();
    assert_eq!(e.field(), Some("zone"));

    let down = hcp_client::Client::new("http://127.0.0.1:9").unwrap();
    let e = down.catalog().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable);
    assert!(e.is_temporary());
    assert_eq!(
        hcp_client::Client::new("ftp://x").unwrap_err().field(),
        Some("url")
    );
}

#[tokio::test]
async fn client_uses_the_hyperv_routes() {
    let s = common::start().await;
    let c = &s.client;
    assert_eq!(c.legacy_hosts().await.unwrap().len(), 3);
    let req = LegacyCreateVm {
        name: "hv-1".into(),
        template: "windows-2022".into(),
        zone: Some("zone-a".into()),
        flavor: Some("medium".into()),
        ..Default::default()
    };
    let acc = c.legacy_create_vm(&req, None).await.unwrap();
    assert_eq!(
        c.wait_job(&acc.job_id, None).await.unwrap().state,
        JobState::Succeeded
    );
    assert!(
        c.legacy_vms()
            .await
            .unwrap()
            .iter()
            .any(|v| v.name == "hv-1")
    );
    let del = c.legacy_delete_vm("hv-1", true).await.unwrap();
    assert_eq!(
        c.wait_job(&del.job_id, None).await.unwrap().state,
        JobState::Succeeded
    );
}

/// A TCP proxy in front of the service that cuts its first connection right after it has
/// forwarded the first complete server-sent event with an `id`, and passes every later
/// connection through. It records the request head of each connection.
struct CuttingProxy {
    url: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    cut: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl CuttingProxy {
    async fn start(upstream: &str) -> CuttingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut_tx, cut_rx) = tokio::sync::oneshot::channel();
        let recorded = heads.clone();
        tokio::spawn(async move {
            let mut cut_tx = Some(cut_tx);
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let first = cut_tx.take();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    // The request head (a GET has no body).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = client.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    recorded
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    server.write_all(&head).await.unwrap();
                    let Some(cut) = first else {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    };
                    // Forward the answer until one whole event with an id has passed, then drop
                    // both connections without ending the chunked body.
                    let mut seen = Vec::new();
                    loop {
                        let n = server.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        client.write_all(&buf[..n]).await.unwrap();
                        let text = String::from_utf8_lossy(&seen);
                        if let Some(at) = text.find("\nid: ")
                            && text[at..].contains("\n\n")
                        {
                            break;
                        }
                    }
                    drop(client);
                    drop(server);
                    let _ = cut.send(());
                });
            }
        });
        CuttingProxy {
            url,
            heads,
            cut: Some(cut_rx),
        }
    }
}

#[tokio::test]
async fn a_watch_cut_mid_job_resumes_without_losing_or_repeating_a_line() {
    // Creates take two seconds, so the job is still running when the proxy cuts the stream.
    let s = common::start_with(common::Setup {
        hosts_yaml: Some(hcp_provider_sim::DEMO_HOSTS_FILE.replacen(
            "seed: 42",
            "seed: 42\n      op_latency: {create_vm: 2s}",
            1,
        )),
        ..Default::default()
    })
    .await;
    let mut proxy = CuttingProxy::start(&s.url).await;
    let through_proxy = hcp_client::Client::new(&proxy.url).unwrap();
    let acc = s
        .client
        .create_vm("demo", &VmSpec::new("cut-1", "ubuntu-24.04", "small"), None)
        .await
        .unwrap();
    let mut updates = through_proxy.watch_job(&acc.job_id).await.unwrap();
    let cut = proxy.cut.take().unwrap();
    let mut seqs = Vec::new();
    let mut end = None;
    let mut checked_mid_job = false;
    tokio::pin!(cut);
    loop {
        tokio::select! {
            r = &mut cut, if !checked_mid_job => {
                r.expect("the proxy cut the stream");
                let job = s.client.get_job(&acc.job_id).await.unwrap();
                assert!(!job.state.is_terminal(), "the cut came after the job ended: {job:?}");
                checked_mid_job = true;
            }
            u = updates.next() => match u {
                Some(u) => match u.expect("no error reaches the watcher") {
                    JobUpdate::Log(l) => seqs.push(l.seq),
                    JobUpdate::End(job) => end = Some(job),
                    JobUpdate::Status { .. } => {}
                },
                None => break,
            },
        }
    }
    assert!(checked_mid_job, "the proxy never cut the stream");
    let end = end.expect("the watch reached the end event");
    assert_eq!(end.state, JobState::Succeeded);
    // Every line exactly once, in order: the same lines a watch of the ended job replays.
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "lines lost or repeated");
    let mut replay = s.client.watch_job(&acc.job_id).await.unwrap();
    let mut replayed = 0;
    while let Some(u) = replay.next().await {
        if let JobUpdate::Log(_) = u.unwrap() {
            replayed += 1;
        }
    }
    assert_eq!(seqs.len(), replayed);
    // The second connection resumed after the last line the first one delivered.
    let heads = proxy.heads.lock().unwrap().clone();
    assert!(heads.len() >= 2, "{heads:?}");
    assert!(
        !heads[0].to_ascii_lowercase().contains("last-event-id"),
        "{}",
        heads[0]
    );
    let resumed = heads[1]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("last-event-id")
                .then(|| v.trim().to_string())
        })
        .expect("the reconnection sends Last-Event-ID");
    let resumed: u64 = resumed.parse().unwrap();
    assert!(
        resumed >= 1 && resumed < seqs.len() as u64,
        "{resumed} of {}",
        seqs.len()
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_vm_is_found_by_id_among_the_callers_projects() {
    let s = common::start().await;
    let acc = s
        .client
        .create_vm(
            "demo",
            &VmSpec::new("found-1", "ubuntu-24.04", "small"),
            None,
        )
        .await
        .unwrap();
    let vm = s.client.find_vm(&acc.vm_id).await.unwrap();
    assert_eq!(
        (vm.id.as_str(), vm.project.as_str()),
        (acc.vm_id.as_str(), "demo")
    );
    let e = s
        .client
        .find_vm(&hcp_core::VmId::new("vm-nope"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    s.stop().await.unwrap();
}
