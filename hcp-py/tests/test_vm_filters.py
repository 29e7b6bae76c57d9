"""list_vms filters and sort orders: embedded Engine and AsyncEngine, remote Client and AsyncClient."""

from __future__ import annotations

import uuid
from typing import Union

import pytest

import hcp
from conftest import Service, run

Api = Union[hcp.Engine, hcp.Client]


def populate(api: Api, prefix: str) -> None:
    """Creates four VMs named ``prefix-…`` and stops one."""
    for name, tags in [
        ("web-2", {"env": "prod", "tier": "web"}),
        ("db-1", {"env": "prod", "tier": "db"}),
        ("web-1", {"env": "dev", "tier": "web"}),
        ("web-3", {"env": "prod", "tier": "web"}),
    ]:
        api.create_vm("demo", f"{prefix}-{name}", "ubuntu-24.04", "small", tags=tags, wait=True)
    vm = next(v for v in api.list_vms("demo", name_prefix=f"{prefix}-web-3"))
    api.stop_vm("demo", vm, wait=True)


def check(api: Api, prefix: str) -> None:
    def names(**kw: object) -> list[str]:
        return [v.name.removeprefix(prefix + "-") for v in api.list_vms("demo", name_prefix=kw.pop("p", prefix), **kw)]  # type: ignore[arg-type]

    assert names(sort="name") == ["db-1", "web-1", "web-2", "web-3"]
    assert names(sort="-name") == ["web-3", "web-2", "web-1", "db-1"]
    assert names(sort="created_at") == ["web-2", "db-1", "web-1", "web-3"]
    assert names(sort="-created_at") == ["web-3", "web-1", "db-1", "web-2"]
    assert names(p=f"{prefix}-web", tags={"env": "prod", "tier": "web"}, sort="name") == ["web-2", "web-3"]
    assert names(power="stopped") == ["web-3"]
    assert names(state="ACTIVE", power="RUNNING", sort="-name") == ["web-2", "web-1", "db-1"]
    assert names(tags={"tier": "db", "env": "dev"}) == []

    for kw, field, allowed in [
        ({"state": "on"}, "state", "PENDING, ACTIVE, ERROR, DELETED"),
        ({"power": "up"}, "power", "RUNNING, STOPPED, PAUSED, UNKNOWN"),
        ({"sort": "size"}, "sort", "name, -name, created_at, -created_at"),
        ({"tags": "env=prod"}, "tags", "mapping"),
        ({"name_prefix": 5}, "name_prefix", "str"),
    ]:
        with pytest.raises(hcp.InvalidSpec) as e:
            api.list_vms("demo", **kw)  # type: ignore[arg-type]
        assert field in str(e.value) and allowed in str(e.value), str(e.value)


def test_engine_list_vms_filters_and_sorts(engine: hcp.Engine) -> None:
    populate(engine, "f")
    check(engine, "f")


def test_remote_list_vms_filters_and_sorts_like_the_engine(service: Service) -> None:
    prefix = f"f{uuid.uuid4().hex[:6]}"
    with hcp.Client(service.url) as client:
        populate(client, prefix)
        check(client, prefix)


def test_async_engine_and_remote_list_vms_take_the_same_filters(service: Service) -> None:
    prefix = f"a{uuid.uuid4().hex[:6]}"

    async def go() -> None:
        with hcp.Client(service.url) as client:
            populate(client, prefix)
        async with hcp.AsyncClient(service.url) as ac:
            vms = await ac.list_vms("demo", name_prefix=prefix, tags={"tier": "web"}, sort="-name")
            assert [v.name for v in vms] == [f"{prefix}-web-3", f"{prefix}-web-2", f"{prefix}-web-1"]
            with pytest.raises(hcp.InvalidSpec, match="sort"):
                await ac.list_vms("demo", sort="size")
        async with hcp.AsyncEngine() as ae:
            await ae.create_vm("demo", "x-1", "ubuntu-24.04", "small", tags={"k": "v"}, wait=True)
            await ae.create_vm("demo", "y-1", "ubuntu-24.04", "small", wait=True)
            assert [v.name for v in await ae.list_vms("demo", tags={"k": "v"})] == ["x-1"]
            assert [v.name for v in await ae.list_vms("demo", sort="-name")] == ["y-1", "x-1"]

    run(go())
