"""Shared fixtures: demo-like configurations, embedded engines, and a real HCP service.

The remote-client tests need a running ``hcp serve``. :func:`serve_command` finds one and fails
loudly (never skips) when none can be had: ``$HCP_SERVE`` (a command line that accepts
``--listen ADDR``; ``scripts/test-python.sh`` sets it), else the workspace's ``hcp serve``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Iterator, TypeVar

import pytest

import hcp

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parent.parent

T = TypeVar("T")

#: The simulator's demo hosts file (hcp-providers/sim/src/demo.yaml) as a dict.
DEMO: dict[str, Any] = {
    "providers": [
        {
            "name": "sim",
            "kind": "sim",
            "settings": {"seed": 42, "images": ["ubuntu-24.04", "windows-2022"]},
            "hosts": [
                {"name": "sim-a1", "zone": "zone-a", "vcpus": 32, "memory_mib": 131072},
                {"name": "sim-a2", "zone": "zone-a", "vcpus": 32, "memory_mib": 131072},
                {"name": "sim-b1", "zone": "zone-b", "vcpus": 16, "memory_mib": 65536},
            ],
        }
    ],
    "zones": [
        {"name": "zone-a", "description": "Two hosts with every capability"},
        {
            "name": "zone-b",
            "description": "One host without cloud-init, snapshots or GPU passthrough",
            "limits": {"disable": ["cloud_init", "snapshot", "gpu_passthrough"]},
        },
    ],
    "projects": [{"name": "demo", "description": "The demo project"}],
    "catalog": {
        "images": [
            {"name": "ubuntu-24.04", "os": "linux", "description": "Ubuntu 24.04 LTS", "min_disk_gib": 5},
            {"name": "windows-2022", "os": "windows", "description": "Windows Server 2022", "min_disk_gib": 32},
        ],
        "flavors": [
            {"name": "small", "vcpus": 1, "memory_mib": 1024, "disk_gib": 10},
            {"name": "medium", "vcpus": 2, "memory_mib": 4096, "disk_gib": 40},
        ],
        "networks": [{"name": "default", "description": "The default tenant network"}],
    },
}


def demo_config(engine: dict[str, Any] | None = None, **sim_settings: Any) -> dict[str, Any]:
    """Returns the demo hosts file with extra simulator settings and engine settings."""
    config = copy.deepcopy(DEMO)
    config["providers"][0]["settings"].update(sim_settings)
    if engine:
        config["engine"] = engine
    return config


#: A demo whose create jobs take a minute: for timeouts and interrupts.
SLOW_CREATE = demo_config(op_latency={"create_vm": "60s"})


def run(coro: Awaitable[T]) -> T:
    """Runs a coroutine on a fresh event loop."""

    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def engine() -> Iterator[hcp.Engine]:
    """A fresh embedded engine on the demo catalog."""
    with hcp.Engine() as e:
        yield e


@pytest.fixture
def slow_engine() -> Iterator[hcp.Engine]:
    """An embedded engine whose create jobs take a minute."""
    with hcp.Engine(SLOW_CREATE) as e:
        yield e


def _target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))


def _cargo_build(*args: str) -> None:
    result = subprocess.run(
        ["cargo", "build", "--quiet", *args], cwd=WORKSPACE, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"cargo build {' '.join(args)} failed:\n{result.stderr}")


def serve_command() -> list[str]:
    """Returns a command line that serves HCP's API when given ``--listen ADDR``."""
    if os.environ.get("HCP_SERVE"):
        return shlex.split(os.environ["HCP_SERVE"])
    _cargo_build("-p", "hcp-cli", "--bin", "hcp")
    return [str(_target_dir() / "debug" / "hcp"), "serve"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """A running HCP service."""

    def __init__(self, url: str, process: subprocess.Popen[str], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log


def _start_service(tmp: Path, config: dict[str, Any] | None) -> Iterator[Service]:
    command = serve_command()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [*command, "--listen", f"127.0.0.1:{port}"]
    if config is not None:
        hosts_file = tmp / "hosts.yaml"
        hosts_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        args += ["--config", str(hosts_file)]
    log = tmp / "service.log"
    with open(log, "w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not become ready at {url}:\n{log.read_text()}")
            time.sleep(0.05)
        sys.stderr.write(f"\nHCP service for the remote tests: {' '.join(command)} at {url}\n")
        yield Service(url, process, log)
    finally:
        # A graceful stop waits for open log streams; the tests need none of that.
        process.terminate()
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real HCP service on a free loopback port, on the simulator's demo catalog."""
    yield from _start_service(tmp_path_factory.mktemp("service"), None)


@pytest.fixture(scope="session")
def slow_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real HCP service whose create jobs take a minute."""
    yield from _start_service(tmp_path_factory.mktemp("slow-service"), SLOW_CREATE)


@pytest.fixture(scope="session")
def failing_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real HCP service whose every VM operation fails (no retries): for failed jobs."""
    config = demo_config(engine={"retry": {"max_attempts": 1}}, failure_rate=1.0)
    yield from _start_service(tmp_path_factory.mktemp("failing-service"), config)
