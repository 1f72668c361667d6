"""A simulated business backend: the functions a project's ``function_url`` points at
(``get_slots``, ``book_appointment``, as docs/example-project.toml declares them), over
real HTTP/1.1 on a loopback address, for ``afterhours call|simulate --business FILE``.

It takes what the engine's functions client sends (actors/functions.py): ``POST`` of
``{"name", "arguments", "call_sid", "project_id"}`` as JSON, signed with HMAC-SHA256 of
the body under the project's ``function_secret`` (``X-Afterhours-Signature:
sha256=<hex>``), and checks the signature as a business's backend should: a request
without it, or with a wrong one, gets 401 and is not acted on. Answers:

* ``get_slots {"day"}``: 200 ``{"day", "slots": [{"id", "start", "technician"}]}``;
* ``book_appointment {"slot_id", "name", "phone", "address", "problem"}``: 200
  ``{"booked": true, "confirmation", "slot_id", "start"}``; 400 naming a missing field;
  404 for a slot id it never offered;
* any other name: 404; a body that is not such JSON: 400.

Its calendar takes every booking (as many technicians as callers), so that ``simulate
--calls N --script booking`` books N visits rather than racing for one slot.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Final

import h11
import trio

from engine.simulator.http11 import next_request, read_body, send_json, serve_connection

# A function call's body is a few hundred bytes: far more is not one.
MAX_BODY_BYTES: Final = 64 * 1024
# The engine's client sends a request whole, over loopback: this long is a stuck peer.
REQUEST_TIMEOUT_S: Final = 5.0
# actors/functions.py's header and scheme, restated: the engine's layers may not import
# the actors (a test signs with actors.functions.sign and expects 200 here).
SIGNATURE_HEADER: Final = b"x-afterhours-signature"
SLOTS: Final = (
    {"id": "slot-1", "start": "09:00", "technician": "Alex"},
    {"id": "slot-2", "start": "13:30", "technician": "Jo"},
)
BOOKING_FIELDS: Final = ("slot_id", "name", "phone", "address", "problem")


@dataclass(frozen=True, slots=True)
class BusinessRequest:
    """Each request and how it was answered."""

    name: str
    status: int
    call_sid: str


@dataclass
class SimulatedBusiness:
    secret: str | None  # the project's function_secret; None: requests come unsigned
    requests: list[BusinessRequest] = field(default_factory=list)
    bookings: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/",
        task_status: trio.TaskStatus[str],
    ) -> None:
        """Serve until cancelled; reports the function URL. A port that cannot be bound
        raises ``OSError`` before started."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.url = f"http://{host}:{listeners[0].socket.getsockname()[1]}{path}"
        task_status.started(self.url)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        await serve_connection(stream, self._exchange, "simulated business")

    async def _exchange(self, stream: trio.SocketStream, connection: h11.Connection) -> bool:
        event = await next_request(stream, connection)
        if event is None:
            return False
        with trio.fail_after(REQUEST_TIMEOUT_S):
            body = await read_body(stream, connection, MAX_BODY_BYTES)
        if body is None:
            status, answer = 413, {"error": "request too large"}
        elif event.method != b"POST":
            status, answer = 405, {"error": "POST only"}
        else:
            signature = dict(event.headers).get(SIGNATURE_HEADER)
            status, answer = self.answer(signature, body)
        await send_json(stream, connection, status, answer)
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE

    def answer(self, signature: bytes | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer to one request (its signature header, its body)."""
        if self.secret is not None:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            expected = b"sha256=" + digest.encode()
            if signature is None or not hmac.compare_digest(signature, expected):
                self.requests.append(BusinessRequest("?", 401, ""))
                return 401, {"error": "bad or missing signature"}
        try:
            request = json.loads(body)
            name, arguments = str(request["name"]), request["arguments"]
            call_sid = str(request.get("call_sid", ""))
        except (ValueError, KeyError, TypeError):
            self.requests.append(BusinessRequest("?", 400, ""))
            return 400, {"error": "expected {name, arguments, call_sid, project_id}"}
        if not isinstance(arguments, dict):
            arguments = {}
        if name == "get_slots":
            status, answer = 200, {"day": str(arguments.get("day", "")), "slots": list(SLOTS)}
        elif name == "book_appointment":
            status, answer = self._book(arguments, call_sid)
        else:
            status, answer = 404, {"error": f"no function {name!r} here"}
        self.requests.append(BusinessRequest(name, status, call_sid))
        return status, answer

    def _book(self, arguments: dict[str, Any], call_sid: str) -> tuple[int, dict[str, Any]]:
        missing = [name for name in BOOKING_FIELDS if not arguments.get(name)]
        if missing:
            return 400, {"error": f"missing: {', '.join(missing)}"}
        slot = next((s for s in SLOTS if s["id"] == arguments["slot_id"]), None)
        if slot is None:
            return 404, {"error": f"no slot {arguments['slot_id']!r}; ask get_slots"}
        confirmation = f"SP-{1001 + len(self.bookings)}"
        self.bookings.append({**arguments, "call_sid": call_sid, "confirmation": confirmation})
        return 200, {
            "booked": True,
            "confirmation": confirmation,
            "slot_id": slot["id"],
            "start": slot["start"],
        }
