"""The coroutine API: AsyncEngine with await, async for over logs, gather, errors, timeouts."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import hcp
from conftest import SLOW_CREATE, demo_config, run


def test_async_methods_are_coroutines_with_the_same_names() -> None:
    sync_methods = {n for n in dir(hcp.Engine) if not n.startswith("_")}
    async_methods = {n for n in dir(hcp.AsyncEngine) if not n.startswith("_")}
    assert sync_methods == async_methods
    assert sync_methods == {n for n in dir(hcp.Client) if not n.startswith("_")}
    assert async_methods == {n for n in dir(hcp.AsyncClient) if not n.startswith("_")}
    for name in async_methods - {"job_logs", "closed"}:
        assert inspect.iscoroutinefunction(getattr(hcp.AsyncEngine, name)), name


def test_async_lifecycle_and_logs() -> None:
    async def main() -> None:
        async with hcp.AsyncEngine() as engine:
            s = await engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
            logs = engine.job_logs(s)
            lines = [line async for line in logs]
            assert lines and [line.seq for line in lines] == list(range(1, len(lines) + 1))
            assert logs.job is not None and logs.job.state == "SUCCEEDED"
            vm = await engine.get_vm("demo", s.vm_id)
            assert vm.state == "ACTIVE"
            assert [v.id for v in await engine.list_vms("demo")] == [s.vm_id]
            stop = await engine.stop_vm("demo", vm, wait=True)
            assert stop.job is not None and stop.job.succeeded
            await engine.start_vm("demo", vm, wait=True)
            await engine.reboot_vm("demo", vm, wait=True)
            console = await engine.console("demo", vm)
            assert console.kind == "vnc"
            assert (await engine.get_job(s)).state == "SUCCEEDED"
            assert (await engine.wait_job(s.job_id)).state == "SUCCEEDED"
            assert len(await engine.hosts()) == 3
            assert [z.name for z in (await engine.catalog()).zones] == ["zone-a", "zone-b"]
            assert not (await engine.capabilities("zone-b")).cloud_init
            await engine.delete_vm("demo", vm, force=True, wait=True)
            assert await engine.list_vms("demo") == []
        assert engine.closed

    run(main())


def test_async_calls_run_concurrently() -> None:
    async def main() -> None:
        async with hcp.AsyncEngine(demo_config(op_latency={"create_vm": "200ms"})) as engine:
            submitted = await asyncio.gather(
                *(engine.create_vm("demo", f"web-{i}", "ubuntu-24.04", "small", wait=True) for i in range(8))
            )
            assert all(s.job is not None and s.job.succeeded for s in submitted)
            assert len({s.vm_id for s in submitted}) == 8
            assert sorted(vm.name for vm in await engine.list_vms("demo")) == [f"web-{i}" for i in range(8)]

    run(main())


def test_async_errors_map_to_the_same_classes() -> None:
    async def main() -> None:
        async with hcp.AsyncEngine(SLOW_CREATE) as engine:
            with pytest.raises(hcp.NotFound):
                await engine.get_vm("demo", "vm-nope")
            with pytest.raises(hcp.InvalidSpec) as e:
                await engine.create_vm("demo", "", "ubuntu-24.04", "small")
            assert e.value.field == "name"
            with pytest.raises(hcp.FeatureNotSupported):
                await engine.create_vm("demo", "a", "ubuntu-24.04", "small", zone="zone-b", user_data="x")
            s = await engine.create_vm("demo", "slow", "ubuntu-24.04", "small")
            with pytest.raises(hcp.Timeout) as t:
                await engine.wait_job(s, timeout=0.2)
            assert t.value.job_id == s.job_id
            with pytest.raises(hcp.NotFound):
                async for _ in engine.job_logs("job-nope"):
                    pass

    run(main())


def test_cancelling_an_awaited_wait_leaves_the_job_running() -> None:
    async def main() -> None:
        async with hcp.AsyncEngine(SLOW_CREATE) as engine:
            s = await engine.create_vm("demo", "slow", "ubuntu-24.04", "small")
            task = asyncio.ensure_future(engine.wait_job(s))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await engine.get_job(s)).state in ("PENDING", "RUNNING")

    run(main())


def test_a_failed_job_raises_job_failed_when_awaited() -> None:
    async def main() -> None:
        failing = demo_config(engine={"retry": {"max_attempts": 1}}, failure_rate=1.0)
        async with hcp.AsyncEngine(failing) as engine:
            with pytest.raises(hcp.JobFailed) as e:
                await engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
            assert e.value.code == "PROVIDER_UNAVAILABLE" and e.value.job_id is not None

    run(main())
