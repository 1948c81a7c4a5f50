"""Graphics through the backend: images, views, samplers, render passes, framebuffers, graphics
pipelines, dynamic rendering, clear values (a union) and image copies, checked pixel by pixel."""

from __future__ import annotations

import shutil
import struct as pystruct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vkapp import VK_API_1_3, Ids, create_instance

from rgpu.api import vk_generated as schema
from rgpu.api.vk_wire import node, struct, unpack

HERE = Path(__file__).resolve().parent
FORMAT = schema.ENUMS["VkFormat"]["VK_FORMAT_R8G8B8A8_UNORM"]
W = H = 64
COLOR_ATTACHMENT_OPTIMAL, TRANSFER_SRC_OPTIMAL = 2, 6
VERTEX, FRAGMENT = 0x1, 0x10
IGNORED = 0xFFFFFFFF
SUBRESOURCE = [0x1, 0, 1, 0, 1]  # VkImageSubresourceRange: color, one mip, one layer


@pytest.fixture(scope="module")
def shaders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tool = shutil.which("glslangValidator")
    if tool is None:
        pytest.skip("glslangValidator is not installed")
    out = tmp_path_factory.mktemp("spv")
    result = {}
    for name in ("tri.vert", "tri.frag"):
        target = out / f"{name}.spv"
        subprocess.run([tool, "-V", str(HERE / name), "-o", str(target)], check=True,
                       capture_output=True, timeout=60)
        result[name] = target.read_bytes()
    return result


def _memory_type(props: list[Any], bits: int, flags: int) -> int:
    mem = unpack("VkPhysicalDeviceMemoryProperties", props)
    return next(i for i in range(mem["memoryTypeCount"])
                if bits & (1 << i) and mem["memoryTypes"][i][0] & flags == flags)


def _clear(r: float, g: float, b: float, a: float) -> bytes:
    return pystruct.pack("<4f", r, g, b, a)


@pytest.fixture(scope="module")
def backend(vk_backend: Any) -> Any:
    """Validated where the Khronos layer is installed: the encoding must yield valid usage."""
    from rgpu.server.vulkan import open_vulkan_backend

    try:
        return open_vulkan_backend(validation=True)
    except RuntimeError:
        return vk_backend


@pytest.fixture
def session(backend: Any) -> Iterator[Any]:
    s = backend.open_session("graphics")
    try:
        yield s
    finally:
        s.close()
    if backend.validation is not None:
        assert backend.validation.errors == [], "\n".join(backend.validation.errors)


@pytest.mark.parametrize("mode", ["render_pass", "dynamic_rendering"])
def test_draw_and_clear(session: Any, shaders: dict[str, bytes], mode: str) -> None:
    call, ids = session.call, Ids()
    instance = create_instance(call, ids)
    facts = call("vkRgpuGetPhysicalDeviceFacts", [instance])[1]
    dev = facts["physical_devices"][0]
    pd = dev["id"]
    api = unpack("VkPhysicalDeviceProperties",
                 unpack("VkPhysicalDeviceProperties2", dev["properties"])["properties"])[
        "apiVersion"]
    chain = None
    if mode == "dynamic_rendering":
        if api < VK_API_1_3:
            pytest.skip("the device is not Vulkan 1.3")
        chain = [node("VkPhysicalDeviceVulkan13Features", dynamicRendering=1)]
    memory_props = unpack("VkPhysicalDeviceMemoryProperties2",
                          dev["memory_properties"])["memoryProperties"]
    device, queue = ids(), ids()
    assert call("vkCreateDevice", [pd, struct(
        "VkDeviceCreateInfo", pNext=chain, pQueueCreateInfos=[struct(
            "VkDeviceQueueCreateInfo", queueCount=1, pQueuePriorities=[1.0])]),
        None, device]) == [0]
    call("vkGetDeviceQueue", [device, 0, 0, queue])

    image, image_mem, view, sampler = ids(), ids(), ids(), ids()
    assert call("vkCreateImage", [device, struct(
        "VkImageCreateInfo", imageType=1, format=FORMAT, extent=[W, H, 1], mipLevels=1,
        arrayLayers=1, samples=1, usage=0x10 | 0x1), None, image]) == [0]
    _, reqs = call("vkGetImageMemoryRequirements", [device, image, None])
    assert call("vkAllocateMemory", [device, struct(
        "VkMemoryAllocateInfo", allocationSize=reqs[0],
        memoryTypeIndex=_memory_type(memory_props, reqs[2], 0)), None, image_mem]) == [0]
    assert call("vkBindImageMemory", [device, image, image_mem, 0]) == [0]
    assert call("vkCreateImageView", [device, struct(
        "VkImageViewCreateInfo", image=image, viewType=1, format=FORMAT,
        subresourceRange=SUBRESOURCE), None, view]) == [0]
    assert call("vkCreateSampler", [device, struct("VkSamplerCreateInfo", maxLod=1.0), None,
                                    sampler]) == [0]

    readback, readback_mem = ids(), ids()
    call("vkCreateBuffer", [device, struct("VkBufferCreateInfo", size=W * H * 4, usage=0x2),
                            None, readback])
    _, breqs = call("vkGetBufferMemoryRequirements", [device, readback, None])
    call("vkAllocateMemory", [device, struct(
        "VkMemoryAllocateInfo", allocationSize=breqs[0],
        memoryTypeIndex=_memory_type(memory_props, breqs[2], 0x2 | 0x4)), None, readback_mem])
    call("vkBindBufferMemory", [device, readback, readback_mem, 0])

    modules = {}
    for name, spirv in shaders.items():
        modules[name] = ids()
        assert call("vkCreateShaderModule", [device, struct(
            "VkShaderModuleCreateInfo", codeSize=len(spirv), pCode=spirv), None,
            modules[name]]) == [0]
    layout = ids()
    call("vkCreatePipelineLayout", [device, struct(
        "VkPipelineLayoutCreateInfo", pPushConstantRanges=[struct(
            "VkPushConstantRange", stageFlags=FRAGMENT, size=16)]), None, layout])

    render_pass, framebuffer = 0, ids()
    pipeline_chain = None
    if mode == "render_pass":
        render_pass = ids()
        attachment = struct("VkAttachmentDescription", format=FORMAT, samples=1, loadOp=1,
                            storeOp=0, stencilLoadOp=2, stencilStoreOp=1,
                            finalLayout=TRANSFER_SRC_OPTIMAL)
        subpass = struct("VkSubpassDescription", pColorAttachments=[
            struct("VkAttachmentReference", attachment=0, layout=COLOR_ATTACHMENT_OPTIMAL)])
        assert call("vkCreateRenderPass", [device, struct(
            "VkRenderPassCreateInfo", pAttachments=[attachment], pSubpasses=[subpass]),
            None, render_pass]) == [0]
        assert call("vkCreateFramebuffer", [device, struct(
            "VkFramebufferCreateInfo", renderPass=render_pass, pAttachments=[view], width=W,
            height=H, layers=1), None, framebuffer]) == [0]
    else:
        pipeline_chain = [node("VkPipelineRenderingCreateInfo",
                               pColorAttachmentFormats=[FORMAT])]

    pipeline = ids()
    stages = [struct("VkPipelineShaderStageCreateInfo", stage=VERTEX, module=modules["tri.vert"],
                     pName="main"),
              struct("VkPipelineShaderStageCreateInfo", stage=FRAGMENT,
                     module=modules["tri.frag"], pName="main")]
    info = struct(
        "VkGraphicsPipelineCreateInfo", pNext=pipeline_chain, pStages=stages,
        pVertexInputState=struct("VkPipelineVertexInputStateCreateInfo"),
        pInputAssemblyState=struct("VkPipelineInputAssemblyStateCreateInfo", topology=3),
        pViewportState=struct("VkPipelineViewportStateCreateInfo", viewportCount=1,
                              scissorCount=1),
        pRasterizationState=struct("VkPipelineRasterizationStateCreateInfo", lineWidth=1.0),
        pMultisampleState=struct("VkPipelineMultisampleStateCreateInfo",
                                 rasterizationSamples=1),
        pColorBlendState=struct("VkPipelineColorBlendStateCreateInfo", pAttachments=[
            struct("VkPipelineColorBlendAttachmentState", colorWriteMask=0xF)]),
        pDynamicState=struct("VkPipelineDynamicStateCreateInfo", pDynamicStates=[0, 1]),
        layout=layout, renderPass=render_pass)
    assert call("vkCreateGraphicsPipelines", [device, 0, 1, [info], None, [pipeline]]) == [0]

    clear = _clear(0.0, 0.0, 1.0, 1.0)
    area = [[0, 0], [W, H]]
    draw = [
        ["vkCmdBindPipeline", [0, pipeline]],
        ["vkCmdSetViewport", [0, 1, [struct("VkViewport", width=float(W), height=float(H),
                                            maxDepth=1.0)]]],
        ["vkCmdSetScissor", [0, 1, [[[0, 0], [W // 2, H]]]]],  # left half only
        ["vkCmdPushConstants", [layout, FRAGMENT, 0, 16, _clear(1.0, 0.0, 0.0, 1.0)]],
        ["vkCmdDraw", [3, 1, 0, 0]],
    ]

    def barrier(old: int, new: int, src: int, dst: int) -> list[Any]:
        b = struct("VkImageMemoryBarrier", srcAccessMask=src, dstAccessMask=dst, oldLayout=old,
                   newLayout=new, srcQueueFamilyIndex=IGNORED, dstQueueFamilyIndex=IGNORED,
                   image=image, subresourceRange=SUBRESOURCE)
        return ["vkCmdPipelineBarrier", [0x10000, 0x10000, 0, 0, None, 0, None, 1, [b]]]

    if mode == "render_pass":
        stream = [["vkCmdBeginRenderPass", [struct(
            "VkRenderPassBeginInfo", renderPass=render_pass, framebuffer=framebuffer,
            renderArea=area, pClearValues=[clear]), 0]], *draw, ["vkCmdEndRenderPass", []]]
    else:
        attachment_info = struct("VkRenderingAttachmentInfo", imageView=view,
                                 imageLayout=COLOR_ATTACHMENT_OPTIMAL, loadOp=1, storeOp=0,
                                 clearValue=clear)
        stream = [barrier(0, COLOR_ATTACHMENT_OPTIMAL, 0, 0x100),
                  ["vkCmdBeginRendering", [struct("VkRenderingInfo", renderArea=area,
                                                  layerCount=1,
                                                  pColorAttachments=[attachment_info])]],
                  *draw, ["vkCmdEndRendering", []],
                  barrier(COLOR_ATTACHMENT_OPTIMAL, TRANSFER_SRC_OPTIMAL, 0x100, 0x800)]
    copy = struct("VkBufferImageCopy", imageSubresource=[0x1, 0, 0, 1], imageExtent=[W, H, 1])
    stream.append(["vkCmdCopyImageToBuffer", [image, TRANSFER_SRC_OPTIMAL, readback, 1,
                                              [copy]]])

    cmd_pool, cb, fence = ids(), ids(), ids()
    call("vkCreateCommandPool", [device, struct("VkCommandPoolCreateInfo"), None, cmd_pool])
    call("vkAllocateCommandBuffers", [device, struct(
        "VkCommandBufferAllocateInfo", commandPool=cmd_pool, commandBufferCount=1), [cb]])
    assert call("vkRgpuSubmitCommandBuffer", [cb, stream, None]) == [0]
    call("vkCreateFence", [device, struct("VkFenceCreateInfo"), None, fence])
    assert call("vkQueueSubmit", [queue, 1, [struct("VkSubmitInfo", pCommandBuffers=[cb])],
                                  fence]) == [0]
    assert call("vkWaitForFences", [device, 1, [fence], 1, 10_000_000_000]) == [0]
    pixels = np.frombuffer(call("vkRgpuReadMemory", [readback_mem, 0, W * H * 4]),
                           dtype=np.uint8).reshape(H, W, 4)
    assert (pixels[:, : W // 2] == [255, 0, 0, 255]).all()  # drawn
    assert (pixels[:, W // 2:] == [0, 0, 255, 255]).all()  # cleared
