"""CUDA arrays, texture and surface objects on the emulated device: descriptors in, resources
and samplers (``ptx/texture.py``) out, and copies between host, device memory and arrays.

An emulated CUDA array is a device allocation holding its elements packed row after row and
slice after slice (layers are slices), so every copy and every texel read is base + strides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rgpu.server.cuda.backend import (
    CU_MEMORYTYPE_ARRAY,
    CU_MEMORYTYPE_DEVICE,
    CU_MEMORYTYPE_HOST,
    CU_MEMORYTYPE_UNIFIED,
)
from rgpu.server.cuda.emu.ptx import DeviceMemory
from rgpu.server.cuda.emu.ptx.texture import (
    FILTER_LINEAR,
    FILTER_POINT,
    Resource,
    Sampler,
    TextureObject,
    format_info,
)
from rgpu.server.cuda.errors import CudaError, CUresult

R = CUresult

# CUDA_ARRAY3D_* flags
CUDA_ARRAY3D_LAYERED = 0x01
CUDA_ARRAY3D_SURFACE_LDST = 0x02
CUDA_ARRAY3D_CUBEMAP = 0x04
CUDA_ARRAY3D_TEXTURE_GATHER = 0x08
_ARRAY_FLAGS_SUPPORTED = CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_SURFACE_LDST \
    | CUDA_ARRAY3D_TEXTURE_GATHER | 0x20  # 0x20: CUDA_ARRAY3D_COLOR_ATTACHMENT, a hint

# CUresourcetype
CU_RESOURCE_TYPE_ARRAY = 0
CU_RESOURCE_TYPE_MIPMAPPED_ARRAY = 1
CU_RESOURCE_TYPE_LINEAR = 2
CU_RESOURCE_TYPE_PITCH2D = 3

TEXTURE_ALIGNMENT = 512  # CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT of the emulated device
TEXTURE_PITCH_ALIGNMENT = 32
MAX_WIDTH_1D_LINEAR = 1 << 28
_MAX_EXTENT = {1: (131072, 1, 1), 2: (131072, 65536, 1), 3: (16384, 16384, 16384)}
_MAX_LAYERED = {1: (32768, 1, 2048), 2: (32768, 32768, 2048)}


@dataclass
class EmuArray:
    """One CUDA array: its descriptor (CUDA_ARRAY3D_DESCRIPTOR fields) and storage."""

    id: int
    context: int
    desc: dict[str, int]
    resource: Resource
    mipmap: int = 0  # the mipmapped array owning this level (cuMipmappedArrayGetLevel)

    @property
    def row_bytes(self) -> int:
        return self.resource.width * self.resource.element_size


def array_layout(desc: dict[str, Any]) -> tuple[dict[str, int], Resource, int]:
    """(normalised descriptor, resource with base 0, bytes) of a CUDA_ARRAY3D_DESCRIPTOR."""
    d = {k: int(desc.get(k, 0)) for k in ("Width", "Height", "Depth", "Format", "NumChannels",
                                           "Flags")}  # fmt: skip
    width, height, depth, flags = d["Width"], d["Height"], d["Depth"], d["Flags"]
    try:
        dtype, _ = format_info(d["Format"], d["NumChannels"])
    except ValueError as exc:
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE, str(exc)) from None
    cube = bool(flags & CUDA_ARRAY3D_CUBEMAP)
    if cube:  # six square faces per cube, kept as layers
        layered_cube = bool(flags & CUDA_ARRAY3D_LAYERED)
        if width <= 0 or width != height or depth <= 0 or depth % 6 or \
                (not layered_cube and depth != 6) or width > 32768 or depth > 2046:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"a cube map needs square faces and Depth 6 (a multiple of 6 when "
                            f"layered), not {width}x{height}x{depth}")  # fmt: skip
        esize = dtype.itemsize * d["NumChannels"]
        pitch = width * esize
        res = Resource(base=0, format=d["Format"], channels=d["NumChannels"], width=width,
                       height=height, depth=depth, pitch=pitch, slice_pitch=pitch * height,
                       dims=2, layered=True, surface=bool(flags & CUDA_ARRAY3D_SURFACE_LDST),
                       cube=True)  # fmt: skip
        return d, res, pitch * height * depth
    if flags & ~_ARRAY_FLAGS_SUPPORTED:
        raise CudaError(R.CUDA_ERROR_NOT_SUPPORTED,
                        f"array flags {flags:#x} are not supported by the emulated device")
    if width <= 0 or height < 0 or depth < 0 or (depth and not height and
                                                 not flags & CUDA_ARRAY3D_LAYERED):
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                        f"bad array extent {width}x{height}x{depth}")  # fmt: skip
    layered = bool(flags & CUDA_ARRAY3D_LAYERED)
    if layered:
        if depth <= 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "a layered array needs Depth layers")
        dims = 2 if height else 1
        limits = _MAX_LAYERED[dims]
    else:
        dims = 3 if depth else 2 if height else 1
        limits = _MAX_EXTENT[dims]
    h, dpt = max(height, 1), max(depth, 1)
    if width > limits[0] or h > limits[1] or dpt > limits[2]:
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                        f"array extent {width}x{height}x{depth} exceeds the device's limits")
    esize = dtype.itemsize * d["NumChannels"]
    pitch = width * esize
    res = Resource(base=0, format=d["Format"], channels=d["NumChannels"], width=width, height=h,
                   depth=dpt, pitch=pitch, slice_pitch=pitch * h, dims=dims, layered=layered,
                   surface=bool(flags & CUDA_ARRAY3D_SURFACE_LDST))  # fmt: skip
    return d, res, pitch * h * dpt


@dataclass
class EmuMipmap:
    """A mipmapped array: one array per level, each half the size of the one before."""

    id: int
    context: int
    desc: dict[str, int]
    levels: list[EmuArray]


def mipmap_level_descs(desc: dict[str, Any], num_levels: int) -> list[dict[str, Any]]:
    """The CUDA_ARRAY3D_DESCRIPTOR of each level (layers are not halved)."""
    w, h, d = (int(desc.get(k, 0)) for k in ("Width", "Height", "Depth"))
    # layers and cube faces are not halved
    layered = bool(int(desc.get("Flags", 0)) & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP))
    longest = max(w, h, 0 if layered else d, 1)
    if num_levels < 1 or num_levels > longest.bit_length():
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                        f"{num_levels} levels for a {w}x{h}x{d} mipmapped array")
    out = []
    for level in range(num_levels):
        out.append({**desc, "Width": max(1, w >> level),
                    "Height": max(1, h >> level) if h else 0,
                    "Depth": d if layered else (max(1, d >> level) if d else 0)})  # fmt: skip
    return out


def sampler_from(tex_desc: dict[str, Any]) -> Sampler:
    """A Sampler from CUDA_TEXTURE_DESC's fields."""
    modes = [int(m) for m in tex_desc.get("addressMode", [1, 1, 1])][:3]
    modes += [1] * (3 - len(modes))
    if any(m not in (0, 1, 2, 3) for m in modes):
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad address modes {modes}")
    filt = int(tex_desc.get("filterMode", FILTER_POINT))
    if filt not in (FILTER_POINT, FILTER_LINEAR):
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad filter mode {filt}")
    border = [float(b) for b in tex_desc.get("borderColor", [0.0] * 4)][:4]
    border += [0.0] * (4 - len(border))
    mip = int(tex_desc.get("mipmapFilterMode", FILTER_POINT))
    if mip not in (FILTER_POINT, FILTER_LINEAR):
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad mipmap filter mode {mip}")
    return Sampler(address=(modes[0], modes[1], modes[2]), filter=filt,
                   flags=int(tex_desc.get("flags", 0)),
                   border=(border[0], border[1], border[2], border[3]), mipmap_filter=mip,
                   lod_bias=float(tex_desc.get("mipmapLevelBias", 0.0)),
                   min_lod=float(tex_desc.get("minMipmapLevelClamp", 0.0)),
                   max_lod=float(tex_desc.get("maxMipmapLevelClamp", 0.0)))  # fmt: skip


def linear_resource(memory: DeviceMemory, res_desc: dict[str, Any]) -> Resource:
    """The Resource of a CU_RESOURCE_TYPE_LINEAR or _PITCH2D resource description."""
    kind = int(res_desc["resType"])
    base = int(res_desc["devPtr"])
    fmt, channels = int(res_desc["format"]), int(res_desc["numChannels"])
    try:
        dtype, _ = format_info(fmt, channels)
    except ValueError as exc:
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE, str(exc)) from None
    esize = dtype.itemsize * channels
    if base % TEXTURE_ALIGNMENT:
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                        f"texture memory {base:#x} is not aligned to {TEXTURE_ALIGNMENT} bytes")
    if kind == CU_RESOURCE_TYPE_LINEAR:
        size = int(res_desc["sizeInBytes"])
        width = size // esize
        if width <= 0 or width > MAX_WIDTH_1D_LINEAR:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad linear texture size {size}")
        res = Resource(base=base, format=fmt, channels=channels, width=width, pitch=size,
                       slice_pitch=size, dims=1, linear=True)  # fmt: skip
    else:
        width, height = int(res_desc["width"]), int(res_desc["height"])
        pitch = int(res_desc["pitchInBytes"])
        if width <= 0 or height <= 0 or width * esize > pitch or width > 131072 \
                or height > 65000 or pitch % TEXTURE_PITCH_ALIGNMENT:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"bad pitch2D texture {width}x{height}, pitch {pitch}")
        res = Resource(base=base, format=fmt, channels=channels, width=width, height=height,
                       pitch=pitch, slice_pitch=pitch * height, dims=2)  # fmt: skip
    hit = memory.allocation_of(base)
    if hit is None or base + res.span > hit[0] + hit[1]:
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                        f"texture memory {base:#x}+{res.span} is not inside one allocation")
    return res


def check_texture(tex: TextureObject) -> None:
    """Reject what the hardware cannot do: filtering values read as integers."""
    linear = FILTER_LINEAR in (tex.sampler.filter,
                               tex.sampler.mipmap_filter if tex.levels else FILTER_POINT)
    if linear and not tex.reads_float:
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                        "linear filtering needs float texels (a float format, or 8/16-bit "
                        "integers read as normalized floats)")  # fmt: skip


# --- copies -----------------------------------------------------------------------------------
@dataclass
class _Side:
    kind: int
    base: int  # device address (device/array) or 0 (host)
    x: int
    y: int
    z: int
    pitch: int
    height: int


def copy_3d(
    memory: DeviceMemory,
    copy: dict[str, Any],
    host_data: bytes | None,
    array_of: Callable[[int], EmuArray],
) -> bytes | None:
    """A CUDA_MEMCPY3D between host (packed: WidthInBytes x Height x Depth, offsets 0), device
    memory and arrays; returns the packed bytes when the destination is the host."""
    w, h, d = int(copy["WidthInBytes"]), int(copy.get("Height", 1)), int(copy.get("Depth", 1))
    h, d = max(h, 1), max(d, 1)
    if w < 0:
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "negative copy width")
    sides = []
    for p in ("src", "dst"):
        kind = int(copy[p + "MemoryType"])
        x, y, z = (int(copy.get(p + k, 0)) for k in ("XInBytes", "Y", "Z"))
        if min(x, y, z) < 0:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, "negative copy offset")
        if kind == CU_MEMORYTYPE_HOST:
            sides.append(_Side(kind, 0, 0, 0, 0, w, h))
        elif kind in (CU_MEMORYTYPE_DEVICE, CU_MEMORYTYPE_UNIFIED):
            pitch = int(copy.get(p + "Pitch", 0)) or w
            height = int(copy.get(p + "Height", 0)) or (h if d == 1 else 0)
            if d > 1 and height == 0:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{p}Height is 0 in a 3D copy")
            if x + w > pitch and h > 1:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"{p} rows exceed {p}Pitch")
            sides.append(_Side(kind, int(copy[p + "Device"]), x, y, z, pitch, max(height, 1)))
        elif kind == CU_MEMORYTYPE_ARRAY:
            arr = array_of(int(copy[p + "Array"]))
            res = arr.resource
            if x + w > arr.row_bytes or y + h > res.height or z + d > res.depth:
                raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                                f"copy of {w}x{h}x{d} at ({x}, {y}, {z}) exceeds the "
                                f"{arr.row_bytes}x{res.height}x{res.depth}-byte array")
            sides.append(_Side(kind, res.base, x, y, z, res.pitch, res.height))
        else:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"bad {p}MemoryType {kind}")
    src, dst = sides
    if w == 0:
        return b"" if dst.kind == CU_MEMORYTYPE_HOST else None
    if src.kind == CU_MEMORYTYPE_HOST:
        if host_data is None or len(host_data) < w * h * d:
            raise CudaError(R.CUDA_ERROR_INVALID_VALUE,
                            f"the copy needs {w * h * d} bytes of host data")  # fmt: skip
        block = np.frombuffer(memoryview(host_data).cast("B"), np.uint8)[: w * h * d]
        block = block.reshape(d, h, w)
    else:
        view, rel = _device_rows(memory, src, w, h, d)
        block = view[rel]
    if dst.kind == CU_MEMORYTYPE_HOST:
        return block.tobytes()
    view, rel = _device_rows(memory, dst, w, h, d)
    view[rel] = block
    return None


def _device_rows(memory: DeviceMemory, side: _Side, w: int, h: int, d: int):
    """(a uint8 view of device memory, index array of shape (d, h, w) into it)."""
    start = side.base + side.z * side.pitch * side.height + side.y * side.pitch + side.x
    slice_bytes = side.pitch * side.height
    end = start + (d - 1) * slice_bytes + (h - 1) * side.pitch + w
    try:
        view = memory.view(start, end - start)
    except Exception as exc:
        raise CudaError(R.CUDA_ERROR_INVALID_VALUE, f"copy range: {exc}") from None
    rows = (np.arange(d, dtype=np.int64)[:, None] * slice_bytes
            + np.arange(h, dtype=np.int64)[None, :] * side.pitch)  # fmt: skip
    return view, rows[:, :, None] + np.arange(w, dtype=np.int64)[None, None, :]
