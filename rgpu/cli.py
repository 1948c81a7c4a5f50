"""The `rgpu` command line: server, client daemon, info, status, token.

Every config setting has a flag that overrides it. User errors print one line,
``rgpu: error: <cause and fix>``, and exit 1; tracebacks appear only with RGPU_LOG=debug.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from . import __version__, logs
from .config import Config, ConfigError, ServerEntry, TokenConfig, load_config, parse_address
from .errors import RgpuError

log = logging.getLogger("rgpu.cli")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rgpu: share GPUs over the network (CUDA and Vulkan).",
                  pretty_exceptions_enable=False)

T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("-c", "--config", help="rgpu.toml to read")]
LogOpt = Annotated[str | None, typer.Option("--log-level",
                                            help="trace|debug|info|warn|error (or RGPU_LOG)")]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"rgpu: error: {message}", err=True)
    raise typer.Exit(code)


def _run(main: Callable[[], Awaitable[T]], uvloop_ok: bool = False) -> T:
    """Run a coroutine; turn user errors into one line and Ctrl-C into a clean exit."""
    try:
        return _run_loop(main, uvloop_ok)
    except RgpuError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug: one line, the traceback at debug level
        log.debug("unexpected error", exc_info=True)
        _fail(f"unexpected {type(exc).__name__}: {exc} (run with RGPU_LOG=debug for details)")
    raise AssertionError("unreachable")


def _run_loop(main: Callable[[], Awaitable[T]], uvloop_ok: bool = False) -> T:
    import asyncio  # not at the top: `rgpu run` and `rgpu token` need no event loop

    if uvloop_ok:
        try:
            import uvloop

            return uvloop.run(main())  # type: ignore[no-any-return]
        except ImportError:
            pass
    return asyncio.run(main())  # type: ignore[arg-type]


def _uvloop_ok(quic_engine: str, quic_used: bool = True) -> bool:
    """uvloop speeds up TLS and qh3 round trips; aioquic's pacing misbehaves under it."""
    if not quic_used:
        return True
    from .net.quic import load_engine

    try:
        return load_engine(quic_engine).name != "aioquic"
    except RgpuError:
        return False


def _load(config: Path | None, log_level: str | None, default: str | None = None) -> Config:
    """Read the config and set up logging: --log-level, else RGPU_LOG, else ``default`` (quiet
    commands such as `rgpu info` use "warn"), else the config file's log_level."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _fail(str(exc), 2)
        raise
    try:
        logs.setup(log_level or os.environ.get("RGPU_LOG") or default or cfg.log_level)
    except ValueError as exc:
        _fail(str(exc), 2)
    return cfg


# The flag that sets each config field, for error messages about command-line values.
FLAG_OF = {
    "port": "--port", "bind": "--bind", "cert_path": "--cert", "key_path": "--key",
    "transport": "--transport", "server_id": "--server-id", "max_clients": "--max-clients",
    "expose_gpus": "--expose-gpus", "state_dir": "--state-dir", "insecure": "--insecure",
    "cuda": "--cuda", "emu_memory": "--emu-memory", "quic_engine": "--quic-engine",
    "auth_failure_delay": "--auth-failure-delay", "gpu_ordering": "--gpu-ordering",
    "include_local_gpus": "--include-local-gpus", "socket_path": "--socket",
    "known_servers_path": "--known-servers", "token": "--token",
    "reconnect_max_delay": "--reconnect-max-delay", "fingerprint": "--fingerprint",
    "address": "--server",
}


def _flag_error(exc: ConfigError) -> str:
    field = (getattr(exc, "key", None) or "").rsplit(".", 1)[-1]
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{FLAG_OF.get(field, field or 'command line')}: {problem}"


def _override(obj: T, **values: Any) -> T:
    """dataclasses.replace with the flags that were given; validation errors name the flag."""
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return obj
    try:
        return dataclasses.replace(obj, **given)  # type: ignore[type-var]
    except ConfigError as exc:
        _fail(_flag_error(exc), 2)
        raise


@app.command()
def version() -> None:
    """Print the rgpu version."""
    typer.echo(f"rgpu {__version__}")


@app.command()
def token(name: Annotated[str, typer.Option("--name", help="a label for the token")] = "") -> None:
    """Print a new token and the TOML snippet that admits it on a server."""
    from .wire.auth import generate_token

    tok = generate_token()
    typer.echo(tok)
    typer.echo("")
    typer.echo("# add to the server's rgpu.toml:")
    typer.echo("[[security.tokens]]")
    typer.echo(f'token = "{tok}"')
    typer.echo(f"name = {json.dumps(name)}")
    typer.echo("# allowed_gpus = [0, 1]   # default: all GPUs")
    typer.echo('# max_memory = "16GiB"    # default: unlimited')


@app.command()
def server(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option("-p", "--port", help="port (UDP for QUIC, TCP "
                                             "for TLS) [9876]")] = None,
    bind: Annotated[str | None, typer.Option("-b", "--bind", help="address to listen on "
                                             "[0.0.0.0]")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="TLS certificate (PEM)")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="TLS private key (PEM)")] = None,
    pid_file: Annotated[str | None, typer.Option("--pid-file", help="write the pid here")] = None,
    transport: Annotated[str | None, typer.Option("--transport", help="both|quic|tcp")] = None,
    server_id: Annotated[int | None, typer.Option("--server-id", help="0-65535; default "
                                                  "from the certificate")] = None,
    max_clients: Annotated[int | None, typer.Option("--max-clients")] = None,
    expose_gpus: Annotated[str | None, typer.Option("--expose-gpus",
                                                    help="comma-separated GPU indices")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir")] = None,
    insecure: Annotated[bool | None, typer.Option("--insecure", help="plain TCP without TLS "
                                                  "(unsafe)")] = None,
    cuda: Annotated[str | None, typer.Option("--cuda", help="auto|nvidia|emu|none")] = None,
    emu_memory: Annotated[str | None, typer.Option("--emu-memory",
                                                   help="emulated device memory, e.g. 4GiB")
                          ] = None,
    quic_engine: Annotated[str | None, typer.Option("--quic-engine",
                                                    help="auto|qh3|aioquic")] = None,
    tokens: Annotated[list[str] | None, typer.Option("--token", help="admit this token "
                                                     "(repeatable)")] = None,
    auth_failure_delay: Annotated[float | None, typer.Option(
        "--auth-failure-delay", help="seconds a repeated failed login is held back [1]")] = None,
    log_level: LogOpt = None,
) -> None:
    """Serve this machine's GPUs to authenticated clients."""
    cfg = _load(config, log_level)
    from .config import parse_size

    mem = None
    if emu_memory is not None:
        try:
            mem = parse_size(emu_memory)
        except ValueError as exc:
            _fail(f"--emu-memory: {exc}", 2)
    scfg = _override(cfg.server, port=port, bind=bind, cert_path=cert, key_path=key,
                     transport=transport, server_id=server_id, max_clients=max_clients,
                     expose_gpus=expose_gpus, state_dir=state_dir,
                     insecure=insecure, cuda=cuda, emu_memory=mem, quic_engine=quic_engine,
                     auth_failure_delay=auth_failure_delay)
    if scfg.insecure and scfg.transport == "quic":
        _fail("--insecure needs --transport tcp or both: QUIC is always encrypted", 2)
    sec = cfg.security
    if tokens:
        try:
            extra = tuple(TokenConfig(token=t, name="command line") for t in tokens)
        except ConfigError as exc:
            _fail(_flag_error(exc), 2)
            raise
        sec = dataclasses.replace(sec, tokens=sec.tokens + extra)
    cfg = dataclasses.replace(cfg, server=scfg, security=sec)

    async def main() -> None:
        from .server.server import RgpuServer
        from .server.server import pid_file as write_pid

        srv = RgpuServer(cfg)
        await srv.start()
        remove_pid = write_pid(pid_file)
        assert srv.cert is not None
        from .net.tls import format_fingerprint

        print(f"rgpu server listening on {scfg.bind}:{srv.port} "
              f"({', '.join(srv.ports)}), server_id {srv.server_id}", flush=True)
        print(f"certificate fingerprint {format_fingerprint(srv.cert.fingerprint)}", flush=True)
        import asyncio

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await srv.stop()
            remove_pid()

    _run(main, _uvloop_ok(scfg.quic_engine, scfg.transport != "tcp"))


def _server_entry(address: str, token: str | None, transport: str | None,
                  fingerprint: str | None, insecure: bool | None,
                  base: ServerEntry | None = None) -> ServerEntry:
    try:
        if base is not None:
            return _override(base, token=token, transport=transport, fingerprint=fingerprint,
                             insecure=insecure)
        return ServerEntry(address=address, token=token, transport=transport or "quic",
                           fingerprint=fingerprint, insecure=bool(insecure))
    except ConfigError as exc:
        _fail(_flag_error(exc), 2)
        raise


@app.command()
def info(
    server: Annotated[str, typer.Option("-s", "--server", help="HOST:PORT of the server")],
    token: Annotated[str | None, typer.Option("-t", "--token", help="access token")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    transport: Annotated[str | None, typer.Option("--transport", help="quic|tcp")] = None,
    fingerprint: Annotated[str | None, typer.Option("--fingerprint",
                                                    help="pin the server certificate")] = None,
    insecure: Annotated[bool | None, typer.Option("--insecure")] = None,
    known_servers: Annotated[Path | None, typer.Option("--known-servers")] = None,
    quic_engine: Annotated[str | None, typer.Option("--quic-engine")] = None,
    config: ConfigOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Show a server's GPUs."""
    cfg = _load(config, log_level, "warn")
    base = next((s for s in cfg.client.servers if s.address == server), None)
    entry = _server_entry(server, token or (base.token if base else cfg.client.token),
                          transport, fingerprint, insecure, base)
    if entry.token is None:
        _fail(f"no token for {server}: pass -t TOKEN (make one on the server with `rgpu token`)",
              2)
    try:
        host, port = parse_address(entry.address)
    except (ConfigError, ValueError) as exc:
        _fail(f"--server: {exc}", 2)
        raise

    async def main() -> dict[str, Any]:
        from .net import connect_server
        from .net.tls import KnownServers
        from .wire import MessageKind

        peer = await connect_server(
            host, port, token=entry.token, transport=entry.transport,
            fingerprint=entry.fingerprint, insecure=entry.insecure,
            known_servers=KnownServers(known_servers or cfg.client.known_servers_path),
            quic_engine=quic_engine or "auto", name="rgpu info")
        try:
            reply = await peer.request(MessageKind.CONTROL, {"op": "info"}, timeout=30)
        finally:
            peer.close("bye", "done")
        result: dict[str, Any] = reply.body
        result["transport"] = peer.transport_name
        return result

    result = _run(main)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    from .server.discovery import GpuInfo, format_gpu_lines

    typer.echo(f"Server {server} ({result.get('hostname', '?')}, server_id "
               f"{result.get('server_id')}, rgpu {result.get('rgpu_version')}, "
               f"{result.get('transport')})")
    typer.echo(format_gpu_lines([GpuInfo.from_dict(g) for g in result.get("gpus", [])]))


@app.command()
def client(
    servers: Annotated[list[str] | None, typer.Option("-s", "--server",
                                                      help="HOST:PORT (repeatable)")] = None,
    token: Annotated[str | None, typer.Option("-t", "--token",
                                              help="token for servers without one")] = None,
    config: ConfigOpt = None,
    transport: Annotated[str | None, typer.Option("--transport", help="quic|tcp for -s "
                                                  "servers")] = None,
    fingerprint: Annotated[str | None, typer.Option("--fingerprint",
                                                    help="pin (for a single -s server)")] = None,
    insecure: Annotated[bool | None, typer.Option("--insecure")] = None,
    gpu_ordering: Annotated[str | None, typer.Option(
        "--gpu-ordering", help="LocalFirst|RemoteFirst|ByCapability")] = None,
    include_local_gpus: Annotated[bool | None, typer.Option(
        "--include-local-gpus/--no-local-gpus")] = None,
    socket_path: Annotated[Path | None, typer.Option("--socket", help="Unix socket path")
                           ] = None,
    known_servers: Annotated[Path | None, typer.Option("--known-servers")] = None,
    quic_engine: Annotated[str | None, typer.Option("--quic-engine")] = None,
    reconnect_max_delay: Annotated[float | None, typer.Option(
        "--reconnect-max-delay", help="longest wait between reconnect attempts [30]")] = None,
    log_level: LogOpt = None,
) -> None:
    """Run the client daemon: pool servers' GPUs for local applications."""
    cfg = _load(config, log_level)
    entries = list(cfg.client.servers)
    for addr in servers or []:
        base = next((e for e in entries if e.address == addr), None)
        entry = _server_entry(addr, token if base is None or base.token is None else None,
                              transport, fingerprint, insecure, base)
        if base is None:
            entries.append(entry)
        else:
            entries[entries.index(base)] = entry
    ccfg = _override(cfg.client, gpu_ordering=gpu_ordering,
                     include_local_gpus=include_local_gpus, socket_path=socket_path,
                     known_servers_path=known_servers, token=token,
                     reconnect_max_delay=reconnect_max_delay)
    ccfg = dataclasses.replace(ccfg, servers=tuple(entries))
    cfg = dataclasses.replace(cfg, client=ccfg)

    async def main() -> None:
        from .client.daemon import Daemon

        daemon = Daemon(cfg, quic_engine=quic_engine or cfg.server.quic_engine)
        await daemon.start()
        print(f"rgpu client daemon listening on {ccfg.socket_path}", flush=True)
        import asyncio

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await daemon.stop()

    engine = quic_engine or cfg.server.quic_engine
    _run(main, _uvloop_ok(engine, any(e.transport == "quic" for e in ccfg.servers)))


def _daemon_request(socket_path: Path | None, body: dict[str, Any], config: Path | None,
                    log_level: str | None) -> Any:
    cfg = _load(config, log_level, "warn")
    path = socket_path or cfg.client.socket_path

    async def main() -> Any:
        from .net import connect_local
        from .wire import MessageKind

        peer = await connect_local(path, name="rgpu cli")
        try:
            reply = await peer.request(MessageKind.CONTROL, body, timeout=30)
        finally:
            peer.close("bye", "done")
        return reply.body

    return _run(main)


SocketOpt = Annotated[Path | None, typer.Option("--socket", help="daemon socket")]


@app.command()
def status(socket_path: SocketOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False,
           config: ConfigOpt = None, log_level: LogOpt = None) -> None:
    """Show the daemon's servers and GPU pool."""
    st = _daemon_request(socket_path, {"op": "status"}, config, log_level)
    if as_json:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    typer.echo(f"rgpu daemon: {len(st['servers'])} server(s), {len(st['gpus'])} GPU(s), "
               f"ordering {st['ordering']}, {st.get('apps', 0)} app connection(s)")
    typer.echo("Servers:")
    for s in st["servers"]:
        sid = s.get("server_id")
        typer.echo(f"  {s['address']} [{s['transport']}] {s['state']}"
                   + (f" server_id {sid}" if sid is not None else "")
                   + (f" - {s['error']}" if s.get("error") else ""))
    typer.echo("GPUs:")
    for g in st["gpus"]:
        typer.echo(f"  GPU {g['index']}: {g['name']} ({g['location']}, VRAM "
                   f"{g['memory'] / 2**30:.1f} GiB, Vulkan: {str(g['vulkan']).lower()}, "
                   f"CUDA: {str(g['cuda']).lower()})")
    unsupported = st.get("unsupported_calls") or {}
    if unsupported:
        typer.echo("Unsupported calls hit by apps:")
        for name, count in sorted(unsupported.items(), key=lambda kv: -kv[1]):
            typer.echo(f"  {name}: {count}")


@app.command("add-server")
def add_server(address: str, token: Annotated[str | None, typer.Option("-t", "--token")] = None,
               transport: Annotated[str, typer.Option("--transport")] = "quic",
               fingerprint: Annotated[str | None, typer.Option("--fingerprint")] = None,
               socket_path: SocketOpt = None, config: ConfigOpt = None,
               log_level: LogOpt = None) -> None:
    """Add a server to the running daemon's pool."""
    reply = _daemon_request(socket_path, {"op": "add_server", "address": address,
                                          "token": token, "transport": transport,
                                          "fingerprint": fingerprint}, config, log_level)
    typer.echo(f"added {reply['address']}")


@app.command("remove-server")
def remove_server(address: str, socket_path: SocketOpt = None, config: ConfigOpt = None,
                  log_level: LogOpt = None) -> None:
    """Remove a server from the running daemon's pool."""
    reply = _daemon_request(socket_path, {"op": "remove_server", "address": address}, config,
                            log_level)
    typer.echo(f"removed {reply['address']}")


def _shim_env(socket: Path) -> dict[str, str]:
    """Variables that make a program use rgpu's shims and this daemon."""
    from .codegen.shimlib import shim_library_dir, shim_library_path

    env = {"RGPU_SOCKET": str(socket)}
    lib = shim_library_path()
    preload = os.environ.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else str(lib)
    ld_path = os.environ.get("LD_LIBRARY_PATH", "")
    libdir = str(shim_library_dir())
    env["LD_LIBRARY_PATH"] = f"{libdir}:{ld_path}" if ld_path else libdir
    from .codegen.icdlib import icd_environment

    try:
        env.update(icd_environment())  # VK_ICD_FILENAMES / VK_DRIVER_FILES
    except RgpuError as exc:  # a CUDA-only install (built without Vulkan headers)
        log.warning("%s; Vulkan programs will not use rgpu", exc)
    return env


def _daemon_status(path: Path, timeout: float = 5.0) -> dict[str, Any] | None:
    """The daemon's status, or None when no daemon answers on `path`.

    A blocking socket driving the sans-IO connection: `rgpu run` asks this before every
    program, and an event loop (and the network stack's imports) would cost more than the
    exchange itself."""
    import socket as so
    import time

    from .wire import (
        Connection,
        ConnectionClosed,
        ConnectionConfig,
        MessageKind,
        MessageReceived,
        Role,
        State,
    )

    deadline = time.monotonic() + timeout
    sock = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        conn = Connection(ConnectionConfig(Role.CLIENT, require_auth=False, name="rgpu cli"))
        conn.initiate()
        sent = False
        while time.monotonic() < deadline:
            for bufs in conn.data_to_send().values():
                sock.sendall(b"".join(bytes(b) for b in bufs))
            while (ev := conn.next_event()) is not None:
                if isinstance(ev, ConnectionClosed):
                    return None
                if isinstance(ev, MessageReceived) and ev.frame.request == 1:
                    body = ev.frame.body
                    if ev.frame.kind is MessageKind.ERROR:
                        return None
                    return body if isinstance(body, dict) else {}
            if not sent and conn.state is State.ESTABLISHED:
                conn.send(MessageKind.CONTROL, {"op": "status"}, request=1)
                sent = True
                continue
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(1 << 16)
            if not data:
                return None
            conn.receive_data(data)
        return None
    except OSError:
        return None
    finally:
        sock.close()


def _daemon_alive(path: Path) -> bool:
    return _daemon_status(path, timeout=2.0) is not None


def _pool_ready(status: dict[str, Any]) -> bool:
    """The daemon has added its servers, and every one is connected or the pool has a GPU."""
    if status.get("ready") is False:
        return False
    pending = [s for s in status.get("servers", []) if s.get("state") != "connected"]
    return not pending or bool(status.get("gpus"))


def _ensure_daemon(cfg: Config, socket: Path, servers: list[str], token: str | None,
                   transport: str | None) -> dict[str, Any] | None:
    """Use the daemon on `socket`, or start one for the configured (or given) servers.

    Returns the status of a daemon that was already running (None for a new one)."""
    status = _daemon_status(socket)
    if status is not None:
        if servers:
            log.info("a daemon is already running on %s; -s is ignored", socket)
        return status
    if not servers and not cfg.client.servers:
        _fail(f"no rgpu daemon at {socket} and no servers configured; start one with "
              "`rgpu client -s HOST:PORT -t TOKEN`, or pass -s/-t to `rgpu run`")
    import subprocess
    import time

    args = [sys.executable, "-m", "rgpu.cli", "client", "--socket", str(socket)]
    if cfg.source is not None:
        args += ["-c", str(cfg.source)]
    for s in servers:
        args += ["-s", s]
    if token:
        args += ["-t", token]
    if transport:
        args += ["--transport", transport]
    logdir = socket.parent
    logdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logfile = logdir / "daemon.log"
    with open(logfile, "ab") as out:
        subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                         start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _daemon_alive(socket):
            return None
        time.sleep(0.2)
    _fail(f"the rgpu daemon did not start within 15 s; see {logfile}")
    return None


def _wait_for_pool(socket: Path, timeout: float) -> None:
    """Give a freshly started daemon a moment to connect its servers."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _daemon_status(socket)
        if status is not None and _pool_ready(status):
            return
        time.sleep(0.2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    servers: Annotated[list[str] | None, typer.Option("-s", "--server",
                                                      help="servers for a new daemon")] = None,
    token: Annotated[str | None, typer.Option("-t", "--token")] = None,
    transport: Annotated[str | None, typer.Option("--transport")] = None,
    socket_path: SocketOpt = None,
    config: ConfigOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Run a program on the pooled GPUs: rgpu run [-s HOST:PORT -t TOKEN] -- CMD [ARGS...]."""
    cmd = list(ctx.args)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        _fail("nothing to run: rgpu run -- CMD [ARGS...]", 2)
    cfg = _load(config, log_level, "warn")
    socket = socket_path or cfg.client.socket_path
    try:
        status = _ensure_daemon(cfg, socket, servers or [], token, transport)
        if status is None or not _pool_ready(status):
            _wait_for_pool(socket, 10)
        env = dict(os.environ)
        env.update(_shim_env(socket))
    except RgpuError as exc:
        _fail(str(exc))
        raise
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as exc:
        _fail(f"cannot run {cmd[0]}: {exc.strerror}", 127)


@app.command()
def env(socket_path: SocketOpt = None, config: ConfigOpt = None,
        log_level: LogOpt = None) -> None:
    """Print the shell exports that make programs use rgpu (eval "$(rgpu env)")."""
    import shlex

    cfg = _load(config, log_level, "warn")
    socket = socket_path or cfg.client.socket_path
    try:
        variables = _shim_env(socket)
    except RgpuError as exc:
        _fail(str(exc))
        raise
    for k, v in variables.items():
        typer.echo(f"export {k}={shlex.quote(v)}")


def main() -> None:
    try:
        app()
    except RgpuError as exc:  # raised outside _run (argument handling)
        typer.echo(f"rgpu: error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
