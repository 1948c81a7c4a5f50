"""Device printf formatting against C printf semantics."""

from __future__ import annotations

import struct

import pytest

from rgpu.server.cuda.emu.ptx.printf import format_printf


class _Mem:
    """A fake address space: an argument buffer at 0x1000 and strings at 0x2000."""

    def __init__(self, args: bytes, strings: bytes = b"") -> None:
        self.regions = {0x1000: args, 0x2000: strings}

    def read(self, addr: int, n: int) -> bytes:
        for base, data in self.regions.items():
            if base <= addr < base + len(data) + 1:
                return data[addr - base : addr - base + n]
        raise AssertionError(hex(addr))


def _args(*items: tuple[str, object]) -> bytes:
    """Pack arguments the way nvcc lays them out: each aligned to its size."""
    buf = b""
    for fmt, v in items:
        size = struct.calcsize("<" + fmt)
        buf += bytes(-len(buf) % size) + struct.pack("<" + fmt, v)
    return buf


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("%d|%i|%u", [("i", -5), ("i", 7), ("i", -1)], "-5|7|4294967295"),
        ("%5d|%-5d|%05d|%+d", [("i", 42)] * 4, "   42|42   |00042|+42"),
        ("%x %X %#x %o %#o", [("I", 255), ("I", 255), ("I", 255), ("I", 8), ("I", 8)],
         "ff FF 0xff 10 010"),
        ("%lld %llu %ld %lx", [("q", -(2**40)), ("Q", 2**63), ("q", -3), ("Q", 2**36)],
         f"{-(2**40)} {2**63} -3 {2**36:x}"),
        ("%f %.2f %10.3f %e %g %G", [("d", 1.5), ("d", 3.14159), ("d", -2.5), ("d", 12345.678),
                                     ("d", 0.0001), ("d", 1e20)],
         "1.500000 3.14 " + "    -2.500 1.234568e+04 0.0001 1E+20"),
        ("%c%c %s|%.2s|%5s", [("i", 72), ("i", 105), ("Q", 0x2000), ("Q", 0x2000), ("Q", 0)],
         "Hi hello|he|(null)"),
        ("100%% %d", [("i", 3)], "100% 3"),
        ("%*d|%-*d|%.*f", [("i", 4), ("i", 7), ("i", 3), ("i", 8), ("i", 1), ("d", 2.25)],
         "   7|8  |2.2"),
        ("%hd %hhu", [("i", 70000), ("i", 300)], "4464 44"),
        ("%p %p", [("Q", 0x7F0000001000), ("Q", 0)], "0x7f0000001000 (nil)"),
        ("no args\n", [], "no args\n"),
        ("%f %f", [("d", float("inf")), ("d", float("nan"))], "inf nan"),
    ],
)  # fmt: skip
def test_format(fmt, args, expected):
    mem = _Mem(_args(*args), b"hello\0")
    assert format_printf(fmt, mem.read, 0x1000) == expected


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [("%#o", 8, "010"), ("%#o", 0, "0"), ("%#6o", 8, "   010"), ("%-#6o|", 8, "010   |"),
     ("%#06o", 8, "000010")],
)  # fmt: skip
def test_alternate_octal(fmt, value, expected):
    mem = _Mem(_args(("I", value)))
    assert format_printf(fmt, mem.read, 0x1000) == expected
