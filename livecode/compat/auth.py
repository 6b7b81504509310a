"""Who a Judge0 or Piston request acts for: livecode's one check (livecode/auth.py).

Judge0 clients send their key in ``X-Auth-Token``, others ``Authorization: Bearer <key>``;
livecode.auth.Authentication reads both (and answers a wrong one with 401, in livecode's error
shape) before any route runs. Every compat endpoint and socket asks :func:`tenant` once, before
anything else, and passes it to the commands. Judge0's query-parameter form of the key
(``?X-Auth-Token=``) is read here only for what it is: not a key livecode takes, since a key in
a URL ends up in access logs.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from livecode import auth
from livecode.tenants import Tenant

__all__ = ["AUTH_HEADER", "credential", "tenant"]

AUTH_HEADER = "X-Auth-Token"


def credential(connection: HTTPConnection) -> str | None:
    """The key a request carries: a Bearer token, else Judge0's header or query parameter."""
    authorization = connection.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.headers.get(AUTH_HEADER) or connection.query_params.get(AUTH_HEADER)


def tenant(connection: HTTPConnection) -> Tenant:
    """The tenant a request or socket acts for (livecode.auth.tenant)."""
    return auth.tenant(connection)
