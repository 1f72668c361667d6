"""The Twilio media stream listener: the per-frame path's front door.

It has its own port (``MEDIA_PORT``): the hot path does not go through Hypercorn. An
upgrade must carry a valid ``X-Twilio-Signature`` over the stream URL Twilio was given
(empty parameters: docs/wire-formats.md 2.6); the stream's ``start`` must carry the one-time
token the voice webhook issued for that CallSid and project (expired, foreign or reused:
refused, closed with 1008). Then the call's actor starts in the dynamic call group and
this connection's task keeps the socket open until the call ends.

Strangers reach this port too, so every connection is bounded before it proves itself:
a cap on all connections and a smaller one on those still *pending* (no signed upgrade
and ``start`` yet; see ``engine/connection_slots.py`` for the policies), a short
time budget for the upgrade and for ``start``, a bound on what may come before
``start``, and the WebSocket layer's own bounds (pings, unsent bytes). Each refusal is
counted (edge ``media``, ``afterhours_refusals_total``) and logged at most once per
``REFUSAL_LOG_EVERY_S`` per reason, so a flood cannot flood the log.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import trio

from actors.call import CallActor, CallSetup
from engine.connection_slots import ConnectionSlots, Slot, SlotStatistics
from engine.errors import ChildStartError, StartupError
from engine.group import GroupRefused
from engine.mailbox import RECORD_SEND_TIMEOUT_S
from engine.messages import CallUpdated, utc_now
from engine.price_book import UnknownModelPrices
from engine.realtime_models import deprecation_warning
from engine.refusals import Refusals
from engine.store_queries import ClaimStream, StoreUnavailable, ask_store
from engine.stream_claims import LocalClaims
from engine.stream_tokens import InvalidStreamToken, check_token
from engine.twilio_codec import Connected, Start, TwilioProtocolError, decode_twilio
from engine.twilio_signature import is_valid_signature
from engine.ws import (
    ControlBudget,
    HandshakeAbandoned,
    HandshakeFailed,
    Rejection,
    WebSocket,
    WebSocketClosed,
    accept,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx
    from websockets.http11 import Request

    from actors.model_link import ModelEndpoint
    from actors.twilio_rest import TwilioRest
    from engine.config import Settings
    from engine.early_requests import EarlyRequest
    from engine.group import DynamicGroup
    from engine.lifecycle import StopSignal
    from engine.mailbox import Outbox
    from engine.messages import Alert, StoreWrite
    from engine.metric_samples import MetricsSample
    from engine.price_book import PriceBook
    from engine.pricing import Prices
    from engine.projects import Project
    from engine.routing import RoutingSnapshot
    from engine.store_queries import StoreQuery

log = logging.getLogger("afterhours.media")

MEDIA_PATH = "/twilio/media"
# Twilio sends its upgrade request as soon as its connection is open (through nginx: the
# whole request head at once), and `connected` and `start` right behind our 101: each
# takes about a round trip. 3 s covers a slow intercontinental round trip plus two lost
# packets (TCP's first retransmission waits 1 s, the second 2 s more); a slowloris holds
# a pending slot for 6 s at most, and less once newer connections evict it (the oldest
# pending one goes first: see ``media_connection_caps``).
HANDSHAKE_TIMEOUT_S = 3.0
START_TIMEOUT_S = 3.0
SEND_TIMEOUT_S = 5.0
MAX_TWILIO_MESSAGE_BYTES = 64 * 1024  # a media frame is ~400 bytes
# The stream's claim in PostgreSQL: the caller waits on it before the greeting.
CLAIM_TIMEOUT_S = 1.0
LOCAL_CLAIMS_ONLY_S = 5.0
# Before `start` Twilio sends exactly one message (`connected`): with `start` and the
# upgrade request that is 2 messages and about 2 KB. Twice the messages and 8 times the
# bytes is chatter. (Checked after each read: at most one read, 64 KiB, goes past them.)
MAX_MESSAGES_BEFORE_START = 4
MAX_BYTES_BEFORE_START = 16 * 1024
# A peer that keeps a connection alive pings every few seconds at most: 16 at once and
# one a second more is far above it, and a flood (thousands in one read) is closed on
# its first read.
CONTROL_BUDGET = ControlBudget(burst=16, per_s=1.0)
# A call's writers each wait on one message at a time (a few KB of audio or a mark);
# this much unsent, with more to come, is a peer that stopped reading.
MAX_UNSENT_BYTES = 256 * 1024
# A peer turned away before its call (a timeout, chatter, a bad token) gets a 1008 close
# and this long to answer it: a round trip for Twilio, too short to hold a slot with.
REFUSAL_CLOSE_TIMEOUT_S = 0.5
REFUSAL_LOG_EVERY_S = 10.0
MIN_PENDING_CONNECTIONS = 16
# The HTTP status a refused upgrade was answered with -> the refusal's reason.
_HANDSHAKE_REFUSALS = {403: "bad_signature", 404: "not_found"}


def media_connection_caps(max_concurrent_calls: int) -> tuple[int, int]:
    """(all connections, pending connections) for the media port.

    Constants derived from MAX_CONCURRENT_CALLS rather than settings of their own: the
    calls this process may carry decide them, and there is nothing left to tune. Pending
    connections (no signed upgrade and ``start`` yet) get half the calls, at least 16: a
    real stream is pending for about a round trip, so even a burst of calls fits. All
    connections: the calls plus the pending ones, so strangers, who never get past
    pending, can never take a slot a call needs (a connection over the calls cap after
    ``start`` is refused by the calls group, as before).
    """
    pending = max(MIN_PENDING_CONNECTIONS, max_concurrent_calls // 2)
    return max_concurrent_calls + pending, pending


@dataclass(frozen=True, slots=True)
class MediaStatistics:
    connections: SlotStatistics
    peak_unsent_bytes: int  # the most any closed connection had waiting to be written


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
        prices: PriceBook,
        metrics: Outbox[MetricsSample] | None = None,
        refusals: Refusals | None = None,
        twilio_rest: TwilioRest | None = None,  # api/http/twilio_access.py; None: no transfers
        instance: str | None = None,  # this process's id, on its calls' rows (leases.py)
        http: httpx.AsyncClient | None = None,  # actors/http_client.py, shared by every call
    ) -> None:
        self._instance = instance
        self._http = http
        token = settings.twilio_auth_token
        # One key for both: the upgrade's signature and the stream token's HMAC.
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
        self._model_prices: dict[str, Prices] = {}  # by model, as first priced
        self._metrics = metrics
        self._twilio_rest = twilio_rest
        self.public_url = ""
        self.bound_port = 0
        self._refusals = refusals if refusals is not None else Refusals()
        max_open, max_pending = media_connection_caps(settings.max_concurrent_calls)
        self._slots = ConnectionSlots(max_open=max_open, max_pending=max_pending)
        self._peak_unsent_bytes = 0
        self._refusals_logged: dict[str, tuple[float, int]] = {}  # reason -> (at, unlogged)

    def statistics(self) -> MediaStatistics:
        return MediaStatistics(self._slots.statistics(), self._peak_unsent_bytes)

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
        if not self._stream_key or not signature:
            return Rejection(403, "missing X-Twilio-Signature")
        query = request.path.partition("?")[2]
        url = self.public_url + (f"?{query}" if query else "")
        # The upgrade is a GET: signed over the wss:// URL with no parameters.
        if not is_valid_signature(self._stream_key, url, [], signature):
            return Rejection(403, "invalid X-Twilio-Signature")
        return None

    async def _connection(self, stream: trio.SocketStream) -> None:
        slot = self._slots.open()
        if slot is None:  # nothing read: turning a connection away costs nothing
            self._refuse("too_many_connections", f"{self._slots.max_open} connections open")
            await trio.aclose_forcefully(stream)
            return
        socket: WebSocket | None = None
        try:
            with slot.cancel_scope:  # cancelled when a newer connection evicts this one
                socket = await self._upgrade(stream)
                if socket is not None:
                    await self._serve_call(socket, slot)
        finally:
            try:
                await self._close(stream, socket, slot)
            finally:
                slot.release()

    async def _upgrade(self, stream: trio.SocketStream) -> WebSocket | None:
        """The signed upgrade, within HANDSHAKE_TIMEOUT_S; ``None`` when refused (counted)."""
        try:
            socket, _ = await accept(
                stream,
                check=self._check,
                max_message_bytes=MAX_TWILIO_MESSAGE_BYTES,
                send_timeout_s=SEND_TIMEOUT_S,
                handshake_timeout_s=HANDSHAKE_TIMEOUT_S,
                max_unsent_bytes=MAX_UNSENT_BYTES,
                control_budget=CONTROL_BUDGET,
            )
        except trio.TooSlowError:
            self._refuse("handshake_timeout", f"no upgrade within {HANDSHAKE_TIMEOUT_S:g} s")
        except (HandshakeAbandoned, trio.BrokenResourceError) as exc:
            log.debug("media stream: the peer left during the upgrade: %s", exc)  # not refused
        except HandshakeFailed as exc:
            self._refuse(_HANDSHAKE_REFUSALS.get(exc.status or 0, "bad_handshake"), str(exc))
        else:
            return socket
        return None

    async def _close(self, stream: trio.SocketStream, socket: WebSocket | None, slot: Slot) -> None:
        """Count how the connection ended, if a limit ended it, and close it: a call
        with its bounded goodbye, a connection pushed out or refused without waiting."""
        if slot.evicted:
            self._refuse("too_many_pending", f"{self._slots.max_pending} connections pending")
        elif socket is not None and socket.fault is not None:
            stage = "during its call" if slot.proven else "before its call"
            self._refuse(socket.fault, f"{stage}, after {socket.bytes_received} bytes")
        if socket is None:
            await trio.aclose_forcefully(stream)
            return
        self._peak_unsent_bytes = max(self._peak_unsent_bytes, socket.peak_unsent_bytes)
        if slot.evicted:
            await trio.aclose_forcefully(stream)
        elif slot.proven:
            await socket.aclose()
        else:  # a stranger (or a stop before its start) is owed no long goodbye
            await socket.aclose(timeout_s=REFUSAL_CLOSE_TIMEOUT_S)

    def _refuse(self, reason: str, detail: str) -> None:
        """Count a refusal; log it unless this reason was logged in the last
        REFUSAL_LOG_EVERY_S (then the next line says how many were not)."""
        self._refusals.refuse("media", reason)
        now_s = trio.current_time()
        logged_at_s, unlogged = self._refusals_logged.get(reason, (-math.inf, 0))
        if now_s - logged_at_s < REFUSAL_LOG_EVERY_S:
            self._refusals_logged[reason] = (logged_at_s, unlogged + 1)
            return
        self._refusals_logged[reason] = (now_s, 0)
        more = f" (and {unlogged} more since the last such line)" if unlogged else ""
        log.warning("media stream refused (%s): %s%s", reason, detail, more)

    async def _serve_call(self, socket: WebSocket, slot: Slot) -> None:
        try:
            start = await _read_start(socket)
            # A signed upgrade and a `start` in time: no longer pending, so no newcomer
            # evicts it while its one-time token is checked (a bad one is refused at
            # once) and claimed: evicted after its claim, a real call would be lost.
            slot.prove()
            project = await self._admit(start)
        except _Refused as refused:
            self._refuse(refused.reason, str(refused))
            await socket.aclose(1008, refused.reason, timeout_s=REFUSAL_CLOSE_TIMEOUT_S)
            return
        except StreamRefused as exc:
            self._refuse("bad_token", str(exc))
            await socket.aclose(1008, "stream refused", timeout_s=REFUSAL_CLOSE_TIMEOUT_S)
            return
        except (WebSocketClosed, trio.TooSlowError) as exc:
            # The peer left, or a limit of the socket's ended it (counted when it closes).
            log.info("media stream closed before the call began: %s", exc)
            return
        call_sid = start.start.callSid
        # The project's own model when it names one, else OPENAI_REALTIME_MODEL; the
        # call is costed at that model's prices.
        model = project.model or self._settings.openai_realtime_model
        setup = CallSetup(
            call_sid,
            start.streamSid,
            project,
            replace(self._model(), model=model),
            self._twilio_rest,
            early=self._early,
            session_max_s=self._settings.model_session_max_s,
            prices=self._prices_for(model, project.id),
            metrics=self._metrics,
            engine_instance=self._instance,
            frames_per_append=self._settings.caller_frames_per_append,
            mark_every_deltas=self._settings.mark_every_deltas,
            http=self._http,
        )
        self._record_live(setup)
        await self._run_call(setup, socket)

    async def _run_call(self, setup: CallSetup, socket: WebSocket) -> None:
        """The call's actor, started in the calls group, until the call ends. A call the
        group refuses (full, stopping) or that fails to start gets its failed record
        within ``RECORD_SEND_TIMEOUT_S``: a stuck store never holds the connection."""
        call_sid = setup.call_sid
        done = trio.Event()
        try:
            actor = CallActor(setup, socket, self._store, self._alerts, done)
            await self._calls.start_child(call_sid, actor.run)
        except (GroupRefused, ChildStartError) as exc:
            log.error("call %s could not start: %s", call_sid, exc)
            failed = CallUpdated(
                call_sid,
                project_id=setup.project.id,
                status="failed",
                end_reason="call_start_failed",
                error=str(exc),
                ended_at=utc_now(),
                engine_instance=self._instance,
            )
            if not await self._store.send_within(failed, RECORD_SEND_TIMEOUT_S):
                log.error("call %s: the failed call's record not queued", call_sid)
            return
        await done.wait()

    def _record_live(self, setup: CallSetup) -> None:
        """Say that this instance carries the call, through the store as well as the claim:
        when the claim was local only (the database did not answer) this is what names
        the instance, brought by the spool behind the webhook's record. Without waiting:
        a full store inbox delays no caller, and the row already names an instance."""
        if self._instance is None:
            return
        live = CallUpdated(
            setup.call_sid,
            project_id=setup.project.id,
            status="active",
            stream_sid=setup.stream_sid,
            engine_instance=self._instance,
        )
        try:
            self._store.send_nowait(live)
        except trio.WouldBlock:
            log.warning(
                "call %s: the store's inbox is full; its live record is skipped", setup.call_sid
            )

    def _prices_for(self, model: str, project_id: str) -> Prices:
        """``model``'s prices, remembered; the first call with a deprecated model logs
        it. A model without prices (a project row written around the engine's
        validation) is costed at OPENAI_REALTIME_MODEL's, which the start checked."""
        prices = self._model_prices.get(model)
        if prices is not None:
            return prices
        default = self._settings.openai_realtime_model
        warning = deprecation_warning(model, f"project {project_id}: model")
        if warning is not None and model != default:  # the start logged the default's
            log.warning("%s", warning)
        try:
            prices = self._prices.prices_for(model)
        except UnknownModelPrices as exc:
            log.warning("%s; its calls are costed at %s's prices", exc, default)
            prices = self._prices.prices_for(default)
        self._model_prices[model] = prices
        return prices

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
        claim = ClaimStream(call_sid, stream_sid, project_id, self._instance)
        try:
            claimed = await ask_store(self._setup, claim, timeout_s=CLAIM_TIMEOUT_S)
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


class _Refused(Exception):
    """A stream turned away before its call, for ``reason`` (a refusal count's label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


async def _read_start(socket: WebSocket) -> Start:
    """Twilio's ``start`` (after its ``connected``), within START_TIMEOUT_S and within
    MAX_MESSAGES_BEFORE_START messages and MAX_BYTES_BEFORE_START bytes."""
    messages = message_bytes = 0
    with trio.move_on_after(START_TIMEOUT_S):
        while True:
            # Only what comes *before* start counts: under load one read may hold
            # `connected`, `start` and the first media frames behind it.
            batch = await socket.receive_batch()
            for index, message in enumerate(batch):
                messages += 1
                message_bytes += len(message)
                if messages > MAX_MESSAGES_BEFORE_START or message_bytes > MAX_BYTES_BEFORE_START:
                    detail = f"{messages} messages, {message_bytes} bytes before start"
                    raise _Refused("frames_before_start", detail)
                try:
                    event = decode_twilio(message)
                except TwilioProtocolError as exc:
                    raise _Refused("bad_start", str(exc)) from None
                if isinstance(event, Start):
                    socket.unread(batch[index + 1 :])  # the call's first frames: its actor's
                    return event
                if not isinstance(event, Connected):
                    raise _Refused("bad_start", f"{type(event).__name__} before start")
            if socket.bytes_received > MAX_BYTES_BEFORE_START:  # a frame still arriving
                detail = f"{socket.bytes_received} bytes before start"
                raise _Refused("frames_before_start", detail)
    raise _Refused("start_timeout", f"no start within {START_TIMEOUT_S:g} s")


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
