"""End to end: a real `rgpu server --transport tcp` process, a Python client sending CALLs.

The client speaks the wire API the ICD will speak (docs/VULKAN_ENCODING.md): vector add of two
1M-float arrays with a shader compiled at test time, inputs and result moved as bulk segments,
then the session is closed and the server reports that nothing of it is left alive.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vkapp import vector_add

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
READY = re.compile(r"rgpu server listening on \S+:(\d+) ")
FINGERPRINT = re.compile(r"certificate fingerprint (sha256:[0-9A-F:]+)")


@dataclass
class Server:
    popen: subprocess.Popen[str]
    port: int
    token: str
    fingerprint: str
    lines: list[str]

    def wait_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; server said:\n" +
                             "\n".join(self.lines))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, vk_backend: Any) -> Iterator[Server]:
    token = secrets.token_hex(32)
    port = _free_port()
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent.parent),
                                                       os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, str(HERE / "serve_vulkan.py"), "server", "--bind", HOST,
            "--port", str(port), "--transport", "tcp", "--state-dir", str(tmp_path / "state"),
            "--token", token, "--cuda", "none", "--log-level", "info"]
    popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    srv = Server(popen, port, token, "", lines)
    try:
        srv.wait_line(READY.pattern)
        srv.fingerprint = srv.wait_line(FINGERPRINT.pattern).group(1)
        yield srv
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(10)
        reader.join(5)


class WireClient:
    """A synchronous face over an asyncio connection running in its own thread."""

    def __init__(self, server: Server) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.peer = self._run(self._connect(server))
        self.session = 0
        self.calls = 0

    def _run(self, coro: Any, timeout: float = 60.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    async def _connect(self, server: Server) -> Any:
        from rgpu.net import connect_server

        return await connect_server(HOST, server.port, token=server.token, transport="tcp",
                                    fingerprint=server.fingerprint, name="vulkan e2e test")

    def control(self, body: dict[str, Any]) -> Any:
        from rgpu.wire import MessageKind

        return self._run(self.peer.request(MessageKind.CONTROL, body, timeout=30)).body

    def call(self, fn: str, args: list[Any]) -> Any:
        from rgpu.wire import MessageKind

        self.calls += 1
        body: list[Any] = [fn, args]
        bulk = b""
        if fn == "vkRgpuWriteMemory":  # the data travels raw, after the body
            body, bulk = [fn, args[:2], 2], args[2]
        frame = self._run(self.peer.request(MessageKind.CALL, body, session=self.session,
                                            bulk=bulk, timeout=60))
        if frame.body is None and frame.bulk:
            return bytes(frame.bulk)
        return frame.body

    def batch(self, fn: str, args: list[Any]) -> None:
        """Fire and forget: no reply; a failure comes back later as an unsolicited ERROR."""
        from rgpu.wire import MessageKind

        async def send() -> None:
            self.peer.send(MessageKind.BATCH, [fn, args], session=self.session)

        self._run(send())

    def close(self) -> None:
        self.peer.close("bye", "test done")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_vector_add_over_tcp(server: Server, add_spirv: bytes) -> None:
    from rgpu.errors import RemoteError

    client = WireClient(server)
    try:
        client.session = client.control({"op": "open_session", "name": "vk e2e"})["session"]
        result = vector_add(client.call, add_spirv, n=1 << 20)
        np.testing.assert_array_equal(result.c, result.expected)
        assert result.facts["physical_devices"], result.facts

        # errors cross the wire with their VkResult
        with pytest.raises(RemoteError) as err:
            client.call("vkGetBufferMemoryRequirements",
                        [result.handles["device"], 0xBAD, None])
        assert err.value.code == "invalid_handle" and err.value.body["vk"] == -13

        # fire-and-forget calls: a success is silent, a failure arrives later, deferred
        unsolicited: list[Any] = []
        client.peer.on_message = lambda _peer, frame, _stream: unsolicited.append(frame)
        client.batch("vkDestroyFence", [result.handles["device"], result.handles["fence"], None])
        client.batch("vkDestroyBuffer", [result.handles["device"], 0xBAD, None])
        assert client.call("vkDeviceWaitIdle", [result.handles["device"]]) == [0]
        deadline = time.monotonic() + 10
        while not unsolicited and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(unsolicited) == 1, unsolicited
        body = unsolicited[0].body
        assert body["deferred"] and body["fn"] == "vkDestroyBuffer" and body["vk"] == -13, body
        with pytest.raises(RemoteError, match="does not exist"):  # the batched destroy ran
            client.call("vkGetFenceStatus", [result.handles["device"], result.handles["fence"]])

        # a second session of the same client cannot name the first one's handles
        first = client.session
        client.session = client.control({"op": "open_session", "name": "other"})["session"]
        with pytest.raises(RemoteError, match="does not exist in this session"):
            client.call("vkDeviceWaitIdle", [result.handles["device"]])
        client.control({"op": "close_session", "session": client.session})

        assert client.control({"op": "close_session", "session": first}) == {"closed": first}
        m = server.wait_line(rf"session {first} .*Vulkan session closed after \d+ calls; "
                             r"destroyed (\d+) objects, (\d+) live")
        assert int(m.group(1)) >= 14 and int(m.group(2)) == 0, m.group(0)
    finally:
        client.close()
