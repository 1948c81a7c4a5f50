"""Reading the code images apps hand to `cuModuleLoadData` / `cuLibraryLoadData`.

An app's image is a fatbin (usually reached through cudart's `__fatBinC_Wrapper_t`), an ELF
cubin, or PTX text. A backend that executes PTX (the emulated device) must find the PTX inside a
fatbin, which nvcc 13 stores zstd-compressed by default and LZ4-compressed with
`-compress-mode=speed`; a shim that ships images whole must know their size from their headers.
Both needs are served here. Every image comes from outside the server, so every read is bounds
checked and every failure is a `CudaError` (never another exception): the format is documented in
research/ptx-emulation.md §2.

Layouts (little endian):

    __fatBinC_Wrapper_t (24 bytes): u32 magic 0x466243B1, u32 version, u64 data, u64 filename
    container header (16 bytes):    u32 magic 0xBA55ED50, u16 version, u16 header_size,
                                    u64 fat_size (bytes of entries after the header)
    entry header (>= 64 bytes):     u16 kind, u16 version, u32 header_size, u64 payload_size,
                                    u32 compressed_size, u32 options_offset, u16 minor, u16 major,
                                    u32 arch, u32 name_offset, u32 name_size, u64 flags, u64 zero,
                                    u64 uncompressed_size
"""

from __future__ import annotations

import enum
import logging
import struct
from dataclasses import dataclass

from rgpu.server.cuda.errors import CudaError, CUresult

log = logging.getLogger("rgpu.server.cuda")

FATBIN_WRAPPER_MAGIC = 0x466243B1
FATBIN_MAGIC = 0xBA55ED50
OLD_FATBIN_MAGIC = 0x1EE55A01
ELF_MAGIC = b"\x7fELF"
EM_CUDA = 190

WRAPPER_SIZE = 24
CONTAINER_HEADER_SIZE = 16
ENTRY_HEADER_MIN_SIZE = 64

FLAG_64BIT = 0x1
FLAG_DEBUG = 0x2
FLAG_COMPRESS_LZ4 = 0x2000
FLAG_COMPRESS_ZSTD = 0x8000

# A decompressed entry larger than this is treated as a corrupt header rather than honoured:
# the size comes from the image, and an attacker must not make the server allocate gigabytes.
MAX_UNCOMPRESSED_ENTRY = 512 << 20

_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQIIHHIIIQQQ")
_WRAPPER = struct.Struct("<IIQQ")


class EntryKind(enum.IntEnum):
    """What a fatbin entry holds."""

    PTX = 1
    ELF = 2
    LTO_IR = 8


class ImageKind(enum.Enum):
    """The shapes of image a module load accepts."""

    WRAPPER = "fatbin wrapper"
    FATBIN = "fatbin"
    ELF = "ELF"
    PTX = "PTX"


def _invalid(message: str) -> CudaError:
    return CudaError(CUresult.CUDA_ERROR_INVALID_IMAGE, message)


@dataclass(frozen=True)
class FatbinWrapper:
    """The fields of cudart's `__fatBinC_Wrapper_t`; `data` is a pointer in the app's address
    space, which only the shim can follow."""

    version: int
    data: int
    filename_or_fatbins: int


@dataclass(frozen=True)
class FatbinEntry:
    """One image inside a fatbin container; `payload` is as stored (possibly compressed)."""

    kind: int
    arch: int
    code_version: tuple[int, int]
    flags: int
    payload: bytes
    compressed_size: int
    uncompressed_size: int
    ptxas_options: str

    @property
    def compression(self) -> str | None:
        """'zstd', 'lz4' or None; nvcc 13 compresses PTX with zstd unless told otherwise."""
        if self.flags & FLAG_COMPRESS_ZSTD:
            return "zstd"
        if self.flags & FLAG_COMPRESS_LZ4:
            return "lz4"
        return None

    def describe(self) -> str:
        """A short name for log lines, e.g. 'PTX compute_75 (ISA 9.0, zstd)'."""
        kind = {1: "PTX", 2: "ELF", 8: "LTO-IR"}.get(self.kind, f"kind {self.kind}")
        prefix = "compute" if self.kind == EntryKind.PTX else "sm"
        major, minor = self.code_version
        extra = f", {self.compression}" if self.compression else ""
        return f"{kind} {prefix}_{self.arch} (version {major}.{minor}{extra})"

    def data(self) -> bytes:
        """The payload decompressed; corrupt or oversized payloads are INVALID_IMAGE."""
        method = self.compression
        if method is None:
            return self.payload
        raw = self.payload[: self.compressed_size] if self.compressed_size else self.payload
        size = self.uncompressed_size
        if size <= 0 or size > MAX_UNCOMPRESSED_ENTRY:
            raise _invalid(f"fatbin entry declares an uncompressed size of {size} bytes")
        try:
            if method == "zstd":
                import zstandard

                out = zstandard.ZstdDecompressor().decompress(raw, max_output_size=size)
            else:
                import lz4.block

                out = lz4.block.decompress(raw, uncompressed_size=size)
        except Exception as exc:  # the codecs raise their own types; all mean "corrupt"
            raise _invalid(f"{method} payload of a fatbin entry is corrupt: {exc}") from None
        return bytes(out)

    def ptx_text(self) -> str:
        """The PTX source of a PTX entry (stored NUL-terminated and padded)."""
        return _decode_ptx(self.data())


def _decode_ptx(data: bytes) -> str:
    text = data.split(b"\0", 1)[0]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("PTX text is not valid UTF-8") from None


def parse_wrapper(data: bytes) -> FatbinWrapper:
    """Decode the 24 bytes of a `__fatBinC_Wrapper_t`.

    The shim ships the fatbin at `data` (sized with `fatbin_size`). Version 2 wrappers (`-rdc`
    builds) keep the primary fatbin at `data` too; `filename_or_fatbins` then points at a
    NULL-terminated list of further fatbins to link, which this backend does not use.
    """
    if len(data) < WRAPPER_SIZE:
        raise _invalid(f"fatbin wrapper needs {WRAPPER_SIZE} bytes, got {len(data)}")
    magic, version, ptr, names = _WRAPPER.unpack_from(data, 0)
    if magic != FATBIN_WRAPPER_MAGIC:
        raise _invalid(f"not a fatbin wrapper (magic {magic:#x})")
    if version not in (1, 2):
        raise _invalid(f"fatbin wrapper version {version} is not 1 or 2")
    return FatbinWrapper(version=version, data=ptr, filename_or_fatbins=names)


def _container_at(buf: bytes, off: int) -> tuple[int, int]:
    """(header_size, fat_size) of the container at `off`, validated against `buf`."""
    if off + CONTAINER_HEADER_SIZE > len(buf):
        raise _invalid(f"fatbin container header at offset {off} is truncated")
    magic, _version, header_size, fat_size = _CONTAINER.unpack_from(buf, off)
    if magic != FATBIN_MAGIC:
        raise _invalid(f"no fatbin container at offset {off} (magic {magic:#x})")
    if header_size < CONTAINER_HEADER_SIZE:
        raise _invalid(f"fatbin container header size {header_size} is too small")
    return header_size, fat_size


def _next_container(buf: bytes, end: int) -> int | None:
    """Offset of the container chained after one ending at `end`, if any.

    Containers sit back to back, 8-byte aligned, in an executable's `.nv_fatbin`; the zero bytes
    between them are padding.
    """
    pos = (end + 7) & ~7
    while buf[pos : pos + 8] == bytes(8):
        pos += 8
    if pos + 4 <= len(buf) and struct.unpack_from("<I", buf, pos)[0] == FATBIN_MAGIC:
        return pos
    return None


def fatbin_size(buf: bytes) -> int:
    """Bytes the chained fatbin containers starting at `buf[0]` occupy, from headers only.

    A shim reads the 16-byte header at a wrapper's `data`, learns the container's size, and
    peeks after it for a chained container; it must ship them all, since SASS or PTX may live in
    a later one. `buf` needs only the headers (and the gaps) to be present.
    """
    off = 0
    total = 0
    while True:
        header_size, fat_size = _container_at(buf, off)
        end = off + header_size + fat_size
        total = end
        nxt = _next_container(buf, end)
        if nxt is None:
            return total
        off = nxt


def parse_fatbin(buf: bytes) -> list[FatbinEntry]:
    """Every entry of every chained container at the start of `buf`."""
    entries: list[FatbinEntry] = []
    off = 0
    while True:
        header_size, fat_size = _container_at(buf, off)
        start = off + header_size
        end = start + fat_size
        if end > len(buf):
            left = len(buf) - start
            raise _invalid(f"fatbin container claims {fat_size} bytes but {left} remain")
        pos = start
        while pos < end:
            entries.append(_entry_at(buf, pos, end))
            pos += _entry_span(buf, pos)
        nxt = _next_container(buf, end)
        if nxt is None:
            return entries
        off = nxt


def _entry_span(buf: bytes, pos: int) -> int:
    header_size, payload_size = struct.unpack_from("<IQ", buf, pos + 4)
    return header_size + payload_size


def _entry_at(buf: bytes, pos: int, end: int) -> FatbinEntry:
    if pos + ENTRY_HEADER_MIN_SIZE > end:
        raise _invalid(f"fatbin entry header at offset {pos} is truncated")
    (kind, _ver, header_size, payload_size, compressed_size, options_offset, minor, major, arch,
     _name_off, _name_len, flags, _zero, uncompressed_size) = _ENTRY.unpack_from(buf, pos)
    if header_size < ENTRY_HEADER_MIN_SIZE or pos + header_size > end:
        raise _invalid(f"fatbin entry at offset {pos} has header size {header_size}")
    if pos + header_size + payload_size > end:
        raise _invalid(f"fatbin entry at offset {pos} runs past its container")
    if compressed_size > payload_size:
        raise _invalid(f"fatbin entry at offset {pos} is compressed beyond its payload")
    header = buf[pos : pos + header_size]
    payload = bytes(buf[pos + header_size : pos + header_size + payload_size])
    return FatbinEntry(
        kind=kind,
        arch=arch,
        code_version=(major, minor),
        flags=flags,
        payload=payload,
        compressed_size=compressed_size,
        uncompressed_size=uncompressed_size,
        ptxas_options=_ptxas_options(header, kind, options_offset),
    )


def _ptxas_options(header: bytes, kind: int, options_offset: int) -> str:
    """The ptxas options string of a PTX entry (informational; empty when absent or odd)."""
    if kind != EntryKind.PTX or options_offset == 0 or options_offset + 8 > len(header):
        return ""
    off, size = struct.unpack_from("<II", header, options_offset)
    raw = header[off : off + size].split(b"\0", 1)[0]
    return raw.decode("utf-8", "replace").strip()


# ELF ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElfSection:
    """A section of an ELF64 image; `data` is empty for NOBITS sections."""

    name: str
    type: int
    data: bytes


def elf_sections(blob: bytes) -> list[ElfSection]:
    """The sections of a little-endian ELF64 image (host executable or cubin)."""
    if len(blob) < 64 or blob[:4] != ELF_MAGIC or blob[4] != 2 or blob[5] != 1:
        raise _invalid("not a little-endian ELF64 image")
    (shoff,) = struct.unpack_from("<Q", blob, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x3A)
    if shnum == 0:
        return []
    if shentsize < 64 or shoff + shnum * shentsize > len(blob) or shstrndx >= shnum:
        raise _invalid("ELF section header table lies outside the image")
    headers = [struct.unpack_from("<IIQQQQIIQQ", blob, shoff + i * shentsize) for i in range(shnum)]
    strtab_off, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    if strtab_off + strtab_size > len(blob):
        raise _invalid("ELF section name table lies outside the image")
    strtab = blob[strtab_off : strtab_off + strtab_size]
    sections = []
    for name_off, sh_type, _flags, _addr, offset, size, *_ in headers:
        name = strtab[name_off:].split(b"\0", 1)[0].decode("utf-8", "replace")
        if sh_type == 8:  # SHT_NOBITS
            data = b""
        elif offset + size > len(blob):
            raise _invalid(f"ELF section {name!r} lies outside the image")
        else:
            data = blob[offset : offset + size]
        sections.append(ElfSection(name=name, type=sh_type, data=data))
    return sections


def elf_image_size(blob: bytes) -> int:
    """Bytes an ELF image occupies, from its headers: the end of whichever of the section
    table, program table, sections or segments lies last (some toolchains put the program
    table after the section table)."""
    if len(blob) < 64 or blob[:4] != ELF_MAGIC or blob[4] != 2:
        raise _invalid("not an ELF64 image")
    phoff, shoff = struct.unpack_from("<QQ", blob, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", blob, 0x36)
    end = max(64, phoff + phnum * phentsize, shoff + shnum * shentsize)
    for i in range(shnum):
        at = shoff + i * shentsize
        if at + 64 > len(blob):
            raise _invalid("ELF section header table is truncated")
        sh_type, offset, size = (
            struct.unpack_from("<I", blob, at + 4)[0],
            *struct.unpack_from("<QQ", blob, at + 0x18),
        )
        if sh_type != 8:
            end = max(end, offset + size)
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 56 > len(blob):
            raise _invalid("ELF program header table is truncated")
        offset, _vaddr, _paddr, filesz = struct.unpack_from("<QQQQ", blob, at + 8)
        end = max(end, offset + filesz)
    return end


def nv_fatbin_section(blob: bytes) -> bytes:
    """The `.nv_fatbin` section of a host executable or shared library built by nvcc: the
    fatbin containers of all its translation units, back to back."""
    for section in elf_sections(blob):
        if section.name == ".nv_fatbin" and section.data:
            return section.data
    raise _invalid("ELF image has no .nv_fatbin section (not built by nvcc?)")


def image_size(image: bytes) -> int:
    """Bytes a module image occupies, from its first bytes, for shipping it whole: the chained
    containers of a fatbin, the extent of an ELF, PTX text up to and including its NUL. A
    wrapper has no size of its own (its fatbin lives elsewhere): INVALID_IMAGE."""
    kind = classify_image(image)
    if kind is ImageKind.FATBIN:
        return fatbin_size(image)
    if kind is ImageKind.ELF:
        return elf_image_size(image)
    if kind is ImageKind.WRAPPER:
        raise _invalid("a fatbin wrapper is sized by the fatbin its data pointer points at")
    end = image.find(b"\0")
    return len(image) if end < 0 else end + 1


# Choosing the code to run ------------------------------------------------------------------


def classify_image(image: bytes) -> ImageKind:
    """What shape of image the app handed over, from its first bytes."""
    if len(image) >= 4:
        (magic,) = struct.unpack_from("<I", image, 0)
        if magic == FATBIN_WRAPPER_MAGIC:
            return ImageKind.WRAPPER
        if magic == FATBIN_MAGIC:
            return ImageKind.FATBIN
        if magic == OLD_FATBIN_MAGIC:
            raise _invalid("pre-CUDA-4 fatbin format is not supported; rebuild with nvcc 11+")
        if image[:4] == ELF_MAGIC:
            return ImageKind.ELF
    return ImageKind.PTX


@dataclass(frozen=True)
class PtxChoice:
    """The PTX picked from an image and where it came from (for log lines)."""

    text: str
    source: str


def select_ptx(entries: list[FatbinEntry], device_arch: int) -> FatbinEntry | None:
    """The PTX entry to run on a device of SM `device_arch`.

    As the driver does, prefer the newest PTX the device can take (arch <= device); a PTX
    interpreter can also run PTX written for a newer arch when nothing else is there, which
    beats refusing the app, so that is the fallback (the lowest such arch: fewest new features).
    Ties go to the earliest entry: a wrapper's own container comes first, and the containers
    chained after it may be other translation units' (in an executable's `.nv_fatbin`).
    """
    ptx = [e for e in entries if e.kind == EntryKind.PTX]
    if not ptx:
        return None
    fitting = [e for e in ptx if e.arch <= device_arch]
    if fitting:
        return max(fitting, key=lambda e: (e.arch, e.code_version))
    return min(ptx, key=lambda e: (e.arch, tuple(-v for v in e.code_version)))


def ptx_from_image(image: bytes, device_arch: int) -> PtxChoice:
    """The PTX text to load for an image given to a module or library load.

    Accepts a fatbin (chained containers), a wrapper header immediately followed by its fatbin,
    an ELF cubin, or PTX text with or without a terminating NUL. SASS-only images are
    CUDA_ERROR_NO_BINARY_FOR_GPU with a log line that says so; malformed ones INVALID_IMAGE.
    """
    kind = classify_image(image)
    if kind is ImageKind.WRAPPER:
        parse_wrapper(image)
        rest = image[WRAPPER_SIZE:]
        if classify_image(rest) is not ImageKind.FATBIN:
            raise _invalid(
                "got a fatbin wrapper without its fatbin; the shim must ship the bytes the "
                "wrapper's data pointer points at"
            )
        image, kind = rest, ImageKind.FATBIN
    if kind is ImageKind.FATBIN:
        entries = parse_fatbin(image)
        chosen = select_ptx(entries, device_arch)
        if chosen is None:
            found = ", ".join(e.describe() for e in entries) or "no entries"
            message = (
                f"fatbin holds no PTX ({found}); the emulated device runs PTX only: rebuild "
                "with PTX embedded (nvcc's default, or -gencode arch=compute_XX,code=compute_XX)"
            )
            log.warning("module load refused: %s", message)
            raise CudaError(CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU, message)
        if chosen.arch > device_arch:
            log.info("running %s on an sm_%d device: no older PTX in the image",
                     chosen.describe(), device_arch)
        return PtxChoice(text=chosen.ptx_text(), source=chosen.describe())
    if kind is ImageKind.ELF:
        machine = struct.unpack_from("<H", image, 18)[0] if len(image) >= 20 else 0
        if machine == EM_CUDA:
            message = (
                "image is a cubin (SASS machine code), which the emulated device cannot run; "
                "load the fatbin or PTX instead"
            )
        else:
            message = "image is a host ELF file, not a cubin, fatbin or PTX"
        log.warning("module load refused: %s", message)
        raise CudaError(
            CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU if machine == EM_CUDA
            else CUresult.CUDA_ERROR_INVALID_IMAGE,
            message,
        )
    text = _decode_ptx(image)
    if ".version" not in text or ".target" not in text:
        raise _invalid("image is neither a fatbin, an ELF cubin nor PTX text")
    return PtxChoice(text=text, source="PTX text")
