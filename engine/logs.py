"""Logging set-up: one line per record, text or JSON, with secrets masked, and the
call's CallSid and project on every record logged on its behalf.

A call actor sets ``call_context`` once; Trio copies the context into every task the
call spawns, so each record from the call's code carries ``call_sid`` and ``project``
(JSON fields, or ``[call … project …]`` at the end of a text line) without passing them
around. An ``extra={"call_sid": ..., "project_id": ...}`` on a record wins.

Secrets are kept out of messages by construction (``Secret`` never prints its value);
the masking filter is the second line of defence, for a secret that reaches a log
through a library's own message (a DSN in an exception text, say).

Every record is one line, whatever it carries: both formatters escape control characters
(engine/safe_text.py) in every part of the record, message, logger, call, project and
traceback alike, and bound each part's length. A value from outside (a stranger's
CallSid, a URL path) can therefore neither forge a line, nor rewrite the terminal, nor
cost more than ``MAX_MESSAGE_CHARS`` of log. A text-format traceback reads as one line
with ``\\n`` between its lines.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Literal

import msgspec

from engine.safe_text import printable

if TYPE_CHECKING:
    from collections.abc import Iterable

MASK = "********"
# (call_sid, project_id) of the call whose code is running, if any.
call_context: ContextVar[tuple[str, str] | None] = ContextVar("call_context", default=None)
# Secrets shorter than this are not masked: masking "ab" would mangle every log line and
# such values are rejected by configuration anyway.
MIN_MASKED_CHARS = 6
# Bounds per part of a record: a message is a sentence or two with a few values; a Trio
# traceback through nested nurseries can run to tens of kilobytes, and its end (the
# exception) must survive the cut.
MAX_MESSAGE_CHARS = 4096
MAX_TRACEBACK_CHARS = 32768
MAX_FIELD_CHARS = 200  # logger name, CallSid, project id


class SecretMask(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted(
            {s for s in secrets if len(s) >= MIN_MASKED_CHARS}, key=len, reverse=True
        )

    def add(self, secret: str) -> None:
        if len(secret) >= MIN_MASKED_CHARS and secret not in self._secrets:
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.mask(record.getMessage())
            record.args = None
            if record.exc_info:
                record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class CallContext(logging.Filter):
    """Adds ``call_sid`` and ``project_id`` to a record from ``call_context``."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = call_context.get()
        if getattr(record, "call_sid", None) is None:
            record.call_sid = current[0] if current else None
        if getattr(record, "project_id", None) is None:
            record.project_id = current[1] if current else None
        return True


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> [call <sid> project <id>]``, then the
    traceback, if any, after an escaped newline: one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        name = printable(record.name, MAX_FIELD_CHARS)
        message = printable(record.getMessage(), MAX_MESSAGE_CHARS)
        line = f"{_utc_timestamp(record)} {record.levelname} {name}: {message}"
        call_sid, project = getattr(record, "call_sid", None), getattr(record, "project_id", None)
        if call_sid or project:
            call_sid = printable(str(call_sid or "-"), MAX_FIELD_CHARS)
            project = printable(str(project or "-"), MAX_FIELD_CHARS)
            line += f" [call {call_sid} project {project}]"
        traceback = _traceback(self, record)
        if traceback:
            line += "\\n" + printable(traceback, MAX_TRACEBACK_CHARS)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; strings escaped like the text
    format's, so both show the same characters."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": _utc_timestamp(record),
            "level": record.levelname.lower(),
            "logger": printable(record.name, MAX_FIELD_CHARS),
            "message": printable(record.getMessage(), MAX_MESSAGE_CHARS),
        }
        for field, key in (("call_sid", "call_sid"), ("project_id", "project")):
            value = getattr(record, field, None)
            if value:
                body[key] = printable(str(value), MAX_FIELD_CHARS)
        traceback = _traceback(self, record)
        if traceback:
            body["exception"] = printable(traceback, MAX_TRACEBACK_CHARS)
        return self._encoder.encode(body).decode()


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's exception (formatted, or as the masking filter left it) and stack."""
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def _utc_timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def configure_logging(
    log_format: Literal["text", "json"], *, secrets: Iterable[str], level: int = logging.INFO
) -> None:
    """Route every logger (ours, hypercorn's, asyncpg's) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(CallContext())
    handler.addFilter(SecretMask(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


def mask_secret(secret: str) -> None:
    """Mask a secret learnt after logging was configured (the embedded PostgreSQL's
    password) in every handler ``configure_logging`` installed."""
    for handler in logging.getLogger().handlers:
        for log_filter in handler.filters:
            if isinstance(log_filter, SecretMask):
                log_filter.add(secret)
