"""Fixtures of the integration tests: transports, per-test and per-module process rigs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rgpu.server.vkloader import icd_search_dirs
from rgpu.wire.auth import generate_token

from .procs import TRANSPORTS, Rig, ServerProc


@pytest.fixture(scope="session", autouse=True)
def lavapipe() -> None:
    """The servers' GPU here is Mesa lavapipe (Vulkan on the CPU); without a Vulkan driver a
    server has no GPU to pool, open sessions on or list."""
    if not any(d.is_dir() and any(d.glob("lvp_icd*.json")) for d in icd_search_dirs()):
        pytest.skip("Mesa lavapipe is not installed (no lvp_icd*.json Vulkan driver manifest; "
                    "Debian/Ubuntu: apt install mesa-vulkan-drivers)")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The client transport: QUIC, or TCP+TLS."""
    return str(request.param)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def module_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("rig"))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def shared_server(module_rig: Rig) -> ServerProc:
    """One server on QUIC and TCP+TLS for the tests that leave no state behind."""
    return module_rig.server(token=generate_token())
