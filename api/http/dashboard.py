"""``GET /dashboard``: the operator's web page (api/http/dashboard.html).

The page itself holds no data and needs no token; it signs in with the admin token or a
project's API key (kept in the browser tab's sessionStorage) and reads everything
through the analytics API, refreshing every 10 s; with the admin token it also manages
the project's phone numbers through the admin API. Text from calls (transcripts,
function arguments) is put on the page as text nodes only, never parsed as markup. A
strict content security policy: no outside scripts, styles, frames or connections, and no
inline script but the page's own:
``script-src`` lists the SHA-256 of each ``<script>`` block as served (computed here, at
import, so an edit to the page can never leave a stale hash), never ``'unsafe-inline'``.
A script injected into the page by any means would not match and would not run.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from api.http.asgi import Response

PAGE = (Path(__file__).parent / "dashboard.html").read_bytes()
# The text between <script> and </script>, byte for byte, is what the browser hashes.
_SCRIPTS = re.findall(rb"<script>(.*?)</script>", PAGE, flags=re.DOTALL)
SCRIPT_HASHES = (
    b" ".join(
        b"'sha256-" + base64.b64encode(hashlib.sha256(script).digest()) + b"'"
        for script in _SCRIPTS
    )
    or b"'none'"
)
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src " + SCRIPT_HASHES + b"; style-src 'unsafe-inline'; "
        b"connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def dashboard() -> Response:
    return Response(200, PAGE, HEADERS, content_type=b"text/html; charset=utf-8")
