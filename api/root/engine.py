"""The composition root: runs one engine process until a stop or a signal ends it.

The tree itself is a table (api/root/tree.py), its mailboxes another
(api/root/mailboxes.py), and the builder (api/root/build.py) wires every actor and
handler; this module runs it: the signal watcher, the database around the tree, the
drain, the shutdown watchdog and the readiness poller. It lives in ``api`` because it is
the one place that knows every layer, and nothing imports it but the CLI.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
import trio_asyncio

from actors.http_client import shared_http_client
from api.http.twilio_access import TwilioAccess, twilio_access
from api.http.vapi_calls import VapiAccess, vapi_access
from api.root.build import build_tree, load_prices
from api.root.database import open_engine_database
from api.root.drain import Drain
from api.root.tree import HTTP_CLOSE_TIMEOUT_S, shutdown_deadline_s
from api.root.watchdog import ShutdownWatchdog
from engine.admission import Admission
from engine.lifecycle import StopSignal
from engine.logs import mask_secret
from engine.ready_poller import ReadyPoller, use_poller
from engine.refusals import Refusals

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.early_sessions import EarlySessions
    from api.http.app import App
    from api.media_server import MediaServer
    from api.root.database import EngineDatabase
    from engine.config import Settings
    from engine.group import DynamicGroup
    from engine.mailbox import Mailbox
    from engine.postgres_supervisor import SupervisedPostgres
    from engine.simulator.model import SimulatedModel
    from engine.supervisor import Supervisor

log = logging.getLogger("afterhours")


@dataclass(frozen=True, slots=True)
class Engine:
    """What a running engine exposes to its starter (tests, the CLI)."""

    stop: StopSignal
    bound_urls: list[str]
    database_dsn: str
    supervisor: Supervisor
    calls: DynamicGroup
    simulated_model: SimulatedModel | None  # when no OPENAI_API_KEY is configured
    media: MediaServer
    early: EarlySessions
    drain: Drain  # Engine.drain.begin(): what a first SIGTERM does
    mailboxes: dict[str, Mailbox[Any]]  # by name, as /stats lists them
    app: App
    refusals: Refusals  # what the edges turned away, by edge and reason
    embedded_postgres: SupervisedPostgres | None = None  # without DATABASE_URL


async def run_engine(
    settings: Settings,
    *,
    task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED,
    on_ready: Callable[[Engine], None] | None = None,
) -> None:
    """Run the whole engine until ``Engine.stop`` is requested or a signal arrives.

    Signals are watched from the first moment: a stop before the engine is ready (while
    the embedded PostgreSQL starts, say) aborts the start-up, stops what was started,
    and returns without reporting started.
    """
    stop = StopSignal()
    watchdog = ShutdownWatchdog(shutdown_deadline_s(settings.drain_timeout_s))
    drains: list[Drain] = []  # the tree's drain, once the tree exists
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, stop, nursery.cancel_scope, watchdog, drains)
        try:
            # Until the database is up, a stop cancels the start-up outright; from then on
            # the supervisor handles a stop itself, in order, even while it is starting.
            with stop.interruptible() as database_start:
                async with (
                    trio_asyncio.open_loop(),
                    open_engine_database(settings, stop.request) as database,
                ):
                    stop.detach(database_start)
                    if not database_start.cancel_called:
                        await _run_tree(
                            settings, database, stop, watchdog, drains, task_status, on_ready
                        )
                    # The embedded PostgreSQL kept dying: the tree has stopped in order,
                    # now the CLI says why in one line and exits 3.
                    if database.embedded is not None and database.embedded.escalation:
                        raise database.embedded.escalation
        finally:
            watchdog.disarm()
            nursery.cancel_scope.cancel()  # the tree is down: stop listening for signals


async def _run_tree(
    settings: Settings,
    database: EngineDatabase,
    stop: StopSignal,
    watchdog: ShutdownWatchdog,
    drains: list[Drain],
    task_status: trio.TaskStatus[Engine],
    on_ready: Callable[[Engine], None] | None,
) -> None:
    admission = Admission()
    refusals = Refusals()  # every edge counts what it turns away here, for /metrics
    access = twilio_access(settings)
    _log_twilio_access(access)
    vapi = vapi_access(settings)
    _log_vapi_access(vapi)
    dsn = database.dsn
    # One HTTP client for every call's business functions and Twilio REST requests
    # (actors/http_client.py); closed once the tree, and so every call, has stopped.
    http = shared_http_client()
    tree = build_tree(
        settings,
        database,
        load_prices(settings),
        admission,
        refusals,
        access,
        vapi,
        on_stopping=watchdog.arm,
        http=http,
    )
    supervisor, calls, api = tree.supervisor, tree.calls, tree.api
    drain = Drain(admission, calls, stop, drain_timeout_s=settings.drain_timeout_s)

    def ready(value: object = None) -> None:
        engine = Engine(
            stop,
            api.bound_urls,
            dsn,
            supervisor,
            calls,
            tree.model.simulator,
            tree.media,
            tree.early,
            drain,
            {box.name: box for box in tree.mailboxes},
            api.app,
            refusals,
            database.embedded,
        )
        drains.append(drain)  # from now on a first signal drains
        # The routing snapshot is loaded by now: the projects are known. Not a refusal to
        # start: a missing credential must not take every caller off the line.
        for warning in tree.config_warnings():
            log.error("%s", warning.message)
        task_status.started(engine)
        if on_ready is not None:
            on_ready(engine)

    # One readiness poller for every media socket of this process (engine/ready_poller.py):
    # it outlives the supervisor's children, whose readers it serves.
    tick_ms = settings.ready_tick_ms
    poller = ReadyPoller(tick_ms / 1000) if tick_ms is not None else None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain.run)
            if poller is not None:
                await nursery.start(poller.run)
            with use_poller(poller):
                await supervisor.run(stop, task_status=_Started(ready))
            nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(HTTP_CLOSE_TIMEOUT_S) as closing:
            closing.shield = True
            await http.aclose()


def _log_twilio_access(access: TwilioAccess) -> None:
    if access.mode == "simulated" and access.rest is not None:
        mask_secret(access.rest.auth_token)  # local and derived, but a password all the same
        log.info(
            "no TWILIO_ACCOUNT_SID: live calls are transferred through the simulated Twilio "
            "at %s (`afterhours simulate` serves it)",
            access.rest.base_url,
        )
    elif access.note is not None:
        log.info("no TWILIO_ACCOUNT_SID and no simulated Twilio: %s", access.note)


def _log_vapi_access(access: VapiAccess) -> None:
    if access.mode == "simulated" and access.api_key is not None:
        mask_secret(access.api_key.reveal())  # local and derived, but a key all the same
        if access.server_secret is not None:
            mask_secret(access.server_secret.reveal())
        log.info(
            "no VAPI_API_KEY: calls to numbers on Vapi go to the simulated Vapi at %s "
            "(`afterhours simulate` serves it)",
            access.base_url,
        )
    elif access.mode == "not_configured":
        log.info(
            "Vapi is not configured (%s): callers of Vapi numbers get the fallback", access.note
        )
    if access.server_secret is None:
        log.info("VAPI_SERVER_SECRET is not set: POST /vapi/events refuses every message")


class _Started:
    """A ``task_status`` that calls back (the supervisor reports started to us)."""

    def __init__(self, callback: Callable[[object], None]) -> None:
        self._callback = callback

    def started(self, value: object = None) -> None:
        self._callback(value)


async def _stop_on_signals(
    stop: StopSignal,
    root_scope: trio.CancelScope,
    watchdog: ShutdownWatchdog,
    drains: list[Drain],
) -> None:
    """First SIGINT/SIGTERM: drain (api/root/drain.py), then stop gracefully, with the
    watchdog armed in case it hangs (the supervisor arms it too, for stops that do not
    come from a signal); before the engine is ready there is nothing to drain: stop.
    A second one shortens the drain (live calls are ended politely now). A third: stop
    at once."""
    received = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            received += 1
            if received == 1:
                watchdog.arm()
                if drains:
                    log.info("%s received: draining, then stopping gracefully", name)
                    drains[0].begin()
                else:
                    log.info("%s received: stopping gracefully", name)
                    stop.request()
            elif received == 2 and drains and not stop.requested:
                log.warning("second %s: ending the drain; live calls are ended now", name)
                drains[0].shorten()
            else:
                log.warning("%s again: stopping now", name)
                root_scope.cancel()
