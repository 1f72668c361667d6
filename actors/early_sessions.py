"""Model sessions opened while Twilio is still fetching the TwiML.

The voice webhook asks for a session as it answers (``OpenEarly``); the handshake with
the model (TCP, TLS, HTTP upgrade: a few hundred ms to OpenAI) then overlaps Twilio
setting up the media stream, and the call actor takes the open socket when the stream
starts (``TakeEarly``) instead of making the caller wait for it. A session is held at most
``hold_s`` (the stream token's lifetime: after that no stream can start for that call)
and closed earlier when the call ends before its stream starts (``DiscardEarly``, from the
status callback). When the stream reaches another instance, that instance connects
itself and this one closes its unused session when the hold ends: an idle Realtime
session bills no tokens, so the cost of that case is one held socket for under a minute.

The requests and the taker's side are in engine/early_requests.py. Mailbox:
``early-sessions``, DROP_NEWEST. A dropped ``OpenEarly`` costs that call the
handshake at stream start; a dropped ``TakeEarly`` makes the taker connect itself after
its short wait. Nothing else depends on this actor, so it loses nothing by dropping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import trio

from actors.model_link import CONNECT_ERRORS, open_model_socket
from engine.early_requests import EarlyRequest, OpenEarly, TakeEarly
from engine.metric_samples import ModelConnected

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.model_link import ModelEndpoint
    from engine.lifecycle import StopSignal
    from engine.mailbox import Inbox, Outbox
    from engine.metric_samples import MetricsSample
    from engine.ws import WebSocket

log = logging.getLogger("afterhours.early")

SWEEP_EVERY_S = 1.0
CLOSE_ALL_S = 2.0


@dataclass(eq=False)
class _Early:
    expires_at_s: float
    ready: trio.Event = field(default_factory=trio.Event)
    socket: WebSocket | None = None


@dataclass(frozen=True, slots=True)
class EarlyStatistics:
    opened_total: int
    taken_total: int
    expired_total: int
    failed_total: int
    held: int  # sessions held for a call right now


class EarlySessions:
    def __init__(
        self,
        inbox: Inbox[EarlyRequest],
        endpoint: Callable[[], ModelEndpoint],
        *,
        hold_s: float,
        max_held: int,
        metrics: Outbox[MetricsSample] | None = None,
    ) -> None:
        self._inbox = inbox
        self._endpoint = endpoint
        self._hold_s = hold_s
        self._max_held = max_held
        self._metrics = metrics
        self._held: dict[str, _Early] = {}
        self._counts = dict.fromkeys(("opened", "taken", "expired", "failed"), 0)

    def statistics(self) -> EarlyStatistics:
        """The counters, and how many sessions are held now."""
        return EarlyStatistics(
            opened_total=self._counts["opened"],
            taken_total=self._counts["taken"],
            expired_total=self._counts["expired"],
            failed_total=self._counts["failed"],
            held=len(self._held),
        )

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep)
                task_status.started()
                while (request := await self._inbox.receive_until(stop)) is not None:
                    self._handle(request, nursery)
                nursery.cancel_scope.cancel()
        finally:
            # Closed together, within a bound: each close is a small handshake.
            with trio.move_on_after(CLOSE_ALL_S) as scope:
                scope.shield = True
                async with trio.open_nursery() as closing:
                    for call_sid in tuple(self._held):
                        closing.start_soon(self._close, call_sid)

    def _handle(self, request: EarlyRequest, nursery: trio.Nursery) -> None:
        if isinstance(request, OpenEarly):
            if request.call_sid in self._held or len(self._held) >= self._max_held:
                return
            early = _Early(trio.current_time() + self._hold_s)
            self._held[request.call_sid] = early
            nursery.start_soon(self._open, request.call_sid, early, request.model)
        elif isinstance(request, TakeEarly):
            nursery.start_soon(self._hand_over, request)
        else:
            nursery.start_soon(self._close, request.call_sid)

    async def _open(self, call_sid: str, early: _Early, model: str | None) -> None:
        began_s = trio.current_time()
        endpoint = self._endpoint()
        if model is not None:
            endpoint = replace(endpoint, model=model)
        try:
            socket = await open_model_socket(endpoint)
        except CONNECT_ERRORS as exc:
            # The call actor will try again itself and report what it finds.
            why = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            log.warning("call %s: early model connection failed: %s", call_sid, why)
            self._report(ModelConnected(False, trio.current_time() - began_s, why))
            self._counts["failed"] += 1
            if self._held.get(call_sid) is early:
                del self._held[call_sid]
        else:
            self._report(ModelConnected(True, trio.current_time() - began_s))
            if self._held.get(call_sid) is early:
                early.socket = socket
                self._counts["opened"] += 1
            else:  # discarded while connecting
                await socket.aclose()
        finally:
            early.ready.set()

    def _report(self, sample: MetricsSample) -> None:
        if self._metrics is not None:
            self._metrics.send_nowait(sample)

    async def _hand_over(self, request: TakeEarly) -> None:
        early = self._held.get(request.call_sid)
        socket = None
        if early is not None:
            await early.ready.wait()  # bounded: the handshake has its own timeout
            if self._held.get(request.call_sid) is early:
                del self._held[request.call_sid]
                socket = early.socket
        try:
            request.reply.send_nowait(socket)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            if socket is not None:  # the taker gave up waiting: nobody owns this socket
                await socket.aclose()
            return
        if socket is not None:
            self._counts["taken"] += 1

    async def _close(self, call_sid: str) -> None:
        early = self._held.pop(call_sid, None)
        if early is not None and early.socket is not None:
            await early.socket.aclose()

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(SWEEP_EVERY_S)
            now_s = trio.current_time()
            for call_sid, early in tuple(self._held.items()):
                if early.expires_at_s <= now_s and early.ready.is_set():
                    log.info("call %s: early model session unused; closed", call_sid)
                    self._counts["expired"] += 1
                    await self._close(call_sid)
