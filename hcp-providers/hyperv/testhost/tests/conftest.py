"""Fixtures: a test host on a free port, and helpers that render HCP's wrapper the way the Rust
provider does (the wrapper text with the script path or deploy script, params on stdin)."""

from __future__ import annotations

import base64
import json
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hcp_winrm_testhost  # noqa: E402
from hcp_winrm_testhost.scripts import PLACEHOLDER, scripts_dir  # noqa: E402

USER = "hcp"
PASSWORD = "pw-ü-'quoted'"


@pytest.fixture(scope="session")
def host():
    listeners, servers = hcp_winrm_testhost.start(1, USER, PASSWORD, copy_seconds=0.1)
    yield listeners[0]
    for s in servers:
        s.shutdown()


def wrapper(script: str) -> str:
    text = (scripts_dir() / "_wrapper.ps1").read_text(encoding="utf-8")
    return text.replace(PLACEHOLDER, script)


def deploy_text(name: str) -> str:
    body = (scripts_dir() / "deploy" / f"{name}.ps1").read_text(encoding="utf-8")
    return wrapper("$HcpScript = {\n" + body + "\n}")


def script_text(path: str) -> str:
    return wrapper(f"$HcpScript = '{path}'")


def encode_command(text: str) -> str:
    return base64.b64encode(text.encode("utf-16-le")).decode()


def param_doc(params: dict) -> bytes:
    return base64.b64encode(json.dumps(params).encode()) + b"\r\n"


def control(host, path: str, payload=None):
    url = f"http://127.0.0.1:{host.control_port}/hcp-testhost/{host.name}/{path}"
    data = None if payload is None else json.dumps(payload).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data else "GET")) as r:
        return json.loads(r.read())


SCRIPT_DIR = "C:\\ProgramData\\HCP\\scripts"


def deploy(run) -> str:
    """Deploys the shipped scripts the way the Rust provider does, through `run(text, params)`;
    returns the version directory name used."""
    import hashlib

    files = {}
    for p in sorted(scripts_dir().iterdir()):
        if p.suffix in (".ps1", ".psm1") and not p.name.startswith("_"):
            files[p.name] = p.read_bytes()
    version = hashlib.sha256(b"".join(n.encode() + d for n, d in files.items())).hexdigest()[:16]
    staging = f"{SCRIPT_DIR}\\.staging-{version}"
    run(deploy_text("Clear-HcpStaging"), {"StagingDir": staging})
    for name, data in files.items():
        part = f"{staging}\\{name}.part"
        for off in range(0, len(data), 32768):
            chunk = data[off:off + 32768]
            run(deploy_text("Write-HcpFileChunk"), {"Path": part, "Offset": off, "Data": base64.b64encode(chunk).decode()})
        run(deploy_text("Complete-HcpFile"), {"PartPath": part, "Path": f"{staging}\\{name}", "Sha256": hashlib.sha256(data).hexdigest()})
    run(deploy_text("Publish-HcpDeployment"), {"ScriptDir": SCRIPT_DIR, "Version": version, "StagingDir": staging})
    return version
