"""Every user error is one line, `rgpu: error: <cause and fix>`, and never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rgpu.wire.auth import generate_token

from .procs import HOST, Rig, ServerProc, assert_one_line_error, free_port

pytestmark = pytest.mark.timeout(60)


@dataclass
class Ctx:
    rig: Rig
    server: ServerProc
    tmp: Path
    token: str

    @property
    def addr(self) -> str:
        return self.server.address

    def server_args(self, *extra: str, token: bool = True) -> list[str]:
        args = ["server", "--bind", HOST, "--port", str(free_port()), "--cuda", "none",
                "--state-dir", str(self.tmp / "state")]
        return [*args, *(["--token", self.token] if token else []), *extra]


@dataclass
class Case:
    args: Callable[[Ctx], list[str]]
    rc: int
    needles: Callable[[Ctx], list[str]]
    env: Callable[[Ctx], dict[str, str]] | None = None
    bug: str = ""  # a known product bug: the case is a strict xfail until it is fixed


CASES: dict[str, Case] = {
    "status without a daemon": Case(
        lambda c: ["status", "--socket", str(c.tmp / "nowhere.sock")], 1,
        lambda c: ["no rgpu daemon at", str(c.tmp / "nowhere.sock"), "rgpu client"]),
    "info: nothing listening (tcp)": Case(
        lambda c: ["info", "-s", f"{HOST}:{free_port()}", "-t", c.token, "--transport", "tcp"],
        1, lambda c: ["rgpu server"]),
    "info: token not hex": Case(
        lambda c: ["info", "-s", c.addr, "-t", "not-a-token"], 2,
        lambda c: ["64 hex", "rgpu token"]),
    "info: no token": Case(
        lambda c: ["info", "-s", c.addr], 2, lambda c: ["no token", "-t TOKEN", "rgpu token"]),
    "info: port out of range": Case(
        lambda c: ["info", "-s", f"{HOST}:99999", "-t", c.token], 2, lambda c: ["99999"]),
    "info: --insecure over quic": Case(
        lambda c: ["info", "-s", c.addr, "-t", c.token, "--insecure"], 1,
        lambda c: ["--insecure", "QUIC"]),
    "info: bad fingerprint": Case(
        lambda c: ["info", "-s", c.addr, "-t", c.token, "--fingerprint", "sha256:zz"], 2,
        lambda c: ["fingerprint"]),
    "info: unknown transport": Case(
        lambda c: ["info", "-s", c.addr, "-t", c.token, "--transport", "udp"], 2,
        lambda c: ["udp"]),
    "info: unknown quic engine": Case(
        lambda c: ["info", "-s", c.addr, "-t", c.token, "--quic-engine", "warp"], 1,
        lambda c: ["warp"]),
    "info: config file missing": Case(
        lambda c: ["info", "-s", c.addr, "-t", c.token, "-c", str(c.tmp / "missing.toml")], 2,
        lambda c: ["missing.toml", "no such file"]),
    "info: RGPU_CONFIG is not TOML": Case(
        lambda c: ["info", "-s", c.addr, "-t", c.token], 2,
        lambda c: ["bad.toml", "invalid TOML", "line 2"],
        env=lambda c: {"RGPU_CONFIG": str(_write(c.tmp / "bad.toml", "[server]\nport = \n"))}),
    "server: no tokens": Case(
        lambda c: c.server_args(token=False), 1,
        lambda c: ["no tokens configured", "rgpu token"]),
    "server: --insecure with quic": Case(
        lambda c: c.server_args("--insecure", "--transport", "quic"), 2,
        lambda c: ["--insecure", "QUIC"]),
    "server: port in use": Case(
        lambda c: ["server", "--bind", HOST, "--port", str(c.server.port), "--cuda", "none",
                   "--token", c.token, "--state-dir", str(c.server.state_dir)], 1,
        lambda c: ["cannot listen", str(c.server.port)]),
    "server: certificate missing": Case(
        lambda c: c.server_args("--cert", str(c.tmp / "none.pem"),
                                "--key", str(c.tmp / "none.key")), 1,
        lambda c: ["certificate", "none.pem"]),
    "server: unknown log level": Case(
        lambda c: c.server_args("--log-level", "loud"), 2,
        lambda c: ["unknown log level 'loud'"]),
    "client: unknown gpu ordering": Case(
        lambda c: ["client", "--gpu-ordering", "Sideways", "--socket", str(c.tmp / "d.sock")],
        2, lambda c: ["Sideways", "--gpu-ordering"]),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else [])
    for name, case in CASES.items()])
def test_user_error_is_one_line(name: str, shared_server: ServerProc, rig: Rig,
                                tmp_path: Path) -> None:
    case = CASES[name]
    ctx = Ctx(rig, shared_server, tmp_path, generate_token())
    result = rig.cli(*case.args(ctx), env=case.env(ctx) if case.env else None)
    assert_one_line_error(result, *case.needles(ctx), rc=case.rc)
