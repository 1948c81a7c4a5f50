"""Run `rgpu server` (argv as for `rgpu`) with the Vulkan route the server gets from issue 5.

Until `RgpuServer._execute` sends `vk*` calls to `rgpu.server.vulkan.vulkan_call` itself, this
launcher installs exactly that route before the CLI starts; once server.py has it, the
launcher changes nothing and the test runs the server unmodified.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any


def install_route() -> None:
    from rgpu.server import server as server_module
    from rgpu.server.vulkan import (
        IsolatedBackend,
        VulkanBackend,
        open_vulkan_backend,
        vulkan_call,
    )

    server_class: Any = server_module.RgpuServer
    if "vulkan" in inspect.getsource(server_class._execute):
        return
    original = server_class._execute
    opened: dict[str, VulkanBackend | IsolatedBackend | None] = {}

    def _execute(self: Any, session: Any, fn: str, args: list[Any]) -> Any:
        if fn.startswith("vk"):
            if "backend" not in opened:
                opened["backend"] = open_vulkan_backend(isolate=True)
            return vulkan_call(opened["backend"], session, fn, args)
        return original(self, session, fn, args)

    server_class._execute = _execute


if __name__ == "__main__":
    install_route()
    from rgpu.cli import main

    sys.argv[0] = "rgpu"
    main()
