"""API keys in the store: created, listed, found by prefix, revoked, their quotas changed.

The secret itself is never stored, only its SHA-256 (keys are 190 random bits: a fast hash is
enough, no password-style stretching); ``find`` returns the row of a prefix and the caller
compares the hashes in constant time (auth.py). Thread-safe, like the Store that holds it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa

from livecode import errors
from livecode.store.engine import Database
from livecode.store.records import ApiKey
from livecode.tables import api_keys

__all__ = ["QUOTA_COLUMNS", "ApiKeys"]

# The per-key quota overrides, by column name (None: the server's default).
QUOTA_COLUMNS = ("runs_per_minute", "max_running", "max_queued", "max_sessions")


class ApiKeys:
    """The api_keys table. Each method is one transaction."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def create(
        self,
        name: str,
        prefix: str,
        secret_sha256: str,
        quotas: Mapping[str, int | None] | None = None,
    ) -> ApiKey:
        """Insert a key; Conflict when the name (revoked keys' too) or the prefix is taken."""
        key = ApiKey.model_validate(
            {
                "name": name,
                "prefix": prefix,
                "secret_sha256": secret_sha256,
                "created_at": dt.datetime.now(dt.UTC),
                **_quotas(quotas or {}),
            }
        )
        with self._database.transaction(write=True) as conn:
            taken = conn.execute(
                sa.select(api_keys.c.name).where(
                    sa.or_(api_keys.c.name == name, api_keys.c.prefix == prefix)
                )
            ).first()
            if taken is not None:
                raise errors.Conflict(
                    f"a key named {name!r} (or its prefix) exists already; names are never reused"
                )
            conn.execute(api_keys.insert().values(dict(key.__dict__)))
        return key

    def find(self, prefix: str) -> ApiKey | None:
        """The key with this prefix, revoked or not; None when there is none."""
        with self._database.transaction() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).mappings()
            found = row.one_or_none()
        return ApiKey.model_validate(found) if found is not None else None

    def any_active(self) -> bool:
        """Whether any key is not revoked."""
        with self._database.transaction() as conn:
            found = conn.execute(
                sa.select(api_keys.c.name).where(api_keys.c.revoked_at.is_(None)).limit(1)
            ).first()
        return found is not None

    def get(self, name: str) -> ApiKey:
        """The key named `name`; NotFound when there is none."""
        with self._database.transaction() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.name == name)).mappings()
            found = row.one_or_none()
        if found is None:
            raise errors.NotFound(f"no key named {name!r}")
        return ApiKey.model_validate(found)

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        with self._database.transaction() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).mappings()
            return [ApiKey.model_validate(row) for row in rows]

    def revoke(self, name: str) -> ApiKey:
        """Mark the key revoked (idempotent); NotFound when there is none."""
        with self._database.transaction(write=True) as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=dt.datetime.now(dt.UTC))
            )
        return self.get(name)

    def set_quotas(self, name: str, quotas: Mapping[str, int | None]) -> ApiKey:
        """Change some of the key's quota overrides (None: back to the default)."""
        values = _quotas(quotas)
        with self._database.transaction(write=True) as conn:
            updated = conn.execute(
                api_keys.update().where(api_keys.c.name == name).values(values)
            ).rowcount
        if not updated:
            raise errors.NotFound(f"no key named {name!r}")
        return self.get(name)

    def touch(self, name: str, when: dt.datetime) -> None:
        """Record that the key was used at `when` (only ever forward)."""
        with self._database.transaction(write=True) as conn:
            conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.name == name,
                    sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < when),
                )
                .values(last_used_at=when)
            )


def _quotas(quotas: Mapping[str, int | None]) -> dict[str, int | None]:
    unknown = set(quotas) - set(QUOTA_COLUMNS)
    if unknown:
        raise RuntimeError(f"unknown key quotas {sorted(unknown)}; expected {QUOTA_COLUMNS}")
    return dict(quotas)
