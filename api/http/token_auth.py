"""Tokens on the HTTP API: one comparison and one 401 for every route that checks one.

The admin routes, ``/metrics`` and ``/stats``, the analytics API (``ADMIN_TOKEN`` or a
project's key) and the Vapi events route (``x-vapi-secret``) all compare what was sent
with ``token_matches``: in constant time (``hmac.compare_digest``), so the time a refusal
takes says nothing about how much of the token was right, and never true when no token
is configured. A refused bearer token gets ``unauthorized``: 401, the error as the body,
and the ``WWW-Authenticate`` challenge RFC 9110 11.6.1 requires, naming the realm whose
token was wanted.
"""

from __future__ import annotations

import hmac

from api.http.asgi import Request, Response

ADMIN_REALM = "afterhours-admin"  # ADMIN_TOKEN (and METRICS_TOKEN for /metrics)
ANALYTICS_REALM = "afterhours"  # a project's analytics key (or ADMIN_TOKEN)


def token_matches(sent: str | None, expected: bytes | None) -> bool:
    """``sent`` (a header value, as the ASGI layer decoded it: latin-1, so its bytes are
    the bytes on the wire) is ``expected``. False when either is missing or empty."""
    if not sent or not expected:
        return False
    return hmac.compare_digest(sent.encode("latin-1"), expected)


def bearer_matches(request: Request, expected: bytes | None) -> bool:
    """The request carries ``Authorization: Bearer <expected>``."""
    return token_matches(request.bearer_token(), expected)


def unauthorized(message: str, realm: str = ADMIN_REALM) -> Response:
    challenge = f'Bearer realm="{realm}"'.encode()
    return Response(401, {"error": message}, [(b"www-authenticate", challenge)])
