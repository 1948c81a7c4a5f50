"""Real `rgpu` servers, daemons and CLI commands for the integration tests.

Every process runs in its own session (so a finalizer can kill its whole process group), under
``timeout`` as a last bound, with HOME and the XDG directories pointed into the test's tmp
directory, and talks only to 127.0.0.1 on ports picked free for both TCP and UDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

T = TypeVar("T")

HOST = "127.0.0.1"
PROCESS_LIMIT_S = 900  # no process a test starts outlives this, whatever happens to pytest
START_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 40.0

_RGPU_SCRIPT = Path(sys.executable).with_name("rgpu")
RGPU: list[str] = ([str(_RGPU_SCRIPT)] if _RGPU_SCRIPT.exists()
                   else [sys.executable, "-m", "rgpu.cli"])
_TIMEOUT = shutil.which("timeout")

SERVER_READY = re.compile(r"rgpu server listening on (\S+):(\d+) \((.*)\), server_id (\d+)")
SERVER_FINGERPRINT = re.compile(r"certificate fingerprint (sha256:[0-9A-F:]+)")
DAEMON_READY = re.compile(r"rgpu client daemon listening on (\S+)")

TRANSPORTS = ("quic", "tcp")

_ports_given: set[int] = set()


def free_port() -> int:
    """A port number free on 127.0.0.1 for TCP and UDP both (the server listens on both)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            if port in _ports_given:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
        _ports_given.add(port)
        return port
    raise RuntimeError("no port free for both TCP and UDP on 127.0.0.1")


def run_async(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run an in-process asyncio part of a test with a hard bound."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def cert_der(state_dir: Path) -> bytes:
    pem = (state_dir / "server-cert.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


# --- processes ------------------------------------------------------------------------------


class Proc:
    """A long-lived process whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path,
                 limit_s: float = PROCESS_LIMIT_S) -> None:
        self.name = name
        self.argv = list(argv)
        full = ([_TIMEOUT, "--foreground", "-k", "5", str(int(limit_s)), *argv] if _TIMEOUT
                else list(argv))
        self.popen = subprocess.Popen(
            full, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        with self._cond:
            return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.err)

    def describe(self) -> str:
        return (f"{self.name} ({' '.join(self.argv)}) rc={self.popen.poll()}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")

    def wait_for(self, pattern: re.Pattern[str] | str, *, stream: str = "out",
                 timeout: float = START_TIMEOUT_S, start: int = 0) -> re.Match[str]:
        """The first line (from index ``start``) of stdout/stderr that matches ``pattern``."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        sink = self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in sink[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {rx.pattern!r} from "
                                         f"{self.describe()}")
                if self.popen.poll() is not None and not any(t.is_alive()
                                                             for t in self._readers):
                    raise AssertionError(f"exited before printing {rx.pattern!r}: "
                                         f"{self.describe()}")
                self._cond.wait(min(left, 0.2))

    def wait_count(self, pattern: str, count: int, *, stream: str = "err",
                   timeout: float = 10.0) -> int:
        """Wait until ``count`` lines of stdout/stderr match ``pattern`` (the reader threads
        may still be behind what the process has written)."""
        rx = re.compile(pattern)
        sink = self.out if stream == "out" else self.err

        def seen() -> int:
            with self._cond:
                return sum(1 for line in sink if rx.search(line))

        try:
            return wait_until(lambda: seen() >= count and seen(), timeout,
                              f"{count} lines matching {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.describe()}") from None

    def signal(self, sig: int) -> None:
        """Signal the whole process group (the rgpu process and the `timeout` above it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def ask_to_stop(self) -> None:
        """SIGTERM the group leader only: `timeout --foreground` passes it on to rgpu once (a second
        SIGTERM could land after rgpu's asyncio loop has put back the default handler)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL the process group if anything is left after ``timeout``."""
        if self.popen.poll() is None:
            self.ask_to_stop()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            self.signal(signal.SIGKILL)  # what is left of the group, the leader included
            self.popen.wait(10)
        self._join()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL at once: the process gets no chance to say goodbye to its peers."""
        if self.popen.poll() is None:
            self.signal(signal.SIGKILL)
        self.popen.wait(10)
        self._join()

    def _join(self) -> None:
        for t in self._readers:
            t.join(5)


@dataclass
class ServerProc:
    proc: Proc
    port: int
    state_dir: Path
    token: str
    server_id: int
    fingerprint: str  # as printed: sha256:AB:CD:...
    listeners: str  # e.g. "quic/qh3, tcp+tls"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.removeprefix("sha256:").replace(":", "").lower()

    @property
    def channel_binding(self) -> bytes:
        return hashlib.sha256(cert_der(self.state_dir)).digest()


@dataclass
class DaemonProc:
    proc: Proc
    socket: Path
    known_servers: Path


@dataclass
class CliResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (f"$ rgpu {' '.join(self.argv)}\nrc={self.returncode}\n--- stdout ---\n"
                f"{self.stdout}\n--- stderr ---\n{self.stderr}")

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


class Rig:
    """Starts and finally stops the processes of one test (or one module), all in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []
        self.env = self._make_env(root)
        self._n = 0

    @staticmethod
    def _make_env(root: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RGPU_")}
        dirs = {"HOME": "home", "XDG_RUNTIME_DIR": "run", "XDG_CONFIG_HOME": "config",
                "XDG_STATE_HOME": "state"}
        for var, sub in dirs.items():
            path = root / sub
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            env[var] = str(path)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def path(self, name: str) -> Path:
        self._n += 1
        return self.root / f"{name}-{self._n}"

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, [*RGPU, *args], {**self.env, **(env or {})}, self.root)
        self.procs.append(proc)
        return proc

    def server(self, *, token: str | None, port: int | None = None, transport: str = "both",
               state_dir: Path | None = None, server_id: int | None = None,
               auth_failure_delay: float = 0.0, args: Sequence[str] = (),
               env: dict[str, str] | None = None) -> ServerProc:
        """Start `rgpu server` on 127.0.0.1 and wait for its "listening" line."""
        return self.servers([dict(token=token, port=port, transport=transport,
                                  state_dir=state_dir, server_id=server_id,
                                  auth_failure_delay=auth_failure_delay, args=args,
                                  env=env)])[0]

    def servers(self, specs: Sequence[dict[str, Any]]) -> list[ServerProc]:
        """Start several servers at once (each spec: the keyword arguments of server())."""
        started = []
        for spec in specs:
            port = spec.get("port") or free_port()
            state_dir = spec.get("state_dir") or self.path("server-state")
            argv = ["server", "--bind", HOST, "--port", str(port),
                    "--transport", spec.get("transport", "both"),
                    "--state-dir", str(state_dir), "--cuda", "none",
                    "--auth-failure-delay", str(spec.get("auth_failure_delay", 0.0))]
            if spec.get("token"):
                argv += ["--token", spec["token"]]
            if spec.get("server_id") is not None:
                argv += ["--server-id", str(spec["server_id"])]
            proc = self.spawn("server", [*argv, *spec.get("args", ())], spec.get("env"))
            started.append((proc, port, state_dir, spec.get("token") or ""))
        out = []
        for proc, port, state_dir, token in started:
            ready = proc.wait_for(SERVER_READY)
            fp = proc.wait_for(SERVER_FINGERPRINT)
            assert int(ready.group(2)) == port, proc.describe()
            out.append(ServerProc(proc, port, state_dir, token, int(ready.group(4)),
                                  fp.group(1), ready.group(3)))
        return out

    def daemon(self, servers: Sequence[str], *, token: str, transport: str,
               args: Sequence[str] = (), env: dict[str, str] | None = None,
               wait_connected: bool = True, expect: int | None = None) -> DaemonProc:
        """Start `rgpu client` for ``servers`` (and those of a ``--config`` in ``args``); wait
        for its "listening" line and, unless told not to, for ``expect`` servers connected."""
        sock = self.path("daemon") / "rgpu.sock"
        known = self.path("known") / "known_servers"
        argv = ["client", "--transport", transport, "--token", token, "--socket", str(sock),
                "--known-servers", str(known), "--no-local-gpus", "--reconnect-max-delay", "1"]
        for address in servers:
            argv += ["--server", address]
        proc = self.spawn("daemon", [*argv, *args], env)
        m = proc.wait_for(DAEMON_READY)
        assert m.group(1) == str(sock), proc.describe()
        daemon = DaemonProc(proc, sock, known)
        expect = len(servers) if expect is None else expect
        if wait_connected and expect:
            wait_daemon(daemon, lambda st: len(st["servers"]) == expect and all(
                s["state"] == "connected" for s in st["servers"]), "every server connected")
        return daemon

    def cli(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT_S) -> CliResult:
        """Run one `rgpu` command to completion (its process group is killed on timeout)."""
        t0 = time.monotonic()
        p = subprocess.Popen([*RGPU, *args], env={**self.env, **(env or {})}, cwd=self.root,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate(timeout=10)
            raise AssertionError(f"rgpu {' '.join(args)} ran past {timeout:g} s\n{out}\n"
                                 f"{err}") from None
        return CliResult(list(args), p.returncode, out, err, time.monotonic() - t0)

    def close(self) -> None:
        """SIGTERM every process at once, then wait (and SIGKILL what lingers)."""
        for proc in self.procs:
            proc.ask_to_stop()
        for proc in reversed(self.procs):
            proc.terminate(timeout=5)
        self.procs.clear()


# --- talking to the daemon and servers in-process ------------------------------------------


async def daemon_request_async(sock: Path, body: dict[str, Any], timeout: float = 10.0) -> Any:
    from rgpu.net import connect_local
    from rgpu.wire import MessageKind

    peer = await connect_local(sock, name="integration test")
    try:
        reply = await peer.request(MessageKind.CONTROL, body, timeout=timeout)
    finally:
        peer.close("bye", "done")
    return reply.body


def daemon_status(daemon: DaemonProc) -> dict[str, Any]:
    result: dict[str, Any] = run_async(daemon_request_async(daemon.socket, {"op": "status"}),
                                       timeout=15)
    return result


def wait_daemon(daemon: DaemonProc, predicate: Callable[[dict[str, Any]], bool], what: str,
                timeout: float = 15.0) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> bool:
        nonlocal last
        last = daemon_status(daemon)
        return predicate(last)

    try:
        wait_until(check, timeout, what, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {last}\n{daemon.proc.describe()}") from None
    return last


async def server_info_async(server: ServerProc, transport: str) -> dict[str, Any]:
    """CONTROL info straight from a server (pinned fingerprint, its own connection)."""
    from rgpu.net import connect_server
    from rgpu.wire import MessageKind

    peer = await connect_server(HOST, server.port, token=server.token, transport=transport,
                                fingerprint=server.fingerprint, name="integration test")
    try:
        reply = await peer.request(MessageKind.CONTROL, {"op": "info"}, timeout=10)
    finally:
        peer.close("bye", "done")
    result: dict[str, Any] = reply.body
    return result


def server_info(server: ServerProc, transport: str = "tcp") -> dict[str, Any]:
    return run_async(server_info_async(server, transport), timeout=20)


def assert_one_line_error(result: CliResult, *needles: str, rc: int | None = None) -> str:
    """A failing command printed exactly one line, ``rgpu: error: ...``, and no traceback."""
    assert result.returncode != 0, str(result)
    if rc is not None:
        assert result.returncode == rc, str(result)
    assert "Traceback" not in result.stderr + result.stdout, str(result)
    lines = result.stderr_lines
    assert len(lines) == 1, f"expected one stderr line\n{result}"
    line = lines[0]
    assert line.startswith("rgpu: error: "), str(result)
    for needle in needles:
        assert needle in line, f"{needle!r} missing\n{result}"
    return line


class App:
    """An application's connection to the daemon, as a shim would hold it (in-process)."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer

    async def control(self, body: dict[str, Any], timeout: float = 30.0) -> Any:
        from rgpu.wire import MessageKind

        reply = await self.peer.request(MessageKind.CONTROL, body, timeout=timeout)
        return reply.body

    async def open_session(self, gpu: int) -> int:
        reply = await self.control({"op": "open_session", "gpu": gpu})
        self.last_open = reply
        return int(reply["session"])

    async def call_frame(self, session: int, fn: str, args: list[Any], *, bulk: bytes = b"",
                         timeout: float = 30.0) -> Any:
        from rgpu.wire import MessageKind

        return await self.peer.request(MessageKind.CALL, [fn, args], session=session,
                                       bulk=bulk, timeout=timeout)

    async def call(self, session: int, fn: str, args: list[Any], *, bulk: bytes = b"",
                   timeout: float = 30.0) -> Any:
        frame = await self.call_frame(session, fn, args, bulk=bulk, timeout=timeout)
        return bytes(frame.bulk) if frame.bulk else frame.body

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.peer.close("bye", "app exits")


@contextlib.asynccontextmanager
async def open_app(sock: Path, name: str = "test app") -> AsyncIterator[App]:
    from rgpu.net import connect_local

    app = App(await connect_local(sock, name=name))
    try:
        yield app
    finally:
        app.close()
