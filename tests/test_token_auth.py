"""The one token check every route uses (api/token_auth.py), read from real requests."""

from __future__ import annotations

import pytest

from api.http.asgi import read_request
from api.http.token_auth import ANALYTICS_REALM, bearer_matches, token_matches, unauthorized
from tests.test_asgi import chunks, scope

TOKEN = "a-token-of-sixteen-characters"


@pytest.mark.parametrize(
    ("authorization", "expected", "matches"),
    [
        pytest.param(f"Bearer {TOKEN}", TOKEN.encode(), True, id="the-token"),
        pytest.param(f"bearer  {TOKEN} ", TOKEN.encode(), True, id="scheme-any-case"),
        pytest.param(f"Bearer {TOKEN}x", TOKEN.encode(), False, id="longer"),
        pytest.param(f"Bearer {TOKEN[:-1]}", TOKEN.encode(), False, id="a-prefix"),
        pytest.param(f"Basic {TOKEN}", TOKEN.encode(), False, id="another-scheme"),
        pytest.param("Bearer ", TOKEN.encode(), False, id="empty"),
        pytest.param(None, TOKEN.encode(), False, id="no-header"),
        pytest.param(f"Bearer {TOKEN}", None, False, id="no-token-configured"),
        pytest.param("Bearer ", b"", False, id="empty-never-matches-empty"),
    ],
)
async def test_a_bearer_token_matches_only_the_configured_one(
    authorization: str | None, expected: bytes | None, matches: bool
) -> None:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    request = await read_request(scope(headers), chunks(0))
    assert bearer_matches(request, expected) is matches


def test_a_header_is_compared_as_the_bytes_that_were_sent() -> None:
    secret = "sécret".encode()  # configured in UTF-8; ASGI decodes a header as latin-1
    assert token_matches(secret.decode("latin-1"), secret)
    assert not token_matches("sécret", secret)


def test_a_refused_token_gets_a_401_with_its_realms_challenge() -> None:
    admin = unauthorized("missing or wrong admin token")
    analytics = unauthorized("unknown or revoked API key", ANALYTICS_REALM)
    assert (admin.status, admin.body) == (401, {"error": "missing or wrong admin token"})
    assert admin.headers == [(b"www-authenticate", b'Bearer realm="afterhours-admin"')]
    assert analytics.headers == [(b"www-authenticate", b'Bearer realm="afterhours"')]
