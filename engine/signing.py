"""The signature on what the engine sends a business or an operator (a function call, an
alert webhook): ``X-Afterhours-Signature: sha256=<HMAC-SHA256 of the body>``. Pure; one
place, so the function client and the alert channel sign alike."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
