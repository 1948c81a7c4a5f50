"""GPU discovery: real lavapipe through the pinned loader, merging, expose_gpus, manifests."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from rgpu.errors import RgpuError
from rgpu.server.discovery import (
    CudaDeviceSummary,
    GpuInfo,
    discover_gpus,
    enumerate_vulkan_devices,
    format_gpu_lines,
    host_vulkan_icds,
    pin_host_vulkan_loader,
)

LOADER_VARIABLES = (
    "VK_DRIVER_FILES",
    "VK_ICD_FILENAMES",
    "VK_ADD_DRIVER_FILES",
    "VK_INSTANCE_LAYERS",
)

EMULATED = CudaDeviceSummary(
    name="RGPU Emulated CUDA Device",
    uuid=bytes(range(16)),
    total_memory=4 << 30,
    compute_capability=(7, 5),
    emulated=True,
)

# A Vulkan record as enumerate_vulkan_devices returns it, for tests that need no driver.
NVIDIA_UUID = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
NVIDIA_VK = {
    "vulkan_index": 1,
    "name": "NVIDIA H100 80GB HBM3",
    "device_type": "discrete",
    "memory": 80 << 30,
    "uuid": NVIDIA_UUID.hex(),
    "vendor_id": 0x10DE,
    "device_id": 0x2330,
    "driver": "NVIDIA 580.82.07",
    "api_version": "1.4.312",
}
LAVAPIPE_VK = {
    "vulkan_index": 0,
    "name": "llvmpipe (LLVM 15.0.6, 256 bits)",
    "device_type": "cpu",
    "memory": 2 << 30,
    "uuid": "6d65736132322e332e36000000000000",
    "vendor_id": 0x10005,
    "device_id": 0,
    "driver": "llvmpipe Mesa 22.3.6 (LLVM 15.0.6)",
    "api_version": "1.3.230",
}


@pytest.fixture
def restore_loader_env() -> Iterator[None]:
    """Pinning edits os.environ (that is its job); put the loader variables back afterwards."""
    saved = {name: os.environ.get(name) for name in LOADER_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _lavapipe_available() -> str | None:
    """Why the lavapipe tests cannot run here, or None if they can."""
    try:
        import vulkan._vulkan  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"the Vulkan loader cannot be loaded: {exc}"
    for manifest in host_vulkan_icds():
        if "lvp" in json.loads(manifest.read_text())["ICD"]["library_path"]:
            return None
    return "no Mesa lavapipe driver manifest on this host (install mesa-vulkan-drivers)"


@pytest.fixture
def lavapipe(restore_loader_env: None) -> dict:
    reason = _lavapipe_available()
    if reason is not None:
        pytest.skip(reason)
    devices = [d for d in enumerate_vulkan_devices() if "llvmpipe" in d["name"]]
    assert devices, "lavapipe is installed but the pinned loader did not enumerate it"
    return devices[0]


def _write_manifest(directory: Path, file_name: str, library: str, **extra: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    icd = {"library_path": library, "api_version": "1.3.230", **extra}
    path.write_text(json.dumps({"file_format_version": "1.0.0", "ICD": icd}))
    return path


# --- real Vulkan driver -------------------------------------------------------------------


def test_lavapipe_is_enumerated_as_a_cpu_vulkan_device(lavapipe: dict) -> None:
    gpus = discover_gpus(vulkan_devices=[lavapipe])
    (gpu,) = gpus
    assert "llvmpipe" in gpu.name
    assert gpu.device_type == "cpu"
    assert gpu.memory > 0
    assert gpu.vulkan and not gpu.cuda
    assert gpu.compute_capability is None
    major, minor, _patch = (int(part) for part in gpu.vulkan_api_version.split("."))
    assert (major, minor) >= (1, 1)
    assert len(gpu.uuid) == 32 and int(gpu.uuid, 16) != 0
    assert gpu.vendor_id == 0x10005  # VK_VENDOR_ID_MESA
    assert gpu.driver.startswith("llvmpipe")
    assert gpu.vulkan_index == 0 and gpu.cuda_index is None


def test_discover_gpus_enumerates_vulkan_itself(lavapipe: dict) -> None:
    names = [gpu.name for gpu in discover_gpus()]
    assert lavapipe["name"] in names


def test_cuda_device_with_a_vulkan_uuid_is_one_gpu(lavapipe: dict) -> None:
    same = CudaDeviceSummary(
        name="Test GPU",
        uuid=bytes.fromhex(lavapipe["uuid"]),
        total_memory=8 << 30,
        compute_capability=(9, 0),
        emulated=False,
    )
    gpus = [gpu for gpu in discover_gpus([same]) if gpu.uuid == lavapipe["uuid"]]
    (gpu,) = gpus
    assert gpu.vulkan and gpu.cuda
    assert gpu.compute_capability == (9, 0)
    assert gpu.memory == 8 << 30
    assert gpu.cuda_index == 0 and gpu.vulkan_index == lavapipe["vulkan_index"]
    assert gpu.vulkan_api_version == lavapipe["api_version"]


def test_pinned_loader_ignores_an_inherited_rgpu_driver(tmp_path: Path) -> None:
    """The server's own loader must not load rgpu's driver even when told to, nor need to be
    pinned before `vulkan` is imported."""
    reason = _lavapipe_available()
    if reason is not None:
        pytest.skip(reason)
    rgpu_manifest = _write_manifest(tmp_path, "rgpu_icd.json", str(tmp_path / "librgpu_vk_icd.so"))
    script = (
        "import vulkan\n"
        "from rgpu.server.discovery import enumerate_vulkan_devices\n"
        "print([d['name'] for d in enumerate_vulkan_devices()])\n"
    )
    env = dict(os.environ, VK_ICD_FILENAMES=str(rgpu_manifest), VK_DRIVER_FILES=str(rgpu_manifest))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "llvmpipe" in done.stdout


def test_no_driver_is_a_warning_not_an_error(
    restore_loader_env: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        import vulkan._vulkan  # noqa: F401
    except (ImportError, OSError) as exc:
        pytest.skip(f"the Vulkan loader cannot be loaded: {exc}")
    monkeypatch.setenv("VK_DRIVER_FILES", os.devnull)
    monkeypatch.setenv("VK_ICD_FILENAMES", os.devnull)
    with caplog.at_level(logging.WARNING, logger="rgpu.server.discovery"):
        assert enumerate_vulkan_devices(pin=False) == []
    assert any(r.name == "rgpu.server.discovery" for r in caplog.records)


# --- merging and ordering (no driver needed) ----------------------------------------------


def test_cuda_devices_come_first_and_merge_by_uuid() -> None:
    nvidia = CudaDeviceSummary(
        name="NVIDIA H100 80GB HBM3",
        uuid=NVIDIA_UUID,
        total_memory=79 << 30,
        compute_capability=(9, 0),
        emulated=False,
    )
    gpus = discover_gpus([nvidia, EMULATED], vulkan_devices=[LAVAPIPE_VK, NVIDIA_VK])
    assert [g.name for g in gpus] == [
        "NVIDIA H100 80GB HBM3",
        "RGPU Emulated CUDA Device",
        "llvmpipe (LLVM 15.0.6, 256 bits)",
    ]
    assert [g.index for g in gpus] == [0, 1, 2]
    h100, emu, lvp = gpus
    assert (h100.cuda, h100.vulkan, h100.compute_capability) == (True, True, (9, 0))
    assert (h100.cuda_index, h100.vulkan_index) == (0, 1)
    assert h100.memory == 79 << 30  # CUDA's figure wins
    assert (h100.device_type, h100.device_id, h100.driver) == (
        "discrete",
        0x2330,
        "NVIDIA 580.82.07",
    )
    assert (emu.device_type, emu.cuda, emu.vulkan, emu.driver) == ("cpu", True, False, "rgpu-emu")
    assert emu.uuid == bytes(range(16)).hex()
    assert (lvp.cuda, lvp.vulkan, lvp.vulkan_index, lvp.cuda_index) == (False, True, 0, None)


def test_emulated_device_is_never_merged_with_a_vulkan_device() -> None:
    emulated = CudaDeviceSummary(
        name="RGPU Emulated CUDA Device",
        uuid=bytes.fromhex(LAVAPIPE_VK["uuid"]),
        total_memory=4 << 30,
        compute_capability=(7, 5),
        emulated=True,
    )
    emu, lvp = discover_gpus([emulated], vulkan_devices=[LAVAPIPE_VK])
    assert (emu.cuda, emu.vulkan, emu.device_type, emu.compute_capability) == (
        True,
        False,
        "cpu",
        (7, 5),
    )
    assert (lvp.cuda, lvp.vulkan) == (False, True)


def test_cuda_only_gpu_is_discrete_nvidia() -> None:
    (gpu,) = discover_gpus(
        [CudaDeviceSummary("NVIDIA A100", NVIDIA_UUID, 40 << 30, (8, 0), emulated=False)],
        vulkan=False,
        vulkan_devices=[NVIDIA_VK],
    )
    assert (gpu.device_type, gpu.vendor_id, gpu.vulkan, gpu.vulkan_index) == (
        "discrete",
        0x10DE,
        False,
        None,
    )


def test_zero_uuids_never_merge() -> None:
    blank = dict(NVIDIA_VK, uuid="0" * 32)
    summary = CudaDeviceSummary("NVIDIA A100", bytes(16), 40 << 30, (8, 0), emulated=False)
    assert len(discover_gpus([summary], vulkan_devices=[blank])) == 2


# --- expose_gpus --------------------------------------------------------------------------


def test_expose_filters_and_renumbers_in_original_order() -> None:
    gpus = discover_gpus([EMULATED], vulkan_devices=[LAVAPIPE_VK, NVIDIA_VK], expose=[2, 0])
    assert [(g.index, g.name) for g in gpus] == [
        (0, "RGPU Emulated CUDA Device"),
        (1, "NVIDIA H100 80GB HBM3"),
    ]
    assert gpus[1].vulkan_index == 1  # the backend still opens the right device


def test_expose_none_keeps_all_and_empty_keeps_none() -> None:
    assert len(discover_gpus([EMULATED], vulkan_devices=[LAVAPIPE_VK], expose=None)) == 2
    assert discover_gpus([EMULATED], vulkan_devices=[LAVAPIPE_VK], expose=[]) == []


@pytest.mark.parametrize("bad", [2, -1])
def test_expose_of_a_missing_gpu_is_a_one_line_error(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"GPU {bad}\b.*2 GPU") as caught:
        discover_gpus([EMULATED], vulkan_devices=[LAVAPIPE_VK], expose=[0, bad])
    assert isinstance(caught.value, RgpuError)
    assert "\n" not in str(caught.value)


def test_expose_on_a_server_without_gpus() -> None:
    with pytest.raises(ValueError, match="no GPUs"):
        discover_gpus(vulkan=False, expose=[0])


# --- driver manifests and loader pinning --------------------------------------------------


def test_host_icds_exclude_rgpu_driver(tmp_path: Path) -> None:
    icd_dir = tmp_path / "vulkan" / "icd.d"
    lvp = _write_manifest(icd_dir, "lvp_icd.x86_64.json", "/usr/lib/libvulkan_lvp.so")
    rgpu = _write_manifest(icd_dir, "zz_driver.json", "/opt/x/librgpu_vk_icd.so")
    assert host_vulkan_icds(search_dirs=[icd_dir]) == [lvp]
    assert host_vulkan_icds(exclude_rgpu=False, search_dirs=[icd_dir]) == [lvp, rgpu]


def test_host_icds_search_xdg_data_dirs(tmp_path: Path) -> None:
    icd_dir = tmp_path / "data" / "vulkan" / "icd.d"
    lvp = _write_manifest(icd_dir, "lvp_icd.json", "libvulkan_lvp.so")
    _write_manifest(icd_dir, "rgpu_icd.json", "./librgpu_vk_icd.so")
    environ = {
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_DIRS": str(tmp_path / "data"),
        "XDG_CONFIG_DIRS": str(tmp_path / "config"),
    }
    found = host_vulkan_icds(environ=environ)
    assert lvp in found
    assert not any("rgpu" in str(path) for path in found)


def test_host_icds_see_through_symlinks_and_skip_junk(tmp_path: Path) -> None:
    icd_dir = tmp_path / "icd.d"
    real_library = tmp_path / "librgpu_vk_icd.so"
    real_library.write_bytes(b"")
    (tmp_path / "libvendor.so").symlink_to(real_library)
    _write_manifest(icd_dir, "vendor.json", "../libvendor.so")
    _write_manifest(icd_dir, "other_arch.json", "/usr/lib/libx.so", library_arch="16")
    (icd_dir / "broken.json").write_text("{not json")
    (icd_dir / "layer.json").write_text(json.dumps({"layer": {"name": "VK_LAYER_X"}}))
    assert host_vulkan_icds(search_dirs=[icd_dir, tmp_path / "missing"]) == []


def test_pin_sets_both_variables_and_drops_additions(tmp_path: Path) -> None:
    icd_dir = tmp_path / "icd.d"
    a = _write_manifest(icd_dir, "a.json", "/usr/lib/liba.so")
    b = _write_manifest(icd_dir, "b.json", "/usr/lib/libb.so")
    _write_manifest(icd_dir, "rgpu_icd.json", "librgpu_vk_icd.so")
    environ = {
        "VK_ICD_FILENAMES": "/etc/rgpu/rgpu_icd.json",
        "VK_ADD_DRIVER_FILES": "/etc/rgpu/rgpu_icd.json",
        "VK_INSTANCE_LAYERS": "VK_LAYER_KHRONOS_validation",
        "PATH": "/usr/bin",
    }
    pinned = pin_host_vulkan_loader(environ, search_dirs=[icd_dir])
    assert pinned == [a, b]
    assert environ == {
        "VK_DRIVER_FILES": f"{a}:{b}",
        "VK_ICD_FILENAMES": f"{a}:{b}",
        "PATH": "/usr/bin",
    }


def test_pin_without_host_drivers_points_at_no_manifest(tmp_path: Path) -> None:
    environ: dict[str, str] = {"VK_DRIVER_FILES": "/etc/rgpu/rgpu_icd.json"}
    assert pin_host_vulkan_loader(environ, search_dirs=[tmp_path]) == []
    assert environ["VK_DRIVER_FILES"] == environ["VK_ICD_FILENAMES"] == os.devnull


# --- records and text ---------------------------------------------------------------------


def _sample_gpus() -> list[GpuInfo]:
    return discover_gpus([EMULATED], vulkan_devices=[LAVAPIPE_VK])


def test_to_dict_round_trips_through_msgpack_and_json() -> None:
    for gpu in _sample_gpus():
        record = gpu.to_dict()
        assert GpuInfo.from_dict(msgpack.unpackb(msgpack.packb(record))) == gpu
        assert GpuInfo.from_dict(json.loads(json.dumps(record))) == gpu
    assert _sample_gpus()[0].to_dict()["compute_capability"] == [7, 5]


def test_from_dict_ignores_new_fields_and_rejects_missing_ones() -> None:
    record = _sample_gpus()[1].to_dict()
    assert GpuInfo.from_dict({**record, "added_later": 1}) == _sample_gpus()[1]
    del record["uuid"]
    with pytest.raises(ValueError, match="uuid"):
        GpuInfo.from_dict(record)


def test_format_gpu_lines() -> None:
    assert format_gpu_lines(_sample_gpus()) == (
        "GPU 0: RGPU Emulated CUDA Device\n"
        "  Type: cpu | VRAM: 4.0 GiB | Vulkan: false | CUDA: true | Compute: 7.5\n"
        "GPU 1: llvmpipe (LLVM 15.0.6, 256 bits)\n"
        "  Type: cpu | VRAM: 2.0 GiB | Vulkan: true | CUDA: false | Compute: -"
    )
    assert format_gpu_lines([]) == "No GPUs found."
