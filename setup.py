"""Build hook: compile the CUDA shim (``rgpu/lib/librgpu_cuda.so``) and the Vulkan ICD
(``rgpu/lib/librgpu_vk_icd.so`` + ``rgpu_icd.json``) during ``pip install``.

Project metadata lives in pyproject.toml. The shim is a plain C shared library, not a Python
extension, so it is built by its own ``build`` sub-command with the C compiler; it needs neither
a CUDA toolkit nor Python headers. ``pip install -e .`` builds it into the source tree's
``rgpu/lib/``; ``pip install .`` into the wheel. ``RGPU_SHIM_SANITIZE=address`` builds a sanitizer
variant; ``RGPU_SKIP_SHIM=1`` installs without the shim (e.g. a server with no C compiler),
``RGPU_SKIP_ICD=1`` without the ICD (which is skipped anyway where no Vulkan headers exist).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import Command, Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build import build
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
SKIP_ENV = "RGPU_SKIP_SHIM"


def _load_shimbuild() -> ModuleType:
    # By file path: importing the rgpu package here would need its dependencies.
    spec = importlib.util.spec_from_file_location(
        "_rgpu_shimbuild", ROOT / "rgpu" / "codegen" / "shimbuild.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


shimbuild = _load_shimbuild()


class build_shim(Command):
    description = "compile the CUDA shim librgpu_cuda.so (SONAME libcuda.so.1)"
    user_options: list[tuple[str, str | None, str]] = []

    def initialize_options(self) -> None:
        self.build_lib: str | None = None
        self.editable_mode = False

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def _out_dir(self) -> Path:
        if self.editable_mode:
            return ROOT / "rgpu" / "lib"
        assert self.build_lib is not None
        return Path(self.build_lib) / "rgpu" / "lib"

    def run(self) -> None:
        if os.environ.get(SKIP_ENV):
            self.announce(f"{SKIP_ENV} set: not building the CUDA shim", level=3)
            return
        try:
            shimbuild.build(
                ROOT,
                self._out_dir(),
                sanitize=shimbuild.sanitize_from_env(),
                log=lambda msg: self.announce(msg, level=3),
            )
        except shimbuild.ShimBuildError as exc:
            raise SystemExit(
                f"rgpu: error: {exc}\n(set {SKIP_ENV}=1 to install rgpu without the CUDA shim)"
            ) from None

    def get_outputs(self) -> list[str]:
        if os.environ.get(SKIP_ENV):
            return []
        return [str(p) for p in shimbuild.outputs(self._out_dir())]

    def get_output_mapping(self) -> dict[str, str]:
        return {}


class build_icd(build_shim):
    description = "compile the Vulkan ICD librgpu_vk_icd.so and write its manifest rgpu_icd.json"

    def run(self) -> None:
        if os.environ.get(shimbuild.ICD_SKIP_ENV):
            self.announce(f"{shimbuild.ICD_SKIP_ENV} set: not building the Vulkan ICD", level=3)
            return
        try:
            shimbuild.build_icd(
                ROOT,
                self._out_dir(),
                sanitize=shimbuild.sanitize_from_env(),
                log=lambda msg: self.announce(msg, level=3),
                absolute=self.editable_mode,
            )
        except shimbuild.IcdUnavailable as exc:
            self.announce(f"rgpu: not building the Vulkan ICD: {exc}", level=4)
        except shimbuild.ShimBuildError as exc:
            raise SystemExit(
                f"rgpu: error: {exc}\n(set {shimbuild.ICD_SKIP_ENV}=1 to install rgpu without "
                "the Vulkan ICD)"
            ) from None

    def get_outputs(self) -> list[str]:
        out = self._out_dir()
        return [str(p) for p in shimbuild.icd_outputs(out) if p.exists()]


class build_with_shim(build):
    sub_commands = [*build.sub_commands, ("build_shim", None), ("build_icd", None)]


class sdist_with_shim(sdist):
    """The shim's C sources travel in the sdist, so a wheel built from it can compile them."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        shim_sources = [
            path.relative_to(ROOT).as_posix()
            for tree in ("interpose", "icd", "common")
            for path in sorted((ROOT / tree).rglob("*"))
            if path.is_file()
            and (path.suffix in (".c", ".h", ".in") or path.name == "Makefile")
        ]
        super().make_release_tree(base_dir, [*files, *(f for f in shim_sources if f not in files)])


class DistributionWithShim(Distribution):
    """Not pure Python: the wheel carries a native library (installed to platlib)."""

    def has_ext_modules(self) -> bool:
        return True


class bdist_wheel_platform(bdist_wheel):
    """The library is no Python extension, so any Python 3 can load it: py3-none-<platform>."""

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    distclass=DistributionWithShim,
    cmdclass={
        "build": build_with_shim,
        "build_shim": build_shim,
        "build_icd": build_icd,
        "bdist_wheel": bdist_wheel_platform,
        "sdist": sdist_with_shim,
    },
)
