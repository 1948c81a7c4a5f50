"""Generate rgpu's Vulkan schema (`rgpu/api/vk_generated.py`) from Khronos ``vk.xml``.

The schema lists, for core Vulkan 1.0-1.3 and the KHR/EXT extensions that need no window
system, every command (parameters with direction, enumeration pairs, what the reply carries) and
every struct reachable from them (members with their wire shape). Both ends of the codec are
driven by it: the server's interpreter (`rgpu/server/vulkan/codec.py`) now, a generated C
encoder in the ICD later. The encoding itself is specified in docs/VULKAN_ENCODING.md.

Run: ``python -m rgpu.codegen.vulkan [--xml vk.xml] [--out rgpu/api/vk_generated.py]``.
The output depends only on the vk.xml given, so regeneration is reproducible.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from rgpu.api.vk_schema import Command, Field, Struct

from .vk_private import PRIVATE_COMMANDS
from .vk_registry import DEFAULT_VK_XML, Decl, Extension, Registry, load_registry

__all__ = ["DEFAULT_OUT", "generate", "main", "select"]

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "api" / "vk_generated.py"
COMMAND_LINE = "python -m rgpu.codegen.vulkan"

CORE_VERSIONS = ("VK_VERSION_1_0", "VK_VERSION_1_1", "VK_VERSION_1_2", "VK_VERSION_1_3")

#: Extension name fragments that mean a window system, presentation, platform handles, video,
#: or raw object handles / callbacks that cannot cross a network yet.
EXCLUDED_FRAGMENTS = (
    "surface", "swapchain", "display", "present", "video", "win32", "fullscreen", "wayland",
    "xcb", "xlib", "android", "metal", "directfb", "fuchsia", "ggp", "screen", "_drm",
    "_fd", "external_memory_host", "debug_report", "debug_utils", "debug_marker",
    "descriptor_buffer", "device_fault", "pipeline_properties", "shader_module_identifier",
    "opacity_micromap", "device_address_commands", "device_memory_report",
)

#: Query structs whose extension structs are all in the schema (for the facts reply).
FACT_PARENTS = ("VkPhysicalDeviceProperties2", "VkPhysicalDeviceFeatures2",
                "VkPhysicalDeviceMemoryProperties2", "VkQueueFamilyProperties2",
                "VkFormatProperties2")

ENUMS_KEPT = ("VkResult", "VkStructureType", "VkFormat", "VkObjectType", "VkImageType",
              "VkImageTiling", "VkFormatFeatureFlagBits")

_INT_ALIASES = {"VkBool32", "VkDeviceSize", "VkDeviceAddress", "VkSampleMask", "VkFlags",
                "VkFlags64"}


class Unsupported(Exception):
    """A declaration the encoding cannot carry (the struct or command is left out)."""


def _selected_extensions(reg: Registry) -> list[Extension]:
    chosen: dict[str, Extension] = {}
    for ext in reg.extensions:
        if "vulkan" not in ext.supported or ext.platform or ext.provisional:
            continue
        if not ext.name.startswith(("VK_KHR_", "VK_EXT_")):
            continue
        if any(f in ext.name.lower() for f in EXCLUDED_FRAGMENTS):
            continue
        chosen[ext.name] = ext
    changed = True
    while changed:  # drop extensions whose requirements were dropped
        changed = False
        for name, ext in list(chosen.items()):
            deps = [d for d in re.split(r"[,+()]", ext.depends or "") if d.strip()]
            if any(not d.startswith("VK_VERSION_") and d not in chosen for d in deps):
                del chosen[name]
                changed = True
    return sorted(chosen.values(), key=lambda e: e.number)


def _kind(reg: Registry, type_name: str) -> str:
    if type_name in _INT_ALIASES:
        return "i"
    td = reg.types.get(type_name)
    if td is None:
        raise Unsupported(f"unknown type {type_name}")
    cat = td.category
    if cat == "handle":
        return "H" if td.dispatchable else "h"
    if cat in ("int", "float", "char", "void"):
        return {"int": "i", "float": "f", "char": "c", "void": "v"}[cat]
    if cat == "struct":
        return "s"
    if cat == "union":
        return "u"
    if cat == "pfn":
        return "p"
    raise Unsupported(f"{type_name} is {cat}")


def _fixed_size(reg: Registry, dims: tuple[str, ...]) -> int:
    total = 1
    for d in dims:
        total *= int(d) if d.isdigit() else reg.constants[d]
    return total


def _field(reg: Registry, d: Decl, *, param: bool) -> Field:
    kind = _kind(reg, d.type)
    optional = bool(d.optional and d.optional[0])
    length = d.len
    if d.name == "sType" and d.type == "VkStructureType":
        return Field(d.name, d.type, "i", "stype")
    if d.name == "pNext" and d.depth == 1:
        return Field(d.name, d.type, "v", "pnext", optional=True)
    if kind == "p" or d.name in ("pAllocator", "pUserData"):
        return Field(d.name, d.type, kind, "drop", optional=True)
    if d.depth == 0:
        if d.dims:
            size = _fixed_size(reg, d.dims)
            return Field(d.name, d.type, kind, "chars" if kind == "c" else "fixed", size=size)
        if kind == "v":
            raise Unsupported(f"void member {d.name}")
        return Field(d.name, d.type, kind, "val")
    if d.dims:
        raise Unsupported(f"array of pointers {d.name}")
    parts = [p.strip() for p in (length or "").split(",") if p.strip()]
    if d.depth == 1:
        if kind == "c":
            if parts and parts[0] != "null-terminated":
                raise Unsupported(f"counted char array {d.name}")
            return Field(d.name, d.type, kind, "str", optional=optional)
        if kind == "v":
            if not parts:
                if param and d.name in ("pData", "pValues"):
                    raise Unsupported(f"untyped {d.name}")
                return Field(d.name, d.type, kind, "drop", optional=True)
            return Field(d.name, d.type, kind, "blob", parts[0], optional=optional)
        if parts:
            m = re.fullmatch(r"(\w+)\s*/\s*4", parts[0])
            if m and kind == "i":  # uint32_t pCode[codeSize / 4]: SPIR-V words as bytes
                return Field(d.name, d.type, kind, "blob", m.group(1), optional=optional)
            return Field(d.name, d.type, kind, "array", parts[0], optional=optional)
        return Field(d.name, d.type, kind, "ptr", optional=optional)
    if d.depth == 2 and kind == "c" and len(parts) == 2 and parts[1] == "null-terminated":
        return Field(d.name, d.type, kind, "strs", parts[0], optional=optional)
    if d.depth == 2 and kind == "v" and param and d.name == "ppData":
        return Field(d.name, d.type, kind, "drop", dir="out")
    raise Unsupported(f"{d.name}: pointer depth {d.depth}")


def _struct(reg: Registry, name: str) -> Struct:
    td = reg.types[name]
    fields = tuple(_field(reg, m, param=False) for m in td.members)
    stype = None
    for m in td.members:
        if m.name == "sType" and m.values:
            stype = reg.enums["VkStructureType"][m.values]
    return Struct(name, stype, fields, td.extends, td.category == "union", td.returnedonly)


def _command(reg: Registry, name: str) -> Command:
    cmd = reg.commands[name]
    if cmd.result.startswith("PFN_"):
        raise Unsupported("returns a function pointer")
    params = [_field(reg, p, param=True) for p in cmd.params]
    decls = cmd.params
    pair: tuple[int, int] | None = None
    for i, d in enumerate(decls):
        f = params[i]
        if f.shape == "drop" or d.depth == 0 or d.const:
            continue
        params[i] = f._replace(dir="out")
    for j, f in enumerate(params):
        if f.dir != "out" or f.shape not in ("array", "blob") or f.len is None:
            continue
        for i, d in enumerate(decls):
            if d.name == f.len and params[i].dir == "out" and d.depth == 1:
                params[i] = params[i]._replace(dir="inout")
                pair = (i, j)
    first = decls[0].type if decls else ""
    level = ("instance" if first in ("VkInstance", "VkPhysicalDevice")
             else "device" if first in ("VkDevice", "VkQueue", "VkCommandBuffer")
             else "global")
    reply: list[int] = []
    for i, f in enumerate(params):
        if f.dir == "in" or (pair is not None and i == pair[1]):
            continue
        if pair is None and f.kind in ("h", "H") and f.shape in ("ptr", "array"):
            continue  # handles the client named: nothing to send back
        if f.name == "ppData":
            continue
        reply.append(i)
    return Command(name, tuple(params), cmd.result, level, pair, tuple(reply))


def select(reg: Registry) -> tuple[dict[str, Struct], dict[str, Command], dict[str, str],
                                   list[Extension], dict[str, str], dict[str, tuple[str, ...]]]:
    """Pick the commands and structs of the schema; returns (structs, commands, command
    aliases, extensions, struct aliases, struct origins)."""
    extensions = _selected_extensions(reg)
    included = set(CORE_VERSIONS) | {e.name for e in extensions}
    type_names: list[str] = []
    cmd_names: list[str] = []
    sources: list[tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]] = [
        (f.types, f.commands) for f in reg.features if f.name in CORE_VERSIONS]
    sources += [(e.types, e.commands) for e in extensions]
    origins: dict[str, list[str]] = {}
    source_names = [f.name for f in reg.features if f.name in CORE_VERSIONS] + [
        e.name for e in extensions]
    for origin, (tys, cmds) in zip(source_names, sources, strict=True):
        for t, dep in tys:
            if dep is None or dep in included:
                type_names.append(t)
                target = reg.types[t].alias if t in reg.types and reg.types[t].alias else t
                if origin not in origins.setdefault(target, []):
                    origins[target].append(origin)
        cmd_names += [c for c, dep in cmds if dep is None or dep in included]
    # Query structs of every other extension too (vendor ones included): the facts reply
    # carries whatever the device reports, whether or not rgpu forwards the extension's calls.
    chosen = {e.name for e in extensions}
    for ext in reg.extensions:
        if ext.name in chosen or "vulkan" not in ext.supported or ext.platform \
                or ext.provisional:
            continue
        for t, _dep in ext.types:
            td = reg.types.get(t)
            target = td.alias if td is not None and td.alias else t
            tdef = reg.types.get(target)
            if tdef is None or tdef.category != "struct" or \
                    not set(tdef.extends) & set(FACT_PARENTS):
                continue
            type_names.append(t)
            if ext.name not in origins.setdefault(target, []):
                origins[target].append(ext.name)

    structs: dict[str, Struct] = {}
    struct_aliases: dict[str, str] = {}
    failed: set[str] = set()

    def want(name: str) -> bool:
        """Add a struct/union and everything it contains; False if it cannot be encoded."""
        td = reg.types.get(name)
        if td is None:
            return False
        if td.alias:
            ok = want(td.alias)
            if ok:
                struct_aliases[name] = td.alias
            return ok
        if td.category not in ("struct", "union"):
            return True
        if name in structs:
            return True
        if name in failed:
            return False
        try:
            s = _struct(reg, name)
        except (Unsupported, KeyError):
            failed.add(name)
            return False
        structs[name] = s  # before recursing: self-referencing structs
        for f in s.fields:
            if f.kind in ("s", "u") and f.shape != "drop" and not want(f.type):
                del structs[name]
                failed.add(name)
                return False
        return True

    for t in type_names:
        want(t)
    commands: dict[str, Command] = {}
    aliases: dict[str, str] = {}
    seen: set[str] = set()
    for name in cmd_names:
        if name in seen or name not in reg.commands:
            continue
        seen.add(name)
        base = reg.commands[name].alias
        try:
            cmd = _command(reg, base or name)
        except Unsupported:
            continue
        if not all(want(f.type) for f in cmd.params if f.kind in ("s", "u")
                   and f.shape != "drop"):
            continue
        if base:
            aliases[name] = base
            commands.setdefault(base, cmd)
        else:
            commands[name] = cmd
    struct_origins = {n: tuple(origins.get(n, ())) for n in sorted(structs)}
    return structs, commands, aliases, extensions, struct_aliases, struct_origins


def command_origins(reg: Registry, names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Command name (aliases included) -> the core versions and selected extensions that
    provide it: a driver hands out a command only for its version or an enabled extension."""
    extensions = _selected_extensions(reg)
    included = set(CORE_VERSIONS) | {e.name for e in extensions}
    sources = [(f.name, f.commands) for f in reg.features if f.name in CORE_VERSIONS]
    sources += [(e.name, e.commands) for e in extensions]
    wanted = set(names)
    origins: dict[str, list[str]] = {}
    for origin, cmds in sources:
        for c, dep in cmds:
            if c in wanted and (dep is None or all(d in included for d in re.split(
                    r"[,+()]", dep) if d.strip())) and origin not in origins.get(c, []):
                origins.setdefault(c, []).append(origin)
    return {n: tuple(origins.get(n, ())) for n in sorted(wanted)}


def _handles(reg: Registry, commands: dict[str, Command]) -> dict[str, tuple[bool, str | None,
                                                                              str | None]]:
    result: dict[str, tuple[bool, str | None, str | None]] = {}
    for name, td in reg.types.items():
        if td.category != "handle" or td.alias:
            continue
        destroy = None
        for cname, cmd in commands.items():
            if not cname.startswith(("vkDestroy", "vkFree")) or len(cmd.params) < 2:
                continue
            obj = cmd.params[1] if cmd.params[0].type != name else cmd.params[0]
            if cmd.params[0].type == name and len(cmd.params) == 2:
                obj = cmd.params[0]  # vkDestroyInstance / vkDestroyDevice
            if obj.type == name and obj.shape in ("val", "array") and \
                    cname not in ("vkFreeCommandBuffers", "vkFreeDescriptorSets"):
                destroy = cname
                break
        result[name] = (td.dispatchable, td.parent, destroy)
    return dict(sorted(result.items()))


def _lit(value: object) -> str:
    if isinstance(value, Field):
        defaults = Field("", "", "", "")
        args = [repr(value.name), repr(value.type), repr(value.kind), repr(value.shape)]
        extra = ((f, getattr(value, f)) for f in ("len", "size", "optional", "dir")
                 if getattr(value, f) != getattr(defaults, f))
        return f"F({', '.join(args + [f'{k}={v!r}' for k, v in extra])})"
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        inner = ", ".join(_lit(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _emit_fields(fields: Iterable[Field]) -> str:
    return "(\n" + "".join(f"        {_lit(f)},\n" for f in fields) + "    )"


def generate(xml_path: Path = DEFAULT_VK_XML) -> str:
    reg = load_registry(xml_path)
    structs, commands, aliases, extensions, struct_aliases, origins = select(reg)
    out: list[str] = [
        f"# Generated by `{COMMAND_LINE}` from vk.xml {reg.version}; do not edit.\n",
        '"""The Vulkan wire schema: see docs/VULKAN_ENCODING.md and rgpu/api/vk_schema.py."""\n',
        "# ruff: noqa: E501\n",
        "from __future__ import annotations\n\n",
        "from rgpu.api.vk_schema import Command as C\n",
        "from rgpu.api.vk_schema import Field as F\n",
        "from rgpu.api.vk_schema import Struct as S\n\n",
        f"VK_XML_VERSION = {reg.version!r}\n\n",
        "#: Extensions whose commands and structs are in this schema (non-WSI KHR/EXT).\n",
        "INSTANCE_EXTENSIONS = (\n",
    ]
    out += [f"    {e.name!r},\n" for e in extensions if e.kind == "instance"]
    out.append(")\nDEVICE_EXTENSIONS = (\n")
    out += [f"    {e.name!r},\n" for e in extensions if e.kind == "device"]
    out.append(")\n\nENUMS: dict[str, dict[str, int]] = {\n")
    for ename in ENUMS_KEPT:
        values = sorted(reg.enums[ename].items(), key=lambda kv: (kv[1], kv[0]))
        out.append(f"    {ename!r}: {{\n")
        out += [f"        {k!r}: {v},\n" for k, v in values]
        out.append("    },\n")
    out.append("}\n\n#: handle type -> (dispatchable, parent type, destroy command)\n")
    out.append("HANDLES: dict[str, tuple[bool, str | None, str | None]] = {\n")
    out += [f"    {k!r}: {v!r},\n" for k, v in _handles(reg, commands).items()]
    out.append("}\n\nSTRUCTS: dict[str, S] = {}\n")
    for name in sorted(structs):
        s = structs[name]
        out.append(f"STRUCTS[{name!r}] = S({name!r}, {s.stype!r}, {_emit_fields(s.fields)}, "
                   f"{_lit(s.extends)}, {s.union!r}, {s.returnedonly!r})\n")
    out.append("\n#: struct -> the core versions and extensions that define it\n")
    out.append("STRUCT_ORIGINS: dict[str, tuple[str, ...]] = {\n")
    out += [f"    {k!r}: {_lit(v)},\n" for k, v in origins.items() if v]
    out.append("}\n")
    out.append("\nSTRUCT_ALIASES: dict[str, str] = {\n")
    out += [f"    {k!r}: {v!r},\n" for k, v in sorted(struct_aliases.items())]
    out.append("}\n\nCOMMANDS: dict[str, C] = {}\n")
    for name in sorted(commands):
        c = commands[name]
        out.append(f"COMMANDS[{name!r}] = C({name!r}, {_emit_fields(c.params)}, "
                   f"{c.result!r}, {c.level!r}, {c.pair!r}, {_lit(c.reply)})\n")
    out.append("\n#: Extension-suffixed names of promoted commands -> the schema entry.\n")
    out.append("COMMAND_ALIASES: dict[str, str] = {\n")
    out += [f"    {k!r}: {v!r},\n" for k, v in sorted(aliases.items())]
    out.append("}\n\n#: command name -> the core versions and extensions that provide it\n")
    out.append("COMMAND_ORIGINS: dict[str, tuple[str, ...]] = {\n")
    out += [f"    {k!r}: {_lit(v)},\n"
            for k, v in command_origins(reg, [*commands, *aliases]).items()]
    out.append("}\n\n#: rgpu's private commands (rgpu/codegen/vk_private.py).\n")
    out.append("PRIVATE_COMMANDS: dict[str, C] = {}\n")
    for c in PRIVATE_COMMANDS:
        out.append(f"PRIVATE_COMMANDS[{c.name!r}] = C({c.name!r}, {_emit_fields(c.params)}, "
                   f"{c.result!r}, {c.level!r}, {c.pair!r}, {_lit(c.reply)})\n")
    out.append("\nSTYPES: dict[int, str] = {s.stype: n for n, s in STRUCTS.items() "
               "if s.stype is not None}\n")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND_LINE, description=__doc__.splitlines()[0])
    ap.add_argument("--xml", type=Path, default=DEFAULT_VK_XML, help="vk.xml to read")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="file to write")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the file differs from what would be generated")
    args = ap.parse_args(argv)
    if not args.xml.exists():
        print(f"rgpu codegen: error: {args.xml} not found; install libvulkan-dev or pass --xml",
              file=sys.stderr)
        return 2
    text = generate(args.xml)
    if args.check:
        same = args.out.exists() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'out of date'}")
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
