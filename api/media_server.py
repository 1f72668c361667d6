"""The Twilio media stream listener: the per-frame path's front door.

It has its own port (``MEDIA_PORT``): the hot path does not go through Hypercorn. An
upgrade must carry a valid ``X-Twilio-Signature`` over the stream URL Twilio was given
(empty parameters: protocols.md 2.6); the stream's ``start`` must carry the one-time
token the voice webhook issued for that CallSid and project (expired, foreign or reused:
refused, closed with 1008). Then the call's actor starts in the dynamic call group and
this connection's task keeps the socket open until the call ends.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import trio
from twilio.request_validator import RequestValidator

from actors.call import CallActor, CallSetup
from actors.store.queries import StoreUnavailable, ask_store
from actors.store.routing import claim_stream
from actors.twilio_rest import TwilioRest
from engine.errors import ChildStartError, StartupError
from engine.group import GroupRefused
from engine.messages import CallUpdated, utc_now
from engine.stream_claims import LocalClaims
from engine.stream_tokens import InvalidStreamToken, check_token
from engine.twilio_codec import Connected, Start, TwilioProtocolError, decode_twilio
from engine.ws import HandshakeFailed, Rejection, WebSocket, WebSocketClosed, accept

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from websockets.http11 import Request

    from actors.early_sessions import EarlyRequest
    from actors.model_link import ModelEndpoint
    from actors.store.queries import StoreQuery
    from engine.config import Settings
    from engine.group import DynamicGroup
    from engine.lifecycle import StopSignal
    from engine.mailbox import Outbox
    from engine.messages import Alert, StoreWrite
    from engine.metric_samples import MetricsSample
    from engine.pricing import Prices
    from engine.projects import Project
    from engine.routing import RoutingSnapshot

log = logging.getLogger("afterhours.media")

MEDIA_PATH = "/twilio/media"
HANDSHAKE_TIMEOUT_S = 10.0
START_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 5.0
MAX_TWILIO_MESSAGE_BYTES = 64 * 1024  # a media frame is ~400 bytes
# The stream's claim in PostgreSQL: the caller waits on it before the greeting.
CLAIM_TIMEOUT_S = 1.0
LOCAL_CLAIMS_ONLY_S = 5.0


class MediaServer:
    def __init__(
        self,
        settings: Settings,
        *,
        calls: DynamicGroup,
        store: Outbox[StoreWrite],
        setup: Outbox[StoreQuery],
        routes: Callable[[], RoutingSnapshot],
        alerts: Outbox[Alert],
        model: Callable[[], ModelEndpoint],
        early: Outbox[EarlyRequest] | None,
        prices: Prices,
        metrics: Outbox[MetricsSample] | None = None,
    ) -> None:
        token = settings.twilio_auth_token
        self._validator = RequestValidator(token.reveal()) if token else None
        self._stream_key = token.reveal().encode() if token else b""
        self._settings = settings
        self._calls = calls
        self._store = store
        self._setup = setup  # the store's call-setup lane
        self._routes = routes  # the routing actor's current snapshot
        self._local_claims = LocalClaims()
        self._local_only_until_s = float("-inf")
        self._alerts = alerts
        self._model = model
        self._early = early
        self._prices = prices
        self._metrics = metrics
        sid = settings.twilio_account_sid
        self._twilio_rest = (
            TwilioRest(settings.twilio_api_base_url, sid, token.reveal()) if sid and token else None
        )
        self.public_url = ""
        self.bound_port = 0

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[str]) -> None:
        settings = self._settings
        if settings.workers > 1:  # the workers share MEDIA_PORT: the kernel spreads calls
            serve = partial(_serve_shared, self._connection, settings.host, settings.media_port)
        else:
            serve = partial(
                trio.serve_tcp, self._connection, settings.media_port, host=settings.host
            )
        bind_error: OSError | None = None
        async with trio.open_nursery() as nursery:
            try:
                listeners = await nursery.start(serve)
            except OSError as exc:
                bind_error = exc  # raised below, outside the nursery, as one clear error
            else:
                port = self.bound_port = listeners[0].socket.getsockname()[1]
                self.public_url = settings.public_media_url or _derived_url(
                    settings.public_url, port
                )
                log.info("media streams on port %d (Twilio uses %s)", port, self.public_url)
                task_status.started(self.public_url)
                await stop.wait()
                nursery.cancel_scope.cancel()  # live calls are drained by the calls group first
        if bind_error is not None:
            raise StartupError(
                f"cannot listen on {settings.host}:{settings.media_port} (MEDIA_PORT): "
                f"{bind_error.strerror or bind_error}"
            )

    def _check(self, request: Request) -> Rejection | None:
        if request.path.split("?")[0] != urlsplit(self.public_url).path:
            return Rejection(404, "no media stream here")
        signature = request.headers.get("X-Twilio-Signature", "")
        if self._validator is None or not signature:
            return Rejection(403, "missing X-Twilio-Signature")
        query = request.path.partition("?")[2]
        url = self.public_url + (f"?{query}" if query else "")
        if not self._validator.validate(url, {}, signature):
            return Rejection(403, "invalid X-Twilio-Signature")
        return None

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                socket, _ = await accept(
                    stream,
                    check=self._check,
                    max_message_bytes=MAX_TWILIO_MESSAGE_BYTES,
                    send_timeout_s=SEND_TIMEOUT_S,
                    handshake_timeout_s=HANDSHAKE_TIMEOUT_S,
                )
            except (HandshakeFailed, trio.TooSlowError, trio.BrokenResourceError) as exc:
                log.warning("media stream refused: %s", exc)
                return
            try:
                await self._serve_call(socket)
            finally:
                await socket.aclose()

    async def _serve_call(self, socket: WebSocket) -> None:
        try:
            with trio.fail_after(START_TIMEOUT_S):
                start = await _read_start(socket)
            project = await self._admit(start)
        except (StreamRefused, WebSocketClosed, trio.TooSlowError, TwilioProtocolError) as exc:
            log.warning("media stream closed before the call began: %s", exc)
            return
        call_sid = start.start.callSid
        setup = CallSetup(
            call_sid,
            start.streamSid,
            project,
            self._model(),
            self._twilio_rest,
            early=self._early,
            session_max_s=self._settings.model_session_max_s,
            prices=self._prices,
            metrics=self._metrics,
        )
        done = trio.Event()
        try:
            actor = CallActor(setup, socket, self._store, self._alerts, done)
            await self._calls.start_child(call_sid, actor.run)
        except (GroupRefused, ChildStartError) as exc:
            log.error("call %s could not start: %s", call_sid, exc)
            failed = CallUpdated(
                call_sid,
                project_id=project.id,
                status="failed",
                end_reason="call_start_failed",
                error=str(exc),
                ended_at=utc_now(),
            )
            await self._store.send(failed)
            return
        await done.wait()

    async def _admit(self, start: Start) -> Project:
        parameters = start.start.customParameters
        call_sid, project_id = start.start.callSid, parameters.get("project", "")
        token = parameters.get("token", "")
        try:
            check_token(self._stream_key, token, call_sid, project_id, time.time())
        except InvalidStreamToken as exc:
            raise StreamRefused(str(exc)) from None
        project = self._routes().projects.get(project_id)
        if project is None:
            raise StreamRefused(f"no project {project_id!r}")
        if not self._local_claims.claim(call_sid, trio.current_time()):
            raise StreamRefused("stream token already used: the call has a stream here")
        if not await self._claim_everywhere(call_sid, start.streamSid, project_id):
            raise StreamRefused("stream token already used: the call has a stream")
        return project

    async def _claim_everywhere(self, call_sid: str, stream_sid: str, project_id: str) -> bool:
        """The single use across instances, in PostgreSQL. While the database does not
        answer, this instance's own claim stands alone (for ``LOCAL_CLAIMS_ONLY_S``
        before it asks again), so a caller is never kept waiting on it."""
        if trio.current_time() < self._local_only_until_s:
            return True
        claim = partial(
            claim_stream, call_sid=call_sid, stream_sid=stream_sid, project_id=project_id
        )
        try:
            claimed: bool = await ask_store(self._setup, claim, timeout_s=CLAIM_TIMEOUT_S)
        except StoreUnavailable as exc:
            self._local_only_until_s = trio.current_time() + LOCAL_CLAIMS_ONLY_S
            log.warning(
                "call %s: stream claimed on this instance only (%s); claims stay local for %g s",
                call_sid,
                exc,
                LOCAL_CLAIMS_ONLY_S,
            )
            return True
        return claimed


class StreamRefused(Exception):
    pass


async def _read_start(socket: WebSocket) -> Start:
    while True:
        for message in await socket.receive_batch():
            event = decode_twilio(message)
            if isinstance(event, Start):
                return event
            if not isinstance(event, Connected):
                raise TwilioProtocolError(f"{type(event).__name__} before start")


async def _serve_shared(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]],
) -> None:
    """``trio.serve_tcp`` on a socket bound with SO_REUSEPORT (trio has no option for it)."""
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
    try:
        await sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    listeners = [trio.SocketListener(sock)]
    await trio.serve_listeners(handler, listeners, task_status=task_status)


def _derived_url(public_url: str, port: int) -> str:
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    host = parts.hostname or "127.0.0.1"
    return urlunsplit((scheme, f"{host}:{port}", MEDIA_PATH, "", ""))
