"""The parsed form of a PTX module: what the parser produces and the compiler consumes.

Kept free of numpy state and execution details so the CUDA layer can ask a module for its
kernels' parameter layouts and attributes (``cuFuncGetParamInfo``, ``cuFuncGetAttribute``)
without ever running it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: PTX fundamental types and the numpy dtype that holds their bits. ``.pred`` is a bool.
DTYPES: dict[str, np.dtype] = {
    k: np.dtype(v)
    for k, v in {
        "s8": np.int8, "s16": np.int16, "s32": np.int32, "s64": np.int64,
        "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64,
        "b8": np.uint8, "b16": np.uint16, "b32": np.uint32, "b64": np.uint64,
        "f16": np.float16, "bf16": np.uint16, "f16x2": np.uint32, "bf16x2": np.uint32,
        "f32": np.float32, "f64": np.float64, "pred": np.bool_, "b128": np.uint64,
        "u16x2": np.uint32, "s16x2": np.uint32,
    }.items()
}  # fmt: skip

TYPE_NAMES = frozenset(DTYPES)


def type_size(name: str) -> int:
    """Size in bytes of a PTX fundamental type (``.b128`` is 16)."""
    if name == "b128":
        return 16
    if name == "pred":
        return 1
    return DTYPES[name].itemsize


# --- operands ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reg:
    """A declared register: ``index`` into its function's register file."""

    index: int
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Special:
    """A special register such as ``%tid.x`` or ``%laneid``."""

    name: str


@dataclass(frozen=True, slots=True)
class Imm:
    """An immediate: ``value`` is an int, or a float for decimal literals; ``bits`` is set for
    ``0f``/``0d`` literals, which are bit patterns of that many bits."""

    value: int | float
    bits: int = 0


@dataclass(frozen=True, slots=True)
class Sym:
    """A named variable, function or label, possibly with a byte offset (``sym+8``)."""

    name: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Addr:
    """A memory operand ``[base+offset]``; ``base`` is a Reg, a Sym or None (absolute)."""

    base: Reg | Sym | None
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Vec:
    """A vector operand ``{a, b, c, d}`` (elements may be Sink)."""

    items: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class NotPred:
    """A negated predicate operand ``!%p``."""

    reg: Reg


@dataclass(frozen=True, slots=True)
class Pair:
    """A two-destination operand ``%p|%q`` (setp, shfl)."""

    first: Operand
    second: Operand


@dataclass(frozen=True, slots=True)
class Sink:
    """The bit bucket ``_``."""


@dataclass(frozen=True, slots=True)
class ArgList:
    """A parenthesised operand list of ``call``: ``(param0, param1)``."""

    items: tuple[Operand, ...]


Operand = Reg | Special | Imm | Sym | Addr | Vec | NotPred | Pair | Sink | ArgList


# --- statements -------------------------------------------------------------------------------
@dataclass(slots=True)
class Instruction:
    """One PTX instruction with its source line and text, for error messages."""

    opcode: str
    mods: tuple[str, ...]
    operands: tuple[Operand, ...]
    guard: Reg | None
    guard_negated: bool
    line: int
    text: str

    @property
    def types(self) -> list[str]:
        """The type suffixes in order, e.g. ``['f32', 'f16']`` for ``cvt.f32.f16``."""
        return [m for m in self.mods if m in TYPE_NAMES]


@dataclass(frozen=True, slots=True)
class ParamInfo:
    """A kernel parameter: its place in the packed parameter buffer."""

    name: str
    offset: int
    size: int
    align: int
    type: str = "b8"


@dataclass(slots=True)
class VarDecl:
    """A state-space variable: module-scope ``.global``/``.const``/``.shared`` or a function's
    ``.local``/``.shared``/``.param``."""

    name: str
    space: str
    type: str
    size: int
    align: int
    init: bytes = b""
    extern: bool = False
    line: int = 0
    #: (byte offset, symbol name) for initialisers that hold addresses (``= {generic(x)}``).
    relocs: tuple[tuple[int, str, bool], ...] = ()


@dataclass(slots=True)
class Function:
    """An ``.entry`` or ``.func``: signature, declarations and instruction list."""

    name: str
    is_entry: bool
    params: list[ParamInfo]
    returns: list[ParamInfo]
    line: int
    regs: list[Reg] = field(default_factory=list)
    locals: list[VarDecl] = field(default_factory=list)
    shared: list[VarDecl] = field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    #: ``L: .branchtargets a, b, c;`` tables used by ``brx.idx``
    branch_tables: dict[str, list[str]] = field(default_factory=dict)
    has_body: bool = False
    maxntid: tuple[int, ...] | None = None
    reqntid: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class GlobalVarInfo:
    """A module-scope ``.global`` or ``.const`` variable (``cuModuleGetGlobal``)."""

    name: str
    space: str
    size: int
    align: int
    init: bytes


@dataclass(slots=True)
class KernelInfo:
    """What the CUDA layer needs to know about a kernel without running it."""

    name: str
    params: list[ParamInfo]
    param_size: int
    static_shared_bytes: int
    max_threads_per_block: int | None
    regs: int
    local_bytes: int


@dataclass(slots=True)
class PtxModule:
    """A parsed PTX module."""

    version: tuple[int, int]
    target: str
    address_size: int
    kernels: dict[str, KernelInfo]
    globals: dict[str, GlobalVarInfo]
    functions: dict[str, Function]
    variables: dict[str, VarDecl]  # every module-scope variable, .shared included
