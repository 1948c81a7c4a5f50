"""A small, deterministic C preprocessor for vendor API headers.

The generated shim headers must be reproducible byte for byte on any machine, so they cannot
depend on which ``cpp`` a developer has. Vendor headers such as ``cuda.h`` use only a handful of
preprocessor features: include guards, ``#if defined(...)`` selections and renaming macros
(``#define cuMemAlloc cuMemAlloc_v2``). This module evaluates the conditionals for a fixed target
(Linux, LP64, C11), applies only the macros the caller asks for, and keeps every other
``#define`` as a directive, so constants such as ``CU_LAUNCH_PARAM_END`` survive.

Comments are dropped: the output carries declarations only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_IDENT = re.compile(r"[A-Za-z_]\w*")
_TOKEN = re.compile(
    r"[A-Za-z_]\w*|0[xX][0-9A-Fa-f]+[uUlL]*|\d+[uUlL]*|##|&&|\|\||[<>=!]=|<<|>>|\s+|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|."
)


class HeaderError(Exception):
    """A header uses a preprocessor feature this module does not evaluate."""


@dataclass(frozen=True)
class Macro:
    name: str
    params: tuple[str, ...] | None  # None: object-like
    body: str


@dataclass
class Preprocessed:
    """The active text of a header with its surviving directives, in source order."""

    lines: list[str]
    macros: dict[str, Macro] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def strip_comments(text: str) -> str:
    """Remove ``/* */`` and ``//`` comments, keeping string and character literals intact.

    A block comment becomes one space, or its newlines when it spans lines, so line structure
    (which directives depend on) is preserved.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            end = text.find("*/", i + 2)
            if end < 0:
                raise HeaderError("unterminated block comment")
            newlines = text.count("\n", i, end)
            out.append("\n" * newlines if newlines else " ")
            i = end + 2
        elif c == "/" and i + 1 < n and text[i + 1] == "/":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _split_args(text: str, start: int) -> tuple[list[str], int] | None:
    """Arguments of a macro call whose ``(`` is at ``start``; returns them and the end index."""
    depth, args, cur = 0, [], []
    i = start
    while i < len(text):
        c = text[i]
        if c == "(":
            depth += 1
            if depth > 1:
                cur.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
            cur.append(c)
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    return None


def expand(
    text: str,
    macros: dict[str, Macro],
    allowed: Callable[[str], bool],
    hidden: frozenset[str] = frozenset(),
) -> str:
    """Expand the macros of ``text`` that ``allowed`` selects (arguments expand fully)."""
    out: list[str] = []
    pos = 0
    for m in _IDENT.finditer(text):
        if m.start() < pos:
            continue
        name = m.group()
        macro = macros.get(name)
        if macro is None or name in hidden or not allowed(name):
            continue
        # A match inside a longer token (e.g. a number suffix) is not an identifier.
        if m.start() > 0 and (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_"):
            continue
        out.append(text[pos : m.start()])
        inner_hidden = hidden | {name}
        if macro.params is None:
            replacement = expand(macro.body, macros, allowed, inner_hidden)
            out.append(replacement)
            pos = m.end()
            line_start = text.rfind("\n", 0, m.start()) + 1
            if not replacement and not text[line_start : m.start()].strip():
                # An attribute macro that vanishes at the start of a line takes its space along.
                while pos < len(text) and text[pos] in " \t":
                    pos += 1
            continue
        j = m.end()
        while j < len(text) and text[j].isspace():
            j += 1
        call = _split_args(text, j) if j < len(text) and text[j] == "(" else None
        if call is None:
            out.append(name)
            pos = m.end()
            continue
        args, end = call
        if len(args) != len(macro.params) and not (args == [""] and not macro.params):
            raise HeaderError(f"macro {name} called with {len(args)} arguments")
        body = _substitute(macro, args, macros, inner_hidden)
        out.append(expand(body, macros, allowed, inner_hidden))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _substitute(
    macro: Macro, args: list[str], macros: dict[str, Macro], hidden: frozenset[str]
) -> str:
    assert macro.params is not None
    raw = dict(zip(macro.params, args, strict=False))
    toks = [t for t in _TOKEN.findall(macro.body)]
    result: list[str] = []
    for k, tok in enumerate(toks):
        if tok in raw:
            prev = next((t for t in reversed(toks[:k]) if not t.isspace()), "")
            nxt = next((t for t in toks[k + 1 :] if not t.isspace()), "")
            if prev == "##" or nxt == "##":
                result.append(raw[tok])
            else:
                result.append(expand(raw[tok], macros, lambda _n: True, hidden))
        else:
            result.append(tok)
    return re.sub(r"\s*##\s*", "", "".join(result))


def _eval_condition(expr: str, macros: dict[str, Macro], predefined: dict[str, int]) -> bool:
    def defined(name: str) -> bool:
        return name in macros or name in predefined

    expr = re.sub(
        r"\bdefined\s*(?:\(\s*([A-Za-z_]\w*)\s*\)|([A-Za-z_]\w*))",
        lambda m: "1" if defined(m.group(1) or m.group(2)) else "0",
        expr,
    )
    py: list[str] = []
    for tok in _TOKEN.findall(expr):
        if tok.isspace():
            continue
        if _IDENT.fullmatch(tok):
            if tok in predefined:
                py.append(str(predefined[tok]))
            elif tok in macros and macros[tok].params is None:
                value = macros[tok].body.strip() or "0"
                py.append(str(int(_eval_int(value))))
            else:
                py.append("0")
        elif re.fullmatch(r"0[xX][0-9A-Fa-f]+[uUlL]*|\d+[uUlL]*", tok):
            py.append(str(int(tok.rstrip("uUlL"), 0)))
        elif tok == "&&":
            py.append(" and ")
        elif tok == "||":
            py.append(" or ")
        elif tok == "!":
            py.append(" not ")
        elif tok in ("(", ")", "==", "!=", "<", ">", "<=", ">=", "+", "-"):
            py.append(tok)
        else:
            raise HeaderError(f"unsupported token {tok!r} in #if {expr}")
    return bool(eval("".join(py), {"__builtins__": {}}, {}))


def _eval_int(value: str) -> int:
    value = value.strip("() ")
    return int(value.rstrip("uUlL"), 0)


def preprocess(
    text: str,
    predefined: dict[str, int],
    expand_macro: Callable[[Macro], bool],
    drop_includes: Iterable[str] = (),
    passthrough: Iterable[str] = (),
) -> Preprocessed:
    """Evaluate ``text``'s conditionals and apply the macros ``expand_macro`` selects.

    ``predefined`` names exist only for ``#if`` evaluation and are never emitted. Selected
    macros are applied to the text and their directives dropped; every other directive in the
    active branches is kept, normalised to one space between name and body. ``#include`` of a
    name in ``drop_includes`` is dropped; any other include is an error (the output must be
    self-contained). A conditional whose ``#if`` mentions a ``passthrough`` name (such as
    ``__cplusplus``) is kept as directives, with all its branches, for the consumer's compiler.
    """
    dropped = set(drop_includes)
    kept_conditions = set(passthrough)
    text = strip_comments(text.replace("\\\r\n", "").replace("\\\n", ""))
    macros: dict[str, Macro] = {}
    expanded: set[str] = set()
    emitted: set[str] = set()
    # (parent active, a branch taken, this active, kept as directives)
    stack: list[tuple[bool, bool, bool, bool]] = []
    active = True
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            chunk = expand("\n".join(pending), macros, lambda n: n in expanded)
            out.extend(chunk.split("\n"))
            pending.clear()

    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped.startswith("#"):
            if active:
                pending.append(line.rstrip())
            continue
        m = re.match(r"#\s*(\w+)\s*(.*)$", stripped)
        if m is None:
            continue
        directive, rest = m.group(1), m.group(2).strip()
        if directive in ("if", "ifdef", "ifndef"):
            if active and kept_conditions & set(_IDENT.findall(rest)):
                flush()
                out.append(f"#{directive} {rest}")
                stack.append((active, True, active, True))
                continue
            if directive == "ifdef":
                cond = rest in macros or rest in predefined
            elif directive == "ifndef":
                cond = not (rest in macros or rest in predefined)
            else:
                cond = active and _eval_condition(rest, macros, predefined)
            stack.append((active, cond, active and cond, False))
            active = active and cond
            continue
        if directive in ("elif", "else", "endif") and not stack:
            raise HeaderError(f"#{directive} without #if")
        if directive in ("elif", "else", "endif") and stack[-1][3]:
            parent = stack[-1][0]
            if parent:
                flush()
                out.append(f"#{directive} {rest}".rstrip())
            if directive == "endif":
                stack.pop()
            active = parent
            continue
        if directive == "elif":
            parent, taken, _, _ = stack[-1]
            cond = parent and not taken and _eval_condition(rest, macros, predefined)
            stack[-1] = (parent, taken or cond, cond, False)
            active = cond
            continue
        if directive == "else":
            parent, taken, _, _ = stack[-1]
            stack[-1] = (parent, True, parent and not taken, False)
            active = parent and not taken
            continue
        if directive == "endif":
            active = stack.pop()[0]
            continue
        if not active:
            continue
        flush()
        if directive == "define":
            dm = re.match(r"([A-Za-z_]\w*)(\(([^)]*)\))?\s*(.*)$", rest)
            if dm is None:
                raise HeaderError(f"cannot parse #define {rest}")
            params = None
            if dm.group(2) is not None:
                params = tuple(p.strip() for p in dm.group(3).split(",") if p.strip())
            macro = Macro(dm.group(1), params, dm.group(4).strip())
            macros[macro.name] = macro
            if expand_macro(macro):
                expanded.add(macro.name)
                emitted.discard(macro.name)
            else:
                expanded.discard(macro.name)
                emitted.add(macro.name)
                head = macro.name if params is None else f"{macro.name}({', '.join(params)})"
                out.append(f"#define {head} {macro.body}".rstrip())
        elif directive == "undef":
            macros.pop(rest, None)
            expanded.discard(rest)
            if rest in emitted:
                emitted.discard(rest)
                out.append(f"#undef {rest}")
        elif directive == "include":
            name = rest.strip('<>"')
            if name not in dropped:
                raise HeaderError(f"#include {rest} would make the output depend on another header")
        elif directive == "pragma":
            out.append(f"#pragma {rest}")
        elif directive == "error":
            raise HeaderError(f"#error {rest}")
        else:
            raise HeaderError(f"unsupported directive #{directive}")
    flush()
    if stack:
        raise HeaderError("unterminated #if")
    return Preprocessed(_tidy(out), macros)


def _tidy(lines: list[str]) -> list[str]:
    """Trailing spaces removed, runs of blank lines collapsed to one, none at either end."""
    result: list[str] = []
    for line in lines:
        line = line.rstrip()
        if not line and (not result or not result[-1]):
            continue
        result.append(line)
    while result and not result[-1]:
        result.pop()
    return result
