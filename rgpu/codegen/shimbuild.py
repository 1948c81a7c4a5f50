"""Compile the CUDA shim, ``librgpu_cuda.so`` (SONAME ``libcuda.so.1``), with the C compiler.

Used by ``setup.py`` during ``pip install`` (loaded by file path, before rgpu's dependencies
exist, so this module imports only the standard library) and by ``python -m rgpu.codegen build``.
The result is a plain shared library: no Python headers, no Python symbols, no CUDA toolkit,
linked against libc, libdl and libpthread only, because cudart ``dlopen``s it with immediate
binding into processes that may run any Python version or none.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
from collections.abc import Callable
from pathlib import Path

LIBRARY = "librgpu_cuda.so"
SONAME = "libcuda.so.1"
LINK_DIR = "cuda"  # rgpu/lib/cuda/ holds libcuda.so.1 and libcuda.so, for LD_LIBRARY_PATH
LINK_NAMES = ("libcuda.so.1", "libcuda.so")
SOURCE_DIRS = ("interpose/src", "interpose/generated", "common")
INCLUDE_DIRS = ("interpose/include", "interpose/generated", "common")
CFLAGS = ("-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-fvisibility=default", "-pthread")
LIBS = ("-ldl", "-lpthread")
SANITIZERS = frozenset({"address", "undefined", "leak", "thread"})
SANITIZE_ENV = "RGPU_SHIM_SANITIZE"  # e.g. "address" or "address,undefined"
EXTRA_CFLAGS_ENV = "RGPU_SHIM_CFLAGS"


class ShimBuildError(Exception):
    """The shim could not be compiled; the message names the cause and the fix."""


def compiler() -> list[str]:
    """``$CC``, else the compiler Python was built with if it exists here, else ``cc``."""
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc"):
        if not candidate:
            continue
        argv = shlex.split(candidate)
        if argv and shutil.which(argv[0]):
            return argv
    raise ShimBuildError(
        "no C compiler found to build the CUDA shim; install gcc (apt install gcc) or set CC"
    )


def sources(root: Path) -> list[Path]:
    """Every ``.c`` of the hand-written core and of the generated code, in a stable order."""
    found: list[Path] = []
    for rel in SOURCE_DIRS:
        found += sorted((root / rel).glob("*.c"))
    if not found:
        raise ShimBuildError(f"no C sources under {root}/interpose; is this an rgpu checkout?")
    return found


def sanitizer_flags(sanitize: str | None) -> list[str]:
    if not sanitize:
        return []
    kinds = [k.strip() for k in sanitize.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in SANITIZERS]
    if unknown or not kinds:
        raise ShimBuildError(
            f"unknown sanitizer {','.join(unknown) or sanitize!r}; "
            f"use one or more of {', '.join(sorted(SANITIZERS))}"
        )
    return ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={','.join(kinds)}"]


def command(root: Path, output: Path, sanitize: str | None = None) -> list[str]:
    """The compiler command line that builds ``output`` from ``root``'s sources."""
    argv = [*compiler(), *CFLAGS, *shlex.split(os.environ.get(EXTRA_CFLAGS_ENV, ""))]
    argv += sanitizer_flags(sanitize)
    argv += [f"-I{root / d}" for d in INCLUDE_DIRS]
    argv += [str(p) for p in sources(root)]
    argv += ["-shared", f"-Wl,-soname,{SONAME}"]
    if not sanitize:
        # Everything but libc/libdl/libpthread must be resolved inside the library.
        argv.append("-Wl,--no-undefined")
    argv += ["-o", str(output), *LIBS]
    return argv


def headers_read(root: Path) -> list[Path]:
    """Every header the build reads (the compiler's ``-M`` listing): none may be a toolkit's."""
    argv = [*compiler(), *CFLAGS, *shlex.split(os.environ.get(EXTRA_CFLAGS_ENV, ""))]
    argv += [f"-I{root / d}" for d in INCLUDE_DIRS]
    argv += ["-M", *(str(p) for p in sources(root))]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ShimBuildError(f"listing the CUDA shim's headers failed:\n{proc.stderr.strip()}")
    words = proc.stdout.replace("\\\n", " ").split()
    return sorted({Path(w).resolve() for w in words if w.endswith(".h")})


def build(
    root: Path,
    out_dir: Path,
    sanitize: str | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Compile the shim into ``out_dir/librgpu_cuda.so`` and its ``cuda/`` links; returns the path.

    The library is replaced atomically, so a process that has the old one mapped keeps working.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / LIBRARY
    partial = out_dir / f".{LIBRARY}.partial"
    argv = command(root, partial, sanitize)
    log(" ".join(shlex.quote(a) for a in argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ShimBuildError(f"cannot run the C compiler {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ShimBuildError(
            f"compiling the CUDA shim failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )
    if proc.stderr.strip():
        log(proc.stderr.strip())
    os.replace(partial, target)
    link_dir = out_dir / LINK_DIR
    link_dir.mkdir(exist_ok=True)
    for name in LINK_NAMES:
        link = link_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path("..") / LIBRARY)
    return target


def outputs(out_dir: Path) -> list[Path]:
    """The files ``build`` writes into ``out_dir``."""
    return [out_dir / LIBRARY, *(out_dir / LINK_DIR / n for n in LINK_NAMES)]


def sanitize_from_env() -> str | None:
    return os.environ.get(SANITIZE_ENV) or None


# --- the Vulkan ICD (librgpu_vk_icd.so + rgpu_icd.json) -------------------------------------
#
# A second, independent target: the CUDA shim above builds exactly as before. The ICD compiles
# against the system's Vulkan headers (Debian/Ubuntu: libvulkan-dev), the same vk.xml release
# the schema was generated from or newer; without them the ICD is skipped, not an error, so a
# host without Vulkan still installs rgpu. Only the three vk_icd* loader entry points are
# exported (-fvisibility=hidden): the loader dlopens drivers RTLD_LOCAL and resolves the rest
# through vk_icdGetInstanceProcAddr.

ICD_LIBRARY = "librgpu_vk_icd.so"
ICD_MANIFEST = "rgpu_icd.json"
ICD_MANIFEST_TEMPLATE = "icd/rgpu_icd.json.in"
ICD_SOURCE_DIRS = ("icd/src", "icd/generated", "common")
ICD_INCLUDE_DIRS = ("icd/include", "common")
ICD_CFLAGS = ("-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-fvisibility=hidden", "-pthread")
ICD_MIN_HEADER_VERSION = 239  # vk.xml 1.3.239, what rgpu/api/vk_generated.py was made from
ICD_SKIP_ENV = "RGPU_SKIP_ICD"


class IcdUnavailable(ShimBuildError):
    """The ICD cannot be built on this host (no or too old Vulkan headers): skip it."""


def icd_header_version() -> int:
    """``VK_HEADER_VERSION`` of the ``<vulkan/vulkan_core.h>`` the compiler finds."""
    argv = [*compiler(), "-E", "-dM", "-x", "c", "-"]
    try:
        proc = subprocess.run(argv, input="#include <vulkan/vulkan_core.h>\n",
                              capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ShimBuildError(f"cannot run the C compiler {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise IcdUnavailable(
            "the Vulkan headers are not installed (no <vulkan/vulkan_core.h>); install them "
            "with: apt install libvulkan-dev"
        )
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["#define", "VK_HEADER_VERSION"] and len(parts) == 3:
            return int(parts[2])
    raise IcdUnavailable("<vulkan/vulkan_core.h> defines no VK_HEADER_VERSION")


def icd_sources(root: Path) -> list[Path]:
    found: list[Path] = []
    for rel in ICD_SOURCE_DIRS:
        found += sorted((root / rel).glob("*.c"))
    if not found:
        raise ShimBuildError(f"no C sources under {root}/icd; is this an rgpu checkout?")
    return found


def icd_command(root: Path, output: Path, sanitize: str | None = None) -> list[str]:
    """The compiler command line that builds the ICD ``output`` from ``root``'s sources."""
    argv = [*compiler(), *ICD_CFLAGS, *shlex.split(os.environ.get(EXTRA_CFLAGS_ENV, ""))]
    argv += sanitizer_flags(sanitize)
    argv += [f"-I{root / d}" for d in ICD_INCLUDE_DIRS]
    argv += [str(p) for p in icd_sources(root)]
    argv += ["-shared", f"-Wl,-soname,{ICD_LIBRARY}"]
    if not sanitize:
        argv.append("-Wl,--no-undefined")
    argv += ["-o", str(output), *LIBS]
    return argv


def icd_manifest(root: Path, library_path: str, header_version: int) -> str:
    """The loader's JSON manifest from the template in ``icd/``."""
    template = (root / ICD_MANIFEST_TEMPLATE).read_text()
    return (template.replace("@LIBRARY_PATH@", library_path)
            .replace("@API_VERSION@", f"1.3.{header_version}"))


def build_icd(
    root: Path,
    out_dir: Path,
    sanitize: str | None = None,
    log: Callable[[str], None] = print,
    absolute: bool = True,
) -> Path:
    """Compile ``out_dir/librgpu_vk_icd.so`` and write ``out_dir/rgpu_icd.json``; returns the
    manifest's path. ``absolute``: the manifest names the library by its absolute path (an
    editable install); otherwise by ``./librgpu_vk_icd.so``, which the loader resolves
    relative to the manifest (a wheel, whose files move when installed).

    Raises :class:`IcdUnavailable` where the host lacks the Vulkan headers.
    """
    version = icd_header_version()
    if version < ICD_MIN_HEADER_VERSION:
        raise IcdUnavailable(
            f"the Vulkan headers are too old (VK_HEADER_VERSION {version}, the ICD needs "
            f"{ICD_MIN_HEADER_VERSION} or newer)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ICD_LIBRARY
    partial = out_dir / f".{ICD_LIBRARY}.partial"
    argv = icd_command(root, partial, sanitize)
    log(" ".join(shlex.quote(a) for a in argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ShimBuildError(f"cannot run the C compiler {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ShimBuildError(
            f"compiling the Vulkan ICD failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )
    if proc.stderr.strip():
        log(proc.stderr.strip())
    os.replace(partial, target)
    library_path = str(target.resolve()) if absolute else f"./{ICD_LIBRARY}"
    manifest = out_dir / ICD_MANIFEST
    partial_manifest = out_dir / f".{ICD_MANIFEST}.partial"
    partial_manifest.write_text(icd_manifest(root, library_path, version))
    os.replace(partial_manifest, manifest)
    return manifest


def icd_outputs(out_dir: Path) -> list[Path]:
    """The files ``build_icd`` writes into ``out_dir``."""
    return [out_dir / ICD_LIBRARY, out_dir / ICD_MANIFEST]
