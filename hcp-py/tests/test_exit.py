"""The interpreter exits cleanly while HCP's runtime threads are handing results to asyncio.

An awaitable's result reaches its event loop from a runtime thread that takes the GIL. If that
happens while the interpreter finalizes, CPython kills the thread and the process aborts
("Fatal Python error: PyGILState_Release"). Each child below ends its program while hundreds of
hand-overs are in flight or still to come; every run must exit with status 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import SLOW_CREATE

RUNS = 10

CHILDREN = {
    # asyncio.run cancels 300 awaitables at the end; each cancellation is handed back by a
    # runtime thread taking the GIL just as the program ends.
    "cancelled_at_exit": """
        async def main():
            engine = hcp.AsyncEngine()
            pending = [asyncio.ensure_future(engine.list_vms("demo")) for _ in range(300)]
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        asyncio.run(main())
    """,
    # Awaitables completing while the program returns: results of gathered calls keep arriving
    # for a loop that is being closed.
    "completed_at_exit": """
        async def main():
            engine = hcp.AsyncEngine()
            for _ in range(300):
                asyncio.ensure_future(engine.catalog())
            await asyncio.sleep(0)
        asyncio.run(main())
    """,
    # An awaitable still running when the program ends (a create that takes a minute) never
    # delivers its result, and the exit does not wait for it.
    "running_at_exit": """
        async def main():
            engine = hcp.AsyncEngine(json.loads(sys.argv[1]))
            s = await engine.create_vm("demo", "slow", "ubuntu-24.04", "small")
            asyncio.ensure_future(engine.wait_job(s))
            await asyncio.sleep(0.05)
        asyncio.run(main())
    """,
}


@pytest.mark.parametrize("child", list(CHILDREN))
def test_the_interpreter_exits_cleanly_with_hand_overs_in_flight(child: str) -> None:
    code = "import asyncio, json, sys\nimport hcp\n"
    code += textwrap.dedent(CHILDREN[child]) + "print('exited', flush=True)\n"
    for run in range(RUNS):
        result = subprocess.run(
            [sys.executable, "-c", code, json.dumps(SLOW_CREATE)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"run {run}: exit {result.returncode}\n{output}"
        assert result.stdout.strip().endswith("exited"), result.stdout
        assert "Fatal Python error" not in result.stderr, result.stderr
