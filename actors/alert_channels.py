"""Where alerts go outside the engine: a webhook and email.

Each channel is a sender task with its own bounded queue (DROP_NEWEST, counted): the
alert actor hands an alert over with ``send_nowait`` and moves on, so a dead webhook or
mail server costs a full queue and a log line, never a slow call. A delivery is retried
with backoff (``RETRY_BACKOFF_S``) and then given up, with one ``event_log`` row
(``alertDeliveryFailed``) saying so.

Webhook: ``POST ALERT_WEBHOOK_URL`` with the product's JSON body (``level``, ``title``,
``message``, ``projectId``, ``metadata``, ``timestamp``), signed when
``ALERT_WEBHOOK_SECRET`` is set: ``X-Afterhours-Signature: sha256=<HMAC-SHA256 of the
body>``, the same scheme as the business functions. Any 2xx is delivered.

Email: ``ALERT_EMAIL_RECIPIENT`` over ``SMTP_URL`` (``smtp://`` with STARTTLS when the
server offers it, ``smtps://`` for TLS from the start; user and password from the URL),
through the standard library's ``smtplib`` on a worker thread (it blocks), from
``ALERT_EMAIL_FROM`` (default: the URL's user when it is an address, else
``afterhours@<host name>``).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx
import msgspec
import trio

from engine.alert_level import AlertLevel
from engine.mailbox import RECORD_SEND_TIMEOUT_S, Mailbox, OverflowPolicy
from engine.messages import Alert, EventLogWritten, new_event_id, utc_now
from engine.signing import sign

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine.mailbox import Outbox
    from engine.messages import StoreWrite

log = logging.getLogger("afterhours.alerts")

RETRY_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)  # then the delivery is given up
QUEUE_SIZE = 100
WEBHOOK_TIMEOUT_S = 5.0
SMTP_TIMEOUT_S = 10.0
_json = msgspec.json.Encoder()


class DeliveryFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    name: str
    delivered_total: int
    failed_total: int  # given up after every retry
    queued: int
    dropped_total: int  # found the queue full


@dataclass(frozen=True, slots=True)
class Outgoing:
    alert: Alert
    count: int = 1  # identical alerts folded into this one


def webhook_body(outgoing: Outgoing) -> bytes:
    alert = outgoing.alert
    metadata: dict[str, Any] = dict(alert.metadata)
    if alert.call_sid:
        metadata.setdefault("callSid", alert.call_sid)
    if outgoing.count > 1:
        metadata["count"] = outgoing.count
    return _json.encode(
        {
            "level": alert.level.name.lower(),
            "type": alert.type,
            "title": alert.title,
            "message": alert.message,
            "projectId": alert.project_id,
            "metadata": metadata,
            "timestamp": alert.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
    )


def email_message(outgoing: Outgoing, sender: str, recipients: str) -> EmailMessage:
    alert = outgoing.alert
    folded = f" (x{outgoing.count})" if outgoing.count > 1 else ""
    message = EmailMessage()
    message["Subject"] = f"[afterhours {alert.level.name.lower()}] {alert.title}{folded}"
    message["From"] = sender
    message["To"] = recipients
    lines = [
        alert.message,
        "",
        f"type: {alert.type}",
        f"level: {alert.level.name.lower()}",
        f"project: {alert.project_id or '-'}",
        f"call: {alert.call_sid or '-'}",
        f"time: {alert.timestamp.isoformat()}",
    ]
    if outgoing.count > 1:
        lines.append(f"occurrences folded into this alert: {outgoing.count}")
    lines += [f"{key}: {value}" for key, value in sorted(alert.metadata.items())]
    message.set_content("\n".join(lines) + "\n")
    return message


def send_email_blocking(smtp_url: str, message: EmailMessage) -> None:
    """One message over SMTP; runs on a worker thread. ``DeliveryFailed`` on any error."""
    parts = urlsplit(smtp_url)
    host = parts.hostname or "localhost"
    secure = parts.scheme.lower() == "smtps"
    port = parts.port or (465 if secure else 587)
    try:
        client: smtplib.SMTP
        if secure:
            context = ssl.create_default_context()
            client = smtplib.SMTP_SSL(host, port, timeout=SMTP_TIMEOUT_S, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S)
        with client:
            client.ehlo()
            if not secure and client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(f"SMTP {host}:{port}: {exc}") from None


def email_sender(smtp_url: str) -> str:
    user = unquote(urlsplit(smtp_url).username or "")
    return user if "@" in user else f"afterhours@{socket.getfqdn()}"


class Channel:
    """One outside channel: a bounded queue and the task that delivers from it."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[Outgoing], Awaitable[None]],
        store: Outbox[StoreWrite],
        *,
        backoff_s: tuple[float, ...] = RETRY_BACKOFF_S,
    ) -> None:
        self.name = name
        self.queue: Mailbox[Outgoing] = Mailbox(
            f"alerts-{name}", QUEUE_SIZE, OverflowPolicy.DROP_NEWEST
        )
        self._deliver = deliver
        self._store = store
        self._backoff_s = backoff_s
        self._delivered_total = 0
        self._failed_total = 0

    def statistics(self) -> ChannelStatistics:
        queue = self.queue.statistics()
        return ChannelStatistics(
            self.name, self._delivered_total, self._failed_total, queue.queued, queue.dropped_total
        )

    def offer(self, outgoing: Outgoing) -> None:
        if not self.queue.send_nowait(outgoing):
            log.error("alert %s not sent by %s: its queue is full", outgoing.alert.type, self.name)

    async def run(self) -> None:
        while True:
            await self._send(await self.queue.receive())

    async def drain(self, budget_s: float) -> None:
        """At shutdown: what is queued, within ``budget_s`` (one attempt each)."""
        with trio.move_on_after(budget_s):
            for outgoing in self.queue.drain_nowait():
                await self._attempt(outgoing)

    async def _send(self, outgoing: Outgoing) -> None:
        error = ""
        for delay_s in (0.0, *self._backoff_s):
            await trio.sleep(delay_s)
            try:
                await self._deliver(outgoing)
            except DeliveryFailed as exc:
                error = str(exc)
                log.warning("alert %s via %s failed: %s", outgoing.alert.type, self.name, error)
                continue
            self._delivered_total += 1
            return
        await self._given_up(outgoing, error)

    async def _attempt(self, outgoing: Outgoing) -> None:
        try:
            await self._deliver(outgoing)
        except DeliveryFailed as exc:
            await self._given_up(outgoing, str(exc))
        else:
            self._delivered_total += 1

    async def _given_up(self, outgoing: Outgoing, error: str) -> None:
        self._failed_total += 1
        alert = outgoing.alert
        log.error("alert %s via %s given up: %s", alert.type, self.name, error)
        row = EventLogWritten(
            new_event_id(),
            utc_now(),
            AlertLevel.WARNING.name.lower(),
            "alertDeliveryFailed",
            f"{self.name} could not deliver {alert.type} ({alert.title}): {error}",
            project_id=alert.project_id,
            call_sid=alert.call_sid,
            metadata={"channel": self.name, "alertType": alert.type},
        )
        if not await self._store.send_within(row, RECORD_SEND_TIMEOUT_S):
            log.error("event_log row for a delivery failure lost: the store's inbox stayed full")


def webhook_channel(
    url: str, secret: str | None, store: Outbox[StoreWrite], **options: Any
) -> Channel:
    async def deliver(outgoing: Outgoing) -> None:
        body = webhook_body(outgoing)
        headers = {"Content-Type": "application/json", "User-Agent": "afterhours-alerts"}
        if secret:
            headers["X-Afterhours-Signature"] = sign(secret, body)
        try:
            async with httpx.AsyncClient() as client:  # alerts are rare: no pool to keep
                response = await client.post(
                    url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S
                )
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code}")

    return Channel("webhook", deliver, store, **options)


def email_channel(
    smtp_url: str,
    recipients: str,
    store: Outbox[StoreWrite],
    *,
    sender: str | None = None,
    **options: Any,
) -> Channel:
    """``sender``: ALERT_EMAIL_FROM; None falls back to ``email_sender``'s guess."""
    sender = sender or email_sender(smtp_url)

    async def deliver(outgoing: Outgoing) -> None:
        message = email_message(outgoing, sender, recipients)
        await trio.to_thread.run_sync(
            send_email_blocking, smtp_url, message, abandon_on_cancel=True
        )

    return Channel("email", deliver, store, **options)
