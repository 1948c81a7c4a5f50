"""Find the GPUs this server can share, as one list across CUDA and Vulkan.

Clients see a server's GPUs as a single numbered list, and a token's ``allowed_gpus`` and the
server's ``expose_gpus`` use those numbers, so the order must be stable from one start to the
next: CUDA devices first in CUDA order, then the Vulkan devices no CUDA device accounts for. An
NVIDIA GPU is visible to both APIs; it is one GPU to a user, so the two views are merged by
device UUID (Vulkan's ``deviceUUID`` equals CUDA's device UUID on NVIDIA drivers).

CUDA devices come in as :class:`CudaDeviceSummary` records built by the caller from whichever
CUDA backend is active (cuda-python or the emulated CPU device), so that discovery does not
initialise CUDA itself. Vulkan devices are enumerated here through the ``vulkan`` package's raw
cffi ``lib``, over a loader pinned to the host's drivers (see :mod:`rgpu.server.vkloader`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from rgpu.errors import RgpuError
from rgpu.server.vkloader import host_vulkan_icds, import_pinned_vulkan, pin_host_vulkan_loader

__all__ = [
    "CudaDeviceSummary",
    "GpuInfo",
    "UnknownGpuIndex",
    "discover_gpus",
    "enumerate_vulkan_devices",
    "format_gpu_lines",
    "host_vulkan_icds",
    "pin_host_vulkan_loader",
]

logger = logging.getLogger("rgpu.server.discovery")

#: ``VkPhysicalDeviceType`` values, by their numbers in the Vulkan specification.
_VK_DEVICE_TYPES = {0: "other", 1: "integrated", 2: "discrete", 3: "virtual", 4: "cpu"}

_NVIDIA_VENDOR_ID = 0x10DE
_EMULATED_DRIVER = "rgpu-emu"


@dataclass(frozen=True)
class GpuInfo:
    """One GPU of this server, as clients and ``rgpu info`` see it.

    ``index`` is the server-local number users and tokens refer to; ``vulkan_index`` and
    ``cuda_index`` are the positions in each API's own enumeration, which the backends need to
    open the device. ``uuid`` is the hex of the 16-byte device UUID ("" where the driver reports
    none).
    """

    index: int
    name: str
    device_type: str
    memory: int
    vulkan: bool
    cuda: bool
    compute_capability: tuple[int, int] | None
    uuid: str
    vendor_id: int
    device_id: int
    driver: str
    vulkan_api_version: str | None
    vulkan_index: int | None
    cuda_index: int | None

    def to_dict(self) -> dict[str, Any]:
        """A msgpack- and JSON-friendly record (the compute capability becomes a list)."""
        record = asdict(self)
        if self.compute_capability is not None:
            record["compute_capability"] = list(self.compute_capability)
        return record

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GpuInfo:
        """Rebuild a record sent by :meth:`to_dict`.

        Keys this version does not know are ignored, so a newer server can add fields without
        breaking older clients; a missing field is an error because a default would be a guess.
        """
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in d]
        if missing:
            raise ValueError(f"GPU record lacks field(s) {', '.join(missing)}")
        values = {name: d[name] for name in names}
        cc = values["compute_capability"]
        if cc is not None:
            major, minor = cc
            values["compute_capability"] = (int(major), int(minor))
        return cls(**values)


@dataclass(frozen=True)
class CudaDeviceSummary:
    """What discovery needs to know about one CUDA device, real or emulated.

    ``pci_bus_id`` is carried for callers that order or report devices by bus; merging uses the
    UUID only, which is unique where bus ids repeat across PCI domains.
    """

    name: str
    uuid: bytes
    total_memory: int
    compute_capability: tuple[int, int]
    emulated: bool
    pci_bus_id: int = 0


class UnknownGpuIndex(RgpuError, ValueError):
    """``expose_gpus`` names a GPU this server does not have."""


def _version_string(version: int) -> str:
    """``VK_MAKE_API_VERSION`` decoded to "major.minor.patch" (the variant is always 0)."""
    return f"{(version >> 22) & 0x7F}.{(version >> 12) & 0x3FF}.{version & 0xFFF}"


def _enumerate_physical_devices(ffi: Any, lib: Any, instance: Any) -> list[Any]:
    """``vkEnumeratePhysicalDevices`` with the count/array idiom, retried on ``VK_INCOMPLETE``.

    A device can appear between the two calls (hot plug, a driver finishing start-up); the
    loop asks again instead of returning a truncated list.
    """
    count = ffi.new("uint32_t *")
    while True:
        result = lib.vkEnumeratePhysicalDevices(instance, count, ffi.NULL)
        if result != lib.VK_SUCCESS:
            raise RuntimeError(f"vkEnumeratePhysicalDevices returned {result}")
        devices = ffi.new("VkPhysicalDevice[]", count[0])
        result = lib.vkEnumeratePhysicalDevices(instance, count, devices)
        if result == lib.VK_SUCCESS:
            return [devices[i] for i in range(count[0])]
        if result != lib.VK_INCOMPLETE:
            raise RuntimeError(f"vkEnumeratePhysicalDevices returned {result}")


def _describe_physical_device(
    ffi: Any, lib: Any, device: Any, index: int, instance_version: int
) -> dict[str, Any]:
    """The facts discovery keeps about one ``VkPhysicalDevice``, as plain Python values."""
    props = ffi.new("VkPhysicalDeviceProperties *")
    lib.vkGetPhysicalDeviceProperties(device, props)
    api_version = props.apiVersion
    usable_version = min(api_version, instance_version)

    uuid = ""
    driver = f"0x{props.driverVersion:x}"
    # vkGetPhysicalDeviceProperties2 is core in 1.1 and VkPhysicalDeviceDriverProperties in 1.2;
    # chaining a structure the device does not know would be invalid usage.
    if usable_version >= (1 << 22) | (1 << 12):
        id_props = ffi.new(
            "VkPhysicalDeviceIDProperties *",
            {"sType": lib.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES},
        )
        chain = ffi.cast("void *", id_props)
        driver_props = None
        if usable_version >= (1 << 22) | (2 << 12):
            driver_props = ffi.new(
                "VkPhysicalDeviceDriverProperties *",
                {"sType": lib.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES},
            )
            id_props.pNext = ffi.cast("void *", driver_props)
        props2 = ffi.new(
            "VkPhysicalDeviceProperties2 *",
            {"sType": lib.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, "pNext": chain},
        )
        lib.vkGetPhysicalDeviceProperties2(device, props2)
        uuid = bytes(ffi.buffer(id_props.deviceUUID)).hex()
        if driver_props is not None:
            name = ffi.string(driver_props.driverName).decode("utf-8", "replace")
            info = ffi.string(driver_props.driverInfo).decode("utf-8", "replace")
            driver = f"{name} {info}".strip() or driver

    memory_props = ffi.new("VkPhysicalDeviceMemoryProperties *")
    lib.vkGetPhysicalDeviceMemoryProperties(device, memory_props)
    memory = sum(
        memory_props.memoryHeaps[i].size
        for i in range(memory_props.memoryHeapCount)
        if memory_props.memoryHeaps[i].flags & lib.VK_MEMORY_HEAP_DEVICE_LOCAL_BIT
    )

    return {
        "vulkan_index": index,
        "name": ffi.string(props.deviceName).decode("utf-8", "replace"),
        "device_type": _VK_DEVICE_TYPES.get(props.deviceType, "other"),
        "memory": int(memory),
        "uuid": uuid,
        "vendor_id": int(props.vendorID),
        "device_id": int(props.deviceID),
        "driver": driver,
        "api_version": _version_string(api_version),
    }


def enumerate_vulkan_devices(
    *, pin: bool = True, environ: MutableMapping[str, str] = os.environ
) -> list[dict[str, Any]]:
    """Describe every Vulkan physical device of the host; ``[]`` if Vulkan is unavailable.

    Each dict has ``vulkan_index``, ``name``, ``device_type``, ``memory``, ``uuid``,
    ``vendor_id``, ``device_id``, ``driver`` and ``api_version``. A server without Vulkan is
    still a useful CUDA server, so a missing loader, no driver, or a driver that fails is a
    logged warning, never an exception.

    With ``pin`` (the default) the loader of this process is first pinned to the host's drivers
    through ``environ``, which must be ``os.environ`` for the pin to reach the loader. This works
    whether or not ``vulkan`` was imported before, because the loader reads its driver variables
    at each ``vkCreateInstance`` (measured with loader 1.3.239; see :mod:`rgpu.server.vkloader`).
    The pin is left in place: it is what every later instance of the server must see too.
    """
    try:
        if pin:
            vk_raw = import_pinned_vulkan(environ)
        else:
            import vulkan._vulkan as vk_raw
    except (ImportError, OSError) as exc:
        logger.warning("cannot load the Vulkan loader (%s); no Vulkan GPUs", exc)
        return []
    try:
        return _enumerate_with(vk_raw.ffi, vk_raw.lib)
    except Exception as exc:  # a broken driver must not take the server down
        logger.warning("Vulkan device enumeration failed (%s); no Vulkan GPUs", exc)
        return []


def _enumerate_with(ffi: Any, lib: Any) -> list[dict[str, Any]]:
    """Create a throw-away instance, describe its physical devices, destroy it."""
    instance_version = (1 << 22) | (0 << 12)
    try:
        enumerate_instance_version = lib.vkEnumerateInstanceVersion
    except AttributeError:  # a 1.0 loader
        enumerate_instance_version = None
    if enumerate_instance_version is not None:
        version = ffi.new("uint32_t *")
        if enumerate_instance_version(version) == lib.VK_SUCCESS:
            instance_version = version[0]
    # Ask for at most 1.3: the cdef of the vulkan package is 1.3, and nothing newer is needed.
    requested = min(instance_version, (1 << 22) | (3 << 12))
    app_name = ffi.new("char[]", b"rgpu-server")
    app_info = ffi.new(
        "VkApplicationInfo *",
        {
            "sType": lib.VK_STRUCTURE_TYPE_APPLICATION_INFO,
            "pApplicationName": app_name,
            "pEngineName": app_name,
            "apiVersion": requested,
        },
    )
    create_info = ffi.new(
        "VkInstanceCreateInfo *",
        {"sType": lib.VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, "pApplicationInfo": app_info},
    )
    instance_ptr = ffi.new("VkInstance *")
    result = lib.vkCreateInstance(create_info, ffi.NULL, instance_ptr)
    if result == lib.VK_ERROR_INCOMPATIBLE_DRIVER:
        logger.warning(
            "no Vulkan driver found (VK_DRIVER_FILES=%s); no Vulkan GPUs",
            os.environ.get("VK_DRIVER_FILES", "<unset>"),
        )
        return []
    if result != lib.VK_SUCCESS:
        logger.warning("vkCreateInstance returned %s; no Vulkan GPUs", result)
        return []
    instance = instance_ptr[0]
    try:
        devices = _enumerate_physical_devices(ffi, lib, instance)
        return [
            _describe_physical_device(ffi, lib, device, i, requested)
            for i, device in enumerate(devices)
        ]
    finally:
        lib.vkDestroyInstance(instance, ffi.NULL)


def _from_cuda(
    summary: CudaDeviceSummary, cuda_index: int, vk: Mapping[str, Any] | None
) -> GpuInfo:
    """One GPU from a CUDA device, enriched by its Vulkan view when both see it."""
    if summary.emulated:
        device_type, vendor_id, device_id, driver = "cpu", 0, 0, _EMULATED_DRIVER
    elif vk is not None:
        device_type = vk["device_type"]
        vendor_id, device_id, driver = vk["vendor_id"], vk["device_id"], vk["driver"]
    else:
        device_type, vendor_id, device_id, driver = "discrete", _NVIDIA_VENDOR_ID, 0, "NVIDIA"
    major, minor = summary.compute_capability
    return GpuInfo(
        index=cuda_index,
        name=summary.name,
        device_type=device_type,
        memory=int(summary.total_memory),
        vulkan=vk is not None,
        cuda=True,
        compute_capability=(int(major), int(minor)),
        uuid=summary.uuid.hex(),
        vendor_id=vendor_id,
        device_id=device_id,
        driver=driver,
        vulkan_api_version=vk["api_version"] if vk is not None else None,
        vulkan_index=vk["vulkan_index"] if vk is not None else None,
        cuda_index=cuda_index,
    )


def _from_vulkan(vk: Mapping[str, Any], index: int) -> GpuInfo:
    """One GPU that only Vulkan sees (lavapipe, AMD, Intel, an NVIDIA GPU without CUDA)."""
    return GpuInfo(
        index=index,
        name=vk["name"],
        device_type=vk["device_type"],
        memory=int(vk["memory"]),
        vulkan=True,
        cuda=False,
        compute_capability=None,
        uuid=vk["uuid"],
        vendor_id=vk["vendor_id"],
        device_id=vk["device_id"],
        driver=vk["driver"],
        vulkan_api_version=vk["api_version"],
        vulkan_index=vk["vulkan_index"],
        cuda_index=None,
    )


def _is_real_uuid(uuid: str) -> bool:
    """Whether a UUID can identify a device: drivers without one report zeros or nothing."""
    return bool(uuid) and any(c != "0" for c in uuid)


def discover_gpus(
    cuda_devices: Sequence[CudaDeviceSummary] = (),
    vulkan: bool = True,
    expose: Sequence[int] | None = None,
    *,
    vulkan_devices: Sequence[Mapping[str, Any]] | None = None,
) -> list[GpuInfo]:
    """The server's GPUs: CUDA devices in CUDA order, then Vulkan-only devices in Vulkan order.

    A real CUDA device and a Vulkan device with the same UUID are one GPU. The emulated CUDA
    device is never merged: it runs on the CPU and shares nothing with a Vulkan device.
    ``vulkan_devices`` replaces :func:`enumerate_vulkan_devices` (records in its format), for
    callers that enumerated already and for tests; ``vulkan=False`` skips Vulkan entirely.

    ``expose`` (the ``expose_gpus`` setting) keeps only the GPUs with those indices and
    renumbers them 0..K-1 in their original order, because clients must see a dense list.
    An index that does not exist raises :class:`UnknownGpuIndex` (a ``ValueError``).
    """
    if not vulkan:
        vk_records: list[Mapping[str, Any]] = []
    elif vulkan_devices is not None:
        vk_records = list(vulkan_devices)
    else:
        vk_records = list(enumerate_vulkan_devices())

    unmatched = list(vk_records)
    gpus: list[GpuInfo] = []
    for cuda_index, summary in enumerate(cuda_devices):
        match = None
        uuid = summary.uuid.hex()
        if not summary.emulated and _is_real_uuid(uuid):
            match = next((vk for vk in unmatched if vk["uuid"] == uuid), None)
            if match is not None:
                unmatched.remove(match)
        gpus.append(_from_cuda(summary, cuda_index, match))
    for vk in unmatched:
        gpus.append(_from_vulkan(vk, len(gpus)))

    if expose is None:
        return gpus
    for wanted in expose:
        if not 0 <= wanted < len(gpus):
            have = f"GPUs 0..{len(gpus) - 1}" if gpus else "no GPUs"
            raise UnknownGpuIndex(
                f"expose_gpus names GPU {wanted}, but this server has {len(gpus)} GPU(s) "
                f"({have}); fix expose_gpus in the server config or run `rgpu info`"
            )
    keep = set(expose)
    exposed = [gpu for gpu in gpus if gpu.index in keep]
    return [replace(gpu, index=new_index) for new_index, gpu in enumerate(exposed)]


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def format_gpu_lines(gpus: Sequence[GpuInfo]) -> str:
    """Human-readable GPU list for ``rgpu info``: a title line and a facts line per GPU."""
    if not gpus:
        return "No GPUs found."
    lines: list[str] = []
    for gpu in gpus:
        compute = "-" if gpu.compute_capability is None else "{}.{}".format(*gpu.compute_capability)
        lines.append(f"GPU {gpu.index}: {gpu.name}")
        lines.append(
            f"  Type: {gpu.device_type} | VRAM: {_gib(gpu.memory)} | "
            f"Vulkan: {str(gpu.vulkan).lower()} | CUDA: {str(gpu.cuda).lower()} | "
            f"Compute: {compute}"
        )
    return "\n".join(lines)
