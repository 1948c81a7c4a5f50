"""The SIMT machine: runs a compiled kernel over batches of thread blocks with numpy.

A *batch* is several whole thread blocks run as one flat vector of lanes, so the Python cost of
an instruction is paid once per batch instead of once per thread. While every live lane is at
the same instruction the scheduler keeps a single scalar PC and runs whole basic blocks with no
mask at all. After a divergent branch it keeps one PC per lane and repeatedly runs the basic
block at the *minimum* PC for the lanes sitting there; nvcc lays out structured control flow so
that this reconverges loops and if/else without post-dominator analysis. A lane group that keeps
branching backwards at the minimum PC (a spin-wait on another warp) is forced to yield after
``STARVATION_LIMIT`` steps, so producer/consumer code written for independent thread scheduling
still terminates.

``bar.sync`` parks lanes; a block's barrier opens when all its live lanes wait (exited threads do
not count, as on the hardware), or, for a named barrier with a thread count, when waiting lanes
plus ``bar.arrive`` arrivals reach that count. Lanes of one block waiting for a whole-block
barrier at *different* instructions, or waiting lanes that can never be released, are reported
as ``barrier_divergence``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .compiler import (
    BOOL,
    LOCAL_WINDOW,
    PARAM_WINDOW,
    SHARED_WINDOW,
    U32,
    U64,
    WINDOW_SPAN,
    CompileContext,
)
from .errors import EmuFault
from .ir import Instruction
from .memory import DeviceMemory

STARVATION_LIMIT = 256
#: Basic blocks the lanes past a spinning group run before the spinners get another turn: enough
#: for a released block to reach its own flag store, so chains of blocks waiting on each other
#: (single-pass scans) advance one link per starvation instead of one basic block.
YIELD_STEPS = 64
TRAP_MESSAGE = (
    "trap executed (__trap(), or cooperative groups' grid.sync() in a launch that is not "
    "cooperative)"
)
#: Bytes of local memory one batch may grow to when recursion stacks frames.
LOCAL_BATCH_LIMIT = 1 << 30
#: Basic blocks one batch may execute before the launch is declared hung (a GPU watchdog's job);
#: at the interpreter's speed this is minutes of work, far beyond any test-sized kernel.
STEP_LIMIT = 5_000_000
_SHIFT = {1: 0, 2: 1, 4: 2, 8: 3, 16: 4}


# terminator kinds
ORD, BRA, RET, EXIT, BAR, CALL, TRAP, BRX = range(8)


@dataclass
class Terminator:
    """A control instruction, decoded once."""

    kind: int
    target: int = -1
    guard: Callable | None = None
    call: Callable | None = None
    bar_red: Callable | None = None  # bar.red: (frame, lanes mask) -> None
    bar_id: int = 0  # bar.sync/bar.red: barrier number
    bar_count: int | None = None  # bar.sync a, b: threads expected (None: the whole block)
    table: np.ndarray | None = None  # brx.idx: target PCs
    index: Callable | None = None  # brx.idx: frame -> index value


class CompiledFunction:
    """A function's instructions as closures, with basic-block boundaries precomputed."""

    def __init__(
        self,
        name: str,
        instructions: list[Instruction],
        fns: list[Callable],
        terms: list[Terminator | None],
        reg_init: list[Any],
        cx: CompileContext,
    ) -> None:
        self.name = name
        self.instructions = instructions
        self.fns = fns
        self.terms = terms
        self.reg_init = reg_init
        self.cx = cx
        n = len(instructions)
        leaders = {0}
        for t in terms:
            if t is not None and t.kind == BRA:
                leaders.add(t.target)
            if t is not None and t.kind == BRX and t.table is not None:
                leaders.update(int(x) for x in t.table)
        for i, t in enumerate(terms):
            if t is not None:
                leaders.add(i + 1)
        # bend[i]: where the basic block containing i stops. If term[i], the block ends with the
        # control instruction at bend[i]; else it falls through into the leader bend[i].
        self.bend = [n] * (n + 1)
        self.bterm = [False] * (n + 1)
        nxt, is_term = n, False
        for i in range(n - 1, -1, -1):
            if terms[i] is not None:
                nxt, is_term = i, True
            elif i + 1 in leaders:
                nxt, is_term = i + 1, False
            self.bend[i] = nxt
            self.bterm[i] = is_term
        self.blocks: dict[int, tuple[int, bool, tuple[Callable, ...]]] = {}

    def block(self, pc: int) -> tuple[int, bool, tuple[Callable, ...]]:
        """(end, ends with a control instruction, closures of the block's other instructions)."""
        b = self.blocks.get(pc)
        if b is None:
            end = self.bend[pc]
            b = self.blocks[pc] = (end, self.bterm[pc], tuple(self.fns[pc:end]))
        return b


class Frame:
    """One activation of a function for a set of lanes: its registers and call parameters."""

    __slots__ = ("L", "cc", "ps", "regs")

    def __init__(self, regs: list[Any], L: Batch, ps: dict[str, dict[int, Any]]) -> None:
        self.regs = regs
        self.L = L
        self.ps = ps
        self.cc: Any = 0


class _Geometry:
    """Lane tables for one (block shape, blocks per batch), cached across launches."""

    def __init__(self, block: tuple[int, int, int], nb: int) -> None:
        bs = block[0] * block[1] * block[2]
        n = bs * nb
        lin = np.arange(n, dtype=np.int64)
        self.slot = lin // bs
        t = (lin % bs).astype(U32)
        self.t = t
        self.tid = (
            t % U32.type(block[0]),
            (t // U32.type(block[0])) % U32.type(block[1]),
            t // U32.type(block[0] * block[1]),
        )
        self.lane = lin
        self.laneid = t % U32.type(32)
        wpb = (bs + 31) // 32
        self.warp = self.slot * wpb + (t // U32.type(32)).astype(np.int64)
        self.warp_first = lin - self.laneid.astype(np.int64)  # batch index of the warp's lane 0
        self.full_warps = bs % 32 == 0
        self.bs = bs
        self.cache: dict[Any, Any] = {}
        # registers may alias these arrays (mov %r, %tid.x): freeze them so that an in-place
        # update anywhere would fail loudly instead of corrupting later launches
        for arr in (self.slot, self.t, *self.tid, self.lane, self.laneid, self.warp,
                    self.warp_first):  # fmt: skip
            arr.setflags(write=False)


_GEOMETRY: dict[tuple[tuple[int, int, int], int], _Geometry] = {}


def geometry(block: tuple[int, int, int], nb: int) -> _Geometry:
    key = (block, nb)
    g = _GEOMETRY.get(key)
    if g is None:
        if len(_GEOMETRY) > 16:
            _GEOMETRY.clear()
        g = _GEOMETRY[key] = _Geometry(block, nb)
    return g


class Batch:
    """Execution state shared by all frames of one batch of blocks."""

    def __init__(
        self,
        kernel: str,
        mem: DeviceMemory,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        first_block: int,
        nb: int,
        params: bytes,
        shared_static: int,
        dynamic_shared: int,
        local_size: int,
        printf: Callable[[str], None],
        reserved_shared: int = 0,
        grid_workspace: int = 0,
        max_levels: int = 256,
    ) -> None:
        self.kernel = kernel
        #: recursion levels of .local frames the launch may stack (its stack size limit)
        self.max_levels = max_levels
        self.grid_workspace = grid_workspace
        self.mem = mem
        self.grid = grid
        self.block = block
        self.first_block = first_block
        self.nb = nb
        self.geo = geometry(block, nb)
        self.bs = self.geo.bs
        self.N = self.bs * nb
        self.params = np.frombuffer(params, np.uint8) if params else np.zeros(0, np.uint8)
        # sm_80+ reserve shared memory per block for the system (cooperative groups keep
        # multi-warp scratch there); it follows the program's own shared memory
        self.reserved_shared_at = (shared_static + dynamic_shared + 15) // 16 * 16
        self.reserved_shared = reserved_shared
        self.shared_limit = (
            self.reserved_shared_at + reserved_shared
            if reserved_shared
            else shared_static + dynamic_shared
        )
        self.shsize = (self.shared_limit + 15) // 16 * 16 or 16
        self.shared = np.zeros(self.shsize * nb, np.uint8)
        self.dynamic_shared = dynamic_shared
        self.lsize = local_size
        self.local = np.zeros(max(local_size * self.N, 16), np.uint8)
        self.printf = printf
        self.exited: np.ndarray | None = None
        self.steps_left = STEP_LIMIT
        #: (.func, recursion level) whose .local frame is on the call stack
        self.active_frames: set[tuple[str, int]] = set()
        self.bar_arrived: dict[int, np.ndarray] = {}  # barrier id -> bar.arrive tally per block
        #: (id(buffer), element) of an mbarrier -> its transaction count (expect_tx/complete_tx)
        self.mbar_tx: dict[tuple[int, int], int] = {}
        self._special: dict[str, Any] = {}
        self._views: dict[tuple[int, np.dtype], np.ndarray] = {}
        self._elcache: dict[tuple[int, str, int], tuple] = {}

    def ensure_local(self, nbytes: int, fault) -> None:
        """Grow every lane's local window to ``nbytes`` (recursion stacking frames), keeping
        the bytes already there; views and address caches of the old buffer are dropped."""
        if nbytes <= self.lsize:
            return
        nbytes = max(nbytes, 2 * self.lsize)
        if nbytes * self.N > LOCAL_BATCH_LIMIT:
            raise fault(
                "not_supported",
                f"recursion needs {nbytes} bytes of local memory per thread for {self.N} "
                "threads at once, more than the emulated device can hold",
            )
        new = np.zeros(nbytes * self.N, np.uint8)
        if self.lsize:
            new.reshape(self.N, nbytes)[:, : self.lsize] = self.local.reshape(self.N, self.lsize)
        self._views = {k: v for k, v in self._views.items() if k[0] != id(self.local)}
        self._elcache.clear()
        self.local = new
        self.lsize = nbytes

    # --- special registers --------------------------------------------------------------------
    def special(self, name: str) -> Any:
        v = self._special.get(name)
        if v is None:
            v = self._make_special(name)
            if name not in ("%clock", "%clock64", "%globaltimer", "%clock_hi", "%globaltimer_lo",
                            "%globaltimer_hi"):  # fmt: skip
                self._special[name] = v
        return v

    def _make_special(self, name: str) -> Any:
        g = self.geo
        grid, block, nb, b0 = self.grid, self.block, self.nb, self.first_block
        base, _, comp = name.partition(".")
        axis = "xyz".index(comp) if comp in ("x", "y", "z") else 0
        if base == "%ntid":
            return U32.type(block[axis])
        if base == "%nctaid":
            return U32.type(grid[axis])
        if base == "%tid":
            if block[axis] == 1:
                return U32.type(0)
            return g.tid[axis]
        if base == "%ctaid":
            div = (1, grid[0], grid[0] * grid[1])[axis]
            if nb == 1 or grid[axis] == 1:
                return U32.type((b0 // div) % grid[axis])
            key = ("ctaid", axis, b0, grid)
            c = g.cache.get(key)
            if c is None:
                blk = g.slot + b0
                c = g.cache[key] = ((blk // div) % grid[axis]).astype(U32)
            return c
        if name == "%laneid":
            return g.laneid
        if name == "%warpid":
            return (g.t // U32.type(32)).astype(U32)
        if name == "%nwarpid":
            return U32.type((self.bs + 31) // 32)
        if name in ("%smid", "%gridid"):
            return U32.type(0) if name == "%smid" else U64.type(0)
        if name == "%nsmid":
            return U32.type(1)
        if name == "%warpsize":
            return U32.type(32)
        if name.startswith("%lanemask_"):
            lid = g.laneid.astype(U64)
            one = U64.type(1)
            eq = one << lid
            kind = name[len("%lanemask_") :]
            v = {
                "eq": eq,
                "lt": eq - one,
                "le": (eq << one) - one,
                "ge": ~(eq - one),
                "gt": ~((eq << one) - one),
            }[kind]
            return (v & U64.type(0xFFFF_FFFF)).astype(U32)
        if name == "%clock64":
            return U64.type(time.perf_counter_ns())
        if name in ("%clock", "%clock_hi"):
            ns = time.perf_counter_ns()
            return U32.type(ns & 0xFFFF_FFFF if name == "%clock" else (ns >> 32) & 0xFFFF_FFFF)
        if name == "%globaltimer":
            return U64.type(time.time_ns())
        if name == "%globaltimer_lo":
            return U32.type(time.time_ns() & 0xFFFF_FFFF)
        if name == "%globaltimer_hi":
            return U32.type(time.time_ns() >> 32)
        if name.startswith("%envreg"):
            # driver environment: envreg1:envreg2 point cooperative groups' grid.sync() at its
            # barrier word (0, and grid.sync() traps, unless the launch is cooperative)
            ws = self.grid_workspace
            return U32.type({"%envreg1": ws >> 32, "%envreg2": ws & 0xFFFF_FFFF}.get(name, 0))
        if name.startswith("%reserved_smem_offset_"):
            at, size = self.reserved_shared_at, self.reserved_shared
            part = name[len("%reserved_smem_offset_") :]
            return U32.type({"begin": at, "end": at + size, "cap": size, "0": at,
                             "1": at + size // 2}[part])  # fmt: skip
        if name == "%dynamic_smem_size":
            return U32.type(self.dynamic_shared)
        if name in ("%total_smem_size", "%aggr_smem_size"):
            return U32.type(self.shared_limit)
        if (
            name.startswith("%cluster")
            or name.startswith("%nclusterid")
            or name.startswith("%clusterid")
            or name == "%is_explicit_cluster"
        ):
            if "nctaid" in name or "nctarank" in name or name.startswith("%nclusterid"):
                return U32.type(1)
            return U32.type(0)
        raise EmuFault("not_supported", f"{self.kernel}: special register {name} is not supported")

    # --- address resolution -------------------------------------------------------------------
    def fast_elements(self, space: str, base: Any, off: int, size: int, dt: np.dtype):
        """(typed buffer, element indices, element shift) for ``[base + off]`` on all lanes.

        Converged code often addresses many elements from one base register (an unrolled
        loop over a shared tile reads ``[%r9]``, ``[%r9+64]``, ...). The base's element indices,
        bounds and alignment are computed once per register value and batch; each access is
        then one gather from a shifted view. Returns None when the access needs the general
        path (scalar base, misalignment, anything out of bounds), which also reports faults.
        """
        if not isinstance(base, np.ndarray) or off % size:
            return None
        item = dt.itemsize
        key = (id(base), space, item)
        ent = self._elcache.get(key)
        if ent is None or ent[0] is not base:
            if len(self._elcache) > 64:
                self._elcache.clear()
            ent = self._elcache[key] = self._make_entry(space, base, item)
        _, el, lo, hi, align, lower, upper = ent
        if el is None or align < size or lo + off < lower or hi + off + size > upper:
            return None
        if space in ("global", "const"):
            buf = self.mem.typed(dt)
        else:
            buf = self.typed(self.shared if space == "shared" else self.local, dt)
        return buf, el, off // item

    def _make_entry(self, space: str, base: np.ndarray, item: int) -> tuple:
        """(base, element indices, min, max, common alignment, lower, upper bound)."""
        v = base.astype(np.int64) if base.dtype != np.int64 else base
        if space in ("global", "const"):
            rel = v - self.mem.base
            lo, hi = int(rel.min()), int(rel.max())
            starts, ends = self.mem.table()
            i = int(np.searchsorted(starts, lo, "right")) - 1
            if i < 0:
                return (base, None, 0, 0, 0, 0, 0)
            orv = int(np.bitwise_or.reduce(rel))
            align = (orv & -orv) if orv else 1 << 30
            return (base, rel >> _SHIFT[item], lo, hi, align, int(starts[i]), int(ends[i]))
        if space == "shared":
            upper, stride, unit = self.shared_limit, self.shsize, self.geo.slot
        else:
            upper, stride, unit = self.lsize, self.lsize, self.geo.lane
        lo, hi = int(v.min()), int(v.max())
        orv = int(np.bitwise_or.reduce(v))
        align = (orv & -orv) if orv else 1 << 30
        el = (unit * stride + v) >> _SHIFT[item]
        return (base, el, lo, hi, align, 0, upper)

    def typed(self, buf: np.ndarray, dt: np.dtype) -> np.ndarray:
        key = (id(buf), dt)
        v = self._views.get(key)
        if v is None:
            v = self._views[key] = buf.view(dt)
        return v

    def resolve(
        self,
        space: str,
        addr: Any,
        size: int,
        dt: np.dtype,
        idx: np.ndarray | None,
        fault: Callable[[str, str], EmuFault],
    ) -> list[tuple[Any, np.ndarray, Any]]:
        """Map addresses of the active lanes to (selector, typed buffer, element indices).

        ``size`` is the access size used for bounds and alignment checks (a whole vector);
        element indices count ``dt`` items. The selector is None when one group covers every
        active lane, else an index array into the active lanes (mixed generic windows).
        """
        if space == "generic":
            return self._resolve_generic(addr, size, dt, idx, fault)
        if space in ("global", "const"):
            off = self.mem.check(addr, size, fault)
            return [(None, self.mem.typed(dt), off // dt.itemsize)]
        if space == "shared":
            return [
                (None, self.typed(self.shared, dt), self._shared_el(addr, size, dt, idx, fault))
            ]
        if space == "local":
            return [(None, self.typed(self.local, dt), self._local_el(addr, size, dt, idx, fault))]
        if space == "param":
            off = np.asarray(addr).astype(np.int64)
            self._check_window(off, size, self.params.size, "kernel parameter", fault)
            return (
                [(None, self.params.view(np.uint8), off)]
                if dt.itemsize == 1
                else [(None, _param_view(self.params, dt, off), off // dt.itemsize)]
            )
        raise fault("not_supported", f"state space .{space}")

    @staticmethod
    def _check_window(off: Any, size: int, limit: int, what: str, fault) -> None:
        if isinstance(off, np.ndarray) and off.ndim:
            if off.size == 0:
                return
            lo, hi = int(off.min()), int(off.max())
        else:
            lo = hi = int(off)
        if lo < 0 or hi + size > limit:
            bad = lo if lo < 0 else hi
            raise fault(
                "illegal_address",
                f"{what} offset {bad:#x} is outside the {limit}-byte {what} window",
            )
        if size > 1:
            if isinstance(off, np.ndarray) and off.ndim:
                if (off & (size - 1)).any():
                    j = int(np.argmax((off & (size - 1)) != 0))
                    raise fault(
                        "misaligned_address",
                        f"{what} offset {int(off[j]):#x} is not aligned to {size} bytes",
                    )
            elif lo % size:
                raise fault(
                    "misaligned_address", f"{what} offset {lo:#x} is not aligned to {size} bytes"
                )

    def _window_el(self, addr, size, dt, idx, fault, limit, stride, what):
        """Element indices into a per-block (shared) or per-lane (local) buffer.

        Offsets stay 32-bit (views of u32 registers cost nothing) because every per-batch
        buffer is far below 2 GiB.
        """
        if isinstance(addr, np.ndarray):
            off = addr.view(np.int32) if addr.dtype.itemsize == 4 else addr.astype(np.int32)
            if (
                addr.dtype.itemsize == 8 and off.size and (int(addr.max()) >= 1 << 31)
            ):  # a 64-bit offset beyond any window: report it exactly
                self._check_window(addr.astype(np.int64), size, limit, what, fault)
        else:
            off = int(addr)
        self._check_window(off, size, limit, what, fault)
        key = (what, stride)
        base = self.geo.cache.get(key)
        if base is None:
            unit = self.geo.slot if what == "shared memory" else self.geo.lane
            base = self.geo.cache[key] = (unit * stride).astype(np.int32)
        lanes = base if idx is None else base[idx]
        el = lanes + off
        shift = _SHIFT[dt.itemsize]
        if shift:
            el >>= shift
        return el

    def _shared_el(self, addr, size, dt, idx, fault):
        return self._window_el(addr, size, dt, idx, fault, self.shared_limit, self.shsize,
                               "shared memory")  # fmt: skip

    def _local_el(self, addr, size, dt, idx, fault):
        return self._window_el(addr, size, dt, idx, fault, self.lsize, self.lsize, "local memory")

    def _resolve_generic(self, addr, size, dt, idx, fault):
        a = np.asarray(addr).astype(U64)
        kinds = np.full(a.shape, 0, np.int8)  # 0 global, 1 shared, 2 local, 3 param
        for k, base in ((1, SHARED_WINDOW), (2, LOCAL_WINDOW), (3, PARAM_WINDOW)):
            inwin = (a >= U64.type(base)) & (a < U64.type(base + WINDOW_SPAN))
            kinds = np.where(inwin, np.int8(k), kinds)
        if a.ndim == 0:
            k = int(kinds)
            return self._generic_group(k, a[()], size, dt, idx, fault, None)
        present = np.unique(kinds)
        if present.size == 1:
            return self._generic_group(int(present[0]), a, size, dt, idx, fault, None)
        out = []
        for k in present:
            sel = np.flatnonzero(kinds == k)
            sub_idx = None if idx is None else idx[sel]
            if idx is None:
                sub_idx = sel
            out.extend(self._generic_group(int(k), a[sel], size, dt, sub_idx, fault, sel))
        return out

    def _generic_group(self, k, a, size, dt, idx, fault, sel):
        if k == 0:
            off = self.mem.check(a, size, fault)
            return [(sel, self.mem.typed(dt), off // dt.itemsize)]
        if k == 1:
            el = self._shared_el(a - U64.type(SHARED_WINDOW), size, dt, idx, fault)
            return [(sel, self.typed(self.shared, dt), el)]
        if k == 2:
            el = self._local_el(a - U64.type(LOCAL_WINDOW), size, dt, idx, fault)
            return [(sel, self.typed(self.local, dt), el)]
        off = (
            (a - U64.type(PARAM_WINDOW)).astype(np.int64)
            if isinstance(a, np.ndarray)
            else int(a - U64.type(PARAM_WINDOW))
        )
        self._check_window(off, size, self.params.size, "kernel parameter", fault)
        return [(sel, _param_view(self.params, dt, off), off // dt.itemsize)]

    def read_bytes(self, addr: int, nbytes: int, lane: int, fault) -> bytes:
        """Bytes at a generic address as seen by one lane (printf arguments and strings)."""
        a = int(addr)
        if SHARED_WINDOW <= a < SHARED_WINDOW + WINDOW_SPAN:
            o = int(self.geo.slot[lane]) * self.shsize + a - SHARED_WINDOW
            return self.shared[o : o + nbytes].tobytes()
        if LOCAL_WINDOW <= a < LOCAL_WINDOW + WINDOW_SPAN:
            o = lane * self.lsize + a - LOCAL_WINDOW
            if a - LOCAL_WINDOW + nbytes > self.lsize:
                raise fault("illegal_address", f"local address {a:#x} is outside the local window")
            return self.local[o : o + nbytes].tobytes()
        off = self.mem.check(U64.type(a), 1, fault)
        hit = self.mem.allocation_of(a)
        assert hit is not None
        end = hit[0] + max(hit[1], 1) - self.mem.base
        return self.mem.arena[int(off) : min(int(off) + nbytes, end)].tobytes()


def _param_view(params: np.ndarray, dt: np.dtype, off) -> np.ndarray:
    """Typed view of the parameter buffer; params may be packed at offsets not multiple of the
    item size only when misaligned, which _check_window already rejected."""
    n = params.size // dt.itemsize * dt.itemsize
    return params[:n].view(dt)


# --- the scheduler ----------------------------------------------------------------------
def _internal_error(cf: CompiledFunction, kernel: str, pc: int, exc: BaseException) -> EmuFault:
    """An interpreter bug as ``launch_failed``, still naming the PTX line being executed."""
    where = kernel + (f" (in .func {cf.name})" if cf.name != kernel else "")
    if not cf.instructions:
        return EmuFault("launch_failed", f"{where}: {type(exc).__name__}: {exc}")
    ins = cf.instructions[min(pc, len(cf.instructions) - 1)]
    return EmuFault(
        "launch_failed",
        f"{where}: PTX line {ins.line} `{ins.text}`: internal error {type(exc).__name__}: {exc}",
    )


#: Per-lane PC encoding while diverged: a runnable lane holds its PC, a lane parked at a barrier
#: holds ``WAIT + pc``, a lane that returned or exited holds ``DEAD``. One ``min`` then finds the
#: next block to run and one comparison gives its mask.
WAIT = np.int32(1 << 28)
DEAD = np.int32(1 << 30)


def run_function(cf: CompiledFunction, L: Batch, ps: dict, init_mask: np.ndarray | None) -> None:
    """Execute ``cf`` for the lanes in ``init_mask`` (None: all lanes of the batch)."""
    fr = Frame(list(cf.reg_init), L, ps)
    N = L.N
    terms = cf.terms
    nprog = len(cf.instructions)
    pc = 0
    pcs: np.ndarray | None = None
    all_alive = init_mask is None
    alive = np.ones(N, BOOL) if all_alive else init_mask.copy()
    n_alive = N if all_alive else int(np.count_nonzero(alive))
    if n_alive == 0:
        return
    n_waiting = 0
    starve = 0
    loop_end = -1  # the backward branch of the loop the minimum-PC lanes are circling
    spin_pc, lend = -1, 0
    lendable: np.ndarray | None = None
    p = 0
    mask: np.ndarray | None = None
    try:
        while True:
            L.steps_left -= 1
            if L.steps_left < 0:
                raise cf.cx.fault(
                    cf.instructions[min(pc if pcs is None else int(pcs.min()), nprog - 1)],
                    "launch_failed",
                    f"more than {STEP_LIMIT} basic blocks executed in one batch: the kernel "
                    "looks hung (an infinite loop or a spin-wait nobody releases)",
                )
            if pcs is None:  # converged: every live lane is at pc
                if pc >= nprog:
                    return
                mask = None if all_alive else alive
                cur = pc
                end, is_term, fns = cf.block(cur)
                p = cur
                for f in fns:
                    f(fr, mask)
                    p += 1
                if not is_term:  # fell through into a label
                    pc = end
                    continue
                t = terms[end]
                assert t is not None
                kind = t.kind
                if kind == BRA:
                    if t.guard is None:
                        pc = t.target
                        continue
                    g = t.guard(fr)
                    if not isinstance(g, np.ndarray):
                        pc = t.target if g else end + 1
                        continue
                    if mask is not None:
                        g = g & mask
                    taken = int(np.count_nonzero(g))
                    if taken == 0:
                        pc = end + 1
                        continue
                    if taken == n_alive:
                        pc = t.target
                        continue
                    pcs = np.where(g, np.int32(t.target), np.int32(end + 1))
                    if mask is not None:
                        pcs[~mask] = DEAD
                    continue
                if kind == BRX:
                    dest = _brx_targets(cf, t, fr, end)
                    if not isinstance(dest, np.ndarray):
                        pc = int(dest)
                        continue
                    if mask is not None:
                        dest = np.where(mask, dest, DEAD)
                    pcs = dest.astype(np.int32)
                    continue
                if kind in (RET, EXIT):
                    if t.guard is None:
                        if kind == EXIT:
                            _mark_exit(L, alive)
                        return
                    g = t.guard(fr)
                    if not isinstance(g, np.ndarray):
                        if g:
                            if kind == EXIT:
                                _mark_exit(L, alive)
                            return
                        pc = end + 1
                        continue
                    dying = g & alive
                    if kind == EXIT:
                        _mark_exit(L, dying)
                    alive = alive & ~dying
                    n_alive = int(np.count_nonzero(alive))
                    all_alive = False
                    if n_alive == 0:
                        return
                    pc = end + 1
                    continue
                if kind == BAR:
                    if t.bar_red is not None:
                        t.bar_red(fr, alive)
                    pc = end + 1
                    continue
                if kind == CALL:
                    t.call(fr, mask)
                    if L.exited is not None and (L.exited & alive).any():
                        alive = alive & ~L.exited
                        n_alive = int(np.count_nonzero(alive))
                        all_alive = False
                        if n_alive == 0:
                            return
                    pc = end + 1
                    continue
                raise cf.cx.fault(cf.instructions[end], "launch_failed", TRAP_MESSAGE)

            # diverged: run the basic block at the minimum PC among runnable lanes
            cur = int(pcs.min())
            if cur >= WAIT:
                if cur < DEAD:
                    raise _deadlock(cf, pcs)
                return
            if cur > loop_end:  # the minimum-PC lanes left the loop they were circling
                starve, loop_end = 0, -1
            if starve > STARVATION_LIMIT:
                # lanes keep looping at the minimum PC, maybe waiting for other lanes: lend time
                # to the lanes ahead, but only in warps with no looping lane, since a warp's
                # lanes must meet again before its next warp-wide operation (a shuffle after a
                # data-dependent loop would otherwise see half a warp)
                spin_pc, lend = cur, YIELD_STEPS
                starve = 0
                g = L.geo
                looping = np.zeros(int(g.warp[-1]) + 1, BOOL)
                looping[g.warp[pcs == spin_pc]] = True
                lendable = ~looping[g.warp]
            lent = False
            if lend:
                higher = int(np.where((pcs > spin_pc) & lendable, pcs, DEAD).min())
                if higher < WAIT:
                    cur, lent = higher, True
                    lend -= 1
                else:  # only the looping warps' own lanes are ahead (lanes of one warp waiting
                    # for each other, legal under independent thread scheduling): one step
                    lend = 0
                    higher = int(np.where(pcs > spin_pc, pcs, DEAD).min())
                    if higher < WAIT and cur == spin_pc:
                        cur = higher
            mask = pcs == cur
            if lent:
                mask = mask & lendable  # (lanes of looping warps stay where they wait)
            if cur >= nprog:  # ran off the end: like ret
                pcs = np.where(mask, DEAD, pcs)
                n_alive -= int(np.count_nonzero(mask))
                if n_alive == 0:
                    return
                continue
            end, is_term, fns = cf.block(cur)
            p = cur
            for f in fns:
                f(fr, mask)
                p += 1
            if not is_term:
                pcs = np.where(mask, np.int32(end), pcs)
            else:
                t = terms[end]
                assert t is not None
                kind = t.kind
                if kind == BRA:
                    if t.guard is None:
                        pcs = np.where(mask, np.int32(t.target), pcs)
                    else:
                        g = t.guard(fr)
                        if isinstance(g, np.ndarray):
                            dest = np.where(g, np.int32(t.target), np.int32(end + 1))
                        else:
                            dest = np.int32(t.target if g else end + 1)
                        pcs = np.where(mask, dest, pcs)
                    if t.target <= cur:  # another round of a loop (an if inside it is
                        starve += 1        # no progress: only leaving the loop is)
                        loop_end = max(loop_end, end)
                elif kind == BRX:
                    pcs = np.where(mask, _brx_targets(cf, t, fr, end), pcs).astype(np.int32)
                elif kind in (RET, EXIT):
                    if t.guard is None:
                        dying = mask
                    else:
                        g = t.guard(fr)
                        dying = (mask & g) if isinstance(g, np.ndarray) else (mask if g else None)
                    if dying is None:
                        pcs = np.where(mask, np.int32(end + 1), pcs)
                    else:
                        if kind == EXIT:
                            _mark_exit(L, dying)
                        pcs = np.where(dying, DEAD, np.where(mask, np.int32(end + 1), pcs))
                        n_alive -= int(np.count_nonzero(dying))
                        if n_alive == 0:
                            return
                        if n_waiting:
                            pcs, n_waiting = _release(cf, L, fr, pcs)
                elif kind == BAR:
                    pcs = np.where(mask, np.int32(end) + WAIT, pcs)
                    n_waiting += int(np.count_nonzero(mask))
                    pcs, n_waiting = _release(cf, L, fr, pcs)
                elif kind == CALL:
                    t.call(fr, mask)
                    pcs = np.where(mask, np.int32(end + 1), pcs)
                    if L.exited is not None:
                        gone = L.exited & (pcs < DEAD)
                        k = int(np.count_nonzero(gone))
                        if k:
                            pcs = np.where(gone, DEAD, pcs)
                            n_alive -= k
                            if n_alive == 0:
                                return
                else:
                    raise cf.cx.fault(cf.instructions[end], "launch_failed", TRAP_MESSAGE)
            if n_waiting and L.bar_arrived:  # a bar.arrive may have completed a barrier
                pcs, n_waiting = _release(cf, L, fr, pcs)
            if n_waiting == 0:
                lo = int(pcs.min())
                if lo < WAIT and int(np.count_nonzero(pcs == lo)) == n_alive:
                    pc = lo
                    alive = pcs < DEAD
                    all_alive = n_alive == N
                    pcs = None
    except EmuFault:
        raise
    except Exception as exc:  # an interpreter bug must not escape as a raw traceback
        raise _internal_error(cf, L.kernel, p, exc) from exc


def _brx_targets(cf: CompiledFunction, t: Terminator, fr: Frame, end: int):
    """Per-lane (or uniform) target PCs of ``brx.idx``; an index past the table faults."""
    idx = t.index(fr)  # type: ignore[misc]
    table = t.table
    assert table is not None
    bad = (idx >= table.size) if isinstance(idx, np.ndarray) else int(idx) >= table.size
    if np.any(bad):
        raise cf.cx.fault(
            cf.instructions[end], "launch_failed", f"brx.idx index out of its {table.size} targets"
        )
    return table[idx] if isinstance(idx, np.ndarray) else table[int(idx)]


def _mark_exit(L: Batch, lanes: np.ndarray) -> None:
    if L.exited is None:
        L.exited = np.zeros(L.N, BOOL)
    L.exited |= lanes


def _deadlock(cf: CompiledFunction, pcs: np.ndarray) -> EmuFault:
    pc = int(pcs.min() - WAIT)
    ins = cf.instructions[pc]
    return cf.cx.fault(
        ins,
        "barrier_divergence",
        "threads wait at this barrier but other threads of their block can never reach it "
        "(barrier in divergent code)",
    )


def _release(cf: CompiledFunction, L: Batch, fr: Frame, pcs: np.ndarray):
    """Open every barrier that is complete in some block; returns (pcs, lanes still waiting).

    A barrier (by number) is complete in a block when its waiting lanes plus the ``bar.arrive``
    tally reach the expected count: the instruction's thread count if it has one, else every
    live lane of the block (exited threads do not count, as on the hardware). Lanes of one block
    waiting for a whole-block barrier at *different* instructions are a barrier in divergent
    code and are reported.
    """
    nb, bs = L.nb, L.bs
    waiting = (pcs >= WAIT) & (pcs < DEAD)
    if not waiting.any():
        return pcs, 0
    alive_b = (pcs < DEAD).reshape(nb, bs).sum(1)
    at_pcs = [int(x) for x in np.unique(pcs[waiting] - WAIT)]
    by_id: dict[int, list[int]] = {}
    for pcv in at_pcs:
        t = cf.terms[pcv]
        by_id.setdefault(t.bar_id if t is not None else 0, []).append(pcv)
    for bar_id, group in by_id.items():
        sel = waiting if len(by_id) == 1 else np.isin(pcs - WAIT, group) & waiting
        w_b = sel.reshape(nb, bs).sum(1)
        counts = [cf.terms[pcv].bar_count for pcv in group]  # type: ignore[union-attr]
        full = any(c is None for c in counts)
        expected = alive_b if full else min(c for c in counts if c is not None)
        arrived = L.bar_arrived.get(bar_id)
        total = w_b if arrived is None else w_b + arrived
        ready = (w_b > 0) & (total >= expected)
        if not ready.any():
            continue
        rel = np.repeat(ready, bs) & sel
        if len(group) > 1 and full:
            p2 = np.where(rel, pcs - WAIT, -1).reshape(nb, bs)
            pmax = p2.max(1)
            pmin = np.where(rel, pcs - WAIT, np.iinfo(np.int32).max).reshape(nb, bs).min(1)
            split = (pmax != pmin) & ready
            if split.any():
                b = int(np.argmax(split))
                ins = cf.instructions[int(pmax[b])]
                raise cf.cx.fault(
                    ins,
                    "barrier_divergence",
                    f"threads of one block wait at different barriers (PTX lines "
                    f"{cf.instructions[int(pmin[b])].line} and {ins.line}): "
                    "barrier in divergent code",
                )
        for pcv in group:
            t = cf.terms[pcv]
            if t is not None and t.bar_red is not None:
                t.bar_red(fr, rel if len(group) == 1 else rel & (pcs == pcv + WAIT))
        pcs = np.where(rel, pcs - WAIT + np.int32(1), pcs)
        waiting = waiting & ~rel
        if arrived is not None:
            arrived[ready] = 0
    return pcs, int(np.count_nonzero(waiting))


__all__ = ["Batch", "CompiledFunction", "Frame", "Terminator", "run_function"]
