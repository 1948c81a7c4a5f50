"""The server codec without a driver: wire → C structs → wire round trips, and fuzzing.

Values are drawn from the schema itself (every member of the struct, counts consistent with
their arrays, pNext chains of structs that may extend the root), decoded into cffi structs
and encoded back; the result must equal the input. The fuzz tests feed random and mutated
values to the decoder: the only exception it may raise is CallError.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rgpu.api import vk_generated as schema
from rgpu.api.vk_schema import Field
from rgpu.api.vk_wire import node, struct
from rgpu.server.session import CallError

vk_raw = pytest.importorskip("vulkan._vulkan", reason="the vulkan package needs libvulkan.so.1",
                             exc_type=ImportError)
ffi = vk_raw.ffi

from rgpu.server.vulkan.codec import Codec, HandleMap  # noqa: E402


class FakeHandles(HandleMap):
    """Handle ids are the 'real' pointer values: enough to check the codec alone."""

    def real(self, type_name: str, ident: int) -> Any:
        if ident > 0xFFFF_FFFF_FFFF:
            raise CallError("invalid_handle", f"{ident:#x} unknown", vk=-13)
        return ffi.cast(type_name, ident)

    def ident(self, type_name: str, handle: Any) -> int:
        return int(ffi.cast("uintptr_t", handle))


CODEC = Codec(ffi, FakeHandles())

_RANGES: dict[str, tuple[int, int]] = {}


def _int_range(type_name: str) -> tuple[int, int]:
    r = _RANGES.get(type_name)
    if r is None:
        t = ffi.typeof(type_name)
        size = ffi.sizeof(t)
        signed = t.kind == "enum" or (t.kind == "primitive" and not t.cname.startswith(
            ("uint", "unsigned", "size_t", "uintptr")) and t.cname != "char")
        if t.kind == "enum":
            r = (0, 2**31 - 1)
        elif signed:
            r = (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1)
        else:
            r = (0, 2 ** (8 * size) - 1)
        _RANGES[type_name] = r
    return r


_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12)
_FLOATS = st.floats(width=32, allow_nan=False)


def _scalar(f: Field, bits: int | None = None) -> st.SearchStrategy[Any]:
    if f.kind == "f":
        return _FLOATS
    if f.kind in ("h", "H"):
        return st.integers(0, 2**40)
    lo, hi = _int_range(f.type)
    return st.integers(lo, hi)


_SIMPLE_LEN = re.compile(r"^\w+$")


@st.composite
def wire_struct(draw: st.DrawFn, name: str, depth: int = 0, root: bool = True) -> Any:
    s = schema.STRUCTS[name]
    if s.union:
        return draw(st.binary(min_size=ffi.sizeof(name), max_size=ffi.sizeof(name)))
    fields = [f for f in s.fields if f.shape != "stype"]
    counts: dict[str, int] = {}
    for f in fields:  # one length per count member, shared by every array it counts
        if f.len and _SIMPLE_LEN.match(f.len) and f.shape in ("array", "blob", "strs"):
            counts.setdefault(f.len, draw(st.integers(0, 2 if depth < 2 else 0)))
    values: dict[str, Any] = {}
    for f in fields:
        if f.name in counts and f.shape == "val":
            values[f.name] = counts[f.name]
            continue
        values[f.name] = draw(_member(f, depth, counts, name))
    # pSampleMask: its length follows rasterizationSamples
    if name == "VkPipelineMultisampleStateCreateInfo":
        samples = draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64]))
        values["rasterizationSamples"] = samples
        n = (samples + 31) // 32
        values["pSampleMask"] = draw(st.one_of(st.none(), st.lists(
            st.integers(0, 2**32 - 1), min_size=n, max_size=n)))
    if root and depth == 0:
        values["pNext"] = draw(_chain(name))
    return [values[f.name] for f in fields]


def _member(f: Field, depth: int, counts: dict[str, int], parent: str
            ) -> st.SearchStrategy[Any]:
    shape = f.shape
    if shape in ("pnext", "drop"):
        return st.none()
    if shape == "val":
        if f.kind == "s":
            return wire_struct(f.type, depth + 1, False)
        if f.kind == "u":
            return st.binary(min_size=ffi.sizeof(f.type), max_size=ffi.sizeof(f.type))
        return _scalar(f)
    if shape == "chars":
        return _TEXT.filter(lambda t: len(t.encode()) < f.size)
    if shape == "fixed":
        item = wire_struct(f.type, depth + 1, False) if f.kind == "s" else st.binary(
            min_size=ffi.sizeof(f.type), max_size=ffi.sizeof(f.type)) if f.kind == "u" \
            else _scalar(f)
        return st.lists(item, min_size=f.size, max_size=f.size)
    if shape == "str":
        return st.one_of(st.none(), _TEXT) if f.optional else _TEXT
    n = counts.get(f.len or "", None)
    if shape == "ptr":
        item = wire_struct(f.type, depth + 1, False) if f.kind == "s" else st.binary(
            min_size=ffi.sizeof(f.type), max_size=ffi.sizeof(f.type)) if f.kind == "u" \
            else _scalar(f)
        if depth >= 2:
            return st.none() if f.optional else item
        return st.one_of(st.none(), item) if f.optional else item
    if n is None:
        return st.none()  # a length expression these strategies do not model: nil, count 0
    if n == 0:
        return st.none()
    if shape == "blob":
        return st.binary(min_size=n, max_size=n)
    if shape == "strs":
        return st.lists(_TEXT, min_size=n, max_size=n)
    item = wire_struct(f.type, depth + 1, False) if f.kind == "s" else st.binary(
        min_size=ffi.sizeof(f.type), max_size=ffi.sizeof(f.type)) if f.kind == "u" \
        else _scalar(f)
    return st.lists(item, min_size=n, max_size=n)


def _extenders(name: str) -> list[str]:
    return sorted(n for n, s in schema.STRUCTS.items() if name in s.extends)


def _chain(name: str) -> st.SearchStrategy[Any]:
    ext = _extenders(name)
    if not ext:
        return st.none()
    nodes = st.lists(st.sampled_from(ext), max_size=3, unique=True).flatmap(
        lambda names: st.tuples(*[wire_struct(n, 1, False) for n in names]).map(
            lambda vals: [[schema.STRUCTS[n].stype, v] for n, v in zip(names, vals,
                                                                         strict=True)]
            or None))
    return nodes


ROUND_TRIP = [
    "VkBufferCreateInfo", "VkImageCreateInfo", "VkDeviceCreateInfo", "VkInstanceCreateInfo",
    "VkRenderPassBeginInfo", "VkClearAttachment", "VkPipelineMultisampleStateCreateInfo",
    "VkPipelineColorBlendStateCreateInfo", "VkImageBlit", "VkSpecializationInfo",
    "VkShaderModuleCreateInfo", "VkSubmitInfo", "VkWriteDescriptorSet",
    "VkPhysicalDeviceProperties2", "VkPhysicalDeviceFeatures2", "VkGraphicsPipelineCreateInfo",
    "VkRenderingInfo", "VkDependencyInfo", "VkSemaphoreCreateInfo", "VkComputePipelineCreateInfo",
]


def _round_trip(name: str, value: Any) -> Any:
    keep: list[Any] = []
    ptr = CODEC.new_struct(name, value, keep)
    return CODEC.encode_struct(name, ptr)


@pytest.mark.parametrize("name", ROUND_TRIP)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    value = data.draw(wire_struct(name))
    if name == "VkWriteDescriptorSet":  # the array its descriptorType reads must be there
        fields = [f.name for f in schema.STRUCTS[name].fields if f.shape != "stype"]
        value[fields.index("descriptorType")] = 7  # STORAGE_BUFFER
        n = value[fields.index("descriptorCount")]
        if n and value[fields.index("pBufferInfo")] is None:
            value[fields.index("descriptorCount")] = 0
            for arr in ("pImageInfo", "pTexelBufferView"):
                value[fields.index(arr)] = None
    assert _round_trip(name, value) == value


def test_chain_union_and_strings_by_hand() -> None:
    info = struct("VkDeviceCreateInfo",
                  pNext=[node("VkPhysicalDeviceVulkan12Features", timelineSemaphore=1),
                         node("VkPhysicalDeviceVulkan13Features", synchronization2=1)],
                  pQueueCreateInfos=[struct("VkDeviceQueueCreateInfo", queueCount=2,
                                            pQueuePriorities=[1.0, 0.5])],
                  ppEnabledExtensionNames=["VK_KHR_maintenance4"])
    assert _round_trip("VkDeviceCreateInfo", info) == info
    clear = struct("VkRenderPassBeginInfo", renderPass=7,
                   pClearValues=[bytes(range(16)), b"\0" * 16])
    assert _round_trip("VkRenderPassBeginInfo", clear) == clear


@pytest.mark.parametrize("bad_value, message", [
    (struct("VkBufferCreateInfo", queueFamilyIndexCount=2, pQueueFamilyIndices=[1]),
     "1 elements, but queueFamilyIndexCount is 2"),
    (struct("VkBufferCreateInfo", size="big"), "expected an integer"),
    (struct("VkBufferCreateInfo", size=-1), "out of range|negative|convert"),
    (struct("VkBufferCreateInfo")[:-1], "array of 7 members"),
    (struct("VkBufferCreateInfo", pNext=[node("VkPhysicalDeviceVulkan12Features")]),
     "may not extend VkBufferCreateInfo"),
    (struct("VkBufferCreateInfo", pNext=[[123456789, []]]), "unknown sType"),
    (struct("VkBufferCreateInfo", pNext="x"), "pNext chain"),
])
def test_decoder_names_the_rule_broken(bad_value: Any, message: str) -> None:
    with pytest.raises(CallError) as info:
        CODEC.decode_struct("VkBufferCreateInfo", bad_value, [])
    assert re.search(message, str(info.value)), str(info.value)


# --- fuzz ------------------------------------------------------------------------------------

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                  st.text(max_size=8), st.binary(max_size=40))
_value = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=6), max_leaves=40)
FUZZ_STRUCTS = sorted(schema.STRUCTS)


def _decode_only_call_errors(name: str, value: Any) -> None:
    try:
        CODEC.decode_struct(name, value, [])
    except CallError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(FUZZ_STRUCTS), value=_value)
def test_fuzz_random_values(name: str, value: Any) -> None:
    _decode_only_call_errors(name, value)


def _mutate(data: st.DataObject, value: Any) -> Any:
    if isinstance(value, list) and value and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        out = list(value)
        choice = data.draw(st.integers(0, 3))
        if choice == 0:
            out[i] = data.draw(_leaf)
        elif choice == 1:
            del out[i]
        elif choice == 2:
            out.append(data.draw(_leaf))
        else:
            out[i] = _mutate(data, out[i])
        return out
    return data.draw(_leaf)


@pytest.mark.parametrize("name", ROUND_TRIP)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_mutated_values(name: str, data: st.DataObject) -> None:
    value = data.draw(wire_struct(name))
    for _ in range(data.draw(st.integers(1, 4))):
        value = _mutate(data, value)
    _decode_only_call_errors(name, value)
