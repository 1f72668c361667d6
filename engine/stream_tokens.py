"""One-time stream tokens: what ties a media stream to the webhook that announced it.

The voice webhook puts a token in the TwiML's stream parameters; the media stream must
present it. A token is an HMAC over the CallSid, the project and an expiry (a minute), so
any engine instance holding the same key can check it without shared state; that it is
used only once is checked against the store when the stream starts. Pure functions; the
times are wall-clock seconds (``time.time()``), shared by every instance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

TOKEN_LIFETIME_S = 60.0


class InvalidStreamToken(ValueError):
    pass


def issue_token(key: bytes, call_sid: str, project_id: str, now_s: float) -> str:
    expires = int(now_s + TOKEN_LIFETIME_S)
    body = f"{call_sid}.{project_id}.{expires}"
    return f"{expires}.{_mac(key, body)}"


def check_token(key: bytes, token: str, call_sid: str, project_id: str, now_s: float) -> None:
    """Raise ``InvalidStreamToken`` unless ``token`` was issued for this call and project
    and has not expired."""
    expires_text, _, mac = token.partition(".")
    if not expires_text.isdigit() or not mac:
        raise InvalidStreamToken("malformed stream token")
    if not hmac.compare_digest(mac, _mac(key, f"{call_sid}.{project_id}.{expires_text}")):
        raise InvalidStreamToken("stream token was not issued for this call")
    if int(expires_text) < now_s:
        raise InvalidStreamToken("stream token expired")


def _mac(key: bytes, body: str) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
