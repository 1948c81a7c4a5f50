"""Errors a user can cause, each rendered as one line naming the cause and the fix.

The CLI catches :class:`RgpuError` and prints ``rgpu: error: <message>``; anything else is a
bug and is reported with a traceback only at ``RGPU_LOG=debug`` or lower.
"""

from __future__ import annotations


class RgpuError(Exception):
    """A failure with a one-line, user-facing explanation."""

    exit_code = 1


class AuthError(RgpuError):
    """The token was refused, or the peer could not prove it holds the token."""


class FingerprintMismatch(RgpuError):
    """The server presented a certificate other than the pinned one."""


class ConnectError(RgpuError):
    """A server or the daemon could not be reached."""


class RemoteError(RgpuError):
    """The peer answered a request with an ERROR message."""

    def __init__(self, code: str, message: str, body: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = body or {}
