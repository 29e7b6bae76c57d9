"""asyncio support: awaiting tasks that run on HCP's shared tokio runtime.

Each event loop gets one :class:`hcp._hcp.Bridge`. A native ``*_async`` method starts its work
on the runtime and returns a ticket; when the work ends, the runtime queues the result and
writes a byte to a socket the loop watches (``loop.add_reader``), and :meth:`_LoopBridge.drain`
resolves the matching asyncio future in the loop's own thread. Runtime threads never take the
GIL, so interpreter shutdown stays safe while HCP tasks are still running.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any, Callable, MutableMapping, Optional, TypeVar

from . import _hcp
from ._hcp import Job, JobLogLine

if TYPE_CHECKING:  # pragma: no cover - a typing-only class of the stubs
    from ._hcp import Ticket

T = TypeVar("T")

__all__ = ["AsyncJobLogs", "call"]


class _LoopBridge:
    """One event loop's end of the bridge: the futures waiting for tickets."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.native = _hcp.Bridge()
        self.futures: dict[int, asyncio.Future[Any]] = {}
        loop.add_reader(self.native.fileno(), self.drain)

    def drain(self) -> None:
        for ticket, ok, value in self.native.drain():
            future = self.futures.pop(ticket, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


_bridges: MutableMapping[asyncio.AbstractEventLoop, _LoopBridge] = weakref.WeakKeyDictionary()
_strong_bridges: dict[int, tuple[asyncio.AbstractEventLoop, _LoopBridge]] = {}


def _bridge(loop: asyncio.AbstractEventLoop) -> _LoopBridge:
    bridge = _bridges.get(loop) if _weakrefable(loop) else _strong_bridges.get(id(loop), (None, None))[1]
    if bridge is None:
        bridge = _LoopBridge(loop)
        if _weakrefable(loop):
            _bridges[loop] = bridge
        else:  # event loops without weak references keep their bridge for the process's life
            _strong_bridges[id(loop)] = (loop, bridge)
    return bridge


def _weakrefable(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        weakref.ref(loop)
    except TypeError:
        return False
    return True


async def call(start: Callable[[_hcp.Bridge], "Ticket[T]"]) -> T:
    """Starts a native task with ``start(bridge)`` and waits for its result.

    Cancelling the awaiting coroutine aborts the task at its next await point; work the task had
    already handed on (a submission being written) completes.
    """
    loop = asyncio.get_running_loop()
    bridge = _bridge(loop)
    ticket = start(bridge.native)
    future: asyncio.Future[T] = loop.create_future()
    bridge.futures[ticket] = future
    try:
        return await future
    except asyncio.CancelledError:
        bridge.futures.pop(ticket, None)
        bridge.native.cancel(ticket)
        raise


class AsyncJobLogs:
    """A job's log lines for ``async for``: past lines, then live ones, until the job ends.

    Returned by :meth:`AsyncEngine.job_logs` and :meth:`AsyncClient.job_logs`. An unknown job
    raises :class:`hcp.NotFound` on the first iteration. Once the iteration ends, :attr:`job`
    holds the job in its final state.
    """

    def __init__(self, cursor: _hcp.AsyncLogCursor) -> None:
        self._cursor = cursor

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self._cursor.job_id

    @property
    def job(self) -> Optional[Job]:
        """The job in its final state once the iteration has ended; ``None`` before."""
        return self._cursor.job

    def __aiter__(self) -> AsyncJobLogs:
        return self

    async def __anext__(self) -> JobLogLine:
        line = await call(self._cursor.next_async)
        if line is None:
            raise StopAsyncIteration
        return line

    def __repr__(self) -> str:
        return f"AsyncJobLogs(job_id={self.job_id!r}, ended={self.job is not None})"
