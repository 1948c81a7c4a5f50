"""Fixtures for the PTX machine tests: a device, and kernels.cu compiled by nvcc."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ptxkit import Device

from rgpu.server.cuda.emu.ptx import LoadedModule, parse_ptx

HERE = Path(__file__).parent


@pytest.fixture
def dev() -> Device:
    return Device()


_FLAGS = {"default": [], "fast": ["-O3", "-use_fast_math"], "sm_90": ["-arch=sm_90"]}


@pytest.fixture(scope="session", params=sorted(_FLAGS))
def nvcc_module(request, tmp_path_factory):
    """kernels.cu as PTX: default flags, -O3 -use_fast_math, and a newer target (sm_90)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path_factory.mktemp("ptx") / f"{request.param}.ptx"
    flags = _FLAGS[request.param]
    subprocess.run(
        [nvcc, "-ptx", *flags, str(HERE / "kernels.cu"), "-o", str(out)],
        check=True,
        capture_output=True,
    )
    return request.param, parse_ptx(out.read_text())


@pytest.fixture
def loaded(nvcc_module, dev):
    flavour, mod = nvcc_module
    return flavour, LoadedModule(mod, dev.mem), dev
