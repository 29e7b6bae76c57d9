"""Ctrl-C during a blocking wait raises KeyboardInterrupt promptly.

Each case runs a child Python process that blocks on a job taking a minute, sends it SIGINT and
measures how long it takes to exit with ``KeyboardInterrupt``. Promptness is the behaviour
under test, so this is the one place the suite measures time (with a generous bound).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import SLOW_CREATE

BOUND_SECONDS = 3.0

CHILD = textwrap.dedent(
    """
    import json, signal, sys
    import hcp

    # A process started from a background job inherits SIGINT as ignored, and Python then
    # installs no handler; restore the interactive default so the test does not depend on that.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    engine = hcp.Engine(json.loads(sys.argv[1]))
    s = engine.create_vm("demo", "slow", "ubuntu-24.04", "small")
    try:
        print("blocking", flush=True)
        {call}
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(42)
    print("returned without an interrupt", flush=True)
    sys.exit(1)
    """
)

CALLS = {
    "wait_job": "engine.wait_job(s)",
    "create_vm_wait": "engine.create_vm('demo', 'slow-2', 'ubuntu-24.04', 'small', wait=True)",
    "job_logs": "[print(line, flush=True) for line in engine.job_logs(s)]",
}


@pytest.mark.parametrize("call", list(CALLS))
def test_sigint_during_a_wait_raises_keyboard_interrupt_within_a_second(call: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(call=CALLS[call]), json.dumps(SLOW_CREATE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "blocking", f"child failed to start: {line!r} {child.stderr.read() if child.stderr else ''}"
        time.sleep(0.3)  # let it enter the blocking call
        assert child.poll() is None, "the child should still be waiting for a one-minute job"
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        child.wait(timeout=10)
        elapsed = time.monotonic() - sent
        out = child.stdout.read()
        err = child.stderr.read() if child.stderr else ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 42, f"exit {child.returncode}; stdout={out!r} stderr={err!r}"
    assert "interrupted" in out
    assert elapsed < BOUND_SECONDS, f"KeyboardInterrupt took {elapsed:.2f}s"
