"""Shared fixtures for the emulated CUDA device's tests: nvcc builds (cached for the whole test
session, nvcc takes seconds per program) and a backend with a small device."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).parent / "programs"


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in ("/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


NVCC = _find_nvcc()

Build = Callable[..., Path]


@pytest.fixture(scope="session")
def nvcc_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """`nvcc_build("kernels.cu", "-fatbin", "-O3")` -> path of the output, built once per flag set.

    `-fatbin`, `-cubin` and `-ptx` select those outputs; without them an executable is linked.
    """
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    out_dir = tmp_path_factory.mktemp("nvcc")
    cache: dict[tuple[str, tuple[str, ...]], Path] = {}

    def build(source: str, *flags: str) -> Path:
        key = (source, flags)
        if key in cache:
            return cache[key]
        suffix = next((f[1:] for f in flags if f in ("-fatbin", "-cubin", "-ptx")), "exe")
        out = out_dir / f"{Path(source).stem}-{len(cache)}.{suffix}"
        cmd = [NVCC, *flags, "-o", str(out), str(PROGRAMS / source)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"nvcc failed: {' '.join(cmd)}\n{done.stderr}")
        cache[key] = out
        return out

    return build
