"""A simulated OpenAI Realtime model: a GA-protocol WebSocket server on 127.0.0.1.

It is what the engine talks to when no OpenAI key is configured, and what the tests and
benchmarks use. It speaks the GA event sequences (every event it sends validates
against the openai package's types; the tests check), checks every client event it
receives against those types, detects caller speech by energy, greets, answers, calls
tools by scenario, stops speaking when interrupted, reports usage, and can simply echo
audio for benchmarks.

It is meant to be at least as strict as the real API (engine/simulator/session.py lists
what it refuses), and it can be told to misbehave as the real service sometimes does:
the fault knobs below, for tests and ``afterhours simulate``.
"""

from __future__ import annotations

import itertools
import logging
import socket as stdlib_socket
import struct
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from engine.simulator import events
from engine.simulator.model_statistics import ModelStatistics, ModelTally
from engine.simulator.scenarios import SCENARIOS
from engine.simulator.session import Session
from engine.ws import HandshakeFailed, Rejection, WebSocket, WebSocketClosed, accept

log = logging.getLogger("afterhours.simulator.model")

# The beta protocol is retired: a handshake asking for it is accepted, then closed with
# this code and reason. Not an HTTP rejection: the live API is reported to close this
# way, and it is the harder case for a client (the upgrade succeeds, then the socket
# closes before session.created); a refused upgrade is already what a bad token gets.
BETA_CLOSE_CODE = 4000
BETA_CLOSE_REASON = "beta_api_shape_disabled"
OUTPUT_FORMAT_FIELD = "audio.output.format"


class SimulatedModel:
    def __init__(
        self, *, scenario: str = "conversation", echo: bool = False, silence_ms: int = 500
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        self.scenario = scenario
        self.echo = echo
        self.silence_ms = silence_ms  # the server VAD's default silence_duration_ms
        # OpenAI ends a session at its cap (60 min today) with a session_expired error.
        # Set it low to see an engine renew its sessions.
        self.session_max_s = 3600.0
        # False: session.created says nothing of the cap (an engine must then handle the
        # session_expired error itself).
        self.announce_expiry = True
        # How much faster than real time a response's audio is produced (the live API
        # runs ahead of playback); None: as fast as the client reads it.
        self.generation_speedup: float | None = None
        # Faults, off by default (see the methods below for the counted ones).
        # The caller's input_audio_transcription.completed arrives after the
        # response.done of the response that answers it.
        self.late_transcription = False
        # response.function_call_arguments.done without its name (it stays in the items).
        self.omit_function_name = False
        # Dotted session fields a session.update cannot change here ("audio.output.format"):
        # session.updated then shows what the engine did not get.
        self.ignored_session_fields: set[str] = set()
        self.tally = ModelTally()  # written by the sessions; statistics() copies it
        self._ids = itertools.count(1)
        self._sessions: set[trio.CancelScope] = set()
        self._injected: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._handshakes_to_reset = 0

    # -- fault injection -------------------------------------------------------------------

    def inject(self, event: dict[str, Any]) -> None:
        """Send ``event`` (a fault the real API sends, such as an error with ``code:
        null``) from the session that next hears from its client: tests reproduce what
        the real service does and this simulator would not do by itself."""
        self._injected.append(event)

    def take_injected(self) -> list[dict[str, Any]]:
        taken, self._injected = self._injected, []
        return taken

    def fail_responses(
        self,
        count: int,
        code: str = "server_error",
        *,
        error_type: str | None = None,
        message: str | None = None,
    ) -> None:
        """The next ``count`` responses (of any session) end at once with ``response.done``
        ``status: "failed"`` and this error in ``status_details``, with no audio."""
        details = events.failure_details(code, error_type, message)
        self._failures += [details] * count

    def take_failure(self) -> dict[str, Any] | None:
        return self._failures.pop(0) if self._failures else None

    def reset_handshakes(self, count: int) -> None:
        """The next ``count`` connections are reset during the upgrade: the request is
        read, then the connection is dropped (a TCP reset on a real socket)."""
        self._handshakes_to_reset += count

    @property
    def ignore_output_format(self) -> bool:
        """True: a session.update's ``audio.output.format`` is ignored (the output stays
        24 kHz PCM), which only an engine that checks session.updated notices."""
        return OUTPUT_FORMAT_FIELD in self.ignored_session_fields

    @ignore_output_format.setter
    def ignore_output_format(self, ignore: bool) -> None:
        if ignore:
            self.ignored_session_fields.add(OUTPUT_FORMAT_FIELD)
        else:
            self.ignored_session_fields.discard(OUTPUT_FORMAT_FIELD)

    def drop_sessions(self) -> None:
        """End every open session abruptly (what a network fault or a server restart
        does to the engine's model sockets)."""
        for scope in tuple(self._sessions):
            scope.cancel()

    def statistics(self) -> ModelStatistics:
        """A frozen snapshot, bounded in size (engine/simulator/model_statistics.py)."""
        return self.tally.snapshot()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        """Listen on a free port; report ``ws://127.0.0.1:<port>/v1/realtime``."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self.serve_stream, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            task_status.started(f"ws://127.0.0.1:{port}/v1/realtime")

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """One connection: the upgrade, then a session until either side ends it. What
        goes wrong in one session ends that session only, never the server."""
        async with stream:
            if self._handshakes_to_reset > 0:
                self._handshakes_to_reset -= 1
                await self._reset(stream)
                return
            try:
                socket, request = await accept(
                    stream,
                    check=_check_upgrade,
                    max_message_bytes=16 << 20,
                    send_timeout_s=10,
                    handshake_timeout_s=10,
                )
            except (HandshakeFailed, trio.TooSlowError, trio.BrokenResourceError):
                return
            if request.headers.get("OpenAI-Beta", "").startswith("realtime="):
                self.tally.beta_refused += 1
                await socket.aclose(BETA_CLOSE_CODE, BETA_CLOSE_REASON)
                return
            await self._run_session(socket, _model_name(request.path))

    async def _run_session(self, socket: WebSocket, model_name: str) -> None:
        self.tally.models.add(model_name)
        self.tally.sessions_total += 1
        self.tally.sessions_open += 1
        scope = trio.CancelScope()
        self._sessions.add(scope)
        close_code = 1000
        try:
            with scope:
                await Session(self, socket, model_name).run()
        except* (WebSocketClosed, trio.TooSlowError, trio.BrokenResourceError):
            pass  # the session is over: the engine hung up or stopped reading
        except* Exception as crash:
            # A simulator bug: counted (tests assert there are none) and logged; the
            # other sessions go on.
            self.tally.session_crashes.add(repr(crash.exceptions[0]))
            close_code = 1011  # internal error
            log.exception("simulated session crashed", exc_info=crash)
        finally:
            self._sessions.discard(scope)
            self.tally.sessions_open -= 1
            await socket.aclose(close_code)

    async def _reset(self, stream: trio.abc.Stream) -> None:
        self.tally.handshakes_reset += 1
        with trio.move_on_after(10):
            await stream.receive_some(65536)  # the upgrade request, left unanswered
        if isinstance(stream, trio.SocketStream):
            # Linger 0: close() sends a reset, not a graceful FIN.
            linger = struct.pack("ii", 1, 0)
            stream.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, linger)
        await trio.aclose_forcefully(stream)


def _check_upgrade(request: Any) -> Rejection | None:
    if not request.path.split("?")[0].endswith("/realtime"):
        return Rejection(404, "not a realtime endpoint")
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return Rejection(401, "missing bearer token")
    return None


def _model_name(path: str) -> str:
    """The ``model`` query parameter: the session's model, which no update changes."""
    return parse_qs(urlsplit(path).query).get("model", ["gpt-realtime"])[0]
