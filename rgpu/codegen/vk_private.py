"""rgpu's private Vulkan commands: the calls a remoting ICD needs that vk.xml does not have.

They play the role of Venus's ``VK_MESA_venus_protocol`` XML: hand-written here, emitted into the
generated schema beside the real commands so that both ends are generated from one list.
docs/VULKAN_ENCODING.md describes their arguments and replies.
"""

from __future__ import annotations

from rgpu.api.vk_schema import Command, Field

PRIVATE_COMMANDS: tuple[Command, ...] = (
    # Everything an ICD needs to answer instance and physical-device queries locally.
    Command("vkRgpuGetPhysicalDeviceFacts", (
        Field("instance", "VkInstance", "H", "val"),
    ), "VkResult", "instance", None, ()),
    # Write host-visible memory at a memory-relative offset (the ICD's shadow-map upload).
    Command("vkRgpuWriteMemory", (
        Field("memory", "VkDeviceMemory", "h", "val"),
        Field("offset", "VkDeviceSize", "i", "val"),
        Field("data", "void", "v", "blob"),
    ), "VkResult", "device", None, ()),
    # Read host-visible memory; the reply is the bytes themselves (a bulk segment).
    Command("vkRgpuReadMemory", (
        Field("memory", "VkDeviceMemory", "h", "val"),
        Field("offset", "VkDeviceSize", "i", "val"),
        Field("size", "VkDeviceSize", "i", "val"),
    ), "VkResult", "device", None, ()),
    # Replay a locally recorded command stream into the real command buffer (begin ... end).
    Command("vkRgpuSubmitCommandBuffer", (
        Field("commandBuffer", "VkCommandBuffer", "H", "val"),
        Field("commands", "void", "v", "array"),
        Field("pBeginInfo", "VkCommandBufferBeginInfo", "s", "ptr", optional=True),
    ), "VkResult", "device", None, ()),
)
