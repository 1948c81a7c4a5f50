"""What the emulated CUDA device says about itself.

Apps and cudart size their launches from these answers (warp size, block and grid limits, shared
memory per block, SM count), and cudart's integrity check hashes the UUID and PCI ids, so every
`CUdevice_attribute` gets a value a real Turing-class GPU would give. Compute capability 7.5 is
what nvcc 13 targets by default, so the PTX of a default build is "native" here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rgpu.server.cuda.attributes import CUdevice_attribute as A
from rgpu.server.cuda.backend import CudaDeviceFacts

DEVICE_NAME = "RGPU Emulated CUDA Device"
COMPUTE_CAPABILITY = (7, 5)
DEVICE_ARCH = 75
DRIVER_VERSION = 13000  # CUDA 13.0, the cuda.h this layer is written against
NVIDIA_PCI_VENDOR = 0x10DE

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIM = (1024, 1024, 64)
MAX_GRID_DIM = (2**31 - 1, 65535, 65535)
SHARED_MEMORY_PER_BLOCK = 48 << 10
SHARED_MEMORY_PER_BLOCK_OPTIN = 64 << 10
TOTAL_CONSTANT_MEMORY = 64 << 10
WARP_SIZE = 32
MAX_THREADS_PER_MULTIPROCESSOR = 1024
MAX_BLOCKS_PER_MULTIPROCESSOR = 16
REGISTERS_PER_MULTIPROCESSOR = 65536
STREAM_PRIORITY_LEAST = 0
STREAM_PRIORITY_GREATEST = -5

_UUID_NAMESPACE = uuid.UUID("3f1d2a86-6c0e-4d59-9c4e-2b1f0e7a5c11")


@dataclass(frozen=True)
class EmuDeviceConfig:
    """How to build the emulated devices of one server.

    `memory_size` bytes of device memory are reserved per device but committed only as pages
    are touched; `seed` makes the UUIDs stable across restarts (and distinct between servers
    that set different seeds); `clock` (seconds, monotonic) times events and is injectable.
    """

    memory_size: int = 4 << 30
    device_count: int = 1
    name: str = DEVICE_NAME
    seed: str = "rgpu-emu"
    multiprocessor_count: int = 16
    driver_version: int = DRIVER_VERSION
    clock: Callable[[], float] = field(default=time.perf_counter)
    # Device addresses of device 0 start here; devices of one server follow each other.
    address_base: int = 0x7F00_0000_0000
    pci_bus_base: int = 0x50

    @classmethod
    def for_server(cls, identity: int, **kwargs: Any) -> EmuDeviceConfig:
        """Settings that make this server's devices distinct from other servers' in one
        pool: UUIDs, PCI bus ids and device-address ranges all derive from `identity`
        (the server_id), so `cuDeviceGetByPCIBusId`, UUID-based deduplication and the shim's
        pointer routing never confuse two emulated servers."""
        if not identity:
            return cls(**kwargs)
        slot = identity % 16  # 16 slots of 64 GiB inside 0x7F00_0000_0000..0x7FFF_FFFF_FFFF
        return cls(seed=f"rgpu-emu/{identity}", address_base=0x7F00_0000_0000 + (slot << 36),
                   pci_bus_base=1 + identity % 200, **kwargs)

    def device_base(self, ordinal: int) -> int:
        stride = (self.memory_size + (4 << 30) - 1) // (4 << 30) * (4 << 30)
        return self.address_base + ordinal * stride


def device_uuid(seed: str, ordinal: int) -> bytes:
    """A stable 16-byte UUID for device `ordinal` of a server seeded with `seed`."""
    return uuid.uuid5(_UUID_NAMESPACE, f"{seed}/{ordinal}").bytes


def _attribute_values(config: EmuDeviceConfig, ordinal: int) -> dict[int, int]:
    """Values for the attributes that matter; every other attribute is 0 (feature absent)."""
    sms = config.multiprocessor_count
    return {
        A.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: MAX_THREADS_PER_BLOCK,
        A.CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: MAX_BLOCK_DIM[0],
        A.CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: MAX_BLOCK_DIM[1],
        A.CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: MAX_BLOCK_DIM[2],
        A.CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: MAX_GRID_DIM[0],
        A.CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: MAX_GRID_DIM[1],
        A.CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: MAX_GRID_DIM[2],
        A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: SHARED_MEMORY_PER_BLOCK,
        A.CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: TOTAL_CONSTANT_MEMORY,
        A.CU_DEVICE_ATTRIBUTE_WARP_SIZE: WARP_SIZE,
        A.CU_DEVICE_ATTRIBUTE_MAX_PITCH: 2**31 - 1,
        A.CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: 65536,
        A.CU_DEVICE_ATTRIBUTE_CLOCK_RATE: 1590000,
        A.CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: 512,
        A.CU_DEVICE_ATTRIBUTE_GPU_OVERLAP: 1,
        A.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: sms,
        A.CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT: 0,
        A.CU_DEVICE_ATTRIBUTE_INTEGRATED: 0,
        A.CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: 1,  # the shim keeps mapped memory coherent
        A.CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: 0,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH: 131072,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_WIDTH: 131072,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_HEIGHT: 65536,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH: 16384,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT: 16384,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH: 16384,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_HEIGHT: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_LAYERS: 2048,
        A.CU_DEVICE_ATTRIBUTE_SURFACE_ALIGNMENT: 512,
        A.CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: 1,
        A.CU_DEVICE_ATTRIBUTE_ECC_ENABLED: 0,
        A.CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: config.pci_bus_base + ordinal,
        A.CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: 0,
        A.CU_DEVICE_ATTRIBUTE_TCC_DRIVER: 0,
        A.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: 5001000,
        A.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: 256,
        A.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: 4 << 20,
        A.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: MAX_THREADS_PER_MULTIPROCESSOR,
        A.CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: 2,
        A.CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: 1,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_LAYERS: 2048,
        A.CU_DEVICE_ATTRIBUTE_CAN_TEX2D_GATHER: 0,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_HEIGHT: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE: 8192,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE: 8192,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE: 32768,
        A.CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: 0,
        A.CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT: 32,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS: 2046,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_WIDTH: 131072,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_HEIGHT: 65536,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_WIDTH: 16384,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_HEIGHT: 16384,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_DEPTH: 16384,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_LAYERS: 2048,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_HEIGHT: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_LAYERS: 2048,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS: 2046,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LINEAR_WIDTH: 268435456,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_WIDTH: 131072,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_HEIGHT: 65000,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_PITCH: 2097120,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT: 32768,
        A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: COMPUTE_CAPABILITY[0],
        A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: COMPUTE_CAPABILITY[1],
        A.CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH: 32768,
        A.CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED: 1,
        A.CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED: 1,
        A.CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED: 1,
        A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: SHARED_MEMORY_PER_BLOCK_OPTIN,
        A.CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: REGISTERS_PER_MULTIPROCESSOR,
        A.CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: 1,  # so does it managed memory
        A.CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD: 0,
        A.CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID: ordinal,
        A.CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO: 32,
        A.CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED: 1,
        A.CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: 1,  # grid.sync() in one batch of blocks
        A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: SHARED_MEMORY_PER_BLOCK_OPTIN,
        A.CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: MAX_BLOCKS_PER_MULTIPROCESSOR,
        A.CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK: 0,
        A.CU_DEVICE_ATTRIBUTE_MEM_SYNC_DOMAIN_COUNT: 1,
        A.CU_DEVICE_ATTRIBUTE_NUMA_ID: -1,
        A.CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID: -1,
        A.CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID: NVIDIA_PCI_VENDOR,
        A.CU_DEVICE_ATTRIBUTE_GPU_PCI_SUBSYSTEM_ID: 0,
    }


def emulated_device_facts(config: EmuDeviceConfig, ordinal: int) -> CudaDeviceFacts:
    """The facts of emulated device `ordinal`, answering every attribute of cuda.h."""
    values = _attribute_values(config, ordinal)
    attributes = {int(a): int(values.get(a, 0)) for a in A}
    return CudaDeviceFacts(
        name=config.name,
        uuid=device_uuid(config.seed, ordinal),
        total_memory=config.memory_size,
        compute_capability=COMPUTE_CAPABILITY,
        attributes=attributes,
        pci_domain_id=attributes[A.CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID],
        pci_bus_id=attributes[A.CU_DEVICE_ATTRIBUTE_PCI_BUS_ID],
        pci_device_id=attributes[A.CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID],
        driver_version=config.driver_version,
        backend="emu",
    )
