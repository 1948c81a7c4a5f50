"""Texture and surface instructions: ``tex`` (``.level``/``.grad`` choose mipmap levels; on
a texture without mipmaps they read its one level), ``tld4``, ``txq``, ``suld.b``, ``sust.b``
and ``suq``, in unified mode (the object is a 64-bit handle in a register, as nvcc emits for
texture and surface objects). The arithmetic is in ``texture.py``; here operands are read,
lanes grouped by the object they name, and results written back.
"""

from __future__ import annotations

import numpy as np

from .compiler import (
    S32,
    U64,
    CompileContext,
    Exec,
    op,
    reader,
    scatter_writer,
    unsupported,
    writer,
)
from .ir import DTYPES, Addr, ArgList, Instruction, Reg, Vec
from .texture import (
    ADDRESS_CLAMP,
    FILTER_LINEAR,
    TRSF_NORMALIZED_COORDINATES,
    Resource,
    SurfaceObject,
    TextureObject,
    gather4,
    lod_from_gradients,
    sample,
    sample_cube,
    sample_lod,
)

#: geometry modifier -> (coordinate count, layered)
_GEOMETRY = {"1d": (1, False), "2d": (2, False), "3d": (3, False), "a1d": (1, True),
             "a2d": (2, True), "cube": (3, False), "acube": (3, True)}  # fmt: skip
_UNSUPPORTED_GEOMETRY = ("2dms", "a2dms")


def _geometry(ins: Instruction, cx: CompileContext) -> tuple[str, int, bool] | None:
    for m in ins.mods:
        if m in _GEOMETRY:
            return (m, *_GEOMETRY[m])
    return None


def _lanes(fr, m, v) -> np.ndarray:
    """Values of an operand for the active lanes (``m``'s), as an array."""
    if np.ndim(v) == 0:
        n = fr.L.N if m is None else int(np.count_nonzero(m))
        return np.full(n, v)
    return v if m is None else v[m]


def _handle_groups(fr, m, rd_handle) -> list[tuple[int, np.ndarray | None]]:
    """(handle, positions among the active lanes or None for all) for each distinct handle."""
    h = rd_handle(fr)
    if np.ndim(h) == 0:
        return [(int(h), None)]
    hv = h if m is None else h[m]
    uniq = np.unique(hv)
    if uniq.size == 1:
        return [(int(uniq[0]), None)]
    return [(int(u), np.flatnonzero(hv == u)) for u in uniq]


def _object_operand(ins: Instruction, cx: CompileContext, op_) -> tuple:
    """(handle reader, coordinate operands) of ``[handle, {coords}]``."""
    if not (isinstance(op_, ArgList) and len(op_.items) == 2 and isinstance(op_.items[1], Vec)):
        raise cx.fault(ins, "not_supported",
                       "texture/surface operand other than [object, {coordinates}] "
                       "(independent samplers, .texref/.surfref variables)")  # fmt: skip
    handle = op_.items[0]
    if not isinstance(handle, Reg):
        raise cx.fault(ins, "not_supported", "texture/surface references (.texref/.surfref) "
                       "are not supported; texture and surface objects are")  # fmt: skip
    return reader(handle, U64, cx, ins), list(op_.items[1].items)


def _lookup(fr, handle: int, kind: type, fault):
    obj = fr.L.mem.descriptors.get(handle)
    if not isinstance(obj, kind):
        what = "texture" if kind is TextureObject else "surface"
        raise fault("launch_failed", f"{handle:#x} is not a live {what} object")
    return obj


def _checked(fr, res: Resource, fault) -> int:
    mem = fr.L.mem
    hit = mem.allocation_of(res.base)
    if hit is None or res.base + res.span > hit[0] + hit[1]:
        raise fault("illegal_address", f"the memory of the object at {res.base:#x} was freed")
    return res.base - mem.base


def _result_writers(ins: Instruction, cx: CompileContext, dst, dt: np.dtype):
    items = list(dst.items) if isinstance(dst, Vec) else [dst]
    full = [writer(d, dt, cx, ins) for d in items]
    return full, [scatter_writer(d, dt, cx, ins) for d in items]


def _to_dtype(vals: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Texture results (float64 or int64) as the destination type's bits."""
    if dt.kind == "f":
        if vals.dtype.kind == "f":
            return vals.astype(dt)
        return vals.astype(np.int64).astype(np.uint32).view(np.float32).astype(dt)
    if vals.dtype.kind == "f":
        return vals.astype(np.float32).view(np.uint32).view(dt)
    return vals.astype(np.int64).astype(np.uint32).view(np.int32 if dt.kind == "i" else np.uint32) \
        .astype(dt)


def _write_results(fr, m, results: np.ndarray, ws_full, ws_idx) -> None:
    if m is None:
        for j, w in enumerate(ws_full):
            w(fr, results[:, j], None)
    else:
        idx = np.flatnonzero(m)
        for j, w in enumerate(ws_idx):
            w(fr, results[:, j], idx)


@op("tex")
def _tex(ins: Instruction, cx: CompileContext) -> Exec:
    if any(g in ins.mods for g in _UNSUPPORTED_GEOMETRY):
        return unsupported(ins, cx, "multisample textures")
    geo = _geometry(ins, cx)
    types = ins.types
    if geo is None or len(types) != 2:
        raise cx.fault(ins, "invalid_ptx", "tex needs a geometry and two types")
    _, ncoords, layered = geo
    cube = geo[0] in ("cube", "acube")
    dt, ct = DTYPES[types[0]], DTYPES[types[1]]
    if dt.kind not in "fiu" or dt.itemsize != 4 or ct not in (np.dtype(np.float32), S32):
        return unsupported(ins, cx, f"tex with types .{types[0]}.{types[1]}")
    dst = ins.operands[0]
    if not isinstance(dst, Vec):
        return unsupported(ins, cx, "tex with a predicate destination or scalar result")
    rd_handle, coord_ops = _object_operand(ins, cx, ins.operands[1])
    need = ncoords + (1 if layered else 0)
    if len(coord_ops) < need:
        raise cx.fault(ins, "invalid_ptx", f"tex.{geo[0]} needs {need} coordinates")
    layer_rd = reader(coord_ops[0], S32, cx, ins) if layered else None
    first = 1 if layered else 0
    coord_rds = [reader(c, ct, cx, ins) for c in coord_ops[first : first + ncoords]]
    integer_coords = ct == S32
    ws_full, ws_idx = _result_writers(ins, cx, dst, dt)
    fault = cx.faulter(ins)
    dims_needed = ncoords
    f32 = DTYPES["f32"]
    # level of detail: tex.level's scalar, or tex.grad's two gradient vectors
    lod_rd = None
    grad_rds: tuple[list, list] | None = None
    if "level" in ins.mods:
        lod_rd = reader(ins.operands[2], f32, cx, ins)
    elif "grad" in ins.mods:
        gx, gy = ins.operands[2], ins.operands[3]
        if not (isinstance(gx, Vec) and isinstance(gy, Vec)):
            raise cx.fault(ins, "invalid_ptx", "tex.grad needs two gradient vectors")
        grad_rds = ([reader(g, f32, cx, ins) for g in gx.items[:ncoords]],
                    [reader(g, f32, cx, ins) for g in gy.items[:ncoords]])  # fmt: skip

    def tex(fr, m):
        coords = [_lanes(fr, m, rd(fr)) for rd in coord_rds]
        layer = _lanes(fr, m, layer_rd(fr)) if layer_rd is not None else None
        n = coords[0].size
        out = np.zeros((n, 4), dt)
        for handle, sel in _handle_groups(fr, m, rd_handle):
            obj = _lookup(fr, handle, TextureObject, fault)
            res = obj.resource
            if cube != res.cube or (not cube and (res.dims != dims_needed
                                                  or res.layered != layered)):
                kind = "cube-map" if res.cube else f"{res.dims}D"
                raise fault("launch_failed", f"tex.{geo[0]} on a {kind}"
                            f"{' layered' if res.layered and not res.cube else ''} texture")
            off = _checked(fr, res, fault)
            cs = coords if sel is None else [c[sel] for c in coords]
            ly = layer if sel is None or layer is None else layer[sel]
            if cube:
                if ct != f32:
                    raise fault("launch_failed", "cube-map coordinates must be .f32")
                vals = sample_cube(obj, fr.L.mem.arena, off, cs, ly)
            elif obj.levels and (lod_rd is not None or grad_rds is not None):
                for level in obj.levels[1:]:
                    _checked(fr, level, fault)
                if lod_rd is not None:
                    lod = _lanes(fr, m, lod_rd(fr))
                else:
                    assert grad_rds is not None
                    dx = [_lanes(fr, m, g(fr)) for g in grad_rds[0]]
                    dy = [_lanes(fr, m, g(fr)) for g in grad_rds[1]]
                    lod = lod_from_gradients(obj, dx, dy)
                lod = lod if sel is None else lod[sel]
                vals = sample_lod(obj, fr.L.mem.arena, fr.L.mem.base, cs, ly, lod)
            else:  # level 0: plain tex has no derivatives in compute code
                vals = sample(obj, fr.L.mem.arena, off, cs, ly, integer_coords)
            if sel is None:
                out = _to_dtype(vals, dt)
            else:
                out[sel] = _to_dtype(vals, dt)
        _write_results(fr, m, out, ws_full, ws_idx)

    return tex


@op("tld4")
def _tld4(ins: Instruction, cx: CompileContext) -> Exec:
    comps = [m for m in ins.mods if m in ("r", "g", "b", "a")]
    types = ins.types
    if not comps or "2d" not in ins.mods or len(types) != 2 or types[1] != "f32":
        return unsupported(ins, cx, "tld4 other than tld4.{r,g,b,a}.2d.v4.*.f32")
    component = "rgba".index(comps[0])
    dt = DTYPES[types[0]]
    dst = ins.operands[0]
    if not isinstance(dst, Vec):
        return unsupported(ins, cx, "tld4 with a predicate destination")
    rd_handle, coord_ops = _object_operand(ins, cx, ins.operands[1])
    coord_rds = [reader(c, DTYPES["f32"], cx, ins) for c in coord_ops[:2]]
    ws_full, ws_idx = _result_writers(ins, cx, dst, dt)
    fault = cx.faulter(ins)

    def tld4(fr, m):
        coords = [_lanes(fr, m, rd(fr)) for rd in coord_rds]
        out = np.zeros((coords[0].size, 4), dt)
        for handle, sel in _handle_groups(fr, m, rd_handle):
            obj = _lookup(fr, handle, TextureObject, fault)
            if obj.resource.dims != 2 or obj.resource.layered:
                raise fault("launch_failed", "tld4.2d on a texture that is not 2D")
            off = _checked(fr, obj.resource, fault)
            cs = coords if sel is None else [c[sel] for c in coords]
            vals = _to_dtype(gather4(obj, fr.L.mem.arena, off, cs, component), dt)
            if sel is None:
                out = vals
            else:
                out[sel] = vals
        _write_results(fr, m, out, ws_full, ws_idx)

    return tld4


def _query(obj: TextureObject | SurfaceObject, what: str, fault) -> int:
    res = obj.resource
    sampler = obj.sampler if isinstance(obj, TextureObject) else None
    if what == "width":
        return res.width
    if what == "height":
        return res.height if res.dims >= 2 else 0
    if what == "depth":
        return res.depth if res.dims == 3 else 0
    if what == "array_size":
        return res.depth if res.layered else 0
    if what == "num_mipmap_levels":
        return len(obj.levels) or 1 if isinstance(obj, TextureObject) else 1
    if what == "num_samples":
        return 0
    if what == "channel_data_type":
        return res.format
    if what == "channel_order":
        return res.channels
    if sampler is not None:
        if what == "normalized_coords":
            return int(bool(sampler.flags & TRSF_NORMALIZED_COORDINATES))
        if what == "filter_mode":
            return int(sampler.filter == FILTER_LINEAR)
        if what.startswith("addr_mode_"):
            return sampler.address[int(what[-1])]
    elif what.startswith("addr_mode_"):
        return ADDRESS_CLAMP
    raise fault("not_supported", f"query .{what} is not supported by the emulated device")


@op("txq", "suq")
def _txq(ins: Instruction, cx: CompileContext) -> Exec:
    queries = [m for m in ins.mods if m not in ("b32", "level")]
    if "level" in ins.mods or len(queries) != 1:
        return unsupported(ins, cx)
    what = queries[0]
    src = ins.operands[1]
    if not (isinstance(src, Addr) and isinstance(src.base, Reg) and src.offset == 0):
        return unsupported(ins, cx, f"{ins.opcode} of a .texref/.surfref variable")
    rd_handle = reader(src.base, U64, cx, ins)
    w_full = writer(ins.operands[0], np.dtype(np.uint32), cx, ins)
    fault = cx.faulter(ins)
    kind = TextureObject if ins.opcode == "txq" else SurfaceObject

    def txq(fr, m):
        groups = _handle_groups(fr, m, rd_handle)
        if len(groups) == 1:
            val = _query(_lookup(fr, groups[0][0], kind, fault), what, fault)
            w_full(fr, np.uint32(val & 0xFFFFFFFF), m)
            return
        n = fr.L.N if m is None else int(np.count_nonzero(m))
        vals = np.zeros(n, np.uint32)
        for handle, sel in groups:
            vals[sel] = _query(_lookup(fr, handle, kind, fault), what, fault) & 0xFFFFFFFF
        if m is None:
            w_full(fr, vals, None)
        else:
            full = np.zeros(fr.L.N, np.uint32)
            full[m] = vals
            w_full(fr, full, m)

    return txq


# --- surfaces ---------------------------------------------------------------------------------
def _surface_setup(ins: Instruction, cx: CompileContext, obj_op):
    geo = _geometry(ins, cx)
    if geo is None:
        raise cx.fault(ins, "invalid_ptx", f"{ins.opcode} needs a geometry")
    name, ncoords, layered = geo
    types = [t for t in ins.types if t in ("b8", "b16", "b32", "b64")]
    if len(types) != 1:
        raise cx.fault(ins, "invalid_ptx", f"{ins.opcode} needs one of .b8/.b16/.b32/.b64")
    dt = DTYPES[types[0]]
    nvec = 4 if "v4" in ins.mods else 2 if "v2" in ins.mods else 1
    clamp = "trap"
    for c in ("clamp", "zero"):
        if c in ins.mods:
            clamp = c
    rd_handle, coord_ops = _object_operand(ins, cx, obj_op)
    need = ncoords + (1 if layered else 0)
    if len(coord_ops) < need:
        raise cx.fault(ins, "invalid_ptx", f"{ins.opcode}.{name} needs {need} coordinates")
    layer_rd = reader(coord_ops[0], S32, cx, ins) if layered else None
    first = 1 if layered else 0
    coord_rds = [reader(c, S32, cx, ins) for c in coord_ops[first : first + ncoords]]
    return name, ncoords, layered, dt, nvec, clamp, rd_handle, layer_rd, coord_rds


def _surface_offsets(fr, m, res: Resource, coords, layer, access: int, clamp: str, fault,
                     what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Arena offsets of each active lane's access, and the in-range mask for ``.zero``."""
    x = coords[0].astype(np.int64)
    y = coords[1].astype(np.int64) if len(coords) > 1 else np.zeros_like(x)
    z = coords[2].astype(np.int64) if len(coords) > 2 else np.zeros_like(x)
    if layer is not None:
        z = layer.astype(np.int64)
    row = res.width * res.element_size
    limits = (row - access, res.height - 1, res.depth - 1)
    ok = None
    if clamp == "clamp":
        x = np.clip(x, 0, limits[0])
        x -= x % access
        y = np.clip(y, 0, limits[1])
        z = np.clip(z, 0, limits[2])
    else:
        inside = (x >= 0) & (x <= limits[0]) & (y >= 0) & (y <= limits[1]) & (z >= 0) \
            & (z <= limits[2])
        if clamp == "trap":
            if not inside.all():
                j = int(np.argmax(~inside))
                raise fault("illegal_address", f"{what} at ({int(x[j])} bytes, {int(y[j])}, "
                            f"{int(z[j])}) is outside the {res.width}x{res.height}x{res.depth} "
                            "surface")  # fmt: skip
        else:
            ok = inside
            x = np.where(inside, x, 0)
            y = np.where(inside, y, 0)
            z = np.where(inside, z, 0)
    if (x % access).any():
        j = int(np.argmax(x % access != 0))
        raise fault("misaligned_address",
                    f"{what} at byte {int(x[j])} is not aligned to {access} bytes")  # fmt: skip
    off = _checked(fr, res, fault) + z * res.slice_pitch + y * res.pitch + x
    return off, ok


@op("suld")
def _suld(ins: Instruction, cx: CompileContext) -> Exec:
    if "b" not in ins.mods:
        return unsupported(ins, cx, "suld.p (formatted surface loads)")
    _name, _, _layered, dt, nvec, clamp, rd_handle, layer_rd, coord_rds = _surface_setup(
        ins, cx, ins.operands[1])
    dst = ins.operands[0]
    ws_full, ws_idx = _result_writers(ins, cx, dst, dt)
    if len(ws_full) != nvec:
        raise cx.fault(ins, "invalid_ptx", f"vector width {nvec} does not match the operand")
    fault = cx.faulter(ins)
    access = dt.itemsize * nvec
    span = np.arange(access, dtype=np.int64)

    def suld(fr, m):
        coords = [_lanes(fr, m, rd(fr)) for rd in coord_rds]
        layer = _lanes(fr, m, layer_rd(fr)) if layer_rd is not None else None
        n = coords[0].size
        out = np.zeros((n, nvec), dt)
        arena = fr.L.mem.arena
        for handle, sel in _handle_groups(fr, m, rd_handle):
            res = _lookup(fr, handle, SurfaceObject, fault).resource
            cs = coords if sel is None else [c[sel] for c in coords]
            ly = layer if sel is None or layer is None else layer[sel]
            off, ok = _surface_offsets(fr, m, res, cs, ly, access, clamp, fault, "suld")
            vals = np.ascontiguousarray(arena[off[:, None] + span]).view(dt).reshape(-1, nvec)
            if ok is not None:
                vals = np.where(ok[:, None], vals, dt.type(0))
            if sel is None:
                out = vals
            else:
                out[sel] = vals
        _write_results(fr, m, out, ws_full, ws_idx)

    return suld


@op("sust")
def _sust(ins: Instruction, cx: CompileContext) -> Exec:
    if "b" not in ins.mods:
        return unsupported(ins, cx, "sust.p (formatted surface stores)")
    _name, _, _layered, dt, nvec, clamp, rd_handle, layer_rd, coord_rds = _surface_setup(
        ins, cx, ins.operands[0])
    src = ins.operands[1]
    items = list(src.items) if isinstance(src, Vec) else [src]
    if len(items) != nvec:
        raise cx.fault(ins, "invalid_ptx", f"vector width {nvec} does not match the operand")
    val_rds = [reader(s, dt, cx, ins) for s in items]
    fault = cx.faulter(ins)
    access = dt.itemsize * nvec
    span = np.arange(access, dtype=np.int64)

    def sust(fr, m):
        coords = [_lanes(fr, m, rd(fr)) for rd in coord_rds]
        layer = _lanes(fr, m, layer_rd(fr)) if layer_rd is not None else None
        vals = np.stack([_lanes(fr, m, rd(fr)).astype(dt) for rd in val_rds], axis=1)
        arena = fr.L.mem.arena
        for handle, sel in _handle_groups(fr, m, rd_handle):
            res = _lookup(fr, handle, SurfaceObject, fault).resource
            cs = coords if sel is None else [c[sel] for c in coords]
            ly = layer if sel is None or layer is None else layer[sel]
            v = vals if sel is None else vals[sel]
            off, ok = _surface_offsets(fr, m, res, cs, ly, access, clamp, fault, "sust")
            data = np.ascontiguousarray(v).view(np.uint8).reshape(-1, access)
            if ok is not None:
                off, data = off[ok], data[ok]
            arena[off[:, None] + span] = data  # several lanes on one texel: the last wins

    return sust


@op("sured")
def _sured(ins: Instruction, cx: CompileContext) -> Exec:
    return unsupported(ins, cx, "surface reductions (sured)")
