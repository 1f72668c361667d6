"""The store actor: the only writer to Postgres, and it loses nothing.

Other actors send it ``StoreWrite`` records and never wait on Postgres themselves. It
opens the pool and applies migrations before it reports started (so a bad database
stops the engine at start-up with one clear line), then batches: the first record opens
a batch, which closes after ``batch_delay_s`` or ``batch_max`` records and is written in
one transaction (``executemany`` per table: about 130k rows/s here against 0.7k for
row-by-row INSERTs, docs/stack-measurements.md 3). Every write is idempotent (writes.py).

Nothing lost: a batch that cannot be written (the database is unreachable, slow, or
restarting) goes to the spool on disk, fsync'd, and from then on every new batch goes
behind it, so records reach Postgres in the order they were sent. The spool is replayed
in order as soon as Postgres answers again, also after an engine restart. A record
Postgres *rejects* as invalid is kept in the spool's rejected file with the reason.
Stopping, and even being killed, spools what is still in memory (a synchronous append).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import asyncpg
import trio

from actors.store.db import TRANSIENT_ERRORS, open_database
from actors.store.lanes import READ_LANE, SETUP_LANE, serve_lane
from actors.store.leases import keep_lease
from actors.store.migrations import apply_migrations, load_migrations
from actors.store.notify import ROUTING_CHANNEL, Relay
from actors.store.spool import Spool, SpoolStatistics
from actors.store.write_errors import describe_refusal, is_outage, is_poison
from actors.store.writes import write_records
from engine.alert_level import AlertLevel
from engine.errors import StartupError
from engine.events import describe_error
from engine.messages import Alert, RefreshRouting

if TYPE_CHECKING:
    from pathlib import Path

    from actors.store.db import Connection, Database
    from actors.store.leases import Lease
    from engine.lifecycle import StopSignal
    from engine.mailbox import Mailbox, Outbox
    from engine.messages import StoreWrite
    from engine.store_queries import StoreQuery

log = logging.getLogger("afterhours.store")

# Which failed writes are the record's fault and which the database's: by SQLSTATE, in
# write_errors.py (poison records are set aside, never retried; outages spool).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)
CONNECT_FAILURES: tuple[type[BaseException], ...] = (StartupError, *UNAVAILABLE_ERRORS)

WRITE_TIMEOUT_S = 5.0


# While the spool holds records, how often to try Postgres again (doubling up to the max).
REPLAY_RETRY_S = 0.5
REPLAY_RETRY_MAX_S = 10.0
REPLAY_CHUNK_MIN = 10
# While a write has been waiting on PostgreSQL this long, what arrives in the inbox goes
# straight to the spool (checked every SPILL_CHECK_S): a slow or hung database never
# leaves the inbox full, so no sender is ever refused for lack of room. Records spilled
# during a write that then succeeds reach PostgreSQL after it from the spool; one that
# fails is spooled behind them: the order of arrival is not kept then, which the
# writes allow (every write is idempotent and a call's row merges in any order).
SPILL_AFTER_S = 0.5
SPILL_CHECK_S = 0.1


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    records_written_total: int
    batches_written_total: int
    write_failures_total: int
    backlog_records: int  # in the inbox or an open batch, not yet written or spooled
    spool: SpoolStatistics
    database_up: bool  # False while writes fail (not only while SELECT 1 does)
    last_error: str | None
    last_write_ok: bool | None = None  # the latest write's outcome (None: none yet)
    last_write_age_s: float | None = None
    oldest_unwritten_age_s: float | None = None  # in memory or in the spool
    records_set_aside: int = 0  # refused for what they are: rejected.jsonl
    records_spilled_total: int = 0  # sent to the spool while a write waited
    records_lost_total: int = 0  # found the inbox full (send_within): should stay 0
    routing_listening: bool = False  # the LISTEN for routing changes is connected


class StoreActor:
    def __init__(
        self,
        dsn: str,
        inbox: Mailbox[StoreWrite],
        *,
        spool_dir: Path,
        alerts: Outbox[Alert] | None = None,
        queries: Mailbox[StoreQuery] | None = None,
        setup_queries: Mailbox[StoreQuery] | None = None,
        connect_timeout_s: float = 10.0,
        batch_max: int = 500,
        batch_delay_s: float = 0.1,
        lease: Lease | None = None,  # this instance's heartbeat and sweep (leases.py)
        # Told of every routing change any instance commits (PostgreSQL's NOTIFY).
        routing_changes: Outbox[RefreshRouting] | None = None,
    ) -> None:
        self._lease = lease
        self._relay = (
            None
            if routing_changes is None
            else Relay(dsn, ROUTING_CHANNEL, partial(_ask_reload, routing_changes))
        )
        self._dsn = dsn
        self._inbox = inbox
        self._spool_dir = spool_dir
        self._alerts = alerts
        self._lanes = [
            (box, lane)
            for box, lane in ((queries, READ_LANE), (setup_queries, SETUP_LANE))
            if box is not None
        ]
        self._connect_timeout_s = connect_timeout_s
        self._batch_max = batch_max
        self._batch_delay_s = batch_delay_s
        self._spool: Spool | None = None
        self._pending: list[StoreWrite] = []  # taken from the mailbox, not yet safe
        self._written_total = 0
        self._batches_total = 0
        self._failures_total = 0
        self._database_up = True
        self._retry_s = REPLAY_RETRY_S
        self._next_replay_at_s = 0.0
        self._replay_chunk = batch_max
        self._last_error: str | None = None
        self._writing_since_s: float | None = None
        self._last_write: tuple[bool, float] | None = None  # (ok, trio time)
        self._spooled_since_s: float | None = None
        self._spilled_total = 0
        self._refused_seen = 0  # the inbox's dropped_total already alerted on
        # The actor object outlives a restart by its supervisor: this says which start it is.
        self._started_once = False

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        spool = self._spool = Spool(self._spool_dir)
        try:
            async with contextlib.AsyncExitStack() as resources:
                db = await self._connect(resources, spool, stop, task_status)
                if db is None:
                    return  # stopped before the database came back: all is spooled
                if spool.pending:
                    log.warning("spool holds %d records from before: replaying", spool.pending)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._spill_while_waiting, spool)
                    for queries, lane in self._lanes:
                        nursery.start_soon(serve_lane, db, queries, lane, stop)
                    if self._lease is not None:
                        nursery.start_soon(keep_lease, db, self._lease, stop)
                    if self._relay is not None:
                        nursery.start_soon(self._relay.run)
                    await self._serve(db, spool, stop)
                    nursery.cancel_scope.cancel()
        finally:
            # Whatever happened (a stop, a kill, a crash): what is in memory goes to disk.
            spool.append([*self._pending, *self._inbox.drain_nowait()])
            self._pending = []
            spool.close()

    async def _connect(
        self,
        resources: contextlib.AsyncExitStack,
        spool: Spool,
        stop: StopSignal,
        task_status: trio.TaskStatus[None],
    ) -> Database | None:
        """The pool, migrated. The engine's first start needs the database (a bad one is a
        start-up error, said in one line). A restart by the supervisor does not: it reports
        started at once and keeps taking records into the spool until the database
        answers, so a crash during an outage neither stops the engine nor blocks senders."""
        if not self._started_once:
            db = await self._open(resources)
            self._started_once = True
            task_status.started()
            return db
        task_status.started()
        while not stop.requested:
            attempt = contextlib.AsyncExitStack()
            try:
                db = await self._open(attempt)
            except CONNECT_FAILURES as exc:
                await attempt.aclose()
                self._database_down(exc)
                if await self._collect_batch(stop, self._until_replay_s()):
                    self._spool_append(spool, self._pending)
                    self._pending = []
                continue
            await resources.enter_async_context(attempt)
            return db
        return None

    async def _open(self, resources: contextlib.AsyncExitStack) -> Database:
        db = await resources.enter_async_context(
            open_database(self._dsn, connect_timeout_s=self._connect_timeout_s)
        )
        applied = await apply_migrations(db, load_migrations())
        if applied:
            log.info("applied migrations %s", ", ".join(f"{v:04d}" for v in applied))
        return db

    def statistics(self) -> StoreStatistics:
        spool = self._spool
        now_s = trio.current_time()
        return StoreStatistics(
            records_written_total=self._written_total,
            batches_written_total=self._batches_total,
            write_failures_total=self._failures_total,
            backlog_records=len(self._pending) + self._inbox.statistics().queued,
            spool=spool.statistics() if spool else SpoolStatistics(0, 0, 0, 0, 0, 0),
            database_up=self._database_up,
            last_error=self._last_error,
            last_write_ok=None if self._last_write is None else self._last_write[0],
            last_write_age_s=None if self._last_write is None else now_s - self._last_write[1],
            oldest_unwritten_age_s=self._oldest_unwritten_age_s(now_s),
            records_set_aside=spool.statistics().rejected_total if spool else 0,
            records_spilled_total=self._spilled_total,
            records_lost_total=self._inbox.statistics().dropped_total,
            routing_listening=self._relay is not None and self._relay.listening,
        )

    def _spool_append(self, spool: Spool, records: list[StoreWrite]) -> None:
        if records and not spool.pending:
            self._spooled_since_s = trio.current_time()
        spool.append(records)

    def _oldest_unwritten_age_s(self, now_s: float) -> float | None:
        spool = self._spool
        if spool is not None and spool.pending:
            if self._spooled_since_s is None:  # spooled before this start: at least this old
                self._spooled_since_s = now_s
            return now_s - self._spooled_since_s
        self._spooled_since_s = None
        if self._writing_since_s is not None:
            return now_s - self._writing_since_s
        return None

    async def _serve(self, db: Database, spool: Spool, stop: StopSignal) -> None:
        while not stop.requested:
            idle_s = self._until_replay_s() if spool.pending else None
            if await self._collect_batch(stop, idle_s):
                await self._deliver(db, spool)
            if spool.pending and trio.current_time() >= self._next_replay_at_s:
                await self._replay(db, spool)
        # Stopping: what is queued is written now, or spooled; one attempt per batch so
        # that the shutdown budget is spent on writing, not on waiting to retry.
        while batch := self._inbox.drain_nowait(self._batch_max):
            self._pending = batch
            await self._deliver(db, spool)
        if spool.pending:
            await self._replay(db, spool)

    async def _collect_batch(self, stop: StopSignal, idle_s: float | None) -> bool:
        """Fill ``self._pending``; False when nothing came (stopped, or ``idle_s`` passed
        with the spool waiting for its next replay). Records live in ``self._pending`` from
        the moment they leave the mailbox, so a kill at any point still spools them."""
        with trio.move_on_after(idle_s if idle_s is not None else float("inf")):
            first = await self._inbox.receive_until(stop)
            if first is None:
                return False
            self._pending = [first]
        if not self._pending:
            return False
        with trio.move_on_after(self._batch_delay_s):
            while len(self._pending) < self._batch_max:
                record = await self._inbox.receive_until(stop)
                if record is None:
                    break
                self._pending.append(record)
        return True

    async def _deliver(self, db: Database, spool: Spool) -> None:
        """Write the open batch, or spool it. It stays in ``self._pending`` until it is
        safe in one or the other, so a kill in the middle still spools it (replaying a
        batch that did reach Postgres is harmless: the writes are idempotent)."""
        batch = self._pending
        if spool.pending:
            self._spool_append(spool, batch)  # behind the records already waiting: order is kept
        else:
            try:
                await self._write(db, batch)
            except Exception as exc:
                if is_poison(exc):
                    await self._write_one_by_one(db, spool, batch, exc, spool_rest=True)
                elif is_outage(exc):
                    self._spool_append(spool, batch)
                    self._database_down(exc)
                else:
                    raise
            else:
                if not spool.pending:
                    # Back, with nothing spooled to replay (an outage in which no record
                    # came, or a restart during one): a written batch says so.
                    self._database_back()
        self._pending = []

    async def _replay(self, db: Database, spool: Spool) -> None:
        """Write spooled records in order, a chunk at a time, until none are left or the
        database fails again."""
        while spool.pending:
            chunk = spool.peek(self._replay_chunk)
            if chunk.lines == 0:  # cannot happen unless the file changed under us
                log.error("spool: %d records pending but none readable", spool.pending)
                return
            try:
                await self._write(db, chunk.records)
            except Exception as exc:
                if is_poison(exc):
                    if not await self._write_one_by_one(db, spool, chunk.records, exc):
                        return  # the database failed half-way: the chunk stays spooled
                    spool.commit(chunk)
                    continue
                if not is_outage(exc):
                    raise
                if isinstance(exc, trio.TooSlowError | TimeoutError):
                    # A slow database: smaller chunks, or the replay never catches up.
                    self._replay_chunk = max(REPLAY_CHUNK_MIN, self._replay_chunk // 2)
                self._database_down(exc)
                return
            spool.commit(chunk)
            self._replay_chunk = min(self._batch_max, self._replay_chunk * 2)
            if spool.pending:
                await trio.lowlevel.checkpoint()  # a long replay never starves other tasks
        # Before any other task runs: nobody may see the spool empty and the database down
        # (a race the suite met on a busy machine).
        self._database_back()

    async def _write(self, db: Database, records: list[StoreWrite]) -> None:
        if not records:
            return

        async def unit(connection: Connection) -> None:
            await write_records(connection, records)

        self._writing_since_s = trio.current_time()
        try:
            await db.transaction(unit, timeout_s=WRITE_TIMEOUT_S)
        except BaseException:
            self._last_write = (False, trio.current_time())
            raise
        finally:
            self._writing_since_s = None
        self._last_write = (True, trio.current_time())
        self._written_total += len(records)
        self._batches_total += 1

    async def _write_one_by_one(
        self,
        db: Database,
        spool: Spool,
        records: list[StoreWrite],
        batch_error: BaseException,
        *,
        spool_rest: bool = False,
    ) -> bool:
        """Postgres refused the batch as invalid: find the records it refuses, keep them in
        the rejected file, and write the others. If the database itself fails half-way,
        stop (spooling what is left when asked to) and return False."""
        log.error("a batch was refused (%s); writing its records one by one", batch_error)
        for index, record in enumerate(records):
            try:
                await self._write(db, [record])
            except Exception as exc:
                if is_poison(exc):
                    reason = describe_refusal(exc)
                    spool.reject(record, reason)
                    log.error("record refused and set aside in the spool: %s", reason)
                    self._raise_alert(AlertLevel.ERROR, "Record refused", reason)
                    continue
                if not is_outage(exc):
                    raise
                if spool_rest:
                    self._spool_append(spool, records[index:])
                self._database_down(exc)
                return False
        return True

    async def _spill_while_waiting(self, spool: Spool) -> None:
        """Keep the inbox empty while PostgreSQL keeps a write waiting, and alert if a
        sender ever found it full anyway (its record lost: ``send_within`` counts it)."""
        while True:
            await trio.sleep(SPILL_CHECK_S)
            since_s = self._writing_since_s
            if since_s is not None and trio.current_time() - since_s >= SPILL_AFTER_S:
                records = self._inbox.drain_nowait()
                if records:
                    self._spool_append(spool, records)
                    self._spilled_total += len(records)
            refused = self._inbox.statistics().dropped_total
            if refused > self._refused_seen:
                lost = refused - self._refused_seen
                self._refused_seen = refused
                log.error("%d record(s) found the store's inbox full and were lost", lost)
                self._raise_alert(
                    AlertLevel.ERROR, "Records not queued", f"{lost} record(s) found no room"
                )

    def _until_replay_s(self) -> float:
        return max(0.0, self._next_replay_at_s - trio.current_time())

    def _database_down(self, exc: BaseException) -> None:
        self._failures_total += 1
        self._last_error = describe_error(exc)
        self._next_replay_at_s = trio.current_time() + self._retry_s
        self._retry_s = min(self._retry_s * 2, REPLAY_RETRY_MAX_S)
        if self._database_up:
            self._database_up = False
            log.error("PostgreSQL unavailable (%s): spooling records to disk", self._last_error)
            self._raise_alert(AlertLevel.ERROR, "Database unavailable", self._last_error)

    def _database_back(self) -> None:
        self._retry_s = REPLAY_RETRY_S
        if not self._database_up:
            self._database_up = True
            log.info("PostgreSQL is back: spool replayed")
            self._raise_alert(AlertLevel.INFO, "Database back", "the spool was replayed")

    def _raise_alert(self, level: AlertLevel, title: str, message: str) -> None:
        if self._alerts is not None:
            self._alerts.send_nowait(Alert(level, "databaseError", title, message))


def _ask_reload(routing: Outbox[RefreshRouting]) -> None:
    # A full inbox already holds a reload request: this one adds nothing; a closed one
    # has nobody left to reload.
    with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
        routing.send_nowait(RefreshRouting())
