"""The NVIDIA backend's shape, checked on every machine (the GPU behaviour is in
test_nvidia_backend.py): it implements the whole session interface, and without a driver it
refuses to start with a one-line reason instead of a traceback from the bindings."""

from __future__ import annotations

import inspect

import pytest

from rgpu.server.cuda import nvidia_driver_device_count
from rgpu.server.cuda.backend import CudaBackend, CudaSession
from rgpu.server.cuda.errors import CudaError, CUresult
from rgpu.server.cuda.nvidia import NvidiaBackend, NvidiaSession


def test_interface_complete_and_no_driver_is_one_line() -> None:
    assert NvidiaSession.__abstractmethods__ == frozenset()
    assert NvidiaBackend.__abstractmethods__ == frozenset()
    # The wire layer calls session methods positionally, in the interface's order.
    for name in CudaSession.__abstractmethods__ | CudaBackend.__abstractmethods__:
        owner = CudaSession if name in CudaSession.__abstractmethods__ else CudaBackend
        ours = NvidiaSession if owner is CudaSession else NvidiaBackend
        assert list(inspect.signature(getattr(ours, name)).parameters) == list(
            inspect.signature(getattr(owner, name)).parameters
        ), name

    count, _ = nvidia_driver_device_count()
    if count:
        pytest.skip("an NVIDIA driver with a GPU is present: the no-driver path cannot run")
    with pytest.raises(CudaError) as info:
        NvidiaBackend()
    message = str(info.value)
    assert "\n" not in message and message.startswith("CUDA_ERROR_")
    assert info.value.code != CUresult.CUDA_SUCCESS
    assert "--cuda emu" in message  # the fix, not only the cause
