"""CUDA arrays, texture objects and surface objects in unmodified programs, end to end.

``programs/textures.cu`` (nvcc defaults, static cudart; also shared cudart and the per-thread
default stream) follows cuda-samples: simpleTexture's rotation through a linearly filtered,
wrapped, normalized-coordinate texture over a cudaMallocArray, tex1Dfetch over linear memory
(float and normalized uchar4), a pitch2D texture over cudaMallocPitch memory, 3D and 2D-layered
surfaces over cudaMalloc3DArray(cudaArraySurfaceLoadStore), point-filtered integer textures with
border addressing, cudaMemcpy3D between host, pitched device memory and 3D arrays, a mipmapped
array read with tex2DLod/tex2DGrad and linear mipmap filtering, a cube map read with texCubemap,
and a captured graph copying into an array and reading it through a texture; each checked
against a host model.

``programs/textures_driver.c`` covers the driver API's linear array copies
(cuMemcpyHtoA/AtoH/DtoA/AtoD/AtoA), copies larger than one 8 MiB piece, mipmapped array levels
and descriptor queries. One emulated-GPU server and one daemon on loopback (TCP+TLS), from
``test_cuda_apps``; every process is bounded in time.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import test_cuda_apps as apps
from test_cuda_apps import sanitized  # noqa: F401 (a fixture: the sanitizer build of the shim)


@pytest.fixture(scope="module")
def texture_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if apps.NVCC is None:
        pytest.skip("nvcc is not installed: the CUDA test programs cannot be built")
    out = tmp_path_factory.mktemp("textures")
    src = str(apps.PROGRAMS / "textures.cu")
    jobs = {
        "textures": [apps.NVCC, "-o", str(out / "textures"), src],
        "textures-shared": [apps.NVCC, "-cudart", "shared", "-o", str(out / "textures-shared"),
                            src],
        "textures-per-thread": [apps.NVCC, "-default-stream", "per-thread", "-o",
                                str(out / "textures-per-thread"), src],
        "textures_driver": [apps.NVCC, "-cudart", "none", "-o", str(out / "textures_driver"),
                            str(apps.PROGRAMS / "textures_driver.c"),
                            f"-L{apps._library_dir()}", "-lcuda"],
    }  # fmt: skip
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(apps._compile, jobs.values()))
    return {name: out / name for name in jobs}


@pytest.fixture(scope="module")
def tcp_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[apps.Rig]:
    r = apps.start_rig(tmp_path_factory.mktemp("textures-rig"), "tcp")
    try:
        yield r
    finally:
        r.stop()


@pytest.mark.parametrize("build", ["textures", "textures-shared", "textures-per-thread"])
def test_texture_and_surface_program(tcp_rig: apps.Rig, texture_programs: dict[str, Path],
                                     build: str) -> None:  # fmt: skip
    result = tcp_rig.run([str(texture_programs[build])])
    apps._assert_passed(result, tcp_rig)
    for section in ("rotate", "linear", "pitch2d", "surface", "integer", "memcpy3d", "mipmap",
                    "cubemap", "graph"):
        assert f"{section} ok" in result.stdout, result.stdout
    assert result.stderr == "", result.stderr


def test_driver_api_array_copies(tcp_rig: apps.Rig, texture_programs: dict[str, Path]) -> None:
    """cuArrayCreate/cuArray3DCreate and their descriptors, every linear array copy (host,
    device and array sides, offsets crossing rows), the async forms, a texture object's
    descriptions read back, and the errors of bad handles, ranges and unsupported kinds."""
    result = tcp_rig.run([str(texture_programs["textures_driver"])], preload=False)
    apps._assert_passed(result, tcp_rig)


@pytest.mark.parametrize("name", ["textures", "textures_driver"])
def test_sanitized(tcp_rig: apps.Rig, texture_programs: dict[str, Path],
                   sanitized: list[str], name: str) -> None:  # noqa: F811
    """Arrays, copies cut into pieces and texture-object bookkeeping on the AddressSanitizer +
    UndefinedBehaviorSanitizer build of the shim: no memory error, no undefined behaviour."""
    env = tcp_rig.app_env()
    env["LD_PRELOAD"] = " ".join(sanitized)
    env["LD_LIBRARY_PATH"] = str(Path(sanitized[-1]).parent / "cuda")
    env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    p = subprocess.run([str(texture_programs[name])], env=env, capture_output=True, text=True,
                       timeout=apps.APP_TIMEOUT_S, cwd=tcp_rig.root)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    assert p.returncode == 0 and "PASSED" in p.stdout, f"{p.stdout}\n{p.stderr}"
