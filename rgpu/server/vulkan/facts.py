"""`vkRgpuGetPhysicalDeviceFacts`: every instance and physical-device answer in one reply.

The ICD answers the loader's and the application's physical-device queries from this snapshot
(vulkaninfo alone makes ~700 calls before it creates anything), so it holds what vulkaninfo
prints: properties and features with every chained struct the device supports, memory and
queue-family properties, format properties of every VkFormat, a matrix of image format
properties, extensions, layers, device groups and tools. Every struct is in the ordinary wire
form (docs/VULKAN_ENCODING.md), so the ICD decodes it with the same generated decoders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rgpu.api import vk_generated as schema

from ..session import CallError

if TYPE_CHECKING:
    from .backend import VkObject, VulkanSession

__all__ = ["IMAGE_USAGE_FROM_FEATURES", "physical_device_facts"]

#: VkFormatFeatureFlagBits -> the VkImageUsageFlagBits probed for image format properties.
IMAGE_USAGE_FROM_FEATURES = {0x1: 0x4, 0x2: 0x8, 0x80: 0x10, 0x200: 0x20, 0x4000: 0x1,
                             0x8000: 0x2}
_TILINGS = (0, 1)  # VK_IMAGE_TILING_OPTIMAL, VK_IMAGE_TILING_LINEAR
_IMAGE_TYPE_2D = 1


def _version(api: int) -> tuple[int, int]:
    return (api >> 22) & 0x7F, (api >> 12) & 0x3FF


def _chain(parent: str, api: int, extensions: set[str]) -> list[int]:
    """sTypes of every struct that may extend ``parent`` on this device."""
    major, minor = _version(api)
    out: list[int] = []
    for name, s in schema.STRUCTS.items():
        if parent not in s.extends or s.stype is None:
            continue
        for origin in schema.STRUCT_ORIGINS.get(name, ()):
            if origin.startswith("VK_VERSION_"):
                want = tuple(int(x) for x in origin.removeprefix("VK_VERSION_").split("_"))
                if (major, minor) >= want:
                    break
            elif origin in extensions:
                break
        else:
            continue
        out.append(s.stype)
    return out


def physical_device_facts(session: VulkanSession, instance: VkObject) -> dict[str, Any]:
    def inv(name: str, args: list[Any]) -> list[Any]:
        reply: list[Any] = session.invoke(schema.COMMANDS[name], name, args)
        return reply

    facts: dict[str, Any] = {
        "api_version": inv("vkEnumerateInstanceVersion", [None])[1],
        "instance_extensions": inv("vkEnumerateInstanceExtensionProperties",
                                   [None, None, None])[1],
        "instance_layers": inv("vkEnumerateInstanceLayerProperties", [None, None])[1],
        "physical_devices": [],
    }
    visible = session.physical_devices(instance)
    try:
        groups = inv("vkEnumeratePhysicalDeviceGroups", [instance.ident, None, None])[1]
    except CallError:
        groups = []
    facts["physical_device_groups"] = [
        g for g in groups if any(pd in visible for pd in g[2][: g[1]])]
    for pd in visible:
        props = inv("vkGetPhysicalDeviceProperties", [pd, None])[1]
        api = int(props[0])
        exts = inv("vkEnumerateDeviceExtensionProperties", [pd, None, None, None])[1]
        names = {e[0] for e in exts}
        dev: dict[str, Any] = {"id": pd, "extensions": exts}
        dev["properties"] = inv("vkGetPhysicalDeviceProperties2",
                                [pd, _chain("VkPhysicalDeviceProperties2", api, names)])[1]
        dev["features"] = inv("vkGetPhysicalDeviceFeatures2",
                              [pd, _chain("VkPhysicalDeviceFeatures2", api, names)])[1]
        dev["memory_properties"] = inv(
            "vkGetPhysicalDeviceMemoryProperties2",
            [pd, _chain("VkPhysicalDeviceMemoryProperties2", api, names)])[1]
        dev["queue_families"] = inv(
            "vkGetPhysicalDeviceQueueFamilyProperties2",
            [pd, None, _chain("VkQueueFamilyProperties2", api, names) or None])[1]
        format_chain = _chain("VkFormatProperties2", api, names) or None
        formats: list[list[Any]] = []
        image_formats: list[list[Any]] = []
        for fname, fmt in schema.ENUMS["VkFormat"].items():
            if fmt < 0 or fmt >= 0x7FFFFFFF or fname.endswith("_MAX_ENUM"):
                continue
            fp = inv("vkGetPhysicalDeviceFormatProperties2", [pd, fmt, format_chain])[1]
            formats.append([fmt, fp])
            base = fp[1]  # VkFormatProperties2.formatProperties
            for tiling, features in zip(_TILINGS, (base[1], base[0]), strict=True):
                usage = 0
                for bit, use in IMAGE_USAGE_FROM_FEATURES.items():
                    if features & bit:
                        usage |= use
                if not usage:
                    continue
                try:
                    reply = inv("vkGetPhysicalDeviceImageFormatProperties",
                                [pd, fmt, _IMAGE_TYPE_2D, tiling, usage, 0, None])
                    image_formats.append([fmt, _IMAGE_TYPE_2D, tiling, usage, 0, reply[0],
                                          reply[1]])
                except CallError as exc:
                    image_formats.append([fmt, _IMAGE_TYPE_2D, tiling, usage, 0,
                                          exc.extra.get("vk"), None])
        dev["formats"] = formats
        dev["image_formats"] = image_formats
        if _version(api) >= (1, 3):
            dev["tools"] = inv("vkGetPhysicalDeviceToolProperties", [pd, None, None])[1]
        facts["physical_devices"].append(dev)
    return facts
