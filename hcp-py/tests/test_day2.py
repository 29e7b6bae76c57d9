"""Day-2 operations from Python, embedded and remote, blocking and async."""

from __future__ import annotations

import uuid

import pytest

import hcp
from conftest import Service, demo_config, run


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


def _snapshot_round_trip(api: hcp.Engine | hcp.Client) -> None:
    s = api.create_vm("demo", unique("snap"), "ubuntu-24.04", "small", zone="zone-a", wait=True)
    assert api.list_snapshots("demo", s.vm_id) == []
    with pytest.raises(hcp.InvalidSpec) as bad:
        api.create_snapshot("demo", s.vm_id, "Bad Name")
    assert bad.value.field == "name"

    taken = api.create_snapshot("demo", s.vm_id, "warm", wait=True)
    assert taken.job is not None and taken.job.operation == "snapshot_vm" and taken.job.succeeded
    assert taken.snapshot_id is not None and taken.snapshot_id.startswith("snap-")
    with pytest.raises(hcp.Conflict) as dup:
        api.create_snapshot("demo", s.vm_id, "warm")
    assert dup.value.field == "name"

    [snap] = api.list_snapshots("demo", s.vm_id)
    assert isinstance(snap, hcp.Snapshot)
    assert (snap.id, snap.name, snap.memory) == (taken.snapshot_id, "warm", True)
    assert snap.to_dict()["vm_id"] == s.vm_id

    api.stop_vm("demo", s.vm_id, wait=True)
    reverted = api.revert_snapshot("demo", s.vm_id, snap, wait=True)
    assert reverted.memory_state_kept is True
    assert reverted.job is not None and reverted.job.operation == "revert_snapshot"
    assert api.get_vm("demo", s.vm_id).power == "RUNNING"

    with pytest.raises(hcp.NotFound) as unknown:
        api.delete_snapshot("demo", s.vm_id, "snap-nope")
    assert unknown.value.field == "snapshot_id"
    deleted = api.delete_snapshot("demo", s.vm_id, snap.id, wait=True)
    assert deleted.job is not None and deleted.job.operation == "delete_snapshot"
    assert api.list_snapshots("demo", s.vm_id) == []
    api.delete_vm("demo", s.vm_id, wait=True)


def test_engine_snapshots(engine: hcp.Engine) -> None:
    _snapshot_round_trip(engine)


def test_client_snapshots(service: Service) -> None:
    with hcp.Client(service.url) as client:
        _snapshot_round_trip(client)


def test_async_snapshots() -> None:
    async def main() -> None:
        async with hcp.AsyncEngine() as engine:
            s = await engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", zone="zone-a", wait=True)
            taken = await engine.create_snapshot("demo", s.vm_id, "first", wait=True)
            snaps = await engine.list_snapshots("demo", s.vm_id)
            assert [x.id for x in snaps] == [taken.snapshot_id]
            reverted = await engine.revert_snapshot("demo", s.vm_id, snaps[0], wait=True)
            assert reverted.memory_state_kept is True
            await engine.delete_snapshot("demo", s.vm_id, snaps[0], wait=True)
            assert await engine.list_snapshots("demo", s.vm_id) == []

    run(main())


def test_plan_resize_embedded_remote_and_async(engine: hcp.Engine, service: Service) -> None:
    with hcp.Client(service.url) as client:
        for api in (engine, client):
            s = api.create_vm("demo", unique("plan"), "ubuntu-24.04", "small", wait=True)
            plan = api.plan_resize("demo", s.vm_id, flavor="medium", disk_gib=5)
            assert [(p.field, p.impact) for p in plan] == [
                ("vcpus", "hot"),
                ("memory_mib", "hot"),
                ("disk_gib", "data_destructive"),
            ]
            assert (plan[0].from_value, plan[0].to_value) == (1, 2)
            assert "shrink" in plan[2].reason
            assert api.plan_resize("demo", s.vm_id, vcpus=1) == []
            with pytest.raises(hcp.InvalidSpec) as bad:
                api.plan_resize("demo", s.vm_id, flavor="huge")
            assert bad.value.field == "flavor"

    async def main() -> None:
        async with hcp.AsyncEngine() as aengine:
            s = await aengine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
            plan = await aengine.plan_resize("demo", s.vm_id, vcpus=4)
            assert [(p.field, p.impact) for p in plan] == [("vcpus", "hot")]

    run(main())


ZONE_A = ("sim-a1", "sim-a2")


def _vcpus_used(api: hcp.Engine | hcp.Client) -> dict[str, int]:
    return {h.name: h.vcpus_used for h in api.hosts() if h.name in ZONE_A}


def _migrate_round_trip(api: hcp.Engine | hcp.Client) -> None:
    before = _vcpus_used(api)
    s = api.create_vm("demo", unique("mover"), "ubuntu-24.04", "small", zone="zone-a", wait=True)
    after = _vcpus_used(api)
    src = next(h for h in ZONE_A if after[h] > before[h])
    dst = "sim-a2" if src == "sim-a1" else "sim-a1"

    for target, words in ((src, "already runs"), ("sim-b1", "zone"), ("sim-zz", "not a host")):
        with pytest.raises(hcp.InvalidSpec) as bad:
            api.migrate_vm(s.vm_id, target_host=target)
        assert bad.value.field == "target_host", bad.value
        assert words in str(bad.value)
        assert bad.value.job_id is None, "refused before any job"

    key = unique("move")
    moved = api.migrate_vm(s.vm_id, target_host=dst, idempotency_key=key, wait=True)
    assert moved.job is not None and moved.job.succeeded, moved.job
    assert moved.job.operation == "migrate_vm"
    assert _vcpus_used(api) == {src: before[src], dst: before[dst] + 1}
    replay = api.migrate_vm(s.vm_id, target_host=dst, idempotency_key=key)
    assert replay.job_id == moved.job_id

    # Without a target, HCP picks the zone's other host: back where the VM came from.
    back = api.migrate_vm(api.get_vm("demo", s.vm_id), wait=True)
    assert back.job is not None and back.job.succeeded
    assert _vcpus_used(api) == after

    api.stop_vm("demo", s.vm_id, wait=True)
    with pytest.raises(hcp.Conflict) as stopped:
        api.migrate_vm(s.vm_id)
    assert stopped.value.code == "VM_STATE_CONFLICT"
    assert "allow_cold" in str(stopped.value)
    cold = api.migrate_vm(s.vm_id, allow_cold=True, wait=True)
    assert cold.job is not None and cold.job.succeeded
    assert _vcpus_used(api) == {src: before[src], dst: before[dst] + 1}, "moved while stopped"
    assert api.get_vm("demo", s.vm_id).power == "STOPPED"
    api.delete_vm("demo", s.vm_id, wait=True)


def test_engine_migrates_a_vm_between_the_zones_hosts(engine: hcp.Engine) -> None:
    _migrate_round_trip(engine)


def test_client_migrates_a_vm_through_the_ops_api(service: Service) -> None:
    with hcp.Client(service.url) as client:
        _migrate_round_trip(client)


def test_a_host_without_live_migration_moves_a_running_vm_cold_only_when_allowed() -> None:
    config = demo_config()
    config["zones"][0]["limits"] = {"disable": ["live_migration"]}
    with hcp.Engine(config) as engine:
        s = engine.create_vm("demo", "fixed", "ubuntu-24.04", "small", zone="zone-a", wait=True)
        with pytest.raises(hcp.FeatureNotSupported) as live:
            engine.migrate_vm(s.vm_id)
        assert "live_migration" in str(live.value)
        assert "allow_cold" in str(live.value)
        cold = engine.migrate_vm(s.vm_id, allow_cold=True, wait=True)
        assert cold.job is not None and cold.job.succeeded
        assert engine.get_vm("demo", s.vm_id).power == "RUNNING", "started again on the target"


def test_a_host_that_cannot_move_stopped_vms_refuses_a_cold_move() -> None:
    config = demo_config()
    config["zones"][0]["limits"] = {"disable": ["live_migration", "cold_migration"]}
    with hcp.Engine(config) as engine:
        s = engine.create_vm("demo", "fixed", "ubuntu-24.04", "small", zone="zone-a", wait=True)
        with pytest.raises(hcp.FeatureNotSupported) as cold:
            engine.migrate_vm(s.vm_id, allow_cold=True)
        assert "cold_migration" in str(cold.value)


def test_async_engine_and_client_migrate(service: Service) -> None:
    async def main() -> None:
        async with hcp.AsyncEngine() as engine:
            s = await engine.create_vm("demo", "async-mover", "ubuntu-24.04", "small", zone="zone-a", wait=True)
            moved = await engine.migrate_vm(s.vm_id, wait=True)
            assert moved.job is not None and moved.job.succeeded
            with pytest.raises(hcp.InvalidSpec):
                await engine.migrate_vm(s.vm_id, target_host="sim-b1")
        async with hcp.AsyncClient(service.url) as client:
            s = await client.create_vm("demo", unique("amover"), "ubuntu-24.04", "small", zone="zone-a", wait=True)
            moved = await client.migrate_vm(s.vm_id, wait=True)
            assert moved.job is not None and moved.job.succeeded
            await client.delete_vm("demo", s.vm_id, wait=True)

    run(main())


def test_resize_embedded_remote_and_async(engine: hcp.Engine, service: Service) -> None:
    with hcp.Client(service.url) as client:
        for api in (engine, client):
            s = api.create_vm("demo", unique("grow"), "ubuntu-24.04", "small", wait=True)
            done = api.resize_vm(
                "demo", s.vm_id, vcpus=2, memory_mib=2048, disk_gib=20, allow=["hot", "reboot"], wait=True
            )
            assert done.job is not None and done.job.succeeded, done.job
            assert done.job.operation == "resize_vm"
            vm = api.get_vm("demo", s.vm_id)
            assert (vm.vcpus, vm.memory_mib, vm.disk_gib) == (2, 2048, 20)
            assert vm.power == "RUNNING"
            # A disk never shrinks, whatever is allowed; refused before any job.
            with pytest.raises(hcp.Conflict) as shrink:
                api.resize_vm("demo", s.vm_id, disk_gib=10, allow=["hot", "reboot", "power_off"])
            assert shrink.value.code == "RESIZE_NOT_ALLOWED"
            assert shrink.value.field == "disk_gib"
            assert shrink.value.job_id is None
            with pytest.raises(hcp.InvalidSpec) as same:
                api.resize_vm("demo", s.vm_id, vcpus=2)
            assert same.value.field == "resize"
            with pytest.raises(hcp.InvalidSpec) as bad:
                api.resize_vm("demo", s.vm_id, vcpus=3, allow=["sometimes"])
            assert bad.value.field == "allow"
            api.delete_vm("demo", s.vm_id, force=True, wait=True)

    async def main() -> None:
        async with hcp.AsyncEngine() as aengine:
            s = await aengine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
            done = await aengine.resize_vm("demo", s.vm_id, flavor="medium", wait=True)
            assert done.job is not None and done.job.succeeded
            vm = await aengine.get_vm("demo", s.vm_id)
            assert (vm.flavor, vm.vcpus, vm.disk_gib) == ("medium", 2, 40)

    run(main())
