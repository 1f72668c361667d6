"""Twilio's side of one media stream, driven over a WebSocket: the one peer that plays
Twilio for the simulated caller (engine/simulator/caller.py, over trio-websocket) and for
the tests (over the engine's own WebSocket layer, on real or in-memory sockets).

It sends what Twilio sends (frames from ``TwilioFrames``) and reads what the engine sends
back as decoded dicts. How the engine's audio "plays" is the user's choice: ``listen``
takes it as played at once and returns each mark straight away (the tests); the
simulated caller plays it at real-time rate and returns marks when due (caller.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import trio

from engine.simulator.twilio_frames import FRAME_MS
from engine.ws import WebSocketClosed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.simulator.twilio_frames import TwilioFrames

_decode: Final = msgspec.json.Decoder(dict[str, Any]).decode


class TextSocket(Protocol):
    """What the peer needs of a WebSocket (``engine.ws.WebSocket`` is one). Once the
    connection is closed both calls raise ``engine.ws.WebSocketClosed``."""

    async def send_text(self, data: bytes) -> None: ...

    async def receive_batch(self) -> list[str | bytes]: ...

    async def aclose(self) -> None: ...


class TwilioPeer:
    def __init__(self, socket: TextSocket, frames: TwilioFrames) -> None:
        self.socket = socket
        self.frames = frames
        # Everything ``listen`` read, in order (a test's record of the call). ``receive``
        # keeps nothing: the simulated caller's calls may run for hours.
        self.received: list[dict[str, Any]] = []

    async def send(self, frame: bytes) -> None:
        await self.socket.send_text(frame)

    async def start(self, parameters: Mapping[str, str] | None = None) -> None:
        """``connected``, then ``start`` with the TwiML's parameters (the stream token)."""
        await self.send(self.frames.connected())
        await self.send(self.frames.start(parameters))

    async def speak(self, audio: bytes, *, paced: bool = False) -> None:
        """The caller's mu-law audio, one 160-byte frame per message: all at once, or
        ``paced`` at Twilio's rate (a frame every 20 ms on a fixed schedule, so a slow
        send does not slow the ones after it)."""
        next_frame_s = trio.current_time()
        for frame in self.frames.media_of(audio):
            await self.send(frame)
            if paced:
                next_frame_s += FRAME_MS / 1000
                await trio.sleep_until(next_frame_s)

    async def press(self, digit: str) -> None:
        await self.send(self.frames.dtmf(digit))

    async def return_mark(self, name: str) -> None:
        await self.send(self.frames.mark(name))

    async def hang_up(self) -> None:
        """What Twilio sends when the caller hangs up (or a REST update replaced the
        call); the socket stays open for the engine to close."""
        await self.send(self.frames.stop())

    async def receive(self) -> list[dict[str, Any]]:
        """The engine's next messages (at least one), decoded; ``WebSocketClosed`` once
        the engine closed the stream."""
        return [_decode(message) for message in await self.socket.receive_batch()]

    async def listen(self, until_silent_s: float = math.inf) -> list[dict[str, Any]]:
        """What the engine sends until it has been quiet for ``until_silent_s`` or has
        closed the stream; each mark is returned at once, as if its audio had played."""
        heard: list[dict[str, Any]] = []
        try:
            while True:
                with trio.move_on_after(until_silent_s) as quiet:
                    batch = await self.receive()
                if quiet.cancelled_caught:
                    return heard
                heard += batch
                self.received += batch
                for event in batch:
                    if event["event"] == "mark":
                        await self.return_mark(event["mark"]["name"])
        except WebSocketClosed:
            return heard  # the engine ended the call

    async def aclose(self) -> None:
        await self.socket.aclose()
