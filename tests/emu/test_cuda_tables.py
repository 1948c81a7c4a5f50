"""CUresult and attribute tables against their sources of truth (cuda.h, cuda.bindings), and the
emulated device's facts: complete, plausible, stable and wire-safe."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import msgpack
import pytest

from rgpu.server.cuda import nvidia_driver_device_count, open_cuda_backend
from rgpu.server.cuda.attributes import CUdevice_attribute, all_device_attribute_values
from rgpu.server.cuda.backend import CudaDeviceFacts
from rgpu.server.cuda.emu.device import EmuDeviceConfig, device_uuid, emulated_device_facts
from rgpu.server.cuda.errors import CudaError, CUresult, cuGetErrorName, cuGetErrorString

CUDA_H = [p for p in Path("/usr/local").glob("cuda*/include/cuda.h")]


def _header_enum(tag: str, prefix: str) -> dict[str, int]:
    src = CUDA_H[0].read_text()
    start = src.index(f"typedef enum {tag}")
    body = src[start : src.index("}", start)]
    return {n: int(v) for n, v in re.findall(rf"\b({prefix}\w+)\s*=\s*(\d+)", body)}


@pytest.mark.skipif(not CUDA_H, reason="no CUDA toolkit header")
def test_every_cuda_h_result_is_verbatim():
    for name, value in _header_enum("cudaError_enum", "CUDA_").items():
        assert CUresult[name] == value


@pytest.mark.skipif(not CUDA_H, reason="no CUDA toolkit header")
def test_every_cuda_h_device_attribute_is_known():
    expected = _header_enum("CUdevice_attribute_enum", "CU_DEVICE_ATTRIBUTE_")
    for name, value in expected.items():
        if name != "CU_DEVICE_ATTRIBUTE_MAX":
            assert CUdevice_attribute[name] == value


def test_tables_cover_cuda_bindings():
    driver = pytest.importorskip("cuda.bindings.driver")
    for e in driver.CUresult:
        assert CUresult[e.name] == int(e.value)
    for e in driver.CUdevice_attribute:
        if e.name != "CU_DEVICE_ATTRIBUTE_MAX":
            assert CUdevice_attribute[e.name] == int(e.value)


def test_error_names_and_strings():
    assert CUresult.CUDA_ERROR_ILLEGAL_ADDRESS == 700
    assert CUresult.CUDA_ERROR_MISALIGNED_ADDRESS == 716
    assert CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU == 209
    assert CUresult.CUDA_ERROR_NOT_SUPPORTED == 801
    assert CUresult.CUDA_ERROR_UNKNOWN == 999
    assert cuGetErrorName(700) == "CUDA_ERROR_ILLEGAL_ADDRESS"
    assert cuGetErrorString(700) == "an illegal memory access was encountered"
    for code in CUresult:
        assert cuGetErrorString(code) and "\n" not in cuGetErrorString(code)
    with pytest.raises(CudaError) as info:
        cuGetErrorName(12345)
    assert info.value.code == CUresult.CUDA_ERROR_INVALID_VALUE


def test_cuda_error_carries_code_and_one_line():
    err = CudaError(CUresult.CUDA_ERROR_INVALID_HANDLE, "stream 7 does not exist")
    assert err.code == 400 and str(err) == "CUDA_ERROR_INVALID_HANDLE: stream 7 does not exist"
    again = pickle.loads(pickle.dumps(err))
    assert again.code == err.code and again.message == err.message
    assert CudaError(2).message == "out of memory"


def test_emulated_facts_are_complete_and_plausible():
    facts = emulated_device_facts(EmuDeviceConfig(memory_size=1 << 30), 0)
    assert facts.missing_attributes() == []
    assert sorted(facts.attributes) == all_device_attribute_values()
    a = CUdevice_attribute
    assert facts.name == "RGPU Emulated CUDA Device"
    assert facts.compute_capability == (7, 5)
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) == 7
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR) == 5
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_WARP_SIZE) == 32
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK) == 1024
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z) == 64
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X) == 2**31 - 1
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK) == 48 * 1024
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING) == 1
    assert facts.attribute(a.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) > 0
    assert facts.total_memory == 1 << 30
    assert facts.driver_version >= 13000
    assert facts.pci_bus_id_string == "0000:50:00.0"


def test_uuid_is_stable_and_seeded():
    assert len(device_uuid("a", 0)) == 16
    assert device_uuid("a", 0) == device_uuid("a", 0)
    assert device_uuid("a", 0) != device_uuid("a", 1)
    assert device_uuid("a", 0) != device_uuid("b", 0)


def test_facts_survive_msgpack():
    facts = emulated_device_facts(EmuDeviceConfig(), 0)
    wire = msgpack.unpackb(msgpack.packb(facts.to_wire()), strict_map_key=False)
    assert CudaDeviceFacts.from_wire(wire) == facts


def test_open_cuda_backend_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown CUDA backend"):
        open_cuda_backend("opencl")


@pytest.mark.skipif(nvidia_driver_device_count()[0] > 0, reason="this machine has an NVIDIA GPU")
def test_nvidia_without_driver_names_cause_and_fix():
    with pytest.raises(CudaError) as info:
        open_cuda_backend("nvidia")
    assert info.value.code == CUresult.CUDA_ERROR_NO_DEVICE
    assert "--cuda emu" in info.value.message and "\n" not in info.value.message
