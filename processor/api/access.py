"""Who may call what: a bearer token on everything but the probes, and bounded requests.

Default deny: an aiohttp middleware in front of every route, Faust's included,
lets through only the liveness and readiness probes (and ``/metrics`` unless
``JOURNEY_METRICS_AUTH`` is on) without ``Authorization: Bearer <token>``. The
token is compared in constant time. A worker with no token configured answers
401 on the protected paths rather than serving them to anyone.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from processor.settings import Settings

log = logging.getLogger(__name__)

PROBES: Final = frozenset({"/healthz", "/readyz"})
MAX_REQUEST_BYTES: Final = 16 * 1024
"""Largest request body accepted (every endpoint is a GET)."""
MAX_CUSTOMER_ID_LENGTH: Final = 256
"""Longest customer id /customers/{id} accepts, in characters (the OpenAPI maxLength)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison; an empty expected token matches nothing."""
    if not expected or presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def access_middleware(
    settings: Settings,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware for ``settings``; reads the token (or its file) once, at start."""
    token = settings.api_token_value()
    if not token:
        log.warning(
            "no JOURNEY_API_TOKEN or JOURNEY_API_TOKEN_FILE: /customers and /funnel answer 401"
        )
    open_paths = PROBES if settings.metrics_auth else PROBES | {"/metrics"}

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _error(405, "only GET is served", Allow="GET")
        if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
            return _error(413, "request body too large")
        if request.path not in open_paths and not token_matches(bearer_token(request), token):
            return _error(
                401,
                "a valid bearer token is required" if token else "no API token is configured",
                **{"WWW-Authenticate": 'Bearer realm="journey-processor"'},
            )
        return await handler(request)

    return access
