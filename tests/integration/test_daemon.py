"""`rgpu client` (the daemon) pooling real servers, and the CLI commands that manage it."""

from __future__ import annotations

import json
import re

import pytest

from rgpu.wire.auth import generate_token

from .procs import (
    Rig,
    assert_one_line_error,
    daemon_request_async,
    daemon_status,
    free_port,
    open_app,
    run_async,
    wait_daemon,
)

pytestmark = pytest.mark.timeout(120)


def _servers(st: dict) -> list[tuple[str, str, int | None]]:
    return [(s["address"], s["state"], s["server_id"]) for s in st["servers"]]


def _gpus(st: dict) -> list[tuple[int, str, int]]:
    return [(g["index"], g["server"], g["server_id"]) for g in st["gpus"]]


def test_daemon_pools_two_servers_in_configured_order(rig: Rig, transport: str) -> None:
    token = generate_token()
    low, high = sorted(free_port() for _ in range(2))
    first, second = rig.servers([dict(token=token, server_id=101, port=low),
                                 dict(token=token, server_id=202, port=high)])
    # The configured order (a config file, each entry pinning its server's certificate) is
    # neither start order, nor port order, nor server_id order.
    config = rig.root / "pool.toml"
    config.write_text("[client]\ninclude_local_gpus = false\n" + "".join(
        f'\n[[client.servers]]\naddress = "{srv.address}"\ntoken = "{token}"\n'
        f'transport = "{transport}"\nfingerprint = "{srv.fingerprint}"\n'
        for srv in (second, first)))
    daemon = rig.daemon([], token=generate_token(), transport="tcp",
                        args=["--config", str(config)], expect=2)
    st = daemon_status(daemon)
    assert _servers(st) == [(second.address, "connected", 202),
                            (first.address, "connected", 101)], st
    assert _gpus(st) == [(0, second.address, 202), (1, first.address, 101)], st
    assert all("llvmpipe" in g["name"] for g in st["gpus"]), st["gpus"]

    assert "Traceback" not in daemon.proc.stderr
    if transport == "quic":
        return  # the CLI's rendering does not depend on the transport: checked once, below
    text = rig.cli("status", "--socket", str(daemon.socket))
    assert text.returncode == 0, str(text)
    lines = text.stdout.splitlines()
    assert lines[0].startswith("rgpu daemon: 2 server(s), 2 GPU(s), ordering LocalFirst"), text
    assert lines[1] == "Servers:"
    assert lines[2] == f"  {second.address} [{transport}] connected server_id 202", text
    assert lines[3] == f"  {first.address} [{transport}] connected server_id 101", text
    assert lines[4] == "GPUs:"
    assert re.match(rf"  GPU 0: llvmpipe.* \(remote {re.escape(second.address)}, VRAM", lines[5])
    assert re.match(rf"  GPU 1: llvmpipe.* \(remote {re.escape(first.address)}, VRAM", lines[6])

    as_json = rig.cli("status", "--socket", str(daemon.socket), "--json")
    assert as_json.returncode == 0, str(as_json)
    assert _gpus(json.loads(as_json.stdout)) == _gpus(st)


def test_daemon_refuses_a_second_server_with_the_same_server_id(rig: Rig) -> None:
    token = generate_token()
    a, b = rig.servers([dict(token=token, server_id=303), dict(token=token, server_id=303)])
    daemon = rig.daemon([a.address, b.address], token=token, transport="tcp",
                        wait_connected=False)
    st = wait_daemon(daemon, lambda st: any(s["error"] for s in st["servers"])
                     and any(s["state"] == "connected" for s in st["servers"]),
                     "one server connected and the other refused")
    states = {s["address"]: s for s in st["servers"]}
    connected = [k for k, s in states.items() if s["state"] == "connected"]
    assert len(connected) == 1, st
    refused = states[b.address if connected == [a.address] else a.address]
    assert "server_id 303" in refused["error"] and "distinct" in refused["error"], refused
    assert len(st["gpus"]) == 1, st


def test_add_and_remove_servers_at_runtime(rig: Rig, transport: str) -> None:
    token = generate_token()
    a, b = rig.servers([dict(token=token, server_id=1), dict(token=token, server_id=2)])
    daemon = rig.daemon([a.address], token=token, transport=transport)
    sock = ["--socket", str(daemon.socket)]

    added = rig.cli("add-server", b.address, "-t", token, "--transport", transport, *sock)
    assert added.returncode == 0, str(added)
    assert added.stdout.strip() == f"added {b.address}"
    st = wait_daemon(daemon, lambda st: len(st["gpus"]) == 2, "the added server's GPU")
    assert _servers(st) == [(a.address, "connected", 1), (b.address, "connected", 2)], st
    assert _gpus(st) == [(0, a.address, 1), (1, b.address, 2)], st

    twice = rig.cli("add-server", b.address, "-t", token, "--transport", transport, *sock)
    assert_one_line_error(twice, b.address, "already in the pool")

    removed = rig.cli("remove-server", a.address, *sock)
    assert removed.returncode == 0, str(removed)
    assert removed.stdout.strip() == f"removed {a.address}"
    st = daemon_status(daemon)
    assert _servers(st) == [(b.address, "connected", 2)], st
    assert _gpus(st) == [(0, b.address, 2)], st
    a.proc.wait_for(r"client \S* ?disconnected", stream="err")

    unknown = rig.cli("remove-server", a.address, *sock)
    assert_one_line_error(unknown, a.address, "not in the pool", "rgpu status")
    assert "Traceback" not in daemon.proc.stderr


# A killed QUIC server is noticed by keepalive only (~25 s): test_server_killed_app_gets_
# server_lost[quic-kill] shows that case.
@pytest.mark.parametrize(("transport", "how"), [
    ("quic", "terminate"), ("tcp", "terminate"), ("tcp", "kill")])
def test_daemon_reconnects_after_its_server_restarts(rig: Rig, transport: str, how: str) -> None:
    token = generate_token()
    server = rig.server(token=token, server_id=77)
    daemon = rig.daemon([server.address], token=token, transport=transport)
    assert daemon_status(daemon)["servers"][0]["connects"] == 1

    if how == "kill":
        server.proc.kill()
    else:
        server.proc.terminate()
    st = wait_daemon(daemon, lambda st: st["servers"][0]["state"] != "connected",
                     "the daemon to notice the server is gone")
    assert st["gpus"] == [], st
    assert st["servers"][0]["error"], st

    rig.server(token=token, port=server.port, state_dir=server.state_dir, server_id=77)
    st = wait_daemon(daemon, lambda st: st["servers"][0]["state"] == "connected", "reconnect",
                     timeout=20)
    assert st["servers"][0]["connects"] == 2, st
    assert _gpus(st) == [(0, server.address, 77)], st

    async def use() -> object:
        async with open_app(daemon.socket) as app:
            sid = await app.open_session(0)
            return await app.call(sid, "rgpu.echo", ["after restart"])

    assert run_async(use()) == ["after restart"]


@pytest.mark.parametrize("transport", [
    "quic",
    "tcp",
])
def test_daemon_stops_cleanly_after_its_server_left(rig: Rig, transport: str) -> None:
    token = generate_token()
    server = rig.server(token=token)
    daemon = rig.daemon([server.address], token=token, transport=transport)
    server.proc.terminate()
    rc = daemon.proc.terminate()
    assert rc == 0, daemon.proc.describe()
    assert "rgpu: error" not in daemon.proc.stderr, daemon.proc.describe()
    assert "Traceback" not in daemon.proc.stderr, daemon.proc.describe()


def test_daemon_socket_in_use_is_a_one_line_error(rig: Rig) -> None:
    token = generate_token()
    daemon = rig.daemon([], token=token, transport="tcp")
    second = rig.cli("client", "--socket", str(daemon.socket), "--no-local-gpus",
                     "--log-level", "warn")
    assert_one_line_error(second, "already listening", str(daemon.socket))


_SHOW_ENV = ("import os, sys; print(' '.join(os.environ.get(k, '-') for k in ('RGPU_SOCKET', "
             "'LD_PRELOAD', 'LD_LIBRARY_PATH', 'VK_ICD_FILENAMES'))); sys.exit(3)")


def test_run_uses_the_running_daemon_and_keeps_the_exit_status(rig: Rig) -> None:
    """`rgpu run -- CMD` finds the daemon on its socket and execs CMD with the shims' variables
    (the exit status is CMD's); `rgpu env` prints the same variables as exports."""
    import sys

    token = generate_token()
    server = rig.server(token=token, transport="tcp")
    daemon = rig.daemon([server.address], token=token, transport="tcp")
    result = rig.cli("run", "--socket", str(daemon.socket), "--", sys.executable, "-c",
                     _SHOW_ENV)
    assert result.returncode == 3, result
    sock, preload, libpath, icd = result.stdout.split()
    assert sock == str(daemon.socket)
    assert preload.endswith("librgpu_cuda.so")
    assert libpath.split(":")[0].endswith("cuda")
    assert icd.endswith("rgpu_icd.json")
    exports = rig.cli("env", "--socket", str(daemon.socket))
    assert exports.returncode == 0, exports
    assert f"export RGPU_SOCKET={daemon.socket}" in exports.stdout
    assert f"export LD_PRELOAD={preload}" in exports.stdout


def test_run_starts_a_daemon_when_none_runs(rig: Rig) -> None:
    """With no daemon on the socket, `rgpu run -s HOST:PORT -t TOKEN -- CMD` starts one for
    that server, waits for its pool and runs CMD; without servers it is a one-line error."""
    import os
    import signal
    import sys
    import time

    sock = rig.path("own-daemon") / "rgpu.sock"
    refused = rig.cli("run", "--socket", str(sock), "--", sys.executable, "-c", "pass")
    assert_one_line_error(refused, "no rgpu daemon", str(sock))

    token = generate_token()
    server = rig.server(token=token, transport="tcp")
    started: list[int] = []
    try:
        result = rig.cli("run", "--socket", str(sock), "-s", server.address, "-t", token,
                         "--transport", "tcp", "--", sys.executable, "-c", _SHOW_ENV)
        for pid in os.listdir("/proc"):  # the daemon it left running, to stop it
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if str(sock).encode() in f.read() and int(pid) != os.getpid():
                            started.append(int(pid))
                except OSError:
                    pass
        assert result.returncode == 3, f"{result}\n{(sock.parent / 'daemon.log').read_text()}"
        assert result.stdout.split()[0] == str(sock)
        assert started, "no daemon process found for the socket"
        status = run_async(daemon_request_async(sock, {"op": "status"}), timeout=15)
        assert status["ready"], status
        assert [s["state"] for s in status["servers"]
                if s["address"].endswith(f":{server.port}")] == ["connected"], status
    finally:
        for pid in started:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while started and time.monotonic() < deadline:
            started = [p for p in started if os.path.exists(f"/proc/{p}")
                       and b"zombie" not in open(f"/proc/{p}/status", "rb").read().lower()]
            time.sleep(0.1)
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
