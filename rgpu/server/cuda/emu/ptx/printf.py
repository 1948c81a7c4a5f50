"""Device ``printf``: C format semantics over the argument buffer nvcc builds for ``vprintf``.

nvcc lowers ``printf(fmt, ...)`` to ``vprintf(fmt, buf)`` where ``buf`` is a per-thread local
buffer holding the arguments after C default promotions (float -> double, char/short -> int),
each at an offset aligned to its size. We walk the format string the way the C library does,
pull each argument from that buffer, and let Python's ``%`` operator (which follows C for the
conversions CUDA supports) render it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

_SPEC = re.compile(
    r"%(?P<flags>[-+ #0]*)(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?"
    r"(?P<len>hh|h|ll|l|j|z|t|L)?(?P<conv>[diouxXeEfFgGcspaA%])"
)

ReadBytes = Callable[[int, int], bytes]


class _Args:
    def __init__(self, read: ReadBytes, base: int) -> None:
        self.read = read
        self.base = base
        self.off = 0

    def take(self, size: int) -> bytes:
        self.off = (self.off + size - 1) // size * size
        raw = self.read(self.base + self.off, size)
        self.off += size
        if len(raw) < size:
            raw = raw + bytes(size - len(raw))
        return raw


def read_cstring(read: ReadBytes, addr: int, limit: int = 1 << 16) -> str:
    """A NUL-terminated string at ``addr`` (read in chunks, decoded leniently)."""
    out = bytearray()
    chunk = 256
    while len(out) < limit:
        data = read(addr + len(out), chunk)
        if not data:
            break
        nul = data.find(b"\0")
        if nul >= 0:
            out += data[:nul]
            break
        out += data
    return out.decode("utf-8", "replace")


def format_printf(fmt: str, read: ReadBytes, args_addr: int) -> str:
    """Render ``fmt`` with arguments taken from the buffer at ``args_addr``."""
    args = _Args(read, args_addr)
    out: list[str] = []
    pos = 0
    for m in _SPEC.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        conv = m.group("conv")
        if conv == "%":
            out.append("%")
            continue
        flags = m.group("flags") or ""
        width = m.group("width")
        prec = m.group("prec")
        length = m.group("len") or ""
        if width == "*":
            w = struct.unpack("<i", args.take(4))[0]
            if w < 0:
                flags += "-"
                w = -w
            width = str(w)
        if prec == "*":
            pv = struct.unpack("<i", args.take(4))[0]
            prec = str(pv) if pv >= 0 else None
        spec = "%" + flags + (width or "") + (("." + prec) if prec is not None else "")
        wide = length in ("l", "ll", "j", "z", "t")
        if conv in "di":
            raw = args.take(8 if wide else 4)
            v = int.from_bytes(raw, "little", signed=True)
            if length == "h":
                v = (v + (1 << 15)) % (1 << 16) - (1 << 15)
            elif length == "hh":
                v = (v + (1 << 7)) % (1 << 8) - (1 << 7)
            out.append((spec + "d") % v)
        elif conv in "ouxX":
            raw = args.take(8 if wide else 4)
            v = int.from_bytes(raw, "little", signed=False)
            if length == "h":
                v &= 0xFFFF
            elif length == "hh":
                v &= 0xFF
            if conv == "u":
                out.append((spec + "d") % v)
            elif conv == "o" and "#" in flags:  # C's alternate octal form: a leading 0
                digits = ("%" + (("." + prec) if prec else "") + "o") % v
                if not digits.startswith("0"):
                    digits = "0" + digits
                w = int(width or 0)
                pad = "0" if "0" in flags and "-" not in flags and not prec else " "
                out.append(digits.ljust(w) if "-" in flags else digits.rjust(w, pad))
            else:
                out.append((spec + conv) % v)
        elif conv in "eEfFgGaA":
            v = struct.unpack("<d", args.take(8))[0]
            if conv in "aA":
                s = float.hex(v)
                out.append(s.upper() if conv == "A" else s)
            else:
                out.append((spec + conv) % v)
        elif conv == "c":
            v = int.from_bytes(args.take(4), "little") & 0xFF
            out.append((spec + "s") % chr(v))
        elif conv == "s":
            p = int.from_bytes(args.take(8), "little")
            s = "(null)" if p == 0 else read_cstring(read, p)
            out.append((spec + "s") % s)
        elif conv == "p":
            p = int.from_bytes(args.take(8), "little")
            out.append((spec.replace("0", "") + "s") % ("(nil)" if p == 0 else f"{p:#x}"))
    out.append(fmt[pos:])
    return "".join(out)
