"""Application sessions through a real daemon to real servers, over QUIC and TCP+TLS.

The applications are in-process connections to the daemon's Unix socket, as a shim holds
them; the daemon and the servers are real processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import time
from typing import Any

import pytest

from rgpu.errors import RemoteError
from rgpu.wire.auth import generate_token

from .procs import (
    Rig,
    ServerProc,
    open_app,
    run_async,
    server_info_async,
    wait_daemon,
)

pytestmark = pytest.mark.timeout(120)


async def _sessions(server: ServerProc) -> int:
    return int((await server_info_async(server, "tcp"))["sessions"])


async def _wait_sessions(server: ServerProc, want: int, timeout: float = 10.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        n = await _sessions(server)
        if n == want or loop.time() > deadline:
            return n
        await asyncio.sleep(0.1)


def _closed_line(server: ServerProc, session: int) -> str:
    m = server.proc.wait_for(rf"session {session} \(.*\) closed after \d+ calls", stream="err",
                             timeout=10)
    return m.group(0)


def test_sessions_open_on_the_owning_server_route_by_session_and_end_with_the_app(
        rig: Rig, transport: str) -> None:
    token = generate_token()
    a, b = rig.servers([dict(token=token, server_id=11), dict(token=token, server_id=22)])
    daemon = rig.daemon([a.address, b.address], token=token, transport=transport)

    async def main() -> dict[str, Any]:
        facts: dict[str, Any] = {}
        async with open_app(daemon.socket, "app one") as one, \
                open_app(daemon.socket, "app two") as two:
            one_b = await one.open_session(1)  # pool GPU 1 is server b's GPU 0
            assert one.last_open["server_id"] == 22, one.last_open
            assert one.last_open["gpu"] == 1
            assert await one.open_session(1) == one_b, "a second session on the same server"
            on_b = await one.call(one_b, "rgpu.session", [])
            assert on_b["gpu"] == 0, on_b
            facts["one_b"] = on_b["session"]
            assert (await _sessions(a), await _sessions(b)) == (0, 1)

            two_a = await two.open_session(0)
            assert two.last_open["server_id"] == 11
            one_a = await one.open_session(0)
            assert one_a != one_b
            assert (await _sessions(a), await _sessions(b)) == (2, 1)
            facts["two_a"] = (await two.call(two_a, "rgpu.session", []))["session"]
            facts["one_a"] = (await one.call(one_a, "rgpu.session", []))["session"]
            assert facts["one_a"] != facts["two_a"]

            # Interleaved calls come back to the session (and app) that made them.
            calls = []
            for i in range(10):
                calls.append(one.call(one_a, "rgpu.echo", ["one", i]))
                calls.append(two.call(two_a, "rgpu.echo", ["two", i]))
                calls.append(one.call(one_b, "rgpu.session", []))
            results = await asyncio.gather(*calls)
            for i in range(10):
                assert results[3 * i] == ["one", i]
                assert results[3 * i + 1] == ["two", i]
                assert results[3 * i + 2]["session"] == facts["one_b"]

            # One session's slow call does not hold up another session's calls.
            slow = asyncio.ensure_future(one.call(one_a, "rgpu.sleep", [2.0]))
            await asyncio.sleep(0.1)
            assert await two.call(two_a, "rgpu.echo", ["quick"]) == ["quick"]
            assert not slow.done(), "a call waited behind another session's slow call"
            assert await slow is None

            # Closing the app's session by request ends it on the server.
            await two.control({"op": "close_session", "session": two_a})
            facts["after_close"] = await _wait_sessions(a, 1)
            with pytest.raises(RemoteError) as gone:
                await two.call(two_a, "rgpu.echo", [])
            facts["gone_code"] = gone.value.code
        # Both apps disconnected: every session they had ends on its server.
        facts["a_left"] = await _wait_sessions(a, 0)
        facts["b_left"] = await _wait_sessions(b, 0)
        return facts

    facts = run_async(main())
    assert facts["after_close"] == 1
    assert facts["gone_code"] == "unknown_session"
    assert (facts["a_left"], facts["b_left"]) == (0, 0), facts
    _closed_line(a, facts["two_a"])
    _closed_line(a, facts["one_a"])
    _closed_line(b, facts["one_b"])
    st = wait_daemon(daemon, lambda st: st["apps"] == 1, "the apps to be forgotten")
    assert st["sessions"] == 0, st
    assert "Traceback" not in daemon.proc.stderr + a.proc.stderr + b.proc.stderr


def test_bulk_echo_of_20_mib_through_the_daemon(rig: Rig, transport: str) -> None:
    token = generate_token()
    server = rig.server(token=token)
    daemon = rig.daemon([server.address], token=token, transport=transport)
    payload = os.urandom((20 << 20) + 4099)  # not a multiple of the 8 MiB chunk

    async def main() -> tuple[bytes, float, Any]:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            t0 = time.monotonic()
            echoed = await app.call(sid, "rgpu.echo", [], bulk=payload, timeout=60)
            took = time.monotonic() - t0
            small = await app.call(sid, "rgpu.echo", ["still in sync"])
            return echoed, took, small

    echoed, took, small = run_async(main(), timeout=90)
    assert isinstance(echoed, bytes)
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert small == ["still in sync"]
    assert took < 60


def _server_lost_param(transport: str, how: str) -> Any:
    marks: list[Any] = []
    return pytest.param(transport, how, marks=marks, id=f"{transport}-{how}")


@pytest.mark.parametrize(("transport", "how"), [
    _server_lost_param(t, h) for t in ("quic", "tcp") for h in ("kill", "terminate")])
def test_server_killed_app_gets_server_lost(rig: Rig, transport: str, how: str) -> None:
    token = generate_token()
    doomed, spare = rig.servers([dict(token=token, server_id=5), dict(token=token, server_id=6)])
    daemon = rig.daemon([doomed.address, spare.address], token=token, transport=transport)

    async def main() -> tuple[str, float, Any, Any]:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            assert app.last_open["server_id"] == 5
            assert await app.call(sid, "rgpu.echo", ["before"]) == ["before"]
            if how == "kill":
                await asyncio.to_thread(doomed.proc.kill)
            else:
                await asyncio.to_thread(doomed.proc.terminate)
            t0 = time.monotonic()
            try:
                await app.call(sid, "rgpu.echo", ["after"], timeout=6)
            except RemoteError as exc:
                code = exc.code
            else:
                code = "answered"
            took = time.monotonic() - t0
            # The daemon keeps serving this app: the pool is the spare server now.
            status = await app.control({"op": "status"})
            spare_sid = await app.open_session(0)
            echoed = await app.call(spare_sid, "rgpu.echo", ["spare"])
            return code, took, status, echoed

    code, took, status, echoed = run_async(main())
    assert code == "server_lost", code
    assert took < 5, f"server_lost took {took:.1f} s"
    assert echoed == ["spare"]
    assert [g["server_id"] for g in status["gpus"]] == [6], status
    lost = next(s for s in status["servers"] if s["address"] == doomed.address)
    assert lost["state"] != "connected" and lost["error"], lost
    text = rig.cli("status", "--socket", str(daemon.socket))
    assert text.returncode == 0, str(text)
    assert re.search(rf"{re.escape(doomed.address)} \[{transport}\] (backoff|connecting)",
                     text.stdout), text
    assert "Traceback" not in daemon.proc.stderr, daemon.proc.describe()


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_daemon_exit_ends_its_sessions_on_the_server(rig: Rig, how: str) -> None:
    """The other end: when the daemon goes, the server ends the sessions it held (TCP+TLS;
    over QUIC a vanished daemon is only noticed at the 60 s idle timeout)."""
    token = generate_token()
    server = rig.server(token=token)
    daemon = rig.daemon([server.address], token=token, transport="tcp")
    opened: list[int] = []

    async def hold() -> None:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            opened.append((await app.call(sid, "rgpu.session", []))["session"])
            assert await _sessions(server) == 1
            if how == "kill":
                await asyncio.to_thread(daemon.proc.kill)
            else:
                await asyncio.to_thread(daemon.proc.terminate)

    run_async(hold())
    assert run_async(_wait_sessions(server, 0)) == 0
    _closed_line(server, opened[0])


def test_a_coalesced_batch_runs_its_calls_in_order_and_reports_each_failure(
        rig: Rig, transport: str) -> None:
    """A BATCH body ``[[function, [args]], ...]`` (as the CUDA shim sends launches and memsets
    queued back to back) runs every call in order on the session's worker; each failing call,
    and each malformed element, gets its own deferred ERROR naming it, and the calls after a
    failure still run."""
    from rgpu.wire import MessageKind

    token = generate_token()
    server = rig.server(token=token, args=("--cuda", "emu"))
    daemon = rig.daemon([server.address], token=token, transport=transport)

    async def main() -> tuple[bytes, list[dict[str, Any]]]:
        async with open_app(daemon.socket) as app:
            errors: list[dict[str, Any]] = []
            app.peer.on_message = lambda _p, f, _s: (
                errors.append(f.body) if f.kind is MessageKind.ERROR else None)
            sid = await app.open_session(0)
            await app.call(sid, "cuDevicePrimaryCtxRetain", [7, 0])
            await app.call(sid, "cuCtxSetCurrent", [7])
            dptr = await app.call(sid, "cuMemAlloc_v2", [16])
            app.peer.send(MessageKind.BATCH, [
                ["cuMemsetD8_v2", [dptr, 1, 16]],
                ["cuNoSuchCall", []],
                5,
                ["cuMemsetD8_v2", [dptr + 4, 2, 4]],
                ["cuMemsetD8_v2", [dptr + 12, 3, 2]],
            ], session=sid)
            data = await app.call(sid, "cuMemcpyDtoH_v2", [dptr, 16])
            return data, errors

    data, errors = run_async(main(), timeout=60)
    assert data == bytes([1] * 4 + [2] * 4 + [1] * 4 + [3] * 2 + [1] * 2), (data, errors)
    assert sorted((e.get("fn"), e.get("code")) for e in errors) == [
        ("?", "bad_call"), ("cuNoSuchCall", "unsupported")], errors
    assert all(e.get("deferred") for e in errors), errors


def test_calls_answered_on_the_event_loop_keep_their_order(rig: Rig, transport: str) -> None:
    """The server answers cheap queries (cuCtxSynchronize, cuMemGetInfo_v2, ...) without a
    hand-off to the session's worker, but only while that worker is idle: a synchronize sent
    behind queued work still returns after it, and sees its effects."""
    from rgpu.wire import MessageKind

    token = generate_token()
    server = rig.server(token=token, args=("--cuda", "emu"))
    daemon = rig.daemon([server.address], token=token, transport=transport)

    async def main() -> tuple[float, float, bytes, list[int]]:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            await app.call(sid, "cuDevicePrimaryCtxRetain", [7, 0])
            await app.call(sid, "cuCtxSetCurrent", [7])
            dptr = await app.call(sid, "cuMemAlloc_v2", [16])
            free, total = await app.call(sid, "cuMemGetInfo_v2", [])  # idle: on the loop
            t0 = time.monotonic()
            app.peer.send(MessageKind.BATCH, [["rgpu.sleep", [0.5]],
                                              ["cuMemsetD8_v2", [dptr, 9, 16]]], session=sid)
            assert await app.call(sid, "cuCtxSynchronize", []) is None
            behind = time.monotonic() - t0
            t1 = time.monotonic()
            for _ in range(20):
                await app.call(sid, "cuCtxSynchronize", [])
            idle = (time.monotonic() - t1) / 20
            data = await app.call(sid, "cuMemcpyDtoH_v2", [dptr, 16])
            return behind, idle, data, [free, total]

    behind, idle, data, info = run_async(main(), timeout=60)
    assert behind >= 0.5, f"cuCtxSynchronize overtook the work queued before it ({behind:.3f} s)"
    assert idle < 0.5
    assert data == bytes([9] * 16)
    assert 0 < info[0] <= info[1], info


def test_a_killed_server_is_noticed_at_once(rig: Rig, transport: str) -> None:
    """SIGKILL the server under a call in flight: the call fails with server_lost within a
    second or two, over TCP (reset) and QUIC (the connected socket's port unreachable), not
    after a ping timeout."""
    token = generate_token()
    server = rig.server(token=token)
    daemon = rig.daemon([server.address], token=token, transport=transport)

    async def main() -> tuple[str, float]:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            slow = asyncio.ensure_future(app.call(sid, "rgpu.sleep", [20.0], timeout=30))
            await asyncio.sleep(0.3)
            server.proc.signal(signal.SIGKILL)
            t0 = time.monotonic()
            with pytest.raises(RemoteError) as info:
                await slow
            return info.value.code, time.monotonic() - t0

    code, took = run_async(main(), timeout=60)
    assert code == "server_lost"
    assert took < 3.0, f"noticed after {took:.1f} s"


def test_a_hung_server_is_dropped_after_the_probe(rig: Rig) -> None:
    """A server that stops answering (SIGSTOP) with a call outstanding: the daemon pings it
    after a second of silence and drops the link once the ping has gone unanswered for the
    probe timeout, failing the call with server_lost instead of hanging."""
    from rgpu.client.daemon import PROBE_TIMEOUT, STALL_PROBE

    token = generate_token()
    server = rig.server(token=token)
    daemon = rig.daemon([server.address], token=token, transport="tcp")

    async def main() -> tuple[str, float]:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            assert await app.call(sid, "rgpu.echo", [1]) == [1]
            server.proc.signal(signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with pytest.raises(RemoteError) as info:
                    await app.call(sid, "rgpu.echo", [2], timeout=60)
                return info.value.code, time.monotonic() - t0
            finally:
                server.proc.signal(signal.SIGCONT)

    code, took = run_async(main(), timeout=90)
    assert code == "server_lost"
    assert PROBE_TIMEOUT <= took < STALL_PROBE + PROBE_TIMEOUT + 5, took


def test_max_memory_counts_cuda_arrays(rig: Rig, transport: str) -> None:
    """A token's max_memory holds device memory and CUDA arrays together: an array that would
    pass the limit is refused (CUDA_ERROR_OUT_OF_MEMORY), and destroying one gives its bytes
    back."""
    token = generate_token()
    config = rig.path("quota.toml")
    config.write_text(f'[[security.tokens]]\ntoken = "{token}"\nname = "small"\n'
                      'max_memory = "64MiB"\n')
    config.chmod(0o600)
    server = rig.server(token=None, args=("--cuda", "emu", "--config", str(config)))
    daemon = rig.daemon([server.address], token=token, transport=transport)
    mib32 = {"Width": 4096, "Height": 2048, "Depth": 0, "Format": 0x20, "NumChannels": 1,
             "Flags": 0}  # 32 MiB of float

    async def main() -> list[Any]:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            await app.call(sid, "cuDevicePrimaryCtxRetain", [7, 0])
            await app.call(sid, "cuCtxSetCurrent", [7])
            seen: list[Any] = []
            dptr = await app.call(sid, "cuMemAlloc_v2", [40 << 20])
            with pytest.raises(RemoteError) as over:
                await app.call(sid, "cuArray3DCreate_v2", [101, mib32])
            seen.append((over.value.code, over.value.body.get("cuda")))
            await app.call(sid, "cuMemFree_v2", [dptr])
            await app.call(sid, "cuArray3DCreate_v2", [101, mib32])
            with pytest.raises(RemoteError) as over:
                await app.call(sid, "cuMemAlloc_v2", [40 << 20])
            seen.append((over.value.code, over.value.body.get("cuda")))
            await app.call(sid, "cuArrayDestroy", [101])
            dptr = await app.call(sid, "cuMemAlloc_v2", [40 << 20])
            seen.append(dptr != 0)
            return seen

    assert run_async(main(), timeout=60) == [("quota", 2), ("quota", 2), True]


def test_queries_are_not_ready_while_the_work_runs(rig: Rig, transport: str) -> None:
    """While the session's worker is still running earlier work (a long kernel, here a
    sleep), cuStreamQuery and the query of an event whose record is queued behind it answer
    CUDA_ERROR_NOT_READY at once, as a busy GPU does; a never-recorded event is complete; once
    the work is done the recorded event is too."""
    from rgpu.wire import MessageKind

    token = generate_token()
    server = rig.server(token=token, args=("--cuda", "emu"))
    daemon = rig.daemon([server.address], token=token, transport=transport)

    async def main() -> dict[str, Any]:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            await app.call(sid, "cuDevicePrimaryCtxRetain", [7, 0])
            await app.call(sid, "cuCtxSetCurrent", [7])
            await app.call(sid, "cuEventCreate", [31, 0])
            await app.call(sid, "cuEventCreate", [32, 0])
            seen: dict[str, Any] = {}
            t0 = time.monotonic()
            app.peer.send(MessageKind.BATCH, [["rgpu.sleep", [1.0]],
                                              ["cuEventRecord", [31, 0]]], session=sid)
            for name, fn, args in (("event", "cuEventQuery", [31]),
                                   ("stream", "cuStreamQuery", [0])):
                with pytest.raises(RemoteError) as busy:
                    await app.call(sid, fn, args)
                seen[name] = (busy.value.body.get("cuda"), time.monotonic() - t0)
            seen["unrecorded"] = await app.call(sid, "cuEventQuery", [32])
            await app.call(sid, "cuCtxSynchronize", [])
            seen["after"] = await app.call(sid, "cuEventQuery", [31])
            return seen

    seen = run_async(main(), timeout=60)
    assert seen["event"][0] == 600 and seen["event"][1] < 0.8, seen
    assert seen["stream"][0] == 600 and seen["stream"][1] < 0.8, seen
    assert seen["unrecorded"] is None and seen["after"] is None, seen
