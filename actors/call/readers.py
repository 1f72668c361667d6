"""The call's two readers (actor part), the per-frame path: caller audio to the model as
Twilio sent it, model audio to the caller followed by a mark. Nothing else is on it: no
channel, no task per frame."""

from __future__ import annotations

import logging
import time

import trio

from actors.call.responses import Request
from actors.call.setup import CallEnded
from actors.call.state import CallState
from engine.alert_level import AlertLevel
from engine.realtime_codec import (
    AudioDelta,
    RealtimeProtocolError,
    TranscriptDelta,
    decode_server_event,
)
from engine.twilio_codec import (
    Dtmf,
    Mark,
    Media,
    Stop,
    TwilioProtocolError,
    UnknownEvent,
    decode_twilio,
    encode_mark,
    encode_media,
    join_payloads,
)
from engine.ws import WebSocket, WebSocketClosed

log = logging.getLogger("afterhours.call")


class Readers(CallState):
    async def _pump_twilio(self) -> None:
        core = self._core
        while True:
            try:
                batch = await self._twilio.receive_batch()
            except WebSocketClosed as closed:
                raise await self._twilio_ended(self._twilio_closed(closed)) from closed
            read_at_s = trio.current_time()
            appends: list[bytes] = []  # for the model: one write per read, in order
            for message in batch:
                try:
                    event = decode_twilio(message)
                except TwilioProtocolError as exc:
                    log.warning("call %s: bad Twilio frame: %s", self._setup.call_sid, exc)
                    continue
                if isinstance(event, Media):
                    if event.streamSid != self._setup.stream_sid:
                        log.warning("call %s: media for another stream", self._setup.call_sid)
                        continue
                    payload: str | None = event.media.payload
                    if self._setup.frames_per_append > 1:
                        self._held_audio.append(event.media.payload)
                        if len(self._held_audio) < self._setup.frames_per_append:
                            continue  # held back until the next frame joins it
                        payload, self._held_audio = join_payloads(self._held_audio), []
                    if payload is None:
                        log.warning("call %s: media that is not base64", self._setup.call_sid)
                        continue
                    appends.append(core.caller_audio(payload))
                    continue
                if appends:  # what the model gets next comes after this audio
                    await self._appends_to_model(appends, read_at_s)
                    appends = []
                if isinstance(event, Mark):
                    core.mark(event.mark.name)
                    self._changed()  # the last mark played: perhaps quiet now
                    self._activity(caller=False)  # the model's words are still playing
                    if self._hang_up_reason is not None:  # per frame: no await unless due
                        await self._maybe_hang_up()
                elif isinstance(event, Dtmf):
                    text = f"The caller pressed {event.dtmf.digit} on the keypad."
                    await self._to_model([core.caller_text(text)])
                    await self._do(core.ask(Request(purpose="keypad"), trio.current_time()))
                elif isinstance(event, Stop):
                    raise await self._twilio_ended(CallEnded("caller_hung_up"))
                elif isinstance(event, UnknownEvent) and event.event not in self._unknown_seen:
                    self._unknown_seen.add(event.event)  # once per name: no log flood
                    log.info("call %s: ignoring Twilio event %r", self._setup.call_sid, event.event)
            if appends:
                await self._appends_to_model(appends, read_at_s)

    async def _appends_to_model(self, appends: list[bytes], read_at_s: float) -> None:
        await self._to_model(appends)
        self._to_model_timing.observe(trio.current_time() - read_at_s)

    async def _pump_model(self) -> None:
        while True:
            model = self._model
            assert model is not None
            try:
                await self._read_model(model)
            except WebSocketClosed as closed:
                if model is self._model:  # not replaced on purpose: the session is lost
                    log.warning("call %s: model socket lost (%s)", self._setup.call_sid, closed)
                    self._openai_alert(AlertLevel.WARNING, "Model connection dropped", str(closed))
                    await self._reconnect(str(closed), model)
            if model is not self._model:
                await model.aclose()  # replaced: only this reader ever read from it

    async def _read_model(self, model: WebSocket) -> None:
        """Handle the session's events until it closes or is replaced."""
        core = self._core
        while model is self._model:
            with trio.CancelScope() as self._receiving:
                batch = await model.receive_batch()
            self._receiving = None
            read_at_s = trio.current_time()
            to_caller: list[bytes] = []  # audio and marks: one write per read, in order
            for message in batch:
                if model is not self._model:
                    return  # replaced while handling this batch: the rest is the old one's
                try:
                    event = decode_server_event(message)
                except RealtimeProtocolError as exc:
                    log.warning("call %s: bad Realtime frame: %s", self._setup.call_sid, exc)
                    continue
                if isinstance(event, AudioDelta):
                    self._play(event, to_caller)
                    continue
                if self._unmarked is not None and not isinstance(event, TranscriptDelta):
                    # Anything but the transcript streaming beside the audio may be the
                    # answer's end: the audio before it is marked, so playback can drain.
                    to_caller.append(self._take_mark())
                if to_caller:  # before whatever this event makes us send
                    await self._to_caller(to_caller, read_at_s)
                    to_caller = []
                caller_was_speaking = core.caller_speaking
                await self._do(core.event(event, trio.current_time(), time.time()))
                if core.caller_speaking != caller_was_speaking:
                    self._activity(caller=True)
                    if not core.caller_speaking:
                        self._turn_began_s = read_at_s
                if self._hang_up_reason is not None:
                    await self._maybe_hang_up()

            if to_caller:
                await self._to_caller(to_caller, read_at_s)

    async def _to_caller(self, messages: list[bytes], read_at_s: float) -> None:
        await self._twilio.send_many(messages)
        self._to_caller_timing.observe(trio.current_time() - read_at_s)

    def _play(self, delta: AudioDelta, to_caller: list[bytes]) -> None:
        """A delta (and, every ``mark_every_deltas``, its mark) for the caller."""
        self._activity(caller=False)
        mark = self._core.audio(delta, _audio_ms(delta.delta))
        if mark is None:
            return  # interrupted: the caller must not hear the rest
        now_s = trio.current_time()
        if self._first_audio_ms is None:
            self._first_audio_ms = int((now_s - self._started_at_s) * 1000)
        if self._turn_began_s is not None:  # the answer to the caller's turn begins
            self._turn_latency.observe(now_s - self._turn_began_s)
            self._turn_began_s = None
        stream_sid = self._setup.stream_sid
        to_caller.append(encode_media(stream_sid, delta.delta))
        self._unmarked = mark
        self._deltas_unmarked += 1
        if self._deltas_unmarked >= self._setup.mark_every_deltas:
            to_caller.append(self._take_mark())
        # else: sent with a later delta, or before the next model event

    def _take_mark(self) -> bytes:
        mark, self._unmarked, self._deltas_unmarked = self._unmarked, None, 0
        assert mark is not None
        return encode_mark(self._setup.stream_sid, mark)


def _audio_ms(delta_b64: str) -> int:
    """Milliseconds of 8 kHz mu-law in a base64 payload (8 bytes per ms)."""
    padding = delta_b64.count("=", -2)
    return (len(delta_b64) * 3 // 4 - padding) // 8
