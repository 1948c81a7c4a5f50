"""Sessions in worker processes: a driver crash ends one session with VK_ERROR_DEVICE_LOST."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from vkapp import FakeQuota, Ids, make_device, vector_add

from rgpu.api.vk_wire import struct
from rgpu.server.session import CallError


@pytest.fixture(scope="module")
def isolated(vk_backend: Any) -> Iterator[Any]:
    from rgpu.server.vulkan import open_vulkan_backend

    backend = open_vulkan_backend(isolate=True)
    yield backend
    for s in list(backend.sessions):
        s.close()


def _crash(call: Any, ids: Ids, device: int, spirv: bytes) -> None:
    """Measured: lavapipe segfaults on a compute pipeline whose layout lacks the shader's
    descriptor sets (valid msgpack, invalid Vulkan usage)."""
    module, layout = ids(), ids()
    call("vkCreateShaderModule", [device, struct("VkShaderModuleCreateInfo",
                                                 codeSize=len(spirv), pCode=spirv),
                                  None, module])
    call("vkCreatePipelineLayout", [device, struct("VkPipelineLayoutCreateInfo"), None, layout])
    stage = struct("VkPipelineShaderStageCreateInfo", stage=0x20, module=module, pName="main")
    call("vkCreateComputePipelines", [device, 0, 1, [struct(
        "VkComputePipelineCreateInfo", stage=stage, layout=layout)], None, [ids()]])


def test_vector_add_in_a_worker(isolated: Any, add_spirv: bytes) -> None:
    s = isolated.open_session("isolated add")
    try:
        r = vector_add(s.call, add_spirv, n=1 << 18)
        np.testing.assert_array_equal(r.c, r.expected)
    finally:
        s.close()
    assert not s.process.is_alive()


def test_a_driver_crash_ends_only_its_session(isolated: Any, add_spirv: bytes) -> None:
    quota = FakeQuota(1 << 30)
    victim = isolated.open_session("victim", quota=quota)
    bystander = isolated.open_session("bystander")
    try:
        ids = Ids()
        _, _, device = make_device(victim.call, ids)
        victim.call("vkAllocateMemory", [device, struct("VkMemoryAllocateInfo",
                                                        allocationSize=1 << 20), None, ids()])
        assert quota.used == 1 << 20
        try:
            _crash(victim.call, ids, device, add_spirv)
        except CallError as exc:
            if exc.code != "device_lost":  # a driver that refuses instead of crashing
                pytest.skip(f"this driver does not crash here ({exc})")
            assert exc.extra["vk"] == -4 and "signal" in str(exc)
        else:
            pytest.skip("this driver does not crash on that pipeline")
        assert quota.used == 0, "a dead worker's memory is given back to the quota"
        with pytest.raises(CallError) as again:
            victim.call("vkDeviceWaitIdle", [device])
        assert again.value.code == "device_lost"
        r = vector_add(bystander.call, add_spirv, n=4096)
        np.testing.assert_array_equal(r.c, r.expected)
    finally:
        victim.close()
        bystander.close()
