"""A simulated Twilio REST API: the call update the engine makes, over real HTTP/1.1.

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP Basic auth and a
form holding ``Twiml=<Response>...`` or ``Status=completed`` (docs/wire-formats.md 2.8, the wire
format the twilio package sends). Answered as Twilio answers, in Twilio's error shape
``{"code", "message", "more_info", "status"}``:

* 401, code 20003 "Authenticate": no Basic auth, or not this account's sid and password;
* 404, code 20404: another account's path, or a CallSid this Twilio does not carry;
* 400, code 21220 "Invalid call state": the call is over;
* 400, code 12100 "Document parse failure": TwiML that is not well-formed XML with a
  ``<Response>`` root (https://www.twilio.com/docs/api/errors/12100);
* 200 with the call resource (``sid``, ``status`` "in-progress", ...) otherwise; the
  update is recorded (``SimulatedTwilio.updates``) and ends the call's media stream.

Fault knobs for tests: ``fail_next`` (HTTP 500, code 20500) and ``stall_next`` (the
request is read and never answered: the engine's REST timeout has to end it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import h11
import trio

from engine.simulator.http11 import READ_BYTES, next_request, read_body, send_json, serve_connection
from engine.simulator.twilio_calls import CallRegistry, LiveCall, TwimlError, simulated_account

if TYPE_CHECKING:
    from engine.simulator.twilio_calls import CallUpdate

log = logging.getLogger("afterhours.simulator.twilio")

API_VERSION = "2010-04-01"
_CALL_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Calls/(?P<call>[^/]+)\.json")
# A call update is a few hundred bytes (the transfer TwiML is ~150): far more is not one.
MAX_BODY_BYTES = 64 * 1024
# The engine's client sends a request whole, over loopback: this long is a stuck peer.
REQUEST_TIMEOUT_S = 5.0
# A stalled request is held at most this long (or until its client gives up), so a
# forgotten stall never holds a connection for good.
STALL_HOLD_S = 60.0


@dataclass(frozen=True, slots=True)
class RestRequest:
    """Each request the API received and how it was answered (``None``: stalled)."""

    method: str
    path: str
    status: int | None


@dataclass
class _Faults:
    fail: int = 0
    fail_status: int = 500
    stall: int = 0


@dataclass
class _Answer:
    status: int
    body: dict[str, Any]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class SimulatedTwilio:
    """The simulated Twilio account: its calls (``calls``) and its REST API (``serve``)."""

    def __init__(self, account_sid: str, password: str) -> None:
        self.account_sid = account_sid
        self._password = password.encode()
        self.calls = CallRegistry()
        self.requests: list[RestRequest] = []
        self._faults = _Faults()
        self.base_url = ""

    @classmethod
    def for_auth_token(cls, auth_token: str) -> SimulatedTwilio:
        """The local account the engine derives from the same TWILIO_AUTH_TOKEN."""
        return cls(*simulated_account(auth_token))

    @property
    def updates(self) -> list[CallUpdate]:
        """The accepted call updates, oldest first."""
        return self.calls.updates

    def fail_next(self, updates: int, *, status: int = 500) -> None:
        """Answer the next ``updates`` authenticated requests with ``status``."""
        self._faults.fail, self._faults.fail_status = updates, status

    def stall_next(self, updates: int) -> None:
        """Read the next ``updates`` authenticated requests and never answer them."""
        self._faults.stall = updates

    async def serve(
        self, *, host: str = "127.0.0.1", port: int = 0, task_status: trio.TaskStatus[str]
    ) -> None:
        """Serve until cancelled; reports started with the base URL (``http://host:port``).
        A port that cannot be bound raises ``OSError`` before started."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        self.base_url = f"http://{host}:{bound}"
        task_status.started(self.base_url)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        await serve_connection(stream, self._exchange, "simulated Twilio REST")

    async def _exchange(self, stream: trio.SocketStream, connection: h11.Connection) -> bool:
        """One request and its answer; False when the connection is done."""
        event = await next_request(stream, connection)
        if event is None:
            return False
        method, target = event.method.decode(), event.target.decode()
        with trio.fail_after(REQUEST_TIMEOUT_S):
            body = await read_body(stream, connection, MAX_BODY_BYTES)
        answer = (
            _error(413, None, "Payload Too Large") if body is None
            else self._answer(method, target, dict(event.headers), body)
        )  # fmt: skip
        if answer is None:  # a stall: hold the request until its client gives up
            self.requests.append(RestRequest(method, target, None))
            with trio.move_on_after(STALL_HOLD_S):
                while await stream.receive_some(READ_BYTES):
                    pass
            return False
        self.requests.append(RestRequest(method, target, answer.status))
        await send_json(stream, connection, answer.status, answer.body, answer.headers)
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE

    def _answer(
        self, method: str, target: str, headers: dict[bytes, bytes], body: bytes
    ) -> _Answer | None:
        if not self._authenticated(headers.get(b"authorization", b"")):
            answer = _error(401, 20003, "Authenticate")
            answer.headers.append((b"WWW-Authenticate", b'Basic realm="Twilio API"'))
            return answer
        path = target.partition("?")[0]
        match = _CALL_PATH.fullmatch(path)
        if match is None or match["account"] != self.account_sid:
            return _not_found(path)
        faults = self._faults
        if faults.stall:
            faults.stall -= 1
            return None
        if faults.fail:
            faults.fail -= 1
            return _error(faults.fail_status, 20500, "Internal Server Error")
        if method != "POST":
            return _error(405, 20004, "Method not allowed")
        call = self.calls.get(match["call"])
        if call is None:
            return _not_found(path)
        return self._update(call, body)

    def _authenticated(self, authorization: bytes) -> bool:
        scheme, _, encoded = authorization.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).partition(b":")
        except binascii.Error:
            return False
        # Both compared in constant time, and both always: no early answer to time.
        same_user = hmac.compare_digest(user, self.account_sid.encode())
        return hmac.compare_digest(password, self._password) and same_user

    def _update(self, call: LiveCall, body: bytes) -> _Answer:
        try:
            form = parse_qs(body.decode(), max_num_fields=20, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            return _error(400, None, "The form could not be read")
        twiml, status = form.get("Twiml", [None])[0], form.get("Status", [None])[0]
        if twiml is None and status != "completed":
            # Url= (fetch TwiML from a URL) is Twilio's too; this simulation does not fetch.
            return _error(400, None, "The simulated Twilio takes Twiml or Status=completed")
        if call.status != "in-progress":
            return _error(400, 21220, "Invalid call state")
        try:
            update = self.calls.apply(call, twiml)
        except TwimlError as exc:
            log.info("simulated Twilio: call %s: TwiML refused: %s", call.call_sid, exc)
            return _error(400, 12100, "Document parse failure")
        if update.transferred_to is not None:
            log.info(
                "simulated Twilio: call %s transferred to %s", call.call_sid, update.transferred_to
            )
        return _Answer(200, self._resource(call))

    def _resource(self, call: LiveCall) -> dict[str, Any]:
        """The call resource, with the fields the twilio package reads most."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call.call_sid}.json"
        created = format_datetime(call.created)
        updated = call.update.at if call.update is not None else call.created
        return {
            "sid": call.call_sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "status": call.status,
            "direction": "inbound",
            "from": call.from_number,
            "to": call.to_number,
            "date_created": created,
            "date_updated": format_datetime(updated),
            "start_time": created,
            "end_time": None,
            "uri": uri,
        }


def _error(status: int, code: int | None, message: str) -> _Answer:
    more_info = f"https://www.twilio.com/docs/errors/{code}" if code else None
    body = {"code": code, "message": message, "more_info": more_info, "status": status}
    return _Answer(status, body)


def _not_found(path: str) -> _Answer:
    return _error(404, 20404, f"The requested resource {path} was not found")
