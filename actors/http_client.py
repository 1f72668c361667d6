"""The process's one HTTP client for what calls ask of the outside world: the projects'
business functions and Twilio's REST API (a transfer, an apology).

One client per process, not one per call or per request: its pool keeps connections to
each host alive, so a transfer or a function call reuses a connection (and its TLS
session) instead of paying a TCP and TLS handshake while the caller waits. The pool puts
no limit on connections in all: a limit would let one tenant's slow backend hold slots
another tenant's calls wait for; each request is bounded by its own deadline instead
(the project's ``function_timeout_s``, Twilio's ``REST_TIMEOUT_S``)."""

from __future__ import annotations

import httpx

from engine.tls import client_context

# Idle connections kept per process, and for how long: enough for the busy hosts (Twilio,
# the larger tenants' backends); an idle one past this is closed (servers drop them too).
KEEPALIVE_CONNECTIONS = 64
KEEPALIVE_EXPIRY_S = 30.0


def shared_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=client_context(),
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=KEEPALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        ),
    )
