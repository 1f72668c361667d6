"""The composition root: builds the actor tree and runs it until a signal stops it.

It lives in ``api`` because it is the one place that knows every layer: it wires
``engine`` (runtime), ``actors`` (store, metrics, alerts) and ``api`` (HTTP) together, and
nothing imports it but the CLI.

Tree (started top to bottom, stopped bottom to top):

    afterhours (one_for_one, 3 restarts in 60 s, then the process exits non-zero)
    +-- store     permanent   owns Postgres; drains its inbox on stop
    +-- routing   permanent   the routing snapshot calls are answered from
    +-- metrics   permanent
    +-- load      permanent   CPU and event-loop lag, for admission by load
    +-- alerts    permanent
    +-- early     permanent   model sessions opened at webhook time
    +-- media     permanent   the Twilio media stream listener
    +-- calls     permanent   dynamic group of temporary call actors
    +-- api       permanent   Hypercorn (trio worker)
"""

from __future__ import annotations

import logging
import signal
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio
import trio_asyncio

from actors.alert_channels import Channel, email_channel, webhook_channel
from actors.alerts import AlertActor, alert_for
from actors.call import STOP_BUDGET_S
from actors.early_sessions import EarlyRequest, EarlySessions
from actors.http_client import shared_http_client
from actors.load import LoadMonitor
from actors.metrics import ErrorRateRule, MetricsAggregator, MetricsSample
from actors.model_link import ModelEndpoint
from actors.routing import RoutingActor
from actors.store.actor import StoreActor
from actors.store.leases import Lease, new_instance_id
from api.http.admin import AdminApi
from api.http.analytics import AnalyticsApi
from api.http.app import ROUTE_GROUPS, App
from api.http.health import HealthView
from api.http.observability import Observability, Sources
from api.http.server import ApiServer
from api.http.twilio_access import ConfigWarning, TwilioAccess, transfer_warning, twilio_access
from api.http.twilio_webhooks import TwilioWebhooks
from api.http.vapi_calls import VapiAccess, VapiCalls, vapi_access
from api.http.vapi_events import VapiEvents
from api.media_server import MediaServer
from api.root.drain import Drain
from api.root.watchdog import ShutdownWatchdog
from engine.admission import Admission
from engine.children import KILL_GRACE_S
from engine.errors import StartupError
from engine.group import DynamicGroup
from engine.lifecycle import StopSignal
from engine.logs import mask_secret
from engine.mailbox import Mailbox, OverflowPolicy
from engine.postgres_supervisor import RestartPolicy, SupervisedPostgres, open_supervised_postgres
from engine.price_book import (
    BUILT_IN,
    PriceBook,
    PriceTableError,
    UnknownModelPrices,
    price_book_from_toml,
)
from engine.ready_poller import ReadyPoller, use_poller
from engine.realtime_models import deprecation_warning
from engine.refusals import Refusals
from engine.stream_tokens import TOKEN_LIFETIME_S
from engine.supervisor import ChildSpec, RestartIntensity, Supervisor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import httpx

    from actors.store.queries import StoreQuery
    from engine.config import Settings
    from engine.events import SupervisorEvent
    from engine.mailbox import Outbox
    from engine.messages import Alert, RefreshRouting, StoreWrite
    from engine.simulator.model import SimulatedModel

log = logging.getLogger("afterhours")

STORE_SHUTDOWN_S = 10.0  # room to write the last batches
SERVICE_SHUTDOWN_S = 3.0
API_SHUTDOWN_S = 5.0
EMBEDDED_POSTGRES_STOP_S = 10.0  # fast shutdown, then SIGKILL: 5 s each at most
HTTP_CLOSE_TIMEOUT_S = 2.0  # the shared HTTP client's idle connections, closed at the end
# After the drain, the calls still live are ended politely: each says goodbye.
CALLS_SHUTDOWN_S = STOP_BUDGET_S


def shutdown_deadline_s(settings: Settings) -> float:
    """The longest an orderly stop can take when every budget is spent in full: the
    drain, then every child's shutdown budget and kill grace, then the database."""
    budgets_s = STORE_SHUTDOWN_S + 7 * SERVICE_SHUTDOWN_S + API_SHUTDOWN_S
    calls_s = settings.drain_timeout_s + CALLS_SHUTDOWN_S + 2 * KILL_GRACE_S
    return budgets_s + calls_s + 10 * KILL_GRACE_S + HTTP_CLOSE_TIMEOUT_S + EMBEDDED_POSTGRES_STOP_S


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


@dataclass(frozen=True, slots=True)
class EngineDatabase:
    dsn: str
    embedded: SupervisedPostgres | None  # None with DATABASE_URL: not ours to restart


# Module-level so that a test can make the embedded server give up in seconds.
EMBEDDED_POSTGRES_RESTARTS = RestartPolicy()


@asynccontextmanager
async def open_engine_database(
    settings: Settings, on_give_up: Callable[[], None]
) -> AsyncIterator[EngineDatabase]:
    """``DATABASE_URL`` when set; otherwise the engine's own PostgreSQL under DATA_DIR,
    restarted when it dies; ``on_give_up`` is called if it keeps dying."""
    if settings.database_url is not None:
        yield EngineDatabase(settings.database_url, None)
        return
    async with open_supervised_postgres(
        settings.data_dir / "postgres",
        on_give_up=on_give_up,
        policy=EMBEDDED_POSTGRES_RESTARTS,
    ) as server:
        mask_secret(urlsplit(server.dsn).password or "")
        log.info("embedded PostgreSQL on 127.0.0.1:%d (data in %s)", server.port, server.data_dir)
        yield EngineDatabase(server.dsn, server)


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
    watchdog = ShutdownWatchdog(shutdown_deadline_s(settings))
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
    tree = _build_tree(
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
    supervisor, calls, api, model, media, early, mailboxes, config_warnings = tree
    drain = Drain(
        admission,
        lambda: calls.statistics().active,
        stop,
        drain_timeout_s=settings.drain_timeout_s,
        last_call_ended_at_s=lambda: calls.statistics().last_exit_at_s,
    )

    def ready(value: object = None) -> None:
        engine = Engine(
            stop,
            api.bound_urls,
            dsn,
            supervisor,
            calls,
            model.simulator,
            media,
            early,
            drain,
            {box.name: box for box in mailboxes},
            api.app,
            refusals,
            database.embedded,
        )
        drains.append(drain)  # from now on a first signal drains
        # The routing snapshot is loaded by now: the projects are known. Not a refusal to
        # start: a missing credential must not take every caller off the line.
        for warning in config_warnings():
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


class _Model:
    """Where calls find the model: OpenAI when a key is configured, otherwise the
    simulated model, run in-process as a supervised child (the embedded default)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._simulated_url = ""
        self.simulator: SimulatedModel | None = None
        if settings.openai_api_key is None:
            # Imported only here: the simulator validates events against the openai
            # package's types, about a second of imports an engine with a key never needs.
            from engine.simulator import faults
            from engine.simulator.model import SimulatedModel

            self.simulator = SimulatedModel()
            if settings.simulator_faults is not None:
                faults.apply(self.simulator, settings.simulator_faults)

    def endpoint(self) -> ModelEndpoint:
        settings = self._settings
        if settings.openai_api_key is not None:
            return ModelEndpoint(
                settings.openai_realtime_url,
                settings.openai_realtime_model,
                settings.openai_api_key.reveal(),
                connect_timeout_s=settings.model_connect_timeout_s,
            )
        return ModelEndpoint(
            self._simulated_url,
            settings.openai_realtime_model,
            "simulated",
            connect_timeout_s=settings.model_connect_timeout_s,
        )

    def specs(self) -> list[ChildSpec]:
        if self.simulator is None:
            return []
        return [ChildSpec("model-simulator", self._run_simulator, shutdown_s=SERVICE_SHUTDOWN_S)]

    async def _run_simulator(self, stop: StopSignal, *, task_status: trio.TaskStatus[str]) -> None:
        assert self.simulator is not None
        async with trio.open_nursery() as nursery:
            self._simulated_url = await nursery.start(self.simulator.serve)
            log.info(
                "no OPENAI_API_KEY: calls talk to the simulated model at %s", self._simulated_url
            )
            task_status.started(self._simulated_url)
            await stop.wait()
            nursery.cancel_scope.cancel()


def alert_channels(settings: Settings, store: Outbox[StoreWrite]) -> list[Channel]:
    """The outside alert channels the settings ask for."""
    channels = []
    if settings.alert_webhook_url:
        secret = settings.alert_webhook_secret
        channels.append(
            webhook_channel(settings.alert_webhook_url, secret.reveal() if secret else None, store)
        )
    if settings.alert_email_recipient and settings.smtp_url:
        channels.append(
            email_channel(
                settings.smtp_url,
                settings.alert_email_recipient,
                store,
                sender=settings.alert_email_from,
            )
        )
    elif settings.alert_email_recipient:
        log.warning("ALERT_EMAIL_RECIPIENT is set but SMTP_URL is not: no alert email is sent")
    return channels


def load_prices(settings: Settings) -> PriceBook:
    """The built-in prices, overridden by ``PRICES_FILE``'s. A bad file, or an
    ``OPENAI_REALTIME_MODEL`` that neither prices, stops the start: calls must not be
    costed at another model's prices. A deprecated model is logged (one line)."""
    path = settings.prices_file
    book = BUILT_IN
    if path is not None:
        try:
            book = price_book_from_toml(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise StartupError(f"PRICES_FILE {path}: {exc.strerror or exc}") from None
        except PriceTableError as exc:
            raise StartupError(f"PRICES_FILE {exc}") from None
    model = settings.openai_realtime_model
    try:
        book.prices_for(model)
    except UnknownModelPrices as exc:
        raise StartupError(f"OPENAI_REALTIME_MODEL: {exc}") from None
    warning = deprecation_warning(model, "OPENAI_REALTIME_MODEL")
    if warning is not None:
        log.warning("%s", warning)
    return book


def _build_tree(
    settings: Settings,
    database: EngineDatabase,
    prices: PriceBook,
    admission: Admission,
    refusals: Refusals,
    access: TwilioAccess,
    vapi: VapiAccess,
    *,
    on_stopping: Callable[[], None],
    http: httpx.AsyncClient | None = None,
) -> tuple[
    Supervisor,
    DynamicGroup,
    ApiServer,
    _Model,
    MediaServer,
    EarlySessions,
    list[Mailbox[Any]],
    Callable[[], list[ConfigWarning]],
]:
    # Mailboxes belong to the root, not the actors: a restarted actor finds its unread mail.
    store_inbox: Mailbox[StoreWrite] = Mailbox("store", 256, OverflowPolicy.BLOCK)
    metrics_inbox: Mailbox[MetricsSample] = Mailbox("metrics", 1024, OverflowPolicy.DROP_NEWEST)
    alerts_inbox: Mailbox[Alert] = Mailbox("alerts", 64, OverflowPolicy.DROP_NEWEST)

    def report(event: SupervisorEvent) -> None:
        metrics_inbox.send_nowait(event)
        alert = alert_for(event)
        if alert is not None:
            alerts_inbox.send_nowait(alert)

    dsn, embedded = database.dsn, database.embedded
    if embedded is not None:
        embedded.attach(alert=alerts_inbox.send_nowait, event=report)

    # Two query lanes (bulkheads): call setup never queues behind analytics or admin.
    queries: Mailbox[StoreQuery] = Mailbox("store-queries", 64, OverflowPolicy.BLOCK)
    setup_queries: Mailbox[StoreQuery] = Mailbox("store-setup", 64, OverflowPolicy.BLOCK)
    # BLOCK, but the listener only ever uses send_nowait: one waiting reload is enough.
    routing_inbox: Mailbox[RefreshRouting] = Mailbox("routing", 16, OverflowPolicy.BLOCK)
    # This process's id: on every call row it carries, and on its lease (leases.py).
    instance = new_instance_id()
    store = StoreActor(
        dsn,
        store_inbox,
        # Each worker has its own spool: two stores never append to one file.
        spool_dir=settings.data_dir
        / ("spool" if settings.worker_index is None else f"spool/worker-{settings.worker_index}"),
        alerts=alerts_inbox,
        queries=queries,
        setup_queries=setup_queries,
        lease=Lease(instance, settings.engine_lease_s),
    )
    routing = RoutingActor(dsn, routing_inbox, setup_queries)
    load = LoadMonitor(
        max_cpu=settings.admit_max_cpu,
        max_loop_lag_s=settings.admit_max_loop_lag_s,
        admission=admission,
        active_calls=lambda: calls.statistics().active,
    )
    metrics = MetricsAggregator(
        metrics_inbox,
        alerts=alerts_inbox,
        error_rate=ErrorRateRule(settings.alert_error_rate, settings.alert_error_rate_window_s),
    )
    alerts = AlertActor(
        alerts_inbox,
        store_inbox,
        min_level=settings.alert_min_level,
        channels=alert_channels(settings, store_inbox),
    )
    calls = DynamicGroup(
        "calls",
        max_children=settings.max_concurrent_calls,
        shutdown_s=CALLS_SHUTDOWN_S,
        report=report,
    )
    model = _Model(settings)
    # Dropping is safe here: a call without an early session connects when its stream starts.
    early_inbox: Mailbox[EarlyRequest] = Mailbox("early-sessions", 128, OverflowPolicy.DROP_NEWEST)
    early = EarlySessions(
        early_inbox,
        model.endpoint,
        hold_s=TOKEN_LIFETIME_S,
        max_held=settings.max_concurrent_calls,
        metrics=metrics_inbox,
    )
    media = MediaServer(
        settings,
        calls=calls,
        store=store_inbox,
        setup=setup_queries,
        routes=routing.snapshot,
        alerts=alerts_inbox,
        model=model.endpoint,
        early=early_inbox,
        prices=prices,
        metrics=metrics_inbox,
        refusals=refusals,
        twilio_rest=access.rest,
        instance=instance,
        http=http,
    )

    def config_warnings() -> list[ConfigWarning]:
        # Read from the current snapshot: a project given an on-call number later counts.
        warning = transfer_warning(access, routing.snapshot().projects.values())
        return [] if warning is None else [warning]

    # Every bounded mailbox, for /metrics and /stats.
    mailboxes: list[Mailbox[Any]] = [store_inbox, queries, setup_queries, routing_inbox]
    mailboxes += [metrics_inbox, alerts_inbox]
    mailboxes += [early_inbox, *(channel.queue for channel in alerts.channels)]
    observability = Observability(
        Sources(
            metrics=metrics.statistics,
            calls=calls.statistics,
            mailboxes=lambda: [box.statistics() for box in mailboxes],
            store=store.statistics,
            alerts=alerts.statistics,
            supervisor=lambda: supervisor.statistics(),
            early=lambda: early.stats,
            http_requests=lambda: app.request_counts(),
            admission=admission,
            queries=setup_queries,  # the database as calls see it, not behind reports
            openai="configured" if settings.openai_api_key else "simulated",
            worker=settings.worker_index,
            refusals=refusals,
            routing=routing.statistics,
            load=load.reading,
            twilio=access.mode,
            config_warnings=config_warnings,
            embedded_postgres=None if embedded is None else embedded.statistics,
            projects=lambda: routing.snapshot().projects.keys(),
            http_routes=ROUTE_GROUPS,
        )
    )
    app = App(
        HealthView(
            lambda: calls.statistics().active,
            admission,
            embedded_postgres=None if embedded is None else embedded.statistics,
        ),
        AdminApi(
            queries,
            settings.admin_token,
            routing=routing_inbox,
            refusals=refusals,
            transfers_problem=access.problem,
        ),
        TwilioWebhooks(
            settings,
            routes=routing.snapshot,
            store=store_inbox,
            alerts=alerts_inbox,
            calls_at_capacity=lambda: calls.statistics().active >= calls.statistics().max_children,
            stream_url=lambda: media.public_url,
            early=early_inbox,
            admission=admission,
            metrics=metrics_inbox,
            refusals=refusals,
            instance=instance,
            vapi=VapiCalls(vapi, timeout_s=settings.vapi_create_timeout_s),
        ),
        observability,
        alerts_inbox,
        AnalyticsApi(
            queries,
            settings.admin_token,
            routes=routing.snapshot,
            comparison_rate_per_min_usd=settings.comparison_rate_per_min_usd,
            refusals=refusals,
        ),
        VapiEvents(
            vapi.server_secret, routes=routing.snapshot, store=store_inbox, refusals=refusals
        ),
        metrics_token=settings.metrics_token,
    )
    api = ApiServer(
        app,
        host=settings.host,
        port=settings.port,
        reuse_port=settings.workers > 1,
        own_port=settings.worker_api_port,
    )
    specs = [
        ChildSpec("store", store.run, shutdown_s=STORE_SHUTDOWN_S),
        # Started once its first snapshot is loaded: no call is answered before.
        ChildSpec("routing", routing.run, shutdown_s=SERVICE_SHUTDOWN_S),
        ChildSpec("metrics", metrics.run, shutdown_s=SERVICE_SHUTDOWN_S),
        ChildSpec("load", load.run, shutdown_s=SERVICE_SHUTDOWN_S),
        ChildSpec("alerts", alerts.run, shutdown_s=SERVICE_SHUTDOWN_S),
        *model.specs(),
        ChildSpec("early", early.run, shutdown_s=SERVICE_SHUTDOWN_S),
        # Stopped after the calls group has drained the calls it carries.
        ChildSpec("media", media.run, shutdown_s=SERVICE_SHUTDOWN_S),
        # Live calls had the drain to finish; those left say goodbye, then stragglers die.
        ChildSpec("calls", calls.run, shutdown_s=CALLS_SHUTDOWN_S + 2 * KILL_GRACE_S),
        ChildSpec("api", api.run, shutdown_s=API_SHUTDOWN_S),
    ]
    supervisor = Supervisor(
        "afterhours",
        specs,
        intensity=RestartIntensity(max_restarts=3, period_s=60.0),
        report=report,
        on_stopping=on_stopping,
    )
    return supervisor, calls, api, model, media, early, mailboxes, config_warnings
