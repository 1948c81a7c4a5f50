"""CUB's BlockReduce, BlockScan and WarpReduce, built by nvcc, on the PTX machine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ptxkit import pack

from rgpu.server.cuda.emu.ptx import LoadedModule, parse_ptx


@pytest.fixture(scope="module")
def cub_module(tmp_path_factory):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path_factory.mktemp("cub") / "cub.ptx"
    src = Path(__file__).with_name("cub_kernels.cu")
    subprocess.run([nvcc, "-ptx", str(src), "-o", str(out)], check=True, capture_output=True)
    return parse_ptx(out.read_text())


def test_cub_block_reduce_scan_and_warp_reduce(cub_module, dev):
    lm = LoadedModule(cub_module, dev.mem)
    nb = 5
    v = np.random.default_rng(3).integers(-1000, 1000, nb * 128).astype(np.int32)
    pv = dev.put(v)
    ps, pc, pw = dev.zeros(nb, np.int32), dev.zeros(nb * 128, np.int32), dev.zeros(4 * nb, np.int32)
    lm.launch("cubBlock", (nb, 1, 1), (128, 1, 1), 0, pack("QQQQ", pv, ps, pc, pw), print)
    blocks = v.reshape(nb, 128)
    assert np.array_equal(dev.get(ps, nb, np.int32), blocks.sum(1))
    assert np.array_equal(
        dev.get(pc, nb * 128, np.int32).reshape(nb, 128), np.cumsum(blocks, 1) - blocks
    )
    assert np.array_equal(dev.get(pw, 4 * nb, np.int32), v.reshape(-1, 32).sum(1))


@pytest.mark.parametrize("flags", [["-G"], ["-lineinfo"]])
def test_debug_and_lineinfo_builds(flags, dev, tmp_path):
    """-G PTX (generic stack accesses, debug sections) and -lineinfo (.loc with inlined_at)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path / "k.ptx"
    src = Path(__file__).with_name("kernels.cu")
    subprocess.run(
        [nvcc, "-ptx", *flags, str(src), "-o", str(out)], check=True, capture_output=True
    )
    lm = LoadedModule(parse_ptx(out.read_text()), dev.mem)
    n = 700
    rng = np.random.default_rng(0)
    a, b = rng.random(n, np.float32), rng.random(n, np.float32)
    pa, pb, pc = dev.put(a), dev.put(b), dev.zeros(n, np.float32)
    lm.launch("vectorAdd", (3, 1, 1), (256, 1, 1), 0, pack("QQQi", pa, pb, pc, n), print)
    assert np.array_equal(dev.get(pc, n, np.float32), a + b)
    vals = np.arange(6, dtype=np.int32)
    printed: list[str] = []
    lm.launch("printer", (1, 1, 1), (3, 1, 1), 0, pack("i4xQ", 5, dev.put(vals)), printed.append)
    assert printed[0] == "t=0 x=    5 v=0 f=0.000 s=ok c=A 42949672960|0   |\n"
    assert len(printed) == 2


def test_virtual_functions_through_vtables(dev, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path / "v.ptx"
    src = Path(__file__).with_name("virtual_kernels.cu")
    subprocess.run([nvcc, "-ptx", str(src), "-o", str(out)], check=True, capture_output=True)
    lm = LoadedModule(parse_ptx(out.read_text()), dev.mem)
    n = 40
    x = np.arange(n, dtype=np.float32) * 0.5
    px, po = dev.put(x), dev.zeros(n, np.float32)
    lm.launch("virt", (1, 1, 1), (64, 1, 1), 0, pack("QQi", px, po, n), print)
    expect = np.where(np.arange(n) & 1, 0.5 * x * x, x * x).astype(np.float32)
    assert np.array_equal(dev.get(po, n, np.float32), expect)


def test_memcpy_async_and_cuda_barrier(dev, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path / "a.ptx"
    src = Path(__file__).with_name("async_kernels.cu")
    subprocess.run(
        [nvcc, "-ptx", "-arch=sm_80", str(src), "-o", str(out)], check=True, capture_output=True
    )
    lm = LoadedModule(parse_ptx(out.read_text()), dev.mem)
    x = np.random.default_rng(4).random(512, np.float32)
    px, po = dev.put(x), dev.zeros(512, np.float32)
    rows = x.reshape(2, 256)
    lm.launch("cgcopy", (2, 1, 1), (256, 1, 1), 0, pack("QQ", px, po), print)
    assert np.array_equal(dev.get(po, 512, np.float32).reshape(2, 256), rows[:, ::-1] * 2)
    lm.launch("barcopy", (2, 1, 1), (256, 1, 1), 0, pack("QQ", px, po), print)
    assert np.array_equal(dev.get(po, 512, np.float32).reshape(2, 256), rows[:, ::-1] + 1)
