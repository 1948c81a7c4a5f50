"""CUDA shim benchmark: an unmodified driver-API program through rgpu, on loopback.

A real ``rgpu server --cuda emu`` (the emulated CUDA device; it listens for QUIC and TCP+TLS at
once), a real ``rgpu client`` daemon with ``--transport tcp`` or ``--transport quic``, and
``programs/cuda_bench.c`` -- built here with the C compiler against the shim's own declarations
(``interpose/generated/cuda_api.h``) and linked with ``-lcuda``, which is the shim -- run on
127.0.0.1 with free ports and temporary directories. Every process has a time limit and is
killed in ``finally``; every run is a fresh server and daemon.

Measured by the program, with ``clock_gettime``:

- synchronous round trip: ``cuCtxSynchronize`` and ``cuMemGetInfo_v2``, each a CALL that the
  server answers (application -> Unix socket -> daemon -> network -> server worker and back);
- pipelined launches: N launches of an empty PTX kernel (1 block x 32 threads) on the legacy
  stream, then one ``cuCtxSynchronize``: the rate at which the launch loop returns (the
  application's issue rate; launches are fire-and-forget BATCH frames) and the rate at which
  they completed (until the synchronize returned);
- ``cuMemcpyHtoD_v2`` / ``cuMemcpyDtoH_v2`` at 1, 4, 16, 64 and 256 MiB.

Beside them, the driver times ``rgpu.echo`` (answered by the server's network loop without a
backend) from a Python client through the same daemon: the transport floor of that run.

    python benchmarks/cuda.py            # full run (about 2 minutes on 2 cores)
    python benchmarks/cuda.py --quick    # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
TOKEN = "5b" * 32
START_TIMEOUT_S = 40.0
PROCESS_LIMIT_S = 900  # no server or daemon outlives this, whatever happens to the driver
TRANSPORTS = ("tcp", "quic")
_RGPU_SCRIPT = Path(sys.executable).with_name("rgpu")
RGPU: list[str] = ([str(_RGPU_SCRIPT)] if _RGPU_SCRIPT.exists()
                   else [sys.executable, "-m", "rgpu.cli"])


# --- processes (also used by benchmarks/vulkan.py) ------------------------------------------

def free_port() -> int:
    """A port number free for both TCP and UDP on 127.0.0.1 (the server listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((HOST, 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((HOST, port))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no port free for TCP and UDP on 127.0.0.1")


def base_env(root: Path) -> dict[str, str]:
    """The environment without RGPU_*/preload variables, HOME and XDG dirs inside ``root``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RGPU_", "VK_")) and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    for var, sub in (("HOME", "home"), ("XDG_RUNTIME_DIR", "run"),
                     ("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state")):
        path = root / sub
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        env[var] = str(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A background process in its own process group, bounded by `timeout`, output to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], root: Path,
                 limit_s: float = PROCESS_LIMIT_S) -> None:
        self.name = name
        self.log = root / f"{name}.log"
        bound = (["timeout", "-k", "5", str(int(limit_s))] if shutil.which("timeout") else [])
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen([*bound, *argv], env=env, cwd=root,
                                          stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1,
                 timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = list(rx.finditer(self.text()))
            if len(found) >= count:
                return found[count - 1]
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited before {pattern!r}: "
                                   f"{self.text().strip()[-300:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {pattern!r} within {timeout:g} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the group, then SIGKILL whatever is left of it."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # stragglers of the group


class Rig:
    """One server and one daemon on loopback, started fresh, stopped by ``close``."""

    def __init__(self, root: Path, transport: str, cuda: str = "emu",
                 server_transport: str = "both") -> None:
        self.root = root
        self.transport = transport
        self.env = base_env(root)
        self.procs: list[Proc] = []
        port = free_port()
        self.server = self._spawn("server", [
            "server", "--bind", HOST, "--port", str(port), "--transport", server_transport,
            "--cuda", cuda, "--state-dir", str(root / "server-state"), "--token", TOKEN,
            "--auth-failure-delay", "0"])
        self.server.wait_for(r"rgpu server listening on ")
        self.socket = root / "daemon" / "rgpu.sock"
        self.daemon = self._spawn("daemon", [
            "client", "--token", TOKEN, "--transport", transport, "--socket", str(self.socket),
            "--known-servers", str(root / "known_servers"), "--no-local-gpus",
            "--reconnect-max-delay", "1", "--server", f"{HOST}:{port}"])
        self.daemon.wait_for(r"connected to 127\.0\.0\.1")

    def _spawn(self, name: str, args: list[str]) -> Proc:
        proc = Proc(name, [*RGPU, *args], self.env, self.root)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.text()[-2000:]}" for p in self.procs)


def run_app(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[str, float]:
    """Run a program to completion in its own process group (killed on timeout); its stdout
    and its wall time. A failure raises RuntimeError with the end of its stderr."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=10)
        raise RuntimeError(f"{Path(argv[0]).name} ran past {timeout:g} s") from None
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (err.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"{Path(argv[0]).name} exit {p.returncode}: {tail[:300]}")
    return out, wall


def compiler() -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("rgpu: error: no C compiler (apt install gcc)")
    return cc


def build(argv: list[str]) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if p.returncode != 0:
        raise SystemExit(f"rgpu: error: {' '.join(argv)} failed: {p.stderr.strip()[-500:]}")


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def environment() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"Python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu}), "
            f"Linux {platform.release()}")


def fmt(values: list[float], digits: int = 0) -> str:
    """Median (min-max) of the repetitions."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def interleave(reps: int, jobs: list[str], one: Callable[[str, int], dict[str, Any]],
               ) -> dict[str, list[dict[str, Any]]]:
    """Repetition 1 of every job, then repetition 2, ...; errors are kept as results."""
    results: dict[str, list[dict[str, Any]]] = {j: [] for j in jobs}
    for rep in range(reps):
        for job in jobs:
            t0, busy0, own0 = time.monotonic(), machine_cpu(), own_cpu()
            try:
                r = one(job, rep)
            except (RuntimeError, ValueError, OSError) as exc:
                r = {"error": str(exc)[:400]}
            wall = time.monotonic() - t0
            r["load"] = os.getloadavg()[0]
            r["other_cores"] = max(0.0, (machine_cpu() - busy0) - (own_cpu() - own0)) / wall
            results[job].append(r)
            print(f"[{rep + 1}/{reps}] {job}: {summary(r)} ({wall:.1f} s, load "
                  f"{r['load']:.2f}, other processes {r['other_cores']:.2f} cores)",
                  file=sys.stderr, flush=True)
    return results


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (v + [0] * 7)[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for (the
    servers, daemons and programs of the runs, which are all waited for)."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def load_summary(results: dict[str, list[dict[str, Any]]]) -> str:
    runs = [r for rs in results.values() for r in rs]
    loads = [r["load"] for r in runs]
    other = [r["other_cores"] for r in runs]
    return (f"load average (1 min) after each run {min(loads):.2f}-{max(loads):.2f}; other "
            f"processes used {min(other):.2f}-{max(other):.2f} of the {os.cpu_count()} cores "
            f"(median {statistics.median(other):.2f}); load average at the end {load_note()}")


def summary(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    parts = []
    for key in ("echo_us", "sync_us", "dispatch_us"):
        if key in r:
            parts.append(f"{key} {r[key]:.0f}")
    if "launch_per_s" in r:
        parts.append(f"launches {r['launch_per_s']:.0f}/s (issue {r['issue_per_s']:.0f}/s)")
    if "wall_s" in r:
        parts.append(f"wall {r['wall_s']:.2f} s")
    return ", ".join(parts) or "ok"


# --- the CUDA measurement --------------------------------------------------------------------

async def _echo(sock: Path, n: int) -> dict[str, float]:
    """``rgpu.echo`` calls, one at a time, through the daemon (the wire floor of the run)."""
    from rgpu.net import connect_local
    from rgpu.wire import MessageKind

    peer = await connect_local(sock, name="bench-echo")
    try:
        reply = await peer.request(MessageKind.CONTROL, {"op": "open_session", "gpu": 0},
                                   timeout=10)
        sid = int(reply.body["session"])
        body = ["rgpu.echo", [1, "x" * 32]]
        for _ in range(100):
            await peer.request(MessageKind.CALL, body, session=sid, timeout=10)
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await peer.request(MessageKind.CALL, body, session=sid, timeout=10)
            times.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        peer.close("bye", "benchmark done")
    return {"median_us": statistics.median(times),
            "p99_us": sorted(times)[int(0.99 * (len(times) - 1))]}


def _shim_env(rig: Rig) -> dict[str, str]:
    from rgpu.codegen.shimlib import shim_library_dir

    return {**rig.env, "RGPU_SOCKET": str(rig.socket),
            "LD_LIBRARY_PATH": str(shim_library_dir())}


def measure(transport: str, exe: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh server + daemon; the echo floor, then the program three times (round trips,
    launches, copies), with the CPU time the server and the daemon spent on each part."""
    r: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rgpu-bench-cuda-") as tmp:
        rig = Rig(Path(tmp), transport)
        try:
            echo = asyncio.run(asyncio.wait_for(_echo(rig.socket, args.rtt_n), 60))
            r.update(echo_us=echo["median_us"], echo_p99_us=echo["p99_us"])
            pids = {"server": main_pid(rig.server), "daemon": main_pid(rig.daemon)}
            wall = 0.0
            for part, argv in (("rtt", [args.rtt_n, 0, 0]), ("launch", [0, args.launches, 0]),
                               ("copy", [0, 0, args.max_mib])):
                before = {k: cpu_seconds(v) for k, v in pids.items()}
                try:
                    out, w = run_app([str(exe), *map(str, argv)], _shim_env(rig), Path(tmp),
                                     args.app_timeout)
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}\n{rig.logs()}") from None
                wall += w
                r.update(json.loads(out))
                r[f"cpu_{part}"] = {k: cpu_seconds(v) - before[k] for k, v in pids.items()}
        finally:
            rig.close()
    r.update(wall_s=wall, sync_us=r["cuCtxSynchronize"]["median_us"],
             launch_per_s=r["launch"]["completed_per_s"], issue_per_s=r["launch"]["issue_per_s"])
    return r


def main_pid(proc: Proc) -> int:
    """The rgpu process itself: the child of the `timeout` that bounds it (if any)."""
    pid = proc.popen.pid
    with contextlib.suppress(OSError, ValueError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
    return pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its threads included (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = [("rgpu.echo through the daemon (Python client), median µs",
             lambda r: r["echo_us"], 0),
            ("cuCtxSynchronize round trip, median µs", lambda r: r["sync_us"], 0),
            ("cuCtxSynchronize round trip, p99 µs",
             lambda r: r["cuCtxSynchronize"]["p99_us"], 0),
            ("cuMemGetInfo_v2 round trip, median µs",
             lambda r: r["cuMemGetInfo_v2"]["median_us"], 0),
            ("empty-kernel launches completed /s (N launches + sync)",
             lambda r: r["launch_per_s"], 0),
            ("empty-kernel launches issued /s (launch loop returns)",
             lambda r: r["issue_per_s"], 0),
            ("server CPU per sync round trip, µs",
             lambda r: r["cpu_rtt"]["server"] / (2 * r["cuCtxSynchronize"]["n"] + 200) * 1e6, 0),
            ("daemon CPU per sync round trip, µs",
             lambda r: r["cpu_rtt"]["daemon"] / (2 * r["cuCtxSynchronize"]["n"] + 200) * 1e6, 0),
            ("server CPU per launch, µs",
             lambda r: r["cpu_launch"]["server"] / (r["launch"]["n"] + 20) * 1e6, 0),
            ("daemon CPU per launch, µs",
             lambda r: r["cpu_launch"]["daemon"] / (r["launch"]["n"] + 20) * 1e6, 0)]
    sizes = sorted({c["mib"] for runs in results.values() for r in runs if "copy" in r
                    for c in r["copy"]})
    for direction, key in (("HtoD", "htod_mb_s"), ("DtoH", "dtoh_mb_s")):
        for mib in sizes:
            rows.append((f"cuMemcpy{direction} {mib} MiB, MB/s",
                         lambda r, m=mib, k=key: next(c[k] for c in r["copy"] if c["mib"] == m),
                         0))
    jobs = list(results)
    lines = ["| measure | " + " | ".join(f"daemon --transport {j}" for j in jobs) + " |",
             "|---|" + "---|" * len(jobs)]
    for label, get, digits in rows:
        cells = []
        for job in jobs:
            vals = []
            for r in results[job]:
                if "error" not in r:
                    with contextlib.suppress(KeyError, StopIteration):
                        vals.append(float(get(r)))
            cells.append(fmt(vals, digits))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for job in jobs:
        errors = [r["error"] for r in results[job] if "error" in r]
        if errors:
            lines.append(f"\n{job}: {len(errors)}/{len(results[job])} runs failed: "
                         f"{errors[0].splitlines()[0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 repetition, copies up to 16 MiB, fewer calls")
    p.add_argument("--reps", type=int, help="repetitions per transport [5; quick 1]")
    p.add_argument("--rtt-n", type=int, help="timed round trips per call [1000; quick 200]")
    p.add_argument("--launches", type=int, help="launches in the pipelined run [5000; quick "
                   "1000]")
    p.add_argument("--max-mib", type=int, help="largest copy, a power of 4 [256; quick 16]")
    p.add_argument("--transport", choices=TRANSPORTS, action="append",
                   help="only this daemon transport (repeatable) [tcp and quic]")
    p.add_argument("--app-timeout", type=float, default=240.0,
                   help="seconds the benchmark program may take [240]")
    p.add_argument("--json", type=Path, help="write raw results here")
    args = p.parse_args(argv)
    q = args.quick
    args.reps = args.reps or (1 if q else 5)
    args.rtt_n = args.rtt_n or (200 if q else 1000)
    args.launches = args.launches or (1000 if q else 5000)
    args.max_mib = args.max_mib or (16 if q else 256)
    transports = args.transport or list(TRANSPORTS)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops children
    t_start = time.monotonic()
    print(f"# {environment()}", flush=True)
    print(f"# load average at start {load_note()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rgpu-bench-build-") as build_dir:
        exe = Path(build_dir) / "cuda_bench"
        build([compiler(), "-O2", "-Wall", "-Wextra", "-I", str(ROOT / "interpose" / "generated"),
               "-o", str(exe), str(PROGRAMS / "cuda_bench.c"), f"-L{_shim_link_dir()}",
               "-lcuda"])
        results = interleave(args.reps, transports,
                             lambda job, _rep: measure(job, exe, args))
    print(table(results))
    print(f"# {args.reps} repetitions per transport, interleaved; median (min-max)")
    print(f"# {load_summary(results)}")
    print(f"# total {time.monotonic() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"environment": environment(), "args": {
            k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    failed = [j for j, runs in results.items() if all("error" in r for r in runs)]
    return 1 if failed else 0


def _shim_link_dir() -> Path:
    from rgpu.codegen.shimlib import shim_library_dir
    from rgpu.errors import RgpuError

    try:
        return shim_library_dir()
    except RgpuError as exc:
        raise SystemExit(f"rgpu: error: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
