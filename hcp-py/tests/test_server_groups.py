"""Server groups from Python, embedded and remote, blocking and async: a hard anti-affinity
group in the demo's zone-a (two hosts) takes two VMs and refuses the third before any job."""

from __future__ import annotations

import uuid

import pytest

import hcp
from conftest import Service, run


def _round_trip(api: hcp.Engine | hcp.Client) -> None:
    # The service is shared by the session's tests: names of our own.
    web = f"web-{uuid.uuid4().hex[:8]}"
    g = api.create_server_group("demo", web, "anti-affinity")
    assert g.id.startswith("sg-")
    assert (g.policy, g.strength, g.members) == ("anti-affinity", "hard", [])
    with pytest.raises(hcp.Conflict) as taken:
        api.create_server_group("demo", web, "affinity")
    assert taken.value.field == "name"
    with pytest.raises(hcp.InvalidSpec) as bad:
        api.create_server_group("demo", "other", "anti_affinity")
    assert bad.value.field == "policy"

    a = api.create_vm("demo", f"{web}-1", "ubuntu-24.04", "small", zone="zone-a", server_group=g, wait=True)
    b = api.create_vm("demo", f"{web}-2", "ubuntu-24.04", "small", zone="zone-a", server_group=g.id, wait=True)
    assert api.get_vm("demo", a.vm_id).server_group == g.id
    with pytest.raises(hcp.Conflict) as refused:
        api.create_vm("demo", f"{web}-3", "ubuntu-24.04", "small", zone="zone-a", server_group=g)
    assert refused.value.code == "SERVER_GROUP_POLICY"
    assert refused.value.field == "server_group"
    assert "hard anti-affinity" in str(refused.value)
    assert refused.value.job_id is None, "refused before any job"

    shown = api.get_server_group("demo", g)
    assert shown.members == sorted([a.vm_id, b.vm_id])
    assert g.id in [x.id for x in api.list_server_groups("demo")]
    with pytest.raises(hcp.Conflict) as busy:
        api.delete_server_group("demo", g)
    assert busy.value.code == "SERVER_GROUP_NOT_EMPTY"
    for s in (a, b):
        api.delete_vm("demo", s.vm_id, force=True, wait=True)
    api.delete_server_group("demo", g.id)
    with pytest.raises(hcp.NotFound):
        api.get_server_group("demo", g.id)


def test_engine_server_groups(engine: hcp.Engine) -> None:
    _round_trip(engine)


def test_client_server_groups(service: Service) -> None:
    with hcp.Client(service.url) as client:
        _round_trip(client)


def test_async_engine_server_groups() -> None:
    async def main() -> None:
        async with hcp.AsyncEngine() as engine:
            g = await engine.create_server_group("demo", "db", "affinity", strength="soft")
            assert g.strength == "soft"
            s = await engine.create_vm("demo", "db-1", "ubuntu-24.04", "small", server_group=g, wait=True)
            shown = await engine.get_server_group("demo", g.id)
            assert shown.members == [s.vm_id]
            assert [x.name for x in await engine.list_server_groups("demo")] == ["db"]
            with pytest.raises(hcp.Conflict):
                await engine.delete_server_group("demo", g)
            await engine.delete_vm("demo", s.vm_id, force=True, wait=True)
            await engine.delete_server_group("demo", g)
            assert await engine.list_server_groups("demo") == []

    run(main())


def test_async_client_server_groups(service: Service) -> None:
    async def main() -> None:
        async with hcp.AsyncClient(service.url) as client:
            name = f"async-{uuid.uuid4().hex[:8]}"
            g = await client.create_server_group("demo", name, "anti-affinity")
            assert (await client.get_server_group("demo", g)).name == name
            await client.delete_server_group("demo", g)
            with pytest.raises(hcp.NotFound):
                await client.get_server_group("demo", g.id)

    run(main())
