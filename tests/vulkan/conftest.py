"""Fixtures of the Vulkan tests: the host's Vulkan (lavapipe in CI) and a compiled shader."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def vk_backend() -> object:
    from rgpu.server.vulkan import open_vulkan_backend

    backend = open_vulkan_backend()
    if backend is None:
        pytest.skip("no Vulkan loader on this host")
    s = backend.open_session("probe")
    try:
        from vkapp import Ids, create_instance

        instance = create_instance(s.call, Ids())
        devices = s.call("vkEnumeratePhysicalDevices", [instance, None, None])[1]
    except Exception as exc:  # no driver: vkCreateInstance fails
        pytest.skip(f"no Vulkan driver on this host ({exc})")
    finally:
        s.close()
    if not devices:
        pytest.skip("no Vulkan physical device on this host")
    return backend


@pytest.fixture
def vk_session(vk_backend: object) -> Iterator[object]:
    s = vk_backend.open_session("test")  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def add_spirv(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """tests/vulkan/add.comp compiled now with glslangValidator -V."""
    tool = shutil.which("glslangValidator")
    if tool is None:
        pytest.skip("glslangValidator is not installed")
    out = tmp_path_factory.mktemp("spv") / "add.spv"
    subprocess.run([tool, "-V", str(HERE / "add.comp"), "-o", str(out)], check=True,
                   capture_output=True, timeout=60)
    return out.read_bytes()
