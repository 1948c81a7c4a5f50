"""A PTX module bound to one device: globals allocated, kernels compiled, launches run.

Compilation happens on a kernel's first launch (a module of a big library may hold hundreds of
kernels an application never calls) and is cached per kernel. Blocks run in batches of about
``TARGET_LANES`` threads: big enough that numpy amortises Python overhead, small enough that the
per-batch temporaries stay in cache and out of glibc's ``mmap`` path.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from . import ops_alu, ops_float, ops_mem, ops_mma, ops_sync, ops_tex, ops_warp  # noqa: F401  (register opcodes)
from .compiler import (
    BOOL,
    S32,
    U32,
    U64,
    CompileContext,
    compile_instruction,
    guard_reader,
    reader,
    writer,
)
from .errors import EmuFault
from .interp import (
    BAR,
    BRA,
    BRX,
    CALL,
    EXIT,
    RET,
    TRAP,
    Batch,
    CompiledFunction,
    Terminator,
    run_function,
)
from .ir import DTYPES, ArgList, Function, Imm, Instruction, PtxModule, Reg, Special, Sym
from .liveness import block_local_registers
from .memory import DeviceMemory
from .parser import local_layout, reachable_functions, shared_layout
from .printf import format_printf, read_cstring

#: Lanes per batch (see module docstring; measured on vectorAdd/reduction, see benchmarks).
TARGET_LANES = 1 << 16
#: Bytes the registers of one batch may occupy (each register can hold an 8-byte array per
#: lane); kernels with thousands of registers (big CUB kernels) get smaller batches.
REGISTER_BUDGET = 512 << 20
MAX_THREADS_PER_BLOCK = 1024
MAX_SHARED_PER_BLOCK = 227 * 1024
MAX_GRID = (2**31 - 1, 65535, 65535)
#: Recursion levels of ``.local`` frames a launch may stack (see _Levels): as many as its
#: per-thread stack (``CU_LIMIT_STACK_SIZE``, 1 KiB by default) holds frames of the kernel's
#: functions, never fewer than MIN_LOCAL_LEVELS (the emulator's frames are larger than the
#: compiled code's) nor more than MAX_LOCAL_LEVELS, the interpreter's own bound (each level is
#: compiled once and runs as nested Python calls).
MIN_LOCAL_LEVELS = 256
MAX_LOCAL_LEVELS = 4096
DEFAULT_STACK_SIZE = 1024


def local_levels(stack_size: int, frame_bytes: int) -> int:
    """Recursion levels a launch with a ``stack_size``-byte per-thread stack may stack."""
    return min(MAX_LOCAL_LEVELS, max(MIN_LOCAL_LEVELS, stack_size // max(frame_bytes, 1)))
#: Threads a cooperative launch may have: all of them run as one batch (the device's SMs times
#: their resident threads, with room to spare).
MAX_COOPERATIVE_THREADS = 1 << 18
#: Function "addresses" (``mov.u64 %rd, func``) live in their own window, 16 bytes apart.
FUNC_WINDOW = 0x7B00_0000_0000


_ALLOCATOR_TUNED = False


def tune_allocator() -> None:
    """Keep numpy's per-instruction temporaries out of glibc's ``mmap`` path.

    Every instruction of a batch allocates arrays of 64K lanes (256 KiB to 512 KiB). Above
    glibc's default 128 KiB threshold each one is a fresh ``mmap`` whose pages fault in again,
    which measured 5-10x slower on the fused multiply-add of a tiled matmul. Raising the mmap
    and trim thresholds (the ``MALLOC_MMAP_THRESHOLD_`` advice of the feasibility study) makes
    them reuse heap memory. Done once per process, only where glibc's ``mallopt`` exists.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


class _Level(dict):
    """The compiled functions of one recursion level: name -> CompiledFunction."""

    def __init__(self, levels: _Levels, level: int) -> None:
        super().__init__()
        self.levels = levels
        self.level = level


class _Levels:
    """A kernel's functions compiled once per recursion level.

    Every function's ``.local`` frame has a fixed place per lane, so a function that calls
    itself (directly or through others) while its frame is live runs a copy compiled one level
    up, whose frames all lie past the previous level's (``level * frame_bytes``); pointers into
    a caller's frame stay valid in the callee. Levels are compiled on first use.
    """

    def __init__(
        self,
        lm: LoadedModule,
        kernel: str,
        funcs: list[Function],
        shared_off: dict[str, int],
        bases: dict[str, int],
        frame_bytes: int,
    ) -> None:
        self.lm, self.kernel, self.funcs = lm, kernel, funcs
        self.shared_off, self.bases, self.frame_bytes = shared_off, bases, frame_bytes
        self.by_level: list[_Level] = []
        self.lock = threading.RLock()

    def get(self, level: int) -> _Level:
        if level < len(self.by_level):
            return self.by_level[level]
        with self.lock:
            while len(self.by_level) <= level:
                k = len(self.by_level)
                compiled = _Level(self, k)
                for fn in self.funcs:
                    if fn.has_body:
                        compiled[fn.name] = self.lm._compile_function(
                            fn, self.kernel, self.shared_off,
                            self.bases[fn.name] + k * self.frame_bytes, compiled,
                        )  # fmt: skip
                self.by_level.append(compiled)
        return self.by_level[level]


#: Bytes of system-reserved shared memory per block (sm_80+ reserve 1 KiB), present in a
#: batch only when the kernel reads a ``%reserved_smem_offset_*`` register.
RESERVED_SHARED = 1024


class _CompiledKernel:
    def __init__(
        self, entry: CompiledFunction, static_shared: int, local_size: int, reserved: int = 0
    ) -> None:
        self.entry = entry
        self.static_shared = static_shared
        #: where dynamic shared memory starts: after the static variables, aligned for the
        #: extern arrays, so the window is this plus the launch's dynamic bytes
        self.dynamic_offset = static_shared
        self.local_size = local_size
        self.reserved_shared = reserved


class LoadedModule:
    """A :class:`PtxModule` whose globals live in a :class:`DeviceMemory`."""

    def __init__(self, module: PtxModule, memory: DeviceMemory) -> None:
        self.module = module
        self.memory = memory
        self._addresses: dict[str, tuple[int, int]] = {}
        self._compiled: dict[str, _CompiledKernel] = {}
        self._lock = threading.Lock()
        self._loaded = True
        try:
            self._allocate_globals()
        except EmuFault:
            self.unload()
            raise

    # --- globals ------------------------------------------------------------------------------
    def _allocate_globals(self) -> None:
        mod = self.module
        for v in mod.variables.values():
            if v.space not in ("global", "const") or (v.extern and v.size == 0):
                continue
            addr = self.memory.alloc(max(v.size, 1), max(v.align, 16))
            self._addresses[v.name] = (addr, v.size)
        for v in mod.variables.values():
            if v.name not in self._addresses:
                continue
            addr, _ = self._addresses[v.name]
            if v.init:
                init = bytearray(v.init[: v.size])
                size = DTYPES[v.type].itemsize if v.type != "b128" else 8
                funcs = {name: FUNC_WINDOW + 16 * k for k, name in enumerate(mod.functions)}
                for off, sym, _generic in v.relocs:
                    if sym in self._addresses:
                        target = self._addresses[sym][0]
                    elif sym in funcs:  # vtables and function-pointer tables
                        target = funcs[sym]
                    else:
                        raise EmuFault(
                            "invalid_ptx",
                            f"PTX line {v.line}: initialiser of {v.name} names unknown {sym!r}",
                        )
                    base = int.from_bytes(init[off : off + size], "little", signed=True)
                    init[off : off + size] = ((target + base) & ((1 << (8 * size)) - 1)).to_bytes(
                        size, "little"
                    )
                if init:
                    self.memory.write(addr, bytes(init))

    def global_address(self, name: str) -> tuple[int, int]:
        """(device address, size) of a module-scope ``.global``/``.const`` variable."""
        return self._addresses[name]

    def unload(self) -> None:
        """Free the module's globals; the module cannot launch afterwards."""
        for addr, _ in self._addresses.values():
            try:
                self.memory.free(addr)
            except EmuFault:
                pass
        self._addresses.clear()
        self._compiled.clear()
        self._loaded = False

    # --- compilation ----------------------------------------------------------------------------
    def _compile_kernel(self, name: str) -> _CompiledKernel:
        ck = self._compiled.get(name)
        if ck is not None:
            return ck
        with self._lock:
            ck = self._compiled.get(name)
            if ck is not None:
                return ck
            mod = self.module
            entry = mod.functions[name]
            shared_off, static, dyn = shared_layout(entry, mod.functions, mod.variables)
            funcs = reachable_functions(entry, mod.functions)
            # functions whose addresses sit in initialised tables (vtables) are callable too
            seen = {f.name for f in funcs}
            for v in mod.variables.values():
                for _, sym, _ in v.relocs:
                    if sym in mod.functions and sym not in seen:
                        for f in reachable_functions(mod.functions[sym], mod.functions):
                            if f.name not in seen:
                                seen.add(f.name)
                                funcs.append(f)
            bases: dict[str, int] = {}
            total_local = 0
            for fn in funcs:
                bases[fn.name] = total_local
                total_local += local_layout(fn)[1]
            levels = _Levels(self, name, funcs, shared_off, bases, total_local)
            reads_reserved = any(
                isinstance(o, Special) and o.name.startswith("%reserved_smem")
                for fn in funcs
                for ins in fn.instructions
                for o in ins.operands
            )
            ck = _CompiledKernel(
                levels.get(0)[name], static, total_local, RESERVED_SHARED if reads_reserved else 0
            )
            ck.dynamic_offset = dyn
            self._compiled[name] = ck
            return ck

    def _compile_function(
        self,
        fn: Function,
        kernel: str,
        shared_off: dict[str, int],
        local_base: int,
        compiled: _Level,
    ) -> CompiledFunction:
        symbols: dict[str, tuple[int, str]] = {}
        for vname, (addr, _size) in self._addresses.items():
            symbols[vname] = (addr, self.module.variables[vname].space)
        for vname, off in shared_off.items():
            symbols[vname] = (off, "shared")
        loffs, _ = local_layout(fn)
        for vname, off in loffs.items():
            symbols[vname] = (local_base + off, "local")
        if fn.is_entry:
            for p in fn.params:
                symbols[p.name] = (p.offset, "param")
        fidx = {name: k for k, name in enumerate(self.module.functions)}
        for fname in self.module.functions:
            symbols.setdefault(fname, (FUNC_WINDOW + 16 * fidx[fname], "func"))
        cx = CompileContext(kernel, fn, symbols, compiled, local_base)
        cx.block_local = block_local_registers(fn)
        fns: list[Callable] = []
        terms: list[Terminator | None] = []
        for ins in fn.instructions:
            t = self._terminator(ins, fn, cx, compiled)
            terms.append(t)
            fns.append(_noop if t is not None else compile_instruction(ins, cx))
        reg_init = [DTYPES[r.type].type(0) for r in fn.regs]
        return CompiledFunction(fn.name, fn.instructions, fns, terms, reg_init, cx)

    def _terminator(
        self,
        ins: Instruction,
        fn: Function,
        cx: CompileContext,
        compiled: dict[str, CompiledFunction],
    ) -> Terminator | None:
        opc = ins.opcode
        if opc == "bra":
            target = ins.operands[0] if ins.operands else None
            if not isinstance(target, Sym) or target.name not in fn.labels:
                raise cx.fault(ins, "invalid_ptx", "branch to an unknown label")
            return Terminator(BRA, fn.labels[target.name], guard_reader(ins))
        if opc == "brx":
            tab = ins.operands[1] if len(ins.operands) > 1 else None
            names = fn.branch_tables.get(getattr(tab, "name", ""))
            if names is None or any(x not in fn.labels for x in names) or ins.guard is not None:
                raise cx.fault(ins, "invalid_ptx", "brx.idx needs a .branchtargets table")
            targets = np.array([fn.labels[x] for x in names], np.int32)
            return Terminator(BRX, table=targets, index=reader(ins.operands[0], U32, cx, ins))
        if opc in ("ret", "exit"):
            return Terminator(RET if opc == "ret" else EXIT, guard=guard_reader(ins))
        if opc == "trap":
            return Terminator(TRAP)
        if opc in ("bar", "barrier"):
            if "warp" in ins.mods:
                return None  # bar.warp.sync: lanes of a warp run in lockstep here
            if "arrive" in ins.mods:
                return None
            red = self._bar_red(ins, cx) if "red" in ins.mods else None
            ops_ = ins.operands[1:] if red is not None else ins.operands
            if red is not None:
                ops_ = ops_[:-1]  # the predicate
            bar_id = int(ops_[0].value) if ops_ and isinstance(ops_[0], Imm) else 0
            count = int(ops_[1].value) if len(ops_) > 1 and isinstance(ops_[1], Imm) else None
            return Terminator(BAR, bar_red=red, bar_id=bar_id, bar_count=count)
        if opc == "call":
            return Terminator(CALL, call=self._call(ins, cx, compiled))
        return None

    def _bar_red(self, ins: Instruction, cx: CompileContext) -> Callable:
        kind = next((m for m in ins.mods if m in ("popc", "and", "or")), None)
        o = ins.operands
        rp = reader(o[-1], BOOL, cx, ins)
        w = writer(o[0], U32 if kind == "popc" else BOOL, cx, ins)

        def red(fr, lanes):
            L = fr.L
            p = rp(fr)
            p = p if isinstance(p, np.ndarray) else np.full(L.N, bool(p))
            p2 = (p & lanes).reshape(L.nb, L.bs)
            l2 = lanes.reshape(L.nb, L.bs)
            if kind == "popc":
                r = np.repeat(p2.sum(1).astype(U32), L.bs)
            elif kind == "and":
                r = np.repeat((p2 | ~l2).all(1), L.bs)
            else:
                r = np.repeat(p2.any(1), L.bs)
            w(fr, r, lanes)

        return red

    def _call(self, ins: Instruction, cx: CompileContext, compiled) -> Callable:
        ops_ = list(ins.operands)
        rets: list[Any] = []
        if ops_ and isinstance(ops_[0], ArgList):
            rets = list(ops_.pop(0).items)
        if not ops_ or not isinstance(ops_[0], (Sym, Reg)):
            raise cx.fault(ins, "invalid_ptx", "call needs a function name or register")
        args = list(ops_[1].items) if len(ops_) > 1 and isinstance(ops_[1], ArgList) else []
        arg_names = [a.name if isinstance(a, Sym) else None for a in args]
        arg_regs = [
            reader(a, DTYPES[a.type], cx, ins) if isinstance(a, Reg) else None for a in args
        ]
        ret_names = [r.name if isinstance(r, Sym) else None for r in rets]
        if isinstance(ops_[0], Reg):
            return self._indirect_call(ins, cx, compiled, ops_[0], arg_names, arg_regs, ret_names)
        callee_name = ops_[0].name
        callee = self.module.functions.get(callee_name)
        if callee is None:
            raise cx.fault(ins, "invalid_ptx", f"call to undeclared function {callee_name!r}")
        if not callee.has_body:
            return self._builtin(ins, cx, callee_name, arg_names, ret_names)
        return self._direct_call(ins, cx, compiled, callee, arg_names, arg_regs, ret_names)

    def _direct_call(self, ins, cx, compiled, callee: Function, arg_names, arg_regs, ret_names):
        callee_name = callee.name
        formals = [p.name for p in callee.params]
        formal_rets = [p.name for p in callee.returns]
        uses_local = local_layout(callee)[1] > 0
        level = compiled.level
        levels = compiled.levels

        def depth_err(limit: int) -> EmuFault:
            if limit < MAX_LOCAL_LEVELS:  # the stack overflows, as on a GPU: a bad access
                return cx.fault(
                    ins, "illegal_address",
                    f"stack overflow: recursion of {callee_name} deeper than {limit} levels of "
                    "local frames (raise cudaLimitStackSize)",
                )  # fmt: skip
            return cx.fault(
                ins, "not_supported",
                f"recursion of {callee_name} deeper than {limit} levels of local frames, the "
                "most the emulated device stacks",
            )  # fmt: skip

        def call(fr, m):
            ps: dict[str, dict[int, Any]] = {}
            for formal, an, ar in zip(formals, arg_names, arg_regs, strict=False):
                if an is not None:
                    ps[formal] = dict(fr.ps.get(an, {}))
                elif ar is not None:
                    ps[formal] = {0: ar(fr)}
            L = fr.L
            key = None
            lvl = level
            if uses_local:
                # a frame already live at this level belongs to a caller: go one level up
                if (callee_name, lvl) in L.active_frames:
                    lvl += 1
                    if lvl >= L.max_levels:
                        raise depth_err(L.max_levels)
                    L.ensure_local((lvl + 1) * levels.frame_bytes, cx.faulter(ins))
                key = (callee_name, lvl)
                L.active_frames.add(key)
            cf = (compiled if lvl == level else levels.get(lvl)).get(callee_name)
            if cf is None:
                raise cx.fault(ins, "not_supported", f"function {callee_name} has no body")
            try:
                run_function(cf, L, ps, m)
            finally:
                if key is not None:
                    L.active_frames.discard(key)
            for rn, formal in zip(ret_names, formal_rets, strict=False):
                if rn is not None:
                    fr.ps[rn] = ps.get(formal, {})

        return call

    def _indirect_call(self, ins, cx, compiled, reg: Reg, arg_names, arg_regs, ret_names):
        """``call (r), %rd, (args), proto``: run each distinct target for the lanes naming it,
        then merge the per-target return values lane by lane."""
        by_addr = {FUNC_WINDOW + 16 * k: name for k, name in enumerate(self.module.functions)}
        rd = reader(reg, U64, cx, ins)
        calls: dict[str, Callable] = {}

        def target(name: str) -> Callable:
            c = calls.get(name)
            if c is None:
                fn = self.module.functions[name]
                if not fn.has_body:
                    c = self._builtin(ins, cx, name, arg_names, ret_names)
                else:
                    c = self._direct_call(ins, cx, compiled, fn, arg_names, arg_regs, ret_names)
                calls[name] = c
            return c

        def icall(fr, m):
            addrs = rd(fr)
            lanes = np.ones(fr.L.N, BOOL) if m is None else m
            uniq = np.unique(addrs[lanes]) if isinstance(addrs, np.ndarray) else [addrs]
            merged: dict[str, dict[int, Any]] = {}
            for av in uniq:
                name = by_addr.get(int(av))
                if name is None:
                    raise cx.fault(
                        ins, "illegal_address", f"call through {int(av):#x}: no function"
                    )
                sub = lanes & (addrs == av) if isinstance(addrs, np.ndarray) else m
                target(name)(fr, sub)
                for rn in ret_names:
                    if rn is None or rn not in fr.ps:
                        continue
                    slots = merged.setdefault(rn, {})
                    for off, v in fr.ps[rn].items():
                        old = slots.get(off)
                        slots[off] = v if old is None or sub is None else np.where(sub, v, old)
            fr.ps.update(merged)

        return icall

    def _builtin(self, ins, cx, name, arg_names, ret_names) -> Callable:
        if name == "vprintf":
            return _vprintf(ins, cx, arg_names, ret_names)
        if name == "__assertfail":
            return _assertfail(ins, cx, arg_names)
        if name in ("malloc", "__nv_aligned_device_malloc", "free"):
            return _device_heap(ins, cx, name, arg_names, ret_names, self.memory)
        return _raiser(cx.fault(ins, "not_supported", f"device function {name} (no PTX body)"))

    # --- launch ---------------------------------------------------------------------------------
    def launch(
        self,
        kernel: str,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        dynamic_shared: int,
        params: bytes,
        printf: Callable[[str], None],
        cooperative: bool = False,
        stack_size: int = DEFAULT_STACK_SIZE,
    ) -> None:
        """Run ``kernel`` to completion; raises :class:`EmuFault` and nothing else.

        ``cooperative`` (cuLaunchCooperativeKernel): every block runs in one batch and
        cooperative groups' ``grid.sync()`` gets its barrier word, so grid-wide barriers work.
        ``stack_size`` (the context's ``CU_LIMIT_STACK_SIZE``) bounds recursion depth.
        """
        try:
            self._launch(kernel, grid, block, dynamic_shared, params, printf, cooperative,
                         stack_size)
        except EmuFault:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise EmuFault("invalid_value", f"{kernel}: bad launch arguments: {exc}") from exc
        except Exception as exc:
            raise EmuFault("launch_failed", f"{kernel}: {type(exc).__name__}: {exc}") from exc

    def _launch(
        self,
        kernel: str,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        dynamic_shared: int,
        params: bytes,
        printf: Callable[[str], None],
        cooperative: bool = False,
        stack_size: int = DEFAULT_STACK_SIZE,
    ) -> None:
        if not self._loaded:
            raise EmuFault("invalid_value", f"{kernel}: module was unloaded")
        info = self.module.kernels.get(kernel)
        if info is None:
            raise EmuFault("invalid_value", f"no kernel named {kernel!r} in this module")
        grid = tuple(int(x) for x in grid)  # type: ignore[assignment]
        block = tuple(int(x) for x in block)  # type: ignore[assignment]
        if len(grid) != 3 or len(block) != 3 or min(grid) < 1 or min(block) < 1:
            raise EmuFault(
                "invalid_value", f"{kernel}: grid {grid} and block {block} must be 3 positive ints"
            )
        if any(g > mx for g, mx in zip(grid, MAX_GRID, strict=True)):
            raise EmuFault("invalid_value", f"{kernel}: grid {grid} exceeds the maximum {MAX_GRID}")
        bs = block[0] * block[1] * block[2]
        limit = info.max_threads_per_block or MAX_THREADS_PER_BLOCK
        if bs > min(limit, MAX_THREADS_PER_BLOCK) or block[2] > 64:
            raise EmuFault(
                "invalid_value",
                f"{kernel}: block {block} has {bs} threads, more than the "
                f"{min(limit, MAX_THREADS_PER_BLOCK)} allowed",
            )
        params = bytes(params)
        if len(params) < info.param_size:
            raise EmuFault(
                "invalid_value",
                f"{kernel}: parameter buffer has {len(params)} bytes, "
                f"the kernel needs {info.param_size}",
            )
        try:
            ck = self._compile_kernel(kernel)
        except EmuFault:
            raise
        except Exception as exc:
            raise EmuFault(
                "launch_failed", f"{kernel}: could not compile: {type(exc).__name__}: {exc}"
            ) from exc
        if dynamic_shared < 0 or ck.static_shared + dynamic_shared > MAX_SHARED_PER_BLOCK:
            raise EmuFault(
                "invalid_value",
                f"{kernel}: {ck.static_shared} static + {dynamic_shared} dynamic shared bytes "
                f"exceed {MAX_SHARED_PER_BLOCK}",
            )
        tune_allocator()
        nblocks = grid[0] * grid[1] * grid[2]
        lanes = min(TARGET_LANES, REGISTER_BUDGET // (8 * max(1, len(ck.entry.reg_init))))
        per = max(1, lanes // bs)
        if ck.local_size:
            per = max(1, min(per, (64 << 20) // max(1, ck.local_size * bs)))
        workspace = 0
        if cooperative:  # all blocks co-resident, as the hardware guarantees such a launch
            if nblocks * bs > MAX_COOPERATIVE_THREADS:
                raise EmuFault(
                    "invalid_value",
                    f"{kernel}: cooperative launch of {nblocks * bs} threads exceeds the "
                    f"{MAX_COOPERATIVE_THREADS} the emulated device runs at once",
                )
            per = nblocks
            workspace = self.memory.alloc(16, 16)
        try:
            self._run_batches(kernel, ck, grid, block, nblocks, per, dynamic_shared, params,
                              printf, workspace, stack_size)  # fmt: skip
        finally:
            if workspace:
                self.memory.free(workspace)

    def _run_batches(self, kernel, ck, grid, block, nblocks, per, dynamic_shared, params, printf,
                     workspace, stack_size=DEFAULT_STACK_SIZE) -> None:  # fmt: skip
        max_levels = local_levels(stack_size, ck.local_size)  # a level's frames, all functions
        # each recursion level runs as a few nested Python calls: room for the deepest allowed
        # (raised, never lowered: other sessions' launches may be running)
        need = 8 * max_levels + 1000
        if sys.getrecursionlimit() < need:
            sys.setrecursionlimit(need)
        with np.errstate(all="ignore"):
            for b0 in range(0, nblocks, per):
                nb = min(per, nblocks - b0)
                L = Batch(
                    kernel, self.memory, grid, block, b0, nb, params,  # type: ignore[arg-type]
                    ck.dynamic_offset if dynamic_shared else ck.static_shared, dynamic_shared,
                    ck.local_size, printf, ck.reserved_shared,
                    workspace, max_levels,
                )  # fmt: skip
                try:
                    run_function(ck.entry, L, {}, None)
                except EmuFault:
                    raise
                except RecursionError as exc:
                    raise EmuFault("launch_failed", f"{kernel}: call depth exceeded") from exc
                except Exception as exc:
                    raise EmuFault(
                        "launch_failed", f"{kernel}: {type(exc).__name__}: {exc}"
                    ) from exc


def _noop(fr, m) -> None:
    return None


def _raiser(err: EmuFault) -> Callable:
    def f(fr, m):
        raise err

    return f


def _lane_reader(L: Batch, fault, lane: int) -> Callable[[int, int], bytes]:
    return lambda addr, n: L.read_bytes(addr, n, lane, fault)


def _vprintf(ins, cx: CompileContext, arg_names, ret_names) -> Callable:
    fault = cx.faulter(ins)
    if len(arg_names) < 2 or arg_names[0] is None or arg_names[1] is None:
        return _raiser(cx.fault(ins, "not_supported", "vprintf with unusual arguments"))
    fmt_name, buf_name = arg_names[0], arg_names[1]
    ret = ret_names[0] if ret_names else None

    def vprintf(fr, m):
        L = fr.L
        fmt_p = fr.ps.get(fmt_name, {}).get(0, U64.type(0))
        buf_p = fr.ps.get(buf_name, {}).get(0, U64.type(0))
        fmt_p = np.broadcast_to(
            np.asarray(fmt_p).view(U64)
            if np.asarray(fmt_p).dtype.itemsize == 8
            else np.asarray(fmt_p).astype(U64),
            (L.N,),
        )
        buf_p = np.broadcast_to(
            np.asarray(buf_p).view(U64)
            if np.asarray(buf_p).dtype.itemsize == 8
            else np.asarray(buf_p).astype(U64),
            (L.N,),
        )
        lanes = np.flatnonzero(m) if m is not None else range(L.N)
        counts = np.zeros(L.N, S32)
        cache: dict[int, str] = {}
        for i in lanes:
            i = int(i)
            read = _lane_reader(L, fault, i)
            fa = int(fmt_p[i])
            fmt = cache.get(fa)
            if fmt is None:
                fmt = cache[fa] = read_cstring(read, fa)
            text = format_printf(fmt, read, int(buf_p[i]))
            counts[i] = len(text)
            L.printf(text)
        if ret is not None:
            fr.ps[ret] = {0: counts}

    return vprintf


def _device_heap(ins, cx: CompileContext, name: str, arg_names, ret_names, memory) -> Callable:
    """Device-side ``malloc``/``free`` (and ``new``/``delete``, which call them): every active
    lane gets its own block of the emulated device memory (see DeviceMemory.device_malloc)."""
    if not arg_names or arg_names[0] is None:
        return _raiser(cx.fault(ins, "not_supported", f"{name} with unusual arguments"))
    arg = arg_names[0]
    ret = ret_names[0] if ret_names else None
    fault = cx.faulter(ins)

    def lanes_of(fr, m) -> np.ndarray:
        v = fr.ps.get(arg, {}).get(0, U64.type(0))
        v = np.broadcast_to(np.asarray(v).astype(U64), (fr.L.N,))
        return v if m is None else v[m]

    def heap(fr, m):
        vals = lanes_of(fr, m)
        if name == "free":
            try:
                memory.device_free(vals)
            except EmuFault as e:
                raise fault(e.kind, e.message) from e
            return
        addrs = memory.device_malloc(vals.astype(np.int64))
        if ret is not None:
            out = np.zeros(fr.L.N, U64)
            if m is None:
                out = addrs
            else:
                out[m] = addrs
            fr.ps[ret] = {0: out}

    return heap


def _assertfail(ins, cx: CompileContext, arg_names) -> Callable:
    fault = cx.faulter(ins)

    def assertfail(fr, m):
        L = fr.L
        lane = int(np.flatnonzero(m)[0]) if m is not None else 0
        read = _lane_reader(L, fault, lane)

        def arg(k: int) -> int:
            name = arg_names[k] if k < len(arg_names) else None
            v = fr.ps.get(name, {}).get(0, U64.type(0)) if name else U64.type(0)
            v = np.asarray(v)
            return int(v[lane] if v.ndim else v)

        try:
            msg = read_cstring(read, arg(0))
            file = read_cstring(read, arg(1))
        except EmuFault:
            msg, file = "?", "?"
        raise cx.fault(ins, "assert", f"device-side assertion `{msg}` failed ({file}:{arg(2)})")

    return assertfail
