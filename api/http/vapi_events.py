"""``POST /vapi/events``: Vapi's server messages about the calls it answers for us.

Set Vapi's server URL to ``PUBLIC_URL/vapi/events`` and its secret to
``VAPI_SERVER_SECRET`` (docs/deployment.md): Vapi sends the secret in ``x-vapi-secret``,
compared here in constant time. A request without it, or with another, gets 401 and
leaves nothing; without ``VAPI_SERVER_SECRET`` configured every request gets 401.

Then, in order: a body over ``MAX_BODY_BYTES`` 413 (refused from its declared length
before it is read, api/http/app.py); bad JSON or a message that is not Vapi's 400, naming the
field; a message type this engine does not take 422 (engine/vapi_messages.py says which
and why); informational types 204 with nothing stored; ``end-of-call-report`` and
``status-update`` are decoded into a call record and answered 200 only once the store
has accepted it (it spools while PostgreSQL is away, so accepted is kept): a full
store inbox past ``STORE_ACCEPT_TIMEOUT_S`` answers 503 rather than a 200 for a record
not queued. Every refusal is counted (``afterhours_refusals_total{edge="vapi"}``).

Why a refusal, not a silent 200, for what we do not take: a made-up answer would hide a
misconfiguration (the assistant, its tools and transfers live in Vapi), and Vapi sends a
server message once, not retried unless a backoff plan is configured (its
end-of-call-report page), so a refusal costs one error line in the call's log in Vapi,
which is where an operator looks when an assistant misbehaves.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from api.http.asgi import Response
from api.http.token_auth import token_matches
from engine.vapi_messages import MessageRefused, decode

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.http.asgi import Request
    from engine.config import Secret
    from engine.mailbox import Outbox
    from engine.messages import StoreWrite
    from engine.refusals import Refusals
    from engine.routing import RoutingSnapshot
    from engine.vapi_messages import CallHints

log = logging.getLogger("afterhours.vapi")

PATH = "/vapi/events"
ROUTES = {("POST", PATH)}
# A long call's report (its conversation twice: messages and transcript, plus the call
# object) is a few hundred KB; this leaves room without letting anyone fill memory.
MAX_BODY_BYTES = 4 << 20
# Vapi waits 20 s for an answer; the store's inbox frees within moments unless stuck.
STORE_ACCEPT_TIMEOUT_S = 5.0


class VapiEvents:
    def __init__(
        self,
        server_secret: Secret | None,
        *,
        routes: Callable[[], RoutingSnapshot],
        store: Outbox[StoreWrite],
        refusals: Refusals | None = None,
    ) -> None:
        self._secret = server_secret.reveal().encode() if server_secret else None
        self._routes = routes
        self._store = store
        self._refusals = refusals

    async def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(405, {"error": "use POST"}, [(b"allow", b"POST")])
        if not self._authentic(request):
            self._refuse("bad_secret")
            why = "missing or wrong x-vapi-secret"
            if self._secret is None:
                why = "VAPI_SERVER_SECRET is not set: every Vapi message is refused"
            return Response(401, {"error": why})
        try:
            decoded = decode(request.body)
        except MessageRefused as refused:
            self._refuse("bad_message" if refused.status == 400 else "refused_type")
            body = {"error": refused.message}
            if refused.field is not None:
                body["field"] = refused.field
            return Response(refused.status, body)
        if decoded.update is None:
            return Response(204, None)
        update = decoded.update
        if decoded.hints is not None:
            project_id, to_number = self._locate(decoded.hints)
            update = msgspec.structs.replace(update, project_id=project_id, to_number=to_number)
        if not await self._store.send_within(update, STORE_ACCEPT_TIMEOUT_S):
            self._refuse("store_full")
            log.error(
                "Vapi %s for %s: the store's inbox stayed full", decoded.type, update.call_sid
            )
            return Response(
                503, {"error": "the record could not be queued; retry"}, [(b"retry-after", b"5")]
            )
        return Response(200, {"recorded": decoded.type, "callSid": update.call_sid})

    def body_too_large(self) -> Response:
        self._refuse("body_too_large")
        return Response(413, {"error": f"the body is over {MAX_BODY_BYTES} bytes"})

    def _authentic(self, request: Request) -> bool:
        return token_matches(request.headers.get("x-vapi-secret"), self._secret)

    def _locate(self, hints: CallHints) -> tuple[str | None, str | None]:
        """The call's project and our number: from the routing snapshot by Vapi's id for
        the number (or the number itself), else the project our metadata named. Only
        fills a row's empty fields (identity keeps its first value): the webhook's
        record, when there is one, already says both."""
        snapshot = self._routes()
        route = None
        if hints.phone_number_id is not None:
            route = next(
                (r for r in snapshot.numbers.values()
                 if r.vapi_phone_number_id == hints.phone_number_id),
                None,
            )  # fmt: skip
        if route is None and hints.to_number is not None:
            route = snapshot.route(hints.to_number)
        if route is not None:
            return route.project_id, route.number
        return hints.project_id, hints.to_number

    def _refuse(self, reason: str) -> None:
        if self._refusals is not None:
            self._refusals.refuse("vapi", reason)
