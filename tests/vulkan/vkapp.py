"""A Vulkan compute application written against the wire API, the way the ICD will speak it.

``vector_add(call, ...)`` creates an instance, reads the facts, creates a device, three
host-visible buffers, writes the inputs with vkRgpuWriteMemory, builds a compute pipeline with
push constants, records the dispatch as a command stream, submits it with a fence, and reads
the sum back with vkRgpuReadMemory. ``call(fn, args)`` is the transport: the backend directly,
or a CALL over a real connection.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rgpu.api.vk_wire import node, struct
from rgpu.server.session import CallError

Call = Callable[[str, list[Any]], Any]

VK_API_1_3 = (1 << 22) | (3 << 12)
HOST_VISIBLE_COHERENT = 0x2 | 0x4
STORAGE_BUFFER = 7
COMPUTE_BIT = 0x20
QUEUE_COMPUTE = 0x2


@dataclass
class Ids:
    """Client-chosen handle ids, as the ICD will hand them out."""

    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(0x1000))

    def __call__(self) -> int:
        return next(self.counter)


@dataclass
class AddResult:
    c: np.ndarray
    expected: np.ndarray
    facts: dict[str, Any]
    handles: dict[str, int]


def create_instance(call: Call, ids: Ids) -> int:
    instance = ids()
    app = struct("VkApplicationInfo", pApplicationName="rgpu test", apiVersion=VK_API_1_3)
    reply = call("vkCreateInstance", [struct("VkInstanceCreateInfo", pApplicationInfo=app),
                                      None, instance])
    assert reply == [0], reply
    return instance


def vector_add(call: Call, spirv: bytes, n: int = 1 << 20, seed: int = 1) -> AddResult:
    ids = Ids()
    instance = create_instance(call, ids)
    facts = call("vkRgpuGetPhysicalDeviceFacts", [instance])[1]
    result, pds = call("vkEnumeratePhysicalDevices", [instance, None, None])
    assert result == 0 and pds, (result, pds)
    pd = pds[0]
    dev_facts = next(d for d in facts["physical_devices"] if d["id"] == pd)
    families = dev_facts["queue_families"]
    family = next(i for i, q in enumerate(families) if q[1][0] & QUEUE_COMPUTE)
    mem_props = dev_facts["memory_properties"][1]  # VkPhysicalDeviceMemoryProperties
    mem_type = next(i for i in range(mem_props[0])
                    if mem_props[1][i][0] & HOST_VISIBLE_COHERENT == HOST_VISIBLE_COHERENT)

    device = ids()
    queue_info = struct("VkDeviceQueueCreateInfo", queueFamilyIndex=family, queueCount=1,
                        pQueuePriorities=[1.0])
    assert call("vkCreateDevice", [pd, struct("VkDeviceCreateInfo",
                                              pQueueCreateInfos=[queue_info]),
                                   None, device]) == [0]
    queue = ids()
    assert call("vkGetDeviceQueue", [device, family, 0, queue]) == [None]

    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    size = n * 4
    buffers, memories = [], []
    for data in (a, b, None):
        buf, mem = ids(), ids()
        assert call("vkCreateBuffer", [device, struct("VkBufferCreateInfo", size=size,
                                                      usage=0x20), None, buf]) == [0]
        r, reqs = call("vkGetBufferMemoryRequirements", [device, buf, None])
        assert r is None and reqs[0] >= size, reqs
        assert call("vkAllocateMemory", [device, struct(
            "VkMemoryAllocateInfo", allocationSize=reqs[0], memoryTypeIndex=mem_type),
            None, mem]) == [0]
        assert call("vkBindBufferMemory", [device, buf, mem, 0]) == [0]
        assert call("vkMapMemory", [device, mem, 0, 0xFFFFFFFFFFFFFFFF, 0, None]) == [0]
        if data is not None:
            assert call("vkRgpuWriteMemory", [mem, 0, data.tobytes()]) == [0]
        buffers.append(buf)
        memories.append(mem)

    bindings = [struct("VkDescriptorSetLayoutBinding", binding=i,
                       descriptorType=STORAGE_BUFFER, descriptorCount=1,
                       stageFlags=COMPUTE_BIT) for i in range(3)]
    set_layout, pipe_layout, module, pipeline = ids(), ids(), ids(), ids()
    assert call("vkCreateDescriptorSetLayout", [device, struct(
        "VkDescriptorSetLayoutCreateInfo", pBindings=bindings), None, set_layout]) == [0]
    push = struct("VkPushConstantRange", stageFlags=COMPUTE_BIT, offset=0, size=4)
    assert call("vkCreatePipelineLayout", [device, struct(
        "VkPipelineLayoutCreateInfo", pSetLayouts=[set_layout], pPushConstantRanges=[push]),
        None, pipe_layout]) == [0]
    assert call("vkCreateShaderModule", [device, struct(
        "VkShaderModuleCreateInfo", codeSize=len(spirv), pCode=spirv), None, module]) == [0]
    stage = struct("VkPipelineShaderStageCreateInfo", stage=COMPUTE_BIT, module=module,
                   pName="main")
    assert call("vkCreateComputePipelines", [device, 0, 1, [struct(
        "VkComputePipelineCreateInfo", stage=stage, layout=pipe_layout)], None,
        [pipeline]]) == [0]

    pool, dset = ids(), ids()
    size_info = struct("VkDescriptorPoolSize", type=STORAGE_BUFFER, descriptorCount=3)
    assert call("vkCreateDescriptorPool", [device, struct(
        "VkDescriptorPoolCreateInfo", maxSets=1, pPoolSizes=[size_info]), None, pool]) == [0]
    assert call("vkAllocateDescriptorSets", [device, struct(
        "VkDescriptorSetAllocateInfo", descriptorPool=pool, pSetLayouts=[set_layout]),
        [dset]]) == [0]
    writes = [struct("VkWriteDescriptorSet", dstSet=dset, dstBinding=i, descriptorCount=1,
                     descriptorType=STORAGE_BUFFER,
                     pBufferInfo=[struct("VkDescriptorBufferInfo", buffer=buf,
                                         range=0xFFFFFFFFFFFFFFFF)])
              for i, buf in enumerate(buffers)]
    assert call("vkUpdateDescriptorSets", [device, 3, writes, 0, None]) == [None]

    cmd_pool, cmd_buf, fence = ids(), ids(), ids()
    assert call("vkCreateCommandPool", [device, struct(
        "VkCommandPoolCreateInfo", queueFamilyIndex=family), None, cmd_pool]) == [0]
    assert call("vkAllocateCommandBuffers", [device, struct(
        "VkCommandBufferAllocateInfo", commandPool=cmd_pool, commandBufferCount=1),
        [cmd_buf]]) == [0]
    stream = [
        ["vkCmdBindPipeline", [1, pipeline]],  # VK_PIPELINE_BIND_POINT_COMPUTE
        ["vkCmdBindDescriptorSets", [1, pipe_layout, 0, 1, [dset], 0, None]],
        ["vkCmdPushConstants", [pipe_layout, COMPUTE_BIT, 0, 4,
                                np.uint32(n).tobytes()]],
        ["vkCmdDispatch", [(n + 63) // 64, 1, 1]],
    ]
    begin = struct("VkCommandBufferBeginInfo", flags=0x1)  # ONE_TIME_SUBMIT
    assert call("vkRgpuSubmitCommandBuffer", [cmd_buf, stream, begin]) == [0]
    assert call("vkCreateFence", [device, struct("VkFenceCreateInfo"), None, fence]) == [0]
    submit = struct("VkSubmitInfo", pCommandBuffers=[cmd_buf])
    assert call("vkQueueSubmit", [queue, 1, [submit], fence]) == [0]
    assert call("vkWaitForFences", [device, 1, [fence], 1, 10_000_000_000]) == [0]
    raw = call("vkRgpuReadMemory", [memories[2], 0, size])
    c = np.frombuffer(bytes(raw), dtype=np.float32)
    handles = {"instance": instance, "device": device, "queue": queue, "fence": fence,
               "pipeline": pipeline, "pool": pool, "cmd_pool": cmd_pool,
               "cmd_buf": cmd_buf, "buffer0": buffers[0], "memory0": memories[0],
               "dset": dset, "set_layout": set_layout, "pipe_layout": pipe_layout}
    return AddResult(c, a + b, facts, handles)


def make_device(call: Call, ids: Ids) -> tuple[int, int, int]:
    """(instance, physical device, device) with timeline semaphores on, one queue."""
    instance = create_instance(call, ids)
    pd = call("vkEnumeratePhysicalDevices", [instance, None, None])[1][0]
    device = ids()
    features = node("VkPhysicalDeviceVulkan12Features", timelineSemaphore=1)
    info = struct("VkDeviceCreateInfo", pNext=[features], pQueueCreateInfos=[
        struct("VkDeviceQueueCreateInfo", queueFamilyIndex=0, queueCount=1,
               pQueuePriorities=[1.0])])
    assert call("vkCreateDevice", [pd, info, None, device]) == [0]
    return instance, pd, device


class FakeQuota:
    """A token's max_memory, as the server's MemoryQuota keeps it."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def reserve(self, nbytes: int) -> None:
        if self.used + nbytes > self.limit:
            raise CallError("quota", f"max_memory exceeded: {self.used} + {nbytes} > "
                            f"{self.limit}", cuda=2)
        self.used += nbytes

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
