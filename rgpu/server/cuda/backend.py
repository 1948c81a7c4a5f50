"""The CUDA backend interface: what the server does with the driver calls a shim forwards.

Two backends implement it: the emulated CPU device (`rgpu.server.cuda.emu`) and, later, the
NVIDIA one over cuda-python. The server's wire layer maps each forwarded call onto the session
method of the same name, so the methods keep the driver API's names and argument order (minus
the output pointers, which become return values), and they fail only with `CudaError` carrying
the driver's own `CUresult`.

Conventions every backend follows (DESIGN.md, "CUDA path"):

- Handles of contexts, streams, events, modules, libraries, functions and kernels are integer
  ids chosen by the client, passed in at creation, so creating one needs no round trip. Ids are
  per session. Because `cuLaunchKernel` and `cuFuncGetParamInfo` accept a CUkernel where a
  CUfunction is expected (cudart does this), a function id and a kernel id of one session must
  not be equal; an id that names nothing is CUDA_ERROR_INVALID_HANDLE.
- Device pointers are the device's real addresses (they travel inside kernel parameters).
- Stream 0 is the legacy default stream, stream 1 (`CU_STREAM_LEGACY`) and 2
  (`CU_STREAM_PER_THREAD`) name it too.
- Context-bound calls act on the session's current context, as the driver does for the calling
  thread (the server runs each session's calls on one worker thread): set by `cuCtxSetCurrent`,
  `cuCtxPushCurrent_v2` and `cuCtxCreate_v4`; a primary context retained while none is current
  becomes current too, sparing a round trip.
- Arguments and results are msgpack-friendly: int, float, str, bytes, lists and dicts.
- A launch fault (illegal or misaligned address, unspecified launch failure) is sticky: that call
  and every later call on the context raise the same CudaError until the context is destroyed
  or reset; other contexts and sessions are unaffected.
- `close()` releases everything the session created, allocated or loaded.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from rgpu.server.cuda.attributes import CUdevice_attribute

# Host/device memory kinds of CUDA_MEMCPY2D (`CUmemorytype`).
CU_MEMORYTYPE_HOST = 1
CU_MEMORYTYPE_DEVICE = 2
CU_MEMORYTYPE_ARRAY = 3
CU_MEMORYTYPE_UNIFIED = 4

# Special stream handles (cuda.h `CU_STREAM_LEGACY`, `CU_STREAM_PER_THREAD`).
CU_STREAM_LEGACY = 1
CU_STREAM_PER_THREAD = 2

# Event flags.
CU_EVENT_DEFAULT = 0
CU_EVENT_BLOCKING_SYNC = 1
CU_EVENT_DISABLE_TIMING = 2


@dataclass(frozen=True)
class CudaDeviceFacts:
    """Everything the shim answers locally about one GPU, fetched once per GPU.

    `attributes` maps every `CUdevice_attribute` value in cuda.h to the device's answer, so
    `cuDeviceGetAttribute` never needs a round trip; `uuid` is the 16 raw bytes of `CUuuid`.
    """

    name: str
    uuid: bytes
    total_memory: int
    compute_capability: tuple[int, int]
    attributes: dict[int, int]
    pci_domain_id: int
    pci_bus_id: int
    pci_device_id: int
    driver_version: int
    backend: str = "nvidia"
    extra: dict[str, Any] = field(default_factory=dict)

    def attribute(self, attrib: int) -> int:
        """`cuDeviceGetAttribute` from the snapshot."""
        return self.attributes[int(attrib)]

    @property
    def pci_bus_id_string(self) -> str:
        """The `cuDeviceGetPCIBusId` form, e.g. '0000:52:00.0'."""
        return f"{self.pci_domain_id:04x}:{self.pci_bus_id:02x}:{self.pci_device_id:02x}.0"

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-friendly dict (attribute keys become ints, tuples lists)."""
        return {
            "name": self.name,
            "uuid": self.uuid,
            "total_memory": self.total_memory,
            "compute_capability": list(self.compute_capability),
            "attributes": dict(self.attributes),
            "pci_domain_id": self.pci_domain_id,
            "pci_bus_id": self.pci_bus_id,
            "pci_device_id": self.pci_device_id,
            "driver_version": self.driver_version,
            "backend": self.backend,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> CudaDeviceFacts:
        """Inverse of `to_wire`."""
        return cls(
            name=data["name"],
            uuid=bytes(data["uuid"]),
            total_memory=int(data["total_memory"]),
            compute_capability=(int(data["compute_capability"][0]),
                                int(data["compute_capability"][1])),
            attributes={int(k): int(v) for k, v in data["attributes"].items()},
            pci_domain_id=int(data["pci_domain_id"]),
            pci_bus_id=int(data["pci_bus_id"]),
            pci_device_id=int(data["pci_device_id"]),
            driver_version=int(data["driver_version"]),
            backend=str(data.get("backend", "nvidia")),
            extra=dict(data.get("extra", {})),
        )

    def missing_attributes(self) -> list[int]:
        """Attribute values of cuda.h the snapshot does not answer (should be empty)."""
        return sorted({int(a) for a in CUdevice_attribute} - set(self.attributes))


class CudaSession(abc.ABC):
    """One client's view of the backend's devices: its contexts, memory, code and work.

    Method names are the driver API's (current CUDA 13 versions), outputs are return values.
    """

    name: str

    # --- lifetime ---------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Release every context, allocation, module, stream and event of the session."""

    # --- contexts ---------------------------------------------------------------------------
    @abc.abstractmethod
    def cuDevicePrimaryCtxRetain(self, ctx: int, dev: int) -> None:
        """Retain the device's primary context under id `ctx` (current if none is)."""

    @abc.abstractmethod
    def cuDevicePrimaryCtxRelease_v2(self, dev: int) -> None:
        """Drop one retain; the last one releases the primary context's resources."""

    @abc.abstractmethod
    def cuDevicePrimaryCtxReset_v2(self, dev: int) -> dict[str, str] | None:
        """Destroy the primary context's resources (and a sticky error) keeping its id."""

    @abc.abstractmethod
    def cuDevicePrimaryCtxGetState(self, dev: int) -> list[int]:
        """[flags, active]."""

    @abc.abstractmethod
    def cuDevicePrimaryCtxSetFlags_v2(self, dev: int, flags: int) -> None:
        """Record the primary context's flags."""

    @abc.abstractmethod
    def cuCtxCreate_v4(self, ctx: int, flags: int, dev: int) -> None:
        """Create a context with id `ctx` on `dev` and make it current."""

    @abc.abstractmethod
    def cuCtxDestroy_v2(self, ctx: int) -> None:
        """Destroy a created context and everything allocated or loaded in it."""

    @abc.abstractmethod
    def cuCtxSetCurrent(self, ctx: int) -> None:
        """Make `ctx` current for the session's later calls (0 unbinds)."""

    @abc.abstractmethod
    def cuCtxGetCurrent(self) -> int:
        """The current context id, 0 when none."""

    @abc.abstractmethod
    def cuCtxPushCurrent_v2(self, ctx: int) -> None:
        """Push `ctx` on the session's context stack."""

    @abc.abstractmethod
    def cuCtxPopCurrent_v2(self) -> int:
        """Pop the context stack, returning the popped id."""

    @abc.abstractmethod
    def cuCtxGetDevice(self) -> int:
        """Ordinal of the current context's device."""

    @abc.abstractmethod
    def cuCtxSynchronize(self) -> dict[str, str] | None:
        """Wait for all work of the current context; reports sticky errors. A backend that
        captures kernel printf output returns what is pending as ``{"printf": text}`` (here
        and from the other synchronising calls); the shim writes it to the app's stdout."""

    @abc.abstractmethod
    def cuCtxGetLimit(self, limit: int) -> int:
        """A `CUlimit` value of the current context."""

    @abc.abstractmethod
    def cuCtxSetLimit(self, limit: int, value: int) -> None:
        """Set a `CUlimit` of the current context."""

    @abc.abstractmethod
    def cuCtxGetFlags(self) -> int:
        """Flags of the current context."""

    @abc.abstractmethod
    def cuCtxGetStreamPriorityRange(self) -> list[int]:
        """[leastPriority, greatestPriority] of streams."""

    # --- memory -----------------------------------------------------------------------------
    @abc.abstractmethod
    def cuMemAlloc_v2(self, bytesize: int) -> int:
        """Allocate device memory in the current context; returns the device pointer."""

    @abc.abstractmethod
    def cuMemAllocPitch_v2(self, width: int, height: int, element_size: int) -> list[int]:
        """Allocate a pitched 2D area; returns [dptr, pitch]."""

    @abc.abstractmethod
    def cuMemFree_v2(self, dptr: int) -> None:
        """Free an allocation made by this session."""

    @abc.abstractmethod
    def cuMemGetInfo_v2(self) -> list[int]:
        """[free, total] bytes of the current context's device."""

    @abc.abstractmethod
    def cuMemGetAddressRange_v2(self, dptr: int) -> list[int]:
        """[base, size] of the allocation containing `dptr`."""

    @abc.abstractmethod
    def cuMemcpyHtoD_v2(self, dst: int, data: bytes) -> None:
        """Copy host bytes to device memory (synchronous, on the legacy stream)."""

    @abc.abstractmethod
    def cuMemcpyDtoH_v2(self, src: int, bytesize: int) -> bytes:
        """Copy device memory to the host (synchronous)."""

    @abc.abstractmethod
    def cuMemcpyDtoD_v2(self, dst: int, src: int, bytesize: int) -> None:
        """Copy between device allocations (overlap allowed, as memmove)."""

    @abc.abstractmethod
    def cuMemcpy(self, dst: int, src: int, bytesize: int) -> None:
        """Unified-addressing copy; on the server both sides are device pointers (the shim
        turns copies involving host memory into HtoD / DtoH)."""

    @abc.abstractmethod
    def cuMemcpyAsync(self, dst: int, src: int, bytesize: int, stream: int) -> None:
        """`cuMemcpy` in stream order."""

    @abc.abstractmethod
    def cuPointerGetAttribute(self, attribute: int, ptr: int) -> int:
        """A `CUpointer_attribute` of a device pointer (context id, memory type, range ...)."""

    @abc.abstractmethod
    def cuMemcpyHtoDAsync_v2(self, dst: int, data: bytes, stream: int) -> None:
        """`cuMemcpyHtoD_v2` in stream order."""

    @abc.abstractmethod
    def cuMemcpyDtoHAsync_v2(self, src: int, bytesize: int, stream: int) -> bytes:
        """`cuMemcpyDtoH_v2` in stream order; the bytes are those after prior stream work."""

    @abc.abstractmethod
    def cuMemcpyDtoDAsync_v2(self, dst: int, src: int, bytesize: int, stream: int) -> None:
        """`cuMemcpyDtoD_v2` in stream order."""

    @abc.abstractmethod
    def cuMemcpy2D_v2(self, copy: dict[str, int], host_data: bytes | None = None) -> bytes | None:
        """A 2D copy described by CUDA_MEMCPY2D's fields (srcXInBytes, srcY, srcMemoryType,
        srcDevice, srcPitch, dstXInBytes, dstY, dstMemoryType, dstDevice, dstPitch,
        WidthInBytes, Height). A host source is `host_data`, rows packed back to back
        (WidthInBytes each); a host destination is returned packed the same way."""

    @abc.abstractmethod
    def cuMemcpy2DAsync_v2(
        self, copy: dict[str, int], stream: int, host_data: bytes | None = None
    ) -> bytes | None:
        """`cuMemcpy2D_v2` in stream order."""

    @abc.abstractmethod
    def cuMemsetD8_v2(self, dst: int, value: int, count: int) -> None:
        """Fill `count` bytes."""

    @abc.abstractmethod
    def cuMemsetD16_v2(self, dst: int, value: int, count: int) -> None:
        """Fill `count` 16-bit words (dst 2-byte aligned)."""

    @abc.abstractmethod
    def cuMemsetD32_v2(self, dst: int, value: int, count: int) -> None:
        """Fill `count` 32-bit words (dst 4-byte aligned)."""

    @abc.abstractmethod
    def cuMemsetD8Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """`cuMemsetD8_v2` in stream order."""

    @abc.abstractmethod
    def cuMemsetD16Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """`cuMemsetD16_v2` in stream order."""

    @abc.abstractmethod
    def cuMemsetD32Async(self, dst: int, value: int, count: int, stream: int) -> None:
        """`cuMemsetD32_v2` in stream order."""

    @abc.abstractmethod
    def cuMemsetD2D8_v2(
        self, dst: int, pitch: int, value: int, width: int, height: int
    ) -> None:
        """Fill a 2D area of bytes."""

    @abc.abstractmethod
    def cuMemsetD2D16_v2(
        self, dst: int, pitch: int, value: int, width: int, height: int
    ) -> None:
        """Fill a 2D area of 16-bit words (`width` in elements)."""

    @abc.abstractmethod
    def cuMemsetD2D32_v2(
        self, dst: int, pitch: int, value: int, width: int, height: int
    ) -> None:
        """Fill a 2D area of 32-bit words (`width` in elements)."""

    # --- CUDA arrays, texture and surface objects -------------------------------------------
    @abc.abstractmethod
    def cuArrayCreate_v2(self, array: int, desc: dict[str, Any]) -> None:
        """Create array `array` (a client-chosen id) from CUDA_ARRAY_DESCRIPTOR's fields
        (Width, Height, Format, NumChannels)."""

    @abc.abstractmethod
    def cuArray3DCreate_v2(self, array: int, desc: dict[str, Any]) -> None:
        """Create array `array` from CUDA_ARRAY3D_DESCRIPTOR's fields (Width, Height, Depth,
        Format, NumChannels, Flags)."""

    @abc.abstractmethod
    def cuArrayDestroy(self, array: int) -> None:
        """Destroy an array."""

    @abc.abstractmethod
    def cuArray3DGetDescriptor_v2(self, array: int) -> dict[str, int]:
        """The array's CUDA_ARRAY3D_DESCRIPTOR fields."""

    @abc.abstractmethod
    def cuMipmappedArrayCreate(self, mipmap: int, desc: dict[str, Any], num_levels: int) -> None:
        """Create mipmapped array `mipmap` (client-chosen id); `desc` describes level 0."""

    @abc.abstractmethod
    def cuMipmappedArrayGetLevel(self, array: int, mipmap: int, level: int) -> None:
        """Bind array id `array` to a level (it is destroyed with the mipmapped array)."""

    @abc.abstractmethod
    def cuMipmappedArrayDestroy(self, mipmap: int) -> None:
        """Destroy a mipmapped array and its levels."""

    @abc.abstractmethod
    def cuMemcpy3D_v2(self, copy: dict[str, Any], host_data: bytes | None = None) -> bytes | None:
        """A copy described by CUDA_MEMCPY3D's fields ({src,dst}{XInBytes, Y, Z, MemoryType,
        Device, Array, Pitch, Height}, WidthInBytes, Height, Depth); arrays are named by id. A
        host side is packed (WidthInBytes x Height x Depth, offsets 0): `host_data` for a
        source, the returned bytes for a destination. 2D copies with an array side take this
        path too."""

    @abc.abstractmethod
    def cuMemcpy3DAsync_v2(
        self, copy: dict[str, Any], stream: int, host_data: bytes | None = None
    ) -> bytes | None:
        """`cuMemcpy3D_v2` in stream order."""

    @abc.abstractmethod
    def cuTexObjectCreate(
        self, res_desc: dict[str, Any], tex_desc: dict[str, Any],
        view_desc: dict[str, Any] | None = None,
    ) -> int:
        """A texture object from CUDA_RESOURCE_DESC (resType and the fields of its kind:
        hArray as an array id; devPtr, format, numChannels, sizeInBytes; width, height,
        pitchInBytes; hMipmappedArray as an id), CUDA_TEXTURE_DESC and an optional
        CUDA_RESOURCE_VIEW_DESC, as dicts.
        Returns the value kernels receive, so it is the device's, not client-chosen."""

    @abc.abstractmethod
    def cuTexObjectDestroy(self, handle: int) -> None:
        """Destroy a texture object."""

    @abc.abstractmethod
    def cuSurfObjectCreate(self, res_desc: dict[str, Any]) -> int:
        """A surface object over an array created with CUDA_ARRAY3D_SURFACE_LDST."""

    @abc.abstractmethod
    def cuSurfObjectDestroy(self, handle: int) -> None:
        """Destroy a surface object."""

    # --- modules and libraries --------------------------------------------------------------
    @abc.abstractmethod
    def cuModuleLoadData(self, module: int, image: bytes) -> None:
        """Load a fatbin (or wrapper header + fatbin), cubin or PTX into the current context."""

    @abc.abstractmethod
    def cuModuleLoadDataEx(
        self, module: int, image: bytes, options: dict[int, int] | None = None
    ) -> None:
        """`cuModuleLoadData` with JIT options (`CUjit_option` -> value)."""

    @abc.abstractmethod
    def cuModuleLoadFatBinary(self, module: int, image: bytes) -> None:
        """`cuModuleLoadData` for a fatbin."""

    @abc.abstractmethod
    def cuModuleUnload(self, module: int) -> None:
        """Unload a module, freeing its globals."""

    @abc.abstractmethod
    def cuModuleGetFunction(self, func: int, module: int, name: str) -> None:
        """Bind id `func` to the kernel `name` of `module`."""

    @abc.abstractmethod
    def cuModuleGetGlobal_v2(self, module: int, name: str) -> list[int]:
        """[dptr, bytes] of a `__device__` / `__constant__` variable."""

    @abc.abstractmethod
    def cuLibraryLoadData(
        self,
        library: int,
        image: bytes,
        jit_options: dict[int, int] | None = None,
        library_options: dict[int, int] | None = None,
    ) -> None:
        """Load a context-independent library (cudart's path for every fatbin)."""

    @abc.abstractmethod
    def cuLibraryUnload(self, library: int) -> None:
        """Unload a library."""

    @abc.abstractmethod
    def cuLibraryGetKernel(self, kernel: int, library: int, name: str) -> None:
        """Bind id `kernel` to the kernel `name` of `library`."""

    @abc.abstractmethod
    def cuLibraryGetModule(self, module: int, library: int) -> None:
        """Bind id `module` to the library's module in the current context."""

    @abc.abstractmethod
    def cuLibraryGetGlobal(self, library: int, name: str) -> list[int]:
        """[dptr, bytes] of a library variable in the current context."""

    @abc.abstractmethod
    def cuLibraryGetManaged(self, library: int, name: str) -> list[int]:
        """[dptr, bytes] of a library's `__managed__` variable (CUDA_ERROR_NOT_FOUND for
        other names)."""

    @abc.abstractmethod
    def cuLibraryGetKernelCount(self, library: int) -> int:
        """Number of kernels in the library."""

    @abc.abstractmethod
    def cuKernelGetFunction(self, func: int, kernel: int) -> None:
        """Bind id `func` to the kernel's function in the current context."""

    @abc.abstractmethod
    def cuKernelGetName(self, kernel: int) -> str:
        """The kernel's (mangled) name."""

    @abc.abstractmethod
    def cuFuncGetName(self, func: int) -> str:
        """The function's (mangled) name."""

    @abc.abstractmethod
    def cuFuncGetParamInfo(self, func: int, param_index: int) -> list[int]:
        """[offset, size] of parameter `param_index`; past the last one is
        CUDA_ERROR_INVALID_VALUE (how callers find the count)."""

    @abc.abstractmethod
    def cuKernelGetParamInfo(self, kernel: int, param_index: int) -> list[int]:
        """`cuFuncGetParamInfo` for a CUkernel."""

    @abc.abstractmethod
    def cuFuncGetAttribute(self, attrib: int, func: int) -> int:
        """A `CUfunction_attribute` of a function."""

    @abc.abstractmethod
    def cuKernelGetAttribute(self, attrib: int, kernel: int, dev: int) -> int:
        """A `CUfunction_attribute` of a kernel on a device."""

    @abc.abstractmethod
    def cuFuncSetAttribute(self, func: int, attrib: int, value: int) -> None:
        """Set a settable `CUfunction_attribute` (dynamic shared memory limit, carveout)."""

    @abc.abstractmethod
    def cuKernelSetAttribute(self, attrib: int, value: int, kernel: int, dev: int) -> None:
        """`cuFuncSetAttribute` for a CUkernel."""

    @abc.abstractmethod
    def cuFuncSetCacheConfig(self, func: int, config: int) -> None:
        """Cache preference (a hint)."""

    # --- execution --------------------------------------------------------------------------
    @abc.abstractmethod
    def cuLaunchKernel(
        self,
        f: int,
        gridDimX: int,
        gridDimY: int,
        gridDimZ: int,
        blockDimX: int,
        blockDimY: int,
        blockDimZ: int,
        sharedMemBytes: int,
        hStream: int,
        kernelParams: bytes,
    ) -> None:
        """Launch function or kernel `f`; `kernelParams` is the packed parameter buffer laid
        out by `cuFuncGetParamInfo` (the `extra` form's buffer is the same bytes)."""

    @abc.abstractmethod
    def cuLaunchKernelEx(self, config: dict[str, Any], f: int, kernelParams: bytes) -> None:
        """A launch from CUlaunchConfig's fields (gridDimX/Y/Z, blockDimX/Y/Z, sharedMemBytes,
        hStream) and `attrs`, a list of [CUlaunchAttributeID, value]."""

    @abc.abstractmethod
    def cuLaunchCooperativeKernel(
        self,
        f: int,
        gridDimX: int,
        gridDimY: int,
        gridDimZ: int,
        blockDimX: int,
        blockDimY: int,
        blockDimZ: int,
        sharedMemBytes: int,
        hStream: int,
        kernelParams: bytes,
    ) -> None:
        """A launch whose blocks may synchronise with each other (grid sync)."""

    @abc.abstractmethod
    def cuOccupancyMaxActiveBlocksPerMultiprocessor(
        self, func: int, blockSize: int, dynamicSMemSize: int
    ) -> int:
        """How many blocks of `func` fit on one multiprocessor."""

    # --- streams and events -----------------------------------------------------------------
    @abc.abstractmethod
    def cuStreamCreate(self, stream: int, flags: int) -> None:
        """Create stream `stream` in the current context."""

    @abc.abstractmethod
    def cuStreamCreateWithPriority(self, stream: int, flags: int, priority: int) -> None:
        """Create a stream with a priority (a hint)."""

    @abc.abstractmethod
    def cuStreamGetPriority(self, stream: int) -> int:
        """The stream's priority."""

    @abc.abstractmethod
    def cuStreamGetFlags(self, stream: int) -> int:
        """The stream's flags."""

    @abc.abstractmethod
    def cuStreamGetCtx(self, stream: int) -> int:
        """Id of the stream's context."""

    @abc.abstractmethod
    def cuStreamDestroy_v2(self, stream: int) -> None:
        """Destroy a stream after its work completes."""

    @abc.abstractmethod
    def cuStreamSynchronize(self, stream: int) -> dict[str, str] | None:
        """Wait for a stream's work; reports sticky errors."""

    @abc.abstractmethod
    def cuStreamQuery(self, stream: int) -> dict[str, str] | None:
        """Return if the stream is idle, else raise CUDA_ERROR_NOT_READY."""

    @abc.abstractmethod
    def cuStreamWaitEvent(self, stream: int, event: int, flags: int) -> None:
        """Make later work on `stream` wait for the event's last record."""

    @abc.abstractmethod
    def cuEventCreate(self, event: int, flags: int) -> None:
        """Create event `event` in the current context."""

    @abc.abstractmethod
    def cuEventDestroy_v2(self, event: int) -> None:
        """Destroy an event."""

    @abc.abstractmethod
    def cuEventRecord(self, event: int, stream: int) -> None:
        """Record the event when `stream` reaches this point."""

    @abc.abstractmethod
    def cuEventRecordWithFlags(self, event: int, stream: int, flags: int) -> None:
        """`cuEventRecord` with flags."""

    @abc.abstractmethod
    def cuEventQuery(self, event: int) -> dict[str, str] | None:
        """Return if the event's work is done, else raise CUDA_ERROR_NOT_READY."""

    @abc.abstractmethod
    def cuEventSynchronize(self, event: int) -> dict[str, str] | None:
        """Wait for the event's work."""

    @abc.abstractmethod
    def cuEventElapsedTime_v2(self, start: int, end: int) -> float:
        """Milliseconds between two recorded events."""


class CudaBackend(abc.ABC):
    """The CUDA devices of one server process, shared by all sessions."""

    kind: str

    @abc.abstractmethod
    def cuDeviceGetCount(self) -> int:
        """Number of devices."""

    @abc.abstractmethod
    def device_facts(self, ordinal: int) -> CudaDeviceFacts:
        """The snapshot the shim answers device queries from."""

    @abc.abstractmethod
    def cuDriverGetVersion(self) -> int:
        """The driver version the shim reports (e.g. 13000)."""

    @abc.abstractmethod
    def open_session(self, session_name: str) -> CudaSession:
        """A session for one client connection; `session_name` tags its log lines."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the devices (sessions must be closed first)."""
