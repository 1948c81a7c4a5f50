"""Each session's Vulkan work in its own process, so a driver crash ends one session only.

Well-formed but invalid usage reaches the driver as it would natively, and drivers crash on
some of it (measured: lavapipe segfaults on a compute pipeline whose layout lacks the shader's
descriptor sets). In the server's own process that would end every session of every client;
here the worker process dies, the session's calls fail with ``VK_ERROR_DEVICE_LOST`` (what a
native application sees when its GPU goes away), and everyone else carries on. Workers are
forked from a ``forkserver`` that has the backend imported, so a session starts in
milliseconds.

The parent keeps the token's memory quota: ``vkAllocateMemory`` is reserved here before the
worker sees it, and the worker reports every release (frees, failures, its close) with each
reply; a dead worker's reservations are given back at once.

Measured (lavapipe, 2 cores): the forkserver starts once in ~0.9 s (begun when the backend is
made), then a session's worker is ready in ~60 ms; each call costs ~50 µs more than
in-process (pickling over a pipe), a 4 MiB read ~7 ms more. Like every forkserver user, the
server's ``__main__`` must be import-safe (guarded), which rgpu's entry points are.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from ..session import CallError
from .backend import VK_ERROR_OUT_OF_DEVICE_MEMORY, Quota

__all__ = ["VK_ERROR_DEVICE_LOST", "IsolatedBackend", "IsolatedSession"]

log = logging.getLogger("rgpu.server.vulkan")

VK_ERROR_DEVICE_LOST = -4
_START_TIMEOUT_S = 60.0


class _ReleaseLog:
    """The worker's quota: reservations were made by the parent; releases are reported."""

    def __init__(self) -> None:
        self.released = 0

    def reserve(self, nbytes: int) -> None:
        pass

    def release(self, nbytes: int) -> None:
        self.released += nbytes

    def take(self) -> int:
        n, self.released = self.released, 0
        return n


def _worker(conn: Connection, label: str, vulkan_indexes: list[int] | None,
            validation: bool) -> None:
    """The worker process: one VulkanSession, calls in order until told to close."""
    from . import open_vulkan_backend

    backend = open_vulkan_backend(validation=validation)
    releases = _ReleaseLog()
    session = backend.open_session(label, vulkan_indexes, releases) if backend else None
    conn.send(("ready", backend is not None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = ("close",)
        if msg[0] == "close":
            stats = (0, 0, 0)
            if session is not None and backend is not None:
                before = backend.destroyed
                session.close()
                stats = (session.calls, backend.destroyed - before, backend.live)
            try:
                conn.send(("closed", stats, releases.take()))
            except (BrokenPipeError, OSError):
                pass
            return
        _, fn, args = msg
        try:
            if session is None:
                raise CallError("unsupported", "this server has no Vulkan backend", vk=-7)
            reply: tuple[Any, ...] = ("ok", session.call(fn, args))
        except CallError as exc:
            reply = ("err", exc.code, str(exc), exc.extra)
        except Exception as exc:  # a bug must not end the worker
            reply = ("err", "internal", f"{fn} failed in the Vulkan worker: {exc}",
                     {"vk": -13})
        conn.send((*reply, releases.take()))


class IsolatedBackend:
    """Opens sessions whose Vulkan runs in worker processes; same interface as VulkanBackend."""

    def __init__(self, *, validation: bool = False) -> None:
        from ..vkloader import pin_host_vulkan_loader

        pin_host_vulkan_loader()  # workers inherit the pinned environment
        self.validation = validation
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["rgpu.server.vulkan.backend", "vulkan._vulkan"])
        from multiprocessing import forkserver

        forkserver.ensure_running()  # pay the start here, not in the first session
        self._lock = threading.Lock()
        self.sessions: set[IsolatedSession] = set()

    def open_session(self, label: str, vulkan_indexes: Sequence[int] | None = None,
                     quota: Quota | None = None) -> IsolatedSession:
        s = IsolatedSession(self, label, vulkan_indexes, quota)
        with self._lock:
            self.sessions.add(s)
        return s


class IsolatedSession:
    """The parent's end of one worker: ``call`` and ``close`` as on VulkanSession."""

    def __init__(self, backend: IsolatedBackend, label: str,
                 vulkan_indexes: Sequence[int] | None, quota: Quota | None) -> None:
        self.backend = backend
        self.label = label
        self.quota = quota
        self.reserved = 0  # bytes reserved in the quota and not yet released
        self.calls = 0
        self.closed = False
        self.lost: str | None = None
        parent, child = backend._ctx.Pipe()
        self._conn = parent
        self.process = backend._ctx.Process(
            target=_worker, name=f"rgpu-vulkan {label}"[:60],
            args=(child, label, list(vulkan_indexes) if vulkan_indexes is not None else None,
                  backend.validation), daemon=True)
        self.process.start()
        child.close()
        if not parent.poll(_START_TIMEOUT_S):
            self._lose("did not start")
        else:
            try:
                parent.recv()
            except (EOFError, OSError):
                self._lose("died while starting")

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def _lose(self, how: str) -> None:
        self.process.join(5)
        code = self.process.exitcode
        why = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        self.lost = f"{self.label}: the Vulkan worker process {how} ({why})"
        log.warning("%s; the session's Vulkan objects are gone", self.lost)
        self._release(self.reserved)
        self._conn.close()

    def _release(self, nbytes: int) -> None:
        if nbytes and self.quota is not None:
            self.quota.release(nbytes)
            self.reserved -= nbytes

    def call(self, fn: str, args: list[Any]) -> Any:
        if self.closed:
            raise CallError("closed", "the Vulkan session is closed", vk=-13)
        if self.lost is not None:
            raise CallError("device_lost", self.lost, vk=VK_ERROR_DEVICE_LOST)
        self.calls += 1
        if self.quota is not None and fn == "vkAllocateMemory":
            self._reserve(args)
        sendable = [bytes(a) if isinstance(a, (memoryview, bytearray)) else a for a in args] \
            if isinstance(args, list) else args
        try:
            self._conn.send(("call", fn, sendable))
            reply = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._lose(f"died during {fn}")
            raise CallError("device_lost", str(self.lost), vk=VK_ERROR_DEVICE_LOST) from None
        self._release(reply[-1])
        if reply[0] == "ok":
            return reply[1]
        raise CallError(reply[1], reply[2], **reply[3])

    def _reserve(self, args: list[Any]) -> None:
        assert self.quota is not None
        try:
            size = int(args[1][1])  # VkMemoryAllocateInfo.allocationSize
        except (IndexError, TypeError, ValueError):
            return  # the worker refuses the malformed call
        try:
            self.quota.reserve(size)
        except CallError as exc:
            raise CallError(exc.code, str(exc),
                            **{**exc.extra, "vk": VK_ERROR_OUT_OF_DEVICE_MEMORY}) from None
        self.reserved += size

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self.backend._lock:
            self.backend.sessions.discard(self)
        if self.lost is not None:
            return
        try:
            self._conn.send(("close",))
            if self._conn.poll(60):
                _, (calls, destroyed, live), released = self._conn.recv()
                self._release(released)
                log.info("%s: Vulkan session closed after %d calls; destroyed %d objects, %d "
                         "live in the backend", self.label, calls, destroyed, live)
        except (EOFError, OSError, BrokenPipeError):
            log.warning("%s: the Vulkan worker died while closing", self.label)
        finally:
            self._release(self.reserved)
            self._conn.close()
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
