"""The facts reply against an independent witness: `vulkaninfo --json` on the same driver.

Every property and feature struct vulkaninfo prints must be in the facts (so the ICD can print
the same later), with the same values; so must every extension, queue family and format.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from vkapp import Ids, create_instance

from rgpu.api import vk_generated as schema
from rgpu.api.vk_wire import unpack


def _canonical(name: str) -> str:
    return schema.STRUCT_ALIASES.get(name, name)


def _compare(name: str, ours: Any, theirs: dict[str, Any], path: str,
             mismatches: list[str]) -> int:
    """Compare a wire struct with vulkaninfo's JSON object; returns the values compared."""
    fields = {f.name: f for f in schema.STRUCTS[_canonical(name)].fields}
    values = unpack(_canonical(name), ours)
    compared = 0
    for key, want in theirs.items():
        f = fields.get(key)
        if f is None:
            continue
        got = values[key]
        where = f"{path}.{key}"
        if f.shape == "val" and f.kind == "s" and isinstance(want, dict):
            compared += _compare(f.type, got, want, where, mismatches)
        elif f.shape == "chars" and isinstance(want, str):
            compared += 1
            if got != want:
                mismatches.append(f"{where}: {got!r} != {want!r}")
        elif f.shape == "fixed" and isinstance(want, list) and all(
                isinstance(x, (int, float)) for x in want):
            compared += 1
            if not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(got, want, strict=True)):
                mismatches.append(f"{where}: {got!r} != {want!r}")
        elif f.shape == "val" and isinstance(want, (bool, int, float)):
            compared += 1
            if not math.isclose(float(got), float(want), rel_tol=1e-6):
                mismatches.append(f"{where}: {got!r} != {want!r}")
    return compared


@pytest.fixture(scope="module")
def vulkaninfo(tmp_path_factory: pytest.TempPathFactory, vk_backend: Any) -> dict[str, Any]:
    tool = shutil.which("vulkaninfo")
    if tool is None:
        pytest.skip("vulkaninfo is not installed (apt-get install vulkan-tools)")
    out = tmp_path_factory.mktemp("vulkaninfo") / "device0.json"
    env = {**os.environ, "NODEVICE_SELECT": "1"}  # os.environ is pinned to the host drivers
    subprocess.run([tool, "--json=0", "-o", str(out)], env=env, capture_output=True,
                   timeout=120, check=False)
    if not Path(out).exists():
        pytest.skip("vulkaninfo --json wrote nothing")
    device: dict[str, Any] = json.loads(out.read_text())["capabilities"]["device"]
    return device


@pytest.fixture(scope="module")
def facts_device(vk_backend: Any, vulkaninfo: dict[str, Any]) -> dict[str, Any]:
    s = vk_backend.open_session("facts")
    try:
        instance = create_instance(s.call, Ids())
        facts = s.call("vkRgpuGetPhysicalDeviceFacts", [instance])[1]
    finally:
        s.close()
    name = vulkaninfo["properties"]["VkPhysicalDeviceProperties"]["deviceName"]
    for dev in facts["physical_devices"]:
        props = unpack("VkPhysicalDeviceProperties2", dev["properties"])["properties"]
        if unpack("VkPhysicalDeviceProperties", props)["deviceName"] == name:
            result: dict[str, Any] = dev
            return result
    pytest.fail(f"vulkaninfo's device {name!r} is not in the facts")


def _chain(wire: Any, root: str, base: str) -> dict[str, Any]:
    top = unpack(root, wire)
    out = {base: top[next(k for k in top if k not in ("pNext",))]}
    for stype, members in top["pNext"] or ():
        out[schema.STYPES[stype]] = members
    return out


@pytest.mark.parametrize("what, root, base", [
    ("properties", "VkPhysicalDeviceProperties2", "VkPhysicalDeviceProperties"),
    ("features", "VkPhysicalDeviceFeatures2", "VkPhysicalDeviceFeatures"),
])
def test_every_struct_vulkaninfo_prints_is_in_the_facts(
        vulkaninfo: dict[str, Any], facts_device: dict[str, Any], what: str, root: str,
        base: str) -> None:
    ours = _chain(facts_device[what], root, base)
    missing = [n for n in vulkaninfo[what] if _canonical(n) not in ours]
    assert not missing, f"vulkaninfo prints {missing}, the facts lack them"
    mismatches: list[str] = []
    compared = sum(_compare(n, ours[_canonical(n)], v, n, mismatches)
                   for n, v in vulkaninfo[what].items())
    assert not mismatches, "\n".join(mismatches)
    assert compared > (100 if what == "properties" else 50), compared


def test_extensions_queues_and_formats_match(vulkaninfo: dict[str, Any],
                                             facts_device: dict[str, Any]) -> None:
    assert {e[0]: e[1] for e in facts_device["extensions"]} == vulkaninfo["extensions"]
    families = [unpack("VkQueueFamilyProperties",
                       unpack("VkQueueFamilyProperties2", q)["queueFamilyProperties"])
                for q in facts_device["queue_families"]]
    theirs = vulkaninfo["queueFamiliesProperties"]
    assert len(families) == len(theirs)
    for ours, want in zip(families, theirs, strict=True):
        assert ours["queueCount"] == want["VkQueueFamilyProperties"]["queueCount"]
    bits = schema.ENUMS["VkFormatFeatureFlagBits"]
    formats = {f: unpack("VkFormatProperties", unpack("VkFormatProperties2", p)[
        "formatProperties"]) for f, p in facts_device["formats"]}
    checked = 0
    for name, props in vulkaninfo["formats"].items():
        want = props["VkFormatProperties"]
        got = formats[schema.ENUMS["VkFormat"][name]]
        for key in ("linearTilingFeatures", "optimalTilingFeatures", "bufferFeatures"):
            assert got[key] == sum(bits[b] for b in want[key]), (name, key)
            checked += 1
    assert checked > 100


def test_facts_without_an_application_name_the_same_devices(vk_backend: Any) -> None:
    from rgpu.server.vulkan import collect_facts

    facts = collect_facts(vk_backend)
    s = vk_backend.open_session("app")
    try:
        ids = Ids()
        instance = create_instance(s.call, ids)
        pds = s.call("vkEnumeratePhysicalDevices", [instance, None, None])[1]
        assert [d["id"] for d in facts["physical_devices"]] == pds
        assert all(pd >> 63 for pd in pds)
        second = create_instance(s.call, ids)  # another instance: other ids, same devices
        others = s.call("vkEnumeratePhysicalDevices", [second, None, None])[1]
        assert len(others) == len(pds) and not set(others) & set(pds)
        groups = s.call("vkEnumeratePhysicalDeviceGroups", [second, None, None])[1]
        assert {pd for g in groups for pd in g[2][: g[1]]} == set(others)
    finally:
        s.close()
    assert vk_backend.live == 0
