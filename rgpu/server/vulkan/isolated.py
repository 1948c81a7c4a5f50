"""Each session's Vulkan work in its own process, so a driver crash ends one session only.

Well-formed but invalid usage reaches the driver as it would natively, and drivers crash on
some of it (measured: lavapipe segfaults on a compute pipeline whose layout lacks the shader's
descriptor sets). In the server's own process that would end every session of every client;
here the worker process dies, the session's calls fail with ``VK_ERROR_DEVICE_LOST`` (what a
native application sees when its GPU goes away), and everyone else carries on. Workers are
forked from a ``forkserver`` that has the backend imported, and one spare worker is kept
started and warm (the driver's one-time initialisation done, an instance kept): a session
takes it and a replacement starts on a background thread, so a session starts in about a
millisecond. Identical ``vkRgpuGetPhysicalDeviceFacts`` requests are answered from a cache in
the backend (see "the facts cache" below).

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
import pickle
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
_FACTS = "vkRgpuGetPhysicalDeviceFacts"
_FACTS_CACHE_SIZE = 16


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


def _warm_up(backend: Any) -> Any:
    """Pay the driver's one-time process initialisation before a session needs it.

    A throw-away instance (loader and driver loaded, physical devices enumerated) made outside
    any session, so no session's ids or object counts see it; it is kept until the worker
    ends, since measured on lavapipe a session's ``vkCreateInstance`` then takes ~4 ms
    rather than ~13 ms after a destroyed one and ~47 ms cold. Returns its handle, or None.
    """
    ffi, lib = backend.ffi, backend.lib
    try:
        info = ffi.new("VkInstanceCreateInfo *", {"sType": 1})
        inst = ffi.new("VkInstance *")
        if lib.vkCreateInstance(info, ffi.NULL, inst) != 0:
            return None
        count = ffi.new("uint32_t *")
        lib.vkEnumeratePhysicalDevices(inst[0], count, ffi.NULL)
        if count[0]:
            devices = ffi.new("VkPhysicalDevice[]", int(count[0]))
            lib.vkEnumeratePhysicalDevices(inst[0], count, devices)
        return inst[0]
    except Exception as exc:  # the session will meet the same failure and report it
        log.debug("warming up the Vulkan worker failed: %s", exc)
        return None


def _worker(conn: Connection, validation: bool) -> None:
    """The worker process: starts as a warm spare, then runs one VulkanSession's calls in
    order until told to close."""
    from . import open_vulkan_backend

    backend = open_vulkan_backend(validation=validation)
    warm = _warm_up(backend) if backend is not None else None
    try:
        _serve(conn, backend)
    finally:
        if warm is not None:
            backend.lib.vkDestroyInstance(warm, backend.ffi.NULL)


def _serve(conn: Connection, backend: Any) -> None:
    conn.send(("ready", backend is not None))
    try:
        msg = conn.recv()  # ("open", label, vulkan_indexes) once a session takes this worker
    except (EOFError, OSError):
        return
    if msg[0] != "open":
        return
    _, label, vulkan_indexes = msg
    releases = _ReleaseLog()
    session = backend.open_session(label, vulkan_indexes, releases) if backend else None
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


class _Worker:
    """A started worker process and the parent's end of its pipe (not yet a session's)."""

    def __init__(self, ctx: Any, validation: bool) -> None:
        parent, child = ctx.Pipe()
        self.conn: Connection = parent
        self.process: Any = ctx.Process(target=_worker, name="rgpu-vulkan worker",
                                        args=(child, validation), daemon=True)
        self.process.start()
        child.close()

    def stop(self) -> None:
        self.conn.close()  # the worker sees EOF and returns
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


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
        self._spare: _Worker | None = None  # at most one, started off the sessions' path
        self._refilling = False
        self.closed = False
        #: facts replies by (instance create info, physical-device ids): IsolatedSession
        self.facts_cache: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._refill()

    def keep_facts(self, key: tuple[bytes, tuple[int, ...]], blob: bytes) -> None:
        with self._lock:
            if key not in self.facts_cache and len(self.facts_cache) >= _FACTS_CACHE_SIZE:
                del self.facts_cache[next(iter(self.facts_cache))]  # the oldest
            self.facts_cache[key] = blob

    def _take_worker(self) -> tuple[_Worker, bool]:
        """The warm spare (True) or, when there is none or it died, a fresh worker (False);
        a replacement spare starts in the background either way."""
        with self._lock:
            w, self._spare = self._spare, None
        if w is not None and not w.process.is_alive():
            w.stop()
            w = None
        self._refill()
        if w is not None:
            return w, True
        return _Worker(self._ctx, self.validation), False

    def _refill(self) -> None:
        with self._lock:
            if self.closed or self._spare is not None or self._refilling:
                return
            self._refilling = True
        threading.Thread(target=self._start_spare, name="rgpu-vulkan spare",
                         daemon=True).start()

    def _start_spare(self) -> None:
        w: _Worker | None = None
        try:
            w = _Worker(self._ctx, self.validation)
        except Exception:
            log.exception("starting a spare Vulkan worker failed")
        with self._lock:
            self._refilling = False
            if w is not None and not self.closed and self._spare is None:
                self._spare, w = w, None
        if w is not None:
            w.stop()

    def close(self) -> None:
        """Stop the spare worker and close every session (their workers end with them)."""
        with self._lock:
            self.closed = True
            w, self._spare = self._spare, None
            sessions = list(self.sessions)
        if w is not None:
            w.stop()
        for s in sessions:
            s.close()

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
        self._instance_infos: dict[int, bytes] = {}  # create info of this session's instances
        indexes = list(vulkan_indexes) if vulkan_indexes is not None else None
        worker, spare = backend._take_worker()
        how = self._start(worker, label, indexes)
        if how is not None and spare:  # the spare died unnoticed: one fresh try
            worker.stop()
            worker = _Worker(backend._ctx, backend.validation)
            how = self._start(worker, label, indexes)
        self._conn = worker.conn
        self.process = worker.process
        if how is not None:
            self._lose(how)

    @staticmethod
    def _start(worker: _Worker, label: str, indexes: list[int] | None) -> str | None:
        """Wait for the worker to be ready and give it the session; why not, or None."""
        try:
            if not worker.conn.poll(_START_TIMEOUT_S):
                return "did not start"
            worker.conn.recv()
            worker.conn.send(("open", label, indexes))
        except (EOFError, OSError):
            return "died while starting"
        return None

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
        if fn == _FACTS:
            cached = self._cached_facts(args)
            if cached is not None:
                return cached
        sendable = [bytes(a) if isinstance(a, (memoryview, bytearray)) else a for a in args] \
            if isinstance(args, list) else args
        result = self._roundtrip(fn, sendable)
        if fn == "vkCreateInstance":
            self._note_instance(args)
        elif fn == _FACTS:
            self._keep_facts(args, result)
        return result

    def _roundtrip(self, fn: str, args: Any) -> Any:
        try:
            self._conn.send(("call", fn, args))
            reply = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._lose(f"died during {fn}")
            raise CallError("device_lost", str(self.lost), vk=VK_ERROR_DEVICE_LOST) from None
        self._release(reply[-1])
        if reply[0] == "ok":
            return reply[1]
        raise CallError(reply[1], reply[2], **reply[3])

    # --- the facts cache -------------------------------------------------------------------
    #
    # A facts reply is a function of the process-wide driver state (the same for every worker
    # of this backend), the instance's create info (its API version, extensions and
    # application/engine names, which drivers may key workarounds on) and the ids of the
    # physical devices the instance shows this session (its ordinal in the session and the
    # token's visible devices are encoded in them: backend.py ``physical_devices``). A cached
    # reply is used only when all of those match: the worker enumerates the instance's
    # physical devices first (which registers them, as building the facts would), and the
    # ids it returns are part of the key. Replies holding live values (VK_EXT_memory_budget's
    # heap usage) are never cached.

    def _note_instance(self, args: Any) -> None:
        """A successful vkCreateInstance: remember its create info under its id."""
        if isinstance(args, list) and len(args) == 3 and isinstance(args[2], int):
            try:
                self._instance_infos[args[2]] = pickle.dumps(args[0], protocol=5)
            except Exception:
                self._instance_infos.pop(args[2], None)

    def _facts_key(self, args: Any, ids: Any) -> tuple[bytes, tuple[int, ...]] | None:
        if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], int)):
            return None
        info = self._instance_infos.get(args[0])
        if info is None or not isinstance(ids, list):
            return None
        return info, tuple(ids)

    def _cached_facts(self, args: Any) -> Any:
        if not self.backend.facts_cache or self._facts_key(args, []) is None:
            return None
        try:
            reply = self._roundtrip("vkEnumeratePhysicalDevices", [args[0], None, None])
        except CallError as exc:
            if exc.code == "device_lost":
                raise
            return None
        if not (isinstance(reply, list) and len(reply) == 2 and reply[0] == 0):
            return None
        key = self._facts_key(args, reply[1])
        blob = self.backend.facts_cache.get(key) if key is not None else None
        return pickle.loads(blob) if blob is not None else None

    def _keep_facts(self, args: Any, result: Any) -> None:
        try:
            if not (isinstance(result, list) and result[0] == 0):
                return
            devices = result[1]["physical_devices"]
            if any(e[0] == "VK_EXT_memory_budget" for d in devices for e in d["extensions"]):
                return
            key = self._facts_key(args, [d["id"] for d in devices])
            if key is not None:
                self.backend.keep_facts(key, pickle.dumps(result, protocol=5))
        except (KeyError, TypeError, IndexError, pickle.PicklingError):
            return

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
