"""Texture sampling and surface access of the emulated device.

The sampling arithmetic (``ptx/texture.py``) is checked against a per-texel reference written
from the CUDA programming guide's texture fetching appendix; the instructions (``tex``,
``tld4``, ``txq``, ``suld``, ``sust``) and the driver calls (arrays, 3D copies, texture and
surface objects) through hand-written PTX on a session of the emulated backend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rgpu.server.cuda.emu.ptx.texture import (
    ADDRESS_BORDER,
    ADDRESS_CLAMP,
    ADDRESS_MIRROR,
    ADDRESS_WRAP,
    FILTER_LINEAR,
    FILTER_POINT,
    TRSF_NORMALIZED_COORDINATES,
    TRSF_READ_AS_INTEGER,
    TRSF_SRGB,
    Resource,
    Sampler,
    TextureObject,
    gather4,
    sample,
)
from rgpu.server.cuda.errors import CudaError, CUresult

R = CUresult
U8, S8, U16, S16, U32, S32, F16, F32 = 0x01, 0x08, 0x02, 0x09, 0x03, 0x0A, 0x10, 0x20
_NP = {U8: np.uint8, S8: np.int8, U16: np.uint16, S16: np.int16, U32: np.uint32, S32: np.int32,
       F16: np.float16, F32: np.float32}  # fmt: skip


def _texture(data: np.ndarray, fmt: int, channels: int, sampler: Sampler, dims: int):
    """A texture over `data` (shape (depth, height, width, channels)) in its own arena."""
    d, h, w, _ = data.shape
    arena = np.ascontiguousarray(data.astype(_NP[fmt])).view(np.uint8).reshape(-1)
    esize = np.dtype(_NP[fmt]).itemsize * channels
    res = Resource(base=0, format=fmt, channels=channels, width=w, height=h, depth=d,
                   pitch=w * esize, slice_pitch=w * h * esize, dims=dims)  # fmt: skip
    return TextureObject(res, sampler), arena


# --- a per-texel reference, straight from the programming guide ---------------------------
def _ref_index(i: int, n: int, mode: int) -> int | None:
    if mode == ADDRESS_WRAP:
        return i % n
    if mode == ADDRESS_MIRROR:
        m = i % (2 * n)
        return m if m < n else 2 * n - 1 - m
    if mode == ADDRESS_BORDER:
        return i if 0 <= i < n else None
    return min(max(i, 0), n - 1)


def _ref_1d(texels: list[float], x: float, mode: int, linear: bool, normalized: bool,
            border: float = 0.0) -> float:  # fmt: skip
    n = len(texels)
    if not normalized and mode in (ADDRESS_WRAP, ADDRESS_MIRROR):
        mode = ADDRESS_CLAMP
    u = x * n if normalized else x

    def t(i: int) -> float:
        j = _ref_index(i, n, mode)
        return border if j is None else texels[j]

    if not linear:
        return t(math.floor(u))
    xb = u - 0.5
    i = math.floor(xb)
    alpha = round((xb - i) * 256) / 256  # 9-bit fixed point, 8 fractional bits
    return (1 - alpha) * t(i) + alpha * t(i + 1)


MODES = [ADDRESS_WRAP, ADDRESS_CLAMP, ADDRESS_MIRROR, ADDRESS_BORDER]
XS = [-1.3, -0.6, -0.01, 0.0, 0.1, 0.24, 0.5, 0.77, 0.999, 1.0, 1.26, 2.5, 3.3, 4.75, 7.9]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("normalized", [False, True])
def test_1d_filtering_and_address_modes_match_the_guide(mode, linear, normalized):
    texels = [1.0, 10.0, 100.0, 1000.0, -5.0]
    data = np.array(texels, np.float32).reshape(1, 1, 5, 1)
    flags = TRSF_NORMALIZED_COORDINATES if normalized else 0
    sampler = Sampler(address=(mode, mode, mode), filter=FILTER_LINEAR if linear else FILTER_POINT,
                      flags=flags, border=(7.0, 0, 0, 0))  # fmt: skip
    tex, arena = _texture(data, F32, 1, sampler, 1)
    xs = [x / 5 if normalized else x for x in XS]
    got = sample(tex, arena, 0, [np.array(xs, np.float32)], None, False)
    for x, g in zip(xs, got, strict=True):
        want = _ref_1d(texels, float(np.float32(x)), mode, linear, normalized, 7.0)
        assert g[0] == pytest.approx(want, rel=1e-6, abs=1e-4), (x, mode, linear, normalized)
        assert (g[1], g[2], g[3]) == (0.0, 0.0, 1.0)


def test_linear_weights_are_quantised_to_eight_fractional_bits():
    data = np.array([0.0, 256.0], np.float32).reshape(1, 1, 2, 1)
    tex, arena = _texture(data, F32, 1, Sampler(filter=FILTER_LINEAR), 1)
    # x_B = x - 0.5: alpha 0.3 becomes 77/256 (0.30078125), not 0.3
    got = sample(tex, arena, 0, [np.array([0.8], np.float32)], None, False)
    assert got[0, 0] == pytest.approx(77.0, abs=1e-3)


def test_2d_bilinear_matches_separable_reference():
    rng = np.random.default_rng(1)
    img = rng.uniform(-4, 4, (6, 7)).astype(np.float32)
    sampler = Sampler(address=(ADDRESS_WRAP, ADDRESS_MIRROR, 0), filter=FILTER_LINEAR,
                      flags=TRSF_NORMALIZED_COORDINATES)  # fmt: skip
    tex, arena = _texture(img.reshape(1, 6, 7, 1), F32, 1, sampler, 2)
    xs = rng.uniform(-1.5, 2.5, 64).astype(np.float32)
    ys = rng.uniform(-1.5, 2.5, 64).astype(np.float32)
    got = sample(tex, arena, 0, [xs, ys], None, False)[:, 0]
    for x, y, g in zip(xs, ys, got, strict=True):
        yb = float(y) * 6 - 0.5
        j = math.floor(yb)
        beta = round((yb - j) * 256) / 256
        rows = [_ref_1d(list(img[_ref_index(jj, 6, ADDRESS_MIRROR)]), float(x), ADDRESS_WRAP,
                        True, True) for jj in (j, j + 1)]  # fmt: skip
        assert g == pytest.approx((1 - beta) * rows[0] + beta * rows[1], rel=1e-5, abs=1e-5)


def test_3d_point_sampling_reads_the_right_texel():
    vol = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5, 1)
    tex, arena = _texture(vol, F32, 1, Sampler(), 3)
    x, y, z = np.array([0.5, 4.9, 9.0]), np.array([2.2, 0.0, -3.0]), np.array([3.7, 1.1, 2.5])
    got = sample(tex, arena, 0, [x, y, z], None, False)[:, 0]
    assert list(got) == [vol[3, 2, 0, 0], vol[1, 0, 4, 0], vol[2, 0, 4, 0]]


@pytest.mark.parametrize(
    ("fmt", "values", "normalized"),
    [
        (U8, [0, 128, 255], [0.0, 128 / 255, 1.0]),
        (S8, [-128, -127, 0, 127], [-1.0, -1.0, 0.0, 1.0]),
        (U16, [0, 1, 65535], [0.0, 1 / 65535, 1.0]),
        (S16, [-32768, -16384, 32767], [-1.0, -16384 / 32767, 1.0]),
    ],
)
def test_read_modes_of_integer_formats(fmt, values, normalized):
    data = np.array(values).reshape(1, 1, -1, 1)
    coords = [np.arange(len(values), dtype=np.int32)]
    tex, arena = _texture(data, fmt, 1, Sampler(), 1)
    got = sample(tex, arena, 0, coords, None, True)
    assert got.dtype.kind == "f" and np.allclose(got[:, 0], normalized)
    tex, arena = _texture(data, fmt, 1, Sampler(flags=TRSF_READ_AS_INTEGER), 1)
    got = sample(tex, arena, 0, coords, None, True)
    assert got.dtype.kind == "i" and list(got[:, 0]) == values


def test_32_bit_integers_and_channels():
    data = np.array([[1, -2, 3, -4], [5, 6, 7, 8]]).reshape(1, 1, 2, 4)
    tex, arena = _texture(data, S32, 4, Sampler(), 1)  # 32-bit: read as integers regardless
    got = sample(tex, arena, 0, [np.array([1.5, 0.2], np.float32)], None, False)
    assert got.tolist() == [[5, 6, 7, 8], [1, -2, 3, -4]]
    two = np.array([[0.5, 0.25]], np.float16).reshape(1, 1, 1, 2)
    tex, arena = _texture(two, F16, 2, Sampler(), 1)
    got = sample(tex, arena, 0, [np.array([0.0], np.float32)], None, False)
    assert got.tolist() == [[0.5, 0.25, 0.0, 1.0]]


def test_srgb_decodes_colour_channels_only():
    data = np.array([[188, 188, 188, 188]]).reshape(1, 1, 1, 4)
    tex, arena = _texture(data, U8, 4, Sampler(flags=TRSF_SRGB), 1)
    got = sample(tex, arena, 0, [np.array([0.0], np.float32)], None, False)[0]
    v = 188 / 255
    assert got[:3] == pytest.approx([((v + 0.055) / 1.055) ** 2.4] * 3) and got[3] == v


def test_layers_are_not_filtered_across():
    data = np.stack([np.full((1, 4, 1), 10.0 * k) for k in range(3)]).astype(np.float32)
    sampler = Sampler(filter=FILTER_LINEAR)
    tex, arena = _texture(data, F32, 1, sampler, 1)
    tex = TextureObject(Resource(**{**tex.resource.__dict__, "layered": True}), sampler)
    got = sample(tex, arena, 0, [np.array([1.3, 1.3, 1.3])], np.array([0, 2, 9]), False)
    assert list(got[:, 0]) == [0.0, 20.0, 20.0]


def test_gather_returns_the_bilinear_footprint_in_d3d_order():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    tex, arena = _texture(img, F32, 1, Sampler(), 2)
    got = gather4(tex, arena, 0, [np.array([1.6]), np.array([2.4])], 0)
    # x_B = 1.1 -> i0 = 1; y_B = 1.9 -> j0 = 1: (i0,j1) (i1,j1) (i1,j0) (i0,j0)
    assert got[0].tolist() == [9.0, 10.0, 6.0, 5.0]


def test_mipmap_level_selection_and_blending():
    from rgpu.server.cuda.emu.ptx.texture import lod_from_gradients, sample_lod

    # levels 8x8, 4x4, 2x2, 1x1 holding 0, 10, 20, 30, one after another in one arena
    levels, parts, base = [], [], 0
    for k in range(4):
        side = 8 >> k
        parts.append(np.full(side * side, 10.0 * k, np.float32))
        levels.append(Resource(base=base, format=F32, channels=1, width=side, height=side,
                               pitch=side * 4, slice_pitch=side * side * 4, dims=2))
        base += side * side * 4
    arena = np.concatenate(parts).view(np.uint8)
    lods = np.array([-2.0, 0.4, 0.6, 1.5, 2.75, 7.0])
    coords = [np.full(6, 0.3), np.full(6, 0.7)]
    for mip_filter, want in ((FILTER_POINT, [0, 0, 10, 20, 30, 30]),
                             (FILTER_LINEAR, [0, 3.984375, 6.015625, 15, 27.5, 30])):
        sampler = Sampler(flags=TRSF_NORMALIZED_COORDINATES, mipmap_filter=mip_filter,
                          max_lod=3.0, lod_bias=0.0)
        tex = TextureObject(levels[0], sampler, tuple(levels))
        got = sample_lod(tex, arena, 0, coords, None, lods)[:, 0]
        assert got.tolist() == pytest.approx(want), mip_filter
    # a bias and a clamp apply before the level is chosen
    sampler = Sampler(flags=TRSF_NORMALIZED_COORDINATES, lod_bias=1.0, min_lod=0.0, max_lod=2.0)
    tex = TextureObject(levels[0], sampler, tuple(levels))
    two = [c[:2] for c in coords]
    assert sample_lod(tex, arena, 0, two, None, np.array([0.2, 5.0]))[:, 0].tolist() == [
        10.0, 20.0]
    # gradients: the longer axis of the footprint, in level-0 texels
    lod = lod_from_gradients(tex, [np.array([0.5]), np.array([0.0])],
                             [np.array([0.0]), np.array([0.125])])
    assert lod.tolist() == [2.0]


def test_cube_faces_follow_the_programming_guide_table():
    from rgpu.server.cuda.emu.ptx.texture import cube_face

    dirs = np.array([[1, 0.5, -0.25], [-2, 1, 1], [0.1, 3, -0.3], [0.2, -1, 0.5],
                     [0.5, -0.5, 4], [-0.25, 0.5, -1]], np.float64)  # fmt: skip
    face, u, v = cube_face(dirs[:, 0], dirs[:, 1], dirs[:, 2])
    assert face.tolist() == [0, 1, 2, 3, 4, 5]
    # (s, t) per face: (-z, -y), (z, -y), (x, z), (x, -z), (x, -y), (-x, -y); over |m|
    st = [(0.25, -0.5), (0.5, -0.5), (0.1 / 3, -0.1), (0.2, -0.5), (0.125, 0.125),
          (0.25, -0.5)]  # fmt: skip
    assert u.tolist() == pytest.approx([(s + 1) / 2 for s, _ in st])
    assert v.tolist() == pytest.approx([(t + 1) / 2 for _, t in st])


def test_mipmap_levels_halve_all_but_layers_and_faces():
    from rgpu.server.cuda.emu.arrays import mipmap_level_descs

    def sizes(flags, depth, n):
        desc = {"Width": 16, "Height": 16, "Depth": depth, "Flags": flags}
        return [(d["Width"], d["Height"], d["Depth"]) for d in mipmap_level_descs(desc, n)]

    assert sizes(0, 4, 3) == [(16, 16, 4), (8, 8, 2), (4, 4, 1)]
    assert sizes(1, 4, 3) == [(16, 16, 4), (8, 8, 4), (4, 4, 4)]  # layered
    assert sizes(4, 6, 5) == [(16, 16, 6), (8, 8, 6), (4, 4, 6), (2, 2, 6), (1, 1, 6)]  # cube


def test_layered_cube_maps_pick_the_cube_then_the_face():
    from rgpu.server.cuda.emu.ptx.texture import sample_cube

    w = 2
    data = np.arange(12 * w * w, dtype=np.float32).reshape(12, w, w, 1)  # two cubes
    tex, arena = _texture(data, F32, 1, Sampler(flags=TRSF_NORMALIZED_COORDINATES), 2)
    tex = TextureObject(Resource(**{**tex.resource.__dict__, "layered": True, "cube": True}),
                        tex.sampler)  # fmt: skip
    dirs = [np.array([0.0, 0.0]), np.array([0.0, 0.0]), np.array([-1.0, -1.0])]  # -z: face 5
    got = sample_cube(tex, arena, 0, dirs, np.array([0, 1]))[:, 0]
    # s = -x = 0, t = -y = 0: (u, v) = (0.5, 0.5) -> texel (1, 1) of face 5 and of face 11
    assert got.tolist() == [data[5, 1, 1, 0], data[11, 1, 1, 0]]


# --- instructions through the emulated driver ---------------------------------------------
PTX = r"""
.version 7.5
.target sm_75
.address_size 64

.visible .entry tex2d(.param .u64 t, .param .u64 c, .param .u64 o)
{
    .reg .b32 %r<4>;
    .reg .f32 %f<8>;
    .reg .b64 %rd<10>;
    ld.param.u64 %rd1, [t];
    ld.param.u64 %rd2, [c];
    ld.param.u64 %rd3, [o];
    mov.u32 %r2, %tid.x;
    mul.wide.u32 %rd6, %r2, 8;
    add.s64 %rd7, %rd2, %rd6;
    ld.global.v2.f32 {%f1, %f2}, [%rd7];
    tex.2d.v4.f32.f32 {%f3, %f4, %f5, %f6}, [%rd1, {%f1, %f2}];
    mul.wide.u32 %rd8, %r2, 16;
    add.s64 %rd9, %rd3, %rd8;
    st.global.v4.f32 [%rd9], {%f3, %f4, %f5, %f6};
    ret;
}

.visible .entry fetch1d(.param .u64 t, .param .u64 o)
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [t];
    ld.param.u64 %rd2, [o];
    mov.u32 %r1, %tid.x;
    add.s32 %r7, %r1, -2;
    tex.1d.v4.s32.s32 {%r2, %r3, %r4, %r5}, [%rd1, {%r7}];
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd2, %rd3;
    st.global.u32 [%rd4], %r2;
    ret;
}

.visible .entry bindless(.param .u64 hs, .param .u64 o)
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [hs];
    ld.param.u64 %rd2, [o];
    mov.u32 %r1, %tid.x;
    and.b32 %r6, %r1, 1;
    mul.wide.u32 %rd3, %r6, 8;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u64 %rd5, [%rd4];
    tex.1d.v4.s32.s32 {%r2, %r3, %r4, %r5}, [%rd5, {%r1}];
    mul.wide.u32 %rd6, %r1, 4;
    add.s64 %rd7, %rd2, %rd6;
    st.global.u32 [%rd7], %r2;
    ret;
}

.visible .entry cube(.param .u64 t, .param .u64 c, .param .u64 o)
{
    .reg .b32 %r<4>;
    .reg .f32 %f<10>;
    .reg .b64 %rd<10>;
    ld.param.u64 %rd1, [t];
    ld.param.u64 %rd2, [c];
    ld.param.u64 %rd3, [o];
    mov.u32 %r2, %tid.x;
    mul.wide.u32 %rd6, %r2, 16;
    add.s64 %rd7, %rd2, %rd6;
    ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd7];
    tex.cube.v4.f32.f32 {%f5, %f6, %f7, %f8}, [%rd1, {%f1, %f2, %f3, %f3}];
    mul.wide.u32 %rd8, %r2, 4;
    add.s64 %rd9, %rd3, %rd8;
    st.global.f32 [%rd9], %f5;
    ret;
}

.visible .entry query(.param .u64 t, .param .u64 s, .param .u64 o)
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [t];
    ld.param.u64 %rd2, [s];
    ld.param.u64 %rd3, [o];
    txq.width.b32 %r1, [%rd1];
    txq.height.b32 %r2, [%rd1];
    txq.normalized_coords.b32 %r3, [%rd1];
    txq.filter_mode.b32 %r4, [%rd1];
    suq.width.b32 %r5, [%rd2];
    st.global.v4.u32 [%rd3], {%r1, %r2, %r3, %r4};
    st.global.u32 [%rd3+16], %r5;
    ret;
}

.visible .entry surf(.param .u64 s, .param .u32 mode)
{
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    .reg .pred %p<3>;
    ld.param.u64 %rd1, [s];
    ld.param.u32 %r9, [mode];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %tid.y;
    shl.b32 %r3, %r1, 2;
    setp.eq.u32 %p1, %r9, 0;
    @%p1 bra TRAP;
    setp.eq.u32 %p2, %r9, 1;
    @%p2 bra CLAMP;
    suld.b.2d.b32.zero {%r4}, [%rd1, {%r3, %r2}];
    add.s32 %r5, %r4, 1;
    sust.b.2d.b32.zero [%rd1, {%r3, %r2}], {%r5};
    ret;
CLAMP:
    suld.b.2d.b32.clamp {%r4}, [%rd1, {%r3, %r2}];
    add.s32 %r5, %r4, 100;
    add.s32 %r6, %r2, 1;
    sust.b.2d.b32.clamp [%rd1, {%r3, %r6}], {%r5};
    ret;
TRAP:
    suld.b.2d.b32.trap {%r4}, [%rd1, {%r3, %r2}];
    mul.lo.s32 %r5, %r4, 2;
    sust.b.2d.b32.trap [%rd1, {%r3, %r2}], {%r5};
    ret;
}

.visible .entry surf3d(.param .u64 s)
{
    .reg .b16 %rs<6>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [s];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %tid.y;
    mov.u32 %r3, %tid.z;
    shl.b32 %r4, %r1, 2;
    suld.b.3d.v4.b8.trap {%rs1, %rs2, %rs3, %rs4}, [%rd1, {%r4, %r2, %r3, %r3}];
    sust.b.3d.v4.b8.trap [%rd1, {%r4, %r2, %r3, %r3}], {%rs4, %rs3, %rs2, %rs1};
    ret;
}
"""

ARRAY_SURFACE = 0x02


def _array(gpu, w, h, d, fmt, channels, flags=0) -> int:
    arr = gpu.new_id()
    gpu.s.cuArray3DCreate_v2(arr, {"Width": w, "Height": h, "Depth": d, "Format": fmt,
                                   "NumChannels": channels, "Flags": flags})  # fmt: skip
    return arr


def _to_array(gpu, arr, data: np.ndarray, w_bytes: int, h: int, d: int = 1) -> None:
    gpu.s.cuMemcpy3D_v2({"srcMemoryType": 1, "dstMemoryType": 3, "dstArray": arr,
                         "WidthInBytes": w_bytes, "Height": h, "Depth": d},
                        np.ascontiguousarray(data).tobytes())  # fmt: skip


def _from_array(gpu, arr, w_bytes: int, h: int, d: int = 1) -> bytes:
    return gpu.s.cuMemcpy3D_v2({"srcMemoryType": 3, "srcArray": arr, "dstMemoryType": 1,
                                "WidthInBytes": w_bytes, "Height": h, "Depth": d})  # fmt: skip


@pytest.fixture
def lib(gpu) -> int:
    return gpu.load(PTX.encode())


def test_tex_instruction_over_an_array(gpu, lib):
    img = np.arange(4 * 8, dtype=np.float32).reshape(4, 8)
    arr = _array(gpu, 8, 4, 0, F32, 1)
    _to_array(gpu, arr, img, 32, 4)
    t = gpu.s.cuTexObjectCreate({"resType": 0, "hArray": arr},
                                {"addressMode": [1, 1, 1], "filterMode": 1, "flags": 0})
    coords = np.array([[1.0, 1.0], [2.5, 3.5], [0.75, 0.5], [20.0, -3.0]], np.float32)
    c, o = gpu.put(coords), gpu.zeros(16 * 4)
    gpu.launch(gpu.kernel(lib, "tex2d"), 1, 4, t, c, o)
    got = gpu.get(o, np.float32, 16).reshape(4, 4)
    # (1,1): x_B = y_B = 0.5, the average of img[0:2, 0:2]; (2.5, 3.5) is texel (2, 3) exactly;
    # (0.75, 0.5): a quarter of the way from texel 0 to 1; (20, -3) clamps to (7, 0)
    assert got[:, 0].tolist() == [4.5, 26.0, 0.25, 7.0]
    assert got[:, 3].tolist() == [1.0] * 4
    gpu.s.cuTexObjectDestroy(t)
    with pytest.raises(CudaError) as info:
        gpu.launch(gpu.kernel(lib, "tex2d"), 1, 4, t, c, o)
    assert info.value.code == R.CUDA_ERROR_LAUNCH_FAILED


def test_tex1dfetch_over_linear_memory_reads_zero_out_of_range(gpu, lib):
    vals = np.arange(100, 108, dtype=np.int32)
    buf = gpu.put(vals)
    t = gpu.s.cuTexObjectCreate({"resType": 2, "devPtr": buf, "format": S32, "numChannels": 1,
                                 "sizeInBytes": 32}, {"flags": TRSF_READ_AS_INTEGER})
    o = gpu.zeros(4 * 12)
    gpu.launch(gpu.kernel(lib, "fetch1d"), 1, 12, t, o)
    assert gpu.get(o, np.int32, 12).tolist() == [0, 0, *range(100, 108), 0, 0]


def test_lanes_naming_different_texture_objects(gpu, lib):
    objs = []
    for base in (0, 1000):
        buf = gpu.put(np.arange(base, base + 8, dtype=np.int32))
        objs.append(gpu.s.cuTexObjectCreate({"resType": 2, "devPtr": buf, "format": S32,
                                             "numChannels": 1, "sizeInBytes": 32},
                                            {"flags": TRSF_READ_AS_INTEGER}))  # fmt: skip
    hs, o = gpu.put(np.array(objs, np.uint64)), gpu.zeros(4 * 8)
    gpu.launch(gpu.kernel(lib, "bindless"), 1, 8, hs, o)
    assert gpu.get(o, np.int32, 8).tolist() == [0, 1001, 2, 1003, 4, 1005, 6, 1007]


def test_cube_map_texture(gpu, lib):
    w = 4
    arr = _array(gpu, w, w, 6, F32, 1, 0x04)  # CUDA_ARRAY3D_CUBEMAP
    faces = np.stack([np.arange(w * w, dtype=np.float32).reshape(w, w) + 100 * f
                      for f in range(6)])  # fmt: skip
    _to_array(gpu, arr, faces, w * 4, w, 6)
    t = gpu.s.cuTexObjectCreate({"resType": 0, "hArray": arr}, {"flags": 2})
    # direction -> (face, texel): +x at the face centre's lower-right texel, -y near a corner
    dirs = np.array([[1, 0.01, -0.01, 0], [0.1, -1, -0.9, 0], [-0.2, 0.3, -1, 0]], np.float32)
    c, o = gpu.put(dirs), gpu.zeros(4 * 3)
    gpu.launch(gpu.kernel(lib, "cube"), 1, 3, t, c, o)
    got = gpu.get(o, np.float32, 3).tolist()
    # +x: s = -z = 0.01, t = -y = -0.01 -> u 0.505, v 0.495 -> texel (2, 1)
    # -y: s = x = 0.1, t = -z = 0.9 -> u 0.55, v 0.95 -> texel (2, 3)
    # -z: s = -x = 0.2, t = -y = -0.3 -> u 0.6, v 0.35 -> texel (2, 1)
    assert got == [faces[0, 1, 2], faces[3, 3, 2], faces[5, 1, 2]]


def test_txq_and_suq(gpu, lib):
    arr = _array(gpu, 8, 4, 0, U8, 4, ARRAY_SURFACE)
    t = gpu.s.cuTexObjectCreate({"resType": 0, "hArray": arr}, {"filterMode": 1, "flags": 2})
    s = gpu.s.cuSurfObjectCreate({"resType": 0, "hArray": arr})
    o = gpu.zeros(20)
    gpu.launch(gpu.kernel(lib, "query"), 1, 1, t, s, o)
    assert gpu.get(o, np.uint32, 5).tolist() == [8, 4, 1, 1, 8]


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_surface_load_store_boundary_modes(gpu, lib, mode):
    arr = _array(gpu, 4, 3, 0, S32, 1, ARRAY_SURFACE)
    start = np.arange(12, dtype=np.int32).reshape(3, 4)
    _to_array(gpu, arr, start, 16, 3)
    s = gpu.s.cuSurfObjectCreate({"resType": 0, "hArray": arr})
    k = gpu.kernel(lib, "surf")
    if mode == 0:  # trap: in range doubles, out of range faults
        gpu.launch(k, 1, (4, 3), s, 0)
        got = np.frombuffer(_from_array(gpu, arr, 16, 3), np.int32).reshape(3, 4)
        assert (got == start * 2).all()
        with pytest.raises(CudaError) as info:
            gpu.launch(k, 1, (5, 3), s, 0)
        assert info.value.code == R.CUDA_ERROR_ILLEGAL_ADDRESS
        return
    gpu.launch(k, 1, (6, 4), s, mode)
    got = np.frombuffer(_from_array(gpu, arr, 16, 3), np.int32).reshape(3, 4)
    if mode == 2:  # zero: out-of-range loads read 0, stores are dropped
        assert (got == start + 1).all()
    else:  # clamp: row y+1 gets row y's value + 100, clamped to the last column/row
        assert got[0].tolist() == start[0].tolist()
        assert got[1].tolist() == (start[0] + 100).tolist()
        assert got[2, 3] in (start[1, 3] + 100, start[2, 3] + 100)


def test_3d_surface_and_3d_copies(gpu, lib):
    w, h, d = 5, 3, 2
    arr = _array(gpu, w, h, d, U8, 4, ARRAY_SURFACE)
    vol = np.arange(w * h * d * 4, dtype=np.uint8).reshape(d, h, w, 4)
    # device -> array through a pitched source with offsets, then array -> host
    pitch = 64
    src = np.zeros((d + 1, h + 2, pitch), np.uint8)
    src[1:, 2:, 8 : 8 + w * 4] = vol.reshape(d, h, w * 4)
    dsrc = gpu.put(src)
    gpu.s.cuMemcpy3D_v2({"srcMemoryType": 2, "srcDevice": dsrc, "srcPitch": pitch,
                         "srcHeight": h + 2, "srcXInBytes": 8, "srcY": 2, "srcZ": 1,
                         "dstMemoryType": 3, "dstArray": arr,
                         "WidthInBytes": w * 4, "Height": h, "Depth": d})  # fmt: skip
    assert _from_array(gpu, arr, w * 4, h, d) == vol.tobytes()
    gpu.launch(gpu.kernel(lib, "surf3d"), 1, (w, h, d), gpu.s.cuSurfObjectCreate(
        {"resType": 0, "hArray": arr}))  # fmt: skip
    assert _from_array(gpu, arr, w * 4, h, d) == vol[..., ::-1].tobytes()
    # array -> array of another shape's sub-box
    other = _array(gpu, 8, 4, 3, U8, 4)
    gpu.s.cuMemcpy3D_v2({"srcMemoryType": 3, "srcArray": arr, "srcXInBytes": 4,
                         "dstMemoryType": 3, "dstArray": other, "dstY": 1, "dstZ": 1,
                         "WidthInBytes": 8, "Height": 2, "Depth": 2})  # fmt: skip
    got = np.frombuffer(_from_array(gpu, other, 32, 4, 3), np.uint8).reshape(3, 4, 8, 4)
    assert (got[1:3, 1:3, 0:2] == vol[:, 0:2, 1:3, ::-1]).all()


def test_unsupported_and_invalid_combinations_are_errors(gpu):
    s = gpu.s

    def code(fn, *args):
        with pytest.raises(CudaError) as info:
            fn(*args)
        return info.value.code

    f32 = {"Width": 4, "Height": 4, "Depth": 0, "Format": F32, "NumChannels": 1}
    assert code(s.cuArray3DCreate_v2, gpu.new_id(), {**f32, "Flags": 4}) == \
        R.CUDA_ERROR_INVALID_VALUE  # a cube map needs six faces
    assert code(s.cuArray3DCreate_v2, gpu.new_id(), {**f32, "Flags": 0x10}) == \
        R.CUDA_ERROR_NOT_SUPPORTED  # CUDA_ARRAY3D_DEPTH_TEXTURE
    assert code(s.cuArray3DCreate_v2, gpu.new_id(), {**f32, "Format": 0xB0}) == \
        R.CUDA_ERROR_INVALID_VALUE  # NV12
    assert code(s.cuArray3DCreate_v2, gpu.new_id(), {**f32, "NumChannels": 3}) == \
        R.CUDA_ERROR_INVALID_VALUE
    arr = _array(gpu, 4, 4, 0, S32, 1)
    assert code(s.cuSurfObjectCreate, {"resType": 0, "hArray": arr}) == \
        R.CUDA_ERROR_INVALID_VALUE  # no SURFACE_LDST flag
    assert code(s.cuTexObjectCreate, {"resType": 0, "hArray": arr},
                {"filterMode": 1, "flags": TRSF_READ_AS_INTEGER}) == R.CUDA_ERROR_INVALID_VALUE
    assert code(s.cuTexObjectCreate, {"resType": 1, "hMipmappedArray": 5}, {}) == \
        R.CUDA_ERROR_INVALID_HANDLE
    assert code(s.cuTexObjectCreate, {"resType": 0, "hArray": arr}, {"resType": 0},
                {"format": 1, "width": 4}) == R.CUDA_ERROR_NOT_SUPPORTED  # resource views
    assert code(s.cuTexObjectCreate, {"resType": 0, "hArray": 424242}, {}) == \
        R.CUDA_ERROR_INVALID_HANDLE
    buf = s.cuMemAlloc_v2(1024)
    assert code(s.cuTexObjectCreate, {"resType": 2, "devPtr": buf + 4, "format": F32,
                                      "numChannels": 1, "sizeInBytes": 64}, {}) == \
        R.CUDA_ERROR_INVALID_VALUE  # misaligned
    assert code(s.cuTexObjectCreate, {"resType": 2, "devPtr": buf, "format": F32,
                                      "numChannels": 1, "sizeInBytes": 4096}, {}) == \
        R.CUDA_ERROR_INVALID_VALUE  # larger than the allocation
    assert code(_to_array, gpu, arr, np.zeros(20, np.int32), 20, 4) == R.CUDA_ERROR_INVALID_VALUE
    s.cuArrayDestroy(arr)
    assert code(s.cuArrayDestroy, arr) == R.CUDA_ERROR_INVALID_HANDLE
    assert code(s.cuTexObjectDestroy, 12345) == R.CUDA_ERROR_INVALID_VALUE


# --- the NVIDIA backend builds the driver's structures as documented ----------------------
class _FakeDriver:
    """cuda.bindings' types with recorded functions, so the NVIDIA backend's structure
    building is checked without a GPU."""

    def __init__(self) -> None:
        from cuda.bindings import driver

        self.real = driver
        self.calls: list[tuple[str, tuple]] = []
        self.results = {"cuArray3DCreate": driver.CUarray(0xA770),
                        "cuMipmappedArrayCreate": driver.CUmipmappedArray(0x313),
                        "cuMipmappedArrayGetLevel": driver.CUarray(0x1E7),
                        "cuTexObjectCreate": driver.CUtexObject(0x7E1),
                        "cuSurfObjectCreate": driver.CUsurfObject(0x5F1)}  # fmt: skip

    def __getattr__(self, name: str):
        if not name.startswith("cu"):
            return getattr(self.real, name)

        def fn(*args):
            self.calls.append((name, args))
            return (0, self.results[name]) if name in self.results else (0,)

        return fn

    def last(self, name: str) -> tuple:
        return [args for n, args in self.calls if n == name][-1]


@pytest.fixture
def nv():
    pytest.importorskip("cuda.bindings.driver")
    from rgpu.server.cuda import nvidia

    fake = _FakeDriver()

    class Backend:
        driver = fake
        devices: list = []

        def _forget(self, session) -> None:
            pass

    s = nvidia.NvidiaSession(Backend(), "fake")  # type: ignore[arg-type]
    s._contexts[1] = nvidia._Context(1, 0, fake.real.CUcontext(0), 0, True)
    s._current = 1
    s._add_range(nvidia._Range(base=0x10000, size=1 << 20, context=1, allocation=True))
    return s, fake


def test_nvidia_arrays_copies_and_objects_use_the_documented_structures(nv):
    s, fake = nv
    s.cuArray3DCreate_v2(5, {"Width": 8, "Height": 4, "Depth": 2, "Format": F32,
                             "NumChannels": 2, "Flags": 2})  # fmt: skip
    (desc,) = fake.last("cuArray3DCreate")
    assert (desc.Width, desc.Height, desc.Depth, int(desc.Format), desc.NumChannels,
            desc.Flags) == (8, 4, 2, F32, 2, 2)  # fmt: skip
    data = bytes(range(64)) * 8
    s.cuMemcpy3D_v2({"srcMemoryType": 1, "dstMemoryType": 3, "dstArray": 5, "dstXInBytes": 16,
                     "dstY": 1, "WidthInBytes": 32, "Height": 2, "Depth": 2}, data)  # fmt: skip
    (p,) = fake.last("cuMemcpy3D")
    assert int(p.srcMemoryType) == 1 and p.srcHost != 0 and p.srcPitch == 32
    assert p.srcHeight == 2 and int(p.dstMemoryType) == 3 and int(p.dstArray) == 0xA770
    assert (p.dstXInBytes, p.dstY, p.WidthInBytes, p.Height, p.Depth) == (16, 1, 32, 2, 2)
    out = s.cuMemcpy2D_v2({"srcMemoryType": 3, "srcArray": 5, "dstMemoryType": 1,
                           "WidthInBytes": 24, "Height": 3})  # fmt: skip
    assert out == bytes(72)  # the fake driver wrote nothing into the packed host buffer
    (p,) = fake.last("cuMemcpy3D")
    assert int(p.srcArray) == 0xA770 and p.dstPitch == 24 and p.Depth == 1
    with pytest.raises(CudaError) as info:  # device memory the session does not own
        s.cuMemcpy3D_v2({"srcMemoryType": 2, "srcDevice": 0x999999, "srcPitch": 64,
                         "dstMemoryType": 3, "dstArray": 5, "WidthInBytes": 32, "Height": 1})
    assert info.value.code == R.CUDA_ERROR_INVALID_VALUE

    t = s.cuTexObjectCreate({"resType": 2, "devPtr": 0x10000, "format": F32, "numChannels": 1,
                             "sizeInBytes": 4096},
                            {"addressMode": [0, 2, 3], "filterMode": 1, "flags": 2,
                             "borderColor": [0.5, 0, 0, 1]})  # fmt: skip
    assert t == 0x7E1
    rd, td, vd = fake.last("cuTexObjectCreate")
    assert int(rd.resType) == 2 and int(rd.res.linear.devPtr) == 0x10000
    assert rd.res.linear.sizeInBytes == 4096 and int(rd.res.linear.format) == F32
    assert [int(m) for m in td.addressMode] == [0, 2, 3] and int(td.filterMode) == 1
    assert td.flags == 2 and td.borderColor == [0.5, 0.0, 0.0, 1.0] and vd is None
    surf = s.cuSurfObjectCreate({"resType": 0, "hArray": 5})
    (rd,) = fake.last("cuSurfObjectCreate")
    assert surf == 0x5F1 and int(rd.res.array.hArray) == 0xA770
    with pytest.raises(CudaError) as info:
        s.cuTexObjectCreate({"resType": 2, "devPtr": 0x10000, "format": F32, "numChannels": 1,
                             "sizeInBytes": 8 << 20}, {})  # past the allocation
    assert info.value.code == R.CUDA_ERROR_INVALID_VALUE
    s.cuTexObjectDestroy(t)
    assert int(fake.last("cuTexObjectDestroy")[0]) == 0x7E1
    s.cuMipmappedArrayCreate(9, {"Width": 16, "Height": 16, "Format": F32, "NumChannels": 1}, 4)
    desc, levels = fake.last("cuMipmappedArrayCreate")
    assert desc.Width == 16 and levels == 4
    s.cuMipmappedArrayGetLevel(10, 9, 2)
    assert int(fake.last("cuMipmappedArrayGetLevel")[0]) == 0x313
    with pytest.raises(CudaError) as info:
        s.cuArrayDestroy(10)  # a level goes with its mipmapped array
    assert info.value.code == R.CUDA_ERROR_INVALID_VALUE
    s.cuTexObjectCreate({"resType": 1, "hMipmappedArray": 9}, {"mipmapFilterMode": 1})
    rd, td, _ = fake.last("cuTexObjectCreate")
    assert int(rd.res.mipmap.hMipmappedArray) == 0x313 and int(td.mipmapFilterMode) == 1
    s.close()  # the surface object and the array go with the context
    assert int(fake.last("cuSurfObjectDestroy")[0]) == 0x5F1
    assert int(fake.last("cuArrayDestroy")[0]) == 0xA770
    assert int(fake.last("cuMipmappedArrayDestroy")[0]) == 0x313
    assert int(fake.last("cuTexObjectDestroy")[0]) == 0x7E1  # the mipmapped texture
