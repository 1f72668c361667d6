"""Every mailbox between the tree's actors, as one table.

Mailboxes belong to the root, not to the actor that reads them, so a restarted actor
finds its unread mail. Each row gives the size, the overflow policy and why that policy
is right for what flows through it; the builder (api/root/build.py) opens each from its
row, and docs/architecture.md's mailbox table is rendered from these rows (checked by a
test, as is that a built engine has exactly these mailboxes). The alert channels' queues
are made by the alert actor's channels (actors/alert_channels.py), one per configured
channel; their row describes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.alert_channels import QUEUE_SIZE as ALERT_CHANNEL_QUEUE_SIZE
from engine.mailbox import RECORD_SEND_TIMEOUT_S, Mailbox, OverflowPolicy


@dataclass(frozen=True, slots=True)
class MailboxRow:
    name: str
    reader: str
    capacity: int
    policy: OverflowPolicy
    why: str  # what the policy means for a sender when the box is full
    messages_in: str  # which messages, from whom
    messages_out: str  # what the reader makes of them
    per_channel: bool = False  # one per configured alert channel, named alerts-<channel>


STORE = MailboxRow(
    "store",
    "StoreActor",
    256,
    OverflowPolicy.BLOCK,
    f"every sender of a record waits at most `RECORD_SEND_TIMEOUT_S` "
    f"({RECORD_SEND_TIMEOUT_S:g} s, engine/mailbox.py), then the record is lost, counted "
    "in the inbox's `dropped_total` and alerted by the store; the store drains it into "
    "Postgres or the spool",
    "`EventLogWritten` (alerts), `CallUpdated`, `FunctionCallRecorded` (calls, webhooks)",
    "rows in `event_log`, `calls`, `function_calls` (batches of up to 500 records or "
    "100 ms), or the spool; `databaseError` alerts",
)
QUERIES = MailboxRow(
    "store-queries",
    "StoreActor (the read lane)",
    64,
    OverflowPolicy.BLOCK,
    "bounded by 0.5-1 s for room (then HTTP 503 with `Retry-After`) and the asker's 10 s "
    "timeout; 2 queries at once, statement timeout 8 s",
    "`StoreQuery`: a query value, parsed and authorised by the asker (admin and analytics APIs)",
    "each answer on the asker's own 1-slot reply channel",
)
SETUP_QUERIES = MailboxRow(
    "store-setup",
    "StoreActor (the call-setup lane)",
    64,
    OverflowPolicy.BLOCK,
    "bounded by the asker's timeout (a stream claim: 1 s, then the claim stands on this "
    "instance alone); 2 queries at once, statement timeout 3 s",
    "`StoreQuery` (stream claims, routing loads and version checks, the health check)",
    "as above; a lane of its own, so call setup never queues behind reports",
)
ROUTING = MailboxRow(
    "routing",
    "RoutingActor",
    16,
    OverflowPolicy.BLOCK,
    "the admin API's `RefreshRouting` waits (bounded by its 3 s wait); the store's LISTEN "
    "relay sends with `send_nowait` and drops when full: one pending reload serves all",
    "`RefreshRouting` (admin API after a write; the store, for each PostgreSQL "
    "notification and after each LISTEN reconnection)",
    "a new frozen `RoutingSnapshot`, read synchronously by the webhooks, the media server "
    "and the analytics key check; the version on the reply channel",
)
METRICS = MailboxRow(
    "metrics",
    "MetricsAggregator",
    1024,
    OverflowPolicy.DROP_NEWEST,
    "refused and counted; a metric never slows its sender",
    "supervisor and group events; `CallBegan`, `CallProgress`, `CallFinished`, "
    "`FunctionCalled`, `ModelConnected` (calls, early sessions, voice webhook)",
    "its `statistics()` snapshot; `highErrorRate` alerts",
)
ALERTS = MailboxRow(
    "alerts",
    "AlertActor",
    64,
    OverflowPolicy.DROP_NEWEST,
    "refused and counted; a flood is itself the symptom",
    "`Alert` (the root's router: crashes, failed restarts, escalations; calls, store, "
    "webhooks, metrics, API)",
    "a log line at the alert's level; `EventLogWritten` to `store`; `Outgoing` to its channels",
)
ALERT_CHANNEL = MailboxRow(
    "alerts-<channel>",
    "an alert channel (webhook, email)",
    ALERT_CHANNEL_QUEUE_SIZE,
    OverflowPolicy.DROP_NEWEST,
    "refused and counted; a dead channel costs its queue, never the alert actor's time",
    "`Outgoing` (alert actor)",
    "HTTP POST / SMTP, retried 1, 2, 4, 8 s; `alertDeliveryFailed` rows",
    per_channel=True,
)
EARLY = MailboxRow(
    "early-sessions",
    "EarlySessions",
    128,
    OverflowPolicy.DROP_NEWEST,
    "refused and counted; a dropped `OpenEarly` costs that call the handshake at stream "
    "start; a dropped `TakeEarly` makes the call connect itself after its short wait",
    "`OpenEarly` (voice webhook), `DiscardEarly` (status callback), `TakeEarly` (calls)",
    "the open model socket on the taker's 1-slot reply channel (or none)",
)

MAILBOXES: tuple[MailboxRow, ...] = (
    STORE,
    QUERIES,
    SETUP_QUERIES,
    ROUTING,
    METRICS,
    ALERTS,
    EARLY,
    ALERT_CHANNEL,
)


def open_mailbox(row: MailboxRow) -> Mailbox[Any]:
    """The mailbox a row describes (its message type is the caller's annotation)."""
    if row.per_channel:
        raise ValueError(f"{row.name}: made by each alert channel, not by the root")
    return Mailbox(row.name, row.capacity, row.policy)
