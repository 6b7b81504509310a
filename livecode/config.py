"""Settings: read once from LIVECODE_* (and DATABASE_URL / REDIS_URL), validated, frozen.

Defaults give embedded mode (SQLite file, in-process broker and bus). A bad value stops the
process with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from runners.limits import Limits

DEFAULT_DATABASE_URL = "sqlite:///./livecode.db"
_RUN_LIMITS = Limits()
# A key from LIVECODE_API_KEYS shorter than this is refused: it could be guessed.
MIN_API_KEY_CHARS = 16
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def default_worker_threads() -> int:
    """Two executions per usable core: a run spends part of its time starting, waiting and
    storing, and with one per core those gaps leave the cores idle (measured: c=4 runs/s
    105 -> 126 on 2 cores, bench/bench_service.py)."""
    return 2 * usable_cpus()


def usable_cpus(root: str = "/") -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota.

    ``os.cpu_count()`` is the host's count; a container limited to 2 CPUs on a 64-core host
    would otherwise get 128 sandbox slots.
    """
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota(root)
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def _cgroup_cpu_quota(root: str) -> float | None:
    """CPUs allowed by this process's cgroup (v2 cpu.max, v1 cfs quota), None when unlimited."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2
            fields = _read_fields(os.path.join(root, "sys/fs/cgroup", relative, "cpu.max"))
            if fields and fields[0] != "max":
                return int(fields[0]) / int(fields[1])
        elif "cpu" in controllers.split(","):  # cgroup v1
            directory = os.path.join(root, "sys/fs/cgroup/cpu", relative)
            quota = _read_fields(os.path.join(directory, "cpu.cfs_quota_us"))
            period = _read_fields(os.path.join(directory, "cpu.cfs_period_us"))
            if quota and period and int(quota[0]) > 0:
                return int(quota[0]) / int(period[0])
    return None


def _read_fields(path: str) -> list[str]:
    try:
        with open(path) as file:
            return file.read().split()
    except OSError:
        return []


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be told, with SPEC.md's defaults."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Per-run limits: SPEC.md's defaults live in runners.Limits.
    wall_timeout_s: float = _RUN_LIMITS.wall_timeout_s
    compile_timeout_s: float = _RUN_LIMITS.compile_timeout_s
    memory_mb: int = _RUN_LIMITS.memory_mb
    max_processes: int = _RUN_LIMITS.max_processes
    output_limit_bytes: int = _RUN_LIMITS.output_limit_bytes
    max_source_bytes: int = 262144
    max_stdin_bytes: int = 1048576
    max_cases: int = 20  # test cases of one run (each runs in a sandbox of its own)
    runs_per_minute: int = 10
    runs_per_session: int = 100
    queue_cap: int = 1000
    allowed_origins: tuple[str, ...] = ()
    # Security (SPEC.md): keys from the environment (besides `livecode keys create`); serving
    # beyond loopback without any key only when this is set on purpose; the proxies whose
    # X-Forwarded-For / -Proto are believed.
    api_keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)  # secrets: not shown
    # The operator's bearer token for /metrics (never a tenant's key); unset: /metrics answers
    # this machine only (auth.Authenticator.authorize_operator).
    metrics_token: str | None = dataclasses.field(default=None, repr=False)
    allow_anonymous: bool = False
    forwarded_allow_ips: tuple[str, ...] = ()
    # Quotas of each tenant (a key; without keys, a client address when LIVECODE_ALLOW_ANONYMOUS
    # is set); a key's own overrides are set with `livecode keys create/set-limits`.
    tenant_runs_per_minute: int = 60
    tenant_max_running: int = 4
    tenant_max_queued: int = 50
    tenant_max_sessions: int = 1000
    sandbox: str = "bwrap"
    # Python runs forked from a warm interpreter per sandbox slot (runners/warm.py), replaced
    # after warm_python_runs runs or warm_python_age_s seconds (a fresh hash seed)
    warm_python: bool = True
    warm_python_runs: int = 200
    warm_python_age_s: float = 60.0
    worker_threads: int = dataclasses.field(default_factory=default_worker_threads)
    wait_cap_s: float = 30.0
    broker_poll_ms: int = 1000
    ws_messages_per_s: int = 200
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object a line
    # The foreign APIs served for their own clients (livecode/compat): judge0, piston, or none.
    compat: tuple[str, ...] = ("judge0", "piston")
    judge0_prefix: str = "/judge0"
    # Reliability (README, "Nothing lost, nothing stuck"): a claimed execution's lease, renewed
    # by its worker every third of it; a sweeper pass every sweep_interval_s finds expired
    # leases and queued executions whose message is gone. A dead worker's execution moves on
    # within lease_s + sweep_interval_s.
    max_attempts: int = 3
    lease_s: float = 10.0
    sweep_interval_s: float = 2.0
    retry_backoff_s: float = 1.0  # before attempt n+1: retry_backoff_s * 2**(n-1)
    # A queued execution's message is looked for once it has been queued this long.
    message_grace_s: float = 10.0
    shutdown_grace_s: float = 30.0
    # A follower whose execution's channel is silent this long: the relay asks the store.
    relay_check_s: float = 3.0
    metrics_port: int | None = None  # a worker's /metrics; servers serve it on their own port

    @property
    def is_distributed(self) -> bool:
        """True when Redis carries the broker, bus and rate counters."""
        return self.redis_url is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> Settings:
        """Read LIVECODE_* variables; `overrides` (from CLI flags) win over the environment."""
        values: dict[str, object] = {}
        database_url = environ.get("LIVECODE_DATABASE_URL") or environ.get("DATABASE_URL")
        if database_url:
            values["database_url"] = normalize_database_url(database_url)
        redis_url = environ.get("LIVECODE_REDIS_URL") or environ.get("REDIS_URL")
        if redis_url:
            values["redis_url"] = redis_url
        for field in dataclasses.fields(cls):
            if field.name in ("database_url", "redis_url"):
                continue
            variable = "LIVECODE_" + field.name.upper()
            raw = environ.get(variable)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(variable, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the first variable with an unusable value."""
        positive = (
            "port wall_timeout_s compile_timeout_s memory_mb max_processes output_limit_bytes "
            "max_source_bytes max_stdin_bytes max_cases runs_per_minute runs_per_session queue_cap "
            "worker_threads ws_messages_per_s max_attempts lease_s sweep_interval_s "
            "message_grace_s relay_check_s tenant_runs_per_minute tenant_max_running "
            "tenant_max_queued tenant_max_sessions warm_python_runs warm_python_age_s"
        ).split()
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"LIVECODE_{name.upper()} must be positive")
        for name in ("retry_backoff_s", "shutdown_grace_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"LIVECODE_{name.upper()} must not be negative")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ConfigError("LIVECODE_METRICS_PORT must be a port number")
        if self.log_format not in ("text", "json"):
            raise ConfigError("LIVECODE_LOG_FORMAT must be 'text' or 'json'")
        if self.sandbox not in ("bwrap", "none"):
            raise ConfigError("LIVECODE_SANDBOX must be 'bwrap' or 'none'")
        if not self.database_url.startswith(("sqlite", "postgresql")):
            raise ConfigError("LIVECODE_DATABASE_URL must be a sqlite:// or postgresql:// URL")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://")):
            raise ConfigError("LIVECODE_REDIS_URL must be a redis:// URL")
        if not set(self.compat) <= {"judge0", "piston"} and self.compat != ("none",):
            raise ConfigError("LIVECODE_COMPAT must list judge0 and/or piston, or be 'none'")
        # Judge0's own /languages and / would shadow livecode's at the root.
        prefix = self.judge0_prefix
        if not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
            raise ConfigError("LIVECODE_JUDGE0_PREFIX must be a path like /judge0 (not /)")
        for key in self.api_keys:
            if len(key) < MIN_API_KEY_CHARS or not key.isprintable() or " " in key:
                raise ConfigError(
                    f"LIVECODE_API_KEYS: each key must be at least {MIN_API_KEY_CHARS} printable "
                    "characters without spaces (`livecode keys create NAME` makes good ones)"
                )
        token = self.metrics_token
        if token is not None:
            if len(token) < MIN_API_KEY_CHARS or not token.isprintable() or " " in token:
                raise ConfigError(
                    f"LIVECODE_METRICS_TOKEN must be at least {MIN_API_KEY_CHARS} printable "
                    "characters without spaces"
                )
            if token in self.api_keys:
                raise ConfigError(
                    "LIVECODE_METRICS_TOKEN must not be one of LIVECODE_API_KEYS: a tenant's "
                    "key never reads /metrics"
                )
        for origin in self.allowed_origins:
            if origin != "*" and not _is_origin(origin):
                raise ConfigError(
                    f"LIVECODE_ALLOWED_ORIGINS: {origin!r} is not an origin "
                    "(scheme://host[:port], e.g. https://editor.example.com) or *"
                )


def normalize_database_url(url: str) -> str:
    """The one spelling of a database URL: plain PostgreSQL URLs mean psycopg 3."""
    # Plain postgres:// URLs (Heroku style, the reference's DATABASE_URL) mean psycopg 3 here.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _is_origin(value: str) -> bool:
    scheme, separator, rest = value.rstrip("/").partition("://")
    return bool(separator) and scheme in ("http", "https") and bool(rest) and "/" not in rest


def _parse(variable: str, annotation: object, raw: str) -> object:
    kind = str(annotation).removesuffix(" | None")
    if kind == "bool":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ConfigError(f"{variable}={raw!r} is not a boolean (true or false)")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
    except ValueError:
        raise ConfigError(f"{variable}={raw!r} is not a valid {kind}") from None
    return raw
