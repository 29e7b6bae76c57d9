"""A small program using the whole public API; `mypy --strict` must accept it as written.

tests/test_typing.py runs mypy on this file; it also runs it, so the annotations below are
checked against what the module really returns.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Optional

import hcp


def tour(engine: hcp.Engine) -> list[dict[str, Any]]:
    catalog: hcp.Catalog = engine.catalog()
    image: hcp.Image = catalog.images[0]
    flavor: hcp.Flavor = catalog.flavors[0]
    zone: hcp.Zone = catalog.zones[0]
    caps: hcp.Capabilities = engine.capabilities(zone.name)
    enabled: list[str] = caps.enabled()
    limit: Optional[int] = caps.max_vcpus
    assert isinstance(enabled, list) and (limit is None or limit > 0)

    s: hcp.Submitted = engine.create_vm(
        "demo", "typed-1", image.name, flavor.name, zone=zone.name, tags={"k": "v"}, idempotency_key="typed-1"
    )
    logs: hcp.JobLogs = engine.job_logs(s)
    for line in logs:
        seq: int = line.seq
        at: datetime = line.at
        assert seq > 0 and at.tzinfo is not None
    final: Optional[hcp.Job] = logs.job
    assert final is not None and final.succeeded

    job: hcp.Job = engine.wait_job(s, timeout=30.0).raise_for_state()
    error: Optional[hcp.ErrorInfo] = job.error
    assert error is None
    vm: hcp.Vm = engine.get_vm("demo", s.vm_id)
    tags: dict[str, str] = vm.tags
    assert tags == {"k": "v"}
    engine.stop_vm("demo", vm, force=True, wait=True)
    engine.start_vm("demo", vm.id, wait=True)
    moved: hcp.Submitted = engine.migrate_vm(vm, target_host=None, allow_cold=False, wait=True, timeout=30)
    moved_job: Optional[hcp.Job] = moved.job
    assert moved_job is not None and moved_job.operation == "migrate_vm"
    engine.reboot_vm("demo", vm, hard=False, wait=True, timeout=30)
    console: hcp.Console = engine.console("demo", vm)
    expires: datetime = console.expires_at
    assert expires > job.created_at
    hosts: list[hcp.Host] = engine.hosts()
    host_caps: hcp.Capabilities = hosts[0].capabilities
    assert isinstance(host_caps.cloud_init, bool)

    try:
        engine.get_vm("demo", "vm-missing")
    except hcp.NotFound as e:
        code: str = e.code
        field: Optional[str] = e.field
        job_id: Optional[str] = e.job_id
        assert code == "NOT_FOUND" and field == "vm_id" and job_id is None
    engine.stop_vm("demo", vm, wait=True)
    try:
        engine.reboot_vm("demo", vm, wait=True)
    except hcp.Conflict as c:
        refused: Optional[str] = c.job_id
        assert c.code == "VM_STATE_CONFLICT" and refused is None
    snap: hcp.Submitted = engine.create_snapshot("demo", vm, "typed", wait=True)
    snaps: list[hcp.Snapshot] = engine.list_snapshots("demo", vm)
    memory: bool = snaps[0].memory
    reverted: hcp.Submitted = engine.revert_snapshot("demo", vm, snaps[0], wait=True)
    kept: Optional[bool] = reverted.memory_state_kept
    assert snap.snapshot_id == snaps[0].id and kept is memory
    plan: list[hcp.FieldPlan] = engine.plan_resize("demo", vm, vcpus=4)
    impact: str = plan[0].impact
    assert impact in ("hot", "reboot", "power_off", "recreate", "data_destructive")
    resized: hcp.Submitted = engine.resize_vm("demo", vm, vcpus=2, allow=("hot", "reboot"), wait=True)
    assert resized.job is not None and resized.job.succeeded
    can_resize: bool = engine.capabilities("zone-a").resize
    assert can_resize
    rows = [v.to_dict() for v in engine.list_vms("demo")]
    wanted: dict[str, str] = {"env": "prod"}
    picked: list[hcp.Vm] = engine.list_vms(
        "demo", name_prefix="typed", tags=wanted, state="ACTIVE", power="RUNNING", sort="-created_at"
    )
    assert len(picked) <= len(rows)
    engine.delete_vm("demo", vm, wait=True)

    networks: list[hcp.NetworkLike] = ["default", {"network": "default"}]
    sized: hcp.Submitted = engine.create_vm(
        "demo", "typed-3", image.name, vcpus=2, memory_mib=2048, disk_gib=20, networks=networks, wait=True
    )
    engine.delete_vm("demo", sized.vm_id, force=True, wait=True)
    return rows


async def async_tour(engine: hcp.AsyncEngine) -> int:
    s: hcp.Submitted = await engine.create_vm("demo", "typed-2", "ubuntu-24.04", "small", vcpus=2, networks=())
    count = 0
    logs: hcp.AsyncJobLogs = engine.job_logs(s)
    async for line in logs:
        message: str = line.message
        count += len(message) > 0
    job: hcp.Job = await engine.wait_job(s)
    vms: list[hcp.Vm] = await engine.list_vms("demo", name_prefix="typed", sort="name")
    assert job.succeeded and len(vms) == 1
    try:
        await engine.migrate_vm(vms[0], target_host="h")
    except hcp.InvalidSpec as e:
        assert e.field == "target_host"
    await engine.delete_vm("demo", vms[0], force=True, wait=True)
    return count


def remote(url: str) -> None:
    client: hcp.Client = hcp.Client(url, token=None)
    with client:
        client.list_vms("demo", tags={"team": "core"}, power="STOPPED")


async def async_remote(url: str) -> None:
    async with hcp.AsyncClient(url) as client:
        await client.list_vms("demo", state="ERROR", sort="-name")


def main() -> None:
    with hcp.Engine(None, principal="typed") as engine:
        rows = tour(engine)
        assert rows and rows[0]["name"] == "typed-1"

    async def run_async() -> int:
        async with hcp.AsyncEngine({"providers": [{"name": "sim", "kind": "sim", "hosts": [{"name": "h", "zone": "z"}]}], "zones": [{"name": "z"}], "catalog": {"images": [{"name": "ubuntu-24.04"}], "flavors": [{"name": "small", "vcpus": 1, "memory_mib": 512, "disk_gib": 1}]}}) as engine:
            return await async_tour(engine)

    assert asyncio.run(run_async()) > 0
    print("typed usage ok")


if __name__ == "__main__":
    main()
