"""Logging set-up: one line per record, text or JSON, with secrets masked, and the
call's CallSid and project on every record logged on its behalf.

A call actor sets ``call_context`` once; Trio copies the context into every task the
call spawns, so each record from the call's code carries ``call_sid`` and ``project``
(JSON fields, or ``[call … project …]`` at the end of a text line) without passing them
around. An ``extra={"call_sid": ..., "project_id": ...}`` on a record wins.

Secrets are kept out of messages by construction (``Secret`` never prints its value);
the masking filter is the second line of defence, for a secret that reaches a log
through a library's own message (a DSN in an exception text, say).
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable

MASK = "********"
# (call_sid, project_id) of the call whose code is running, if any.
call_context: ContextVar[tuple[str, str] | None] = ContextVar("call_context", default=None)
# Secrets shorter than this are not masked: masking "ab" would mangle every log line and
# such values are rejected by configuration anyway.
MIN_MASKED_CHARS = 6


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
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        call_sid, project = getattr(record, "call_sid", None), getattr(record, "project_id", None)
        if call_sid or project:
            line += f" [call {call_sid or '-'} project {project or '-'}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": _utc_timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field, key in (("call_sid", "call_sid"), ("project_id", "project")):
            value = getattr(record, field, None)
            if value:
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["exception"] = record.exc_text
        return self._encoder.encode(body).decode()


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
