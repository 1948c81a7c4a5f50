"""Register liveness, to skip merge work in divergent code.

After a divergent branch an instruction writes only the lanes that execute it, which costs an
``np.where`` merge with the register's old value. That merge is only needed if a lane that did
*not* execute the instruction may later read the old value. Lanes that are not executing always
wait at a basic-block leader, so a register that is never live on entry to a leader (a temporary
defined and consumed inside one basic block, which is most of what nvcc emits) can be written
for all lanes at once. This module finds those registers with a standard backward dataflow over
the instruction graph, using Python ints as bit sets.
"""

from __future__ import annotations

from .ir import Addr, ArgList, Function, Instruction, NotPred, Operand, Pair, Reg, Vec

_NO_DEST = frozenset(
    {"st", "red", "bra", "ret", "exit", "bar", "barrier", "membar", "fence", "call", "prefetch",
     "prefetchu", "nanosleep", "trap", "brkpt", "pmevent", "discard", "applypriority",
     "griddepcontrol"}
)  # fmt: skip
_CONTROL = frozenset({"bra", "brx", "ret", "exit", "call", "trap"})


def _regs(op: Operand) -> int:
    if isinstance(op, Reg):
        return 1 << op.index
    if isinstance(op, NotPred):
        return 1 << op.reg.index
    if isinstance(op, Addr):
        return (1 << op.base.index) if isinstance(op.base, Reg) else 0
    if isinstance(op, (Vec, ArgList)):
        m = 0
        for x in op.items:
            m |= _regs(x)
        return m
    if isinstance(op, Pair):
        return _regs(op.first) | _regs(op.second)
    return 0


def _def_use(ins: Instruction) -> tuple[int, int]:
    ops = ins.operands
    if not ops:
        uses = 0
        defs = 0
    elif ins.opcode in _NO_DEST or isinstance(ops[0], Addr):
        uses = 0
        for o in ops:
            uses |= _regs(o)
        defs = 0
    else:
        defs = _regs(ops[0])
        uses = 0
        for o in ops[1:]:
            uses |= _regs(o)
        if ins.opcode in ("addc", "subc", "madc") or "cc" in ins.mods:
            uses |= defs  # carry chains: keep it simple and conservative
    if ins.guard is not None:
        uses |= 1 << ins.guard.index
        uses |= defs  # a guarded write keeps the old value in lanes whose guard is false
    return defs, uses


def leaders(fn: Function) -> set[int]:
    """Instruction indices where lanes can wait: entry, branch targets, after control."""
    out = {0, *fn.labels.values()}
    for i, ins in enumerate(fn.instructions):
        if ins.opcode in _CONTROL or (ins.opcode in ("bar", "barrier") and "warp" not in ins.mods):
            out.add(i + 1)
            out.add(i)
    return out


def block_local_registers(fn: Function) -> set[int]:
    """Indices of registers never live on entry to a leader."""
    instrs = fn.instructions
    n = len(instrs)
    if n == 0:
        return {r.index for r in fn.regs}
    du = [_def_use(ins) for ins in instrs]
    succ: list[tuple[int, ...]] = []
    for i, ins in enumerate(instrs):
        if ins.opcode == "bra":
            tgt = ins.operands[0] if ins.operands else None
            t = fn.labels.get(getattr(tgt, "name", ""), n)
            succ.append((t, i + 1) if ins.guard is not None else (t,))
        elif ins.opcode == "brx":
            table = ins.operands[1] if len(ins.operands) > 1 else None
            names = fn.branch_tables.get(getattr(table, "name", ""), [])
            succ.append(tuple(fn.labels.get(x, n) for x in names) or (i + 1,))
        elif ins.opcode in ("ret", "exit", "trap"):
            succ.append((i + 1,) if ins.guard is not None else ())
        else:
            succ.append((i + 1,))
    live_in = [0] * (n + 1)
    changed = True
    while changed:
        changed = False
        for i in range(n - 1, -1, -1):
            out = 0
            for s in succ[i]:
                out |= live_in[s]
            d, u = du[i]
            new = u | (out & ~d)
            if new != live_in[i]:
                live_in[i] = new
                changed = True
    at_leaders = 0
    for ld in leaders(fn):
        if ld <= n:
            at_leaders |= live_in[ld]
    return {r.index for r in fn.regs if not (at_leaders >> r.index) & 1}
