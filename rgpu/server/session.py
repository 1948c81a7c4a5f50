"""A server session: one application process's use of this server.

Everything an application creates on the server belongs to its session, so that a crashed or
exiting application frees exactly its own resources: closing the session runs every backend's
cleanup. Backend work runs on the session's own worker thread, in arrival order, so a slow
kernel in one session never stalls the event loop or another session.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from ..config import TokenConfig

log = logging.getLogger("rgpu.server.session")


class CallError(Exception):
    """A call failed in a way the application is told about (an ERROR reply)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class SessionWorker:
    """The one thread that runs a session's backend work, in the order it was submitted.

    A bare thread on a ``SimpleQueue``: a hand-off is one queue put, with none of the futures,
    idle semaphores and thread-count checks of a ``ThreadPoolExecutor``. That matters for a
    synchronous call, whose round trip is two hand-offs (event loop -> worker -> event loop).
    """

    def __init__(self, name: str) -> None:
        self._jobs: SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            SimpleQueue())
        # A daemon thread: a kernel that never ends must not keep the server from exiting.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        get = self._jobs.get
        while (job := get()) is not None:
            fn, args = job
            try:
                fn(*args)
            except BaseException:  # a job reports its own errors; this is a bug
                log.exception("session worker job failed")
            del job, fn, args

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._jobs.put((fn, args))

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the worker after everything submitted before it; its result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:
                loop.call_soon_threadsafe(_settle, fut, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, fut, result, None)

        self.submit(job)
        return await fut

    def shutdown(self) -> None:
        """The thread ends after the jobs already submitted."""
        self._jobs.put(None)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


@dataclass
class Session:
    id: int
    token: TokenConfig | None
    gpu: int | None
    name: str = ""
    pid: int = 0
    created: float = field(default_factory=time.time)
    calls: int = 0
    backends: dict[str, Any] = field(default_factory=dict)
    _cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    _worker: SessionWorker | None = None
    closed: bool = False
    # Calls waiting for the worker thread, drained in order by one job at a time: a stream of
    # launches costs one worker hand-off, not one per call.
    work: deque[Any] = field(default_factory=deque)
    draining: bool = False
    running: Any = None  # the (frame, function, args) the worker is executing, if any
    work_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def label(self) -> str:
        who = self.token.name if self.token and self.token.name else "anonymous"
        return f"session {self.id} ({self.name or 'app'} pid {self.pid}, token {who})"

    def add_cleanup(self, what: str, fn: Callable[[], None]) -> None:
        self._cleanups.append((what, fn))

    @property
    def worker(self) -> SessionWorker:
        if self._worker is None:
            self._worker = SessionWorker(f"rgpu-session-{self.id}")
        return self._worker

    def _cleanup_now(self) -> None:
        for what, fn in reversed(self._cleanups):
            try:
                fn()
            except Exception:
                log.exception("%s: cleanup of %s failed", self.label, what)
        self._cleanups.clear()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._worker is not None:
            await self._worker.run(self._cleanup_now)
            self._worker.shutdown()
        else:
            self._cleanup_now()
        log.info("%s closed after %d calls", self.label, self.calls)
