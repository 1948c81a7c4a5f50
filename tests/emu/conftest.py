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
        """Flags that end in `.cu` are further sources (a multi-file program)."""
        key = (source, flags)
        if key in cache:
            return cache[key]
        sources = [str(PROGRAMS / source)] + [str(PROGRAMS / f) for f in flags if f.endswith(".cu")]
        flags = tuple(f for f in flags if not f.endswith(".cu"))
        suffix = next((f[1:] for f in flags if f in ("-fatbin", "-cubin", "-ptx")), "exe")
        out = out_dir / f"{Path(source).stem}-{len(cache)}.{suffix}"
        cmd = [NVCC, *flags, "-o", str(out), *sources]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"nvcc failed: {' '.join(cmd)}\n{done.stderr}")
        cache[key] = out
        return out

    return build


class Gpu:
    """A thin driver-API client over one session, the way a shim would use it: client-chosen
    ids, parameters packed from `cuKernelGetParamInfo`."""

    def __init__(self, session) -> None:
        self.s = session
        self._next_id = 100
        self.ctx = self.new_id()
        session.cuDevicePrimaryCtxRetain(self.ctx, 0)
        session.cuCtxSetCurrent(self.ctx)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def load(self, image: bytes) -> int:
        lib = self.new_id()
        self.s.cuLibraryLoadData(lib, image)
        return lib

    def kernel(self, lib: int, name: str) -> int:
        k = self.new_id()
        self.s.cuLibraryGetKernel(k, lib, name)
        return k

    def put(self, array) -> int:
        import numpy as np

        data = np.ascontiguousarray(array).tobytes()
        dptr = self.s.cuMemAlloc_v2(max(len(data), 1))
        if data:
            self.s.cuMemcpyHtoD_v2(dptr, data)
        return dptr

    def zeros(self, nbytes: int) -> int:
        dptr = self.s.cuMemAlloc_v2(nbytes)
        self.s.cuMemsetD8_v2(dptr, 0, nbytes)
        return dptr

    def get(self, dptr: int, dtype, count: int):
        import numpy as np

        dt = np.dtype(dtype)
        return np.frombuffer(self.s.cuMemcpyDtoH_v2(dptr, dt.itemsize * count), dt).copy()

    def pack(self, f: int, *args) -> bytes:
        """Lay out arguments as the kernel's parameter buffer: ints (pointers or integers of
        the parameter's size), numpy scalars, or raw bytes for structs."""
        import numpy as np

        layout = []
        while True:
            try:
                layout.append(self.s.cuKernelGetParamInfo(f, len(layout)))
            except Exception as exc:
                if getattr(exc, "code", None) == 1:  # CUDA_ERROR_INVALID_VALUE: no more params
                    break
                raise
        assert len(layout) == len(args), f"kernel takes {len(layout)} params, got {len(args)}"
        size = max((o + s for o, s in layout), default=0)
        buf = bytearray(size)
        for (offset, width), value in zip(layout, args, strict=True):
            if isinstance(value, bytes):
                raw = value
            elif isinstance(value, np.generic):
                raw = value.tobytes()
            else:
                raw = int(value).to_bytes(width, "little", signed=int(value) < 0)
            assert len(raw) == width, f"param at {offset} is {width} bytes, got {len(raw)}"
            buf[offset : offset + width] = raw
        return bytes(buf)

    def launch(self, f: int, grid, block, *args, shared: int = 0, stream: int = 0) -> None:
        grid = (grid, 1, 1) if isinstance(grid, int) else tuple(grid) + (1,) * (3 - len(grid))
        block = (block, 1, 1) if isinstance(block, int) else tuple(block) + (1,) * (3 - len(block))
        self.s.cuLaunchKernel(f, *grid, *block, shared, stream, self.pack(f, *args))


def _ptx_machine_ready() -> bool:
    try:
        import rgpu.server.cuda.emu.ptx as ptx

        return all(hasattr(ptx, n) for n in ("LoadedModule", "DeviceMemory", "parse_ptx"))
    except Exception:
        return False


needs_ptx_machine = pytest.mark.skipif(
    not _ptx_machine_ready(), reason="the PTX machine (rgpu.server.cuda.emu.ptx) is not built yet"
)


@pytest.fixture(scope="module")
def backend():
    if not _ptx_machine_ready():
        pytest.skip("the PTX machine (rgpu.server.cuda.emu.ptx) is not built yet")
    from rgpu.server.cuda.emu.backend import EmuCudaBackend
    from rgpu.server.cuda.emu.device import EmuDeviceConfig

    b = EmuCudaBackend(EmuDeviceConfig(memory_size=512 << 20))
    yield b
    b.close()


@pytest.fixture
def gpu(backend, request):
    session = backend.open_session(request.node.name)
    yield Gpu(session)
    session.close()


@pytest.fixture
def make_gpu(backend):
    """Extra sessions for tests that need more than one client."""
    sessions = []

    def make(name: str) -> Gpu:
        session = backend.open_session(name)
        sessions.append(session)
        return Gpu(session)

    yield make
    for session in sessions:
        session.close()
