"""Who a Judge0 or Piston request acts for: livecode's one owner check, and Judge0's key.

Judge0 clients send their key in ``X-Auth-Token`` (a header, or a query parameter of that name:
Judge0's ``AUTHN_HEADER``); other clients send ``Authorization: Bearer <key>``. API keys are not
built yet (SPEC.md, Security): :func:`owner` reads the credential and asks
:func:`livecode.auth.owner`, which answers ``""`` for everyone today. The keys issue writes that
one check; for Judge0's clients it reads the key with :func:`credential`. Every compat endpoint
and socket asks :func:`owner` once, before anything else.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from livecode import auth

__all__ = ["AUTH_HEADER", "credential", "owner"]

AUTH_HEADER = "X-Auth-Token"


def credential(connection: HTTPConnection) -> str | None:
    """The key a request carries: a Bearer token, else Judge0's header or query parameter."""
    authorization = connection.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.headers.get(AUTH_HEADER) or connection.query_params.get(AUTH_HEADER)


def owner(connection: HTTPConnection) -> str:
    """The owner a request acts for (livecode.auth.owner: ``""`` until API keys exist)."""
    credential(connection)  # accepted and not checked yet: no keys exist to check it against
    return auth.owner(connection)
