"""Programs written the way real Vulkan applications are, through the ICD and on the server's
driver directly, must print the same lines: hashes of read-back buffers and images, query
results, semaphore and event states (`programs/vk_compat_compute.c`, `vk_compat_render.c`).

Each program exercises many features at once (their headers list them), so that the file stays
short on a two-core machine; each was written to catch a failure found by running such
programs: an array argument (`vkCmdSetBlendConstants`) the server could not replay,
`vkCmdPushDescriptorSetWithTemplateKHR` missing, mapped memory not read back when completion
is learnt by polling a timeline semaphore, device writes lost when the host wrote
neighbouring bytes of the same memory before waiting, command buffers larger than a wire
frame refused, `vkCmdDrawMultiIndexedEXT` arrays read with the wrong stride, and entry points
handed out for extensions the device does not have. The Khronos validation layer runs on
the application's side when it is installed, and must stay silent on both paths.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from integration.procs import DaemonProc, Rig, ServerProc

from icd.test_icd import (
    CC,
    GLSLANG,
    LAVAPIPE,
    PROGRAMS,
    ROOT,
    _app_env,
    _run,
    _validation_layer,
    manifest,
    pool,
)
from rgpu.codegen import shimbuild

__all__ = ["manifest", "pool"]  # fixtures, used by name


def _build(out: Path, source: str, shaders: list[str]) -> list[Path]:
    if GLSLANG is None or CC is None:
        pytest.skip("glslangValidator or a C compiler is missing")
    built = []
    for name in shaders:
        spv = out / f"{name}.spv"
        subprocess.run([GLSLANG, "-V", str(PROGRAMS / name), "-o", str(spv)], check=True,
                       capture_output=True, timeout=60)
        built.append(spv)
    exe = out / Path(source).stem
    proc = subprocess.run([CC, "-Wall", "-Wextra", "-Werror", "-O2", "-o", str(exe),
                           str(PROGRAMS / source), "-lvulkan"], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0 and "vulkan" in proc.stderr:
        pytest.skip(f"cannot build against the Vulkan loader: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    return [exe, *built]


@pytest.fixture(scope="module")
def compat_compute(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _build(tmp_path_factory.mktemp("compat_compute"), "vk_compat_compute.c",
                  ["compat.comp", "compat_ring.comp"])


@pytest.fixture(scope="module")
def compat_render(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _build(tmp_path_factory.mktemp("compat_render"), "vk_compat_render.c",
                  ["compat_tex.vert", "compat_tex.frag"])


def _same_as_lavapipe(pool: tuple[Rig, ServerProc, DaemonProc], manifest: Path,
                      argv: list[Path], name: str) -> None:
    """Without layers (the application talks to the ICD through the loader alone), then with
    the validation layer where it is installed."""
    _compare(pool, manifest, argv, name, {})
    if _validation_layer():
        _compare(pool, manifest, argv, name,
                 {"VK_INSTANCE_LAYERS": "VK_LAYER_KHRONOS_validation"})


def _compare(pool: tuple[Rig, ServerProc, DaemonProc], manifest: Path, argv: list[Path],
             name: str, layers: dict[str, str]) -> None:
    rig, _server, daemon = pool
    assert LAVAPIPE is not None
    direct_env = {**rig.env, "VK_ICD_FILENAMES": str(LAVAPIPE),
                  "VK_DRIVER_FILES": str(LAVAPIPE), "NODEVICE_SELECT": "1", **layers}
    command = [str(p) for p in argv]
    direct = _run(command, direct_env, rig.root)
    assert direct.returncode == 0, f"{direct.stdout}\n{direct.stderr}"
    remote = _run(command, {**_app_env(rig, manifest, daemon.socket), **layers}, rig.root)
    report = f"--- through rgpu:\n{remote.stdout}\n{remote.stderr}\n--- direct:\n{direct.stdout}"
    assert remote.returncode == 0, report
    assert f"PASSED {name}" in remote.stdout, report
    for out in (direct, remote):
        assert "Validation Error" not in out.stdout + out.stderr, report
    assert remote.stdout.splitlines() == direct.stdout.splitlines(), report


def test_compute_program_matches_lavapipe(pool: tuple[Rig, ServerProc, DaemonProc],
                                          manifest: Path, compat_compute: list[Path]) -> None:
    """Specialization and push constants, two sets (one pushed by a template), a storage image,
    a texel buffer, a device address, indirect dispatch from a secondary command buffer,
    events, timestamps, a pipeline cache round trip, a polled timeline semaphore and a
    persistently mapped ring shared by host and device."""
    _same_as_lavapipe(pool, manifest, compat_compute, "vk_compat_compute")


def test_render_program_matches_lavapipe(pool: tuple[Rig, ServerProc, DaemonProc],
                                         manifest: Path, compat_render: list[Path]) -> None:
    """A mipmapped texture uploaded by staging and blits, 4x MSAA with D32 depth resolved,
    a secondary command buffer in a render pass, dynamic rendering with synchronization2,
    indirect indexed draws and an occlusion query, every image read back and hashed."""
    _same_as_lavapipe(pool, manifest, compat_render, "vk_compat_render")


def test_compat_programs_under_sanitizers(tmp_path: Path,
                                          pool: tuple[Rig, ServerProc, DaemonProc],
                                          compat_compute: list[Path],
                                          compat_render: list[Path]) -> None:
    """The ICD built with -fsanitize=address,undefined runs both programs without a memory
    error, undefined behaviour or leak: their paths (staged blobs, multi-frame command buffers
    and query results, byte-wise merges of mapped memory) are the ICD's least travelled."""
    assert CC is not None
    libasan = subprocess.run([CC, "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True, timeout=30).stdout.strip()
    if not Path(libasan).is_file():
        pytest.skip("the compiler has no libasan.so")
    try:
        sanitized = shimbuild.build_icd(ROOT, tmp_path / "asan", sanitize="address,undefined",
                                        log=lambda _msg: None)
    except shimbuild.IcdUnavailable as exc:
        pytest.skip(str(exc))
    rig, _server, daemon = pool
    env = {**_app_env(rig, sanitized, daemon.socket), "LD_PRELOAD": libasan,
           "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    for argv, name in ((compat_compute, "vk_compat_compute"), (compat_render, "vk_compat_render")):
        result = _run([str(p) for p in argv], env, rig.root)
        report = f"{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, report
        assert f"PASSED {name}" in result.stdout, report
        assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, report
