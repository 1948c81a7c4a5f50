"""The NVIDIA CUDA backend: the session interface of `backend.py` over the real driver, through
cuda-python (`cuda.bindings.driver`).

Choices that differ from calling the driver directly, and why:

- Isolation. The server is one process serving many clients, but a real primary context is
  shared by the whole process: one session's `cuDevicePrimaryCtxReset_v2` would free every other
  session's memory, and one session's illegal address would poison all of them. So each session
  gets a context of its own (`cuCtxCreate`) where it asks for the device's primary context; its
  retain count, flags and reset are the session's own. Device pointers are checked against the
  session's own allocations and the globals it looked up, because with unified addressing the
  driver would copy from any context's memory in the process.
- Threads. The driver's current context is per thread. Every call first makes the session's
  current context current on the calling thread (`cuCtxSetCurrent`, NULL when it has none), so
  whichever thread the server runs a session on (its own worker), the driver sees the context
  the session's app believes is current. Created contexts are popped from the thread's stack
  right after creation: the session keeps its own push/pop stack.
- Async copies from host bytes. `cuMemcpyHtoDAsync_v2` passes the request's bytes to the driver
  directly (buffer protocol, no copy) and keeps a reference to them until the session sees that
  stream (or its context) synchronize, succeed a `cuStreamQuery`, or be destroyed: pageable
  memory is usually staged before the call returns, but on systems where the GPU reads pageable
  memory itself (HMM, ATS) it may be read later. More than `_PENDING_LIMIT` bytes pending in a
  session synchronizes its streams, so an app that never synchronizes cannot pin server memory.
  Async copies to the host return bytes, so they synchronize their stream.
- Launches. The packed parameter buffer is handed over in the `extra` form
  (`CU_LAUNCH_PARAM_BUFFER_POINTER` / `CU_LAUNCH_PARAM_BUFFER_SIZE`); `cuLaunchCooperativeKernel`
  has no `extra`, so its `kernelParams` array points into the buffer at the offsets
  `cuFuncGetParamInfo` reports.
- Sticky errors are the driver's own: a faulted context answers its error until it is destroyed
  or reset; `close()` still releases everything (failures are logged, never raised).
- Left to the driver: kernel `printf` output goes to the server's stdout (it is not forwarded),
  and a library is loaded into every context of the process that uses one of its kernels, as
  `cuLibraryLoadData` does (lazily by default), until the session unloads it.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from rgpu.server.cuda.attributes import CUdevice_attribute
from rgpu.server.cuda.backend import (
    CU_MEMORYTYPE_ARRAY,
    CU_MEMORYTYPE_DEVICE,
    CU_MEMORYTYPE_HOST,
    CU_MEMORYTYPE_UNIFIED,
    CudaBackend,
    CudaDeviceFacts,
    CudaSession,
)
from rgpu.server.cuda.errors import CudaError, CUresult, cuGetErrorString
from rgpu.server.cuda.fatbin import WRAPPER_SIZE, ImageKind, classify_image, parse_wrapper

log = logging.getLogger("rgpu.server.cuda")

R = CUresult

_DEFAULT_STREAMS = (0, 1, 2)  # NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD
# CUresourcetype
_CU_RESOURCE_TYPE_ARRAY, _CU_RESOURCE_TYPE_MIPMAPPED_ARRAY = 0, 1
_CU_RESOURCE_TYPE_LINEAR, _CU_RESOURCE_TYPE_PITCH2D = 2, 3
_PENDING_LIMIT = 256 << 20  # host bytes async HtoD copies may hold before streams are synced

# cuda.h `CU_LAUNCH_PARAM_*` (pointer-valued macros).
_CU_LAUNCH_PARAM_END = 0
_CU_LAUNCH_PARAM_BUFFER_POINTER = 1
_CU_LAUNCH_PARAM_BUFFER_SIZE = 2

# `CUdevice_attribute` values used for the facts' own fields.
_ATTR_PCI_BUS_ID = 33
_ATTR_PCI_DEVICE_ID = 34
_ATTR_PCI_DOMAIN_ID = 50
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76

_CU_POINTER_ATTRIBUTE_CONTEXT = 1

# `CUjit_option`s whose values are host pointers of the app (log buffers, symbol tables) or
# outputs (wall time): meaningless on the server, so dropped. Log sizes go with their buffers.
_JIT_DROPPED = frozenset({2, 3, 4, 5, 6, 17, 18, 19, 25, 26, 27, 28})
# Options cuda-python 13.4 accepts as plain integers, and those it wants as enum objects.
_JIT_UINT = frozenset({0, 1, 7, 8, 11, 12, 13, 20, 21, 22, 23, 24, 29, 31, 34})
_JIT_TARGET, _JIT_FALLBACK, _JIT_CACHE_MODE = 9, 10, 14
# `CUlibraryOption`: the host table is a pointer into the app; "binary is preserved" is honoured
# (the library keeps a reference to its image).
_LIBRARY_HOST_TABLE, _LIBRARY_BINARY_IS_PRESERVED = 0, 1

# `CUlaunchAttributeID`s whose value holds handles or host pointers the wire cannot carry.
_LAUNCH_ATTRS_UNSUPPORTED = {
    1: "CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW",
    7: "CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT",
    12: "CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT",
    13: "CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE",
}

# Calls that must still work while the current context is unusable (recovery and bookkeeping):
# binding the session's context to the thread must not fail them.
_BIND_EXEMPT = frozenset({
    "cuCtxDestroy_v2", "cuCtxSetCurrent", "cuCtxGetCurrent", "cuCtxPushCurrent_v2",
    "cuCtxPopCurrent_v2", "cuCtxGetDevice", "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxReset_v2", "cuDevicePrimaryCtxGetState",
    "cuDevicePrimaryCtxSetFlags_v2", "cuCtxCreate_v4",
})

P = ParamSpec("P")
T = TypeVar("T")


def _error(code: int, api: str, detail: str = "") -> CudaError:
    """A CudaError for a driver status, naming the call that returned it."""
    try:
        known = CUresult(code)
    except ValueError:
        return CudaError(R.CUDA_ERROR_UNKNOWN, f"{api}: the driver returned CUresult {code}")
    text = f"{api}: {cuGetErrorString(int(known))}"
    return CudaError(known, f"{text} ({detail})" if detail else text)


def _check(result: Any, api: str) -> Any:
    """Unpack a cuda.bindings answer `(CUresult, outputs...)`: raise on failure, else return
    None, the one output, or the tuple of outputs."""
    if isinstance(result, tuple):
        code, outputs = int(result[0]), result[1:]
    else:
        code, outputs = int(result), ()
    if code != 0:
        raise _error(code, api)
    if not outputs:
        return None
    return outputs[0] if len(outputs) == 1 else outputs


def _code_name(code: int) -> str:
    try:
        return CUresult(code).name
    except ValueError:
        return f"CUresult {code}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def _load_driver() -> Any:
    """`cuda.bindings.driver`, or a one-line CudaError saying how to get it."""
    try:
        from cuda.bindings import driver
    except Exception as exc:
        raise CudaError(
            R.CUDA_ERROR_NO_DEVICE,
            f"cuda-python is not installed ({_one_line(exc)}); install it with "
            "pip install 'rgpu[nvidia]' or run the server with --cuda emu",
        ) from None
    return driver


def _host_address(data: bytes | bytearray | memoryview) -> tuple[int, Any]:
    """(address, keep-alive) of host bytes for a struct field that wants a raw pointer; bytes
    are not copied (`c_char_p` points into the object), other read-only buffers are."""
    if isinstance(data, bytearray):
        if not data:
            return 0, data
        arr = (ctypes.c_char * len(data)).from_buffer(data)
        return ctypes.addressof(arr), arr
    raw = data if isinstance(data, bytes) else bytes(data)
    ptr = ctypes.c_char_p(raw)
    address = ctypes.cast(ptr, ctypes.c_void_p).value or 0
    return address, (raw, ptr)


@dataclass
class _Context:
    id: int
    device: int
    handle: Any  # CUcontext
    flags: int
    primary: bool


@dataclass
class _Module:
    id: int
    context: int
    handle: Any  # CUmodule
    owned: bool  # False for cuLibraryGetModule: the library owns the code
    library: int = 0
    image: bytes | None = None


@dataclass
class _Library:
    id: int
    handle: Any  # CUlibrary
    image: bytes  # kept alive: cudart passes CU_LIBRARY_BINARY_IS_PRESERVED


@dataclass
class _Function:
    """A CUfunction (`kernel=False`) or CUkernel bound to a client id."""

    id: int
    handle: Any
    kernel: bool
    module: int = 0  # module id of functions from cuModuleGetFunction
    library: int = 0  # library id of kernels and of their functions
    layout: list[tuple[int, int]] | None = None  # (offset, size) per parameter, once asked


@dataclass
class _Stream:
    id: int
    context: int
    handle: Any  # CUstream


@dataclass
class _Event:
    id: int
    context: int
    handle: Any  # CUevent


@dataclass
class _Array:
    id: int
    context: int
    handle: Any  # CUarray
    mipmap: int = 0  # the mipmapped array a level belongs to (it owns the level)


@dataclass
class _Mipmap:
    id: int
    context: int
    handle: Any  # CUmipmappedArray


@dataclass
class _Range:
    """A device range the session may name in copies: an allocation or a global variable."""

    base: int
    size: int
    context: int
    allocation: bool
    owner: tuple[str, int] = ("", 0)  # ("module"|"library", id) for globals


@dataclass
class _Pending:
    """Host buffers an async copy on one stream may still read."""

    handle: Any  # CUstream
    buffers: list[Any] = field(default_factory=list)
    size: int = 0


class NvidiaBackend(CudaBackend):
    """The NVIDIA GPUs of this machine, through the driver; shared by all sessions."""

    kind = "nvidia"

    def __init__(self) -> None:
        self.driver = _load_driver()
        self._sessions: set[NvidiaSession] = set()
        self._sessions_lock = threading.Lock()
        try:
            self._start()
        except CudaError as exc:
            if "--cuda emu" in exc.message:
                raise
            raise CudaError(exc.code, f"{exc.message}; fix the NVIDIA driver installation or "
                            "run the server with --cuda emu") from None
        except Exception as exc:  # no libcuda.so.1, a broken install ...
            raise CudaError(
                R.CUDA_ERROR_NO_DEVICE,
                f"the NVIDIA driver is not usable ({_one_line(exc)}); install the NVIDIA "
                "driver or run the server with --cuda emu",
            ) from None

    def _start(self) -> None:
        d = self.driver
        _check(d.cuInit(0), "cuInit")
        count = int(_check(d.cuDeviceGetCount(), "cuDeviceGetCount"))
        if count < 1:
            raise CudaError(R.CUDA_ERROR_NO_DEVICE, "the NVIDIA driver reports no GPU; run the "
                            "server with --cuda emu")
        self.devices = [_check(d.cuDeviceGet(i), "cuDeviceGet") for i in range(count)]
        self._version = int(_check(d.cuDriverGetVersion(), "cuDriverGetVersion"))
        self._facts = [self._read_facts(i) for i in range(count)]

    def _read_facts(self, ordinal: int) -> CudaDeviceFacts:
        d, dev = self.driver, self.devices[ordinal]
        raw_name = _check(d.cuDeviceGetName(256, dev), "cuDeviceGetName")
        name = bytes(raw_name).split(b"\0", 1)[0].decode("utf-8", "replace")
        get_uuid = getattr(d, "cuDeviceGetUuid_v2", None) or d.cuDeviceGetUuid
        uuid = bytes(_check(get_uuid(dev), "cuDeviceGetUuid").bytes)[:16].ljust(16, b"\0")
        total = int(_check(d.cuDeviceTotalMem(dev), "cuDeviceTotalMem"))
        values = {int(a) for a in CUdevice_attribute} | {int(a) for a in d.CUdevice_attribute}
        attributes: dict[int, int] = {}
        for value in sorted(values):
            attributes[value] = self._attribute(dev, value)
        return CudaDeviceFacts(
            name=name,
            uuid=uuid,
            total_memory=total,
            compute_capability=(attributes[_ATTR_CC_MAJOR], attributes[_ATTR_CC_MINOR]),
            attributes=attributes,
            pci_domain_id=attributes[_ATTR_PCI_DOMAIN_ID],
            pci_bus_id=attributes[_ATTR_PCI_BUS_ID],
            pci_device_id=attributes[_ATTR_PCI_DEVICE_ID],
            driver_version=self._version,
            backend="nvidia",
        )

    def _attribute(self, dev: Any, value: int) -> int:
        """One device attribute; values this driver does not know answer 0, as apps expect
        from attributes of features a device lacks."""
        d = self.driver
        try:
            attrib = d.CUdevice_attribute(value)
        except ValueError:
            return 0
        err, answer = d.cuDeviceGetAttribute(attrib, dev)
        return int(answer) if int(err) == 0 else 0

    def cuDeviceGetCount(self) -> int:
        """Number of NVIDIA GPUs."""
        return len(self._facts)

    def device_facts(self, ordinal: int) -> CudaDeviceFacts:
        """Facts of GPU `ordinal`, read once at start."""
        if not 0 <= ordinal < len(self._facts):
            raise CudaError(R.CUDA_ERROR_INVALID_DEVICE, f"no device {ordinal}")
        return self._facts[ordinal]

    def cuDriverGetVersion(self) -> int:
        """The installed driver's CUDA version (e.g. 13000)."""
        return self._version

    def open_session(self, session_name: str) -> NvidiaSession:
        """A session for one client."""
        session = NvidiaSession(self, session_name)
        with self._sessions_lock:
            self._sessions.add(session)
        return session

    def close(self) -> None:
        """Close sessions still open (the driver itself needs no shutdown)."""
        with self._sessions_lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()

    def _forget(self, session: NvidiaSession) -> None:
        with self._sessions_lock:
            self._sessions.discard(session)


def _api(
    method: Callable[Concatenate[NvidiaSession, P], T],
) -> Callable[Concatenate[NvidiaSession, P], T]:
    """Serialise a session call, bind the session's context to the thread, and make sure only
    CudaError leaves it (argument mistakes become CUDA_ERROR_INVALID_VALUE, anything else is
    logged and answered CUDA_ERROR_UNKNOWN)."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: NvidiaSession, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            if self._closed:
                raise CudaError(R.CUDA_ERROR_DEINITIALIZED, f"session {self.name} is closed")
            try:
                self._bind_thread(strict=name not in _BIND_EXEMPT)
                return method(self, *args, **kwargs)
            except CudaError:
                raise
            except (TypeError, ValueError, OverflowError, KeyError, IndexError) as exc:
                log.debug("%s rejected its arguments", name, exc_info=True)
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{name}: bad argument ({exc})") \
                    from None
            except Exception as exc:
                log.exception("[session %s] %s failed unexpectedly", self.name, name)
                raise CudaError(R.CUDA_ERROR_UNKNOWN, f"{name}: internal error ({exc})") \
                    from None

    return call


class NvidiaSession(CudaSession):
    """One client's contexts, memory, code, streams and events on the NVIDIA GPUs."""

    def __init__(self, backend: NvidiaBackend, name: str) -> None:
        self.name = name
        self.backend = backend
        self.driver = backend.driver
        self._lock = threading.RLock()
        self._closed = False
        self._contexts: dict[int, _Context] = {}
        self._primary: dict[int, tuple[int, int]] = {}  # device -> (context id, retain count)
        self._primary_flags: dict[int, int] = {}
        self._current: int | None = None
        self._stack: list[int] = []
        self._modules: dict[int, _Module] = {}
        self._libraries: dict[int, _Library] = {}
        self._functions: dict[int, _Function] = {}  # functions and kernels: one id space
        self._streams: dict[int, _Stream] = {}
        self._events: dict[int, _Event] = {}
        self._ranges: dict[int, _Range] = {}
        self._bases: list[int] = []  # sorted keys of _ranges
        self._pending: dict[tuple[int, int], _Pending] = {}  # (context id, stream id)
        self._arrays: dict[int, _Array] = {}
        self._mipmaps: dict[int, _Mipmap] = {}
        # texture/surface object value -> (context id, is a surface)
        self._objects: dict[int, tuple[int, bool]] = {}

    # --- helpers ----------------------------------------------------------------------------
    def _call(self, api: str, name: str, *args: Any) -> Any:
        """Call `driver.name(*args)` and unpack it; failures name the interface call `api`."""
        return _check(getattr(self.driver, name)(*args), api)

    def _bind_thread(self, strict: bool = True) -> None:
        """Make the session's current context the calling thread's (NULL when none)."""
        ctx = self._contexts.get(self._current) if self._current is not None else None
        handle = ctx.handle if ctx is not None else self.driver.CUcontext(0)
        (err,) = self.driver.cuCtxSetCurrent(handle)
        if int(err) != 0:
            if strict:
                raise _error(int(err), "cuCtxSetCurrent")
            log.debug("[session %s] cuCtxSetCurrent failed with %d", self.name, int(err))

    def _ctx(self) -> _Context:
        if self._current is None or self._current not in self._contexts:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT, "no current context")
        return self._contexts[self._current]

    def _context_of(self, ctx_id: int) -> _Context:
        ctx = self._contexts.get(ctx_id)
        if ctx is None:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT, f"context {ctx_id} does not exist")
        return ctx

    def _device(self, dev: int) -> Any:
        if not isinstance(dev, int) or not 0 <= dev < len(self.backend.devices):
            raise CudaError(R.CUDA_ERROR_INVALID_DEVICE, f"no device {dev}")
        return self.backend.devices[dev]

    def _new_id(self, table: dict[int, Any], handle: int, what: str) -> int:
        if not isinstance(handle, int) or isinstance(handle, bool) or handle <= 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{what} id must be a positive int")
        if handle in table:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{what} id {handle} is already in use")
        return handle

    def _quiet(self, what: str, name: str, *args: Any, level: int = logging.WARNING) -> int:
        """A cleanup call: failures are logged at `level`, never raised; returns the CUresult
        (CUDA_ERROR_UNKNOWN when the binding itself raised)."""
        try:
            result = getattr(self.driver, name)(*args)
            code = int(result[0] if isinstance(result, tuple) else result)
        except Exception as exc:
            log.log(level, "[session %s] %s: %s raised %s", self.name, what, name,
                    _one_line(exc))
            return int(R.CUDA_ERROR_UNKNOWN)
        if code != 0:
            log.log(level, "[session %s] %s: %s returned %s", self.name, what, name,
                    _code_name(code))
        return code

    def _create_context(self, flags: int, dev: int) -> Any:
        """A new driver context, left off the thread's stack (the session tracks currency)."""
        handle = self._call("cuCtxCreate_v4", "cuCtxCreate", None, int(flags), self._device(dev))
        self._quiet("cuCtxCreate", "cuCtxPopCurrent")
        return handle

    # --- device ranges ----------------------------------------------------------------------
    def _add_range(self, rng: _Range) -> None:
        if rng.base in self._ranges:
            self._ranges[rng.base] = rng
            return
        self._ranges[rng.base] = rng
        bisect.insort(self._bases, rng.base)

    def _drop_range(self, base: int) -> None:
        if self._ranges.pop(base, None) is not None:
            i = bisect.bisect_left(self._bases, base)
            if i < len(self._bases) and self._bases[i] == base:
                del self._bases[i]

    def _range_of(self, ptr: int) -> _Range | None:
        i = bisect.bisect_right(self._bases, ptr) - 1
        if i < 0:
            return None
        rng = self._ranges[self._bases[i]]
        return rng if ptr < rng.base + max(rng.size, 1) else None

    def _check_range(self, ptr: int, size: int, api: str) -> None:
        """Device memory the session may touch: inside one of its allocations or globals."""
        ptr, size = int(ptr), int(size)
        if size < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: negative size")
        if size == 0:
            return
        rng = self._range_of(ptr)
        if rng is None or ptr + size > rng.base + rng.size:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"{api}: [{ptr:#x}, +{size}) is not device memory of this session")

    def _drop_ranges(self, keep: Callable[[_Range], bool]) -> None:
        for base in [b for b, r in self._ranges.items() if not keep(r)]:
            self._drop_range(base)

    # --- streams' host buffers --------------------------------------------------------------
    def _stream(self, stream: int) -> tuple[Any, tuple[int, int]]:
        """(CUstream, pending key) of a stream id; the default streams act in the current
        context."""
        if stream in _DEFAULT_STREAMS:
            ctx = self._current or 0
            # 0 and CU_STREAM_LEGACY are the same stream.
            return self.driver.CUstream(stream), (ctx, max(stream, 1))
        s = self._streams.get(stream)
        if s is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"stream {stream} does not exist")
        return s.handle, (s.context, stream)

    def _keep(self, key: tuple[int, int], handle: Any, buffer: Any, size: int) -> None:
        pending = self._pending.setdefault(key, _Pending(handle=handle))
        pending.buffers.append(buffer)
        pending.size += size
        if sum(p.size for p in self._pending.values()) > _PENDING_LIMIT:
            for k, p in list(self._pending.items()):
                self._call("cuMemcpyHtoDAsync_v2", "cuStreamSynchronize", p.handle)
                del self._pending[k]

    def _done(self, key: tuple[int, int]) -> None:
        self._pending.pop(key, None)

    def _done_context(self, ctx_id: int) -> None:
        for key in [k for k in self._pending if k[0] == ctx_id]:
            del self._pending[key]

    # --- functions --------------------------------------------------------------------------
    def _function(self, f: int) -> _Function:
        fn = self._functions.get(f)
        if fn is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"function {f} does not exist")
        return fn

    def _kernel(self, k: int) -> _Function:
        fn = self._functions.get(k)
        if fn is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"kernel {k} does not exist")
        return fn

    def _launchable(self, fn: _Function) -> Any:
        """The handle cuLaunchKernel takes: a CUkernel is passed cast to CUfunction."""
        return self.driver.CUfunction(int(fn.handle)) if fn.kernel else fn.handle

    def _current_device(self) -> Any:
        ctx = self._contexts.get(self._current) if self._current is not None else None
        return self.backend.devices[ctx.device if ctx is not None else 0]

    def _param_info(self, fn: _Function, index: int, api: str) -> list[int]:
        if not isinstance(index, int) or index < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: bad parameter index {index}")
        name = "cuKernelGetParamInfo" if fn.kernel else "cuFuncGetParamInfo"
        offset, size = self._call(api, name, fn.handle, index)
        return [int(offset), int(size)]

    def _layout(self, fn: _Function, api: str) -> list[tuple[int, int]]:
        """All parameters' (offset, size), asking until the driver says INVALID_VALUE."""
        if fn.layout is None:
            layout: list[tuple[int, int]] = []
            while True:
                try:
                    offset, size = self._param_info(fn, len(layout), api)
                except CudaError as exc:
                    if exc.code == R.CUDA_ERROR_INVALID_VALUE:
                        break
                    raise
                layout.append((offset, size))
            fn.layout = layout
        return fn.layout

    def _forget_functions(self, keep: Callable[[_Function], bool]) -> None:
        for fid in [f.id for f in self._functions.values() if not keep(f)]:
            del self._functions[fid]

    # --- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Synchronize and release everything in a safe order; never raises. Later calls get
        CUDA_ERROR_DEINITIALIZED."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                faulted = [self._release_context(ctx, "close") for ctx in
                           list(self._contexts.values())]
                level = logging.DEBUG if any(faulted) else logging.WARNING
                for lib in list(self._libraries.values()):
                    self._quiet("close", "cuLibraryUnload", lib.handle, level=level)
                for ctx in list(self._contexts.values()):
                    self._quiet("close", "cuCtxDestroy", ctx.handle)
                self._quiet("close", "cuCtxSetCurrent", self.driver.CUcontext(0))
            except Exception:
                log.exception("[session %s] cleanup failed", self.name)
            self._contexts.clear()
            self._primary.clear()
            self._libraries.clear()
            self._modules.clear()
            self._functions.clear()
            self._streams.clear()
            self._events.clear()
            self._ranges.clear()
            self._bases.clear()
            self._pending.clear()
            self._arrays.clear()
            self._mipmaps.clear()
            self._objects.clear()
            self._current = None
            self._stack.clear()
            self.backend._forget(self)

    def _release_context(self, ctx: _Context, why: str) -> bool:
        """Free everything the session made in `ctx`, leaving the context itself: wait for its
        work, destroy its events and streams, unload its modules, free its memory. True when
        the context had failed (a sticky error)."""
        d = self.driver
        self._quiet(why, "cuCtxSetCurrent", ctx.handle)
        sync = self._quiet(why, "cuCtxSynchronize", level=logging.DEBUG)
        # A context with a sticky error fails every call; its resources go with cuCtxDestroy.
        level = logging.WARNING
        if sync != 0:
            level = logging.DEBUG
            log.info("[session %s] context %d ended with %s; releasing it anyway", self.name,
                     ctx.id, _code_name(sync))
        for ev in [e for e in self._events.values() if e.context == ctx.id]:
            self._quiet(why, "cuEventDestroy", ev.handle, level=level)
            del self._events[ev.id]
        for s in [s for s in self._streams.values() if s.context == ctx.id]:
            self._quiet(why, "cuStreamDestroy", s.handle, level=level)
            del self._streams[s.id]
        for handle in [h for h, (c, _) in self._objects.items() if c == ctx.id]:
            name = "cuSurfObjectDestroy" if self._objects[handle][1] else "cuTexObjectDestroy"
            kind = d.CUsurfObject if self._objects[handle][1] else d.CUtexObject
            self._quiet(why, name, kind(handle), level=level)
            del self._objects[handle]
        for arr in [a for a in self._arrays.values() if a.context == ctx.id]:
            if not arr.mipmap:
                self._quiet(why, "cuArrayDestroy", arr.handle, level=level)
            del self._arrays[arr.id]
        for mip in [m for m in self._mipmaps.values() if m.context == ctx.id]:
            self._quiet(why, "cuMipmappedArrayDestroy", mip.handle, level=level)
            del self._mipmaps[mip.id]
        for mod in [m for m in self._modules.values() if m.context == ctx.id]:
            if mod.owned:
                self._quiet(why, "cuModuleUnload", mod.handle, level=level)
            self._forget_module(mod.id)
        for rng in [r for r in self._ranges.values() if r.context == ctx.id]:
            if rng.allocation:
                self._quiet(why, "cuMemFree", d.CUdeviceptr(rng.base), level=level)
            self._drop_range(rng.base)
        # Functions a library kernel gave for this context die with it.
        self._forget_functions(lambda f: f.module != -ctx.id)
        self._done_context(ctx.id)
        self._bind_thread(strict=False)
        return sync != 0

    def _forget_module(self, module: int) -> None:
        self._modules.pop(module, None)
        self._forget_functions(lambda f: f.module != module)
        self._drop_ranges(lambda r: r.owner != ("module", module))

    def _drop_context(self, ctx: _Context) -> None:
        """Destroy a context the session made, after releasing its contents."""
        why = "cuDevicePrimaryCtxRelease_v2" if ctx.primary else "cuCtxDestroy_v2"
        self._release_context(ctx, why)
        self._quiet("cuCtxDestroy_v2", "cuCtxDestroy", ctx.handle)
        del self._contexts[ctx.id]
        self._drop_ranges(lambda r: r.context != ctx.id)
        if self._current == ctx.id:
            self._current = None
        self._stack = [c for c in self._stack if c != ctx.id]
        self._bind_thread(strict=False)

    # --- contexts ---------------------------------------------------------------------------
    @_api
    def cuDevicePrimaryCtxRetain(self, ctx: int, dev: int) -> None:
        """Retain the device's primary context as `ctx` (a context of the session's own, see the
        module docstring); current if nothing else is."""
        self._device(dev)
        existing = self._primary.get(dev)
        if existing is not None:
            cid, count = existing
            if ctx != cid:
                raise CudaError(
                    R.CUDA_ERROR_INVALID_VALUE,
                    f"device {dev}'s primary context already has id {cid}, not {ctx}",
                )
            self._primary[dev] = (cid, count + 1)
        else:
            self._new_id(self._contexts, ctx, "context")
            flags = self._primary_flags.get(dev, 0)
            handle = self._create_context(flags, dev)
            self._contexts[ctx] = _Context(id=ctx, device=dev, handle=handle, flags=flags,
                                           primary=True)
            self._primary[dev] = (ctx, 1)
        if self._current is None:
            self._current = ctx
        self._bind_thread(strict=False)

    @_api
    def cuDevicePrimaryCtxRelease_v2(self, dev: int) -> None:
        """Drop a retain; the last one destroys the context and everything in it."""
        self._device(dev)
        if dev not in self._primary:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT,
                            f"device {dev}'s primary context is not retained")
        cid, count = self._primary[dev]
        if count > 1:
            self._primary[dev] = (cid, count - 1)
            return
        del self._primary[dev]
        self._drop_context(self._contexts[cid])

    @_api
    def cuDevicePrimaryCtxReset_v2(self, dev: int) -> None:
        """Free everything in the primary context and clear a sticky error: the driver context
        is replaced by a fresh one under the same id and retain count."""
        self._device(dev)
        if dev not in self._primary:
            return
        ctx = self._contexts[self._primary[dev][0]]
        self._release_context(ctx, "cuDevicePrimaryCtxReset_v2")
        self._quiet("cuDevicePrimaryCtxReset_v2", "cuCtxDestroy", ctx.handle)
        try:
            ctx.handle = self._create_context(ctx.flags, dev)
        except CudaError:
            # No context to keep the id for: the session's primary context is gone.
            del self._primary[dev]
            del self._contexts[ctx.id]
            if self._current == ctx.id:
                self._current = None
            self._stack = [c for c in self._stack if c != ctx.id]
            raise
        finally:
            self._bind_thread(strict=False)

    @_api
    def cuDevicePrimaryCtxGetState(self, dev: int) -> list[int]:
        """[flags, active]."""
        self._device(dev)
        return [self._primary_flags.get(dev, 0), int(dev in self._primary)]

    @_api
    def cuDevicePrimaryCtxSetFlags_v2(self, dev: int, flags: int) -> None:
        """Record the flags; an active primary context gets them through cuCtxSetFlags."""
        self._device(dev)
        flags = int(flags)
        if dev in self._primary:
            ctx = self._contexts[self._primary[dev][0]]
            self._call("cuDevicePrimaryCtxSetFlags_v2", "cuCtxSetCurrent", ctx.handle)
            try:
                self._call("cuDevicePrimaryCtxSetFlags_v2", "cuCtxSetFlags", flags)
            finally:
                self._bind_thread(strict=False)
            ctx.flags = flags
        self._primary_flags[dev] = flags

    @_api
    def cuCtxCreate_v4(self, ctx: int, flags: int, dev: int) -> None:
        """Create a context and make it current."""
        self._device(dev)
        self._new_id(self._contexts, ctx, "context")
        handle = self._create_context(flags, dev)
        self._contexts[ctx] = _Context(id=ctx, device=dev, handle=handle, flags=int(flags),
                                       primary=False)
        self._current = ctx
        self._bind_thread(strict=False)

    @_api
    def cuCtxDestroy_v2(self, ctx: int) -> None:
        """Destroy a created context with everything in it."""
        c = self._context_of(ctx)
        if c.primary:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT,
                            "a primary context is released, not destroyed")
        self._drop_context(c)

    @_api
    def cuCtxSetCurrent(self, ctx: int) -> None:
        """Bind `ctx` (0 unbinds)."""
        if ctx == 0:
            self._current = None
        else:
            self._context_of(ctx)
            self._current = ctx
        self._bind_thread(strict=False)

    @_api
    def cuCtxGetCurrent(self) -> int:
        """The current context id, 0 when none."""
        return self._current or 0

    @_api
    def cuCtxPushCurrent_v2(self, ctx: int) -> None:
        """Push the current context and bind `ctx`."""
        self._context_of(ctx)
        if self._current is not None:
            self._stack.append(self._current)
        self._current = ctx
        self._bind_thread(strict=False)

    @_api
    def cuCtxPopCurrent_v2(self) -> int:
        """Unbind the current context, restoring the previous one."""
        if self._current is None:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT, "no current context to pop")
        popped = self._current
        self._current = self._stack.pop() if self._stack else None
        self._bind_thread(strict=False)
        return popped

    @_api
    def cuCtxGetDevice(self) -> int:
        """The current context's device ordinal."""
        return self._ctx().device

    def cuRgpuPrintfPending(self) -> None:
        """Kernel printf output held for the application: none here (an rgpu call the shim
        makes after a failed synchronisation; a GPU's printf output goes to the server's
        stdout), answered so that it is not counted as an unsupported call."""
        return None

    @_api
    def cuCtxSynchronize(self) -> None:
        """Wait for the current context's work (its sticky error, if any, is raised)."""
        ctx = self._ctx()
        self._call("cuCtxSynchronize", "cuCtxSynchronize")
        self._done_context(ctx.id)

    @_api
    def cuCtxGetLimit(self, limit: int) -> int:
        """A CUlimit of the current context."""
        self._ctx()
        return int(self._call("cuCtxGetLimit", "cuCtxGetLimit", self.driver.CUlimit(limit)))

    @_api
    def cuCtxSetLimit(self, limit: int, value: int) -> None:
        """Set a CUlimit of the current context."""
        self._ctx()
        self._call("cuCtxSetLimit", "cuCtxSetLimit", self.driver.CUlimit(limit), int(value))

    @_api
    def cuCtxGetFlags(self) -> int:
        """The current context's flags."""
        self._ctx()
        return int(self._call("cuCtxGetFlags", "cuCtxGetFlags"))

    @_api
    def cuCtxGetStreamPriorityRange(self) -> list[int]:
        """[leastPriority, greatestPriority]."""
        self._ctx()
        least, greatest = self._call("cuCtxGetStreamPriorityRange",
                                     "cuCtxGetStreamPriorityRange")
        return [int(least), int(greatest)]

    # --- memory -----------------------------------------------------------------------------
    @_api
    def cuMemAlloc_v2(self, bytesize: int) -> int:
        """Allocate in the current context."""
        ctx = self._ctx()
        dptr = int(self._call("cuMemAlloc_v2", "cuMemAlloc", int(bytesize)))
        self._add_range(_Range(base=dptr, size=int(bytesize), context=ctx.id, allocation=True))
        return dptr

    @_api
    def cuMemAllocPitch_v2(self, width: int, height: int, element_size: int) -> list[int]:
        """A pitched allocation; [dptr, pitch]."""
        ctx = self._ctx()
        dptr, pitch = self._call("cuMemAllocPitch_v2", "cuMemAllocPitch", int(width),
                                 int(height), int(element_size))
        dptr, pitch = int(dptr), int(pitch)
        self._add_range(_Range(base=dptr, size=pitch * int(height), context=ctx.id,
                               allocation=True))
        return [dptr, pitch]

    @_api
    def cuMemFree_v2(self, dptr: int) -> None:
        """Free one of the session's allocations."""
        rng = self._ranges.get(int(dptr))
        if rng is None or not rng.allocation:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"{int(dptr):#x} is not an allocation of this session")
        self._call("cuMemFree_v2", "cuMemFree", self.driver.CUdeviceptr(rng.base))
        self._drop_range(rng.base)

    @_api
    def cuMemGetInfo_v2(self) -> list[int]:
        """[free, total] of the current context's device."""
        self._ctx()
        free, total = self._call("cuMemGetInfo_v2", "cuMemGetInfo")
        return [int(free), int(total)]

    @_api
    def cuMemGetAddressRange_v2(self, dptr: int) -> list[int]:
        """[base, size] of the session allocation holding `dptr`."""
        if self._range_of(int(dptr)) is None:
            raise CudaError(R.CUDA_ERROR_NOT_FOUND, f"{int(dptr):#x} is not in any allocation")
        base, size = self._call("cuMemGetAddressRange_v2", "cuMemGetAddressRange",
                                self.driver.CUdeviceptr(int(dptr)))
        return [int(base), int(size)]

    @_api
    def cuMemcpyHtoD_v2(self, dst: int, data: bytes) -> None:
        """Host bytes to device memory (the driver reads the bytes object in place)."""
        size = len(data)
        self._check_range(dst, size, "cuMemcpyHtoD_v2")
        self._call("cuMemcpyHtoD_v2", "cuMemcpyHtoD", self.driver.CUdeviceptr(int(dst)),
                   data, size)

    @_api
    def cuMemcpyDtoH_v2(self, src: int, bytesize: int) -> bytes:
        """Device memory to host bytes."""
        self._check_range(src, bytesize, "cuMemcpyDtoH_v2")
        buf = bytearray(int(bytesize))
        if bytesize:
            self._call("cuMemcpyDtoH_v2", "cuMemcpyDtoH", buf,
                       self.driver.CUdeviceptr(int(src)), int(bytesize))
            self._done(self._stream(0)[1])  # the legacy stream's earlier work has finished
        return bytes(buf)

    @_api
    def cuMemcpyDtoD_v2(self, dst: int, src: int, bytesize: int) -> None:
        """Device to device."""
        self._check_range(dst, bytesize, "cuMemcpyDtoD_v2")
        self._check_range(src, bytesize, "cuMemcpyDtoD_v2")
        d = self.driver
        self._call("cuMemcpyDtoD_v2", "cuMemcpyDtoD", d.CUdeviceptr(int(dst)),
                   d.CUdeviceptr(int(src)), int(bytesize))

    @_api
    def cuMemcpy(self, dst: int, src: int, bytesize: int) -> None:
        """Unified copy between the session's device pointers."""
        self._check_range(dst, bytesize, "cuMemcpy")
        self._check_range(src, bytesize, "cuMemcpy")
        d = self.driver
        self._call("cuMemcpy", "cuMemcpy", d.CUdeviceptr(int(dst)), d.CUdeviceptr(int(src)),
                   int(bytesize))

    @_api
    def cuMemcpyAsync(self, dst: int, src: int, bytesize: int, stream: int) -> None:
        """Unified copy in stream order."""
        self._check_range(dst, bytesize, "cuMemcpyAsync")
        self._check_range(src, bytesize, "cuMemcpyAsync")
        handle, _ = self._stream(stream)
        d = self.driver
        self._call("cuMemcpyAsync", "cuMemcpyAsync", d.CUdeviceptr(int(dst)),
                   d.CUdeviceptr(int(src)), int(bytesize), handle)

    @_api
    def cuPointerGetAttribute(self, attribute: int, ptr: int) -> int:
        """A pointer attribute of the session's own device memory; the context attribute
        answers the session's context id."""
        rng = self._range_of(int(ptr))
        if rng is None:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"{int(ptr):#x} is not a device pointer of this session")
        if attribute == _CU_POINTER_ATTRIBUTE_CONTEXT:
            return rng.context
        d = self.driver
        value = self._call("cuPointerGetAttribute", "cuPointerGetAttribute",
                           d.CUpointer_attribute(attribute), d.CUdeviceptr(int(ptr)))
        try:
            return int(value)
        except (TypeError, ValueError):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"pointer attribute {attribute} is not "
                            "an integer and cannot be forwarded") from None

    @_api
    def cuMemcpyHtoDAsync_v2(self, dst: int, data: bytes, stream: int) -> None:
        """Host bytes to device in stream order; the bytes stay referenced until the stream is
        seen to finish (module docstring)."""
        size = len(data)
        self._check_range(dst, size, "cuMemcpyHtoDAsync_v2")
        handle, key = self._stream(stream)
        self._call("cuMemcpyHtoDAsync_v2", "cuMemcpyHtoDAsync",
                   self.driver.CUdeviceptr(int(dst)), data, size, handle)
        self._keep(key, handle, data, size)

    @_api
    def cuMemcpyDtoHAsync_v2(self, src: int, bytesize: int, stream: int) -> bytes:
        """Device to host in stream order: waits for the stream, then answers the bytes."""
        self._check_range(src, bytesize, "cuMemcpyDtoHAsync_v2")
        handle, key = self._stream(stream)
        buf = bytearray(int(bytesize))
        if bytesize:
            self._call("cuMemcpyDtoHAsync_v2", "cuMemcpyDtoHAsync", buf,
                       self.driver.CUdeviceptr(int(src)), int(bytesize), handle)
        self._call("cuMemcpyDtoHAsync_v2", "cuStreamSynchronize", handle)
        self._done(key)
        return bytes(buf)

    @_api
    def cuMemcpyDtoDAsync_v2(self, dst: int, src: int, bytesize: int, stream: int) -> None:
        """Device to device in stream order."""
        self._check_range(dst, bytesize, "cuMemcpyDtoDAsync_v2")
        self._check_range(src, bytesize, "cuMemcpyDtoDAsync_v2")
        handle, _ = self._stream(stream)
        d = self.driver
        self._call("cuMemcpyDtoDAsync_v2", "cuMemcpyDtoDAsync", d.CUdeviceptr(int(dst)),
                   d.CUdeviceptr(int(src)), int(bytesize), handle)

    def _copy2d(
        self, api: str, copy: dict[str, int], host_data: bytes | None, stream: int | None
    ) -> bytes | None:
        """Run a 2D copy; a host destination comes back as bytes."""
        d = self.driver
        width, height = int(copy["WidthInBytes"]), int(copy["Height"])
        if width < 0 or height < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: negative extent")
        p = d.CUDA_MEMCPY2D()
        keep: Any = None
        out: bytearray | None = None
        for side in ("src", "dst"):
            kind = int(copy[f"{side}MemoryType"])
            x, y = int(copy.get(f"{side}XInBytes", 0)), int(copy.get(f"{side}Y", 0))
            if kind == CU_MEMORYTYPE_HOST:
                if side == "src":
                    if host_data is None or len(host_data) < width * height:
                        raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                                        f"{api}: needs {width * height} bytes of host data")
                    address, keep = _host_address(host_data)
                else:
                    out = bytearray(width * height)
                    address, _ = _host_address(out)
                setattr(p, f"{side}MemoryType", d.CUmemorytype(CU_MEMORYTYPE_HOST))
                setattr(p, f"{side}Host", address)
                setattr(p, f"{side}Pitch", width)
                setattr(p, f"{side}XInBytes", 0)
                setattr(p, f"{side}Y", 0)
            elif kind in (CU_MEMORYTYPE_DEVICE, CU_MEMORYTYPE_UNIFIED):
                base, pitch = int(copy[f"{side}Device"]), int(copy[f"{side}Pitch"])
                if height:
                    start = base + y * pitch + x
                    self._check_range(start, (height - 1) * pitch + width, api)
                setattr(p, f"{side}MemoryType", d.CUmemorytype(kind))
                setattr(p, f"{side}Device", d.CUdeviceptr(base))
                setattr(p, f"{side}Pitch", pitch)
                setattr(p, f"{side}XInBytes", x)
                setattr(p, f"{side}Y", y)
            elif kind == CU_MEMORYTYPE_ARRAY:
                return self._copy3d(api, {**copy, "Depth": 1}, host_data, stream)
            else:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: bad {side}MemoryType {kind}")
        p.WidthInBytes = width
        p.Height = height
        if stream is None:
            self._call(api, "cuMemcpy2D", p)
        else:
            handle, key = self._stream(stream)
            self._call(api, "cuMemcpy2DAsync", p, handle)
            if out is not None:
                self._call(api, "cuStreamSynchronize", handle)
                self._done(key)
            elif keep is not None:
                self._keep(key, handle, keep, width * height)
        return bytes(out) if out is not None else None

    @_api
    def cuMemcpy2D_v2(self, copy: dict[str, int], host_data: bytes | None = None) -> bytes | None:
        """A 2D copy (host sides packed row after row)."""
        return self._copy2d("cuMemcpy2D_v2", copy, host_data, None)

    @_api
    def cuMemcpy2DAsync_v2(
        self, copy: dict[str, int], stream: int, host_data: bytes | None = None
    ) -> bytes | None:
        """A 2D copy in stream order (a host destination waits for the stream)."""
        return self._copy2d("cuMemcpy2DAsync_v2", copy, host_data, stream)

    # --- CUDA arrays, texture and surface objects ------------------------------------------
    def _array(self, array: int) -> _Array:
        arr = self._arrays.get(array)
        if arr is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"array {array} does not exist")
        return arr

    def _array3d_desc(self, desc: dict[str, Any]) -> Any:
        d = self.driver
        p = d.CUDA_ARRAY3D_DESCRIPTOR()
        p.Width = int(desc.get("Width", 0))
        p.Height = int(desc.get("Height", 0))
        p.Depth = int(desc.get("Depth", 0))
        p.Format = d.CUarray_format(int(desc["Format"]))
        p.NumChannels = int(desc["NumChannels"])
        p.Flags = int(desc.get("Flags", 0))
        return p

    @_api
    def cuArray3DCreate_v2(self, array: int, desc: dict[str, Any]) -> None:
        """An array with id `array` from CUDA_ARRAY3D_DESCRIPTOR's fields."""
        ctx = self._ctx()
        self._new_id(self._arrays, array, "array")
        handle = self._call("cuArray3DCreate_v2", "cuArray3DCreate", self._array3d_desc(desc))
        self._arrays[array] = _Array(array, ctx.id, handle)

    @_api
    def cuMipmappedArrayCreate(self, mipmap: int, desc: dict[str, Any], num_levels: int) -> None:
        """A mipmapped array with id `mipmap`."""
        ctx = self._ctx()
        self._new_id(self._mipmaps, mipmap, "mipmapped array")
        handle = self._call("cuMipmappedArrayCreate", "cuMipmappedArrayCreate",
                            self._array3d_desc(desc), int(num_levels))
        self._mipmaps[mipmap] = _Mipmap(mipmap, ctx.id, handle)

    def _mipmap(self, mipmap: int) -> _Mipmap:
        mip = self._mipmaps.get(mipmap)
        if mip is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"mipmapped array {mipmap} does not exist")
        return mip

    @_api
    def cuMipmappedArrayGetLevel(self, array: int, mipmap: int, level: int) -> None:
        """Bind array id `array` to a level of a mipmapped array."""
        mip = self._mipmap(mipmap)
        self._new_id(self._arrays, array, "array")
        handle = self._call("cuMipmappedArrayGetLevel", "cuMipmappedArrayGetLevel", mip.handle,
                            int(level))
        self._arrays[array] = _Array(array, mip.context, handle, mipmap)

    @_api
    def cuMipmappedArrayDestroy(self, mipmap: int) -> None:
        """Destroy a mipmapped array; the ids bound to its levels go with it."""
        mip = self._mipmap(mipmap)
        self._call("cuMipmappedArrayDestroy", "cuMipmappedArrayDestroy", mip.handle)
        for aid in [a.id for a in self._arrays.values() if a.mipmap == mipmap]:
            del self._arrays[aid]
        del self._mipmaps[mipmap]

    @_api
    def cuArrayCreate_v2(self, array: int, desc: dict[str, Any]) -> None:
        """A 1D or 2D array (CUDA_ARRAY_DESCRIPTOR's fields)."""
        self.cuArray3DCreate_v2(array, {**desc, "Depth": 0, "Flags": 0})

    @_api
    def cuArrayDestroy(self, array: int) -> None:
        """Destroy an array of the session."""
        arr = self._array(array)
        if arr.mipmap:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"array {array} is a level of mipmapped "
                            f"array {arr.mipmap}: it goes with cuMipmappedArrayDestroy")
        self._call("cuArrayDestroy", "cuArrayDestroy", arr.handle)
        del self._arrays[array]

    @_api
    def cuArray3DGetDescriptor_v2(self, array: int) -> dict[str, int]:
        """The array's CUDA_ARRAY3D_DESCRIPTOR fields, as the driver reports them."""
        p = self._call("cuArray3DGetDescriptor_v2", "cuArray3DGetDescriptor",
                       self._array(array).handle)
        return {"Width": int(p.Width), "Height": int(p.Height), "Depth": int(p.Depth),
                "Format": int(p.Format), "NumChannels": int(p.NumChannels),
                "Flags": int(p.Flags)}  # fmt: skip

    def _copy3d(
        self, api: str, copy: dict[str, Any], host_data: bytes | None, stream: int | None
    ) -> bytes | None:
        """Run a CUDA_MEMCPY3D (host sides packed, offsets 0); a host destination comes back
        as bytes."""
        d = self.driver
        width = int(copy["WidthInBytes"])
        height, depth = max(int(copy.get("Height", 1)), 1), max(int(copy.get("Depth", 1)), 1)
        if width < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: negative extent")
        total = width * height * depth
        p = d.CUDA_MEMCPY3D()
        keep: Any = None
        out: bytearray | None = None
        for side in ("src", "dst"):
            kind = int(copy[f"{side}MemoryType"])
            x, y, z = (int(copy.get(f"{side}{k}", 0)) for k in ("XInBytes", "Y", "Z"))
            if kind == CU_MEMORYTYPE_HOST:
                if side == "src":
                    if host_data is None or len(host_data) < total:
                        raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                                        f"{api}: needs {total} bytes of host data")
                    address, keep = _host_address(host_data)
                else:
                    out = bytearray(total)
                    address, _ = _host_address(out)
                setattr(p, f"{side}MemoryType", d.CUmemorytype(CU_MEMORYTYPE_HOST))
                setattr(p, f"{side}Host", address)
                setattr(p, f"{side}Pitch", width)
                setattr(p, f"{side}Height", height)
                x = y = z = 0
            elif kind in (CU_MEMORYTYPE_DEVICE, CU_MEMORYTYPE_UNIFIED):
                base, pitch = int(copy[f"{side}Device"]), int(copy.get(f"{side}Pitch", 0))
                rows = int(copy.get(f"{side}Height", 0))
                if depth > 1 and rows == 0:
                    raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: {side}Height is 0")
                pitch = pitch or width
                start = base + (z * rows + y) * pitch + x
                self._check_range(start, ((depth - 1) * rows + height - 1) * pitch + width, api)
                setattr(p, f"{side}MemoryType", d.CUmemorytype(kind))
                setattr(p, f"{side}Device", d.CUdeviceptr(base))
                setattr(p, f"{side}Pitch", pitch)
                setattr(p, f"{side}Height", rows)
            elif kind == CU_MEMORYTYPE_ARRAY:
                setattr(p, f"{side}MemoryType", d.CUmemorytype(CU_MEMORYTYPE_ARRAY))
                setattr(p, f"{side}Array", self._array(int(copy[f"{side}Array"])).handle)
            else:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: bad {side}MemoryType {kind}")
            setattr(p, f"{side}XInBytes", x)
            setattr(p, f"{side}Y", y)
            setattr(p, f"{side}Z", z)
        p.WidthInBytes = width
        p.Height = height
        p.Depth = depth
        if stream is None:
            self._call(api, "cuMemcpy3D", p)
        else:
            handle, key = self._stream(stream)
            self._call(api, "cuMemcpy3DAsync", p, handle)
            if out is not None:
                self._call(api, "cuStreamSynchronize", handle)
                self._done(key)
            elif keep is not None:
                self._keep(key, handle, keep, total)
        return bytes(out) if out is not None else None

    @_api
    def cuMemcpy3D_v2(self, copy: dict[str, Any], host_data: bytes | None = None) -> bytes | None:
        """A 3D copy between host, device memory and arrays."""
        return self._copy3d("cuMemcpy3D_v2", copy, host_data, None)

    @_api
    def cuMemcpy3DAsync_v2(
        self, copy: dict[str, Any], stream: int, host_data: bytes | None = None
    ) -> bytes | None:
        """A 3D copy in stream order (a host destination waits for the stream)."""
        return self._copy3d("cuMemcpy3DAsync_v2", copy, host_data, stream)

    def _resource_desc(self, api: str, res: dict[str, Any]) -> Any:
        d = self.driver
        p = d.CUDA_RESOURCE_DESC()
        kind = int(res["resType"])
        p.resType = d.CUresourcetype(kind)
        if kind == _CU_RESOURCE_TYPE_ARRAY:
            p.res.array.hArray = self._array(int(res["hArray"])).handle
        elif kind == _CU_RESOURCE_TYPE_LINEAR:
            size = int(res["sizeInBytes"])
            self._check_range(int(res["devPtr"]), size, api)
            p.res.linear.devPtr = d.CUdeviceptr(int(res["devPtr"]))
            p.res.linear.format = d.CUarray_format(int(res["format"]))
            p.res.linear.numChannels = int(res["numChannels"])
            p.res.linear.sizeInBytes = size
        elif kind == _CU_RESOURCE_TYPE_PITCH2D:
            pitch, height = int(res["pitchInBytes"]), int(res["height"])
            self._check_range(int(res["devPtr"]), pitch * height, api)
            p.res.pitch2D.devPtr = d.CUdeviceptr(int(res["devPtr"]))
            p.res.pitch2D.format = d.CUarray_format(int(res["format"]))
            p.res.pitch2D.numChannels = int(res["numChannels"])
            p.res.pitch2D.width = int(res["width"])
            p.res.pitch2D.height = height
            p.res.pitch2D.pitchInBytes = pitch
        elif kind == _CU_RESOURCE_TYPE_MIPMAPPED_ARRAY:
            p.res.mipmap.hMipmappedArray = self._mipmap(int(res["hMipmappedArray"])).handle
        else:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: bad resource type {kind}")
        p.flags = int(res.get("flags", 0))
        return p

    @_api
    def cuTexObjectCreate(
        self, res_desc: dict[str, Any], tex_desc: dict[str, Any],
        view_desc: dict[str, Any] | None = None,
    ) -> int:
        """A texture object; returns the driver's CUtexObject value (kernels receive it)."""
        ctx = self._ctx()
        d = self.driver
        rd = self._resource_desc("cuTexObjectCreate", res_desc)
        td = d.CUDA_TEXTURE_DESC()
        modes = [int(m) for m in tex_desc.get("addressMode", [0, 0, 0])][:3]
        td.addressMode = [d.CUaddress_mode(m) for m in modes + [0] * (3 - len(modes))]
        td.filterMode = d.CUfilter_mode(int(tex_desc.get("filterMode", 0)))
        td.flags = int(tex_desc.get("flags", 0))
        td.maxAnisotropy = int(tex_desc.get("maxAnisotropy", 0))
        td.mipmapFilterMode = d.CUfilter_mode(int(tex_desc.get("mipmapFilterMode", 0)))
        td.mipmapLevelBias = float(tex_desc.get("mipmapLevelBias", 0.0))
        td.minMipmapLevelClamp = float(tex_desc.get("minMipmapLevelClamp", 0.0))
        td.maxMipmapLevelClamp = float(tex_desc.get("maxMipmapLevelClamp", 0.0))
        border = [float(b) for b in tex_desc.get("borderColor", [0.0] * 4)][:4]
        td.borderColor = border + [0.0] * (4 - len(border))
        vd = None
        if view_desc:
            vd = d.CUDA_RESOURCE_VIEW_DESC()
            vd.format = d.CUresourceViewFormat(int(view_desc.get("format", 0)))
            for name in ("width", "height", "depth", "firstMipmapLevel", "lastMipmapLevel",
                         "firstLayer", "lastLayer"):  # fmt: skip
                setattr(vd, name, int(view_desc.get(name, 0)))
        handle = int(self._call("cuTexObjectCreate", "cuTexObjectCreate", rd, td, vd))
        self._objects[handle] = (ctx.id, False)
        return handle

    @_api
    def cuSurfObjectCreate(self, res_desc: dict[str, Any]) -> int:
        """A surface object; returns the driver's CUsurfObject value."""
        ctx = self._ctx()
        rd = self._resource_desc("cuSurfObjectCreate", res_desc)
        handle = int(self._call("cuSurfObjectCreate", "cuSurfObjectCreate", rd))
        self._objects[handle] = (ctx.id, True)
        return handle

    def _destroy_object(self, api: str, handle: int, surface: bool) -> None:
        owner = self._objects.get(int(handle))
        if owner is None or owner[1] != surface:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"{api}: {int(handle):#x} is not an object of this session")
        d = self.driver
        if surface:
            self._call(api, "cuSurfObjectDestroy", d.CUsurfObject(int(handle)))
        else:
            self._call(api, "cuTexObjectDestroy", d.CUtexObject(int(handle)))
        del self._objects[int(handle)]

    @_api
    def cuTexObjectDestroy(self, handle: int) -> None:
        """Destroy a texture object of the session."""
        self._destroy_object("cuTexObjectDestroy", handle, False)

    @_api
    def cuSurfObjectDestroy(self, handle: int) -> None:
        """Destroy a surface object of the session."""
        self._destroy_object("cuSurfObjectDestroy", handle, True)

    def _memset(self, api: str, dst: int, value: int, elem: int, count: int,
                stream: int | None) -> None:
        self._check_range(dst, int(count) * elem, api)
        d = self.driver
        mask = (1 << (8 * elem)) - 1
        name = f"cuMemsetD{8 * elem}"
        args: list[Any] = [d.CUdeviceptr(int(dst)), int(value) & mask, int(count)]
        if stream is not None:
            name += "Async"
            args.append(self._stream(stream)[0])
        self._call(api, name, *args)

    def _memset2d(self, api: str, dst: int, pitch: int, value: int, elem: int, width: int,
                  height: int) -> None:
        if height > 0 and width > 0:
            self._check_range(dst, (int(height) - 1) * int(pitch) + int(width) * elem, api)
        d = self.driver
        mask = (1 << (8 * elem)) - 1
        self._call(api, f"cuMemsetD2D{8 * elem}", d.CUdeviceptr(int(dst)), int(pitch),
                   int(value) & mask, int(width), int(height))

    @_api
    def cuMemsetD8_v2(self, dst: int, value: int, count: int) -> None:
        """Fill bytes."""
        self._memset("cuMemsetD8_v2", dst, value, 1, count, None)

    @_api
    def cuMemsetD16_v2(self, dst: int, value: int, count: int) -> None:
        """Fill 16-bit words."""
        self._memset("cuMemsetD16_v2", dst, value, 2, count, None)

    @_api
    def cuMemsetD32_v2(self, dst: int, value: int, count: int) -> None:
        """Fill 32-bit words."""
        self._memset("cuMemsetD32_v2", dst, value, 4, count, None)

    @_api
    def cuMemsetD8Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """Fill bytes in stream order."""
        self._memset("cuMemsetD8Async", dst, value, 1, count, stream)

    @_api
    def cuMemsetD16Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """Fill 16-bit words in stream order."""
        self._memset("cuMemsetD16Async", dst, value, 2, count, stream)

    @_api
    def cuMemsetD32Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """Fill 32-bit words in stream order."""
        self._memset("cuMemsetD32Async", dst, value, 4, count, stream)

    @_api
    def cuMemsetD2D8_v2(self, dst: int, pitch: int, value: int, width: int, height: int) -> None:
        """Fill a 2D area of bytes."""
        self._memset2d("cuMemsetD2D8_v2", dst, pitch, value, 1, width, height)

    @_api
    def cuMemsetD2D16_v2(self, dst: int, pitch: int, value: int, width: int, height: int) -> None:
        """Fill a 2D area of 16-bit words."""
        self._memset2d("cuMemsetD2D16_v2", dst, pitch, value, 2, width, height)

    @_api
    def cuMemsetD2D32_v2(self, dst: int, pitch: int, value: int, width: int, height: int) -> None:
        """Fill a 2D area of 32-bit words."""
        self._memset2d("cuMemsetD2D32_v2", dst, pitch, value, 4, width, height)

    # --- modules and libraries --------------------------------------------------------------
    def _image(self, image: bytes, api: str) -> bytes:
        """The bytes to hand the driver. The shim ships a `__fatBinC_Wrapper_t` followed by the
        fatbin its data pointer points at; the driver takes that fatbin directly. PTX text gets
        its terminating NUL."""
        if not isinstance(image, bytes | bytearray | memoryview):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{api}: image must be bytes")
        data = bytes(image)
        kind = classify_image(data)
        if kind is ImageKind.WRAPPER:
            parse_wrapper(data)
            data = data[WRAPPER_SIZE:]
            if classify_image(data) is not ImageKind.FATBIN:
                raise CudaError(R.CUDA_ERROR_INVALID_IMAGE, f"{api}: got a fatbin wrapper "
                                "without its fatbin; the shim must ship the bytes the "
                                "wrapper's data pointer points at")
        elif kind is ImageKind.PTX and not data.endswith(b"\0"):
            data += b"\0"
        return data

    def _jit_options(self, options: dict[int, Any] | None) -> tuple[list[Any], list[Any]]:
        """CUjit_option keys and values as cuda-python takes them; host-pointer options are
        dropped (they name the app's memory)."""
        d = self.driver
        keys: list[Any] = []
        values: list[Any] = []
        for raw_key, raw_value in (options or {}).items():
            key = int(raw_key)
            if key in _JIT_DROPPED:
                continue
            if key in _JIT_UINT:
                value: Any = int(raw_value)
            elif key == _JIT_TARGET:
                value = d.CUjit_target(int(raw_value))
            elif key == _JIT_FALLBACK:
                value = d.CUjit_fallback(int(raw_value))
            elif key == _JIT_CACHE_MODE:
                value = d.CUjit_cacheMode(int(raw_value))
            else:
                log.debug("[session %s] JIT option %d is not forwarded", self.name, key)
                continue
            keys.append(d.CUjit_option(key))
            values.append(value)
        return keys, values

    def _library_options(self, options: dict[int, Any] | None) -> tuple[list[Any], list[Any]]:
        d = self.driver
        keys: list[Any] = []
        values: list[Any] = []
        for raw_key, raw_value in (options or {}).items():
            if int(raw_key) == _LIBRARY_BINARY_IS_PRESERVED:
                keys.append(d.CUlibraryOption(_LIBRARY_BINARY_IS_PRESERVED))
                values.append(int(raw_value))
            elif int(raw_key) != _LIBRARY_HOST_TABLE:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                                f"cuLibraryLoadData: unknown library option {raw_key}")
        return keys, values

    def _load_module(self, api: str, module: int, image: bytes,
                     options: dict[int, int] | None = None) -> None:
        ctx = self._ctx()
        self._new_id(self._modules, module, "module")
        data = self._image(image, api)
        if api == "cuModuleLoadDataEx":
            keys, values = self._jit_options(options)
            handle = self._call(api, "cuModuleLoadDataEx", data, len(keys), keys, values)
        elif api == "cuModuleLoadFatBinary":
            handle = self._call(api, "cuModuleLoadFatBinary", data)
        else:
            handle = self._call(api, "cuModuleLoadData", data)
        self._modules[module] = _Module(id=module, context=ctx.id, handle=handle, owned=True,
                                        image=data)

    @_api
    def cuModuleLoadData(self, module: int, image: bytes) -> None:
        """Load a fatbin (or wrapper + fatbin), cubin or PTX into the current context."""
        self._load_module("cuModuleLoadData", module, image)

    @_api
    def cuModuleLoadDataEx(
        self, module: int, image: bytes, options: dict[int, int] | None = None
    ) -> None:
        """cuModuleLoadData with JIT options."""
        self._load_module("cuModuleLoadDataEx", module, image, options)

    @_api
    def cuModuleLoadFatBinary(self, module: int, image: bytes) -> None:
        """Load a fatbin."""
        self._load_module("cuModuleLoadFatBinary", module, image)

    def _module(self, module: int) -> _Module:
        mod = self._modules.get(module)
        if mod is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"module {module} does not exist")
        return mod

    @_api
    def cuModuleUnload(self, module: int) -> None:
        """Unload a module (a library's module is only forgotten) and its functions."""
        mod = self._module(module)
        if mod.owned:
            self._call("cuModuleUnload", "cuModuleUnload", mod.handle)
        self._forget_module(module)

    def _bind_function(self, fn: _Function) -> None:
        self._new_id(self._functions, fn.id, "function/kernel")
        self._functions[fn.id] = fn

    @_api
    def cuModuleGetFunction(self, func: int, module: int, name: str) -> None:
        """Bind `func` to a kernel of a module."""
        mod = self._module(module)
        self._new_id(self._functions, func, "function")
        handle = self._call("cuModuleGetFunction", "cuModuleGetFunction", mod.handle,
                            name.encode())
        self._bind_function(_Function(id=func, handle=handle, kernel=False, module=module,
                                      library=mod.library))

    def _add_global(self, api: str, dptr: Any, size: Any, owner: tuple[str, int]) -> list[int]:
        base, nbytes = int(dptr), int(size)
        ctx = self._ctx()
        if self._range_of(base) is None:
            self._add_range(_Range(base=base, size=nbytes, context=ctx.id, allocation=False,
                                   owner=owner))
        return [base, nbytes]

    @_api
    def cuModuleGetGlobal_v2(self, module: int, name: str) -> list[int]:
        """[dptr, bytes] of a module variable (which the session may then copy to and from)."""
        mod = self._module(module)
        self._ctx()
        dptr, size = self._call("cuModuleGetGlobal_v2", "cuModuleGetGlobal", mod.handle,
                                name.encode())
        owner = ("library", mod.library) if mod.library else ("module", module)
        return self._add_global("cuModuleGetGlobal_v2", dptr, size, owner)

    @_api
    def cuLibraryLoadData(
        self,
        library: int,
        image: bytes,
        jit_options: dict[int, int] | None = None,
        library_options: dict[int, int] | None = None,
    ) -> None:
        """Load a context-independent library; the library keeps its image referenced."""
        self._new_id(self._libraries, library, "library")
        data = self._image(image, "cuLibraryLoadData")
        jkeys, jvalues = self._jit_options(jit_options)
        lkeys, lvalues = self._library_options(library_options)
        handle = self._call("cuLibraryLoadData", "cuLibraryLoadData", data, jkeys, jvalues,
                            len(jkeys), lkeys, lvalues, len(lkeys))
        self._libraries[library] = _Library(id=library, handle=handle, image=data)

    def _library(self, library: int) -> _Library:
        lib = self._libraries.get(library)
        if lib is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"library {library} does not exist")
        return lib

    @_api
    def cuLibraryUnload(self, library: int) -> None:
        """Unload a library with its kernels, their functions and its modules' ids."""
        lib = self._library(library)
        self._call("cuLibraryUnload", "cuLibraryUnload", lib.handle)
        del self._libraries[library]
        self._forget_functions(lambda f: f.library != library)
        for mid in [m.id for m in self._modules.values() if m.library == library]:
            self._forget_module(mid)
        self._drop_ranges(lambda r: r.owner != ("library", library))

    @_api
    def cuLibraryGetKernel(self, kernel: int, library: int, name: str) -> None:
        """Bind `kernel` to a kernel of a library."""
        lib = self._library(library)
        self._new_id(self._functions, kernel, "kernel")
        handle = self._call("cuLibraryGetKernel", "cuLibraryGetKernel", lib.handle,
                            name.encode())
        self._bind_function(_Function(id=kernel, handle=handle, kernel=True, library=library))

    @_api
    def cuLibraryGetModule(self, module: int, library: int) -> None:
        """Bind `module` to the library's module in the current context (not owned)."""
        lib = self._library(library)
        ctx = self._ctx()
        self._new_id(self._modules, module, "module")
        handle = self._call("cuLibraryGetModule", "cuLibraryGetModule", lib.handle)
        self._modules[module] = _Module(id=module, context=ctx.id, handle=handle, owned=False,
                                        library=library)

    @_api
    def cuLibraryGetGlobal(self, library: int, name: str) -> list[int]:
        """[dptr, bytes] of a library variable in the current context."""
        lib = self._library(library)
        self._ctx()
        dptr, size = self._call("cuLibraryGetGlobal", "cuLibraryGetGlobal", lib.handle,
                                name.encode())
        return self._add_global("cuLibraryGetGlobal", dptr, size, ("library", library))

    @_api
    def cuLibraryGetManaged(self, library: int, name: str) -> list[int]:
        """[dptr, bytes] of a library's `__managed__` variable in the current context (the
        shim keeps the application's host copy coherent with it)."""
        lib = self._library(library)
        self._ctx()
        dptr, size = self._call("cuLibraryGetManaged", "cuLibraryGetManaged", lib.handle,
                                name.encode())
        return self._add_global("cuLibraryGetManaged", dptr, size, ("library", library))

    @_api
    def cuLibraryGetKernelCount(self, library: int) -> int:
        """Kernels in the library."""
        lib = self._library(library)
        return int(self._call("cuLibraryGetKernelCount", "cuLibraryGetKernelCount", lib.handle))

    @_api
    def cuKernelGetFunction(self, func: int, kernel: int) -> None:
        """Bind `func` to the kernel's function in the current context."""
        k = self._kernel(kernel)
        if not k.kernel:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"{kernel} is a function, not a kernel")
        ctx = self._ctx()
        self._new_id(self._functions, func, "function")
        handle = self._call("cuKernelGetFunction", "cuKernelGetFunction", k.handle)
        # module = -context id: the function belongs to that context's instance of the library.
        self._bind_function(_Function(id=func, handle=handle, kernel=False, module=-ctx.id,
                                      library=k.library))

    @staticmethod
    def _text(value: Any) -> str:
        if isinstance(value, bytes | bytearray):
            return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
        return str(value)

    @_api
    def cuKernelGetName(self, kernel: int) -> str:
        """The kernel's (mangled) name."""
        fn = self._kernel(kernel)
        name = "cuKernelGetName" if fn.kernel else "cuFuncGetName"
        return self._text(self._call("cuKernelGetName", name, fn.handle))

    @_api
    def cuFuncGetName(self, func: int) -> str:
        """The function's (mangled) name."""
        fn = self._function(func)
        name = "cuKernelGetName" if fn.kernel else "cuFuncGetName"
        return self._text(self._call("cuFuncGetName", name, fn.handle))

    @_api
    def cuFuncGetParamInfo(self, func: int, param_index: int) -> list[int]:
        """[offset, size] of a parameter (cuKernelGetParamInfo for a kernel id)."""
        return self._param_info(self._function(func), param_index, "cuFuncGetParamInfo")

    @_api
    def cuKernelGetParamInfo(self, kernel: int, param_index: int) -> list[int]:
        """[offset, size] of a kernel parameter."""
        return self._param_info(self._kernel(kernel), param_index, "cuKernelGetParamInfo")

    def _get_attribute(self, api: str, fn: _Function, attrib: int, dev: Any) -> int:
        d = self.driver
        attr = d.CUfunction_attribute(attrib)
        if fn.kernel:
            return int(self._call(api, "cuKernelGetAttribute", attr, fn.handle, dev))
        return int(self._call(api, "cuFuncGetAttribute", attr, fn.handle))

    def _set_attribute(self, api: str, fn: _Function, attrib: int, value: int, dev: Any) -> None:
        d = self.driver
        attr = d.CUfunction_attribute(attrib)
        if fn.kernel:
            self._call(api, "cuKernelSetAttribute", attr, int(value), fn.handle, dev)
        else:
            self._call(api, "cuFuncSetAttribute", fn.handle, attr, int(value))

    @_api
    def cuFuncGetAttribute(self, attrib: int, func: int) -> int:
        """A function attribute (a kernel id answers for the current context's device)."""
        return self._get_attribute("cuFuncGetAttribute", self._function(func), attrib,
                                   self._current_device())

    @_api
    def cuKernelGetAttribute(self, attrib: int, kernel: int, dev: int) -> int:
        """A kernel attribute on a device."""
        return self._get_attribute("cuKernelGetAttribute", self._kernel(kernel), attrib,
                                   self._device(dev))

    @_api
    def cuFuncSetAttribute(self, func: int, attrib: int, value: int) -> None:
        """Set a function attribute."""
        self._set_attribute("cuFuncSetAttribute", self._function(func), attrib, value,
                            self._current_device())

    @_api
    def cuKernelSetAttribute(self, attrib: int, value: int, kernel: int, dev: int) -> None:
        """Set a kernel attribute on a device."""
        self._set_attribute("cuKernelSetAttribute", self._kernel(kernel), attrib, value,
                            self._device(dev))

    @_api
    def cuFuncSetCacheConfig(self, func: int, config: int) -> None:
        """Cache preference."""
        fn = self._function(func)
        d = self.driver
        cache = d.CUfunc_cache(config)
        if fn.kernel:
            self._call("cuFuncSetCacheConfig", "cuKernelSetCacheConfig", fn.handle, cache,
                       self._current_device())
        else:
            self._call("cuFuncSetCacheConfig", "cuFuncSetCacheConfig", fn.handle, cache)

    # --- execution --------------------------------------------------------------------------
    @staticmethod
    def _extra(params: bytes) -> tuple[int, Any]:
        """(address of an `extra` array carrying the packed buffer, objects to keep alive);
        (0, None) for an empty buffer."""
        size = len(params)
        if size == 0:
            return 0, None
        buf = ctypes.create_string_buffer(bytes(params), size)
        nbytes = ctypes.c_size_t(size)
        extra = (ctypes.c_void_p * 5)(
            _CU_LAUNCH_PARAM_BUFFER_POINTER, ctypes.addressof(buf),
            _CU_LAUNCH_PARAM_BUFFER_SIZE, ctypes.addressof(nbytes),
            _CU_LAUNCH_PARAM_END,
        )
        return ctypes.addressof(extra), (buf, nbytes, extra)

    @_api
    def cuLaunchKernel(
        self,
        f: int,
        gridDimX: int,
        gridDimY: int,
        gridDimZ: int,
        blockDimX: int,
        blockDimY: int,
        blockDimZ: int,
        sharedMemBytes: int,
        hStream: int,
        kernelParams: bytes,
    ) -> None:
        """Launch with the packed buffer in the `extra` form."""
        fn = self._function(f)
        handle, _ = self._stream(hStream)
        extra, keep = self._extra(kernelParams)
        self._call("cuLaunchKernel", "cuLaunchKernel", self._launchable(fn), int(gridDimX),
                   int(gridDimY), int(gridDimZ), int(blockDimX), int(blockDimY), int(blockDimZ),
                   int(sharedMemBytes), handle, None, extra)
        del keep

    def _launch_attribute(self, attr_id: int, value: Any) -> Any:
        """A CUlaunchAttribute from the wire's [id, value]: cluster dimensions arrive as
        [x, y, z], everything else as the 32-bit integer at the start of the value union."""
        d = self.driver
        attr_id = int(attr_id)
        if attr_id in _LAUNCH_ATTRS_UNSUPPORTED:
            raise CudaError(R.CUDA_ERROR_NOT_SUPPORTED, f"cuLaunchKernelEx: "
                            f"{_LAUNCH_ATTRS_UNSUPPORTED[attr_id]} carries host handles the "
                            "server cannot use")
        if isinstance(value, list | tuple):
            raw = struct.pack("<3I", *(int(v) for v in [*value, 1, 1, 1][:3]))
        else:
            raw = struct.pack("<I", int(value) & 0xFFFFFFFF)
        attr = d.CUlaunchAttribute()
        attr.id = d.CUlaunchAttributeID(attr_id)
        attr.value.pad = raw.ljust(64, b"\0")
        return attr

    @_api
    def cuLaunchKernelEx(self, config: dict[str, Any], f: int, kernelParams: bytes) -> None:
        """A launch with CUlaunchConfig fields and attributes."""
        d = self.driver
        fn = self._function(f)
        handle, _ = self._stream(int(config.get("hStream", 0)))
        cfg = d.CUlaunchConfig()
        for key in ("gridDimX", "gridDimY", "gridDimZ", "blockDimX", "blockDimY", "blockDimZ"):
            setattr(cfg, key, int(config[key]))
        cfg.sharedMemBytes = int(config.get("sharedMemBytes", 0))
        cfg.hStream = handle
        attrs = [self._launch_attribute(a, v) for a, v in config.get("attrs", []) or []]
        cfg.attrs = attrs
        cfg.numAttrs = len(attrs)
        extra, keep = self._extra(kernelParams)
        self._call("cuLaunchKernelEx", "cuLaunchKernelEx", cfg, self._launchable(fn), None,
                   extra)
        del keep

    @_api
    def cuLaunchCooperativeKernel(
        self,
        f: int,
        gridDimX: int,
        gridDimY: int,
        gridDimZ: int,
        blockDimX: int,
        blockDimY: int,
        blockDimZ: int,
        sharedMemBytes: int,
        hStream: int,
        kernelParams: bytes,
    ) -> None:
        """A cooperative launch; it has no `extra` form, so `kernelParams` points into the
        packed buffer at each parameter's offset."""
        fn = self._function(f)
        handle, _ = self._stream(hStream)
        layout = self._layout(fn, "cuLaunchCooperativeKernel")
        params = bytes(kernelParams)
        need = max((o + s for o, s in layout), default=0)
        if len(params) < need:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"cuLaunchCooperativeKernel: the "
                            f"kernel takes {need} bytes of parameters, got {len(params)}")
        buf = ctypes.create_string_buffer(params, max(len(params), 1))
        base = ctypes.addressof(buf)
        pointers = (ctypes.c_void_p * max(len(layout), 1))(*(base + o for o, _ in layout))
        kernel_params = ctypes.addressof(pointers) if layout else None
        self._call("cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel",
                   self._launchable(fn), int(gridDimX), int(gridDimY), int(gridDimZ),
                   int(blockDimX), int(blockDimY), int(blockDimZ), int(sharedMemBytes), handle,
                   kernel_params)
        del buf, pointers

    @_api
    def cuOccupancyMaxActiveBlocksPerMultiprocessor(
        self, func: int, blockSize: int, dynamicSMemSize: int
    ) -> int:
        """Blocks per multiprocessor; a kernel id is asked through its function in the current
        context."""
        fn = self._function(func)
        api = "cuOccupancyMaxActiveBlocksPerMultiprocessor"
        handle = fn.handle
        if fn.kernel:
            self._ctx()
            handle = self._call(api, "cuKernelGetFunction", fn.handle)
        return int(self._call(api, api, handle, int(blockSize), int(dynamicSMemSize)))

    # --- streams and events -----------------------------------------------------------------
    def _create_stream(self, api: str, stream: int, flags: int, priority: int | None) -> None:
        ctx = self._ctx()
        if stream in _DEFAULT_STREAMS:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"stream id {stream} is reserved")
        self._new_id(self._streams, stream, "stream")
        if priority is None:
            handle = self._call(api, "cuStreamCreate", int(flags))
        else:
            handle = self._call(api, "cuStreamCreateWithPriority", int(flags), int(priority))
        self._streams[stream] = _Stream(id=stream, context=ctx.id, handle=handle)

    @_api
    def cuStreamCreate(self, stream: int, flags: int) -> None:
        """A stream in the current context."""
        self._create_stream("cuStreamCreate", stream, flags, None)

    @_api
    def cuStreamCreateWithPriority(self, stream: int, flags: int, priority: int) -> None:
        """A stream with a priority."""
        self._create_stream("cuStreamCreateWithPriority", stream, flags, priority)

    @_api
    def cuStreamGetPriority(self, stream: int) -> int:
        """The stream's priority."""
        handle, _ = self._stream(stream)
        return int(self._call("cuStreamGetPriority", "cuStreamGetPriority", handle))

    @_api
    def cuStreamGetFlags(self, stream: int) -> int:
        """The stream's flags."""
        handle, _ = self._stream(stream)
        return int(self._call("cuStreamGetFlags", "cuStreamGetFlags", handle))

    @_api
    def cuStreamGetCtx(self, stream: int) -> int:
        """Id of the stream's context (the current one for the default streams)."""
        if stream in _DEFAULT_STREAMS:
            return self._ctx().id
        s = self._streams.get(stream)
        if s is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"stream {stream} does not exist")
        return s.context

    @_api
    def cuStreamDestroy_v2(self, stream: int) -> None:
        """Destroy a stream (after its pending host-to-device copies have read their bytes)."""
        s = self._streams.get(stream)
        if s is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"stream {stream} does not exist")
        key = (s.context, stream)
        if key in self._pending:
            self._call("cuStreamDestroy_v2", "cuStreamSynchronize", s.handle)
            self._done(key)
        self._call("cuStreamDestroy_v2", "cuStreamDestroy", s.handle)
        del self._streams[stream]

    @_api
    def cuStreamSynchronize(self, stream: int) -> None:
        """Wait for a stream's work."""
        handle, key = self._stream(stream)
        self._call("cuStreamSynchronize", "cuStreamSynchronize", handle)
        self._done(key)

    @_api
    def cuStreamQuery(self, stream: int) -> None:
        """Return if the stream is idle, else CUDA_ERROR_NOT_READY."""
        handle, key = self._stream(stream)
        self._call("cuStreamQuery", "cuStreamQuery", handle)
        self._done(key)

    def _event(self, event: int) -> _Event:
        ev = self._events.get(event)
        if ev is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"event {event} does not exist")
        return ev

    @_api
    def cuStreamWaitEvent(self, stream: int, event: int, flags: int) -> None:
        """Make later work on `stream` wait for the event."""
        handle, _ = self._stream(stream)
        ev = self._event(event)
        self._call("cuStreamWaitEvent", "cuStreamWaitEvent", handle, ev.handle, int(flags))

    @_api
    def cuEventCreate(self, event: int, flags: int) -> None:
        """An event in the current context."""
        ctx = self._ctx()
        self._new_id(self._events, event, "event")
        handle = self._call("cuEventCreate", "cuEventCreate", int(flags))
        self._events[event] = _Event(id=event, context=ctx.id, handle=handle)

    @_api
    def cuEventDestroy_v2(self, event: int) -> None:
        """Destroy an event."""
        ev = self._event(event)
        self._call("cuEventDestroy_v2", "cuEventDestroy", ev.handle)
        del self._events[event]

    @_api
    def cuEventRecord(self, event: int, stream: int) -> None:
        """Record the event on a stream."""
        ev = self._event(event)
        handle, _ = self._stream(stream)
        self._call("cuEventRecord", "cuEventRecord", ev.handle, handle)

    @_api
    def cuEventRecordWithFlags(self, event: int, stream: int, flags: int) -> None:
        """cuEventRecord with flags."""
        ev = self._event(event)
        handle, _ = self._stream(stream)
        self._call("cuEventRecordWithFlags", "cuEventRecordWithFlags", ev.handle, handle,
                   int(flags))

    @_api
    def cuEventQuery(self, event: int) -> None:
        """Return if the event's work is done, else CUDA_ERROR_NOT_READY."""
        ev = self._event(event)
        self._call("cuEventQuery", "cuEventQuery", ev.handle)

    @_api
    def cuEventSynchronize(self, event: int) -> None:
        """Wait for the event's work."""
        ev = self._event(event)
        self._call("cuEventSynchronize", "cuEventSynchronize", ev.handle)

    @_api
    def cuEventElapsedTime_v2(self, start: int, end: int) -> float:
        """Milliseconds between two recorded events."""
        a, b = self._event(start), self._event(end)
        name = "cuEventElapsedTime_v2" if hasattr(self.driver, "cuEventElapsedTime_v2") \
            else "cuEventElapsedTime"
        return float(self._call("cuEventElapsedTime_v2", name, a.handle, b.handle))
