"""Who a Judge0 or Piston request acts for: the one place where API keys will plug in.

Judge0 clients send their key in ``X-Auth-Token`` (a header, or a query parameter of that name:
Judge0's ``AUTHN_HEADER``); other clients send ``Authorization: Bearer <key>``. API keys are not
built yet (SPEC.md, Security), so :func:`owner` reads the credential and answers ``""``, the
owner everyone shares today. The keys issue makes :func:`owner` look the key up and raise
``Unauthorized``; every compat endpoint and socket already asks it, once, before anything else.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

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
    """The owner a request acts for: ``""`` until API keys exist (then the key's tenant)."""
    credential(connection)  # accepted and not checked yet: no keys exist to check it against
    return ""
