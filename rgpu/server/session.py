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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..config import TokenConfig

log = logging.getLogger("rgpu.server.session")


class CallError(Exception):
    """A call failed in a way the application is told about (an ERROR reply)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


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
    _executor: ThreadPoolExecutor | None = None
    closed: bool = False
    # Calls waiting for the worker thread, drained in order by one job at a time: a stream of
    # launches costs one executor hand-off, not one per call.
    work: deque[Any] = field(default_factory=deque)
    draining: bool = False
    work_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def label(self) -> str:
        who = self.token.name if self.token and self.token.name else "anonymous"
        return f"session {self.id} ({self.name or 'app'} pid {self.pid}, token {who})"

    def add_cleanup(self, what: str, fn: Callable[[], None]) -> None:
        self._cleanups.append((what, fn))

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix=f"rgpu-session-{self.id}")
        return self._executor

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
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._cleanup_now)
            self._executor.shutdown(wait=False)
        else:
            self._cleanup_now()
        log.info("%s closed after %d calls", self.label, self.calls)
