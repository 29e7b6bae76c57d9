"""hcp.Client and hcp.AsyncClient against a real HCP service started by the test session."""

from __future__ import annotations

import uuid

import pytest

import hcp
from conftest import Service, _free_port, run


def unique(prefix: str) -> str:
    """The service lives for the whole session: give every test its own VM names."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_client_vm_lifecycle(service: Service) -> None:
    with hcp.Client(service.url) as client:
        assert repr(client) == f'Client("{service.url}")'
        name = unique("web")
        s = client.create_vm("demo", name, "ubuntu-24.04", "small", tags={"team": "infra"}, wait=True)
        assert s.job is not None and s.job.state == "SUCCEEDED" and s.job.id == s.job_id
        vm = client.get_vm("demo", s.vm_id)
        assert (vm.name, vm.state, vm.power, vm.tags) == (name, "ACTIVE", "RUNNING", {"team": "infra"})
        assert s.vm_id in [v.id for v in client.list_vms("demo")]

        client.stop_vm("demo", vm, wait=True)
        assert client.get_vm("demo", vm).power == "STOPPED"
        client.start_vm("demo", vm, wait=True)
        client.reboot_vm("demo", vm, wait=True)
        console = client.console("demo", vm)
        assert console.kind == "vnc" and console.url

        logs = client.job_logs(s)
        lines = list(logs)
        assert lines and [line.seq for line in lines] == list(range(1, len(lines) + 1))
        assert logs.job is not None and logs.job.state == "SUCCEEDED"
        assert client.get_job(s).state == "SUCCEEDED"
        assert client.wait_job(s.job_id, timeout=30).state == "SUCCEEDED"

        client.delete_vm("demo", vm, force=True, wait=True)
        assert s.vm_id not in [v.id for v in client.list_vms("demo")]
        with pytest.raises(hcp.NotFound):
            client.get_vm("demo", s.vm_id)
    assert client.closed


def test_client_catalog_hosts_capabilities(service: Service) -> None:
    client = hcp.Client(service.url)
    assert [z.name for z in client.catalog().zones] == ["zone-a", "zone-b"]
    assert sorted(h.name for h in client.hosts()) == ["sim-a1", "sim-a2", "sim-b1"]
    assert not client.capabilities("zone-b").cloud_init
    assert client.capabilities("zone-a").cloud_init


def test_client_errors_map_to_the_same_classes(service: Service) -> None:
    client = hcp.Client(service.url)
    with pytest.raises(hcp.NotFound):
        client.get_vm("demo", "vm-does-not-exist")
    with pytest.raises(hcp.NotFound):
        client.get_job("job-does-not-exist")
    with pytest.raises(hcp.InvalidSpec) as e:
        client.create_vm("demo", "Bad_Name", "ubuntu-24.04", "small")
    assert e.value.field == "name" and e.value.code == "INVALID_SPEC"
    with pytest.raises(hcp.InvalidSpec) as e:
        client.create_vm("demo", unique("x"), "debian-13", "small")
    assert e.value.field == "image"
    with pytest.raises(hcp.FeatureNotSupported) as f:
        client.create_vm("demo", unique("cloudy"), "ubuntu-24.04", "small", zone="zone-b", user_data="#cloud-config\n")
    assert f.value.code == "FEATURE_NOT_SUPPORTED"
    name = unique("taken")
    s = client.create_vm("demo", name, "ubuntu-24.04", "small", wait=True)
    with pytest.raises(hcp.Conflict) as c:
        client.create_vm("demo", name, "ubuntu-24.04", "small")
    assert c.value.field == "name"
    with pytest.raises(hcp.Conflict) as r:
        client.stop_vm("demo", s.vm_id, wait=True)
        client.reboot_vm("demo", s.vm_id, wait=True)  # stopped: refused before any job
    assert r.value.code == "VM_STATE_CONFLICT" and r.value.job_id is None
    client.delete_vm("demo", s.vm_id, wait=True)


def test_client_idempotency_key_replays_and_reuse_is_refused(service: Service) -> None:
    client = hcp.Client(service.url)
    key = unique("key")
    name = unique("idem")
    first = client.create_vm("demo", name, "ubuntu-24.04", "small", idempotency_key=key, wait=True)
    again = client.create_vm("demo", name, "ubuntu-24.04", "small", idempotency_key=key)
    assert (again.vm_id, again.job_id) == (first.vm_id, first.job_id)
    assert first.replayed is False and again.replayed is True
    assert [v.name for v in client.list_vms("demo")].count(name) == 1
    with pytest.raises(hcp.Conflict) as e:
        client.create_vm("demo", unique("other"), "ubuntu-24.04", "small", idempotency_key=key)
    assert e.value.code == "IDEMPOTENCY_KEY_REUSED"
    client.delete_vm("demo", first.vm_id, force=True, wait=True)


def test_client_wait_job_timeout(slow_service: Service) -> None:
    client = hcp.Client(slow_service.url)
    s = client.create_vm("demo", unique("slow"), "ubuntu-24.04", "small")
    with pytest.raises(hcp.Timeout) as e:
        client.wait_job(s, timeout=0.3)
    assert e.value.job_id == s.job_id
    assert client.get_job(s).state in ("PENDING", "RUNNING")


def test_client_bad_url_and_unreachable_service() -> None:
    with pytest.raises(hcp.InvalidSpec) as e:
        hcp.Client("not a url")
    assert e.value.field == "url"
    with pytest.raises(TypeError):
        hcp.Client(8080)  # type: ignore[arg-type]
    port = _free_port()
    client = hcp.Client(f"http://127.0.0.1:{port}")
    with pytest.raises(hcp.ProviderUnavailable) as u:
        client.list_vms("demo")
    assert u.value.temporary and f"127.0.0.1:{port}" in str(u.value)


def test_async_client(service: Service) -> None:
    async def main() -> None:
        async with hcp.AsyncClient(service.url) as client:
            s = await client.create_vm("demo", unique("async"), "ubuntu-24.04", "small")
            logs = client.job_logs(s)
            lines = [line async for line in logs]
            assert lines and logs.job is not None and logs.job.succeeded
            vm = await client.get_vm("demo", s.vm_id)
            assert vm.state == "ACTIVE"
            assert s.vm_id in [v.id for v in await client.list_vms("demo")]
            assert (await client.wait_job(s)).succeeded
            assert len(await client.hosts()) == 3
            with pytest.raises(hcp.NotFound):
                await client.get_vm("demo", "vm-nope")
            await client.delete_vm("demo", vm, force=True, wait=True)

    run(main())


def test_client_failed_job_raises_job_failed(failing_service: Service) -> None:
    with hcp.Client(failing_service.url) as client:
        with pytest.raises(hcp.JobFailed) as j:
            client.create_vm("demo", unique("doomed"), "ubuntu-24.04", "small", wait=True)
        assert j.value.code == "PROVIDER_UNAVAILABLE" and j.value.job_id is not None
        assert j.value.job is not None and j.value.job.state == "FAILED"
