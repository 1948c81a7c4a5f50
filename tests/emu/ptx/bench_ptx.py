"""Timing of the PTX machine on the workloads the design targets (not a test; run by hand).

    .venv/bin/python tests/emu/ptx/bench_ptx.py [--lanes N]

Needs nvcc (compiles kernels.cu beside this file). Prints the best of several launches.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from rgpu.server.cuda.emu.ptx import DeviceMemory, LoadedModule, module, parse_ptx

CLOCK = time.perf_counter


def best(fn, reps: int) -> float:
    """Best of ``reps`` runs after a warm-up, in ms, on ``CLOCK``."""
    fn()
    times = []
    for _ in range(reps):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return min(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lanes", type=int, default=module.TARGET_LANES)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--fast-math", action="store_true")
    ap.add_argument(
        "--cpu", action="store_true", help="report process CPU time (for a busy machine)"
    )
    args = ap.parse_args()
    global CLOCK
    if args.cpu:
        CLOCK = time.process_time
    module.TARGET_LANES = args.lanes
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise SystemExit("nvcc is needed to build the benchmark kernels")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "k.ptx"
        flags = ["-O3", "-use_fast_math"] if args.fast_math else []
        src = Path(__file__).with_name("kernels.cu")
        subprocess.run([nvcc, "-ptx", *flags, str(src), "-o", str(out)], check=True)
        text = out.read_text()
    mem = DeviceMemory(1 << 30)
    lm = LoadedModule(parse_ptx(text), mem)
    rng = np.random.default_rng(0)
    n = 1 << 20

    def put(a):
        p = mem.alloc(a.nbytes)
        mem.write(p, a.tobytes())
        return p

    a, b = rng.random(n, np.float32), rng.random(n, np.float32)
    pa, pb, pc = put(a), put(b), mem.alloc(4 * n)
    rows = []
    p = struct.pack("<QQQi", pa, pb, pc, n)
    rows.append(
        (
            "vectorAdd 1M (4096x256)",
            best(
                lambda: lm.launch("vectorAdd", (n // 256, 1, 1), (256, 1, 1), 0, p, print),
                args.reps,
            ),
        )
    )
    p = struct.pack("<ifQQ", n, 2.0, pa, pc)
    rows.append(
        (
            "saxpy 1M grid-stride (4096x256)",
            best(lambda: lm.launch("saxpy", (n // 256, 1, 1), (256, 1, 1), 0, p, print), args.reps),
        )
    )
    po = mem.alloc(4 * (n // 256))
    p = struct.pack("<QQi", pa, po, n)
    rows.append(
        (
            "reduceSum 1M (4096x256, dyn smem)",
            best(
                lambda: lm.launch("reduceSum", (n // 256, 1, 1), (256, 1, 1), 1024, p, print),
                args.reps,
            ),
        )
    )
    m = 256
    A, B = rng.random((m, m), np.float32), rng.random((m, m), np.float32)
    pA, pB, pC = put(A), put(B), mem.alloc(4 * m * m)
    p = struct.pack("<QQQiii", pA, pB, pC, m, m, m)
    rows.append(
        (
            "matmul 256x256x256 tiled",
            best(
                lambda: lm.launch("matmul", (m // 16, m // 16, 1), (16, 16, 1), 0, p, print),
                args.reps,
            ),
        )
    )
    C = np.frombuffer(mem.read(pC, 4 * m * m), np.float32).reshape(m, m)
    assert np.allclose(C, A @ B, rtol=1e-4)
    k = 16384
    starts = rng.integers(1, 10000, k, dtype=np.uint32)
    ps, pst = put(starts), mem.alloc(4 * k)
    p = struct.pack("<QQi", ps, pst, k)
    rows.append(
        (
            "collatz 16k threads (divergent)",
            best(
                lambda: lm.launch("collatz", (k // 256, 1, 1), (256, 1, 1), 0, p, print), args.reps
            ),
        )
    )
    data = rng.integers(0, 256, n, dtype=np.uint8)
    pd, ph, pf, pm, pcas = put(data), mem.alloc(1024), mem.alloc(4), mem.alloc(8), mem.alloc(4)
    p = struct.pack("<Qi4xQQQQ", pd, n, ph, pf, pm, pcas)
    rows.append(
        (
            "histogram 1M bytes (256x256, atomics)",
            best(lambda: lm.launch("histogram", (256, 1, 1), (256, 1, 1), 0, p, print), args.reps),
        )
    )
    clock = "process CPU time" if args.cpu else "wall time"
    print(f"lanes per batch: {module.TARGET_LANES}, fast-math: {args.fast_math}, {clock}")
    for name, ms in rows:
        print(f"{name:40s} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
