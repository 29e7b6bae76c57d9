"""The blocking API on the embedded engine: lifecycle, typed results, logs, configuration."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

import hcp
from conftest import DEMO, demo_config


def test_vm_lifecycle_create_list_stop_start_reboot_console_delete(engine: hcp.Engine) -> None:
    s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", tags={"team": "infra"}, wait=True)
    assert isinstance(s, hcp.Submitted)
    assert s.vm_id.startswith("vm-") and s.job_id.startswith("job-")
    assert s.replayed is False
    assert s.job is not None and s.job.state == "SUCCEEDED" and s.job.id == s.job_id

    vm = engine.get_vm("demo", s.vm_id)
    assert (vm.name, vm.image, vm.flavor, vm.state, vm.power) == ("web-1", "ubuntu-24.04", "small", "ACTIVE", "RUNNING")
    assert (vm.vcpus, vm.memory_mib, vm.disk_gib) == (1, 1024, 10)
    assert vm.tags == {"team": "infra"}
    assert vm.zone in ("zone-a", "zone-b")
    assert [v.id for v in engine.list_vms("demo")] == [s.vm_id]

    stopped = engine.stop_vm("demo", vm, wait=True)
    assert stopped.job is not None and stopped.job.operation == "stop_vm"
    assert engine.get_vm("demo", vm).power == "STOPPED"

    engine.start_vm("demo", s.vm_id, wait=True)
    assert engine.get_vm("demo", s.vm_id).power == "RUNNING"

    rebooted = engine.reboot_vm("demo", s.vm_id, hard=True, wait=True)
    assert rebooted.job is not None and rebooted.job.succeeded

    console = engine.console("demo", s.vm_id)
    assert console.kind == "vnc"
    assert console.url.startswith("https://")
    assert console.expires_at > datetime.now(timezone.utc)
    assert "token" not in repr(console), "the console URL carries a one-time token; repr must hide it"

    deleted = engine.delete_vm("demo", s.vm_id, force=True, wait=True)
    assert deleted.job is not None and deleted.job.operation == "delete_vm"
    assert engine.list_vms("demo") == []
    with pytest.raises(hcp.NotFound):
        engine.get_vm("demo", s.vm_id)


def test_submit_without_wait_returns_at_once_and_wait_job_returns_the_ended_job(engine: hcp.Engine) -> None:
    s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
    assert s.job is None
    job = engine.wait_job(s, timeout=30)
    assert job.done and job.succeeded and job.state == "SUCCEEDED"
    assert job.progress == 100
    assert job.finished_at is not None and job.started_at is not None
    assert job.principal == "python"
    assert engine.get_job(s.job_id) == job
    assert engine.get_job(job) == job
    assert job.raise_for_state() is job


def test_job_logs_yield_every_line_then_the_final_job(engine: hcp.Engine) -> None:
    s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
    logs = engine.job_logs(s)
    assert logs.job is None
    lines = list(logs)
    assert lines, "a create job writes log lines"
    assert all(isinstance(line, hcp.JobLogLine) for line in lines)
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
    assert all(line.job_id == s.job_id for line in lines)
    assert any("web-1" in line.message for line in lines)
    assert {line.level for line in lines} <= {"info", "warn", "error"}
    assert logs.job is not None and logs.job.state == "SUCCEEDED"
    # A finished job's log replays from the start.
    assert [line.seq for line in engine.job_logs(s.job_id)] == [line.seq for line in lines]
    assert str(lines[0]).endswith(lines[0].message)


def test_job_logs_follow_a_running_job_live() -> None:
    with hcp.Engine(demo_config(op_latency={"create_vm": "300ms"})) as engine:
        s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
        logs = engine.job_logs(s)
        first = next(logs)
        assert first.seq == 1
        assert engine.get_job(s).state in ("PENDING", "RUNNING"), "the first line arrives while the job runs"
        rest = list(logs)
        assert [line.seq for line in rest] == list(range(2, len(rest) + 2))
        assert logs.job is not None and logs.job.succeeded


def test_typed_results_have_readable_reprs_and_plain_dicts(engine: hcp.Engine) -> None:
    s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
    vm = engine.get_vm("demo", s.vm_id)
    assert repr(vm) == f"Vm(id='{vm.id}', name='web-1', state='ACTIVE', power='RUNNING', zone='{vm.zone}')"
    d = vm.to_dict()
    assert set(d) == {
        "id", "project", "name", "image", "flavor", "vcpus", "memory_mib", "disk_gib", "zone", "state",
        "power", "desired_power", "networks", "tags", "has_user_data", "last_error", "created_at", "updated_at",
        "server_group",
    }
    assert d["name"] == "web-1" and isinstance(d["created_at"], datetime)
    assert "host" not in d and "native_id" not in d, "tenants never see hosts or native ids"
    json.dumps(d, default=str)

    assert type(vm).__module__ == "hcp" and type(vm).__name__ == "Vm"
    assert vm == engine.get_vm("demo", s.vm_id)
    with pytest.raises(AttributeError):
        vm.name = "other"  # type: ignore[misc]

    job_dict = engine.get_job(s).to_dict()
    assert job_dict["state"] == "SUCCEEDED" and job_dict["error"] is None
    assert "host" not in job_dict and "provider" not in job_dict
    assert repr(s).startswith(f"Submitted(vm_id='{s.vm_id}', job_id='{s.job_id}', replayed=False, job=Job(")
    assert s.to_dict()["job"]["id"] == s.job_id, "nested records become nested dicts"


def test_vms_convert_to_a_pandas_dataframe(engine: hcp.Engine) -> None:
    import pandas as pd  # a pinned test dependency: a missing pandas fails this test loudly

    for i in range(3):
        engine.create_vm("demo", f"web-{i}", "ubuntu-24.04", "small", wait=True)
    df = pd.DataFrame([vm.to_dict() for vm in engine.list_vms("demo")])
    assert list(df["name"]) == ["web-0", "web-1", "web-2"]
    assert set(df["state"]) == {"ACTIVE"}
    assert df["vcpus"].sum() == 3


def test_catalog_hosts_and_capabilities(engine: hcp.Engine) -> None:
    catalog = engine.catalog()
    assert [i.name for i in catalog.images] == ["ubuntu-24.04", "windows-2022"]
    assert [f.name for f in catalog.flavors] == ["small", "medium"]
    assert [z.name for z in catalog.zones] == ["zone-a", "zone-b"]
    assert [n.name for n in catalog.networks] == ["default"]
    assert catalog.images[1].min_disk_gib == 32
    assert repr(catalog) == (
        "Catalog(images=['ubuntu-24.04', 'windows-2022'], flavors=['small', 'medium'], "
        "networks=['default'], zones=['zone-a', 'zone-b'])"
    )
    assert catalog.to_dict()["flavors"][1] == {"name": "medium", "vcpus": 2, "memory_mib": 4096, "disk_gib": 40}

    hosts = engine.hosts()
    assert sorted((h.name, h.zone) for h in hosts) == [("sim-a1", "zone-a"), ("sim-a2", "zone-a"), ("sim-b1", "zone-b")]
    assert all(h.available and h.provider == "sim" for h in hosts)
    b1 = next(h for h in hosts if h.name == "sim-b1")
    assert (b1.vcpus_total, b1.memory_mib_total) == (16, 65536)
    assert not b1.capabilities.cloud_init

    assert engine.capabilities("zone-a").cloud_init
    zone_b = engine.capabilities("zone-b")
    assert not zone_b.cloud_init and not zone_b.snapshot and not zone_b.gpu_passthrough
    assert "cloud_init" not in zone_b.enabled() and "console_vnc" in zone_b.enabled()
    assert repr(zone_b).startswith("Capabilities(enabled=[")
    assert engine.capabilities().cloud_init, "anywhere means the union of the zones"


def test_config_from_a_dict_and_from_a_hosts_file(tmp_path: Path) -> None:
    config = demo_config()
    config["catalog"]["flavors"].append({"name": "large", "vcpus": 8, "memory_mib": 16384, "disk_gib": 80})
    with hcp.Engine(config, principal="ci-bot") as engine:
        assert [f.name for f in engine.catalog().flavors] == ["small", "medium", "large"]
        s = engine.create_vm("demo", "big", "ubuntu-24.04", "large", wait=True)
        assert engine.get_vm("demo", s.vm_id).vcpus == 8
        assert engine.get_job(s).principal == "ci-bot"

    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(DEMO, indent=2))
    for source in (path, str(path)):
        with hcp.Engine(source) as engine:
            assert [z.name for z in engine.catalog().zones] == ["zone-a", "zone-b"]


def test_bad_configuration_names_the_key(tmp_path: Path) -> None:
    config = demo_config()
    config["providers"][0]["hosts"][0]["zone"] = "zone-x"
    with pytest.raises(hcp.InvalidSpec) as e:
        hcp.Engine(config)
    assert e.value.field == "providers[0].hosts[0].zone"
    assert "providers[0].hosts[0].zone" in str(e.value) and "zone-x" in str(e.value)

    hosts_file = tmp_path / "hosts.yaml"
    hosts_file.write_text("providers:\n  - name: sim\n    kind: sim\n    hosts:\n      - {name: h1, zone: zone-x}\n")
    with pytest.raises(hcp.InvalidSpec) as e:
        hcp.Engine(hosts_file)
    assert e.value.field == "providers[0].hosts[0].zone"
    assert "hosts.yaml (line 5)" in str(e.value)

    with pytest.raises(hcp.InvalidSpec) as e:
        hcp.Engine({"providers": [{"name": "sim", "kind": "sim"}], "zonez": []})
    assert "zonez" in str(e.value)

    with pytest.raises(hcp.InvalidSpec) as e:
        hcp.Engine(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(e.value) and e.value.field == "config"

    with pytest.raises(TypeError, match="config must be"):
        hcp.Engine(42)  # type: ignore[arg-type]
    with pytest.raises(hcp.InvalidSpec, match="principal"):
        hcp.Engine(principal=" ")


def test_references_accept_ids_and_objects(engine: hcp.Engine) -> None:
    s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
    vm = engine.get_vm("demo", s.vm_id)
    job = engine.get_job(s)
    assert engine.get_vm("demo", vm) == vm
    assert engine.wait_job(job) == engine.wait_job(s) == engine.wait_job(s.job_id)
    with pytest.raises(TypeError, match="vm must be"):
        engine.get_vm("demo", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="job must be"):
        engine.get_job(None)  # type: ignore[arg-type]


def test_closed_engine_refuses_calls() -> None:
    engine = hcp.Engine()
    assert not engine.closed
    engine.close()
    engine.close()
    assert engine.closed
    with pytest.raises(RuntimeError, match="closed"):
        engine.list_vms("demo")


def test_blocking_calls_release_the_gil(slow_engine: hcp.Engine) -> None:
    """While one thread waits on a job, other Python threads keep running."""
    s = slow_engine.create_vm("demo", "slow", "ubuntu-24.04", "small")
    entered = threading.Event()
    outcome: list[BaseException] = []

    def waiter() -> None:
        entered.set()
        try:
            slow_engine.wait_job(s, timeout=3)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion below
            outcome.append(e)

    thread = threading.Thread(target=waiter)
    thread.start()
    entered.wait()
    observed_alive = 0
    for _ in range(200):
        # Each iteration needs the GIL; if the waiter held it, none would run before it returned.
        if thread.is_alive():
            observed_alive += 1
        threading.Event().wait(0.001)
    thread.join()
    # Without the GIL released, at most an iteration or two could slip in before the wait began.
    assert observed_alive >= 100, f"the main thread ran {observed_alive} times while the waiter waited: the GIL was held"
    assert len(outcome) == 1 and isinstance(outcome[0], hcp.Timeout)


def test_help_shows_numpy_docstrings() -> None:
    doc = hcp.Engine.create_vm.__doc__ or ""
    for section in ("Parameters", "Returns", "Raises", "Examples", "idempotency_key", "FeatureNotSupported"):
        assert section in doc
    assert "Parameters" in (hcp.Engine.__doc__ or "")
    assert (hcp.Vm.__doc__ or "").startswith("A VM as its project sees it")
    assert "to_dict" in dir(hcp.Vm) and (hcp.Vm.to_dict.__doc__ or "").startswith("Returns the fields")
