"""The one exception the PTX machine raises.

Every failure a kernel or its caller can cause is an :class:`EmuFault` whose ``kind`` maps to
one CUresult in the CUDA-semantics layer above (``illegal_address`` becomes
``CUDA_ERROR_ILLEGAL_ADDRESS``, ``invalid_ptx`` becomes ``CUDA_ERROR_INVALID_PTX`` ...), and whose
message is one line that names the kernel, the PTX line and the instruction, so a user can find
the bug in their source without a debugger.
"""

from __future__ import annotations

FAULT_KINDS = frozenset(
    {
        "illegal_address",
        "misaligned_address",
        "not_supported",
        "barrier_divergence",
        "invalid_ptx",
        "launch_failed",
        "assert",
        "out_of_memory",
        "invalid_value",
    }
)


class EmuFault(Exception):
    """A failure of the emulated device, with a machine-readable ``kind``.

    ``kind`` is one of :data:`FAULT_KINDS`; ``message`` is the user-facing line.
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown EmuFault kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"EmuFault({self.kind!r}, {self.message!r})"
