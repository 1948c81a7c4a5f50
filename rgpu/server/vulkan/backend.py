"""The server's Vulkan backend: one :class:`VulkanSession` per application session.

Calls arrive as ``(name, wire args)`` on the session's worker thread and run on the host driver
through the ``vulkan`` package's raw ``ffi``/``lib`` (never its Pythonic wrappers: they raise on
positive results such as ``VK_INCOMPLETE``). Handles are ids the client chose; the session maps
them to real handles and refuses ids it did not create, so one session can never name another's
objects. Closing the session destroys what it still holds, children before parents.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rgpu.api import vk_generated as schema
from rgpu.api.vk_schema import Command, Field

from ..session import CallError
from .codec import MAX_ARRAY, VK_ERROR_UNKNOWN, Codec, HandleMap, bad, eval_len, struct_schema
from .validation import LAYER, Validation

__all__ = ["VkObject", "VulkanBackend", "VulkanSession"]

log = logging.getLogger("rgpu.server.vulkan")

VK_SUCCESS = 0
VK_INCOMPLETE = 5
VK_ERROR_EXTENSION_NOT_PRESENT = -7
VK_ERROR_MEMORY_MAP_FAILED = -5
VK_WHOLE_SIZE = 0xFFFFFFFFFFFFFFFF
MAX_WAIT_NS = 5_000_000_000  # one wait holds the session's worker at most this long
SERVER_ID_BIT = 1 << 63  # ids the server assigns (physical devices); clients use the rest
MAX_OUT_BYTES = 256 << 20
MAX_STREAM_COMMANDS = 1 << 24
REPLY_INLINE_MAX = 1 << 20  # larger bin outputs are fetched with vkRgpuFetchBlob
MAX_STAGED = 64
MAX_STAGED_BYTES = 1 << 30
READ_CHUNK = 64 << 10  # vkRgpuReadMemory's unit when the client sends its chunks' CRC-32s
VK_NOT_READY = 1
VK_QUERY_RESULT_WAIT_BIT = 0x2
QUERY_WAIT_SLICE_S = 0.1  # a query wait polls this long, then the ICD asks again

VK_ERROR_OUT_OF_DEVICE_MEMORY = -2


class Quota(Protocol):
    """Device memory accounting of a token (the server's ``MemoryQuota``)."""

    def reserve(self, nbytes: int) -> None: ...  # raises CallError when over the limit

    def release(self, nbytes: int) -> None: ...


_RESULT_NAMES = {v: k for k, v in schema.ENUMS["VkResult"].items()}
_DESTROYERS = {v[2]: k for k, v in schema.HANDLES.items() if v[2]}
_POOL_OWNED = {"VkCommandBuffer", "VkDescriptorSet"}
_NOT_DESTROYED = {"VkPhysicalDevice", "VkQueue", *_POOL_OWNED}


def _unpack_stream(data: bytes | bytearray | memoryview) -> list[Any]:
    """Recorded entries sent back to back as msgpack bytes, bounded like a frame's body."""
    import msgpack

    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1),
                                max_array_len=MAX_ARRAY, max_map_len=0, strict_map_key=True)
    unpacker.feed(data)
    entries: list[Any] = []
    try:
        for entry in unpacker:
            if len(entries) >= MAX_STREAM_COMMANDS:
                raise bad(f"a recorded stream holds at most {MAX_STREAM_COMMANDS} commands")
            entries.append(entry)
    except (ValueError, msgpack.UnpackException) as exc:
        raise bad(f"a recorded stream is not msgpack entries: {exc}") from None
    return entries


def _is_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 64


def result_name(code: int) -> str:
    return _RESULT_NAMES.get(code, f"VkResult {code}")


def _wire_index(struct: str, member: str) -> int:
    fields = [f for f in struct_schema(struct).fields if f.shape != "stype"]
    return next(i for i, f in enumerate(fields) if f.name == member)


@dataclass
class VkObject:
    """One object a session created, with what cleanup and routing need."""

    ident: int
    type: str
    handle: Any  # cdata of the real handle
    instance: int  # id of the owning VkInstance
    device: int = 0  # id of the owning VkDevice (0 for instance-level objects)
    pool: int = 0  # command/descriptor pool of pool-owned children
    size: int = 0  # VkDeviceMemory: allocationSize; VkInstance: ordinal in the session
    mapped: Any = None  # VkDeviceMemory: the server's persistent mapping (char *)


class VulkanBackend:
    """The host's Vulkan, shared by every session of the server."""

    def __init__(self, vk_raw: Any, *, validation: bool = False) -> None:
        self.ffi = vk_raw.ffi
        self.lib = vk_raw.lib
        self.validation: Validation | None = None
        if validation:
            self.validation = Validation(self.ffi, self.lib)
            if not self.validation.available():
                raise RuntimeError(f"{LAYER} is not installed (apt-get install "
                                   "vulkan-validationlayers)")
        self._lock = threading.Lock()
        self.sessions: set[VulkanSession] = set()
        self.max_wait_ns = MAX_WAIT_NS
        self.created = 0  # objects created by all sessions (for leak checks)
        self.destroyed = 0

    def open_session(self, label: str, vulkan_indexes: Sequence[int] | None = None,
                     quota: Quota | None = None) -> VulkanSession:
        """A session; ``vulkan_indexes`` limits the physical devices it sees and ``quota``
        accounts its device memory (both from its token)."""
        s = VulkanSession(self, label, vulkan_indexes, quota)
        with self._lock:
            self.sessions.add(s)
        return s

    def count(self, created: int = 0, destroyed: int = 0) -> None:
        with self._lock:
            self.created += created
            self.destroyed += destroyed

    @property
    def live(self) -> int:
        return self.created - self.destroyed


class VulkanSession(HandleMap):
    """One application's Vulkan objects on this server, and the calls that make them."""

    def __init__(self, backend: VulkanBackend, label: str,
                 vulkan_indexes: Sequence[int] | None, quota: Quota | None = None) -> None:
        self.backend = backend
        self.quota = quota
        self.ffi = backend.ffi
        self.lib = backend.lib
        self.label = label
        self.visible = None if vulkan_indexes is None else list(vulkan_indexes)
        self.objects: dict[int, VkObject] = {}
        self._by_real: dict[tuple[str, int], int] = {}
        self._next_server_id = SERVER_ID_BIT | (1 << 48)  # past every physical-device id
        self._instances_made = 0
        self.outgoing: dict[int, bytes | bytearray] = {}  # reply data waiting for a fetch
        self._outgoing_id = 0
        self._pfns: dict[tuple[int, str], Any] = {}
        self._messengers: dict[int, Any] = {}  # validation messengers by instance id
        self._instance = 0  # the instance of the call being run (for server-assigned ids)
        self.codec = Codec(self.ffi, self)
        self.closed = False
        self.calls = 0
        self._special: dict[str, Callable[[Command, str, list[Any]], Any]] = {
            "vkCreateInstance": self._create_instance,
            "vkEnumeratePhysicalDevices": self._enumerate_physical_devices,
            "vkCreateDevice": self._create_device,
            "vkDestroyInstance": self._destroy_instance_call,
            "vkDestroyDevice": self._destroy_device_call,
            "vkMapMemory": self._map_memory_call,
            "vkUnmapMemory": self._unmap_memory_call,
            "vkAllocateMemory": self._allocate_memory,
            "vkWaitForFences": self._bounded_wait,
            "vkWaitSemaphores": self._bounded_wait,
            "vkGetQueryPoolResults": self._query_results,
            "vkSetPrivateData": self._private_data,
            "vkGetPrivateData": self._private_data,
        }

    # --- HandleMap -------------------------------------------------------------------------

    def real(self, type_name: str, ident: int) -> Any:
        obj = self.objects.get(ident)
        if obj is None:
            raise CallError("invalid_handle", f"{type_name} {ident:#x} does not exist in this "
                            "session", vk=VK_ERROR_UNKNOWN)
        if obj.type != type_name:
            raise CallError("invalid_handle", f"{ident:#x} is a {obj.type}, not a {type_name}",
                            vk=VK_ERROR_UNKNOWN)
        return obj.handle

    def ident(self, type_name: str, handle: Any) -> int:
        key = (type_name, int(self.ffi.cast("uintptr_t", handle)))
        found = self._by_real.get(key)
        if found is not None:
            return found
        if type_name == "VkPhysicalDevice" and self._instance in self.objects:
            self.physical_devices(self.objects[self._instance])  # canonical ids first
            found = self._by_real.get(key)
            if found is not None:
                return found
        ident = self._next_server_id
        self._next_server_id += 1
        self._register(VkObject(ident, type_name, handle, self._instance))
        return ident

    def _register(self, obj: VkObject) -> None:
        self.objects[obj.ident] = obj
        self._by_real.setdefault((obj.type, int(self.ffi.cast("uintptr_t", obj.handle))),
                                 obj.ident)
        if obj.type not in _NOT_DESTROYED:
            self.backend.count(created=1)

    def _unregister(self, ident: int, destroyed: bool = True) -> None:
        obj = self.objects.pop(ident, None)
        if obj is None:
            return
        key = (obj.type, int(self.ffi.cast("uintptr_t", obj.handle)))
        if self._by_real.get(key) == ident:
            del self._by_real[key]
        if destroyed and obj.type not in _NOT_DESTROYED:
            self.backend.count(destroyed=1)
        if obj.type == "VkDeviceMemory" and self.quota is not None and obj.size:
            self.quota.release(obj.size)

    def _new_id(self, v: Any, type_name: str, path: str) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v & SERVER_ID_BIT \
                or v >= 1 << 64:
            raise bad(f"{path}: a new {type_name} needs a client id in 1..2^63-1")
        if v in self.objects:
            raise CallError("invalid_handle", f"{path}: id {v:#x} is already in use",
                            vk=VK_ERROR_UNKNOWN)
        return v

    def live_objects(self) -> int:
        return sum(1 for o in self.objects.values() if o.type not in _NOT_DESTROYED)

    # --- entry point -----------------------------------------------------------------------

    def call(self, fn: str, args: list[Any]) -> Any:
        """Run one call; returns its reply (``[result, outputs...]``, bytes for reads)."""
        if self.closed:
            raise CallError("closed", "the Vulkan session is closed", vk=VK_ERROR_UNKNOWN)
        if not isinstance(args, list):
            raise bad(f"{fn}: arguments must be an array")
        self.calls += 1
        try:
            private = _PRIVATE.get(fn)
            if private is not None:
                return private(self, args)
            cmd = schema.COMMANDS.get(schema.COMMAND_ALIASES.get(fn, fn))
            if cmd is None:
                raise CallError("unsupported", f"{fn} is not supported by this server's Vulkan "
                                "backend", vk=VK_ERROR_EXTENSION_NOT_PRESENT)
            special = self._special.get(cmd.name)
            if special is not None:
                return special(cmd, fn, args)
            return self.invoke(cmd, fn, args)
        except (TypeError, OverflowError, ValueError, KeyError, AttributeError,
                IndexError) as exc:
            raise bad(f"{fn}: {type(exc).__name__}: {exc}") from None

    # --- generic invocation ----------------------------------------------------------------

    def _owner(self, cmd: Command, args: list[Any]) -> VkObject | None:
        if cmd.level == "global":
            return None
        first = args[0] if args else None
        obj = self.objects.get(first) if isinstance(first, int) else None
        if obj is None or obj.type != cmd.params[0].type:
            raise CallError("invalid_handle", f"{cmd.name}: {cmd.params[0].type} "
                            f"{first!r} does not exist in this session", vk=VK_ERROR_UNKNOWN)
        return obj

    def _pfn(self, cmd: Command, fn: str, owner: VkObject | None) -> Any:
        ffi, lib = self.ffi, self.lib
        if owner is None:
            f = getattr(lib, fn, None)
            if f is None:
                raise CallError("unsupported", f"the host loader lacks {fn}",
                                vk=VK_ERROR_EXTENSION_NOT_PRESENT)
            return f
        if cmd.level == "instance":
            scope = owner.instance
            get = lib.vkGetInstanceProcAddr
        else:
            scope = owner.device if owner.type != "VkDevice" else owner.ident
            get = lib.vkGetDeviceProcAddr
        key = (scope, fn)
        pfn = self._pfns.get(key)
        if pfn is None:
            ptr = ffi.NULL
            for name in dict.fromkeys((fn, cmd.name)):
                ptr = get(self.objects[scope].handle, name.encode())
                if ptr != ffi.NULL:
                    break
            if ptr == ffi.NULL:
                raise CallError("unsupported", f"{fn} is not available on this device or "
                                "instance (extension not enabled?)",
                                vk=VK_ERROR_EXTENSION_NOT_PRESENT)
            pfn = self._pfns[key] = ffi.cast(f"PFN_{cmd.name}", ptr)
        return pfn

    def invoke(self, cmd: Command, fn: str, args: list[Any],
               before: Callable[[list[Any]], None] | None = None) -> Any:
        params = cmd.params
        if len(args) != len(params):
            raise bad(f"{fn} takes {len(params)} arguments (got {len(args)})")
        owner = self._owner(cmd, args)
        self._instance = owner.instance if owner is not None else 0
        ffi, codec = self.ffi, self.codec
        keep: list[Any] = []
        cargs: list[Any] = [None] * len(params)
        ctx: dict[str, Any] = {}
        deferred: list[int] = []
        outs: list[int] = []
        for i, f in enumerate(params):
            v = args[i]
            path = f"{fn}.{f.name}"
            if f.shape == "drop":
                if v is not None and f.dir == "in":
                    raise bad(f"{path} is not carried; send nil")
                cargs[i] = ffi.NULL
            elif f.dir != "in":
                outs.append(i)
            elif f.shape == "val":
                if f.kind in ("s", "u"):
                    ptr = codec.new_struct(f.type, v, keep, path)
                    cargs[i] = ptr[0]
                else:
                    cargs[i] = codec.scalar(f, v, path)
                ctx[f.name] = v if f.kind == "i" else cargs[i]
            else:
                deferred.append(i)
        lookup = ctx.__getitem__
        for i in deferred:
            f = params[i]
            count = eval_len(f.len, lookup) if f.len and f.shape != "ptr" else None
            cargs[i] = codec.pointer(f, args[i], count, keep, f"{fn}.{f.name}")
            ctx[f.name] = cargs[i]
        pair = cmd.pair
        new_handles: list[tuple[Field, list[int], Any]] = []
        for i in outs:
            f = params[i]
            if pair is not None and i in pair:
                continue
            cargs[i] = self._out_buffer(f, args[i], keep, lookup, new_handles, fn)
            ctx[f.name] = cargs[i]
        if before is not None:
            before(cargs)
        pfn = self._pfn(cmd, fn, owner)
        if pair is None:
            ret = pfn(*cargs)
            items: Any = None
        else:
            ret, items = self._enumerate(cmd, fn, pfn, cargs, args, keep)
        head = self._result(cmd, fn, ret)
        for f, ids, buf in new_handles:
            for k, ident in enumerate(ids):
                if buf[k] != ffi.NULL:
                    self._adopt(f.type, ident, buf[k], owner, cmd, args)
        self._after(cmd, args)
        reply: list[Any] = [head]
        for i in cmd.reply:
            if pair is not None and i == pair[0]:
                reply.append(items)
            else:
                reply.append(self._encode_out(params[i], cargs[i], lookup))
        for k, item in enumerate(reply):  # data a frame's body cannot hold waits for a fetch
            if isinstance(item, (bytes, bytearray)) and len(item) > REPLY_INLINE_MAX:
                self._outgoing_id += 1
                self.outgoing[self._outgoing_id] = item
                reply[k] = [self._outgoing_id]
        return reply

    def fetch_blob(self, args: list[Any]) -> Any:
        """The bytes a reply named ``[id]`` because they did not fit its body, as the reply's
        bulk segment (split into frames by the transport); each fetched once."""
        if len(args) != 1 or not isinstance(args[0], int):
            raise bad("vkRgpuFetchBlob takes [id]")
        data = self.outgoing.pop(args[0], None)
        if data is None:
            raise bad(f"vkRgpuFetchBlob: no reply data is waiting as {args[0]}")
        return bytes(data)

    def _out_buffer(self, f: Field, v: Any, keep: list[Any], lookup: Callable[[str], Any],
                    new_handles: list[tuple[Field, list[int], Any]], fn: str) -> Any:
        ffi = self.ffi
        path = f"{fn}.{f.name}"
        count = 1
        if f.shape in ("array", "blob"):
            count = eval_len(f.len or "", lookup)
            if count < 0 or count > (MAX_OUT_BYTES if f.shape == "blob" else MAX_ARRAY):
                raise bad(f"{path}: length {count} out of range")
        if f.kind in ("h", "H"):
            ids = [v] if f.shape == "ptr" else v
            if not isinstance(ids, list) or len(ids) != count:
                raise bad(f"{path}: expected {count} new {f.type} id(s)")
            ids = [self._new_id(x, f.type, path) for x in ids]
            if len(set(ids)) != len(ids):
                raise bad(f"{path}: ids repeat")
            buf = ffi.new(f"{f.type}[]", max(count, 1))
            keep.append(buf)
            new_handles.append((f, ids, buf))
            return buf
        if f.kind == "s":
            return self.codec.out_structs(f.type, count, v, keep, path)
        if v is not None:
            raise bad(f"{path} is an output; send nil")
        if f.shape == "blob":
            buf = ffi.new("char[]", max(count, 1))
        elif f.kind in ("i", "f"):
            buf = ffi.new(f"{f.type}[]", max(count, 1))
        else:
            raise bad(f"{path}: unsupported output")
        keep.append(buf)
        return buf

    def _encode_out(self, f: Field, buf: Any, lookup: Callable[[str], Any]) -> Any:
        codec = self.codec
        count = eval_len(f.len, lookup) if f.len and f.shape in ("array", "blob") else 1
        if f.shape == "blob":
            return bytes(self.ffi.buffer(buf, count))
        items = codec.encode_items(f, buf, count)
        return items if f.shape == "array" else items[0]

    def _enumerate(self, cmd: Command, fn: str, pfn: Any, cargs: list[Any], args: list[Any],
                   keep: list[Any]) -> tuple[Any, Any]:
        """The two-call idiom, collapsed: capacity (or nil for all) in, items out."""
        ci, ai = cmd.pair or (0, 0)
        fc, fa = cmd.params[ci], cmd.params[ai]
        ffi = self.ffi
        cap, chain = args[ci], args[ai]
        if fa.kind != "s" and chain is not None:
            raise bad(f"{fn}.{fa.name}: send nil")
        count = ffi.new(f"{fc.type} *")
        keep.append(count)
        cargs[ci] = count

        def alloc(n: int) -> Any:
            if fa.kind == "s":
                return self.codec.out_structs(fa.type, n, chain, keep, f"{fn}.{fa.name}")
            buf = ffi.new(f"{'char' if fa.kind == 'v' else fa.type}[]", max(n, 1))
            keep.append(buf)
            return buf

        if cap is None:
            for _ in range(8):
                cargs[ai] = ffi.NULL
                count[0] = 0
                ret = pfn(*cargs)
                if cmd.result == "VkResult" and ret < 0:
                    return ret, None
                n = int(count[0])
                if n > MAX_ARRAY:
                    raise bad(f"{fn}: the driver reports {n} items")
                cargs[ai] = alloc(n)
                ret = pfn(*cargs)
                if ret != VK_INCOMPLETE:
                    break
        else:
            if not isinstance(cap, int) or isinstance(cap, bool) or not 0 <= cap <= MAX_ARRAY:
                raise bad(f"{fn}.{fc.name}: a capacity is an integer 0..{MAX_ARRAY} or nil")
            cargs[ai] = alloc(cap)
            count[0] = cap
            ret = pfn(*cargs)
        if cmd.result == "VkResult" and ret < 0:
            return ret, None
        n = int(count[0])
        if fa.shape == "blob":
            return ret, bytes(ffi.buffer(cargs[ai], n))
        return ret, self.codec.encode_items(fa, cargs[ai], n)

    def _result(self, cmd: Command, fn: str, ret: Any) -> Any:
        if cmd.result == "VkResult":
            code = int(ret)
            if code < 0:
                raise CallError("VkResult", f"{fn} returned {result_name(code)}", vk=code)
            return code
        if cmd.result == "void":
            return None
        return ret if isinstance(ret, (int, float)) else int(ret)

    def _adopt(self, type_name: str, ident: int, handle: Any, owner: VkObject | None,
               cmd: Command, args: list[Any]) -> None:
        """Record a handle the driver created under the id the client chose."""
        instance = owner.instance if owner is not None else ident
        device = 0
        if owner is not None:
            device = owner.ident if owner.type == "VkDevice" else owner.device
        if type_name == "VkDevice":
            device = ident
        pool = 0
        if type_name in _POOL_OWNED:
            pool = args[1][1]  # VkCommandBufferAllocateInfo / VkDescriptorSetAllocateInfo
        obj = VkObject(ident, type_name, handle, instance, device, pool)
        if type_name == "VkDeviceMemory":
            obj.size = int(args[1][1])  # VkMemoryAllocateInfo.allocationSize
        elif type_name == "VkInstance":
            obj.size = self._instances_made  # its ordinal in the session
            self._instances_made += 1
        self._register(obj)

    def _after(self, cmd: Command, args: list[Any]) -> None:
        """Forget what a successful destroy/free call destroyed."""
        name = cmd.name
        if name in _DESTROYERS:
            ident = args[1] if len(args) > 1 and cmd.params[1].type == _DESTROYERS[name] \
                else args[0]
            if name in ("vkDestroyCommandPool", "vkDestroyDescriptorPool"):
                self._forget_pool(ident)
            if isinstance(ident, int):
                self._unregister(ident)
        elif name in ("vkFreeCommandBuffers", "vkFreeDescriptorSets"):
            for ident in args[3] or ():
                self._unregister(ident)
        elif name == "vkResetDescriptorPool":
            self._forget_pool(args[1])

    def _forget_pool(self, pool: int) -> None:
        for o in [o for o in self.objects.values() if o.pool == pool and pool]:
            self._unregister(o.ident)

    # --- special commands ------------------------------------------------------------------

    def _create_instance(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        if len(args) != 3 or not isinstance(args[0], list):
            raise bad(f"{fn} takes [pCreateInfo, nil, instance id]")
        info = list(args[0])
        struct = "VkInstanceCreateInfo"
        li = _wire_index(struct, "enabledLayerCount")
        ln = _wire_index(struct, "ppEnabledLayerNames")
        ei = _wire_index(struct, "enabledExtensionCount")
        en = _wire_index(struct, "ppEnabledExtensionNames")
        if len(info) > max(li, ln, ei, en):
            host = {e[0] for e in self._instance_extensions()}
            wanted = info[en] if isinstance(info[en], list) else []
            kept = [e for e in wanted if e in host and e in schema.INSTANCE_EXTENSIONS]
            info[li], info[ln] = 0, None  # the client's layers run on the client
            info[ei], info[en] = len(kept), kept or None
        validation = self.backend.validation
        if validation is None:
            return self.invoke(cmd, fn, [info, *args[1:]])
        keep: list[Any] = []
        reply = self.invoke(cmd, fn, [info, *args[1:]],
                            before=lambda cargs: validation.patch_instance_info(cargs[0], keep))
        self._messengers[args[2]] = validation.attach(self.objects[args[2]].handle)
        return reply

    def _instance_extensions(self) -> list[list[Any]]:
        cmd = schema.COMMANDS["vkEnumerateInstanceExtensionProperties"]
        reply = self.invoke(cmd, cmd.name, [None, None, None])
        return list(reply[1] or [])

    def _create_device(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        if len(args) != 4 or not isinstance(args[1], list):
            raise bad(f"{fn} takes [physicalDevice, pCreateInfo, nil, device id]")
        info = list(args[1])
        struct = "VkDeviceCreateInfo"
        li = _wire_index(struct, "enabledLayerCount")
        ln = _wire_index(struct, "ppEnabledLayerNames")
        ei = _wire_index(struct, "enabledExtensionCount")
        en = _wire_index(struct, "ppEnabledExtensionNames")
        if len(info) > max(li, ln, ei, en):
            wanted = info[en] if isinstance(info[en], list) else []
            kept = [e for e in wanted if e in schema.DEVICE_EXTENSIONS]
            dropped = [e for e in wanted if e not in kept]
            if dropped:
                log.info("%s: not enabling device extensions %s (not carried by rgpu)",
                         self.label, ", ".join(map(str, dropped)))
            info[li], info[ln] = 0, None
            info[ei], info[en] = len(kept), kept or None
        return self.invoke(cmd, fn, [args[0], info, *args[2:]])

    def _allocate_memory(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        """Account the allocation against the token's ``max_memory`` before the driver sees
        it; given back when the memory is freed or the session ends."""
        quota = self.quota
        if quota is None:
            return self.invoke(cmd, fn, args)
        try:
            size = int(args[1][1])  # VkMemoryAllocateInfo.allocationSize
        except (IndexError, TypeError, ValueError):
            raise bad(f"{fn} takes [device, VkMemoryAllocateInfo, nil, memory id]") from None
        try:
            quota.reserve(size)
        except CallError as exc:
            raise CallError(exc.code, str(exc), **{**exc.extra,
                                                   "vk": VK_ERROR_OUT_OF_DEVICE_MEMORY}) from None
        try:
            return self.invoke(cmd, fn, args)
        except BaseException:
            quota.release(size)
            raise

    def _bounded_wait(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        """Cap a blocking wait, so a session's worker (and its close) is never held forever.

        A capped wait that times out replies VK_TIMEOUT; the ICD repeats it with the time the
        application has left.
        """
        index = next(i for i, f in enumerate(cmd.params) if f.name == "timeout")
        if len(args) == len(cmd.params) and isinstance(args[index], int):
            args = list(args)
            args[index] = max(0, min(args[index], self.backend.max_wait_ns))
        return self.invoke(cmd, fn, args)

    def _query_results(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        """VK_QUERY_RESULT_WAIT_BIT waits without bound, holding the session's worker: a query
        whose work waits on a host vkSetEvent or vkSignalSemaphore from another thread would
        never complete. So the wait is polled here for at most a slice, then VK_NOT_READY
        (which a call with WAIT never returns) tells the ICD to ask again."""
        index = next(i for i, f in enumerate(cmd.params) if f.name == "flags")
        if len(args) != len(cmd.params) or not isinstance(args[index], int) \
                or not args[index] & VK_QUERY_RESULT_WAIT_BIT:
            return self.invoke(cmd, fn, args)
        args = list(args)
        args[index] &= ~VK_QUERY_RESULT_WAIT_BIT
        deadline = time.monotonic() + min(QUERY_WAIT_SLICE_S, self.backend.max_wait_ns / 1e9)
        pause = 50e-6
        while True:
            reply = self.invoke(cmd, fn, args)
            if reply[0] != VK_NOT_READY or time.monotonic() >= deadline:
                return reply
            time.sleep(pause)
            pause = min(pause * 2, 2e-3)

    def _private_data(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        """``objectHandle`` is a raw uint64 in vk.xml: translate the client's id."""
        if len(args) == len(cmd.params) and isinstance(args[2], int) and args[2]:
            obj = self.objects.get(args[2])
            if obj is None:
                raise CallError("invalid_handle", f"{fn}: object {args[2]:#x} does not exist "
                                "in this session", vk=VK_ERROR_UNKNOWN)
            args = list(args)
            args[2] = int(self.ffi.cast("uintptr_t", obj.handle))
        return self.invoke(cmd, fn, args)

    def physical_devices(self, instance: VkObject) -> list[int]:
        """Ids of the instance's physical devices this session may see, in driver order.

        The k-th physical device of the session's n-th instance is ``2^63 | n << 32 | k + 1``:
        the same in every session, so facts fetched once (``collect_facts``) name the devices
        an application's first instance sees.
        """
        ffi = self.ffi
        count = ffi.new("uint32_t *")
        r = self.lib.vkEnumeratePhysicalDevices(instance.handle, count, ffi.NULL)
        if r < 0:
            raise CallError("VkResult", f"vkEnumeratePhysicalDevices returned "
                            f"{result_name(r)}", vk=r)
        arr = ffi.new("VkPhysicalDevice[]", max(int(count[0]), 1))
        r = self.lib.vkEnumeratePhysicalDevices(instance.handle, count, arr)
        if r < 0:
            raise CallError("VkResult", f"vkEnumeratePhysicalDevices returned "
                            f"{result_name(r)}", vk=r)
        self._instance = instance.ident
        ids = []
        for k in range(int(count[0])):
            key = ("VkPhysicalDevice", int(ffi.cast("uintptr_t", arr[k])))
            ident = self._by_real.get(key)
            if ident is None:
                ident = SERVER_ID_BIT | (instance.size << 32) | (k + 1)
                self._register(VkObject(ident, "VkPhysicalDevice", arr[k], instance.ident))
            ids.append(ident)
        if self.visible is not None:
            ids = [ident for k, ident in enumerate(ids) if k in self.visible]
        return ids

    def _enumerate_physical_devices(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        if len(args) != 3:
            raise bad(f"{fn} takes [instance, capacity or nil, nil]")
        instance = self.objects.get(args[0]) if isinstance(args[0], int) else None
        if instance is None or instance.type != "VkInstance":
            raise CallError("invalid_handle", f"{fn}: VkInstance {args[0]!r} does not exist "
                            "in this session", vk=VK_ERROR_UNKNOWN)
        ids = self.physical_devices(instance)
        cap = args[1]
        if cap is None or cap >= len(ids):
            return [VK_SUCCESS, ids]
        if not isinstance(cap, int) or cap < 0:
            raise bad(f"{fn}: a capacity is a non-negative integer or nil")
        return [VK_INCOMPLETE, ids[:cap]]

    def _destroy_instance_call(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        if len(args) != 2 or args[1] is not None:
            raise bad(f"{fn} takes [instance, nil]")
        if args[0]:
            self.real("VkInstance", args[0])
            self.destroy_instance(self.objects[args[0]])
        return [None]

    def _destroy_device_call(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        if len(args) != 2 or args[1] is not None:
            raise bad(f"{fn} takes [device, nil]")
        if args[0]:
            self.real("VkDevice", args[0])
            self.destroy_device(self.objects[args[0]])
        return [None]

    def memory(self, ident: Any) -> VkObject:
        if not isinstance(ident, int):
            raise bad("a VkDeviceMemory id is an integer")
        self.real("VkDeviceMemory", ident)
        return self.objects[ident]

    def mapping(self, mem: VkObject) -> Any:
        """The server's persistent mapping of the whole allocation (made on first use)."""
        if mem.mapped is None:
            ffi = self.ffi
            pp = ffi.new("void **")
            device = self.objects[mem.device].handle
            r = self.lib.vkMapMemory(device, mem.handle, 0, VK_WHOLE_SIZE, 0, pp)
            if r < 0:
                raise CallError("VkResult", f"vkMapMemory returned {result_name(r)} (is the "
                                "memory host-visible?)", vk=r)
            mem.mapped = ffi.cast("char *", pp[0])
        return mem.mapped

    def _map_memory_call(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        if len(args) != 6:
            raise bad(f"{fn} takes [device, memory, offset, size, flags, nil]")
        mem = self.memory(args[1])
        offset, size = args[2], args[3]
        if not isinstance(offset, int) or not isinstance(size, int):
            raise bad(f"{fn}: offset and size are integers")
        if offset >= mem.size or (size != VK_WHOLE_SIZE and (size == 0
                                                              or offset + size > mem.size)):
            raise CallError("VkResult", f"{fn}: range {offset}+{size} outside the allocation "
                            f"of {mem.size} bytes", vk=VK_ERROR_MEMORY_MAP_FAILED)
        self.mapping(mem)
        return [VK_SUCCESS]

    def _unmap_memory_call(self, cmd: Command, fn: str, args: list[Any]) -> Any:
        if len(args) != 2:
            raise bad(f"{fn} takes [device, memory]")
        self.memory(args[1])  # the server keeps its mapping until the memory is freed
        return [None]

    def _sync_range(self, mem: VkObject, flush: bool) -> None:
        ffi = self.ffi
        rng = ffi.new("VkMappedMemoryRange *", {
            "sType": 6, "memory": mem.handle, "offset": 0, "size": VK_WHOLE_SIZE})
        device = self.objects[mem.device].handle
        fn = self.lib.vkFlushMappedMemoryRanges if flush else \
            self.lib.vkInvalidateMappedMemoryRanges
        r = fn(device, 1, rng)
        if r < 0:
            raise CallError("VkResult", f"mapped range sync returned {result_name(r)}", vk=r)

    def write_memory(self, args: list[Any]) -> Any:
        """Write bytes at an offset; with a mask (a bit per byte, little-endian bit order),
        only the bytes whose bit is set: the host changed those, and the device may have
        written the ones between since the client last read them."""
        if len(args) not in (3, 4):
            raise bad("vkRgpuWriteMemory takes [memory, offset, data] or [memory, offset, "
                      "data, mask]")
        mem = self.memory(args[0])
        offset, data = args[1], args[2]
        if not isinstance(offset, int) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise bad("vkRgpuWriteMemory: offset is an integer, data is bin")
        if offset < 0 or offset + len(data) > mem.size:
            raise bad(f"vkRgpuWriteMemory: {offset}+{len(data)} is outside the allocation of "
                      f"{mem.size} bytes")
        base = self.mapping(mem)
        n = len(data)
        if len(args) == 3:
            self.ffi.memmove(base + offset, data, n)
        else:
            mask = args[3]
            if not isinstance(mask, (bytes, bytearray, memoryview)) or len(mask) != (n + 7) // 8:
                raise bad(f"vkRgpuWriteMemory: the mask is bin of {(n + 7) // 8} bytes")
            if n:
                dst = np.frombuffer(self.ffi.buffer(base + offset, n), dtype=np.uint8)
                chosen = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), count=n,
                                       bitorder="little").view(bool)
                np.copyto(dst, np.frombuffer(data, dtype=np.uint8), where=chosen)
        self._sync_range(mem, flush=True)
        return [VK_SUCCESS]

    def read_memory(self, args: list[Any]) -> Any:
        """The bytes of a range; or, given the CRC-32 of each 64 KiB chunk of the range as the
        client has it, a bitmap of the chunks that differ followed by those chunks alone (a
        host waiting on a fence need not fetch a whole mapped heap the device barely wrote)."""
        if len(args) not in (3, 4):
            raise bad("vkRgpuReadMemory takes [memory, offset, size] or [memory, offset, size, "
                      "crc32s]")
        mem = self.memory(args[0])
        offset, size = args[1], args[2]
        if not isinstance(offset, int) or not isinstance(size, int) or offset < 0 or size < 0 \
                or offset + size > mem.size or size > MAX_OUT_BYTES:
            raise bad(f"vkRgpuReadMemory: {offset}+{size} is outside the allocation of "
                      f"{mem.size} bytes")
        base = self.mapping(mem)
        self._sync_range(mem, flush=False)
        if len(args) == 3:
            return bytes(self.ffi.buffer(base + offset, size))
        return self._changed_chunks(base, offset, size, args[3])

    def read_memories(self, args: list[Any]) -> Any:
        """vkRgpuReadMemory with CRC-32s for several ranges at once (one round trip for every
        mapped allocation after a fence wait): the replies back to back."""
        if len(args) != 1 or not isinstance(args[0], list) or len(args[0]) > MAX_ARRAY:
            raise bad("vkRgpuReadMemories takes [[[memory, offset, size, crc32s], ...]]")
        total = 0
        for entry in args[0]:
            if not isinstance(entry, list) or len(entry) != 4 or not isinstance(entry[2], int):
                raise bad("vkRgpuReadMemories: each range is [memory, offset, size, crc32s]")
            total += entry[2]
        if total > MAX_OUT_BYTES:
            raise bad(f"vkRgpuReadMemories: more than {MAX_OUT_BYTES} bytes at once")
        return b"".join(self.read_memory(entry) for entry in args[0])

    def _changed_chunks(self, base: Any, offset: int, size: int, theirs: Any) -> bytes:
        data = self.ffi.buffer(base + offset, size)
        nchunks = (size + READ_CHUNK - 1) // READ_CHUNK
        if not isinstance(theirs, (bytes, bytearray, memoryview)) or len(theirs) != 4 * nchunks:
            raise bad(f"vkRgpuReadMemory: crc32s is bin of 4 bytes per {READ_CHUNK}-byte chunk "
                      f"({4 * nchunks} bytes)")
        view = memoryview(data)
        known = memoryview(theirs).cast("B").cast("I") if sys.byteorder == "little" else \
            [int.from_bytes(theirs[4 * k:4 * k + 4], "little") for k in range(nchunks)]
        bitmap = bytearray((nchunks + 7) // 8)
        changed: list[memoryview] = []
        for k in range(nchunks):
            chunk = view[k * READ_CHUNK:(k + 1) * READ_CHUNK]
            if zlib.crc32(chunk) != known[k]:
                bitmap[k >> 3] |= 1 << (k & 7)
                changed.append(chunk)
        return b"".join([bitmap, *changed])

    def stage_blob(self, args: list[Any]) -> Any:
        """Keep a blob too large for a frame's body (the CALL's bulk) for the call that names it
        next: a blob slot holding ``[id]`` takes it (pInitialData, pCode of many MiB)."""
        if len(args) != 2 or not _is_id(args[0]) or not isinstance(args[1], (bytes, bytearray,
                                                                            memoryview)):
            raise bad("vkRgpuStageBlob takes [id, data]")
        staged = self.codec.staged
        if len(staged) >= MAX_STAGED or sum(len(b) for b in staged.values()) + len(args[1]) \
                > MAX_STAGED_BYTES:
            raise bad(f"vkRgpuStageBlob: more than {MAX_STAGED} blobs or "
                      f"{MAX_STAGED_BYTES >> 20} MiB staged and not used")
        staged[args[0]] = args[1]
        return [VK_SUCCESS]

    def submit_command_buffer(self, args: list[Any]) -> Any:
        """Replay a recorded stream into the real command buffer, between begin and end.

        The stream is an array of ``[vkCmd..., [args]]`` entries, or -- for command buffers
        larger than a frame's body -- the same entries back to back as msgpack bytes (the
        CALL's bulk segment)."""
        if len(args) not in (2, 3) or not isinstance(args[1], (list, bytes, bytearray,
                                                               memoryview)):
            raise bad("vkRgpuSubmitCommandBuffer takes [commandBuffer, [[vkCmd..., [args]], "
                      "...] or bin, pBeginInfo or nil]")
        cb = args[0]
        if not isinstance(cb, int):
            raise bad("vkRgpuSubmitCommandBuffer: commandBuffer is an id")
        self.real("VkCommandBuffer", cb)
        entries = args[1] if isinstance(args[1], list) else _unpack_stream(args[1])
        begin = args[2] if len(args) == 3 else None
        self.invoke(schema.COMMANDS["vkBeginCommandBuffer"], "vkBeginCommandBuffer",
                    [cb, begin if begin is not None else [None, 0, None]])
        ended = False
        try:
            for k, entry in enumerate(entries):
                if not (isinstance(entry, list) and len(entry) == 2
                        and isinstance(entry[0], str) and isinstance(entry[1], list)):
                    raise bad(f"recorded command {k}: expected [name, [args]]")
                name = entry[0]
                cmd = schema.COMMANDS.get(schema.COMMAND_ALIASES.get(name, name))
                if cmd is None or not name.startswith("vkCmd"):
                    raise CallError("unsupported", f"recorded command {k}: {name} is not a "
                                    "supported vkCmd", vk=VK_ERROR_EXTENSION_NOT_PRESENT)
                try:
                    self.invoke(cmd, name, [cb, *entry[1]])
                except CallError as exc:
                    raise CallError(exc.code, f"recorded command {k} ({name}): {exc}",
                                    **exc.extra) from None
            ended = True
            return self.invoke(schema.COMMANDS["vkEndCommandBuffer"], "vkEndCommandBuffer",
                               [cb])
        finally:
            if not ended:
                self.lib.vkEndCommandBuffer(self.objects[cb].handle)

    def facts(self, args: list[Any]) -> Any:
        from .facts import physical_device_facts

        if len(args) != 1 or not isinstance(args[0], int):
            raise bad("vkRgpuGetPhysicalDeviceFacts takes [instance]")
        self.real("VkInstance", args[0])
        return [VK_SUCCESS, physical_device_facts(self, self.objects[args[0]])]

    # --- destruction -----------------------------------------------------------------------

    def _destroy_object(self, obj: VkObject) -> None:
        destroy = schema.HANDLES.get(obj.type, (False, None, None))[2]
        if obj.type in _NOT_DESTROYED or destroy is None:
            self._unregister(obj.ident, destroyed=False)
            return
        device = self.objects[obj.device].handle
        pfn = self.lib.vkGetDeviceProcAddr(device, destroy.encode())
        if pfn == self.ffi.NULL:
            log.warning("%s: cannot destroy %s %#x: no %s", self.label, obj.type, obj.ident,
                        destroy)
            self._unregister(obj.ident, destroyed=False)
            return
        self.ffi.cast(f"PFN_{destroy}", pfn)(device, obj.handle, self.ffi.NULL)
        if obj.type in ("VkCommandPool", "VkDescriptorPool"):
            self._forget_pool(obj.ident)
        self._unregister(obj.ident)

    def destroy_device(self, dev: VkObject) -> None:
        """Wait idle, destroy the device's children newest first, then the device."""
        r = self.lib.vkDeviceWaitIdle(dev.handle)
        if r < 0:
            log.warning("%s: vkDeviceWaitIdle returned %s", self.label, result_name(r))
        for obj in reversed([o for o in self.objects.values()
                             if o.device == dev.ident and o is not dev]):
            if obj.ident in self.objects:
                self._destroy_object(obj)
        self._pfns = {k: v for k, v in self._pfns.items() if k[0] != dev.ident}
        self.lib.vkDestroyDevice(dev.handle, self.ffi.NULL)
        self._unregister(dev.ident)

    def destroy_instance(self, inst: VkObject) -> None:
        for dev in reversed([o for o in self.objects.values()
                             if o.type == "VkDevice" and o.instance == inst.ident]):
            self.destroy_device(dev)
        for obj in [o for o in self.objects.values()
                    if o.instance == inst.ident and o is not inst]:
            self._unregister(obj.ident, destroyed=False)
        self._pfns = {k: v for k, v in self._pfns.items() if k[0] != inst.ident}
        messenger = self._messengers.pop(inst.ident, None)
        if messenger is not None and self.backend.validation is not None:
            self.backend.validation.detach(inst.handle, messenger)
        self.lib.vkDestroyInstance(inst.handle, self.ffi.NULL)
        self._unregister(inst.ident)

    def close(self) -> None:
        """Destroy everything the session still holds (on the session's worker thread)."""
        if self.closed:
            return
        before = self.backend.destroyed
        for inst in reversed([o for o in self.objects.values() if o.type == "VkInstance"]):
            try:
                self.destroy_instance(inst)
            except Exception:
                log.exception("%s: destroying a VkInstance failed", self.label)
        self.objects.clear()
        self._by_real.clear()
        self.closed = True
        with self.backend._lock:
            self.backend.sessions.discard(self)
            live = self.backend.live
        log.info("%s: Vulkan session closed after %d calls; destroyed %d objects, %d live in "
                 "the backend", self.label, self.calls, self.backend.destroyed - before, live)


_PRIVATE: dict[str, Callable[[VulkanSession, list[Any]], Any]] = {
    "vkRgpuGetPhysicalDeviceFacts": VulkanSession.facts,
    "vkRgpuWriteMemory": VulkanSession.write_memory,
    "vkRgpuReadMemory": VulkanSession.read_memory,
    "vkRgpuSubmitCommandBuffer": VulkanSession.submit_command_buffer,
    "vkRgpuStageBlob": VulkanSession.stage_blob,
    "vkRgpuFetchBlob": VulkanSession.fetch_blob,
    "vkRgpuReadMemories": VulkanSession.read_memories,
}
