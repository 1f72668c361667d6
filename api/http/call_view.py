"""A call's record (``GET /admin/calls/{sid}``) as lines for a terminal, shared by
``afterhours call show`` and the summary ``afterhours call|simulate`` prints.

Every text a stranger could have shaped (the transcript, the model's arguments, a
backend's error) goes through ``printable``: an escape sequence in a caller's words
must not rewrite the operator's terminal. Kept free of heavy imports: the admin CLI
loads it.
"""

from __future__ import annotations

import json
from typing import Any

from engine.safe_text import printable

TEXT_MAX_CHARS = 2000  # one transcript turn, one error
ARGUMENTS_MAX_CHARS = 300  # a function's arguments on one line (--json has them whole)
SYSTEMS = {"openai": "this engine (OpenAI Realtime)", "vapi": "Vapi"}


def transcript_lines(record: dict[str, Any]) -> list[str]:
    return [
        f"    {printable(str(turn.get('role')), 20):>9}: "
        f"{printable(str(turn.get('text')), TEXT_MAX_CHARS)}"
        for turn in record.get("transcript") or []
    ]


def function_call_lines(record: dict[str, Any]) -> list[str]:
    """One line per function call: name(arguments): outcome, HTTP status, latency, error."""
    lines = []
    for call in record.get("functionCalls") or []:
        arguments = json.dumps(call.get("arguments"), separators=(",", ":"), ensure_ascii=False)
        line = (
            f"    {printable(str(call.get('name')), 64)}"
            f"({printable(arguments, ARGUMENTS_MAX_CHARS)}): {call.get('outcome')}"
        )
        if call.get("httpStatus") is not None:
            line += f", HTTP {call['httpStatus']}"
        line += f", {call.get('latencyMs')} ms"
        if call.get("error"):
            line += f": {printable(str(call['error']), TEXT_MAX_CHARS)}"
        lines.append(line)
    total, shown = record.get("functionCallsTotal") or 0, len(record.get("functionCalls") or [])
    if total > shown:
        lines.append(f"    ... and {total - shown} more (the first {shown} are shown)")
    return lines


def call_lines(record: dict[str, Any]) -> list[str]:
    """The whole record, for ``afterhours call show``."""
    cost = record.get("costUsd")
    lines = [
        f"call {record.get('callSid')}",
        f"  project    {record.get('projectId') or '-'}, answered by "
        f"{SYSTEMS.get(str(record.get('system')), record.get('system'))}",
        f"  from, to   {record.get('fromNumber') or '-'} -> {record.get('toNumber') or '-'}",
        f"  status     {record.get('status')} ({record.get('endReason') or 'no end reason'}),"
        f" intent {record.get('intent')}",
        f"  started    {record.get('startedAt') or '-'}; answered "
        f"{record.get('answeredAt') or '-'}; ended {record.get('endedAt') or '-'}",
        f"  duration   {_seconds(record.get('durationS'))}; first audio after "
        f"{_ms(record.get('timeToFirstAudioMs'))}",
        f"  cost       {'-' if cost is None else f'${cost:.4f}'}",
    ]
    for key, label in (("error", "error"), ("summary", "summary"), ("vapiCallId", "vapi call")):
        if record.get(key):
            lines.append(f"  {label:<10} {printable(str(record[key]), TEXT_MAX_CHARS)}")
    transcript = transcript_lines(record)
    lines.append(f"transcript ({len(transcript)} turns)" if transcript else "transcript: none")
    lines += transcript
    functions = function_call_lines(record)
    total = record.get("functionCallsTotal") or 0
    lines.append(f"function calls ({total})" if total else "function calls: none")
    lines += functions
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"
