"""``create_vm`` takes the HTTP API's create fields, in all four shells, with hcp's own errors.

Every scenario runs against ``Engine``, ``AsyncEngine``, ``Client`` and ``AsyncClient`` (the
clients against a real ``hcp serve`` on the same catalog), so the four cannot drift apart.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from typing import Any, AsyncIterator, Iterator

import pytest

import hcp
from conftest import Service, _start_service, demo_config, run

#: The demo catalog with a second network, so attachment order is visible.
NETS: dict[str, Any] = demo_config()
NETS["catalog"]["networks"].append({"name": "storage", "description": "The storage network"})

MODES = ["engine", "async-engine", "client", "async-client"]


@pytest.fixture(scope="module")
def nets_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real HCP service on the two-network catalog."""
    yield from _start_service(tmp_path_factory.mktemp("nets-service"), copy.deepcopy(NETS))


class _Awaitable:
    """Gives a blocking Engine or Client the coroutine methods of its async twin."""

    def __init__(self, api: hcp.Engine | hcp.Client) -> None:
        self.api = api

    async def create_vm(self, *args: Any, **kwargs: Any) -> hcp.Submitted:
        return self.api.create_vm(*args, **kwargs)

    async def get_vm(self, project: str, vm: str) -> hcp.Vm:
        return self.api.get_vm(project, vm)

    async def list_vms(self, project: str) -> list[hcp.Vm]:
        return self.api.list_vms(project)

    async def delete_vm(self, project: str, vm: str, **kwargs: Any) -> hcp.Submitted:
        return self.api.delete_vm(project, vm, **kwargs)


@contextlib.asynccontextmanager
async def opened(mode: str, url: str) -> AsyncIterator[Any]:
    """Opens the shell `mode` names; embedded ones on the same catalog as the service."""
    if mode == "engine":
        with hcp.Engine(copy.deepcopy(NETS)) as engine:
            yield _Awaitable(engine)
    elif mode == "client":
        with hcp.Client(url) as client:
            yield _Awaitable(client)
    elif mode == "async-engine":
        async with hcp.AsyncEngine(copy.deepcopy(NETS)) as aengine:
            yield aengine
    else:
        async with hcp.AsyncClient(url) as aclient:
            yield aclient


def unique(prefix: str) -> str:
    """The service lives for the whole module: give every VM its own name."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("mode", MODES)
def test_explicit_size_networks_zone_user_data_and_tags(mode: str, nets_service: Service) -> None:
    async def main() -> None:
        async with opened(mode, nets_service.url) as api:
            name = unique("db")
            s = await api.create_vm(
                "demo",
                name,
                "ubuntu-24.04",
                vcpus=3,
                memory_mib=3072,
                disk_gib=12,
                networks=["default", {"network": "storage"}],
                zone="zone-a",
                user_data="#cloud-config\n",
                tags={"team": "infra"},
                wait=True,
            )
            assert s.job is not None and s.job.state == "SUCCEEDED"
            vm = await api.get_vm("demo", s.vm_id)
            assert (vm.name, vm.flavor, vm.vcpus, vm.memory_mib, vm.disk_gib) == (name, None, 3, 3072, 12)
            assert (vm.networks, vm.zone, vm.tags) == (["default", "storage"], "zone-a", {"team": "infra"})
            await api.delete_vm("demo", s.vm_id, force=True, wait=True)

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_explicit_values_override_the_flavor(mode: str, nets_service: Service) -> None:
    async def main() -> None:
        async with opened(mode, nets_service.url) as api:
            s = await api.create_vm("demo", unique("web"), "ubuntu-24.04", "small", vcpus=2, disk_gib=15, wait=True)
            vm = await api.get_vm("demo", s.vm_id)
            # `small` is 1 vCPU, 1024 MiB, 10 GiB: memory comes from the flavor.
            assert (vm.flavor, vm.vcpus, vm.memory_mib, vm.disk_gib) == ("small", 2, 1024, 15)
            await api.delete_vm("demo", s.vm_id, force=True, wait=True)

    run(main())


#: Arguments of the wrong type, and the field the error must name.
WRONG_TYPES: list[tuple[dict[str, Any], str]] = [
    ({"tags": "x=y"}, "tags"),
    ({"tags": ["team", "infra"]}, "tags"),
    ({"tags": {"team": 1}}, "tags.team"),
    ({"tags": {1: "infra"}}, "tags"),
    ({"networks": "default"}, "networks"),
    ({"networks": {"network": "default"}}, "networks"),
    ({"networks": [1]}, "networks[0]"),
    ({"networks": ["default", {"network": "default", "vlan": 10}]}, "networks[1]"),
    ({"networks": [{}]}, "networks[0].network"),
    ({"networks": [{"network": 5}]}, "networks[0].network"),
    ({"networks": ["default"] * 17}, "networks"),
    ({"vcpus": "2"}, "vcpus"),
    ({"vcpus": True}, "vcpus"),
    ({"vcpus": 2.0}, "vcpus"),
    ({"vcpus": -1}, "vcpus"),
    ({"vcpus": 2**40}, "vcpus"),
    ({"memory_mib": 2**70}, "memory_mib"),
    ({"disk_gib": "10"}, "disk_gib"),
    ({"zone": 1}, "zone"),
    ({"user_data": b"#cloud-config"}, "user_data"),
    ({"flavor": 1}, "flavor"),
    ({"idempotency_key": 5}, "idempotency_key"),
    ({"wait": "yes"}, "wait"),
    ({"wait": 1}, "wait"),
    ({"timeout": "30"}, "timeout"),
    ({"timeout": True}, "timeout"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kwargs", "field"), WRONG_TYPES, ids=lambda v: repr(v) if isinstance(v, dict) else v)
def test_wrong_types_raise_invalid_spec_naming_the_field(
    mode: str, kwargs: dict[str, Any], field: str, nets_service: Service
) -> None:
    async def main() -> None:
        async with opened(mode, nets_service.url) as api:
            name = unique("bad")
            args = {"flavor": "small", **kwargs}
            flavor = args.pop("flavor")
            with pytest.raises(hcp.InvalidSpec) as caught:
                await api.create_vm("demo", name, "ubuntu-24.04", flavor, **args)
            assert type(caught.value) is hcp.InvalidSpec
            assert caught.value.field == field
            assert caught.value.code == "INVALID_SPEC"
            assert str(caught.value).startswith(f"{field}: ")
            assert name not in [vm.name for vm in await api.list_vms("demo")]

    run(main())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("position", "field"), [(0, "project"), (1, "name"), (2, "image")], ids=["project", "name", "image"]
)
def test_wrong_types_of_the_positional_arguments(mode: str, position: int, field: str, nets_service: Service) -> None:
    async def main() -> None:
        async with opened(mode, nets_service.url) as api:
            args: list[Any] = ["demo", unique("bad"), "ubuntu-24.04", "small"]
            args[position] = 7
            with pytest.raises(hcp.InvalidSpec) as caught:
                await api.create_vm(*args)
            assert caught.value.field == field
            assert "must be a string, not int" in str(caught.value)

    run(main())


#: Values of the right type that the engine (or the service) refuses, naming the same field in
#: every mode.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"flavor": None}, "vcpus"),
    ({"flavor": None, "vcpus": 1, "memory_mib": 1024}, "disk_gib"),
    ({"vcpus": 0}, "vcpus"),
    ({"memory_mib": 8}, "memory_mib"),
    ({"tags": {"bad key": "x"}}, "tags.bad key"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kwargs", "field"), REFUSED, ids=lambda v: repr(v) if isinstance(v, dict) else v)
def test_values_out_of_range_are_refused_alike(
    mode: str, kwargs: dict[str, Any], field: str, nets_service: Service
) -> None:
    async def main() -> None:
        async with opened(mode, nets_service.url) as api:
            args = {"flavor": "small", **kwargs}
            flavor = args.pop("flavor")
            with pytest.raises(hcp.InvalidSpec) as caught:
                await api.create_vm("demo", unique("bad"), "ubuntu-24.04", flavor, **args)
            assert caught.value.field == field

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_an_unknown_network_is_refused_before_any_job(mode: str, nets_service: Service) -> None:
    async def main() -> None:
        async with opened(mode, nets_service.url) as api:
            name = unique("web")
            with pytest.raises(hcp.HcpError) as caught:
                await api.create_vm("demo", name, "ubuntu-24.04", "small", networks=["default", "nope"])
            assert "nope" in str(caught.value)
            assert name not in [vm.name for vm in await api.list_vms("demo")]

    run(main())


def test_an_integer_too_large_for_the_field_names_the_allowed_range(engine: hcp.Engine) -> None:
    with pytest.raises(hcp.InvalidSpec, match=r"^vcpus: 1099511627776 is out of range; allowed: 1 to 4096$"):
        engine.create_vm("demo", "big", "ubuntu-24.04", "small", vcpus=2**40)
    with pytest.raises(hcp.InvalidSpec, match=r"allowed: 16 MiB to 67108864 MiB$"):
        engine.create_vm("demo", "big", "ubuntu-24.04", "small", memory_mib=2**70)
    with pytest.raises(hcp.InvalidSpec, match=r"^disk_gib: -1 is out of range; allowed: 1 GiB to 1048576 GiB$"):
        engine.create_vm("demo", "big", "ubuntu-24.04", "small", disk_gib=-1)
    assert engine.list_vms("demo") == []
