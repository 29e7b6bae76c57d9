"""The type stubs: mypy --strict accepts a program using the whole API, and the stubs list
exactly what the native module has."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hcp
from hcp import _hcp

HERE = Path(__file__).resolve().parent
USAGE = HERE / "typecheck" / "usage.py"
STUB = Path(hcp.__file__).resolve().parent / "_hcp.pyi"


def _mypy_strict(*targets: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *targets],
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_usage_file_passes_mypy_strict() -> None:
    _mypy_strict(str(USAGE))


def test_installed_package_passes_mypy_strict() -> None:
    _mypy_strict("-p", "hcp")


def test_usage_file_runs() -> None:
    result = subprocess.run([sys.executable, str(USAGE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "typed usage ok" in result.stdout


def test_package_ships_py_typed_and_stubs() -> None:
    package = Path(hcp.__file__).resolve().parent
    assert (package / "py.typed").is_file()
    assert STUB.is_file()


def _stub_classes() -> dict[str, set[str]]:
    tree = ast.parse(STUB.read_text())
    classes: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = {
                item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
    return classes


def test_stubs_match_the_native_module_exactly() -> None:
    stubbed = _stub_classes()
    native = {name for name in dir(_hcp) if isinstance(getattr(_hcp, name), type)}
    assert set(stubbed) == native
    for name, members in stubbed.items():
        cls = getattr(_hcp, name)
        runtime_public = {m for m in dir(cls) if not m.startswith("_")}
        stub_public = {m for m in members if not m.startswith("_")}
        assert stub_public == runtime_public, f"{name}: stub and runtime differ"
        assert {m for m in members if m.startswith("__")} <= set(dir(cls)), f"{name}: stubbed dunder missing"
