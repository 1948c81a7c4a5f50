"""The PTX machine of the emulated CUDA device.

``parse_ptx`` turns the PTX text nvcc embeds in every default build into a :class:`PtxModule`;
:class:`LoadedModule` binds it to a :class:`DeviceMemory` and launches its kernels on a numpy
SIMT interpreter. Every failure is an :class:`EmuFault` whose ``kind`` the CUDA layer maps to a
CUresult. See ``docs``/research ``ptx-emulation.md`` for the design and its measured limits.
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
