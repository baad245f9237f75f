"""Asking another worker of the group: only real peers, with the token, no redirects, capped.

A worker learns its peers' URLs from the consumer group (each member advertises
one in the assignor metadata), so any member could advertise any URL. A URL is
asked only if its host holds partitions in the current assignment *and* matches
``JOURNEY_WEB_PEERS``; it is asked with this worker's own scheme (http or
https), never follows a redirect, and its body is relayed only up to
:data:`MAX_RELAY_BYTES`.
"""

from __future__ import annotations

import fnmatch
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from yarl import URL

from processor.settings import Settings

MAX_RELAY_BYTES: Final = 1024 * 1024
"""Most bytes of a peer's answer that are read and relayed."""
PEER_TIMEOUT: Final = aiohttp.ClientTimeout(total=5.0)
FORWARDED: Final = "x-journey-forwarded"
"""Set on a request one worker forwards to another; such a request is never forwarded again."""


class PeerRefused(Exception):
    """The URL is not one this worker may ask (not in the assignment, or not an allowed host)."""


class PeerFailed(Exception):
    """The peer could not be reached, redirected, or answered too much."""


def host_port(url: URL) -> tuple[str | None, int | None]:
    return (url.host, url.port)


@dataclass(frozen=True)
class PeerPolicy:
    """Which advertised URLs this worker may send queries to."""

    patterns: tuple[str, ...]
    scheme: str

    @classmethod
    def from_settings(cls, settings: Settings) -> PeerPolicy:
        patterns = tuple(p.strip() for p in settings.web_peers.split(",") if p.strip())
        return cls(patterns, settings.web_scheme)

    def host_allowed(self, url: URL) -> bool:
        host = (url.host or "").lower()
        if not host:
            return False
        candidates = (host, f"{host}:{url.port}")
        return any(fnmatch.fnmatchcase(c, p.lower()) for p in self.patterns for c in candidates)

    def target(self, advertised: URL, assignment: Iterable[URL], path: str) -> URL:
        """The URL to ask for ``path`` on ``advertised``, or PeerRefused."""
        if host_port(advertised) not in {host_port(u) for u in assignment}:
            raise PeerRefused(f"{advertised.host}:{advertised.port} holds no partitions")
        if not self.host_allowed(advertised) or advertised.port is None:
            raise PeerRefused(f"{advertised.host}:{advertised.port} is not in JOURNEY_WEB_PEERS")
        if advertised.user or advertised.password:
            raise PeerRefused("a peer URL with credentials is never asked")
        return URL.build(
            scheme=self.scheme, host=advertised.host or "", port=advertised.port
        ).with_path(path, encoded=True)


@dataclass
class PeerClient:
    """GETs from peers with the API token; never follows redirects; reads at most the cap."""

    session: Any
    token: str
    ssl_context: ssl.SSLContext | None = None

    async def get(self, url: URL) -> tuple[int, bytes]:
        headers = {FORWARDED: "1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with self.session.get(
                url,
                headers=headers,
                timeout=PEER_TIMEOUT,
                allow_redirects=False,
                ssl=self.ssl_context if self.ssl_context is not None else True,
            ) as response:
                if 300 <= response.status < 400:
                    raise PeerFailed(f"answered {response.status} (a redirect, not followed)")
                too_much = PeerFailed(f"answered more than {MAX_RELAY_BYTES} bytes")
                if (response.content_length or 0) > MAX_RELAY_BYTES:
                    raise too_much
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > MAX_RELAY_BYTES:
                        raise too_much
                    chunks.append(chunk)
                return response.status, b"".join(chunks)
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError) as exc:
            raise PeerFailed(f"unreachable: {exc.__class__.__name__}") from None


def peer_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """How peers' HTTPS certificates are verified (None: plain HTTP)."""
    if settings.web_scheme != "https":
        return None
    ca = settings.web_tls_ca_file
    return ssl.create_default_context(cafile=None if ca is None else str(ca))
