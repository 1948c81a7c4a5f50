"""Logging set from ``RGPU_LOG`` (trace|debug|info|warn|error) or ``--log-level``."""

from __future__ import annotations

import logging
import os
import sys

TRACE = 5
LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO,
          "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR}

logging.addLevelName(TRACE, "TRACE")


def level_from(value: str | None, default: str = "info") -> int:
    name = (value or os.environ.get("RGPU_LOG") or default).strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {name!r}; use one of trace, debug, info, warn, "
                         "error (RGPU_LOG or --log-level)")
    return LEVELS[name]


def setup(value: str | None = None, default: str = "info") -> int:
    level = level_from(value, default)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party libraries stay quiet unless debugging: QUIC engines log peer closes as
    # warnings that rgpu already reports in its own words.
    for noisy in ("quic", "aioquic", "qh3", "asyncio"):
        logging.getLogger(noisy).setLevel(level if level <= logging.DEBUG else logging.ERROR)
    return level
