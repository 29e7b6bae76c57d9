"""Adoption and release from Python (operators), embedded and remote, blocking and async.

The simulator keeps its hosts in a state file seeded with a VM HCP did not make; the tests
compare that VM in the file before and after, so a round trip that changed more than HCP's
mark fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

import hcp
from conftest import Service, _start_service, demo_config, run

STRAY = "sim-900"


def _hosts_with_a_stray(directory: Path) -> tuple[dict[str, Any], Path]:
    """The demo hosts file over a state file holding one running VM without HCP's mark."""
    hosts: dict[str, dict[str, Any]] = {
        name: {"name": name, "zone": zone, "vcpus": vcpus, "memory_mib": memory, "down": False, "vms": {}}
        for name, zone, vcpus, memory in (
            ("sim-a1", "zone-a", 32, 131072),
            ("sim-a2", "zone-a", 32, 131072),
            ("sim-b1", "zone-b", 16, 65536),
        )
    }
    hosts["sim-a1"]["vms"][STRAY] = {
        "native_id": STRAY,
        "name": "legacy-web",
        "power": "RUNNING",
        "resources": {"vcpus": 2, "memory_mib": 2048, "disk_gib": 20},
        "image": "unknown",
        "mark": None,
        "tags": {"owner": "web-team"},
        "has_user_data": False,
        "snapshots": [],
    }
    state_file = directory / "sim.json"
    state_file.write_text(json.dumps({"hosts": hosts, "next_id": 1000}))
    return demo_config(state_file=str(state_file)), state_file


def _stray_on_disk(state_file: Path) -> dict[str, Any]:
    vm: dict[str, Any] = json.loads(state_file.read_text())["hosts"]["sim-a1"]["vms"][STRAY]
    return vm


def _stray_in(inventory: list[hcp.InventoryVm]) -> hcp.InventoryVm:
    [stray] = [v for v in inventory if v.native_id == STRAY]
    return stray


def _adopt_round_trip(api: hcp.Engine | hcp.Client, state_file: Path) -> None:
    before = _stray_on_disk(state_file)
    stray = _stray_in(api.inventory_vms())
    assert isinstance(stray, hcp.InventoryVm)
    assert (stray.host, stray.name, stray.power, stray.adoptable) == ("sim-a1", "legacy-web", "RUNNING", True)
    assert stray.vm_id is None and stray.project is None
    assert stray.to_dict()["native_id"] == STRAY
    managed = [v for v in api.inventory_vms() if v.vm_id is not None]
    assert all(not v.adoptable for v in managed)

    # Refused before any job, naming what is wrong.
    with pytest.raises(hcp.NotFound):
        api.adopt_vm("demo", "sim-a1", "no-such-vm")
    with pytest.raises(hcp.InvalidSpec) as bad:
        api.adopt_vm("Not A Project", "sim-a1", STRAY)
    assert bad.value.field == "project"
    with pytest.raises(hcp.InvalidSpec) as bad:
        api.adopt_vm("demo", "sim-a1", STRAY, tags=["team"])  # type: ignore[arg-type]
    assert bad.value.field == "tags"
    assert _stray_on_disk(state_file) == before, "refusals change nothing"

    adopted = api.adopt_vm(
        "demo", "sim-a1", "legacy-web", name="web-legacy", tags={"team": "web"},
        idempotency_key="adopt-legacy-web", wait=True,
    )
    assert adopted.job is not None and adopted.job.succeeded, adopted.job
    assert adopted.job.operation == "adopt_vm"
    replay = api.adopt_vm("demo", "sim-a1", "legacy-web", name="web-legacy", tags={"team": "web"},
                          idempotency_key="adopt-legacy-web")
    assert (replay.vm_id, replay.job_id) == (adopted.vm_id, adopted.job_id)

    vm = api.get_vm("demo", adopted.vm_id)
    assert (vm.state, vm.name, vm.power, vm.vcpus, vm.memory_mib) == ("ACTIVE", "web-legacy", "RUNNING", 2, 2048)
    assert vm.tags == {"team": "web"}
    on_disk = _stray_on_disk(state_file)
    assert on_disk["mark"]["vm_id"] == adopted.vm_id and on_disk["mark"]["project"] == "demo"
    assert {**on_disk, "mark": None} == before, "adoption changed only the mark"

    with pytest.raises(hcp.Conflict):
        api.adopt_vm("demo", "sim-a1", STRAY, name="web-again")

    released = api.release_vm(vm, wait=True)
    assert released.job is not None and released.job.succeeded, released.job
    assert released.job.operation == "release_vm"
    with pytest.raises(hcp.NotFound):
        api.get_vm("demo", adopted.vm_id)
    assert _stray_on_disk(state_file) == before, "the round trip left the VM as it was"
    with pytest.raises(hcp.NotFound):
        api.release_vm(adopted.vm_id)


@pytest.fixture
def stray_engine(tmp_path: Path) -> Iterator[tuple[hcp.Engine, Path]]:
    config, state_file = _hosts_with_a_stray(tmp_path)
    with hcp.Engine(config) as engine:
        yield engine, state_file


@pytest.fixture(scope="module")
def stray_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    directory = tmp_path_factory.mktemp("stray-service")
    config, state_file = _hosts_with_a_stray(directory)
    for service in _start_service(directory, config):
        yield service, state_file


def test_engine_adopts_and_releases_an_unmanaged_vm(stray_engine: tuple[hcp.Engine, Path]) -> None:
    engine, state_file = stray_engine
    _adopt_round_trip(engine, state_file)


def test_client_adopts_and_releases_through_the_ops_api(stray_service: tuple[Service, Path]) -> None:
    service, state_file = stray_service
    with hcp.Client(service.url) as client:
        _adopt_round_trip(client, state_file)


def _async_round_trip(api: hcp.AsyncEngine | hcp.AsyncClient, state_file: Path) -> None:
    async def main() -> None:
        before = _stray_on_disk(state_file)
        assert _stray_in(await api.inventory_vms()).adoptable
        adopted = await api.adopt_vm("demo", "sim-a1", STRAY, wait=True)
        assert adopted.job is not None and adopted.job.succeeded, adopted.job
        vm = await api.get_vm("demo", adopted.vm_id)
        assert (vm.name, vm.tags) == ("legacy-web", {"owner": "web-team"}), "the hypervisor's name and tags"
        assert _stray_on_disk(state_file)["mark"]["vm_id"] == adopted.vm_id
        released = await api.release_vm(adopted.vm_id, wait=True)
        assert released.job is not None and released.job.succeeded, released.job
        with pytest.raises(hcp.NotFound):
            await api.get_vm("demo", adopted.vm_id)
        assert _stray_on_disk(state_file) == before
        await api.close()

    run(main())


def test_async_engine_adopts_and_releases(tmp_path: Path) -> None:
    config, state_file = _hosts_with_a_stray(tmp_path)
    _async_round_trip(hcp.AsyncEngine(config), state_file)


def test_async_client_adopts_and_releases(stray_service: tuple[Service, Path]) -> None:
    service, state_file = stray_service
    _async_round_trip(hcp.AsyncClient(service.url), state_file)
