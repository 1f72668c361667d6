"""The simulated Vapi's side of a Twilio media stream: what Vapi's phone-call websocket
does once Twilio follows the TwiML Vapi gave (``<Connect><Stream url=".../<call id>/
transport">``).

It reads Twilio's ``connected``, ``start`` (Twilio's CallSid and the stream's sid),
``media`` (the caller, 20 ms of mu-law each), ``mark`` (played) and ``stop``; it speaks
a short script as mu-law ``media`` messages followed by a ``mark`` each, as the engine
does: a greeting at once, then one line each time the caller has spoken and fallen
silent (energy detection, like the simulated model's). The conversation it keeps is
Vapi's ``messages`` shape (``role`` user or bot, ``message``, ``secondsFromStart``). The
simulator hears tones, not words: the caller's turns say how long they spoke.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from engine.simulator.mulaw import mean_amplitude, tone

if TYPE_CHECKING:
    from engine.simulator.vapi_reports import SimulatedCall
    from engine.ws import WebSocket

SCRIPT: Final = (
    "Thanks for calling. This is the after-hours line. How can I help?",
    "I understand. Can you tell me a little more about the problem?",
    "Thank you. Someone will call you back in the morning. Goodbye.",
)
SPEECH_AMPLITUDE: Final = 500.0  # mean absolute amplitude above which a frame is speech
END_OF_TURN_MS: Final = 400  # silence after speech that ends the caller's turn
MS_PER_WORD: Final = 120  # the length of each line's audio (a tone, 660 Hz)
_json = msgspec.json.Encoder()


class VapiStream:
    def __init__(self, socket: WebSocket, call: SimulatedCall) -> None:
        self._socket = socket
        self._call = call
        self._stream_sid = ""
        self._started_s = trio.current_time()
        self._lines_said = 0
        self._speech_ms = 0  # of the caller's current turn
        self._speech_began_s: float | None = None
        self._silence_ms = 0

    async def run(self) -> None:
        """Until the caller's ``stop`` or the socket's close."""
        while True:
            for raw in await self._socket.receive_batch():
                event: dict[str, Any] = msgspec.json.decode(raw)
                kind = event.get("event")
                if kind == "start":
                    await self._started(event)
                elif kind == "media":
                    await self._heard(base64.b64decode(event["media"]["payload"]))
                elif kind == "mark":
                    self._call.marks_returned += 1
                elif kind == "stop":
                    return

    async def _started(self, event: dict[str, Any]) -> None:
        start = event.get("start") or {}
        self._stream_sid = str(event.get("streamSid") or start.get("streamSid") or "")
        self._call.call_sid = start.get("callSid")
        self._call.status = "in-progress"
        self._call.started_at = datetime.now(UTC)
        self._started_s = trio.current_time()
        await self._say()

    async def _heard(self, audio: bytes) -> None:
        frame_ms = len(audio) // 8
        if mean_amplitude(audio) >= SPEECH_AMPLITUDE:
            if self._speech_began_s is None:
                self._speech_began_s = trio.current_time() - frame_ms / 1000
            self._speech_ms += frame_ms
            self._silence_ms = 0
            return
        if self._speech_began_s is None:
            return
        self._silence_ms += frame_ms
        if self._silence_ms >= END_OF_TURN_MS:
            began_s, spoke_ms = self._speech_began_s, self._speech_ms
            self._speech_began_s, self._speech_ms, self._silence_ms = None, 0, 0
            self._record("user", f"(the caller spoke for {spoke_ms / 1000:.1f} s)", began_s)
            await self._say()

    async def _say(self) -> None:
        if self._lines_said >= len(SCRIPT):
            return
        line = SCRIPT[self._lines_said]
        self._lines_said += 1
        self._record("bot", line, trio.current_time())
        audio = tone(MS_PER_WORD * len(line.split()), frequency_hz=660.0)
        payload = base64.b64encode(audio).decode()
        await self._send({"event": "media", "streamSid": self._stream_sid,
                          "media": {"payload": payload}})  # fmt: skip
        await self._send({"event": "mark", "streamSid": self._stream_sid,
                          "mark": {"name": f"line-{self._lines_said}"}})  # fmt: skip

    def _record(self, role: str, message: str, at_s: float) -> None:
        seconds = round(max(0.0, at_s - self._started_s), 3)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        self._call.messages.append(
            {"role": role, "message": message, "time": now_ms, "secondsFromStart": seconds}
        )

    async def _send(self, event: dict[str, Any]) -> None:
        await self._socket.send_text(_json.encode(event))
