"""Instance leases: no call stays "live" after the engine that carried it is gone.

Each engine process has an instance id (``new_instance_id``) that its call rows carry
(``calls.engine_instance``) and a lease row in ``instance_leases`` that it renews every
``heartbeat_s``; the lease expires ``lease_s`` after the last renewal. A process killed
with live calls (``kill -9``, an OOM kill, its host lost) renews nothing more, and once
its lease has expired any engine's sweep (this one's after a restart, or a sibling's)
finalises its ``active`` calls: ``failed``, ``end_reason = 'engine_lost'``, ended at the
lost instance's last heartbeat (the last moment it was known to be alive), the duration
from ``started_at``. The sweep is one UPDATE over rows locked ``FOR UPDATE SKIP LOCKED``
and still ``active``: two engines sweeping at once finalise each call once.

The finalisation is a guess, ranked so that later words still merge (``writes.py``
``ENGINE_LOST_RANK``): Twilio's status callback fills in its fields, and the engine's own
final record, if the instance was only cut off from the database, replaces it.

Ids are per process (a restarted engine is a new instance): a restart finds its
predecessor's calls by the predecessor's expired lease, like any other engine would.
Every time here is the database's ``now()``, so the engines' clocks need not agree.

Nothing waits on the lease: it runs beside the store's writes, and a database that does
not answer is logged once (and once more when it answers again); calls go on.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import trio

from actors.store.db import TRANSIENT_ERRORS
from actors.store.writes import ENGINE_LOST_RANK

if TYPE_CHECKING:
    from actors.store.db import Connection, Database
    from engine.lifecycle import StopSignal

log = logging.getLogger("afterhours.store")

# A lease (ENGINE_LEASE_S, default 20 s) outlives this many heartbeats: a slow database
# or a stalled event loop for a few seconds does not declare a live engine lost.
HEARTBEATS_PER_LEASE = 4
# Each renewal and sweep is one short statement; under the heartbeat so none overlap.
LEASE_QUERY_TIMEOUT_S = 3.0
# How long a lease row is kept once expired with no live calls left, for the operator
# (which instances ran, when they stopped) before it is deleted.
LEASE_KEPT_S = 7 * 24 * 3600.0

ENGINE_LOST = "engine_lost"

LEASE_FAILURES: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)


@dataclass(frozen=True, slots=True)
class Lease:
    instance_id: str
    lease_s: float  # ENGINE_LEASE_S

    @property
    def heartbeat_s(self) -> float:
        return self.lease_s / HEARTBEATS_PER_LEASE


def new_instance_id() -> str:
    """This process's id: readable for the operator (host and pid), made unique by a
    random tail (a container's engine is always pid 1, and pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


RENEW = """
INSERT INTO instance_leases (instance_id, expires_at)
VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (instance_id) DO UPDATE
SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at, stopped_at = NULL
"""

# A clean stop gives the lease up: a call it could not finish is swept at once.
RELEASE = """
UPDATE instance_leases SET heartbeat_at = now(), expires_at = now(), stopped_at = now()
WHERE instance_id = $1
"""

# A call whose instance has no lease row at all (killed before its first renewal reached
# the database) counts as lost once the row has been still for a whole lease.
SWEEP = f"""
WITH lost AS (
    SELECT c.call_sid, COALESCE(l.heartbeat_at, c.updated_at) AS last_seen
    FROM calls c LEFT JOIN instance_leases l ON l.instance_id = c.engine_instance
    WHERE c.status = 'active' AND c.engine_instance IS NOT NULL
      AND (l.expires_at < now()
           OR (l.instance_id IS NULL AND c.updated_at < now() - make_interval(secs => $1)))
    FOR UPDATE OF c SKIP LOCKED
)
UPDATE calls SET
    status = 'failed',
    status_source = 'engine',
    status_rank = {ENGINE_LOST_RANK},
    end_reason = '{ENGINE_LOST}',
    ended_at = GREATEST(lost.last_seen, calls.started_at),
    duration_s = EXTRACT(EPOCH FROM GREATEST(lost.last_seen, calls.started_at) - calls.started_at),
    updated_at = now()
FROM lost
WHERE calls.call_sid = lost.call_sid AND calls.status = 'active'
RETURNING calls.engine_instance
"""  # noqa: S608 - built from constants only

FORGET = """
DELETE FROM instance_leases l
WHERE l.expires_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (
      SELECT 1 FROM calls c WHERE c.engine_instance = l.instance_id AND c.status = 'active'
  )
"""


async def renew(db: Database, lease: Lease) -> None:
    await db.execute(RENEW, lease.instance_id, lease.lease_s, timeout_s=LEASE_QUERY_TIMEOUT_S)


async def release(db: Database, lease: Lease) -> None:
    await db.execute(RELEASE, lease.instance_id, timeout_s=LEASE_QUERY_TIMEOUT_S)


async def sweep(db: Database, lease: Lease) -> dict[str, int]:
    """Finalise the live calls of instances whose lease expired; how many, by instance."""

    async def unit(connection: Connection) -> dict[str, int]:
        rows = await connection.fetch(SWEEP, lease.lease_s)
        await connection.execute(FORGET, LEASE_KEPT_S)
        lost: dict[str, int] = {}
        for row in rows:
            lost[row["engine_instance"]] = lost.get(row["engine_instance"], 0) + 1
        return lost

    return await db.transaction(unit, timeout_s=LEASE_QUERY_TIMEOUT_S)


async def keep_lease(db: Database, lease: Lease, stop: StopSignal) -> None:
    """Renew the lease and sweep, every heartbeat, until cancelled (the store's nursery
    ends with the store). Never raises for the database: it logs once and tries again."""
    failing = False
    try:
        while True:
            try:
                await renew(db, lease)
                lost = await sweep(db, lease)
            except LEASE_FAILURES as exc:
                if not failing:
                    failing = True
                    log.warning(
                        "instance lease %s not renewed (%s); calls go on, retrying every %.1f s",
                        lease.instance_id, _reason(exc), lease.heartbeat_s,
                    )  # fmt: skip
            else:
                if failing:
                    failing = False
                    log.info("instance lease %s renewed again", lease.instance_id)
                for instance, count in lost.items():
                    log.warning(
                        "engine instance %s lost (its lease expired): %d live call(s) "
                        "finalised failed (%s)", instance, count, ENGINE_LOST,
                    )  # fmt: skip
            await trio.sleep(lease.heartbeat_s)
    finally:
        # Only a clean stop gives the lease up; a crashing store is restarted by its
        # supervisor, and this process's calls are still live.
        if stop.requested:
            with trio.CancelScope(shield=True):
                try:
                    await release(db, lease)
                except LEASE_FAILURES as exc:
                    log.warning("instance lease %s not released: %s", lease.instance_id, exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError | TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
