"""Where the built Vulkan ICD is: ``rgpu/lib/`` next to the installed package.

``pip install .`` (or ``pip install -e .``) compiles ``librgpu_vk_icd.so`` there and writes the
loader manifest ``rgpu_icd.json`` beside it; ``rgpu run`` points ``VK_ICD_FILENAMES`` and
``VK_DRIVER_FILES`` at :func:`icd_manifest_path`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rgpu.codegen.shimbuild import ICD_LIBRARY, ICD_MANIFEST
from rgpu.errors import RgpuError

LIB_DIR = Path(__file__).resolve().parent.parent / "lib"

__all__ = ["icd_environment", "icd_library_path", "icd_manifest_path"]


def icd_manifest_path(lib_dir: Path = LIB_DIR) -> Path:
    """``rgpu_icd.json``, checked to name a library that exists (absolute, or relative to the
    manifest as a wheel writes it)."""
    manifest = lib_dir / ICD_MANIFEST
    if not manifest.is_file():
        raise RgpuError(
            f"the Vulkan ICD is not built ({manifest} is missing); install the Vulkan headers "
            "(apt install libvulkan-dev) and reinstall rgpu from its source tree with: "
            "pip install ."
        )
    try:
        library = Path(json.loads(manifest.read_text())["ICD"]["library_path"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RgpuError(f"the Vulkan ICD manifest {manifest} is unreadable ({exc}); "
                        "reinstall rgpu with: pip install .") from None
    if not library.is_absolute():
        library = manifest.parent / library
    if not library.is_file():
        raise RgpuError(f"the Vulkan ICD manifest {manifest} names {library}, which is missing; "
                        "reinstall rgpu with: pip install .")
    return manifest


def icd_library_path(lib_dir: Path = LIB_DIR) -> Path:
    """``librgpu_vk_icd.so`` itself."""
    path = lib_dir / ICD_LIBRARY
    if not path.is_file():
        icd_manifest_path(lib_dir)  # raises the explanatory error
        raise RgpuError(f"the Vulkan ICD {path} is missing; reinstall rgpu with: pip install .")
    return path


def icd_environment(lib_dir: Path = LIB_DIR) -> dict[str, str]:
    """The variables that make the Khronos loader use rgpu's ICD (and only it)."""
    manifest = str(icd_manifest_path(lib_dir))
    return {"VK_ICD_FILENAMES": manifest, "VK_DRIVER_FILES": manifest}
