"""Runtime-API features of unmodified nvcc-built programs, through the shim, end to end.

Each program (``programs/compat_*.cu``, built with nvcc's defaults) checks its results against
the host and prints ``PASSED``: managed memory, mapped page-locked memory, pitched 2D copies and
memory pools (``compat_memory``); kernel printf on the app's stdout, launch-configuration
errors, occupancy, host callbacks and events across streams, device properties
(``compat_runtime``); CUDA graphs, captured and explicit (``compat_graphs``); errors a call
must return itself although its work is queued (``compat_errors``). One
emulated-GPU server and one daemon on loopback (TCP+TLS), from ``test_cuda_apps``; every
process is bounded in time.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import test_cuda_apps as apps
from test_cuda_apps import sanitized  # noqa: F401 (a fixture: the sanitizer build of the shim)

PROGRAMS = ("compat_memory", "compat_runtime", "compat_graphs", "compat_errors")


@pytest.fixture(scope="module")
def compat_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if apps.NVCC is None:
        pytest.skip("nvcc is not installed: the CUDA test programs cannot be built")
    out = tmp_path_factory.mktemp("compat")
    jobs = {name: [apps.NVCC, "-o", str(out / name), str(apps.PROGRAMS / f"{name}.cu")]
            for name in PROGRAMS}
    # the per-thread default stream takes the _ptsz/_ptds entry points of capture and launch
    jobs["compat_graphs-per-thread"] = [
        apps.NVCC, "-default-stream", "per-thread", "-o", str(out / "compat_graphs-per-thread"),
        str(apps.PROGRAMS / "compat_graphs.cu")]
    # ... and the launches checked before they are queued, their _ptsz forms
    jobs["compat_errors-per-thread"] = [
        apps.NVCC, "-default-stream", "per-thread", "-o", str(out / "compat_errors-per-thread"),
        str(apps.PROGRAMS / "compat_errors.cu")]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(apps._compile, jobs.values()))
    return {name: out / name for name in jobs}


@pytest.fixture(scope="module")
def tcp_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[apps.Rig]:
    r = apps.start_rig(tmp_path_factory.mktemp("compat-rig"), "tcp")
    try:
        yield r
    finally:
        r.stop()


def test_memory_features(tcp_rig: apps.Rig, compat_programs: dict[str, Path]) -> None:
    """cudaMallocManaged (host access after synchronisation, managed pointers inside managed
    structures, copies, memsets, prefetch/advise hints), cudaHostAllocMapped and
    cudaHostRegisterMapped through cudaHostGetDevicePointer and by the host pointer itself,
    plain cudaMallocHost memory by its own address (unified addressing),
    cudaMallocPitch with cudaMemcpy2D in every direction and cudaMemset2D, memory pools."""
    result = tcp_rig.run([str(compat_programs["compat_memory"])])
    apps._assert_passed(result, tcp_rig)
    for section in ("managed", "mapped", "pitched", "pools"):
        assert f"{section} ok" in result.stdout
    assert result.stderr == "", result.stderr


def test_runtime_behaviour(tcp_rig: apps.Rig, compat_programs: dict[str, Path]) -> None:
    """Kernel printf lands on the app's stdout, in order with the host's own output, at a
    cudaDeviceSynchronize and at a blocking cudaMemcpy; a block of 4096 threads is
    cudaErrorInvalidConfiguration at the launch; occupancy, callbacks, properties; a
    cooperative launch with grid.sync(), and one too large to be resident at once."""
    result = tcp_rig.run([str(compat_programs["compat_runtime"])])
    apps._assert_passed(result, tcp_rig)
    lines = result.stdout.splitlines()
    expected = ["device says 0 7 1.50 hi", "device says 1 7 1.50 hi", "after sync",
                "device says 0 8 2.50 hi", "device says 1 8 2.50 hi", "after copy"]
    assert lines[:6] == expected, result.stdout
    for section in ("errors", "occupancy", "streams", "properties", "cooperative"):
        assert f"{section} ok" in result.stdout


@pytest.mark.parametrize("build", ["compat_errors", "compat_errors-per-thread"])
def test_errors_at_the_call(tcp_rig: apps.Rig, compat_programs: dict[str, Path],
                            build: str) -> None:
    """A launch beyond the kernel's __launch_bounds__ is cudaErrorLaunchOutOfResources and one
    beyond its dynamic shared memory limit cudaErrorInvalidValue, at the launch (<<<>>>,
    cudaLaunchKernelEx, graph kernel nodes), following cudaFuncSetAttribute both ways; copies
    and memsets past an allocation's end fail at the call; an error only the server can see
    comes back at the next synchronisation, never from a cudaMalloc (which leaks nothing);
    stream and event queries during a long kernel are cudaErrorNotReady at once, and keep an
    earlier error for the synchronisation."""
    result = tcp_rig.run([str(compat_programs[build])])
    apps._assert_passed(result, tcp_rig)
    for section in ("launch bounds", "dynamic shared memory", "graph node", "copy ranges",
                    "deferred error", "busy queries"):
        assert f"{section} ok" in result.stdout


@pytest.mark.parametrize("mode", ["sync", "copy"])
def test_printf_of_a_faulting_kernel(tcp_rig: apps.Rig, compat_programs: dict[str, Path],
                                     mode: str) -> None:
    """What a kernel printed before it faulted reaches the app's stdout at the synchronisation
    (or blocking copy) that reports the fault, as the driver flushes its printf buffer then."""
    arg = "fault" if mode == "sync" else "fault-copy"
    result = tcp_rig.run([str(compat_programs["compat_errors"]), arg])
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{tcp_rig.logs()}"
    assert result.stdout.splitlines() == ["before the fault 0", "before the fault 1",
                                          f"{mode}: cudaErrorIllegalAddress"], result.stdout


@pytest.mark.parametrize("build", ["compat_graphs", "compat_graphs-per-thread"])
def test_graphs(tcp_rig: apps.Rig, compat_programs: dict[str, Path], build: str) -> None:
    """Stream capture with a fork onto a second stream and a join back, replayed five times
    (host function included); explicit memset/kernel/memcpy nodes with parameter updates in the
    executable graph, cudaGraphExecUpdate and cudaGraphClone; child graphs, event nodes, memory
    nodes. Also built with the per-thread default stream."""
    result = tcp_rig.run([str(compat_programs[build])])
    apps._assert_passed(result, tcp_rig)
    assert "nodes 7 edges 7" in result.stdout


@pytest.mark.parametrize("name", ["compat_memory", "compat_graphs"])
def test_sanitized(tcp_rig: apps.Rig, compat_programs: dict[str, Path],
                   sanitized: list[str], name: str) -> None:  # noqa: F811
    """Managed/mapped memory coherence, pools and graphs on the AddressSanitizer +
    UndefinedBehaviorSanitizer build: no memory error, no undefined behaviour."""
    env = tcp_rig.app_env()
    env["LD_PRELOAD"] = " ".join(sanitized)
    env["LD_LIBRARY_PATH"] = str(Path(sanitized[-1]).parent / "cuda")
    env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    p = subprocess.run([str(compat_programs[name])], env=env, capture_output=True, text=True,
                       timeout=apps.APP_TIMEOUT_S, cwd=tcp_rig.root)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    assert p.returncode == 0 and "PASSED" in p.stdout, f"{p.stdout}\n{p.stderr}"
