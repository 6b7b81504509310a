"""Who a request or socket acts for: its tenant (SPEC.md, Security; tenants.py).

The one check, for every edge::

    Authorization: Bearer lc_…   (REST, SSE, WebSocket; also X-Auth-Token, for Judge0 clients)
    ?token=lc_…                  (WebSocket only: a browser cannot set its headers; the
                                  value is redacted from the scope before anything logs it)
    {"type": "auth", "token"}    (WebSocket, as its first message: websocket.py)

`Authentication` (ASGI middleware) finds the tenant of each request before any route runs and
answers 401 for a missing or wrong key, except on the public paths (`/`, `/docs`,
`/openapi.json`, `/health*`, the playground's static files). Each edge then asks `tenant()`
(or `owner()`) once and passes it to every command.

`/metrics` is the operator's, not a tenant's (`authorize_operator`): it takes the bearer of
LIVECODE_METRICS_TOKEN, or, with no such token, requests from this machine only; a tenant's
key there is 403 `forbidden` (the route is public knowledge: 404 would hide nothing). A server
with neither keys nor that token serves it as it serves everything (the rules below).

With no key configured (none in LIVECODE_API_KEYS, none active in the store), requests need
none, but only from loopback: a request from elsewhere, or one that came through a proxy for
someone elsewhere, is refused unless LIVECODE_ALLOW_ANONYMOUS is set, and then each client
address is a tenant of its own for the quotas; a token sent anyway is not checked, unless it is
a revoked key, which is refused wherever it is sent.

Cost: a key's tenant is cached by the key's SHA-256 for KEY_CACHE_TTL_S (a revoked key stops
working within that many seconds, in every process), so a request with a known key costs one
SHA-256 and a dict lookup: +0.006 ms on the median request (bench/bench_keys.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import secrets
import string
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from livecode import events
from livecode.config import Settings
from livecode.errors import Forbidden, LivecodeError, Unauthorized
from livecode.store import ApiKeys
from livecode.tenants import QUOTA_NAMES, Quotas, Tenant

__all__ = [
    "KEY_CACHE_TTL_S",
    "KEY_PREFIX",
    "METRICS_PATH",
    "Authentication",
    "Authenticator",
    "Credential",
    "is_public",
    "new_key",
    "owner",
    "tenant",
]

logger = logging.getLogger(__name__)

KEY_PREFIX = "lc_"
# lc_ + 40 characters of [0-9A-Za-z]: 238 random bits. The first PREFIX_CHARS are shown by
# `livecode keys list` and name the key in logs; the store finds a key by them.
_KEY_ALPHABET = string.ascii_letters + string.digits
KEY_SECRET_CHARS = 40
PREFIX_CHARS = len(KEY_PREFIX) + 8
# How long a key's tenant (or a key's absence) is believed before the store is asked again.
KEY_CACHE_TTL_S = 5.0
KEY_CACHE_ENTRIES = 10_000
# last_used_at is written at most this often per key and process.
LAST_USED_EVERY_S = 60.0
# A WebSocket token longer than any key is not looked up.
MAX_TOKEN_CHARS = 256

METRICS_PATH = "/metrics"
_PUBLIC_PATHS = frozenset({"/", "/docs", "/openapi.json", "/health", "/favicon.ico"})
_PUBLIC_PREFIXES = ("/health/", "/docs/", "/static/")
# What the cache holds for a revoked key (compared by identity; never a request's tenant).
_REVOKED = Tenant(owner="\x00revoked", name="revoked")
_SCOPE_TENANT = "livecode.tenant"
_SCOPE_CREDENTIAL = "livecode.credential"
_SCOPE_REFUSAL = "livecode.refusal"
_FORWARDED_FOR = ("x-forwarded-for", "x-real-ip")


def new_key() -> str:
    """A new API key: ``lc_`` and 40 random letters and digits."""
    return KEY_PREFIX + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(KEY_SECRET_CHARS))


@dataclasses.dataclass(frozen=True, slots=True)
class Credential:
    """A presented key, as the server keeps it: its prefix and SHA-256, never the key itself."""

    prefix: str
    sha256: str

    @classmethod
    def of(cls, token: str) -> Credential:
        return cls(token[:PREFIX_CHARS], hashlib.sha256(token.encode()).hexdigest())


class Authenticator:
    """A credential (or none) and a client address -> the tenant. Thread-safe enough: the cache
    is a dict whose entries are replaced whole; two threads refreshing one entry both ask the
    store, and either answer is right.

    `authenticate` runs on the event loop and goes to a thread only to ask the store (at most
    once per KEY_CACHE_TTL_S per key).
    """

    def __init__(
        self,
        settings: Settings,
        api_keys: ApiKeys,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._api_keys = api_keys
        self._clock = clock
        self._defaults = Quotas.from_settings(settings)
        # LIVECODE_API_KEYS: each its own tenant, named by its hash (never by the key).
        self._env_keys = [
            (Credential.of(key).sha256, self._env_tenant(key)) for key in settings.api_keys
        ]
        self._metrics_token = (
            Credential.of(settings.metrics_token).sha256 if settings.metrics_token else None
        )
        self._cache: dict[str, tuple[float, Tenant | None]] = {}
        self._configured: tuple[float, bool] = (float("-inf"), False)
        self._last_used: dict[str, float] = {}

    async def authenticate(
        self, credential: Credential | None, connection: HTTPConnection | Scope
    ) -> Tenant:
        """The tenant of a request or socket; Unauthorized for a wrong key, or for none when
        one is needed."""
        if credential is not None:
            tenant = await self._tenant_of(credential)
            if tenant is _REVOKED:  # refused even where no key is needed any more
                raise Unauthorized("this API key was revoked")
            if tenant is not None:
                return tenant
        if await self.keys_configured():
            if credential is None:
                raise Unauthorized("this server needs an API key: Authorization: Bearer <key>")
            raise Unauthorized("unknown or revoked API key")
        # No key configured: a token sent anyway (clients that always send one, as Judge0's
        # SDK does) is not one the server knows, and the anonymous rules apply.
        return self._anonymous(connection)

    async def authorize_operator(
        self, credential: Credential | None, connection: HTTPConnection | Scope
    ) -> None:
        """Let a request to /metrics through, or raise: the bearer of LIVECODE_METRICS_TOKEN;
        without that token, a request from this machine (on a server without keys, whoever the
        anonymous rules let in, as everywhere). A tenant's key is Forbidden wherever it is
        sent from; a wrong token Unauthorized."""
        operator = self._metrics_token
        if credential is not None:
            if operator is not None and hmac.compare_digest(credential.sha256, operator):
                return
            found = await self._tenant_of(credential)
            if found is _REVOKED:
                raise Unauthorized("this API key was revoked")
            if found is not None:
                raise Forbidden(
                    "/metrics is the operator's, not a tenant's: scrape it with "
                    "LIVECODE_METRICS_TOKEN as the bearer token"
                )
            if operator is not None or await self.keys_configured():
                raise Unauthorized("unknown token: /metrics takes LIVECODE_METRICS_TOKEN")
        if operator is not None:
            raise Unauthorized(
                "/metrics needs the operator's token: Authorization: Bearer "
                "<LIVECODE_METRICS_TOKEN>"
            )
        if not await self.keys_configured():
            self._anonymous(connection)
        elif not _is_local(connection):
            raise Unauthorized(
                "/metrics answers this machine only: set LIVECODE_METRICS_TOKEN and scrape "
                "with it as the bearer token"
            )

    async def keys_configured(self) -> bool:
        """Whether any key is configured: from the environment, or active in the store."""
        if self._env_keys:
            return True
        expires_at, configured = self._configured
        if self._clock() >= expires_at:
            configured = await run_in_threadpool(self._api_keys.any_active)
            self._configured = (self._clock() + KEY_CACHE_TTL_S, configured)
        return configured

    def forget(self) -> None:
        """Drop every cached answer (tests; a key revoked in this process)."""
        self._cache.clear()
        self._configured = (float("-inf"), False)

    async def _tenant_of(self, credential: Credential) -> Tenant | None:
        found: Tenant | None = None
        for sha256, env_tenant in self._env_keys:  # compared in constant time, every one
            if hmac.compare_digest(sha256, credential.sha256):
                found = env_tenant
        if found is not None:
            return found
        if not credential.prefix.startswith(KEY_PREFIX):
            return None  # not one of ours: no need to ask the store
        # Looked up by the key's hash: the dict's timing says something of the hash only.
        entry = self._cache.get(credential.sha256)
        if entry is None or self._clock() >= entry[0]:
            loaded: Tenant | None = await run_in_threadpool(self._load, credential)
            if len(self._cache) >= KEY_CACHE_ENTRIES:
                self._cache.clear()  # random tokens must not grow it without bound
            entry = (self._clock() + KEY_CACHE_TTL_S, loaded)
            self._cache[credential.sha256] = entry
        return entry[1]

    def _load(self, credential: Credential) -> Tenant | None:
        key = self._api_keys.find(credential.prefix)
        if key is None or not hmac.compare_digest(key.secret_sha256, credential.sha256):
            return None
        if key.is_revoked:
            return _REVOKED
        now = self._clock()
        if now - self._last_used.get(key.name, float("-inf")) >= LAST_USED_EVERY_S:
            self._last_used[key.name] = now
            self._api_keys.touch(key.name, dt.datetime.now(dt.UTC))
        overrides = {name: getattr(key, name) for name in QUOTA_NAMES}
        return Tenant(
            owner=key.name,
            name=f"key:{key.name}",
            quotas=self._defaults.overridden(overrides),
            key_prefix=key.prefix,
        )

    def _env_tenant(self, key: str) -> Tenant:
        name = "env-" + Credential.of(key).sha256[:8]
        return Tenant(
            owner=name, name=f"key:{name}", quotas=self._defaults, key_prefix=key[:PREFIX_CHARS]
        )

    def _anonymous(self, connection: HTTPConnection | Scope) -> Tenant:
        address = _client_address(connection)
        if self._settings.allow_anonymous:
            return Tenant(owner="", name=f"addr:{address}", quotas=self._defaults)
        if _is_local(connection):
            return Tenant(owner="", name=f"addr:{address}")
        raise Unauthorized(
            "this server has no API keys and serves only its own machine without them: "
            "create one with `livecode keys create NAME` and send Authorization: Bearer <key>, "
            "or set LIVECODE_ALLOW_ANONYMOUS=true to serve everyone without keys"
        )


class Authentication:
    """ASGI middleware: the tenant of each request, or 401 (see the module docstring).

    A WebSocket is always let through to its endpoint, which accepts it and then refuses it
    with an `error` event and close code 4401 (a browser sees no HTTP status of a refused
    upgrade): the tenant, or the refusal, waits in the scope.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = _bearer(headers)
        if scope["type"] == "websocket" and token is None:
            token = _take_query_token(scope)
        credential = Credential.of(token) if token and len(token) <= MAX_TOKEN_CHARS else None
        if token and credential is None:
            credential = Credential("", "")  # too long to be a key: simply wrong
        scope[_SCOPE_CREDENTIAL] = credential
        if scope["type"] == "http" and is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        authenticator: Authenticator = scope["app"].state.authenticator
        try:
            if scope["type"] == "http" and scope["path"] == METRICS_PATH:
                await authenticator.authorize_operator(credential, scope)  # no tenant there
            else:
                scope[_SCOPE_TENANT] = await authenticator.authenticate(credential, scope)
        except LivecodeError as exc:  # Unauthorized; Unavailable when the store is down
            if scope["type"] == "websocket":
                scope[_SCOPE_REFUSAL] = exc
            else:
                await _refuse(exc, send)
                return
        await self.app(scope, receive, send)


def tenant(connection: HTTPConnection) -> Tenant:
    """The tenant a request or socket acts for, as `Authentication` found it."""
    found = connection.scope.get(_SCOPE_TENANT)
    if found is None:
        raise Unauthorized("not authenticated")
    assert isinstance(found, Tenant)
    return found


def owner(connection: HTTPConnection) -> str:
    """The owner a request or socket acts for: its tenant's (``""`` without keys)."""
    return tenant(connection).owner


def credential(connection: HTTPConnection) -> Credential | None:
    """The key a request or socket presented on its upgrade or request line, if any."""
    found = connection.scope.get(_SCOPE_CREDENTIAL)
    return found if isinstance(found, Credential) else None


def refusal(connection: HTTPConnection) -> LivecodeError | None:
    """Why a socket's upgrade found no tenant (an Unauthorized one may still send `auth`)."""
    found = connection.scope.get(_SCOPE_REFUSAL)
    return found if isinstance(found, LivecodeError) else None


def is_public(path: str) -> bool:
    """Whether a path is served without a key (SPEC.md: /health*, /docs, /openapi.json, /)."""
    return path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)


def redact_token(text: str) -> str:
    """A query string with the value of `token` replaced (what logs may show)."""
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(name == "token" for name, _ in pairs):
        return text
    return urlencode([(n, "REDACTED" if n == "token" else v) for n, v in pairs])


async def _refuse(error: LivecodeError, send: Send) -> None:
    body = events.encode(events.error_json(error.code, error.message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if isinstance(error, Unauthorized):
        headers.append((b"www-authenticate", b'Bearer realm="livecode"'))
    if error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bearer(headers: Headers) -> str | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = headers.get("x-auth-token", "").strip()  # what Judge0's clients send
    return token or None


def _take_query_token(scope: Scope) -> str | None:
    """The ?token= of a WebSocket upgrade, redacted in the scope itself: uvicorn logs the path
    with the scope's query string ('"WebSocket /ws?token=REDACTED" [accepted]')."""
    raw: bytes = scope.get("query_string", b"")
    if b"token=" not in raw:
        return None
    text = raw.decode("latin-1")
    token = next((v for n, v in parse_qsl(text, keep_blank_values=True) if n == "token"), None)
    scope["query_string"] = redact_token(text).encode("latin-1")
    return token or None


def _client_address(connection: HTTPConnection | Scope) -> str:
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _is_local(connection: HTTPConnection | Scope) -> bool:
    """Whether the request comes from this machine, and no proxy forwards it for another."""
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    return _is_loopback(_client_address(scope)) and _forwarded_for_loopback(Headers(scope=scope))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _forwarded_for_loopback(headers: Headers) -> bool:
    """False when a proxy says it forwards the request for someone beyond this machine."""
    addresses: list[str] = []
    for name in _FORWARDED_FOR:
        for value in headers.getlist(name):
            addresses.extend(part.strip() for part in value.split(","))
    for value in headers.getlist("forwarded"):
        addresses.extend(_forwarded_fors(value))
    return all(_is_loopback(address.strip('"[]')) for address in addresses if address)


def _forwarded_fors(value: str) -> Iterable[str]:
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, found = pair.strip().partition("=")
            if name.lower() == "for":
                host = found.strip('"')
                if host.startswith("["):
                    yield host[1:].split("]")[0]
                else:
                    yield host.split(":")[0] if host.count(":") == 1 else host
