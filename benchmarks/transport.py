"""Transport benchmark: small-call round trip and bulk throughput on loopback.

Every measurement is a fresh server process (``RgpuServer`` plus two benchmark calls), an
optional client-daemon process, and a client process, on 127.0.0.1 with free ports and a
temporary state directory. Paths measured:

- ``unix``: the client speaks the wire protocol to the server over a Unix socket (the floor
  that the protocol and Python impose, with no encryption);
- ``tls``: direct TCP + TLS 1.3;
- ``quic``: direct QUIC with one engine (aioquic, qh3);
- ``daemon+tls`` / ``daemon+quic``: application -> Unix socket -> daemon -> network -> server,
  which is what applications see.

Each is run with the stock asyncio loop and with uvloop (in every process of the job).
Repetitions are interleaved (repetition 1 of every job, then repetition 2, ...), and the table
shows medians across repetitions with their spread.

Round trip: ``rgpu.echo`` with small arguments, timed one at a time. Bulk: ``bench.sink``
(the bulk segment of a CALL is consumed, the reply carries its length) for client -> server
and ``bench.source`` (the reply carries a bulk segment) for server -> client, a few requests
in flight. QUIC tuning is varied through the ``RGPU_QUIC_*`` variables of rgpu.net.quic.

    python benchmarks/transport.py            # full run (8-11 minutes on 2 cores)
    python benchmarks/transport.py --quick    # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MiB = 1 << 20
TOKEN = "5" * 64
SERVER_START_TIMEOUT = 30.0
LOOPS = ("asyncio", "uvloop")


# --- jobs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One configuration measured: the path, the QUIC engine, the event loop, the tuning."""

    path: str  # unix | tls | quic | daemon+tls | daemon+quic
    loop: str = "asyncio"
    engine: str = ""  # QUIC engine; "" for the stream paths
    tuning: tuple[tuple[str, str], ...] = ()  # RGPU_QUIC_* overrides, for every process
    note: str = ""

    @property
    def name(self) -> str:
        parts = [self.path]
        if self.engine:
            parts.append(self.engine)
        parts.append(self.loop)
        if self.note:
            parts.append(self.note)
        return " ".join(parts)

    @property
    def daemon(self) -> bool:
        return self.path.startswith("daemon+")

    @property
    def transport(self) -> str:
        return self.path.removeprefix("daemon+")


def _engines(choice: str) -> list[str]:
    from rgpu.net.quic import ENGINES, load_engine

    if choice == "all":
        names = []
        for n in ENGINES:
            try:
                load_engine(n)
            except Exception:
                continue
            names.append(n)
        return names
    return [load_engine(choice).name]


def plan(args: argparse.Namespace) -> list[Job]:
    engines = _engines(args.quic_engine)
    default = _engines("auto")[0] if args.quic_engine in ("all", "auto") else engines[0]
    loops = [args.loop] if args.loop else (["asyncio"] if args.quick else list(LOOPS))
    jobs: list[Job] = []
    for loop in loops:
        jobs.append(Job("unix", loop))
        jobs.append(Job("tls", loop))
        jobs.extend(Job("quic", loop, e) for e in engines)
        jobs.append(Job("daemon+tls", loop))
        jobs.append(Job("daemon+quic", loop, default))
    if not args.quick and not args.no_tuning:
        # Before/after for the tuning defaults, same run, stock loop.
        if "qh3" in engines:
            jobs.append(Job("quic", "asyncio", "qh3", (("RGPU_QUIC_MAX_DATAGRAM", "1350"),),
                            "dgram=1350"))
            jobs.append(Job("quic", "asyncio", "qh3", (("RGPU_QUIC_MAX_DATAGRAM", "65000"),),
                            "dgram=65000"))
            jobs.append(Job("quic", "asyncio", "qh3", (("RGPU_QUIC_LIFT_PAYLOAD_LIMIT", "0"),),
                            "client-limit=1472"))
            jobs.append(Job("quic", "asyncio", "qh3", (("RGPU_QUIC_MAX_STREAM_DATA", "6MiB"),
                                                       ("RGPU_QUIC_MAX_DATA", "15MiB")),
                            "windows=6/15MiB"))
        if "aioquic" in engines:
            for loop in loops:
                jobs.append(Job("quic", loop, "aioquic", (("RGPU_QUIC_MAX_DATAGRAM", "1350"),),
                                "dgram=1350"))
    if args.tuning:
        extra = tuple(tuple(kv.split("=", 1)) for kv in args.tuning)
        note = ",".join(f"{k.removeprefix('RGPU_QUIC_').lower()}={v}" for k, v in extra)
        jobs = [Job(j.path, j.loop, j.engine, j.tuning + extra, note) if j.engine else j
                for j in jobs]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        jobs = [j for j in jobs if any(w in j.name for w in wanted)]
    return jobs


# --- child processes: server, daemon ------------------------------------------------------

def _run_loop(loop: str, main: Any) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0 where unreadable."""
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def _fake_gpu() -> Any:
    from rgpu.server.discovery import GpuInfo

    return GpuInfo(index=0, name="bench", device_type="virtual", memory=1 << 30, vulkan=False,
                   cuda=False, compute_capability=None, uuid="", vendor_id=0, device_id=0,
                   driver="bench", vulkan_api_version=None, vulkan_index=None, cuda_index=None)


async def _serve(opts: dict[str, Any]) -> None:
    from rgpu.config import Config, SecurityConfig, ServerConfig, TokenConfig
    from rgpu.net.stream import start_unix_server
    from rgpu.server.server import RgpuServer

    source = bytes(opts["source_size"])

    class BenchServer(RgpuServer):
        """The real server plus two calls that move bulk in one direction only.

        They run where backend calls run (the session's worker thread); the bulk segment of
        a CALL arrives as the last argument.
        """

        def _execute(self, session: Any, fn: str, args: list[Any]) -> Any:
            if fn == "bench.sink":
                return len(args[-1]) if args else 0
            if fn == "bench.source":
                return memoryview(source)[:int(args[0])]
            return super()._execute(session, fn, args)

    state = Path(opts["state_dir"])
    cfg = Config(
        server=ServerConfig(bind="127.0.0.1", port=opts["port"], transport="both",
                            state_dir=state, cuda="none",
                            quic_engine=opts["engine"] or "auto"),
        security=SecurityConfig(tokens=(TokenConfig(token=TOKEN, name="bench"),)))
    srv = BenchServer(cfg, gpus=[_fake_gpu()])
    await srv.start()
    assert srv.cert is not None
    unix = await start_unix_server(Path(opts["unix"]), lambda _t: srv._make_conn(b""),
                                   srv._on_peer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(opts["lifetime"], stop.set)
    print(json.dumps({"ready": True, "fingerprint": srv.cert.fingerprint,
                      "ports": srv.ports}), flush=True)
    await stop.wait()
    unix.close()
    await srv.stop()


async def _run_daemon(opts: dict[str, Any]) -> None:
    from rgpu.client.daemon import Daemon
    from rgpu.config import ClientConfig, Config, ServerEntry

    entry = ServerEntry(address=f"127.0.0.1:{opts['port']}", token=TOKEN,
                        transport=opts["transport"], fingerprint=opts["fingerprint"])
    state = Path(opts["state_dir"])
    cfg = Config(client=ClientConfig(
        include_local_gpus=False, servers=(entry,), socket_path=Path(opts["socket"]),
        known_servers_path=state / "known_servers"))
    daemon = Daemon(cfg, quic_engine=opts["engine"] or "auto")
    await daemon.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(opts["lifetime"], stop.set)
    deadline = loop.time() + SERVER_START_TIMEOUT
    while not daemon.pool:
        if loop.time() > deadline:
            link = next(iter(daemon.links.values()))
            print(json.dumps({"ready": False, "error": link.error or link.state}), flush=True)
            return
        await asyncio.sleep(0.02)
    link = next(iter(daemon.links.values()))
    print(json.dumps({"ready": True, "link": link.peer.transport_name if link.peer else ""}),
          flush=True)
    await stop.wait()
    await daemon.stop()


# --- the client: the measurements ---------------------------------------------------------

@dataclass
class Phase:
    """CPU seconds of each process across one phase of the client."""

    pids: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = {k: self._cpu(k, p) for k, p in self.pids.items()}

    @staticmethod
    def _cpu(key: str, pid: int) -> float:
        if key == "client":
            r = resource.getrusage(resource.RUSAGE_SELF)
            return r.ru_utime + r.ru_stime
        return _cpu_of(pid)

    def used(self) -> dict[str, float]:
        return {k: round(self._cpu(k, p) - self.start[k], 3) for k, p in self.pids.items()}


async def _open(opts: dict[str, Any]) -> tuple[Any, int]:
    from rgpu.net import connect_local, connect_server
    from rgpu.net.stream import connect_unix
    from rgpu.wire import Connection, ConnectionConfig, MessageKind, Role
    from rgpu.wire.auth import token_key

    path = opts["path"]
    if path.startswith("daemon+"):
        peer = await connect_local(opts["socket"], name="bench")
    elif path == "unix":
        def make_conn(_t: object) -> Connection:
            return Connection(ConnectionConfig(Role.CLIENT, token_key=token_key(TOKEN),
                                               name="bench"))

        peer = await connect_unix(Path(opts["unix"]), make_conn, lambda _p: None)
        await asyncio.wait_for(asyncio.shield(peer.handshake), 10)
    else:
        transport = "tcp" if path == "tls" else "quic"
        peer = await connect_server("127.0.0.1", opts["port"], token=TOKEN,
                                    transport=transport, fingerprint=opts["fingerprint"],
                                    quic_engine=opts["engine"] or "auto", name="bench")
    reply = await peer.request(MessageKind.CONTROL, {"op": "open_session", "gpu": 0},
                               timeout=10)
    sid = int(reply.body["session"])
    if not path.startswith("daemon+"):
        peer.open_session_stream(sid)
    return peer, sid


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def _rtt(peer: Any, sid: int, n: int, limit: float) -> dict[str, Any]:
    from rgpu.wire import MessageKind

    body = ["rgpu.echo", [1, "x" * 32]]
    for _ in range(min(200, n)):
        await peer.request(MessageKind.CALL, body, session=sid, timeout=10)
    times: list[float] = []
    clock = time.perf_counter_ns
    stop = time.monotonic() + limit
    for _ in range(n):
        t0 = clock()
        await peer.request(MessageKind.CALL, body, session=sid, timeout=10)
        times.append((clock() - t0) / 1000)
        if time.monotonic() > stop:
            break
    return {"median_us": statistics.median(times), "p99_us": _percentile(times, 0.99),
            "count": len(times)}


async def _bulk(peer: Any, sid: int, direction: str, total: int, chunk: int, depth: int,
                limit: float) -> dict[str, Any]:
    """Move ``total`` bytes in ``chunk``-sized requests, ``depth`` of them in flight."""
    from rgpu.wire import MessageKind

    payload = memoryview(os.urandom(chunk))  # incompressible (bulk is never compressed anyway)
    loop = asyncio.get_running_loop()
    sent = done = 0
    inflight: set[asyncio.Future[Any]] = set()
    t0 = time.perf_counter()
    deadline = t0 + limit
    complete = True

    def issue() -> asyncio.Future[Any]:
        if direction == "up":
            return peer.request_nowait(MessageKind.CALL, ["bench.sink", []], session=sid,
                                       bulk=payload)
        return peer.request_nowait(MessageKind.CALL, ["bench.source", [chunk]], session=sid)

    while done < total:
        while sent < total and len(inflight) < depth:
            inflight.add(issue())
            sent += chunk
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            complete = False
            break
        finished, inflight = await asyncio.wait(inflight, timeout=remaining,
                                                return_when=asyncio.FIRST_COMPLETED)
        for f in finished:
            frame = f.result()
            got = int(frame.body) if direction == "up" else len(frame.bulk)
            if got != chunk:
                raise RuntimeError(f"bulk {direction}: expected {chunk} bytes, got {got}")
            done += chunk
    elapsed = time.perf_counter() - t0
    for f in inflight:
        f.cancel()
    del loop
    return {"mb_s": done / elapsed / 1e6, "bytes": done, "seconds": elapsed,
            "complete": complete}


async def _client(opts: dict[str, Any]) -> dict[str, Any]:
    pids = {"client": os.getpid(), "server": opts["server_pid"]}
    if opts.get("daemon_pid"):
        pids["daemon"] = opts["daemon_pid"]
    t0 = time.perf_counter()
    peer, sid = await _open(opts)
    result: dict[str, Any] = {"connect_ms": (time.perf_counter() - t0) * 1000,
                              "transport": peer.transport_name}
    ph = Phase(pids)
    result["rtt"] = await _rtt(peer, sid, opts["rtt_n"], opts["phase_limit"])
    result["rtt"]["cpu"] = ph.used()
    for direction in ("up", "down"):
        ph = Phase(pids)
        r = await _bulk(peer, sid, direction, opts["size"], opts["chunk"], opts["depth"],
                        opts["phase_limit"])
        r["cpu"] = ph.used()
        result[direction] = r
        if not r["complete"]:
            break  # unfinished within the phase limit: the rest may still be queued
    peer.close("bye", "benchmark done")
    return result


# --- the driver ---------------------------------------------------------------------------

def _free_port() -> int:
    """A port number free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def _spawn(role: str, opts: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--role", role, "--opts",
         json.dumps(opts)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)


def _read_ready(proc: subprocess.Popen[str], what: str, timeout: float) -> dict[str, Any]:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError(f"{what} did not start within {timeout:g} s")
        line = proc.stdout.readline()
    finally:
        sel.close()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"{what} exited: {err.strip().splitlines()[-1:] or '?'}")
    msg = json.loads(line)
    if not msg.get("ready"):
        raise RuntimeError(f"{what} not ready: {msg.get('error')}")
    return msg


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(3)


def _machine_cpu() -> tuple[float, float]:
    """Busy and steal CPU seconds of the whole machine since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu() -> float:
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def run_job(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement; the share of the machine other processes took is recorded with it."""
    t0, (busy0, steal0), own0 = time.monotonic(), _machine_cpu(), _own_cpu()
    result = _run_job(job, args)
    wall = time.monotonic() - t0
    busy1, steal1 = _machine_cpu()
    result["foreign_cores"] = round(max(0.0, (busy1 - busy0) - (_own_cpu() - own0)) / wall, 2)
    result["steal_cores"] = round((steal1 - steal0) / wall, 2)
    return result


def _run_job(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGPU_")}
    env.update(dict(job.tuning))
    env["RGPU_LOG"] = "error"
    client_limit = 3 * args.phase_limit + 30
    lifetime = client_limit + 30
    server = daemon = client = None
    with tempfile.TemporaryDirectory(prefix="rgpu-bench-") as tmp:
        port = _free_port()
        base = {"loop": job.loop, "engine": job.engine, "port": port, "lifetime": lifetime}
        try:
            server = _spawn("server", {**base, "state_dir": f"{tmp}/server",
                                       "unix": f"{tmp}/s/server.sock",
                                       "source_size": args.chunk}, env)
            ready = _read_ready(server, "server", SERVER_START_TIMEOUT)
            copts = {**base, "path": job.path, "fingerprint": ready["fingerprint"],
                     "unix": f"{tmp}/s/server.sock", "server_pid": server.pid,
                     "rtt_n": args.rtt_n, "size": args.size, "chunk": args.chunk,
                     "depth": args.depth, "phase_limit": args.phase_limit}
            if job.daemon:
                daemon = _spawn("daemon", {**base, "transport": "tcp" if job.transport == "tls"
                                           else "quic", "fingerprint": ready["fingerprint"],
                                           "socket": f"{tmp}/d/daemon.sock",
                                           "state_dir": tmp}, env)
                _read_ready(daemon, "daemon", SERVER_START_TIMEOUT)
                copts.update(socket=f"{tmp}/d/daemon.sock", daemon_pid=daemon.pid)
            client = _spawn("client", copts, env)
            try:
                out, err = client.communicate(timeout=client_limit)
            except subprocess.TimeoutExpired:
                return {"error": f"client ran past {client_limit:g} s"}
            if client.returncode != 0:
                tail = err.strip().splitlines()[-1:] or ["?"]
                return {"error": f"client exit {client.returncode}: {tail[0][:200]}"}
            return json.loads(out.strip().splitlines()[-1])
        except (RuntimeError, ValueError, OSError) as exc:
            return {"error": str(exc)[:200]}
        finally:
            for proc in (client, daemon, server):
                _stop(proc)


# --- report -------------------------------------------------------------------------------

def _fmt(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def _cpu_per_gib(runs: list[dict[str, Any]], direction: str) -> str:
    vals = []
    for r in runs:
        d = r.get(direction)
        if d and d["bytes"]:
            vals.append(sum(d["cpu"].values()) / (d["bytes"] / (1 << 30)))
    return f"{statistics.median(vals):.1f}" if vals else "-"


def table(jobs: list[Job], results: dict[str, list[dict[str, Any]]]) -> str:
    head = ("| path | engine | loop | tuning | RTT median µs | RTT p99 µs | up MB/s | down MB/s "
            "| CPU s/GiB up/down | other load |")
    lines = [head, "|" + "---|" * 10]
    for job in jobs:
        runs = results.get(job.name, [])
        ok = [r for r in runs if "error" not in r]
        errors = [r["error"] for r in runs if "error" in r]
        rtt = [r["rtt"]["median_us"] for r in ok]
        p99 = [r["rtt"]["p99_us"] for r in ok]
        cells = []
        for direction in ("up", "down"):
            vals = [r[direction]["mb_s"] for r in ok if direction in r]
            cell = _fmt(vals)
            short = sum(1 for r in ok if direction in r and not r[direction]["complete"])
            if short:
                cell += f" ({short}/{len(ok)} unfinished)"
            if ok and not vals:
                cell = "skipped"
            cells.append(cell)
        cpu = f"{_cpu_per_gib(ok, 'up')} / {_cpu_per_gib(ok, 'down')}"
        tuning = job.note or "default"
        foreign = [r.get("foreign_cores", 0.0) for r in runs]
        load = f"{max(foreign):.2f}" if foreign else "-"
        row = (f"| {job.path} | {job.engine or '-'} | {job.loop} | {tuning} | {_fmt(rtt)} | "
               f"{_fmt(p99)} | {cells[0]} | {cells[1]} | {cpu} | {load} |")
        if errors:
            row += f" {len(errors)}/{len(runs)} failed: {errors[0]}"
        lines.append(row)
    return "\n".join(lines)


def environment() -> str:
    from importlib.metadata import PackageNotFoundError, version

    vers = []
    for pkg in ("aioquic", "qh3", "aiopquic", "uvloop"):
        try:
            vers.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            vers.append(f"{pkg} not installed")
    return (f"Python {platform.python_version()}, {', '.join(vers)}, {os.cpu_count()} CPUs, "
            f"Linux {platform.release()}")


def _parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = {"k": 1 << 10, "m": MiB, "g": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("kmg")) * mult)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, 32 MiB, "
                   "asyncio loop only")
    p.add_argument("--reps", type=int, help="repetitions of every job [3; quick 1]")
    p.add_argument("--size", type=_parse_size, help="bulk bytes per direction [256MiB; "
                   "quick 32MiB]")
    p.add_argument("--chunk", type=_parse_size, default=4 * MiB,
                   help="bulk bytes per request [4MiB]")
    p.add_argument("--depth", type=int, default=2, help="bulk requests in flight [2]")
    p.add_argument("--rtt-n", type=int, help="timed round trips [2000; quick 300]")
    p.add_argument("--phase-limit", type=float, help="seconds one phase may take before it "
                   "counts as stalled [15; quick 8]")
    p.add_argument("--quic-engine", default="all",
                   help="all (every installed engine), auto, qh3 or aioquic [all]")
    p.add_argument("--loop", choices=LOOPS, help="only this event loop")
    p.add_argument("--only", help="comma-separated substrings of job names to keep")
    p.add_argument("--no-tuning", action="store_true", help="skip the tuning comparison jobs")
    p.add_argument("--tuning", action="append", metavar="RGPU_QUIC_X=VALUE",
                   help="QUIC tuning override for every QUIC job (repeatable)")
    p.add_argument("--max-foreign", type=float, default=0.3,
                   help="repeat a run when other processes took more cores than this [0.3]")
    p.add_argument("--retries", type=int, default=0,
                   help="repeats of a run disturbed by other load, keeping the quieter [0]")
    p.add_argument("--json", type=Path, help="write raw results here")
    p.add_argument("--report", type=Path, help="print the table of a saved --json run")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--opts", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.role:
        opts = json.loads(args.opts)
        if args.role == "server":
            _run_loop(opts["loop"], _serve(opts))
        elif args.role == "daemon":
            _run_loop(opts["loop"], _run_daemon(opts))
        elif args.role == "client":
            print(json.dumps(_run_loop(opts["loop"], _client(opts))), flush=True)
        return 0

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops children
    if args.report:
        saved = json.loads(args.report.read_text())
        print(f"# {saved['environment']}")
        print(table([Job(**{**j, "tuning": tuple(map(tuple, j["tuning"]))})
                     for j in saved["jobs"]], saved["results"]))
        return 0
    q = args.quick
    args.reps = args.reps or (1 if q else 3)
    args.size = args.size or (32 * MiB if q else 256 * MiB)
    args.rtt_n = args.rtt_n or (300 if q else 2000)
    args.phase_limit = args.phase_limit or (8.0 if q else 15.0)
    jobs = plan(args)
    if not jobs:
        print("no job matches --only", file=sys.stderr)
        return 2
    print(f"# {environment()}", flush=True)
    print(f"# {len(jobs)} jobs x {args.reps} repetitions; bulk {args.size // MiB} MiB per "
          f"direction in {args.chunk // MiB} MiB requests, {args.depth} in flight", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    t_start = time.monotonic()
    for rep in range(args.reps):
        for job in jobs:
            t0 = time.monotonic()
            r = run_job(job, args)
            for _ in range(args.retries):
                if r.get("foreign_cores", 0) <= args.max_foreign:
                    break
                print(f"[{rep + 1}/{args.reps}] {job.name}: other processes took "
                      f"{r['foreign_cores']:.2f} cores; again", file=sys.stderr, flush=True)
                again = run_job(job, args)
                if again.get("foreign_cores", 0) < r.get("foreign_cores", 0):
                    r = again
            results.setdefault(job.name, []).append(r)
            if "error" in r:
                summary = f"error: {r['error']}"
            else:
                summary = (f"rtt {r['rtt']['median_us']:.0f} µs"
                           + "".join(f", {d} {r[d]['mb_s']:.0f} MB/s" for d in ("up", "down")
                                     if d in r))
            print(f"[{rep + 1}/{args.reps}] {job.name}: {summary} "
                  f"({time.monotonic() - t0:.1f} s, others {r.get('foreign_cores', 0):.2f} "
                  "cores)", file=sys.stderr, flush=True)
    print(table(jobs, results))
    print(f"# total {time.monotonic() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"environment": environment(), "jobs": [
            dataclasses.asdict(j) for j in jobs], "args": {
            k: v for k, v in vars(args).items() if k not in ("json", "role", "opts")},
            "results": results}, indent=1, default=str))
    failed = [n for n, runs in results.items() if all("error" in r for r in runs)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
