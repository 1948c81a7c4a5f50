"""The emulated CUDA device: CUDA driver semantics over the PTX machine in `emu.ptx`.

This layer owns everything a driver does besides running instructions: contexts and their
sticky errors, allocation ownership, module and library loading from fatbins, parameter layouts,
launch validation, streams and events, and translating the PTX machine's `EmuFault`s into the
`CUresult` an app expects. Work runs synchronously when submitted, which keeps stream order
trivially; events are stamped when their stream reaches them, i.e. after all earlier work, so
`cuEventElapsedTime` measures the real time the work in between took.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from rgpu.server.cuda.attributes import CUdevice_attribute as A
from rgpu.server.cuda.attributes import CUfunction_attribute as F
from rgpu.server.cuda.backend import (
    CU_EVENT_DISABLE_TIMING,
    CU_MEMORYTYPE_ARRAY,
    CU_MEMORYTYPE_DEVICE,
    CU_MEMORYTYPE_HOST,
    CU_MEMORYTYPE_UNIFIED,
    CudaBackend,
    CudaDeviceFacts,
    CudaSession,
)
from rgpu.server.cuda.emu.arrays import (
    CU_RESOURCE_TYPE_ARRAY,
    CU_RESOURCE_TYPE_LINEAR,
    CU_RESOURCE_TYPE_MIPMAPPED_ARRAY,
    CU_RESOURCE_TYPE_PITCH2D,
    EmuArray,
    EmuMipmap,
    array_layout,
    check_texture,
    copy_3d,
    linear_resource,
    mipmap_level_descs,
    sampler_from,
)
from rgpu.server.cuda.emu.device import (
    DEVICE_ARCH,
    MAX_BLOCK_DIM,
    MAX_BLOCKS_PER_MULTIPROCESSOR,
    MAX_GRID_DIM,
    MAX_THREADS_PER_BLOCK,
    MAX_THREADS_PER_MULTIPROCESSOR,
    REGISTERS_PER_MULTIPROCESSOR,
    SHARED_MEMORY_PER_BLOCK,
    SHARED_MEMORY_PER_BLOCK_OPTIN,
    STREAM_PRIORITY_GREATEST,
    STREAM_PRIORITY_LEAST,
    EmuDeviceConfig,
    emulated_device_facts,
)
from rgpu.server.cuda.emu.ptx import DeviceMemory, EmuFault, LoadedModule, PtxModule, parse_ptx
from rgpu.server.cuda.emu.ptx.texture import Resource, SurfaceObject, TextureObject
from rgpu.server.cuda.errors import CudaError, CUresult
from rgpu.server.cuda.fatbin import ptx_from_image

log = logging.getLogger("rgpu.server.cuda")

R = CUresult

# EmuFault kind -> (CUresult, sticky). Sticky faults poison the context, as on a real GPU where
# a faulting kernel leaves the context in an undefined state.
_FAULTS: dict[str, tuple[CUresult, bool]] = {
    "illegal_address": (R.CUDA_ERROR_ILLEGAL_ADDRESS, True),
    "misaligned_address": (R.CUDA_ERROR_MISALIGNED_ADDRESS, True),
    "barrier_divergence": (R.CUDA_ERROR_LAUNCH_FAILED, True),
    "launch_failed": (R.CUDA_ERROR_LAUNCH_FAILED, True),
    "assert": (R.CUDA_ERROR_ASSERT, True),  # a failed device-side assert()
    "not_supported": (R.CUDA_ERROR_NOT_SUPPORTED, False),
    "invalid_ptx": (R.CUDA_ERROR_INVALID_PTX, False),
    "out_of_memory": (R.CUDA_ERROR_OUT_OF_MEMORY, False),
    "invalid_value": (R.CUDA_ERROR_INVALID_VALUE, False),
}

# `CUlimit` defaults reported by cuCtxGetLimit (what a Turing GPU reports).
_LIMIT_DEFAULTS: dict[int, int] = {
    0: 1024,  # CU_LIMIT_STACK_SIZE
    1: 1 << 20,  # CU_LIMIT_PRINTF_FIFO_SIZE
    2: 8 << 20,  # CU_LIMIT_MALLOC_HEAP_SIZE
    3: 2,  # CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH
    4: 2048,  # CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT
    5: 64,  # CU_LIMIT_MAX_L2_FETCH_GRANULARITY
    6: 0,  # CU_LIMIT_PERSISTING_L2_CACHE_SIZE
}

_DEFAULT_STREAMS = (0, 1, 2)  # NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD
_PARSE_CACHE_SIZE = 32
_PRINTF_KEPT = 10_000


_MANAGED_ATTRIBUTE = re.compile(r"\.attribute\s*\(\s*\.managed\s*\)\s*")
_DECLARED_NAME = re.compile(r"([A-Za-z_$%][\w$]*)\s*(?:\[[^\]]*\])*\s*(?:=|;)")


def managed_globals(text: str) -> tuple[str, frozenset[str]]:
    """PTX without `.attribute(.managed)` and the names of the variables that had it.

    The attribute only tells the driver that the host sees the variable too (the shim keeps a
    coherent host copy, from cuLibraryGetManaged); to the device it is an ordinary global.
    """
    if ".managed" not in text:
        return text, frozenset()
    names: set[str] = set()
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if _MANAGED_ATTRIBUTE.search(line):
            line = _MANAGED_ATTRIBUTE.sub("", line)
            m = _DECLARED_NAME.search(line)
            if m:
                names.add(m.group(1))
        out.append(line)
    return "".join(out), frozenset(names)


def fault_to_error(fault: EmuFault) -> tuple[CudaError, bool]:
    """The CudaError an EmuFault becomes, and whether it poisons the context."""
    code, sticky = _FAULTS.get(fault.kind, (R.CUDA_ERROR_UNKNOWN, False))
    return CudaError(code, fault.message), sticky


# Calls that still work on a context poisoned by a launch fault: the ones an app uses to recover
# (destroy, release, reset) or to find out which context it is in.
_STICKY_EXEMPT = frozenset({
    "cuCtxDestroy_v2", "cuCtxSetCurrent", "cuCtxGetCurrent", "cuCtxPushCurrent_v2",
    "cuCtxPopCurrent_v2", "cuCtxGetDevice", "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxReset_v2", "cuDevicePrimaryCtxGetState",
    "cuDevicePrimaryCtxSetFlags_v2", "cuCtxCreate_v4", "cuRgpuPrintfPending",
})

P = ParamSpec("P")
T = TypeVar("T")


def _api(
    method: Callable[Concatenate[EmuSession, P], T],
) -> Callable[Concatenate[EmuSession, P], T]:
    """Serialise a session call and make sure only CudaError leaves it.

    The server relies on this: whatever an app sends, the answer is a CUresult, never a
    traceback. Argument-shape mistakes become CUDA_ERROR_INVALID_VALUE; anything unexpected is
    logged with its traceback and answered with CUDA_ERROR_UNKNOWN.
    """

    @functools.wraps(method)
    def call(self: EmuSession, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            if self._closed:
                raise CudaError(R.CUDA_ERROR_DEINITIALIZED, f"session {self.name} is closed")
            try:
                if method.__name__ not in _STICKY_EXEMPT:
                    self._check_current_sticky()
                return method(self, *args, **kwargs)
            except CudaError:
                raise
            except EmuFault as fault:
                raise fault_to_error(fault)[0] from None
            except (TypeError, ValueError, OverflowError, KeyError, IndexError) as exc:
                log.debug("%s rejected its arguments", method.__name__, exc_info=True)
                raise CudaError(
                    R.CUDA_ERROR_INVALID_VALUE, f"{method.__name__}: bad argument ({exc})"
                ) from None
            except Exception as exc:
                log.exception("[session %s] %s failed unexpectedly", self.name, method.__name__)
                raise CudaError(
                    R.CUDA_ERROR_UNKNOWN, f"{method.__name__}: internal error ({exc})"
                ) from None

    return call


@dataclass
class _Context:
    id: int
    device: int
    flags: int
    primary: bool
    allocations: set[int] = field(default_factory=set)
    sticky: CudaError | None = None
    limits: dict[int, int] = field(default_factory=lambda: dict(_LIMIT_DEFAULTS))


@dataclass
class _Code:
    """A PTX module loaded into one device's memory (a module, or a library's instance)."""

    ptx: PtxModule
    loaded: LoadedModule
    source: str
    device: int
    managed: frozenset[str] = frozenset()  # `__managed__` variables (cuLibraryGetManaged)


@dataclass
class _Module:
    id: int
    context: int
    code: _Code
    owned: bool  # False for cuLibraryGetModule aliases: the library owns the code


@dataclass
class _Library:
    id: int
    code: _Code


@dataclass
class _Function:
    """A CUfunction or CUkernel: a kernel name in some loaded code, plus settable attributes."""

    id: int
    name: str
    code: _Code
    owner: int  # module id (functions) or library id (kernels)
    attrs: dict[int, int] = field(default_factory=dict)


@dataclass
class _Stream:
    id: int
    context: int
    flags: int
    priority: int = 0


@dataclass
class _Event:
    id: int
    context: int
    flags: int
    stamp: float | None = None


class EmuCudaBackend(CudaBackend):
    """Emulated CPU CUDA devices shared by all sessions of one server."""

    kind = "emu"
    # Calls the server may answer on its event loop while the session's worker is idle: device
    # work runs to completion when it is issued, so these only read state (see server.py).
    inline_calls = frozenset({
        "cuCtxSynchronize", "cuStreamSynchronize", "cuStreamQuery", "cuEventSynchronize",
        "cuEventQuery", "cuEventElapsedTime_v2", "cuMemGetInfo_v2", "cuPointerGetAttribute",
        "cuMemGetAddressRange_v2", "cuFuncGetAttribute", "cuCtxGetLimit",
        "cuStreamGetPriority", "cuStreamGetFlags"})
    # Queries the server answers CUDA_ERROR_NOT_READY at once while the session's worker is
    # still running its earlier work (a kernel runs to completion on that thread), as a GPU
    # answers while it is busy, instead of waiting behind it.
    busy_queries = frozenset({"cuStreamQuery", "cuEventQuery"})

    def __init__(self, config: EmuDeviceConfig | None = None) -> None:
        self.config = config or EmuDeviceConfig()
        if self.config.device_count < 1:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "the emulated backend needs >= 1 device")
        try:
            self.memories = [
                DeviceMemory(self.config.memory_size, self.config.device_base(i))
                for i in range(self.config.device_count)
            ]
        except EmuFault as fault:
            raise fault_to_error(fault)[0] from None
        self._facts = [
            emulated_device_facts(self.config, i) for i in range(self.config.device_count)
        ]
        self._parse_cache: OrderedDict[bytes, PtxModule] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._sessions: set[EmuSession] = set()

    def cuDeviceGetCount(self) -> int:
        """Number of emulated devices."""
        return len(self._facts)

    def device_facts(self, ordinal: int) -> CudaDeviceFacts:
        """Facts of device `ordinal` (CUDA_ERROR_INVALID_DEVICE when out of range)."""
        if not 0 <= ordinal < len(self._facts):
            raise CudaError(R.CUDA_ERROR_INVALID_DEVICE, f"no device {ordinal}")
        return self._facts[ordinal]

    def cuDriverGetVersion(self) -> int:
        """The CUDA driver version the emulated device claims."""
        return self.config.driver_version

    def open_session(
        self, session_name: str, on_printf: Callable[[str], None] | None = None
    ) -> EmuSession:
        """A new session; `on_printf` also receives each kernel printf line (besides the log)."""
        session = EmuSession(self, session_name, on_printf)
        self._sessions.add(session)
        return session

    def close(self) -> None:
        """Close any sessions still open."""
        for session in list(self._sessions):
            session.close()

    def _forget(self, session: EmuSession) -> None:
        self._sessions.discard(session)

    def parse(self, text: str) -> PtxModule:
        """Parse PTX once per distinct text: cudart loads the same fatbin in every process, and
        tests load the same module many times."""
        key = hashlib.sha256(text.encode()).digest()
        with self._cache_lock:
            hit = self._parse_cache.get(key)
            if hit is not None:
                self._parse_cache.move_to_end(key)
                return hit
        module = parse_ptx(text)
        with self._cache_lock:
            self._parse_cache[key] = module
            while len(self._parse_cache) > _PARSE_CACHE_SIZE:
                self._parse_cache.popitem(last=False)
        return module


class EmuSession(CudaSession):
    """One client's contexts, memory, code, streams and events on the emulated devices."""

    def __init__(
        self,
        backend: EmuCudaBackend,
        name: str,
        on_printf: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        # The latest printf outputs, for tests and for forwarding to the client; bounded so a
        # kernel printing in a loop cannot exhaust the server's memory.
        self.printf_output: deque[str] = deque(maxlen=_PRINTF_KEPT)
        self._on_printf = on_printf
        # Kernel printf output not yet handed to the application: the shim writes it to the
        # app's stdout when a synchronising call returns it (as the driver flushes its printf
        # buffer at synchronisation). Bounded like `printf_output`.
        self._printf_pending: deque[str] = deque(maxlen=_PRINTF_KEPT)
        self._lock = threading.RLock()
        self._closed = False
        self._contexts: dict[int, _Context] = {}
        self._primary: dict[int, tuple[int, int]] = {}  # device -> (context id, retain count)
        self._primary_flags: dict[int, int] = {}
        self._current: int | None = None
        self._stack: list[int] = []
        self._modules: dict[int, _Module] = {}
        self._libraries: dict[int, _Library] = {}
        self._functions: dict[int, _Function] = {}
        self._kernels: dict[int, _Function] = {}
        self._streams: dict[int, _Stream] = {}
        self._events: dict[int, _Event] = {}
        self._arrays: dict[int, EmuArray] = {}
        self._mipmaps: dict[int, EmuMipmap] = {}
        self._objects: dict[int, int] = {}  # texture/surface object handle -> context id

    # --- helpers ----------------------------------------------------------------------------
    def _printf(self, text: str) -> None:
        for line in text.rstrip("\n").split("\n"):
            log.info("[session %s] %s", self.name, line)
        self.printf_output.append(text)
        self._printf_pending.append(text)
        if self._on_printf is not None:
            self._on_printf(text)

    def _sync_result(self) -> dict[str, str] | None:
        """What a synchronising call returns: the kernel printf output produced since the last
        one (``{"printf": text}``), or None."""
        if not self._printf_pending:
            return None
        text = "".join(self._printf_pending)
        self._printf_pending.clear()
        return {"printf": text}

    def _memory(self, ctx: _Context) -> DeviceMemory:
        return self.backend.memories[ctx.device]

    def _check_current_sticky(self) -> None:
        """Every call made while a poisoned context is current fails with its error."""
        ctx = self._contexts.get(self._current) if self._current is not None else None
        if ctx is not None:
            _raise_sticky(ctx)

    def _ctx(self, check_sticky: bool = True) -> _Context:
        """The current context, raising its sticky error when it has one."""
        if self._current is None or self._current not in self._contexts:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT, "no current context")
        ctx = self._contexts[self._current]
        if check_sticky:
            _raise_sticky(ctx)
        return ctx

    def _context_of(self, ctx_id: int) -> _Context:
        ctx = self._contexts.get(ctx_id)
        if ctx is None:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT, f"context {ctx_id} does not exist")
        return ctx

    def _device(self, dev: int) -> int:
        if not 0 <= dev < self.backend.cuDeviceGetCount():
            raise CudaError(R.CUDA_ERROR_INVALID_DEVICE, f"no device {dev}")
        return dev

    def _new_id(self, table: dict[int, Any], handle: int, what: str) -> int:
        if not isinstance(handle, int) or handle <= 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{what} id must be a positive int")
        if handle in table:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{what} id {handle} is already in use")
        return handle

    def _stream_ctx(self, stream: int) -> _Context:
        """The context a stream's work runs in (the current one for the default streams)."""
        if stream in _DEFAULT_STREAMS:
            return self._ctx()
        s = self._streams.get(stream)
        if s is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"stream {stream} does not exist")
        ctx = self._context_of(s.context)
        _raise_sticky(ctx)
        return ctx

    def _owner_of(self, dptr: int) -> _Context | None:
        for ctx in self._contexts.values():
            if dptr in ctx.allocations:
                return ctx
        return None

    def _host_access(self, fn: Callable[[], T]) -> T:
        """Run a host-side memory access; a bad range is the caller's INVALID_VALUE, not a
        device fault (the driver validates copies before touching memory)."""
        try:
            return fn()
        except EmuFault as fault:
            if fault.kind in ("illegal_address", "misaligned_address"):
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, fault.message) from None
            raise

    def _release_context(self, ctx: _Context) -> None:
        memory = self._memory(ctx)
        for mod in [m for m in self._modules.values() if m.context == ctx.id]:
            self._drop_module(mod)
        for arr in [a for a in self._arrays.values() if a.context == ctx.id]:
            if not arr.mipmap:  # a level's memory is its mipmapped array's
                memory.free(arr.resource.base)
            del self._arrays[arr.id]
        for mip in [m for m in self._mipmaps.values() if m.context == ctx.id]:
            for level in mip.levels:
                memory.free(level.resource.base)
            del self._mipmaps[mip.id]
        for handle in [h for h, owner in self._objects.items() if owner == ctx.id]:
            memory.descriptors.remove(handle)
            del self._objects[handle]
        for dptr in list(ctx.allocations):
            memory.free(dptr)
        ctx.allocations.clear()
        for sid in [s.id for s in self._streams.values() if s.context == ctx.id]:
            del self._streams[sid]
        for eid in [e.id for e in self._events.values() if e.context == ctx.id]:
            del self._events[eid]
        ctx.sticky = None

    def _drop_module(self, mod: _Module) -> None:
        del self._modules[mod.id]
        for fid in [f.id for f in self._functions.values() if f.code is mod.code]:
            if mod.owned:
                del self._functions[fid]
        if mod.owned:
            mod.code.loaded.unload()

    def _load_code(self, image: bytes, device: int) -> _Code:
        if not isinstance(image, bytes | bytearray | memoryview):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "image must be bytes")
        choice = ptx_from_image(bytes(image), DEVICE_ARCH)
        text, managed = managed_globals(choice.text)
        ptx = self.backend.parse(text)
        loaded = LoadedModule(ptx, self.backend.memories[device])
        log.debug("[session %s] loaded %s: kernels %s", self.name, choice.source,
                  ", ".join(sorted(ptx.kernels)))
        return _Code(ptx=ptx, loaded=loaded, source=choice.source, device=device,
                     managed=managed)

    def _function(self, f: int) -> _Function:
        """A function, or a kernel passed where a function is expected (cudart does so)."""
        fn = self._functions.get(f) or self._kernels.get(f)
        if fn is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"function {f} does not exist")
        return fn

    def _kernel(self, k: int) -> _Function:
        fn = self._kernels.get(k) or self._functions.get(k)
        if fn is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"kernel {k} does not exist")
        return fn

    # --- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release everything; later calls get CUDA_ERROR_DEINITIALIZED."""
        with self._lock:
            if self._closed:
                return
            try:
                for ctx in list(self._contexts.values()):
                    self._release_context(ctx)
                for lib in list(self._libraries.values()):
                    lib.code.loaded.unload()
            except Exception:
                log.exception("[session %s] cleanup failed", self.name)
            self._contexts.clear()
            self._libraries.clear()
            self._modules.clear()
            self._functions.clear()
            self._kernels.clear()
            self._closed = True
            self.backend._forget(self)

    # --- contexts ---------------------------------------------------------------------------
    @_api
    def cuDevicePrimaryCtxRetain(self, ctx: int, dev: int) -> None:
        """Retain the primary context as `ctx`; current if nothing else is."""
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
            self._contexts[ctx] = _Context(id=ctx, device=dev, flags=flags, primary=True)
            self._primary[dev] = (ctx, 1)
        if self._current is None:
            self._current = ctx

    @_api
    def cuDevicePrimaryCtxRelease_v2(self, dev: int) -> None:
        """Drop a retain; the last one frees the primary context's resources."""
        self._device(dev)
        if dev not in self._primary:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT, f"device {dev}'s primary context is "
                            "not retained")
        cid, count = self._primary[dev]
        if count > 1:
            self._primary[dev] = (cid, count - 1)
            return
        self._release_context(self._contexts[cid])
        del self._contexts[cid]
        del self._primary[dev]
        if self._current == cid:
            self._current = None
        self._stack = [c for c in self._stack if c != cid]

    @_api
    def cuDevicePrimaryCtxReset_v2(self, dev: int) -> dict[str, str] | None:
        """Free the primary context's resources and clear its sticky error."""
        self._device(dev)
        if dev in self._primary:
            self._release_context(self._contexts[self._primary[dev][0]])
        return self._sync_result()

    @_api
    def cuDevicePrimaryCtxGetState(self, dev: int) -> list[int]:
        """[flags, active]."""
        self._device(dev)
        return [self._primary_flags.get(dev, 0), int(dev in self._primary)]

    @_api
    def cuDevicePrimaryCtxSetFlags_v2(self, dev: int, flags: int) -> None:
        """Record the flags (scheduling hints mean nothing on the emulator)."""
        self._device(dev)
        self._primary_flags[dev] = int(flags)
        if dev in self._primary:
            self._contexts[self._primary[dev][0]].flags = int(flags)

    @_api
    def cuCtxCreate_v4(self, ctx: int, flags: int, dev: int) -> None:
        """Create a context and make it current."""
        self._device(dev)
        self._new_id(self._contexts, ctx, "context")
        self._contexts[ctx] = _Context(id=ctx, device=dev, flags=int(flags), primary=False)
        self._current = ctx

    @_api
    def cuCtxDestroy_v2(self, ctx: int) -> None:
        """Destroy a created context with everything in it."""
        c = self._context_of(ctx)
        if c.primary:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT, "a primary context is released, "
                            "not destroyed")
        self._release_context(c)
        del self._contexts[ctx]
        if self._current == ctx:
            self._current = None
        self._stack = [x for x in self._stack if x != ctx]

    @_api
    def cuCtxSetCurrent(self, ctx: int) -> None:
        """Bind `ctx` (0 unbinds)."""
        if ctx == 0:
            self._current = None
            return
        self._context_of(ctx)
        self._current = ctx

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

    @_api
    def cuCtxPopCurrent_v2(self) -> int:
        """Unbind the current context, restoring the previous one."""
        if self._current is None:
            raise CudaError(R.CUDA_ERROR_INVALID_CONTEXT, "no current context to pop")
        popped = self._current
        self._current = self._stack.pop() if self._stack else None
        return popped

    @_api
    def cuCtxGetDevice(self) -> int:
        """The current context's device."""
        return self._ctx(check_sticky=False).device

    @_api
    def cuCtxSynchronize(self) -> dict[str, str] | None:
        """All work already ran; report a sticky error if there is one."""
        self._ctx()
        return self._sync_result()

    @_api
    def cuRgpuPrintfPending(self) -> dict[str, str] | None:
        """The kernel printf output not yet handed to the application, as a synchronising call
        returns it (an rgpu call, not the driver's: the server routes `cu*` names to the CUDA
        backend). The shim asks for it when a synchronising call fails (a kernel that printed
        and then faulted): the driver flushes its printf buffer to the app's stdout then too."""
        return self._sync_result()

    @_api
    def cuCtxGetLimit(self, limit: int) -> int:
        """A CUlimit value."""
        ctx = self._ctx()
        if limit not in ctx.limits:
            raise CudaError(R.CUDA_ERROR_UNSUPPORTED_LIMIT, f"limit {limit} is not supported")
        return ctx.limits[limit]

    @_api
    def cuCtxSetLimit(self, limit: int, value: int) -> None:
        """Record a CUlimit (the emulator has no fixed-size device heaps to resize)."""
        ctx = self._ctx()
        if limit not in ctx.limits:
            raise CudaError(R.CUDA_ERROR_UNSUPPORTED_LIMIT, f"limit {limit} is not supported")
        if value < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "limit values are non-negative")
        ctx.limits[limit] = int(value)

    @_api
    def cuCtxGetFlags(self) -> int:
        """The current context's flags."""
        return self._ctx().flags

    @_api
    def cuCtxGetStreamPriorityRange(self) -> list[int]:
        """Turing's range: 0 (least) to -5 (greatest)."""
        self._ctx()
        return [STREAM_PRIORITY_LEAST, STREAM_PRIORITY_GREATEST]

    # --- memory -----------------------------------------------------------------------------
    @_api
    def cuMemAlloc_v2(self, bytesize: int) -> int:
        """Allocate in the current context."""
        ctx = self._ctx()
        if bytesize <= 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes")
        try:  # aligned as the device's CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT, so textures fit
            dptr = self._memory(ctx).alloc(int(bytesize), 512)
        except EmuFault as fault:
            if fault.kind == "out_of_memory":
                raise CudaError(R.CUDA_ERROR_OUT_OF_MEMORY, fault.message) from None
            raise
        ctx.allocations.add(dptr)
        return dptr

    @_api
    def cuMemAllocPitch_v2(self, width: int, height: int, element_size: int) -> list[int]:
        """A pitched allocation; rows are padded to 512 bytes like the texture pitch."""
        if element_size not in (4, 8, 16) or width <= 0 or height <= 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "bad cuMemAllocPitch arguments")
        pitch = (int(width) + 511) // 512 * 512
        dptr = self.cuMemAlloc_v2(pitch * int(height))
        return [dptr, pitch]

    @_api
    def cuMemFree_v2(self, dptr: int) -> None:
        """Free one of the session's allocations."""
        owner = self._owner_of(dptr)
        if owner is None:
            raise CudaError(
                R.CUDA_ERROR_INVALID_VALUE, f"{dptr:#x} is not an allocation of this session"
            )
        _raise_sticky(owner)
        self._memory(owner).free(dptr)
        owner.allocations.discard(dptr)

    @_api
    def cuMemGetInfo_v2(self) -> list[int]:
        """[free, total] of the current device."""
        memory = self._memory(self._ctx())
        return [memory.total - memory.used, memory.total]

    @_api
    def cuMemGetAddressRange_v2(self, dptr: int) -> list[int]:
        """[base, size] of the allocation holding `dptr`."""
        memory = self._memory(self._ctx())
        hit = memory.allocation_of(dptr)
        if hit is None:
            raise CudaError(R.CUDA_ERROR_NOT_FOUND, f"{dptr:#x} is not in any allocation")
        return [hit[0], hit[1]]

    def _htod(self, ctx: _Context, dst: int, data: bytes) -> None:
        memory = self._memory(ctx)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "host data must be bytes")
        self._host_access(lambda: memory.write(dst, data))

    def _dtoh(self, ctx: _Context, src: int, bytesize: int) -> bytes:
        memory = self._memory(ctx)
        return self._host_access(lambda: memory.read(src, int(bytesize)))

    def _dtod(self, ctx: _Context, dst: int, src: int, bytesize: int) -> None:
        memory = self._memory(ctx)

        def copy() -> None:
            source = memory.view(src, int(bytesize))
            memory.view(dst, int(bytesize))[:] = source  # numpy copes with overlap

        self._host_access(copy)

    @_api
    def cuMemcpyHtoD_v2(self, dst: int, data: bytes) -> None:
        """Host to device."""
        self._htod(self._ctx(), dst, data)

    @_api
    def cuMemcpyDtoH_v2(self, src: int, bytesize: int) -> bytes:
        """Device to host."""
        return self._dtoh(self._ctx(), src, bytesize)

    @_api
    def cuMemcpyDtoD_v2(self, dst: int, src: int, bytesize: int) -> None:
        """Device to device."""
        self._dtod(self._ctx(), dst, src, bytesize)

    @_api
    def cuMemcpy(self, dst: int, src: int, bytesize: int) -> None:
        """Unified copy between device pointers."""
        self._dtod(self._ctx(), dst, src, bytesize)

    @_api
    def cuMemcpyAsync(self, dst: int, src: int, bytesize: int, stream: int) -> None:
        """Unified copy in stream order."""
        self._dtod(self._stream_ctx(stream), dst, src, bytesize)

    @_api
    def cuPointerGetAttribute(self, attribute: int, ptr: int) -> int:
        """Pointer facts for the session's own allocations (others are INVALID_VALUE, as the
        driver says for pointers it does not know)."""
        for ctx in self._contexts.values():
            hit = self._memory(ctx).allocation_of(ptr)
            if hit is not None and hit[0] in ctx.allocations:
                break
        else:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{ptr:#x} is not a device pointer of "
                            "this session")
        base, size = hit
        answers = {
            1: ctx.id,  # CONTEXT
            2: CU_MEMORYTYPE_DEVICE,  # MEMORY_TYPE
            3: ptr,  # DEVICE_POINTER
            6: 1,  # SYNC_MEMOPS
            7: base,  # BUFFER_ID: unique while allocated
            8: 0,  # IS_MANAGED
            9: ctx.device,  # DEVICE_ORDINAL
            10: 0,  # IS_LEGACY_CUDA_IPC_CAPABLE
            11: base,  # RANGE_START_ADDR
            12: size,  # RANGE_SIZE
            13: 1,  # MAPPED
            14: 0,  # ALLOWED_HANDLE_TYPES
            15: 0,  # IS_GPU_DIRECT_RDMA_CAPABLE
            16: 3,  # ACCESS_FLAGS: read-write
            18: size,  # MAPPING_SIZE
            19: base,  # MAPPING_BASE_ADDR
            20: base,  # MEMORY_BLOCK_ID
            21: 0,  # IS_HW_DECOMPRESS_CAPABLE
        }
        if attribute not in answers:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"pointer attribute {attribute} does not apply to device memory")
        return answers[attribute]

    @_api
    def cuMemcpyHtoDAsync_v2(self, dst: int, data: bytes, stream: int) -> None:
        """Host to device in stream order."""
        self._htod(self._stream_ctx(stream), dst, data)

    @_api
    def cuMemcpyDtoHAsync_v2(self, src: int, bytesize: int, stream: int) -> bytes:
        """Device to host in stream order."""
        return self._dtoh(self._stream_ctx(stream), src, bytesize)

    @_api
    def cuMemcpyDtoDAsync_v2(self, dst: int, src: int, bytesize: int, stream: int) -> None:
        """Device to device in stream order."""
        self._dtod(self._stream_ctx(stream), dst, src, bytesize)

    def _copy2d(self, ctx: _Context, copy: dict[str, int], host_data: bytes | None) -> bytes | None:
        memory = self._memory(ctx)
        width, height = int(copy["WidthInBytes"]), int(copy["Height"])
        if width < 0 or height < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "negative 2D copy extent")
        kinds = (int(copy["srcMemoryType"]), int(copy["dstMemoryType"]))
        if CU_MEMORYTYPE_ARRAY in kinds:
            return self._copy3d(ctx, {**copy, "Depth": 1}, host_data)
        rows: list[bytes] = []
        src_type = kinds[0]
        if src_type == CU_MEMORYTYPE_HOST:
            if host_data is None or len(host_data) < width * height:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                                f"2D copy needs {width * height} bytes of host data")
            rows = [bytes(host_data[r * width : (r + 1) * width]) for r in range(height)]
        elif src_type in (CU_MEMORYTYPE_DEVICE, CU_MEMORYTYPE_UNIFIED):
            base = int(copy["srcDevice"]) + int(copy["srcY"]) * int(copy["srcPitch"])
            base += int(copy["srcXInBytes"])
            pitch = int(copy["srcPitch"])
            rows = [self._host_access(lambda r=r: memory.read(base + r * pitch, width))
                    for r in range(height)]
        else:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad srcMemoryType {src_type}")
        dst_type = kinds[1]
        if dst_type == CU_MEMORYTYPE_HOST:
            return b"".join(rows)
        if dst_type not in (CU_MEMORYTYPE_DEVICE, CU_MEMORYTYPE_UNIFIED):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad dstMemoryType {dst_type}")
        base = int(copy["dstDevice"]) + int(copy["dstY"]) * int(copy["dstPitch"])
        base += int(copy["dstXInBytes"])
        pitch = int(copy["dstPitch"])
        for r, row in enumerate(rows):
            self._host_access(lambda r=r, row=row: memory.write(base + r * pitch, row))
        return None

    @_api
    def cuMemcpy2D_v2(self, copy: dict[str, int], host_data: bytes | None = None) -> bytes | None:
        """A 2D copy (host sides packed row after row)."""
        return self._copy2d(self._ctx(), copy, host_data)

    @_api
    def cuMemcpy2DAsync_v2(
        self, copy: dict[str, int], stream: int, host_data: bytes | None = None
    ) -> bytes | None:
        """A 2D copy in stream order."""
        return self._copy2d(self._stream_ctx(stream), copy, host_data)

    # --- CUDA arrays, texture and surface objects ------------------------------------------
    def _array(self, array: int) -> EmuArray:
        arr = self._arrays.get(array)
        if arr is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"array {array} does not exist")
        return arr

    def _allocate_array(self, ctx: _Context, array: int, desc: dict[str, Any]) -> EmuArray:
        norm, res, nbytes = array_layout(desc)
        try:
            base = self._memory(ctx).alloc(nbytes, 512)
        except EmuFault as fault:
            if fault.kind == "out_of_memory":
                raise CudaError(R.CUDA_ERROR_OUT_OF_MEMORY, fault.message) from None
            raise
        return EmuArray(array, ctx.id, norm, Resource(**{**res.__dict__, "base": base}))

    def _create_array(self, array: int, desc: dict[str, Any]) -> None:
        ctx = self._ctx()
        self._new_id(self._arrays, array, "array")
        self._arrays[array] = self._allocate_array(ctx, array, desc)

    @_api
    def cuMipmappedArrayCreate(self, mipmap: int, desc: dict[str, Any], num_levels: int) -> None:
        """A mipmapped array with id `mipmap`: `num_levels` arrays, each level half the size of
        the one before (CUDA_ARRAY3D_DESCRIPTOR's fields describe level 0)."""
        ctx = self._ctx()
        self._new_id(self._mipmaps, mipmap, "mipmapped array")
        levels: list[EmuArray] = []
        try:
            for level_desc in mipmap_level_descs(desc, int(num_levels)):
                levels.append(self._allocate_array(ctx, 0, level_desc))
        except CudaError:
            for made in levels:
                self._memory(ctx).free(made.resource.base)
            raise
        self._mipmaps[mipmap] = EmuMipmap(mipmap, ctx.id, levels[0].desc, levels)

    def _mipmap(self, mipmap: int) -> EmuMipmap:
        mip = self._mipmaps.get(mipmap)
        if mip is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"mipmapped array {mipmap} does not exist")
        return mip

    @_api
    def cuMipmappedArrayGetLevel(self, array: int, mipmap: int, level: int) -> None:
        """Bind array id `array` to one level of a mipmapped array (its memory stays the
        mipmapped array's)."""
        mip = self._mipmap(mipmap)
        if not 0 <= int(level) < len(mip.levels):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"no level {level} in mipmapped array "
                            f"{mipmap} of {len(mip.levels)}")  # fmt: skip
        self._new_id(self._arrays, array, "array")
        lv = mip.levels[int(level)]
        self._arrays[array] = EmuArray(array, mip.context, lv.desc, lv.resource, mipmap)

    @_api
    def cuMipmappedArrayDestroy(self, mipmap: int) -> None:
        """Free a mipmapped array and forget the ids bound to its levels."""
        mip = self._mipmap(mipmap)
        memory = self._memory(self._context_of(mip.context))
        for level in mip.levels:
            memory.free(level.resource.base)
        for aid in [a.id for a in self._arrays.values() if a.mipmap == mipmap]:
            del self._arrays[aid]
        del self._mipmaps[mipmap]

    @_api
    def cuArrayCreate_v2(self, array: int, desc: dict[str, Any]) -> None:
        """A 1D or 2D array (CUDA_ARRAY_DESCRIPTOR: Width, Height, Format, NumChannels)."""
        self._create_array(array, {**desc, "Depth": 0, "Flags": 0})

    @_api
    def cuArray3DCreate_v2(self, array: int, desc: dict[str, Any]) -> None:
        """A 1D, 2D, 3D or layered array (CUDA_ARRAY3D_DESCRIPTOR's fields)."""
        self._create_array(array, desc)

    @_api
    def cuArrayDestroy(self, array: int) -> None:
        """Free an array (texture objects over it must not be used afterwards)."""
        arr = self._array(array)
        if arr.mipmap:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"array {array} is a level of mipmapped "
                            f"array {arr.mipmap}: it goes with cuMipmappedArrayDestroy")
        ctx = self._context_of(arr.context)
        self._memory(ctx).free(arr.resource.base)
        del self._arrays[array]

    @_api
    def cuArray3DGetDescriptor_v2(self, array: int) -> dict[str, int]:
        """The array's CUDA_ARRAY3D_DESCRIPTOR fields."""
        return dict(self._array(array).desc)

    def _copy3d(self, ctx: _Context, copy: dict[str, Any], host_data: bytes | None
                ) -> bytes | None:  # fmt: skip
        memory = self._memory(ctx)
        return self._host_access(lambda: copy_3d(memory, copy, host_data, self._array))

    @_api
    def cuMemcpy3D_v2(self, copy: dict[str, Any], host_data: bytes | None = None) -> bytes | None:
        """A 3D copy between host, device memory and arrays."""
        return self._copy3d(self._ctx(), copy, host_data)

    @_api
    def cuMemcpy3DAsync_v2(
        self, copy: dict[str, Any], stream: int, host_data: bytes | None = None
    ) -> bytes | None:
        """A 3D copy in stream order."""
        return self._copy3d(self._stream_ctx(stream), copy, host_data)

    def _resource(self, ctx: _Context, res_desc: dict[str, Any]) -> Resource:
        kind = int(res_desc["resType"])
        if kind == CU_RESOURCE_TYPE_ARRAY:
            arr = self._array(int(res_desc["hArray"]))
            if self._context_of(arr.context).device != ctx.device:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "the array is on another device")
            return arr.resource
        if kind in (CU_RESOURCE_TYPE_LINEAR, CU_RESOURCE_TYPE_PITCH2D):
            return linear_resource(self._memory(ctx), res_desc)
        if kind == CU_RESOURCE_TYPE_MIPMAPPED_ARRAY:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            "a surface needs an array (cuMipmappedArrayGetLevel gives one)")
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad resource type {kind}")

    @_api
    def cuTexObjectCreate(
        self, res_desc: dict[str, Any], tex_desc: dict[str, Any],
        view_desc: dict[str, Any] | None = None,
    ) -> int:
        """A texture object over an array, linear or pitched memory; returns its handle (the
        value kernels receive)."""
        ctx = self._ctx()
        if view_desc:
            raise CudaError(R.CUDA_ERROR_NOT_SUPPORTED,
                            "resource views are not supported by the emulated device")
        sampler = sampler_from(tex_desc)
        if int(res_desc["resType"]) == CU_RESOURCE_TYPE_MIPMAPPED_ARRAY:
            mip = self._mipmap(int(res_desc["hMipmappedArray"]))
            if self._context_of(mip.context).device != ctx.device:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "the array is on another device")
            levels = tuple(level.resource for level in mip.levels)
            tex = TextureObject(levels[0], sampler, levels)
        else:
            tex = TextureObject(self._resource(ctx, res_desc), sampler)
        check_texture(tex)
        handle = self._memory(ctx).descriptors.add(tex)
        self._objects[handle] = ctx.id
        return handle

    @_api
    def cuSurfObjectCreate(self, res_desc: dict[str, Any]) -> int:
        """A surface object over an array created with CUDA_ARRAY3D_SURFACE_LDST."""
        ctx = self._ctx()
        if int(res_desc["resType"]) != CU_RESOURCE_TYPE_ARRAY:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "surfaces need a CUDA array resource")
        res = self._resource(ctx, res_desc)
        if not res.surface:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            "the array was not created with CUDA_ARRAY3D_SURFACE_LDST")
        handle = self._memory(ctx).descriptors.add(SurfaceObject(res))
        self._objects[handle] = ctx.id
        return handle

    def _destroy_object(self, handle: int, kind: type) -> None:
        owner = self._objects.get(handle)
        if owner is None:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{handle:#x} is not an object of this "
                            "session")  # fmt: skip
        memory = self._memory(self._context_of(owner))
        if not isinstance(memory.descriptors.get(handle), kind):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{handle:#x} is another kind of object")
        memory.descriptors.remove(handle)
        del self._objects[handle]

    @_api
    def cuTexObjectDestroy(self, handle: int) -> None:
        """Destroy a texture object."""
        self._destroy_object(handle, TextureObject)

    @_api
    def cuSurfObjectDestroy(self, handle: int) -> None:
        """Destroy a surface object."""
        self._destroy_object(handle, SurfaceObject)

    def _memset(self, ctx: _Context, dst: int, value: int, elem: int, count: int) -> None:
        if dst % elem:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"cuMemsetD{8 * elem} needs a {elem}-byte aligned pointer")
        if count < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "negative memset count")
        memory = self._memory(ctx)
        self._host_access(lambda: memory.memset(dst, int(value), elem, int(count)))

    def _memset2d(self, ctx: _Context, dst: int, pitch: int, value: int, elem: int,
                  width: int, height: int) -> None:
        if width * elem > pitch and height > 1:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "2D memset row is wider than its pitch")
        for r in range(int(height)):
            self._memset(ctx, dst + r * pitch, value, elem, width)

    @_api
    def cuMemsetD8_v2(self, dst: int, value: int, count: int) -> None:
        """Fill bytes."""
        self._memset(self._ctx(), dst, value, 1, count)

    @_api
    def cuMemsetD16_v2(self, dst: int, value: int, count: int) -> None:
        """Fill 16-bit words."""
        self._memset(self._ctx(), dst, value, 2, count)

    @_api
    def cuMemsetD32_v2(self, dst: int, value: int, count: int) -> None:
        """Fill 32-bit words."""
        self._memset(self._ctx(), dst, value, 4, count)

    @_api
    def cuMemsetD8Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """Fill bytes in stream order."""
        self._memset(self._stream_ctx(stream), dst, value, 1, count)

    @_api
    def cuMemsetD16Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """Fill 16-bit words in stream order."""
        self._memset(self._stream_ctx(stream), dst, value, 2, count)

    @_api
    def cuMemsetD32Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """Fill 32-bit words in stream order."""
        self._memset(self._stream_ctx(stream), dst, value, 4, count)

    @_api
    def cuMemsetD2D8_v2(self, dst: int, pitch: int, value: int, width: int, height: int) -> None:
        """Fill a 2D area of bytes."""
        self._memset2d(self._ctx(), dst, pitch, value, 1, width, height)

    @_api
    def cuMemsetD2D16_v2(self, dst: int, pitch: int, value: int, width: int, height: int) -> None:
        """Fill a 2D area of 16-bit words."""
        self._memset2d(self._ctx(), dst, pitch, value, 2, width, height)

    @_api
    def cuMemsetD2D32_v2(self, dst: int, pitch: int, value: int, width: int, height: int) -> None:
        """Fill a 2D area of 32-bit words."""
        self._memset2d(self._ctx(), dst, pitch, value, 4, width, height)

    # --- modules and libraries --------------------------------------------------------------
    @_api
    def cuModuleLoadData(self, module: int, image: bytes) -> None:
        """Load a fatbin, wrapper + fatbin, cubin or PTX into the current context."""
        ctx = self._ctx()
        self._new_id(self._modules, module, "module")
        code = self._load_code(image, ctx.device)
        self._modules[module] = _Module(id=module, context=ctx.id, code=code, owned=True)

    @_api
    def cuModuleLoadDataEx(
        self, module: int, image: bytes, options: dict[int, int] | None = None
    ) -> None:
        """JIT options (optimisation level, log buffers) do not apply to an interpreter."""
        self.cuModuleLoadData(module, image)

    @_api
    def cuModuleLoadFatBinary(self, module: int, image: bytes) -> None:
        """Same as cuModuleLoadData: the image says what it is."""
        self.cuModuleLoadData(module, image)

    @_api
    def cuModuleUnload(self, module: int) -> None:
        """Unload a module and forget its functions."""
        mod = self._modules.get(module)
        if mod is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"module {module} does not exist")
        self._drop_module(mod)

    @_api
    def cuModuleGetFunction(self, func: int, module: int, name: str) -> None:
        """Bind a function id to a kernel of a module."""
        mod = self._modules.get(module)
        if mod is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"module {module} does not exist")
        self._bind(self._functions, func, "function", name, mod.code, module)

    def _bind(self, table: dict[int, _Function], handle: int, what: str, name: str,
              code: _Code, owner: int) -> None:
        if name not in code.ptx.kernels:
            raise CudaError(R.CUDA_ERROR_NOT_FOUND, f"no kernel named {name!r} in the image")
        if handle in self._functions or handle in self._kernels:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{what} id {handle} is already in use")
        self._new_id(table, handle, what)
        table[handle] = _Function(id=handle, name=name, code=code, owner=owner)

    def _global(self, code: _Code, name: str) -> list[int]:
        if name not in code.ptx.globals:
            raise CudaError(R.CUDA_ERROR_NOT_FOUND, f"no global variable named {name!r}")
        addr, size = code.loaded.global_address(name)
        return [int(addr), int(size)]

    @_api
    def cuModuleGetGlobal_v2(self, module: int, name: str) -> list[int]:
        """[dptr, bytes] of a module variable."""
        mod = self._modules.get(module)
        if mod is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"module {module} does not exist")
        self._ctx()
        return self._global(mod.code, name)

    @_api
    def cuLibraryLoadData(
        self,
        library: int,
        image: bytes,
        jit_options: dict[int, int] | None = None,
        library_options: dict[int, int] | None = None,
    ) -> None:
        """Load a library on the current context's device (device 0 without a context)."""
        self._new_id(self._libraries, library, "library")
        if self._current is not None and self._current in self._contexts:
            device = self._ctx().device
        else:
            device = 0
        self._libraries[library] = _Library(id=library, code=self._load_code(image, device))

    @_api
    def cuLibraryUnload(self, library: int) -> None:
        """Unload a library, its kernels and their functions."""
        lib = self._library(library)
        for table in (self._kernels, self._functions):
            for fid in [f.id for f in table.values() if f.code is lib.code]:
                del table[fid]
        for mid in [m.id for m in self._modules.values() if m.code is lib.code]:
            del self._modules[mid]
        lib.code.loaded.unload()
        del self._libraries[library]

    def _library(self, library: int) -> _Library:
        lib = self._libraries.get(library)
        if lib is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"library {library} does not exist")
        return lib

    @_api
    def cuLibraryGetKernel(self, kernel: int, library: int, name: str) -> None:
        """Bind a kernel id to a kernel of a library."""
        lib = self._library(library)
        self._bind(self._kernels, kernel, "kernel", name, lib.code, library)

    @_api
    def cuLibraryGetModule(self, module: int, library: int) -> None:
        """Bind a module id to the library's code (the library keeps owning it)."""
        lib = self._library(library)
        ctx = self._ctx()
        self._new_id(self._modules, module, "module")
        self._modules[module] = _Module(id=module, context=ctx.id, code=lib.code, owned=False)

    @_api
    def cuLibraryGetGlobal(self, library: int, name: str) -> list[int]:
        """[dptr, bytes] of a library variable."""
        return self._global(self._library(library).code, name)

    @_api
    def cuLibraryGetManaged(self, library: int, name: str) -> list[int]:
        """[dptr, bytes] of a library's `__managed__` variable (the shim makes the host's
        copy coherent with it)."""
        code = self._library(library).code
        if name not in code.managed:
            raise CudaError(R.CUDA_ERROR_NOT_FOUND, f"no managed variable named {name!r}")
        return self._global(code, name)

    @_api
    def cuLibraryGetKernelCount(self, library: int) -> int:
        """Kernels in the library."""
        return len(self._library(library).code.ptx.kernels)

    @_api
    def cuKernelGetFunction(self, func: int, kernel: int) -> None:
        """Bind a function id to a kernel's code."""
        k = self._kernels.get(kernel)
        if k is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"kernel {kernel} does not exist")
        self._bind(self._functions, func, "function", k.name, k.code, k.owner)

    @_api
    def cuKernelGetName(self, kernel: int) -> str:
        """The kernel's name."""
        return self._kernel(kernel).name

    @_api
    def cuFuncGetName(self, func: int) -> str:
        """The function's name."""
        return self._function(func).name

    def _param_info(self, fn: _Function, index: int) -> list[int]:
        params = fn.code.ptx.kernels[fn.name].params
        if not 0 <= index < len(params):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"{fn.name} has {len(params)} parameters, no index {index}")
        return [int(params[index].offset), int(params[index].size)]

    @_api
    def cuFuncGetParamInfo(self, func: int, param_index: int) -> list[int]:
        """[offset, size] of a parameter."""
        return self._param_info(self._function(func), param_index)

    @_api
    def cuKernelGetParamInfo(self, kernel: int, param_index: int) -> list[int]:
        """[offset, size] of a kernel parameter."""
        return self._param_info(self._kernel(kernel), param_index)

    def _max_dynamic_shared(self, fn: _Function) -> int:
        static = fn.code.ptx.kernels[fn.name].static_shared_bytes
        default = max(SHARED_MEMORY_PER_BLOCK - static, 0)
        return fn.attrs.get(F.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, default)

    def _func_attribute(self, fn: _Function, attrib: int) -> int:
        info = fn.code.ptx.kernels[fn.name]
        attrib = F(attrib)
        if attrib == F.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
            return int(info.max_threads_per_block or MAX_THREADS_PER_BLOCK)
        if attrib == F.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES:
            return int(info.static_shared_bytes)
        if attrib == F.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES:
            return int(info.local_bytes)
        if attrib == F.CU_FUNC_ATTRIBUTE_NUM_REGS:
            return int(info.regs)
        if attrib == F.CU_FUNC_ATTRIBUTE_PTX_VERSION:
            return _ptx_target_number(fn.code.ptx.target)
        if attrib == F.CU_FUNC_ATTRIBUTE_BINARY_VERSION:
            return DEVICE_ARCH
        if attrib == F.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
            return self._max_dynamic_shared(fn)
        if attrib == F.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
            return fn.attrs.get(int(attrib), -1)
        return fn.attrs.get(int(attrib), 0)

    def _set_func_attribute(self, fn: _Function, attrib: int, value: int) -> None:
        attrib = F(attrib)
        if attrib == F.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
            static = fn.code.ptx.kernels[fn.name].static_shared_bytes
            if not 0 <= value <= SHARED_MEMORY_PER_BLOCK_OPTIN - static:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                                f"dynamic shared memory limit {value} exceeds the device's "
                                f"{SHARED_MEMORY_PER_BLOCK_OPTIN - static} bytes")
        elif attrib == F.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
            if not -1 <= value <= 100:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "carveout is a percentage or -1")
        elif attrib not in (
            F.CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE,
            F.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
            F.CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH,
            F.CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT,
            F.CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH,
        ):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{attrib.name} is read-only")
        fn.attrs[int(attrib)] = int(value)

    @_api
    def cuFuncGetAttribute(self, attrib: int, func: int) -> int:
        """A function attribute."""
        return self._func_attribute(self._function(func), attrib)

    @_api
    def cuKernelGetAttribute(self, attrib: int, kernel: int, dev: int) -> int:
        """A kernel attribute on a device."""
        self._device(dev)
        return self._func_attribute(self._kernel(kernel), attrib)

    @_api
    def cuFuncSetAttribute(self, func: int, attrib: int, value: int) -> None:
        """Set a function attribute."""
        self._set_func_attribute(self._function(func), attrib, value)

    @_api
    def cuKernelSetAttribute(self, attrib: int, value: int, kernel: int, dev: int) -> None:
        """Set a kernel attribute."""
        self._device(dev)
        self._set_func_attribute(self._kernel(kernel), attrib, value)

    @_api
    def cuFuncSetCacheConfig(self, func: int, config: int) -> None:
        """A cache hint: validated, otherwise meaningless here."""
        self._function(func)
        if config not in (0, 1, 2, 3):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad CUfunc_cache {config}")

    # --- execution --------------------------------------------------------------------------
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
        """Validate the launch like the driver, run it, map faults to CUresults."""
        self._launch(f, (gridDimX, gridDimY, gridDimZ), (blockDimX, blockDimY, blockDimZ),
                     sharedMemBytes, hStream, kernelParams, cooperative=False)

    def _launch(
        self,
        f: int,
        grid_dims: tuple[int, int, int],
        block_dims: tuple[int, int, int],
        sharedMemBytes: int,
        hStream: int,
        kernelParams: bytes,
        cooperative: bool,
    ) -> None:
        fn = self._function(f)
        ctx = self._stream_ctx(hStream)
        gridDimX, gridDimY, gridDimZ = grid_dims
        blockDimX, blockDimY, blockDimZ = block_dims
        info = fn.code.ptx.kernels[fn.name]
        grid = (int(gridDimX), int(gridDimY), int(gridDimZ))
        block = (int(blockDimX), int(blockDimY), int(blockDimZ))
        if any(g < 1 or g > m for g, m in zip(grid, MAX_GRID_DIM, strict=True)):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"grid {grid} is out of range")
        if any(b < 1 or b > m for b, m in zip(block, MAX_BLOCK_DIM, strict=True)):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"block {block} is out of range")
        limit = int(info.max_threads_per_block or MAX_THREADS_PER_BLOCK)
        if block[0] * block[1] * block[2] > limit:
            # the driver's answer to a block beyond the function's launch bounds or registers
            raise CudaError(R.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                            f"block {block} has more than {limit} threads")
        if not 0 <= sharedMemBytes <= self._max_dynamic_shared(fn):
            raise CudaError(
                R.CUDA_ERROR_INVALID_VALUE,
                f"{sharedMemBytes} bytes of dynamic shared memory exceed the "
                f"{self._max_dynamic_shared(fn)} allowed (raise it with cuFuncSetAttribute)",
            )
        params = bytes(kernelParams)
        if len(params) < info.param_size:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"{fn.name} takes {info.param_size} bytes of parameters, "
                            f"got {len(params)}")
        params = params[: info.param_size]
        if fn.code.device != ctx.device:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE,
                            f"{fn.name} is loaded on device {fn.code.device}, not {ctx.device}")
        if cooperative:
            # every block must be resident at once, as on the GPU the facts describe
            per_sm = self.cuOccupancyMaxActiveBlocksPerMultiprocessor(
                f, block[0] * block[1] * block[2], int(sharedMemBytes))
            most = per_sm * self.backend.device_facts(ctx.device).attributes[
                A.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT]
            if grid[0] * grid[1] * grid[2] > most:
                raise CudaError(R.CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE,
                                f"a cooperative grid of {grid} blocks exceeds the {most} that "
                                "can be resident at once")
        try:
            fn.code.loaded.memory.heap_limit = ctx.limits[2]  # CU_LIMIT_MALLOC_HEAP_SIZE
            fn.code.loaded.launch(fn.name, grid, block, int(sharedMemBytes), params, self._printf,
                                  cooperative=cooperative, stack_size=ctx.limits[0])
        except EmuFault as fault:
            error, sticky = fault_to_error(fault)
            self._launch_failed(ctx, fn, error, sticky)
        except Exception as exc:
            log.exception("[session %s] emulator crashed running %s", self.name, fn.name)
            error = CudaError(R.CUDA_ERROR_LAUNCH_FAILED, f"emulator error in {fn.name}: {exc}")
            self._launch_failed(ctx, fn, error, True)

    @_api
    def cuLaunchKernelEx(self, config: dict[str, Any], f: int, kernelParams: bytes) -> None:
        """cuLaunchKernel plus launch attributes (a cooperative grid among them); thread block
        clusters are NOT_SUPPORTED."""
        cooperative = False
        for attr_id, value in config.get("attrs", []):
            if attr_id == 2 and value:  # CU_LAUNCH_ATTRIBUTE_COOPERATIVE
                cooperative = True
            if attr_id in (4, 11) and value not in (None, [1, 1, 1], (1, 1, 1)):
                raise CudaError(R.CUDA_ERROR_NOT_SUPPORTED, "thread block clusters are not "
                                "emulated")
        self._launch(
            f, (config["gridDimX"], config["gridDimY"], config["gridDimZ"]),
            (config["blockDimX"], config["blockDimY"], config["blockDimZ"]),
            config.get("sharedMemBytes", 0), config.get("hStream", 0), kernelParams,
            cooperative=cooperative,
        )

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
        """A launch whose blocks may synchronise grid-wide (cooperative groups' grid.sync());
        the grid must fit on the device at once."""
        self._launch(f, (gridDimX, gridDimY, gridDimZ), (blockDimX, blockDimY, blockDimZ),
                     sharedMemBytes, hStream, kernelParams, cooperative=True)

    @_api
    def cuOccupancyMaxActiveBlocksPerMultiprocessor(
        self, func: int, blockSize: int, dynamicSMemSize: int
    ) -> int:
        """Blocks per SM as a Turing SM would fit them: thread, block, shared-memory and
        register limits (apps size persistent grids from this)."""
        fn = self._function(func)
        info = fn.code.ptx.kernels[fn.name]
        if blockSize <= 0 or dynamicSMemSize < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "bad occupancy query")
        warps = -(-int(blockSize) // 32)
        limits = [MAX_BLOCKS_PER_MULTIPROCESSOR, MAX_THREADS_PER_MULTIPROCESSOR // (warps * 32)]
        shared = int(info.static_shared_bytes) + int(dynamicSMemSize)
        if shared:
            limits.append(SHARED_MEMORY_PER_BLOCK_OPTIN // shared)
        if info.regs:
            # PTX declares virtual registers (often hundreds); ptxas would allocate far fewer.
            # Model a register budget that lets any block of up to 1024 threads launch, as the
            # emulator does: CUB and thrust size grids from this and divide by it.
            regs = min(int(info.regs), REGISTERS_PER_MULTIPROCESSOR // MAX_THREADS_PER_BLOCK)
            limits.append(REGISTERS_PER_MULTIPROCESSOR // (regs * warps * 32))
        fits = shared <= SHARED_MEMORY_PER_BLOCK_OPTIN
        return max(min(limits), 1 if fits else 0)

    def _launch_failed(self, ctx: _Context, fn: _Function, error: CudaError,
                       sticky: bool) -> None:
        level = logging.ERROR if sticky else logging.WARNING
        log.log(level, "[session %s] launch of %s failed: %s%s", self.name, fn.name,
                error.message, " (context is now unusable)" if sticky else "")
        if sticky:
            ctx.sticky = error
        raise error

    # --- streams and events -----------------------------------------------------------------
    @_api
    def cuStreamCreate(self, stream: int, flags: int) -> None:
        """A stream in the current context."""
        self.cuStreamCreateWithPriority(stream, flags, 0)

    @_api
    def cuStreamCreateWithPriority(self, stream: int, flags: int, priority: int) -> None:
        """A stream with a priority (recorded only)."""
        ctx = self._ctx()
        if stream in _DEFAULT_STREAMS:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"stream id {stream} is reserved")
        if flags not in (0, 1):
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad stream flags {flags}")
        self._new_id(self._streams, stream, "stream")
        priority = min(max(int(priority), STREAM_PRIORITY_GREATEST), STREAM_PRIORITY_LEAST)
        self._streams[stream] = _Stream(id=stream, context=ctx.id, flags=int(flags),
                                        priority=priority)

    def _stream(self, stream: int) -> _Stream | None:
        """The stream record, None for the default streams."""
        if stream in _DEFAULT_STREAMS:
            return None
        s = self._streams.get(stream)
        if s is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"stream {stream} does not exist")
        return s

    @_api
    def cuStreamGetPriority(self, stream: int) -> int:
        """The stream's priority (0 for the default stream)."""
        s = self._stream(stream)
        return s.priority if s else 0

    @_api
    def cuStreamGetFlags(self, stream: int) -> int:
        """The stream's flags (0 for the default stream)."""
        s = self._stream(stream)
        return s.flags if s else 0

    @_api
    def cuStreamGetCtx(self, stream: int) -> int:
        """The stream's context."""
        s = self._stream(stream)
        return s.context if s else self._ctx(check_sticky=False).id

    @_api
    def cuStreamDestroy_v2(self, stream: int) -> None:
        """Forget a stream (its work already completed)."""
        if stream not in self._streams:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"stream {stream} does not exist")
        del self._streams[stream]

    @_api
    def cuStreamSynchronize(self, stream: int) -> dict[str, str] | None:
        """Work already completed; report the context's sticky error."""
        self._stream_ctx(stream)
        return self._sync_result()

    @_api
    def cuStreamQuery(self, stream: int) -> dict[str, str] | None:
        """Always idle: work runs at submission (so its printf output is due)."""
        self._stream_ctx(stream)
        return self._sync_result()

    @_api
    def cuStreamWaitEvent(self, stream: int, event: int, flags: int) -> None:
        """Already satisfied: the event's work completed when it was recorded."""
        self._stream_ctx(stream)
        self._event(event)

    def _event(self, event: int) -> _Event:
        ev = self._events.get(event)
        if ev is None:
            raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"event {event} does not exist")
        return ev

    @_api
    def cuEventCreate(self, event: int, flags: int) -> None:
        """An event in the current context."""
        ctx = self._ctx()
        if flags & ~0xF:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad event flags {flags:#x}")
        self._new_id(self._events, event, "event")
        self._events[event] = _Event(id=event, context=ctx.id, flags=int(flags))

    @_api
    def cuEventDestroy_v2(self, event: int) -> None:
        """Forget an event."""
        self._event(event)
        del self._events[event]

    @_api
    def cuEventRecord(self, event: int, stream: int) -> None:
        """Stamp the event now: everything earlier on the stream has completed."""
        ev = self._event(event)
        self._stream_ctx(stream)
        ev.stamp = self.backend.config.clock()

    @_api
    def cuEventRecordWithFlags(self, event: int, stream: int, flags: int) -> None:
        """cuEventRecord (CU_EVENT_RECORD_EXTERNAL only matters inside graphs)."""
        self.cuEventRecord(event, stream)

    @_api
    def cuEventQuery(self, event: int) -> dict[str, str] | None:
        """Recorded events are complete; so are never-recorded ones (as in CUDA)."""
        ev = self._event(event)
        _raise_sticky(self._context_of(ev.context))
        return self._sync_result()

    @_api
    def cuEventSynchronize(self, event: int) -> dict[str, str] | None:
        """Nothing to wait for."""
        return self.cuEventQuery(event)

    @_api
    def cuEventElapsedTime_v2(self, start: int, end: int) -> float:
        """Milliseconds between two records."""
        a, b = self._event(start), self._event(end)
        for ev in (a, b):
            if ev.flags & CU_EVENT_DISABLE_TIMING:
                raise CudaError(R.CUDA_ERROR_INVALID_HANDLE,
                                f"event {ev.id} was created with CU_EVENT_DISABLE_TIMING")
            if ev.stamp is None:
                raise CudaError(R.CUDA_ERROR_INVALID_HANDLE, f"event {ev.id} was never recorded")
        assert a.stamp is not None and b.stamp is not None
        return (b.stamp - a.stamp) * 1000.0


def _raise_sticky(ctx: _Context) -> None:
    """Raise a fresh copy of the context's sticky error (re-raising one instance would grow its
    traceback on every call)."""
    if ctx.sticky is not None:
        raise CudaError(ctx.sticky.code, ctx.sticky.message)


def _ptx_target_number(target: object) -> int:
    """'sm_75' -> 75: the PTX's virtual architecture, as the driver reports it for
    CU_FUNC_ATTRIBUTE_PTX_VERSION (cudaFuncAttributes.ptxVersion). CUB selects its tuning
    policies from this and refuses to run when it names an architecture it was not built
    for, so the PTX ISA version (9.0 -> 90) would be wrong here."""
    digits = "".join(ch for ch in str(target).split(",")[0] if ch.isdigit())
    return int(digits) if digits else DEVICE_ARCH
