"""The store holds the one LISTEN connection for routing changes and relays each into
the routing actor's inbox (against a real PostgreSQL): once on connecting, for every
change committed, and again after the connection is lost and made anew."""

from __future__ import annotations

from pathlib import Path

import trio

from actors.store.actor import StoreActor
from actors.store.db import open_database
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import RefreshRouting, StoreWrite

WAIT_S = 30.0


async def sql(dsn: str, statement: str) -> object:
    async with open_database(dsn, connect_timeout_s=5) as db:
        return await db.fetchval(statement, timeout_s=5)


async def next_reload(routing: Mailbox[RefreshRouting]) -> RefreshRouting:
    """The next reload request, and any that came with it (one reload serves all)."""
    request = await routing.receive()
    routing.drain_nowait()
    return request


async def test_the_store_relays_routing_changes_to_the_routing_inbox(
    fresh_database: str, tmp_path: Path
) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 8, OverflowPolicy.BLOCK)
    routing: Mailbox[RefreshRouting] = Mailbox("routing", 16, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, spool_dir=tmp_path, routing_changes=routing)
    stop = StopSignal()
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, stop)
            on_connect = await next_reload(routing)  # whatever changed before it listened
            listening = store.statistics().routing_listening
            await sql(
                fresh_database,
                "INSERT INTO projects (id, name, timezone) VALUES ('acme', 'A', 'UTC')",
            )
            on_change = await next_reload(routing)
            killed = await sql(
                fresh_database,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
            on_reconnect = await next_reload(routing)
            await sql(fresh_database, "UPDATE projects SET name = 'B' WHERE id = 'acme'")
            after_reconnect = await next_reload(routing)
            stop.request()
    assert listening
    assert killed == 1
    # A notification carries no reply: it asks for a reload, nobody waits on it.
    assert on_connect == on_change == on_reconnect == after_reconnect == RefreshRouting()
    assert not store.statistics().routing_listening
