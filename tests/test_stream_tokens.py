"""Stream tokens: bound to one call and project, expiring within a minute."""

from __future__ import annotations

import pytest

from engine.stream_tokens import TOKEN_LIFETIME_S, InvalidStreamToken, check_token, issue_token

KEY = b"k" * 32


def test_a_token_checks_for_its_own_call_until_it_expires() -> None:
    token = issue_token(KEY, "CA1", "acme", now_s=1000.0)
    check_token(KEY, token, "CA1", "acme", now_s=1000.0 + TOKEN_LIFETIME_S - 1)
    with pytest.raises(InvalidStreamToken, match="expired"):
        check_token(KEY, token, "CA1", "acme", now_s=1000.0 + TOKEN_LIFETIME_S + 1)


@pytest.mark.parametrize(
    ("call_sid", "project_id", "key"),
    [
        pytest.param("CA2", "acme", KEY, id="another-call"),
        pytest.param("CA1", "other", KEY, id="another-project"),
        pytest.param("CA1", "acme", b"x" * 32, id="another-key"),
    ],
)
def test_a_foreign_token_is_refused(call_sid: str, project_id: str, key: bytes) -> None:
    token = issue_token(KEY, "CA1", "acme", now_s=0.0)
    with pytest.raises(InvalidStreamToken, match="not issued for this call"):
        check_token(key, token, call_sid, project_id, now_s=0.0)


@pytest.mark.parametrize("token", ["", "abc", "12.", ".mac", "9999999999"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidStreamToken):
        check_token(KEY, token, "CA1", "acme", now_s=0.0)
