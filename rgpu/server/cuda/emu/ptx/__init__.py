"""The PTX machine of the emulated CUDA device.

nvcc embeds PTX in every default build; this package runs it on the CPU so that CI machines and
laptops without a GPU still have a CUDA device (see ``research/ptx-emulation.md``).

* :func:`parse_ptx` turns PTX text into a :class:`PtxModule` whose :class:`KernelInfo`/
  :class:`GlobalVarInfo` answer ``cuFuncGetParamInfo``/``cuFuncGetAttribute``/
  ``cuModuleGetGlobal`` without running anything;
* :class:`DeviceMemory` is one device's global memory: a lazily committed numpy arena with a
  checked allocator, so every stray access becomes ``illegal_address`` instead of corruption;
* :class:`LoadedModule` allocates a module's globals in that memory and launches its kernels on
  a numpy SIMT interpreter (``interp.py``): whole batches of blocks as one lane vector,
  min-PC reconvergence, barriers, atomics serialised in lane order, warp shuffles and votes,
  ``.func`` calls and ``vprintf``.

Every failure is an :class:`EmuFault` whose ``kind`` the CUDA layer maps to a CUresult.

Texture and surface objects (``tex``, ``tld4``, ``txq``, ``suld.b``, ``sust.b``, ``suq``) read
the descriptors of ``texture.py``, mipmapped and cube-map textures included (``tex.level``,
``tex.grad``, ``tex.cube``).

Known limits, each reported rather than silently wrong where it can be detected: no texture or
surface references (``.texref``/``.surfref``), multisample textures, formatted surface stores or
surface reductions, PTX-level tensor-core ``mma``/``ldmatrix`` (``wmma`` is supported),
tensor-map bulk copies or clusters (``cp.async`` and 1D ``cp.async.bulk`` run synchronously when
issued; ``mbarrier`` phases and transaction counts are supported); grid-wide sync only in
cooperative launches (all blocks then run as one batch); recursion stacks ``.local`` frames as
deep as the context's stack size limit (``cudaLimitStackSize``) holds them, at least 256 and at
most 4096 levels; warp collectives executed by only part of their member mask read the
non-participating lanes' current values; barrier numbers held in registers count as barrier 0;
``.approx`` instructions are more accurate than the hardware (within its documented bounds).
"""

from __future__ import annotations

from .errors import FAULT_KINDS, EmuFault
from .ir import GlobalVarInfo, KernelInfo, ParamInfo, PtxModule
from .memory import DeviceMemory
from .module import LoadedModule
from .parser import parse_ptx

__all__ = [
    "FAULT_KINDS",
    "DeviceMemory",
    "EmuFault",
    "GlobalVarInfo",
    "KernelInfo",
    "LoadedModule",
    "ParamInfo",
    "PtxModule",
    "parse_ptx",
]
