"""`livecode serve | worker | init-db | keys`: read Settings once, then start the part asked for.

`livecode run | languages` are the client (livecode/client/terminal.py): they read no Settings
and import no part of the server, so that they start in tens of milliseconds.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys

from livecode import __version__
from livecode.client import terminal

# `livecode run` imports nothing beyond the client (livecode/client/terminal.py): each module
# a server command needs is imported by that command. typing's TYPE_CHECKING costs 3 ms of
# every start, and type checkers read this constant the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from pathlib import Path
    from typing import Any

    import uvicorn
    from starlette.types import ASGIApp

    from livecode.config import Settings
    from livecode.store import ApiKey, Store

LOGGER_NAME = "livecode"

# A frame carries at most a source (256 KiB) or stdin (1 MiB) plus JSON escaping; past this
# uvicorn closes the socket, below it our own size checks answer with `too_large`.
WS_MAX_FRAME_BYTES = 8 << 20
GIL_SWITCH_INTERVAL_S = 0.0005
# A server holds many long-lived objects (every socket's), and Python's default thresholds
# (700, 10, 10) had its collector traverse them all every few chunks of a run followed by
# 1,000 sockets: 7 full collections of up to 167 ms and ~1.2 s of GC in one such benchmark,
# landing inside the writes of a chunk (issue 14, fan-out p99). Collected 14x less often, what
# was allocated before serving frozen out of every collection. A worker process likewise: its
# runs/s moved within the noise (B/A 1.057 and 0.988, the order swapped, session 10).
GC_THRESHOLDS = (10_000, 20, 10)
# A key's name: the tenant, in the store's `owner` columns and in logs.
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The quotas a key may override, by flag; help names the environment's default.
QUOTA_FLAGS = {
    "runs_per_minute": "runs started a minute (LIVECODE_TENANT_RUNS_PER_MINUTE)",
    "max_running": "executions running at once (LIVECODE_TENANT_MAX_RUNNING)",
    "max_queued": "executions queued at once (LIVECODE_TENANT_MAX_QUEUED)",
    "max_sessions": "sessions held (LIVECODE_TENANT_MAX_SESSIONS)",
}
NO_KEYS_BEYOND_LOOPBACK = (
    "livecode: refusing to serve on {host} without API keys: anyone who can reach port {port} "
    "could run programs on this machine.\n"
    "  Create a key:             livecode keys create NAME   (or set LIVECODE_API_KEYS)\n"
    "  Or, knowingly, serve everyone without keys: LIVECODE_ALLOW_ANONYMOUS=true "
    "(or serve --insecure-no-keys)"
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line: `livecode serve | worker | init-db | keys | run | languages`.

    For a client `command` (run, languages), only the client's subcommands: each subcommand's
    parser costs about a millisecond to build, and `livecode run` must start fast.
    """
    parser = argparse.ArgumentParser(prog="livecode", description=__doc__)
    parser.add_argument("--version", action="version", version=f"livecode {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    if command in terminal.COMMANDS:
        terminal.add_commands(commands)
        return parser
    serve = commands.add_parser("serve", help="HTTP + WebSocket server (embedded: also workers)")
    serve.add_argument("--host", help="listen address (LIVECODE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (LIVECODE_PORT, default 8000)")
    serve.add_argument(
        "--insecure-no-keys",
        action="store_true",
        help="serve beyond loopback without API keys (LIVECODE_ALLOW_ANONYMOUS=true)",
    )
    worker = commands.add_parser("worker", help="Dramatiq worker process (distributed mode)")
    worker.add_argument("--threads", type=int, help="executions at once (LIVECODE_WORKER_THREADS)")
    commands.add_parser("init-db", help="apply schema.sql to the configured PostgreSQL database")
    keys = commands.add_parser("keys", help="API keys: each is a tenant with its own quotas")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="make a key and print it (once: only its hash is kept)"
    )
    create.add_argument("name", help="the key's name: its tenant, shown in logs")
    actions.add_parser("list", help="name, prefix, created, last used, limits of every key")
    revoke = actions.add_parser("revoke", help="revoke a key (servers refuse it within seconds)")
    revoke.add_argument("name")
    set_limits = actions.add_parser("set-limits", help="change a key's quotas ('default' resets)")
    set_limits.add_argument("name")
    for action, default_word in ((create, None), (set_limits, "default")):
        for name, meaning in QUOTA_FLAGS.items():
            action.add_argument(
                "--" + name.replace("_", "-"),
                type=_quota(default_word),
                metavar="N" if default_word is None else "N|default",
                help=meaning,
            )
    terminal.add_commands(commands)
    return parser


def _quota(default_word: str | None) -> Any:
    """An argparse type: a positive integer, or `default_word` (-> 0: back to the default)."""

    def parse(raw: str) -> int:
        if default_word is not None and raw == default_word:
            return 0
        if not raw.isdigit() or int(raw) <= 0:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a positive integer")
        return int(raw)

    return parse


def main(argv: list[str] | None = None) -> int:
    argv, program_args = terminal.split_program_args(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if args.command in terminal.COMMANDS:
        args.program_args = program_args
        return terminal.main(args)
    if program_args:
        parser.error(f"unrecognized arguments: -- {' '.join(program_args)}")

    # Imported here: Settings pulls in runners and its sandbox (~50 ms), which clients skip.
    from livecode import logs
    from livecode.config import ConfigError, Settings

    try:
        settings = Settings.from_env(
            os.environ,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            worker_threads=getattr(args, "threads", None),
            allow_anonymous=True if getattr(args, "insecure_no_keys", False) else None,
        )
    except ConfigError as exc:
        print(f"livecode: {exc}", file=sys.stderr)
        return 2
    # The event loop, the worker threads and their output pumps share one GIL and are all
    # waiting on I/O; a thread that becomes ready should not wait the default 5 ms for a
    # busy one to let go (measured: -1.5 ms on the embedded median run -> finished).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "serve":
        return _serve(settings)
    if args.command == "worker":
        return _work(settings)
    if args.command == "keys":
        return _keys(settings, args)
    return _init_db(settings)


def _serve(settings: Settings) -> int:
    import logging

    from livecode.app import create_app

    refusal = _schema_refusal(settings)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2

    if not is_loopback(settings.host) and not _has_keys(settings):
        if not settings.allow_anonymous:
            message = NO_KEYS_BEYOND_LOOPBACK.format(host=settings.host, port=settings.port)
            print(message, file=sys.stderr)
            return 2
        logging.getLogger(LOGGER_NAME).warning(
            "LIVECODE_ALLOW_ANONYMOUS: serving on %s without API keys: anyone who can reach "
            "port %d can run programs (each address held to the LIVECODE_TENANT_* quotas)",
            settings.host,
            settings.port,
        )
    app = create_app(settings)
    _collect_rarely()
    _announcing_server(server_config(settings, app)).run()
    return 0


def _collect_rarely() -> None:
    """GC_THRESHOLDS, and what the process has made so far (modules, settings, the app or the
    services) frozen: never garbage, never traversed again."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def server_config(settings: Settings, app: ASGIApp, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration of a server (tests start theirs with it too)."""
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        # The protocol wsdirect writes for (uvicorn's "auto" picks it too, while it exists).
        "ws": "websockets-sansio",
        "ws_max_size": WS_MAX_FRAME_BYTES,
        # Events are small and latency matters more than bytes: deflate cost CPU per message.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": int(settings.wall_timeout_s + 5),
        # X-Forwarded-For/-Proto only from the proxies named (uvicorn would otherwise believe
        # 127.0.0.1, or its own FORWARDED_ALLOW_IPS variable: only Settings configures us).
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": list(settings.forwarded_allow_ips) or [],
        # JSON lines: uvicorn's loggers go through ours instead of its own text handlers.
        "log_config": None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    }
    return uvicorn.Config(app, **(options | overrides))


def _has_keys(settings: Settings) -> bool:
    """Whether any key is configured: in LIVECODE_API_KEYS, or active in the store."""
    if settings.api_keys:
        return True
    store = _open_store(settings)
    try:
        return store.api_keys.any_active()
    finally:
        store.close()


def _open_store(settings: Settings) -> Store:
    from livecode.store import Store

    store = Store.from_url(settings.database_url)
    if settings.database_url.startswith("sqlite"):
        store.create_tables()
    return store


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    """`livecode keys create | list | revoke | set-limits`."""
    from livecode.errors import LivecodeError

    if args.action != "list" and not KEY_NAME.fullmatch(args.name):
        print(
            f"livecode: {args.name!r} is not a key name: 1-64 letters, digits, '.', '_' or '-'",
            file=sys.stderr,
        )
        return 2
    import sqlalchemy as sa

    store = _open_store(settings)
    try:
        return _key_action(settings, store, args)
    except LivecodeError as exc:
        print(f"livecode: {exc.message}", file=sys.stderr)
        return 1
    except sa.exc.ProgrammingError:  # PostgreSQL without the api_keys table
        print(
            "livecode: the database has no api_keys table: run `livecode init-db`", file=sys.stderr
        )
        return 1
    finally:
        store.close()


def _key_action(settings: Settings, store: Store, args: argparse.Namespace) -> int:
    from livecode import auth

    quotas = {name: getattr(args, name, None) for name in QUOTA_FLAGS}
    if args.action == "create":
        key = auth.new_key()
        credential = auth.Credential.of(key)
        store.api_keys.create(
            args.name,
            credential.prefix,
            credential.sha256,
            {name: value for name, value in quotas.items() if value is not None},
        )
        print(key)
        print(
            f"key {args.name!r} created ({credential.prefix}…). It is shown this once: only its "
            "hash is kept. Send it as Authorization: Bearer <key>.",
            file=sys.stderr,
        )
        return 0
    if args.action == "revoke":
        revoked = store.api_keys.revoke(args.name)
        print(
            f"key {revoked.name!r} ({revoked.prefix}…) revoked; servers refuse it within "
            f"{auth.KEY_CACHE_TTL_S:g} seconds"
        )
        return 0
    if args.action == "set-limits":
        given = {name: (value or None) for name, value in quotas.items() if value is not None}
        if not given:
            print("livecode: name at least one limit to set", file=sys.stderr)
            return 2
        print(_key_lines(settings, [store.api_keys.set_quotas(args.name, given)]))
        return 0
    print(_key_lines(settings, store.api_keys.list()))
    return 0


def _key_lines(settings: Settings, keys: list[ApiKey]) -> str:
    """Keys as a table; a limit the key sets itself is marked with *."""
    from livecode.tenants import Quotas

    defaults = Quotas.from_settings(settings)
    rows = [["NAME", "PREFIX", "CREATED", "LAST USED", "STATE", *QUOTA_FLAGS]]
    for key in keys:
        limits = []
        for name in QUOTA_FLAGS:
            own = getattr(key, name)
            limits.append(f"{own}*" if own is not None else str(getattr(defaults, name)))
        rows.append(
            [
                key.name,
                key.prefix + "…",
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never",
                "revoked" if key.is_revoked else "active",
                *limits,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.append("(* the key's own limit; the others are the LIVECODE_TENANT_* defaults)")
    return "\n".join(line.rstrip() for line in lines)


def _announcing_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that prints where to go next once it listens (not before: the port
    may be taken), and that closes its WebSockets with 1001 (going away) when it stops, where
    uvicorn would send 1012. Built here because the CLI imports no server part until it
    serves."""

    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(_next_steps(self.config.host, self.config.port), flush=True)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            app = self.config.app
            sockets_of_app = getattr(getattr(app, "state", None), "sockets", None)
            if sockets_of_app is not None:
                await sockets_of_app.close_all()
            await super().shutdown(sockets)

    return AnnouncingServer(config)


def _schema_refusal(settings: Settings) -> str | None:
    """Why a distributed process must not start on this database (no schema), or None."""
    if settings.database_url.startswith("sqlite"):
        return None  # embedded mode creates its tables
    from livecode.errors import SchemaMissing, Unavailable
    from livecode.store import Store

    store = Store.from_url(settings.database_url)
    try:
        store.check_schema()
    except SchemaMissing as exc:
        return f"livecode: {exc.message}"
    except Unavailable:
        pass  # not up yet: start, answer 503 until it is
    finally:
        store.close()
    return None


def _work(settings: Settings) -> int:
    """A worker process: on SIGTERM (or SIGINT) it takes no new execution, lets the running
    ones finish within LIVECODE_SHUTDOWN_GRACE_S, hands the rest back as QUEUED and exits; a
    second signal exits at once (the sweeper then retries what ran)."""
    import logging
    import signal
    import threading

    from livecode import metrics
    from livecode.services import open_services

    logger = logging.getLogger(LOGGER_NAME)

    if not settings.is_distributed:
        print(
            "livecode worker needs LIVECODE_REDIS_URL (embedded serve has its own)", file=sys.stderr
        )
        return 2
    refusal = _schema_refusal(settings)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            logger.warning("second signal: stopping at once; the sweeper retries what ran")
            os._exit(1)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    if settings.metrics_port is not None:
        metrics.serve_metrics(settings.metrics_port, token=settings.metrics_token)
    services = open_services(settings, consume=True)
    if services.sandbox is None:
        logger.error("%s", services.sandbox_error)
        services.close()
        return 1
    _collect_rarely()
    logger.info("worker ready: %d threads", settings.worker_threads)
    stop.wait()
    logger.info(
        "worker stopping: no new executions; %d running get %g s to finish",
        services.executor.running if services.executor is not None else 0,
        settings.shutdown_grace_s,
    )
    services.close()
    logger.info("worker stopped")
    return 0


def _init_db(settings: Settings) -> int:
    import logging

    from livecode.errors import Unavailable
    from livecode.store import Store

    where = settings.database_url.split("@")[-1]
    # One line naming the cause, not the driver's traceback (its cause was on line 1 of 136).
    logging.getLogger("livecode.errors").setLevel(logging.ERROR)
    store = Store.from_url(settings.database_url)
    try:
        if settings.database_url.startswith("sqlite"):
            store.create_tables()
        else:
            store.apply_schema_sql(_schema_sql())
    except Unavailable as exc:
        print(f"livecode init-db: cannot use {where}: {_cause(exc)}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"schema applied to {where}")
    return 0


def _schema_sql() -> Path:
    """schema.sql: it lives at the top of the repository; livecode/schema.sql links to it, so
    that an installed package (a wheel copies the file) has it too."""
    from pathlib import Path

    return Path(__file__).resolve().parent / "schema.sql"


def _cause(exc: BaseException) -> str:
    """The first line of the deepest cause's message: what the database itself said."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = lines[0] if lines else type(exc).__name__
    if "does not exist" in cause and "database" in cause:
        cause += " (create it first, e.g. `createdb`, or CREATE DATABASE in psql)"
    return cause


def _next_steps(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"  # listening everywhere: loopback is one address that works here
    base = f"http://{shown}:{port}"
    return (
        f"livecode {__version__} is serving on {base}\n"
        f"  playground (editor):    {base}/\n"
        f"  API docs (Swagger UI):  {base}/docs\n"
        f"  OpenAPI document:       {base}/openapi.json\n"
        f"  WebSocket:              ws://{shown}:{port}/ws\n"
        f"  health:                 {base}/health/ready"
    )


def is_loopback(host: str) -> bool:
    """Whether every address `host` stands for is a loopback one (unresolvable: no)."""
    import ipaddress
    import socket

    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return all(ipaddress.ip_address(address).is_loopback for address in addresses)


if __name__ == "__main__":
    sys.exit(main())
