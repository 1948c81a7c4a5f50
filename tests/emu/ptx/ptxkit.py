"""Helpers shared by the PTX machine tests: a device wrapper and tiny kernel runners."""

from __future__ import annotations

import struct

import numpy as np

from rgpu.server.cuda.emu.ptx import DeviceMemory, LoadedModule, parse_ptx


class Device:
    """A DeviceMemory with helpers to move numpy arrays in and out."""

    def __init__(self, size: int = 64 << 20) -> None:
        self.mem = DeviceMemory(size)

    def put(self, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr)
        p = self.mem.alloc(max(arr.nbytes, 1))
        self.mem.write(p, arr.tobytes())
        return p

    def zeros(self, n: int, dtype) -> int:
        nbytes = n * np.dtype(dtype).itemsize
        p = self.mem.alloc(nbytes)
        self.mem.memset(p, 0, 1, nbytes)
        return p

    def get(self, p: int, n: int, dtype) -> np.ndarray:
        return np.frombuffer(self.mem.read(p, n * np.dtype(dtype).itemsize), dtype).copy()


def run_ptx(
    dev: Device,
    text: str,
    kernel: str,
    params: bytes,
    grid=(1, 1, 1),
    block=(32, 1, 1),
    shared: int = 0,
) -> list[str]:
    out: list[str] = []
    lm = LoadedModule(parse_ptx(text), dev.mem)
    lm.launch(kernel, grid, block, shared, params, out.append)
    return out


def pack(fmt: str, *args) -> bytes:
    return struct.pack("<" + fmt, *args)


SNIPPET = """
.version 8.0
.target sm_75
.address_size 64

.visible .entry k(.param .u64 out, .param .u64 inp)
{{
  .reg .pred %p<16>;
  .reg .b16 %h<16>;
  .reg .b32 %r<64>;
  .reg .b64 %rd<64>;
  .reg .f32 %f<32>;
  .reg .f64 %fd<16>;
{decls}
  ld.param.u64 %rd0, [out];
  ld.param.u64 %rd1, [inp];
  mov.u32 %r0, %tid.x;
  mul.wide.u32 %rd2, %r0, {in_stride};
  add.s64 %rd4, %rd1, %rd2;
  mul.wide.u32 %rd2, %r0, {out_stride};
  add.s64 %rd3, %rd0, %rd2;
{body}
  ret;
}}
"""


def run_body(
    dev: Device, body: str, inputs=(), nout: int = 1, threads: int = 1, decls: str = "", printf=None
) -> np.ndarray:
    """Run a kernel body; thread t reads input j at [%rd4 + 8*j] and writes output k at
    [%rd3 + 8*k]. Returns the outputs as a (threads, nout) uint64 array of raw bits."""
    nin = max(1, len(inputs))
    buf = np.zeros((threads, nin), np.uint64)
    for j, arr in enumerate(inputs):
        a = np.broadcast_to(np.asarray(arr), (threads,))
        raw = np.zeros((threads, 8), np.uint8)
        b = np.ascontiguousarray(a).view(np.uint8).reshape(threads, -1)
        raw[:, : b.shape[1]] = b
        buf[:, j] = raw.view(np.uint64)[:, 0]
    pin = dev.put(buf)
    pout = dev.zeros(threads * nout, np.uint64)
    text = SNIPPET.format(decls=decls, body=body, in_stride=8 * nin, out_stride=8 * nout)
    out: list[str] = []
    lm = LoadedModule(parse_ptx(text), dev.mem)
    lm.launch("k", (1, 1, 1), (threads, 1, 1), 0, pack("QQ", pout, pin), printf or out.append)
    return dev.get(pout, threads * nout, np.uint64).reshape(threads, nout)


def bits_as(raw: np.ndarray, dtype) -> np.ndarray:
    """Reinterpret the low bytes of u64 output slots as ``dtype``."""
    dt = np.dtype(dtype)
    return (
        np.ascontiguousarray(raw)
        .view(np.uint8)
        .reshape(*raw.shape, 8)[..., : dt.itemsize]
        .copy()
        .view(dt)
        .reshape(raw.shape)
    )
