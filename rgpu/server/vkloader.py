"""Pin the server's Vulkan loader to this host's real drivers.

A machine that runs an rgpu server may also have rgpu's own Vulkan driver installed (a
workstation that shares its GPU and uses the pool), and the server may be started from a shell
where ``rgpu run`` set ``VK_ICD_FILENAMES`` to that driver. If the server's loader picked it up,
the server would enumerate the pool's remote GPUs as its own and forward calls to itself. So
before the server creates its first ``VkInstance`` it replaces the loader's driver search with an
explicit list of the host's manifests, from which every rgpu manifest is removed.

Measured with the Khronos loader 1.3.239 (Debian 12): the loader reads ``VK_DRIVER_FILES`` /
``VK_ICD_FILENAMES`` with ``getenv`` at every ``vkCreateInstance``, not when ``libvulkan.so.1``
is loaded, so pinning after ``import vulkan`` still takes effect for the next instance. Pinning
before the import is nevertheless the order to keep: it does not rely on that loader detail, and
child processes inherit the pinned environment.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from types import ModuleType

__all__ = [
    "host_vulkan_icds",
    "icd_search_dirs",
    "import_pinned_vulkan",
    "is_rgpu_manifest",
    "pin_host_vulkan_loader",
]

logger = logging.getLogger("rgpu.server.vkloader")

#: Marker in a manifest's file name or driver library that identifies rgpu's own Vulkan driver
#: (``librgpu_vk_icd.so`` / ``rgpu_icd.json``).
RGPU_MARKER = "rgpu"

#: Variables that would add drivers or layers on top of a pinned driver list.
_UNPINNING_VARIABLES = ("VK_ADD_DRIVER_FILES", "VK_INSTANCE_LAYERS")

_POINTER_BITS = str(struct.calcsize("P") * 8)


def icd_search_dirs(environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The directories the Khronos loader searches for driver manifests on Linux, in its order.

    Mirrors the loader's default search (``docs/LoaderDriverInterface.md``) rather than a
    shorter fixed list, so that pinning finds every driver the loader would have found on its
    own: XDG config home, XDG config dirs, ``/etc``, XDG data home, XDG data dirs, each with
    ``vulkan/icd.d`` appended. Directories that do not exist are kept; callers skip them.
    """
    home = environ.get("HOME")
    bases: list[str] = []
    config_home = environ.get("XDG_CONFIG_HOME") or (f"{home}/.config" if home else "")
    bases.append(config_home)
    bases.extend((environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":"))
    bases.append("/etc")
    data_home = environ.get("XDG_DATA_HOME") or (f"{home}/.local/share" if home else "")
    bases.append(data_home)
    bases.extend((environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share").split(":"))
    dirs: list[Path] = []
    for base in bases:
        if not base:
            continue
        path = Path(base) / "vulkan" / "icd.d"
        if path not in dirs:
            dirs.append(path)
    return dirs


def is_rgpu_manifest(manifest: Path, library_path: str) -> bool:
    """Whether a manifest names rgpu's own driver, by its file name or its library.

    The library is also checked after resolving symlinks, so a manifest that points at an
    innocuously named link to ``librgpu_vk_icd.so`` is still recognised.
    """
    names = [manifest.name, library_path]
    if "/" in library_path:
        target = Path(library_path)
        if not target.is_absolute():
            target = manifest.parent / target
        names.append(os.path.realpath(target))
    return any(RGPU_MARKER in name.lower() for name in names)


def _manifest_library(manifest: Path) -> tuple[str, str | None] | None:
    """``(library_path, library_arch)`` of a driver manifest, or None if it is not one."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.debug("skipping unreadable Vulkan driver manifest %s: %s", manifest, exc)
        return None
    icd = data.get("ICD") if isinstance(data, dict) else None
    library = icd.get("library_path") if isinstance(icd, dict) else None
    if not isinstance(library, str) or not library:
        logger.debug("skipping %s: no ICD.library_path", manifest)
        return None
    arch = icd.get("library_arch")
    return library, arch if isinstance(arch, str) else None


def host_vulkan_icds(
    exclude_rgpu: bool = True,
    search_dirs: Sequence[Path] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> list[Path]:
    """Driver manifests of this host, found the way the loader's default search finds them.

    ``VK_DRIVER_FILES`` and friends are deliberately ignored: they describe what the process was
    told to load, which is exactly what pinning must not trust. Manifests that cannot be parsed
    are skipped (the loader could not use them either), and so are manifests for another word
    size (``library_arch``), which the loader would only fail to load. ``search_dirs`` replaces
    the default directories; ``environ`` supplies the XDG variables for the default ones.
    """
    dirs = icd_search_dirs(environ) if search_dirs is None else list(search_dirs)
    found: list[Path] = []
    seen: set[str] = set()
    for directory in dirs:
        try:
            candidates = sorted(p for p in Path(directory).iterdir() if p.suffix == ".json")
        except OSError:
            continue
        for manifest in candidates:
            if not manifest.is_file():
                continue
            real = os.path.realpath(manifest)
            if real in seen:
                continue
            parsed = _manifest_library(manifest)
            if parsed is None:
                continue
            library, arch = parsed
            if arch is not None and arch != _POINTER_BITS:
                continue
            if exclude_rgpu and is_rgpu_manifest(manifest, library):
                logger.debug("not pinning rgpu's own Vulkan driver %s", manifest)
                continue
            seen.add(real)
            found.append(manifest)
    return found


def pin_host_vulkan_loader(
    environ: MutableMapping[str, str] = os.environ,
    *,
    search_dirs: Sequence[Path] | None = None,
) -> list[Path]:
    """Make the loader of this process (and its children) see only the host's drivers.

    Sets both ``VK_DRIVER_FILES`` (newer loaders) and ``VK_ICD_FILENAMES`` (older loaders) to
    the colon-joined host manifests, because either may be the one the installed loader honours
    and an inherited value of the other must not leak through. Drops ``VK_ADD_DRIVER_FILES``,
    which would add drivers back, and ``VK_INSTANCE_LAYERS``, which could interpose a layer
    between the server and the driver. When the host has no driver the list is ``os.devnull``,
    a file that is no manifest, so the loader finds no driver (removing the variables would bring
    back the default search, and with it any rgpu manifest; an empty value is left to each
    loader version's interpretation).

    Call it before the first ``VkInstance`` is created; see the module docstring for why before
    ``import vulkan`` is the safe place. Returns the pinned manifests.
    """
    icds = host_vulkan_icds(search_dirs=search_dirs, environ=environ)
    value = ":".join(str(p) for p in icds) or os.devnull
    environ["VK_DRIVER_FILES"] = value
    environ["VK_ICD_FILENAMES"] = value
    for name in _UNPINNING_VARIABLES:
        environ.pop(name, None)
    logger.debug("pinned the Vulkan loader to %s", value)
    return icds


def import_pinned_vulkan(environ: MutableMapping[str, str] = os.environ) -> ModuleType:
    """Pin the loader, then import the ``vulkan`` package's raw binding module.

    Returns ``vulkan._vulkan``, whose ``ffi`` and ``lib`` the server calls directly (its
    Pythonic wrappers raise on positive ``VkResult`` codes such as ``VK_INCOMPLETE``). Raises
    ``OSError`` if ``libvulkan.so.1`` cannot be loaded and ``ImportError`` if the package is
    missing.
    """
    pin_host_vulkan_loader(environ)
    import vulkan._vulkan as vk_raw

    return vk_raw
