"""A small model of Khronos ``vk.xml``: the parts the rgpu Vulkan codec is generated from.

Only what the encoding needs is kept: types with their category, structs and unions with their
members as declared (const-ness, pointer depth, fixed array sizes, ``len``/``altlen``,
``optional``, ``values``), commands with their parameters and result type, every enum value
(extension enums computed from ``extnumber``/``offset``), API constants, and which types and
commands each core version and extension requires. ``api="vulkansc"`` variants are ignored.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Decl", "Extension", "Feature", "Registry", "TypeDef", "load_registry"]

DEFAULT_VK_XML = Path("/usr/share/vulkan/registry/vk.xml")

_SCALARS = {
    "uint8_t": "int", "int8_t": "int", "uint16_t": "int", "int16_t": "int",
    "uint32_t": "int", "int32_t": "int", "uint64_t": "int", "int64_t": "int",
    "size_t": "int", "int": "int", "float": "float", "double": "float", "char": "char",
    "void": "void",
}


@dataclass
class Decl:
    """One struct member or command parameter, as written in C."""

    name: str
    type: str
    const: bool
    depth: int  # pointer depth
    dims: tuple[str, ...]  # fixed array sizes (numbers or constant names)
    len: str | None  # vk.xml len (altlen preferred when present)
    optional: tuple[bool, ...]
    values: str | None = None  # sType value name
    bits: int | None = None  # bitfield width
    noautovalidity: bool = False


@dataclass
class TypeDef:
    name: str
    category: str  # int float char void handle struct union pfn opaque
    dispatchable: bool = False
    members: list[Decl] = field(default_factory=list)
    extends: tuple[str, ...] = ()
    returnedonly: bool = False
    alias: str | None = None
    parent: str | None = None


@dataclass
class Command:
    name: str
    result: str
    params: list[Decl]
    alias: str | None = None
    successcodes: tuple[str, ...] = ()


@dataclass
class Feature:
    name: str
    types: list[tuple[str, str | None]]  # (type name, depends expression)
    commands: list[tuple[str, str | None]]


@dataclass
class Extension:
    name: str
    number: int
    kind: str  # instance | device
    supported: tuple[str, ...]
    platform: str | None
    depends: str | None
    provisional: bool
    promotedto: str | None
    types: list[tuple[str, str | None]]
    commands: list[tuple[str, str | None]]


@dataclass
class Registry:
    version: str
    types: dict[str, TypeDef]
    commands: dict[str, Command]
    enums: dict[str, dict[str, int]]  # enum type -> {value name: value}
    constants: dict[str, int]
    features: list[Feature]
    extensions: list[Extension]


def _api_ok(elem: ET.Element) -> bool:
    api = elem.get("api")
    return api is None or "vulkan" in api.split(",")


def _decl(elem: ET.Element) -> Decl:
    type_elem = elem.find("type")
    name_elem = elem.find("name")
    assert type_elem is not None and name_elem is not None
    before = elem.text or ""
    after_type = type_elem.tail or ""
    after_name = name_elem.tail or ""
    seen_name = False
    for child in elem:
        if child is name_elem:
            seen_name = True
        elif seen_name and child.tag == "enum":
            after_name += (child.text or "") + (child.tail or "")
    dims = tuple(re.findall(r"\[\s*(\w+)\s*\]", after_name))
    bits_m = re.search(r":\s*(\d+)", after_name)
    length = elem.get("altlen") or elem.get("len")
    if length is not None and length.startswith("latexmath"):
        length = None
    optional = tuple(v == "true" for v in (elem.get("optional") or "false").split(","))
    return Decl(
        name=name_elem.text or "",
        type=type_elem.text or "",
        const="const" in before,
        depth=after_type.count("*"),
        dims=dims,
        len=length,
        optional=optional,
        values=elem.get("values"),
        bits=int(bits_m.group(1)) if bits_m else None,
        noautovalidity=elem.get("noautovalidity") == "true",
    )


def _enum_value(e: ET.Element, extnumber: int | None) -> int | None:
    if e.get("value") is not None:
        text = e.get("value", "")
        text = text.rstrip("ULF").replace("(~0U)", "-1")
        try:
            return int(text, 0)
        except ValueError:
            return None
    if e.get("bitpos") is not None:
        return 1 << int(e.get("bitpos", "0"))
    if e.get("offset") is not None:
        number = int(e.get("extnumber") or extnumber or 0)
        value = 1000000000 + (number - 1) * 1000 + int(e.get("offset", "0"))
        return -value if e.get("dir") == "-" else value
    return None


def load_registry(path: Path = DEFAULT_VK_XML) -> Registry:
    root = ET.parse(path).getroot()
    types: dict[str, TypeDef] = {name: TypeDef(name, cat) for name, cat in _SCALARS.items()}
    version = "unknown"
    for t in root.iter("type"):
        if not _api_ok(t):
            continue
        cat = t.get("category")
        name = t.get("name") or (t.findtext("name") or "")
        if cat == "define" and name == "VK_HEADER_VERSION":
            m = re.search(r"(\d+)\s*$", "".join(t.itertext()).strip())
            version = m.group(1) if m else version
            continue
        if not name or name in _SCALARS:
            continue
        alias = t.get("alias")
        if cat in ("struct", "union"):
            td = TypeDef(name, cat, alias=alias,
                         extends=tuple(filter(None, (t.get("structextends") or "").split(","))),
                         returnedonly=t.get("returnedonly") == "true")
            td.members = [_decl(m) for m in t.findall("member") if _api_ok(m)]
            types[name] = td
        elif cat == "handle":
            text = "".join(t.itertext())
            types[name] = TypeDef(name, "handle", alias=alias,
                                  dispatchable="NON_DISPATCHABLE" not in text,
                                  parent=t.get("parent"))
        elif cat in ("enum", "bitmask"):
            types[name] = TypeDef(name, "int", alias=alias)
        elif cat == "basetype":
            inner = t.findtext("type")
            if inner in ("uint32_t", "uint64_t", "int32_t"):
                types[name] = TypeDef(name, "int")
            else:
                types[name] = TypeDef(name, "opaque")
        elif cat == "funcpointer":
            types[name] = TypeDef(name, "pfn")
        elif cat is None and t.get("requires") and name not in types:
            types[name] = TypeDef(name, "opaque")
    # aliases take their target's category
    for td in types.values():
        if td.alias and td.alias in types:
            target = types[td.alias]
            td.category, td.dispatchable = target.category, target.dispatchable

    enums: dict[str, dict[str, int]] = {}
    constants: dict[str, int] = {}
    aliases: list[tuple[str, str, str]] = []
    for block in root.findall("enums"):
        bname = block.get("name", "")
        target = enums.setdefault(bname, {}) if block.get("type") in ("enum", "bitmask") \
            else None
        for e in block.findall("enum"):
            if not _api_ok(e):
                continue
            if e.get("alias"):
                aliases.append((bname, e.get("name", ""), e.get("alias", "")))
                continue
            v = _enum_value(e, None)
            if v is None:
                continue
            if target is not None:
                target[e.get("name", "")] = v
            else:
                constants[e.get("name", "")] = v

    def requires(elem: ET.Element) -> tuple[list[tuple[str, str | None]],
                                            list[tuple[str, str | None]]]:
        tys: list[tuple[str, str | None]] = []
        cmds: list[tuple[str, str | None]] = []
        for req in elem.findall("require"):
            if not _api_ok(req):
                continue
            dep = req.get("depends") or req.get("extension") or req.get("feature")
            tys += [(x.get("name", ""), dep) for x in req.findall("type")]
            cmds += [(x.get("name", ""), dep) for x in req.findall("command")]
        return tys, cmds

    def collect_ext_enums(elem: ET.Element, number: int | None) -> None:
        for req in elem.findall("require"):
            if not _api_ok(req):
                continue
            for e in req.findall("enum"):
                ext = e.get("extends")
                if not ext or not _api_ok(e):
                    continue
                if e.get("alias"):
                    aliases.append((ext, e.get("name", ""), e.get("alias", "")))
                    continue
                v = _enum_value(e, number)
                if v is not None:
                    enums.setdefault(ext, {})[e.get("name", "")] = v

    features: list[Feature] = []
    for f in root.findall("feature"):
        if not _api_ok(f):
            continue
        collect_ext_enums(f, None)
        tys, cmds = requires(f)
        features.append(Feature(f.get("name", ""), tys, cmds))
    extensions: list[Extension] = []
    for x in root.iter("extension"):
        number = int(x.get("number", "0"))
        supported = tuple((x.get("supported") or "").split(","))
        if "vulkan" in supported:
            collect_ext_enums(x, number)
        tys, cmds = requires(x)
        extensions.append(Extension(
            name=x.get("name", ""), number=number, kind=x.get("type") or "",
            supported=supported, platform=x.get("platform"),
            depends=x.get("depends") or x.get("requires"),
            provisional=x.get("provisional") == "true", promotedto=x.get("promotedto"),
            types=tys, commands=cmds))
    for block, name, target in aliases:
        values = enums.get(block)
        if values is not None and target in values:
            values.setdefault(name, values[target])

    commands: dict[str, Command] = {}
    pending_alias: list[tuple[str, str]] = []
    for c in root.iter("command"):
        if not _api_ok(c):
            continue
        if c.get("alias"):
            pending_alias.append((c.get("name", ""), c.get("alias", "")))
            continue
        proto = c.find("proto")
        if proto is None:
            continue
        name = proto.findtext("name") or ""
        commands[name] = Command(
            name=name, result=proto.findtext("type") or "void",
            params=[_decl(p) for p in c.findall("param") if _api_ok(p)],
            successcodes=tuple(filter(None, (c.get("successcodes") or "").split(","))))
    for name, target in pending_alias:
        if target in commands:
            base = commands[target]
            commands[name] = Command(name, base.result, base.params, alias=target,
                                     successcodes=base.successcodes)
    return Registry(version=f"1.3.{version}", types=types, commands=commands, enums=enums,
                    constants=constants, features=features, extensions=extensions)
