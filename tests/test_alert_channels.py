"""Alerts leaving the engine: a webhook and email, against real local peers (an HTTP
receiver and an SMTP server on 127.0.0.1), with retries, give-up, level filtering and
folding of identical alerts."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from functools import partial

import trio

from actors.alert_channels import Outgoing, email_channel, webhook_channel
from actors.alerts import AlertActor
from api.root.build import alert_channels
from engine.alert_level import AlertLevel
from engine.config import settings_from_mapping
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import Alert, EventLogWritten, StoreWrite
from tests.function_backend import TwilioRestStandIn

SECRET = "alert-hook-secret"
FAST_RETRY_S = (0.01, 0.02)


@dataclass
class SmtpServer:
    """Just enough SMTP (RFC 5321) to take a message: no TLS offered, no auth."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        async with trio.open_nursery() as nursery:
            serve = partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            listeners = await nursery.start(serve)
            task_status.started(f"smtp://127.0.0.1:{listeners[0].socket.getsockname()[1]}")

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = b""

        async def line() -> bytes:
            nonlocal buffer
            while b"\r\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise EOFError
                buffer += chunk
            out, _, buffer = buffer.partition(b"\r\n")
            return out

        async with stream:
            await stream.send_all(b"220 test ESMTP\r\n")
            sender, recipients = "", []
            try:
                while True:
                    command = (await line()).decode()
                    verb = command[:4].upper()
                    if verb in ("EHLO", "HELO"):
                        await stream.send_all(b"250 test\r\n")
                    elif verb == "MAIL":
                        sender = command.partition(":")[2].strip("<> ")
                        await stream.send_all(b"250 ok\r\n")
                    elif verb == "RCPT":
                        recipients.append(command.partition(":")[2].strip("<> "))
                        await stream.send_all(b"250 ok\r\n")
                    elif verb == "DATA":
                        await stream.send_all(b"354 go on\r\n")
                        body = []
                        while (text := await line()) != b".":
                            body.append(text)
                        self.messages.append((sender, recipients, b"\r\n".join(body)))
                        await stream.send_all(b"250 queued\r\n")
                    elif verb == "QUIT":
                        await stream.send_all(b"221 bye\r\n")
                        return
                    else:
                        await stream.send_all(b"250 ok\r\n")
            except EOFError:
                return


def alert(level: AlertLevel = AlertLevel.ERROR, kind: str = "openaiError") -> Alert:
    return Alert(level, kind, "Model unreachable", "no answer within 10 s", "acme", "CA1")


def store() -> Mailbox[StoreWrite]:
    return Mailbox("store", 64, OverflowPolicy.BLOCK)


async def test_the_webhook_gets_the_signed_json_body() -> None:
    receiver = TwilioRestStandIn()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(receiver.serve)
        channel = webhook_channel(url, SECRET, store())
        nursery.start_soon(channel.run)
        channel.offer(Outgoing(alert()))
        with trio.fail_after(10):
            while not channel.statistics().delivered_total:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    (request,) = receiver.received
    body = request.json()
    assert {k: body[k] for k in ("level", "type", "title", "message", "projectId")} == {
        "level": "error",
        "type": "openaiError",
        "title": "Model unreachable",
        "message": "no answer within 10 s",
        "projectId": "acme",
    }
    assert body["metadata"] == {"callSid": "CA1"}
    assert body["timestamp"].endswith("Z")
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-afterhours-signature"] == expected


async def test_a_failing_webhook_is_retried_then_given_up_with_an_event_log_row() -> None:
    receiver = TwilioRestStandIn(status=500)
    rows = store()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(receiver.serve)
        channel = webhook_channel(url, None, rows, backoff_s=FAST_RETRY_S)
        nursery.start_soon(channel.run)
        channel.offer(Outgoing(alert()))
        with trio.fail_after(10):
            while not channel.statistics().failed_total:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(receiver.received) == 3  # the first attempt and two retries
    assert "x-afterhours-signature" not in receiver.received[0].headers  # no secret set
    (row,) = rows.drain_nowait()
    assert isinstance(row, EventLogWritten)
    assert (row.type, row.level, row.project_id) == ("alertDeliveryFailed", "warning", "acme")
    assert "HTTP 500" in row.message


async def test_an_unreachable_webhook_only_fills_its_bounded_queue() -> None:
    rows = store()
    channel = webhook_channel("http://127.0.0.1:9/hook", None, rows, backoff_s=(3600.0,))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.run)
        for _ in range(150):
            channel.offer(Outgoing(alert()))  # never blocks
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    stats = channel.queue.statistics()
    assert stats.dropped_total == 150 - stats.capacity  # the queue filled, the rest dropped
    assert stats.queued == stats.capacity - 1  # the first is in flight, the others wait


async def test_email_reaches_the_smtp_server() -> None:
    server = SmtpServer()
    async with trio.open_nursery() as nursery:
        smtp_url = await nursery.start(server.serve)
        channel = email_channel(smtp_url, "ops@example.com,owner@example.com", store())
        nursery.start_soon(channel.run)
        channel.offer(Outgoing(alert(AlertLevel.CRITICAL), count=3))
        with trio.fail_after(10):
            while not channel.statistics().delivered_total:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    ((sender, recipients, data),) = server.messages
    assert recipients == ["ops@example.com", "owner@example.com"]
    assert sender.startswith("afterhours@")
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Subject"] == "[afterhours critical] Model unreachable (x3)"
    text = message.get_content()
    assert "no answer within 10 s" in text
    assert "project: acme" in text
    assert "occurrences folded into this alert: 3" in text


async def test_alert_email_from_is_the_sender_of_the_envelope_and_the_message() -> None:
    server = SmtpServer()
    async with trio.open_nursery() as nursery:
        smtp_url = await nursery.start(server.serve)
        # Through the settings and the root's wiring: what `serve` builds from them.
        settings = settings_from_mapping(
            {"SMTP_URL": smtp_url, "ALERT_EMAIL_RECIPIENT": "ops@example.com",
             "ALERT_EMAIL_FROM": "alerts@plumbing.example"}
        )  # fmt: skip
        (channel,) = alert_channels(settings, store())
        nursery.start_soon(channel.run)
        channel.offer(Outgoing(alert(AlertLevel.CRITICAL)))
        with trio.fail_after(10):
            while not channel.statistics().delivered_total:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    ((sender, recipients, data),) = server.messages
    assert sender == "alerts@plumbing.example"
    assert recipients == ["ops@example.com"]
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["From"] == "alerts@plumbing.example"


async def test_a_dead_mail_server_is_retried_then_given_up() -> None:
    rows = store()
    channel = email_channel("smtp://127.0.0.1:9", "ops@example.com", rows, backoff_s=FAST_RETRY_S)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.run)
        channel.offer(Outgoing(alert()))
        with trio.fail_after(10):
            while not channel.statistics().failed_total:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    (row,) = rows.drain_nowait()
    assert isinstance(row, EventLogWritten)
    assert row.type == "alertDeliveryFailed"
    assert "SMTP 127.0.0.1:9" in row.message


async def test_min_level_filters_channels_and_identical_alerts_are_folded() -> None:
    receiver = TwilioRestStandIn()
    rows = store()
    inbox: Mailbox[Alert] = Mailbox("alerts", 64, OverflowPolicy.DROP_NEWEST)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(receiver.serve)
        channel = webhook_channel(url, SECRET, rows)
        # A window no busy machine outlasts while five alerts are handled; the stop ends
        # it, which sends what it held (as a window's end does).
        actor = AlertActor(
            inbox, rows, min_level=AlertLevel.ERROR, channels=[channel], fold_window_s=30.0
        )
        stop = StopSignal()
        async with trio.open_nursery() as running:
            await running.start(actor.run, stop)
            inbox.send_nowait(alert(AlertLevel.WARNING, "twilioError"))  # below ALERT_MIN_LEVEL
            for _ in range(5):  # one goes out now, four are folded into one
                inbox.send_nowait(alert(AlertLevel.ERROR, "functionCallFailure"))

            def settled() -> bool:
                folded = actor.statistics().folded_total
                return folded >= 4 and channel.statistics().delivered_total >= 1

            with trio.fail_after(10):
                while not settled():  # noqa: ASYNC110
                    await trio.sleep(0.01)
            stop.request()
        nursery.cancel_scope.cancel()  # the receiver
    bodies = [r.json() for r in receiver.received]
    assert [(b["type"], b["metadata"].get("count")) for b in bodies] == [
        ("functionCallFailure", None),
        ("functionCallFailure", 4),
    ]
    assert "(4 more like this within 30 s)" in bodies[1]["message"]
    logged = [r for r in rows.drain_nowait() if isinstance(r, EventLogWritten)]
    assert [(r.type, r.metadata.get("count")) for r in logged] == [
        ("twilioError", None),  # every alert has its event_log row, whatever its level
        ("functionCallFailure", None),
        ("functionCallFailure", 4),
    ]
    stats = actor.statistics()
    assert (stats.forwarded_total, stats.folded_total) == (2, 4)
    assert json.dumps(stats.channels)  # plain numbers, ready for /stats
