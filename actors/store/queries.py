"""Request/reply access to the store for the admin API: the store's query lane.

Writes that may wait (call records, events) go through the store's batching inbox; an
admin request needs its answer now. It sends a ``StoreQuery``, a unit of asyncio-side
work, on the store's separate query mailbox and waits for the outcome on its own reply
channel, under a timeout: a database that is away gives a quick ``StoreUnavailable``,
never a hung request. The store runs a few queries at once, beside its write batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio

from engine.errors import EngineError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from actors.store.db import Connection
    from engine.mailbox import Outbox

T = TypeVar("T")


class StoreUnavailable(EngineError):
    """The database did not answer in time (or is away); try again later."""


class StoreBusy(StoreUnavailable):
    """The lane's queue stayed full: too much work is waiting already; try again later."""


@dataclass(frozen=True, slots=True)
class StoreQuery:
    work: Callable[[Connection], Awaitable[Any]]
    reply: trio.MemorySendChannel[outcome.Outcome[Any]]


async def ask_store(
    queries: Outbox[StoreQuery],
    work: Callable[[Connection], Awaitable[T]],
    *,
    timeout_s: float,
    queue_timeout_s: float | None = None,
) -> T:
    """Run ``work`` in one transaction in the store; its result, or its exception. With
    ``queue_timeout_s``, waiting for room in the lane's queue is bounded separately
    (``StoreBusy``): a request that cannot even queue is answered at once."""
    reply_send, reply_receive = trio.open_memory_channel[outcome.Outcome[Any]](1)
    queued = False
    try:
        with trio.fail_after(timeout_s):
            with trio.move_on_after(timeout_s if queue_timeout_s is None else queue_timeout_s):
                await queries.send(StoreQuery(work, reply_send))
                queued = True
            if not queued:
                raise StoreBusy("too many database reads are waiting")
            with reply_receive:
                answer = await reply_receive.receive()
    except trio.TooSlowError:
        raise StoreUnavailable(f"the database did not answer within {timeout_s:g} s") from None
    result: T = answer.unwrap()
    return result
