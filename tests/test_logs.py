"""Secrets never reach a log line, in either format."""

from __future__ import annotations

import io
import logging

import msgspec
import pytest
import trio

from engine.logs import CallContext, JsonFormatter, SecretMask, TextFormatter, call_context

SECRET = "sk-live-0123456789abcdef"


def emit(formatter: logging.Formatter, *, exc: BaseException | None = None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(SecretMask([SECRET, "abc"]))
    logger = logging.getLogger("afterhours.test-logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc is None:
            logger.warning("connecting with key %s to %s (abc)", SECRET, "wss://api.openai.com")
        else:
            try:
                raise exc
            except type(exc):
                logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_secret_in_message_args_is_masked(formatter: logging.Formatter) -> None:
    line = emit(formatter)
    assert SECRET not in line
    assert "********" in line
    assert "wss://api.openai.com" in line
    assert "(abc)" in line  # too short to be a secret: left alone, not mangled


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_secret_in_an_exception_traceback_is_masked(formatter: logging.Formatter) -> None:
    text = emit(formatter, exc=ConnectionError(f"auth failed for {SECRET}"))
    assert SECRET not in text
    assert "ConnectionError: auth failed for ********" in text


def test_json_lines_parse_and_carry_level_logger_and_utc_time() -> None:
    record = msgspec.json.decode(emit(JsonFormatter()).strip())
    assert isinstance(record, dict)
    assert record["level"] == "warning"
    assert record["logger"] == "afterhours.test-logs"
    assert record["ts"].endswith("Z")


async def test_records_from_a_calls_tasks_carry_its_call_sid_and_project() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CallContext())
    logger = logging.getLogger("afterhours.test-call-context")
    logger.addHandler(handler)
    logger.propagate = False

    async def task_of_the_call() -> None:
        logger.warning("from a task of the call")

    async def a_call() -> None:
        call_context.set(("CA123", "acme"))
        async with trio.open_nursery() as nursery:  # a task the call spawns inherits it
            nursery.start_soon(task_of_the_call)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a_call)
        logger.warning("outside any call")
        logger.warning("an alert for another", extra={"call_sid": "CA9", "project_id": "b"})
    finally:
        logger.removeHandler(handler)
    lines = [msgspec.json.decode(line) for line in stream.getvalue().splitlines()]
    assert [(r.get("call_sid"), r.get("project")) for r in lines] == [
        ("CA123", "acme"),
        (None, None),
        ("CA9", "b"),
    ]


def test_text_lines_end_with_the_call() -> None:
    record = logging.LogRecord("afterhours.call", logging.INFO, "x", 1, "hello", None, None)
    record.call_sid, record.project_id = "CA1", "acme"
    assert TextFormatter().format(record).endswith("hello [call CA1 project acme]")
