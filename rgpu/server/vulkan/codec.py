"""The server end of the Vulkan codec: msgpack values ⇄ cffi structs, driven by the schema.

A generic interpreter over `rgpu.api.vk_generated` (generated tables, not generated code):
one decoder builds C structs from the wire form, one encoder turns C structs back into it.
Every mistake a client can make (wrong types, a count that disagrees with its array, a pNext
node that may not extend its parent, an unknown handle id) is a :class:`CallError`, never a
crash; docs/VULKAN_ENCODING.md is the normative description of the forms.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from typing import Any

from rgpu.api import vk_generated as schema
from rgpu.api.vk_schema import Field, Struct

from ..session import CallError

__all__ = ["VK_ERROR_UNKNOWN", "Codec", "HandleMap", "bad", "eval_len", "struct_schema"]

VK_ERROR_UNKNOWN = -13
MAX_ARRAY = 1 << 20  # elements of one decoded array; bytes are bounded by the frame limit
MAX_CHAIN = 256


def bad(message: str) -> CallError:
    """The error for input the client should never have sent."""
    return CallError("bad_call", message, vk=VK_ERROR_UNKNOWN)


def struct_schema(name: str) -> Struct:
    s = schema.STRUCTS.get(schema.STRUCT_ALIASES.get(name, name))
    if s is None:
        raise bad(f"struct {name} is not in rgpu's Vulkan schema")
    return s


# --- len expressions --------------------------------------------------------------------------

_ALLOWED = (ast.Expression, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv,
            ast.Name, ast.Attribute, ast.Constant, ast.Load)


@functools.cache
def _compile_len(expr: str) -> Callable[[Callable[[str], Any]], int]:
    tree = ast.parse(expr.replace("->", "."), mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ValueError(f"unsupported len expression {expr!r}")

    def ev(node: ast.AST, lookup: Callable[[str], Any]) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body, lookup)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return lookup(node.id)
        if isinstance(node, ast.Attribute):
            return getattr(ev(node.value, lookup), node.attr)
        assert isinstance(node, ast.BinOp)
        a, b = int(ev(node.left, lookup)), int(ev(node.right, lookup))
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return a // b if b else 0

    return lambda lookup: int(ev(tree, lookup))


def eval_len(expr: str, lookup: Callable[[str], Any]) -> int:
    """Evaluate a vk.xml ``len`` expression; names are resolved by ``lookup``."""
    return _compile_len(expr)(lookup)


# --- handles ----------------------------------------------------------------------------------


class HandleMap:
    """What the codec needs from a session's handle table."""

    def real(self, type_name: str, ident: int) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def ident(self, type_name: str, handle: Any) -> int:  # pragma: no cover - interface
        raise NotImplementedError


# --- the codec --------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Codec:
    """Decode wire values into cffi objects and encode cffi objects into wire values."""

    def __init__(self, ffi: Any, handles: HandleMap) -> None:
        self.ffi = ffi
        self.handles = handles
        self.NULL = ffi.NULL
        #: blobs too large for a frame's body, sent ahead by vkRgpuStageBlob: id -> bytes,
        #: each taken by the first blob slot that names it (``[id]`` instead of bin)
        self.staged: dict[int, bytes | bytearray | memoryview] = {}

    # ..... decoding (wire -> C) ...............................................................

    def decode_struct(self, name: str, value: Any, keep: list[Any]) -> Any:
        """:meth:`new_struct` for input from outside: every rejection is a CallError."""
        try:
            return self.new_struct(name, value, keep)
        except (TypeError, OverflowError, ValueError) as exc:
            raise bad(f"{name}: {exc}") from None

    def new_struct(self, name: str, value: Any, keep: list[Any], path: str = "",
                   node: bool = False) -> Any:
        """A new ``name *`` filled from its wire form."""
        s = struct_schema(name)
        try:
            ptr = self.ffi.new(f"{s.name} *")
        except self.ffi.error:
            raise bad(f"{s.name} is unknown to the server's Vulkan binding") from None
        keep.append(ptr)
        if s.union:
            self._fill_union(ptr, s, value, path or s.name)
        else:
            self.fill_struct(ptr, s, value, keep, path or s.name, node)
        return ptr

    def _fill_union(self, ptr: Any, s: Struct, value: Any, path: str) -> None:
        size = self.ffi.sizeof(s.name)
        if not isinstance(value, (bytes, bytearray)) or len(value) != size:
            raise bad(f"{path}: a {s.name} is {size} bytes of bin")
        self.ffi.memmove(ptr, bytes(value), size)

    def fill_struct(self, target: Any, s: Struct, value: Any, keep: list[Any],
                    path: str, node: bool = False) -> None:
        """Fill the struct at ``target`` (a pointer or a struct reference).

        ``node``: the struct is a pNext chain node, whose own pNext slot must be nil (chains
        are flat lists on the wire)."""
        fields = s.fields
        wire = [f for f in fields if f.shape != "stype"]
        if not isinstance(value, (list, tuple)) or len(value) != len(wire):
            raise bad(f"{path}: a {s.name} is an array of {len(wire)} members "
                      f"(got {_describe(value)})")
        later: list[tuple[Field, Any]] = []
        i = 0
        for f in fields:
            if f.shape == "stype":
                target.sType = s.stype
                continue
            v = value[i]
            i += 1
            if f.shape in ("val", "fixed", "chars"):
                self._set_inline(target, f, v, keep, f"{path}.{f.name}")
            else:
                later.append((f, v))
        for f, v in later:  # pointers last: their counts are set by now
            p = f"{path}.{f.name}"
            if f.shape == "pnext":
                if node and v is not None:
                    raise bad(f"{p}: a chain node's own pNext is nil (chains are flat)")
                target.pNext = self.NULL if node else self.chain(s.name, v, keep, p)
            elif f.shape == "drop":
                if v is not None:
                    raise bad(f"{p} is not carried; send nil")
            else:
                count = None
                if f.len is not None and f.shape in ("array", "blob", "strs"):
                    count = self._len(f, lambda n: getattr(target, n), p)
                setattr(target, f.name,
                        self.pointer(f, v, count, keep, p, struct_name=s.name, parent=target))

    def _len(self, f: Field, lookup: Callable[[str], Any], path: str) -> int:
        try:
            n = eval_len(f.len or "", lookup)
        except (AttributeError, TypeError, ValueError) as exc:
            raise bad(f"{path}: cannot evaluate its length {f.len!r}: {exc}") from None
        if n < 0:
            raise bad(f"{path}: negative length {f.len} = {n}")
        return n

    def _set_inline(self, target: Any, f: Field, v: Any, keep: list[Any], path: str) -> None:
        if f.shape == "val":
            if f.kind == "s":
                self.fill_struct(getattr(target, f.name), struct_schema(f.type), v, keep, path)
            elif f.kind == "u":
                size = self.ffi.sizeof(f.type)
                if not isinstance(v, (bytes, bytearray)) or len(v) != size:
                    raise bad(f"{path}: a {f.type} is {size} bytes of bin")
                self.ffi.memmove(self.ffi.addressof(target, f.name), bytes(v), size)
            else:
                setattr(target, f.name, self.scalar(f, v, path))
        elif f.shape == "chars":
            if not isinstance(v, str):
                raise bad(f"{path}: expected str, got {_describe(v)}")
            raw = v.encode()
            if len(raw) >= f.size:
                raise bad(f"{path}: longer than {f.size - 1} bytes")
            setattr(target, f.name, raw)
        else:  # fixed
            if not isinstance(v, (list, tuple)) or len(v) != f.size:
                raise bad(f"{path}: expected an array of {f.size}, got {_describe(v)}")
            arr = getattr(target, f.name)
            if f.kind == "s":
                sub = struct_schema(f.type)
                for k, item in enumerate(v):
                    self.fill_struct(arr[k], sub, item, keep, f"{path}[{k}]")
            elif f.kind == "u":
                raise bad(f"{path}: arrays of unions are not carried")
            else:
                for k, item in enumerate(v):
                    arr[k] = self.scalar(f, item, f"{path}[{k}]")

    def scalar(self, f: Field, v: Any, path: str) -> Any:
        kind = f.kind
        if kind == "i":
            if not _is_int(v):
                raise bad(f"{path}: expected an integer, got {_describe(v)}")
            return v
        if kind == "f":
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise bad(f"{path}: expected a float, got {_describe(v)}")
            return float(v)
        if kind in ("h", "H"):
            if not _is_int(v):
                raise bad(f"{path}: expected a {f.type} id, got {_describe(v)}")
            if v == 0:
                return self.NULL
            return self.handles.real(f.type, v)
        raise bad(f"{path}: {f.type} cannot be sent by value")

    def chain(self, parent: str, value: Any, keep: list[Any], path: str) -> Any:
        """Build a pNext chain from ``[[sType, [members]], ...]``."""
        if value is None:
            return self.NULL
        if not isinstance(value, (list, tuple)) or len(value) > MAX_CHAIN:
            raise bad(f"{path}: a pNext chain is an array of [sType, members] or nil")
        head = self.NULL
        for node in reversed(value):
            if not isinstance(node, (list, tuple)) or len(node) != 2 or not _is_int(node[0]):
                raise bad(f"{path}: a pNext node is [sType, members]")
            name = self.chained_struct(parent, node[0], path)
            ptr = self.new_struct(name, node[1], keep, f"{path}<{name}>", node=True)
            ptr.pNext = head
            head = ptr
        return head

    def chained_struct(self, parent: str, stype: int, path: str) -> str:
        name = schema.STYPES.get(stype)
        if name is None:
            raise bad(f"{path}: unknown sType {stype}")
        parent = schema.STRUCT_ALIASES.get(parent, parent)
        if not any(schema.STRUCT_ALIASES.get(e, e) == parent
                   for e in schema.STRUCTS[name].extends):
            raise bad(f"{path}: {name} may not extend {parent}")
        return name

    def pointer(self, f: Field, v: Any, count: int | None, keep: list[Any], path: str,
                struct_name: str = "", parent: Any = None) -> Any:
        """The C pointer for an input field of shape ptr/array/blob/str/strs."""
        shape = f.shape
        if v is None:
            if count and not self._may_be_null(struct_name, f, parent):
                raise bad(f"{path}: nil, but its length {f.len} is {count}")
            if shape == "ptr" and not f.optional:
                raise bad(f"{path}: required, got nil")
            return self.NULL
        ffi = self.ffi
        if shape == "str":
            if not isinstance(v, str):
                raise bad(f"{path}: expected str, got {_describe(v)}")
            out = ffi.new("char[]", v.encode())
            keep.append(out)
            return out
        if shape == "blob":
            if isinstance(v, list) and len(v) == 1 and _is_int(v[0]):
                staged = self.staged.pop(v[0], None)
                if staged is None:
                    raise bad(f"{path}: no blob was staged as {v[0]}")
                v = staged
            if not isinstance(v, (bytes, bytearray, memoryview)):
                raise bad(f"{path}: expected bin, got {_describe(v)}")
            if count is not None and len(v) != count:
                raise bad(f"{path}: {len(v)} bytes, but {f.len} is {count}")
            if len(v) == 0:
                return self.NULL
            buf = ffi.from_buffer(v)
            keep.append(v)
            keep.append(buf)
            return ffi.cast(f"{_ctype(f.type)} *", buf)
        if shape == "strs":
            if not isinstance(v, (list, tuple)) or (count is not None and len(v) != count):
                raise bad(f"{path}: expected an array of {count} str")
            items = []
            for k, s in enumerate(v):
                if not isinstance(s, str):
                    raise bad(f"{path}[{k}]: expected str, got {_describe(s)}")
                items.append(ffi.new("char[]", s.encode()))
            keep.extend(items)
            arr = ffi.new("char *[]", items) if items else self.NULL
            keep.append(arr)
            return arr
        if shape == "ptr":
            if f.kind == "s":
                return self.new_struct(f.type, v, keep, path)
            if f.kind == "u":
                ptr = ffi.new(f"{f.type} *")
                keep.append(ptr)
                self._fill_union(ptr, struct_schema(f.type), v, path)
                return ptr
            ptr = ffi.new(f"{_ctype(f.type)} *", self.scalar(f, v, path))
            keep.append(ptr)
            return ptr
        if shape == "array":
            if not isinstance(v, (list, tuple)):
                raise bad(f"{path}: expected an array, got {_describe(v)}")
            if count is not None and len(v) != count:
                raise bad(f"{path}: {len(v)} elements, but {f.len} is {count}")
            if len(v) > MAX_ARRAY:
                raise bad(f"{path}: more than {MAX_ARRAY} elements")
            if not v:
                return self.NULL
            return self.array(f, v, keep, path)
        if shape == "fixed":  # an array parameter (vkCmdSetBlendConstants' float[4])
            if not isinstance(v, (list, tuple)) or len(v) != f.size:
                raise bad(f"{path}: expected an array of {f.size}, got {_describe(v)}")
            return self.array(f, v, keep, path)
        raise bad(f"{path}: shape {shape} cannot be sent")

    def array(self, f: Field, v: list[Any] | tuple[Any, ...], keep: list[Any],
              path: str) -> Any:
        ffi = self.ffi
        if f.kind == "s":
            s = struct_schema(f.type)
            arr = ffi.new(f"{s.name}[]", len(v))
            keep.append(arr)
            for k, item in enumerate(v):
                self.fill_struct(arr[k], s, item, keep, f"{path}[{k}]")
            return arr
        if f.kind == "u":
            size = ffi.sizeof(f.type)
            arr = ffi.new(f"{f.type}[]", len(v))
            keep.append(arr)
            for k, item in enumerate(v):
                if not isinstance(item, (bytes, bytearray)) or len(item) != size:
                    raise bad(f"{path}[{k}]: a {f.type} is {size} bytes of bin")
                ffi.memmove(arr + k, bytes(item), size)
            return arr
        items = [self.scalar(f, item, f"{path}[{k}]") for k, item in enumerate(v)]
        arr = ffi.new(f"{_ctype(f.type)}[]", items)
        keep.append(arr)
        return arr

    @staticmethod
    def _may_be_null(struct_name: str, f: Field, parent: Any) -> bool:
        """Arrays that vk.xml marks noautovalidity: which one is read depends on a type."""
        if struct_name == "VkWriteDescriptorSet" and parent is not None:
            return f.name != _WRITE_DESCRIPTOR_ARRAY.get(int(parent.descriptorType), "")
        return f.optional

    # ..... output buffers .......................................................................

    def out_structs(self, name: str, count: int, chain: Any, keep: list[Any],
                    path: str) -> Any:
        """``count`` zeroed ``name`` structs with sType set and a fresh chain from sTypes."""
        s = struct_schema(name)
        arr = self.ffi.new(f"{s.name}[]", max(count, 1))
        keep.append(arr)
        if chain is not None and (not isinstance(chain, (list, tuple))
                                  or len(chain) > MAX_CHAIN):
            raise bad(f"{path}: an output chain is an array of sTypes or nil")
        for k in range(count):
            if s.stype is not None:
                arr[k].sType = s.stype
            if chain:
                head = self.NULL
                for stype in reversed(chain):
                    if not _is_int(stype):
                        raise bad(f"{path}: an output chain is an array of sTypes")
                    cname = self.chained_struct(s.name, stype, path)
                    node = self.ffi.new(f"{cname} *")
                    keep.append(node)
                    node.sType = stype
                    node.pNext = head
                    head = node
                arr[k].pNext = head
        return arr

    # ..... encoding (C -> wire) .................................................................

    def encode_struct(self, name: str, target: Any, node: bool = False) -> Any:
        """Wire form of the struct at ``target`` (pointer or reference); a chain ``node``
        gets nil for its own pNext."""
        s = struct_schema(name)
        if s.union:
            return bytes(self.ffi.buffer(target, self.ffi.sizeof(s.name)))
        out: list[Any] = []
        for f in s.fields:
            if f.shape == "stype":
                continue
            out.append(None if node and f.shape == "pnext" else self.encode_field(target, f, s))
        return out

    def encode_field(self, target: Any, f: Field, s: Struct) -> Any:
        ffi = self.ffi
        shape = f.shape
        if shape == "val":
            v = getattr(target, f.name)
            if f.kind == "s":
                return self.encode_struct(f.type, v)
            if f.kind == "u":
                return bytes(ffi.buffer(ffi.addressof(target, f.name), ffi.sizeof(f.type)))
            return self.encode_scalar(f, v)
        if shape == "chars":
            return ffi.string(getattr(target, f.name)).decode("utf-8", "replace")
        if shape == "fixed":
            arr = getattr(target, f.name)
            if f.kind == "s":
                return [self.encode_struct(f.type, arr[k]) for k in range(f.size)]
            if f.kind == "u":
                size = ffi.sizeof(f.type)
                return [bytes(ffi.buffer(ffi.addressof(arr, k), size)) for k in range(f.size)]
            return [self.encode_scalar(f, arr[k]) for k in range(f.size)]
        if shape == "pnext":
            return self.encode_chain(target.pNext)
        if shape == "drop":
            return None
        p = getattr(target, f.name)
        if p == ffi.NULL:
            return None
        if shape == "str":
            return ffi.string(p).decode("utf-8", "replace")
        count = self._len(f, lambda n: getattr(target, n), f"{s.name}.{f.name}") \
            if f.len else 1
        if shape == "blob":
            return bytes(ffi.buffer(p, count))
        if shape == "strs":
            return [ffi.string(p[k]).decode("utf-8", "replace") for k in range(count)]
        return self.encode_items(f, p, count) if shape == "array" else \
            self.encode_items(f, p, 1)[0]

    def encode_items(self, f: Field, p: Any, count: int) -> list[Any]:
        if f.kind == "s":
            return [self.encode_struct(f.type, p[k]) for k in range(count)]
        if f.kind == "u":
            size = self.ffi.sizeof(f.type)
            return [bytes(self.ffi.buffer(p + k, size)) for k in range(count)]
        return [self.encode_scalar(f, p[k]) for k in range(count)]

    def encode_scalar(self, f: Field, v: Any) -> Any:
        if f.kind == "i":
            return int(v)
        if f.kind == "f":
            return float(v)
        if f.kind in ("h", "H"):
            if v == self.ffi.NULL:
                return 0
            return self.handles.ident(f.type, v)
        raise bad(f"{f.name}: {f.type} cannot be encoded")

    def encode_chain(self, p: Any) -> list[Any] | None:
        ffi = self.ffi
        if p == ffi.NULL:
            return None
        out: list[Any] = []
        node = ffi.cast("VkBaseOutStructure *", p)
        while node != ffi.NULL and len(out) < MAX_CHAIN:
            stype = int(node.sType)
            name = schema.STYPES.get(stype)
            if name is None:
                raise bad(f"unknown sType {stype} in an output chain")
            out.append([stype, self.encode_struct(name, ffi.cast(f"{name} *", node), True)])
            node = node.pNext
        return out


_VK_DESCRIPTOR_TYPE_IMAGE = {0: "pImageInfo", 1: "pImageInfo", 2: "pImageInfo", 3: "pImageInfo",
                             10: "pImageInfo"}
_WRITE_DESCRIPTOR_ARRAY: dict[int, str] = {
    **_VK_DESCRIPTOR_TYPE_IMAGE,
    4: "pTexelBufferView", 5: "pTexelBufferView",
    6: "pBufferInfo", 7: "pBufferInfo", 8: "pBufferInfo", 9: "pBufferInfo",
}


def _ctype(type_name: str) -> str:
    return "char" if type_name == "void" else type_name


def _describe(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, (list, tuple)):
        return f"an array of {len(v)}"
    return type(v).__name__
