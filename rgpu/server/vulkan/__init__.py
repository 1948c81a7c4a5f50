"""The server's Vulkan backend (entry point for `rgpu.server.server`).

``open_vulkan_backend()`` pins the loader to the host's drivers, imports the ``vulkan``
package's raw binding and returns a :class:`VulkanBackend`, or None when this host has no
usable Vulkan. The server routes every ``vk*`` call of a session to that session's
:class:`VulkanSession` (``call(fn, args)``), and closes it with the session.
"""

from __future__ import annotations

import logging

from .backend import VkObject, VulkanBackend, VulkanSession

__all__ = ["VkObject", "VulkanBackend", "VulkanSession", "open_vulkan_backend"]

log = logging.getLogger("rgpu.server.vulkan")


def open_vulkan_backend() -> VulkanBackend | None:
    try:
        from ..vkloader import import_pinned_vulkan

        vk_raw = import_pinned_vulkan()
    except (ImportError, OSError) as exc:
        log.warning("no Vulkan backend: cannot load the Vulkan loader (%s)", exc)
        return None
    return VulkanBackend(vk_raw)
