"""Speed of the emulated CUDA device on nvcc-built kernels, through the session API.

Builds tests/emu/programs/kernels.cu with nvcc (default options), loads the fatbin from the
executable as cudart would (cuLibraryLoadData), and times each workload with CUDA events
(cuEventRecord before and after the launch, cuEventElapsedTime_v2): median of `--repeat` runs,
after one warm-up run that also checks the result against numpy.

    .venv/bin/python benchmarks/emu.py [--repeat 7] [--nvcc /usr/local/bin/nvcc]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rgpu.server.cuda.emu.backend import EmuCudaBackend, EmuSession  # noqa: E402
from rgpu.server.cuda.emu.device import EmuDeviceConfig  # noqa: E402
from rgpu.server.cuda.fatbin import nv_fatbin_section  # noqa: E402

PROGRAM = ROOT / "tests" / "emu" / "programs" / "kernels.cu"


class Bench:
    """A session with the program loaded and helpers to launch and time kernels."""

    def __init__(self, session: EmuSession, image: bytes) -> None:
        self.s = session
        self.ids = iter(range(1000, 1 << 30))
        self.ctx = next(self.ids)
        session.cuDevicePrimaryCtxRetain(self.ctx, 0)
        session.cuCtxSetCurrent(self.ctx)
        self.lib = next(self.ids)
        session.cuLibraryLoadData(self.lib, image)
        self.start, self.end = next(self.ids), next(self.ids)
        session.cuEventCreate(self.start, 0)
        session.cuEventCreate(self.end, 0)

    def kernel(self, name: str) -> int:
        k = next(self.ids)
        self.s.cuLibraryGetKernel(k, self.lib, name)
        return k

    def put(self, array: np.ndarray) -> int:
        dptr = self.s.cuMemAlloc_v2(array.nbytes)
        self.s.cuMemcpyHtoD_v2(dptr, array.tobytes())
        return dptr

    def get(self, dptr: int, dtype: type, count: int) -> np.ndarray:
        return np.frombuffer(self.s.cuMemcpyDtoH_v2(dptr, np.dtype(dtype).itemsize * count), dtype)

    def params(self, k: int, *args: int | np.generic) -> bytes:
        buf = bytearray()
        for i, value in enumerate(args):
            offset, size = self.s.cuKernelGetParamInfo(k, i)
            raw = value.tobytes() if isinstance(value, np.generic) else int(value).to_bytes(
                size, "little")
            buf[len(buf) : offset] = bytes(offset - len(buf))
            buf[offset : offset + size] = raw
        return bytes(buf)

    def timed(self, k: int, grid: tuple[int, int, int], block: tuple[int, int, int],
              params: bytes, shared: int = 0) -> float:
        """Milliseconds between events recorded around one launch."""
        self.s.cuEventRecord(self.start, 0)
        self.s.cuLaunchKernel(k, *grid, *block, shared, 0, params)
        self.s.cuEventRecord(self.end, 0)
        self.s.cuEventSynchronize(self.end)
        return self.s.cuEventElapsedTime_v2(self.start, self.end)


def median_ms(run: Callable[[], float], repeat: int) -> float:
    run()  # warm-up: parsing, compilation and lane tables are cached after the first launch
    return statistics.median(run() for _ in range(repeat))


def vector_add(b: Bench, repeat: int) -> float:
    n = 1 << 20
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    k = b.kernel("vectorAdd")
    dx, dy, dz = b.put(x), b.put(y), b.s.cuMemAlloc_v2(4 * n)
    p = b.params(k, dx, dy, dz, np.int32(n))
    ms = median_ms(lambda: b.timed(k, (n // 256, 1, 1), (256, 1, 1), p), repeat)
    assert np.array_equal(b.get(dz, np.float32, n), x + y), "vectorAdd result is wrong"
    return ms


def reduction(b: Bench, repeat: int) -> float:
    n, block = 1 << 20, 256
    data = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    k = b.kernel("reduceSum")
    din, dout = b.put(data), b.s.cuMemAlloc_v2(4 * (n // block))
    p = b.params(k, din, dout, np.int32(n))
    ms = median_ms(lambda: b.timed(k, (n // block, 1, 1), (block, 1, 1), p, 4 * block), repeat)
    total = float(b.get(dout, np.float32, n // block).astype(np.float64).sum())
    assert abs(total - float(data.astype(np.float64).sum())) < 1e-2 * n**0.5, "reduction is wrong"
    return ms


def matmul(b: Bench, repeat: int) -> float:
    m = 256
    rng = np.random.default_rng(2)
    a = rng.standard_normal((m, m), dtype=np.float32)
    c = rng.standard_normal((m, m), dtype=np.float32)
    k = b.kernel("matmul")
    da, dc, dout = b.put(a), b.put(c), b.s.cuMemAlloc_v2(4 * m * m)
    p = b.params(k, da, dc, dout, np.int32(m), np.int32(m), np.int32(m))
    ms = median_ms(lambda: b.timed(k, (m // 16, m // 16, 1), (16, 16, 1), p), repeat)
    got = b.get(dout, np.float32, m * m).reshape(m, m)
    assert np.allclose(got, a.astype(np.float64) @ c, rtol=1e-3, atol=1e-3), "matmul is wrong"
    return ms


def empty_launch(b: Bench, repeat: int) -> float:
    k = b.kernel("empty")
    p = b.params(k)

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(100):
            b.s.cuLaunchKernel(k, 1, 1, 1, 32, 1, 1, 0, 0, p)
        return (time.perf_counter() - t0) * 1000.0 / 100

    return median_ms(run, repeat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/bin/nvcc")
    args = parser.parse_args()
    if not os.access(args.nvcc, os.X_OK):
        print(f"nvcc not found at {args.nvcc}: install the CUDA toolkit or pass --nvcc",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "kernels"
        subprocess.run([args.nvcc, "-o", str(exe), str(PROGRAM)], check=True)
        image = nv_fatbin_section(exe.read_bytes())
    backend = EmuCudaBackend(EmuDeviceConfig(memory_size=1 << 30))
    session = backend.open_session("bench")
    bench = Bench(session, image)
    rows = [
        ("vectorAdd, 1M floats (4096 x 256 threads)", vector_add(bench, args.repeat)),
        ("reduceSum, 1M floats (4096 x 256, dynamic shared)", reduction(bench, args.repeat)),
        ("matmul 256x256x256, 16x16 shared tiles", matmul(bench, args.repeat)),
        ("empty kernel launch (1 x 32 threads)", empty_launch(bench, args.repeat)),
    ]
    session.close()
    backend.close()
    print(f"| workload | median of {args.repeat} |")
    print("|---|---|")
    for name, ms in rows:
        figure = f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.1f} ms"
        print(f"| {name} | {figure} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
