"""A simulated Vapi on 127.0.0.1: the inbound-bypass API the voice webhook calls, the
phone-call websocket its TwiML sends Twilio to, and the server messages Vapi posts
after, so a call to a ``vapi`` number runs end to end with no account (simulated
caller -> engine webhook -> Vapi's TwiML -> this stream -> the report back to the
engine's ``/vapi/events``).

``POST /call`` (Bearer key), answered as Vapi answers, in its error shape
``{"message", "error", "statusCode"}``:

* 401 "Invalid Key": no Bearer key, or not this one;
* 400 with the messages of each missing field: ``phoneNumberId``, ``customer.number``,
  or a call without ``phoneCallProviderBypassEnabled: true`` (this simulator places no
  calls itself);
* 201 with the Call object, ``phoneCallProviderDetails.twiml`` =
  ``<Response><Connect><Stream url="ws://127.0.0.1:<port>/<call id>/transport" />``.

When the stream ends (the caller's ``stop``, or the socket closes), it posts a
``status-update`` (``ended``) and an ``end-of-call-report`` (engine/simulator/
vapi_reports.py) to ``server_url`` with ``x-vapi-secret``.

Fault knobs (``VapiFaults``, set on ``SimulatedVapi.faults``): ``down`` (set before
``serve``: nothing listens on the API's port, so connections are refused), ``slow_s``
(``/call`` answers after that long), ``fail_status``
(``/call`` answers that HTTP status), ``bad_twiml`` (TwiML Twilio cannot run),
``duplicate_reports`` (each report posted twice, as Vapi may), ``wrong_secret``
(messages carry another secret).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import h11
import msgspec
import trio

from engine.simulator.http11 import next_request, read_body, send_json, serve_connection
from engine.simulator.vapi_reports import (
    Delivery,
    SimulatedCall,
    deliver,
    end_of_call_report,
    status_update,
)
from engine.simulator.vapi_stream import VapiStream
from engine.ws import HandshakeFailed, Rejection, WebSocketClosed, accept

MAX_BODY_BYTES = 64 * 1024  # a create-call body is a few hundred bytes
REQUEST_TIMEOUT_S = 5.0
HANDSHAKE_TIMEOUT_S = 5.0
STREAM_SEND_TIMEOUT_S = 5.0
CALL_MAX_S = 600.0  # Vapi's default maximum call duration
_INVALID_KEY = (
    "Invalid Key. Hot tip, you may be using the private key instead of the public key, "
    "or vice versa."
)


def simulated_vapi_credentials(auth_token: str) -> tuple[str, str]:
    """(API key, server secret) of the local simulated Vapi, derived from
    TWILIO_AUTH_TOKEN as the simulated Twilio account is (one-way: a real token set by
    mistake is never what goes over the wire), so the engine and ``afterhours
    simulate`` agree on them without another file."""
    key = auth_token.encode()
    api_key = hmac.new(key, b"afterhours simulated Vapi API key", hashlib.sha256)
    secret = hmac.new(key, b"afterhours simulated Vapi server secret", hashlib.sha256)
    return api_key.hexdigest(), secret.hexdigest()


@dataclass
class VapiFaults:
    down: bool = False
    slow_s: float = 0.0
    fail_status: int | None = None
    bad_twiml: bool = False
    duplicate_reports: bool = False
    wrong_secret: bool = False


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str
    status: int
    body: dict[str, Any] | None = None


@dataclass
class SimulatedVapi:
    api_key: str
    server_secret: str
    server_url: str  # where server messages go: the engine's PUBLIC_URL/vapi/events
    faults: VapiFaults = field(default_factory=VapiFaults)
    calls: dict[str, SimulatedCall] = field(default_factory=dict)
    requests: list[ApiRequest] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    base_url: str = ""
    stream_url: str = ""  # ws://127.0.0.1:<port>: the phone-call websocket

    async def serve(
        self, *, host: str = "127.0.0.1", port: int = 0, task_status: trio.TaskStatus[str]
    ) -> None:
        """Serve until cancelled; reports started with the API's base URL. A port that
        cannot be bound raises ``OSError`` before started."""
        api = await trio.open_tcp_listeners(port, host=host)
        streams = await trio.open_tcp_listeners(0, host=host)
        self.base_url = f"http://{host}:{api[0].socket.getsockname()[1]}"
        if self.faults.down:  # a host that is gone: nothing listens there (refused)
            for listener in api:
                await listener.aclose()
            api = []
        self.stream_url = f"ws://{host}:{streams[0].socket.getsockname()[1]}"
        async with trio.open_nursery() as nursery:
            if api:
                nursery.start_soon(trio.serve_listeners, self._api_connection, api)
            nursery.start_soon(trio.serve_listeners, self._stream_connection, streams)
            task_status.started(self.base_url)

    async def wait_reported(self, timeout_s: float) -> bool:
        """Until every call whose stream began has had its report posted (or
        ``timeout_s``): the caller's side ends before Vapi's reports go out."""
        with trio.move_on_after(timeout_s):
            while True:
                reported = {d.call_id for d in self.deliveries if d.type == "end-of-call-report"}
                begun = {c.id for c in self.calls.values() if c.status != "queued"}
                if begun <= reported:
                    return True
                await trio.sleep(0.05)
        return False

    # -- the API ----------------------------------------------------------------------------

    async def _api_connection(self, stream: trio.SocketStream) -> None:
        await serve_connection(stream, self._exchange, "simulated Vapi")

    async def _exchange(self, stream: trio.SocketStream, connection: h11.Connection) -> bool:
        event = await next_request(stream, connection)
        if event is None:
            return False
        method, path = event.method.decode(), event.target.decode().partition("?")[0]
        with trio.fail_after(REQUEST_TIMEOUT_S):
            body = await read_body(stream, connection, MAX_BODY_BYTES)
        if self.faults.slow_s:
            await trio.sleep(self.faults.slow_s)
        status, answer, parsed = self._answer(method, path, dict(event.headers), body)
        self.requests.append(ApiRequest(method, path, status, parsed))
        await send_json(stream, connection, status, answer)
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE

    def _answer(
        self, method: str, path: str, headers: dict[bytes, bytes], body: bytes | None
    ) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
        if path != "/call":
            return 404, _error(404, f"Cannot {method} {path}"), None
        if method != "POST":
            return 405, _error(405, f"Cannot {method} {path}"), None
        scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.encode(), self.api_key.encode()
        ):
            return 401, _error(401, _INVALID_KEY), None
        if body is None:
            return 413, _error(413, "request entity too large"), None
        if self.faults.fail_status is not None:
            status = self.faults.fail_status
            return status, _error(status, "Internal server error"), None
        try:
            request = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return 400, _error(400, ["body must be JSON"]), None
        if not isinstance(request, dict):
            return 400, _error(400, ["body must be an object"]), None
        problems = _problems(request)
        if problems:
            return 400, _error(400, problems), request
        return 201, self._create(request), request

    def _create(self, request: dict[str, Any]) -> dict[str, Any]:
        call = SimulatedCall(
            id=str(uuid.uuid4()),
            phone_number_id=request["phoneNumberId"],
            customer_number=request["customer"]["number"],
            metadata=request.get("metadata") or {},
            assistant_id=request.get("assistantId"),
        )
        self.calls[call.id] = call
        twiml = (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream '
            f'url="{self.stream_url}/{call.id}/transport" /></Connect></Response>'
        )
        if self.faults.bad_twiml:
            twiml = "<Response><Connect>"  # cut off: Twilio's error 12100
        twilio_details = {"twiml": twiml, "from": call.customer_number}
        return call.call_object() | {"phoneCallProviderDetails": twilio_details}

    # -- the phone-call websocket and the reports ------------------------------------------

    async def _stream_connection(self, stream: trio.SocketStream) -> None:
        found: list[SimulatedCall] = []

        def check(request: Any) -> Rejection | None:
            call_id, _, rest = request.path.lstrip("/").partition("/")
            call = self.calls.get(call_id)
            if call is None or rest != "transport" or call.status != "queued":
                return Rejection(404, "no such call")
            found.append(call)
            return None

        async with stream:
            try:
                socket, _ = await accept(
                    stream,
                    check=check,
                    max_message_bytes=1 << 20,
                    send_timeout_s=STREAM_SEND_TIMEOUT_S,
                    handshake_timeout_s=HANDSHAKE_TIMEOUT_S,
                )
            except (HandshakeFailed, trio.TooSlowError, trio.BrokenResourceError):
                return
            call = found[0]
            with trio.move_on_after(CALL_MAX_S):
                # The caller may hang up without a stop: the call is over all the same.
                with contextlib.suppress(
                    WebSocketClosed, trio.TooSlowError, trio.BrokenResourceError
                ):
                    await VapiStream(socket, call).run()
            await socket.aclose()
        await self._ended(call)

    async def _ended(self, call: SimulatedCall) -> None:
        call.status, call.ended_reason = "ended", "customer-ended-call"
        call.ended_at = datetime.now(UTC)
        secret = "not-the-secret" if self.faults.wrong_secret else self.server_secret
        send = partial(deliver, self.server_url, secret, deliveries=self.deliveries)
        await send(status_update(call))
        report = end_of_call_report(call)
        for _ in range(2 if self.faults.duplicate_reports else 1):
            await send(report)


def _problems(request: dict[str, Any]) -> list[str]:
    problems = []
    if not isinstance(request.get("phoneNumberId"), str) or not request["phoneNumberId"]:
        problems.append("phoneNumberId must be a string")
    customer = request.get("customer")
    if not isinstance(customer, dict) or not isinstance(customer.get("number"), str):
        problems.append("customer.number must be a string")
    if request.get("phoneCallProviderBypassEnabled") is not True:
        problems.append(
            "the simulated Vapi places no calls: phoneCallProviderBypassEnabled must be true"
        )
    return problems


def _error(status: int, message: str | list[str]) -> dict[str, Any]:
    names = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
    return {
        "message": message,
        "error": names.get(status, "Internal Server Error"),
        "statusCode": status,
    }
