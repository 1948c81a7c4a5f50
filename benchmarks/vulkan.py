"""Vulkan ICD benchmark: unmodified Vulkan programs through rgpu against direct lavapipe.

A real ``rgpu server`` (its Vulkan GPU is Mesa lavapipe; it listens for QUIC and TCP+TLS at
once) and a real ``rgpu client`` daemon with ``--transport tcp`` or ``--transport quic`` run
on 127.0.0.1 with free ports and temporary directories (the process handling of
``benchmarks/cuda.py``); every process has a time limit and is killed in ``finally``; every
repetition is a fresh server and daemon. The same programs then run with ``VK_ICD_FILENAMES``
pointing at lavapipe's manifest (direct) and at rgpu's (through the daemon):

- ``rgpu.echo`` from a Python client through the daemon (no backend): the wire's floor;
- ``vulkaninfo`` (its full text output) and ``vulkaninfo --summary``: wall time of the process;
- ``programs/vk_bench.c`` (built here with the C compiler and ``-lvulkan``, its shader
  ``programs/vk_bench.comp`` with glslangValidator): a submit-and-wait round trip (one 1x1x1
  dispatch, ``vkQueueSubmit`` + ``vkWaitForFences`` + ``vkResetFences``, repeated) and the
  upload bandwidth through a mapped host-visible, host-coherent staging buffer (new bytes
  written by the host, a ``vkCmdCopyBuffer`` into an unmapped buffer submitted, its fence
  waited for) at 1, 4, 16 and 64 MiB, a staging buffer of each size.

One warm-up run of each program (not timed) precedes the timed ones in every repetition, and
the direct and rgpu runs alternate.

    python benchmarks/vulkan.py            # full run (about 1.5 minutes on 2 cores)
    python benchmarks/vulkan.py --quick    # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROGRAMS = HERE / "programs"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load_rig() -> Any:
    """benchmarks/cuda.py, for its process handling (a module name of its own: ``cuda`` is
    cuda-python's package)."""
    spec = importlib.util.spec_from_file_location("rgpu_bench_cuda", HERE / "cuda.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_rig()
TRANSPORTS = ("tcp", "quic")
VULKANINFO = shutil.which("vulkaninfo")
GLSLANG = shutil.which("glslangValidator")


def lavapipe_manifest() -> Path:
    from rgpu.server.vkloader import icd_search_dirs

    for d in icd_search_dirs():
        if d.is_dir():
            found = sorted(d.glob("lvp_icd*.json"))
            if found:
                return found[0]
    raise SystemExit("rgpu: error: Mesa lavapipe is not installed "
                     "(apt install mesa-vulkan-drivers)")


def rgpu_manifest() -> Path:
    from rgpu.codegen.icdlib import icd_manifest_path
    from rgpu.errors import RgpuError

    try:
        return icd_manifest_path()
    except RgpuError as exc:
        raise SystemExit(f"rgpu: error: {exc}") from None


def _env(base: dict[str, str], manifest: Path, sock: Path | None) -> dict[str, str]:
    env = {**base, "VK_ICD_FILENAMES": str(manifest), "VK_DRIVER_FILES": str(manifest),
           "NODEVICE_SELECT": "1"}
    if sock is not None:
        env["RGPU_SOCKET"] = str(sock)
    return env


def _vulkaninfo(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> float:
    out, wall = bench.run_app(argv, env, cwd, timeout)
    if "llvmpipe" not in out:
        raise RuntimeError(f"{' '.join(argv)} did not list llvmpipe")
    return float(wall)


def measure(transport: str, rep: int, exe: list[str], args: argparse.Namespace,
            ) -> dict[str, Any]:
    """One fresh server + daemon: vulkaninfo and vk_bench, direct and through rgpu, alternated
    (which goes first alternates with the repetition)."""
    r: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rgpu-bench-vk-") as tmp:
        root = Path(tmp)
        rig = bench.Rig(root, transport, cuda="none")
        try:
            echo = asyncio.run(asyncio.wait_for(bench._echo(rig.socket, args.rtt_n), 60))
            r["echo_us"] = echo["median_us"]
            envs = {"direct": _env(rig.env, lavapipe_manifest(), None),
                    "rgpu": _env(rig.env, rgpu_manifest(), rig.socket)}
            order = ["direct", "rgpu"] if rep % 2 == 0 else ["rgpu", "direct"]
            programs: list[tuple[str, list[str]]] = []
            if VULKANINFO and not args.no_vulkaninfo:
                programs += [("vulkaninfo", [VULKANINFO]),
                             ("vulkaninfo --summary", [VULKANINFO, "--summary"])]
            for name, argv in programs:
                for path in order:  # warm-up
                    _vulkaninfo(argv, envs[path], root, args.app_timeout)
                for _ in range(args.runs):
                    for path in order:
                        wall = _vulkaninfo(argv, envs[path], root, args.app_timeout)
                        r.setdefault(f"{name}|{path}", []).append(wall)
            bench_argv = [*exe, str(args.rtt_n), str(args.max_mib)]
            for path in order:
                bench.run_app([*exe, "10", "1"], envs[path], root, args.app_timeout)  # warm-up
                try:
                    out, wall = bench.run_app(bench_argv, envs[path], root, args.app_timeout)
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}\n{rig.logs()}") from None
                res = json.loads(out)
                res["wall_s"] = wall
                r[f"vk_bench|{path}"] = res
        finally:
            rig.close()
    r["dispatch_us"] = r["vk_bench|rgpu"]["dispatch"]["median_us"]
    for name in ("vulkaninfo", "vulkaninfo --summary"):
        if f"{name}|rgpu" in r:
            r[f"{name}|ratio"] = (statistics.median(r[f"{name}|rgpu"])
                                  / statistics.median(r[f"{name}|direct"]))
    return r


def _values(runs: list[dict[str, Any]], get: Any) -> list[float]:
    vals = []
    for r in runs:
        if "error" not in r:
            with contextlib.suppress(KeyError, StopIteration):
                v = get(r)
                vals.extend(v if isinstance(v, list) else [v])
    return [float(v) for v in vals]


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """One row per measure; columns: direct lavapipe (all repetitions pooled) and rgpu per
    daemon transport, each median (min-max)."""
    jobs = list(results)
    everything = [r for runs in results.values() for r in runs]
    rows: list[tuple[str, Any, Any, int]] = []  # label, direct getter, rgpu getter, digits
    for name in ("vulkaninfo", "vulkaninfo --summary"):
        rows.append((f"`{name}` wall time, ms",
                     lambda r, n=name: [x * 1e3 for x in r[f"{n}|direct"]],
                     lambda r, n=name: [x * 1e3 for x in r[f"{n}|rgpu"]], 0))
    rows.append(("rgpu.echo through the daemon (Python client; the wire floor), median µs",
                 lambda r: [], lambda r: r["echo_us"], 0))
    rows.append(("vk_bench setup (instance, device, pipeline, buffers), ms",
                 lambda r: r["vk_bench|direct"]["setup_ms"],
                 lambda r: r["vk_bench|rgpu"]["setup_ms"], 1))
    rows.append(("submit + fence wait round trip (1x1x1 dispatch), median µs",
                 lambda r: r["vk_bench|direct"]["dispatch"]["median_us"],
                 lambda r: r["vk_bench|rgpu"]["dispatch"]["median_us"], 0))
    rows.append(("submit + fence wait round trip, p99 µs",
                 lambda r: r["vk_bench|direct"]["dispatch"]["p99_us"],
                 lambda r: r["vk_bench|rgpu"]["dispatch"]["p99_us"], 0))
    for call, key in (("vkQueueSubmit", "submit_us"), ("vkWaitForFences", "wait_us"),
                      ("vkResetFences", "reset_us")):
        rows.append((f"... of which {call}, median µs",
                     lambda r, k=key: r["vk_bench|direct"]["dispatch"][k],
                     lambda r, k=key: r["vk_bench|rgpu"]["dispatch"][k], 0))
    sizes = sorted({u["mib"] for r in everything if "vk_bench|rgpu" in r
                    for u in r["vk_bench|rgpu"]["upload"]})
    for key, what in (("mb_s", "fill + submit + fence wait"),
                      ("submit_mb_s", "fill + until vkQueueSubmit returns")):
        for mib in sizes:
            def pick(path: str, m: int = mib, k: str = key) -> Any:
                return lambda r: next(u[k] for u in r[f"vk_bench|{path}"]["upload"]
                                      if u["mib"] == m)
            rows.append((f"upload {mib} MiB ({what}), MB/s", pick("direct"), pick("rgpu"), 0))
    head = "| measure | direct lavapipe | " + " | ".join(
        f"rgpu, daemon --transport {j}" for j in jobs) + " |"
    lines = [head, "|---|---|" + "---|" * len(jobs)]
    for label, get_direct, get_rgpu, digits in rows:
        cells = [bench.fmt(_values(everything, get_direct), digits)]
        cells += [bench.fmt(_values(results[j], get_rgpu), digits) for j in jobs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name in ("vulkaninfo", "vulkaninfo --summary"):
        cells = [bench.fmt(_values(results[j], lambda r, n=name: r[f"{n}|ratio"]), 2)
                 for j in jobs]
        if any(c != "-" for c in cells):
            lines.append(f"| `{name}` rgpu / direct (per repetition) | 1 | "
                         + " | ".join(cells) + " |")
    for job in jobs:
        errors = [r["error"] for r in results[job] if "error" in r]
        if errors:
            lines.append(f"\n{job}: {len(errors)}/{len(results[job])} runs failed: "
                         f"{errors[0].splitlines()[0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 repetition, 2 timed vulkaninfo runs, uploads up to 16 MiB")
    p.add_argument("--reps", type=int, help="repetitions (fresh server + daemon) per transport "
                   "[3; quick 1]")
    p.add_argument("--runs", type=int, help="timed vulkaninfo runs per path and repetition "
                   "[3; quick 2]")
    p.add_argument("--rtt-n", type=int, help="timed submit-and-wait iterations [500; quick 100]")
    p.add_argument("--max-mib", type=int, help="largest upload, a power of 4 [64; quick 16]")
    p.add_argument("--transport", choices=TRANSPORTS, action="append",
                   help="only this daemon transport (repeatable) [tcp and quic]")
    p.add_argument("--no-vulkaninfo", action="store_true", help="skip the vulkaninfo runs")
    p.add_argument("--app-timeout", type=float, default=120.0,
                   help="seconds one program run may take [120]")
    p.add_argument("--json", type=Path, help="write raw results here")
    args = p.parse_args(argv)
    q = args.quick
    args.reps = args.reps or (1 if q else 3)
    args.runs = args.runs or (2 if q else 3)
    args.rtt_n = args.rtt_n or (100 if q else 500)
    args.max_mib = args.max_mib or (16 if q else 64)
    transports = args.transport or list(TRANSPORTS)
    if GLSLANG is None:
        raise SystemExit("rgpu: error: glslangValidator is not installed "
                         "(apt install glslang-tools)")
    if VULKANINFO is None and not args.no_vulkaninfo:
        print("# vulkaninfo is not installed (apt install vulkan-tools): its rows are skipped",
              file=sys.stderr)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops children
    t_start = time.monotonic()
    print(f"# {bench.environment()}", flush=True)
    print(f"# load average at start {bench.load_note()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rgpu-bench-build-") as build_dir:
        out = Path(build_dir)
        bench.build([GLSLANG, "-V", str(PROGRAMS / "vk_bench.comp"), "-o",
                     str(out / "vk_bench.spv")])
        bench.build([bench.compiler(), "-O2", "-Wall", "-Wextra", "-o", str(out / "vk_bench"),
                     str(PROGRAMS / "vk_bench.c"), "-lvulkan"])
        exe = [str(out / "vk_bench"), str(out / "vk_bench.spv")]
        results = bench.interleave(args.reps, transports,
                                   lambda job, rep: measure(job, rep, exe, args))
    print(table(results))
    print(f"# {args.reps} repetitions per transport, interleaved; vulkaninfo {args.runs} timed "
          "runs per path and repetition; median (min-max)")
    print(f"# {bench.load_summary(results)}")
    print(f"# total {time.monotonic() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"environment": bench.environment(), "args": {
            k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    failed = [j for j, runs in results.items() if all("error" in r for r in runs)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
