"""Tests of rgpu.toml reading: defaults, every key, every error message, the example file."""

import dataclasses
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rgpu import config as config_module
from rgpu.config import (
    CUDA_BACKENDS,
    DEFAULT_PORT,
    GPU_ORDERINGS,
    LOG_LEVELS,
    QUIC_ENGINES,
    SERVER_TRANSPORTS,
    TRANSPORTS,
    ClientConfig,
    Config,
    ConfigError,
    SecurityConfig,
    ServerConfig,
    ServerEntry,
    TokenConfig,
    config_search_paths,
    default_known_servers_path,
    default_socket_path,
    default_state_dir,
    format_address,
    load_config,
    normalize_fingerprint,
    parse_address,
    parse_config,
    parse_size,
)
from rgpu.errors import RgpuError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "rgpu.toml.example"
TOKEN_A = "a" * 64
TOKEN_B = "0123456789abcdef" * 4
FP = "ab" * 32
GIB = 1024**3


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's own rgpu files and XDG settings out of every test."""
    for name in ("RGPU_CONFIG", "RGPU_SOCKET", "XDG_CONFIG_HOME", "XDG_STATE_HOME",
                 "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def error_of(text: str, source: str = "rgpu.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    return info.value


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message


# --- defaults -------------------------------------------------------------------------------------


def test_constants() -> None:
    assert TRANSPORTS == ("quic", "tcp")
    assert GPU_ORDERINGS == ("LocalFirst", "RemoteFirst", "ByCapability")
    assert CUDA_BACKENDS == ("auto", "nvidia", "emu", "none")
    assert SERVER_TRANSPORTS == ("both", "quic", "tcp")
    assert QUIC_ENGINES == ("auto", "aioquic", "qh3")
    assert LOG_LEVELS == ("trace", "debug", "info", "warn", "error")
    assert DEFAULT_PORT == 9876


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cfg = Config()
    assert cfg.server == ServerConfig(
        bind="0.0.0.0",
        port=9876,
        server_id=None,
        max_clients=16,
        transport="both",
        cert_path=None,
        key_path=None,
        expose_gpus=None,
        state_dir=tmp_path / "home/.local/state/rgpu",
        insecure=False,
        cuda="auto",
        emu_memory=4 * GIB,
        quic_engine="auto",
        auth_failure_delay=1.0,
    )
    assert cfg.client == ClientConfig(
        gpu_ordering="LocalFirst",
        include_local_gpus=True,
        servers=(),
        socket_path=Path(f"/tmp/rgpu-{os.getuid()}/rgpu.sock"),
        known_servers_path=tmp_path / "home/.config/rgpu/known_servers",
        token=None,
        reconnect_max_delay=30.0,
    )
    assert cfg.security == SecurityConfig(tokens=())
    assert cfg.source is None
    assert cfg.log_level == "info"
    assert parse_config("") == cfg
    assert parse_config("# only a comment\n") == cfg


def test_entry_defaults() -> None:
    entry = ServerEntry("gpu-box")
    assert (entry.token, entry.transport, entry.fingerprint, entry.insecure) == (
        None,
        "quic",
        None,
        False,
    )
    assert (entry.host, entry.port) == ("gpu-box", 9876)
    token = TokenConfig(TOKEN_A)
    assert (token.name, token.allowed_gpus, token.max_memory, token.max_clients) == (
        "",
        None,
        None,
        None,
    )


def test_state_dir_for_root_and_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/rgpu")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_state_dir() == tmp_path / "home/.local/state/rgpu"
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    assert default_state_dir() == Path("/srv/state/rgpu")
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # invalid per the XDG spec: ignored
    assert default_state_dir() == tmp_path / "home/.local/state/rgpu"


def test_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_socket_path() == Path(f"/tmp/rgpu-{os.getuid()}/rgpu.sock")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_socket_path() == Path("/run/user/1000/rgpu/rgpu.sock")
    monkeypatch.setenv("RGPU_SOCKET", "/srv/rgpu/apps.sock")  # what the shims read, first
    assert default_socket_path() == Path("/srv/rgpu/apps.sock")
    assert parse_config("", "rgpu.toml").client.socket_path == Path("/srv/rgpu/apps.sock")


def test_known_servers_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_known_servers_path() == tmp_path / "home/.config/rgpu/known_servers"
    monkeypatch.setenv("XDG_CONFIG_HOME", "/cfg")
    assert default_known_servers_path() == Path("/cfg/rgpu/known_servers")


def test_default_paths_follow_environment_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are computed per instance, not frozen at import time."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/42")
    assert ClientConfig().socket_path == Path("/run/user/42/rgpu/rgpu.sock")


# --- every key ------------------------------------------------------------------------------------

FULL = f"""
log_level = "debug"

[server]
bind = "::"
port = 7000
server_id = 65535
max_clients = 3
transport = "tcp"
cert_path = "/etc/rgpu/server.crt"
key_path = "/etc/rgpu/server.key"
expose_gpus = [2, 0]
state_dir = "/srv/rgpu"
insecure = true
cuda = "emu"
emu_memory = "512MiB"
quic_engine = "qh3"
auth_failure_delay = 0

[client]
gpu_ordering = "ByCapability"
include_local_gpus = false
socket_path = "/run/rgpu.sock"
known_servers_path = "/srv/known"
token = "{TOKEN_B}"
reconnect_max_delay = 5

[[client.servers]]
address = "gpu1.example.org:9000"
token = "{TOKEN_A}"
transport = "tcp"
fingerprint = "sha256:{FP}"
insecure = true

[[client.servers]]
address = "[fd00::5]"

[[security.tokens]]
token = "{TOKEN_A}"
name = "alice"
allowed_gpus = [0]
max_memory = 1073741824
max_clients = 4

[[security.tokens]]
token = "{TOKEN_B}"
"""


def test_every_key_parsed() -> None:
    cfg = parse_config(FULL, "/etc/rgpu/rgpu.toml")
    assert cfg.source == Path("/etc/rgpu/rgpu.toml")
    assert cfg.log_level == "debug"
    assert cfg.server == ServerConfig(
        bind="::",
        port=7000,
        server_id=65535,
        max_clients=3,
        transport="tcp",
        cert_path=Path("/etc/rgpu/server.crt"),
        key_path=Path("/etc/rgpu/server.key"),
        expose_gpus=(2, 0),
        state_dir=Path("/srv/rgpu"),
        insecure=True,
        cuda="emu",
        emu_memory=512 * 1024**2,
        quic_engine="qh3",
        auth_failure_delay=0.0,
    )
    assert cfg.client == ClientConfig(
        gpu_ordering="ByCapability",
        include_local_gpus=False,
        servers=(
            ServerEntry("gpu1.example.org:9000", TOKEN_A, "tcp", FP, insecure=True),
            ServerEntry("[fd00::5]"),
        ),
        socket_path=Path("/run/rgpu.sock"),
        known_servers_path=Path("/srv/known"),
        token=TOKEN_B,
        reconnect_max_delay=5.0,
    )
    assert cfg.client.servers[1].host == "fd00::5"
    assert cfg.client.servers[1].port == DEFAULT_PORT
    assert cfg.security.tokens == (
        TokenConfig(TOKEN_A, "alice", (0,), GIB, 4),
        TokenConfig(TOKEN_B),
    )
    assert isinstance(cfg.server.auth_failure_delay, float)
    assert isinstance(cfg.client.reconnect_max_delay, float)


def test_inline_tables_are_the_same_as_sections() -> None:
    text = 'server = { port = 1234 }\nclient.servers = [{ address = "h" }]\n' + (
        f'security = {{ tokens = [{{ token = "{TOKEN_A}" }}] }}\n'
    )
    cfg = parse_config(text)
    assert cfg.server.port == 1234
    assert cfg.client.servers == (ServerEntry("h"),)
    assert cfg.security.tokens == (TokenConfig(TOKEN_A),)


@pytest.mark.parametrize(
    ("text", "attribute", "expected"),
    [
        ('[client]\ngpu_ordering = "localfirst"', ("client", "gpu_ordering"), "LocalFirst"),
        ('[client]\ngpu_ordering = "REMOTEFIRST"', ("client", "gpu_ordering"), "RemoteFirst"),
        ('[client]\ngpu_ordering = "bycapability"', ("client", "gpu_ordering"), "ByCapability"),
        ('[server]\ntransport = "TCP"', ("server", "transport"), "tcp"),
        ('[server]\ncuda = "NVIDIA"', ("server", "cuda"), "nvidia"),
        ('[server]\nquic_engine = "AioQuic"', ("server", "quic_engine"), "aioquic"),
        ('log_level = "WARNING"', ("log_level",), "warn"),
        ('log_level = "Trace"', ("log_level",), "trace"),
        ('[server]\nbind = "[::1]"', ("server", "bind"), "::1"),
        ("[server]\nemu_memory = 1024", ("server", "emu_memory"), 1024),
        ('[server]\nexpose_gpus = "0, 3"', ("server", "expose_gpus"), (0, 3)),
        (f'[client]\ntoken = "{TOKEN_B.upper()}"', ("client", "token"), TOKEN_B),
    ],
)
def test_values_are_normalised(text: str, attribute: tuple[str, ...], expected: object) -> None:
    value: object = parse_config(text)
    for name in attribute:
        value = getattr(value, name)
    assert value == expected


def test_fingerprint_in_entry_is_normalised() -> None:
    colons = ":".join(FP.upper()[i : i + 2] for i in range(0, 64, 2))
    cfg = parse_config(f'[[client.servers]]\naddress = "h"\nfingerprint = "SHA256:{colons}"')
    assert cfg.client.servers[0].fingerprint == FP


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "rgpu.toml"
    path.write_text('[server]\ncert_path = "c.pem"\nkey_path = "/abs/k.pem"\nstate_dir = "st"\n')
    cfg = load_config(path)
    assert cfg.server.cert_path == tmp_path / "etc" / "c.pem"
    assert cfg.server.key_path == Path("/abs/k.pem")
    assert cfg.server.state_dir == tmp_path / "etc" / "st"


def test_home_is_expanded(tmp_path: Path) -> None:
    cfg = parse_config('[client]\nknown_servers_path = "~/k"')
    assert cfg.client.known_servers_path == tmp_path / "home" / "k"


def test_tokens_never_appear_in_repr() -> None:
    cfg = parse_config(FULL)
    assert TOKEN_A not in repr(cfg)
    assert TOKEN_B not in repr(cfg)


# --- every validation error -----------------------------------------------------------------------

BAD_VALUES = [
    ('[server]\nport = "abc"', "server.port", "expected an integer 0-65535, got 'abc'"),
    ("[server]\nport = -1", "server.port", "expected an integer 0-65535, got -1"),
    ("[server]\nport = 65536", "server.port", "expected an integer 0-65535, got 65536"),
    ("[server]\nport = true", "server.port", "expected an integer 0-65535, got true"),
    ("[server]\nport = 9876.0", "server.port", "expected an integer 0-65535, got 9876.0"),
    ('[server]\nbind = ""', "server.bind", "expected an IP address or host name"),
    ('[server]\nbind = "0.0.0.0:9876"', "server.bind", "the port goes in port"),
    ('[server]\nbind = "300.1.1.1"', "server.bind", "got '300.1.1.1'"),
    ("[server]\nbind = 1", "server.bind", "got 1"),
    ("[server]\nserver_id = -1", "server.server_id", "expected an integer 0-65535, got -1"),
    ("[server]\nserver_id = 65536", "server.server_id", "expected an integer 0-65535"),
    ("[server]\nmax_clients = 0", "server.max_clients", "expected an integer >= 1, got 0"),
    ('[server]\ntransport = "udp"', "server.transport",
     "expected one of both, quic, tcp, got 'udp'"),
    ("[server]\ncert_path = 5", "server.cert_path", "expected a file system path"),
    ('[server]\ncert_path = ""', "server.cert_path", "expected a file system path"),
    ('[server]\nkey_path = "  "', "server.key_path", "expected a file system path"),
    ("[server]\nexpose_gpus = [-1]", "server.expose_gpus", "expected a list of GPU indices"),
    ("[server]\nexpose_gpus = 0", "server.expose_gpus", "like [0, 1], got 0"),
    ('[server]\nexpose_gpus = ["0"]', "server.expose_gpus", "got ['0']"),
    ("[server]\nexpose_gpus = [true]", "server.expose_gpus", "expected a list of GPU indices"),
    ("[server]\nexpose_gpus = []", "server.expose_gpus", "remove the key for all"),
    ("[server]\nexpose_gpus = [1, 1]", "server.expose_gpus", "GPU 1 is listed twice"),
    ('[server]\nexpose_gpus = "0,x"', "server.expose_gpus", "got '0,x'"),
    ("[server]\nstate_dir = []", "server.state_dir", "expected a file system path"),
    ('[server]\ninsecure = "yes"', "server.insecure", "expected true or false, got 'yes'"),
    ("[server]\ninsecure = 1", "server.insecure", "expected true or false, got 1"),
    ('[server]\ncuda = "rocm"', "server.cuda",
     "expected one of auto, nvidia, emu, none, got 'rocm'"),
    ('[server]\nemu_memory = "lots"', "server.emu_memory", 'expected a size like "4GiB"'),
    ("[server]\nemu_memory = 0", "server.emu_memory", "expected a size > 0"),
    ("[server]\nemu_memory = -5", "server.emu_memory", "cannot be negative"),
    ("[server]\nemu_memory = 1.5", "server.emu_memory", "got 1.5"),
    ('[server]\nquic_engine = "quiche"', "server.quic_engine", "auto, aioquic, qh3"),
    ("[server]\nauth_failure_delay = -1", "server.auth_failure_delay", "seconds >= 0"),
    ("[server]\nauth_failure_delay = nan", "server.auth_failure_delay", "got nan"),
    ("[server]\nauth_failure_delay = inf", "server.auth_failure_delay", "got inf"),
    ('[client]\ngpu_ordering = "Fastest"', "client.gpu_ordering", "LocalFirst, RemoteFirst"),
    ('[client]\ninclude_local_gpus = "no"', "client.include_local_gpus", "true or false"),
    ("[client]\nsocket_path = 1", "client.socket_path", "expected a file system path"),
    ("[client]\nknown_servers_path = false", "client.known_servers_path", "file system path"),
    ('[client]\ntoken = "abc"', "client.token", "got 3 characters"),
    ("[client]\nreconnect_max_delay = 0", "client.reconnect_max_delay", "seconds > 0"),
    ('[client]\nreconnect_max_delay = "1s"', "client.reconnect_max_delay", "got '1s'"),
    (
        '[[client.servers]]\naddress = "h:0"',
        "client.servers[0].address",
        "must be an integer 1-65535, got '0'",
    ),
    ('[[client.servers]]\naddress = ""', "client.servers[0].address", "empty address"),
    ("[[client.servers]]\naddress = 9876", "client.servers[0].address", "as a string"),
    (
        '[[client.servers]]\naddress = "fd00::5:9876:x"',
        "client.servers[0].address",
        "needs brackets",
    ),
    (
        '[[client.servers]]\naddress = "h"\n[[client.servers]]\naddress = "g"\ntransport = "x"',
        "client.servers[1].transport",
        "expected one of quic, tcp, got 'x'",
    ),
    (
        '[[client.servers]]\naddress = "h"\ntoken = 12',
        "client.servers[0].token",
        "got an integer",
    ),
    (
        '[[client.servers]]\naddress = "h"\nfingerprint = "md5:00"',
        "client.servers[0].fingerprint",
        "expected a SHA-256 fingerprint",
    ),
    (
        '[[client.servers]]\naddress = "h"\ninsecure = "true"',
        "client.servers[0].insecure",
        "expected true or false",
    ),
    ('[[security.tokens]]\ntoken = "xyz"', "security.tokens[0].token", "non-hex characters"),
    (
        f'[[security.tokens]]\ntoken = "{TOKEN_A}"\nname = 3',
        "security.tokens[0].name",
        "expected a string, got 3",
    ),
    (
        f'[[security.tokens]]\ntoken = "{TOKEN_A}"\nallowed_gpus = [0.5]',
        "security.tokens[0].allowed_gpus",
        "expected a list of GPU indices",
    ),
    (
        f'[[security.tokens]]\ntoken = "{TOKEN_A}"\nmax_memory = "8 apples"',
        "security.tokens[0].max_memory",
        "expected a size",
    ),
    (
        f'[[security.tokens]]\ntoken = "{TOKEN_A}"\nmax_memory = 0',
        "security.tokens[0].max_memory",
        "expected a size > 0",
    ),
    (
        f'[[security.tokens]]\ntoken = "{TOKEN_A}"\nmax_clients = 0',
        "security.tokens[0].max_clients",
        "expected an integer >= 1, got 0",
    ),
    ('log_level = "verbose"', "log_level", "trace, debug, info, warn, error, got 'verbose'"),
    ("log_level = 3", "log_level", "got 3"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD_VALUES)
def test_bad_value_is_one_line_naming_file_and_key(text: str, key: str, fragment: str) -> None:
    error = error_of(text, "/etc/rgpu/rgpu.toml")
    message = str(error)
    assert_one_line(message)
    assert message.startswith(f"/etc/rgpu/rgpu.toml: {key}: "), message
    assert fragment in message
    assert (error.source, error.key) == ("/etc/rgpu/rgpu.toml", key)


def test_every_setting_has_a_bad_value_test() -> None:
    """A new setting must come with a test of its error message."""
    tested = {key for _, key, _ in BAD_VALUES}
    tested = {re.sub(r"\[\d+\]", "[]", key) for key in tested}
    sections = {
        "server": ServerConfig,
        "client": ClientConfig,
        "client.servers[]": ServerEntry,
        "security.tokens[]": TokenConfig,
    }
    wanted = {"log_level"}
    for prefix, cls in sections.items():
        wanted |= {f"{prefix}.{f.name}" for f in dataclasses.fields(cls) if f.name != "servers"}
    assert wanted <= tested, sorted(wanted - tested)


def test_message_from_the_brief() -> None:
    assert str(error_of('[server]\nport = "abc"', "/etc/rgpu/rgpu.toml")) == (
        "/etc/rgpu/rgpu.toml: server.port: expected an integer 0-65535, got 'abc'"
    )


def test_config_error_is_an_rgpu_error() -> None:
    """The CLI prints RgpuError as one line instead of a traceback."""
    assert isinstance(error_of("[server]\nport = -1"), RgpuError)


def test_tokens_are_never_echoed_in_errors() -> None:
    secret = "f" * 63 + "z"
    message = str(error_of(f'[[security.tokens]]\ntoken = "{secret}"'))
    assert secret not in message and "non-hex" in message
    message = str(error_of(f'[client]\ntoken = "{"e" * 63}"'))
    assert "e" * 63 not in message and "got 63 characters" in message


def test_long_and_multiline_values_stay_on_one_line() -> None:
    message = str(error_of('[server]\ntransport = """\nquic\nquic quic quic quic quic quic\n"""'))
    assert_one_line(message)
    assert len(message) < 200


def test_newline_in_source_name_stays_one_line() -> None:
    assert_one_line(str(error_of("[server]\nport = -1", "odd\nname.toml")))


# --- cross-field rules ----------------------------------------------------------------------------

CROSS = [
    ('[server]\ncert_path = "c.pem"', "server.key_path", "cert_path and key_path go together"),
    ('[server]\nkey_path = "k.pem"', "server.cert_path", "cert_path and key_path go together"),
    ('[server]\ntransport = "quic"\ninsecure = true', "server.insecure", "applies only to TCP"),
    (
        '[[client.servers]]\naddress = "h"\ninsecure = true',
        "client.servers[0].insecure",
        'set transport = "tcp" or remove insecure',
    ),
    (
        '[[client.servers]]\naddress = "H"\n[[client.servers]]\naddress = "h:9876"',
        "client.servers[1].address",
        "same server as client.servers[0] (h:9876)",
    ),
    (
        f'[[security.tokens]]\ntoken = "{TOKEN_A}"\n'
        f'[[security.tokens]]\ntoken = "{TOKEN_A.upper()}"',
        "security.tokens[1].token",
        "same token as security.tokens[0]",
    ),
    ("[[client.servers]]\ntransport = 'tcp'", "client.servers[0].address", "missing"),
    ('[[security.tokens]]\nname = "x"', "security.tokens[0].token", "missing"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), CROSS)
def test_cross_field_rules(text: str, key: str, fragment: str) -> None:
    message = str(error_of(text))
    assert_one_line(message)
    assert message.startswith(f"rgpu.toml: {key}: "), message
    assert fragment in message


def test_insecure_tcp_is_allowed() -> None:
    cfg = parse_config('[server]\ntransport = "tcp"\ninsecure = true')
    assert cfg.server.insecure


# --- unknown keys and wrong table types -----------------------------------------------------------

UNKNOWN = [
    ("prot = 1", "prot", "known: server, client, security, log_level"),
    ("[sever]\nport = 1", "sever", "did you mean server?"),
    ("[server]\nprot = 1", "server.prot", "known: bind, port, server_id,"),
    ("[client]\nserver = []", "client.server", "did you mean servers?"),
    ('[[client.servers]]\naddress = "h"\nhost = "h"', "client.servers[0].host", "known: address"),
    ("[security]\ntoken = 1", "security.token", "known: tokens"),
    (
        f'[[security.tokens]]\ntoken = "{TOKEN_A}"\nmax_mem = 1',
        "security.tokens[0].max_mem",
        "did you mean max_memory?",
    ),
    ("[server.tls]\ncert = 1", "server.tls", "unknown key"),
    ('[server]\n"a.b" = 1', 'server."a.b"', "unknown key"),
    ("source = 'x'", "source", "unknown key"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), UNKNOWN)
def test_unknown_keys_at_every_level(text: str, key: str, fragment: str) -> None:
    message = str(error_of(text))
    assert_one_line(message)
    assert message.startswith(f"rgpu.toml: {key}: unknown key (known: "), message
    assert fragment in message


def test_unknown_key_lists_every_known_key() -> None:
    message = str(error_of("[server]\nprot = 1"))
    for f in dataclasses.fields(ServerConfig):
        assert f.name in message


WRONG_TYPES = [
    ("server = 5", "server", "expected a table ([server]), got 5"),
    ('client = "x"', "client", "expected a table ([client])"),
    ("security = []", "security", "expected a table ([security])"),
    (
        '[client]\nservers = "x"',
        "client.servers",
        "expected an array of tables ([[client.servers]])",
    ),
    ("[client]\nservers = { address = 'h' }", "client.servers", "got a table"),
    ('[client]\nservers = ["h:1"]', "client.servers[0]", "expected a table"),
    ("[security]\ntokens = 1", "security.tokens", "expected an array of tables"),
    ("[security]\ntokens = [1]", "security.tokens[0]", "expected a table"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), WRONG_TYPES)
def test_wrong_table_types(text: str, key: str, fragment: str) -> None:
    message = str(error_of(text))
    assert_one_line(message)
    assert message.startswith(f"rgpu.toml: {key}: "), message
    assert fragment in message


# --- TOML syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[server]\nport = 1\nbind = = 2\n", 3),
        ("[server\nport = 1\n", 1),
        ("[server]\nport = 1\nport = 2\n", 3),
        ('a = "unterminated\n', 1),
        ("\n\nx = [", 3),
    ],
)
def test_toml_syntax_error_names_file_and_line(text: str, line: int) -> None:
    error = error_of(text, "/etc/rgpu/rgpu.toml")
    message = str(error)
    assert_one_line(message)
    assert message.startswith(f"/etc/rgpu/rgpu.toml: line {line}"), message
    assert "invalid TOML" in message
    assert error.line == line


def test_duplicate_key_says_so() -> None:
    assert "set twice" in str(error_of("[server]\nport = 1\nport = 2\n"))


# --- sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1024, 1024),
        ("1024", 1024),
        ("512MiB", 512 * 1024**2),
        ("4GiB", 4 * GIB),
        ("16G", 16 * GIB),
        ("16g", 16 * GIB),
        ("16Gi", 16 * GIB),
        ("1.5GB", 1_500_000_000),
        ("1.5GiB", 3 * GIB // 2),
        ("2 KB", 2000),
        ("2k", 2048),
        ("1TiB", 1024**4),
        ("1PB", 1000**5),
        ("7B", 7),
        (" 3MiB ", 3 * 1024**2),
        (".5KiB", 512),
        ("1.0009KB", 1000),
        ("1.", 1),  # fractions of a byte round down
    ],
)
def test_parse_size(value: int | str, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "GiB",
        "-1",
        "1.2.3GiB",
        "4 GiBs",
        "4XB",
        "1e9",
        "4_096",
        True,
        1.5,
        None,
        [1],
        -1,
        2**63,
        "9999999999PiB",
    ],
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size like"):
        parse_size(value)  # type: ignore[arg-type]


UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KiB": 1024,
    "KB": 1000,
    "MiB": 1024**2,
    "MB": 1000**2,
    "G": 1024**3,
    "GiB": 1024**3,
    "GB": 1000**3,
    "TiB": 1024**4,
    "TB": 1000**4,
}


@given(st.integers(min_value=0, max_value=2**22), st.sampled_from(sorted(UNITS)), st.booleans())
def test_parse_size_round_trip(number: int, unit: str, space: bool) -> None:
    text = f"{number}{' ' if space and unit else ''}{unit}"
    assert parse_size(text) == number * UNITS[unit]
    assert parse_size(number) == number
    assert parse_size(str(number)) == number


@given(st.integers(min_value=0, max_value=2**30), st.integers(min_value=0, max_value=999))
def test_parse_size_fractions_are_exact(whole: int, thousandths: int) -> None:
    assert parse_size(f"{whole}.{thousandths:03d}GB") == whole * 10**9 + thousandths * 10**6


# --- addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu-box:9000", ("gpu-box", 9000)),
        ("gpu-box", ("gpu-box", 9876)),
        ("gpu-box.example.org.", ("gpu-box.example.org.", 9876)),
        ("10.0.0.5:1", ("10.0.0.5", 1)),
        ("10.0.0.5", ("10.0.0.5", 9876)),
        ("[::1]:9876", ("::1", 9876)),
        ("[::1]", ("::1", 9876)),
        ("::1", ("::1", 9876)),
        ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
        ("  host_1:80  ", ("host_1", 80)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


def test_parse_address_default_port() -> None:
    assert parse_address("h", default_port=1) == ("h", 1)
    assert parse_address("[::1]", 2) == ("::1", 2)
    with pytest.raises(ValueError, match="default port"):
        parse_address("h", 0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty address"),
        ("h:", "got ''"),
        ("h:0", "1-65535"),
        ("h:65536", "1-65535"),
        ("h:+80", "1-65535"),
        ("h:80x", "1-65535"),
        (":80", "no host"),
        ("[::1", "missing ']'"),
        ("[::1]x", "unexpected text after ']'"),
        ("[host]:80", "only for IPv6"),
        ("[::g]:80", "not a valid IPv6 address"),
        ("fd00::1:80:zz", "needs brackets"),
        ("256.1.1.1:80", "not a valid IPv4 address"),
        ("bad host:80", "not a valid host name"),
        ("-bad:80", "not a valid host name"),
        ("a..b", "not a valid host name"),
        ("x" * 64 + ".org", "not a valid host name"),
    ],
)
def test_parse_address_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_address(text)


def test_parse_address_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="as a string"):
        parse_address(9876)  # type: ignore[arg-type]


_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_HOSTNAMES = (
    st.lists(_LABEL, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not re.fullmatch(r"[0-9.]+", name))
)
_HOSTS = st.one_of(_HOSTNAMES, st.ip_addresses().map(str))


@given(_HOSTS, st.integers(min_value=1, max_value=65535))
def test_parse_address_round_trip(host: str, port: int) -> None:
    assert parse_address(format_address(host, port)) == (host, port)
    assert parse_address(format_address(host, port), default_port=1) == (host, port)


@given(_HOSTS)
def test_address_without_port_gets_the_default(host: str) -> None:
    bracketed = f"[{host}]" if ":" in host else host
    assert parse_address(bracketed) == (host, DEFAULT_PORT)


def test_format_address() -> None:
    assert format_address("::1", 9876) == "[::1]:9876"
    assert format_address("h", 1) == "h:1"


# --- fingerprints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        FP,
        FP.upper(),
        f"sha256:{FP}",
        f"SHA256:{FP.upper()}",
        ":".join(FP[i : i + 2] for i in range(0, 64, 2)),
        "sha256:" + ":".join(FP.upper()[i : i + 2] for i in range(0, 64, 2)),
        f"  {FP}\n",
    ],
)
def test_normalize_fingerprint(text: str) -> None:
    assert normalize_fingerprint(text) == FP


@pytest.mark.parametrize(
    "text", ["", FP[:-2], FP + "00", "sha1:" + FP, "g" * 64, f"sha256:sha256:{FP}", 5]
)
def test_normalize_fingerprint_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="expected a SHA-256 fingerprint"):
        normalize_fingerprint(text)  # type: ignore[arg-type]


# --- constructing dataclasses directly (CLI overrides) --------------------------------------------


def test_replace_validates_and_normalises() -> None:
    server = dataclasses.replace(
        ServerConfig(), transport="TCP", expose_gpus="0,1", cert_path="~/c", emu_memory="1GiB"
    )
    assert server.transport == "tcp"
    assert server.expose_gpus == (0, 1)
    assert server.cert_path == Path.home() / "c"
    assert server.emu_memory == GIB
    entry = ServerEntry("h", fingerprint=f"sha256:{FP.upper()}")
    assert entry.fingerprint == FP
    client = dataclasses.replace(ClientConfig(), gpu_ordering="remotefirst", servers=[entry])
    assert client.gpu_ordering == "RemoteFirst"
    assert client.servers == (entry,)


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: dataclasses.replace(ServerConfig(), port=-1), "server.port"),
        (lambda: ServerConfig(max_clients=0), "server.max_clients"),
        (lambda: ServerEntry("h:x"), "client.servers[].address"),
        (lambda: ClientConfig(servers=("h",)), "client.servers"),
        (lambda: TokenConfig("short"), "security.tokens[].token"),
        (lambda: SecurityConfig(tokens=(TOKEN_A,)), "security.tokens"),
        (lambda: Config(server=ClientConfig()), "server"),
        (lambda: Config(log_level="loud"), "log_level"),
    ],
)
def test_direct_construction_raises_config_error(make: object, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()  # type: ignore[operator]
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert_one_line(str(info.value))


def test_dataclasses_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerConfig().port = 1  # type: ignore[misc]


# --- finding and loading the file -----------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_explicit_path(tmp_path: Path) -> None:
    path = write(tmp_path / "x" / "my.toml", "[server]\nport = 1111\n")
    cfg = load_config(str(path))
    assert cfg.server.port == 1111
    assert cfg.source == path


def test_explicit_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'nope.toml'}: no such file; ")
    assert "rgpu.toml.example" in message
    assert_one_line(message)


def test_error_inside_loaded_file_names_it(tmp_path: Path) -> None:
    path = write(tmp_path / "etc/rgpu.toml", "[server]\nport = -1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: server.port: ")):
        load_config(path)


def test_rgpu_config_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path / "rgpu.toml", "[server]\nport = 1\n")
    named = write(tmp_path / "named.toml", "[server]\nport = 2\n")
    monkeypatch.setenv("RGPU_CONFIG", str(named))
    assert load_config().server.port == 2
    # An explicit argument beats the environment.
    assert load_config(tmp_path / "rgpu.toml").server.port == 1


def test_rgpu_config_env_missing_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(tmp_path / "rgpu.toml", "")
    monkeypatch.setenv("RGPU_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"no such file \(named by RGPU_CONFIG\); .*unset"):
        load_config()


def test_empty_rgpu_config_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path / "rgpu.toml", "[server]\nport = 3\n")
    monkeypatch.setenv("RGPU_CONFIG", "")
    assert load_config().server.port == 3


def test_search_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert config_search_paths() == [
        Path("rgpu.toml"),
        xdg / "rgpu" / "rgpu.toml",
        Path("/etc/rgpu/rgpu.toml"),
    ]
    user = write(xdg / "rgpu" / "rgpu.toml", "[server]\nport = 20\n")
    local = write(tmp_path / "rgpu.toml", "[server]\nport = 10\n")
    assert load_config().server.port == 10
    assert load_config().source == local
    local.unlink()
    assert load_config().server.port == 20
    assert load_config().source == user


def test_search_without_xdg_uses_dot_config(tmp_path: Path) -> None:
    assert config_search_paths()[1] == tmp_path / "home/.config/rgpu/rgpu.toml"
    write(tmp_path / "home/.config/rgpu/rgpu.toml", "[server]\nport = 30\n")
    assert load_config().server.port == 30


def test_search_reaches_the_system_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    system = write(tmp_path / "etc/rgpu/rgpu.toml", "[server]\nport = 40\n")
    paths = [tmp_path / "none1.toml", tmp_path / "none2.toml", system]
    monkeypatch.setattr(config_module, "config_search_paths", lambda: paths)
    assert load_config().server.port == 40


def test_nothing_found_gives_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config_module, "config_search_paths", lambda: [tmp_path / "none.toml"])
    assert load_config() == Config()


def test_searched_directory_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "rgpu.toml").mkdir()
    monkeypatch.setattr(
        config_module, "config_search_paths", lambda: [Path("rgpu.toml"), tmp_path / "none"]
    )
    assert load_config() == Config()


def test_explicit_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (PermissionError(13, "Permission denied"), "permission denied; make the file readable"),
        (OSError(5, "Input/output error"), "cannot read: Input/output error"),
    ],
)
def test_unreadable_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: OSError, fragment: str
) -> None:
    # Simulated: permissions do not stop root, who may run these tests.
    path = write(tmp_path / "rgpu.toml", "")

    def fail(self: Path) -> bytes:
        raise error

    monkeypatch.setattr(Path, "read_bytes", fail)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {fragment}")):
        load_config(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "rgpu.toml"
    path.write_bytes(b'log_level = "\xff"\n')
    with pytest.raises(ConfigError, match=r"rgpu.toml: not UTF-8 text \(bad byte at offset 13\)"):
        load_config(path)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "rgpu.toml"
    path.write_bytes(b'\xef\xbb\xbflog_level = "error"\n')
    assert load_config(path).log_level == "error"


# --- the example file -----------------------------------------------------------------------------


def example_text() -> str:
    return EXAMPLE.read_text()


def test_example_loads_and_matches_documented_defaults() -> None:
    cfg = load_config(EXAMPLE)
    defaults = Config()
    assert cfg.source == EXAMPLE
    assert cfg.log_level == defaults.log_level
    assert cfg.server == defaults.server
    assert dataclasses.replace(cfg.client, servers=()) == defaults.client
    (entry,) = cfg.client.servers
    assert (entry.host, entry.port, entry.transport) == ("127.0.0.1", DEFAULT_PORT, "quic")
    (token,) = cfg.security.tokens
    # The example client entry and the example token match, so the example works end to end.
    assert entry.token == token.token
    assert token.allowed_gpus == (0,) and token.max_memory == 8 * GIB


def _example_settings() -> list[tuple[str, str, str, bool]]:
    """(section, key, value, commented) for each setting line of the example."""
    settings = []
    section = ""
    for line in example_text().splitlines():
        header = re.fullmatch(r"\[\[?([a-z.]+)\]\]?", line)
        if header:
            section = header[1]
            continue
        setting = re.fullmatch(r"(# )?([a-z_]+) = (.+)", line)
        if setting:
            settings.append((section, setting[2], setting[3], setting[1] is not None))
    return settings


def test_example_documents_every_setting() -> None:
    documented = {(section, key) for section, key, _, _ in _example_settings()}
    sections = {
        "server": ServerConfig,
        "client": ClientConfig,
        "client.servers": ServerEntry,
        "security.tokens": TokenConfig,
    }
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            if f.name != "servers":
                assert (section, f.name) in documented, f"{section}.{f.name} is not in the example"
    assert ("", "log_level") in documented


def test_example_commented_settings_are_valid_when_uncommented() -> None:
    partner = {"cert_path": 'key_path = "k"', "key_path": 'cert_path = "c"'}
    checked = 0
    for section, key, value, commented in _example_settings():
        if not commented or "<" in value:  # placeholders such as "<64 hex digits>"
            continue
        text = f"[{section}]\n{key} = {value}\n{partner.get(key, '')}\n"
        assert getattr(getattr(parse_config(text), section), key) is not None
        checked += 1
    assert checked >= 6


def test_example_names_every_cli_flag() -> None:
    text = example_text()
    flags = [
        "-b / --bind",
        "-p / --port",
        "--server-id",
        "--max-clients",
        "--transport",
        "--cert",
        "--key",
        "--expose-gpus 0,1",
        "--state-dir",
        "--insecure",
        "--cuda",
        "--emu-memory",
        "--quic-engine",
        "--token",
        "--gpu-ordering",
        "--include-local-gpus / --no-local-gpus",
        "-s / --server",
        "-t / --token",
        "--fingerprint",
        "--socket",
        "--known-servers",
        "--log-level",
        "RGPU_LOG",
        "RGPU_CONFIG",
    ]
    for flag in flags:
        assert flag in text, flag


def test_example_every_setting_has_default_and_override() -> None:
    """Each setting's comment block says its default and the flag that overrides it."""
    lines = example_text().splitlines()
    section = ""
    checked = 0
    for index, line in enumerate(lines):
        header = re.fullmatch(r"\[\[?([a-z.]+)\]\]?", line)
        if header:
            section = header[1]
        if not re.fullmatch(r"(# )?[a-z_]+ = .+", line):
            continue
        block: list[str] = []
        for previous in reversed(lines[:index]):
            if re.fullmatch(r"# [a-z_]+ = .+", previous) and not block:
                continue  # several commented settings under one comment (cert_path, key_path)
            if not previous.startswith("#") or re.fullmatch(r"# [a-z_]+ = .+", previous):
                break
            block.append(previous)
        comment = " ".join(block)
        checked += 1
        if "Required" in comment:
            continue
        assert "Default" in comment, line
        if section != "security.tokens":  # token scopes have no flags; --token adds unscoped ones
            assert "CLI" in comment or "--" in comment, line
    assert checked >= 30
