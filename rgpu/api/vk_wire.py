"""Build Vulkan wire values by member name (for Python clients, tests and tools).

``struct("VkBufferCreateInfo", size=4096, usage=0x20)`` gives the wire array of that struct
with every other member at its zero value, and fills a count member from the array it counts
when only the array is given (``queueFamilyIndexCount`` from ``pQueueFamilyIndices``).
``chain(...)`` builds pNext chains. Names are checked against the schema.
"""

from __future__ import annotations

from typing import Any

from . import vk_generated as schema
from .vk_schema import Field

__all__ = ["chain", "default", "node", "struct", "stype", "unpack"]


def _struct(name: str) -> Any:
    s = schema.STRUCTS.get(schema.STRUCT_ALIASES.get(name, name))
    if s is None:
        raise KeyError(f"{name} is not in rgpu's Vulkan schema")
    return s


def default(f: Field) -> Any:
    """The zero value of a member in wire form."""
    if f.shape == "val":
        if f.kind == "s":
            return struct(f.type)
        if f.kind == "u":
            return None  # a union has no implied size here; send its bytes
        return 0.0 if f.kind == "f" else 0
    if f.shape == "fixed":
        item = struct(f.type) if f.kind == "s" else 0.0 if f.kind == "f" else 0
        return [item] * f.size
    if f.shape == "chars":
        return ""
    return None


def struct(name: str, **members: Any) -> list[Any]:
    s = _struct(name)
    fields = [f for f in s.fields if f.shape != "stype"]
    known = {f.name for f in fields}
    unknown = set(members) - known
    if unknown:
        raise KeyError(f"{name} has no member(s) {', '.join(sorted(unknown))}")
    out: list[Any] = []
    for f in fields:
        if f.name in members:
            out.append(members[f.name])
            continue
        counted = [g for g in fields if g.len == f.name and g.name in members
                   and members[g.name] is not None]
        if counted and f.kind == "i" and f.shape == "val":
            v = members[counted[0].name]
            out.append(len(v))
        else:
            out.append(default(f))
    return out


def stype(name: str) -> int:
    value = _struct(name).stype
    if value is None:
        raise KeyError(f"{name} has no sType")
    return int(value)


def node(name: str, **members: Any) -> list[Any]:
    """One pNext chain node."""
    return [stype(name), struct(name, **members)]


def chain(*nodes: list[Any]) -> list[Any] | None:
    return list(nodes) or None


def unpack(name: str, value: list[Any]) -> dict[str, Any]:
    """A wire struct as a dict by member name (nested structs stay in wire form)."""
    fields = [f for f in _struct(name).fields if f.shape != "stype"]
    return {f.name: v for f, v in zip(fields, value, strict=True)}
