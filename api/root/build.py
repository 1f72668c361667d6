"""The builder: every actor, mailbox and handler of one engine process, wired together."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.alert_channels import Channel, email_channel, webhook_channel
from actors.alerts import AlertActor, alert_for
from actors.call import STOP_BUDGET_S
from actors.early_sessions import EarlySessions
from actors.load import LoadMonitor
from actors.metrics import ErrorRateRule, MetricsAggregator, MetricsSample
from actors.routing import RoutingActor
from actors.store.actor import StoreActor
from actors.store.leases import Lease, new_instance_id
from api.http.admin import AdminApi
from api.http.analytics import AnalyticsApi
from api.http.app import ROUTE_GROUPS, App
from api.http.health import HealthView
from api.http.observability import Observability, Sources
from api.http.server import ApiServer
from api.http.twilio_access import ConfigWarning, TwilioAccess, transfer_warning
from api.http.twilio_webhooks import TwilioWebhooks
from api.http.vapi_calls import VapiAccess, VapiCalls
from api.http.vapi_events import VapiEvents
from api.media_server import MediaServer
from api.root import mailboxes as boxes
from api.root.mailboxes import open_mailbox
from api.root.model import ModelChoice
from api.root.tree import ROOT_INTENSITY, ROOT_NAME, child_specs
from engine.errors import StartupError
from engine.group import DynamicGroup
from engine.price_book import (
    BUILT_IN,
    PriceBook,
    PriceTableError,
    UnknownModelPrices,
    price_book_from_toml,
)
from engine.realtime_models import deprecation_warning
from engine.stream_tokens import TOKEN_LIFETIME_S
from engine.supervisor import Supervisor

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from api.root.database import EngineDatabase
    from engine.admission import Admission
    from engine.children import ChildFn
    from engine.config import Settings
    from engine.early_requests import EarlyRequest
    from engine.events import SupervisorEvent
    from engine.mailbox import Mailbox, Outbox
    from engine.messages import Alert, RefreshRouting, StoreWrite
    from engine.refusals import Refusals
    from engine.store_queries import StoreQuery

log = logging.getLogger("afterhours")


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


@dataclass(frozen=True, slots=True)
class Tree:
    """One engine process, built and not yet started."""

    supervisor: Supervisor
    calls: DynamicGroup
    api: ApiServer
    model: ModelChoice
    media: MediaServer
    early: EarlySessions
    mailboxes: tuple[Mailbox[Any], ...]  # every one the root opened, and the alert channels'
    config_warnings: Callable[[], list[ConfigWarning]]


def build_tree(
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
) -> Tree:
    """Every actor, mailbox and handler, wired; the supervisor's children in the order
    and with the budgets of the tree's table (api/root/tree.py)."""
    # Mailboxes belong to the root, not the actors: a restarted actor finds its unread
    # mail. Sizes and policies are the table's (api/root/mailboxes.py).
    store_inbox: Mailbox[StoreWrite] = open_mailbox(boxes.STORE)
    metrics_inbox: Mailbox[MetricsSample] = open_mailbox(boxes.METRICS)
    alerts_inbox: Mailbox[Alert] = open_mailbox(boxes.ALERTS)

    def report(event: SupervisorEvent) -> None:
        metrics_inbox.send_nowait(event)
        alert = alert_for(event)
        if alert is not None:
            alerts_inbox.send_nowait(alert)

    dsn, embedded = database.dsn, database.embedded
    if embedded is not None:
        embedded.attach(alert=alerts_inbox.send_nowait, event=report)

    # Two query lanes (bulkheads): call setup never queues behind analytics or admin.
    queries: Mailbox[StoreQuery] = open_mailbox(boxes.QUERIES)
    setup_queries: Mailbox[StoreQuery] = open_mailbox(boxes.SETUP_QUERIES)
    routing_inbox: Mailbox[RefreshRouting] = open_mailbox(boxes.ROUTING)
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
        routing_changes=routing_inbox,  # the store holds the LISTEN and relays each change
    )
    routing = RoutingActor(routing_inbox, setup_queries)
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
        shutdown_s=STOP_BUDGET_S,  # each call's; the group's own is the tree's
        report=report,
    )
    model = ModelChoice(settings)
    early_inbox: Mailbox[EarlyRequest] = open_mailbox(boxes.EARLY)
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
            early=early.statistics,
            http_requests=lambda: app.request_counts(),
            admission=admission,
            queries=setup_queries,  # the database as calls see it, not behind reports
            openai="configured" if settings.openai_api_key else "simulated",
            worker=settings.worker_index,
            refusals=refusals,
            routing=routing.statistics,
            load=load.statistics,
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
    runs: dict[str, ChildFn] = {
        "store": store.run,
        "routing": routing.run,
        "metrics": metrics.run,
        "load": load.run,
        "alerts": alerts.run,
        "early": early.run,
        "media": media.run,
        "calls": calls.run,
        "api": api.run,
    }
    if model.simulator is not None:
        runs["model-simulator"] = model.run_simulator
    supervisor = Supervisor(
        ROOT_NAME,
        child_specs(runs),
        intensity=ROOT_INTENSITY,
        report=report,
        on_stopping=on_stopping,
    )
    return Tree(supervisor, calls, api, model, media, early, tuple(mailboxes), config_warnings)
