"""Day-2 operations from Python, embedded and remote, blocking and async."""

from __future__ import annotations

import uuid

import pytest

import hcp
from conftest import Service, run


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _delete_running_then_refuse_reboot(api: hcp.Engine | hcp.Client) -> None:
    for force, line in ((False, "the guest shut down"), (True, "powered the VM off (force)")):
        s = api.create_vm("demo", unique("run"), "ubuntu-24.04", "small", wait=True)
        assert api.get_vm("demo", s.vm_id).power == "RUNNING"
        deleted = api.delete_vm("demo", s.vm_id, force=force, wait=True)
        assert deleted.job is not None and deleted.job.succeeded, deleted.job
        assert line in [entry.message for entry in api.job_logs(deleted)]
        with pytest.raises(hcp.NotFound):
            api.get_vm("demo", s.vm_id)

    s = api.create_vm("demo", unique("stopped"), "ubuntu-24.04", "small", wait=True)
    api.stop_vm("demo", s.vm_id, wait=True)
    with pytest.raises(hcp.Conflict) as refused:
        api.reboot_vm("demo", s.vm_id, wait=True)
    assert refused.value.code == "VM_STATE_CONFLICT"
    assert "stopped" in str(refused.value)
    assert refused.value.job_id is None, "refused before any job"
    api.delete_vm("demo", s.vm_id, wait=True)


def test_engine_deletes_running_vms_and_refuses_by_state(engine: hcp.Engine) -> None:
    _delete_running_then_refuse_reboot(engine)


def test_client_deletes_running_vms_and_refuses_by_state(service: Service) -> None:
    with hcp.Client(service.url) as client:
        _delete_running_then_refuse_reboot(client)


def test_async_engine_deletes_a_running_vm_and_refuses_by_state() -> None:
    async def main() -> None:
        async with hcp.AsyncEngine() as engine:
            s = await engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
            deleted = await engine.delete_vm("demo", s.vm_id, wait=True)
            assert deleted.job is not None and deleted.job.succeeded
            assert await engine.list_vms("demo") == []
            s = await engine.create_vm("demo", "web-2", "ubuntu-24.04", "small", wait=True)
            await engine.stop_vm("demo", s.vm_id, wait=True)
            with pytest.raises(hcp.Conflict) as refused:
                await engine.reboot_vm("demo", s.vm_id)
            assert refused.value.code == "VM_STATE_CONFLICT"

    run(main())
