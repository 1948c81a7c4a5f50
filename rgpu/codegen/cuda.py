"""Generate the CUDA shim's C from ``cuda.h`` and ``cudaTypedefs.h``.

Outputs (``interpose/generated/``):

- ``cuda_api.h``: a toolkit-free copy of cuda.h's declarations as the driver itself sees them
  (``__CUDA_API_VERSION_INTERNAL``): every exported variant (``cuMemAlloc``, ``cuMemAlloc_v2``,
  ``cuMemcpyHtoD_v2_ptds``...) declared under its real name, no renaming macros;
- ``cuda_stubs.c``: a weak definition of every entry point returning
  ``CUDA_ERROR_NOT_SUPPORTED``, so the library exports the whole API before the hand-written core
  implements it (the core's strong definitions win at link time);
- ``proc_table.c`` / ``proc_table.h``: ``rgpu_proc_lookup``, the ``cuGetProcAddress`` resolution
  by (name, per-symbol version, flags), with the version breakpoints taken from the ``PFN_*``
  typedefs of cudaTypedefs.h (``PFN_cuMemAlloc_v3020`` is ``cuMemAlloc_v2``).

The profiler API (cudaProfiler.h, cudaProfilerTypedefs.h) is included where present; the
graphics interop headers are not (they need OpenGL, EGL and VDPAU types).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rgpu.codegen.cheader import Macro, preprocess, strip_comments

COMMAND = "python -m rgpu.codegen cuda"
DEFAULT_INCLUDE = Path("/usr/local/cuda/include")
OUTPUT_FILES = ("cuda_api.h", "cuda_stubs.c", "proc_table.c", "proc_table.h")
# Driver APIs declared outside cuda.h that need no foreign types (OpenGL, EGL and VDPAU interop
# do), with their PFN typedefs: used when present beside cuda.h.
OPTIONAL_HEADERS = (("cudaProfiler.h", "cudaProfilerTypedefs.h"),)

# The target the generated header describes: the driver's own view on Linux LP64, C11.
_PREDEFINED = {
    "__CUDA_API_VERSION_INTERNAL": 1,
    "__CUDA_API_VERSION_INTERNAL_ODR": 1,  # keeps internal-only *_MAX enumerators out
    "__LP64__": 1,
    "__GNUC__": 4,
    "__STDC_VERSION__": 201112,
}
# Macros applied while generating, never emitted: API renames and their helpers.
_APPLIED = {
    "__CUDA_API_PTDS",
    "__CUDA_API_PTSZ",
    "__CUDA_API_PER_THREAD_DEFAULT_STREAM",
    "__CUDA_DEPRECATED",
    "_CONCAT_INNER",
    "_CONCAT_OUTER",
}
_API_NAME = re.compile(r"cu[A-Z]\w*")
_PROTOTYPE = re.compile(r"\b(\w+)\s+CUDAAPI\s+(cu[A-Z]\w*)\s*\(([^;]*?)\)\s*;")
_PFN = re.compile(
    r"typedef\s+CUresult\s*\(\s*CUDAAPI\s*\*\s*PFN_(\w+)_v(\d+)(_ptds|_ptsz)?\s*\)\s*\(([^;]*?)\)\s*;"
)
_PER_THREAD = ("_ptds", "_ptsz")


class CodegenError(Exception):
    """The input headers do not have the shape the generator relies on."""


@dataclass(frozen=True)
class Function:
    """One exported driver entry point, as declared in cuda.h."""

    name: str
    params: str  # the parameter list, whitespace normalised, "void" when empty

    @property
    def per_thread(self) -> bool:
        return self.name.endswith(_PER_THREAD)


@dataclass(frozen=True)
class Variant:
    """``function`` is what ``cuGetProcAddress(base, version >= since)`` returns."""

    since: int
    function: str


@dataclass(frozen=True)
class ProcEntry:
    """A name ``cuGetProcAddress`` knows, with its variants, oldest first."""

    name: str
    default: tuple[Variant, ...]
    per_thread: tuple[Variant, ...]


@dataclass(frozen=True)
class CudaApi:
    version: int  # CUDA_VERSION, e.g. 13000
    header_body: list[str]
    functions: tuple[Function, ...]  # in declaration order
    proc_entries: tuple[ProcEntry, ...]  # sorted by name (C strcmp order)
    sources: tuple[tuple[str, str], ...]  # (file name, sha256)


def _applied(macro: Macro) -> bool:
    return macro.name in _APPLIED or bool(_API_NAME.fullmatch(macro.name))


def _normalise(params: str) -> str:
    text = " ".join(params.split())
    text = re.sub(r"\s*([(),])\s*", r"\1", text)
    text = text.replace(",", ", ")
    return text or "void"


def _param_count(params: str) -> int:
    depth, count = 0, 1
    if params.strip() in ("", "void"):
        return 0
    for c in params:
        depth += c == "("
        depth -= c == ")"
        count += c == "," and depth == 0
    return count


def _preprocess(text: str, drop_includes: tuple[str, ...]) -> tuple[list[str], dict[str, Macro]]:
    pre = preprocess(
        text, _PREDEFINED, _applied, drop_includes=drop_includes, passthrough=("__cplusplus",)
    )
    return pre.lines, pre.macros


def _prototypes(lines: list[str], seen: dict[str, Function]) -> list[Function]:
    functions: list[Function] = []
    for ret, name, params in _PROTOTYPE.findall("\n".join(lines)):
        if ret != "CUresult":
            raise CodegenError(f"{name} returns {ret}, not CUresult")
        fn = Function(name, _normalise(params))
        if name in seen:
            if seen[name] != fn:
                raise CodegenError(f"{name} is declared twice with different parameters")
            continue
        seen[name] = fn
        functions.append(fn)
    return functions


def parse_cuda_h(text: str) -> tuple[int, list[str], list[Function]]:
    lines, macros = _preprocess(text, ("stdlib.h", "stdint.h"))
    version_macro = macros.get("CUDA_VERSION")
    if version_macro is None:
        raise CodegenError("cuda.h defines no CUDA_VERSION")
    functions = _prototypes(lines, {})
    if not functions:
        raise CodegenError("no CUDAAPI prototypes found in cuda.h")
    return int(version_macro.body), lines, functions


def _variant_number(name: str, base: str) -> int | None:
    m = re.fullmatch(re.escape(base) + r"(?:_v(\d+))?(?:_ptds|_ptsz)?", name)
    if m is None:
        return None
    return int(m.group(1) or 1)


def build_proc_entries(typedefs_text: str, functions: Iterable[Function]) -> list[ProcEntry]:
    """Pair every ``PFN_<base>_v<version>[_ptds|_ptsz]`` with the exported function it types.

    Within one base name and flavour (default or per-thread), the n-th oldest PFN version is the
    n-th variant (``base``, ``base_v2``, ``base_v3``...); parameter counts are checked, and every
    function must be claimed exactly once. A function cudaTypedefs.h does not know is its own
    name, available from version 0.
    """
    by_name = {f.name: f for f in functions}
    groups: dict[tuple[str, bool], list[tuple[int, str]]] = {}
    for base, version, pt, params in _PFN.findall(strip_comments(typedefs_text)):
        groups.setdefault((base, bool(pt)), []).append((int(version), params))
    claimed: dict[str, str] = {}
    table: dict[str, dict[bool, list[Variant]]] = {}
    for (base, pt), pfns in sorted(groups.items()):
        pfns.sort()
        candidates = sorted(
            (
                f
                for f in by_name.values()
                if f.per_thread == pt and _variant_number(f.name, base) is not None
            ),
            key=lambda f: _variant_number(f.name, base) or 0,
        )
        if len(candidates) != len(pfns):
            raise CodegenError(
                f"PFN_{base} ({'per-thread' if pt else 'default'}): {len(pfns)} versions "
                f"but {len(candidates)} exported variants {[f.name for f in candidates]}"
            )
        variants = []
        for (version, params), fn in zip(pfns, candidates, strict=True):
            if _param_count(params) != _param_count(fn.params):
                raise CodegenError(f"PFN_{base}_v{version} does not match {fn.name}({fn.params})")
            if fn.name in claimed:
                raise CodegenError(f"{fn.name} is typed by both {claimed[fn.name]} and {base}")
            claimed[fn.name] = base
            variants.append(Variant(version, fn.name))
        table.setdefault(base, {False: [], True: []})[pt] = variants
    for fn in by_name.values():
        if fn.name not in claimed:
            table.setdefault(fn.name, {False: [], True: []})[fn.per_thread].append(
                Variant(0, fn.name)
            )
    entries = [
        ProcEntry(name, tuple(v[False]), tuple(v[True]))
        for name, v in sorted(table.items(), key=lambda kv: kv[0].encode())
    ]
    return entries


def load(include_dir: Path = DEFAULT_INCLUDE) -> CudaApi:
    """Read cuda.h, cudaTypedefs.h and, where present, the profiler API (cudaProfiler.h)."""
    sources: list[tuple[str, str]] = []

    def read(name: str) -> str:
        data = (include_dir / name).read_bytes()
        sources.append((name, hashlib.sha256(data).hexdigest()))
        return data.decode("utf-8")

    version, body, functions = parse_cuda_h(read("cuda.h"))
    typedefs = read("cudaTypedefs.h")
    seen = {f.name: f for f in functions}
    for header, header_typedefs in OPTIONAL_HEADERS:
        if not (include_dir / header).is_file() or not (include_dir / header_typedefs).is_file():
            continue
        lines, _ = _preprocess(read(header), ("cuda.h",))
        functions += _prototypes(lines, seen)
        body = [*body, "", *lines]
        typedefs += "\n" + read(header_typedefs)
    entries = build_proc_entries(typedefs, functions)
    return CudaApi(version, body, tuple(functions), tuple(entries), tuple(sources))


def _version_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def _banner(api: CudaApi, what: str) -> list[str]:
    lines = [
        f"/* Generated by `{COMMAND}` from CUDA {_version_text(api.version)} headers. "
        "Do not edit. */",
        "/*",
        f" * {what}",
        " *",
        f" * Sources, CUDA {_version_text(api.version)} (CUDA_VERSION {api.version}), read from",
        " * /usr/local/cuda/include by default; sha256:",
    ]
    lines += [f" *   {name:<22} {digest}" for name, digest in api.sources]
    lines.append(" */")
    return lines


def render_header(api: CudaApi) -> str:
    lines = _banner(
        api,
        "The CUDA driver API declarations the shim is built against, so that it builds without\n"
        " * a CUDA toolkit: enums, structs, typedefs, constants and the prototype of every\n"
        " * exported entry point under its real symbol name (the driver's own view of cuda.h,\n"
        " * __CUDA_API_VERSION_INTERNAL: cuMemAlloc is the 2.0 ABI, cuMemAlloc_v2 the 3.2 one,\n"
        " * no renaming macros). Interface declarations only, needed to interoperate with\n"
        " * programs built against the driver API; NVIDIA's documentation comments are not\n"
        " * reproduced. Target: Linux, LP64; C11 or later, or C++11 or later.",
    )
    lines += [
        "#ifndef RGPU_CUDA_API_H",
        "#define RGPU_CUDA_API_H",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        *api.header_body,
        "",
        "#endif /* RGPU_CUDA_API_H */",
    ]
    return "\n".join(lines) + "\n"


def render_stubs(api: CudaApi) -> str:
    lines = _banner(
        api,
        f"Weak default definitions of all {len(api.functions)} driver API entry points. Each\n"
        " * reports its name to rgpu_report_unsupported() when the core links one, and returns\n"
        " * CUDA_ERROR_NOT_SUPPORTED. The hand-written core (interpose/src) defines the entry\n"
        " * points it implements; the linker keeps those strong definitions.",
    )
    lines += [
        '#include "cuda_api.h"',
        "",
        '#pragma GCC diagnostic ignored "-Wunused-parameter"',
        "",
        "extern void rgpu_report_unsupported(const char *name) __attribute__((weak));",
        "",
    ]
    for fn in api.functions:
        lines += [
            f"__attribute__((weak)) CUresult CUDAAPI {fn.name}({fn.params})",
            "{",
            "    if (rgpu_report_unsupported)",
            f'        rgpu_report_unsupported("{fn.name}");',
            "    return CUDA_ERROR_NOT_SUPPORTED;",
            "}",
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


_LOOKUP_DOC = """\
/*
 * cuGetProcAddress resolution (the driver's semantics):
 * - symbol is a base name ("cuMemAlloc"); the result is its newest variant whose
 *   introduction version is <= cudaVersion (cuMemAlloc@2000 -> cuMemAlloc,
 *   @3020 -> cuMemAlloc_v2);
 * - flags CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM prefers the _ptds/_ptsz variants,
 *   falling back to the default ones where none is old enough or none exists;
 *   CU_GET_PROC_ADDRESS_DEFAULT and _LEGACY_STREAM select the default variants;
 * - unknown name (or "") -> CUDA_ERROR_NOT_FOUND, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
 *   known name whose variants are all newer than cudaVersion -> CUDA_ERROR_NOT_FOUND,
 *   CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT; found -> CUDA_SUCCESS,
 *   CU_GET_PROC_ADDRESS_SUCCESS. *pfn is NULL on failure; status may be NULL.
 * - symbol or pfn NULL, or flags other than those three -> CUDA_ERROR_INVALID_VALUE.
 * The addresses are the shim's own exported functions.
 */"""


def render_proc_header(api: CudaApi) -> str:
    lines = _banner(api, "Declaration of rgpu_proc_lookup, defined in proc_table.c.")
    lines += [
        "#ifndef RGPU_PROC_TABLE_H",
        "#define RGPU_PROC_TABLE_H",
        "",
        '#include "cuda_api.h"',
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        _LOOKUP_DOC,
        "CUresult rgpu_proc_lookup(const char *symbol, int cudaVersion, cuuint64_t flags,",
        "                          void **pfn, CUdriverProcAddressQueryResult *status);",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        "#endif /* RGPU_PROC_TABLE_H */",
    ]
    return "\n".join(lines) + "\n"


def render_proc_table(api: CudaApi) -> str:
    n_variants = sum(len(e.default) + len(e.per_thread) for e in api.proc_entries)
    lines = _banner(
        api,
        f"cuGetProcAddress table: {len(api.proc_entries)} names, {n_variants} variants, "
        "version\n * breakpoints from the PFN_* typedefs of the *Typedefs.h headers.",
    )
    lines += [
        "#include <stddef.h>",
        "#include <string.h>",
        "",
        '#include "proc_table.h"',
        "",
        "struct rgpu_proc_variant {",
        "    int since;",
        "    void *fn;",
        "};",
        "",
        "struct rgpu_proc_entry {",
        "    const char *name;",
        "    unsigned short first, count;       /* default variants, oldest first */",
        "    unsigned short pt_first, pt_count; /* _ptds/_ptsz variants, oldest first */",
        "};",
        "",
        "static const struct rgpu_proc_variant rgpu_proc_variants[] = {",
    ]
    index = 0
    rows: list[str] = []
    for entry in api.proc_entries:
        first = index
        for v in entry.default:
            lines.append(f"    {{{v.since}, (void *)&{v.function}}},")
        index += len(entry.default)
        pt_first = index
        for v in entry.per_thread:
            lines.append(f"    {{{v.since}, (void *)&{v.function}}},")
        index += len(entry.per_thread)
        rows.append(
            f'    {{"{entry.name}", {first}, {len(entry.default)}, {pt_first}, '
            f"{len(entry.per_thread)}}},"
        )
    if index > 0xFFFF:
        raise CodegenError("proc table too large for unsigned short indices")
    lines += ["};", "", "static const struct rgpu_proc_entry rgpu_proc_entries[] = {", *rows]
    lines += [
        "};",
        "",
        "#define RGPU_PROC_ENTRY_COUNT (sizeof rgpu_proc_entries / sizeof rgpu_proc_entries[0])",
        "",
        "static const struct rgpu_proc_variant *",
        "rgpu_proc_newest(unsigned first, unsigned count, int cudaVersion)",
        "{",
        "    const struct rgpu_proc_variant *found = NULL;",
        "    for (unsigned i = first; i < first + count; i++)",
        "        if (rgpu_proc_variants[i].since <= cudaVersion)",
        "            found = &rgpu_proc_variants[i];",
        "    return found;",
        "}",
        "",
        "CUresult rgpu_proc_lookup(const char *symbol, int cudaVersion, cuuint64_t flags,",
        "                          void **pfn, CUdriverProcAddressQueryResult *status)",
        "{",
        "    const cuuint64_t known = CU_GET_PROC_ADDRESS_LEGACY_STREAM |",
        "                             CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;",
        "    if (pfn != NULL)",
        "        *pfn = NULL;",
        "    if (symbol == NULL || pfn == NULL || (flags & ~known) != 0)",
        "        return CUDA_ERROR_INVALID_VALUE;",
        "",
        "    size_t lo = 0, hi = RGPU_PROC_ENTRY_COUNT;",
        "    const struct rgpu_proc_entry *entry = NULL;",
        "    while (lo < hi) {",
        "        size_t mid = lo + (hi - lo) / 2;",
        "        int cmp = strcmp(symbol, rgpu_proc_entries[mid].name);",
        "        if (cmp == 0) {",
        "            entry = &rgpu_proc_entries[mid];",
        "            break;",
        "        }",
        "        if (cmp < 0)",
        "            hi = mid;",
        "        else",
        "            lo = mid + 1;",
        "    }",
        "    if (entry == NULL) {",
        "        if (status != NULL)",
        "            *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;",
        "        return CUDA_ERROR_NOT_FOUND;",
        "    }",
        "",
        "    const struct rgpu_proc_variant *found = NULL;",
        "    if (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)",
        "        found = rgpu_proc_newest(entry->pt_first, entry->pt_count, cudaVersion);",
        "    if (found == NULL)",
        "        found = rgpu_proc_newest(entry->first, entry->count, cudaVersion);",
        "    if (found == NULL) {",
        "        if (status != NULL)",
        "            *status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;",
        "        return CUDA_ERROR_NOT_FOUND;",
        "    }",
        "    *pfn = found->fn;",
        "    if (status != NULL)",
        "        *status = CU_GET_PROC_ADDRESS_SUCCESS;",
        "    return CUDA_SUCCESS;",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render(api: CudaApi) -> dict[str, str]:
    """The generated files, by name (``OUTPUT_FILES``)."""
    return {
        "cuda_api.h": render_header(api),
        "cuda_stubs.c": render_stubs(api),
        "proc_table.c": render_proc_table(api),
        "proc_table.h": render_proc_header(api),
    }


def generate(include_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Write the generated files into ``out_dir``; only files whose content changed are touched."""
    files = render(load(include_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, text in files.items():
        path = out_dir / name
        data = text.encode("utf-8")
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        written[name] = path
    return written


def recorded_sources(generated_text: str) -> dict[str, str]:
    """The (file name -> sha256) of the headers a generated file's banner says it came from."""
    return dict(re.findall(r"^ \*   (\S+)\s+([0-9a-f]{64})$", generated_text, re.MULTILINE))


def same_sources(include_dir: Path, generated_text: str) -> bool:
    """Whether ``include_dir`` holds exactly the headers ``generated_text`` was made from."""
    recorded = recorded_sources(generated_text)
    would_read = {"cuda.h", "cudaTypedefs.h"}
    for pair in OPTIONAL_HEADERS:
        if all((include_dir / name).is_file() for name in pair):
            would_read.update(pair)
    if set(recorded) != would_read:
        return False
    for name, digest in recorded.items():
        path = include_dir / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return False
    return True


_DECLARED = re.compile(r"\bCUresult\s+CUDAAPI\s+(cu[A-Z]\w*)\s*\(")


def declared_functions(header_text: str) -> list[str]:
    """Entry points declared in a generated ``cuda_api.h`` (what the shim must export)."""
    return sorted(set(_DECLARED.findall(header_text)))
