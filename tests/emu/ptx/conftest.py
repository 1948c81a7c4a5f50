"""Fixtures for the PTX machine tests: a device, and kernels.cu compiled by nvcc."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rgpu.server.cuda.emu.ptx import DeviceMemory, LoadedModule, parse_ptx

HERE = Path(__file__).parent


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


@pytest.fixture
def dev() -> Device:
    return Device()


def run_ptx(dev: Device, text: str, kernel: str, params: bytes, grid=(1, 1, 1), block=(32, 1, 1),
            shared: int = 0) -> list[str]:
    out: list[str] = []
    lm = LoadedModule(parse_ptx(text), dev.mem)
    lm.launch(kernel, grid, block, shared, params, out.append)
    return out


@pytest.fixture(scope="session", params=["default", "fast"])
def nvcc_module(request, tmp_path_factory):
    """kernels.cu as PTX, built with default flags and with -O3 -use_fast_math."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path_factory.mktemp("ptx") / f"{request.param}.ptx"
    flags = [] if request.param == "default" else ["-O3", "-use_fast_math"]
    subprocess.run([nvcc, "-ptx", *flags, str(HERE / "kernels.cu"), "-o", str(out)], check=True,
                   capture_output=True)
    return request.param, parse_ptx(out.read_text())


@pytest.fixture
def loaded(nvcc_module, dev):
    flavour, mod = nvcc_module
    return flavour, LoadedModule(mod, dev.mem), dev


def pack(fmt: str, *args) -> bytes:
    return struct.pack("<" + fmt, *args)
