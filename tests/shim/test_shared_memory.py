"""Large copies through a shared-memory region between the shim and the daemon.

A real ``rgpu server --cuda emu`` and daemon (logging at debug) run on loopback, as in
test_cuda_apps.py, whose helpers this reuses. The driver-API program (20 MiB both ways, in
chunks of a small region) must work with the region and with ``RGPU_SHM=0``; the daemon's
``shm_attach`` refuses regions that are not plainly the asking application's, and copies whose
offsets leave the region; an application's mapping goes with its connection.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_cuda_apps as apps
from test_cuda_apps import NVCC, PROGRAMS, Rig, _assert_passed, _compile, _library_dir, start_rig

from rgpu.errors import RemoteError
from rgpu.net import Peer, connect_local
from rgpu.wire import MessageKind

ATTACHED = r"\(pid (\d+)\) attached shared-memory region (rgpu-\d+-[0-9a-f]+)"
SIZE = 1 << 20


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base_env = apps._base_env
    with pytest.MonkeyPatch.context() as mp:  # the daemon (and the apps) log at debug
        mp.setattr(apps, "_base_env", lambda root: {**base_env(root), "RGPU_LOG": "debug"})
        r = start_rig(tmp_path_factory.mktemp("shm-rig"), "tcp")
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def ptx_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if NVCC is None:
        pytest.skip("nvcc is not installed: the driver-API program cannot be built")
    out = tmp_path_factory.mktemp("shm-programs") / "ptx_driver"
    _compile([NVCC, "-cudart", "none", "-o", str(out), str(PROGRAMS / "ptx_driver.c"),
              f"-L{_library_dir()}", "-lcuda"])
    return out


def _daemon_pid(rig: Rig) -> int:
    """The daemon itself (its Proc is the `timeout` wrapper around it)."""
    pid = rig.daemon.popen.pid
    for _ in range(3):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"client" in cmd and not cmd[0].endswith(b"timeout"):
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert children, f"no daemon process under {pid}"
        pid = int(children[0])
    raise AssertionError("daemon process not found")


def _daemon_regions(rig: Rig) -> list[str]:
    maps = Path(f"/proc/{_daemon_pid(rig)}/maps").read_text()
    return [line for line in maps.splitlines() if "/rgpu-" in line]


def _wait_no_regions(rig: Rig) -> None:
    deadline = time.monotonic() + 10
    while _daemon_regions(rig):
        assert time.monotonic() < deadline, f"the daemon still maps {_daemon_regions(rig)}"
        time.sleep(0.05)


def test_driver_program_copies_through_shared_memory(rig: Rig, ptx_driver: Path) -> None:
    """20 MiB each way in 4 MiB chunks of a 4 MiB region; the region is attached, its name
    unlinked at once, and the daemon's mapping is gone once the program exits."""
    before = len(re.findall(ATTACHED, rig.daemon.text()))
    result = rig.run(["env", "RGPU_SHM_SIZE=4M", str(ptx_driver)], preload=False)
    _assert_passed(result, rig)
    assert "big copy mismatches 0 tile mismatches 0" in result.stdout
    assert "copies through a 4 MiB shared-memory region" in result.stderr, result.stderr
    attached = re.findall(ATTACHED, rig.daemon.text())
    assert len(attached) == before + 1, rig.logs()
    name = attached[-1][1]
    assert not Path("/dev/shm", name).exists()
    _wait_no_regions(rig)


def test_driver_program_without_shared_memory(rig: Rig, ptx_driver: Path) -> None:
    before = len(re.findall(ATTACHED, rig.daemon.text()))
    result = rig.run(["env", "RGPU_SHM=0", str(ptx_driver)], preload=False)
    _assert_passed(result, rig)
    assert "big copy mismatches 0 tile mismatches 0" in result.stdout
    assert "large copies go as socket bulk: disabled by RGPU_SHM=0" in result.stderr
    assert "shared-memory region" not in result.stderr
    assert len(re.findall(ATTACHED, rig.daemon.text())) == before, rig.logs()


class _Region:
    """A file in /dev/shm named as this process's region would be."""

    def __init__(self, tag: str, size: int = SIZE, mode: int = 0o600) -> None:
        self.name = f"rgpu-{os.getpid()}-{tag}"
        self.path = Path("/dev/shm", self.name)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode)
        try:
            os.fchmod(fd, mode)
            os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def remove(self) -> None:
        self.map.close()
        self.path.unlink(missing_ok=True)


async def _refused(peer: Peer, body: dict[str, object]) -> str:
    with pytest.raises(RemoteError) as info:
        await peer.request(MessageKind.CONTROL, {"op": "shm_attach", **body}, timeout=10)
    assert info.value.code == "refused", info.value
    return str(info.value)


def test_attach_refusals_and_offsets(rig: Rig, tmp_path: Path) -> None:
    regions: list[_Region] = []

    def region(tag: str, size: int = SIZE, mode: int = 0o600) -> _Region:
        r = _Region(tag, size, mode)
        regions.append(r)
        return r

    async def scenario() -> None:
        peer = await connect_local(rig.socket, name="shm-test")
        try:
            wide = region("a0", mode=0o644)
            assert "mode 644" in await _refused(peer, {"name": wide.name, "size": SIZE})
            small = region("a1")
            assert "bytes, not" in await _refused(peer, {"name": small.name, "size": 2 * SIZE})
            if os.getuid() == 0:
                other = region("a2")
                os.chown(other.path, 65534, 65534)
                assert "owned" in await _refused(peer, {"name": other.name, "size": SIZE})
            target = tmp_path / "target"
            target.write_bytes(b"\0" * SIZE)
            target.chmod(0o600)
            link = Path("/dev/shm", f"rgpu-{os.getpid()}-a3")
            link.symlink_to(target)
            try:
                await _refused(peer, {"name": link.name, "size": SIZE})
            finally:
                link.unlink()
            for name in ("../tmp/x", "/etc/passwd", f"rgpu-{os.getpid()}-a4/../a5", "x",
                         f"rgpu-{os.getpid()}-A4"):
                assert "bad shared-memory name" in await _refused(peer, {"name": name,
                                                                         "size": SIZE})
            theirs = f"rgpu-{os.getpid() + 1}-a6"
            assert "not this application's" in await _refused(peer, {"name": theirs,
                                                                     "size": SIZE})
            assert "bad shared-memory size" in await _refused(
                peer, {"name": small.name, "size": 2 << 30})

            # a session, and a call naming the region before one is attached
            opened = await peer.request(MessageKind.CONTROL, {"op": "open_session", "gpu": 0},
                                        timeout=30)
            sid = int(opened.body["session"])
            await peer.request(MessageKind.CALL, ["cuDevicePrimaryCtxRetain",
                                                  [1, int(opened.body["cuda_index"])]],
                               session=sid, timeout=30)
            alloc = await peer.request(MessageKind.CALL, ["cuMemAlloc_v2", [SIZE]],
                                       session=sid, timeout=30)
            ptr = int(alloc.body)
            with pytest.raises(RemoteError) as info:
                await peer.request(MessageKind.CALL, ["cuMemcpyHtoD_v2", [ptr], 1,
                                                      {"shm": [0, 16]}], session=sid, timeout=30)
            assert info.value.code == "bad_call"

            good = region("a7")
            reply = await peer.request(MessageKind.CONTROL, {"op": "shm_attach",
                                                             "name": good.name, "size": SIZE},
                                       timeout=10)
            assert reply.body == {"attached": good.name, "size": SIZE}
            assert "already" in await _refused(peer, {"name": small.name, "size": SIZE})

            for extra in ({"shm": [SIZE - 8, 16]}, {"shm": [-1, 16]}, {"shm": [0, SIZE + 1]},
                          {"shm": ["0", 1]}, {"shm_reply": [1, SIZE]}, {"other": 1}):
                with pytest.raises(RemoteError) as info:
                    await peer.request(MessageKind.CALL, ["cuMemcpyHtoD_v2", [ptr], 1, extra],
                                       session=sid, timeout=30)
                assert info.value.code == "bad_call", extra

            # a round trip through the region: up at 4096, back at 65536
            n = 100_000
            data = bytes((i * 7) & 0xFF for i in range(n))
            good.map[4096:4096 + n] = data
            await peer.request(MessageKind.CALL, ["cuMemcpyHtoD_v2", [ptr], 1,
                                                  {"shm": [4096, n]}], session=sid, timeout=30)
            back = await peer.request(MessageKind.CALL, ["cuMemcpyDtoH_v2", [ptr, n], None,
                                                         {"shm_reply": [65536, SIZE - 65536]}],
                                      session=sid, timeout=30)
            assert back.body == {"shm": n} and not back.bulk
            assert good.map[65536:65536 + n] == data
            # a reply larger than the capacity comes back as ordinary bulk
            back = await peer.request(MessageKind.CALL, ["cuMemcpyDtoH_v2", [ptr, n], None,
                                                         {"shm_reply": [0, n - 1]}],
                                      session=sid, timeout=30)
            assert bytes(back.bulk) == data
            assert any(good.name in line for line in _daemon_regions(rig))
        finally:
            peer.close()
        await asyncio.sleep(0)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
        _wait_no_regions(rig)
    finally:
        for r in regions:
            r.remove()


@pytest.fixture(scope="module")
def copy_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if NVCC is None:
        pytest.skip("nvcc is not installed: the driver-API program cannot be built")
    out = tmp_path_factory.mktemp("shm-programs") / "copy_pipeline"
    _compile([NVCC, "-cudart", "none", "-o", str(out), str(PROGRAMS / "copy_pipeline.c"),
              f"-L{_library_dir()}", "-lcuda"])
    return out


@pytest.mark.parametrize("region", ["4M", "64M", "0"])
def test_pipelined_copies_in_pieces(rig: Rig, copy_pipeline: Path, region: str) -> None:
    """37 MiB each way, sync and async, with several pieces in flight in a 4 MiB region (1 MiB
    pieces), the default 64 MiB one (8 MiB pieces) and none (socket bulk); a copy that runs
    off its allocation part of the way fails with a CUDA error and the context goes on."""
    env = ["env", "RGPU_SHM=0"] if region == "0" else ["env", f"RGPU_SHM_SIZE={region}"]
    result = rig.run([*env, str(copy_pipeline)], preload=False)
    _assert_passed(result, rig)
    assert "sync mismatches 0 async mismatches 0 after mismatches 0" in result.stdout
    assert "overrun up CUDA_ERROR_INVALID_VALUE down CUDA_ERROR_INVALID_VALUE" in result.stdout
    if region != "0":
        assert f"copies through a {region[:-1]} MiB shared-memory region" in result.stderr
