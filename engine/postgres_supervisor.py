"""The embedded PostgreSQL, kept running: restarted when it dies, given up on when it
keeps dying.

Why: the postmaster is our child process, and a crash, a ``kill -9`` or the OOM killer
ends it under a running engine. The store spools records while the database refuses
connections (actors/store/actor.py), but without a restart the spool would only grow.

* Exit is seen at once: ``trio.Process.wait`` returns when the kernel reports the child
  gone. No polling.
* A postmaster alive but no longer answering at all (``pg_isready`` gets no response
  ``policy.hung_probes`` times in a row, one probe every ``policy.probe_interval_s``) is
  killed, which makes it an exit like any other. "Rejecting" answers (crash recovery,
  start-up) are not hung: PostgreSQL is busy healing itself, and killing it would undo
  that.
* Restart on the same port (the store's and the routing actor's DSN stays valid) after a
  backoff that doubles from ``first_backoff_s`` to ``max_backoff_s``. A restart that
  fails to start counts as another exit.
* More than ``intensity.max_restarts`` restarts within ``intensity.period_s`` (the
  supervisor's own count, ``RestartWindow``): the engine stops in order
  (``on_give_up``; the store spools what is left) and ``escalation`` is raised by the
  composition root, which the CLI turns into one line and exit code 3 (as a supervisor
  that gives up does; engine/supervisor.py).

Every exit is an ``error`` alert, every return an ``info`` one (``databaseError``, the
store's own type for the database), the give-up a ``SupervisorEscalated`` event.
"""

from __future__ import annotations

import logging
import signal
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from engine.alert_level import AlertLevel
from engine.embedded_postgres import open_postmaster
from engine.errors import RestartIntensityExceeded, StartupError
from engine.events import SupervisorEscalated, SupervisorEvent
from engine.messages import Alert
from engine.supervisor import RestartIntensity, RestartWindow

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from engine.embedded_postgres import Postmaster

__all__ = [
    "EmbeddedPostgresStatistics",
    "PostgresExit",
    "RestartPolicy",
    "SupervisedPostgres",
    "open_supervised_postgres",
]

log = logging.getLogger("afterhours.postgres")

SUPERVISOR_NAME = "embedded-postgres"  # how the escalation and its alert name us
CHILD_ID = "postmaster"
# Five restarts a minute: with the backoff below, about 15 s of a postmaster that dies at
# every start before the engine gives up.
POSTMASTER_INTENSITY = RestartIntensity(max_restarts=5, period_s=60.0)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How hard to try. The defaults give up after about 15 s of a postmaster that dies
    at every start (0.5 + 1 + 2 + 4 + 8 s of backoff), while one crash an hour is
    restarted within half a second forever."""

    first_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    intensity: RestartIntensity = POSTMASTER_INTENSITY
    probe_interval_s: float = 10.0
    hung_probes: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.first_backoff_s <= self.max_backoff_s:
            raise ValueError(f"invalid backoff {self.first_backoff_s}..{self.max_backoff_s} s")
        if not self.probe_interval_s > 0 or self.hung_probes < 1:
            raise ValueError("invalid liveness probe")

    def backoff_s(self, restarts_in_period: int) -> float:
        """The wait before the ``restarts_in_period``-th restart of the current period
        (1 for the first): a quiet period resets it to ``first_backoff_s``."""
        doublings = max(0, restarts_in_period - 1)
        return min(self.first_backoff_s * float(2**doublings), self.max_backoff_s)


@dataclass(frozen=True, slots=True)
class PostgresExit:
    pid: int
    status: int  # as trio reports it: negative for the signal that killed it
    at_s: float  # trio clock
    hung: bool  # we killed it because it no longer answered
    log_tail: str  # the last lines of its server log: paths, so only for the admin token

    @property
    def description(self) -> str:
        if self.hung:
            return "stopped answering and was killed"
        if self.status < 0:
            try:
                return f"killed by {signal.Signals(-self.status).name}"
            except ValueError:
                return f"killed by signal {-self.status}"
        return f"exited with status {self.status}"


@dataclass(frozen=True, slots=True)
class EmbeddedPostgresStatistics:
    state: str  # "up", "restarting" (down, a restart pending or under way), "failed"
    pid: int | None  # the running postmaster's
    restarts_total: int  # restart attempts, failed ones included
    last_exit: PostgresExit | None
    last_error: str | None  # why the last restart failed
    down_since_s: float | None  # trio clock; None while up

    @property
    def up(self) -> bool:
        return self.state == "up"


class SupervisedPostgres:
    """The running embedded server: its DSN, its state, and the task that keeps it up."""

    def __init__(
        self, postmaster: Postmaster, policy: RestartPolicy, on_give_up: Callable[[], None]
    ) -> None:
        self._postmaster = postmaster
        self._policy = policy
        self._on_give_up = on_give_up
        self.dsn = postmaster.server.dsn
        self.port = postmaster.port
        self.data_dir = postmaster.server.data_dir
        self.escalation: RestartIntensityExceeded | None = None
        self._alert: Callable[[Alert], object] | None = None
        self._event: Callable[[SupervisorEvent], None] | None = None
        self._state = "up"
        self._restarts = RestartWindow(policy.intensity)
        self._restarts_total = 0
        self._last_exit: PostgresExit | None = None
        self._last_error: str | None = None
        self._down_since_s: float | None = None
        self._hung = False

    def attach(
        self, *, alert: Callable[[Alert], object], event: Callable[[SupervisorEvent], None]
    ) -> None:
        """Where alerts and runtime events go, once the actor tree (and its mailboxes)
        exists; both must not block. Before that, exits are logged only."""
        self._alert = alert
        self._event = event

    def statistics(self) -> EmbeddedPostgresStatistics:
        return EmbeddedPostgresStatistics(
            state=self._state,
            pid=self._postmaster.pid if self._state == "up" else None,
            restarts_total=self._restarts_total,
            last_exit=self._last_exit,
            last_error=self._last_error,
            down_since_s=self._down_since_s,
        )

    async def keep_running(self) -> None:
        """Watch, restart, and return only on giving up (or when cancelled)."""
        while True:
            self._hung = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_liveness)
                pid = self._postmaster.pid
                status = await self._postmaster.wait_exit()
                nursery.cancel_scope.cancel()
            assert pid is not None
            self._exited(pid, status)
            await self._postmaster.sweep()
            if not await self._restart():
                self._give_up()
                return
            self._back()

    async def _watch_liveness(self) -> None:
        silent = 0
        while True:
            await trio.sleep(self._policy.probe_interval_s)
            answered = await self._postmaster.accepting()  # bounded inside
            silent = silent + 1 if answered is None else 0
            if silent >= self._policy.hung_probes:
                log.error(
                    "embedded PostgreSQL (pid %s) has not answered %d probes in a row: "
                    "killing it to restart it",
                    self._postmaster.pid,
                    silent,
                )
                self._hung = True
                self._postmaster.kill()
                return

    async def _restart(self) -> bool:
        """Start again until it works (True) or the intensity is spent (False)."""
        while True:
            if not self._restarts.admit():
                return False
            await trio.sleep(self._policy.backoff_s(self._restarts.recent))
            self._restarts_total += 1
            try:
                await self._postmaster.start()  # bounded by its ready timeout
            except (StartupError, OSError) as exc:
                self._last_error = str(exc)
                log.error("embedded PostgreSQL restart %d failed: %s", self._restarts_total, exc)
                await self._postmaster.sweep()
                continue
            return True

    def _exited(self, pid: int, status: int) -> None:
        tail = self._postmaster.log_tail()
        exit = PostgresExit(pid, status, trio.current_time(), self._hung, tail)
        self._last_exit = exit
        self._state = "restarting"
        self._down_since_s = exit.at_s
        log.error(
            "embedded PostgreSQL (pid %d) %s: restarting it; records are spooled meanwhile "
            "(server log: %s)",
            exit.pid,
            exit.description,
            tail,
        )
        self._send(
            Alert(
                level=AlertLevel.ERROR,
                type="databaseError",
                title="Embedded PostgreSQL exited",
                message=f"pid {exit.pid} {exit.description}; restarting it, records are "
                "spooled meanwhile",
                metadata={"pid": exit.pid, "status": exit.status, "hung": exit.hung},
            )
        )

    def _back(self) -> None:
        down_s = trio.current_time() - (self._down_since_s or trio.current_time())
        self._state = "up"
        self._down_since_s = None
        pid = self._postmaster.pid
        log.info("embedded PostgreSQL back (pid %s) after %.1f s", pid, down_s)
        self._send(
            Alert(
                level=AlertLevel.INFO,
                type="databaseError",
                title="Embedded PostgreSQL back",
                message=f"restarted after {down_s:.1f} s (pid {pid})",
                metadata={"pid": pid, "restarts": self._restarts_total},
            )
        )

    def _give_up(self) -> None:
        self._state = "failed"
        last = self._last_error or (self._last_exit.description if self._last_exit else "?")
        escalation = RestartIntensityExceeded(
            SUPERVISOR_NAME,
            CHILD_ID,
            self._policy.intensity.max_restarts,
            self._policy.intensity.period_s,
            last,
        )
        self.escalation = escalation
        log.critical("%s", escalation)
        if self._event is not None:
            self._event(SupervisorEscalated(SUPERVISOR_NAME, CHILD_ID, str(escalation)))
        self._on_give_up()

    def _send(self, alert: Alert) -> None:
        if self._alert is not None:
            self._alert(alert)


@asynccontextmanager
async def open_supervised_postgres(
    data_dir: Path,
    *,
    on_give_up: Callable[[], None],
    policy: RestartPolicy | None = None,
    ready_timeout_s: float = 15.0,
    stop_timeout_s: float = 5.0,
    bindir: Path | None = None,
    port: int | None = None,
) -> AsyncIterator[SupervisedPostgres]:
    """The embedded PostgreSQL (engine/embedded_postgres.py), started, and restarted
    whenever it exits until the block ends; then stopped. ``on_give_up`` is called once
    if the restart intensity is exceeded; ``SupervisedPostgres.escalation`` says why."""
    async with open_postmaster(
        data_dir,
        ready_timeout_s=ready_timeout_s,
        stop_timeout_s=stop_timeout_s,
        bindir=bindir,
        port=port,
    ) as postmaster:
        server = SupervisedPostgres(postmaster, policy or RestartPolicy(), on_give_up)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.keep_running)
            try:
                yield server
            finally:
                # First the keeper (a restart under way stops its own child), then
                # open_postmaster stops whichever postmaster runs now.
                nursery.cancel_scope.cancel()
