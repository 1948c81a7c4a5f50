"""Settings of rgpu: the `rgpu.toml` file, its defaults and its validation.

The CLI, the server and the client daemon read one file format, so the rules live here once.
Every value is checked for type and range when it is read, because a server that starts with a
typo in its config fails later in a way nobody connects to the file; instead, every mistake is a
`ConfigError` whose text is one line naming the file, the key and the fix.

The dataclasses validate themselves too (in `__post_init__`), so values that arrive from CLI flags
through `dataclasses.replace` obey the same rules and are normalised the same way. Token fields
are left out of repr(), so logging a config never logs a secret.
"""

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from rgpu.errors import RgpuError

__all__ = [
    "CUDA_BACKENDS",
    "DEFAULT_PORT",
    "GPU_ORDERINGS",
    "LOG_LEVELS",
    "QUIC_ENGINES",
    "SERVER_TRANSPORTS",
    "TRANSPORTS",
    "ClientConfig",
    "Config",
    "ConfigError",
    "SecurityConfig",
    "ServerConfig",
    "ServerEntry",
    "TokenConfig",
    "config_search_paths",
    "default_known_servers_path",
    "default_socket_path",
    "default_state_dir",
    "format_address",
    "load_config",
    "normalize_fingerprint",
    "parse_address",
    "parse_config",
    "parse_size",
]

TRANSPORTS = ("quic", "tcp")
SERVER_TRANSPORTS = ("both", "quic", "tcp")
GPU_ORDERINGS = ("LocalFirst", "RemoteFirst", "ByCapability")
CUDA_BACKENDS = ("auto", "nvidia", "emu", "none")
QUIC_ENGINES = ("auto", "aioquic", "qh3")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
DEFAULT_PORT = 9876

_GIB = 1024**3
# Sizes travel in msgpack integers, which are at most 64-bit signed on the other side.
_MAX_SIZE = 2**63 - 1


class ConfigError(RgpuError):
    """A setting a user wrote cannot be used.

    `str()` is one line, "<file>: <key>: <problem and fix>", because the CLI prints it instead of
    a traceback and a user must find the line to change from that alone. `source`, `key` and
    `line` stay available for callers that present the error differently (an editor, a UI).
    It is an `RgpuError`, so the CLI prints it as `rgpu: error: <message>` with no traceback.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.problem = _one_line(problem)
        self.source = source
        self.key = key
        self.line = line
        parts = (_printable(source), _printable(key), self.problem)
        super().__init__(": ".join(part for part in parts if part))


# --- small helpers -------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _printable(text: str | None) -> str | None:
    # A file or key name is shown exactly, with control characters escaped, not collapsed.
    return text if text is None or text.isprintable() else repr(text)[1:-1]


def _is_int(value: object) -> bool:
    # TOML booleans are Python bools, which are ints; `port = true` must not read as port 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: object) -> str:
    """Name a value's TOML type, for messages that must not echo the value (tokens)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time" if value is not None else "nothing"


def _show(value: object) -> str:
    """Render a bad value the way the user wrote it, short enough to keep the message one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    text = repr(value) if isinstance(value, str | int | float | list | tuple) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: object) -> str:
    """`_show` plus the TOML type, for values whose type is what is wrong."""
    return _show(value) if isinstance(value, dict) else f"{_show(value)} ({_kind(value)})"


def _show_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace('"', '\\"') + '"'


def _env_dir(variable: str) -> Path | None:
    # The XDG base-directory spec says relative values are invalid and must be ignored.
    value = os.environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else None


# --- default locations ---------------------------------------------------------------------------


def default_state_dir() -> Path:
    """Where a server keeps its generated certificate and accounting database.

    root gets the system location so a systemd service and an admin shell agree on one place.
    """
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and geteuid() == 0:
        return Path("/var/lib/rgpu")
    return (_env_dir("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "rgpu"


def default_socket_path() -> Path:
    """Where the client daemon listens for shims; per user, so users never share a daemon.

    $RGPU_SOCKET first, as the shims read it, so a daemon, `rgpu run` and the programs it
    starts agree on the socket whatever names it."""
    named = os.environ.get("RGPU_SOCKET", "")
    if named:
        return Path(named)
    runtime = _env_dir("XDG_RUNTIME_DIR")
    if runtime is not None:
        return runtime / "rgpu" / "rgpu.sock"
    return Path(f"/tmp/rgpu-{os.getuid()}/rgpu.sock")


def _config_home() -> Path:
    return _env_dir("XDG_CONFIG_HOME") or Path.home() / ".config"


def default_known_servers_path() -> Path:
    """Where trust-on-first-use fingerprints are recorded; beside the user's config."""
    return _config_home() / "rgpu" / "known_servers"


def config_search_paths() -> list[Path]:
    """Files `load_config()` tries in order when neither a path nor RGPU_CONFIG names one."""
    return [Path("rgpu.toml"), _config_home() / "rgpu" / "rgpu.toml", Path("/etc/rgpu/rgpu.toml")]


# --- value parsers shared with the CLI -----------------------------------------------------------

_SIZE_RE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)")
# Binary for the bare letter and the IEC "iB" forms (GPU memory is sized in powers of two, and
# "16G" for a 16 GiB card is what people type); decimal only for the SI "B" forms.
_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgtp", start=1):
    _SIZE_UNITS[_letter] = _SIZE_UNITS[_letter + "i"] = _SIZE_UNITS[_letter + "ib"] = 1024**_power
    _SIZE_UNITS[_letter + "b"] = 1000**_power


def parse_size(value: int | str) -> int:
    """Read a byte count: 1024, "512MiB", "4GiB", "16G" (= 16 GiB), "1.5GB" (= 1.5e9).

    K/M/G/T/P alone, or with "i"/"iB", are powers of 1024; with "B" they are powers of 1000.
    Fractions round down to whole bytes. Raises ValueError naming the accepted forms.
    """
    expected = 'expected a size like "4GiB", "512MiB", "16G" or a whole number of bytes'
    if _is_int(value):
        assert isinstance(value, int)
        if value < 0:
            raise ValueError(f"{expected}, got {value} (sizes cannot be negative)")
        if value > _MAX_SIZE:
            raise ValueError(f"{expected}, got {value} (too large)")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if match is not None:
            unit = _SIZE_UNITS.get(match["unit"].lower())
            if unit is not None:
                try:
                    size = int(Decimal(match["number"]) * unit)
                except InvalidOperation:  # pragma: no cover - the regex admits only decimals
                    size = -1
                if 0 <= size <= _MAX_SIZE:
                    return size
                raise ValueError(f"{expected}, got {_show(value)} (too large)")
    raise ValueError(f"{expected}, got {_show(value)}")


_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _check_host(host: str) -> str:
    """Accept an IPv4/IPv6 address or a DNS name; raise ValueError saying which rule failed."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from None
        return host
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv4 address") from None
        return host
    name = host[:-1] if host.endswith(".") else host
    if (
        not name
        or len(name) > 253
        or not all(_HOSTNAME_LABEL.fullmatch(label) for label in name.split("."))
    ):
        raise ValueError(f"{host!r} is not a valid host name")
    return host


def _check_port_text(text: str, address: str) -> int:
    if re.fullmatch(r"[0-9]{1,5}", text) and 1 <= int(text) <= 65535:
        return int(text)
    raise ValueError(f"port in {address!r} must be an integer 1-65535, got {text!r}")


def parse_address(address: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split "host:port", "host", "[v6]:port", "[v6]" or a bare IPv6 address into (host, port).

    The host comes back without brackets, as written otherwise. Raises ValueError on bad input.
    """
    if not isinstance(address, str):
        raise ValueError(
            f'expected an address like "gpu-box:9876" as a string, got {_show(address)}'
        )
    if not (_is_int(default_port) and 1 <= default_port <= 65535):
        raise ValueError(f"default port must be an integer 1-65535, got {_show(default_port)}")
    text = address.strip()
    hint = 'expected "host:port", "host" or "[IPv6]:port"'
    if not text:
        raise ValueError(f"empty address; {hint}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{hint}, got {text!r} (missing ']')")
        host, rest = text[1:end], text[end + 1 :]
        if ":" not in host:
            raise ValueError(f"{hint}, got {text!r} (brackets are only for IPv6 addresses)")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{hint}, got {text!r} (unexpected text after ']')")
        port = _check_port_text(rest[1:], text) if rest else default_port
    elif text.count(":") >= 2:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(
                f"{hint}, got {text!r} (an IPv6 address with a port needs brackets: [addr]:port)"
            ) from None
        host, port = text, default_port
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
        port = _check_port_text(port_text, text)
    else:
        host, port = text, default_port
    if not host:
        raise ValueError(f"{hint}, got {text!r} (no host)")
    try:
        _check_host(host)
    except ValueError as exc:
        raise ValueError(f"{hint}, got {text!r} ({exc})") from None
    return host, port


def format_address(host: str, port: int) -> str:
    """The inverse of `parse_address`: brackets IPv6 hosts so the port stays unambiguous."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize_fingerprint(fp: str) -> str:
    """Reduce "sha256:AB:CD:…" or bare hex to 64 lowercase hex digits, the form compared."""
    expected = 'expected a SHA-256 fingerprint, "sha256:" and 64 hex digits (colons allowed)'
    if not isinstance(fp, str):
        raise ValueError(f"{expected}, got {_show(fp)}")
    text = fp.strip()
    if text[:7].lower() == "sha256:":
        text = text[7:]
    digits = text.replace(":", "").lower()
    if len(digits) == 64 and re.fullmatch(r"[0-9a-f]{64}", digits):
        return digits
    raise ValueError(f"{expected}, got {_show(fp)}")


# --- per-setting checks --------------------------------------------------------------------------
# Each takes what a TOML file or a caller may hand in, returns the normalised value, and raises
# ValueError with the problem and the accepted forms (never the key; the caller knows that).

_Check = Callable[[Any], Any]


def _optional(check: _Check) -> _Check:
    def optional(value: Any) -> Any:
        return None if value is None else check(value)

    return optional


def _int_range(low: int, high: int | None = None) -> _Check:
    wanted = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"

    def check(value: Any) -> int:
        if _is_int(value) and value >= low and (high is None or value <= high):
            return int(value)
        raise ValueError(f"expected {wanted}, got {_show(value)}")

    return check


def _choice(options: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> _Check:
    lookup = {option.lower(): option for option in options}
    lookup.update({alias.lower(): canonical for alias, canonical in (aliases or {}).items()})

    def check(value: Any) -> str:
        if isinstance(value, str):
            found = lookup.get(value.strip().lower())
            if found is not None:
                return found
        raise ValueError(f"expected one of {', '.join(options)}, got {_show(value)}")

    return check


def _check_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {_show(value)}")


def _check_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {_show(value)}")


def _seconds(*, positive: bool) -> _Check:
    wanted = "> 0" if positive else ">= 0"

    def check(value: Any) -> float:
        if (_is_int(value) or isinstance(value, float)) and math.isfinite(value):
            if value > 0 or (value == 0 and not positive):
                return float(value)
        raise ValueError(f"expected a number of seconds {wanted} like 1.5, got {_show(value)}")

    return check


def _check_bind(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            return _check_host(text)
        except ValueError:
            pass
    raise ValueError(
        'expected an IP address or host name to listen on, like "0.0.0.0" or "::" '
        f"(the port goes in port), got {_show(value)}"
    )


def _check_path(value: Any) -> Path:
    if isinstance(value, str | os.PathLike) and str(value).strip():
        try:
            return Path(value).expanduser()
        except RuntimeError:  # "~nosuchuser/…"
            pass
    raise ValueError(f"expected a file system path as a non-empty string, got {_show(value)}")


def _check_gpus(value: Any) -> tuple[int, ...]:
    """GPU indices as a list, or as "0,1" (the form of the CLI flag)."""
    items = value
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*(,\s*[0-9]+\s*)*", value):
        items = [int(part) for part in value.split(",")]
    if isinstance(items, list | tuple) and all(_is_int(i) and i >= 0 for i in items):
        if not items:
            raise ValueError(
                "an empty list names no GPU; list indices like [0, 1], or remove the key for all"
            )
        for index, gpu in enumerate(items):
            if gpu in items[:index]:
                raise ValueError(f"GPU {gpu} is listed twice in {_show(value)}")
        return tuple(int(i) for i in items)
    raise ValueError(
        f"expected a list of GPU indices (integers >= 0) like [0, 1], got {_show(value)}"
    )


def _check_size(value: Any) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError(f'expected a size > 0 like "4GiB", got {_show(value)}')
    return size


def _check_token(value: Any) -> str:
    # The value is a secret: messages describe it, never echo it.
    wanted = "expected 64 hex characters (32 random bytes; make one with `rgpu token`)"
    if not isinstance(value, str):
        raise ValueError(f"{wanted}, got {_kind(value)}")
    text = value.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{64}", text):
        return text.lower()
    if re.fullmatch(r"[0-9A-Fa-f]*", text):
        raise ValueError(f"{wanted}, got {len(text)} characters")
    raise ValueError(f"{wanted}, got a value with non-hex characters")


def _check_address(value: Any) -> str:
    parse_address(value)
    return value.strip()


def _check_fingerprint(value: Any) -> str:
    return normalize_fingerprint(value)


_check_log_level = _choice(LOG_LEVELS, {"warning": "warn"})


def _instances(cls: type) -> _Check:
    def check(value: Any) -> Any:
        if isinstance(value, list | tuple) and all(isinstance(item, cls) for item in value):
            return tuple(value)
        raise ValueError(f"expected a sequence of {cls.__name__}, got {_show(value)}")

    return check


def _instance(cls: type) -> _Check:
    def check(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        raise ValueError(f"expected a {cls.__name__}, got {_show(value)}")

    return check


def _rules(check: _Check, *, path: bool = False) -> dict[str, Any]:
    """Field metadata: how the setting validates itself and whether it names a file."""
    return {"check": check, "path": path}


class _Validated:
    """Runs each field's check on construction, so `dataclasses.replace` validates CLI values."""

    _section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):  # type: ignore[arg-type]
            check = spec.metadata.get("check")
            if check is None:
                continue
            value = getattr(self, spec.name)
            try:
                normalized = check(value)
            except ValueError as exc:
                key = f"{self._section}.{spec.name}" if self._section else spec.name
                raise ConfigError(str(exc), key=key) from None
            if normalized is not value:
                object.__setattr__(self, spec.name, normalized)


# --- the settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig(_Validated):
    """`[server]`: how `rgpu server` listens, whom it admits and which GPUs it offers."""

    _section: ClassVar[str] = "server"

    bind: str = field(default="0.0.0.0", metadata=_rules(_check_bind))
    # 0 picks any free port (tests, the daemon's embedded local server).
    port: int = field(default=DEFAULT_PORT, metadata=_rules(_int_range(0, 65535)))
    # None: derived from the certificate, so it is stable across restarts without configuration.
    server_id: int | None = field(default=None, metadata=_rules(_optional(_int_range(0, 65535))))
    max_clients: int = field(default=16, metadata=_rules(_int_range(1)))
    transport: str = field(default="both", metadata=_rules(_choice(SERVER_TRANSPORTS)))
    cert_path: Path | None = field(default=None, metadata=_rules(_optional(_check_path), path=True))
    key_path: Path | None = field(default=None, metadata=_rules(_optional(_check_path), path=True))
    # None: every local GPU.
    expose_gpus: tuple[int, ...] | None = field(
        default=None, metadata=_rules(_optional(_check_gpus))
    )
    state_dir: Path = field(
        default_factory=default_state_dir, metadata=_rules(_check_path, path=True)
    )
    # Plain TCP without TLS; only ever when asked for by name.
    insecure: bool = field(default=False, metadata=_rules(_check_bool))
    cuda: str = field(default="auto", metadata=_rules(_choice(CUDA_BACKENDS)))
    emu_memory: int = field(default=4 * _GIB, metadata=_rules(_check_size))
    quic_engine: str = field(default="auto", metadata=_rules(_choice(QUIC_ENGINES)))
    # Seconds; the server grows it for repeated failures from one address.
    auth_failure_delay: float = field(default=1.0, metadata=_rules(_seconds(positive=False)))


@dataclass(frozen=True)
class ServerEntry(_Validated):
    """One `[[client.servers]]` entry: a server the daemon pools, and how to trust it."""

    _section: ClassVar[str] = "client.servers[]"

    address: str = field(metadata=_rules(_check_address))
    token: str | None = field(default=None, repr=False, metadata=_rules(_optional(_check_token)))
    transport: str = field(default="quic", metadata=_rules(_choice(TRANSPORTS)))
    # Normalised to 64 lowercase hex digits; None: trust on first use via known_servers.
    fingerprint: str | None = field(default=None, metadata=_rules(_optional(_check_fingerprint)))
    insecure: bool = field(default=False, metadata=_rules(_check_bool))

    @property
    def host(self) -> str:
        return parse_address(self.address)[0]

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]


@dataclass(frozen=True)
class ClientConfig(_Validated):
    """`[client]`: what the workstation daemon pools and where apps and trust records find it."""

    _section: ClassVar[str] = "client"

    gpu_ordering: str = field(default="LocalFirst", metadata=_rules(_choice(GPU_ORDERINGS)))
    include_local_gpus: bool = field(default=True, metadata=_rules(_check_bool))
    servers: tuple[ServerEntry, ...] = field(default=(), metadata=_rules(_instances(ServerEntry)))
    socket_path: Path = field(
        default_factory=default_socket_path, metadata=_rules(_check_path, path=True)
    )
    known_servers_path: Path = field(
        default_factory=default_known_servers_path, metadata=_rules(_check_path, path=True)
    )
    # Used for every server entry that has no token of its own.
    token: str | None = field(default=None, repr=False, metadata=_rules(_optional(_check_token)))
    reconnect_max_delay: float = field(default=30.0, metadata=_rules(_seconds(positive=True)))


@dataclass(frozen=True)
class TokenConfig(_Validated):
    """One `[[security.tokens]]` entry: a credential and the scope the server enforces for it."""

    _section: ClassVar[str] = "security.tokens[]"

    token: str = field(repr=False, metadata=_rules(_check_token))
    name: str = field(default="", metadata=_rules(_check_text))
    # None: every exposed GPU.
    allowed_gpus: tuple[int, ...] | None = field(
        default=None, metadata=_rules(_optional(_check_gpus))
    )
    # Bytes of GPU memory all sessions of this token may hold together; None: no limit.
    max_memory: int | None = field(default=None, metadata=_rules(_optional(_check_size)))
    max_clients: int | None = field(default=None, metadata=_rules(_optional(_int_range(1))))


@dataclass(frozen=True)
class SecurityConfig(_Validated):
    """`[security]`: the tokens a server accepts."""

    _section: ClassVar[str] = "security"

    tokens: tuple[TokenConfig, ...] = field(default=(), metadata=_rules(_instances(TokenConfig)))


@dataclass(frozen=True)
class Config(_Validated):
    """Everything one `rgpu.toml` says; `source` is the file it came from (None: defaults)."""

    server: ServerConfig = field(
        default_factory=ServerConfig, metadata=_rules(_instance(ServerConfig))
    )
    client: ClientConfig = field(
        default_factory=ClientConfig, metadata=_rules(_instance(ClientConfig))
    )
    security: SecurityConfig = field(
        default_factory=SecurityConfig, metadata=_rules(_instance(SecurityConfig))
    )
    source: Path | None = field(default=None, metadata={"toml": False})
    log_level: str = field(default="info", metadata=_rules(_check_log_level))


# --- reading files -------------------------------------------------------------------------------


class _Reader:
    """Turns parsed TOML into `Config`, naming the file and dotted key in every error."""

    def __init__(self, source: str, base_dir: Path | None) -> None:
        self.source = source
        self.base_dir = base_dir

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(problem, source=self.source, key=key)

    def table(self, raw: Any, key: str, header: str) -> dict[str, Any]:
        if isinstance(raw, dict):
            return raw
        raise self.error(key, f"expected a table ({header}), got {_got(raw)}")

    def build(
        self,
        cls: type,
        raw: dict[str, Any],
        prefix: str,
        nested: Mapping[str, Callable[[Any, str], Any]] | None = None,
    ) -> Any:
        known = {
            spec.name: spec for spec in dataclasses.fields(cls) if spec.metadata.get("toml", True)
        }
        values: dict[str, Any] = {}
        for name, value in raw.items():
            key = f"{prefix}.{_show_key(name)}" if prefix else _show_key(name)
            spec = known.get(name)
            if spec is None:
                raise self.unknown(key, name, list(known))
            if nested and name in nested:
                values[name] = nested[name](value, key)
                continue
            try:
                checked = spec.metadata["check"](value)
            except ValueError as exc:
                raise self.error(key, str(exc)) from None
            if spec.metadata.get("path") and self.base_dir and not checked.is_absolute():
                # Relative to the file, not to wherever the daemon happens to be started.
                checked = self.base_dir / checked
            values[name] = checked
        missing = [
            name
            for name, spec in known.items()
            if name not in values
            and spec.default is dataclasses.MISSING
            and spec.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise self.error(f"{prefix}.{missing[0]}", "missing; this entry needs it")
        try:
            return cls(**values)
        except ConfigError as exc:  # pragma: no cover - every value was checked above
            raise self.error(exc.key or prefix, exc.problem) from None

    def unknown(self, key: str, name: str, known: list[str]) -> ConfigError:
        problem = f"unknown key (known: {', '.join(known)})"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            problem += f"; did you mean {close[0]}?"
        return self.error(key, problem)

    def config(self, data: dict[str, Any]) -> Config:
        nested = {"server": self.server, "client": self.client, "security": self.security}
        config: Config = self.build(Config, data, "", nested)
        return config

    def server(self, raw: Any, key: str) -> ServerConfig:
        table = self.table(raw, key, "[server]")
        config: ServerConfig = self.build(ServerConfig, table, key)
        if (config.cert_path is None) != (config.key_path is None):
            absent = "key_path" if config.key_path is None else "cert_path"
            raise self.error(
                f"{key}.{absent}",
                "missing; cert_path and key_path go together (remove both to use a self-signed "
                "certificate generated in state_dir)",
            )
        if config.insecure and config.transport == "quic":
            raise self.error(
                f"{key}.insecure",
                'applies only to TCP (QUIC is always encrypted); '
                'set transport = "tcp" or "both", or remove insecure',
            )
        return config

    def client(self, raw: Any, key: str) -> ClientConfig:
        table = self.table(raw, key, "[client]")
        config: ClientConfig = self.build(ClientConfig, table, key, {"servers": self.servers})
        return config

    def servers(self, raw: Any, key: str) -> tuple[ServerEntry, ...]:
        if not isinstance(raw, list):
            raise self.error(key, f"expected an array of tables ([[{key}]]), got {_got(raw)}")
        entries: list[ServerEntry] = []
        seen: dict[tuple[str, int], int] = {}
        for index, item in enumerate(raw):
            item_key = f"{key}[{index}]"
            table = self.table(item, item_key, f'[[{key}]] with address = "host:port"')
            entry: ServerEntry = self.build(ServerEntry, table, item_key)
            if entry.insecure and entry.transport != "tcp":
                raise self.error(
                    f"{item_key}.insecure",
                    'applies only to transport = "tcp" (QUIC is always encrypted); '
                    'set transport = "tcp" or remove insecure',
                )
            where = (entry.host.lower(), entry.port)
            if where in seen:
                raise self.error(
                    f"{item_key}.address",
                    f"same server as {key}[{seen[where]}] "
                    f"({format_address(entry.host, entry.port)}); remove one of them",
                )
            seen[where] = index
            entries.append(entry)
        return tuple(entries)

    def security(self, raw: Any, key: str) -> SecurityConfig:
        table = self.table(raw, key, "[security]")
        config: SecurityConfig = self.build(SecurityConfig, table, key, {"tokens": self.tokens})
        return config

    def tokens(self, raw: Any, key: str) -> tuple[TokenConfig, ...]:
        if not isinstance(raw, list):
            raise self.error(key, f"expected an array of tables ([[{key}]]), got {_got(raw)}")
        entries: list[TokenConfig] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(raw):
            item_key = f"{key}[{index}]"
            table = self.table(item, item_key, f'[[{key}]] with token = "<64 hex>"')
            entry: TokenConfig = self.build(TokenConfig, table, item_key)
            if entry.token in seen:
                raise self.error(
                    f"{item_key}.token",
                    f"same token as {key}[{seen[entry.token]}]; every token must be unique "
                    "(make one with `rgpu token`)",
                )
            seen[entry.token] = index
            entries.append(entry)
        return tuple(entries)


_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigError:
    message = str(exc)
    position = _TOML_POSITION.search(message)
    if position is None:  # pragma: no cover - tomllib always says where
        return ConfigError(f"invalid TOML: {message}", source=source)
    if position[1]:
        line, where = int(position[1]), f"line {position[1]}, column {position[2]}"
    else:
        line = text.count("\n") + 1
        where = f"line {line} (end of file)"
    detail = message[: position.start()]
    if "overwrite" in detail:
        detail += " (a key or table is set twice)"
    return ConfigError(
        f"invalid TOML: {detail}; fix the syntax there (format: toml.io)",
        source=source,
        key=where,
        line=line,
    )


def parse_config(text: str, source: str = "<string>", *, base_dir: Path | None = None) -> Config:
    """Read `rgpu.toml` text; `source` names it in errors, `base_dir` anchors relative paths.

    With no `base_dir`, relative paths stay relative (to the working directory of the reader).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, source) from None
    config = _Reader(source, base_dir).config(data)
    if source.startswith("<") and source.endswith(">"):
        return config
    return dataclasses.replace(config, source=Path(source))


def _read(path: Path, why: str) -> Config:
    label = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no such file{why}", source=label) from None
    except IsADirectoryError:
        raise ConfigError(
            "is a directory; name the rgpu.toml file inside it", source=label
        ) from None
    except PermissionError:
        raise ConfigError(
            "permission denied; make the file readable by this user (it may hold tokens, so "
            "keep it private: chmod 600)",
            source=label,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=label) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8", source=label
        ) from None
    config = parse_config(text, label, base_dir=path.absolute().parent)
    return dataclasses.replace(config, source=path.absolute())


def load_config(path: str | Path | None = None) -> Config:
    """Load the settings file: `path`, else $RGPU_CONFIG, else the first of
    `config_search_paths()` that exists; with none of them, the defaults.

    A file named explicitly (argument or RGPU_CONFIG) must exist; searched files may be absent.
    """
    if path is not None:
        return _read(
            Path(path),
            "; check the path, or copy rgpu.toml.example there and edit it",
        )
    named = os.environ.get("RGPU_CONFIG", "")
    if named:
        return _read(Path(named), " (named by RGPU_CONFIG); fix the path or unset RGPU_CONFIG")
    for candidate in config_search_paths():
        if candidate.is_file():
            return _read(candidate, "")
    return Config()
