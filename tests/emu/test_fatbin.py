"""The fatbin reader against real nvcc 13 output: every compression mode, SASS-only builds,
chained containers, wrappers, cubins and PTX text; plus fuzzing, since images come from apps."""

from __future__ import annotations

import logging
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rgpu.server.cuda.errors import CudaError, CUresult
from rgpu.server.cuda.fatbin import (
    FATBIN_WRAPPER_MAGIC,
    EntryKind,
    elf_image_size,
    elf_sections,
    fatbin_size,
    image_size,
    nv_fatbin_section,
    parse_fatbin,
    parse_wrapper,
    ptx_from_image,
    select_ptx,
)

KERNELS = ("vectorAdd", "saxpy", "reduceSum", "matmul", "histogram", "warpReduce", "empty")


def _ptx_entries(image: bytes) -> list:
    return [e for e in parse_fatbin(image) if e.kind == EntryKind.PTX]


def test_default_build_has_zstd_ptx_and_sass(nvcc_build):
    image = nvcc_build("small.cu", "-fatbin").read_bytes()
    entries = parse_fatbin(image)
    kinds = sorted((e.kind, e.arch) for e in entries)
    assert kinds == [(EntryKind.PTX, 75), (EntryKind.ELF, 75)]
    (ptx,) = _ptx_entries(image)
    assert ptx.compression == "zstd"
    assert ptx.code_version == (9, 0)
    text = ptx.ptx_text()
    assert text.startswith(".version 9.0") or ".version 9.0" in text.splitlines()[0:20]
    assert ".entry scale(" in text
    assert fatbin_size(image) == len(image)


@pytest.mark.parametrize(("mode", "compression"), [("speed", "lz4"), ("none", None)])
def test_compression_modes_decode_to_the_same_ptx(nvcc_build, mode, compression):
    reference = _ptx_entries(nvcc_build("small.cu", "-fatbin").read_bytes())[0].ptx_text()
    image = nvcc_build("small.cu", "-fatbin", f"-compress-mode={mode}").read_bytes()
    (ptx,) = _ptx_entries(image)
    assert ptx.compression == compression
    assert ptx.ptx_text() == reference
    assert ptx_from_image(image, 75).text == reference


def test_sass_only_build_is_no_binary_for_gpu(nvcc_build, caplog):
    image = nvcc_build("small.cu", "-fatbin", "-gencode", "arch=compute_90,code=sm_90").read_bytes()
    assert [e.kind for e in parse_fatbin(image)] == [EntryKind.ELF]
    with caplog.at_level(logging.WARNING, logger="rgpu.server.cuda"):
        with pytest.raises(CudaError) as info:
            ptx_from_image(image, 75)
    assert info.value.code == CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU
    assert "no PTX" in info.value.message and "sm_90" in info.value.message
    assert any("no PTX" in r.getMessage() for r in caplog.records)


def test_highest_usable_ptx_is_chosen(nvcc_build):
    image = nvcc_build(
        "small.cu", "-fatbin",
        "-gencode", "arch=compute_75,code=compute_75",
        "-gencode", "arch=compute_80,code=compute_80",
        "-gencode", "arch=compute_90,code=compute_90",
    ).read_bytes()
    entries = parse_fatbin(image)
    assert sorted(e.arch for e in entries if e.kind == EntryKind.PTX) == [75, 80, 90]
    assert select_ptx(entries, 75).arch == 75
    assert select_ptx(entries, 86).arch == 80
    assert select_ptx(entries, 120).arch == 90
    assert ".target sm_80" in ptx_from_image(image, 86).text
    # Only newer PTX than the device: the lowest is run rather than refusing the app.
    newer = [e for e in entries if e.arch >= 80]
    assert select_ptx(newer, 75).arch == 80


def test_executable_holds_chained_containers(nvcc_build):
    exe = nvcc_build("kernels.cu").read_bytes()
    section = nv_fatbin_section(exe)
    headers = []
    off = 0
    while off < len(section):
        magic, _v, hsize, fsize = struct.unpack_from("<IHHQ", section, off)
        assert magic == 0xBA55ED50
        headers.append(fsize)
        off = (off + hsize + fsize + 7) & ~7
    assert len(headers) >= 2, "nvcc links a device-link container next to the program's"
    assert fatbin_size(section) == len(section)
    text = ptx_from_image(section, 75).text
    for name in KERNELS:
        assert f".entry {name}(" in text
    assert elf_image_size(exe) == len(exe)


def test_fatbin_size_reads_only_headers(nvcc_build):
    image = nvcc_build("small.cu", "-fatbin").read_bytes()
    doubled = image + bytes(-len(image) % 8) + bytes(16) + image
    assert fatbin_size(doubled) == len(doubled)
    assert len(parse_fatbin(doubled)) == 2 * len(parse_fatbin(image))
    # A shim knows the size from the 16-byte header before reading the rest.
    assert fatbin_size(image[:16]) == len(image)


def test_wrapper_header_followed_by_its_fatbin(nvcc_build):
    image = nvcc_build("small.cu", "-fatbin").read_bytes()
    wrapper = struct.pack("<IIQQ", FATBIN_WRAPPER_MAGIC, 1, 0x7F00DEAD0000, 0)
    parsed = parse_wrapper(wrapper)
    assert (parsed.version, parsed.data) == (1, 0x7F00DEAD0000)
    assert ".entry scale(" in ptx_from_image(wrapper + image, 75).text
    with pytest.raises(CudaError) as info:
        ptx_from_image(wrapper, 75)
    assert info.value.code == CUresult.CUDA_ERROR_INVALID_IMAGE


def test_cubin_is_no_binary_for_gpu(nvcc_build):
    cubin = nvcc_build("small.cu", "-cubin").read_bytes()
    assert elf_image_size(cubin) == len(cubin)
    assert any(s.name.startswith(".text.scale") for s in elf_sections(cubin))
    with pytest.raises(CudaError) as info:
        ptx_from_image(cubin, 75)
    assert info.value.code == CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU
    assert "cubin" in info.value.message


def test_ptx_text_with_and_without_nul(nvcc_build):
    text = nvcc_build("small.cu", "-ptx").read_text()
    assert ptx_from_image(text.encode(), 75).text == text
    assert ptx_from_image(text.encode() + b"\0garbage", 75).text == text
    with pytest.raises(CudaError) as info:
        ptx_from_image(b"hello world", 75)
    assert info.value.code == CUresult.CUDA_ERROR_INVALID_IMAGE


def _check_only_cuda_errors(data: bytes) -> None:
    for fn in (lambda: ptx_from_image(data, 75), lambda: fatbin_size(data),
               lambda: image_size(data),
               lambda: [e.data() for e in parse_fatbin(data)], lambda: elf_sections(data),
               lambda: elf_image_size(data)):
        try:
            fn()
        except CudaError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_only_raise_cuda_error(data):
    _check_only_cuda_errors(data)
    _check_only_cuda_errors(struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(data)) + data)


@pytest.fixture(scope="module")
def real_images(nvcc_build):
    return [
        nvcc_build("small.cu", "-fatbin").read_bytes(),
        nvcc_build("small.cu", "-fatbin", "-compress-mode=speed").read_bytes(),
        nvcc_build("small.cu", "-cubin").read_bytes(),
    ]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), edits=st.lists(st.tuples(st.integers(0, 1 << 16),
       st.integers(0, 255)), min_size=1, max_size=8), cut=st.integers(0, 1 << 16))
def test_fuzz_mutated_images_only_raise_cuda_error(real_images, which, edits, cut):
    data = bytearray(real_images[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    _check_only_cuda_errors(bytes(data))
    _check_only_cuda_errors(bytes(data[: cut % (len(data) + 1)]))


def test_image_size_of_every_shape(nvcc_build):
    fatbin = nvcc_build("small.cu", "-fatbin").read_bytes()
    cubin = nvcc_build("small.cu", "-cubin").read_bytes()
    ptx = nvcc_build("small.cu", "-ptx").read_bytes()
    assert image_size(fatbin + b"trailing app data") == len(fatbin)
    assert image_size(cubin + bytes(100)) == len(cubin)
    assert image_size(ptx + b"\0" + b"more") == len(ptx) + 1
    with pytest.raises(CudaError):
        image_size(struct.pack("<IIQQ", FATBIN_WRAPPER_MAGIC, 1, 0, 0))


def test_each_translation_unit_gets_its_own_ptx(nvcc_build, tmp_path):
    """In a two-file program each wrapper points at its own container, with the other file's
    container possibly chained after it: the PTX chosen must be the wrapper's own."""
    exe = nvcc_build("kernels.cu", "small.cu")
    section = nv_fatbin_section(exe.read_bytes())
    seen = set()
    off = 0
    while off < len(section):
        _magic, _v, hsize, fsize = struct.unpack_from("<IHHQ", section, off)
        own = parse_fatbin(section[off : off + hsize + fsize])
        if any(e.kind == EntryKind.PTX for e in own):
            text = ptx_from_image(section[off:], 75).text
            seen.add("scale" if ".entry scale(" in text else "kernels")
            assert (".entry scale(" in text) != (".entry vectorAdd(" in text)
        off = (off + hsize + fsize + 7) & ~7
    assert seen == {"scale", "kernels"}
