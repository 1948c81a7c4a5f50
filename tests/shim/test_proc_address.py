"""``rgpu_proc_lookup``: cuGetProcAddress semantics of the built shim (research §3.1).

Lookups run in a child process that loads the library with ctypes (its SONAME is libcuda.so.1;
it must not be loaded into the test process) and reports, for each (name, version, flags), the
result, the status and which exported symbol the returned address is.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest

from rgpu.codegen import cuda
from rgpu.codegen.shimlib import shim_library_path
from rgpu.errors import RgpuError

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "interpose" / "generated"
CUDA_NOT_FOUND = 500
CUDA_INVALID_VALUE = 1
SUCCESS, SYMBOL_NOT_FOUND, VERSION_NOT_SUFFICIENT = 0, 1, 2
PER_THREAD = 2

Query = tuple[str, int, int]  # (symbol, cudaVersion, flags)
Answer = tuple[int, int, str | None]  # (CUresult, status, name of the returned function)

_CHILD = """
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
look = lib.rgpu_proc_lookup
look.restype = ctypes.c_int
look.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64,
                 ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int)]
queries, names = json.load(sys.stdin)
by_address = {}
for name in names:
    by_address.setdefault(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value, name)
out = []
for symbol, version, flags in queries:
    pfn, status = ctypes.c_void_p(12345), ctypes.c_int(-1)
    rc = look(symbol.encode(), version, flags, ctypes.byref(pfn), ctypes.byref(status))
    out.append([rc, status.value, None if pfn.value is None else by_address.get(pfn.value, "?")])
print(json.dumps(out))
"""


def library() -> Path:
    try:
        return shim_library_path()
    except RgpuError as exc:
        pytest.fail(str(exc))


@cache
def declared() -> tuple[str, ...]:
    return tuple(cuda.declared_functions((GENERATED / "cuda_api.h").read_text()))


@cache
def table_names() -> tuple[str, ...]:
    """The names the committed proc_table.c knows (its entry rows)."""
    text = (GENERATED / "proc_table.c").read_text()
    return tuple(re.findall(r'^    \{"(cu\w+)", \d+, \d+, \d+, \d+\},$', text, re.MULTILINE))


def lookup_all(queries: list[Query]) -> list[Answer]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(library())],
        input=json.dumps([queries, list(declared())]),
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr}"
    return [(rc, st, name) for rc, st, name in json.loads(proc.stdout)]


def lookup(symbol: str, version: int, flags: int = 0) -> Answer:
    return lookup_all([(symbol, version, flags)])[0]


@pytest.mark.parametrize(
    ("symbol", "version", "flags", "expected"),
    [
        ("cuMemAlloc", 3020, 0, "cuMemAlloc_v2"),
        ("cuMemAlloc", 2000, 0, "cuMemAlloc"),
        ("cuMemAlloc", 13000, 0, "cuMemAlloc_v2"),
        ("cuCtxCreate", 12050, 0, "cuCtxCreate_v4"),
        ("cuCtxCreate", 12049, 0, "cuCtxCreate_v3"),
        ("cuCtxCreate", 11040, 0, "cuCtxCreate_v3"),
        ("cuCtxCreate", 3020, 0, "cuCtxCreate_v2"),
        ("cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2"),
        ("cuGetProcAddress", 11030, 0, "cuGetProcAddress"),
        ("cuStreamUpdateCaptureDependencies", 12030, 0, "cuStreamUpdateCaptureDependencies_v2"),
        ("cuCtxSynchronize", 13000, 0, "cuCtxSynchronize_v2"),
        ("cuCtxSynchronize", 2000, 0, "cuCtxSynchronize"),
        ("cuMemcpyHtoD", 7000, PER_THREAD, "cuMemcpyHtoD_v2_ptds"),
        ("cuMemcpyHtoD", 7000, 0, "cuMemcpyHtoD_v2"),
        ("cuMemcpyHtoD", 3020, PER_THREAD, "cuMemcpyHtoD_v2"),  # no per-thread variant yet
        ("cuMemcpyHtoD", 7000, 1, "cuMemcpyHtoD_v2"),  # LEGACY_STREAM
        ("cuLaunchKernel", 7000, PER_THREAD, "cuLaunchKernel_ptsz"),
        ("cuLaunchKernel", 4000, 0, "cuLaunchKernel"),
        ("cuInit", 2000, PER_THREAD, "cuInit"),  # no per-thread variant at all
        ("cuStreamGetCtx", 12050, PER_THREAD, "cuStreamGetCtx_v2_ptsz"),
        ("cuProfilerStart", 4000, 0, "cuProfilerStart"),  # cudaProfiler.h
    ],
)
def test_resolves_newest_variant_not_newer_than_requested(
    symbol: str, version: int, flags: int, expected: str
) -> None:
    assert lookup(symbol, version, flags) == (0, SUCCESS, expected)


def test_unknown_symbol_is_not_found() -> None:
    assert lookup("cuNoSuchFunction", 13000) == (CUDA_NOT_FOUND, SYMBOL_NOT_FOUND, None)
    # Only base names are looked up, as by the driver.
    assert lookup("cuMemAlloc_v2", 13000)[:2] == (CUDA_NOT_FOUND, SYMBOL_NOT_FOUND)


def test_version_too_low_is_not_sufficient() -> None:
    assert lookup("cuMemAlloc", 1000) == (CUDA_NOT_FOUND, VERSION_NOT_SUFFICIENT, None)
    assert lookup("cuGetProcAddress", 11020) == (CUDA_NOT_FOUND, VERSION_NOT_SUFFICIENT, None)


def test_empty_name_is_not_found() -> None:
    # cudart probes with ("", 0, 0) before anything else.
    assert lookup("", 0)[:2] == (CUDA_NOT_FOUND, SYMBOL_NOT_FOUND)
    assert lookup("", 13000, PER_THREAD)[:2] == (CUDA_NOT_FOUND, SYMBOL_NOT_FOUND)


def test_unknown_flags_are_invalid() -> None:
    assert lookup("cuInit", 13000, 4)[0] == CUDA_INVALID_VALUE


def test_null_status_and_pfn_are_handled() -> None:
    script = textwrap.dedent(
        """
        import ctypes, json, sys
        lib = ctypes.CDLL(sys.argv[1])
        look = lib.rgpu_proc_lookup
        look.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64,
                         ctypes.c_void_p, ctypes.c_void_p]
        pfn = ctypes.c_void_p()
        print(json.dumps([look(b"cuInit", 2000, 0, ctypes.addressof(pfn), None),
                          pfn.value == ctypes.cast(lib.cuInit, ctypes.c_void_p).value,
                          look(b"cuInit", 2000, 0, None, None),
                          look(None, 2000, 0, ctypes.addressof(pfn), None)]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(library())], capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout) == [0, True, CUDA_INVALID_VALUE, CUDA_INVALID_VALUE]


def test_every_table_name_resolves_to_an_exported_function() -> None:
    names = table_names()
    assert len(names) > 400 and list(names) == sorted(names, key=str.encode)
    queries: list[Query] = [(n, 99999, f) for n in names for f in (0, PER_THREAD)]
    answers = lookup_all(queries)
    bad = [(q, a) for q, a in zip(queries, answers, strict=True) if a[:2] != (0, SUCCESS)]
    assert not bad, bad[:10]
    assert all(a[2] in declared() for a in answers)


def test_names_near_real_ones_are_not_found() -> None:
    """Symbols come from applications: near-misses, prefixes and junk must all miss cleanly."""
    rng = random.Random(1234)
    known = set(table_names())
    queries: list[Query] = []
    for name in rng.sample(sorted(known), 200):
        cut = rng.randrange(1, len(name))
        pos = rng.randrange(len(name))
        for probe in (
            name[:cut],
            name + "_",
            name + "_v9",
            name.upper(),
            name[:pos] + chr(rng.randrange(33, 127)) + name[pos + 1 :],
            "".join(chr(rng.randrange(1, 256)) for _ in range(rng.randrange(1, 300))),
        ):
            if probe not in known:
                queries.append((probe, rng.choice([0, 2000, 13000, -1, 2**31 - 1]), 0))
    answers = lookup_all(queries)
    assert all(a == (CUDA_NOT_FOUND, SYMBOL_NOT_FOUND, None) for a in answers)


# --- the whole table against a reference model of the semantics --------------------------------


def _reference(entry: cuda.ProcEntry, version: int, flags: int) -> Answer:
    def newest(variants: tuple[cuda.Variant, ...]) -> str | None:
        ok = [v.function for v in variants if v.since <= version]
        return ok[-1] if ok else None

    found = newest(entry.per_thread) if flags & PER_THREAD else None
    found = found or newest(entry.default)
    if found is None:
        return (CUDA_NOT_FOUND, VERSION_NOT_SUFFICIENT, None)
    return (0, SUCCESS, found)


CUDA_INCLUDE = Path(os.environ.get("RGPU_CUDA_INCLUDE", cuda.DEFAULT_INCLUDE))


@pytest.mark.skipif(
    not cuda.same_sources(CUDA_INCLUDE, (GENERATED / "proc_table.c").read_text()),
    reason=f"{CUDA_INCLUDE} lacks the CUDA headers proc_table.c was made from",
)
def test_every_name_at_every_breakpoint_matches_the_model() -> None:
    api = cuda.load(CUDA_INCLUDE)
    queries: list[Query] = []
    expected: list[Answer] = []
    for entry in api.proc_entries:
        versions = {0, 99999}
        for v in (*entry.default, *entry.per_thread):
            versions |= {v.since - 1, v.since, v.since + 1}
        for version in sorted(versions):
            for flags in (0, 1, PER_THREAD):
                queries.append((entry.name, version, flags))
                expected.append(_reference(entry, version, flags))
    answers = lookup_all(queries)
    mismatches = [(q, a, e) for q, a, e in zip(queries, answers, expected, strict=True) if a != e]
    assert not mismatches, mismatches[:10]
    assert len(queries) > 5000


# --- what a real cudart asks for ----------------------------------------------------------------

# A libcuda.so.1 that records each cuGetProcAddress lookup of cudart and answers it with the
# shim's rgpu_proc_lookup (the shim itself is loaded by path from $REAL_SHIM). It hands out its own
# cuGetProcAddress(_v2) so that cudart's later lookups come back through it.
_RECORDER_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef int CUresult;
CUresult cuGetProcAddress(const char *s, void **pfn, int v, uint64_t f);
static void *shim;
typedef CUresult (*lookup_fn)(const char *, int, uint64_t, void **, int *);
static lookup_fn lookup;
static CUresult (*export_table)(const void **, const void *);
static void load(void)
{
    if (shim)
        return;
    shim = dlopen(getenv("REAL_SHIM"), RTLD_NOW | RTLD_LOCAL);
    if (!shim)
        exit(97);
    lookup = (lookup_fn)dlsym(shim, "rgpu_proc_lookup");
    export_table = (CUresult (*)(const void **, const void *))dlsym(shim, "cuGetExportTable");
}
CUresult cuGetProcAddress_v2(const char *s, void **pfn, int v, uint64_t f, int *st)
{
    load();
    int status = -1;
    CUresult rc = lookup(s, v, f, pfn, &status);
    Dl_info info = {0};
    const char *got = (*pfn && dladdr(*pfn, &info) && info.dli_sname) ? info.dli_sname : "-";
    fprintf(stderr, "GPA\t%s\t%d\t%llu\t%d\t%d\t%s\n", s, v, (unsigned long long)f, rc,
            status, got);
    if (rc == 0 && !strcmp(s, "cuGetProcAddress"))
        *pfn = v >= 12000 ? (void *)cuGetProcAddress_v2 : (void *)cuGetProcAddress;
    if (st)
        *st = status;
    return rc;
}
CUresult cuGetProcAddress(const char *s, void **pfn, int v, uint64_t f)
{
    return cuGetProcAddress_v2(s, pfn, v, f, NULL);
}
CUresult cuGetExportTable(const void **table, const void *id)
{
    load();
    return export_table(table, id);
}
"""

_PROGRAM_CU = r"""
#include <cstdio>
int main()
{
    int n = -1;
    cudaError_t e = cudaGetDeviceCount(&n);
    std::printf("cudaGetDeviceCount %d %d\n", (int)e, n);
    return 0;
}
"""

# Graphics interop lives in cudaGL.h / cudaEGL.h / cudaVDPAU.h, outside the generated surface.
_INTEROP = re.compile(
    r"cu(GL|EGL|VDPAU|Graphics(GL|EGL|VDPAU))\w*|cuGraphicsResourceGetMappedEglFrame"
)


def test_static_cudart_finds_every_driver_function_it_asks_for(tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    try:
        subprocess.run([nvcc, "--version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("nvcc not installed")
    recorder_dir = tmp_path / "recorder"
    recorder_dir.mkdir()
    (tmp_path / "recorder.c").write_text(_RECORDER_C)
    (tmp_path / "program.cu").write_text(_PROGRAM_CU)
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o",
         str(recorder_dir / "libcuda.so.1"), str(tmp_path / "recorder.c"), "-ldl"],
        check=True,
    )  # fmt: skip
    program = tmp_path / "program"
    subprocess.run([nvcc, "-o", str(program), str(tmp_path / "program.cu")], check=True)
    run = subprocess.run(
        [str(program)],
        env={
            **os.environ,
            "LD_LIBRARY_PATH": str(recorder_dir),
            "REAL_SHIM": str(library()),
            "RGPU_SOCKET": str(tmp_path / "no-daemon"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lookups = [line.split("\t")[1:] for line in run.stderr.splitlines() if line.startswith("GPA")]
    assert len(lookups) > 400, run.stderr[-2000:]
    failed = [x for x in lookups if x[3] != "0" and x[0] and not _INTEROP.fullmatch(x[0])]
    assert not failed, failed[:10]
    for name, _version, _flags, rc, status, got in lookups:
        if rc == "0":
            assert status == "0" and got.startswith(name), (name, got)
    per_thread = [got for _n, _v, flags, rc, _s, got in lookups if flags == "2" and rc == "0"]
    assert sum(got.endswith(("_ptds", "_ptsz")) for got in per_thread) > 50
    assert ["", "0", "0", "500", "1", "-"] in lookups  # cudart's probe
