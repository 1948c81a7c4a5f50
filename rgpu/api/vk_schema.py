"""The shapes of the generated Vulkan schema (`vk_generated.py`), shared by server and client.

Every struct member and command parameter is a :class:`Field`; how it travels in msgpack is
decided by its ``shape`` and ``kind`` alone (docs/VULKAN_ENCODING.md is the normative text):

========  =====================================================================================
shape     wire form
========  =====================================================================================
stype     not sent (implied by the struct)
pnext     chain: ``[[sType, [members]], ...]`` or nil
val       one value of ``kind``: int, float, handle id (uint64), nested struct array, union bin
fixed     fixed-size C array of ``size`` elements of ``kind`` → msgpack array
chars     ``char name[size]`` → str
str       ``const char*`` (null-terminated) → str or nil
strs      ``const char* const*`` counted by ``len`` → array of str
ptr       pointer to one element → the element, or nil
array     pointer to ``len`` elements → array (or nil when optional and the count is 0)
blob      ``void*`` (or ``uint32_t* pCode``) whose byte size is ``len`` → bin
drop      function pointers, ``pAllocator``, ``pUserData``: always nil
========  =====================================================================================

``kind`` is one letter: ``i`` integer (also enums, flags, VkBool32), ``f`` float/double, ``h``
non-dispatchable handle, ``H`` dispatchable handle, ``s`` struct, ``u`` union, ``c`` char,
``v`` void.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Command", "Field", "Struct"]


class Field(NamedTuple):
    name: str
    type: str  # vk.xml base type, e.g. "uint32_t", "VkBufferCreateInfo", "VkBuffer"
    kind: str  # i f h H s u c v
    shape: str  # stype pnext val fixed chars str strs ptr array blob drop
    len: str | None = None  # len expression over sibling members/params (C syntax, "->")
    size: int = 0  # element count of fixed arrays
    optional: bool = False
    dir: str = "in"  # in | out | inout (parameters only)


class Struct(NamedTuple):
    name: str
    stype: int | None  # VkStructureType value, None for structs without sType
    fields: tuple[Field, ...]
    extends: tuple[str, ...] = ()
    union: bool = False
    returnedonly: bool = False


class Command(NamedTuple):
    name: str
    params: tuple[Field, ...]
    result: str  # "VkResult", "void", or the C type returned (e.g. "VkDeviceAddress")
    level: str  # global | instance | device (from the first parameter)
    pair: tuple[int, int] | None = None  # (count param, array param) of an enumeration
    reply: tuple[int, ...] = ()  # indexes of the parameters sent back, in order
