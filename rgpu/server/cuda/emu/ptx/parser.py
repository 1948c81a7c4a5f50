"""PTX text to :class:`~.ir.PtxModule`: a tokenizer and a recursive-descent parser.

PTX is not line-based: statements end with ``;`` except ``.version``/``.target``/
``.address_size``/``.file``/``.loc``, which end with their line; braces are scopes (inline asm
blocks), vector operands or initialisers depending on where they stand; inline asm declares
registers without ``%`` and reuses names in sibling scopes. The parser therefore works on tokens
with line numbers, resolves register names through a scope stack at parse time (so the
interpreter never looks a name up), and reports the first thing it does not understand as
``invalid_ptx`` naming the line, instead of guessing.
"""

from __future__ import annotations

import re
import struct

import numpy as np

from .errors import EmuFault
from .ir import (
    DTYPES,
    TYPE_NAMES,
    Addr,
    ArgList,
    Function,
    GlobalVarInfo,
    Imm,
    Instruction,
    KernelInfo,
    NotPred,
    Operand,
    Pair,
    ParamInfo,
    PtxModule,
    Reg,
    Sink,
    Special,
    Sym,
    VarDecl,
    Vec,
    type_size,
)

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<nl>\n)
  | (?P<lc>//[^\n]*)
  | (?P<bc>/\*.*?\*/)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<fimm>0[fF][0-9a-fA-F]{8}(?![\w$])|0[dD][0-9a-fA-F]{16}(?![\w$]))
  | (?P<float>\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)
  | (?P<int>0[xX][0-9a-fA-F]+U?|0[bB][01]+U?|\d+U?)
  | (?P<id>[%.]?[A-Za-z_$][\w$]*(?:(?:\.|::)[\w$]+)*)
  | (?P<punct>[{}()\[\],;:+\-!@|<>=*])
    """,
    re.S | re.X,
)

#: Special registers and their numpy type (all read-only, all 32-bit unless noted).
SPECIAL_REGISTERS: dict[str, str] = {
    **{f"%{n}.{c}": "u32" for n in ("tid", "ntid", "ctaid", "nctaid") for c in "xyz"},
    **{n: "u32" for n in ("%tid", "%ntid", "%ctaid", "%nctaid")},
    "%laneid": "u32", "%warpid": "u32", "%nwarpid": "u32", "%smid": "u32", "%nsmid": "u32",
    "%gridid": "u64", "%lanemask_eq": "u32", "%lanemask_le": "u32", "%lanemask_lt": "u32",
    "%lanemask_ge": "u32", "%lanemask_gt": "u32", "%clock": "u32", "%clock_hi": "u32",
    "%clock64": "u64", "%globaltimer": "u64", "%globaltimer_lo": "u32",
    "%globaltimer_hi": "u32", "%dynamic_smem_size": "u32", "%total_smem_size": "u32",
    "%aggr_smem_size": "u32", "%warpsize": "u32", "%is_explicit_cluster": "u32",
    **{f"%cluster_{n}.{c}": "u32" for n in ("ctaid", "nctaid") for c in "xyz"},
    **{f"%{n}.{c}": "u32" for n in ("clusterid", "nclusterid") for c in "xyz"},
    "%cluster_ctarank": "u32", "%cluster_nctarank": "u32",
    **{f"%reserved_smem_offset_{n}": "u32" for n in ("begin", "end", "cap", "0", "1")},
    **{f"%envreg{n}": "u32" for n in range(32)},
}  # fmt: skip

_LINE_DIRECTIVES = frozenset({".version", ".target", ".address_size", ".file", ".loc"})
_LINKAGE = frozenset({".visible", ".extern", ".weak", ".common"})
_SPACES = frozenset({".global", ".const", ".shared", ".local", ".param", ".tex"})
_PERF = frozenset(
    {
        ".maxntid", ".reqntid", ".minnctapersm", ".maxnctapersm", ".maxnreg", ".noreturn",
        ".explicitcluster", ".reqnctapercluster", ".maxclusterrank", ".blocksareclusters",
        ".pragma", ".abi_preserve", ".abi_preserve_control",
    }
)  # fmt: skip


class _Tok:
    __slots__ = ("end", "kind", "line", "start", "text")

    def __init__(self, kind: str, text: str, line: int, start: int, end: int) -> None:
        self.kind, self.text, self.line, self.start, self.end = kind, text, line, start, end


def tokenize(text: str) -> list[_Tok]:
    """Split PTX text into tokens with line numbers; comments and whitespace are dropped."""
    out: list[_Tok] = []
    line = 1
    pos = 0
    n = len(text)
    match = _TOKEN.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            raise EmuFault("invalid_ptx", f"PTX line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        s = m.group()
        if kind == "nl":
            line += 1
        elif kind == "bc":
            line += s.count("\n")
        elif kind == "id" and s[0] == "." and "." in s[1:]:
            # a directive run together with its type, as cuda_fp16/bf16 inline asm writes it
            # (`.reg.b32 f;`): one token per directive word, like `.reg .b32`
            p = pos
            for part in s[1:].split("."):
                out.append(_Tok(kind, "." + part, line, p, p + len(part) + 1))
                p += len(part) + 1
        elif kind not in ("ws", "lc"):
            out.append(_Tok(kind, s, line, pos, m.end()))
        pos = m.end()
    return out


def _parse_int(s: str) -> int:
    s = s.rstrip("U")
    if s[:2] in ("0x", "0X"):
        return int(s[2:], 16)
    if s[:2] in ("0b", "0B"):
        return int(s[2:], 2)
    if len(s) > 1 and s[0] == "0":
        return int(s, 8)
    return int(s)


class _Parser:
    def __init__(self, text: str) -> None:
        self.src = text
        self.toks = tokenize(text)
        self.i = 0
        self.version = (0, 0)
        self.target = ""
        self.address_size = 64
        self.functions: dict[str, Function] = {}
        self.variables: dict[str, VarDecl] = {}

    # --- token helpers ----------------------------------------------------------------------
    def error(self, msg: str, tok: _Tok | None = None) -> EmuFault:
        tok = tok or self.peek()
        line = tok.line if tok else (self.toks[-1].line if self.toks else 1)
        return EmuFault("invalid_ptx", f"PTX line {line}: {msg}")

    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def next(self) -> _Tok:
        t = self.peek()
        if t is None:
            raise self.error("unexpected end of PTX text")
        self.i += 1
        return t

    def at(self, text: str) -> bool:
        t = self.peek()
        return t is not None and t.text == text

    def expect(self, text: str) -> _Tok:
        t = self.next()
        if t.text != text:
            raise self.error(f"expected {text!r}, found {t.text!r}", t)
        return t

    def expect_int(self) -> int:
        neg = False
        if self.at("-"):
            self.next()
            neg = True
        t = self.next()
        if t.kind != "int":
            raise self.error(f"expected an integer, found {t.text!r}", t)
        v = _parse_int(t.text)
        return -v if neg else v

    def skip_line(self, line: int) -> None:
        while (t := self.peek()) is not None and t.line == line and t.text != ";":
            self.i += 1
        if self.at(";"):
            self.i += 1

    def skip_to_semicolon(self) -> None:
        while self.next().text != ";":
            pass

    def skip_braces(self) -> None:
        self.expect("{")
        depth = 1
        while depth:
            t = self.next().text
            depth += (t == "{") - (t == "}")

    # --- module -----------------------------------------------------------------------------
    def parse(self) -> PtxModule:
        while (t := self.peek()) is not None:
            s = t.text
            if s in _LINE_DIRECTIVES:
                self.next()
                self.line_directive(s, t.line)
            elif s == ".section":
                self.next()
                self.next()
                self.skip_braces()
            elif s == ".pragma":
                self.skip_to_semicolon()
            elif s in _LINKAGE or s in (".entry", ".func") or s in _SPACES or s == ".alias":
                self.declaration()
            elif s == ";":
                self.next()
            else:
                raise self.error(f"unexpected {s!r} at module scope", t)
        return self.finish()

    def line_directive(self, name: str, line: int) -> None:
        if name == ".version":
            t = self.next()
            parts = t.text.split(".")
            try:
                self.version = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
            except ValueError:
                raise self.error(f"bad .version {t.text!r}", t) from None
        elif name == ".target":
            targets = []
            while (t := self.peek()) is not None and t.line == line and t.text != ";":
                if t.text != ",":
                    targets.append(t.text)
                self.i += 1
            self.target = ", ".join(targets)
        elif name == ".address_size":
            self.address_size = self.expect_int()
            if self.address_size not in (32, 64):
                raise self.error(f".address_size {self.address_size} is not 32 or 64")
        self.skip_line(line)

    def declaration(self) -> None:
        linkage: set[str] = set()
        while (t := self.peek()) is not None and t.text in _LINKAGE:
            linkage.add(self.next().text)
        t = self.next()
        if t.text in (".entry", ".func"):
            self.function(t, t.text == ".entry")
        elif t.text in _SPACES:
            for var in self.var_decl(t.text[1:], t.line, ".extern" in linkage):
                self.variables[var.name] = var
        elif t.text == ".alias":
            self.skip_to_semicolon()
        else:
            raise self.error(f"expected .entry, .func or a variable, found {t.text!r}", t)

    # --- variables --------------------------------------------------------------------------
    def var_decl(self, space: str, line: int, extern: bool) -> list[VarDecl]:
        align = 0
        vec = 1
        typ = None
        while (t := self.peek()) is not None and t.text.startswith("."):
            self.next()
            if t.text == ".align":
                align = self.expect_int()
            elif t.text in (".v2", ".v4", ".v8"):
                vec = int(t.text[2:])
            elif t.text[1:] in TYPE_NAMES:
                typ = t.text[1:]
            elif t.text == ".attribute":  # .attribute(.managed): __managed__ is global memory here
                if self.at("("):
                    while self.next().text != ")":
                        pass
            elif t.text in (".ptr", ".global", ".shared", ".const", ".local"):
                continue
            elif t.text == ".texref" or t.text == ".samplerref" or t.text == ".surfref":
                typ = "b64"
            else:
                raise self.error(f"unexpected {t.text!r} in a variable declaration", t)
        if typ is None:
            raise self.error("variable declaration without a type")
        out = []
        while True:
            name = self.next()
            if name.kind != "id":
                raise self.error(f"expected a variable name, found {name.text!r}", name)
            count = 1
            unsized = False
            while self.at("["):
                self.next()
                if self.at("]"):
                    unsized = True
                else:
                    count *= self.expect_int()
                self.expect("]")
            if self.at("<"):  # .param arrays in call prototypes: treat like [N]
                self.next()
                count *= self.expect_int()
                self.expect(">")
            elem = type_size(typ) * vec
            init = b""
            relocs: tuple[tuple[int, str, bool], ...] = ()
            if self.at("="):
                self.next()
                init, relocs, n_init = self.initializer(typ, vec)
                if unsized:
                    count = max(1, n_init // max(vec, 1))
                    unsized = False
            size = 0 if unsized else elem * count
            out.append(
                VarDecl(
                    name.text, space, typ, size, align or type_size(typ) * vec,
                    init, extern or unsized, line, relocs,
                )
            )  # fmt: skip
            if self.at(","):
                self.next()
                continue
            break
        self.expect(";")
        return out

    def initializer(
        self, typ: str, vec: int
    ) -> tuple[bytes, tuple[tuple[int, str, bool], ...], int]:
        """Flattened initialiser bytes, address relocations and element count."""
        elems: list[tuple[str, object]] = []

        def item() -> None:
            if self.at("{"):
                self.next()
                while not self.at("}"):
                    item()
                    if self.at(","):
                        self.next()
                self.expect("}")
                return
            t = self.next()
            if t.text == "generic" and self.at("("):
                self.next()
                sym = self.next().text
                off = self._sym_offset()
                self.expect(")")
                off += self._sym_offset()
                elems.append(("sym", (sym, off, True)))
                return
            neg = False
            if t.text == "-":
                neg = True
                t = self.next()
            if t.kind == "int":
                v = _parse_int(t.text)
                elems.append(("int", -v if neg else v))
            elif t.kind == "fimm":
                elems.append(("fimm", (t.text, neg)))
            elif t.kind == "float":
                elems.append(("float", -float(t.text) if neg else float(t.text)))
            elif t.kind == "id":
                elems.append(("sym", (t.text, self._sym_offset(), False)))
            else:
                raise self.error(f"bad initialiser element {t.text!r}", t)

        item()
        size = type_size(typ)
        dt = DTYPES[typ]
        buf = bytearray()
        relocs = []
        for kind, v in elems:
            if kind == "sym":
                sym, off, generic = v  # type: ignore[misc]
                relocs.append((len(buf), sym, generic))
                buf += int(off).to_bytes(size, "little", signed=True)
            elif kind == "int":
                iv = int(v)  # type: ignore[call-overload]
                if dt.kind == "f":
                    buf += np.array(iv, dt).tobytes()
                else:
                    buf += (iv & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            elif kind == "float":
                buf += np.array(v, dt if dt.kind == "f" else np.float64).tobytes()[:size]
            else:
                text, neg = v  # type: ignore[misc]
                bits = int(text[2:], 16)
                raw = bits.to_bytes(4 if text[1] in "fF" else 8, "little")
                val = np.frombuffer(raw, np.float32 if len(raw) == 4 else np.float64)[0]
                if neg:
                    val = -val
                buf += np.array(val, dt if dt.kind == "f" else val.dtype).tobytes()[:size]
        return bytes(buf), tuple(relocs), len(elems)

    def _sym_offset(self) -> int:
        if self.at("+"):
            self.next()
            return self.expect_int()
        if self.at("-"):
            self.next()
            return -self.expect_int()
        return 0

    # --- functions --------------------------------------------------------------------------
    def param_list(self) -> list[ParamInfo]:
        """``( .param .type name, ... )`` laid out with natural or declared alignment."""
        self.expect("(")
        out: list[ParamInfo] = []
        off = 0
        while not self.at(")"):
            t = self.next()
            if t.text not in (".param", ".reg"):
                raise self.error(f"expected .param, found {t.text!r}", t)
            align = 0
            typ = None
            ptr = False  # after .ptr, .align is the pointee's alignment, not the parameter's
            while (t := self.peek()) is not None and t.text.startswith("."):
                self.next()
                if t.text == ".align":
                    a = self.expect_int()
                    if not ptr:
                        align = a
                elif t.text[1:] in TYPE_NAMES:
                    typ = t.text[1:]
                elif t.text == ".ptr":
                    ptr = True
                elif t.text in (".global", ".shared", ".const", ".local", ".param"):
                    continue
                else:
                    raise self.error(f"unexpected {t.text!r} in a parameter", t)
            if typ is None:
                raise self.error("parameter without a type")
            name = self.next().text
            count = 1
            while self.at("["):
                self.next()
                count *= self.expect_int()
                self.expect("]")
            size = type_size(typ) * count
            align = align or type_size(typ)
            off = (off + align - 1) // align * align
            out.append(ParamInfo(name, off, size, align, typ))
            off += size
            if self.at(","):
                self.next()
        self.expect(")")
        return out

    def function(self, kw: _Tok, is_entry: bool) -> None:
        returns: list[ParamInfo] = []
        if not is_entry and self.at("("):
            returns = self.param_list()
        name = self.next()
        if name.kind != "id":
            raise self.error(f"expected a function name, found {name.text!r}", name)
        params = self.param_list() if self.at("(") else []
        fn = Function(name.text, is_entry, params, returns, kw.line)
        while (t := self.peek()) is not None and t.text in _PERF:
            self.next()
            nums: list[int] = []
            if t.text == ".pragma":
                self.skip_to_semicolon()
                continue
            while (u := self.peek()) is not None and (u.kind == "int" or u.text == ","):
                self.next()
                if u.kind == "int":
                    nums.append(_parse_int(u.text))
            if t.text == ".maxntid":
                fn.maxntid = tuple(nums)
            elif t.text == ".reqntid":
                fn.reqntid = tuple(nums)
        if self.at(";"):
            self.next()
        else:
            fn.has_body = True
            _BodyParser(self, fn).parse()
        old = self.functions.get(fn.name)
        if old is None or fn.has_body:
            self.functions[fn.name] = fn

    # --- finish -----------------------------------------------------------------------------
    def finish(self) -> PtxModule:
        kernels = {}
        for fn in self.functions.values():
            if fn.is_entry:
                kernels[fn.name] = kernel_info(fn, self.functions, self.variables)
        globs = {
            v.name: GlobalVarInfo(v.name, v.space, v.size, v.align, v.init)
            for v in self.variables.values()
            if v.space in ("global", "const") and not (v.extern and v.size == 0)
        }
        return PtxModule(
            self.version, self.target, self.address_size, kernels, globs,
            self.functions, self.variables,
        )  # fmt: skip


class _BodyParser:
    """Parses one function body; owns the register scope stack."""

    def __init__(self, p: _Parser, fn: Function) -> None:
        self.p = p
        self.fn = fn
        self.scopes: list[dict[str, Reg]] = [{}]

    def lookup(self, name: str) -> Reg | None:
        for scope in reversed(self.scopes):
            r = scope.get(name)
            if r is not None:
                return r
        return None

    def declare(self, name: str, typ: str) -> None:
        r = Reg(len(self.fn.regs), name, typ)
        self.fn.regs.append(r)
        self.scopes[-1][name] = r

    def parse(self) -> None:
        p, fn = self.p, self.fn
        p.expect("{")
        depth = 1
        while depth:
            t = p.next()
            s = t.text
            if s == "{":
                depth += 1
                self.scopes.append({})
            elif s == "}":
                depth -= 1
                self.scopes.pop()
            elif s == ";":
                continue
            elif s == ".reg":
                self.reg_decl(t)
            elif s in (".local", ".shared", ".param", ".const", ".global"):
                for var in p.var_decl(s[1:], t.line, False):
                    if s == ".local":
                        fn.locals.append(var)
                    elif s == ".shared":
                        fn.shared.append(var)
                    elif s in (".const", ".global"):
                        p.variables[var.name] = var
            elif s in (".pragma", ".callprototype"):
                p.skip_to_semicolon()
            elif s in (".loc", ".file"):
                p.skip_line(t.line)
            elif s == ".section":
                p.next()
                p.skip_braces()
            elif t.kind == "id" and p.at(":"):
                p.next()
                if p.at(".callprototype"):
                    p.skip_to_semicolon()
                elif p.at(".branchtargets"):
                    p.next()
                    names = []
                    while not p.at(";"):
                        tok = p.next()
                        if tok.text != ",":
                            names.append(tok.text)
                    p.next()
                    fn.branch_tables[s] = names
                else:
                    fn.labels[s] = len(fn.instructions)
            elif s == "@" or (t.kind == "id" and not s.startswith((".", "%"))):
                fn.instructions.append(self.instruction(t))
            else:
                raise p.error(f"unexpected {s!r} in the body of {fn.name}", t)

    def reg_decl(self, kw: _Tok) -> None:
        p = self.p
        typ = None
        while (t := p.peek()) is not None and t.text.startswith("."):
            p.next()
            if t.text[1:] in TYPE_NAMES:
                typ = t.text[1:]
            elif t.text in (".v2", ".v4"):
                raise EmuFault("not_supported", f"PTX line {t.line}: vector registers")
            else:
                raise p.error(f"unknown register type {t.text!r}", t)
        if typ is None:
            raise p.error(".reg without a type", kw)
        while True:
            name = p.next()
            if name.kind != "id":
                raise p.error(f"expected a register name, found {name.text!r}", name)
            if p.at("<"):
                p.next()
                n = p.expect_int()
                p.expect(">")
                for k in range(n):
                    self.declare(f"{name.text}{k}", typ)
            else:
                self.declare(name.text, typ)
            if p.at(","):
                p.next()
                continue
            break
        p.expect(";")

    def instruction(self, first: _Tok) -> Instruction:
        p = self.p
        guard = None
        negated = False
        start = first.start
        line = first.line
        t = first
        if t.text == "@":
            if p.at("!"):
                p.next()
                negated = True
            g = p.next()
            guard = self.lookup(g.text)
            if guard is None:
                raise p.error(f"guard {g.text!r} is not a declared predicate", g)
            t = p.next()
        if t.kind != "id":
            raise p.error(f"expected an opcode, found {t.text!r}", t)
        parts = t.text.split(".")
        # a CTA is its own cluster here, so .shared::cta and .shared::cluster are .shared
        opcode = parts[0]
        mods = tuple("shared" if m in ("shared::cta", "shared::cluster") else m for m in parts[1:])
        ops: list[Operand] = []
        end = t.end
        while not p.at(";"):
            ops.append(self.operand())
            if p.at(","):
                p.next()
            elif not p.at(";"):
                raise p.error(f"expected ',' or ';' after an operand, found {p.peek().text!r}")  # type: ignore[union-attr]
        end = p.peek().end - 1  # type: ignore[union-attr]
        semi = p.next()
        end = semi.start
        text = " ".join(p.src[start:end].split())
        return Instruction(opcode, mods, tuple(ops), guard, negated, line, text)

    def operand(self) -> Operand:
        p = self.p
        t = p.next()
        s = t.text
        if s == "[":
            return self.address()
        if s == "{":
            items = []
            while not p.at("}"):
                items.append(self.operand())
                if p.at(","):
                    p.next()
            p.next()
            return Vec(tuple(items))
        if s == "(":
            items = []
            while not p.at(")"):
                items.append(self.operand())
                if p.at(","):
                    p.next()
            p.next()
            return ArgList(tuple(items))
        if s == "!":
            r = p.next()
            reg = self.lookup(r.text)
            if reg is None:
                raise p.error(f"{r.text!r} is not a declared register", r)
            return NotPred(reg)
        if s == "-":
            v = self.operand()
            if isinstance(v, Imm):
                if v.bits:
                    return Imm(v.value ^ (1 << (v.bits - 1)), v.bits)
                return Imm(-v.value)
            raise p.error("'-' before a non-immediate operand", t)
        if t.kind == "int":
            return Imm(_parse_int(s))
        if t.kind == "fimm":
            return Imm(int(s[2:], 16), 32 if s[1] in "fF" else 64)
        if t.kind == "float":
            return Imm(float(s))
        if t.kind != "id":
            raise p.error(f"unexpected {s!r} in an operand", t)
        base: Operand
        if s == "_":
            base = Sink()
        elif s == "WARP_SZ":  # PTX's predefined warp-size constant (cuda_fp16 shuffles use it)
            return Imm(32)
        else:
            reg = self.lookup(s)
            if reg is not None:
                base = reg
            elif s in SPECIAL_REGISTERS:
                base = Special(s)
            elif s.startswith("%") and s.split(".")[0] in ("%tid", "%ntid", "%ctaid", "%nctaid"):
                base = Special(s)
            elif s.startswith("%"):
                raise p.error(f"{s!r} is neither a declared register nor a special register", t)
            else:
                off = p._sym_offset() if p.at("+") else 0
                base = Sym(s, off)
        if p.at("|"):
            p.next()
            return Pair(base, self.operand())
        return base

    def address(self) -> Addr | ArgList:
        p = self.p
        base: Reg | Sym | None = None
        off = 0
        start = p.i
        depth = 0
        while True:  # texture/surface operands: [tex, {coords}] -> a list, never an address
            s = p.toks[p.i].text if p.i < len(p.toks) else "]"
            if s in ("{", "("):
                depth += 1
            elif s in ("}", ")"):
                depth -= 1
            elif s == "]" and depth <= 0:
                break
            elif s == "," and depth == 0:
                p.i = start
                items = []
                while not p.at("]"):
                    items.append(self.operand())
                    if p.at(","):
                        p.next()
                p.next()
                return ArgList(tuple(items))
            p.i += 1
        p.i = start
        t = p.next()
        if t.kind == "int":
            off = _parse_int(t.text)
        elif t.kind == "id":
            reg = self.lookup(t.text)
            base = reg if reg is not None else Sym(t.text)
        else:
            raise p.error(f"bad address operand starting with {t.text!r}", t)
        while not p.at("]"):
            sign = p.next().text
            if sign not in ("+", "-"):
                raise p.error(f"bad address operand: unexpected {sign!r}")
            if p.at("-"):
                p.next()
                sign = "-" if sign == "+" else "+"
            v = p.expect_int()
            off += v if sign == "+" else -v
        p.next()
        return Addr(base, off)


# --- kernel facts -----------------------------------------------------------------------------
def _referenced_symbols(fn: Function) -> set[str]:
    out: set[str] = set()

    def visit(o: Operand) -> None:
        if isinstance(o, Sym):
            out.add(o.name)
        elif isinstance(o, Addr) and isinstance(o.base, Sym):
            out.add(o.base.name)
        elif isinstance(o, (Vec, ArgList)):
            for x in o.items:
                visit(x)
        elif isinstance(o, Pair):
            visit(o.first)
            visit(o.second)

    for ins in fn.instructions:
        for o in ins.operands:
            visit(o)
    return out


def reachable_functions(entry: Function, functions: dict[str, Function]) -> list[Function]:
    """The entry and every .func it can call (directly), in discovery order."""
    seen = {entry.name: entry}
    todo = [entry]
    while todo:
        fn = todo.pop()
        for name in _referenced_symbols(fn):
            callee = functions.get(name)
            if callee is not None and name not in seen:
                seen[name] = callee
                todo.append(callee)
    return list(seen.values())


def shared_layout(
    entry: Function, functions: dict[str, Function], variables: dict[str, VarDecl]
) -> tuple[dict[str, int], int, int]:
    """(offset of each shared variable, static bytes, offset where dynamic shared starts).

    Static variables the kernel can reach come first in declaration order; every ``extern``
    (dynamic) array starts at the same aligned offset after them, as in CUDA.
    """
    reach = reachable_functions(entry, functions)
    used: set[str] = set()
    decls: list[VarDecl] = []
    for fn in reach:
        used |= _referenced_symbols(fn)
        decls.extend(fn.shared)
    decls = [v for v in variables.values() if v.space == "shared" and v.name in used] + decls
    offsets: dict[str, int] = {}
    off = 0
    dyn_align = 16
    for v in decls:
        if v.extern and v.size == 0:
            dyn_align = max(dyn_align, v.align)
            continue
        off = (off + v.align - 1) // v.align * v.align
        offsets[v.name] = off
        off += v.size
    static = off
    dyn = (off + dyn_align - 1) // dyn_align * dyn_align
    for v in decls:
        if v.extern and v.size == 0:
            offsets[v.name] = dyn
    return offsets, static, dyn


def local_layout(fn: Function) -> tuple[dict[str, int], int]:
    """Offsets of a function's ``.local`` variables within its frame, and the frame size."""
    offsets = {}
    off = 0
    for v in fn.locals:
        off = (off + v.align - 1) // v.align * v.align
        offsets[v.name] = off
        off += v.size
    return offsets, (off + 15) // 16 * 16


def kernel_info(
    fn: Function, functions: dict[str, Function], variables: dict[str, VarDecl]
) -> KernelInfo:
    """The facts of one ``.entry`` (parameter layout, shared/local sizes, register count)."""
    _, static, _ = shared_layout(fn, functions, variables)
    local = sum(local_layout(f)[1] for f in reachable_functions(fn, functions))
    param_size = max((p.offset + p.size for p in fn.params), default=0)
    limit = fn.maxntid or fn.reqntid
    mtpb = None
    if limit:
        mtpb = 1
        for n in limit:
            mtpb *= n
    return KernelInfo(fn.name, list(fn.params), param_size, static, mtpb, len(fn.regs), local)


def parse_ptx(text: str) -> PtxModule:
    """Parse PTX text; raises ``EmuFault('invalid_ptx')`` naming the first bad line."""
    if not isinstance(text, str):
        raise EmuFault("invalid_ptx", "PTX must be text")
    try:
        return _Parser(text).parse()
    except EmuFault:
        raise
    except (ValueError, KeyError, IndexError, AttributeError, struct.error) as exc:
        raise EmuFault("invalid_ptx", f"PTX could not be parsed: {exc}") from exc
