"""Text from outside never reaches a log line, an alert or a stored row as it came: log
records stay one line, escaped and bounded, in both formats; the alert actor escapes and
bounds what the webhook, the email, the log and ``event_log`` get (against a real HTTP
receiver and SMTP server); and a NUL in any field of a record no longer makes
PostgreSQL refuse it (against a real PostgreSQL)."""

from __future__ import annotations

import email
import email.policy
import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import trio

from actors.alert_channels import email_channel, webhook_channel
from actors.alerts import AlertActor, printable_alert
from engine.alert_level import AlertLevel
from engine.lifecycle import StopSignal
from engine.logs import MAX_MESSAGE_CHARS, JsonFormatter, TextFormatter
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import (
    Alert,
    CallUpdated,
    EventLogWritten,
    FunctionCallRecorded,
    StoreWrite,
    new_event_id,
)
from engine.safe_text import REPLACEMENT, bounded, printable, without_nul
from tests.function_backend import TwilioRestStandIn
from tests.helpers import sid
from tests.test_alert_channels import SmtpServer
from tests.test_store_actor import fetch, run_store

# What a stranger puts in a CallSid or a path: a forged line, a carriage return that
# rewrites the terminal line, a NUL, an ANSI colour, a Unicode line separator.
HOSTILE = "x\nCRITICAL afterhours: FORGED LINE\r\x00\x1b[31mred\u2028next\x85"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|CRITICAL) ")


def test_printable_escapes_every_control_character_and_keeps_the_rest() -> None:
    shown = printable(HOSTILE, 1000)
    assert shown == ("x\\nCRITICAL afterhours: FORGED LINE\\r\\x00\\x1b[31mred\\u2028next\\x85")
    assert shown.splitlines() == [shown]
    clean = "CA0123 +15550001111 café ☎ \\n"
    assert printable(clean, 1000) is clean  # nothing to escape: the same string back
    assert all(printable(chr(code), 10) != chr(code) for code in [*range(32), *range(127, 160)])


def test_bounded_keeps_both_ends_and_says_what_was_cut() -> None:
    text = "start" + "." * 1_000_000 + "end"
    short = bounded(text, 100)
    assert short.startswith("start")
    assert short.endswith("end")
    assert len(short) <= 100
    note = re.search(r"\.\.\.\[(\d+) chars cut\]\.\.\.", short)
    assert note is not None
    assert len(short) - len(note[0]) + int(note[1]) == len(text)  # kept + cut = all
    assert bounded(short, 100) == short
    assert bounded("short", 100) == "short"


def test_without_nul_reaches_into_json_values() -> None:
    value = {"k\x00": ["a\x00b", {"n": 1, "s": "\x00"}], "clean": "ok"}
    assert without_nul(value) == {
        f"k{REPLACEMENT}": [f"a{REPLACEMENT}b", {"n": 1, "s": REPLACEMENT}],
        "clean": "ok",
    }


@contextmanager
def captured(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """Records of the ``afterhours`` loggers, as ``formatter`` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("afterhours")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def assert_no_forged_line(output: str, formatter: logging.Formatter) -> None:
    lines = output.splitlines()  # splits at \r, \x85 and \u2028 too
    assert lines
    for line in lines:
        if isinstance(formatter, JsonFormatter):
            assert isinstance(msgspec.json.decode(line), dict)
        else:
            assert TEXT_LINE.match(line), line
    assert not any(line.startswith("CRITICAL") for line in lines)


FORMATTERS = [pytest.param(TextFormatter(), id="text"), pytest.param(JsonFormatter(), id="json")]


@pytest.mark.parametrize("formatter", FORMATTERS)
def test_a_hostile_value_in_a_record_stays_on_its_line(formatter: logging.Formatter) -> None:
    log = logging.getLogger("afterhours.test-untrusted")
    with captured(formatter) as stream:
        log.warning("rejected: CallSid %s", HOSTILE, extra={"call_sid": HOSTILE})
        try:
            raise ValueError(f"invalid literal: {HOSTILE!s}")
        except ValueError:
            log.exception("failed on %s", HOSTILE)
    output = stream.getvalue()
    assert_no_forged_line(output, formatter)
    assert len(output.splitlines()) == 2  # one line per record, traceback included
    assert "\x1b" not in output
    assert "\x00" not in output
    assert "FORGED LINE\\r\\x00\\x1b[31mred" in output.replace("\\\\", "\\")
    if isinstance(formatter, TextFormatter):
        assert "Traceback (most recent call last):" in output.splitlines()[1]


@pytest.mark.parametrize("formatter", FORMATTERS)
def test_a_megabyte_value_costs_a_bounded_line(formatter: logging.Formatter) -> None:
    with captured(formatter) as stream:
        logging.getLogger("afterhours.test-untrusted").warning("CallSid %s", "C" * 1_000_000)
    output = stream.getvalue()
    assert len(output) < MAX_MESSAGE_CHARS + 200  # the message, its time, level and logger
    assert "chars cut]" in output


async def test_the_alert_actor_escapes_and_bounds_what_every_channel_gets() -> None:
    receiver, smtp = TwilioRestStandIn(), SmtpServer()
    rows: Mailbox[StoreWrite] = Mailbox("store", 64, OverflowPolicy.BLOCK)
    inbox: Mailbox[Alert] = Mailbox("alerts", 64, OverflowPolicy.DROP_NEWEST)
    # As api/http/app.py raises one for a request that failed: the path is a stranger's.
    hostile = Alert(
        AlertLevel.ERROR,
        "apiError",
        f"HTTP handler failed for {HOSTILE}",
        f"POST /admin/{HOSTILE}: KeyError" + "!" * 100_000,
        call_sid=HOSTILE,
        metadata={"path": f"/admin/{HOSTILE}", "nested": [HOSTILE]},
    )
    stop = StopSignal()
    with captured(TextFormatter()) as log_output, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            hook_url = await nursery.start(receiver.serve)
            smtp_url = await nursery.start(smtp.serve)
            channels = [
                webhook_channel(hook_url, None, rows),
                email_channel(smtp_url, "ops@example.com", rows),
            ]
            actor = AlertActor(inbox, rows, min_level=AlertLevel.WARNING, channels=channels)
            await nursery.start(actor.run, stop)
            inbox.send_nowait(hostile)
            while not all(channel.statistics().delivered_total for channel in channels):  # noqa: ASYNC110
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()  # the row went to the store before the deliveries
    (request,) = receiver.received
    hook = request.json()
    ((_, _, data),) = smtp.messages
    mail = email.message_from_bytes(data, policy=email.policy.default)
    (row,) = [r for r in rows.drain_nowait() if isinstance(r, EventLogWritten)]
    shown = [hook["title"], hook["message"], hook["metadata"]["path"], *hook["metadata"]["nested"]]
    shown += [hook["metadata"]["callSid"], row.message, row.call_sid or "", mail["Subject"]]
    for text in shown:
        assert not any(ord(c) < 32 or 127 <= ord(c) < 160 or c == "\u2028" for c in text), text
    assert "\\nCRITICAL afterhours: FORGED LINE\\r\\x00\\x1b[31m" in hook["title"]
    assert len(hook["message"]) <= 2000
    assert "chars cut]" in hook["message"]
    body_lines = mail.get_content().splitlines()
    assert not any(line.startswith("CRITICAL") for line in body_lines)
    assert mail["Subject"].startswith("[afterhours error] HTTP handler failed for x\\nCRITICAL")
    assert_no_forged_line(log_output.getvalue(), TextFormatter())
    assert printable_alert(printable_alert(hostile)) == printable_alert(hostile)  # idempotent


async def test_a_nul_in_any_field_is_stored_not_refused(
    fresh_database: str, tmp_path: Path
) -> None:
    at = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)
    call_sid = sid(1)
    records: list[StoreWrite] = [
        CallUpdated(
            call_sid,
            project_id="acme\x00",
            from_number="+1555\x000001111",
            to_number="+15557654321\x00",
            status="failed",
            end_reason="model_error\x00",
            error="boom\x00",
            started_at=at,
            transcript=[{"role": "caller\x00", "text": "my tap\x00 drips"}],
            usage={"model\x00": "gpt\x00"},
            twilio_status="compl\x00eted",
        ),
        EventLogWritten(
            new_event_id(),
            at,
            "warning",
            "apiError",
            "bad\x00path",
            call_sid=call_sid,
            metadata={"path\x00": "/x\x00"},
        ),
        FunctionCallRecorded(
            new_event_id(),
            call_sid,
            "book\x00",
            "error",
            5,
            at,
            "acme",
            {"slot\x00": ["9\x00am"]},
            500,
            "err\x00",
        ),
    ]
    store = await run_store(fresh_database, tmp_path, records)
    (call,) = await fetch(
        fresh_database,
        "SELECT from_number, to_number, end_reason, error, project_id, twilio_status,"
        " transcript::text, usage::text FROM calls",
    )
    (event,) = await fetch(fresh_database, "SELECT message, metadata::text FROM event_log")
    (function,) = await fetch(
        fresh_database, "SELECT name, arguments::text, error FROM function_calls"
    )
    r = REPLACEMENT
    assert call[:6] == (f"+1555{r}0001111", f"+15557654321{r}", f"model_error{r}", f"boom{r}",
                        f"acme{r}", f"compl{r}eted")  # fmt: skip
    assert msgspec.json.decode(call[6]) == [{"role": f"caller{r}", "text": f"my tap{r} drips"}]
    assert msgspec.json.decode(call[7]) == {f"model{r}": f"gpt{r}"}
    assert event[0] == f"bad{r}path"
    assert msgspec.json.decode(event[1]) == {f"path{r}": f"/x{r}"}
    assert (function[0], msgspec.json.decode(function[1]), function[2]) == (
        f"book{r}", {f"slot{r}": [f"9{r}am"]}, f"err{r}",
    )  # fmt: skip
    assert store.statistics().records_written_total == 3
