"""One call actor between a scripted Twilio peer and the simulated model, over in-memory
byte streams, so a test can run a whole call under Trio's mock clock (minutes of call
in milliseconds). The WebSocket framing, the actor and the model are the real ones; only
the transport is memory instead of TCP, and the store is a mailbox the test reads.

Twilio's side is the shared peer (engine/simulator/twilio_peer.py): it returns every mark
at once (the audio "played") and keeps what the engine sent in ``received``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from actors.call import CallActor, CallSetup
from actors.model_link import ModelEndpoint
from actors.twilio_rest import TwilioRest
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import Alert, CallUpdated, StoreWrite
from engine.projects import parse_project
from engine.simulator.model import SimulatedModel
from engine.simulator.twilio_frames import TwilioFrames
from engine.simulator.twilio_peer import TwilioPeer
from engine.ws import WebSocket, WebSocketClosed, accept, connect

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

STREAM_SID = "MZ" + "7" * 32
CALL_SID = "CA" + "7" * 32


@dataclass
class CallRun:
    record: CallUpdated
    twilio: TwilioPeer
    model: SimulatedModel
    alerts: list[Alert]
    writes: list[StoreWrite] = field(default_factory=list)  # everything the call stored
    crash: Exception | None = None  # what the actor raised, if it crashed


async def _until_hung_up(
    caller: Callable[[TwilioPeer], Awaitable[None]], twilio: TwilioPeer
) -> None:
    with contextlib.suppress(WebSocketClosed):  # the call ended while the caller talked
        await caller(twilio)


async def run_call(
    project: dict[str, Any],
    caller: Callable[[TwilioPeer], Awaitable[None]],
    *,
    model: SimulatedModel | None = None,
    session_max_s: float = 3600.0,
    twilio_rest: TwilioRest | None = None,
    frames_per_append: int = 1,
    mark_every_deltas: int = 1,
) -> CallRun:
    """Run one call until the actor ends it; ``caller`` acts for the caller meanwhile.
    An actor that crashes is caught (``CallRun.crash``), as the calls group would."""
    model = model or SimulatedModel()
    store: Mailbox[StoreWrite] = Mailbox("store", 1024, OverflowPolicy.BLOCK)
    alerts: Mailbox[Alert] = Mailbox("alerts", 64, OverflowPolicy.DROP_NEWEST)
    async with trio.open_nursery() as nursery:

        async def open_model(host: str, port: int) -> trio.abc.Stream:
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(model.serve_stream, theirs)
            return ours

        endpoint = ModelEndpoint(
            "ws://model.test/v1/realtime", "gpt-realtime", "sk-sim", open_stream=open_model
        )
        engine_side, twilio_side = trio.testing.memory_stream_pair()
        peer_socket: list[WebSocket] = []

        async def open_twilio() -> None:
            async def stream(host: str, port: int) -> trio.abc.Stream:
                return twilio_side

            peer_socket.append(
                await connect(
                    "ws://engine.test/twilio/media",
                    headers=[],
                    max_message_bytes=1 << 20,
                    send_timeout_s=5,
                    connect_timeout_s=5,
                    open_stream=stream,
                )
            )

        nursery.start_soon(open_twilio)
        engine_socket, _ = await accept(
            engine_side,
            check=lambda request: None,
            max_message_bytes=64 * 1024,
            send_timeout_s=5,
            handshake_timeout_s=5,
        )
        await trio.testing.wait_all_tasks_blocked()
        twilio = TwilioPeer(peer_socket[0], TwilioFrames(STREAM_SID, CALL_SID))
        nursery.start_soon(twilio.listen)
        setup = CallSetup(
            CALL_SID,
            STREAM_SID,
            parse_project(project),
            endpoint,
            twilio_rest,
            session_max_s=session_max_s,
            frames_per_append=frames_per_append,
            mark_every_deltas=mark_every_deltas,
        )
        done = trio.Event()
        actor = CallActor(setup, engine_socket, store, alerts, done)
        crashes: list[Exception] = []

        async def run_actor(*, task_status: trio.TaskStatus[None]) -> None:
            try:
                await actor.run(StopSignal(), task_status=task_status)
            except Exception as exc:  # noqa: BLE001 - the calls group: report, never restart
                crashes.append(exc)

        await nursery.start(run_actor)
        nursery.start_soon(_until_hung_up, caller, twilio)
        await done.wait()
        await engine_socket.aclose()
        nursery.cancel_scope.cancel()
    writes = store.drain_nowait()
    (record,) = [m for m in writes if isinstance(m, CallUpdated)]
    crash = crashes[0] if crashes else None
    return CallRun(record, twilio, model, alerts.drain_nowait(), writes, crash)
