"""Texture and surface objects of the emulated device, and the texture unit's arithmetic.

A texture or surface object is a descriptor the device holds, named by a 64-bit handle that
kernels receive as a parameter: :class:`Resource` says where the texels are in global memory
(a CUDA array, linear or pitched memory all become base + strides) and in which format,
:class:`Sampler` how ``tex`` reads them. The descriptors live in a :class:`DescriptorHeap` on the
device's :class:`~.memory.DeviceMemory` (a real GPU keeps texture headers in device memory too).

Sampling follows the CUDA programming guide's texture fetching appendix: point filtering reads
texel ``floor(x)``; linear filtering reads the texels around ``x - 0.5`` and weighs them with
9-bit fixed-point fractions (8 fractional bits); normalized coordinates are scaled by the size;
wrap and mirror apply to normalized coordinates only (unnormalized ones clamp, as the hardware
does); 8- and 16-bit integer formats read as normalized floats unless the object reads them as
integers (``CU_TRSF_READ_AS_INTEGER``), signed ones clamped to -1.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import numpy as np

# CUarray_format -> (numpy dtype of one channel, integer?)
ARRAY_FORMATS: dict[int, tuple[np.dtype, bool]] = {
    0x01: (np.dtype(np.uint8), True),  # CU_AD_FORMAT_UNSIGNED_INT8
    0x02: (np.dtype(np.uint16), True),  # CU_AD_FORMAT_UNSIGNED_INT16
    0x03: (np.dtype(np.uint32), True),  # CU_AD_FORMAT_UNSIGNED_INT32
    0x08: (np.dtype(np.int8), True),  # CU_AD_FORMAT_SIGNED_INT8
    0x09: (np.dtype(np.int16), True),  # CU_AD_FORMAT_SIGNED_INT16
    0x0A: (np.dtype(np.int32), True),  # CU_AD_FORMAT_SIGNED_INT32
    0x10: (np.dtype(np.float16), False),  # CU_AD_FORMAT_HALF
    0x20: (np.dtype(np.float32), False),  # CU_AD_FORMAT_FLOAT
}

# CUaddress_mode
ADDRESS_WRAP, ADDRESS_CLAMP, ADDRESS_MIRROR, ADDRESS_BORDER = 0, 1, 2, 3
# CUfilter_mode
FILTER_POINT, FILTER_LINEAR = 0, 1
# CU_TRSF_* flags
TRSF_READ_AS_INTEGER = 0x01
TRSF_NORMALIZED_COORDINATES = 0x02
TRSF_SRGB = 0x10

#: handles start here, so a zero or small integer is never a valid object
HANDLE_BASE = 0x5100_0000


def format_info(fmt: int, channels: int) -> tuple[np.dtype, bool]:
    """(channel dtype, integer?) of a CUarray_format; ValueError for formats not emulated."""
    info = ARRAY_FORMATS.get(int(fmt))
    if info is None:
        raise ValueError(f"array format {int(fmt):#x} is not supported by the emulated device")
    if channels not in (1, 2, 4):
        raise ValueError(f"{channels} channels: only 1, 2 and 4 are supported")
    return info


@dataclass(frozen=True)
class Resource:
    """Texels in global memory: element (x, y, z) is at ``base + z*slice_pitch + y*pitch +
    x*element_size``. ``dims`` is 1, 2 or 3; a layered resource keeps its layers in z."""

    base: int
    format: int
    channels: int
    width: int
    height: int = 1
    depth: int = 1
    pitch: int = 0
    slice_pitch: int = 0
    dims: int = 1
    layered: bool = False
    surface: bool = False  # usable by surface instructions (CUDA_ARRAY3D_SURFACE_LDST)
    linear: bool = False  # CU_RESOURCE_TYPE_LINEAR (tex1Dfetch)
    cube: bool = False  # a cube map: square faces as layers, six per cube

    @property
    def channel_dtype(self) -> np.dtype:
        return ARRAY_FORMATS[self.format][0]

    @property
    def is_integer(self) -> bool:
        return ARRAY_FORMATS[self.format][1]

    @property
    def element_size(self) -> int:
        return self.channel_dtype.itemsize * self.channels

    @property
    def span(self) -> int:
        """Bytes from ``base`` to the end of the last element."""
        return (
            (self.depth - 1) * self.slice_pitch
            + (self.height - 1) * self.pitch
            + self.width * self.element_size
        )


@dataclass(frozen=True)
class Sampler:
    """How ``tex`` reads a resource (CUDA_TEXTURE_DESC)."""

    address: tuple[int, int, int] = (ADDRESS_CLAMP, ADDRESS_CLAMP, ADDRESS_CLAMP)
    filter: int = FILTER_POINT
    flags: int = 0
    border: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    mipmap_filter: int = FILTER_POINT
    lod_bias: float = 0.0
    min_lod: float = 0.0
    max_lod: float = 0.0

    @property
    def normalized_coords(self) -> bool:
        return bool(self.flags & TRSF_NORMALIZED_COORDINATES)


@dataclass(frozen=True)
class TextureObject:
    """``resource`` is level 0; a mipmapped texture lists every level in ``levels``."""

    resource: Resource
    sampler: Sampler
    levels: tuple[Resource, ...] = ()

    @property
    def reads_float(self) -> bool:
        """Does ``tex`` return floats (float formats, or 8/16-bit integers read normalized)?"""
        r = self.resource
        if not r.is_integer:
            return True
        return not (self.sampler.flags & TRSF_READ_AS_INTEGER) and r.channel_dtype.itemsize < 4


@dataclass(frozen=True)
class SurfaceObject:
    resource: Resource


class DescriptorHeap:
    """The texture and surface objects of one device, by handle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = HANDLE_BASE
        self.objects: dict[int, TextureObject | SurfaceObject] = {}

    def add(self, obj: TextureObject | SurfaceObject) -> int:
        with self._lock:
            self._next += 1
            handle = self._next
            self.objects[handle] = obj
        return handle

    def remove(self, handle: int) -> TextureObject | SurfaceObject | None:
        with self._lock:
            return self.objects.pop(handle, None)

    def get(self, handle: int) -> TextureObject | SurfaceObject | None:
        return self.objects.get(handle)


# --- texel reads ------------------------------------------------------------------------------
def gather(arena: np.ndarray, arena_off: int, res: Resource, x: np.ndarray, y: np.ndarray,
           z: np.ndarray) -> np.ndarray:
    """Raw texels at in-range integer indices: an (n, channels) array of the channel dtype."""
    esize = res.element_size
    off = arena_off + z.astype(np.int64) * res.slice_pitch + y.astype(np.int64) * res.pitch
    off = off + x.astype(np.int64) * esize
    raw = arena[off[:, None] + np.arange(esize, dtype=np.int64)]
    return np.ascontiguousarray(raw).view(res.channel_dtype).reshape(off.size, res.channels)


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def convert_texels(tex: TextureObject, raw: np.ndarray) -> np.ndarray:
    """Texels as ``tex`` returns them before filtering: float64 for float reads (normalized
    integers, sRGB decoded), int64 for integer reads."""
    res = tex.resource
    if not tex.reads_float:
        return raw.astype(np.int64)
    if not res.is_integer:
        return raw.astype(np.float64)
    dt = res.channel_dtype
    bits = 8 * dt.itemsize
    if dt.kind == "u":
        v = raw.astype(np.float64) / float((1 << bits) - 1)
    else:
        v = np.maximum(raw.astype(np.float64) / float((1 << (bits - 1)) - 1), -1.0)
    if tex.sampler.flags & TRSF_SRGB and dt.kind == "u":
        v = v.copy()
        n = min(3, v.shape[1])
        v[:, :n] = _srgb_to_linear(v[:, :n])
    return v


def map_index(i: np.ndarray, n: int, mode: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Texel index ``i`` under an address mode: (index in [0, n), in-range mask for border)."""
    if mode == ADDRESS_WRAP:
        return np.mod(i, n), None
    if mode == ADDRESS_MIRROR:
        m = np.mod(i, 2 * n)
        return np.where(m < n, m, 2 * n - 1 - m), None
    if mode == ADDRESS_BORDER:
        ok = (i >= 0) & (i < n)
        return np.clip(i, 0, n - 1), ok
    return np.clip(i, 0, n - 1), None


def _texel_space(c: np.ndarray, n: int, normalized: bool) -> np.ndarray:
    u = np.nan_to_num(np.asarray(c, np.float64), nan=0.0)
    if normalized:
        u = u * n
    return np.clip(u, -(2.0**40), 2.0**40)


def _mode(tex: TextureObject, d: int) -> int:
    mode = tex.sampler.address[d]
    if not tex.sampler.normalized_coords and mode in (ADDRESS_WRAP, ADDRESS_MIRROR):
        return ADDRESS_CLAMP  # wrap and mirror need normalized coordinates
    return mode


def fixed_weight(frac: np.ndarray) -> np.ndarray:
    """A filtering weight in the texture unit's 9-bit fixed point (8 fractional bits)."""
    return np.round(frac * 256.0) / 256.0


def sample(tex: TextureObject, arena: np.ndarray, arena_off: int, coords: list[np.ndarray],
           layer: np.ndarray | None, integer_coords: bool) -> np.ndarray:
    """``tex`` for n lanes: an (n, 4) array, float64 or int64 (see convert_texels).

    ``coords`` holds one array per dimension of the resource (x, y, z), float texel or
    normalized coordinates, or integer texel coordinates when ``integer_coords``.
    """
    res = tex.resource
    sizes = (res.width, res.height, res.depth)
    n = coords[0].size
    dims = len(coords)
    linear = tex.sampler.filter == FILTER_LINEAR and not integer_coords and tex.reads_float
    normalized = tex.sampler.normalized_coords and not integer_coords
    # per dimension: list of (index, weight or None, border mask or None)
    taps: list[list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]] = []
    for d in range(dims):
        mode = ADDRESS_BORDER if res.linear and integer_coords else _mode(tex, d)
        if integer_coords:
            i = np.asarray(coords[d]).astype(np.int64)
            idx, ok = map_index(i, sizes[d], mode)
            taps.append([(idx, None, ok)])
            continue
        u = _texel_space(coords[d], sizes[d], normalized)
        if linear:
            ub = u - 0.5
            i0 = np.floor(ub)
            a = fixed_weight(ub - i0)
            i0 = i0.astype(np.int64)
            j0, ok0 = map_index(i0, sizes[d], mode)
            j1, ok1 = map_index(i0 + 1, sizes[d], mode)
            taps.append([(j0, 1.0 - a, ok0), (j1, a, ok1)])
        else:
            idx, ok = map_index(np.floor(u).astype(np.int64), sizes[d], mode)
            taps.append([(idx, None, ok)])
    zero = np.zeros(n, np.int64)
    if layer is not None:
        lz = np.clip(np.asarray(layer).astype(np.int64), 0, res.depth - 1)
    reads_float = tex.reads_float
    border = np.array(tex.sampler.border, np.float64)
    if not reads_float:
        border = border.astype(np.int64)
    acc: np.ndarray | None = None
    for combo in itertools.product(*taps):
        xyz = [t[0] for t in combo] + [zero] * (3 - dims)
        if layer is not None:
            xyz[2] = lz  # layers are z slices
        raw = gather(arena, arena_off, res, xyz[0], xyz[1], xyz[2])
        vals = convert_texels(tex, raw)
        masks = [t[2] for t in combo if t[2] is not None]
        if masks:
            ok = np.logical_and.reduce(masks)
            vals = np.where(ok[:, None], vals, border[None, : res.channels])
        weights = [t[1] for t in combo if t[1] is not None]
        if weights:
            w = np.prod(np.stack(weights), axis=0)
            vals = vals * w[:, None]
        acc = vals if acc is None else acc + vals
    assert acc is not None
    out = np.zeros((n, 4), acc.dtype)
    out[:, 3] = 1
    out[:, : res.channels] = acc
    return out


def gather4(tex: TextureObject, arena: np.ndarray, arena_off: int, coords: list[np.ndarray],
            component: int) -> np.ndarray:
    """``tld4``: component ``component`` of the 2x2 texels bilinear filtering at (x, y) would
    read, in the order (i0, j1), (i1, j1), (i1, j0), (i0, j0): an (n, 4) array."""
    res = tex.resource
    normalized = tex.sampler.normalized_coords
    ij = []
    for d in range(2):
        u = _texel_space(coords[d], (res.width, res.height)[d], normalized) - 0.5
        i0 = np.floor(u).astype(np.int64)
        mode = _mode(tex, d)
        size = (res.width, res.height)[d]
        ij.append((map_index(i0, size, mode), map_index(i0 + 1, size, mode)))
    n = coords[0].size
    zero = np.zeros(n, np.int64)
    reads_float = tex.reads_float
    border = tex.sampler.border[component] if component < 4 else 0.0
    out = np.zeros((n, 4), np.float64 if reads_float else np.int64)
    for k, (xi, yi) in enumerate(((0, 1), (1, 1), (1, 0), (0, 0))):
        (x, okx), (y, oky) = ij[0][xi], ij[1][yi]
        raw = gather(arena, arena_off, res, x, y, zero)
        vals = convert_texels(tex, raw)
        if component < res.channels:
            v = vals[:, component]
        else:
            v = np.full(n, 1 if component == 3 else 0, vals.dtype)
        masks = [m for m in (okx, oky) if m is not None]
        if masks:
            v = np.where(np.logical_and.reduce(masks), v, border)
        out[:, k] = v
    return out


# --- mipmaps ----------------------------------------------------------------------------------
def lod_from_gradients(tex: TextureObject, dx: list[np.ndarray], dy: list[np.ndarray]
                       ) -> np.ndarray:  # fmt: skip
    """``tex.grad``'s level of detail: log2 of the longer footprint axis in level-0 texels
    (isotropic filtering)."""
    res = tex.resource
    sizes = (res.width, res.height, res.depth)
    scale = [float(sizes[d]) if tex.sampler.normalized_coords else 1.0 for d in range(len(dx))]
    lx = np.sqrt(sum((np.asarray(dx[d], np.float64) * scale[d]) ** 2 for d in range(len(dx))))
    ly = np.sqrt(sum((np.asarray(dy[d], np.float64) * scale[d]) ** 2 for d in range(len(dy))))
    with np.errstate(divide="ignore"):
        return np.log2(np.maximum(lx, ly))


def sample_lod(tex: TextureObject, arena: np.ndarray, base_off: int, coords: list[np.ndarray],
               layer: np.ndarray | None, lod: np.ndarray) -> np.ndarray:
    """``tex.level``/``tex.grad`` on a mipmapped texture: the level(s) the (biased, clamped)
    level of detail selects, blended with 8-bit fixed-point weights for linear mipmap
    filtering. ``base_off`` is the arena base (arena offset = address - base_off)."""
    levels = tex.levels or (tex.resource,)
    s = tex.sampler
    n = coords[0].size
    lod = np.nan_to_num(np.asarray(lod, np.float64) + s.lod_bias, nan=0.0, neginf=-1e9)
    lod = np.clip(np.clip(lod, s.min_lod, max(s.max_lod, s.min_lod)), 0.0, len(levels) - 1)
    if s.mipmap_filter == FILTER_LINEAR:
        lo = np.floor(lod).astype(np.int64)
        frac = fixed_weight(lod - lo)
    else:
        lo = np.floor(lod + 0.5).astype(np.int64)
        frac = np.zeros(n)
    lo = np.minimum(lo, len(levels) - 1)
    out: np.ndarray | None = None
    for shift, weight in ((0, 1.0 - frac), (1, frac)):
        idx = np.minimum(lo + shift, len(levels) - 1)
        for k in np.unique(idx):
            sel = np.flatnonzero((idx == k) & (weight != 0))
            if sel.size == 0:
                continue
            res = levels[int(k)]
            level_tex = TextureObject(res, tex.sampler)
            cs = [np.asarray(c)[sel] for c in coords]
            if not tex.sampler.normalized_coords:  # texel coordinates of level 0
                cs = [c / float(1 << int(k)) for c in cs]
            ly = None if layer is None else np.asarray(layer)[sel]
            vals = sample(level_tex, arena, res.base - base_off, cs, ly, False)
            if out is None:
                out = np.zeros((n, 4), vals.dtype)
            out[sel] += vals * weight[sel][:, None] if vals.dtype.kind == "f" else vals
    assert out is not None
    return out


# --- cube maps --------------------------------------------------------------------------------
def cube_face(x: np.ndarray, y: np.ndarray, z: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(face, u, v) of direction (x, y, z): the face of the major axis (+x, -x, +y, -y, +z, -z
    are faces 0 to 5) and the normalized coordinates on it, ((s / |m|) + 1) / 2 and
    ((t / |m|) + 1) / 2, with (s, t) per face as the CUDA programming guide's cube-map table
    gives them."""
    x, y, z = (np.nan_to_num(np.asarray(c, np.float64)) for c in (x, y, z))
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    on_x = (ax >= ay) & (ax >= az)
    on_y = ~on_x & (ay >= az)
    face = np.where(on_x, np.where(x >= 0, 0, 1),
                    np.where(on_y, np.where(y >= 0, 2, 3), np.where(z >= 0, 4, 5)))
    m = np.where(on_x, ax, np.where(on_y, ay, az))
    s = np.choose(face, [-z, z, x, x, x, -x])
    t = np.choose(face, [-y, -y, z, -z, -y, -y])
    m = np.where(m == 0, 1.0, m)
    return face.astype(np.int64), (s / m + 1.0) / 2.0, (t / m + 1.0) / 2.0


def sample_cube(tex: TextureObject, arena: np.ndarray, arena_off: int, direction: list[np.ndarray],
                cube_index: np.ndarray | None) -> np.ndarray:
    """``tex.cube``/``tex.acube``: the face the direction points at, sampled in 2D with
    normalized coordinates (edges clamp; filtering does not cross faces)."""
    face, u, v = cube_face(*direction)
    layer = face if cube_index is None else face + 6 * np.asarray(cube_index).astype(np.int64)
    s = tex.sampler
    flat = TextureObject(tex.resource, Sampler(
        address=(ADDRESS_CLAMP, ADDRESS_CLAMP, ADDRESS_CLAMP), filter=s.filter,
        flags=s.flags | TRSF_NORMALIZED_COORDINATES, border=s.border))
    return sample(flat, arena, arena_off, [u, v], layer, False)
