"""asyncio support: the async job log iterator.

Every native ``*_async`` method returns an asyncio awaitable (pyo3-async-runtimes) of work that
runs on HCP's shared tokio runtime; cancelling the awaiting coroutine drops that work at its
next await point, while work it had already handed on (a submission being written) completes.
"""

from __future__ import annotations

from typing import Optional

from . import _hcp
from ._hcp import Job, JobLogLine

__all__ = ["AsyncJobLogs"]


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
        line = await self._cursor.next_async()
        if line is None:
            raise StopAsyncIteration
        return line

    def __repr__(self) -> str:
        return f"AsyncJobLogs(job_id={self.job_id!r}, ended={self.job is not None})"
