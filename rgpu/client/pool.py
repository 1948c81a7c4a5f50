"""The daemon's GPU pool: every GPU of every connected server, in one ordered list.

Applications see the pool as devices 0..N-1. A GPU is identified by (server_id, the server's
GPU index), so two servers never collide; the daemon refuses a second server that reports a
server_id already in the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ORDERINGS = ("LocalFirst", "RemoteFirst", "ByCapability")


@dataclass(frozen=True)
class PoolGpu:
    index: int  # position in the pool: the device number applications see
    server_key: str  # the daemon's name for the server link (its address)
    server_id: int
    server_gpu: int  # the GPU's index on its server
    local: bool
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "server": self.server_key,
            "server_id": self.server_id,
            "server_gpu": self.server_gpu,
            "location": "local" if self.local else f"remote {self.server_key}",
            "name": self.info.get("name", "?"),
            "memory": int(self.info.get("memory", 0)),
            "vulkan": bool(self.info.get("vulkan")),
            "cuda": bool(self.info.get("cuda")),
            "compute_capability": self.info.get("compute_capability"),
            "device_type": self.info.get("device_type", "other"),
            "cuda_index": self.info.get("cuda_index"),
            "vulkan_index": self.info.get("vulkan_index"),
            "uuid": self.info.get("uuid", ""),
        }


@dataclass(frozen=True)
class ServerGpus:
    """One connected server's contribution, in configuration order."""

    server_key: str
    server_id: int
    local: bool
    gpus: Sequence[dict[str, Any]]


_TYPE_RANK = {"discrete": 0, "integrated": 1, "virtual": 2, "other": 3, "cpu": 4}


def _capability_key(info: dict[str, Any]) -> tuple[Any, ...]:
    cc = info.get("compute_capability") or (0, 0)
    return (
        _TYPE_RANK.get(str(info.get("device_type", "other")), 3),
        -int(cc[0]) * 100 - int(cc[1]),
        -int(info.get("memory", 0)),
    )


def build_pool(servers: Sequence[ServerGpus], ordering: str) -> list[PoolGpu]:
    """Order the GPUs: local then remote, remote then local, or most capable first.

    ByCapability ranks discrete before integrated before software devices, then higher
    compute capability, then more memory; ties keep configuration order (the sort is stable).
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"unknown gpu_ordering {ordering!r}; use one of {', '.join(ORDERINGS)}")
    entries: list[tuple[ServerGpus, dict[str, Any]]] = [
        (s, g) for s in servers for g in s.gpus]
    if ordering == "LocalFirst":
        entries.sort(key=lambda e: not e[0].local)
    elif ordering == "RemoteFirst":
        entries.sort(key=lambda e: e[0].local)
    else:
        entries.sort(key=lambda e: _capability_key(e[1]))
    return [PoolGpu(i, s.server_key, s.server_id, int(g.get("index", 0)), s.local, dict(g))
            for i, (s, g) in enumerate(entries)]
