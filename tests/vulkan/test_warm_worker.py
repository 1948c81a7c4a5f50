"""The isolated backend's warm spare worker and its cache of facts replies."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from vkapp import Ids, create_instance, make_device

from rgpu.api.vk_wire import struct

FACTS = "vkRgpuGetPhysicalDeviceFacts"


@pytest.fixture
def isolated(vk_backend: Any) -> Iterator[Any]:
    from rgpu.server.vulkan import open_vulkan_backend

    backend = open_vulkan_backend(isolate=True)
    yield backend
    backend.close()


def _spare(backend: Any, not_pid: int | None = None, timeout: float = 60.0) -> Any:
    """The backend's spare worker once it is started and ready (and not ``not_pid``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = backend._spare
        if w is not None and w.process.pid != not_pid and w.conn.poll(0):
            return w
        time.sleep(0.02)
    raise AssertionError("no spare Vulkan worker was started")


def test_a_session_takes_the_warm_spare_and_a_new_one_starts(isolated: Any) -> None:
    spare = _spare(isolated)
    others = {p.pid for p in mp.active_children()} - {spare.process.pid}
    s = isolated.open_session("takes the spare")
    try:
        assert s.pid == spare.process.pid
        ids = Ids()
        create_instance(s.call, ids)
        nxt = _spare(isolated, not_pid=s.pid)
        assert nxt.process.is_alive() and nxt.process.pid != s.pid
    finally:
        s.close()
    assert not s.process.is_alive()
    for _ in range(3):
        isolated.open_session("short").close()
    time.sleep(0.5)
    mine = [p for p in mp.active_children()
            if p.name == "rgpu-vulkan worker" and p.pid not in others]
    assert len(mine) == 1  # at most one spare
    isolated.close()
    assert isolated._spare is None
    assert not any(p.is_alive() for p in mine)


def test_a_dead_spare_is_replaced(isolated: Any) -> None:
    spare = _spare(isolated)
    os.kill(spare.process.pid, signal.SIGKILL)
    spare.process.join(5)
    s = isolated.open_session("after a dead spare")
    try:
        assert s.lost is None and s.pid != spare.process.pid
        _, _, device = make_device(s.call, Ids())
        assert device
        assert _spare(isolated, not_pid=s.pid).process.is_alive()
    finally:
        s.close()


def _facts(backend: Any, app: str = "rgpu test", indexes: list[int] | None = None
           ) -> tuple[Any, Any]:
    s = backend.open_session("facts", indexes)
    info = struct("VkInstanceCreateInfo", pApplicationInfo=struct(
        "VkApplicationInfo", pApplicationName=app, apiVersion=(1 << 22) | (3 << 12)))
    s.call("vkCreateInstance", [info, None, 7])
    return s, s.call(FACTS, [7])


def test_facts_of_identical_instances_come_from_the_cache(isolated: Any) -> None:
    s1, first = _facts(isolated)
    s1.close()
    assert len(isolated.facts_cache) == 1
    s2, second = _facts(isolated)
    try:
        assert second == first
        assert len(isolated.facts_cache) == 1
        # the worker knows the physical devices the cached reply names
        pd = second[1]["physical_devices"][0]["id"]
        info = struct("VkDeviceCreateInfo", pQueueCreateInfos=[
            struct("VkDeviceQueueCreateInfo", queueFamilyIndex=0, queueCount=1,
                   pQueuePriorities=[1.0])])
        assert s2.call("vkCreateDevice", [pd, info, None, 9]) == [0]
    finally:
        s2.close()
    s3, _ = _facts(isolated, app="another application")  # drivers may key on the name
    s3.close()
    s4, hidden = _facts(isolated, indexes=[])  # other visible devices: other ids
    s4.close()
    assert hidden[1]["physical_devices"] == []
    assert len(isolated.facts_cache) == 3


def test_a_second_instance_has_its_own_facts(isolated: Any) -> None:
    s, first = _facts(isolated)
    try:
        info = struct("VkInstanceCreateInfo", pApplicationInfo=struct(
            "VkApplicationInfo", pApplicationName="rgpu test", apiVersion=(1 << 22) | (3 << 12)))
        s.call("vkCreateInstance", [info, None, 8])
        second = s.call(FACTS, [8])
        a = [d["id"] for d in first[1]["physical_devices"]]
        b = [d["id"] for d in second[1]["physical_devices"]]
        assert a and b and not set(a) & set(b)  # the instance's ordinal is in its ids
    finally:
        s.close()
