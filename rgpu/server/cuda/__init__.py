"""CUDA backends of the rgpu server, and the one entry point the server uses to pick one.

`open_cuda_backend("auto")` gives the NVIDIA backend where a driver with a GPU answers, else the
emulated CPU device, so a server always has a CUDA device to offer. Importing this package is
cheap: the backends (numpy, cuda-python) are imported only when opened.
"""

from __future__ import annotations

import logging
from typing import Any

from rgpu.server.cuda.backend import CudaBackend, CudaDeviceFacts, CudaSession
from rgpu.server.cuda.errors import CudaError, CUresult

__all__ = [
    "CUresult",
    "CudaBackend",
    "CudaDeviceFacts",
    "CudaError",
    "CudaSession",
    "describe_cuda_gpus",
    "nvidia_driver_device_count",
    "open_cuda_backend",
]

log = logging.getLogger("rgpu.server.cuda")

BACKEND_KINDS = ("auto", "nvidia", "emu")


def nvidia_driver_device_count() -> tuple[int, str]:
    """(number of NVIDIA GPUs, why none) through cuda-python; never raises.

    A machine without the driver library, without cuda-python, or whose driver finds no
    device answers 0 with the reason, which `open_cuda_backend` puts into its messages.
    """
    try:
        from cuda.bindings import driver
    except Exception as exc:
        return 0, f"cuda-python is not installed ({exc.__class__.__name__})"
    try:
        (err,) = driver.cuInit(0)
        if int(err) != 0:
            return 0, f"cuInit failed with {CUresult(int(err)).name}"
        err, count = driver.cuDeviceGetCount()
        if int(err) != 0:
            return 0, f"cuDeviceGetCount failed with {CUresult(int(err)).name}"
        return int(count), "" if count else "the NVIDIA driver reports no GPU"
    except Exception as exc:  # no libcuda.so.1, broken install ...
        return 0, f"the NVIDIA driver is not usable ({exc})"


def open_cuda_backend(kind: str = "auto", emu_memory: int = 4 << 30,
                      identity: int = 0) -> CudaBackend:
    """The server's CUDA backend: `auto` (NVIDIA when a driver and GPU exist, else emulated),
    `nvidia` or `emu`; `emu_memory` is the emulated device's memory size in bytes;
    `identity` (the server_id) keeps emulated devices of different servers distinct.

    Raises ValueError for an unknown kind and CudaError (with a one-line cause and fix) when
    `nvidia` cannot be honoured.
    """
    if kind not in BACKEND_KINDS:
        raise ValueError(f"unknown CUDA backend {kind!r}: use one of {', '.join(BACKEND_KINDS)}")
    if kind in ("auto", "nvidia"):
        count, why = nvidia_driver_device_count()
        if count:
            from rgpu.server.cuda.nvidia import NvidiaBackend

            try:
                return NvidiaBackend()
            except CudaError as exc:
                if kind == "nvidia":
                    raise
                log.warning("%s; falling back to the emulated CUDA device", exc)
        elif kind == "nvidia":
            raise CudaError(
                CUresult.CUDA_ERROR_NO_DEVICE,
                f"no NVIDIA GPU usable: {why}; install the NVIDIA driver and cuda-python "
                "(pip install 'rgpu[nvidia]') or run the server with --cuda emu",
            )
        else:
            log.info("no NVIDIA GPU (%s): serving the emulated CUDA device", why)
    from rgpu.server.cuda.emu.backend import EmuCudaBackend
    from rgpu.server.cuda.emu.device import EmuDeviceConfig

    return EmuCudaBackend(EmuDeviceConfig.for_server(identity, memory_size=emu_memory))


def describe_cuda_gpus(backend: CudaBackend) -> list[dict[str, Any]]:
    """One dict per device for GPU discovery, in CUDA order.

    The keys are exactly the fields of `rgpu.server.discovery.CudaDeviceSummary` (name, uuid as
    16 raw bytes, total_memory, compute_capability as (major, minor), emulated, pci_bus_id), so
    the server builds summaries with `CudaDeviceSummary(**d)`.
    """
    gpus = []
    for index in range(backend.cuDeviceGetCount()):
        facts = backend.device_facts(index)
        gpus.append(
            {
                "name": facts.name,
                "uuid": facts.uuid,
                "total_memory": facts.total_memory,
                "compute_capability": tuple(facts.compute_capability),
                "emulated": facts.backend == "emu",
                "pci_bus_id": facts.pci_bus_id,
            }
        )
    return gpus
