"""The model's responses, one at a time, and what follows each. Pure.

The Realtime API runs one response per conversation at a time; a ``response.create``
while one is active is refused (``conversation_already_has_active_response``) and
server VAD starts responses of its own. So every response the call wants goes through
here: sent at once when nothing is running or pending, else queued and sent when the
active one is done; one that is refused is queued again (only this call sends
``response.create``, so every such refusal is of ours, with an ``event_id`` or not).

The queue is bounded (``QUEUE_MAX``); on overflow the oldest request that can be spared
(a prompt, a keypad answer, a filler, a plain turn) is dropped, never a greeting, a
goodbye or a tool result, and consecutive plain requests merge.

A response that ends ``failed`` (rate limit, server error: ``status_details.error``), or
whose ``response.create`` is answered by an error, or that is never created within
``CREATE_TIMEOUT_S``, is retried after ``RETRY_BACKOFF_S``; when the retry is not
immediate the caller first hears a short out-of-band "one moment" (it does not enter the
conversation). ``MAX_FAILURES`` in a row end the call. A failed filler is not retried
and does not count. While a retry is pending nothing else is sent and the call is not
idle (a hang-up waits for it). A completed response's function calls are handed to the
actor with their names resolved (``response.function_call_arguments.done`` may carry
none; the item always does); a cancelled response's calls are not run, and the model is
told so.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from actors.call.tools import ToolCall

if TYPE_CHECKING:
    from engine.realtime_codec import FunctionCallDone, ItemInfo, ResponseInfo

QUEUE_MAX: Final = 4
RETRY_BACKOFF_S: Final = (0.0, 1.0, 2.0)  # before the 2nd, 3rd and 4th attempt
MAX_FAILURES: Final = len(RETRY_BACKOFF_S) + 1
# A response.create not answered by response.created (or an error) within this is lost.
CREATE_TIMEOUT_S: Final = 5.0
SAY_ONE_MOMENT: Final = 'Say only: "One moment, please."'
_SPARED_LAST: Final = frozenset({"greeting", "goodbye", "tool result"})


@dataclass(frozen=True, slots=True)
class Request:
    instructions: str | None = None  # None: the session's own (answer the caller)
    out_of_band: bool = False  # a filler outside the conversation
    purpose: str = "turn"  # greeting, turn, filler, goodbye, prompt, keypad, tool result


@dataclass(frozen=True, slots=True)
class Retry:
    after_s: float
    request: Request
    generation: int  # a retry superseded by a newer turn is not sent


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a finished response asks of the call."""

    tools: tuple[ToolCall, ...] = ()  # run them, send their outputs, then a response
    interrupted_calls: tuple[ToolCall, ...] = ()  # of a cancelled response: not run
    failed: tuple[str, str] | None = None  # (code, message) of a failed response
    retry: Retry | None = None
    give_up: str | None = None  # the call cannot go on: the reason
    send: Request | None = None  # the next queued request, to send now


@dataclass
class Responses:
    active: str | None = None  # the response now running (its id)
    sent: Request | None = None  # asked for, not yet created
    sent_at_s: float = 0.0
    failures: int = 0  # in a row
    tools_running: int = 0
    retries_pending: int = 0
    held: bool = False  # a session replacement is under way: nothing is sent
    queue: deque[Request] = field(default_factory=deque)
    _running: dict[str, Request] = field(default_factory=dict)  # by response id
    _calls: dict[str, list[FunctionCallDone]] = field(default_factory=dict)
    _names: dict[str, str] = field(default_factory=dict)  # function name by item id
    _generation: int = 0

    @property
    def idle(self) -> bool:
        return (
            self.active is None and self.sent is None and not self.retries_pending and not self.held
        )

    def request(self, request: Request) -> Request | None:
        """``request`` to send now (the caller sends it, then calls ``sending``), or None
        when it was queued behind the active response."""
        if self.idle:
            return request
        if request.instructions is None and self.queue and self.queue[-1] == request:
            return None  # "answer the caller" twice is once
        self._enqueue(request)
        return None

    def sending(self, request: Request, now_s: float) -> None:
        self.sent, self.sent_at_s = request, now_s

    def refused(self) -> None:
        """A ``response.create`` met an active response (one server VAD started a
        moment before): asked again when that one is done, not at once (a peer that
        keeps refusing must not make us spin)."""
        request, self.sent = self.sent, None
        if request is None and self.active in self._running:
            # The refused request was taken for the active response when that was
            # created (the server announces it before it refuses against it).
            request = self._running[self.active or ""]
            self._running[self.active or ""] = Request()
        if request is not None:
            self._enqueue(request, front=True)

    def create_failed(self, code: str, message: str) -> Outcome:
        """Our ``response.create`` was answered by an error: no response will come."""
        request, self.sent = self.sent, None
        if request is None:
            return Outcome()
        return self._failed((code, message), request)

    @property
    def overdue_at_s(self) -> float:
        """When ``overdue`` fails the request sent (infinity while none is waiting)."""
        return math.inf if self.sent is None else self.sent_at_s + CREATE_TIMEOUT_S

    def overdue(self, now_s: float) -> Outcome | None:
        """A ``response.create`` that nothing answered within ``CREATE_TIMEOUT_S``."""
        if self.sent is None or now_s - self.sent_at_s < CREATE_TIMEOUT_S:
            return None
        return self.create_failed("no_response", f"no response.created in {CREATE_TIMEOUT_S:g} s")

    def created(self, response_id: str) -> None:
        # Ours if one was asked for (one at a time, so it is the one); else server VAD's.
        request = self.sent or Request(purpose="turn")
        self.sent = None
        self.active = response_id
        self._running[response_id] = request
        if request.instructions is None and not request.out_of_band:
            self._generation += 1  # the caller is being answered: a pending retry is stale

    def function_call(self, event: FunctionCallDone) -> None:
        self._calls.setdefault(event.response_id, []).append(event)
        if event.name:
            self._names[event.item_id] = event.name

    def item(self, item: ItemInfo) -> None:
        if item.type == "function_call" and item.name:
            self._names[item.id] = item.name

    def done(self, info: ResponseInfo) -> Outcome:
        if self.active == info.id:
            self.active = None
        request = self._running.pop(info.id, Request())
        calls = self._resolve(info)
        if info.status == "failed":
            return self._failed(info.failure, request)
        if info.status == "completed":
            if not request.out_of_band:
                self.failures = 0  # a filler that plays is no sign the model has recovered
            if calls:
                self.tools_running += 1
                return Outcome(tools=calls)
        if info.status == "cancelled" and calls:
            return Outcome(interrupted_calls=calls, send=self.next_queued())
        return Outcome(send=self.next_queued())

    def tools_done(self, *, answer: bool = True) -> Request | None:
        """The outputs of one response's calls are in: the model answers with them."""
        self.tools_running -= 1
        if not answer:
            return self.next_queued()
        return self.request(Request(purpose="tool result"))

    def retry_due(self, retry: Retry) -> Request | None:
        """A scheduled retry's time has come: the request to send now, if still wanted
        (else whatever waited behind it)."""
        self.retries_pending -= 1
        if retry.generation != self._generation:
            return self.next_queued()
        return self.request(retry.request)

    def lost(self) -> None:
        """The session was replaced: what it was doing for us is asked of the new one."""
        in_flight = self.sent or self._running.get(self.active or "")
        self.active, self.sent = None, None
        self._running.clear()
        self._calls.clear()
        if in_flight is not None and not in_flight.out_of_band:
            self._enqueue(in_flight, front=True)

    def next_queued(self) -> Request | None:
        return self.queue.popleft() if self.idle and self.queue else None

    def _enqueue(self, request: Request, *, front: bool = False) -> None:
        if len(self.queue) >= QUEUE_MAX:
            spare = next((r for r in self.queue if r.purpose not in _SPARED_LAST), None)
            if spare is not None:
                self.queue.remove(spare)
            elif request.purpose not in _SPARED_LAST:
                return  # the queue holds only what must be said: this one goes
        if front:
            self.queue.appendleft(request)
        else:
            self.queue.append(request)

    def _failed(self, failure: tuple[str, str], request: Request) -> Outcome:
        if request.out_of_band:  # a filler: not worth a retry, and not the caller's turn
            return Outcome(failed=failure, send=self.next_queued())
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            return Outcome(failed=failure, give_up=f"model_response_failed: {failure[0]}")
        after_s = RETRY_BACKOFF_S[self.failures - 1]
        retry = Retry(after_s, request, self._generation)
        self.retries_pending += 1
        if after_s > 0:
            # The caller would sit in silence for the backoff: a short filler first.
            filler = Request(SAY_ONE_MOMENT, out_of_band=True, purpose="filler")
            return Outcome(failed=failure, retry=retry, send=filler)
        return Outcome(failed=failure, retry=retry)

    def _resolve(self, info: ResponseInfo) -> tuple[ToolCall, ...]:
        events = self._calls.pop(info.id, [])
        by_call = {e.call_id: e for e in events}
        calls: list[ToolCall] = []
        for item in info.output or ():
            # response.done's output has every function call with its name (the GA shape).
            if item.type == "function_call" and item.call_id:
                event = by_call.pop(item.call_id, None)
                arguments = item.arguments or (event.arguments if event else "")
                name = item.name or (event.name if event else "") or self._names.get(item.id, "")
                calls.append(ToolCall(item.call_id, name, arguments, item.id))
        for event in by_call.values():  # a peer whose response.done lists no output
            name = event.name or self._names.get(event.item_id, "")
            calls.append(ToolCall(event.call_id, name, event.arguments, event.item_id))
        for call in calls:
            self._names.pop(call.item_id, None)
        return tuple(calls)
