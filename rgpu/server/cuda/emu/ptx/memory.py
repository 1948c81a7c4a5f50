"""Global memory of one emulated device: a numpy byte arena with a checked allocator.

Device pointers are ``base + offset`` into one anonymous ``mmap`` arena viewed by numpy. Pages
are committed only when touched, so a device of several GiB costs only what kernels use, and
freeing an allocation hands its whole pages back to the OS (``MADV_DONTNEED``), which also
zero-fills them for the next allocation. Every access made by a
kernel or by a memcpy must lie inside one live allocation: that turns the emulator into a free
memcheck, and it is what lets the layer above return ``CUDA_ERROR_ILLEGAL_ADDRESS`` instead of
corrupting a neighbour buffer as a real GPU would.
"""

from __future__ import annotations

import bisect
import mmap
import threading
from collections.abc import Callable

import numpy as np

from .errors import EmuFault
from .texture import DescriptorHeap

#: Device address of arena byte 0. Non-zero and far from the generic-address windows the
#: interpreter uses for shared, local and param space (see ``interp.py``).
ARENA_BASE = 0x7F00_0000_0000

_ELEM_DTYPE = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32)}


class DeviceMemory:
    """The global memory of one emulated device.

    Allocation and free are serialised by a lock because the server may run several sessions'
    worker threads against one device; kernel accesses read an immutable snapshot of the
    allocation table, so they need no lock.
    """

    def __init__(self, size: int, base: int = ARENA_BASE) -> None:
        if size <= 0:
            raise EmuFault("invalid_value", f"device memory size must be positive, got {size}")
        size = (size + 4095) // 4096 * 4096
        # Servers of one pool get different bases (see EmuDeviceConfig.address_base), so a
        # shim can tell their device pointers apart.
        self.base = base
        self.total = size
        self.used = 0
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.arena = np.frombuffer(self._map, np.uint8)
        self._lock = threading.Lock()
        self._starts: list[int] = []  # sorted arena offsets of live allocations
        self._sizes: dict[int, int] = {}  # offset -> requested size
        self._reserved: dict[int, int] = {}  # offset -> bytes reserved (size rounded up)
        self._snapshot: tuple[np.ndarray, np.ndarray] | None = None
        self._views: dict[np.dtype, np.ndarray] = {}
        self._heap: dict[int, int] = {}  # device malloc() pointer -> the allocation holding it
        self._heap_live: dict[int, int] = {}  # that allocation -> its pointers not yet freed
        self._heap_bytes: dict[int, int] = {}  # that allocation -> its bytes
        #: bytes device malloc() may hold at once (the launching context's
        #: CU_LIMIT_MALLOC_HEAP_SIZE, set by the backend before each launch)
        self.heap_limit = 8 << 20
        self.heap_used = 0
        #: texture and surface objects, which kernels name by handle (texture.py)
        self.descriptors = DescriptorHeap()

    # --- allocation -------------------------------------------------------------------------
    def alloc(self, nbytes: int, align: int = 256) -> int:
        """Reserve ``nbytes`` (zero-size requests get one byte so every pointer is unique)."""
        if nbytes < 0 or align <= 0 or align & (align - 1):
            raise EmuFault(
                "invalid_value", f"bad allocation request: {nbytes} bytes, align {align}"
            )
        need = max(int(nbytes), 1)
        reserve = (need + 255) // 256 * 256
        with self._lock:
            prev_end = 256  # keep arena offset 0 unused: base itself is never a valid pointer
            slot = None
            for i, start in enumerate(self._starts):
                cand = (prev_end + align - 1) // align * align
                if cand + reserve <= start:
                    slot = (i, cand)
                    break
                prev_end = start + self._reserved[start]
            if slot is None:
                cand = (prev_end + align - 1) // align * align
                if cand + reserve > self.total:
                    raise EmuFault(
                        "out_of_memory",
                        f"emulated device memory exhausted: {nbytes} bytes requested, "
                        f"{self.total - self.used} of {self.total} free (raise the device size)",
                    )
                slot = (len(self._starts), cand)
            i, off = slot
            self._starts.insert(i, off)
            self._sizes[off] = int(nbytes)
            self._reserved[off] = reserve
            self.used += reserve
            self._snapshot = None
        return self.base + off

    def free(self, addr: int) -> None:
        """Release an allocation; its bytes are zeroed so a later allocation starts clean."""
        off = int(addr) - self.base
        with self._lock:
            if off not in self._sizes:
                raise EmuFault(
                    "invalid_value", f"cannot free {int(addr):#x}: not the start of an allocation"
                )
            self._starts.remove(off)
            reserve = self._reserved.pop(off)
            del self._sizes[off]
            self.used -= reserve
            self._snapshot = None
        self._zero(off, reserve)

    def device_malloc(self, sizes: np.ndarray) -> np.ndarray:
        """``malloc`` called by kernel lanes: one arena allocation carved into 16-byte aligned
        blocks, one per request, so a whole batch costs one allocation. A lane gets 0 (NULL)
        when memory is exhausted, as device ``malloc`` returns."""
        sizes = np.maximum(np.asarray(sizes, np.int64), 1)
        padded = (sizes + 15) // 16 * 16
        ends = np.cumsum(padded)
        offsets = ends - padded
        # lanes, in order, while the heap limit holds; the others get NULL, as on a GPU
        fits = ends <= max(0, self.heap_limit - self.heap_used)
        total = int(ends[fits][-1]) if fits.any() else 0
        if not total:
            return np.zeros(sizes.size, np.uint64)
        try:
            base = self.alloc(total, 16)
        except EmuFault as e:
            if e.kind != "out_of_memory":
                raise
            return np.zeros(sizes.size, np.uint64)
        addrs = np.where(fits, offsets + base, 0).astype(np.uint64)
        with self._lock:
            for a in addrs[fits].tolist():
                self._heap[a] = base
            self._heap_live[base] = int(fits.sum())
            self._heap_bytes[base] = total
            self.heap_used += total
        return addrs

    def device_free(self, addrs: np.ndarray) -> None:
        """``free`` called by kernel lanes (NULL is ignored); the allocation behind a batch's
        ``malloc`` goes when its last pointer does."""
        done = []
        with self._lock:
            for a in np.asarray(addrs, np.uint64).tolist():
                if a == 0:
                    continue
                base = self._heap.pop(a, None)
                if base is None:
                    raise EmuFault(
                        "illegal_address",
                        f"device free({a:#x}): not a pointer device malloc returned",
                    )
                self._heap_live[base] -= 1
                if self._heap_live[base] == 0:
                    del self._heap_live[base]
                    self.heap_used -= self._heap_bytes.pop(base, 0)
                    done.append(base)
        for base in done:
            self.free(base)

    def _zero(self, off: int, n: int) -> None:
        """Zero a freed range: whole pages go back to the OS, partial pages are cleared."""
        page = mmap.PAGESIZE
        lo = (off + page - 1) // page * page
        hi = (off + n) // page * page
        if hi - lo >= 16 * page and hasattr(self._map, "madvise"):
            self.arena[off:lo] = 0
            self.arena[hi : off + n] = 0
            self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        else:
            self.arena[off : off + n] = 0

    def allocation_of(self, addr: int) -> tuple[int, int] | None:
        """(start address, size) of the live allocation containing ``addr``, else None."""
        off = int(addr) - self.base
        starts = self._starts
        i = bisect.bisect_right(starts, off) - 1
        if i < 0:
            return None
        start = starts[i]
        size = max(self._sizes.get(start, 0), 1)
        if off < start + size:
            return self.base + start, self._sizes[start]
        return None

    # --- host-side access -------------------------------------------------------------------
    def _range(self, addr: int, nbytes: int) -> int:
        off = int(addr) - self.base
        if nbytes < 0:
            raise EmuFault("invalid_value", f"negative length {nbytes}")
        if nbytes == 0 and self.allocation_of(addr) is not None:
            return off
        hit = self.allocation_of(addr)
        if hit is None or int(addr) + nbytes > hit[0] + hit[1]:
            raise EmuFault(
                "illegal_address",
                f"range {int(addr):#x}+{nbytes} is not inside one live device allocation",
            )
        return off

    def read(self, addr: int, nbytes: int) -> bytes:
        """Copy device bytes out (``cuMemcpyDtoH``)."""
        off = self._range(addr, nbytes)
        return self.arena[off : off + nbytes].tobytes()

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Copy host bytes in (``cuMemcpyHtoD``)."""
        src = np.frombuffer(memoryview(data).cast("B"), np.uint8)
        off = self._range(addr, src.size)
        self.arena[off : off + src.size] = src

    def view(self, addr: int, nbytes: int) -> np.ndarray:
        """A writable uint8 view of device bytes, for zero-copy memcpy paths."""
        off = self._range(addr, nbytes)
        return self.arena[off : off + nbytes]

    def memset(self, addr: int, value: int, elem_size: int, count: int) -> None:
        """``cuMemsetD8/16/32``: ``count`` elements of ``elem_size`` bytes set to ``value``."""
        dt = _ELEM_DTYPE.get(elem_size)
        if dt is None:
            raise EmuFault(
                "invalid_value", f"memset element size must be 1, 2 or 4, not {elem_size}"
            )
        nbytes = elem_size * int(count)
        off = self._range(addr, nbytes)
        pattern = np.full(int(count), int(value) & ((1 << (8 * elem_size)) - 1), dt)
        self.arena[off : off + nbytes] = pattern.view(np.uint8)

    # --- kernel-side access -----------------------------------------------------------------
    def typed(self, dtype: np.dtype) -> np.ndarray:
        """The arena viewed as ``dtype`` elements (cached), indexed by ``offset // itemsize``."""
        v = self._views.get(dtype)
        if v is None:
            v = self._views[dtype] = self.arena.view(dtype)
        return v

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (starts, ends) arena offsets of live allocations, for vectorised checks."""
        snap = self._snapshot
        if snap is None:
            with self._lock:
                starts = np.array(self._starts, np.int64)
                ends = starts + np.array(
                    [max(self._sizes[s], 1) for s in self._starts], np.int64
                ).reshape(starts.shape)
                snap = self._snapshot = (starts, ends)
        return snap

    def check(
        self, addr: np.ndarray | np.integer, size: int, fault: Callable[[str, str], Exception]
    ) -> np.ndarray | int:
        """Arena offsets of ``size``-byte accesses at device addresses ``addr``.

        Raises ``fault("illegal_address", ...)`` unless every access lies inside one live
        allocation, and ``fault("misaligned_address", ...)`` unless it is naturally aligned.
        ``fault`` builds the EmuFault so that the message can name the instruction.
        """
        starts, ends = self.table()
        if isinstance(addr, np.ndarray):
            if addr.size == 0:
                return addr.astype(np.int64)
            off = (
                addr.view(np.int64) - self.base
                if addr.dtype == np.uint64
                else (addr.astype(np.int64) - self.base)
            )
            lo = int(off.min())
            hi = int(off.max())
            i = bisect.bisect_right(starts, lo) - 1  # type: ignore[arg-type]
            if i < 0 or hi + size > ends[i]:
                # lanes touch several allocations: check each lane against its own (with no
                # allocation at all, every lane is outside)
                k = np.searchsorted(starts, off, "right") - 1
                bad = k < 0
                if len(ends):
                    bad |= off + size > ends[np.maximum(k, 0)]
                if bad.any():
                    j = int(np.argmax(bad))
                    raise fault(
                        "illegal_address",
                        f"address {int(off[j]) + self.base:#x} is outside every allocation",
                    )
            if size > 1 and (off & (size - 1)).any():
                j = int(np.argmax((off & (size - 1)) != 0))
                raise fault(
                    "misaligned_address",
                    f"address {int(off[j]) + self.base:#x} is not aligned to {size} bytes",
                )
            return off
        o = int(addr) - self.base
        i = bisect.bisect_right(starts, o) - 1  # type: ignore[arg-type]
        if i < 0 or o + size > ends[i]:
            raise fault("illegal_address", f"address {int(addr):#x} is outside every allocation")
        if o % size:
            raise fault(
                "misaligned_address", f"address {int(addr):#x} is not aligned to {size} bytes"
            )
        return o
