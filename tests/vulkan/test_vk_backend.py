"""The Vulkan backend through its session API (no network), on the host driver (lavapipe in CI)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vkapp import FakeQuota, Ids, create_instance, make_device, vector_add

from rgpu.api import vk_generated as schema
from rgpu.api.vk_wire import node, struct, unpack
from rgpu.server.session import CallError

VK_INCOMPLETE, VK_NOT_READY, VK_TIMEOUT, VK_EVENT_SET, VK_EVENT_RESET = 5, 1, 2, 3, 4
STYPE = schema.ENUMS["VkStructureType"]


def test_vector_add_one_million_floats(vk_backend: Any, add_spirv: bytes) -> None:
    s = vk_backend.open_session("add")
    try:
        r = vector_add(s.call, add_spirv, n=1 << 20)
        np.testing.assert_array_equal(r.c, r.expected)
        assert s.live_objects() > 10
    finally:
        s.close()
    assert s.live_objects() == 0
    assert vk_backend.live == 0, "objects left alive after the session closed"


def test_facts_cover_what_vulkaninfo_prints(vk_session: Any) -> None:
    instance = create_instance(vk_session.call, Ids())
    result, facts = vk_session.call("vkRgpuGetPhysicalDeviceFacts", [instance])
    assert result == 0
    assert facts["api_version"] >= (1 << 22) | (1 << 12)
    assert any(e[0] == "VK_KHR_get_physical_device_properties2"
               for e in facts["instance_extensions"])
    dev = facts["physical_devices"][0]
    props = unpack("VkPhysicalDeviceProperties2", dev["properties"])
    base = unpack("VkPhysicalDeviceProperties", props["properties"])
    assert base["deviceName"] and base["apiVersion"] >= (1 << 22) | (1 << 12)
    chained = {schema.STYPES[n[0]] for n in props["pNext"]}
    assert {"VkPhysicalDeviceVulkan11Properties", "VkPhysicalDeviceDriverProperties"} <= chained
    if base["apiVersion"] >= (1 << 22) | (3 << 12):
        assert "VkPhysicalDeviceVulkan13Properties" in chained
        features = {schema.STYPES[n[0]]
                    for n in unpack("VkPhysicalDeviceFeatures2", dev["features"])["pNext"]}
        assert "VkPhysicalDeviceVulkan13Features" in features
    memory = unpack("VkPhysicalDeviceMemoryProperties",
                    unpack("VkPhysicalDeviceMemoryProperties2",
                           dev["memory_properties"])["memoryProperties"])
    assert memory["memoryTypeCount"] >= 1 and len(memory["memoryTypes"]) == 32
    assert dev["queue_families"] and dev["extensions"]
    formats = dict((f, v) for f, v in dev["formats"])
    r8g8b8a8 = schema.ENUMS["VkFormat"]["VK_FORMAT_R8G8B8A8_UNORM"]
    assert formats[r8g8b8a8][1][1] != 0  # optimal tiling features
    assert len(formats) > 180
    assert any(f[0] == r8g8b8a8 and f[5] == 0 and f[6] for f in dev["image_formats"])
    assert dev["id"] in vk_session.call("vkEnumeratePhysicalDevices", [instance, None, None])[1]


def test_enumeration_capacity_reproduces_incomplete(vk_session: Any) -> None:
    call = vk_session.call
    result, everything = call("vkEnumerateInstanceExtensionProperties", [None, None, None])
    assert result == 0 and len(everything) > 1
    result, some = call("vkEnumerateInstanceExtensionProperties", [None, 1, None])
    assert result == VK_INCOMPLETE and some == everything[:1]
    assert call("vkEnumerateInstanceExtensionProperties", [None, 0, None]) == [VK_INCOMPLETE, []]
    instance = create_instance(call, Ids())
    pd = call("vkEnumeratePhysicalDevices", [instance, None, None])[1][0]
    result, exts = call("vkEnumerateDeviceExtensionProperties", [pd, None, None, None])
    assert result == 0 and len(exts) > 2
    assert call("vkEnumerateDeviceExtensionProperties", [pd, None, 2, None]) == [
        VK_INCOMPLETE, exts[:2]]
    assert call("vkEnumeratePhysicalDevices", [instance, 0, None]) == [VK_INCOMPLETE, []]
    result, families = call("vkGetPhysicalDeviceQueueFamilyProperties", [pd, None, None])
    assert result is None and families[0][0] & 0x2  # compute


def test_results_pass_through_unchanged(vk_session: Any) -> None:
    call, ids = vk_session.call, Ids()
    _, _, device = make_device(call, ids)
    fence, event, timeline = ids(), ids(), ids()
    assert call("vkCreateFence", [device, struct("VkFenceCreateInfo"), None, fence]) == [0]
    assert call("vkGetFenceStatus", [device, fence]) == [VK_NOT_READY]
    assert call("vkWaitForFences", [device, 1, [fence], 1, 0]) == [VK_TIMEOUT]
    assert call("vkCreateEvent", [device, struct("VkEventCreateInfo"), None, event]) == [0]
    assert call("vkGetEventStatus", [device, event]) == [VK_EVENT_RESET]
    assert call("vkSetEvent", [device, event]) == [0]
    assert call("vkGetEventStatus", [device, event]) == [VK_EVENT_SET]
    sem_type = node("VkSemaphoreTypeCreateInfo", semaphoreType=1, initialValue=3)  # TIMELINE
    assert call("vkCreateSemaphore", [device, struct("VkSemaphoreCreateInfo",
                                                     pNext=[sem_type]), None, timeline]) == [0]
    assert call("vkGetSemaphoreCounterValue", [device, timeline, None]) == [0, 3]
    signal = struct("VkSemaphoreSignalInfo", semaphore=timeline, value=9)
    assert call("vkSignalSemaphore", [device, signal]) == [0]
    wait = struct("VkSemaphoreWaitInfo", pSemaphores=[timeline], pValues=[9])
    assert call("vkWaitSemaphores", [device, wait, 1_000_000_000]) == [0]
    assert call("vkGetSemaphoreCounterValue", [device, timeline, None]) == [0, 9]
    slot = ids()
    assert call("vkCreatePrivateDataSlot", [device, struct("VkPrivateDataSlotCreateInfo"), None,
                                            slot]) == [0]
    assert call("vkSetPrivateData", [device, 7, fence, slot, 42]) == [0]  # VK_OBJECT_TYPE_FENCE
    assert call("vkGetPrivateData", [device, 7, fence, slot, None]) == [None, 42]
    with pytest.raises(CallError, match="does not exist"):
        call("vkSetPrivateData", [device, 7, 0xDEAD, slot, 1])
    vk_session.backend.max_wait_ns = 200_000_000
    try:
        t0 = time.monotonic()
        assert call("vkWaitForFences", [device, 1, [fence], 1, 2**64 - 1]) == [VK_TIMEOUT]
        assert 0.15 < time.monotonic() - t0 < 10  # capped: a session's close is never held
    finally:
        vk_session.backend.max_wait_ns = 5_000_000_000
    with pytest.raises(CallError) as err:
        call("vkAllocateMemory", [device, struct("VkMemoryAllocateInfo",
                                                 allocationSize=1 << 62), None, ids()])
    assert err.value.code == "VkResult" and err.value.extra["vk"] < 0
    assert "VK_ERROR_" in str(err.value)


def test_timestamps_through_a_recorded_stream(vk_session: Any) -> None:
    call, ids = vk_session.call, Ids()
    _, _, device = make_device(call, ids)
    queue, pool, cmd_pool, cb, fence = ids(), ids(), ids(), ids(), ids()
    call("vkGetDeviceQueue", [device, 0, 0, queue])
    assert call("vkCreateQueryPool", [device, struct("VkQueryPoolCreateInfo", queryType=2,
                                                     queryCount=2), None, pool]) == [0]
    call("vkCreateCommandPool", [device, struct("VkCommandPoolCreateInfo"), None, cmd_pool])
    call("vkAllocateCommandBuffers", [device, struct(
        "VkCommandBufferAllocateInfo", commandPool=cmd_pool, commandBufferCount=1), [cb]])
    stream = [["vkCmdResetQueryPool", [pool, 0, 2]],
              ["vkCmdWriteTimestamp", [0x1, pool, 0]],
              ["vkCmdWriteTimestamp", [0x2000, pool, 1]]]
    assert call("vkRgpuSubmitCommandBuffer", [cb, stream, None]) == [0]
    call("vkCreateFence", [device, struct("VkFenceCreateInfo"), None, fence])
    assert call("vkQueueSubmit", [queue, 1, [struct("VkSubmitInfo", pCommandBuffers=[cb])],
                                  fence]) == [0]
    assert call("vkWaitForFences", [device, 1, [fence], 1, 5_000_000_000]) == [0]
    result, data = call("vkGetQueryPoolResults", [device, pool, 0, 2, 16, None, 8, 0x1 | 0x2])
    assert result == 0
    t0, t1 = np.frombuffer(data, dtype=np.uint64)
    assert t1 >= t0 > 0
    with pytest.raises(CallError, match=r"recorded command 1 \(vkCmdDispatch\)"):
        call("vkRgpuSubmitCommandBuffer", [cb, [["vkCmdResetQueryPool", [pool, 0, 2]],
                                                ["vkCmdDispatch", [1, 1]]], None])
    with pytest.raises(CallError, match="not a supported vkCmd"):
        call("vkRgpuSubmitCommandBuffer", [cb, [["vkQueueWaitIdle", [queue]]], None])


def test_memory_bounds_and_round_trip(vk_session: Any) -> None:
    call, ids = vk_session.call, Ids()
    _, _, device = make_device(call, ids)
    mem = ids()
    assert call("vkAllocateMemory", [device, struct("VkMemoryAllocateInfo",
                                                    allocationSize=4096), None, mem]) == [0]
    # vkAllocateMemory does not zero memory (lavapipe hands back freed blocks): set the
    # neighbourhood first, then check the write lands exactly where it was asked to
    assert call("vkRgpuWriteMemory", [mem, 98, b"\xee" * 9]) == [0]
    assert call("vkRgpuWriteMemory", [mem, 100, b"hello"]) == [0]
    assert call("vkRgpuReadMemory", [mem, 98, 9]) == b"\xee\xeehello\xee\xee"
    assert call("vkMapMemory", [device, mem, 0, 0xFFFFFFFFFFFFFFFF, 0, None]) == [0]
    assert call("vkUnmapMemory", [device, mem]) == [None]
    for bad_args in ([mem, 4095, b"ab"], [mem, -1, b"a"], [mem, 0, "text"]):
        with pytest.raises(CallError, match="vkRgpuWriteMemory"):
            call("vkRgpuWriteMemory", bad_args)
    with pytest.raises(CallError):
        call("vkRgpuReadMemory", [mem, 4000, 200])
    call("vkFreeMemory", [device, mem, None])
    with pytest.raises(CallError, match="does not exist"):
        call("vkRgpuReadMemory", [mem, 0, 1])


def test_handles_are_checked_and_private_to_a_session(vk_backend: Any) -> None:
    a, b = vk_backend.open_session("a"), vk_backend.open_session("b")
    try:
        ids = Ids()
        _, _pd, device = make_device(a.call, ids)
        buf = ids()
        assert a.call("vkCreateBuffer", [device, struct("VkBufferCreateInfo", size=64,
                                                        usage=0x20), None, buf]) == [0]
        for session, args, why in [
            (b, [device, buf, None], "does not exist in this session"),  # another session's
            (a, [device, 0xDEAD, None], "does not exist"),
            (a, [device, device, None], "is a VkDevice, not a VkBuffer"),
        ]:
            with pytest.raises(CallError, match=why) as err:
                session.call("vkGetBufferMemoryRequirements", args)
            assert err.value.code == "invalid_handle" and err.value.extra["vk"] == -13
        with pytest.raises(CallError, match="already in use"):
            a.call("vkCreateBuffer", [device, struct("VkBufferCreateInfo", size=64, usage=0x20),
                                      None, buf])
        with pytest.raises(CallError, match="client id"):
            a.call("vkCreateBuffer", [device, struct("VkBufferCreateInfo", size=64, usage=0x20),
                                      None, 1 << 63 | 5])
        with pytest.raises(CallError, match="takes 4 arguments"):
            a.call("vkCreateBuffer", [device])
        with pytest.raises(CallError) as err:
            a.call("vkNoSuchThing", [])
        assert err.value.code == "unsupported" and err.value.extra["vk"] == -7
        assert a.call("vkDestroyBuffer", [device, buf, None]) == [None]
        with pytest.raises(CallError, match="does not exist"):
            a.call("vkDestroyBuffer", [device, buf, None])
    finally:
        a.close()
        b.close()
    assert vk_backend.live == 0


def test_close_destroys_children_before_parents(vk_backend: Any, add_spirv: bytes) -> None:
    s = vk_backend.open_session("leaky")
    vector_add(s.call, add_spirv, n=256)  # leaves everything alive, as a crashed app would
    kinds = {o.type for o in s.objects.values()}
    assert {"VkInstance", "VkDevice", "VkBuffer", "VkDeviceMemory", "VkPipeline",
            "VkDescriptorPool", "VkCommandPool", "VkFence"} <= kinds
    destroyed_before = vk_backend.destroyed
    live = s.live_objects()
    s.close()
    assert vk_backend.destroyed - destroyed_before == live
    assert vk_backend.live == 0 and not s.objects


def test_destroying_a_device_destroys_what_it_holds(vk_session: Any) -> None:
    call, ids = vk_session.call, Ids()
    _, _, device = make_device(call, ids)
    for _ in range(3):
        call("vkCreateBuffer", [device, struct("VkBufferCreateInfo", size=64, usage=0x20),
                                None, ids()])
    pool, cb = ids(), ids()
    call("vkCreateCommandPool", [device, struct("VkCommandPoolCreateInfo"), None, pool])
    call("vkAllocateCommandBuffers", [device, struct(
        "VkCommandBufferAllocateInfo", commandPool=pool, commandBufferCount=1), [cb]])
    assert call("vkDestroyDevice", [device, None]) == [None]
    assert {o.type for o in vk_session.objects.values()} <= {"VkInstance", "VkPhysicalDevice"}


# --- fuzz: whole calls ------------------------------------------------------------------------

_leaf = st.one_of(st.none(), st.integers(-2**65, 2**65), st.floats(), st.text(max_size=6),
                  st.binary(max_size=24))
_args = st.lists(st.recursive(_leaf, lambda inner: st.lists(inner, max_size=5), max_leaves=20),
                 max_size=10)
# global commands reach the driver with whatever decodes; keep to those that only query
_FUZZ_COMMANDS = sorted(n for n, c in schema.COMMANDS.items()
                        if c.level != "global" or n.startswith("vkEnumerateInstance"))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(fn=st.sampled_from(_FUZZ_COMMANDS + sorted(schema.PRIVATE_COMMANDS)), args=_args)
def test_fuzzed_calls_only_raise_call_error(vk_backend: Any, fn: str, args: list[Any]) -> None:
    s = vk_backend.open_session("fuzz")
    try:
        s.call(fn, args)
    except CallError:
        pass
    finally:
        s.close()


# --- driver-level leak check --------------------------------------------------------------------


@pytest.fixture(scope="module")
def validated_backend(vk_backend: Any) -> Any:
    from rgpu.server.vulkan import open_vulkan_backend

    try:
        return open_vulkan_backend(validation=True)
    except RuntimeError as exc:
        pytest.skip(str(exc))


def test_validation_layer_sees_no_leak_after_close(validated_backend: Any,
                                                   add_spirv: bytes) -> None:
    validation = validated_backend.validation
    s = validated_backend.open_session("validated")
    r = vector_add(s.call, add_spirv, n=4096)  # leaves everything alive
    np.testing.assert_array_equal(r.c, r.expected)
    s.close()
    assert validation.errors == [], "\n".join(validation.errors)
    assert s.calls > 30


def test_validation_layer_catches_a_leak(validated_backend: Any) -> None:
    """The check above can fail: a device destroyed with a buffer alive is reported."""
    validation = validated_backend.validation
    s = validated_backend.open_session("leaky")
    ids = Ids()
    _, _, device = make_device(s.call, ids)
    s.call("vkCreateBuffer", [device, struct("VkBufferCreateInfo", size=64, usage=0x20), None,
                              ids()])
    dev = s.objects[device]
    errors_before = len(validation.errors)
    s.lib.vkDestroyDevice(dev.handle, s.ffi.NULL)  # behind the session's back
    s._unregister(device)
    for o in [o for o in s.objects.values() if o.device == device]:
        s._unregister(o.ident)
    s.close()
    new = validation.errors[errors_before:]
    validation.errors[errors_before:] = []
    assert any("VkBuffer" in e and "has not been destroyed" in e for e in new), new


def test_pipeline_cache_semaphores_and_idle(vk_session: Any, add_spirv: bytes) -> None:
    call, ids = vk_session.call, Ids()
    _, _, device = make_device(call, ids)
    queue, cache, module, layout, pipeline = ids(), ids(), ids(), ids(), ids()
    call("vkGetDeviceQueue", [device, 0, 0, queue])
    assert call("vkCreatePipelineCache", [device, struct("VkPipelineCacheCreateInfo"), None,
                                          cache]) == [0]
    call("vkCreateShaderModule", [device, struct("VkShaderModuleCreateInfo",
                                                 codeSize=len(add_spirv), pCode=add_spirv),
                                  None, module])
    set_layout = ids()
    call("vkCreateDescriptorSetLayout", [device, struct(
        "VkDescriptorSetLayoutCreateInfo", pBindings=[struct(
            "VkDescriptorSetLayoutBinding", binding=i, descriptorType=7, descriptorCount=1,
            stageFlags=0x20) for i in range(3)]), None, set_layout])
    call("vkCreatePipelineLayout", [device, struct(
        "VkPipelineLayoutCreateInfo", pSetLayouts=[set_layout], pPushConstantRanges=[
            struct("VkPushConstantRange", stageFlags=0x20, size=4)]), None, layout])
    stage = struct("VkPipelineShaderStageCreateInfo", stage=0x20, module=module, pName="main")
    assert call("vkCreateComputePipelines", [device, cache, 1, [struct(
        "VkComputePipelineCreateInfo", stage=stage, layout=layout)], None, [pipeline]]) == [0]
    result, data = call("vkGetPipelineCacheData", [device, cache, None, None])
    assert result == 0 and isinstance(data, bytes) and len(data) >= 16
    # below the header size the driver writes nothing: reproduced as it said it
    assert call("vkGetPipelineCacheData", [device, cache, 4, None]) == [VK_INCOMPLETE, b""]
    result, part = call("vkGetPipelineCacheData", [device, cache, len(data) - 1, None])
    assert result == VK_INCOMPLETE and len(part) < len(data) and data.startswith(part)
    sem, fence = ids(), ids()
    call("vkCreateSemaphore", [device, struct("VkSemaphoreCreateInfo"), None, sem])
    call("vkCreateFence", [device, struct("VkFenceCreateInfo"), None, fence])
    assert call("vkQueueSubmit", [queue, 1, [struct("VkSubmitInfo", pSignalSemaphores=[sem])],
                                  0]) == [0]
    wait = struct("VkSubmitInfo", pWaitSemaphores=[sem], pWaitDstStageMask=[0x1])
    assert call("vkQueueSubmit", [queue, 1, [wait], fence]) == [0]
    assert call("vkQueueWaitIdle", [queue]) == [0]
    assert call("vkGetFenceStatus", [device, fence]) == [0]
    assert call("vkResetFences", [device, 1, [fence]]) == [0]
    assert call("vkDeviceWaitIdle", [device]) == [0]
    with pytest.raises(CallError, match="2 elements, but waitSemaphoreCount is 1"):
        call("vkQueueSubmit", [queue, 1, [struct("VkSubmitInfo", pWaitSemaphores=[sem],
                                                 pWaitDstStageMask=[1, 1])], 0])


def test_memory_quota_of_the_token(vk_backend: Any) -> None:
    quota = FakeQuota(1 << 20)
    s = vk_backend.open_session("quota", quota=quota)
    try:
        call, ids = s.call, Ids()
        _, _, device = make_device(call, ids)
        a, b = ids(), ids()
        assert call("vkAllocateMemory", [device, struct("VkMemoryAllocateInfo",
                                                        allocationSize=600 << 10), None, a]) == [0]
        with pytest.raises(CallError, match="max_memory") as err:
            call("vkAllocateMemory", [device, struct("VkMemoryAllocateInfo",
                                                     allocationSize=600 << 10), None, b])
        assert err.value.extra["vk"] == -2  # VK_ERROR_OUT_OF_DEVICE_MEMORY
        assert quota.used == 600 << 10
        call("vkFreeMemory", [device, a, None])
        assert quota.used == 0
        assert call("vkAllocateMemory", [device, struct("VkMemoryAllocateInfo",
                                                        allocationSize=600 << 10), None, b]) == [0]
        assert quota.used == 600 << 10
    finally:
        s.close()
    assert quota.used == 0
