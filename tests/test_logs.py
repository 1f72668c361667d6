"""Secrets never reach a log line, in either format."""

from __future__ import annotations

import io
import logging

import msgspec
import pytest

from engine.logs import JsonFormatter, SecretMask, TextFormatter

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
