"""A simulated Twilio caller: places calls through the engine's real path.

Signed voice webhook, TwiML, signed media stream, ``connected`` and ``start``, caller
audio paced at 20 ms per frame (silence, then "speech" for each turn), the engine's audio
played back at real-time rate with its marks returned once played (as Twilio does),
``stop``, then the signed status callback. Used by ``afterhours call`` and ``afterhours
simulate``, and by the benchmarks. The stream itself is Twilio's side as every test plays
it too (engine/simulator/twilio_peer.py), over trio-websocket here.

Given a ``SimulatedTwilio`` (``CallerConfig.twilio``), each call is one that Twilio
carries: its REST API can update it, and an update (the engine's transfer to the
on-call number) ends the stream as Twilio does: ``stop``, then the WebSocket closes.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream
from twilio.request_validator import RequestValidator

from engine.simulator.mulaw import silence, tone
from engine.simulator.phrases import NEUTRAL, pitch_of
from engine.simulator.twilio_frames import (
    ACCOUNT_SID,
    TwilioFrames,
    new_call_sid,
    new_stream_sid,
    stream_of,
)
from engine.simulator.twilio_peer import TwilioPeer
from engine.ws import WebSocketClosed

if TYPE_CHECKING:
    from engine.simulator.twilio_calls import LiveCall
    from engine.simulator.twilio_rest import SimulatedTwilio

# trio-websocket: messages its reader may hold before we read them (a burst of deltas);
# the connection, a write and the close each bounded, as the engine bounds its own.
MESSAGE_QUEUE = 64
CONNECT_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 5.0

# What the caller does, turn by turn: (seconds of silence, seconds of speech, the words
# spoken). The words reach the model as the pitch of the speech (phrases.py), so they
# choose what the simulated model does: "emergency" is classified so and transferred,
# "booking" checks the free slots and books one. The caller does not listen for cues:
# its pauses leave room for the model's answers (a booking's get_slots and offer take
# about a second), and a transfer or the engine's hang-up ends the call before the last
# silence runs out.
CALLER_SCRIPTS: dict[str, list[tuple[float, float, str | None]]] = {
    "conversation": [
        (2.0, 0.8, NEUTRAL),
        (2.5, 0.8, "It makes a rumbling noise at night. It's not urgent."),
        (2.5, 0.0, None),
    ],
    "quick": [(1.0, 0.5, NEUTRAL), (1.5, 0.0, None)],
    "silent": [(12.0, 0.0, None)],
    "emergency": [(2.0, 1.0, "My basement is flooding, a pipe burst!"), (10.0, 0.0, None)],
    "booking": [
        (2.0, 1.0, "My kitchen tap is dripping. Can I book a plumber?"),
        (3.0, 1.0, "Yes, nine is fine. I'm Sam, 12 Elm Street, 555 0100."),
        (10.0, 0.0, None),
    ],
}


@dataclass
class CallSummary:
    call_sid: str
    twiml_ok: bool = False
    heard_ms: int = 0
    time_to_first_audio_ms: int | None = None
    marks_returned: int = 0
    clears: int = 0
    ended_by: str = ""  # "caller", "engine", or "twilio" (a REST update replaced the stream)
    transferred_to: str | None = None  # the number the update's <Dial> called
    error: str | None = None
    status_callback_error: str | None = None
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CallerConfig:
    engine_url: str  # http://host:port where the engine's API listens
    public_url: str  # what the engine believes Twilio uses (signatures are over it)
    auth_token: str  # TWILIO_AUTH_TOKEN
    to_number: str
    from_number: str = "+15550100000"
    # Whom to trust for https:// and wss:// (a test's self-signed proxy); None: the system's.
    ssl_context: ssl.SSLContext | None = None
    # The Twilio whose REST API can change these calls; None: nobody can.
    twilio: SimulatedTwilio | None = None

    @property
    def account_sid(self) -> str:
        return self.twilio.account_sid if self.twilio is not None else ACCOUNT_SID


async def place_call(config: CallerConfig, script: str = "conversation") -> CallSummary:
    summary = CallSummary(new_call_sid())
    # Twilio knows a call before it asks the webhook about it.
    live = None
    if config.twilio is not None:
        live = config.twilio.calls.add(summary.call_sid, config.from_number, config.to_number)
    try:
        await _call(config, script, summary, live)
    finally:
        if config.twilio is not None:
            config.twilio.calls.hang_up(summary.call_sid)
    return summary


async def _call(
    config: CallerConfig, script: str, summary: CallSummary, live: LiveCall | None
) -> None:
    validator = RequestValidator(config.auth_token)
    form = {
        "CallSid": summary.call_sid,
        "AccountSid": config.account_sid,
        "From": config.from_number,
        "To": config.to_number,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    verify: ssl.SSLContext | bool = config.ssl_context or True
    async with httpx.AsyncClient(timeout=10, verify=verify) as http:
        twiml = await _post(http, validator, config, "/twilio/voice", form)
        stream = stream_of(twiml)
        if stream is None:
            summary.ended_by, summary.error = "engine", "turned away: " + twiml[:200]
            return
        summary.twiml_ok = True
        started_s = trio.current_time()
        await _stream(summary, validator, stream.url, stream.parameters, script, config, live)
        duration = str(int(trio.current_time() - started_s))
        try:
            await _post(
                http,
                validator,
                config,
                "/twilio/status",
                form | {"CallStatus": "completed", "CallDuration": duration},
            )
        except httpx.HTTPError as exc:
            # As with Twilio: a callback the engine cannot take is its loss, not the call's.
            summary.status_callback_error = f"{type(exc).__name__}: {exc}"


async def _post(
    http: httpx.AsyncClient,
    validator: RequestValidator,
    config: CallerConfig,
    path: str,
    form: dict[str, str],
) -> str:
    signature = validator.compute_signature(config.public_url + path, form)
    response = await http.post(
        config.engine_url + path, data=form, headers={"X-Twilio-Signature": signature}
    )
    return response.text


async def _stream(
    summary: CallSummary,
    validator: RequestValidator,
    url: str,
    parameters: dict[str, str],
    script: str,
    config: CallerConfig,
    live: LiveCall | None,
) -> None:
    signature = validator.compute_signature(url, {})
    # trio-websocket, not the engine's own WebSocket layer: this side is Twilio's, off the
    # engine's per-frame path, and the engine's media server then meets a client that is
    # not its own code (docs/architecture.md, "Dependencies"). The TCP (and TLS) stream is
    # ours, closed here: trio-websocket 0.12 leaves a client's socket open when the
    # server closes first (its aclose returns early once the peer's close is seen), which
    # the engine does at every hang-up and transfer.
    address = urlsplit(url)
    host = address.hostname or "127.0.0.1"
    resource = address.path + (f"?{address.query}" if address.query else "")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            stream = await _open_stream(address.scheme, host, address.port, config)
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                socket = await wrap_client_stream(
                    nursery,
                    stream,
                    host,
                    resource,
                    extra_headers=[(b"X-Twilio-Signature", signature.encode())],
                    max_message_size=1 << 20,
                    message_queue_size=MESSAGE_QUEUE,
                )
            try:
                await _talk(_TrioText(socket), summary, parameters, script, config, live)
            except* (ConnectionClosed, WebSocketClosed):
                summary.ended_by = summary.ended_by or "engine"
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT_S) as closing:
                    closing.shield = True
                    await socket.aclose()
        finally:
            await trio.aclose_forcefully(stream)  # its reader task then ends too
    # The update came first, whoever closed the socket first.
    if live is not None and live.update is not None:
        summary.ended_by, summary.transferred_to = "twilio", live.update.transferred_to


async def _open_stream(
    scheme: str, host: str, port: int | None, config: CallerConfig
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    if scheme != "wss":
        return await trio.open_tcp_stream(host, port or 80)
    tcp = await trio.open_tcp_stream(host, port or 443)
    tls = trio.SSLStream(
        tcp, config.ssl_context or ssl.create_default_context(), server_hostname=host
    )
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls


class _TrioText:
    """A trio-websocket connection as the peer's ``TextSocket``: each send bounded as the
    engine bounds its own writes (an engine that stops reading fails the call instead of
    hanging the simulator), and its ``ConnectionClosed`` raised as ``WebSocketClosed``."""

    def __init__(self, socket: WebSocketConnection) -> None:
        self._socket = socket

    async def send_text(self, data: bytes) -> None:
        try:
            with trio.fail_after(SEND_TIMEOUT_S):
                await self._socket.send_message(data.decode())
        except ConnectionClosed as closed:
            raise _closed(closed) from None

    async def receive_batch(self) -> list[str | bytes]:
        try:
            return [await self._socket.get_message()]
        except ConnectionClosed as closed:
            raise _closed(closed) from None

    async def aclose(self) -> None:
        await self._socket.aclose()


def _closed(closed: ConnectionClosed) -> WebSocketClosed:
    reason = closed.reason
    if reason is None:
        return WebSocketClosed(None, "connection lost")
    return WebSocketClosed(reason.code, reason.reason or "")


async def _talk(
    socket: _TrioText,
    summary: CallSummary,
    parameters: dict[str, str],
    script: str,
    config: CallerConfig,
    live: LiveCall | None,
) -> None:
    frames = TwilioFrames(new_stream_sid(), summary.call_sid, config.account_sid)
    peer = TwilioPeer(socket, frames)
    await peer.start(parameters)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_listen, peer, summary, nursery.cancel_scope)
        if live is not None:
            nursery.start_soon(_replaced, live, peer, nursery.cancel_scope)
        await peer.speak(script_audio(CALLER_SCRIPTS[script]), paced=True)
        summary.ended_by = "caller"
        await peer.hang_up()
        nursery.cancel_scope.cancel()


async def _replaced(live: LiveCall, peer: TwilioPeer, scope: trio.CancelScope) -> None:
    """Once a REST update replaced the call's TwiML: ``stop``, then close (as Twilio)."""
    await live.replaced.wait()
    try:
        await peer.hang_up()
    finally:
        scope.cancel()  # the socket is closed on the way out of the stream


def script_audio(script: list[tuple[float, float, str | None]]) -> bytes:
    """The caller's side of a script as mu-law: each sentence a tone at its pitch."""
    return b"".join(
        silence(int(quiet_s * 1000))
        + (tone(int(talk_s * 1000), frequency_hz=pitch_of(words)) if words else b"")
        for quiet_s, talk_s, words in script
    )


@dataclass
class _Playback:
    until_s: float
    generation: int = 0  # a clear starts a new generation: older marks are dropped


async def _listen(peer: TwilioPeer, summary: CallSummary, scope: trio.CancelScope) -> None:
    """Play the engine's audio at real-time rate and return each mark once played (a
    task per mark, so reading goes on meanwhile, as on Twilio's side); a ``clear`` drops
    what was queued and the marks behind it."""
    started_s = trio.current_time()
    playback = _Playback(started_s)
    try:
        async with trio.open_nursery() as marks:
            while True:
                try:
                    batch = await peer.receive()
                except WebSocketClosed:
                    summary.ended_by = summary.ended_by or "engine"
                    scope.cancel()
                    return
                for event in batch:
                    kind = event.get("event")
                    now_s = trio.current_time()
                    if kind == "media":
                        ms = len(base64.b64decode(event["media"]["payload"])) // 8
                        summary.heard_ms += ms
                        if summary.time_to_first_audio_ms is None:
                            summary.time_to_first_audio_ms = int((now_s - started_s) * 1000)
                        playback.until_s = max(playback.until_s, now_s) + ms / 1000
                    elif kind == "mark":
                        due = (playback.until_s, playback.generation)
                        name = event["mark"]["name"]
                        marks.start_soon(_return_mark, peer, name, due, playback, summary)
                    elif kind == "clear":
                        summary.clears += 1
                        playback.until_s, playback.generation = now_s, playback.generation + 1
    except* WebSocketClosed:
        summary.ended_by = summary.ended_by or "engine"
        scope.cancel()


async def _return_mark(
    peer: TwilioPeer, name: str, due: tuple[float, int], playback: _Playback, summary: CallSummary
) -> None:
    await trio.sleep_until(due[0])
    if playback.generation != due[1]:
        return  # cleared before it played
    try:
        await peer.return_mark(name)
    except WebSocketClosed:
        return
    summary.marks_returned += 1
