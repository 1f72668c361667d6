"""Text from outside, made safe to show and to store: pure functions, no I/O.

A caller's number, a CallSid or a URL path can carry anything a stranger typed. Two
places must never take such text as it is:

* a log line, an alert (webhook, email) or an ``event_log`` row, where a newline forges a
  line, a carriage return or an ANSI escape rewrites what a terminal shows, and a
  megabyte of text costs a megabyte per request: ``printable`` escapes every control
  character and bounds the length;
* PostgreSQL ``text`` and ``jsonb``, which cannot hold U+0000 and refuse the whole row:
  ``without_nul`` replaces it.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls, DEL and C1 controls; the Unicode line and paragraph separators (which
# str.splitlines and some viewers break lines at); the bidirectional embeddings,
# overrides and isolates (which reorder what a reader sees).
_UNSAFE_CODEPOINTS = (
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES = {
    code: _NAMED.get(code, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in _UNSAFE_CODEPOINTS
}
_UNSAFE = re.compile("[" + "".join(re.escape(chr(code)) for code in _UNSAFE_CODEPOINTS) + "]")
REPLACEMENT = "\ufffd"  # what a NUL becomes in stored text


def bounded(text: str, max_chars: int) -> str:
    """``text`` if it has at most ``max_chars`` characters, else its start and end
    around a note of how much was cut (the end of a traceback says what failed), in
    ``max_chars`` characters at most."""
    if len(text) <= max_chars:
        return text
    longest_note = len("...[ chars cut]...") + len(str(len(text)))
    keep = (max_chars - longest_note) // 2
    if keep < 1:  # no room for the note
        return text[:max_chars]
    cut = len(text) - 2 * keep
    return f"{text[:keep]}...[{cut} chars cut]...{text[-keep:]}"


def printable(text: str, max_chars: int) -> str:
    """``text`` in at most ``max_chars`` characters, with every control character written
    as an escape (``\\n``, ``\\x1b``, ``\\u2028``), so it stays on one line and shows
    as sent. Bounded before escaping, so the work is linear in ``max_chars`` whatever
    the input's length, and again after (escapes are longer than what they stand for).
    Clean, short text comes back as it is, so applying it twice changes nothing."""
    text = bounded(text, max_chars)
    if _UNSAFE.search(text) is None:  # the common case: nothing to escape
        return text
    return bounded(text.translate(_ESCAPES), max_chars)


def printable_value(value: Any, max_chars: int) -> Any:
    """``printable`` on every string in a JSON-like value (keys too), the rest as is."""
    if isinstance(value, str):
        return printable(value, max_chars)
    if isinstance(value, dict):
        return {
            printable(str(key), max_chars): printable_value(item, max_chars)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [printable_value(item, max_chars) for item in value]
    return value


def without_nul(value: Any) -> Any:
    """``value`` with every U+0000 in its strings (and keys) replaced by U+FFFD, through
    dicts and lists; a value with no NUL comes back as it is."""
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value
