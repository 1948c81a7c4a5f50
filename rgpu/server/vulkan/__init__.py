"""The server's Vulkan backend (entry point for `rgpu.server.server`).

``open_vulkan_backend()`` pins the loader to the host's drivers, imports the ``vulkan``
package's raw binding and returns a :class:`VulkanBackend` (in-process) or, with
``isolate=True``, an :class:`IsolatedBackend` (a worker process per session), or None when
this host has no usable Vulkan. The server routes every ``vk*`` call of a session through
:func:`vulkan_call` to that session's ``call(fn, args)``, and closes it with the session.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..session import CallError, Session
from .backend import (
    VK_ERROR_EXTENSION_NOT_PRESENT,
    Quota,
    VkObject,
    VulkanBackend,
    VulkanSession,
)
from .isolated import IsolatedBackend, IsolatedSession

__all__ = ["IsolatedBackend", "IsolatedSession", "Quota", "VkObject", "VulkanBackend",
           "VulkanSession", "collect_facts", "open_vulkan_backend", "vulkan_call"]

log = logging.getLogger("rgpu.server.vulkan")


def open_vulkan_backend(*, validation: bool = False, isolate: bool = False
                        ) -> VulkanBackend | IsolatedBackend | None:
    """The host's Vulkan backend, or None when the Vulkan loader cannot be loaded.

    ``isolate`` runs each session's Vulkan in its own worker process (isolated.py), so a
    driver crash ends that session only, with VK_ERROR_DEVICE_LOST; the server should use it.
    ``validation`` enables Khronos validation on the server's own instances (validation.py),
    for tests and debugging.
    """
    try:
        from ..vkloader import import_pinned_vulkan

        vk_raw = import_pinned_vulkan()
    except (ImportError, OSError) as exc:
        log.warning("no Vulkan backend: cannot load the Vulkan loader (%s)", exc)
        return None
    if isolate:
        return IsolatedBackend(validation=validation)
    return VulkanBackend(vk_raw, validation=validation)


def vulkan_call(backend: VulkanBackend | IsolatedBackend | None, session: Session, fn: str,
                args: list[Any], vulkan_indexes: Sequence[int] | None = None,
                quota: Quota | None = None) -> Any:
    """Run one ``vk*`` call of a server session (on the session's worker thread).

    The session's :class:`VulkanSession` is made on its first Vulkan call and closed with the
    session (its cleanup runs on the same worker thread). ``vulkan_indexes`` limits the
    physical devices the session sees (the token's ``allowed_gpus``, as Vulkan indexes);
    ``quota`` (the server's ``MemoryQuota`` of the token) accounts ``vkAllocateMemory``.
    Both are read on the session's first Vulkan call.
    """
    if backend is None:
        raise CallError("unsupported", "this server has no Vulkan backend",
                        vk=VK_ERROR_EXTENSION_NOT_PRESENT)
    vs = session.backends.get("vulkan")
    if vs is None:
        vs = backend.open_session(session.label, vulkan_indexes, quota)
        session.backends["vulkan"] = vs
        session.add_cleanup("Vulkan", vs.close)
    return vs.call(fn, args)


FACTS_INSTANCE_ID = 1
_API_1_3 = (1 << 22) | (3 << 12)


def collect_facts(backend: VulkanBackend | IsolatedBackend,
                  vulkan_indexes: Sequence[int] | None = None) -> dict[str, Any]:
    """``vkRgpuGetPhysicalDeviceFacts`` without an application: a throw-away session and
    instance (Vulkan 1.3), for a CONTROL op whose answer a daemon caches per server. The
    physical-device ids in it are those an application's first instance will see."""
    from rgpu.api.vk_wire import struct

    s = backend.open_session("facts", vulkan_indexes)
    try:
        app = struct("VkApplicationInfo", pApplicationName="rgpu facts", apiVersion=_API_1_3)
        s.call("vkCreateInstance", [struct("VkInstanceCreateInfo", pApplicationInfo=app),
                                    None, FACTS_INSTANCE_ID])
        facts: dict[str, Any] = s.call("vkRgpuGetPhysicalDeviceFacts", [FACTS_INSTANCE_ID])[1]
        return facts
    finally:
        s.close()
