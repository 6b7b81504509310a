"""Tenants: who a request acts for, and the quotas it is held to (SPEC.md, Security).

A tenant is an API key (its name is the ``owner`` of everything it creates), or, without keys,
a client address sharing the owner ``""``. Each holds a name that the store records with what
it creates (``created_by``: ``key:NAME`` or ``addr:ADDRESS``) and that its quotas count by.
This module knows nothing of HTTP: auth.py finds the tenant, commands.py applies its quotas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from livecode.config import Settings

__all__ = ["LOCAL", "QUOTA_NAMES", "Quotas", "Tenant"]


@dataclass(frozen=True, slots=True)
class Quotas:
    """What one tenant may use: runs started a minute (REST, WebSocket and one-shot alike),
    executions RUNNING at once, executions QUEUED at once, sessions held."""

    runs_per_minute: int
    max_running: int
    max_queued: int
    max_sessions: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        """The defaults: LIVECODE_TENANT_*."""
        return cls(
            runs_per_minute=settings.tenant_runs_per_minute,
            max_running=settings.tenant_max_running,
            max_queued=settings.tenant_max_queued,
            max_sessions=settings.tenant_max_sessions,
        )

    def overridden(self, overrides: Mapping[str, int | None]) -> Quotas:
        """These quotas with a key's own values where it has them (None: keep the default)."""
        given = {name: overrides.get(name) for name in QUOTA_NAMES}
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who a request or socket acts for.

    ``owner`` scopes every read and write (another owner's sessions and executions are not
    found); ``name`` is recorded with what it creates and named in logs: ``key:NAME`` or
    ``addr:ADDRESS``, never a secret. ``quotas`` None: none apply (loopback without keys).
    """

    owner: str
    name: str
    quotas: Quotas | None = None
    key_prefix: str | None = None

    @property
    def is_key(self) -> bool:
        return self.key_prefix is not None

    def describe(self) -> str:
        """How logs name it: the key's name and prefix, or the address."""
        return f"{self.name} ({self.key_prefix}…)" if self.key_prefix else self.name


# The quotas, as the CLI flags and the api_keys columns name them (a test checks the columns).
QUOTA_NAMES = tuple(field.name for field in dataclasses.fields(Quotas))

# Commands called from inside the process (tests, tools): no key, no quota.
LOCAL = Tenant(owner="", name="local")
