"""Khronos validation on the server's own instances (tests and debugging, never by default).

With it, every ``VkInstance`` a session creates also enables ``VK_LAYER_KHRONOS_validation``
and chains a ``VK_EXT_debug_utils`` messenger into the create info, so the driver-level object
tracker reports what the server itself does wrong: objects still alive when their device or
instance is destroyed (a cleanup that missed something), wrong destroy order, bad handles.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["LAYER", "Validation"]

LAYER = "VK_LAYER_KHRONOS_validation"
DEBUG_UTILS = "VK_EXT_debug_utils"
_SEVERITY_WARNING, _SEVERITY_ERROR = 0x100, 0x1000
_ALL_TYPES = 0x1 | 0x2 | 0x4


class Validation:
    """Collects validation messages of every instance the backend creates."""

    def __init__(self, ffi: Any, lib: Any) -> None:
        self.ffi = ffi
        self.lib = lib
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._callback = ffi.callback("PFN_vkDebugUtilsMessengerCallbackEXT", self._on_message)

    def available(self) -> bool:
        ffi, lib = self.ffi, self.lib
        count = ffi.new("uint32_t *")
        lib.vkEnumerateInstanceLayerProperties(count, ffi.NULL)
        layers = ffi.new("VkLayerProperties[]", max(int(count[0]), 1))
        lib.vkEnumerateInstanceLayerProperties(count, layers)
        return any(ffi.string(layers[i].layerName).decode() == LAYER
                   for i in range(int(count[0])))

    def _on_message(self, severity: int, _types: int, data: Any, _user: Any) -> int:
        text = self.ffi.string(data.pMessage).decode("utf-8", "replace") \
            if data.pMessage != self.ffi.NULL else "(no message)"
        with self._lock:
            if severity >= _SEVERITY_ERROR:
                self.errors.append(text)
            elif severity >= _SEVERITY_WARNING:
                self.warnings.append(text)
        return 0

    def _messenger_info(self) -> Any:
        return self.ffi.new("VkDebugUtilsMessengerCreateInfoEXT *", {
            "sType": self.lib.VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
            "messageSeverity": _SEVERITY_WARNING | _SEVERITY_ERROR,
            "messageType": _ALL_TYPES,
            "pfnUserCallback": self._callback})

    def attach(self, instance: Any) -> Any:
        """A messenger for everything between instance creation and destruction."""
        ffi = self.ffi
        create = ffi.cast("PFN_vkCreateDebugUtilsMessengerEXT", self.lib.vkGetInstanceProcAddr(
            instance, b"vkCreateDebugUtilsMessengerEXT"))
        out = ffi.new("VkDebugUtilsMessengerEXT *")
        result = create(instance, self._messenger_info(), ffi.NULL, out)
        if result != 0:
            raise RuntimeError(f"vkCreateDebugUtilsMessengerEXT returned {result}")
        return out[0]

    def detach(self, instance: Any, messenger: Any) -> None:
        destroy = self.ffi.cast("PFN_vkDestroyDebugUtilsMessengerEXT",
                                self.lib.vkGetInstanceProcAddr(
                                    instance, b"vkDestroyDebugUtilsMessengerEXT"))
        destroy(instance, messenger, self.ffi.NULL)

    def patch_instance_info(self, info: Any, keep: list[Any]) -> None:
        """Add the layer, VK_EXT_debug_utils and a messenger to a ``VkInstanceCreateInfo *``."""
        ffi = self.ffi
        layer = ffi.new("char[]", LAYER.encode())
        layers = ffi.new("char *[]", [layer])
        names = [ffi.string(info.ppEnabledExtensionNames[i])
                 for i in range(int(info.enabledExtensionCount))]
        if DEBUG_UTILS.encode() not in names:
            names.append(DEBUG_UTILS.encode())
        ext_items = [ffi.new("char[]", n) for n in names]
        exts = ffi.new("char *[]", ext_items)
        messenger = self._messenger_info()
        messenger.pNext = info.pNext
        keep += [layer, layers, ext_items, exts, messenger]
        info.pNext = messenger
        info.enabledLayerCount = 1
        info.ppEnabledLayerNames = layers
        info.enabledExtensionCount = len(ext_items)
        info.ppEnabledExtensionNames = exts
