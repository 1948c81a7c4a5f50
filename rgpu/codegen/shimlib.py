"""Where the built CUDA shim is: ``rgpu/lib/`` next to the installed package.

``pip install .`` (or ``pip install -e .``) compiles it there; ``rgpu run`` points
``LD_PRELOAD``/``LD_LIBRARY_PATH`` at these paths.
"""

from __future__ import annotations

from pathlib import Path

from rgpu.codegen.shimbuild import LIBRARY, LINK_DIR, LINK_NAMES
from rgpu.errors import RgpuError

LIB_DIR = Path(__file__).resolve().parent.parent / "lib"


def variant_dir(sanitize: str | None = None) -> Path:
    """Where ``python -m rgpu.codegen build`` puts a build (``sanitize``: its sanitizer)."""
    return LIB_DIR if not sanitize else LIB_DIR / f"sanitize-{sanitize.replace(',', '-')}"


def shim_library_path(sanitize: str | None = None) -> Path:
    """``librgpu_cuda.so`` (SONAME ``libcuda.so.1``), for ``LD_PRELOAD``.

    ``sanitize`` names a sanitizer build made by ``python -m rgpu.codegen build --sanitize``.
    """
    path = variant_dir(sanitize) / LIBRARY
    if not path.is_file():
        if sanitize:
            raise RgpuError(
                f"the {sanitize} sanitizer build of the CUDA shim is missing ({path}); "
                f"build it with: python -m rgpu.codegen build --sanitize {sanitize}"
            )
        raise RgpuError(
            f"the CUDA shim is not built ({path} is missing); "
            "reinstall rgpu from its source tree with: pip install ."
        )
    return path


def shim_library_dir(sanitize: str | None = None) -> Path:
    """The directory holding ``libcuda.so.1`` and ``libcuda.so``, for ``LD_LIBRARY_PATH``."""
    lib = shim_library_path(sanitize)
    link_dir = lib.parent / LINK_DIR
    if not all((link_dir / n).exists() for n in LINK_NAMES):
        raise RgpuError(
            f"the CUDA shim's libcuda.so.1 links are missing in {link_dir}; "
            "reinstall rgpu from its source tree with: pip install ."
        )
    return link_dir
