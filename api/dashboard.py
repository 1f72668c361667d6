"""``GET /dashboard``: the operator's web page (api/dashboard.html).

The page itself holds no data and needs no token; it signs in with the admin token or a
project's API key (kept in the browser tab's sessionStorage) and reads everything
through the analytics API, refreshing every 10 s. A strict content security policy: no
outside scripts, styles, frames or connections.
"""

from __future__ import annotations

from pathlib import Path

from api.asgi import Response

PAGE = (Path(__file__).parent / "dashboard.html").read_bytes()
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        b"connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def dashboard() -> Response:
    return Response(200, PAGE, HEADERS, content_type=b"text/html; charset=utf-8")
